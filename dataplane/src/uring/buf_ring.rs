//! The provided-buffer ring (`IORING_REGISTER_PBUF_RING`) through which
//! buffers are lent to the kernel for multishot receives: mbufs by
//! `net::uring`, a transport's receive buffers by `transport`.

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

/// A provided-buffer ring: `io_uring_buf` entries in page-aligned memory
/// shared with the kernel, the tail in the first entry's `resv` field.
#[derive(Debug)]
pub(crate) struct BufRing {
    /// Private anonymous memory (memmap2), written by us and read by the
    /// kernel; reached through its raw pointer only.
    _map: memmap2::MmapMut,
    base: NonNull<u8>,
    entries: u16,
    tail: u16,
}

// SAFETY: `base` points into `_map`, which moves with the ring and is
// reached only through `&mut self` methods: sending the owner to another
// thread moves the only way to the memory with it (it is not `Sync`).
unsafe impl Send for BufRing {}

/// `struct io_uring_buf`: addr (u64), len (u32), bid (u16), resv (u16).
pub(crate) const BUF_ENTRY: usize = 16;

impl BufRing {
    pub(crate) fn new(entries: u16) -> io::Result<BufRing> {
        let bytes = (usize::from(entries) * BUF_ENTRY).next_multiple_of(4096);
        // Page aligned, as the kernel requires, and zeroed.
        let mut map = memmap2::MmapOptions::new()
            .len(bytes)
            .populate()
            .map_anon()?;
        let base = NonNull::new(map.as_mut_ptr()).ok_or_else(|| io::Error::other("mmap gave 0"))?;
        Ok(BufRing {
            _map: map,
            base,
            entries,
            tail: 0,
        })
    }

    pub(crate) fn addr(&self) -> u64 {
        self.base.as_ptr() as u64
    }

    /// Writes an entry at the tail, not yet visible to the kernel.
    pub(crate) fn add(&mut self, addr: u64, len: u32, bid: u16) {
        let slot = usize::from(self.tail & (self.entries - 1));
        let e = self.base.as_ptr().wrapping_add(slot * BUF_ENTRY);
        // SAFETY: `slot < entries`, so the 16-byte entry is in the mapping;
        // the kernel reads entries only between its head and our published
        // tail, and this one is past the tail.
        unsafe { e.cast::<u64>().write_volatile(addr) };
        // SAFETY: as above.
        unsafe { e.wrapping_add(8).cast::<u32>().write_volatile(len) };
        // SAFETY: as above.
        unsafe { e.wrapping_add(12).cast::<u16>().write_volatile(bid) };
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the entries added so far visible (`io_uring_buf_ring_advance`).
    pub(crate) fn publish(&self) {
        let tail = self.base.as_ptr().wrapping_add(14).cast::<u16>();
        // Release: the entries written before are visible to the kernel once
        // it reads this tail (it loads it with `smp_load_acquire`).
        // SAFETY: the ring's tail field (`resv` of entry 0), 2-byte aligned
        // in the mapping, which lives as long as `self`.
        let t = unsafe { AtomicU16::from_ptr(tail) };
        t.store(self.tail, Ordering::Release);
    }
}

// The mapping is unmapped when `map` drops. The owner unregisters the ring
// first; if that failed, the kernel still holds its own pin on the pages,
// so unmapping our view cannot make it write freed memory.
