//! The outbox part: how long mail is kept and retried, the largest message, the default sender
//! and each organization's share of the queue.

use super::ConfigError;
use super::source::Source;

/// How the outbox keeps and retries mail.
#[derive(Clone, Debug)]
pub struct OutboxSettings {
    pub default_sender: Option<crate::domain::MailboxId>,
    pub retry_for: time::Duration,
    /// How long mail may wait held (for a mailbox to be verified) before it fails.
    pub held_max: time::Duration,
    pub retention: time::Duration,
    pub max_message_bytes: u64,
    pub shutdown_grace: std::time::Duration,
    /// How often every OAuth2 mailbox's token is refreshed, idle or not.
    pub keepalive: time::Duration,
    /// Which organizations the default sender serves.
    pub default_sender_orgs: DefaultSenderOrgs,
    /// Messages the default sender sends for one organization per UTC day.
    pub default_sender_daily: u64,
    /// One organization's mail waiting to be sent (queued, sending or held), in bytes and in
    /// messages; past either, more is refused until some leaves.
    pub org_max_queued_bytes: u64,
    pub org_max_queued_messages: u64,
}

/// Which organizations the installation's default sender serves (`HERALD_DEFAULT_SENDER_ORGS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultSenderOrgs {
    /// Every organization without a Verified mailbox of its own (the seed's model).
    All,
    /// Only organizations the operator allowed (`herald org set ORG --default-sender allow`).
    Listed,
}

impl Default for OutboxSettings {
    fn default() -> Self {
        Self {
            default_sender: None,
            retry_for: time::Duration::hours(72),
            held_max: time::Duration::hours(168),
            retention: time::Duration::days(30),
            max_message_bytes: 25 * 1024 * 1024,
            shutdown_grace: std::time::Duration::from_secs(20),
            keepalive: time::Duration::days(7),
            default_sender_orgs: DefaultSenderOrgs::Listed,
            default_sender_daily: 1_000,
            org_max_queued_bytes: 1024 * 1024 * 1024,
            org_max_queued_messages: 100_000,
        }
    }
}

/// Reads every outbox setting; a limit on queued bytes below the largest message is refused.
pub(super) fn resolve(src: &Source) -> Result<OutboxSettings, ConfigError> {
    let file = &src.file;
    let defaults = OutboxSettings::default();
    let mut outbox = OutboxSettings {
        default_sender: match src.text("HERALD_DEFAULT_SENDER", &file.default_sender) {
            Some(raw) => Some(raw.trim().parse().map_err(|_| ConfigError::Invalid {
                setting: "HERALD_DEFAULT_SENDER (default_sender)",
                message: format!("`{raw}` is not a mailbox id (a UUID, as the mailbox list shows)"),
            })?),
            None => None,
        },
        retry_for: src
            .number(
                "HERALD_RETRY_HOURS (retry_hours)",
                file.retry_hours.map(u64::from),
                1..=24 * 30,
            )?
            .map(|h| time::Duration::hours(h as i64))
            .unwrap_or(defaults.retry_for),
        held_max: src
            .number(
                "HERALD_HELD_MAX_HOURS (held_max_hours)",
                file.held_max_hours.map(u64::from),
                1..=24 * 90,
            )?
            .map(|h| time::Duration::hours(h as i64))
            .unwrap_or(defaults.held_max),
        retention: src
            .number(
                "HERALD_RETENTION_DAYS (retention_days)",
                file.retention_days.map(u64::from),
                0..=3650,
            )?
            .map(|d| time::Duration::days(d as i64))
            .unwrap_or(defaults.retention),
        max_message_bytes: src
            .number(
                "HERALD_MAX_MESSAGE_BYTES (max_message_bytes)",
                file.max_message_bytes,
                1024..=150 * 1024 * 1024,
            )?
            .unwrap_or(defaults.max_message_bytes),
        shutdown_grace: src
            .number(
                "HERALD_SHUTDOWN_GRACE_SECS (shutdown_grace_secs)",
                file.shutdown_grace_secs,
                0..=3600,
            )?
            .map(std::time::Duration::from_secs)
            .unwrap_or(defaults.shutdown_grace),
        keepalive: src
            .number(
                "HERALD_KEEPALIVE_DAYS (keepalive_days)",
                file.keepalive_days.map(u64::from),
                1..=60,
            )?
            .map(|d| time::Duration::days(d as i64))
            .unwrap_or(defaults.keepalive),
        default_sender_orgs: default_sender_orgs(src)?,
        default_sender_daily: src
            .number(
                "HERALD_DEFAULT_SENDER_DAILY (default_sender_daily)",
                file.default_sender_daily,
                1..=10_000_000,
            )?
            .unwrap_or(defaults.default_sender_daily),
        org_max_queued_bytes: defaults.org_max_queued_bytes,
        org_max_queued_messages: src
            .number(
                "HERALD_ORG_MAX_QUEUED_MESSAGES (org_max_queued_messages)",
                file.org_max_queued_messages,
                1..=100_000_000,
            )?
            .unwrap_or(defaults.org_max_queued_messages),
    };
    outbox.org_max_queued_bytes = match src.number(
        "HERALD_ORG_MAX_QUEUED_BYTES (org_max_queued_bytes)",
        file.org_max_queued_bytes,
        1..=1 << 50,
    )? {
        // A limit below the largest message would refuse such a message for ever.
        Some(v) if v < outbox.max_message_bytes => {
            return Err(ConfigError::Invalid {
                setting: "HERALD_ORG_MAX_QUEUED_BYTES (org_max_queued_bytes)",
                message: format!(
                    "{v} is less than HERALD_MAX_MESSAGE_BYTES ({}): a message of the largest size could never be queued; raise it or lower HERALD_MAX_MESSAGE_BYTES",
                    outbox.max_message_bytes
                ),
            });
        }
        Some(v) => v,
        None => defaults.org_max_queued_bytes.max(outbox.max_message_bytes),
    };
    Ok(outbox)
}

/// `HERALD_DEFAULT_SENDER_ORGS` (`default_sender_orgs`): `listed` (the default) or `all`.
fn default_sender_orgs(src: &Source) -> Result<DefaultSenderOrgs, ConfigError> {
    match src
        .text("HERALD_DEFAULT_SENDER_ORGS", &src.file.default_sender_orgs)
        .as_deref()
        .map(str::trim)
    {
        None | Some("listed") => Ok(DefaultSenderOrgs::Listed),
        Some("all") => Ok(DefaultSenderOrgs::All),
        Some(other) => Err(ConfigError::Invalid {
            setting: "HERALD_DEFAULT_SENDER_ORGS (default_sender_orgs)",
            message: format!(
                "`{other}` is neither `listed` (organizations allowed with `herald org set ORG --default-sender allow`) nor `all`"
            ),
        }),
    }
}
