//! End to end over `dataplane::wire`: random Reprs emitted into whole
//! frames (over garbage) parse back equal through the classifier and every
//! view, and random or mutated bytes never make the classifier panic or
//! return a range outside the frame.
//!
//! Seeded, so a failure repeats; `WIRE_SEED` picks another seed.

use dataplane::net::DropReason;
use dataplane::wire::{
    ArpOperation, ArpPacket, ArpRepr, ChecksumMode, EtherType, EthernetAddress, EthernetFrame,
    EthernetRepr, FrameInfo, IpPair, IpProtocol, Ipv4Address, Ipv4Packet, Ipv4Repr, Ipv6Address,
    Ipv6ExtHeader, Ipv6FragmentHeader, Ipv6Packet, Ipv6Repr, L3Kind, L4Kind, TcpFlags, TcpPacket,
    TcpRepr, UdpPacket, UdpRepr, VlanId, VlanPacket, VlanRepr, WireError, parse_frame,
    parse_frame_with,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

fn rng(salt: u64) -> SmallRng {
    let seed = std::env::var("WIRE_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0x5eed);
    SmallRng::seed_from_u64(seed ^ salt)
}

/// A frame built from random Reprs, and what was put in it.
struct Built {
    frame: Vec<u8>,
    eth: EthernetRepr,
    tags: Vec<(EtherType, VlanRepr)>,
    ip: Ip,
    l4: L4,
    addrs: IpPair,
    l3_offset: usize,
    l4_offset: usize,
    payload: std::ops::Range<usize>,
}

enum Ip {
    V4(Ipv4Repr),
    V6(Ipv6Repr),
}

enum L4 {
    Udp(UdpRepr),
    Tcp(TcpRepr),
}

fn random_addrs(rng: &mut SmallRng, v6: bool) -> IpPair {
    if v6 {
        IpPair::V6 {
            src: Ipv6Address::from_bits(rng.random()),
            dst: Ipv6Address::from_bits(rng.random()),
        }
    } else {
        IpPair::V4 {
            src: Ipv4Address::from_bits(rng.random()),
            dst: Ipv4Address::from_bits(rng.random()),
        }
    }
}

fn random_tcp(rng: &mut SmallRng, payload_len: usize) -> TcpRepr {
    TcpRepr {
        src_port: rng.random(),
        dst_port: rng.random(),
        seq_number: rng.random(),
        ack_number: rng.random(),
        flags: TcpFlags(rng.random()),
        window_len: rng.random(),
        urgent_at: rng.random(),
        max_seg_size: rng.random_bool(0.5).then(|| rng.random()),
        window_scale: rng.random_bool(0.5).then(|| rng.random_range(0..=14)),
        sack_permitted: rng.random(),
        sack: {
            let mut b = dataplane::wire::SackBlocks::default();
            for _ in 0..rng.random_range(0..=4) {
                b.push(rng.random(), rng.random());
            }
            b
        },
        timestamps: rng.random_bool(0.5).then(|| (rng.random(), rng.random())),
        payload_len,
    }
}

/// IPv6 extension headers to put before the L4 header: Hop-by-Hop first if
/// at all, then Destination Options, Routing, or an atomic Fragment
/// header. Each is `(type, length)`.
fn random_extensions(rng: &mut SmallRng) -> Vec<(IpProtocol, usize)> {
    let mut headers = Vec::new();
    if rng.random_bool(0.3) {
        headers.push((IpProtocol::HOP_BY_HOP, 8 * rng.random_range(1..=3)));
    }
    for _ in 0..rng.random_range(0..=2) {
        let header = match rng.random_range(0..3) {
            0 => (IpProtocol::IPV6_DESTINATION, 8 * rng.random_range(1..=2)),
            1 => (IpProtocol::IPV6_ROUTING, 24),
            _ => (IpProtocol::IPV6_FRAGMENT, 8),
        };
        headers.push(header);
    }
    headers
}

/// Emits a random Ethernet/VLAN/IP/UDP-or-TCP frame over garbage.
fn random_frame(rng: &mut SmallRng) -> Built {
    let v6 = rng.random_bool(0.5);
    let addrs = random_addrs(rng, v6);
    let payload_len = rng.random_range(0..=300);
    let l4 = if rng.random_bool(0.5) {
        L4::Udp(UdpRepr {
            src_port: rng.random(),
            dst_port: rng.random(),
            payload_len,
        })
    } else {
        L4::Tcp(random_tcp(rng, payload_len))
    };
    let (l4_len, protocol) = match &l4 {
        L4::Udp(r) => (r.buffer_len(), IpProtocol::UDP),
        L4::Tcp(r) => (r.buffer_len(), IpProtocol::TCP),
    };
    let extensions = if v6 {
        random_extensions(rng)
    } else {
        Vec::new()
    };
    let ext_len: usize = extensions.iter().map(|e| e.1).sum();

    let tags: Vec<(EtherType, VlanRepr)> = (0..rng.random_range(0..=2))
        .map(|_| {
            let tpid = if rng.random() {
                EtherType::QINQ
            } else {
                EtherType::VLAN
            };
            let tag = VlanRepr {
                pcp: rng.random_range(0..8),
                dei: rng.random(),
                vid: VlanId::new(rng.random_range(0..=VlanId::MAX)).expect("in range"),
                ethertype: EtherType(0),
            };
            (tpid, tag)
        })
        .collect();
    let l3_offset = 14 + 4 * tags.len();
    let ip_header = if v6 { 40 } else { 20 };
    let l4_offset = l3_offset + ip_header + ext_len;
    let end = l4_offset + l4_len;
    let mut frame = vec![0u8; end + rng.random_range(0..=20)];
    rng.fill(&mut frame[..]);

    // Inside out: payload, L4 (its checksum covers the payload), IP, tags,
    // Ethernet.
    let payload = end - payload_len..end;
    let bytes: Vec<u8> = (0..payload_len).map(|_| rng.random()).collect();
    frame[payload.clone()].copy_from_slice(&bytes);
    match &l4 {
        L4::Udp(r) => r.emit(
            &mut UdpPacket::new_unchecked(&mut frame[l4_offset..end]),
            &addrs,
            ChecksumMode::Software,
        ),
        L4::Tcp(r) => r.emit(
            &mut TcpPacket::new_unchecked(&mut frame[l4_offset..end]),
            &addrs,
            ChecksumMode::Software,
        ),
    }
    .expect("room for L4");

    let ip = match addrs {
        IpPair::V4 { src, dst } => {
            let repr = Ipv4Repr {
                src_addr: src,
                dst_addr: dst,
                protocol,
                payload_len: l4_len,
                ttl: rng.random(),
                dscp: rng.random_range(0..64),
                ecn: rng.random_range(0..4),
                ident: rng.random(),
                dont_frag: rng.random(),
                more_frags: false,
                frag_offset: 0,
            };
            repr.emit(
                &mut Ipv4Packet::new_unchecked(&mut frame[l3_offset..end]),
                ChecksumMode::Software,
            )
            .expect("room for IPv4");
            Ip::V4(repr)
        }
        IpPair::V6 { src, dst } => {
            let repr = Ipv6Repr {
                src_addr: src,
                dst_addr: dst,
                next_header: extensions.first().map_or(protocol, |e| e.0),
                payload_len: ext_len + l4_len,
                hop_limit: rng.random(),
                traffic_class: rng.random(),
                flow_label: rng.random_range(0..=0xf_ffff),
            };
            repr.emit(&mut Ipv6Packet::new_unchecked(&mut frame[l3_offset..end]))
                .expect("room for IPv6");
            let mut at = l3_offset + 40;
            for (i, &(kind, len)) in extensions.iter().enumerate() {
                let next = extensions.get(i + 1).map_or(protocol, |e| e.0);
                let buf = &mut frame[at..at + len];
                if kind == IpProtocol::IPV6_FRAGMENT {
                    let mut frag = Ipv6FragmentHeader::new_unchecked(buf);
                    frag.set_next_header(next);
                    frag.set_frag_offset(0, false);
                    frag.set_ident(rng.random());
                } else {
                    let mut ext = Ipv6ExtHeader::new_unchecked(buf);
                    ext.set_next_header(next);
                    ext.set_header_len(len);
                }
                at += len;
            }
            Ip::V6(repr)
        }
    };

    let mut next = if v6 { EtherType::IPV6 } else { EtherType::IPV4 };
    for (i, (tpid, tag)) in tags.iter().enumerate().rev() {
        let repr = VlanRepr {
            ethertype: next,
            ..*tag
        };
        repr.emit(&mut VlanPacket::new_unchecked(&mut frame[14 + 4 * i..]))
            .expect("room for the tag");
        next = *tpid;
    }
    let mut mac = || {
        let mut octets: [u8; 6] = rng.random();
        octets[0] &= 0xfe;
        EthernetAddress(octets)
    };
    let eth = EthernetRepr {
        src_addr: mac(),
        dst_addr: mac(),
        ethertype: next,
    };
    eth.emit(&mut EthernetFrame::new_unchecked(&mut frame[..]))
        .expect("room for Ethernet");

    Built {
        frame,
        eth,
        tags,
        ip,
        l4,
        addrs,
        l3_offset,
        l4_offset,
        payload,
    }
}

#[test]
fn random_frames_round_trip() {
    let mut rng = rng(1);
    for i in 0..20_000 {
        let b = random_frame(&mut rng);
        let frame = &b.frame[..];
        let info = parse_frame_with(frame, ChecksumMode::Software)
            .unwrap_or_else(|e| panic!("frame {i} ({frame:02x?}): {e}"));
        assert_eq!(info.l3_offset, b.l3_offset, "frame {i}");
        assert_eq!(info.l4_offset, b.l4_offset, "frame {i}");
        assert_eq!(info.payload(), b.payload, "frame {i}");
        assert_eq!(info.vlan, b.tags.last().map(|t| t.1.vid));
        assert_eq!(
            info.outer_vlan,
            (b.tags.len() == 2).then(|| b.tags[0].1.vid)
        );
        let flow = info.flow.expect("an IP frame");
        assert_eq!(flow.addrs, b.addrs);

        let eth = EthernetFrame::new_checked(frame).expect("valid");
        assert_eq!(EthernetRepr::parse(&eth), Ok(b.eth));
        let stack = eth.vlan_stack().expect("valid");
        assert_eq!(stack.l3_offset(), b.l3_offset);
        for (tag, (tpid, repr)) in stack.tags().iter().zip(&b.tags) {
            assert_eq!(
                (tag.tpid, tag.pcp, tag.dei, tag.vid),
                (*tpid, repr.pcp, repr.dei, repr.vid)
            );
        }

        let l3 = &frame[info.l3_range()];
        match b.ip {
            Ip::V4(repr) => {
                assert_eq!(info.l3, L3Kind::Ipv4);
                let ip = Ipv4Packet::new_checked(l3).expect("valid");
                assert_eq!(Ipv4Repr::parse(&ip, ChecksumMode::Software), Ok(repr));
            }
            Ip::V6(repr) => {
                assert_eq!(info.l3, L3Kind::Ipv6);
                let ip = Ipv6Packet::new_checked(l3).expect("valid");
                assert_eq!(Ipv6Repr::parse(&ip), Ok(repr));
            }
        }
        let segment = &frame[b.l4_offset..info.l3_range().end];
        match b.l4 {
            L4::Udp(repr) => {
                assert_eq!(info.l4, L4Kind::Udp);
                let udp = UdpPacket::new_checked(segment).expect("valid");
                assert_eq!(
                    UdpRepr::parse(&udp, &b.addrs, ChecksumMode::Software),
                    Ok(repr)
                );
                assert_eq!(
                    (flow.src_port, flow.dst_port),
                    (repr.src_port, repr.dst_port)
                );
            }
            L4::Tcp(repr) => {
                assert_eq!(info.l4, L4Kind::Tcp);
                let tcp = TcpPacket::new_checked(segment).expect("valid");
                assert_eq!(
                    TcpRepr::parse(&tcp, &b.addrs, ChecksumMode::Software),
                    Ok(repr.fitted())
                );
                assert_eq!(
                    (flow.src_port, flow.dst_port),
                    (repr.src_port, repr.dst_port)
                );
            }
        }
    }
}

#[test]
fn random_arp_round_trips() {
    let mut rng = rng(2);
    for _ in 0..5_000 {
        let repr = ArpRepr {
            operation: ArpOperation(rng.random_range(1..=2)),
            sender_hardware_addr: EthernetAddress(rng.random()),
            sender_protocol_addr: Ipv4Address::from_bits(rng.random()),
            target_hardware_addr: EthernetAddress(rng.random()),
            target_protocol_addr: Ipv4Address::from_bits(rng.random()),
        };
        let mut frame = vec![0u8; 60];
        rng.fill(&mut frame[..]);
        EthernetRepr {
            src_addr: repr.sender_hardware_addr,
            dst_addr: EthernetAddress::BROADCAST,
            ethertype: EtherType::ARP,
        }
        .emit(&mut EthernetFrame::new_unchecked(&mut frame[..]))
        .expect("room");
        repr.emit(&mut ArpPacket::new_unchecked(&mut frame[14..]))
            .expect("room");
        let info = parse_frame(&frame).expect("valid");
        assert_eq!((info.l3, info.l3_range()), (L3Kind::Arp, 14..42));
        let packet = ArpPacket::new_checked(&frame[14..]).expect("valid");
        assert_eq!(ArpRepr::parse(&packet), Ok(repr));
    }
}

/// What must hold of any `Ok` from the classifier.
fn check_invariants(frame: &[u8], info: &FrameInfo) {
    let l3 = info.l3_range();
    let payload = info.payload();
    assert!(l3.start <= l3.end && l3.end <= frame.len(), "{info:?}");
    assert!(
        l3.start <= payload.start && payload.start <= payload.end && payload.end <= l3.end,
        "{info:?}"
    );
    assert!(info.l4_offset <= l3.end, "{info:?}");
    assert!(info.outer_vlan.is_none() || info.vlan.is_some(), "{info:?}");
    if matches!(info.l4, L4Kind::Udp | L4Kind::Tcp) {
        assert!(info.l4_offset < payload.start, "{info:?}");
    }
}

/// Classifies `frame` both ways; both must agree but for the IPv4 checksum.
fn classify(frame: &[u8]) -> Result<FrameInfo, WireError> {
    let fast = parse_frame(frame);
    let checked = parse_frame_with(frame, ChecksumMode::Software);
    match (&fast, &checked) {
        (Ok(info), Ok(same)) => assert_eq!(info, same),
        (Ok(info), Err(e)) => {
            assert_eq!(DropReason::from(*e), DropReason::BadChecksum, "{info:?}");
        }
        // The IPv4 checksum is checked before the L4 header is read.
        (Err(a), Err(b)) => assert!(a == b || DropReason::from(*b) == DropReason::BadChecksum),
        (Err(e), Ok(info)) => panic!("checked accepted what fast refused ({e}): {info:?}"),
    }
    if let Ok(info) = &fast {
        check_invariants(frame, info);
    }
    fast
}

/// Overwrites a length field or flips bits of a valid frame, or cuts it.
fn mutate(rng: &mut SmallRng, frame: &mut Vec<u8>) {
    match rng.random_range(0..4) {
        0 => {
            let len = rng.random_range(0..=frame.len());
            frame.truncate(len);
        }
        1 => {
            for _ in 0..rng.random_range(1..=4) {
                let at = rng.random_range(0..frame.len());
                frame[at] ^= 1 << rng.random_range(0..8);
            }
        }
        2 => {
            // A random 16-bit value somewhere in the headers, where the
            // length fields are.
            let at = rng.random_range(0..frame.len().min(80) - 1);
            let value: u16 = rng.random();
            frame[at..at + 2].copy_from_slice(&value.to_be_bytes());
        }
        _ => {
            let at = rng.random_range(0..frame.len());
            frame[at] = rng.random();
        }
    }
}

#[test]
fn garbage_never_panics() {
    let mut rng = rng(3);
    let ethertypes = [
        EtherType::IPV4,
        EtherType::IPV6,
        EtherType::ARP,
        EtherType::VLAN,
        EtherType::QINQ,
    ];
    let (mut accepted, mut refused) = (0u32, 0u32);
    for i in 0..300_000 {
        let frame = match i % 3 {
            // Random bytes of random length.
            0 => {
                let mut f = vec![0u8; rng.random_range(0..=128)];
                rng.fill(&mut f[..]);
                f
            }
            // Random bytes behind an interesting Ethertype (and, for IP,
            // the right version nibble), to get past the first checks.
            1 => {
                let mut f = vec![0u8; rng.random_range(14..=160)];
                rng.fill(&mut f[..]);
                let ethertype = ethertypes[rng.random_range(0..ethertypes.len())];
                f[12..14].copy_from_slice(&ethertype.0.to_be_bytes());
                if f.len() > 14 {
                    f[14] = match ethertype {
                        EtherType::IPV4 => 0x40 | (f[14] & 0x0f),
                        EtherType::IPV6 => 0x60 | (f[14] & 0x0f),
                        _ => f[14],
                    };
                }
                f
            }
            // A valid frame, damaged.
            _ => {
                let mut f = random_frame(&mut rng).frame;
                mutate(&mut rng, &mut f);
                f
            }
        };
        match classify(&frame) {
            Ok(_) => accepted += 1,
            Err(_) => refused += 1,
        }
    }
    // Both outcomes must have been reached for the run to mean anything.
    assert!(
        accepted > 10_000 && refused > 10_000,
        "{accepted} / {refused}"
    );
}
