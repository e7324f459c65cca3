//! The sign-in rate limit: attempts per account and per client address over a sliding window,
//! counted in this instance's memory and in the database every instance reads.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;

use crate::services::views::Store;
use crate::services::{ServiceResult, sign_in};

/// Which limit stopped a sign-in attempt, and for how long.
#[derive(Debug, PartialEq, Eq)]
pub struct Throttled {
    pub per_account: bool,
    pub retry_after_secs: u64,
}

/// An attempt counted against both limits until it proves to be a success.
#[derive(Debug)]
#[must_use = "a reservation must be released on success or kept as a failure"]
pub struct Attempt {
    account_key: String,
    address_key: String,
    at: i64,
}

/// Counts sign-in attempts per account and per client address over a sliding window.
///
/// An attempt is counted *before* the password is checked, under one lock, so a burst of
/// parallel guesses cannot all pass the check before any is recorded; a successful sign-in then
/// takes its attempt back. This instance's count is kept in memory; failures are also recorded
/// in the database, where every instance checks them (see [`LoginThrottle::shared_check`]).
#[derive(Default)]
pub struct LoginThrottle {
    inner: Mutex<ThrottleState>,
}

#[derive(Default)]
struct ThrottleState {
    attempts: HashMap<String, VecDeque<i64>>,
    last_prune: i64,
}

impl LoginThrottle {
    pub const WINDOW_SECS: i64 = 15 * 60;
    pub const PER_ACCOUNT: usize = 5;
    pub const PER_ADDRESS: usize = 20;
    const MAX_TRACKED: usize = 100_000;

    fn keys(account: &str, addr: IpAddr) -> (String, String) {
        let addr = match addr.to_canonical() {
            IpAddr::V4(v4) => v4.to_string(),
            // One IPv6 client usually holds a whole /64.
            IpAddr::V6(v6) => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        };
        (format!("account:{account}"), format!("address:{addr}"))
    }

    /// Counts an attempt, or refuses it when either limit is reached.
    pub fn attempt(&self, account: &str, addr: IpAddr, now: i64) -> Result<Attempt, Throttled> {
        let (account_key, address_key) = Self::keys(account, addr);
        let mut state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        state.prune(now);
        for (key, limit, per_account) in [
            (&account_key, Self::PER_ACCOUNT, true),
            (&address_key, Self::PER_ADDRESS, false),
        ] {
            if let Some(times) = state.attempts.get_mut(key) {
                while times.front().is_some_and(|t| *t <= now - Self::WINDOW_SECS) {
                    times.pop_front();
                }
                if times.len() >= limit {
                    let oldest = times.front().copied().unwrap_or(now);
                    return Err(Throttled {
                        per_account,
                        retry_after_secs: (oldest + Self::WINDOW_SECS - now).max(1) as u64,
                    });
                }
            }
        }
        for key in [&account_key, &address_key] {
            state
                .attempts
                .entry(key.clone())
                .or_default()
                .push_back(now);
        }
        Ok(Attempt {
            account_key,
            address_key,
            at: now,
        })
    }

    /// The attempt succeeded: it no longer counts, and the account's earlier failures are
    /// forgiven (the address's are not).
    pub fn succeeded(&self, attempt: Attempt) {
        let mut state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        state.attempts.remove(&attempt.account_key);
        if let Some(times) = state.attempts.get_mut(&attempt.address_key)
            && let Some(pos) = times.iter().rposition(|t| *t == attempt.at)
        {
            times.remove(pos);
        }
    }

    /// The attempt failed: it keeps counting.
    pub fn failed(&self, attempt: Attempt) {
        drop(attempt);
    }

    /// The password was not checked (Herald was busy): the attempt no longer counts against
    /// the account, so someone retrying during a flood is not locked out of it, but still
    /// counts against the address.
    pub fn busy(&self, attempt: Attempt) {
        let mut state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(times) = state.attempts.get_mut(&attempt.account_key)
            && let Some(pos) = times.iter().rposition(|t| *t == attempt.at)
        {
            times.remove(pos);
        }
    }

    /// [`LoginThrottle::busy`] for the attempt recorded in the database.
    pub async fn shared_busy(store: &Store, attempt: SharedAttempt) -> ServiceResult<()> {
        sign_in::forget_attempt(store, &attempt.account_id).await
    }

    /// Records the attempt in the database before its password is checked, then counts what
    /// every instance recorded: parallel guesses spread over several instances meet the same
    /// limits. A refused attempt is taken back.
    pub async fn shared_attempt(
        store: &Store,
        account: &str,
        addr: IpAddr,
        now: i64,
    ) -> ServiceResult<Result<SharedAttempt, Throttled>> {
        let (account_key, address_key) = Self::keys(account, addr);
        let (account_key, address_key) = (
            format!("signin:{account_key}"),
            format!("signin:{address_key}"),
        );
        let reserved = sign_in::reserve_attempt(
            store,
            &[
                (&account_key, Self::PER_ACCOUNT as i64),
                (&address_key, Self::PER_ADDRESS as i64),
            ],
            now,
            now - Self::WINDOW_SECS,
        )
        .await?;
        let ids = match reserved {
            Ok(reservation) => reservation.ids,
            Err(exceeded) => {
                return Ok(Err(Throttled {
                    per_account: exceeded.key == 0,
                    retry_after_secs: (exceeded.oldest.unwrap_or(now) + Self::WINDOW_SECS - now)
                        .max(1) as u64,
                }));
            }
        };
        let attempt = SharedAttempt {
            account_key,
            // The keys' ids in their order: the account's, then the address's.
            account_id: ids.first().cloned().unwrap_or_default(),
            address_id: ids.get(1).cloned().unwrap_or_default(),
        };
        Ok(Ok(attempt))
    }

    /// The attempt succeeded: it no longer counts, and the account's recorded failures are
    /// forgiven (the address's are not). A failed attempt simply stays recorded.
    pub async fn shared_succeeded(store: &Store, attempt: SharedAttempt) -> ServiceResult<()> {
        sign_in::forgive_attempts(store, &attempt.account_key, &attempt.address_id).await
    }
}

/// A sign-in attempt recorded in the database (see [`LoginThrottle::shared_attempt`]).
#[derive(Debug)]
pub struct SharedAttempt {
    account_key: String,
    account_id: String,
    address_id: String,
}

impl ThrottleState {
    /// Bounds memory: at most every ten seconds, forget windows that have passed; if the map is
    /// still too big, keep only the keys that are currently blocked.
    fn prune(&mut self, now: i64) {
        if self.attempts.len() < LoginThrottle::MAX_TRACKED || now - self.last_prune < 10 {
            return;
        }
        self.last_prune = now;
        let cutoff = now - LoginThrottle::WINDOW_SECS;
        self.attempts
            .retain(|_, times| times.back().is_some_and(|t| *t > cutoff));
        if self.attempts.len() >= LoginThrottle::MAX_TRACKED {
            self.attempts.retain(|key, times| {
                let limit = if key.starts_with("account:") {
                    LoginThrottle::PER_ACCOUNT
                } else {
                    LoginThrottle::PER_ADDRESS
                };
                times.len() >= limit
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(
        throttle: &LoginThrottle,
        account: &str,
        addr: IpAddr,
        now: i64,
    ) -> Result<(), Throttled> {
        throttle
            .attempt(account, addr, now)
            .map(|a| throttle.failed(a))
    }

    #[test]
    fn account_limit_applies_after_five_failures_and_lifts_after_the_window() {
        let throttle = LoginThrottle::default();
        let addr = IpAddr::from([192, 0, 2, 1]);
        for i in 0..LoginThrottle::PER_ACCOUNT {
            assert!(fail(&throttle, "ann@example.com", addr, 1000 + i as i64).is_ok());
        }
        let limited = throttle.attempt("ann@example.com", addr, 1010).unwrap_err();
        assert!(limited.per_account);
        assert_eq!(
            limited.retry_after_secs,
            (1000 + LoginThrottle::WINDOW_SECS - 1010) as u64
        );
        // Another account from the same address is still allowed.
        assert!(throttle.attempt("bob@example.com", addr, 1010).is_ok());
        // After the window, the account may try again.
        assert!(
            throttle
                .attempt("ann@example.com", addr, 1005 + LoginThrottle::WINDOW_SECS)
                .is_ok()
        );
    }

    #[test]
    fn attempts_count_before_their_outcome_is_known() {
        // Parallel guesses: each is counted as it starts, so the sixth is refused even though
        // none of the first five has finished.
        let throttle = LoginThrottle::default();
        let addr = IpAddr::from([192, 0, 2, 9]);
        let in_flight: Vec<_> = (0..LoginThrottle::PER_ACCOUNT)
            .map(|_| throttle.attempt("ann@example.com", addr, 10).unwrap())
            .collect();
        assert!(throttle.attempt("ann@example.com", addr, 10).is_err());
        drop(in_flight);
    }

    #[test]
    fn address_limit_spans_accounts_and_ipv4_mapped_addresses_are_ipv4() {
        let throttle = LoginThrottle::default();
        let addr = IpAddr::from([192, 0, 2, 2]);
        for i in 0..LoginThrottle::PER_ADDRESS {
            fail(&throttle, &format!("user{i}@example.com"), addr, 50).unwrap();
        }
        let limited = throttle.attempt("fresh@example.com", addr, 60).unwrap_err();
        assert!(!limited.per_account);
        let mapped: IpAddr = "::ffff:192.0.2.2".parse().unwrap();
        assert!(throttle.attempt("fresh@example.com", mapped, 60).is_err());
        let other_v4: IpAddr = "::ffff:192.0.2.3".parse().unwrap();
        assert!(throttle.attempt("fresh@example.com", other_v4, 60).is_ok());
    }

    #[test]
    fn success_takes_its_attempt_back_and_clears_the_account() {
        let throttle = LoginThrottle::default();
        let addr = IpAddr::from([192, 0, 2, 4]);
        for _ in 0..LoginThrottle::PER_ACCOUNT - 1 {
            fail(&throttle, "ann@example.com", addr, 10).unwrap();
        }
        let ok = throttle.attempt("ann@example.com", addr, 11).unwrap();
        throttle.succeeded(ok);
        for _ in 0..LoginThrottle::PER_ACCOUNT - 1 {
            fail(&throttle, "ann@example.com", addr, 12).unwrap();
        }
        assert!(throttle.attempt("ann@example.com", addr, 12).is_ok());
        // Many people signing in from one office address do not lock it.
        let office = IpAddr::from([198, 51, 100, 1]);
        for i in 0..LoginThrottle::PER_ADDRESS * 2 {
            let attempt = throttle
                .attempt(&format!("u{i}@example.com"), office, 20)
                .unwrap();
            throttle.succeeded(attempt);
        }
    }
}
