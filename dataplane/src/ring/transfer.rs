//! What a burst moves items out of ([`Source`]) and into ([`Sink`]).
//!
//! Both traits are sealed: the ring moves items with raw copies, so the
//! implementations must get ownership exactly right, and they are all here.
//! A burst call never runs user code between reserving slots and publishing
//! them (no iterator, no `Clone`), so nothing can unwind with slots reserved.

use core::mem::MaybeUninit;

use super::Batch;

mod sealed {
    pub trait Sealed<T> {}
}

/// Something a burst can move items out of: `&mut Batch<T, N>` (items are
/// moved from its front) or `&[T]` for `T: Copy` (items are copied).
///
/// # Safety
/// Implementations move exactly the items they are asked for, each once.
pub unsafe trait Source<T>: sealed::Sealed<T> {
    /// Items left to move.
    #[doc(hidden)]
    fn remaining(&self) -> usize;

    /// Moves the first `n` items to `dst..dst + n` and forgets them here.
    ///
    /// # Safety
    /// `n <= self.remaining()`; `dst` is valid for `n` writes and does not overlap
    /// `self`.
    #[doc(hidden)]
    unsafe fn move_to(&mut self, dst: *mut T, n: usize);
}

/// Something a burst can move items into: `&mut Batch<T, N>` (appended),
/// `&mut [T]` for `T: Copy` (overwritten from the start), or
/// `&mut [MaybeUninit<T>]` (initialised from the start; the count returned
/// says how many).
///
/// # Safety
/// Implementations take ownership of exactly the items they are given.
pub unsafe trait Sink<T>: sealed::Sealed<T> {
    /// Room left.
    #[doc(hidden)]
    fn spare(&self) -> usize;

    /// Takes ownership of `src..src + n`, appending them here.
    ///
    /// # Safety
    /// `n <= self.spare()`; `src` is valid for `n` reads of initialised items
    /// that the caller gives up, and does not overlap `self`.
    #[doc(hidden)]
    unsafe fn move_from(&mut self, src: *const T, n: usize);
}

/// Copies `n` items from `src` to `dst` (a bitwise move: the callers say
/// who owns them after). Bursts are short (32 is DPDK's `MAX_PKT_BURST`),
/// and for a few hundred bytes a call to `memcpy`, which
/// `copy_nonoverlapping` of a run-time length becomes, costs as much as the
/// copy itself. Short runs are therefore copied as a sum of fixed-size
/// copies (up to four runs of 16 items, then 8, 4, 2, 1), each of which
/// the compiler turns into plain moves, with no loop left for it to turn
/// back into a `memcpy` call (rte_ring unrolls its copy for the same
/// reason, `__rte_ring_enqueue_elems_64`).
///
/// # Safety
/// As `copy_nonoverlapping`: `src` valid for `n` reads, `dst` for `n`
/// writes, not overlapping.
#[inline(always)]
unsafe fn copy_items<T>(src: *const T, dst: *mut T, n: usize) {
    /// Above this many bytes, `memcpy`'s wide moves win over inline ones.
    const INLINE_MAX_BYTES: usize = 512;
    if n > 64 || n * size_of::<T>() > INLINE_MAX_BYTES {
        // SAFETY: forwarded from the caller.
        unsafe { core::ptr::copy_nonoverlapping(src, dst, n) };
        return;
    }
    // Whole runs of 16 first (128 bytes of pointers: eight SSE moves; a
    // fixed 256-byte copy would be a `memcpy` call again), then the bits
    // of the rest.
    for k in 1..=4 {
        if n >= 16 * k {
            let at = 16 * (k - 1);
            // SAFETY: `at + 16 <= n`.
            unsafe {
                core::ptr::copy_nonoverlapping(src.wrapping_add(at), dst.wrapping_add(at), 16)
            };
        }
    }
    let mut done = n & !15;
    for k in [8, 4, 2, 1] {
        if n & k != 0 {
            // SAFETY: `done` counts the items copied so far, and the bits
            // of `n` below 16 not yet taken sum to at least `k`, so
            // `done + k <= n`.
            unsafe {
                core::ptr::copy_nonoverlapping(src.wrapping_add(done), dst.wrapping_add(done), k)
            };
            done += k;
        }
    }
}

impl<T, const N: usize> sealed::Sealed<T> for &mut Batch<T, N> {}

// SAFETY: moves from the live front of the batch and advances past them.
unsafe impl<T, const N: usize> Source<T> for &mut Batch<T, N> {
    #[inline(always)]
    fn remaining(&self) -> usize {
        Batch::len(self)
    }

    #[inline(always)]
    unsafe fn move_to(&mut self, dst: *mut T, n: usize) {
        debug_assert!(n <= Batch::len(self));
        // SAFETY: the caller guarantees `n` live items and a disjoint `dst`.
        unsafe { copy_items(self.front_ptr(), dst, n) };
        // SAFETY: those `n` items were moved out just above.
        unsafe { self.forget_front(n) };
    }
}

// SAFETY: appends at the live back of the batch, after making room.
unsafe impl<T, const N: usize> Sink<T> for &mut Batch<T, N> {
    #[inline(always)]
    fn spare(&self) -> usize {
        Batch::spare(self)
    }

    #[inline(always)]
    unsafe fn move_from(&mut self, src: *const T, n: usize) {
        let dst = self.back_ptr_for(n);
        // SAFETY: `back_ptr_for` made room for `n` items at `dst`; the caller
        // guarantees `src` holds `n` items it gives up.
        unsafe { copy_items(src, dst, n) };
        // SAFETY: the `n` slots after the live items were just initialised.
        unsafe { self.assume_pushed(n) };
    }
}

/// A batch whose room is capped: a burst into it moves at most `max`
/// items (a port's burst size into a larger batch) with the same bulk copy
/// as the batch itself. Made by [`Batch::up_to`].
#[derive(Debug)]
pub struct UpTo<'a, T, const N: usize> {
    batch: &'a mut Batch<T, N>,
    max: usize,
}

impl<T, const N: usize> Batch<T, N> {
    /// This batch as a [`Sink`] that takes at most `max` items.
    ///
    /// ```
    /// use dataplane::ring::{self, Batch};
    /// let (mut tx, mut rx) = ring::spsc::<u32>(8)?;
    /// assert_eq!(tx.push_burst(&[1, 2, 3, 4][..]), 4);
    /// let mut got = Batch::<u32, 8>::new();
    /// assert_eq!(rx.pop_burst(got.up_to(3)), 3);
    /// assert_eq!(&got[..], &[1, 2, 3]);
    /// # Ok::<(), dataplane::Error>(())
    /// ```
    #[inline(always)]
    pub fn up_to(&mut self, max: usize) -> UpTo<'_, T, N> {
        UpTo { batch: self, max }
    }
}

impl<T, const N: usize> sealed::Sealed<T> for UpTo<'_, T, N> {}

// SAFETY: forwards to the batch's own sink, asked for no more than its
// room (and the cap).
unsafe impl<T, const N: usize> Sink<T> for UpTo<'_, T, N> {
    #[inline(always)]
    fn spare(&self) -> usize {
        self.batch.spare().min(self.max)
    }

    #[inline(always)]
    unsafe fn move_from(&mut self, src: *const T, n: usize) {
        debug_assert!(n <= self.spare());
        self.max -= n;
        // SAFETY: `n <= spare() <= the batch's spare`; the caller's
        // guarantees on `src` are forwarded.
        unsafe { (&mut *self.batch).move_from(src, n) };
    }
}

impl<T: Copy> sealed::Sealed<T> for &[T] {}

// SAFETY: `T: Copy`, so copying out leaves the source valid; we advance past.
unsafe impl<'a, T: Copy> Source<T> for &'a [T] {
    #[inline(always)]
    fn remaining(&self) -> usize {
        <[T]>::len(self)
    }

    #[inline(always)]
    unsafe fn move_to(&mut self, dst: *mut T, n: usize) {
        debug_assert!(n <= <[T]>::len(self));
        // SAFETY: the caller guarantees `n <= len` and a disjoint `dst`.
        unsafe { copy_items(self.as_ptr(), dst, n) };
        let rest: &'a [T] = self;
        *self = &rest[n..];
    }
}

impl<T: Copy> sealed::Sealed<T> for &mut [T] {}

// SAFETY: `T: Copy` has no drop, so overwriting initialised items is fine.
unsafe impl<T: Copy> Sink<T> for &mut [T] {
    #[inline(always)]
    fn spare(&self) -> usize {
        <[T]>::len(self)
    }

    #[inline(always)]
    unsafe fn move_from(&mut self, src: *const T, n: usize) {
        debug_assert!(n <= <[T]>::len(self));
        // SAFETY: the caller guarantees `n <= len` and a disjoint `src`.
        unsafe { copy_items(src, self.as_mut_ptr(), n) };
        let rest = core::mem::take(self);
        *self = &mut rest[n..];
    }
}

impl<T> sealed::Sealed<T> for &mut [MaybeUninit<T>] {}

// SAFETY: writes into uninitialised memory from the start and advances.
unsafe impl<T> Sink<T> for &mut [MaybeUninit<T>] {
    #[inline(always)]
    fn spare(&self) -> usize {
        <[MaybeUninit<T>]>::len(self)
    }

    #[inline(always)]
    unsafe fn move_from(&mut self, src: *const T, n: usize) {
        debug_assert!(n <= <[MaybeUninit<T>]>::len(self));
        // SAFETY: the caller guarantees `n <= len` and a disjoint `src`.
        unsafe { copy_items(src, self.as_mut_ptr().cast::<T>(), n) };
        let rest = core::mem::take(self);
        *self = &mut rest[n..];
    }
}
