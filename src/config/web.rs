//! The web part: the address Herald listens on and the URL users reach it at, the HTTP
//! server's limits, the API's rate, password hashing for sign-ins, and the `/metrics` token.

use std::net::{IpAddr, SocketAddr};

use url::Url;

use super::ConfigError;
use super::source::{self, Source};

/// Where Herald listens and the URL users reach it at.
pub(super) struct Address {
    pub listen: SocketAddr,
    pub public_url: Url,
    /// Whether `public_url` was set, rather than derived from `listen`.
    pub public_url_explicit: bool,
}

/// `HERALD_LISTEN` (default `127.0.0.1:8080`) and `HERALD_PUBLIC_URL` (default: the URL of the
/// address listened on).
pub(super) fn address(src: &Source) -> Result<Address, ConfigError> {
    let listen_raw = src
        .text("HERALD_LISTEN", &src.file.listen)
        .unwrap_or("127.0.0.1:8080".into());
    let listen = source::address("HERALD_LISTEN (listen)", &listen_raw, "127.0.0.1:8080")?;
    let public_setting = src.text("HERALD_PUBLIC_URL", &src.file.public_url);
    Ok(Address {
        listen,
        public_url_explicit: public_setting.is_some(),
        public_url: match public_setting {
            Some(raw) => source::url("HERALD_PUBLIC_URL (public_url)", &raw)?,
            None => url_for(listen),
        },
    })
}

/// `http://ADDR/`, with a wildcard address replaced by loopback so the URL can be opened.
pub(super) fn url_for(addr: SocketAddr) -> Url {
    let ip = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => IpAddr::from([127, 0, 0, 1]),
        ip if ip.is_unspecified() => IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Url::parse(&format!("http://{}", SocketAddr::new(ip, addr.port())))
        .expect("a socket address makes a valid URL")
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

/// `HERALD_HTTP_MAX_CONNECTIONS` and `HERALD_HTTP_HEADER_TIMEOUT_SECS`.
pub(super) fn http(src: &Source) -> Result<HttpSettings, ConfigError> {
    let defaults = HttpSettings::default();
    Ok(HttpSettings {
        max_connections: src
            .number(
                "HERALD_HTTP_MAX_CONNECTIONS (http_max_connections)",
                src.file.http_max_connections,
                1..=1_000_000,
            )?
            .map_or(defaults.max_connections, |n| n as usize),
        header_timeout: src
            .number(
                "HERALD_HTTP_HEADER_TIMEOUT_SECS (http_header_timeout_secs)",
                src.file.http_header_timeout_secs,
                1..=300,
            )?
            .map_or(defaults.header_timeout, std::time::Duration::from_secs),
    })
}

/// `HERALD_API_RATE_PER_MINUTE`: requests each API key may make per minute. Default 6000.
pub(super) fn api_rate_per_minute(src: &Source) -> Result<u32, ConfigError> {
    Ok(src
        .number(
            "HERALD_API_RATE_PER_MINUTE (api_rate_per_minute)",
            src.file.api_rate_per_minute,
            1..=1_000_000,
        )?
        .map(|r| r as u32)
        .unwrap_or(6_000))
}

/// `HERALD_PASSWORD_HASHING_THREADS`: password hashes computed at once. Default: the CPUs.
pub(super) fn hashing_threads(src: &Source) -> Result<usize, ConfigError> {
    Ok(src
        .number(
            "HERALD_PASSWORD_HASHING_THREADS (password_hashing_threads)",
            src.file.password_hashing_threads,
            1..=256,
        )?
        .map_or_else(crate::crypto::default_hashing_threads, |n| n as usize))
}

/// `HERALD_METRICS_TOKEN`: at least 16 characters, or none.
pub(super) fn metrics_token(src: &Source) -> Result<Option<secrecy::SecretString>, ConfigError> {
    match src.text("HERALD_METRICS_TOKEN", &src.file.metrics_token) {
        Some(token) if token.trim().len() < 16 => Err(ConfigError::Invalid {
            setting: "HERALD_METRICS_TOKEN (metrics_token)",
            message: "use at least 16 characters (`herald keys generate` makes a good one)".into(),
        }),
        Some(token) => Ok(Some(secrecy::SecretString::from(token.trim().to_owned()))),
        None => Ok(None),
    }
}
