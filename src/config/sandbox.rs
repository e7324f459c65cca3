//! The sandbox part: where the sandbox provider (a local stand-in for Microsoft 365) runs, when
//! `herald demo` or a test starts it, and the failures it reproduces from the start: the
//! sandbox's own [`Settings`], read from Herald's configuration.

use url::Url;

use super::ConfigError;
use super::source::{self, Source};
use crate::sandbox::Settings;

/// `HERALD_SANDBOX_LISTEN`, `HERALD_SANDBOX_PUBLIC_URL`, `HERALD_SANDBOX_SMTP_LISTEN` and
/// `HERALD_SANDBOX_SWITCHES`.
pub(super) fn resolve(src: &Source) -> Result<Settings, ConfigError> {
    let listen = source::address(
        "HERALD_SANDBOX_LISTEN (sandbox_listen)",
        &src.text("HERALD_SANDBOX_LISTEN", &src.file.sandbox_listen)
            .unwrap_or("127.0.0.1:8081".into()),
        "127.0.0.1:8081",
    )?;
    let public = src.text("HERALD_SANDBOX_PUBLIC_URL", &src.file.sandbox_public_url);
    Ok(Settings {
        listen,
        public_url_explicit: public.is_some(),
        public_url: match &public {
            Some(raw) => source::url("HERALD_SANDBOX_PUBLIC_URL (sandbox_public_url)", raw)?,
            None => {
                Url::parse(&format!("http://localhost:{}", listen.port())).expect("a valid URL")
            }
        },
        smtp_listen: source::address(
            "HERALD_SANDBOX_SMTP_LISTEN (sandbox_smtp_listen)",
            &src.text("HERALD_SANDBOX_SMTP_LISTEN", &src.file.sandbox_smtp_listen)
                .unwrap_or("127.0.0.1:2587".into()),
            "127.0.0.1:8081",
        )?,
        switches: match src.var("HERALD_SANDBOX_SWITCHES") {
            Some(raw) => Some(serde_json::from_str::<serde_json::Value>(raw).map_err(|e| {
                ConfigError::Invalid {
                    setting: "HERALD_SANDBOX_SWITCHES (sandbox_switches)",
                    message: format!(
                        "not a JSON object such as {{\"smtp_auth_disabled\": true}}: {e}"
                    ),
                }
            })?),
            None => src
                .file
                .sandbox_switches
                .clone()
                .map(|table| serde_json::to_value(table).unwrap_or_default()),
        },
    })
}
