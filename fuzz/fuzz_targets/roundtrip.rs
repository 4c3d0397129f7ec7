//! Arbitrary Reprs, emitted into a whole frame (Ethernet, up to two VLAN
//! tags, IPv4 or IPv6, UDP or TCP, payload, padding) over garbage, must
//! classify as built and parse back equal, with every checksum valid.
#![no_main]

use arbitrary::Arbitrary;
use dataplane::wire::{
    ChecksumMode, EtherType, EthernetAddress, EthernetFrame, EthernetRepr, IpPair, IpProtocol,
    Ipv4Address, Ipv4Packet, Ipv4Repr, Ipv6Address, Ipv6Packet, Ipv6Repr, L4Kind, TcpFlags,
    SackBlocks, TcpPacket, TcpRepr, UdpPacket, UdpRepr, VlanId, VlanPacket, VlanRepr, parse_frame_with,
};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Tag {
    qinq: bool,
    pcp: u8,
    dei: bool,
    vid: u16,
}

#[derive(Debug, Arbitrary)]
enum Ip {
    V4 {
        src: u32,
        dst: u32,
        ttl: u8,
        dscp: u8,
        ecn: u8,
        ident: u16,
        dont_frag: bool,
    },
    V6 {
        src: u128,
        dst: u128,
        hop_limit: u8,
        traffic_class: u8,
        flow_label: u32,
    },
}

#[derive(Debug, Arbitrary)]
enum L4 {
    Udp {
        src_port: u16,
        dst_port: u16,
    },
    Tcp {
        src_port: u16,
        dst_port: u16,
        seq_number: u32,
        ack_number: u32,
        flags: u8,
        window_len: u16,
        urgent_at: u16,
        max_seg_size: Option<u16>,
        window_scale: Option<u8>,
        sack_permitted: bool,
        sack: Vec<(u32, u32)>,
        timestamps: Option<(u32, u32)>,
    },
}

#[derive(Debug, Arbitrary)]
struct Spec {
    src: [u8; 6],
    dst: [u8; 6],
    tags: Vec<Tag>,
    ip: Ip,
    l4: L4,
    payload: Vec<u8>,
    padding: u8,
    garbage: u8,
}

fuzz_target!(|spec: Spec| {
    // Past a jumbo frame's worth, lengths stop fitting their fields; that
    // is emit's error path, which the unit tests cover.
    let payload = &spec.payload[..spec.payload.len().min(9000)];
    let tags: Vec<(EtherType, VlanRepr)> = spec
        .tags
        .iter()
        .take(2)
        .map(|t| {
            let tpid = if t.qinq {
                EtherType::QINQ
            } else {
                EtherType::VLAN
            };
            let vid = VlanId::new(t.vid & VlanId::MAX).expect("masked to 12 bits");
            (
                tpid,
                VlanRepr {
                    pcp: t.pcp & 7,
                    dei: t.dei,
                    vid,
                    ethertype: EtherType(0),
                },
            )
        })
        .collect();

    let (l4_header, protocol) = match spec.l4 {
        L4::Udp { .. } => (8, IpProtocol::UDP),
        L4::Tcp { .. } => (0, IpProtocol::TCP),
    };
    let tcp = match spec.l4 {
        L4::Tcp {
            src_port,
            dst_port,
            seq_number,
            ack_number,
            flags,
            window_len,
            urgent_at,
            max_seg_size,
            window_scale,
            sack_permitted,
            ref sack,
            timestamps,
        } => Some(TcpRepr {
            src_port,
            dst_port,
            seq_number,
            ack_number,
            flags: TcpFlags(flags),
            window_len,
            urgent_at,
            max_seg_size,
            window_scale,
            sack_permitted,
            sack: {
                let mut b = SackBlocks::default();
                for &(l, r) in sack.iter().take(4) {
                    b.push(l, r);
                }
                b
            },
            timestamps,
            payload_len: payload.len(),
        }),
        L4::Udp { .. } => None,
    };
    let l4_len = tcp.map_or(l4_header, |t| t.header_len()) + payload.len();

    let (ip_header, ethertype, addrs) = match spec.ip {
        Ip::V4 { src, dst, .. } => (
            20,
            EtherType::IPV4,
            IpPair::V4 {
                src: Ipv4Address::from_bits(src),
                dst: Ipv4Address::from_bits(dst),
            },
        ),
        Ip::V6 { src, dst, .. } => (
            40,
            EtherType::IPV6,
            IpPair::V6 {
                src: Ipv6Address::from_bits(src),
                dst: Ipv6Address::from_bits(dst),
            },
        ),
    };
    let l3 = 14 + 4 * tags.len();
    let l4 = l3 + ip_header;
    let end = l4 + l4_len;
    let mut frame = vec![spec.garbage; end + usize::from(spec.padding % 64)];

    // Payload first: the L4 checksum covers it.
    let payload_at = end - payload.len();
    frame[payload_at..end].copy_from_slice(payload);
    let udp = match spec.l4 {
        L4::Udp { src_port, dst_port } => {
            let repr = UdpRepr {
                src_port,
                dst_port,
                payload_len: payload.len(),
            };
            repr.emit(
                &mut UdpPacket::new_unchecked(&mut frame[l4..end]),
                &addrs,
                ChecksumMode::Software,
            )
            .expect("room for UDP");
            Some(repr)
        }
        L4::Tcp { .. } => None,
    };
    if let Some(repr) = tcp {
        repr.emit(
            &mut TcpPacket::new_unchecked(&mut frame[l4..end]),
            &addrs,
            ChecksumMode::Software,
        )
        .expect("room for TCP");
    }

    let (v4, v6) = match spec.ip {
        Ip::V4 {
            src,
            dst,
            ttl,
            dscp,
            ecn,
            ident,
            dont_frag,
        } => {
            let repr = Ipv4Repr {
                src_addr: Ipv4Address::from_bits(src),
                dst_addr: Ipv4Address::from_bits(dst),
                protocol,
                payload_len: l4_len,
                ttl,
                dscp: dscp & 63,
                ecn: ecn & 3,
                ident,
                dont_frag,
                more_frags: false,
                frag_offset: 0,
            };
            if repr.buffer_len() > usize::from(u16::MAX) {
                return;
            }
            repr.emit(
                &mut Ipv4Packet::new_unchecked(&mut frame[l3..end]),
                ChecksumMode::Software,
            )
            .expect("room for IPv4");
            (Some(repr), None)
        }
        Ip::V6 {
            src,
            dst,
            hop_limit,
            traffic_class,
            flow_label,
        } => {
            let repr = Ipv6Repr {
                src_addr: Ipv6Address::from_bits(src),
                dst_addr: Ipv6Address::from_bits(dst),
                next_header: protocol,
                payload_len: l4_len,
                hop_limit,
                traffic_class,
                flow_label: flow_label & 0xf_ffff,
            };
            if repr.payload_len > usize::from(u16::MAX) {
                return;
            }
            repr.emit(&mut Ipv6Packet::new_unchecked(&mut frame[l3..end]))
                .expect("room for IPv6");
            (None, Some(repr))
        }
    };

    // Tags from the inside out: each carries the next one's TPID.
    let mut next = ethertype;
    for (i, (tpid, tag)) in tags.iter().enumerate().rev() {
        let repr = VlanRepr {
            ethertype: next,
            ..*tag
        };
        repr.emit(&mut VlanPacket::new_unchecked(&mut frame[14 + 4 * i..]))
            .expect("room for the tag");
        next = *tpid;
    }
    let eth = EthernetRepr {
        src_addr: EthernetAddress(spec.src),
        dst_addr: EthernetAddress(spec.dst),
        ethertype: next,
    };
    eth.emit(&mut EthernetFrame::new_unchecked(&mut frame[..]))
        .expect("room for Ethernet");

    // The classifier sees what was built.
    let info = parse_frame_with(&frame, ChecksumMode::Software).expect("a built frame parses");
    assert_eq!(info.ethertype, ethertype);
    assert_eq!(
        (info.l3_offset, info.l3_range().end, info.l4_offset),
        (l3, end, l4)
    );
    assert_eq!(info.payload(), payload_at..end);
    assert_eq!(info.vlan, tags.last().map(|t| t.1.vid));
    assert_eq!(info.outer_vlan, (tags.len() == 2).then(|| tags[0].1.vid));
    let flow = info.flow.expect("an IP frame");
    assert_eq!((flow.addrs, flow.protocol), (addrs, protocol));

    // Every layer parses back to its Repr.
    let parsed = EthernetFrame::new_checked(&frame[..]).expect("valid");
    assert_eq!(EthernetRepr::parse(&parsed), Ok(eth));
    let stack = parsed.vlan_stack().expect("valid");
    assert_eq!(stack.tags().len(), tags.len());
    for (tag, (tpid, repr)) in stack.tags().iter().zip(&tags) {
        assert_eq!(
            (tag.tpid, tag.pcp, tag.dei, tag.vid),
            (*tpid, repr.pcp, repr.dei, repr.vid)
        );
    }
    if let Some(repr) = v4 {
        let ip = Ipv4Packet::new_checked(&frame[l3..]).expect("valid");
        assert_eq!(Ipv4Repr::parse(&ip, ChecksumMode::Software), Ok(repr));
    }
    if let Some(repr) = v6 {
        let ip = Ipv6Packet::new_checked(&frame[l3..]).expect("valid");
        assert_eq!(Ipv6Repr::parse(&ip), Ok(repr));
    }
    if let Some(repr) = udp {
        assert_eq!(info.l4, L4Kind::Udp);
        assert_eq!(
            (flow.src_port, flow.dst_port),
            (repr.src_port, repr.dst_port)
        );
        let packet = UdpPacket::new_checked(&frame[l4..end]).expect("valid");
        assert_eq!(
            UdpRepr::parse(&packet, &addrs, ChecksumMode::Software),
            Ok(repr)
        );
    }
    if let Some(repr) = tcp {
        assert_eq!(info.l4, L4Kind::Tcp);
        assert_eq!(
            (flow.src_port, flow.dst_port),
            (repr.src_port, repr.dst_port)
        );
        let packet = TcpPacket::new_checked(&frame[l4..end]).expect("valid");
        assert_eq!(
            TcpRepr::parse(&packet, &addrs, ChecksumMode::Software),
            Ok(repr.fitted())
        );
    }
});
