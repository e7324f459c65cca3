//! The organization's settings as the API changes them: its sending settings and the removal of
//! its alert webhook. Each change is audited, as every change of the services is.

use time::OffsetDateTime;

use crate::domain::message::NoMailboxPolicy;
use crate::domain::{Actor, NewAuditEvent, OrgId, Organization};
use crate::store::{self, Store, StoreError};

use super::ServiceResult;
use super::alerts::WEBHOOK_SECRET_FIELD;

/// Sets what happens to mail while no mailbox is verified and the Reply-To of the default
/// sender's mail (each only when given; `Some(None)` clears the Reply-To), with its audit event,
/// in one transaction. `None` when the organization does not exist.
pub async fn update_sending_settings(
    store: &Store,
    org_id: OrgId,
    actor: &Actor,
    policy: Option<NoMailboxPolicy>,
    reply_to: Option<Option<String>>,
    now: OffsetDateTime,
) -> ServiceResult<Option<Organization>> {
    let mut tx = store.begin().await?;
    let Some(mut org) = store::orgs::get(&mut tx, org_id).await? else {
        return Ok(None);
    };
    if let Some(policy) = policy {
        org.no_mailbox_policy = policy;
    }
    if let Some(reply_to) = reply_to {
        org.reply_to = reply_to;
    }
    store::orgs::set_settings(&mut tx, &org).await?;
    store::audit::record(
        &mut tx,
        &NewAuditEvent {
            org_id: org.id,
            actor: actor.clone(),
            action: "organization.update",
            target_kind: "organization",
            target_id: org.id.to_string(),
            detail: serde_json::json!({
                "no_mailbox_policy": org.no_mailbox_policy.as_str(),
                "reply_to": org.reply_to,
            }),
        },
        now,
    )
    .await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(Some(org))
}

/// Forgets the organization's alert webhook and its signing secret, in one transaction.
pub async fn remove_alert_webhook(store: &Store, org_id: OrgId) -> ServiceResult<()> {
    let mut tx = store.begin().await?;
    store::alerts::set_webhook_url(&mut tx, org_id, None).await?;
    store::secrets::delete(&mut tx, &org_id.to_string(), WEBHOOK_SECRET_FIELD).await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(())
}

/// Records a change of the alert webhook (`action`) in the audit log: where it points, never
/// its query string, which may carry the receiver's token.
pub async fn audit_alert_webhook(
    store: &Store,
    org_id: OrgId,
    actor: &Actor,
    action: &'static str,
    url: Option<&str>,
    now: OffsetDateTime,
) -> ServiceResult<()> {
    let mut conn = store.conn().await?;
    store::audit::record(
        &mut conn,
        &NewAuditEvent {
            org_id,
            actor: actor.clone(),
            action,
            target_kind: "organization",
            target_id: org_id.to_string(),
            detail: serde_json::json!({ "url": url }),
        },
        now,
    )
    .await?;
    Ok(())
}
