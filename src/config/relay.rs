//! The relay part: the SMTP relay that lets password-only devices send through Herald's
//! mailboxes. Without a listen address there is no relay.

use std::net::SocketAddr;
use std::path::PathBuf;

use url::Url;

use super::ConfigError;
use super::source::{self, Source};

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

/// Reads the relay's listeners, certificate and limits. AUTH before STARTTLS is refused unless
/// the relay listens on loopback alone; the host name defaults to the public URL's.
pub(super) fn resolve(src: &Source, public_url: &Url) -> Result<RelaySettings, ConfigError> {
    let file = &src.file;
    let listen = address(
        "HERALD_RELAY_LISTEN (relay_listen)",
        src.text("HERALD_RELAY_LISTEN", &file.relay_listen),
    )?;
    let tls_listen = address(
        "HERALD_RELAY_TLS_LISTEN (relay_tls_listen)",
        src.text("HERALD_RELAY_TLS_LISTEN", &file.relay_tls_listen),
    )?;
    let cert_file = source::existing_file(
        "HERALD_RELAY_CERT_FILE (relay_cert_file)",
        src.text("HERALD_RELAY_CERT_FILE", &file.relay_cert_file),
        "a readable PEM file",
    )?;
    let key_file = source::existing_file(
        "HERALD_RELAY_KEY_FILE (relay_key_file)",
        src.text("HERALD_RELAY_KEY_FILE", &file.relay_key_file),
        "a readable PEM file",
    )?;
    if cert_file.is_some() != key_file.is_some() {
        return Err(ConfigError::Invalid {
            setting: "HERALD_RELAY_CERT_FILE and HERALD_RELAY_KEY_FILE",
            message: "set both, or neither for a generated certificate".into(),
        });
    }
    let auth_without_tls = src.flag(
        "HERALD_RELAY_AUTH_WITHOUT_TLS (relay_auth_without_tls)",
        file.relay_auth_without_tls,
    )?;
    if auth_without_tls && listen.is_some_and(|a| !a.ip().is_loopback()) {
        return Err(ConfigError::Invalid {
            setting: "HERALD_RELAY_AUTH_WITHOUT_TLS (relay_auth_without_tls)",
            message: "passwords may cross the network unencrypted only on loopback: set HERALD_RELAY_LISTEN to a 127.0.0.1 or ::1 address, or turn this off".into(),
        });
    }
    Ok(RelaySettings {
        listen,
        tls_listen,
        cert_file,
        key_file,
        hostname: src
            .text("HERALD_RELAY_HOSTNAME", &file.relay_hostname)
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|| public_url.host_str().unwrap_or("localhost").to_owned()),
        auth_without_tls,
        max_sessions: src
            .number(
                "HERALD_RELAY_MAX_SESSIONS (relay_max_sessions)",
                file.relay_max_sessions,
                1..=1_000_000,
            )?
            .map_or(1000, |n| n as usize),
    })
}

/// A relay listener, when one is set.
fn address(setting: &'static str, raw: Option<String>) -> Result<Option<SocketAddr>, ConfigError> {
    raw.map(|raw| source::address(setting, &raw, "0.0.0.0:2525"))
        .transpose()
}
