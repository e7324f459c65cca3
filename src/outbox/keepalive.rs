//! Keeps OAuth2 mailboxes alive: a refresh token that goes unused dies (Microsoft's after 90
//! days), and with it the mailbox, quietly, until someone signs in again. Every authorized
//! OAuth2 mailbox has its token refreshed and is verified again once per keep-alive interval
//! (`HERALD_KEEPALIVE_DAYS`, default 7), idle or not. Each mailbox's turn is taken by one
//! instance; a refusal makes the mailbox Not Verified with the provider's reason.

use tokio::sync::watch;

use crate::access::{self, Access, TokenFailure, alerts};
use crate::domain::{MailboxId, OrgId};
use crate::store::{self, StoreResult};

/// How many mailboxes one pass takes at most; the next pass takes the rest.
const BATCH: i64 = 50;

/// A keep-alive that failed for a passing reason is tried again after this long.
const RETRY: time::Duration = time::Duration::hours(1);

/// Looks for mailboxes due every `every`, until told to stop; counts each completed pass in
/// `passes`.
pub(super) async fn run(
    access: Access,
    every: std::time::Duration,
    stopping: watch::Receiver<bool>,
    passes: watch::Sender<u64>,
) {
    let mut stopping = stopping;
    loop {
        if *stopping.borrow() {
            return;
        }
        if let Err(e) = pass(&access, &stopping).await {
            tracing::warn!(error = %e, "the keep-alive could not look for mailboxes");
        }
        passes.send_modify(|n| *n += 1);
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stopping.changed() => {}
        }
    }
}

/// One look for mailboxes due, and their keep-alives. Answers how many were taken.
pub(super) async fn pass(access: &Access, stopping: &watch::Receiver<bool>) -> StoreResult<usize> {
    let interval = access.config.outbox.keepalive;
    let now = access.now();
    let due = {
        let mut conn = access.store.conn().await?;
        store::mailboxes::keepalive_due(&mut conn, now - interval, BATCH).await?
    };
    let mut taken = 0;
    for (org_id, id) in due {
        if *stopping.borrow() {
            break;
        }
        let mine = {
            let mut conn = access.store.conn().await?;
            store::mailboxes::take_keepalive(&mut conn, id, now - interval, now).await?
        };
        if !mine {
            continue;
        }
        taken += 1;
        let kept = keep_alive(access, org_id, id).await;
        crate::metrics::get()
            .keepalives
            .get_or_create(&crate::metrics::OutcomeLabel {
                outcome: kept.label(),
            })
            .inc();
        let mut conn = access.store.conn().await?;
        match kept {
            Kept::Retry(why) => {
                store::mailboxes::set_keepalive(&mut conn, id, now - interval + RETRY).await?;
                if let Some(mailbox) = store::mailboxes::get(&mut conn, org_id, id).await? {
                    alerts::keepalive_failed(&mut conn, &mailbox, &why, now).await?;
                }
            }
            Kept::Ok => alerts::keepalive_ok(&mut conn, id, now).await?,
            Kept::Refused => {}
        }
    }
    Ok(taken)
}

/// How a keep-alive went.
#[derive(Clone, PartialEq, Eq)]
enum Kept {
    Ok,
    /// The provider refused: the mailbox is Not Verified now.
    Refused,
    /// Something passing, said here: tried again soon.
    Retry(String),
}

impl Kept {
    fn label(&self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Refused => "refused",
            Self::Retry(_) => "failed",
        }
    }
}

/// Refreshes the mailbox's token and verifies it.
async fn keep_alive(access: &Access, org_id: OrgId, id: MailboxId) -> Kept {
    match access::refresh_now(access, org_id, id).await {
        Ok(Ok(_)) => {}
        Ok(Err(TokenFailure::Refused(reason))) => {
            tracing::warn!(mailbox = %id, reason = %reason.message, "keep-alive: the provider refused the refresh");
            let mailbox = {
                let Ok(mut conn) = access.store.conn().await else {
                    return Kept::Retry("the database did not answer".into());
                };
                match store::mailboxes::get(&mut conn, org_id, id).await {
                    Ok(Some(mailbox)) => mailbox,
                    Ok(None) => return Kept::Ok,
                    Err(e) => return Kept::Retry(e.to_string()),
                }
            };
            return match access::mark_not_verified(access, &mailbox, reason).await {
                Ok(_) => Kept::Refused,
                Err(e) => Kept::Retry(e.to_string()),
            };
        }
        Ok(Err(TokenFailure::Transient(why))) => {
            tracing::warn!(mailbox = %id, error = %why, "keep-alive: the token endpoint is unavailable; trying again later");
            return Kept::Retry(format!("the token endpoint did not answer ({why})"));
        }
        Err(e) => {
            tracing::warn!(mailbox = %id, error = %e, "keep-alive: the refresh failed");
            return Kept::Retry(e.to_string());
        }
    }
    match access::verify(access, org_id, id).await {
        Ok(mailbox) => {
            tracing::info!(mailbox = %id, status = ?mailbox.status, "keep-alive: token refreshed and mailbox verified");
            if mailbox.status == crate::domain::mailbox::MailboxStatus::Verified {
                Kept::Ok
            } else {
                Kept::Refused
            }
        }
        Err(e) => {
            tracing::warn!(mailbox = %id, error = %e, "keep-alive: the verification failed");
            Kept::Retry(e.to_string())
        }
    }
}
