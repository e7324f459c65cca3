//! Relay credentials: a username and a generated password with which a device or program that
//! only speaks SMTP sends through some of its organization's mailboxes.

use time::OffsetDateTime;

use super::{MailboxId, OrgId};

string_enum!(
    /// What the relay does with a From that is not one of the credential's mailboxes (printers
    /// write `scanner@localdomain`).
    FromPolicy {
        /// Send as the mailbox; the device's address may stay as Reply-To.
        Rewrite = "rewrite",
        /// Refuse with `550 5.7.1`.
        Refuse = "refuse",
    }
);

/// A stored relay credential. The password is kept only as a digest.
#[derive(Clone, Debug)]
pub struct RelayCredential {
    pub id: String,
    pub org_id: OrgId,
    pub name: String,
    pub username: String,
    /// The mailboxes it sends through: the first unless MAIL FROM names another.
    pub mailboxes: Vec<MailboxId>,
    /// Client address ranges it may connect from; empty: anywhere.
    pub allowed_networks: Vec<ipnet::IpNet>,
    pub from_policy: FromPolicy,
    /// On a rewrite, keep the device's address as Reply-To (unless the message sets one).
    pub keep_reply_to: bool,
    pub created_at: OffsetDateTime,
    pub last_used_at: Option<OffsetDateTime>,
}

impl RelayCredential {
    /// Whether a client at `addr` may use it.
    pub fn allows(&self, addr: std::net::IpAddr) -> bool {
        let addr = match addr {
            std::net::IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(std::net::IpAddr::V4)
                .unwrap_or(addr),
            v4 => v4,
        };
        self.allowed_networks.is_empty() || self.allowed_networks.iter().any(|n| n.contains(&addr))
    }
}
