//! The durable outbox's workers: messages accepted into the database (by
//! [`crate::services::send`]) are delivered through their mailboxes' transports ([`Outbox`]):
//! claimed under a lease, sent over reused connections within the provider's limits
//! ([`throttle`]), retried with exponential backoff and jitter, failed with a reason, or held
//! while their mailbox is Not Verified. [`compose`] is the one message composer.

pub mod compose;
mod deliver;
mod dispatch;
pub mod headers;
mod keepalive;
mod state;
pub mod throttle;
mod worker;

pub use state::release_owned;
pub use worker::Outbox;

/// How the workers pace themselves. The defaults suit production; tests shorten them.
#[derive(Clone, Debug)]
pub struct Tuning {
    /// How long a claim lasts before another worker may take the message over.
    pub lease: time::Duration,
    /// How often the dispatcher looks for due mail when nothing wakes it.
    pub poll: std::time::Duration,
    /// How long an idle connection is kept open for the next message.
    pub linger: std::time::Duration,
    /// A connection is replaced after this long (so a fresh token is used).
    pub recycle: std::time::Duration,
    /// The first retry after a transient failure; it doubles, up to `retry_max`.
    pub retry_base: time::Duration,
    pub retry_max: time::Duration,
    /// The first back-off of a mailbox after a rate-limit reply, in milliseconds.
    pub backoff_base_ms: i64,
    /// How often the keep-alive looks for mailboxes due.
    pub keepalive_check: std::time::Duration,
    /// How often alerts due to webhooks are looked for.
    pub alert_poll: std::time::Duration,
    /// How often client secrets' expiry dates are checked for alerts.
    pub secret_check: std::time::Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            lease: time::Duration::minutes(5),
            poll: std::time::Duration::from_secs(1),
            linger: std::time::Duration::from_secs(5),
            recycle: std::time::Duration::from_secs(600),
            retry_base: time::Duration::seconds(30),
            retry_max: time::Duration::hours(1),
            backoff_base_ms: throttle::BACKOFF_BASE_MS,
            keepalive_check: std::time::Duration::from_secs(600),
            alert_poll: std::time::Duration::from_secs(2),
            secret_check: std::time::Duration::from_secs(600),
        }
    }
}
