//! The data path's frame classifier: one pass over an Ethernet frame that
//! checks every length and says where each layer starts, what the flow is,
//! and where the payload lies.
//!
//! It allocates nothing and builds no views it does not need; l3fwd,
//! pktgen's receive side and the RSS hash call it on every packet.

use super::{
    ArpPacket, ChecksumMode, EtherType, Header, IpPair, IpProtocol, Ipv4Packet, Ipv6Packet, Result,
    TcpPacket, UdpPacket, VlanId, VlanStack, WireError,
};
use core::ops::Range;

/// What the frame carries at layer 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum L3Kind {
    /// IPv4 (Ethertype 0x0800).
    Ipv4,
    /// IPv6 (Ethertype 0x86dd).
    Ipv6,
    /// ARP (Ethertype 0x0806).
    Arp,
    /// Anything else: not parsed; see [`FrameInfo::ethertype`].
    Other,
}

/// What the IP packet carries at layer 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum L4Kind {
    /// UDP, with its length checked.
    Udp,
    /// TCP, with its data offset checked.
    Tcp,
    /// Another protocol (ICMP, ICMPv6, SCTP, ESP, ...), not parsed; see
    /// [`FiveTuple::protocol`].
    Other,
    /// A fragment of a larger IP packet. Its L4 header is not read, even
    /// in the first fragment, so that every fragment of a flow gets the
    /// same (address-only) flow key, as receive-side scaling hashes them.
    Fragment,
    /// No L4 header: not an IP frame, or IPv6's No Next Header.
    Absent,
}

/// The addresses, protocol and ports of a packet's flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    /// Source and destination addresses.
    pub addrs: IpPair,
    /// The L4 protocol (after IPv6 extension headers).
    pub protocol: IpProtocol,
    /// The source port; 0 unless the L4 is UDP or TCP.
    pub src_port: u16,
    /// The destination port; 0 unless the L4 is UDP or TCP.
    pub dst_port: u16,
}

/// Where things are in a frame, as [`parse_frame`] found them. Offsets
/// count bytes from the start of the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct FrameInfo {
    /// The innermost VLAN (the only one of a single-tagged frame, the
    /// customer VLAN of a QinQ frame): DPDK's `vlan_tci`.
    pub vlan: Option<VlanId>,
    /// The outer VLAN of a QinQ frame: DPDK's `vlan_tci_outer`.
    pub outer_vlan: Option<VlanId>,
    /// The Ethertype after the tags.
    pub ethertype: EtherType,
    /// The L3 protocol.
    pub l3: L3Kind,
    /// Where the L3 header starts.
    pub l3_offset: usize,
    /// The L3 packet's length as its headers give it (IPv4 total length,
    /// IPv6 fixed header plus payload length, ARP header and addresses);
    /// the rest of the frame for [`L3Kind::Other`]. Frame padding after
    /// it is not counted.
    pub l3_len: usize,
    /// The L4 protocol.
    pub l4: L4Kind,
    /// Where the L4 header starts (after IPv4 options and IPv6 extension
    /// headers); the end of the L3 packet when there is none.
    pub l4_offset: usize,
    /// The flow, for IP frames.
    pub flow: Option<FiveTuple>,
    /// Where the payload starts: after the UDP or TCP header; after the IP
    /// headers for other L4s and fragments; the L3 start for non-IP
    /// frames.
    pub payload_offset: usize,
    /// The payload's length: to the UDP length, to the end of the IP
    /// packet, or to the end of the L3 packet.
    pub payload_len: usize,
}

impl FrameInfo {
    /// The payload's range in the frame.
    pub fn payload(&self) -> Range<usize> {
        self.payload_offset..self.payload_offset + self.payload_len
    }

    /// The L3 packet's range in the frame.
    pub fn l3_range(&self) -> Range<usize> {
        self.l3_offset..self.l3_offset + self.l3_len
    }
}

/// Classifies an Ethernet frame without verifying the IPv4 header checksum
/// (as after a NIC that verified it, or for hashing); see
/// [`parse_frame_with`].
///
/// # Errors
/// As [`parse_frame_with`].
#[inline]
pub fn parse_frame(frame: &[u8]) -> Result<FrameInfo> {
    parse_frame_with(frame, ChecksumMode::Offload)
}

/// Classifies an Ethernet frame (without its FCS): VLAN tags, then IPv4,
/// IPv6 (walking its extension headers) or ARP, then UDP or TCP. Every
/// length field met on the way is checked against the frame and against
/// the enclosing header's length; with [`ChecksumMode::Software`] the
/// IPv4 header checksum is verified too. UDP and TCP checksums are not
/// (they cover the whole payload; use the views for that).
///
/// Frames of other Ethertypes, and IP packets of other protocols, are
/// classified, not refused ([`L3Kind::Other`], [`L4Kind::Other`]).
///
/// # Errors
/// - [`WireError::Truncated`]: a header, or a length a header claims,
///   runs past the frame (or past the enclosing IP packet).
/// - [`WireError::Malformed`]: a length field or version that cannot be.
/// - [`WireError::BadChecksum`]: the IPv4 header checksum, when verified.
/// - [`WireError::Unsupported`]: more than two VLAN tags, or a longer
///   IPv6 extension chain than [`Ipv6Packet::MAX_EXTENSION_HEADERS`].
#[inline]
pub fn parse_frame_with(frame: &[u8], ipv4_checksum: ChecksumMode) -> Result<FrameInfo> {
    let stack = VlanStack::parse(frame)?;
    let l3_offset = stack.l3_offset();
    // VlanStack read the Ethertype that ends at l3_offset.
    let l3 = frame.get(l3_offset..).unwrap_or_default();
    let mut info = FrameInfo {
        vlan: stack.inner_vid(),
        outer_vlan: stack.outer_vid(),
        ethertype: stack.ethertype(),
        l3: L3Kind::Other,
        l3_offset,
        l3_len: l3.len(),
        l4: L4Kind::Absent,
        l4_offset: frame.len(),
        flow: None,
        payload_offset: l3_offset,
        payload_len: l3.len(),
    };
    match stack.ethertype() {
        EtherType::IPV4 => {
            let ip = Ipv4Packet::new_checked(l3)?;
            if ipv4_checksum == ChecksumMode::Software && !ip.verify_checksum() {
                return Err(WireError::BadChecksum(Header::Ipv4));
            }
            info.l3 = L3Kind::Ipv4;
            info.l3_len = usize::from(ip.total_len());
            classify_l4(
                &mut info,
                ip.addrs(),
                ip.protocol(),
                l3_offset + ip.header_len(),
                ip.payload(),
                ip.is_fragment(),
            )?;
        }
        EtherType::IPV6 => {
            let ip = Ipv6Packet::new_checked(l3)?;
            let upper = ip.upper_layer()?;
            let l3_len = Ipv6Packet::<&[u8]>::HEADER_LEN + usize::from(ip.payload_len());
            info.l3 = L3Kind::Ipv6;
            info.l3_len = l3_len;
            // upper.offset is within the payload: the walk checked each
            // header against it.
            let l4 = l3.get(upper.offset..l3_len).unwrap_or_default();
            // An atomic fragment (offset 0, no more fragments; RFC 6946)
            // is a whole packet.
            let fragment = upper
                .fragment
                .is_some_and(|f| f.offset != 0 || f.more_frags);
            classify_l4(
                &mut info,
                ip.addrs(),
                upper.protocol,
                l3_offset + upper.offset,
                l4,
                fragment,
            )?;
            if upper.protocol == IpProtocol::IPV6_NO_NEXT_HEADER && !fragment {
                info.l4 = L4Kind::Absent;
            }
        }
        EtherType::ARP => {
            let arp = ArpPacket::new_checked(l3)?;
            info.l3 = L3Kind::Arp;
            info.l3_len = ArpPacket::<&[u8]>::HEADER_LEN
                + 2 * (usize::from(arp.hardware_len()) + usize::from(arp.protocol_len()));
            info.l4_offset = l3_offset + info.l3_len;
            info.payload_len = info.l3_len;
        }
        _ => {}
    }
    Ok(info)
}

/// Fills in the L4 part of `info` from the IP payload `l4`, which starts at
/// `l4_offset` in the frame.
#[inline(always)]
fn classify_l4(
    info: &mut FrameInfo,
    addrs: IpPair,
    protocol: IpProtocol,
    l4_offset: usize,
    l4: &[u8],
    fragment: bool,
) -> Result<()> {
    let mut flow = FiveTuple {
        addrs,
        protocol,
        src_port: 0,
        dst_port: 0,
    };
    info.l4_offset = l4_offset;
    info.payload_offset = l4_offset;
    info.payload_len = l4.len();
    info.l4 = if fragment {
        L4Kind::Fragment
    } else if protocol == IpProtocol::UDP {
        let udp = UdpPacket::new_checked(l4)?;
        flow.src_port = udp.src_port();
        flow.dst_port = udp.dst_port();
        info.payload_offset = l4_offset + UdpPacket::<&[u8]>::HEADER_LEN;
        info.payload_len = udp.payload().len();
        L4Kind::Udp
    } else if protocol == IpProtocol::TCP {
        let tcp = TcpPacket::new_checked(l4)?;
        flow.src_port = tcp.src_port();
        flow.dst_port = tcp.dst_port();
        info.payload_offset = l4_offset + tcp.header_len();
        info.payload_len = tcp.payload().len();
        L4Kind::Tcp
    } else {
        L4Kind::Other
    };
    info.flow = Some(flow);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testdata::{ARP_REQUEST, IPV4_TCP_SYN, IPV4_UDP_DNS, IPV6_UDP, QINQ_IPV4_UDP};
    use crate::wire::{Ipv4Address, Ipv6Address};

    #[test]
    fn a_dns_query() {
        let info = parse_frame_with(&IPV4_UDP_DNS, ChecksumMode::Software).expect("valid");
        assert_eq!((info.vlan, info.outer_vlan), (None, None));
        assert_eq!(info.ethertype, EtherType::IPV4);
        assert_eq!(
            (info.l3, info.l3_offset, info.l3_len),
            (L3Kind::Ipv4, 14, 57)
        );
        assert_eq!((info.l4, info.l4_offset), (L4Kind::Udp, 34));
        assert_eq!(
            info.flow,
            Some(FiveTuple {
                addrs: IpPair::V4 {
                    src: Ipv4Address::new(192, 168, 1, 100),
                    dst: Ipv4Address::new(8, 8, 8, 8),
                },
                protocol: IpProtocol::UDP,
                src_port: 53001,
                dst_port: 53,
            })
        );
        assert_eq!(info.payload(), 42..71);
        assert_eq!(&IPV4_UDP_DNS[info.payload()][..2], &[0x1a, 0x2b]);
    }

    #[test]
    fn a_tcp_syn() {
        let info = parse_frame(&IPV4_TCP_SYN).expect("valid");
        assert_eq!((info.l4, info.l4_offset), (L4Kind::Tcp, 34));
        let flow = info.flow.expect("IP");
        assert_eq!((flow.src_port, flow.dst_port), (40000, 80));
        assert_eq!(info.payload(), 74..74, "a SYN carries no data");
    }

    #[test]
    fn an_ipv6_datagram() {
        let info = parse_frame(&IPV6_UDP).expect("valid");
        assert_eq!(
            (info.l3, info.l3_offset, info.l3_len),
            (L3Kind::Ipv6, 14, 57)
        );
        assert_eq!((info.l4, info.l4_offset), (L4Kind::Udp, 54));
        let flow = info.flow.expect("IP");
        assert_eq!(
            flow.addrs,
            IpPair::V6 {
                src: "2001:db8::1".parse::<Ipv6Address>().expect("literal"),
                dst: "2001:db8::2".parse::<Ipv6Address>().expect("literal"),
            }
        );
        assert_eq!(&IPV6_UDP[info.payload()], b"hello, v6");
    }

    #[test]
    fn a_qinq_frame() {
        let info = parse_frame_with(&QINQ_IPV4_UDP, ChecksumMode::Software).expect("valid");
        assert_eq!(info.outer_vlan, VlanId::new(100));
        assert_eq!(info.vlan, VlanId::new(200));
        assert_eq!((info.l3_offset, info.l3_len, info.l4_offset), (22, 32, 42));
        assert_eq!(info.l3_range(), 22..54);
        assert_eq!(&QINQ_IPV4_UDP[info.payload()], b"qinq");
    }

    #[test]
    fn an_arp_request() {
        let info = parse_frame(&ARP_REQUEST).expect("valid");
        assert_eq!(
            (info.l3, info.l3_offset, info.l3_len),
            (L3Kind::Arp, 14, 28)
        );
        assert_eq!((info.l4, info.flow), (L4Kind::Absent, None));
        assert_eq!(info.payload(), 14..42);
    }

    #[test]
    fn other_ethertypes_are_classified_not_refused() {
        let mut lldp = IPV4_UDP_DNS;
        lldp[12..14].copy_from_slice(&[0x88, 0xcc]);
        let info = parse_frame(&lldp).expect("classified");
        assert_eq!(
            (info.l3, info.ethertype),
            (L3Kind::Other, EtherType(0x88cc))
        );
        assert_eq!(info.payload(), 14..71);
    }

    #[test]
    fn other_protocols_and_fragments_have_address_only_flows() {
        let mut icmp = IPV4_UDP_DNS;
        icmp[23] = 1;
        let info = parse_frame(&icmp).expect("valid");
        assert_eq!(info.l4, L4Kind::Other);
        let flow = info.flow.expect("IP");
        assert_eq!(
            (flow.protocol, flow.src_port, flow.dst_port),
            (IpProtocol::ICMP, 0, 0)
        );
        assert_eq!(info.payload(), 34..71);

        // The first fragment (MF set) and a later one (offset 8).
        for flags in [[0x20, 0x00], [0x00, 0x01]] {
            let mut frag = IPV4_UDP_DNS;
            frag[20..22].copy_from_slice(&flags);
            let info = parse_frame(&frag).expect("valid");
            assert_eq!(info.l4, L4Kind::Fragment);
            let flow = info.flow.expect("IP");
            assert_eq!((flow.protocol, flow.src_port), (IpProtocol::UDP, 0));
        }
    }

    /// The IPv6/UDP frame with a Fragment header (offset and M flag in
    /// their 16-bit word) before the UDP header.
    fn ipv6_fragment(offset_and_m: u16) -> Vec<u8> {
        let mut frame = IPV6_UDP[..54].to_vec();
        frame[18..20].copy_from_slice(&(17u16 + 8).to_be_bytes());
        frame[20] = IpProtocol::IPV6_FRAGMENT.0;
        frame.extend_from_slice(&[IpProtocol::UDP.0, 0]);
        frame.extend_from_slice(&offset_and_m.to_be_bytes());
        frame.extend_from_slice(&[0, 0, 0, 1]);
        frame.extend_from_slice(&IPV6_UDP[54..]);
        frame
    }

    #[test]
    fn ipv6_fragments() {
        // An atomic fragment (RFC 6946) is a whole datagram.
        let atomic = ipv6_fragment(0);
        let info = parse_frame(&atomic).expect("valid");
        assert_eq!((info.l4, info.l4_offset), (L4Kind::Udp, 62));
        assert_eq!(&atomic[info.payload()], b"hello, v6");
        // The first fragment of several, and a later one.
        for word in [0x0001, 0x05a8] {
            let frame = ipv6_fragment(word);
            let info = parse_frame(&frame).expect("valid");
            assert_eq!((info.l4, info.l4_offset), (L4Kind::Fragment, 62));
            let flow = info.flow.expect("IP");
            assert_eq!((flow.protocol, flow.src_port), (IpProtocol::UDP, 0));
        }
    }

    #[test]
    fn checksum_is_verified_only_when_asked() {
        let mut bad = IPV4_UDP_DNS;
        bad[24] ^= 0xff;
        assert_eq!(
            parse_frame_with(&bad, ChecksumMode::Software),
            Err(WireError::BadChecksum(Header::Ipv4))
        );
        assert!(parse_frame(&bad).is_ok());
    }

    #[test]
    fn every_truncation_is_truncated() {
        // Cut anywhere before the end of the L3 packet (after it is only
        // Ethernet padding).
        for frame in [
            &ARP_REQUEST[..],
            &IPV4_UDP_DNS[..],
            &IPV4_TCP_SYN[..],
            &IPV6_UDP[..],
            &QINQ_IPV4_UDP[..],
        ] {
            let end = parse_frame(frame).expect("valid").l3_range().end;
            for len in 0..end {
                let err = parse_frame(&frame[..len]).expect_err("truncated");
                assert!(
                    matches!(err, WireError::Truncated(_)),
                    "len {len} of {frame:02x?}: {err:?}"
                );
            }
            for len in end..=frame.len() {
                assert!(parse_frame(&frame[..len]).is_ok(), "padding cut at {len}");
            }
        }
    }

    #[test]
    fn l4_lengths_are_checked_against_the_ip_packet() {
        // A UDP length longer than the IP payload, though the frame (with
        // its padding) is long enough: truncated.
        let mut bad = QINQ_IPV4_UDP;
        bad[42 + 4..42 + 6].copy_from_slice(&13u16.to_be_bytes());
        assert_eq!(parse_frame(&bad), Err(WireError::Truncated(Header::Udp)));
        // A TCP data offset past the IP payload.
        let mut bad = IPV4_TCP_SYN;
        bad[34 + 12] = 0xb0;
        assert_eq!(parse_frame(&bad), Err(WireError::Truncated(Header::Tcp)));
    }
}
