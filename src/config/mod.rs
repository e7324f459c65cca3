//! Configuration: an optional `herald.toml` overlaid by `HERALD_*` environment variables.
//!
//! The file and the environment are read once, at start-up, into one typed [`Config`]. Unknown
//! keys are errors in both places, so a typo (`HERALD_LISTN`) never silently falls back to a
//! default. Every field of [`FileConfig`] documents the environment variable that overrides it.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ipnet::IpNet;
use serde::Deserialize;
use url::Url;
use zeroize::Zeroizing;

/// Environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "HERALD_CONFIG";

/// Why the configuration could not be loaded. Each message names the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {}: {cause}", path.display())]
    ReadFile {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("the configuration file {} is not valid: {message}", path.display())]
    ParseFile { path: PathBuf, message: String },
    #[error(
        "unknown environment variable {name}: Herald does not read it (known: {known}); remove it or fix its spelling"
    )]
    UnknownEnv { name: String, known: String },
    #[error("{setting} is not valid: {message}")]
    Invalid {
        setting: &'static str,
        message: String,
    },
}

/// The SMTP relay for legacy devices.
#[derive(Clone, Debug, Default)]
pub struct RelaySettings {
    /// STARTTLS listener.
    pub listen: Option<SocketAddr>,
    /// Implicit-TLS listener.
    pub tls_listen: Option<SocketAddr>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub hostname: String,
    pub auth_without_tls: bool,
    /// Sessions open at once, over every client and both listeners.
    pub max_sessions: usize,
}

/// How the HTTP server meets slow clients and floods of connections.
#[derive(Clone, Debug)]
pub struct HttpSettings {
    /// Connections open at once; more wait to be accepted.
    pub max_connections: usize,
    /// Time allowed for a request's headers (and for an idle keep-alive connection).
    pub header_timeout: std::time::Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_timeout: std::time::Duration::from_secs(10),
        }
    }
}

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

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Which database backs the store.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// An SQLite file at this path.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL.
    Postgres(String),
}

impl DatabaseUrl {
    /// Parses `sqlite://PATH`, `sqlite:PATH`, `postgres://…` or `postgresql://…`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        if let Some(path) = raw
            .strip_prefix("sqlite://")
            .or_else(|| raw.strip_prefix("sqlite:"))
        {
            let path = path.split('?').next().unwrap_or_default();
            if path.is_empty() || path == ":memory:" {
                return Err(
                    "an SQLite URL needs a file path, e.g. sqlite://./herald-data/herald.db (in-memory databases lose all mail on restart)"
                        .into(),
                );
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            let url = Url::parse(raw).map_err(|e| format!("not a valid PostgreSQL URL: {e}"))?;
            // The driver ignores a parameter it does not know, logging its value: refuse it
            // here, naming only the key (it may be `sslpassword`).
            if let Some((key, _)) = url
                .query_pairs()
                .find(|(key, _)| !POSTGRES_PARAMS.contains(&&**key) && !key.starts_with("options["))
            {
                return Err(format!(
                    "Herald's PostgreSQL driver does not read the parameter `{key}`; remove it (it reads {})",
                    POSTGRES_PARAMS.join(", ")
                ));
            }
            return Ok(Self::Postgres(raw.to_owned()));
        }
        let scheme = raw.split(':').next().unwrap_or_default();
        Err(format!(
            "unsupported database `{scheme}`; use sqlite://PATH or postgres://USER@HOST/DATABASE"
        ))
    }

    /// The backend's name, for messages.
    pub fn backend_name(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "SQLite",
            Self::Postgres(_) => "PostgreSQL",
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    // A PostgreSQL URL may carry a password: show only where it points.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            Self::Postgres(raw) => write!(f, "{}", redact_url(raw)),
        }
    }
}

/// The query parameters of a PostgreSQL URL that its driver (sqlx) reads, besides `options[…]`.
const POSTGRES_PARAMS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// The driver's parameters whose values hold a secret or could (`options` passes anything to
/// the server): redacted in logs. Every other parameter the driver reads says where and how
/// Herald connects, and is logged as it is; an unknown one is redacted too.
const SECRET_PARAMS: &[&str] = &["password", "options"];

fn shown_param(key: &str) -> bool {
    POSTGRES_PARAMS.contains(&key) && !SECRET_PARAMS.contains(&key)
}

/// A URL fit for logs and error messages: the password of its user information and the value
/// of every query parameter but those [`shown_param`] allows read `REDACTED`, so `?password=` or
/// `?sslpassword=` never reach a log while host, database and `sslmode` still help the reader.
pub fn redact_url(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("REDACTED"));
            }
            if url.query().is_some() {
                let pairs: Vec<(String, String)> = url
                    .query_pairs()
                    .map(|(key, value)| {
                        let value = if shown_param(&key) {
                            value.into_owned()
                        } else {
                            "REDACTED".to_owned()
                        };
                        (key.into_owned(), value)
                    })
                    .collect();
                url.query_pairs_mut().clear().extend_pairs(pairs);
            }
            url.to_string()
        }
        Err(_) => "<unparseable URL>".into(),
    }
}

/// A 32-byte master key as given in `HERALD_MASTER_KEY`. Its bytes never reach `Debug`.
#[derive(Clone)]
pub struct MasterKeyMaterial(pub Zeroizing<[u8; 32]>);

impl MasterKeyMaterial {
    /// Decodes base64 (standard or URL-safe, padded or not) of exactly 32 bytes.
    pub fn from_base64(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        let decoded = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(raw)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(raw))
                .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(raw))
                .map_err(|_| {
                    "not valid base64; generate a key with `herald keys generate`".to_owned()
                })?,
        );
        let bytes: [u8; 32] = decoded.as_slice().try_into().map_err(|_| {
            format!(
                "decodes to {} bytes, but a master key is exactly 32 bytes; generate one with `herald keys generate`",
                decoded.len()
            )
        })?;
        Ok(Self(Zeroizing::new(bytes)))
    }
}

impl fmt::Debug for MasterKeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKeyMaterial(REDACTED)")
    }
}

/// Herald's validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub public_url: Url,
    /// Whether `public_url` was set, rather than derived from the address listened on.
    pub public_url_explicit: bool,
    pub data_dir: PathBuf,
    pub database_url: DatabaseUrl,
    pub master_key: Option<MasterKeyMaterial>,
    pub log: String,
    pub log_format: LogFormat,
    pub dev: bool,
    pub allow_private_hosts: bool,
    pub http_ca_file: Option<PathBuf>,
    pub smtp_ca_file: Option<PathBuf>,
    pub trusted_proxies: Vec<IpNet>,
    pub sandbox: SandboxSettings,
    pub outbox: OutboxSettings,
    pub relay: RelaySettings,
    pub http: HttpSettings,
    /// Password hashes computed at once (see [`crate::crypto::HashPool`]).
    pub hashing_threads: usize,
    /// The bearer token `/metrics` asks for; without one it answers only loopback clients.
    pub metrics_token: Option<secrecy::SecretString>,
    /// Requests each API key may make per minute, on each instance.
    pub api_rate_per_minute: u32,
}

/// Where the sandbox provider runs, when it runs.
#[derive(Clone, Debug)]
pub struct SandboxSettings {
    pub listen: SocketAddr,
    pub public_url: Url,
    /// Whether `public_url` was set, rather than derived from the address listened on.
    pub public_url_explicit: bool,
    pub smtp_listen: SocketAddr,
    /// Switches to set at start, as JSON; the sandbox checks their names.
    pub switches: Option<serde_json::Value>,
}

impl SandboxSettings {
    /// Once bound: an unset public URL follows the actual port, on the host name `localhost`
    /// (another site than Herald's `127.0.0.1` to the browser).
    pub fn adopt_bound_address(&mut self, addr: SocketAddr) {
        if !self.public_url_explicit {
            self.public_url =
                Url::parse(&format!("http://localhost:{}", addr.port())).expect("a valid URL");
        }
    }
}

impl Config {
    /// Loads the configuration from the process environment and the file it names.
    pub fn from_env(config_path: Option<&Path>) -> Result<Self, ConfigError> {
        let env: BTreeMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("HERALD_"))
            .collect();
        Self::load(config_path, &env)
    }

    /// Loads the configuration from `config_path` (or `HERALD_CONFIG` in `env`) and `env`.
    /// Environment values win over the file.
    pub fn load(
        config_path: Option<&Path>,
        env: &BTreeMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let path = config_path
            .map(Path::to_path_buf)
            .or_else(|| env.get(CONFIG_ENV).map(PathBuf::from));
        let file = match &path {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|cause| ConfigError::ReadFile {
                        path: path.clone(),
                        cause,
                    })?;
                toml::from_str::<FileConfig>(&text).map_err(|e| ConfigError::ParseFile {
                    path: path.clone(),
                    message: e.message().to_owned()
                        + &e.span()
                            .map(|s| format!(" (at byte {})", s.start))
                            .unwrap_or_default(),
                })?
            }
            None => FileConfig::default(),
        };
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
        Self::resolve(file, env)
    }

    fn resolve(file: FileConfig, env: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let pick = |var: &str, from_file: Option<String>| -> Option<String> {
            env.get(var)
                .cloned()
                .or(from_file)
                .filter(|v| !v.trim().is_empty())
        };

        let listen_raw = pick("HERALD_LISTEN", file.listen).unwrap_or("127.0.0.1:8080".into());
        let listen: SocketAddr = listen_raw
            .trim()
            .parse()
            .map_err(|_| ConfigError::Invalid {
                setting: "HERALD_LISTEN (listen)",
                message: format!(
                    "`{listen_raw}` is not an address and port such as 127.0.0.1:8080"
                ),
            })?;

        let public_setting = pick("HERALD_PUBLIC_URL", file.public_url);
        let public_url_explicit = public_setting.is_some();
        let public_url = match public_setting {
            Some(raw) => parse_public_url(&raw)?,
            None => url_for(listen),
        };

        let data_dir = PathBuf::from(
            pick("HERALD_DATA_DIR", file.data_dir).unwrap_or_else(|| "./herald-data".into()),
        );

        let database_url = match pick("HERALD_DATABASE_URL", file.database_url) {
            Some(raw) => DatabaseUrl::parse(&raw).map_err(|message| ConfigError::Invalid {
                setting: "HERALD_DATABASE_URL (database_url)",
                message,
            })?,
            None => DatabaseUrl::Sqlite(data_dir.join("herald.db")),
        };

        let master_key = match pick("HERALD_MASTER_KEY", file.master_key) {
            Some(raw) => Some(MasterKeyMaterial::from_base64(&raw).map_err(|message| {
                ConfigError::Invalid {
                    setting: "HERALD_MASTER_KEY (master_key)",
                    message,
                }
            })?),
            None => None,
        };

        let log = pick("HERALD_LOG", file.log).unwrap_or_else(|| "info".into());
        tracing_subscriber::EnvFilter::try_new(&log).map_err(|e| ConfigError::Invalid {
            setting: "HERALD_LOG (log)",
            message: format!("`{log}` is not a log level or filter: {e}"),
        })?;

        let log_format = match pick("HERALD_LOG_FORMAT", file.log_format)
            .as_deref()
            .map(str::trim)
        {
            None | Some("pretty") => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    setting: "HERALD_LOG_FORMAT (log_format)",
                    message: format!("`{other}` is neither `pretty` nor `json`"),
                });
            }
        };

        let dev = match env.get("HERALD_DEV") {
            Some(raw) => parse_bool(raw).ok_or_else(|| ConfigError::Invalid {
                setting: "HERALD_DEV (dev)",
                message: format!("`{raw}` is not a boolean; use true or false"),
            })?,
            None => file.dev.unwrap_or(false),
        };

        let allow_private_hosts = match env.get("HERALD_ALLOW_PRIVATE_HOSTS") {
            Some(raw) => parse_bool(raw).ok_or_else(|| ConfigError::Invalid {
                setting: "HERALD_ALLOW_PRIVATE_HOSTS (allow_private_hosts)",
                message: format!("`{raw}` is not a boolean; use true or false"),
            })?,
            None => file.allow_private_hosts.unwrap_or(false),
        };

        let ca_file =
            |setting: &'static str, raw: Option<String>| -> Result<Option<PathBuf>, ConfigError> {
                let Some(raw) = raw else { return Ok(None) };
                let path = PathBuf::from(raw.trim());
                if !path.is_file() {
                    return Err(ConfigError::Invalid {
                        setting,
                        message: format!(
                            "{} is not a readable file of PEM certificates",
                            path.display()
                        ),
                    });
                }
                Ok(Some(path))
            };
        let http_ca_file = ca_file(
            "HERALD_HTTP_CA_FILE (http_ca_file)",
            pick("HERALD_HTTP_CA_FILE", file.http_ca_file),
        )?;
        let smtp_ca_file = ca_file(
            "HERALD_SMTP_CA_FILE (smtp_ca_file)",
            pick("HERALD_SMTP_CA_FILE", file.smtp_ca_file),
        )?;

        let proxies: Vec<String> = match env.get("HERALD_TRUSTED_PROXIES") {
            Some(raw) => raw
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            None => file.trusted_proxies.unwrap_or_default(),
        };
        let trusted_proxies = proxies
            .iter()
            .map(|p| {
                p.parse::<IpNet>()
                    .or_else(|_| p.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| ConfigError::Invalid {
                        setting: "HERALD_TRUSTED_PROXIES (trusted_proxies)",
                        message: format!("`{p}` is not an IP address or CIDR range"),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;

        let address = |setting: &'static str, raw: String| {
            raw.trim()
                .parse::<SocketAddr>()
                .map_err(|_| ConfigError::Invalid {
                    setting,
                    message: format!("`{raw}` is not an address and port such as 127.0.0.1:8081"),
                })
        };
        let sandbox_listen = address(
            "HERALD_SANDBOX_LISTEN (sandbox_listen)",
            pick("HERALD_SANDBOX_LISTEN", file.sandbox_listen).unwrap_or("127.0.0.1:8081".into()),
        )?;
        let sandbox_public = pick("HERALD_SANDBOX_PUBLIC_URL", file.sandbox_public_url);
        let sandbox = SandboxSettings {
            listen: sandbox_listen,
            public_url_explicit: sandbox_public.is_some(),
            public_url: match &sandbox_public {
                Some(raw) => parse_url("HERALD_SANDBOX_PUBLIC_URL (sandbox_public_url)", raw)?,
                None => Url::parse(&format!("http://localhost:{}", sandbox_listen.port()))
                    .expect("a valid URL"),
            },
            smtp_listen: address(
                "HERALD_SANDBOX_SMTP_LISTEN (sandbox_smtp_listen)",
                pick("HERALD_SANDBOX_SMTP_LISTEN", file.sandbox_smtp_listen)
                    .unwrap_or("127.0.0.1:2587".into()),
            )?,
            switches: match env.get("HERALD_SANDBOX_SWITCHES") {
                Some(raw) => Some(serde_json::from_str::<serde_json::Value>(raw).map_err(|e| {
                    ConfigError::Invalid {
                        setting: "HERALD_SANDBOX_SWITCHES (sandbox_switches)",
                        message: format!(
                            "not a JSON object such as {{\"smtp_auth_disabled\": true}}: {e}"
                        ),
                    }
                })?),
                None => file
                    .sandbox_switches
                    .map(|table| serde_json::to_value(table).unwrap_or_default()),
            },
        };

        let number = |setting: &'static str,
                      env_value: Option<&String>,
                      file_value: Option<u64>,
                      min: u64,
                      max: u64|
         -> Result<Option<u64>, ConfigError> {
            let value = match env_value {
                Some(raw) => Some(
                    raw.trim()
                        .parse::<u64>()
                        .map_err(|_| ConfigError::Invalid {
                            setting,
                            message: format!("`{raw}` is not a whole number"),
                        })?,
                ),
                None => file_value,
            };
            match value {
                Some(v) if v < min || v > max => Err(ConfigError::Invalid {
                    setting,
                    message: format!("{v} is out of range: use {min} to {max}"),
                }),
                other => Ok(other),
            }
        };
        let defaults = OutboxSettings::default();
        let mut outbox = OutboxSettings {
            default_sender: match pick("HERALD_DEFAULT_SENDER", file.default_sender) {
                Some(raw) => Some(raw.trim().parse().map_err(|_| ConfigError::Invalid {
                    setting: "HERALD_DEFAULT_SENDER (default_sender)",
                    message: format!(
                        "`{raw}` is not a mailbox id (a UUID, as the mailbox list shows)"
                    ),
                })?),
                None => None,
            },
            retry_for: number(
                "HERALD_RETRY_HOURS (retry_hours)",
                env.get("HERALD_RETRY_HOURS"),
                file.retry_hours.map(u64::from),
                1,
                24 * 30,
            )?
            .map(|h| time::Duration::hours(h as i64))
            .unwrap_or(defaults.retry_for),
            held_max: number(
                "HERALD_HELD_MAX_HOURS (held_max_hours)",
                env.get("HERALD_HELD_MAX_HOURS"),
                file.held_max_hours.map(u64::from),
                1,
                24 * 90,
            )?
            .map(|h| time::Duration::hours(h as i64))
            .unwrap_or(defaults.held_max),
            retention: number(
                "HERALD_RETENTION_DAYS (retention_days)",
                env.get("HERALD_RETENTION_DAYS"),
                file.retention_days.map(u64::from),
                0,
                3650,
            )?
            .map(|d| time::Duration::days(d as i64))
            .unwrap_or(defaults.retention),
            max_message_bytes: number(
                "HERALD_MAX_MESSAGE_BYTES (max_message_bytes)",
                env.get("HERALD_MAX_MESSAGE_BYTES"),
                file.max_message_bytes,
                1024,
                150 * 1024 * 1024,
            )?
            .unwrap_or(defaults.max_message_bytes),
            shutdown_grace: number(
                "HERALD_SHUTDOWN_GRACE_SECS (shutdown_grace_secs)",
                env.get("HERALD_SHUTDOWN_GRACE_SECS"),
                file.shutdown_grace_secs,
                0,
                3600,
            )?
            .map(std::time::Duration::from_secs)
            .unwrap_or(defaults.shutdown_grace),
            keepalive: number(
                "HERALD_KEEPALIVE_DAYS (keepalive_days)",
                env.get("HERALD_KEEPALIVE_DAYS"),
                file.keepalive_days.map(u64::from),
                1,
                60,
            )?
            .map(|d| time::Duration::days(d as i64))
            .unwrap_or(defaults.keepalive),
            default_sender_orgs: match pick("HERALD_DEFAULT_SENDER_ORGS", file.default_sender_orgs)
                .as_deref()
                .map(str::trim)
            {
                None | Some("listed") => DefaultSenderOrgs::Listed,
                Some("all") => DefaultSenderOrgs::All,
                Some(other) => {
                    return Err(ConfigError::Invalid {
                        setting: "HERALD_DEFAULT_SENDER_ORGS (default_sender_orgs)",
                        message: format!(
                            "`{other}` is neither `listed` (organizations allowed with `herald org set ORG --default-sender allow`) nor `all`"
                        ),
                    });
                }
            },
            default_sender_daily: number(
                "HERALD_DEFAULT_SENDER_DAILY (default_sender_daily)",
                env.get("HERALD_DEFAULT_SENDER_DAILY"),
                file.default_sender_daily,
                1,
                10_000_000,
            )?
            .unwrap_or(defaults.default_sender_daily),
            org_max_queued_bytes: defaults.org_max_queued_bytes,
            org_max_queued_messages: number(
                "HERALD_ORG_MAX_QUEUED_MESSAGES (org_max_queued_messages)",
                env.get("HERALD_ORG_MAX_QUEUED_MESSAGES"),
                file.org_max_queued_messages,
                1,
                100_000_000,
            )?
            .unwrap_or(defaults.org_max_queued_messages),
        };
        outbox.org_max_queued_bytes = match number(
            "HERALD_ORG_MAX_QUEUED_BYTES (org_max_queued_bytes)",
            env.get("HERALD_ORG_MAX_QUEUED_BYTES"),
            file.org_max_queued_bytes,
            1,
            1 << 50,
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
        let api_rate_per_minute = number(
            "HERALD_API_RATE_PER_MINUTE (api_rate_per_minute)",
            env.get("HERALD_API_RATE_PER_MINUTE"),
            file.api_rate_per_minute,
            1,
            1_000_000,
        )?
        .map(|r| r as u32)
        .unwrap_or(6_000);

        let relay_address = |setting: &'static str, raw: Option<String>| {
            raw.map(|raw| {
                raw.trim()
                    .parse::<SocketAddr>()
                    .map_err(|_| ConfigError::Invalid {
                        setting,
                        message: format!("`{raw}` is not an address and port such as 0.0.0.0:2525"),
                    })
            })
            .transpose()
        };
        let relay_listen = relay_address(
            "HERALD_RELAY_LISTEN (relay_listen)",
            pick("HERALD_RELAY_LISTEN", file.relay_listen),
        )?;
        let relay_tls_listen = relay_address(
            "HERALD_RELAY_TLS_LISTEN (relay_tls_listen)",
            pick("HERALD_RELAY_TLS_LISTEN", file.relay_tls_listen),
        )?;
        let pem_file =
            |setting: &'static str, raw: Option<String>| -> Result<Option<PathBuf>, ConfigError> {
                let Some(raw) = raw else { return Ok(None) };
                let path = PathBuf::from(raw.trim());
                if !path.is_file() {
                    return Err(ConfigError::Invalid {
                        setting,
                        message: format!("{} is not a readable PEM file", path.display()),
                    });
                }
                Ok(Some(path))
            };
        let relay_cert_file = pem_file(
            "HERALD_RELAY_CERT_FILE (relay_cert_file)",
            pick("HERALD_RELAY_CERT_FILE", file.relay_cert_file),
        )?;
        let relay_key_file = pem_file(
            "HERALD_RELAY_KEY_FILE (relay_key_file)",
            pick("HERALD_RELAY_KEY_FILE", file.relay_key_file),
        )?;
        if relay_cert_file.is_some() != relay_key_file.is_some() {
            return Err(ConfigError::Invalid {
                setting: "HERALD_RELAY_CERT_FILE and HERALD_RELAY_KEY_FILE",
                message: "set both, or neither for a generated certificate".into(),
            });
        }
        let relay_auth_without_tls = match env.get("HERALD_RELAY_AUTH_WITHOUT_TLS") {
            Some(raw) => parse_bool(raw).ok_or_else(|| ConfigError::Invalid {
                setting: "HERALD_RELAY_AUTH_WITHOUT_TLS (relay_auth_without_tls)",
                message: format!("`{raw}` is not a boolean; use true or false"),
            })?,
            None => file.relay_auth_without_tls.unwrap_or(false),
        };
        if relay_auth_without_tls && relay_listen.is_some_and(|a| !a.ip().is_loopback()) {
            return Err(ConfigError::Invalid {
                setting: "HERALD_RELAY_AUTH_WITHOUT_TLS (relay_auth_without_tls)",
                message: "passwords may cross the network unencrypted only on loopback: set HERALD_RELAY_LISTEN to a 127.0.0.1 or ::1 address, or turn this off".into(),
            });
        }
        let relay = RelaySettings {
            listen: relay_listen,
            tls_listen: relay_tls_listen,
            cert_file: relay_cert_file,
            key_file: relay_key_file,
            hostname: pick("HERALD_RELAY_HOSTNAME", file.relay_hostname)
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|| public_url.host_str().unwrap_or("localhost").to_owned()),
            auth_without_tls: relay_auth_without_tls,
            max_sessions: number(
                "HERALD_RELAY_MAX_SESSIONS (relay_max_sessions)",
                env.get("HERALD_RELAY_MAX_SESSIONS"),
                file.relay_max_sessions,
                1,
                1_000_000,
            )?
            .map_or(1000, |n| n as usize),
        };
        let http_defaults = HttpSettings::default();
        let http = HttpSettings {
            max_connections: number(
                "HERALD_HTTP_MAX_CONNECTIONS (http_max_connections)",
                env.get("HERALD_HTTP_MAX_CONNECTIONS"),
                file.http_max_connections,
                1,
                1_000_000,
            )?
            .map_or(http_defaults.max_connections, |n| n as usize),
            header_timeout: number(
                "HERALD_HTTP_HEADER_TIMEOUT_SECS (http_header_timeout_secs)",
                env.get("HERALD_HTTP_HEADER_TIMEOUT_SECS"),
                file.http_header_timeout_secs,
                1,
                300,
            )?
            .map_or(http_defaults.header_timeout, std::time::Duration::from_secs),
        };
        let hashing_threads = number(
            "HERALD_PASSWORD_HASHING_THREADS (password_hashing_threads)",
            env.get("HERALD_PASSWORD_HASHING_THREADS"),
            file.password_hashing_threads,
            1,
            256,
        )?
        .map_or_else(crate::crypto::default_hashing_threads, |n| n as usize);

        Ok(Self {
            relay,
            http,
            hashing_threads,
            outbox,
            listen,
            public_url,
            public_url_explicit,
            data_dir,
            database_url,
            master_key,
            log,
            log_format,
            dev,
            allow_private_hosts,
            http_ca_file,
            smtp_ca_file,
            trusted_proxies,
            sandbox,
            api_rate_per_minute,
            metrics_token: match pick("HERALD_METRICS_TOKEN", file.metrics_token) {
                Some(token) if token.trim().len() < 16 => {
                    return Err(ConfigError::Invalid {
                        setting: "HERALD_METRICS_TOKEN (metrics_token)",
                        message:
                            "use at least 16 characters (`herald keys generate` makes a good one)"
                                .into(),
                    });
                }
                Some(token) => Some(secrecy::SecretString::from(token.trim().to_owned())),
                None => None,
            },
        })
    }

    /// Once bound: an unset public URL follows the address actually listened on (port 0 in
    /// tests, or a port taken by the operating system).
    pub fn adopt_bound_address(&mut self, addr: SocketAddr) {
        if !self.public_url_explicit {
            self.public_url = url_for(addr);
        }
    }

    /// Whether users reach Herald over TLS, which makes cookies `Secure`.
    pub fn is_https(&self) -> bool {
        self.public_url.scheme() == "https"
    }

    /// The public URL without a trailing slash, for building links.
    pub fn public_base(&self) -> String {
        self.public_url.as_str().trim_end_matches('/').to_owned()
    }

    /// The scheme, host and port users reach Herald at, as browsers send it in `Origin`.
    pub fn public_origin(&self) -> String {
        self.public_url.origin().ascii_serialization()
    }

    /// The OAuth redirect URI: one fixed URI for the whole installation.
    pub fn redirect_uri(&self) -> String {
        format!("{}/web/um/smtp/redirect", self.public_base())
    }

    /// Path of the master key file used when `HERALD_MASTER_KEY` is not set.
    pub fn master_key_file(&self) -> PathBuf {
        self.data_dir.join("master.key")
    }
}

/// `http://ADDR/`, with a wildcard address replaced by loopback so the URL can be opened.
fn url_for(addr: SocketAddr) -> Url {
    let ip = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => IpAddr::from([127, 0, 0, 1]),
        ip if ip.is_unspecified() => IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Url::parse(&format!("http://{}", SocketAddr::new(ip, addr.port())))
        .expect("a socket address makes a valid URL")
}

fn parse_public_url(raw: &str) -> Result<Url, ConfigError> {
    parse_url("HERALD_PUBLIC_URL (public_url)", raw)
}

fn parse_url(setting: &'static str, raw: &str) -> Result<Url, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid { setting, message };
    let url = Url::parse(raw.trim()).map_err(|e| {
        invalid(format!(
            "`{raw}` is not a URL ({e}); e.g. https://mail.example.com"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "`{raw}` must start with http:// or https://"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(format!(
            "`{raw}` must not have a query or fragment"
        )));
    }
    if url.host_str().is_none() {
        return Err(invalid(format!("`{raw}` has no host")));
    }
    Ok(url)
}

fn parse_bool(raw: &str) -> Option<bool> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_need_no_setup() {
        let config = Config::load(None, &env(&[])).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.public_url.as_str(), "http://127.0.0.1:8080/");
        assert_eq!(
            config.redirect_uri(),
            "http://127.0.0.1:8080/web/um/smtp/redirect"
        );
        assert_eq!(
            config.database_url,
            DatabaseUrl::Sqlite(PathBuf::from("./herald-data/herald.db"))
        );
        assert!(!config.dev);
        assert!(config.master_key.is_none());
    }

    #[test]
    fn an_unset_public_url_follows_the_bound_address() {
        let mut config = Config::load(None, &env(&[("HERALD_LISTEN", "0.0.0.0:0")])).unwrap();
        config.adopt_bound_address("0.0.0.0:41234".parse().unwrap());
        assert_eq!(config.public_base(), "http://127.0.0.1:41234");
        let mut config = Config::load(
            None,
            &env(&[("HERALD_PUBLIC_URL", "https://mail.example.com")]),
        )
        .unwrap();
        config.adopt_bound_address("0.0.0.0:41234".parse().unwrap());
        assert_eq!(config.public_base(), "https://mail.example.com");
        let mut sandbox = Config::load(None, &env(&[])).unwrap().sandbox;
        assert_eq!(sandbox.public_url.as_str(), "http://localhost:8081/");
        sandbox.adopt_bound_address("127.0.0.1:5555".parse().unwrap());
        assert_eq!(sandbox.public_url.as_str(), "http://localhost:5555/");
    }

    #[test]
    fn sandbox_switches_come_from_the_environment_or_the_file() {
        let config = Config::load(
            None,
            &env(&[("HERALD_SANDBOX_SWITCHES", r#"{"smtp_auth_disabled": true}"#)]),
        )
        .unwrap();
        assert_eq!(config.sandbox.switches.unwrap()["smtp_auth_disabled"], true);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.toml");
        std::fs::write(&path, "[sandbox_switches]\nmessages_per_minute = 5\n").unwrap();
        let config = Config::load(Some(&path), &env(&[])).unwrap();
        assert_eq!(config.sandbox.switches.unwrap()["messages_per_minute"], 5);
        let err = Config::load(None, &env(&[("HERALD_SANDBOX_SWITCHES", "yes")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("HERALD_SANDBOX_SWITCHES"), "{err}");
    }

    #[test]
    fn environment_wins_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:9000\"\nlog = \"debug\"\n").unwrap();
        let config = Config::load(Some(&path), &env(&[("HERALD_LISTEN", "0.0.0.0:7000")])).unwrap();
        assert_eq!(config.listen.to_string(), "0.0.0.0:7000");
        assert_eq!(config.log, "debug");
    }

    #[test]
    fn unknown_file_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.toml");
        std::fs::write(&path, "listn = \"127.0.0.1:9000\"\n").unwrap();
        let err = Config::load(Some(&path), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("listn"), "{err}");
    }

    #[test]
    fn unknown_environment_variable_is_named() {
        let err = Config::load(None, &env(&[("HERALD_LISTN", "x")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("HERALD_LISTN"), "{err}");
    }

    #[test]
    fn unsupported_database_is_refused() {
        let err = Config::load(None, &env(&[("HERALD_DATABASE_URL", "mysql://x/y")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unsupported database `mysql`"), "{err}");
    }

    #[test]
    fn master_key_must_be_32_bytes() {
        let err = Config::load(None, &env(&[("HERALD_MASTER_KEY", "c2hvcnQ=")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("exactly 32 bytes"), "{err}");
        let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let config = Config::load(None, &env(&[("HERALD_MASTER_KEY", &key)])).unwrap();
        assert_eq!(config.master_key.unwrap().0.as_slice(), &[7u8; 32]);
    }

    #[test]
    fn master_key_never_reaches_debug_output() {
        let key = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
        let config = Config::load(None, &env(&[("HERALD_MASTER_KEY", &key)])).unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains(&key));
        assert!(debug.contains("REDACTED"));
    }

    #[test]
    fn postgres_password_is_redacted_in_debug() {
        let url = DatabaseUrl::parse("postgres://herald:hunter2@db/herald").unwrap();
        assert!(!format!("{url:?}").contains("hunter2"));
    }

    #[test]
    fn postgres_query_secrets_are_redacted_and_the_rest_still_shown() {
        let url = DatabaseUrl::parse(
            "postgres://herald:userinfo-secret@db.internal:5433/herald?password=hunter2&sslmode=verify-full&sslrootcert=/etc/ca.pem&options=-c%20x%3Dsecret&application_name=herald",
        )
        .unwrap();
        let shown = format!("{url:?}");
        for secret in ["userinfo-secret", "hunter2", "x%3Dsecret", "x=secret"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert_eq!(
            shown,
            "postgres://herald:REDACTED@db.internal:5433/herald?password=REDACTED&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&options=REDACTED&application_name=herald"
        );
        let config = Config::load(
            None,
            &env(&[(
                "HERALD_DATABASE_URL",
                "postgresql://db/herald?password=hunter2",
            )]),
        )
        .unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn an_unknown_postgres_parameter_is_refused_by_name_not_value() {
        let err = Config::load(
            None,
            &env(&[(
                "HERALD_DATABASE_URL",
                "postgres://db/herald?sslmode=verify-full&sslpassword=hunter2",
            )]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("HERALD_DATABASE_URL"), "{err}");
        assert!(err.contains("`sslpassword`"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        assert!(
            DatabaseUrl::parse(
                "postgres://db/herald?sslmode=verify-full&options[statement_timeout]=5s"
            )
            .is_ok()
        );
    }

    #[test]
    fn trusted_proxies_accept_addresses_and_ranges() {
        let config = Config::load(
            None,
            &env(&[("HERALD_TRUSTED_PROXIES", "10.0.0.1, 192.168.0.0/16")]),
        )
        .unwrap();
        assert_eq!(config.trusted_proxies.len(), 2);
        assert!(
            Config::load(None, &env(&[("HERALD_TRUSTED_PROXIES", "nope")]))
                .unwrap_err()
                .to_string()
                .contains("HERALD_TRUSTED_PROXIES")
        );
    }

    #[test]
    fn malformed_file_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.toml");
        std::fs::write(&path, "listen = \n").unwrap();
        let err = Config::load(Some(&path), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("herald.toml"), "{err}");
    }

    #[test]
    fn organization_limits_have_defaults_and_are_checked() {
        let config = Config::load(None, &env(&[])).unwrap();
        assert_eq!(config.outbox.default_sender_orgs, DefaultSenderOrgs::Listed);
        assert_eq!(config.outbox.default_sender_daily, 1_000);
        assert_eq!(config.outbox.org_max_queued_bytes, 1 << 30);
        assert_eq!(config.outbox.org_max_queued_messages, 100_000);
        assert_eq!(config.api_rate_per_minute, 6_000);
        let config = Config::load(None, &env(&[("HERALD_DEFAULT_SENDER_ORGS", "all")])).unwrap();
        assert_eq!(config.outbox.default_sender_orgs, DefaultSenderOrgs::All);
        let err = Config::load(None, &env(&[("HERALD_DEFAULT_SENDER_ORGS", "some")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("HERALD_DEFAULT_SENDER_ORGS"), "{err}");
        let err = Config::load(
            None,
            &env(&[
                ("HERALD_MAX_MESSAGE_BYTES", "10000"),
                ("HERALD_ORG_MAX_QUEUED_BYTES", "5000"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("less than HERALD_MAX_MESSAGE_BYTES"), "{err}");
        let err = Config::load(None, &env(&[("HERALD_API_RATE_PER_MINUTE", "0")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("HERALD_API_RATE_PER_MINUTE"), "{err}");
    }
}
