//! Alerts raised and resolved where a mailbox's or a message's fate is decided, inside the
//! transaction that decides it: a mailbox turns Not Verified or Verified, a message fails for
//! good, a keep-alive fails or succeeds. Delivering them (webhooks, e-mail) is the services'.

use time::OffsetDateTime;

use crate::domain::mailbox::{Mailbox, StatusReason};
use crate::domain::{MailboxId, OrgId};
use crate::store::alerts::{self as stored, NewAlert};
use crate::store::{Conn, StoreResult};

/// Kinds of alert.
pub mod kind {
    pub const MAILBOX_NOT_VERIFIED: &str = "mailbox_not_verified";
    pub const SECRET_EXPIRING: &str = "client_secret_expiring";
    pub const SECRET_EXPIRED: &str = "client_secret_expired";
    pub const MESSAGE_FAILED: &str = "message_failed";
    pub const KEEPALIVE_FAILED: &str = "keepalive_failed";
}

/// A mailbox's status changed (inside the transaction that changes it).
pub async fn mailbox_status(
    conn: &mut Conn,
    before: &Mailbox,
    after: &Mailbox,
    now: OffsetDateTime,
) -> StoreResult<()> {
    use crate::domain::mailbox::MailboxStatus;
    match (&after.status, &after.status_reason) {
        (MailboxStatus::NotVerified, Some(reason))
            if before.status != MailboxStatus::NotVerified
                || before.status_reason.as_ref().map(|r| &r.code) != Some(&reason.code) =>
        {
            stored::raise(
                conn,
                &NewAlert {
                    org_id: after.org_id,
                    kind: kind::MAILBOX_NOT_VERIFIED,
                    dedup_key: format!(
                        "{}:{}:{}",
                        kind::MAILBOX_NOT_VERIFIED,
                        after.id,
                        reason.code
                    ),
                    mailbox_id: Some(after.id),
                    message_id: None,
                    title: format!("The mailbox \"{}\" is Not Verified", after.name),
                    detail: reason.message.clone(),
                    action: reason.action.clone(),
                },
                now,
            )
            .await?;
        }
        (MailboxStatus::Verified, _) => {
            stored::resolve(
                conn,
                after.id,
                &[kind::MAILBOX_NOT_VERIFIED, kind::KEEPALIVE_FAILED],
                now,
            )
            .await?;
        }
        _ => {}
    }
    Ok(())
}

/// A message failed for good. Repeats for the same mailbox and reason within the hour are one
/// alert.
pub async fn message_failed(
    conn: &mut Conn,
    org_id: OrgId,
    mailbox: Option<(MailboxId, &str)>,
    message_id: &str,
    reason: &StatusReason,
    now: OffsetDateTime,
) -> StoreResult<()> {
    let hour = now.unix_timestamp().div_euclid(3600);
    let (mailbox_id, name) = mailbox
        .map_or((None, "the installation's default sender"), |(id, n)| {
            (Some(id), n)
        });
    stored::raise(
        conn,
        &NewAlert {
            org_id,
            kind: kind::MESSAGE_FAILED,
            dedup_key: format!(
                "{}:{}:{}:{hour}",
                kind::MESSAGE_FAILED,
                mailbox_id.map(|m| m.to_string()).unwrap_or_default(),
                reason.code
            ),
            mailbox_id,
            message_id: Some(message_id),
            title: if mailbox_id.is_some() {
                format!("Mail through \"{name}\" failed")
            } else {
                format!("Mail through {name} failed")
            },
            detail: format!(
                "{} (message {message_id}; further failures for the same reason this hour are not alerted again)",
                reason.message
            ),
            action: reason.action.clone(),
        },
        now,
    )
    .await?;
    Ok(())
}

/// A keep-alive could not refresh or verify the mailbox.
pub async fn keepalive_failed(
    conn: &mut Conn,
    mailbox: &Mailbox,
    why: &str,
    now: OffsetDateTime,
) -> StoreResult<()> {
    stored::raise(
        conn,
        &NewAlert {
            org_id: mailbox.org_id,
            kind: kind::KEEPALIVE_FAILED,
            dedup_key: format!("{}:{}", kind::KEEPALIVE_FAILED, mailbox.id),
            mailbox_id: Some(mailbox.id),
            message_id: None,
            title: format!("The keep-alive of \"{}\" failed", mailbox.name),
            detail: format!(
                "Herald could not refresh the mailbox's token to keep it from expiring unused: {why}. It tries again every hour."
            ),
            action: Some(
                "If this persists for days, click Verify on the mailbox; if it turns Not Verified, click Authorize and sign in again.".into(),
            ),
        },
        now,
    )
    .await?;
    Ok(())
}

/// A keep-alive succeeded.
pub async fn keepalive_ok(
    conn: &mut Conn,
    mailbox_id: MailboxId,
    now: OffsetDateTime,
) -> StoreResult<()> {
    stored::resolve(conn, mailbox_id, &[kind::KEEPALIVE_FAILED], now).await?;
    Ok(())
}
