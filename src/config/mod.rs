//! Configuration: an optional `herald.toml` overlaid by `HERALD_*` environment variables.
//!
//! The file and the environment are read once, at start-up, into one typed [`Config`]. Unknown
//! keys are errors in both places, so a typo (`HERALD_LISTN`) never silently falls back to a
//! default. Every field of [`FileConfig`] documents the environment variable that overrides it.
//!
//! Each part of the configuration is read and validated in a module of its own: `file` (the
//! file and the known variables), `web` (listen address, public URL, HTTP limits), `database`,
//! `master_key`, `logging`, `trust` (private hosts, certificate authorities, proxies),
//! `sandbox`, `outbox` and `relay`; `source` holds the readers they share.

mod database;
mod file;
mod logging;
mod master_key;
mod outbox;
mod relay;
mod sandbox;
mod source;
mod trust;
mod web;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use url::Url;

use crate::store::DatabaseUrl;

pub use file::FileConfig;
pub use logging::LogFormat;
pub use master_key::MasterKeyMaterial;
pub use outbox::{DefaultSenderOrgs, OutboxSettings};
pub use relay::RelaySettings;
pub use web::HttpSettings;

use source::Source;

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

/// Herald's validated configuration. Each field names the variables it comes from; the file
/// key is the variable's name in lower case without `HERALD_` (see [`FileConfig`]).
#[derive(Clone, Debug)]
pub struct Config {
    /// `HERALD_LISTEN`: the address the HTTP server listens on.
    pub listen: SocketAddr,
    /// `HERALD_PUBLIC_URL`: the URL users reach Herald at.
    pub public_url: Url,
    /// Whether `public_url` was set, rather than derived from the address listened on.
    pub public_url_explicit: bool,
    /// `HERALD_DATA_DIR`: where the SQLite file and the master key file live.
    pub data_dir: PathBuf,
    /// `HERALD_DATABASE_URL`: the database the store opens.
    pub database_url: DatabaseUrl,
    /// `HERALD_MASTER_KEY`: the master key, when it is not kept in the key file.
    pub master_key: Option<MasterKeyMaterial>,
    /// `HERALD_LOG`: the log level or filter.
    pub log: String,
    /// `HERALD_LOG_FORMAT`.
    pub log_format: LogFormat,
    /// `HERALD_DEV`: development mode (allows `http://` on loopback hosts).
    pub dev: bool,
    /// `HERALD_ALLOW_PRIVATE_HOSTS`: token URLs and SMTP hosts may be private addresses.
    pub allow_private_hosts: bool,
    /// `HERALD_HTTP_CA_FILE`: certificates trusted for token endpoints, beside the system's.
    pub http_ca_file: Option<PathBuf>,
    /// `HERALD_SMTP_CA_FILE`: certificates trusted for SMTP servers, beside the system's.
    pub smtp_ca_file: Option<PathBuf>,
    /// `HERALD_TRUSTED_PROXIES`: the reverse proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// `HERALD_SANDBOX_*`: where the sandbox provider runs, when it runs.
    pub sandbox: crate::sandbox::Settings,
    /// The outbox's retention, retries, limits and default sender.
    pub outbox: OutboxSettings,
    /// `HERALD_RELAY_*`: the SMTP relay for legacy devices.
    pub relay: RelaySettings,
    /// `HERALD_HTTP_*`: the HTTP server's limits.
    pub http: HttpSettings,
    /// `HERALD_PASSWORD_HASHING_THREADS`: password hashes computed at once (see
    /// [`crate::crypto::HashPool`]).
    pub hashing_threads: usize,
    /// `HERALD_METRICS_TOKEN`: the bearer token `/metrics` asks for; without one it answers
    /// only loopback clients.
    pub metrics_token: Option<secrecy::SecretString>,
    /// `HERALD_API_RATE_PER_MINUTE`: requests each API key may make per minute, on each
    /// instance.
    pub api_rate_per_minute: u32,
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
        let file = file::read(path.as_deref())?;
        file::check_env_names(env)?;
        Self::resolve(&Source { file, env })
    }

    /// Reads every part. The order is the order settings are checked in: with several wrong,
    /// the first in it is the one reported.
    fn resolve(src: &Source) -> Result<Self, ConfigError> {
        let web::Address {
            listen,
            public_url,
            public_url_explicit,
        } = web::address(src)?;
        let data_dir = database::data_dir(src);
        let database_url = database::database_url(src, &data_dir)?;
        let master_key = master_key::resolve(src)?;
        let (log, log_format) = logging::resolve(src)?;
        let dev = src.flag("HERALD_DEV (dev)", src.file.dev)?;
        let trust::Trust {
            allow_private_hosts,
            http_ca_file,
            smtp_ca_file,
            trusted_proxies,
        } = trust::resolve(src)?;
        let sandbox = sandbox::resolve(src)?;
        let outbox = outbox::resolve(src)?;
        let api_rate_per_minute = web::api_rate_per_minute(src)?;
        let relay = relay::resolve(src, &public_url)?;
        let http = web::http(src)?;
        let hashing_threads = web::hashing_threads(src)?;
        let metrics_token = web::metrics_token(src)?;
        Ok(Self {
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
            outbox,
            relay,
            http,
            hashing_threads,
            metrics_token,
            api_rate_per_minute,
        })
    }

    /// Once bound: an unset public URL follows the address actually listened on (port 0 in
    /// tests, or a port taken by the operating system).
    pub fn adopt_bound_address(&mut self, addr: SocketAddr) {
        if !self.public_url_explicit {
            self.public_url = web::url_for(addr);
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

    /// Keeps everything in `dir`: the key file, and an SQLite database there whatever database
    /// was configured (`herald demo` starts from nothing each time).
    pub fn keep_data_in(&mut self, dir: PathBuf) {
        self.database_url = database::sqlite_in(&dir);
        self.data_dir = dir;
    }

    /// Path of the master key file used when `HERALD_MASTER_KEY` is not set.
    pub fn master_key_file(&self) -> PathBuf {
        self.data_dir.join("master.key")
    }
}
