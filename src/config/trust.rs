//! The trust part: which servers and clients Herald believes beyond the defaults — private
//! hosts for token URLs and SMTP, extra certificate authorities, and reverse proxies.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;

use super::ConfigError;
use super::source::{self, Source};

/// What Herald trusts beyond the defaults.
pub(super) struct Trust {
    pub allow_private_hosts: bool,
    pub http_ca_file: Option<PathBuf>,
    pub smtp_ca_file: Option<PathBuf>,
    pub trusted_proxies: Vec<IpNet>,
}

/// `HERALD_ALLOW_PRIVATE_HOSTS`, `HERALD_HTTP_CA_FILE`, `HERALD_SMTP_CA_FILE` and
/// `HERALD_TRUSTED_PROXIES` (comma-separated in the environment, a list in the file).
pub(super) fn resolve(src: &Source) -> Result<Trust, ConfigError> {
    let file = &src.file;
    let allow_private_hosts = src.flag(
        "HERALD_ALLOW_PRIVATE_HOSTS (allow_private_hosts)",
        file.allow_private_hosts,
    )?;
    const CERTIFICATES: &str = "a readable file of PEM certificates";
    let http_ca_file = source::existing_file(
        "HERALD_HTTP_CA_FILE (http_ca_file)",
        src.text("HERALD_HTTP_CA_FILE", &file.http_ca_file),
        CERTIFICATES,
    )?;
    let smtp_ca_file = source::existing_file(
        "HERALD_SMTP_CA_FILE (smtp_ca_file)",
        src.text("HERALD_SMTP_CA_FILE", &file.smtp_ca_file),
        CERTIFICATES,
    )?;
    let proxies: Vec<String> = match src.var("HERALD_TRUSTED_PROXIES") {
        Some(raw) => raw
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        None => file.trusted_proxies.clone().unwrap_or_default(),
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
    Ok(Trust {
        allow_private_hosts,
        http_ca_file,
        smtp_ca_file,
        trusted_proxies,
    })
}
