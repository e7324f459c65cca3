//! Herald's metrics, served at `/metrics` in Prometheus' text format.
//!
//! One set per process: a Prometheus server scrapes each instance and sums. Label values come
//! from small fixed sets (statuses, outcomes, reason codes, three-digit reply codes): never an
//! address, a mailbox or a message id, so the series stay few however much mail goes through.
//! The queue's depth is read from the database at each scrape, so every instance reports the
//! whole queue.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SendLabels {
    /// `sent`, `retry`, `failed`, `held` or `released`.
    pub outcome: &'static str,
    /// The reason's code (`recipient_refused`, `mailbox_not_verified`, …), or `none`.
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    /// The reply's three digits, or `none` when the server gave none (a connection failure).
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

/// Every metric Herald keeps.
pub struct Metrics {
    registry: Registry,
    pub queue: Family<StatusLabel, Gauge>,
    pub sends: Family<SendLabels, Counter>,
    pub smtp_replies: Family<CodeLabel, Counter>,
    pub token_refreshes: Family<OutcomeLabel, Counter>,
    pub delivery_latency: Histogram,
    pub throttle_waits: Counter,
    pub throttle_wait_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    pub relay_sessions: Family<OutcomeLabel, Counter>,
    pub relay_sessions_open: Gauge,
    pub relay_messages: Counter,
    pub relay_auth_failures: Counter,
    pub keepalives: Family<OutcomeLabel, Counter>,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("herald");
        let queue = Family::<StatusLabel, Gauge>::default();
        registry.register(
            "queue_messages",
            "Messages still to send, by status: queued, sending, held (the whole database, read at each scrape)",
            queue.clone(),
        );
        let sends = Family::<SendLabels, Counter>::default();
        registry.register(
            "sends",
            "Send attempts by outcome and reason code",
            sends.clone(),
        );
        let smtp_replies = Family::<CodeLabel, Counter>::default();
        registry.register(
            "smtp_replies",
            "Replies of the providers' SMTP servers to messages, by code",
            smtp_replies.clone(),
        );
        let token_refreshes = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "token_refreshes",
            "OAuth2 token refreshes by outcome (ok, refused, unavailable)",
            token_refreshes.clone(),
        );
        // From 10 ms to about 5.8 hours: retries after an outage are deliveries too.
        let delivery_latency = Histogram::new(exponential_buckets(0.01, 4.0, 12));
        registry.register(
            "delivery_latency_seconds",
            "Time from acceptance to the provider's 250, for messages sent",
            delivery_latency.clone(),
        );
        let throttle_waits = Counter::default();
        registry.register(
            "throttle_waits",
            "Sends that waited for a mailbox's rate limit",
            throttle_waits.clone(),
        );
        let throttle_wait_seconds = Counter::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "throttle_wait_seconds",
            "Time sends waited for mailboxes' rate limits",
            throttle_wait_seconds.clone(),
        );
        let relay_sessions = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "relay_sessions",
            "SMTP relay sessions, at their end, by whether they authenticated",
            relay_sessions.clone(),
        );
        let relay_sessions_open = Gauge::default();
        registry.register(
            "relay_sessions_open",
            "SMTP relay sessions open now",
            relay_sessions_open.clone(),
        );
        let relay_messages = Counter::default();
        registry.register(
            "relay_messages",
            "Messages the SMTP relay accepted into the queue",
            relay_messages.clone(),
        );
        let relay_auth_failures = Counter::default();
        registry.register(
            "relay_auth_failures",
            "Failed logins to the SMTP relay",
            relay_auth_failures.clone(),
        );
        let keepalives = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "keepalives",
            "Keep-alives of idle OAuth2 mailboxes by outcome (ok, refused, failed)",
            keepalives.clone(),
        );
        Self {
            registry,
            queue,
            sends,
            smtp_replies,
            token_refreshes,
            delivery_latency,
            throttle_waits,
            throttle_wait_seconds,
            relay_sessions,
            relay_sessions_open,
            relay_messages,
            relay_auth_failures,
            keepalives,
        }
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts a send's outcome.
    pub fn send(&self, outcome: &'static str, reason: Option<&str>, code: Option<u16>) {
        self.sends
            .get_or_create(&SendLabels {
                outcome,
                reason: reason.unwrap_or("none").to_owned(),
            })
            .inc();
        if outcome != "released" {
            self.smtp_replies
                .get_or_create(&CodeLabel {
                    code: code
                        .filter(|c| (200..600).contains(c))
                        .map_or_else(|| "none".to_owned(), |c| c.to_string()),
                })
                .inc();
        }
    }

    pub fn token_refresh(&self, outcome: &'static str) {
        self.token_refreshes
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }
}

/// The process's metrics.
pub fn get() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}
