//! One TCP connection of the user-space stack driven by arbitrary
//! segments (near the sequence numbers it expects, so that they reach
//! past the window checks), application calls and timer runs: no panic,
//! and after every step the sequence space is in order, the buffers hold
//! no more than their capacity, and every segment to send lies inside
//! the send buffer and the peer's MSS.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = dataplane::transport::stack::fuzz_drive(data) {
        panic!("{e}");
    }
});
