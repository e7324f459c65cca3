//! Messages in the outbox, the provider limits they are sent under, and what an organization
//! wants done with its mail while it has no Verified mailbox.

use time::OffsetDateTime;

pub use super::limits::{LimitOverrides, Limits};
use super::mailbox::StatusReason;
#[cfg(test)]
use super::provider::Provider;
/// The last reply of the SMTP server to a message (kept here as well, where the message log
/// has always found it).
pub use super::smtp::SmtpReply;
use super::{MailboxId, OrgId};

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
