//! Messages in the outbox, the provider limits they are sent under, and what an organization
//! wants done with its mail while it has no Verified mailbox.

use time::OffsetDateTime;

pub use super::limits::{LimitOverrides, Limits};
use super::mailbox::StatusReason;
#[cfg(test)]
use super::provider::Provider;
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

/// The last reply of the SMTP server to a message.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct SmtpReply {
    /// The reply code, e.g. 250 or 432; absent when no server answered (a network error).
    pub code: Option<u16>,
    /// The enhanced status code, e.g. `4.3.2`.
    pub enhanced: Option<String>,
    /// The reply text, or what went wrong.
    pub text: String,
}

impl SmtpReply {
    /// The reply as one line, e.g. `432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded`.
    pub fn line(&self) -> String {
        match self.code {
            Some(code) => format!("{code} {}", self.text),
            None => self.text.clone(),
        }
    }

    /// Whether the server said to slow down: Exchange's `432 4.3.2` (too many connections or
    /// messages), or another 4xx that names a rate. The mailbox backs off.
    pub fn is_rate_limit(&self) -> bool {
        let text = self.text.to_ascii_lowercase();
        self.code == Some(432)
            || (self.code.is_some_and(|c| (400..500).contains(&c))
                && (text.contains("rate limit")
                    || text.contains("submission rate")
                    || text.contains("unusual rate")
                    || text.contains("throttl")))
    }

    /// Whether the mailbox's daily quota is spent: Exchange's `550 5.1.90` and
    /// `SubmissionQuotaExceeded`, Gmail's `550 5.4.5`. The mail waits, it does not fail.
    pub fn is_quota(&self) -> bool {
        matches!(self.enhanced.as_deref(), Some("5.1.90") | Some("5.4.5"))
            || self.text.contains("SubmissionQuotaExceeded")
    }
}

#[cfg(test)]
mod reply_tests {
    use super::*;

    fn reply(code: u16, enhanced: &str, text: &str) -> SmtpReply {
        SmtpReply {
            code: Some(code),
            enhanced: Some(enhanced.into()),
            text: format!("{enhanced} {text}"),
        }
    }

    #[test]
    fn only_replies_about_rates_back_the_mailbox_off() {
        assert!(
            reply(
                432,
                "4.3.2",
                "STOREDRV.ClientSubmit; sender thread limit exceeded"
            )
            .is_rate_limit()
        );
        assert!(
            reply(
                421,
                "4.7.28",
                "Our system has detected an unusual rate of mail"
            )
            .is_rate_limit()
        );
        assert!(!reply(452, "4.5.3", "Too many recipients").is_rate_limit());
        assert!(!reply(451, "4.3.2", "Temporary server error").is_rate_limit());
        assert!(
            reply(
                554,
                "5.2.0",
                "STOREDRV.Submission.Exception:SubmissionQuotaExceededException"
            )
            .is_quota()
        );
        assert!(reply(550, "5.4.5", "Daily user sending limit exceeded").is_quota());
        assert!(!reply(550, "5.1.10", "RESOLVER.ADR.RecipientNotFound").is_quota());
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
