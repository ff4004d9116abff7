//! Address ranges of `cluster.allowed_hosts`, parsed and matched by `ipnet`.

use ipnet::IpNet;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An address range such as `10.0.0.0/8` or `fd00::/8`.
///
/// Parsing refuses a network address with host bits set, so every range
/// means exactly what it says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(IpNet);

impl Cidr {
    /// `127.0.0.0/8`, the default allow list: the local host only.
    pub(super) const LOOPBACK_V4: Cidr = Cidr(IpNet::V4(ipnet::Ipv4Net::new_assert(
        std::net::Ipv4Addr::new(127, 0, 0, 0),
        8,
    )));

    /// Whether `ip` lies in this range.
    ///
    /// A dual-stack socket reports IPv4 peers as `::ffff:a.b.c.d`; those are
    /// matched against IPv4 ranges (and plain IPv4 addresses against ranges
    /// written in mapped form) so that the same allow list works whichever
    /// way the front end's socket was opened.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.0, ip) {
            (IpNet::V4(net), IpAddr::V6(ip)) => {
                ip.to_ipv4_mapped().is_some_and(|v4| net.contains(&v4))
            }
            (IpNet::V6(net), IpAddr::V4(ip)) => net.contains(&ip.to_ipv6_mapped()),
            (net, ip) => net.contains(&ip),
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr_text, has_prefix) = match s.split_once('/') {
            Some((a, _)) => (a, true),
            None => (s, false),
        };
        // Parsed apart first so that the message can say which half is wrong.
        let addr: IpAddr = addr_text.parse().map_err(|_| {
            format!("`{s}` is not an IP address or range (expected e.g. \"10.0.0.0/8\", \"127.0.0.1\" or \"fd00::/8\")")
        })?;
        if !has_prefix {
            return Ok(Cidr(IpNet::from(addr)));
        }
        let net: IpNet = s.parse().map_err(|_| {
            let max_prefix = if addr.is_ipv4() { 32 } else { 128 };
            format!("`{s}`: prefix length must be a number between 0 and {max_prefix}")
        })?;
        if net.trunc() != net {
            // Usually a typo for a host address or for a wider range; guessing
            // either way could open the cluster to the wrong peers.
            return Err(format!(
                "`{s}` has host bits set after the /{} prefix (did you mean \"{}\"?)",
                net.prefix_len(),
                net.trunc()
            ));
        }
        Ok(Cidr(net))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // ipnet writes the prefix even of a single address, as the old
        // parser did ("127.0.0.1/32").
        write!(f, "{}", self.0)
    }
}
