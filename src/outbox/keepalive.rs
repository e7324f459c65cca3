//! Keeps OAuth2 mailboxes alive: a refresh token that goes unused dies (Microsoft's after 90
//! days), and with it the mailbox, quietly, until someone signs in again. Every authorized
//! OAuth2 mailbox has its token refreshed and is verified again once per keep-alive interval
//! (`HERALD_KEEPALIVE_DAYS`, default 7), idle or not. Each mailbox's turn is taken by one
//! instance; a refusal makes the mailbox Not Verified with the provider's reason.

use std::sync::Arc;

use super::worker::Inner;
use crate::domain::{MailboxId, OrgId};
use crate::services::alerts;
use crate::services::authorization::{self, TokenFailure};
use crate::store::{self, StoreResult};

/// How many mailboxes one pass takes at most; the next pass takes the rest.
const BATCH: i64 = 50;

/// A keep-alive that failed for a passing reason is tried again after this long.
const RETRY: time::Duration = time::Duration::hours(1);

pub(super) async fn run(inner: Arc<Inner>) {
    let mut stopping = inner.stopping.subscribe();
    loop {
        if *stopping.borrow() {
            return;
        }
        if let Err(e) = pass(&inner).await {
            tracing::warn!(error = %e, "the keep-alive could not look for mailboxes");
        }
        tokio::select! {
            _ = tokio::time::sleep(inner.tuning.keepalive_check) => {}
            _ = stopping.changed() => {}
        }
    }
}

/// Raises the client-secret alerts and delivers alerts to webhooks.
pub(super) async fn alerts_loop(inner: Arc<Inner>) {
    let mut stopping = inner.stopping.subscribe();
    let mut scanned: Option<std::time::Instant> = None;
    loop {
        if *stopping.borrow() {
            return;
        }
        let now = inner.clock.now();
        if scanned.is_none_or(|at| at.elapsed() >= inner.tuning.secret_check) {
            scanned = Some(std::time::Instant::now());
            if let Err(e) = alerts::check_secret_expiry(&inner.deps.store, now).await {
                tracing::warn!(error = %e, "could not check client secrets' expiry dates");
            }
        }
        let deps = &inner.deps;
        match alerts::email_due(
            &deps.store,
            &deps.config.outbox,
            &deps.config.public_url,
            now,
        )
        .await
        {
            Ok(0) => {}
            Ok(_) => inner.wake.notify_waiters(),
            Err(e) => tracing::warn!(error = %e, "could not email alerts"),
        }
        if let Err(e) = alerts::deliver_due(&deps.store, &deps.keys, &deps.http, now).await {
            tracing::warn!(error = %e, "could not deliver alerts");
        }
        tokio::select! {
            _ = tokio::time::sleep(inner.tuning.alert_poll) => {}
            _ = stopping.changed() => {}
        }
    }
}

/// One look for mailboxes due, and their keep-alives. Answers how many were taken.
pub(super) async fn pass(inner: &Inner) -> StoreResult<usize> {
    let interval = inner.deps.config.outbox.keepalive;
    let now = inner.clock.now();
    let due = {
        let mut conn = inner.deps.store.conn().await?;
        store::mailboxes::keepalive_due(&mut conn, now - interval, BATCH).await?
    };
    let mut taken = 0;
    for (org_id, id) in due {
        if *inner.stopping.borrow() {
            break;
        }
        let mine = {
            let mut conn = inner.deps.store.conn().await?;
            store::mailboxes::take_keepalive(&mut conn, id, now - interval, now).await?
        };
        if !mine {
            continue;
        }
        taken += 1;
        let kept = keep_alive(inner, org_id, id).await;
        crate::metrics::get()
            .keepalives
            .get_or_create(&crate::metrics::OutcomeLabel {
                outcome: kept.label(),
            })
            .inc();
        let mut conn = inner.deps.store.conn().await?;
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
async fn keep_alive(inner: &Inner, org_id: OrgId, id: MailboxId) -> Kept {
    let deps = inner.deps.deps();
    match authorization::refresh_now(&deps, org_id, id).await {
        Ok(Ok(_)) => {}
        Ok(Err(TokenFailure::Refused(reason))) => {
            tracing::warn!(mailbox = %id, reason = %reason.message, "keep-alive: the provider refused the refresh");
            let mailbox = {
                let Ok(mut conn) = inner.deps.store.conn().await else {
                    return Kept::Retry("the database did not answer".into());
                };
                match store::mailboxes::get(&mut conn, org_id, id).await {
                    Ok(Some(mailbox)) => mailbox,
                    Ok(None) => return Kept::Ok,
                    Err(e) => return Kept::Retry(e.to_string()),
                }
            };
            return match authorization::mark_not_verified(&deps, &mailbox, reason).await {
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
    match authorization::verify(&deps, org_id, id).await {
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
