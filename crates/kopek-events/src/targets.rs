//! Where webhooks may be sent. By default only to public addresses: a webhook URL is chosen by
//! an API client, and a server that POSTs wherever it is told would let that client reach
//! what only the server can (its loopback services, the cloud's metadata endpoint, the private
//! network). The rule is checked when a subscription is made (an address in the URL, or a
//! name that is obviously local) and again at every delivery, after DNS resolution: the
//! sender's resolver drops internal addresses, so a name that resolves inward later (DNS
//! rebinding) reaches nothing. The resolver that does this is the sender's (`kopek-outbox`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Which addresses webhook deliveries may go to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Targets {
    /// Public addresses only: no loopback, private, link-local (metadata), shared,
    /// multicast or unspecified address.
    #[default]
    PublicOnly,
    /// Any address: for receivers on the operator's own network, and for tests
    /// (`--webhooks-allow-private-targets`).
    Any,
}

impl Targets {
    /// Refuses a URL whose host is an internal address or a local name. Names are resolved,
    /// and checked, at each delivery.
    pub fn check_url(self, url: &str) -> Result<(), String> {
        if self == Targets::Any {
            return Ok(());
        }
        let parsed = url::Url::parse(url).map_err(|error| format!("url: {error}"))?;
        match parsed.host() {
            None => Err("url must have a host".to_owned()),
            Some(url::Host::Ipv4(address)) => check(IpAddr::V4(address)),
            Some(url::Host::Ipv6(address)) => check(IpAddr::V6(address)),
            Some(url::Host::Domain(name)) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                if name == "localhost" || name.ends_with(".localhost") {
                    Err(refused_message())
                } else {
                    Ok(())
                }
            }
        }
    }
}

fn check(address: IpAddr) -> Result<(), String> {
    if is_public(address) { Ok(()) } else { Err(refused_message()) }
}

fn refused_message() -> String {
    "webhook URLs must reach a public address: loopback, private, link-local and metadata \
     addresses are refused (an operator may allow them with --webhooks-allow-private-targets)"
        .to_owned()
}

/// Whether an address is one a webhook may reach under [`Targets::PublicOnly`].
pub fn is_public(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(address: Ipv4Addr) -> bool {
    let [a, b, ..] = address.octets();
    !(address.is_unspecified()
        || address.is_loopback()
        || address.is_private()
        || address.is_link_local()
        || address.is_broadcast()
        || address.is_multicast()
        || address.is_documentation()
        || a == 0
        // Shared address space (carrier-grade NAT), 100.64.0.0/10.
        || (a == 100 && (64..128).contains(&b))
        // IETF protocol assignments, 192.0.0.0/24, and benchmarking, 198.18.0.0/15.
        || (a == 192 && b == 0 && address.octets()[2] == 0)
        || (a == 198 && (b == 18 || b == 19))
        // Reserved, 240.0.0.0/4.
        || a >= 240)
}

fn is_public_v6(address: Ipv6Addr) -> bool {
    let first = address.segments()[0];
    !(address.is_unspecified()
        || address.is_loopback()
        || address.is_multicast()
        // Unique local (fc00::/7, where cloud metadata such as fd00:ec2::254 lives).
        || (first & 0xfe00) == 0xfc00
        // Link-local, fe80::/10.
        || (first & 0xffc0) == 0xfe80
        // Site-local (deprecated), fec0::/10.
        || (first & 0xffc0) == 0xfec0
        // Documentation, 2001:db8::/32.
        || (first == 0x2001 && address.segments()[1] == 0x0db8)
        // IPv4-compatible forms of an IPv4 address: judged as that address.
        || address.to_ipv4().is_some_and(|v4| !is_public_v4(v4))
        // Forms that carry an IPv4 address a gateway reaches for us (NAT64 64:ff9b::/96 and
        // 64:ff9b:1::/48, both in 64:ff9b::/32; 6to4 2002::/16; Teredo 2001::/32): refused
        // outright, since the IPv4 address inside may be a private one.
        || (first == 0x0064 && address.segments()[1] == 0xff9b)
        || first == 0x2002
        || (first == 0x2001 && address.segments()[1] == 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_and_local_names_are_refused() {
        let refused = [
            "http://127.0.0.1:8080/hook",
            "http://127.9.9.9/",
            "http://[::1]/",
            "http://0.0.0.0/",
            "http://169.254.169.254/latest/meta-data/",
            "http://10.0.0.5/",
            "http://172.16.1.1/",
            "http://192.168.1.10/",
            "http://100.64.0.1/",
            "http://[fd00:ec2::254]/",
            "http://[fe80::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://localhost:9000/",
            "http://api.localhost/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://[64:ff9b::a00:5]/",
            "http://[64:ff9b:1::a00:5]/",
            "http://[2002:a00:5::]/",
            "http://[2001:0:4136:e378::1]/",
        ];
        for url in refused {
            assert!(Targets::PublicOnly.check_url(url).is_err(), "{url} was allowed");
            assert!(Targets::Any.check_url(url).is_ok(), "{url} refused with Any");
        }
        let allowed =
            ["https://hooks.example.com/x", "http://93.184.215.14/", "http://[2606:4700::1]/"];
        for url in allowed {
            assert_eq!(Targets::PublicOnly.check_url(url), Ok(()), "{url}");
        }
    }
}
