//! Ethernet headers and VLAN tag stacks: `check_len`'s promise (no
//! accessor panics after `Ok`), and header round trips byte for byte.
#![no_main]

use dataplane::wire::{EthernetFrame, EthernetRepr, VlanPacket, VlanRepr, WireError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let frame = match EthernetFrame::new_checked(data) {
        Ok(frame) => frame,
        Err(e) => {
            assert!(matches!(e, WireError::Truncated(_)) && data.len() < 14);
            return;
        }
    };
    let _ = (frame.dst_addr(), frame.src_addr(), frame.ethertype());
    assert_eq!(frame.payload().len(), data.len() - 14);

    // Every header field is in the Repr: emitting it gives the same bytes.
    let repr = EthernetRepr::parse(&frame).expect("a checked frame parses");
    let mut out = [0u8; 14];
    repr.emit(&mut EthernetFrame::new_unchecked(&mut out[..]))
        .expect("room for the header");
    assert_eq!(out[..], data[..14]);

    let Ok(stack) = frame.vlan_stack() else {
        return;
    };
    assert_eq!(stack.l3_offset(), 14 + 4 * stack.tags().len());
    assert!(stack.l3_offset() <= data.len());
    assert!(!stack.ethertype().is_vlan_tag());
    assert_eq!(stack.outer_vid().is_some(), stack.tags().len() == 2);
    for (i, tag) in stack.tags().iter().enumerate() {
        // The TPID of tag i sits in the two bytes before its view.
        let at = 14 + 4 * i;
        assert_eq!(u16::from_be_bytes([data[at - 2], data[at - 1]]), tag.tpid.0);
        let view = VlanPacket::new_checked(&data[at..]).expect("the walk read this tag");
        assert_eq!(view.tci(), tag.tci());
        let repr = VlanRepr::parse(&view).expect("a checked tag parses");
        let mut out = [0u8; 4];
        repr.emit(&mut VlanPacket::new_unchecked(&mut out[..]))
            .expect("room for the tag");
        assert_eq!(out[..], data[at..at + 4]);
    }
});
