//! The logging part: `HERALD_LOG`, a level or filter, and `HERALD_LOG_FORMAT`.

use super::ConfigError;
use super::source::Source;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// The filter (checked as the logger will read it; default `info`) and the format (default
/// `pretty`).
pub(super) fn resolve(src: &Source) -> Result<(String, LogFormat), ConfigError> {
    let log = src
        .text("HERALD_LOG", &src.file.log)
        .unwrap_or_else(|| "info".into());
    tracing_subscriber::EnvFilter::try_new(&log).map_err(|e| ConfigError::Invalid {
        setting: "HERALD_LOG (log)",
        message: format!("`{log}` is not a log level or filter: {e}"),
    })?;
    let format = match src
        .text("HERALD_LOG_FORMAT", &src.file.log_format)
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
    Ok((log, format))
}
