//! What the outbox's workers share: the state behind the [`super::Outbox`] handle, a claimed
//! message, and the lease that keeps a claim while it is worked on.

use std::collections::HashMap;
use std::sync::Mutex;

use time::OffsetDateTime;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use super::Tuning;
use crate::access::Access;
use crate::domain::MailboxId;
use crate::domain::mailbox::{Mailbox, StatusReason};
use crate::domain::message::Message;
use crate::store::{self, StoreResult};

pub(super) fn millis(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

pub(super) fn from_millis(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

pub(super) struct Inner {
    pub(super) access: Access,
    pub(super) tuning: Tuning,
    /// Names this process's claims and connection slots.
    pub(super) owner: String,
    /// Wakes the dispatcher.
    pub(super) wake: Notify,
    /// The lanes running here, per mailbox.
    pub(super) lanes: Mutex<HashMap<MailboxId, Lanes>>,
    pub(super) tasks: tokio::sync::Mutex<JoinSet<()>>,
    pub(super) stopping: watch::Sender<bool>,
    /// Counts the keep-alive's completed passes (see [`super::Outbox::keepalive_passes`]).
    pub(super) keepalive_passes: watch::Sender<u64>,
    /// Counts the alerts job's completed passes (see [`super::Outbox::alert_passes`]).
    pub(super) alert_passes: watch::Sender<u64>,
}

/// A mailbox's lanes on this instance.
pub(super) struct Lanes {
    pub(super) running: u32,
    /// As many as the mailbox allows connections (as last read by the dispatcher).
    pub(super) max: u32,
    /// Wakes an idle lane of the mailbox.
    pub(super) wake: std::sync::Arc<Notify>,
}

pub(super) fn lease_ms(tuning: &Tuning) -> i64 {
    tuning.lease.whole_milliseconds() as i64
}

/// Why a lane stops after a message.
pub(super) enum Next {
    Continue,
    Stop,
}

pub(super) fn held_reason(mailbox: &Mailbox) -> StatusReason {
    StatusReason::new(
        "mailbox_not_verified",
        format!(
            "The mailbox \"{}\" is Not Verified{}",
            mailbox.name,
            mailbox
                .status_reason
                .as_ref()
                .map(|r| format!(": {}", r.message))
                .unwrap_or_else(|| ".".into())
        ),
        Some(format!(
            "The mail is sent once the mailbox is verified again. {}",
            mailbox
                .status_reason
                .as_ref()
                .and_then(|r| r.action.clone())
                .unwrap_or_default()
        )),
    )
}

/// A claimed message, with the token that proves the claim and the lane's connection slot.
pub(super) struct Claim {
    pub(super) message: Message,
    pub(super) token: String,
    pub(super) slot: i64,
}

/// The reason held mail of the installation's default sender shows to the organizations it
/// sends for: the operator's mailbox details are not theirs to see.
pub(super) fn default_sender_held() -> StatusReason {
    StatusReason::new(
        "default_sender_not_verified",
        "The installation's default sender is Not Verified.",
        Some("The operator must verify the default sender; the mail is sent once it is.".into()),
    )
}

/// Runs `work` while renewing the claim's lease and the lane's connection slot, so that a long
/// send (a large message, a slow server) is not taken over by another worker.
pub(super) async fn under_lease<F: std::future::Future>(
    inner: &Inner,
    mailbox_id: MailboxId,
    claim: &Claim,
    work: F,
) -> F::Output {
    tokio::pin!(work);
    let every = std::time::Duration::try_from(inner.tuning.lease / 3)
        .unwrap_or(std::time::Duration::from_secs(60))
        .max(std::time::Duration::from_millis(100));
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = tokio::time::sleep(every) => {
                let now = inner.access.clock.now();
                let _turn = inner.access.store.write_permit().await;
                if let Ok(mut conn) = inner.access.store.relaxed_conn().await {
                    let renewed = async {
                        store::messages::extend_lease(&mut conn, &claim.message.id, &claim.token, now + inner.tuning.lease).await?;
                        store::throttle::renew_slot(&mut conn, mailbox_id, claim.slot, &inner.owner, millis(now) + lease_ms(&inner.tuning)).await
                    }.await;
                    if let Err(e) = renewed {
                        tracing::warn!(error = %e, "could not renew a lease");
                    }
                }
            }
        }
    }
}

/// Puts this owner's claimed messages back in the queue, and frees its connection slots: at
/// shutdown, and for an instance found dead.
pub async fn release_owned(conn: &mut store::Conn, owner: &str) -> StoreResult<u64> {
    let done = sqlx::query(
        "UPDATE messages SET status = 'queued', lease_owner = NULL, lease_until = NULL, attempts = attempts - 1 \
         WHERE lease_owner LIKE $1 AND status = 'sending'",
    )
    .bind(format!("{owner}/%"))
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM mailbox_connections WHERE holder = $1")
        .bind(owner)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected())
}
