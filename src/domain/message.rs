//! Messages in the outbox, the provider limits they are sent under, and what an organization
//! wants done with its mail while it has no Verified mailbox.

use time::OffsetDateTime;

use super::mailbox::{Provider, StatusReason};
/// The last reply of the SMTP server to a message (kept here as well, where the message log
/// has always found it).
pub use super::smtp::SmtpReply;
use super::{FieldError, MailboxId, OrgId};

string_enum!(
    /// Where a message is in its life.
    MessageStatus {
        /// Waiting for its next attempt.
        Queued = "queued",
        /// A worker holds it and is sending it now.
        Sending = "sending",
        /// The provider accepted it.
        Sent = "sent",
        /// It will not be sent: a permanent refusal, or it grew too old to retry.
        Failed = "failed",
        /// Waiting for its mailbox to be Verified again (or, for an organization without one,
        /// for any of its mailboxes to be verified).
        Held = "held",
        /// Cancelled by the organization before it was sent.
        Cancelled = "cancelled",
    }
);

impl MessageStatus {
    /// Whether nothing more will happen to the message.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Sent | Self::Failed | Self::Cancelled)
    }
}

string_enum!(
    /// What happens to an organization's mail while it has no Verified mailbox.
    NoMailboxPolicy {
        /// Send from the installation's default sender, with the organization's Reply-To.
        Fallback = "fallback",
        /// Keep the mail until one of the organization's mailboxes is verified.
        Hold = "hold",
    }
);

string_enum!(
    /// How a message reached Herald.
    MessageSource {
        Api = "api",
        Cli = "cli",
        Relay = "relay",
        /// An alert to the organization's admins.
        Alert = "alert",
    }
);

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
        let base = Limits::of(provider);
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

/// A message in the outbox, without its body.
#[derive(Clone, Debug)]
pub struct Message {
    pub id: String,
    pub org_id: OrgId,
    pub mailbox_id: Option<MailboxId>,
    pub mailbox_explicit: bool,
    pub via_default_sender: bool,
    pub api_key_id: Option<String>,
    pub source: MessageSource,
    pub status: MessageStatus,
    pub mail_from: String,
    pub recipients: Vec<String>,
    pub subject: String,
    pub message_id_header: String,
    pub size: u64,
    pub attempts: u32,
    pub next_attempt_at: OffsetDateTime,
    /// The last reply of the SMTP server to the message.
    pub last_reply: Option<SmtpReply>,
    /// Why it failed or is held.
    pub reason: Option<StatusReason>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub sent_at: Option<OffsetDateTime>,
    pub finished_at: Option<OffsetDateTime>,
    /// When its body was purged after the retention period.
    pub purged_at: Option<OffsetDateTime>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_only_what_they_name() {
        let limits = LimitOverrides {
            messages_per_minute: Some(10),
            ..Default::default()
        }
        .over(Provider::Microsoft);
        assert_eq!(limits.messages_per_minute, Some(10));
        assert_eq!(limits.connections, 3);
        assert_eq!(limits.recipients_per_message, 500);
        assert_eq!(limits.recipients_per_day, Some(10_000));
    }

    #[test]
    fn a_zero_limit_is_refused_with_its_field() {
        let error = LimitOverrides {
            connections: Some(0),
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(error.field, "limits.connections");
    }
}
