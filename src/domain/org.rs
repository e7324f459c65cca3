//! Organizations: the tenants of an installation. Everything else belongs to exactly one.

use time::OffsetDateTime;

use super::{FieldError, OrgId, parse_label};

/// An organization's display name: 1–100 characters, no control characters, unique.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrgName(String);

impl OrgName {
    pub const MAX_LEN: usize = 100;

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        parse_label("name", raw, Self::MAX_LEN).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A stored organization.
#[derive(Clone, Debug)]
pub struct Organization {
    pub id: OrgId,
    pub name: String,
    pub created_at: OffsetDateTime,
    /// What happens to its mail while it has no Verified mailbox.
    pub no_mailbox_policy: super::message::NoMailboxPolicy,
    /// The Reply-To of its mail sent by the installation's default sender.
    pub reply_to: Option<String>,
    /// The operator allowed the installation's default sender to send for it (what counts
    /// when `HERALD_DEFAULT_SENDER_ORGS=listed`).
    pub default_sender_allowed: bool,
}
