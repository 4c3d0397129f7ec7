//! IPv6 headers and extension chains: no accessor panics after
//! `check_len`, the walk stays inside the payload, and the fixed header
//! round-trips byte for byte.
#![no_main]

use dataplane::wire::{
    IpProtocol, Ipv6ExtHeader, Ipv6FragmentHeader, Ipv6Packet, Ipv6Repr, WireError,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = Ipv6Packet::new_checked(data) else {
        return;
    };
    let end = 40 + usize::from(packet.payload_len());
    assert!(end <= data.len());
    assert_eq!(packet.payload().len(), end - 40);
    let _ = (
        packet.traffic_class(),
        packet.flow_label(),
        packet.hop_limit(),
        packet.addrs(),
    );

    let repr = Ipv6Repr::parse(&packet).expect("checked");
    let mut out = [0u8; 40];
    repr.emit(&mut Ipv6Packet::new_unchecked(&mut out[..]))
        .expect("room");
    assert_eq!(out[..], data[..40]);

    match packet.upper_layer() {
        Ok(upper) => {
            assert!(upper.offset >= 40 && upper.offset <= end);
            // Walk again through the views and land on the same place.
            let mut next = packet.next_header();
            let mut at = 40;
            while at < upper.offset {
                let rest = &data[at..end];
                if next == IpProtocol::IPV6_FRAGMENT {
                    let frag = Ipv6FragmentHeader::new_checked(rest).expect("walked");
                    next = frag.next_header();
                    at += 8;
                } else if next == IpProtocol::AH {
                    next = IpProtocol(rest[0]);
                    at += (usize::from(rest[1]) + 2) * 4;
                } else {
                    let ext = Ipv6ExtHeader::new_checked(rest).expect("walked");
                    assert!(ext.data().len() + 2 == ext.header_len());
                    next = ext.next_header();
                    at += ext.header_len();
                }
            }
            assert_eq!((at, next), (upper.offset, upper.protocol));
        }
        Err(e) => assert!(matches!(
            e,
            WireError::Truncated(_) | WireError::Malformed(_) | WireError::Unsupported(_)
        )),
    }
});
