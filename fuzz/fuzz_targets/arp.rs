//! ARP packets of any address lengths: no accessor panics after
//! `check_len`, and Ethernet/IPv4 packets round-trip byte for byte.
#![no_main]

use dataplane::wire::{ArpPacket, ArpRepr, WireError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let packet = match ArpPacket::new_checked(data) {
        Ok(packet) => packet,
        Err(e) => {
            assert!(matches!(e, WireError::Truncated(_)));
            return;
        }
    };
    let (hlen, plen) = (
        usize::from(packet.hardware_len()),
        usize::from(packet.protocol_len()),
    );
    let _ = (
        packet.hardware_type(),
        packet.protocol_type(),
        packet.operation(),
    );
    assert_eq!(packet.sender_hardware_addr().len(), hlen);
    assert_eq!(packet.sender_protocol_addr().len(), plen);
    assert_eq!(packet.target_hardware_addr().len(), hlen);
    assert_eq!(packet.target_protocol_addr().len(), plen);

    let Ok(repr) = ArpRepr::parse(&packet) else {
        return;
    };
    let mut out = [0u8; 28];
    repr.emit(&mut ArpPacket::new_unchecked(&mut out[..]))
        .expect("room for the packet");
    assert_eq!(out[..], data[..28]);
});
