//! A foreign mbuf dropped before any `ForeignMbufOps` are registered: a
//! broken `Mbuf::from_raw` contract. Debug builds stop at a debug
//! assertion; release builds leak the mbuf and go on. In its own test
//! binary, because the registration is process-wide and permanent.

use hugepages::mbuf::{Mbuf, MbufHeader};
use std::ptr::NonNull;

#[repr(C, align(64))]
struct FakeDpdkMbuf {
    hdr: MbufHeader,
    buf: [u8; 64],
}

fn foreign_mbuf() -> Mbuf {
    let raw = Box::into_raw(Box::new(FakeDpdkMbuf {
        hdr: MbufHeader {
            port: 0,
            buf_len: 64,
            // priv_size 0, a multiple of 8 as DPDK requires: not the
            // native tag, so this header reads as foreign.
            ..MbufHeader::default()
        },
        buf: [0; 64],
    }));
    // SAFETY: `raw` is a live allocation; only its address is taken.
    let buf = unsafe { &raw mut (*raw).buf }.cast::<u8>();
    // SAFETY: as above; nothing else refers to it yet.
    unsafe { (*raw).hdr.buf_addr = buf };
    // SAFETY: a valid, initialised, owned mbuf; the missing ops are the
    // contract breach under test.
    unsafe { Mbuf::from_raw(NonNull::new(raw).unwrap().cast()) }
}

#[test]
#[cfg(debug_assertions)]
#[cfg_attr(miri, ignore)] // the mbuf is leaked on purpose
#[should_panic(expected = "no ForeignMbufOps are registered")]
fn debug_build_asserts() {
    drop(foreign_mbuf());
}

#[test]
#[cfg(not(debug_assertions))]
#[cfg_attr(miri, ignore)] // the mbuf is leaked on purpose
fn release_build_leaks_without_panicking() {
    let m = foreign_mbuf();
    assert!(!m.is_native());
    drop(m);
    Mbuf::free_bulk([foreign_mbuf(), foreign_mbuf()]);
}
