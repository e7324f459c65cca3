//! Which organizations the installation's default sender serves when
//! `HERALD_DEFAULT_SENDER_ORGS=listed`: the operator allows or denies each one, from the command
//! line (`herald org set ORG --default-sender allow|deny`) or over the API as an installation
//! admin.
//!
//! Herald has no operator accounts of its own. The operator's own organization is the one that
//! holds the default sender (DESIGN §2), so its admins are the installation's admins: they
//! already control the address every allowed organization's mail leaves from. Without a default
//! sender there is nothing to allow over the API, and only the command line can.

use time::OffsetDateTime;

use super::{ServiceError, ServiceResult};
use crate::config::{DefaultSenderOrgs, OutboxSettings};
use crate::domain::{Actor, NewAuditEvent, OrgId, Organization};
use crate::store::{self, Store, StoreError};

/// Whether the default sender sends for the organization while it has no Verified mailbox:
/// one is configured, and it serves every organization or the operator allowed this one.
pub fn serves(settings: &OutboxSettings, org: &Organization) -> bool {
    settings.default_sender.is_some()
        && (settings.default_sender_orgs == DefaultSenderOrgs::All || org.default_sender_allowed)
}

/// Whether admins of `org_id` are installation admins: it holds the default sender.
pub async fn is_operator_org(
    store: &Store,
    settings: &OutboxSettings,
    org_id: OrgId,
) -> ServiceResult<bool> {
    let Some(sender) = settings.default_sender else {
        return Ok(false);
    };
    let mut conn = store.conn().await?;
    Ok(store::mailboxes::get_any(&mut conn, sender)
        .await?
        .is_some_and(|m| m.org_id == org_id))
}

/// Allows or denies the default sender for an organization, with its audit event (in that
/// organization's log, so its admins see who decided).
pub async fn set_allowed(
    store: &Store,
    org_id: OrgId,
    allowed: bool,
    actor: &Actor,
    now: OffsetDateTime,
) -> ServiceResult<Organization> {
    let mut tx = store.begin().await?;
    let mut org = store::orgs::get(&mut tx, org_id)
        .await?
        .ok_or(ServiceError::NotFound("organization"))?;
    store::orgs::set_default_sender_allowed(&mut tx, org.id, allowed).await?;
    org.default_sender_allowed = allowed;
    store::audit::record(
        &mut tx,
        &NewAuditEvent {
            org_id: org.id,
            actor: actor.clone(),
            action: if allowed {
                "organization.default_sender_allow"
            } else {
                "organization.default_sender_deny"
            },
            target_kind: "organization",
            target_id: org.id.to_string(),
            detail: serde_json::json!({ "default_sender_allowed": allowed }),
        },
        now,
    )
    .await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(org)
}
