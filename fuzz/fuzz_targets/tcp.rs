//! TCP segments: no accessor panics after `check_len`, the option
//! iterator always ends, and Reprs round-trip with a computed checksum.
#![no_main]

use dataplane::wire::{ChecksumMode, IpPair, Ipv4Address, TcpPacket, TcpRepr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = TcpPacket::new_checked(data) else {
        return;
    };
    let header_len = packet.header_len();
    assert!((20..=60).contains(&header_len) && header_len <= data.len());
    assert_eq!(packet.options().len(), header_len - 20);
    assert_eq!(packet.payload().len(), data.len() - header_len);
    let _ = (
        packet.src_port(),
        packet.dst_port(),
        packet.seq_number(),
        packet.ack_number(),
        packet.reserved(),
        packet.flags(),
        packet.window_len(),
        packet.checksum(),
        packet.urgent_at(),
    );
    // Every option takes at least a byte, and a malformed one ends the
    // walk after one error: the iterator cannot run longer than that.
    let mut count = 0;
    let mut errors = 0;
    for option in packet.options_iter() {
        count += 1;
        errors += usize::from(option.is_err());
        assert!(count <= packet.options().len());
    }
    assert!(errors <= 1);

    let addrs = IpPair::V4 {
        src: Ipv4Address::new(10, 1, 2, 3),
        dst: Ipv4Address::new(10, 3, 2, 1),
    };
    let _ = packet.verify_checksum(&addrs);
    let Ok(repr) = TcpRepr::parse(&packet, &addrs, ChecksumMode::Offload) else {
        assert!(
            errors == 1,
            "only a malformed option fails a checked segment"
        );
        return;
    };
    let mut out = vec![0u8; repr.buffer_len()];
    let out_header = repr.header_len();
    out[out_header..].copy_from_slice(packet.payload());
    repr.emit(
        &mut TcpPacket::new_unchecked(&mut out[..]),
        &addrs,
        ChecksumMode::Software,
    )
    .expect("room");
    let back = TcpPacket::new_checked(&out[..]).expect("emitted segments are valid");
    assert!(back.verify_checksum(&addrs));
    assert_eq!(
        TcpRepr::parse(&back, &addrs, ChecksumMode::Software),
        Ok(repr)
    );
});
