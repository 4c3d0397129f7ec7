//! UDP datagrams: no accessor panics after `check_len`, and a datagram
//! re-emitted with a computed checksum verifies over IPv4 and IPv6.
#![no_main]

use dataplane::wire::{ChecksumMode, IpPair, Ipv4Address, Ipv6Address, UdpPacket, UdpRepr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = UdpPacket::new_checked(data) else {
        return;
    };
    let len = usize::from(packet.len());
    assert!(len >= 8 && len <= data.len());
    assert_eq!(packet.payload().len(), len - 8);
    let _ = (packet.src_port(), packet.dst_port(), packet.checksum());

    let pairs = [
        IpPair::V4 {
            src: Ipv4Address::new(192, 0, 2, 1),
            dst: Ipv4Address::new(198, 51, 100, 7),
        },
        IpPair::V6 {
            src: Ipv6Address::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
            dst: Ipv6Address::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x42),
        },
    ];
    for addrs in &pairs {
        let _ = packet.verify_checksum(addrs);
        let repr = UdpRepr::parse(&packet, addrs, ChecksumMode::Offload).expect("checked");
        let mut out = data[..len].to_vec();
        repr.emit(
            &mut UdpPacket::new_unchecked(&mut out[..]),
            addrs,
            ChecksumMode::Software,
        )
        .expect("room");
        let back = UdpPacket::new_checked(&out[..]).expect("emitted datagrams are valid");
        assert!(back.verify_checksum(addrs));
        assert_ne!(back.checksum(), 0, "a computed zero goes out as ffff");
        assert_eq!(
            UdpRepr::parse(&back, addrs, ChecksumMode::Software),
            Ok(repr)
        );
        assert_eq!(back.payload(), packet.payload());
    }
});
