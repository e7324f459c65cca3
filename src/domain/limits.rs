//! A mailbox's sending limits: its provider's, and the overrides an admin sets.

use super::FieldError;
use super::provider::Provider;

/// Per-mailbox overrides of the provider's sending limits. `None` keeps the provider's value.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(default, deny_unknown_fields)]
pub struct LimitOverrides {
    /// Messages per rolling minute (Exchange Online: 30).
    pub messages_per_minute: Option<u32>,
    /// Messages per rolling day (Google Workspace: 2,000).
    pub messages_per_day: Option<u32>,
    /// Recipients per rolling day (Exchange Online and Google: 10,000).
    pub recipients_per_day: Option<u32>,
    /// Recipients of one message (Exchange Online: 500; Google: 100).
    pub recipients_per_message: Option<u32>,
    /// SMTP connections open at once (Exchange Online: 3).
    pub connections: Option<u32>,
}

impl LimitOverrides {
    /// Checks that every value is a usable limit.
    pub fn validate(&self) -> Result<(), FieldError> {
        let check = |name: &str, value: Option<u32>, max: u32| match value {
            Some(v) if v == 0 || v > max => Err(FieldError::new(
                format!("limits.{name}"),
                format!("must be between 1 and {max}, or null for the provider's limit"),
            )),
            _ => Ok(()),
        };
        check("messages_per_minute", self.messages_per_minute, 10_000)?;
        check("messages_per_day", self.messages_per_day, 10_000_000)?;
        check("recipients_per_day", self.recipients_per_day, 100_000_000)?;
        check(
            "recipients_per_message",
            self.recipients_per_message,
            10_000,
        )?;
        check("connections", self.connections, 100)?;
        Ok(())
    }

    /// The limits in force: these overrides over the provider's.
    pub fn over(&self, provider: Provider) -> Limits {
        self.over_limits(Limits::of(provider))
    }

    /// These overrides over `base`.
    pub fn over_limits(&self, base: Limits) -> Limits {
        Limits {
            messages_per_minute: self.messages_per_minute.or(base.messages_per_minute),
            messages_per_day: self.messages_per_day.or(base.messages_per_day),
            recipients_per_day: self.recipients_per_day.or(base.recipients_per_day),
            recipients_per_message: self
                .recipients_per_message
                .unwrap_or(base.recipients_per_message),
            connections: self.connections.unwrap_or(base.connections),
        }
    }
}

/// Whose limits a mailbox's server has: its provider's, and Google's for a custom (Basic,
/// password) mailbox on Gmail's `smtp.gmail.com`, which keeps Google's limits whoever set it up.
pub fn limits_provider(provider: Provider, host: &str) -> Provider {
    let gmail = host
        .trim_end_matches('.')
        .eq_ignore_ascii_case(GMAIL_SMTP_HOST);
    match provider {
        Provider::Custom if gmail => Provider::Google,
        other => other,
    }
}

/// Gmail's SMTP submission server.
pub const GMAIL_SMTP_HOST: &str = "smtp.gmail.com";

/// Microsoft 365 High Volume Email's SMTP endpoints (the older name, and the newer one).
pub const HVE_SMTP_HOSTS: &[&str] = &["smtp-hve.office365.com", "smtp.hve.mx.microsoft"];

/// Whether the mailbox's server is High Volume Email: its own limits, internal recipients only.
pub fn is_hve(host: &str) -> bool {
    let host = host.trim_end_matches('.');
    HVE_SMTP_HOSTS.iter().any(|h| host.eq_ignore_ascii_case(h))
}

/// The sending limits of a mailbox. `None` means no limit of that kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Limits {
    pub messages_per_minute: Option<u32>,
    pub messages_per_day: Option<u32>,
    pub recipients_per_day: Option<u32>,
    pub recipients_per_message: u32,
    pub connections: u32,
}

impl Limits {
    /// High Volume Email's: no message or recipient rate limit (it is meant for volume), at
    /// most 50 recipients a message.
    pub fn hve() -> Self {
        Self {
            messages_per_minute: None,
            messages_per_day: None,
            recipients_per_day: None,
            recipients_per_message: 50,
            connections: 3,
        }
    }

    /// The provider's documented limits (PROVIDERS.md): Exchange Online allows 30 messages a
    /// minute, 3 connections, 500 recipients a message and 10,000 a day; Google Workspace 2,000
    /// messages and 10,000 recipients a day and 100 recipients a message over SMTP. Other
    /// servers get RFC 5321's 100 recipients and a conservative 3 connections.
    pub fn of(provider: Provider) -> Self {
        match provider {
            Provider::Microsoft | Provider::Sandbox => Self {
                messages_per_minute: Some(30),
                messages_per_day: None,
                recipients_per_day: Some(10_000),
                recipients_per_message: 500,
                connections: 3,
            },
            Provider::Google => Self {
                messages_per_minute: None,
                messages_per_day: Some(2_000),
                recipients_per_day: Some(10_000),
                recipients_per_message: 100,
                connections: 3,
            },
            Provider::Custom => Self {
                messages_per_minute: None,
                messages_per_day: None,
                recipients_per_day: None,
                recipients_per_message: 100,
                connections: 3,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn high_volume_email_is_known_by_its_endpoint() {
        assert!(is_hve("smtp-hve.office365.com"));
        assert!(is_hve("SMTP.HVE.MX.MICROSOFT."));
        assert!(!is_hve("smtp.office365.com"));
        assert_eq!(Limits::hve().messages_per_minute, None);
        assert_eq!(Limits::hve().recipients_per_message, 50);
    }

    #[test]
    fn a_password_mailbox_on_gmail_gets_google_s_limits() {
        let limits =
            LimitOverrides::default().over(limits_provider(Provider::Custom, "SMTP.Gmail.com."));
        assert_eq!(limits.messages_per_day, Some(2_000));
        assert_eq!(limits.recipients_per_message, 100);
        assert_eq!(limits.recipients_per_day, Some(10_000));
        let other =
            LimitOverrides::default().over(limits_provider(Provider::Custom, "mail.example.com"));
        assert_eq!(other.messages_per_day, None);
    }
}
