//! Which network addresses Herald may connect to on an admin's behalf. Token URLs and SMTP
//! hosts come from users, so without a guard they would let anyone make Herald reach its own
//! network (SSRF): cloud metadata, databases, admin consoles. Names are checked against every
//! address they resolve to, at the moment of connecting.

use std::net::IpAddr;

/// How an address may be reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    Loopback,
    Private,
    Public,
}

/// Classifies an address: loopback, private (RFC 1918, link-local, unique local, CGNAT,
/// unspecified, broadcast), or public.
pub fn classify(ip: IpAddr) -> Reach {
    let ip = ip.to_canonical();
    // NAT64 (64:ff9b::/96) carries an IPv4 address that a DNS64 network will reach.
    if let IpAddr::V6(v6) = ip
        && v6.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
    {
        let o = v6.octets();
        return classify(IpAddr::from([o[12], o[13], o[14], o[15]]));
    }
    if ip.is_loopback() {
        return Reach::Loopback;
    }
    let private = match ip {
        IpAddr::V4(v4) => {
            v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    };
    if private {
        Reach::Private
    } else {
        Reach::Public
    }
}

/// What a host name or IP literal is known to reach without resolving it.
pub fn reach_of(host: &str) -> Reach {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return classify(ip);
    }
    let lower = bare.to_ascii_lowercase();
    if lower == "localhost" || lower.ends_with(".localhost") {
        return Reach::Loopback;
    }
    Reach::Public
}

/// The installation's rule for outbound connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostPolicy {
    /// Development mode: loopback allowed.
    pub dev: bool,
    /// On-premises servers: private and loopback allowed.
    pub allow_private: bool,
}

impl HostPolicy {
    pub fn allows(&self, reach: Reach) -> bool {
        match reach {
            Reach::Public => true,
            Reach::Loopback => self.dev || self.allow_private,
            Reach::Private => self.allow_private,
        }
    }

    /// Checks `host` (name or literal) without resolving it, with a message naming the fix.
    pub fn check_host(&self, host: &str) -> Result<(), String> {
        let reach = reach_of(host);
        if self.allows(reach) {
            return Ok(());
        }
        Err(match reach {
            Reach::Loopback => format!(
                "`{host}` is this machine; Herald refuses it unless HERALD_DEV (development) or HERALD_ALLOW_PRIVATE_HOSTS is set"
            ),
            _ => format!(
                "`{host}` is a private or link-local address; set HERALD_ALLOW_PRIVATE_HOSTS to allow on-premises servers"
            ),
        })
    }

    /// Resolves `host` and keeps only the addresses the policy allows; an error names why.
    pub async fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> Result<Vec<std::net::SocketAddr>, String> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<_> = tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| format!("cannot resolve `{host}`: {e}"))?
            .collect();
        let allowed: Vec<_> = addrs
            .iter()
            .copied()
            .filter(|a| self.allows(classify(a.ip())))
            .collect();
        if allowed.is_empty() {
            return Err(format!(
                "`{host}` resolves only to private or loopback addresses, which Herald refuses unless HERALD_ALLOW_PRIVATE_HOSTS (or HERALD_DEV, for loopback) is set"
            ));
        }
        Ok(allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_classified() {
        let c = |s: &str| classify(s.parse().unwrap());
        assert_eq!(c("127.0.0.1"), Reach::Loopback);
        assert_eq!(c("::1"), Reach::Loopback);
        assert_eq!(c("::ffff:10.0.0.1"), Reach::Private);
        for private in [
            "10.1.1.1",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "fd00::1",
            "fe80::1",
            "0.0.0.0",
        ] {
            assert_eq!(c(private), Reach::Private, "{private}");
        }
        assert_eq!(c("20.190.128.1"), Reach::Public);
        assert_eq!(c("64:ff9b::a00:1"), Reach::Private, "NAT64 of 10.0.0.1");
        assert_eq!(c("64:ff9b::7f00:1"), Reach::Loopback);
        assert_eq!(reach_of("LOCALHOST"), Reach::Loopback);
        assert_eq!(reach_of("[::1]"), Reach::Loopback);
    }
}
