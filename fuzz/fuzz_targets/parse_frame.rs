//! The classifier: never panics, every range it returns lies inside the
//! frame and inside the enclosing layer, the views agree with it, and
//! verifying the IPv4 checksum only ever adds `BadChecksum`.
#![no_main]

use dataplane::wire::{
    ChecksumMode, Header, IpProtocol, Ipv4Packet, Ipv6Packet, L3Kind, L4Kind, TcpPacket, UdpPacket,
    WireError, parse_frame, parse_frame_with,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|frame: &[u8]| {
    let fast = parse_frame(frame);
    let checked = parse_frame_with(frame, ChecksumMode::Software);
    match (&fast, &checked) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Ok(info), Err(e)) => {
            assert_eq!(*e, WireError::BadChecksum(Header::Ipv4));
            assert_eq!(info.l3, L3Kind::Ipv4);
        }
        // The IPv4 checksum is checked before the L4 header is read.
        (Err(a), Err(b)) => assert!(a == b || *b == WireError::BadChecksum(Header::Ipv4)),
        (Err(_), Ok(_)) => panic!("verifying a checksum accepted a refused frame"),
    }
    let Ok(info) = fast else {
        return;
    };

    let l3 = info.l3_range();
    assert!(l3.start >= 14 && l3.start <= l3.end && l3.end <= frame.len());
    assert_eq!((l3.start - 14) % 4, 0, "tags are 4 bytes each");
    let payload = info.payload();
    assert!(payload.start <= payload.end);
    assert!(l3.start <= payload.start && payload.end <= l3.end);
    assert!(info.outer_vlan.is_none() || info.vlan.is_some());
    if info.flow.is_some() {
        // IP: the L4 header lies between the L3 header and the payload.
        assert!(l3.start < info.l4_offset && info.l4_offset <= payload.start);
    } else {
        // Not IP: the payload is the L3 packet, and there is no L4.
        assert_eq!((payload.clone(), info.l4_offset), (l3.clone(), l3.end));
    }

    let l3_bytes = &frame[l3.clone()];
    match info.l3 {
        L3Kind::Ipv4 => {
            let ip = Ipv4Packet::new_checked(l3_bytes).expect("classified as IPv4");
            assert_eq!(usize::from(ip.total_len()), l3_bytes.len());
            assert_eq!(info.l4_offset, l3.start + ip.header_len());
        }
        L3Kind::Ipv6 => {
            let ip = Ipv6Packet::new_checked(l3_bytes).expect("classified as IPv6");
            let upper = ip.upper_layer().expect("classified as IPv6");
            assert_eq!(info.l4_offset, l3.start + upper.offset);
        }
        _ => assert!(info.flow.is_none()),
    }

    let l4_bytes = &frame[info.l4_offset..l3.end];
    match info.l4 {
        L4Kind::Udp => {
            let udp = UdpPacket::new_checked(l4_bytes).expect("classified as UDP");
            let flow = info.flow.expect("UDP is over IP");
            assert_eq!(flow.protocol, IpProtocol::UDP);
            assert_eq!(
                (flow.src_port, flow.dst_port),
                (udp.src_port(), udp.dst_port())
            );
            assert_eq!(&frame[payload], udp.payload());
        }
        L4Kind::Tcp => {
            let tcp = TcpPacket::new_checked(l4_bytes).expect("classified as TCP");
            let flow = info.flow.expect("TCP is over IP");
            assert_eq!(flow.protocol, IpProtocol::TCP);
            assert_eq!(
                (flow.src_port, flow.dst_port),
                (tcp.src_port(), tcp.dst_port())
            );
            assert_eq!(&frame[payload], tcp.payload());
        }
        L4Kind::Other | L4Kind::Fragment => {
            let flow = info.flow.expect("an L4 is over IP");
            assert_eq!((flow.src_port, flow.dst_port), (0, 0));
        }
        _ => {}
    }
});
