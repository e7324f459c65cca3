//! The workers. A dispatcher finds mailboxes with due mail and starts up to the mailbox's
//! connection limit of lanes for each, each lane holding a connection slot in the store. A
//! lane keeps one SMTP session open and sends the mailbox's messages over it one after the
//! other, each claimed under a lease and admitted by the throttle first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use lettre::address::Envelope;
use time::{Duration, OffsetDateTime};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use super::compose::{self, Draft};
use super::headers;
use super::throttle::{self, Admission};
use super::{Clock, OutboxDeps, Tuning};
use crate::domain::MailboxId;
use crate::domain::mailbox::{Mailbox, MailboxStatus, StatusReason, secret_fields};
use crate::domain::message::{Message, SmtpReply};
use crate::keys;
use crate::services::authorization::{self, SendFailure};
use crate::smtp::Session;
use crate::store::messages::{BodyKind, Outcome};
use crate::store::{self, StoreError, StoreResult};

fn millis(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn from_millis(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

pub(super) struct Inner {
    pub(super) deps: OutboxDeps,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) tuning: Tuning,
    /// Names this process's claims and connection slots.
    owner: String,
    pub(super) wake: Notify,
    lanes: Mutex<HashMap<MailboxId, u32>>,
    tasks: tokio::sync::Mutex<JoinSet<()>>,
    pub(super) stopping: watch::Sender<bool>,
}

/// The delivering side of the outbox; cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

impl Outbox {
    pub fn new(deps: OutboxDeps, clock: Arc<dyn Clock>, tuning: Tuning, owner: String) -> Self {
        Self {
            inner: Arc::new(Inner {
                deps,
                clock,
                tuning,
                owner,
                wake: Notify::new(),
                lanes: Mutex::default(),
                tasks: tokio::sync::Mutex::new(JoinSet::new()),
                stopping: watch::channel(false).0,
            }),
        }
    }

    /// Says that mail was accepted or released: look now rather than at the next poll.
    pub fn wake(&self) {
        self.inner.wake.notify_waiters();
        self.inner.wake.notify_one();
    }

    /// Starts the dispatcher.
    /// Starts the dispatcher.
    pub fn start(&self) -> tokio::task::JoinHandle<()> {
        let inner = self.inner.clone();
        tokio::spawn(async move { dispatch(inner).await })
    }

    /// Starts what a serving instance does beside delivering: the keep-alive, the client-secret
    /// checks and the alerts' emails and webhooks. They stop with [`Outbox::shutdown`], which
    /// lets the item in hand finish (not the command line's `--wait`, which only delivers).
    pub async fn start_upkeep(&self) {
        let mut tasks = self.inner.tasks.lock().await;
        tasks.spawn(super::keepalive::run(self.inner.clone()));
        tasks.spawn(super::keepalive::alerts_loop(self.inner.clone()));
    }

    /// One repair sweep now, as the dispatcher makes every 30 seconds (tests): held mail
    /// released or expired, orphaned mail failed.
    pub async fn sweep_now(&self) -> StoreResult<u64> {
        sweep(&self.inner).await
    }

    /// One keep-alive pass now (the command line, tests); answers how many mailboxes it took.
    pub async fn keep_alive_now(&self) -> StoreResult<usize> {
        super::keepalive::pass(&self.inner).await
    }

    /// Stops claiming work and lets messages being sent finish within `grace`; what is still
    /// being sent then is released back to the queue (it may have gone out: delivery is
    /// at-least-once).
    pub async fn shutdown(&self, grace: std::time::Duration) {
        self.inner.stopping.send_replace(true);
        self.wake();
        let mut tasks = self.inner.tasks.lock().await;
        let drained =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        let released = async {
            let _turn = self.inner.deps.store.write_permit().await;
            let mut conn = self.inner.deps.store.relaxed_conn().await?;
            release_owned(&mut conn, &self.inner.owner).await
        }
        .await;
        match released {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                released = n,
                "messages still being sent at shutdown were put back in the queue"
            ),
            Err(e) => tracing::warn!(error = %e, "could not release this instance's claims"),
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

/// How often the dispatcher repairs what races can leave behind (see `messages::sweep`).
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Wakes closer together than this are answered by one look for due mail: a lane already
/// sending for a mailbox takes its new mail without the dispatcher, which only adds lanes.
const DISPATCH_COALESCE: std::time::Duration = std::time::Duration::from_millis(20);

async fn dispatch(inner: Arc<Inner>) {
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

async fn sweep(inner: &Inner) -> StoreResult<u64> {
    let _turn = inner.deps.store.write_permit().await;
    let mut conn = inner.deps.store.relaxed_conn().await?;
    let deleted = StatusReason::new(
        "mailbox_deleted",
        "The mailbox was deleted before this message was sent.",
        Some("Send the message again through another mailbox.".into()),
    );
    let now = inner.clock.now();
    let repaired = store::messages::sweep(&mut conn, &deleted, now).await?;
    // Held mail does not wait forever: its mailbox may never be verified again.
    let held_max = inner.deps.config.outbox.held_max;
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
    drop(_turn);
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
    let now = inner.clock.now();
    let due = {
        let mut conn = inner.deps.store.relaxed_conn().await?;
        store::messages::due_mailboxes(&mut conn, now).await?
    };
    for (mailbox_id, count) in due {
        let mailbox = {
            let mut conn = inner.deps.store.relaxed_conn().await?;
            store::mailboxes::get_any(&mut conn, mailbox_id).await?
        };
        let Some(mailbox) = mailbox else { continue };
        let max = mailbox.effective_limits().connections;
        let running = inner
            .lanes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&mailbox_id)
            .copied()
            .unwrap_or(0);
        let wanted = u32::try_from(count).unwrap_or(u32::MAX).min(max);
        for _ in running..wanted {
            let slot = {
                let _turn = inner.deps.store.write_permit().await;
                let mut tx = inner.deps.store.relaxed_begin().await?;
                let slot = store::throttle::acquire_slot(
                    &mut tx,
                    mailbox_id,
                    max,
                    &inner.owner,
                    millis(inner.clock.now()),
                    lease_ms(&inner.tuning),
                )
                .await?;
                tx.commit().await?;
                slot
            };
            let Some(slot) = slot else { break };
            *inner
                .lanes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(mailbox_id)
                .or_default() += 1;
            let lane_inner = inner.clone();
            inner.tasks.lock().await.spawn(async move {
                let inner = lane_inner.clone();
                if let Err(e) = lane(&inner, mailbox_id, slot).await {
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

fn lease_ms(tuning: &Tuning) -> i64 {
    tuning.lease.whole_milliseconds() as i64
}

async fn end_lane(inner: &Arc<Inner>, mailbox_id: MailboxId, slot: i64) {
    let _turn = inner.deps.store.write_permit().await;
    if let Ok(mut conn) = inner.deps.store.relaxed_conn().await
        && let Err(e) =
            store::throttle::release_slot(&mut conn, mailbox_id, slot, &inner.owner).await
    {
        tracing::warn!(error = %e, "could not release a connection slot");
    }
    let mut lanes = inner.lanes.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(n) = lanes.get_mut(&mailbox_id) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            lanes.remove(&mailbox_id);
        }
    }
    drop(lanes);
    inner.wake.notify_one();
}

/// How stale a lane's copy of its mailbox may get.
const RELOAD: std::time::Duration = std::time::Duration::from_secs(1);

/// Why a lane stops after a message.
enum Next {
    Continue,
    Stop,
}

async fn lane(inner: &Arc<Inner>, mailbox_id: MailboxId, slot: i64) -> Result<(), StoreError> {
    let mut session: Option<Session> = None;
    let mut loaded: Option<(Mailbox, Option<secrecy::SecretString>, std::time::Instant)> = None;
    let mut idle_since = std::time::Instant::now();
    let mut renewed = std::time::Instant::now();
    let stopping = inner.stopping.subscribe();
    let result = async {
        loop {
            if *stopping.borrow() {
                return Ok(());
            }
            let now = inner.clock.now();
            if renewed.elapsed() > std::time::Duration::from_secs(30) {
                let _turn = inner.deps.store.write_permit().await;
                let mut conn = inner.deps.store.relaxed_conn().await?;
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
                let mut conn = inner.deps.store.relaxed_conn().await?;
                let Some(mailbox) = store::mailboxes::get_any(&mut conn, mailbox_id).await? else {
                    return Ok(());
                };
                let password = keys::get_secret(
                    &mut conn,
                    &inner.deps.keys,
                    &mailbox_id.to_string(),
                    secret_fields::PASSWORD,
                )
                .await
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                loaded = Some((mailbox, password, std::time::Instant::now()));
            }
            let Some((mailbox, password, _)) = loaded.clone() else {
                return Ok(());
            };
            if mailbox.status != MailboxStatus::Verified {
                let _turn = inner.deps.store.write_permit().await;
                let mut conn = inner.deps.store.relaxed_conn().await?;
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
            // Each claim has a token of its own: a lane whose lease was taken over cannot record
            // an outcome over the new holder's.
            let token = format!("{}/{}", inner.owner, uuid::Uuid::new_v4().simple());
            let claimed = {
                let _turn = inner.deps.store.write_permit().await;
                let mut conn = inner.deps.store.relaxed_conn().await?;
                store::messages::claim(&mut conn, mailbox_id, &token, now, now + inner.tuning.lease)
                    .await?
            };
            let Some(store::messages::Claimed { message, body }) = claimed else {
                if idle_since.elapsed() >= inner.tuning.linger {
                    return Ok(());
                }
                let mut stopping = stopping.clone();
                tokio::select! {
                    _ = inner.wake.notified() => {}
                    _ = tokio::time::sleep(std::time::Duration::from_millis(250)) => {}
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
            match deliver(inner, &mailbox, password, &claim, body, &mut session).await? {
                Next::Continue => {}
                Next::Stop => return Ok(()),
            }
        }
    }
    .await;
    if let Some(session) = session {
        session.quit().await;
    }
    result
}

fn held_reason(mailbox: &Mailbox) -> StatusReason {
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
struct Claim {
    message: Message,
    token: String,
    slot: i64,
}

/// The reason held mail of the installation's default sender shows to the organizations it
/// sends for: the operator's mailbox details are not theirs to see.
fn default_sender_held() -> StatusReason {
    StatusReason::new(
        "default_sender_not_verified",
        "The installation's default sender is Not Verified.",
        Some("The operator must verify the default sender; the mail is sent once it is.".into()),
    )
}

/// Runs `work` while renewing the claim's lease and the lane's connection slot, so that a long
/// send (a large message, a slow server) is not taken over by another worker.
async fn under_lease<F: std::future::Future>(
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
                let now = inner.clock.now();
                let _turn = inner.deps.store.write_permit().await;
                if let Ok(mut conn) = inner.deps.store.relaxed_conn().await {
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

/// Sends one claimed message and records its outcome.
async fn deliver(
    inner: &Arc<Inner>,
    mailbox: &Mailbox,
    password: Option<secrecy::SecretString>,
    claim: &Claim,
    body: Option<(BodyKind, Vec<u8>)>,
    session: &mut Option<Session>,
) -> Result<Next, StoreError> {
    let message = &claim.message;
    let store = &inner.deps.store;
    let prepared = match body {
        None => Err("the message's body is gone".to_owned()),
        Some((BodyKind::Draft, body)) => serde_json::from_slice::<Draft>(&body)
            .map_err(|e| format!("the kept message cannot be read: {e}"))
            .and_then(|draft| compose::compose(mailbox, &draft, message.via_default_sender)),
        Some((BodyKind::Mime, body)) => {
            envelope(&mailbox.username, &message.recipients).map(|envelope| (envelope, body))
        }
    };
    let (envelope, bytes) = match prepared {
        Ok(prepared) => prepared,
        Err(why) => {
            let reason = StatusReason::new(
                "cannot_compose",
                format!("Herald could not compose this message: {why}."),
                None,
            );
            finish(
                inner,
                claim,
                Outcome::Failed {
                    reply: None,
                    reason: &reason,
                },
            )
            .await?;
            return Ok(Next::Continue);
        }
    };
    if session
        .as_ref()
        .is_some_and(|s| !s.is_usable() || s.age() > inner.tuning.recycle)
        && let Some(old) = session.take()
    {
        old.quit().await;
    }
    if session.is_none() {
        let deps = inner.deps.deps();
        let opened = under_lease(
            inner,
            mailbox.id,
            claim,
            authorization::open_session(&deps, mailbox, password),
        )
        .await
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        match opened {
            Ok(opened) => *session = Some(opened),
            Err(failure) => return failed(inner, mailbox, claim, failure).await,
        }
    }
    // The throttle last, right before the send it counts: a message that may not go yet goes
    // back without counting an attempt, and the session waits with it. A mailbox without rate
    // limits (a custom server) has only its connection slots and its back-off, which the
    // dispatcher already honours.
    let limits = mailbox.effective_limits();
    let unlimited = limits.messages_per_minute.is_none()
        && limits.messages_per_day.is_none()
        && limits.recipients_per_day.is_none();
    let admission = if unlimited {
        (None, false)
    } else {
        let _turn = store.write_permit().await;
        let mut tx = store.relaxed_begin().await?;
        let mut state = store::throttle::load_for_update(&mut tx, mailbox.id).await?;
        // The time is read once the row is ours: another instance may have just sent.
        let now = millis(inner.clock.now());
        let admission = throttle::admit(
            &mut state,
            &mailbox.effective_limits(),
            u32::try_from(message.recipients.len()).unwrap_or(u32::MAX),
            now,
        );
        if let Admission::WaitUntil(t) = admission
            && t - now > LONG_WAIT_MS
        {
            // A daily limit: the mailbox rests until then, without connections held open.
            state.backoff_until = state.backoff_until.max(t);
        }
        store::throttle::save(&mut tx, mailbox.id, &state).await?;
        tx.commit().await?;
        (
            admission.map_wait(|t| (t, t - now)),
            state.backoff_level > 0,
        )
    };
    let (admission, backing_off) = admission;
    if let Some((until, wait)) = admission {
        let metrics = crate::metrics::get();
        metrics.throttle_waits.inc();
        metrics.throttle_wait_seconds.inc_by(wait as f64 / 1000.0);
        finish(
            inner,
            claim,
            Outcome::Release {
                next_attempt_at: message.next_attempt_at,
            },
        )
        .await?;
        if wait > LONG_WAIT_MS {
            return Ok(Next::Stop);
        }
        let mut stopping = inner.stopping.subscribe();
        tokio::select! {
            _ = inner.clock.sleep_until(from_millis(until)) => {}
            _ = stopping.changed() => {}
        }
        return Ok(Next::Continue);
    }
    let Some(open) = session.as_mut() else {
        return Ok(Next::Stop);
    };
    let sent = under_lease(inner, mailbox.id, claim, open.send(&envelope, &bytes)).await;
    match sent {
        Ok(reply) => {
            let reply = parse_reply(&reply);
            finish(inner, claim, Outcome::Sent { reply: &reply }).await?;
            if backing_off {
                let _turn = store.write_permit().await;
                let mut tx = store.relaxed_begin().await?;
                let mut state = store::throttle::load_for_update(&mut tx, mailbox.id).await?;
                if throttle::succeeded(&mut state) {
                    store::throttle::save(&mut tx, mailbox.id, &state).await?;
                }
                tx.commit().await?;
            }
            Ok(Next::Continue)
        }
        Err(failure) => {
            let classified = authorization::classify(&failure, mailbox, true);
            // Send As refused for an address that is not the mailbox's own is this message's
            // fault, not the mailbox's: the mailbox stays Verified and its other mail goes.
            if let SendFailure::Refused(reason) = &classified
                && reason.code == "send_as_denied"
                && !sends_as(&bytes, &mailbox.username)
            {
                let reply = authorization::reply_of(&failure);
                let from = headers::from_addresses(&bytes);
                let reason = StatusReason::new(
                    "send_as_denied",
                    format!(
                        "The server refused to send this message as {} ({}): it may be sent only as {}.",
                        if from.is_empty() {
                            "an address that is not the mailbox's".to_owned()
                        } else {
                            headers::shown(&from)
                        },
                        reply.line(),
                        mailbox.username
                    ),
                    Some(format!(
                        "Send it again with From: {}; the mailbox itself works.",
                        mailbox.username
                    )),
                );
                finish(
                    inner,
                    claim,
                    Outcome::Failed {
                        reply: Some(&reply),
                        reason: &reason,
                    },
                )
                .await?;
                return Ok(Next::Continue);
            }
            failed(inner, mailbox, claim, classified).await
        }
    }
}

/// Whether a message's only From is `address`: only then does a Send As refusal blame the
/// mailbox.
fn sends_as(message: &[u8], address: &str) -> bool {
    matches!(headers::from_addresses(message).as_slice(), [one] if one.eq_ignore_ascii_case(address))
}

/// A wait longer than this (a daily limit) ends the lane instead of holding its connection.
const LONG_WAIT_MS: i64 = 65_000;

fn envelope(from: &str, recipients: &[String]) -> Result<Envelope, String> {
    let parse = |a: &str| {
        a.parse::<lettre::Address>()
            .map_err(|e| format!("`{a}` is not an address: {e}"))
    };
    Envelope::new(
        Some(parse(from)?),
        recipients
            .iter()
            .map(|r| parse(r))
            .collect::<Result<_, _>>()?,
    )
    .map_err(|e| e.to_string())
}

/// `250 2.0.0 OK <id>` as code, enhanced code and text.
fn parse_reply(line: &str) -> SmtpReply {
    SmtpReply::parse(line)
}

/// Records a failed attempt: the mailbox's fault holds its mail, a rate-limit or quota reply
/// backs the mailbox off, another delay retries the message later, and a refusal fails it.
async fn failed(
    inner: &Arc<Inner>,
    mailbox: &Mailbox,
    claim: &Claim,
    failure: SendFailure,
) -> Result<Next, StoreError> {
    let message = &claim.message;
    let now = inner.clock.now();
    let store = &inner.deps.store;
    let too_old = now - message.created_at >= inner.deps.config.outbox.retry_for;
    let gave_up = |reply: &SmtpReply| {
        StatusReason::new(
            "gave_up",
            format!(
                "Still not sent after {} attempts over {} hours; the last reply was: {}",
                message.attempts,
                (now - message.created_at).whole_hours(),
                reply.line()
            ),
            Some("Check the mailbox and the recipients, then send the message again.".into()),
        )
    };
    match failure {
        SendFailure::Refused(reason) => {
            tracing::warn!(mailbox = %mailbox.id, reason = %reason.code, "the mailbox refused to send: holding its mail");
            let updated = authorization::mark_not_verified(&inner.deps.deps(), mailbox, reason)
                .await
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let held = held_reason(&updated);
            let shown = if message.via_default_sender {
                default_sender_held()
            } else {
                held.clone()
            };
            finish(
                inner,
                claim,
                Outcome::Held {
                    reply: None,
                    reason: &shown,
                },
            )
            .await?;
            let _turn = store.write_permit().await;
            let mut conn = store.relaxed_conn().await?;
            store::messages::hold_mailbox(
                &mut conn,
                mailbox.id,
                &held,
                &default_sender_held(),
                now,
            )
            .await?;
            Ok(Next::Stop)
        }
        SendFailure::Transient(reply) | SendFailure::Rejected(reply)
            if reply.is_rate_limit() || reply.is_quota() =>
        {
            let base = if reply.is_quota() {
                // A daily quota: try again in an hour, not in seconds.
                3_600_000
            } else {
                inner.tuning.backoff_base_ms
            };
            let until = {
                let _turn = store.write_permit().await;
                let mut tx = store.relaxed_begin().await?;
                let mut state = store::throttle::load_for_update(&mut tx, mailbox.id).await?;
                let until =
                    throttle::back_off(&mut state, millis(now), base, rand::random::<f64>());
                store::throttle::save(&mut tx, mailbox.id, &state).await?;
                tx.commit().await?;
                until
            };
            tracing::info!(mailbox = %mailbox.id, reply = %reply.line(), "the server asked to slow down: backing this mailbox off");
            let outcome = if too_old {
                let reason = gave_up(&reply);
                finish(
                    inner,
                    claim,
                    Outcome::Failed {
                        reply: Some(&reply),
                        reason: &reason,
                    },
                )
                .await?
            } else {
                finish(
                    inner,
                    claim,
                    Outcome::Retry {
                        next_attempt_at: from_millis(until),
                        reply: Some(&reply),
                    },
                )
                .await?
            };
            let _ = outcome;
            Ok(Next::Stop)
        }
        SendFailure::Transient(reply) => {
            if too_old {
                let reason = gave_up(&reply);
                finish(
                    inner,
                    claim,
                    Outcome::Failed {
                        reply: Some(&reply),
                        reason: &reason,
                    },
                )
                .await?;
            } else {
                let next = now + retry_delay(&inner.tuning, message.attempts, rand::random());
                finish(
                    inner,
                    claim,
                    Outcome::Retry {
                        next_attempt_at: next,
                        reply: Some(&reply),
                    },
                )
                .await?;
            }
            // No reply at all means the connection or the server is down: let the lane go.
            Ok(if reply.code.is_none() {
                Next::Stop
            } else {
                Next::Continue
            })
        }
        SendFailure::Rejected(reply) => {
            let reason = StatusReason::new(
                "message_rejected",
                format!("The server refused this message: {}", reply.line()),
                Some("Check the recipients and the message; the mailbox itself works.".into()),
            );
            finish(
                inner,
                claim,
                Outcome::Failed {
                    reply: Some(&reply),
                    reason: &reason,
                },
            )
            .await?;
            Ok(Next::Continue)
        }
    }
}

/// Exponential backoff with jitter: `base · 2^(attempt-1)`, at most `max`, then ±20 %.
pub(crate) fn retry_delay(tuning: &Tuning, attempts: u32, jitter: f64) -> Duration {
    let exp = 1i64 << attempts.saturating_sub(1).min(20);
    let base = tuning.retry_base.whole_milliseconds() as i64;
    let delay = base
        .saturating_mul(exp)
        .min(tuning.retry_max.whole_milliseconds() as i64);
    Duration::milliseconds((delay as f64 * (0.8 + 0.4 * jitter.clamp(0.0, 1.0))) as i64)
}

async fn finish(inner: &Inner, claim: &Claim, outcome: Outcome<'_>) -> StoreResult<bool> {
    let recorded = {
        let _turn = inner.deps.store.write_permit().await;
        let mut conn = inner.deps.store.relaxed_conn().await?;
        store::messages::finish(
            &mut conn,
            &claim.message.id,
            &claim.token,
            outcome,
            inner.clock.now(),
        )
        .await?
    };
    // Counted and alerted only when this outcome is the message's: a claim that was taken
    // over (the message may have been sent since) says nothing.
    if recorded {
        record(inner, claim, &outcome);
        // An alert's own email that fails is not alerted again (no loop); its failure shows
        // in the message log.
        if let Outcome::Failed { reason, .. } = &outcome
            && claim.message.source != crate::domain::message::MessageSource::Alert
            && let Err(e) = alert_failed(inner, &claim.message, reason).await
        {
            tracing::warn!(error = %e, "could not raise the alert for a failed message");
        }
    }
    Ok(recorded)
}

/// Tells the organization's admins that a message failed for good.
async fn alert_failed(inner: &Inner, message: &Message, reason: &StatusReason) -> StoreResult<()> {
    let mut conn = inner.deps.store.conn().await?;
    // The installation's default sender is the operator's mailbox: its name and id are not the
    // organization's to see.
    let mailbox = match message.mailbox_id {
        Some(id) if !message.via_default_sender => store::mailboxes::get_any(&mut conn, id).await?,
        _ => None,
    };
    crate::services::alerts::message_failed(
        &mut conn,
        message.org_id,
        mailbox.as_ref().map(|m| (m.id, m.name.as_str())),
        &message.id,
        reason,
        inner.clock.now(),
    )
    .await
}

/// Counts an attempt's outcome in the metrics.
fn record(inner: &Inner, claim: &Claim, outcome: &Outcome<'_>) {
    let metrics = crate::metrics::get();
    let code = |reply: Option<&SmtpReply>| reply.and_then(|r| r.code);
    match outcome {
        Outcome::Sent { reply } => {
            metrics.send("sent", None, code(Some(reply)));
            let latency = inner.clock.now() - claim.message.created_at;
            metrics
                .delivery_latency
                .observe(latency.as_seconds_f64().max(0.0));
        }
        Outcome::Retry { reply, .. } => metrics.send("retry", None, code(*reply)),
        Outcome::Release { .. } => metrics.send("released", None, None),
        Outcome::Failed { reply, reason } => {
            metrics.send("failed", Some(&reason.code), code(*reply))
        }
        Outcome::Held { reply, reason } => metrics.send("held", Some(&reason.code), code(*reply)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_up_to_the_ceiling() {
        let tuning = Tuning::default();
        assert_eq!(retry_delay(&tuning, 1, 0.5), Duration::seconds(30));
        assert_eq!(retry_delay(&tuning, 2, 0.5), Duration::seconds(60));
        assert_eq!(retry_delay(&tuning, 30, 0.5), Duration::hours(1));
        assert!(retry_delay(&tuning, 1, 0.0) >= Duration::seconds(24));
        assert!(retry_delay(&tuning, 1, 1.0) <= Duration::seconds(36));
    }

    #[test]
    fn a_250_reply_is_split_into_its_parts() {
        let reply = parse_reply("250 2.0.0 OK <id@x> [Hostname=y]");
        assert_eq!(reply.code, Some(250));
        assert_eq!(reply.enhanced.as_deref(), Some("2.0.0"));
        assert_eq!(reply.text, "2.0.0 OK <id@x> [Hostname=y]");
    }
}
