//! The user-space TCP/IP stack's whole receive path (ARP, IPv4, ICMP,
//! UDP, TCP to a listener and to a connection being opened) driven by
//! frames built from the input, valid checksums or spoilt ones, with the
//! application reading, writing and sending between them: no panic, and
//! every mbuf back in its pool at the end.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = dataplane::transport::stack::fuzz_frames(data) {
        panic!("{e}");
    }
});
