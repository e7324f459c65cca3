//! The organization's sending settings as the Outgoing Mail page shows them: what happens to
//! mail while no mailbox is Verified, and the Reply-To of mail sent by the default sender.
//! Admins change them through `PATCH /api/v1/organization` (the page's script sends the session's
//! CSRF token), so the UI and the API share one validation and one audit event.

use crate::config::OutboxSettings;
use crate::domain::Organization;
use crate::domain::message::{MessageStatus, NoMailboxPolicy};

/// The settings, in the words of the form.
pub(super) struct SendingSettings {
    /// `hold` is chosen (otherwise `fallback`).
    pub hold: bool,
    pub reply_to: String,
    /// Whether the installation has a default sender; without one, `fallback` holds mail too.
    pub default_sender: bool,
    /// Whether it sends for this organization (the operator decides); if not, likewise.
    pub default_sender_allowed: bool,
}

impl SendingSettings {
    pub fn of(org: Option<&Organization>, settings: &OutboxSettings) -> Self {
        Self {
            hold: org.is_some_and(|o| o.no_mailbox_policy == NoMailboxPolicy::Hold),
            reply_to: org.and_then(|o| o.reply_to.clone()).unwrap_or_default(),
            default_sender: settings.default_sender.is_some(),
            default_sender_allowed: org
                .is_some_and(|o| crate::services::default_sender::serves(settings, o)),
        }
    }

    /// The chosen option, worded as the form words it.
    pub fn policy_words(&self) -> &'static str {
        if self.hold {
            "Hold mail until a mailbox is verified"
        } else {
            "Send from the default sender"
        }
    }
}

/// What the Outgoing Mail page says about the message log: how much mail waits or failed.
pub(super) struct LogSummary {
    pub total: i64,
    pub held: i64,
    pub failed: i64,
    pub queued: i64,
}

impl LogSummary {
    pub fn of(counts: &[(MessageStatus, i64)]) -> Self {
        let count = |s: MessageStatus| {
            counts
                .iter()
                .filter(|(status, _)| *status == s)
                .map(|(_, n)| *n)
                .sum()
        };
        Self {
            total: counts.iter().map(|(_, n)| n).sum(),
            held: count(MessageStatus::Held),
            failed: count(MessageStatus::Failed),
            queued: count(MessageStatus::Queued) + count(MessageStatus::Sending),
        }
    }
}
