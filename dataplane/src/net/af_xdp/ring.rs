//! The four single-producer, single-consumer rings an AF_XDP socket shares
//! with the kernel (Documentation/networking/af_xdp.rst): fill and tx,
//! which we produce and the kernel consumes; rx and completion, which the
//! kernel produces and we consume.
//!
//! Each ring is a power-of-two array of descriptors with a free-running
//! `u32` producer and consumer index and a flags word, at offsets the
//! kernel gives (`XDP_MMAP_OFFSETS`). The mapping is never borrowed as a
//! Rust slice: the kernel writes it concurrently, so every access is
//! through raw pointers, and ownership of a slot moves with the indices:
//!
//! - **we produce**: write the descriptors, then store the producer index
//!   with Release, so the kernel (which reads the producer index with
//!   `smp_load_acquire`, `xskq_cons_read_desc`'s caller) sees them. The
//!   kernel's consumer index, loaded with Acquire, says which slots it has
//!   finished reading (it stores it with `smp_store_release` after
//!   reading), so we may overwrite them.
//! - **we consume**: load the producer index with Acquire (the kernel
//!   stores it with `smp_store_release` after writing the descriptors),
//!   read the descriptors, then store the consumer index with Release so
//!   the reads happen before the kernel reuses the slots.
//!
//! This is libxdp's `xsk_ring_prod`/`xsk_ring_cons` (xsk.h): the indices
//! the other side owns are cached and re-read only when the cached view
//! says the ring is full (producing) or empty (consuming).

use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicU32, Ordering};

/// A ring's mapping and its cached indices; `D` is the descriptor (`u64`
/// for fill and completion, `xdp_desc` for rx and tx).
pub(super) struct Ring<D> {
    /// The mapping (memmap2's `MmapRaw`: a raw view, since the kernel
    /// writes it concurrently), unmapped on drop.
    map: memmap2::MmapRaw,
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    descs: *mut D,
    mask: u32,
    size: u32,
    /// Our own index (producer for fill/tx, consumer for rx/completion),
    /// ahead of what is published while a burst is under way.
    local: u32,
    /// The other side's index, as last read.
    seen: u32,
    _desc: PhantomData<D>,
}

// SAFETY: the ring's pointers are into a mapping it owns; the kernel is
// the only other party, and a Ring is used by one thread at a time.
unsafe impl<D: Send> Send for Ring<D> {}

impl<D> std::fmt::Debug for Ring<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("size", &self.size)
            .field("local", &self.local)
            .field("seen", &self.seen)
            .field("bytes", &self.map.len())
            .finish()
    }
}

impl<D: Copy> Ring<D> {
    /// Maps the ring of `size` entries (a power of two) at page offset
    /// `pgoff` of the socket, laid out as `off` says.
    pub(super) fn map(
        fd: BorrowedFd<'_>,
        pgoff: u64,
        off: &libc::xdp_ring_offset,
        size: u32,
    ) -> io::Result<Ring<D>> {
        let field =
            |o: u64| usize::try_from(o).map_err(|_| io::Error::other("ring offset out of range"));
        let (prod, cons, flags, desc) = (
            field(off.producer)?,
            field(off.consumer)?,
            field(off.flags)?,
            field(off.desc)?,
        );
        let len = desc + size as usize * size_of::<D>();
        if [prod, cons, flags]
            .iter()
            .any(|&o| o % 4 != 0 || o + 4 > len)
            || desc % align_of::<D>() != 0
        {
            return Err(io::Error::other(format!(
                "ring offsets the kernel gave do not fit: {prod}/{cons}/{flags}/{desc}"
            )));
        }
        let map = memmap2::MmapOptions::new()
            .len(len)
            .offset(pgoff)
            .populate()
            .map_raw(fd.as_raw_fd())?;
        let base = map.as_mut_ptr();
        let producer = base.wrapping_add(prod).cast::<AtomicU32>().cast_const();
        let consumer = base.wrapping_add(cons).cast::<AtomicU32>().cast_const();
        Ok(Ring {
            producer,
            consumer,
            flags: base.wrapping_add(flags).cast::<AtomicU32>().cast_const(),
            descs: base.wrapping_add(desc).cast::<D>(),
            mask: size - 1,
            size,
            local: 0,
            seen: 0,
            map,
            _desc: PhantomData,
        })
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: a 4-byte aligned word inside the live mapping (checked
        // in `map`), which the kernel updates only with atomic-width
        // stores.
        unsafe { &*self.producer }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as in `producer`.
        unsafe { &*self.consumer }
    }

    /// Whether the kernel asks to be woken (`XDP_RING_NEED_WAKEUP`).
    #[inline]
    pub(super) fn needs_wakeup(&self) -> bool {
        // SAFETY: as in `producer`. Relaxed: a hint, re-read every pass.
        let flags = unsafe { &*self.flags };
        flags.load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    #[inline]
    fn slot(&self, index: u32) -> *mut D {
        // In bounds: the mask keeps the index below `size`, and the
        // mapping holds `size` descriptors after `desc`.
        self.descs.wrapping_add((index & self.mask) as usize)
    }

    // --- the producing side (fill, tx) ---

    /// Slots free to produce into, up to `want`, re-reading the kernel's
    /// consumer index only when the cached one shows fewer.
    #[inline]
    pub(super) fn free(&mut self, want: u32) -> u32 {
        let free = self.size - self.local.wrapping_sub(self.seen);
        if free >= want {
            return free;
        }
        self.seen = self.consumer().load(Ordering::Acquire);
        self.size - self.local.wrapping_sub(self.seen)
    }

    /// Writes the next slot (the caller checked [`Ring::free`]).
    #[inline]
    pub(super) fn push(&mut self, desc: D) {
        // SAFETY: the slot is ours: `free` said the kernel is done with it,
        // and nobody else writes it until we publish.
        unsafe { self.slot(self.local).write_volatile(desc) };
        self.local = self.local.wrapping_add(1);
    }

    /// Publishes what [`Ring::push`] wrote.
    #[inline]
    pub(super) fn submit(&mut self) {
        self.producer().store(self.local, Ordering::Release);
    }

    /// Entries produced that the kernel has not consumed yet.
    #[inline]
    pub(super) fn outstanding(&mut self) -> u32 {
        self.seen = self.consumer().load(Ordering::Acquire);
        self.local.wrapping_sub(self.seen)
    }

    // --- the consuming side (rx, completion) ---

    /// Entries ready to consume, up to `want`.
    #[inline]
    pub(super) fn ready(&mut self, want: u32) -> u32 {
        let mut ready = self.seen.wrapping_sub(self.local);
        if ready == 0 {
            self.seen = self.producer().load(Ordering::Acquire);
            ready = self.seen.wrapping_sub(self.local);
        }
        // A kernel index more than a ring ahead would be a broken kernel;
        // never read past what one ring can hold.
        ready.min(want).min(self.size)
    }

    /// Reads the next entry (the caller checked [`Ring::ready`]).
    #[inline]
    pub(super) fn pop(&mut self) -> D {
        // SAFETY: the slot was published by the kernel's producer store,
        // which the Acquire load in `ready` synchronised with.
        let d = unsafe { self.slot(self.local).read_volatile() };
        self.local = self.local.wrapping_add(1);
        d
    }

    /// Hands the popped entries back to the kernel.
    #[inline]
    pub(super) fn release(&mut self) {
        self.consumer().store(self.local, Ordering::Release);
    }
}
