//! Delivering one claimed message: compose it, open the mailbox's transport if needed, pass
//! the throttle, send, and record the outcome: sent, retried later, held, or failed with a
//! reason.

use std::sync::Arc;

use lettre::address::Envelope;
use time::Duration;

use super::Tuning;
use super::compose::{self, Draft};
use super::headers;
use super::state::*;
use super::throttle::{self, Admission};
use crate::access::{self, AccessError, Connection, Credential, Refusal, SendFailure};
use crate::domain::mailbox::{Mailbox, StatusReason};
use crate::domain::message::{Message, SmtpReply};
use crate::store::messages::{BodyKind, Outcome};
use crate::store::{self, StoreError, StoreResult};

/// Sends one claimed message and records its outcome.
pub(super) async fn deliver(
    inner: &Arc<Inner>,
    mailbox: &Mailbox,
    credential: &Credential,
    claim: &Claim,
    body: Option<(BodyKind, Vec<u8>)>,
    session: &mut Option<Box<dyn Connection>>,
) -> Result<Next, AccessError> {
    let message = &claim.message;
    let store = &inner.access.store;
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
        let opened = under_lease(
            inner,
            mailbox.id,
            claim,
            access::transport_for(mailbox).open(&inner.access, mailbox, credential),
        )
        .await?;
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
        let mut writer = store.relaxed_writer().await?;
        let mut tx = writer.begin().await?;
        let mut state = store::throttle::load_for_update(&mut tx, mailbox.id).await?;
        // The time is read once the row is ours: another instance may have just sent.
        let now = millis(inner.access.clock.now());
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
        tx.commit().await.map_err(StoreError::from)?;
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
            _ = inner.access.clock.sleep_until(from_millis(until)) => {}
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
            finish(inner, claim, Outcome::Sent { reply: &reply }).await?;
            if backing_off {
                let mut writer = store.relaxed_writer().await?;
                let mut tx = writer.begin().await?;
                let mut state = store::throttle::load_for_update(&mut tx, mailbox.id).await?;
                if throttle::succeeded(&mut state) {
                    store::throttle::save(&mut tx, mailbox.id, &state).await?;
                }
                tx.commit().await.map_err(StoreError::from)?;
            }
            Ok(Next::Continue)
        }
        Err(Refusal {
            failure: classified,
            reply,
        }) => {
            // Send As refused for an address that is not the mailbox's own is this message's
            // fault, not the mailbox's: the mailbox stays Verified and its other mail goes.
            if let SendFailure::Refused(reason) = &classified
                && reason.code == "send_as_denied"
                && !sends_as(&bytes, &mailbox.username)
            {
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

/// Records a failed attempt: the mailbox's fault holds its mail, a rate-limit or quota reply
/// backs the mailbox off, another delay retries the message later, and a refusal fails it.
async fn failed(
    inner: &Arc<Inner>,
    mailbox: &Mailbox,
    claim: &Claim,
    failure: SendFailure,
) -> Result<Next, AccessError> {
    let message = &claim.message;
    let now = inner.access.clock.now();
    let store = &inner.access.store;
    let too_old = now - message.created_at >= inner.access.config.outbox.retry_for;
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
            let updated = access::mark_not_verified(&inner.access, mailbox, reason).await?;
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
            let mut conn = store.relaxed_writer().await?;
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
        SendFailure::Throttled { reply, retry_after } => {
            // As long as the provider said, and longer if it keeps saying so.
            let told = millis(now) + i64::try_from(retry_after.as_millis()).unwrap_or(i64::MAX);
            let base = inner.tuning.backoff_base_ms;
            let reason = too_old.then(|| gave_up(&reply));
            slow_down(inner, mailbox, claim, &reply, base, Some(told), reason).await
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
            let reason = too_old.then(|| gave_up(&reply));
            slow_down(inner, mailbox, claim, &reply, base, None, reason).await
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
            let reason = StatusReason::message_rejected(&reply);
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

/// Backs the mailbox off (at least until `told`, when the provider said how long) and retries
/// the message then, or fails it with `gave_up` when it has waited long enough.
async fn slow_down(
    inner: &Arc<Inner>,
    mailbox: &Mailbox,
    claim: &Claim,
    reply: &SmtpReply,
    base: i64,
    told: Option<i64>,
    gave_up: Option<StatusReason>,
) -> Result<Next, AccessError> {
    let store = &inner.access.store;
    let now = inner.access.clock.now();
    let until = {
        let mut writer = store.relaxed_writer().await?;
        let mut tx = writer.begin().await?;
        let mut state = store::throttle::load_for_update(&mut tx, mailbox.id).await?;
        let mut until = throttle::back_off(&mut state, millis(now), base, rand::random::<f64>());
        if let Some(told) = told {
            until = until.max(told);
            state.backoff_until = until;
        }
        store::throttle::save(&mut tx, mailbox.id, &state).await?;
        tx.commit().await.map_err(StoreError::from)?;
        until
    };
    tracing::info!(mailbox = %mailbox.id, reply = %reply.line(), "the server asked to slow down: backing this mailbox off");
    let outcome = match &gave_up {
        Some(reason) => Outcome::Failed {
            reply: Some(reply),
            reason,
        },
        None => Outcome::Retry {
            next_attempt_at: from_millis(until),
            reply: Some(reply),
        },
    };
    finish(inner, claim, outcome).await?;
    Ok(Next::Stop)
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

pub(super) async fn finish(
    inner: &Inner,
    claim: &Claim,
    outcome: Outcome<'_>,
) -> StoreResult<bool> {
    let recorded = {
        let mut conn = inner.access.store.relaxed_writer().await?;
        store::messages::finish(
            &mut conn,
            &claim.message.id,
            &claim.token,
            outcome,
            inner.access.clock.now(),
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
pub(super) async fn alert_failed(
    inner: &Inner,
    message: &Message,
    reason: &StatusReason,
) -> StoreResult<()> {
    let mut conn = inner.access.store.conn().await?;
    // The installation's default sender is the operator's mailbox: its name and id are not the
    // organization's to see.
    let mailbox = match message.mailbox_id {
        Some(id) if !message.via_default_sender => store::mailboxes::get_any(&mut conn, id).await?,
        _ => None,
    };
    access::alerts::message_failed(
        &mut conn,
        message.org_id,
        mailbox.as_ref().map(|m| (m.id, m.name.as_str())),
        &message.id,
        reason,
        inner.access.clock.now(),
    )
    .await
}

/// Counts an attempt's outcome in the metrics.
fn record(inner: &Inner, claim: &Claim, outcome: &Outcome<'_>) {
    let metrics = crate::metrics::get();
    let code = |reply: Option<&SmtpReply>| reply.and_then(|r| r.code);
    match outcome {
        Outcome::Sent { reply } => {
            tracing::debug!(reply = %reply.line(), "sent");
            metrics.send("sent", None, code(Some(reply)));
            let latency = inner.access.clock.now() - claim.message.created_at;
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
}
