//! The dispatcher finds mailboxes with due mail and starts up to the mailbox's connection
//! limit of lanes for each, each lane holding a connection slot in the store. A lane keeps one
//! connection open and sends the mailbox's messages over it one after the other, each claimed
//! under a lease and admitted by the throttle first.

use std::sync::Arc;
use tracing::Instrument as _;

use super::deliver::*;
use super::state::*;
use crate::access::{AccessError, Connection, Credential};
use crate::domain::MailboxId;
use crate::domain::mailbox::{Mailbox, MailboxStatus, StatusReason};
use crate::store::{self, StoreError, StoreResult};

/// How often the dispatcher repairs what races can leave behind (see `messages::sweep`).
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Wakes closer together than this are answered by one look for due mail: a lane already
/// sending for a mailbox takes its new mail without the dispatcher, which only adds lanes.
const DISPATCH_COALESCE: std::time::Duration = std::time::Duration::from_millis(20);

pub(super) async fn dispatch(inner: Arc<Inner>) {
    let mut stopping = inner.stopping.subscribe();
    let mut swept: Option<std::time::Instant> = None;
    let mut looked: Option<std::time::Instant> = None;
    loop {
        if *stopping.borrow() {
            return;
        }
        if let Some(rest) = looked.and_then(|at| DISPATCH_COALESCE.checked_sub(at.elapsed())) {
            tokio::select! {
                _ = tokio::time::sleep(rest) => {}
                _ = stopping.changed() => continue,
            }
        }
        looked = Some(std::time::Instant::now());
        if swept.is_none_or(|at| at.elapsed() >= SWEEP_EVERY) {
            swept = Some(std::time::Instant::now());
            if let Err(e) = sweep(&inner).await {
                tracing::warn!(error = %e, "the outbox could not repair its queue");
            }
        }
        if let Err(e) = dispatch_once(&inner).await {
            tracing::warn!(error = %e, "the outbox could not look for due mail");
        }
        tokio::select! {
            _ = inner.wake.notified() => {}
            _ = tokio::time::sleep(inner.tuning.poll) => {}
            _ = stopping.changed() => {}
        }
    }
}

pub(super) async fn sweep(inner: &Inner) -> StoreResult<u64> {
    let mut conn = inner.access.store.relaxed_writer().await?;
    let deleted = StatusReason::new(
        "mailbox_deleted",
        "The mailbox was deleted before this message was sent.",
        Some("Send the message again through another mailbox.".into()),
    );
    let now = inner.access.clock.now();
    let repaired = store::messages::sweep(&mut conn, &deleted, now).await?;
    // Held mail does not wait forever: its mailbox may never be verified again.
    let held_max = inner.access.config.outbox.held_max;
    let expired = StatusReason::new(
        "held_expired",
        format!(
            "Held for more than {} hours without a Verified mailbox to send it (HERALD_HELD_MAX_HOURS).",
            held_max.whole_hours()
        ),
        Some("Verify the mailbox (or add one), then send the message again.".into()),
    );
    let failed = store::messages::expire_held(&mut conn, now - held_max, &expired, now).await?;
    drop(conn);
    for message in &failed {
        tracing::info!(message = %message.id, "held mail expired");
        crate::metrics::get().send("failed", Some("held_expired"), None);
        if message.source != crate::domain::message::MessageSource::Alert
            && let Err(e) = alert_failed(inner, message, &expired).await
        {
            tracing::warn!(error = %e, "could not raise the alert for expired held mail");
        }
    }
    Ok(repaired + failed.len() as u64)
}

async fn dispatch_once(inner: &Arc<Inner>) -> StoreResult<()> {
    let now = inner.access.clock.now();
    let due = {
        let mut conn = inner.access.store.relaxed_conn().await?;
        store::messages::due_mailboxes(&mut conn, now).await?
    };
    for (mailbox_id, count) in due {
        let mailbox = {
            let mut conn = inner.access.store.relaxed_conn().await?;
            store::mailboxes::get_any(&mut conn, mailbox_id).await?
        };
        let Some(mailbox) = mailbox else { continue };
        let max = mailbox.effective_limits().connections;
        let wanted = u32::try_from(count).unwrap_or(u32::MAX).min(max);
        let running = {
            let mut lanes = inner.lanes.lock().unwrap_or_else(|e| e.into_inner());
            match lanes.get_mut(&mailbox_id) {
                Some(l) => {
                    // Mail that came due without a wake (a retry's time, another instance's
                    // accept): the idle lanes take it.
                    l.max = max;
                    for _ in 0..wanted.min(l.running) {
                        l.wake.notify_one();
                    }
                    l.running
                }
                None => 0,
            }
        };
        for _ in running..wanted {
            let slot = {
                let mut writer = inner.access.store.relaxed_writer().await?;
                let mut tx = writer.begin().await?;
                let slot = store::throttle::acquire_slot(
                    &mut tx,
                    mailbox_id,
                    max,
                    &inner.owner,
                    millis(inner.access.clock.now()),
                    lease_ms(&inner.tuning),
                )
                .await?;
                tx.commit().await.map_err(StoreError::from)?;
                slot
            };
            let Some(slot) = slot else { break };
            let lane_wake = {
                let mut lanes = inner.lanes.lock().unwrap_or_else(|e| e.into_inner());
                let l = lanes.entry(mailbox_id).or_insert_with(|| Lanes {
                    running: 0,
                    max,
                    wake: Arc::default(),
                });
                l.running += 1;
                l.wake.clone()
            };
            let lane_inner = inner.clone();
            inner.tasks.lock().await.spawn(async move {
                let inner = lane_inner.clone();
                if let Err(e) = lane(&inner, mailbox_id, slot, &lane_wake).await {
                    tracing::warn!(mailbox = %mailbox_id, error = %e, "an outbox lane stopped on an error");
                }
                end_lane(&inner, mailbox_id, slot).await;
            });
        }
    }
    // Reap finished lanes so the set does not grow.
    let mut tasks = inner.tasks.lock().await;
    while tasks.try_join_next().is_some() {}
    Ok(())
}

async fn end_lane(inner: &Arc<Inner>, mailbox_id: MailboxId, slot: i64) {
    let _turn = inner.access.store.write_permit().await;
    if let Ok(mut conn) = inner.access.store.relaxed_conn().await
        && let Err(e) =
            store::throttle::release_slot(&mut conn, mailbox_id, slot, &inner.owner).await
    {
        tracing::warn!(error = %e, "could not release a connection slot");
    }
    let mut lanes = inner.lanes.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(l) = lanes.get_mut(&mailbox_id) {
        l.running = l.running.saturating_sub(1);
        if l.running == 0 {
            lanes.remove(&mailbox_id);
        }
    }
    drop(lanes);
    inner.wake.notify_one();
}

/// How stale a lane's copy of its mailbox may get.
const RELOAD: std::time::Duration = std::time::Duration::from_secs(1);

async fn lane(
    inner: &Arc<Inner>,
    mailbox_id: MailboxId,
    slot: i64,
    wake: &tokio::sync::Notify,
) -> Result<(), AccessError> {
    let mut session: Option<Box<dyn Connection>> = None;
    let mut hand = Hand::default();
    let mut loaded: Option<(Mailbox, Credential, std::time::Instant)> = None;
    let mut idle_since = std::time::Instant::now();
    let mut renewed = std::time::Instant::now();
    let stopping = inner.stopping.subscribe();
    let result = async {
        loop {
            if *stopping.borrow() {
                return Ok(());
            }
            let now = inner.access.clock.now();
            if renewed.elapsed() > std::time::Duration::from_secs(30) {
                let mut conn = inner.access.store.relaxed_writer().await?;
                let kept = store::throttle::renew_slot(
                    &mut conn,
                    mailbox_id,
                    slot,
                    &inner.owner,
                    millis(now) + lease_ms(&inner.tuning),
                )
                .await?;
                if !kept {
                    return Ok(());
                }
                renewed = std::time::Instant::now();
            }
            // The mailbox is read again at least every second (a change of status holds its
            // mail), and whenever a session must be opened.
            if session.is_none()
                || loaded
                    .as_ref()
                    .is_none_or(|(_, _, at)| at.elapsed() > RELOAD)
            {
                let mut conn = inner.access.store.relaxed_conn().await?;
                let Some(mailbox) = store::mailboxes::get_any(&mut conn, mailbox_id).await? else {
                    return Ok(());
                };
                drop(conn);
                let credential = Credential::load(&inner.access, &mailbox).await?;
                loaded = Some((mailbox, credential, std::time::Instant::now()));
            }
            let Some((mailbox, credential, _)) = loaded.clone() else {
                return Ok(());
            };
            if mailbox.status != MailboxStatus::Verified {
                // What this lane holds goes back first, to be held with the rest.
                hand.release(inner).await;
                let mut conn = inner.access.store.relaxed_writer().await?;
                store::messages::hold_mailbox(
                    &mut conn,
                    mailbox_id,
                    &held_reason(&mailbox),
                    &default_sender_held(),
                    now,
                )
                .await?;
                return Ok(());
            }
            if hand.is_stale(&inner.tuning) {
                hand.release(inner).await;
            }
            if hand.is_empty() {
                // Each claim has a token of its own: a lane whose lease was taken over cannot
                // record an outcome over the new holder's.
                let token = format!("{}/{}", inner.owner, uuid::Uuid::new_v4().simple());
                let claimed = {
                    let mut conn = inner.access.store.relaxed_writer().await?;
                    store::messages::claim_many(
                        &mut conn,
                        mailbox_id,
                        &token,
                        now,
                        now + inner.tuning.lease,
                        hand.limit(claim_ahead(&mailbox)),
                    )
                    .await?
                };
                hand.fill(claimed, token);
            }
            let Some((store::messages::Claimed { message, body }, token)) = hand.next() else {
                if idle_since.elapsed() >= inner.tuning.linger {
                    return Ok(());
                }
                let mut stopping = stopping.clone();
                // Woken for new mail (by its accept, or by the dispatcher's look for due
                // mail); the sleep is only a safety net.
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(inner.tuning.poll.max(std::time::Duration::from_millis(250))) => {}
                    _ = stopping.changed() => {}
                }
                continue;
            };
            idle_since = std::time::Instant::now();
            let claim = Claim {
                message,
                token,
                slot,
            };
            // Every line logged while it is sent names the message.
            let span = tracing::info_span!(
                "delivery",
                message_id = %claim.message.id,
                mailbox_id = %mailbox.id,
            );
            match deliver(inner, &mailbox, &credential, &claim, body, &mut session)
                .instrument(span)
                .await?
            {
                Next::Continue => {}
                Next::Stop => return Ok(()),
            }
        }
    }
    .await;
    hand.release(inner).await;
    if let Some(session) = session {
        session.quit().await;
    }
    result
}

/// How many messages a lane claims at once: several for a mailbox without rate limits (one
/// statement instead of one per message), one where the throttle decides message by message.
const CLAIM_AHEAD: u32 = 8;

fn claim_ahead(mailbox: &Mailbox) -> u32 {
    let limits = mailbox.effective_limits();
    let unlimited = limits.messages_per_minute.is_none()
        && limits.messages_per_day.is_none()
        && limits.recipients_per_day.is_none();
    if unlimited { CLAIM_AHEAD } else { 1 }
}

/// The messages a lane has claimed and not yet sent, under one claim's token.
#[derive(Default)]
struct Hand {
    claimed: std::collections::VecDeque<store::messages::Claimed>,
    token: String,
    at: Option<std::time::Instant>,
    /// How many the last claim asked for.
    asked: u32,
    /// Whether it got all it asked for (more may wait).
    got_all: bool,
}

impl Hand {
    /// How many to claim next, up to `cap`: one, then twice as many each time a claim got all
    /// it asked for. A short burst is spread over the mailbox's lanes, a long queue is taken
    /// `cap` at a time.
    fn limit(&mut self, cap: u32) -> u32 {
        self.asked = if self.got_all {
            (self.asked * 2).clamp(1, cap.max(1))
        } else {
            1
        };
        self.asked
    }

    fn is_empty(&self) -> bool {
        self.claimed.is_empty()
    }

    /// Whether half the claim's lease has gone: the rest go back rather than be sent so
    /// late that another worker may have taken them over.
    fn is_stale(&self, tuning: &super::Tuning) -> bool {
        let half = std::time::Duration::try_from(tuning.lease / 2).unwrap_or_default();
        !self.is_empty() && self.at.is_some_and(|at| at.elapsed() > half)
    }

    fn fill(&mut self, claimed: Vec<store::messages::Claimed>, token: String) {
        self.got_all = claimed.len() as u32 >= self.asked;
        self.claimed = claimed.into();
        self.token = token;
        self.at = Some(std::time::Instant::now());
    }

    fn next(&mut self) -> Option<(store::messages::Claimed, String)> {
        self.claimed.pop_front().map(|c| (c, self.token.clone()))
    }

    /// Puts what is left back in the queue, without counting an attempt.
    async fn release(&mut self, inner: &Inner) {
        if self.claimed.is_empty() {
            return;
        }
        let now = inner.access.clock.now();
        let _turn = inner.access.store.write_permit().await;
        let released = async {
            let mut tx = inner.access.store.relaxed_begin().await?;
            for c in &self.claimed {
                let release = store::messages::Outcome::Release {
                    next_attempt_at: c.message.next_attempt_at,
                };
                store::messages::finish(&mut tx, &c.message.id, &self.token, release, now).await?;
            }
            tx.commit().await.map_err(StoreError::from)
        }
        .await;
        if let Err(e) = released {
            // Their lease runs out, and another lane takes them then.
            tracing::warn!(error = %e, "could not put claimed messages back in the queue");
        }
        self.claimed.clear();
    }
}
