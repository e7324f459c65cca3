//! Where a message goes: the mailbox it names, the organization's default or the
//! installation's default sender; held, with the reason, when that mailbox cannot send.

use super::{Caller, invalid};
use crate::config::{DefaultSenderOrgs, OutboxSettings};
use crate::domain::mailbox::{Mailbox, MailboxStatus, StatusReason};
use crate::domain::message::{MessageSource, MessageStatus, NoMailboxPolicy};
use crate::domain::{MailboxId, Organization};
use crate::services::{ServiceError, ServiceResult};
use crate::store::{self, Store};

/// Where a message goes.
pub(super) struct Route {
    pub(super) mailbox: Option<Mailbox>,
    pub(super) explicit: bool,
    pub(super) via_default_sender: bool,
    pub(super) status: MessageStatus,
    pub(super) reason: Option<StatusReason>,
}

/// Why mail for a Not Verified mailbox is held, with the mailbox's own reason and action.
fn not_verified_reason(m: &Mailbox) -> StatusReason {
    StatusReason::new(
        "mailbox_not_verified",
        format!(
            "The mailbox \"{}\" is Not Verified{}",
            m.name,
            m.status_reason
                .as_ref()
                .map(|r| format!(": {}", r.message))
                .unwrap_or_else(|| ".".into())
        ),
        Some(format!(
            "The mail is sent once the mailbox is verified. {}",
            m.status_reason
                .as_ref()
                .and_then(|r| r.action.clone())
                .unwrap_or_default()
        )),
    )
}

/// An alert reaches the admins through a Verified mailbox of the organization (its default
/// first), else the installation's default sender, whatever the organization's policy (the
/// alert may be about the very mailbox that would have sent it), but only if the default
/// sender serves the organization: an organization the operator did not allow must not reach
/// any address from the operator's, and still sees the alert on its pages and its webhook.
async fn alert_route(
    store: &Store,
    settings: &OutboxSettings,
    org: &Organization,
    mailboxes: &[Mailbox],
) -> ServiceResult<Route> {
    let verified = mailboxes
        .iter()
        .filter(|m| m.status == MailboxStatus::Verified)
        .max_by_key(|m| m.is_default);
    if let Some(m) = verified {
        return Ok(Route {
            mailbox: Some(m.clone()),
            explicit: true,
            via_default_sender: false,
            status: MessageStatus::Queued,
            reason: None,
        });
    }
    if let Some(sender_id) = settings.default_sender
        && default_sender_serves(settings, org)
        && let Some(sender) = default_sender(store, sender_id).await?
        && sender.status == MailboxStatus::Verified
    {
        return Ok(Route {
            mailbox: Some(sender),
            explicit: false,
            via_default_sender: true,
            status: MessageStatus::Queued,
            reason: None,
        });
    }
    Err(ServiceError::Refused(
        "the organization has no Verified mailbox and the installation no Verified default sender for it",
    ))
}

/// The installation's default sender, read each time (it sends for many organizations).
async fn default_sender(store: &Store, id: MailboxId) -> ServiceResult<Option<Mailbox>> {
    let mut conn = store.conn().await?;
    Ok(store::mailboxes::get_any(&mut conn, id).await?)
}

/// Whether the installation's default sender may send for the organization.
fn default_sender_serves(settings: &OutboxSettings, org: &Organization) -> bool {
    settings.default_sender_orgs == DefaultSenderOrgs::All || org.default_sender_allowed
}

/// Why mail is held for an organization the default sender does not serve.
fn default_sender_not_allowed() -> StatusReason {
    StatusReason::new(
        "default_sender_not_allowed",
        "The organization has no Verified mailbox, and the installation's default sender does not send for it.",
        Some(
            "Verify a mailbox under Settings › System › Outgoing Mail (held mail is sent then), or ask the operator to allow the default sender for this organization (mail accepted after that leaves from it)."
                .into(),
        ),
    )
}

/// Chooses the mailbox: the one named, else the organization's default (or its only one). A
/// Verified mailbox takes the message. While the organization has no Verified mailbox, its
/// policy decides: `fallback` sends from the installation's default sender, `hold` keeps it.
pub(super) async fn route(
    store: &Store,
    settings: &OutboxSettings,
    caller: &Caller,
    named: Option<&str>,
    is_mime: bool,
) -> ServiceResult<Route> {
    let directory = store
        .org_directory(caller.org_id)
        .await?
        .ok_or(ServiceError::NotFound("organization"))?;
    let (org, mailboxes) = (&directory.org, &directory.mailboxes);
    // By id, or by name as the store compares names (case-insensitive, trimmed).
    let by_name = |name: &str| {
        let (id, key) = (name.parse::<MailboxId>().ok(), name.to_lowercase());
        mailboxes
            .iter()
            .find(|m| Some(m.id) == id || m.name.to_lowercase() == key)
    };
    // MIME through a named mailbox (the relay, most raw submissions): never the default
    // sender, so neither the organization's policy nor its other mailboxes matter.
    if is_mime
        && caller.allowed.is_none()
        && let Some(name) = named.map(str::trim).filter(|n| !n.is_empty())
    {
        let mailbox = by_name(name).cloned().ok_or_else(|| {
            invalid(
                "mailbox",
                format!("the organization has no mailbox called or with the id `{name}`"),
            )
        })?;
        let verified = mailbox.status == MailboxStatus::Verified;
        return Ok(Route {
            reason: (!verified).then(|| not_verified_reason(&mailbox)),
            status: if verified {
                MessageStatus::Queued
            } else {
                MessageStatus::Held
            },
            mailbox: Some(mailbox),
            explicit: true,
            via_default_sender: false,
        });
    }
    let allowed = |m: &Mailbox| caller.allowed.as_ref().is_none_or(|a| a.contains(&m.id));
    if caller.allowed.is_some() && !mailboxes.iter().any(allowed) {
        // Its mailboxes were deleted: such a key sends through nothing, not the default sender.
        return Err(ServiceError::Forbidden(
            "This API key is limited to mailboxes that no longer exist; create a new key.".into(),
        ));
    }
    if caller.source == MessageSource::Alert {
        return alert_route(store, settings, org, mailboxes).await;
    }
    let (chosen, explicit) = match named.map(str::trim).filter(|n| !n.is_empty()) {
        Some(name) => {
            let found = by_name(name).ok_or_else(|| {
                invalid(
                    "mailbox",
                    format!("the organization has no mailbox called or with the id `{name}`"),
                )
            })?;
            if !allowed(found) {
                // Named as the caller named it: a key limited to other mailboxes does not see
                // this one's name (its GET answers 404), so the refusal must not tell it.
                return Err(ServiceError::Forbidden(format!(
                    "This API key may not send through the mailbox `{name}`."
                )));
            }
            (Some(found.clone()), true)
        }
        None => {
            let candidates: Vec<&Mailbox> = mailboxes.iter().filter(|m| allowed(m)).collect();
            let chosen = candidates
                .iter()
                .find(|m| m.is_default)
                .or(if candidates.len() == 1 {
                    candidates.first()
                } else {
                    None
                });
            match chosen {
                Some(m) => (Some((*m).clone()), false),
                None if candidates.is_empty() => (None, false),
                None => {
                    return Err(invalid(
                        "mailbox",
                        "name the mailbox: the organization has no default mailbox among those this key may use",
                    ));
                }
            }
        }
    };
    if let Some(m) = &chosen
        && m.status == MailboxStatus::Verified
    {
        return Ok(Route {
            mailbox: chosen,
            explicit,
            via_default_sender: false,
            status: MessageStatus::Queued,
            reason: None,
        });
    }
    let any_verified = mailboxes
        .iter()
        .any(|m| m.status == MailboxStatus::Verified);
    if !any_verified
        && !is_mime
        && org.no_mailbox_policy == NoMailboxPolicy::Fallback
        && default_sender_serves(settings, org)
        && let Some(sender_id) = settings.default_sender
        && let Some(sender) = default_sender(store, sender_id).await?
    {
        let verified = sender.status == MailboxStatus::Verified;
        return Ok(Route {
            mailbox: Some(sender),
            explicit: false,
            via_default_sender: true,
            status: if verified {
                MessageStatus::Queued
            } else {
                MessageStatus::Held
            },
            reason: (!verified).then(|| {
                StatusReason::new(
                    "default_sender_not_verified",
                    "The installation's default sender is Not Verified.",
                    Some(
                        "The operator must verify the default sender; the mail is sent once it is."
                            .into(),
                    ),
                )
            }),
        });
    }
    let reason = match &chosen {
        _ if !any_verified
            && !is_mime
            && org.no_mailbox_policy == NoMailboxPolicy::Fallback
            && settings.default_sender.is_some()
            && !default_sender_serves(settings, org) =>
        {
            default_sender_not_allowed()
        }
        Some(m) => not_verified_reason(m),
        None => StatusReason::new(
            "no_mailbox",
            "The organization has no mailbox to send from yet.",
            Some("Add a mailbox under Settings › System › Outgoing Mail and verify it; held mail is sent then.".into()),
        ),
    };
    Ok(Route {
        mailbox: chosen,
        explicit,
        via_default_sender: false,
        status: MessageStatus::Held,
        reason: Some(reason),
    })
}
