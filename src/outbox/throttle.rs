//! The throttle's decisions, on the state the store keeps ([`ThrottleState`]): whether a
//! message may be sent now under the mailbox's limits, and how long to back off after the
//! server said "too many". Pure functions of the state and the time, so a simulated clock
//! drives them exactly as the real one does.
//!
//! The per-minute limit is a sliding log (exact: never more than the limit within any 60
//! seconds, as Exchange counts). Daily limits count per hour over the last 24 to 25 hours,
//! which errs on the safe side.

use crate::domain::message::Limits;
use crate::store::throttle::ThrottleState;

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;

/// Whether a send may start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Go: the send is counted.
    Go,
    /// Not before this time (Unix milliseconds).
    WaitUntil(i64),
}

impl Admission {
    /// `None` to go; the wait mapped by `f` otherwise.
    pub fn map_wait<T>(self, f: impl FnOnce(i64) -> T) -> Option<T> {
        match self {
            Self::Go => None,
            Self::WaitUntil(t) => Some(f(t)),
        }
    }
}

/// Decides, and counts the send when it may go.
pub fn admit(
    state: &mut ThrottleState,
    limits: &Limits,
    recipients: u32,
    now_ms: i64,
) -> Admission {
    if state.backoff_until > now_ms {
        return Admission::WaitUntil(state.backoff_until);
    }
    state.recent_sends.retain(|t| *t > now_ms - MINUTE_MS);
    let hour = now_ms.div_euclid(HOUR_MS);
    state.hourly.retain(|(h, _, _)| *h >= hour - 24);
    if let Some(per_minute) = limits.messages_per_minute {
        let per_minute = per_minute as usize;
        if state.recent_sends.len() >= per_minute {
            // The send that must leave the window before another may enter.
            let leaving = state.recent_sends[state.recent_sends.len() - per_minute];
            return Admission::WaitUntil(leaving + MINUTE_MS);
        }
    }
    let (messages, rcpts) = state
        .hourly
        .iter()
        .fold((0u64, 0u64), |(m, r), (_, bm, br)| {
            (m + u64::from(*bm), r + u64::from(*br))
        });
    // A bucket stops counting 25 hours after its hour began.
    let day_wait = || {
        let oldest = state
            .hourly
            .iter()
            .map(|(h, _, _)| *h)
            .min()
            .unwrap_or(hour);
        Admission::WaitUntil((oldest + 25) * HOUR_MS)
    };
    if let Some(per_day) = limits.messages_per_day
        && messages + 1 > u64::from(per_day)
    {
        return day_wait();
    }
    if let Some(per_day) = limits.recipients_per_day
        && rcpts > 0
        && rcpts + u64::from(recipients) > u64::from(per_day)
    {
        return day_wait();
    }
    if limits.messages_per_minute.is_some() {
        state.recent_sends.push(now_ms);
        state.recent_sends.sort_unstable();
    }
    match state.hourly.iter_mut().find(|(h, _, _)| *h == hour) {
        Some((_, m, r)) => {
            *m += 1;
            *r += recipients;
        }
        None => state.hourly.push((hour, 1, recipients)),
    }
    Admission::Go
}

/// The first back-off after a rate-limit reply; it doubles with each further one.
pub const BACKOFF_BASE_MS: i64 = 15_000;
/// The longest back-off.
pub const BACKOFF_MAX_MS: i64 = 15 * MINUTE_MS;

/// Backs the mailbox off after a rate-limit reply (`432 4.3.2` and its kind): exponentially,
/// with jitter of ±20 %. Answers until when.
pub fn back_off(state: &mut ThrottleState, now_ms: i64, base_ms: i64, jitter: f64) -> i64 {
    state.backoff_level = (state.backoff_level + 1).min(16);
    let exp = base_ms.saturating_mul(1 << (state.backoff_level - 1).min(12));
    let delay = exp.min(BACKOFF_MAX_MS.max(base_ms));
    let jittered = (delay as f64 * (0.8 + 0.4 * jitter.clamp(0.0, 1.0))) as i64;
    state.backoff_until = state.backoff_until.max(now_ms + jittered);
    state.backoff_until
}

/// A send went through: the back-off starts from the beginning next time.
pub fn succeeded(state: &mut ThrottleState) -> bool {
    let changed = state.backoff_level != 0;
    state.backoff_level = 0;
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::mailbox::Provider;

    fn exchange() -> Limits {
        Limits::of(Provider::Microsoft)
    }

    /// Drives the throttle like a worker with a simulated clock that jumps to each wait.
    fn run(limits: &Limits, messages: usize, recipients: u32) -> Vec<i64> {
        let mut state = ThrottleState::default();
        let mut now = 1_000_000_000_000;
        let mut sent = Vec::new();
        while sent.len() < messages {
            match admit(&mut state, limits, recipients, now) {
                Admission::Go => {
                    sent.push(now);
                    now += 37; // a send takes a little time
                }
                Admission::WaitUntil(t) => {
                    assert!(t > now, "a wait lies in the future");
                    now = t;
                }
            }
        }
        sent
    }

    #[test]
    fn exchange_mail_never_exceeds_30_in_any_minute_and_bursts_the_first_30() {
        let sent = run(&exchange(), 200, 1);
        for (i, t) in sent.iter().enumerate() {
            let in_window = sent[i..].iter().take_while(|u| **u < t + 60_000).count();
            assert!(
                in_window <= 30,
                "{in_window} sends within a minute from #{i}"
            );
        }
        assert!(sent[29] - sent[0] < 2_000, "the first 30 go at once");
        let minutes = (sent[199] - sent[0]) as f64 / 60_000.0;
        assert!(
            (6.0..7.1).contains(&minutes),
            "200 messages take about 6⅔ minutes, took {minutes}"
        );
    }

    #[test]
    fn a_daily_recipient_limit_waits_for_the_day_to_roll() {
        let limits = Limits {
            messages_per_minute: None,
            messages_per_day: None,
            recipients_per_day: Some(1_000),
            recipients_per_message: 500,
            connections: 3,
        };
        let mut state = ThrottleState::default();
        let now = 1_000_000_000_000;
        assert_eq!(admit(&mut state, &limits, 500, now), Admission::Go);
        assert_eq!(admit(&mut state, &limits, 500, now + 1), Admission::Go);
        let Admission::WaitUntil(until) = admit(&mut state, &limits, 1, now + 2) else {
            panic!("the day's recipients are spent")
        };
        assert!(until - now >= 24 * HOUR_MS && until - now <= 25 * HOUR_MS);
        assert_eq!(admit(&mut state, &limits, 1, until), Admission::Go);
    }

    #[test]
    fn back_off_doubles_up_to_a_ceiling_and_resets_after_success() {
        let mut state = ThrottleState::default();
        let first = back_off(&mut state, 0, BACKOFF_BASE_MS, 0.5);
        assert_eq!(first, BACKOFF_BASE_MS);
        let second = back_off(&mut state, first, BACKOFF_BASE_MS, 0.5);
        assert_eq!(second - first, 2 * BACKOFF_BASE_MS);
        for _ in 0..20 {
            let until = state.backoff_until;
            back_off(&mut state, until, BACKOFF_BASE_MS, 1.0);
        }
        let before = state.backoff_until;
        let next = back_off(&mut state, before, BACKOFF_BASE_MS, 1.0);
        assert!(next - before <= BACKOFF_MAX_MS * 12 / 10);
        assert!(succeeded(&mut state));
        assert_eq!(state.backoff_level, 0);
        assert_eq!(
            admit(&mut state, &exchange(), 1, next - 1),
            Admission::WaitUntil(next),
            "a back-off holds until it ends"
        );
    }
}
