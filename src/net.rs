//! Which network addresses Herald may connect to on an admin's behalf. Token URLs and SMTP
//! hosts come from users, so without a guard they would let anyone make Herald reach its own
//! network (SSRF): cloud metadata, databases, admin consoles. Names are checked against every
//! address they resolve to, at the moment of connecting.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// How an address may be reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    Loopback,
    Private,
    Public,
}

/// Classifies an address: loopback, private, or public. "Private" is everything the IANA
/// special-purpose registries do not mark globally reachable (RFC 1918, link-local, unique
/// local, CGNAT, benchmarking, documentation, reserved, multicast, discard, ...): a connection
/// there reaches something other than the Internet host an admin meant. An IPv6 address that
/// carries an IPv4 address (mapped, compatible, SIIT, 6to4, Teredo, NAT64) is whatever that
/// IPv4 address is, since that is where its packets end up.
pub fn classify(ip: IpAddr) -> Reach {
    match ip.to_canonical() {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Reach {
    let [a, b, c, _] = ip.octets();
    if a == 127 {
        return Reach::Loopback;
    }
    let special = a == 0 // "this network": 0.0.0.0 reaches this host on Linux
        || a == 10
        || (a == 100 && (b & 0xc0) == 64) // shared address space (CGNAT) 100.64.0.0/10
        || (a == 169 && b == 254)
        || (a == 172 && (b & 0xf0) == 16)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments 192.0.0.0/24
        || (a == 192 && b == 0 && c == 2) // documentation TEST-NET-1
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast (deprecated)
        || (a == 192 && b == 168)
        || (a == 198 && (b & 0xfe) == 18) // benchmarking 198.18.0.0/15
        || (a == 198 && b == 51 && c == 100) // documentation TEST-NET-2
        || (a == 203 && b == 0 && c == 113) // documentation TEST-NET-3
        || a >= 224; // multicast 224.0.0.0/4, reserved 240.0.0.0/4, broadcast
    if special {
        Reach::Private
    } else {
        Reach::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> Reach {
    if ip.is_loopback() {
        return Reach::Loopback;
    }
    if ip.is_unspecified() {
        return Reach::Private;
    }
    if let Some(reach) = embedded_v4(ip) {
        return reach;
    }
    let s = ip.segments();
    // Only 2000::/3 is global unicast; everything outside it (unique local, link-local,
    // multicast, discard 100::/64, NAT64 local-use 64:ff9b:1::/48, reserved) is not public.
    let special = (s[0] & 0xe000) != 0x2000
        || (s[0] == 0x2001 && s[1] < 0x0200) // IETF protocol assignments 2001::/23 (ORCHID, benchmarking, ...)
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation 2001:db8::/32
        || (s[0] == 0x3fff && s[1] < 0x1000); // documentation 3fff::/20
    if special {
        Reach::Private
    } else {
        Reach::Public
    }
}

/// The class of the IPv4 address an IPv6 address carries, for the formats that carry one.
fn embedded_v4(ip: Ipv6Addr) -> Option<Reach> {
    let s = ip.segments();
    let v4 = |hi: u16, lo: u16| classify_v4(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
    match s {
        // IPv4-compatible ::a.b.c.d (deprecated, still routed by some stacks).
        [0, 0, 0, 0, 0, 0, hi, lo] => Some(v4(hi, lo)),
        // IPv4-translated (SIIT) ::ffff:0:a.b.c.d.
        [0, 0, 0, 0, 0xffff, 0, hi, lo] => Some(v4(hi, lo)),
        // NAT64 well-known prefix 64:ff9b::/96: a DNS64 network reaches the IPv4 address.
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(v4(hi, lo)),
        // 6to4 2002:aabb:ccdd::/48.
        [0x2002, hi, lo, ..] => Some(v4(hi, lo)),
        // Teredo 2001:0::/32: the server's IPv4 in bits 32..64, the client's (inverted) in the
        // last 32 bits. Packets reach the client through its NAT; either being inside is enough
        // to refuse.
        [0x2001, 0, shi, slo, _, _, chi, clo] => Some(stricter(v4(shi, slo), v4(!chi, !clo))),
        _ => None,
    }
}

/// The class a policy is least likely to allow: private, then loopback, then public.
fn stricter(a: Reach, b: Reach) -> Reach {
    match (a, b) {
        (Reach::Private, _) | (_, Reach::Private) => Reach::Private,
        (Reach::Loopback, _) | (_, Reach::Loopback) => Reach::Loopback,
        _ => Reach::Public,
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
                "`{host}` is a private, link-local or reserved address, not one on the Internet; set HERALD_ALLOW_PRIVATE_HOSTS to allow on-premises servers"
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
                "`{host}` resolves only to private, reserved or loopback addresses, which Herald refuses unless HERALD_ALLOW_PRIVATE_HOSTS (or HERALD_DEV, for loopback) is set"
            ));
        }
        Ok(allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Reach {
        classify(s.parse().unwrap())
    }

    #[test]
    fn addresses_are_classified() {
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

    #[test]
    fn every_ipv4_special_purpose_range_is_refused_at_both_ends() {
        for (first, last, what) in [
            ("0.0.0.0", "0.255.255.255", "this network"),
            ("100.64.0.0", "100.127.255.255", "shared address space"),
            ("192.0.0.0", "192.0.0.255", "IETF protocol assignments"),
            ("192.0.2.0", "192.0.2.255", "TEST-NET-1"),
            ("192.88.99.0", "192.88.99.255", "6to4 relay anycast"),
            ("198.18.0.0", "198.19.255.255", "benchmarking"),
            ("198.51.100.0", "198.51.100.255", "TEST-NET-2"),
            ("203.0.113.0", "203.0.113.255", "TEST-NET-3"),
            ("224.0.0.0", "239.255.255.255", "multicast"),
            ("240.0.0.0", "255.255.255.254", "reserved"),
            ("255.255.255.255", "255.255.255.255", "broadcast"),
        ] {
            assert_eq!(c(first), Reach::Private, "{what}: {first}");
            assert_eq!(c(last), Reach::Private, "{what}: {last}");
        }
        // The neighbours stay public: the ranges are no wider than the registry's.
        for public in [
            "1.0.0.1",
            "100.63.255.255",
            "100.128.0.0",
            "192.0.1.1",
            "192.0.3.1",
            "198.17.255.255",
            "198.20.0.0",
            "198.51.99.1",
            "203.0.112.1",
            "223.255.255.255",
        ] {
            assert_eq!(c(public), Reach::Public, "{public}");
        }
    }

    #[test]
    fn every_ipv6_special_purpose_range_is_refused() {
        for (addr, what) in [
            ("::", "unspecified"),
            ("ff02::1", "multicast"),
            ("ff0e::1", "global multicast"),
            ("100::1", "discard"),
            ("64:ff9b:1::1", "NAT64 local use"),
            ("64:ff9b:1:ffff::8.8.8.8", "NAT64 local use"),
            ("2001:db8::1", "documentation"),
            ("3fff::1", "documentation"),
            ("2001:2::1", "benchmarking"),
            ("2001:10::1", "ORCHID"),
            ("2001:20::1", "ORCHIDv2"),
            ("fec0::1", "site-local"),
            ("5f00::1", "SRv6 SIDs"),
            ("4000::1", "reserved"),
        ] {
            assert_eq!(c(addr), Reach::Private, "{what}: {addr}");
        }
        for public in ["2620:1ec:c11::200", "2001:4860:4860::8888", "2a00:1450::1"] {
            assert_eq!(c(public), Reach::Public, "{public}");
        }
    }

    #[test]
    fn embedded_ipv4_addresses_are_what_they_carry() {
        assert_eq!(c("::10.0.0.1"), Reach::Private, "IPv4-compatible");
        assert_eq!(c("::127.0.0.1"), Reach::Loopback, "IPv4-compatible");
        assert_eq!(c("::8.8.8.8"), Reach::Public, "IPv4-compatible");
        assert_eq!(c("::ffff:0:169.254.169.254"), Reach::Private, "SIIT");
        assert_eq!(
            c("2002:a9fe:a9fe::1"),
            Reach::Private,
            "6to4 of 169.254.169.254"
        );
        assert_eq!(c("2002:7f00:1::"), Reach::Loopback, "6to4 of 127.0.0.1");
        assert_eq!(c("2002:808:808::1"), Reach::Public, "6to4 of 8.8.8.8");
        // Teredo: server 65.54.227.120, client 10.0.0.1 (inverted: f5ff:fffe).
        assert_eq!(c("2001:0:4136:e378:8000:63bf:f5ff:fffe"), Reach::Private);
        // ... server 10.0.0.1, client 8.8.8.8 (inverted: f7f7:f7f7).
        assert_eq!(c("2001:0:a00:1:8000:63bf:f7f7:f7f7"), Reach::Private);
        // ... server 65.54.227.120, client 127.0.0.1 (inverted: 80ff:fffe).
        assert_eq!(c("2001:0:4136:e378:8000:63bf:80ff:fffe"), Reach::Loopback);
        assert_eq!(c("2001:0:4136:e378:8000:63bf:f7f7:f7f7"), Reach::Public);
        assert_eq!(
            c("64:ff9b::198.18.0.1"),
            Reach::Private,
            "NAT64 of benchmarking"
        );
    }

    mod embedded {
        use super::super::*;
        use proptest::prelude::*;

        fn v6(segments: [u16; 8]) -> IpAddr {
            IpAddr::V6(Ipv6Addr::from(segments))
        }

        fn halves(a: Ipv4Addr) -> (u16, u16) {
            let n = u32::from(a);
            ((n >> 16) as u16, n as u16)
        }

        const PUBLIC: Ipv4Addr = Ipv4Addr::new(20, 190, 128, 1);

        /// The IANA IPv4 special-purpose ranges that are not globally reachable.
        const NON_PUBLIC: [(Ipv4Addr, u32); 15] = [
            (Ipv4Addr::new(0, 0, 0, 0), 8),
            (Ipv4Addr::new(10, 0, 0, 0), 8),
            (Ipv4Addr::new(100, 64, 0, 0), 10),
            (Ipv4Addr::new(127, 0, 0, 0), 8),
            (Ipv4Addr::new(169, 254, 0, 0), 16),
            (Ipv4Addr::new(172, 16, 0, 0), 12),
            (Ipv4Addr::new(192, 0, 0, 0), 24),
            (Ipv4Addr::new(192, 0, 2, 0), 24),
            (Ipv4Addr::new(192, 88, 99, 0), 24),
            (Ipv4Addr::new(192, 168, 0, 0), 16),
            (Ipv4Addr::new(198, 18, 0, 0), 15),
            (Ipv4Addr::new(198, 51, 100, 0), 24),
            (Ipv4Addr::new(203, 0, 113, 0), 24),
            (Ipv4Addr::new(224, 0, 0, 0), 4),
            (Ipv4Addr::new(240, 0, 0, 0), 4),
        ];

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4096))]

            /// Whatever the IPv4 address, every IPv6 form carrying it is classified as it is,
            /// whatever the other bits of the form hold.
            #[test]
            fn every_embedding_inherits_the_ipv4_class(
                bits in any::<u32>(),
                rest in any::<[u16; 5]>(),
            ) {
                let a = Ipv4Addr::from(bits);
                let want = classify(IpAddr::V4(a));
                let (hi, lo) = halves(a);
                let mapped = IpAddr::V6(a.to_ipv6_mapped());
                prop_assert_eq!(classify(mapped), want, "mapped {}", mapped);
                // ::1 is the IPv6 loopback itself, not 0.0.0.1.
                if bits != 1 {
                    let compatible = v6([0, 0, 0, 0, 0, 0, hi, lo]);
                    prop_assert_eq!(classify(compatible), want, "compatible {}", compatible);
                }
                let siit = v6([0, 0, 0, 0, 0xffff, 0, hi, lo]);
                prop_assert_eq!(classify(siit), want, "SIIT {}", siit);
                let nat64 = v6([0x64, 0xff9b, 0, 0, 0, 0, hi, lo]);
                prop_assert_eq!(classify(nat64), want, "NAT64 {}", nat64);
                let six_to_four = v6([0x2002, hi, lo, rest[0], rest[1], rest[2], rest[3], rest[4]]);
                prop_assert_eq!(classify(six_to_four), want, "6to4 {}", six_to_four);
                let (phi, plo) = halves(PUBLIC);
                let teredo_client = v6([0x2001, 0, phi, plo, rest[0], rest[1], !hi, !lo]);
                prop_assert_eq!(classify(teredo_client), want, "Teredo client {}", teredo_client);
                let teredo_server = v6([0x2001, 0, hi, lo, rest[0], rest[1], !phi, !plo]);
                prop_assert_eq!(classify(teredo_server), want, "Teredo server {}", teredo_server);
            }

            /// No form hides a private or loopback address behind a public-looking one: an
            /// address drawn from each non-public IPv4 range, in 6to4 and as a Teredo client.
            #[test]
            fn no_embedding_of_a_non_public_address_is_public(
                range in prop::sample::select(NON_PUBLIC.to_vec()),
                host in any::<u32>(),
                rest in any::<[u16; 5]>(),
            ) {
                let (net, len) = range;
                let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
                let a = Ipv4Addr::from((u32::from(net) & mask) | (host & !mask));
                prop_assert_ne!(classify(IpAddr::V4(a)), Reach::Public, "{}", a);
                let (hi, lo) = halves(a);
                let six_to_four = v6([0x2002, hi, lo, rest[0], rest[1], rest[2], rest[3], rest[4]]);
                prop_assert_ne!(classify(six_to_four), Reach::Public, "{}", six_to_four);
                let teredo = v6([0x2001, 0, rest[0], rest[1], rest[2], rest[3], !hi, !lo]);
                prop_assert_ne!(classify(teredo), Reach::Public, "{}", teredo);
                let nat64 = v6([0x64, 0xff9b, 0, 0, 0, 0, hi, lo]);
                prop_assert_ne!(classify(nat64), Reach::Public, "{}", nat64);
            }
        }
    }
}
