//! A mailbox's status, set by what reaching it showed: Verified releases its held mail and
//! resolves its alerts; Not Verified raises one with the reason.

use super::{Access, AccessResult, alerts};
use crate::domain::mailbox::{Mailbox, MailboxStatus, StatusReason};
use crate::domain::{Actor, ActorKind, NewAuditEvent};
use crate::store::{self, StoreError};

/// Whether the stored mailbox's identity differs from `mailbox`'s (a PATCH came in between).
pub async fn stale(conn: &mut store::Conn, mailbox: &Mailbox) -> AccessResult<bool> {
    let current = store::mailboxes::get(conn, mailbox.org_id, mailbox.id).await?;
    Ok(current.is_none_or(|c| c.identity() != mailbox.identity()))
}

/// Sets a mailbox's status. A failure reason on a Verified mailbox that still works is the
/// caller's to avoid; this writes what it is told.
pub async fn set_status(
    access: &Access,
    mailbox: &Mailbox,
    status: MailboxStatus,
    reason: Option<StatusReason>,
) -> AccessResult<Mailbox> {
    let now = access.now();
    let mut updated = mailbox.clone();
    updated.status = status;
    updated.status_reason = reason;
    if status == MailboxStatus::Verified {
        updated.verified_at = Some(now);
    }
    let mut tx = access.store.begin().await?;
    if stale(&mut tx, mailbox).await? {
        // The mailbox changed identity while this outcome was being decided: it no longer applies.
        return Ok(mailbox.clone());
    }
    store::mailboxes::set_status(&mut tx, &updated, now).await?;
    if status == MailboxStatus::Verified {
        // Mail held while the mailbox was Not Verified goes out now.
        let released = store::messages::release_held(
            &mut tx,
            mailbox.org_id,
            mailbox.id,
            &mailbox.username,
            now,
        )
        .await?;
        if released > 0 {
            tracing::info!(mailbox = %mailbox.id, released, "held mail released");
        }
    }
    alerts::mailbox_status(&mut tx, mailbox, &updated, now).await?;
    if status != mailbox.status || updated.status_reason != mailbox.status_reason {
        store::audit::record(
            &mut tx,
            &NewAuditEvent {
                org_id: mailbox.org_id,
                actor: Actor {
                    kind: ActorKind::System,
                    id: None,
                    label: "Herald".into(),
                    source: "herald".into(),
                },
                action: "mailbox.status",
                target_kind: "mailbox",
                target_id: mailbox.id.to_string(),
                detail: serde_json::json!({
                    "name": mailbox.name,
                    "status": status.as_str(),
                    "reason": updated.status_reason.as_ref().map(|r| r.code.clone()),
                }),
            },
            now,
        )
        .await?;
    }
    tx.commit().await.map_err(StoreError::from)?;
    // Again once committed: an accept that read the directory between the write and the
    // commit would otherwise keep the old status (holding mail for a mailbox just verified).
    store::changes::changed();
    Ok(updated)
}

/// Turns the mailbox Not Verified with the reason (a send found it broken).
pub async fn mark_not_verified(
    access: &Access,
    mailbox: &Mailbox,
    reason: StatusReason,
) -> AccessResult<Mailbox> {
    set_status(access, mailbox, MailboxStatus::NotVerified, Some(reason)).await
}
