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
    /// A device that cannot log in: the client's address alone identifies it (no AUTH). Its
    /// networks are explicit, and private or loopback.
    pub network_only: bool,
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

    /// How closely a network-only credential matches `addr`: the longest prefix of its networks
    /// that contains it; `None` when none does (or it is not network-only).
    pub fn network_match(&self, addr: std::net::IpAddr) -> Option<u8> {
        if !self.network_only {
            return None;
        }
        let addr = canonical(addr);
        self.allowed_networks
            .iter()
            .filter(|n| n.contains(&addr))
            .map(ipnet::IpNet::prefix_len)
            .max()
    }
}

/// An IPv4 address written as IPv6 (`::ffff:10.0.0.5`) is the IPv4 address.
fn canonical(addr: std::net::IpAddr) -> std::net::IpAddr {
    match addr {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(std::net::IpAddr::V4)
            .unwrap_or(addr),
        v4 => v4,
    }
}

/// Whether a whole network is private or loopback (RFC 1918, RFC 4193, 127/8, ::1): the only
/// networks a credential without a password may be bound to.
pub fn private_network(net: &ipnet::IpNet) -> bool {
    match net {
        ipnet::IpNet::V4(n) => {
            let inside = |a: std::net::Ipv4Addr| a.is_private() || a.is_loopback();
            inside(n.network()) && inside(n.broadcast())
        }
        ipnet::IpNet::V6(n) => {
            let inside = |a: std::net::Ipv6Addr| a.is_loopback() || a.is_unique_local();
            inside(n.network()) && inside(n.broadcast())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_private_or_loopback_networks_may_go_without_a_password() {
        for ok in [
            "192.168.1.0/24",
            "10.0.0.0/8",
            "172.16.5.7/32",
            "127.0.0.1/32",
            "fd00::/8",
            "::1/128",
        ] {
            assert!(private_network(&ok.parse().unwrap()), "{ok}");
        }
        for no in [
            "0.0.0.0/0",
            "8.8.8.0/24",
            "172.0.0.0/8",
            "192.168.0.0/15",
            "::/0",
            "2001:db8::/32",
        ] {
            assert!(!private_network(&no.parse().unwrap()), "{no}");
        }
    }
}
