//! How one setting is read: its `HERALD_*` environment variable wins over its key in the
//! file, and each reader turns the raw text into a typed value or an error naming the setting.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;

use url::Url;

use super::ConfigError;
use super::file::FileConfig;

/// The two places settings come from, read by every part of the configuration.
pub(super) struct Source<'a> {
    pub file: FileConfig,
    pub env: &'a BTreeMap<String, String>,
}

impl Source<'_> {
    /// The environment variable `var` as given, even blank.
    pub fn var(&self, var: &str) -> Option<&String> {
        self.env.get(var)
    }

    /// Text from the environment, else from the file; blank counts as unset.
    pub fn text(&self, var: &str, from_file: &Option<String>) -> Option<String> {
        self.env
            .get(var)
            .cloned()
            .or_else(|| from_file.clone())
            .filter(|v| !v.trim().is_empty())
    }

    /// A boolean from the environment (`true`/`false`, `yes`/`no`, `on`/`off`, `1`/`0`; blank
    /// is false), else from the file, else false.
    pub fn flag(
        &self,
        setting: &'static str,
        from_file: Option<bool>,
    ) -> Result<bool, ConfigError> {
        match self.env.get(variable(setting)) {
            Some(raw) => parse_bool(raw).ok_or_else(|| ConfigError::Invalid {
                setting,
                message: format!("`{raw}` is not a boolean; use true or false"),
            }),
            None => Ok(from_file.unwrap_or(false)),
        }
    }

    /// A whole number from the environment, else from the file, within `range`; `None` when
    /// neither sets it.
    pub fn number(
        &self,
        setting: &'static str,
        from_file: Option<u64>,
        range: RangeInclusive<u64>,
    ) -> Result<Option<u64>, ConfigError> {
        let value = match self.env.get(variable(setting)) {
            Some(raw) => Some(
                raw.trim()
                    .parse::<u64>()
                    .map_err(|_| ConfigError::Invalid {
                        setting,
                        message: format!("`{raw}` is not a whole number"),
                    })?,
            ),
            None => from_file,
        };
        match value {
            Some(v) if !range.contains(&v) => Err(ConfigError::Invalid {
                setting,
                message: format!(
                    "{v} is out of range: use {} to {}",
                    range.start(),
                    range.end()
                ),
            }),
            other => Ok(other),
        }
    }
}

/// The environment variable of a setting as messages name it: `HERALD_DEV` in
/// `HERALD_DEV (dev)`. [`Source::flag`] and [`Source::number`] take the name messages use and
/// read the variable it starts with, so the two cannot disagree.
fn variable(setting: &str) -> &str {
    setting.split(' ').next().unwrap_or(setting)
}

/// An address and port; the message shows `example` as one.
pub(super) fn address(
    setting: &'static str,
    raw: &str,
    example: &str,
) -> Result<SocketAddr, ConfigError> {
    raw.trim()
        .parse::<SocketAddr>()
        .map_err(|_| ConfigError::Invalid {
            setting,
            message: format!("`{raw}` is not an address and port such as {example}"),
        })
}

/// An `http://` or `https://` URL with a host and neither query nor fragment.
pub(super) fn url(setting: &'static str, raw: &str) -> Result<Url, ConfigError> {
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

/// The path of a file that must exist; the message calls it `what` (`a readable PEM file`).
pub(super) fn existing_file(
    setting: &'static str,
    raw: Option<String>,
    what: &str,
) -> Result<Option<PathBuf>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    let path = PathBuf::from(raw.trim());
    if !path.is_file() {
        return Err(ConfigError::Invalid {
            setting,
            message: format!("{} is not {what}", path.display()),
        });
    }
    Ok(Some(path))
}

fn parse_bool(raw: &str) -> Option<bool> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}
