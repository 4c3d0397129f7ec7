//! IPv4 headers: no accessor panics after `check_len`; Reprs round-trip;
//! the incremental TTL update agrees with recomputing the checksum.
#![no_main]

use dataplane::wire::{ChecksumMode, Ipv4Packet, Ipv4Repr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = Ipv4Packet::new_checked(data) else {
        return;
    };
    let header_len = packet.header_len();
    let total_len = usize::from(packet.total_len());
    assert!((20..=60).contains(&header_len) && header_len <= total_len);
    assert!(total_len <= data.len());
    assert_eq!(packet.options().len(), header_len - 20);
    assert_eq!(packet.payload().len(), total_len - header_len);
    let _ = (
        packet.version(),
        packet.dscp(),
        packet.ecn(),
        packet.ident(),
        packet.dont_frag(),
        packet.more_frags(),
        packet.frag_offset(),
        packet.is_fragment(),
        packet.ttl(),
        packet.protocol(),
        packet.src_addr(),
        packet.dst_addr(),
    );
    let valid = packet.verify_checksum();
    assert_eq!(
        Ipv4Repr::parse(&packet, ChecksumMode::Software).is_ok(),
        valid
    );

    // Options are not in the Repr, so the round trip is of the Repr.
    let repr = Ipv4Repr::parse(&packet, ChecksumMode::Offload).expect("checked");
    let mut out = vec![0u8; repr.buffer_len()];
    repr.emit(
        &mut Ipv4Packet::new_unchecked(&mut out[..]),
        ChecksumMode::Software,
    )
    .expect("room");
    let back = Ipv4Packet::new_checked(&out[..]).expect("emitted headers are valid");
    assert_eq!(Ipv4Repr::parse(&back, ChecksumMode::Software), Ok(repr));

    // RFC 1624: updating the checksum of a valid header for a TTL
    // decrement gives the checksum a full computation gives.
    if valid && packet.ttl() > 0 {
        let mut header = data[..header_len].to_vec();
        let mut view = Ipv4Packet::new_unchecked(&mut header[..]);
        assert_eq!(
            view.decrement_ttl_and_update_checksum(),
            Some(packet.ttl() - 1)
        );
        let updated = view.checksum();
        assert!(view.verify_checksum());
        view.fill_checksum();
        assert_eq!(updated, view.checksum());
    }
});
