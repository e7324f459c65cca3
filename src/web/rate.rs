//! The request rate of each API key: a token bucket per key holding one minute's worth of
//! requests (`HERALD_API_RATE_PER_MINUTE`), refilled continuously, so a client may burst up to
//! the minute's allowance and then goes at the steady rate. Past it a request answers 429
//! `rate_limited` with `Retry-After`.
//!
//! The buckets live in each instance's memory: behind a load balancer spreading requests over N
//! instances a key gets up to N times the rate. That bounds what one key can make one instance
//! do, which is the point; an exact installation-wide count would cost a database write per
//! request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::domain::ApiKeyId;

/// Above this many keys tracked, buckets that have refilled completely are forgotten (they
/// would start full anyway).
const PRUNE_ABOVE: usize = 10_000;

/// A request costs this much credit; a key earns `per_minute` credit per millisecond, so a
/// minute earns `per_minute` requests (integers, so that no rounding lets an extra one in).
const COST: u64 = 60_000;

/// One key's allowance.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    credit: u64,
    at: Instant,
}

/// The buckets of every API key seen by this instance.
#[derive(Debug)]
pub struct ApiRate {
    per_minute: u64,
    buckets: Mutex<HashMap<ApiKeyId, Bucket>>,
}

impl ApiRate {
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute: u64::from(per_minute.max(1)),
            buckets: Mutex::default(),
        }
    }

    /// The bucket's credit at `now`, refilled up to one minute's worth.
    fn refilled(&self, bucket: &Bucket, now: Instant) -> u64 {
        let elapsed =
            u64::try_from(now.saturating_duration_since(bucket.at).as_millis()).unwrap_or(u64::MAX);
        bucket
            .credit
            .saturating_add(elapsed.saturating_mul(self.per_minute))
            .min(self.per_minute * COST)
    }

    /// Takes one request of `key`'s allowance at `now`; when none is left, answers how many
    /// seconds until one is (at least 1).
    pub fn take(&self, key: ApiKeyId, now: Instant) -> Result<(), u64> {
        let full = self.per_minute * COST;
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > PRUNE_ABOVE {
            buckets.retain(|_, b| self.refilled(b, now) < full);
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            credit: full,
            at: now,
        });
        bucket.credit = self.refilled(bucket, now);
        bucket.at = now;
        if bucket.credit >= COST {
            bucket.credit -= COST;
            return Ok(());
        }
        let wait_ms = (COST - bucket.credit).div_ceil(self.per_minute);
        Err(wait_ms.div_ceil(1000).max(1))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_key_bursts_a_minutes_worth_then_goes_at_the_steady_rate() {
        let rate = ApiRate::new(3);
        let (key, other) = (ApiKeyId::new(), ApiKeyId::new());
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(rate.take(key, start), Ok(()));
        }
        // One request every 20 seconds from now on.
        assert_eq!(rate.take(key, start), Err(20));
        assert_eq!(rate.take(key, start + Duration::from_secs(15)), Err(5));
        assert_eq!(
            rate.take(other, start),
            Ok(()),
            "keys do not share a bucket"
        );
        assert_eq!(rate.take(key, start + Duration::from_secs(20)), Ok(()));
        assert_eq!(rate.take(key, start + Duration::from_secs(21)), Err(19));
        // A long pause refills the bucket, but never beyond one minute's worth.
        let later = start + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(rate.take(key, later), Ok(()));
        }
        assert!(rate.take(key, later).is_err());
    }
}
