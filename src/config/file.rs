//! The configuration file, `herald.toml`, and the names of the environment variables that
//! override its keys. Both are checked before any value is read: an unknown key or variable is
//! an error, so a typo never silently falls back to a default.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::{CONFIG_ENV, ConfigError};

/// The keys a `herald.toml` may hold. Each is overridden by the environment variable named in
/// its documentation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `HERALD_LISTEN`: the address to listen on. Default `127.0.0.1:8080`.
    pub listen: Option<String>,
    /// `HERALD_PUBLIC_URL`: the URL users reach Herald at; the OAuth redirect URI is derived
    /// from it. Default `http://127.0.0.1:8080`.
    pub public_url: Option<String>,
    /// `HERALD_DATA_DIR`: where the SQLite file and the master key file live. Default
    /// `./herald-data`.
    pub data_dir: Option<String>,
    /// `HERALD_DATABASE_URL`: `sqlite://PATH` or `postgres://…`. Default a SQLite file in the
    /// data directory.
    pub database_url: Option<String>,
    /// `HERALD_MASTER_KEY`: base64 of 32 bytes sealing every stored secret. Default: the key
    /// file `master.key` in the data directory, created on first start.
    pub master_key: Option<String>,
    /// `HERALD_LOG`: log level or filter (`info`, `herald=debug,warn`). Default `info`.
    pub log: Option<String>,
    /// `HERALD_LOG_FORMAT`: `pretty` or `json`. Default `pretty`.
    pub log_format: Option<String>,
    /// `HERALD_DEV`: development mode (allows `http://` on loopback hosts). Default off.
    pub dev: Option<bool>,
    /// `HERALD_ALLOW_PRIVATE_HOSTS`: allow token URLs and SMTP hosts on private, loopback and
    /// link-local addresses (on-premises servers). Default off, against SSRF.
    pub allow_private_hosts: Option<bool>,
    /// `HERALD_HTTP_CA_FILE`: PEM certificates trusted, beside the system's, for token
    /// endpoints (private identity providers). Default none.
    pub http_ca_file: Option<String>,
    /// `HERALD_SMTP_CA_FILE`: PEM certificates trusted, beside the system's, for SMTP servers.
    /// Default none.
    pub smtp_ca_file: Option<String>,
    /// `HERALD_TRUSTED_PROXIES`: addresses or CIDR ranges of reverse proxies whose
    /// `X-Forwarded-For` is believed (comma-separated in the environment). Default none.
    pub trusted_proxies: Option<Vec<String>>,
    /// `HERALD_METRICS_TOKEN`: the bearer token a Prometheus server sends to scrape
    /// `/metrics` (at least 16 characters). Default none: `/metrics` then answers only an
    /// installation reached on loopback, from the same machine.
    pub metrics_token: Option<String>,
    /// `HERALD_SANDBOX_LISTEN`: where the sandbox provider's web server listens when it runs
    /// (`herald demo`, tests). Default `127.0.0.1:8081`.
    pub sandbox_listen: Option<String>,
    /// `HERALD_SANDBOX_PUBLIC_URL`: the URL browsers reach the sandbox at; another host name
    /// than Herald's, so the browser sees another site, as with Microsoft. Default
    /// `http://localhost:8081`.
    pub sandbox_public_url: Option<String>,
    /// `HERALD_SANDBOX_SMTP_LISTEN`: the sandbox's SMTP server. Default `127.0.0.1:2587`.
    pub sandbox_smtp_listen: Option<String>,
    /// `HERALD_SANDBOX_SWITCHES` (JSON in the environment, a table in the file): failures the
    /// sandbox reproduces from the start, e.g. `{"smtp_auth_disabled": true}`. Default none.
    pub sandbox_switches: Option<toml::Table>,
    /// `HERALD_DEFAULT_SENDER`: the id of a mailbox (of the operator's own organization) that
    /// sends for organizations with no Verified mailbox whose policy is `fallback`. Default
    /// none.
    pub default_sender: Option<String>,
    /// `HERALD_DEFAULT_SENDER_ORGS`: which organizations the default sender serves: `listed`
    /// (only those the operator allowed with `herald org set ORG --default-sender allow`) or
    /// `all` (every organization without a Verified mailbox). Default `listed`.
    pub default_sender_orgs: Option<String>,
    /// `HERALD_DEFAULT_SENDER_DAILY`: how many messages the default sender sends for one
    /// organization per UTC day; past it the API answers 429 `default_sender_quota`. Default
    /// 1000.
    pub default_sender_daily: Option<u64>,
    /// `HERALD_ORG_MAX_QUEUED_BYTES`: the most bytes of one organization's mail that may wait
    /// to be sent (queued, sending or held); past it, 429 `queue_full` (relay `452 4.3.1`).
    /// Default 1073741824 (1 GiB); at least `HERALD_MAX_MESSAGE_BYTES`.
    pub org_max_queued_bytes: Option<u64>,
    /// `HERALD_ORG_MAX_QUEUED_MESSAGES`: the most messages of one organization that may wait
    /// to be sent; past it, 429 `queue_full` (relay `452 4.3.1`). Default 100000.
    pub org_max_queued_messages: Option<u64>,
    /// `HERALD_API_RATE_PER_MINUTE`: requests each API key may make per minute (a token
    /// bucket holding one minute's worth, counted by each instance); past it, 429
    /// `rate_limited` with `Retry-After`. Default 6000.
    pub api_rate_per_minute: Option<u64>,
    /// `HERALD_RETRY_HOURS`: how long a message is retried after transient failures before it
    /// fails. Default 72 (3 days).
    pub retry_hours: Option<u32>,
    /// `HERALD_HELD_MAX_HOURS`: how long mail may wait held, for a mailbox that is Not Verified
    /// (or an organization with none), before it fails as `held_expired`. Default 168 (7 days).
    pub held_max_hours: Option<u32>,
    /// `HERALD_RETENTION_DAYS`: how long message bodies are kept after their final status;
    /// the metadata stays. Default 30.
    pub retention_days: Option<u32>,
    /// `HERALD_MAX_MESSAGE_BYTES`: the largest message accepted, attachments included.
    /// Default 26214400 (25 MiB; Exchange Online accepts 35 MB after encoding).
    pub max_message_bytes: Option<u64>,
    /// `HERALD_KEEPALIVE_DAYS`: how often every OAuth2 mailbox's token is refreshed and the
    /// mailbox verified again, idle or not, so that its refresh token never expires unused
    /// (Microsoft's do after 90 days). Default 7; at most 60.
    pub keepalive_days: Option<u32>,
    /// `HERALD_SHUTDOWN_GRACE_SECS`: on SIGTERM, how long messages being sent may take to
    /// finish before they are released back to the queue. Default 20.
    pub shutdown_grace_secs: Option<u64>,
    /// `HERALD_RELAY_LISTEN`: where the SMTP relay for legacy devices listens (STARTTLS), e.g.
    /// `0.0.0.0:2525`. Default: no relay.
    pub relay_listen: Option<String>,
    /// `HERALD_RELAY_TLS_LISTEN`: the relay with implicit TLS (as on port 465). Default none.
    pub relay_tls_listen: Option<String>,
    /// `HERALD_RELAY_CERT_FILE` and `HERALD_RELAY_KEY_FILE`: the relay's certificate chain and
    /// private key (PEM). Default: a certificate generated at start, with a warning.
    pub relay_cert_file: Option<String>,
    pub relay_key_file: Option<String>,
    /// `HERALD_RELAY_HOSTNAME`: the name the relay greets with and its generated certificate
    /// is for. Default: the public URL's host.
    pub relay_hostname: Option<String>,
    /// `HERALD_RELAY_AUTH_WITHOUT_TLS`: accept AUTH before STARTTLS. Only for a relay that
    /// listens on loopback alone. Default off.
    pub relay_auth_without_tls: Option<bool>,
    /// `HERALD_RELAY_MAX_SESSIONS`: relay sessions open at once, all clients together; a
    /// connection past it is answered `421 4.7.0` and closed. Default 1000.
    pub relay_max_sessions: Option<u64>,
    /// `HERALD_HTTP_MAX_CONNECTIONS`: HTTP connections open at once; past it, new connections
    /// wait to be accepted until one closes. Default 1024.
    pub http_max_connections: Option<u64>,
    /// `HERALD_HTTP_HEADER_TIMEOUT_SECS`: how long a client may take to send a request's
    /// headers (and an idle keep-alive connection may stay open) before it is cut off.
    /// Default 10.
    pub http_header_timeout_secs: Option<u64>,
    /// `HERALD_PASSWORD_HASHING_THREADS`: password hashes (19 MiB each) computed at once;
    /// sign-ins past what these can serve promptly are answered 503 with `Retry-After`.
    /// Default: the number of CPUs.
    pub password_hashing_threads: Option<u64>,
}

/// The environment variables Herald reads, with the file key each one overrides.
const ENV_KEYS: &[(&str, &str)] = &[
    ("HERALD_LISTEN", "listen"),
    ("HERALD_PUBLIC_URL", "public_url"),
    ("HERALD_DATA_DIR", "data_dir"),
    ("HERALD_DATABASE_URL", "database_url"),
    ("HERALD_MASTER_KEY", "master_key"),
    ("HERALD_LOG", "log"),
    ("HERALD_LOG_FORMAT", "log_format"),
    ("HERALD_DEV", "dev"),
    ("HERALD_ALLOW_PRIVATE_HOSTS", "allow_private_hosts"),
    ("HERALD_HTTP_CA_FILE", "http_ca_file"),
    ("HERALD_SMTP_CA_FILE", "smtp_ca_file"),
    ("HERALD_TRUSTED_PROXIES", "trusted_proxies"),
    ("HERALD_METRICS_TOKEN", "metrics_token"),
    ("HERALD_SANDBOX_LISTEN", "sandbox_listen"),
    ("HERALD_SANDBOX_PUBLIC_URL", "sandbox_public_url"),
    ("HERALD_SANDBOX_SMTP_LISTEN", "sandbox_smtp_listen"),
    ("HERALD_SANDBOX_SWITCHES", "sandbox_switches"),
    ("HERALD_DEFAULT_SENDER", "default_sender"),
    ("HERALD_DEFAULT_SENDER_ORGS", "default_sender_orgs"),
    ("HERALD_DEFAULT_SENDER_DAILY", "default_sender_daily"),
    ("HERALD_ORG_MAX_QUEUED_BYTES", "org_max_queued_bytes"),
    ("HERALD_ORG_MAX_QUEUED_MESSAGES", "org_max_queued_messages"),
    ("HERALD_API_RATE_PER_MINUTE", "api_rate_per_minute"),
    ("HERALD_RETRY_HOURS", "retry_hours"),
    ("HERALD_HELD_MAX_HOURS", "held_max_hours"),
    ("HERALD_RETENTION_DAYS", "retention_days"),
    ("HERALD_MAX_MESSAGE_BYTES", "max_message_bytes"),
    ("HERALD_SHUTDOWN_GRACE_SECS", "shutdown_grace_secs"),
    ("HERALD_KEEPALIVE_DAYS", "keepalive_days"),
    ("HERALD_RELAY_LISTEN", "relay_listen"),
    ("HERALD_RELAY_TLS_LISTEN", "relay_tls_listen"),
    ("HERALD_RELAY_CERT_FILE", "relay_cert_file"),
    ("HERALD_RELAY_KEY_FILE", "relay_key_file"),
    ("HERALD_RELAY_HOSTNAME", "relay_hostname"),
    ("HERALD_RELAY_AUTH_WITHOUT_TLS", "relay_auth_without_tls"),
    ("HERALD_RELAY_MAX_SESSIONS", "relay_max_sessions"),
    ("HERALD_HTTP_MAX_CONNECTIONS", "http_max_connections"),
    (
        "HERALD_HTTP_HEADER_TIMEOUT_SECS",
        "http_header_timeout_secs",
    ),
    (
        "HERALD_PASSWORD_HASHING_THREADS",
        "password_hashing_threads",
    ),
];

/// Reads and parses the file at `path`; no file at all is an empty configuration.
pub(super) fn read(path: Option<&Path>) -> Result<FileConfig, ConfigError> {
    let Some(path) = path else {
        return Ok(FileConfig::default());
    };
    let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::ReadFile {
        path: path.to_path_buf(),
        cause,
    })?;
    toml::from_str::<FileConfig>(&text).map_err(|e| ConfigError::ParseFile {
        path: path.to_path_buf(),
        message: e.message().to_owned()
            + &e.span()
                .map(|s| format!(" (at byte {})", s.start))
                .unwrap_or_default(),
    })
}

/// Refuses a `HERALD_*` variable Herald does not read, listing those it does.
pub(super) fn check_env_names(env: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    for name in env.keys() {
        if name.starts_with("HERALD_")
            && name != CONFIG_ENV
            && !ENV_KEYS.iter().any(|(k, _)| k == name)
        {
            let known = ENV_KEYS
                .iter()
                .map(|(k, _)| *k)
                .chain([CONFIG_ENV])
                .collect::<Vec<_>>()
                .join(", ");
            return Err(ConfigError::UnknownEnv {
                name: name.clone(),
                known,
            });
        }
    }
    Ok(())
}
