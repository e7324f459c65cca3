//! Per-organization limits checked as mail is accepted, so that one organization cannot fill
//! the installation's disk or send without bound from the operator's address:
//!
//! - mail waiting to be sent (queued, sending or held): at most `HERALD_ORG_MAX_QUEUED_BYTES`
//!   and `HERALD_ORG_MAX_QUEUED_MESSAGES`, read with one indexed query at most once a second
//!   per organization and instance (see `TOTALS_FRESH`). Concurrent accepts
//!   may each see room for one more, so the limit can be passed by the messages accepted at
//!   the same moment (each at most `HERALD_MAX_MESSAGE_BYTES`): a bound on storage, not a
//!   quota to the message.
//! - mail through the installation's default sender: at most `HERALD_DEFAULT_SENDER_DAILY`
//!   messages per organization per calendar day in UTC (a day an operator and a customer can
//!   both read off a clock, and the same on every instance). The counter is raised in the
//!   database in one statement before the message is stored, so instances sharing the
//!   database never hand out more between them.
//!
//! Alerts (Herald's own notices to an organization's admins) pass both: they are few, and an
//! organization at its limit needs them most.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Instant;

use time::OffsetDateTime;

use super::Caller;
use crate::config::OutboxSettings;
use crate::domain::OrgId;
use crate::domain::message::MessageSource;
use crate::services::{ServiceError, ServiceResult};
use crate::store::{self, Store};

/// How long a client is told to wait when its organization's queue is full: mail leaves at the
/// providers' pace, so a minute frees some room unless the mail is held.
const QUEUE_FULL_RETRY_SECS: u64 = 60;

/// How long an organization's waiting totals, once read, are trusted, with this instance's own
/// accepts added to them: reading them for every message would cost a walk over the whole
/// queue each time, which a burst of accepts (the benchmark's 5,000) makes quadratic. Mail
/// that left meanwhile is seen at the next read, so a full queue may refuse for up to this
/// long after room was made; other instances' accepts are seen at the next read too.
const TOTALS_FRESH: std::time::Duration = std::time::Duration::from_secs(1);

struct Totals {
    waiting: store::org_limits::Waiting,
    read_at: Instant,
}

fn totals() -> std::sync::MutexGuard<'static, HashMap<OrgId, Totals>> {
    static TOTALS: LazyLock<Mutex<HashMap<OrgId, Totals>>> = LazyLock::new(Default::default);
    TOTALS.lock().unwrap_or_else(|e| e.into_inner())
}

fn recent_totals(org_id: OrgId) -> Option<store::org_limits::Waiting> {
    totals()
        .get(&org_id)
        .filter(|t| t.read_at.elapsed() < TOTALS_FRESH)
        .map(|t| t.waiting)
}

/// Refuses a message of `size` bytes when the organization's queue is full, or, for mail
/// through the default sender, when the organization's daily quota is spent (else takes one).
pub(super) async fn admit(
    store: &Store,
    settings: &OutboxSettings,
    caller: &Caller,
    via_default_sender: bool,
    size: u64,
    now: OffsetDateTime,
) -> ServiceResult<()> {
    if caller.source == MessageSource::Alert {
        return Ok(());
    }
    if recent_totals(caller.org_id).is_none() {
        let mut conn = store.conn().await?;
        let waiting = store::org_limits::waiting(&mut conn, caller.org_id).await?;
        totals().insert(
            caller.org_id,
            Totals {
                waiting,
                read_at: Instant::now(),
            },
        );
    }
    // Checked and counted under one lock, so concurrent accepts of this instance cannot all
    // see the same room. The message counts as waiting from now on, until the next read.
    let full = {
        let mut all = totals();
        let t = all.entry(caller.org_id).or_insert(Totals {
            waiting: store::org_limits::Waiting {
                messages: 0,
                bytes: 0,
            },
            read_at: Instant::now(),
        });
        let w = t.waiting;
        if w.messages >= settings.org_max_queued_messages
            || w.bytes.saturating_add(size) > settings.org_max_queued_bytes
        {
            Some(w)
        } else {
            t.waiting.messages += 1;
            t.waiting.bytes = t.waiting.bytes.saturating_add(size);
            None
        }
    };
    if let Some(waiting) = full {
        return Err(ServiceError::Limited {
            code: "queue_full",
            message: format!(
                "The organization already has {} messages ({}) waiting to be sent; this installation keeps at most {} messages and {} for one organization. Retry once some have left: verify the mailboxes whose mail is held, or cancel mail that is no longer needed.",
                waiting.messages,
                human_bytes(waiting.bytes),
                settings.org_max_queued_messages,
                human_bytes(settings.org_max_queued_bytes),
            ),
            retry_after: QUEUE_FULL_RETRY_SECS,
        });
    }
    if via_default_sender {
        let mut conn = store.conn().await?;
        let day = day_of(now);
        if !store::org_limits::take_default_sender(
            &mut conn,
            caller.org_id,
            day,
            settings.default_sender_daily,
        )
        .await?
        {
            return Err(ServiceError::Limited {
                code: "default_sender_quota",
                message: format!(
                    "The installation's default sender has sent {} messages for this organization today, its daily limit; it sends again after midnight UTC. Verify a mailbox of the organization's own under Settings › System › Outgoing Mail to send without this limit.",
                    settings.default_sender_daily
                ),
                retry_after: secs_to_next_day(now),
            });
        }
    }
    Ok(())
}

/// Days since 1970-01-01, UTC.
pub(crate) fn day_of(now: OffsetDateTime) -> i64 {
    now.unix_timestamp().div_euclid(86_400)
}

/// Seconds until the next midnight UTC, at least one.
fn secs_to_next_day(now: OffsetDateTime) -> u64 {
    let next = (day_of(now) + 1) * 86_400;
    u64::try_from(next - now.unix_timestamp())
        .unwrap_or(1)
        .max(1)
}

fn human_bytes(bytes: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if bytes >= 1024 * MIB {
        format!("{:.1} GiB", bytes as f64 / (1024 * MIB) as f64)
    } else if bytes >= MIB {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quota_day_ends_at_midnight_utc() {
        let late = time::macros::datetime!(2026-12-04 23:59:30 UTC);
        let early = time::macros::datetime!(2026-12-05 00:00:00 UTC);
        assert_eq!(day_of(early), day_of(late) + 1);
        assert_eq!(secs_to_next_day(late), 30);
        assert_eq!(secs_to_next_day(early), 86_400);
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_bytes(512), "512 bytes");
        assert_eq!(human_bytes(3 * 1024 * 1024 / 2), "1.5 MiB");
        assert_eq!(human_bytes(1 << 30), "1.0 GiB");
    }
}
