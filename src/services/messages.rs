//! Mail after it was accepted: cancelling a message that has not gone yet.

use time::OffsetDateTime;

use super::{ServiceError, ServiceResult};
use crate::domain::mailbox::StatusReason;
use crate::domain::message::{Message, MessageStatus};
use crate::domain::{Actor, FieldError, NewAuditEvent, OrgId};
use crate::store::{self, Store, StoreError};

/// Cancels a queued or held message of the organization, with its audit event. `may_see` says
/// whether the caller may see the message (a sender key sees what it sent); one it may not
/// see is as unknown as another organization's. A message being sent, sent or failed cannot be
/// cancelled (409); cancelling a cancelled message again answers it as it is.
pub async fn cancel(
    store: &Store,
    org_id: OrgId,
    id: &str,
    may_see: impl Fn(&Message) -> bool,
    actor: &Actor,
    now: OffsetDateTime,
) -> ServiceResult<Message> {
    let _turn = store.write_permit().await;
    let mut tx = store.begin().await?;
    let before = store::messages::get(&mut tx, org_id, id)
        .await?
        .filter(|m| may_see(m))
        .ok_or(ServiceError::NotFound("message"))?;
    if before.status == MessageStatus::Cancelled {
        return Ok(before);
    }
    let who = if actor.label.is_empty() {
        "the organization".to_owned()
    } else {
        actor.label.clone()
    };
    let reason = StatusReason::new(
        "cancelled",
        format!("Cancelled by {who} before it was sent."),
        None,
    );
    let after = store::messages::cancel(&mut tx, org_id, id, &reason, now)
        .await?
        .ok_or(ServiceError::NotFound("message"))?;
    if after.status != MessageStatus::Cancelled {
        return Err(ServiceError::Conflict(FieldError::new(
            "status",
            match after.status {
                MessageStatus::Sending => {
                    "the message is being sent right now and can no longer be cancelled"
                }
                MessageStatus::Sent => "the message was already sent",
                _ => "the message already failed; there is nothing to cancel",
            },
        )));
    }
    store::audit::record(
        &mut tx,
        &NewAuditEvent {
            org_id,
            actor: actor.clone(),
            action: "message.cancel",
            target_kind: "message",
            target_id: id.to_owned(),
            detail: serde_json::json!({ "status_before": before.status.as_str() }),
        },
        now,
    )
    .await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(after)
}
