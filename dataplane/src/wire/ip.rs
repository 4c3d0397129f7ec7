//! What IPv4 and IPv6 share: protocol numbers and address pairs.

use super::checksum;
use super::{Ipv4Address, Ipv6Address};
use core::net::IpAddr;
use std::fmt;

/// An IP protocol number: IPv4's Protocol field, IPv6's Next Header (IANA's
/// "Assigned Internet Protocol Numbers"). Every value is representable;
/// the constants name the ones this module acts on.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct IpProtocol(pub u8);

impl IpProtocol {
    /// IPv6 Hop-by-Hop Options (RFC 8200 section 4.3).
    pub const HOP_BY_HOP: IpProtocol = IpProtocol(0);
    /// ICMP (RFC 792).
    pub const ICMP: IpProtocol = IpProtocol(1);
    /// TCP (RFC 9293).
    pub const TCP: IpProtocol = IpProtocol(6);
    /// UDP (RFC 768).
    pub const UDP: IpProtocol = IpProtocol(17);
    /// IPv6 Routing header (RFC 8200 section 4.4).
    pub const IPV6_ROUTING: IpProtocol = IpProtocol(43);
    /// IPv6 Fragment header (RFC 8200 section 4.5).
    pub const IPV6_FRAGMENT: IpProtocol = IpProtocol(44);
    /// Encapsulating Security Payload (RFC 4303): opaque, ends the walk.
    pub const ESP: IpProtocol = IpProtocol(50);
    /// Authentication Header (RFC 4302).
    pub const AH: IpProtocol = IpProtocol(51);
    /// ICMPv6 (RFC 4443).
    pub const ICMPV6: IpProtocol = IpProtocol(58);
    /// IPv6 No Next Header (RFC 8200 section 4.7).
    pub const IPV6_NO_NEXT_HEADER: IpProtocol = IpProtocol(59);
    /// IPv6 Destination Options (RFC 8200 section 4.6).
    pub const IPV6_DESTINATION: IpProtocol = IpProtocol(60);
    /// SCTP (RFC 9260).
    pub const SCTP: IpProtocol = IpProtocol(132);

    /// The protocol's short name, for the numbers named above.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            IpProtocol::HOP_BY_HOP => "hop-by-hop",
            IpProtocol::ICMP => "icmp",
            IpProtocol::TCP => "tcp",
            IpProtocol::UDP => "udp",
            IpProtocol::IPV6_ROUTING => "ipv6-route",
            IpProtocol::IPV6_FRAGMENT => "ipv6-frag",
            IpProtocol::ESP => "esp",
            IpProtocol::AH => "ah",
            IpProtocol::ICMPV6 => "ipv6-icmp",
            IpProtocol::IPV6_NO_NEXT_HEADER => "ipv6-nonxt",
            IpProtocol::IPV6_DESTINATION => "ipv6-opts",
            IpProtocol::SCTP => "sctp",
            _ => return None,
        })
    }
}

impl fmt::Display for IpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "{}", self.0),
        }
    }
}

impl fmt::Debug for IpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IpProtocol({self})")
    }
}

/// A packet's source and destination addresses, of one IP version: what
/// pseudo-header checksums and flow keys need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpPair {
    /// IPv4 addresses.
    V4 {
        /// Source address.
        src: Ipv4Address,
        /// Destination address.
        dst: Ipv4Address,
    },
    /// IPv6 addresses.
    V6 {
        /// Source address.
        src: Ipv6Address,
        /// Destination address.
        dst: Ipv6Address,
    },
}

impl IpPair {
    /// The source address.
    pub fn src(&self) -> IpAddr {
        match *self {
            IpPair::V4 { src, .. } => IpAddr::V4(src),
            IpPair::V6 { src, .. } => IpAddr::V6(src),
        }
    }

    /// The destination address.
    pub fn dst(&self) -> IpAddr {
        match *self {
            IpPair::V4 { dst, .. } => IpAddr::V4(dst),
            IpPair::V6 { dst, .. } => IpAddr::V6(dst),
        }
    }

    /// The pair of the reply: source and destination swapped.
    pub fn reversed(&self) -> IpPair {
        match *self {
            IpPair::V4 { src, dst } => IpPair::V4 { src: dst, dst: src },
            IpPair::V6 { src, dst } => IpPair::V6 { src: dst, dst: src },
        }
    }

    /// The sum of the pseudo-header for `protocol` carrying `length` bytes;
    /// see [`checksum::pseudo_header`].
    pub fn pseudo_header_sum(&self, protocol: IpProtocol, length: u32) -> u16 {
        checksum::pseudo_header(self, protocol, length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_names() {
        assert_eq!(IpProtocol::UDP.to_string(), "udp");
        assert_eq!(IpProtocol(253).to_string(), "253");
        assert_eq!(format!("{:?}", IpProtocol::TCP), "IpProtocol(tcp)");
    }

    #[test]
    fn pair_accessors() {
        let pair = IpPair::V4 {
            src: Ipv4Address::new(10, 0, 0, 1),
            dst: Ipv4Address::new(10, 0, 0, 2),
        };
        assert_eq!(pair.src(), IpAddr::V4(Ipv4Address::new(10, 0, 0, 1)));
        assert_eq!(pair.reversed().src(), pair.dst());
        let v6 = IpPair::V6 {
            src: Ipv6Address::LOCALHOST,
            dst: Ipv6Address::UNSPECIFIED,
        };
        assert_eq!(v6.reversed().dst(), IpAddr::V6(Ipv6Address::LOCALHOST));
    }
}
