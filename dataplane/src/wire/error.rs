//! Why a header was refused, and the drop reason it is counted under.

use std::fmt;

/// A header kind, as named in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Header {
    /// The Ethernet II header (IEEE 802.3 clause 3).
    Ethernet,
    /// An IEEE 802.1Q (C-tag) or 802.1ad (S-tag) VLAN tag.
    Vlan,
    /// An ARP packet (RFC 826).
    Arp,
    /// The IPv4 header (RFC 791).
    Ipv4,
    /// The fixed IPv6 header (RFC 8200 section 3).
    Ipv6,
    /// An IPv6 extension header (RFC 8200 section 4).
    Ipv6Extension,
    /// The UDP header (RFC 768).
    Udp,
    /// The TCP header (RFC 9293).
    Tcp,
}

impl Header {
    /// The header's name, as errors print it.
    pub fn name(self) -> &'static str {
        match self {
            Header::Ethernet => "Ethernet",
            Header::Vlan => "VLAN",
            Header::Arp => "ARP",
            Header::Ipv4 => "IPv4",
            Header::Ipv6 => "IPv6",
            Header::Ipv6Extension => "IPv6 extension",
            Header::Udp => "UDP",
            Header::Tcp => "TCP",
        }
    }
}

impl fmt::Display for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A header field (or property) that made a packet malformed or
/// unsupported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Field {
    /// More VLAN tags than [`MAX_VLAN_TAGS`](super::MAX_VLAN_TAGS).
    VlanDepth,
    /// ARP hardware type other than Ethernet (1).
    ArpHardwareType,
    /// ARP protocol type other than IPv4 (0x0800).
    ArpProtocolType,
    /// ARP hardware address length other than 6.
    ArpHardwareLen,
    /// ARP protocol address length other than 4.
    ArpProtocolLen,
    /// IPv4 version other than 4.
    Ipv4Version,
    /// IPv4 IHL below 5 (a header shorter than its fixed part).
    Ipv4HeaderLen,
    /// IPv4 total length shorter than the header.
    Ipv4TotalLen,
    /// IPv6 version other than 6.
    Ipv6Version,
    /// An IPv6 payload too long for the 16-bit Payload Length (a jumbogram,
    /// RFC 2675, which this code does not emit).
    Ipv6PayloadLen,
    /// A Hop-by-Hop Options header anywhere but right after the fixed
    /// header (RFC 8200 section 4.3).
    Ipv6HopByHop,
    /// A chain of more extension headers than the walker follows
    /// ([`Ipv6Packet::MAX_EXTENSION_HEADERS`](super::Ipv6Packet::MAX_EXTENSION_HEADERS)).
    Ipv6ExtensionChain,
    /// UDP length shorter than the UDP header.
    UdpLength,
    /// TCP data offset below 5 (a header shorter than its fixed part).
    TcpDataOffset,
    /// A TCP option whose length byte is impossible, or runs past the
    /// options, or does not fit its kind.
    TcpOption,
}

impl Field {
    /// The header the field belongs to.
    pub fn header(self) -> Header {
        match self {
            Field::VlanDepth => Header::Vlan,
            Field::ArpHardwareType
            | Field::ArpProtocolType
            | Field::ArpHardwareLen
            | Field::ArpProtocolLen => Header::Arp,
            Field::Ipv4Version | Field::Ipv4HeaderLen | Field::Ipv4TotalLen => Header::Ipv4,
            Field::Ipv6Version | Field::Ipv6PayloadLen => Header::Ipv6,
            Field::Ipv6HopByHop | Field::Ipv6ExtensionChain => Header::Ipv6Extension,
            Field::UdpLength => Header::Udp,
            Field::TcpDataOffset | Field::TcpOption => Header::Tcp,
        }
    }

    /// The field's name, as errors print it.
    pub fn name(self) -> &'static str {
        match self {
            Field::VlanDepth => "VLAN tag depth",
            Field::ArpHardwareType => "ARP hardware type",
            Field::ArpProtocolType => "ARP protocol type",
            Field::ArpHardwareLen => "ARP hardware address length",
            Field::ArpProtocolLen => "ARP protocol address length",
            Field::Ipv4Version => "IPv4 version",
            Field::Ipv4HeaderLen => "IPv4 header length (IHL)",
            Field::Ipv4TotalLen => "IPv4 total length",
            Field::Ipv6Version => "IPv6 version",
            Field::Ipv6PayloadLen => "IPv6 payload length",
            Field::Ipv6HopByHop => "IPv6 Hop-by-Hop Options position",
            Field::Ipv6ExtensionChain => "IPv6 extension header chain",
            Field::UdpLength => "UDP length",
            Field::TcpDataOffset => "TCP data offset",
            Field::TcpOption => "TCP option",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a header was refused.
///
/// Small and `Copy`: the data path returns it per packet and counts it
/// under `DropReason::from` (in `net`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The buffer ends before the header does, or before the length a
    /// header field claims (a runt or a cut capture).
    #[error("truncated {0} header")]
    Truncated(Header),
    /// A field holds a value that cannot be (a length shorter than the
    /// header it covers, a wrong version).
    #[error("malformed {0}")]
    Malformed(Field),
    /// A checksum does not match the data.
    #[error("bad {0} checksum")]
    BadChecksum(Header),
    /// Well-formed, but not something this code handles (ARP for another
    /// hardware or protocol, three VLAN tags).
    #[error("unsupported {0}")]
    Unsupported(Field),
}

impl WireError {
    /// The header the error is about.
    pub fn header(self) -> Header {
        match self {
            WireError::Truncated(h) | WireError::BadChecksum(h) => h,
            WireError::Malformed(f) | WireError::Unsupported(f) => f.header(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_field() {
        assert_eq!(
            WireError::Malformed(Field::Ipv4TotalLen).to_string(),
            "malformed IPv4 total length"
        );
        assert_eq!(
            WireError::Truncated(Header::Tcp).to_string(),
            "truncated TCP header"
        );
        assert_eq!(
            WireError::Unsupported(Field::TcpOption).header(),
            Header::Tcp
        );
    }
}
