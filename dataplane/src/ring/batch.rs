//! [`Batch`]: a burst of items in a fixed inline array, the Rust form of
//! DPDK's `struct rte_mbuf *pkts[MAX_PKT_BURST]` plus its count.

use core::fmt;
use core::mem::MaybeUninit;
use core::ops::{Deref, DerefMut};

/// Up to `N` items, inline, in order. Bursts move items out of its front and
/// append to its back, so a partly sent batch keeps the unsent items, in
/// order, without shifting them (the live items are `items[head..tail]`;
/// room at the back is made by sliding them down only when needed).
///
/// ```
/// use dataplane::ring::{self, Batch};
///
/// let (mut tx, mut rx) = ring::spsc::<u32>(4)?;
/// let mut out = Batch::<u32, 8>::new();
/// out.fill_from(&mut (0..6));
/// assert_eq!(tx.push_burst(&mut out), 4); // the ring holds 4
/// assert_eq!(&out[..], &[4, 5]);         // the rest stay with the caller
///
/// let mut got = Batch::<u32, 8>::new();
/// assert_eq!(rx.pop_burst(&mut got), 4);
/// assert_eq!(&got[..], &[0, 1, 2, 3]);
/// # Ok::<(), dataplane::Error>(())
/// ```
pub struct Batch<T, const N: usize> {
    head: usize,
    tail: usize,
    items: [MaybeUninit<T>; N],
}

impl<T, const N: usize> Batch<T, N> {
    /// An empty batch.
    #[inline]
    pub const fn new() -> Self {
        Batch {
            head: 0,
            tail: 0,
            items: [const { MaybeUninit::uninit() }; N],
        }
    }

    /// Items held.
    #[inline(always)]
    pub const fn len(&self) -> usize {
        self.tail - self.head
    }

    /// Whether no items are held.
    #[inline(always)]
    pub const fn is_empty(&self) -> bool {
        self.tail == self.head
    }

    /// Whether `N` items are held.
    #[inline(always)]
    pub const fn is_full(&self) -> bool {
        self.len() == N
    }

    /// `N`.
    #[inline(always)]
    pub const fn capacity(&self) -> usize {
        N
    }

    /// Room left: `N - len()`.
    #[inline(always)]
    pub const fn spare(&self) -> usize {
        N - self.len()
    }

    /// Appends `value`, or hands it back when the batch is full.
    #[inline]
    pub fn push(&mut self, value: T) -> Result<(), T> {
        if self.is_full() {
            return Err(value);
        }
        let dst = self.back_ptr_for(1);
        // SAFETY: `back_ptr_for(1)` made room for one item at `dst`.
        unsafe { dst.write(value) };
        self.tail += 1;
        Ok(())
    }

    /// Removes and returns the first item.
    #[inline]
    pub fn pop_front(&mut self) -> Option<T> {
        if self.is_empty() {
            return None;
        }
        // SAFETY: `head < tail`, so `items[head]` is live; advancing `head`
        // below forgets it here.
        let value = unsafe { self.items[self.head].assume_init_read() };
        self.head += 1;
        if self.head == self.tail {
            self.head = 0;
            self.tail = 0;
        }
        Some(value)
    }

    /// Removes and returns the last item.
    #[inline]
    pub fn pop(&mut self) -> Option<T> {
        if self.is_empty() {
            return None;
        }
        self.tail -= 1;
        // SAFETY: `items[tail]` was the last live item; `tail` no longer
        // covers it.
        let value = unsafe { self.items[self.tail].assume_init_read() };
        if self.head == self.tail {
            self.head = 0;
            self.tail = 0;
        }
        Some(value)
    }

    /// Drops every item.
    pub fn clear(&mut self) {
        let live: *mut [T] = self.as_mut_slice();
        self.head = 0;
        self.tail = 0;
        // SAFETY: `live` covered the live items, which the reset positions
        // no longer cover, so each is dropped exactly once (even if a drop
        // panics, the batch already forgot them).
        unsafe { core::ptr::drop_in_place(live) };
    }

    /// The items as a slice.
    #[inline(always)]
    pub fn as_slice(&self) -> &[T] {
        let live: *const [MaybeUninit<T>] = &self.items[self.head..self.tail];
        // SAFETY: `items[head..tail]` are initialised, and `MaybeUninit<T>`
        // has the layout of `T`.
        unsafe { &*(live as *const [T]) }
    }

    /// The items as a mutable slice.
    #[inline(always)]
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        let live: *mut [MaybeUninit<T>] = &mut self.items[self.head..self.tail];
        // SAFETY: `items[head..tail]` are initialised, and `MaybeUninit<T>`
        // has the layout of `T`.
        unsafe { &mut *(live as *mut [T]) }
    }

    /// Moves items from `iter` into the batch until it is full or the
    /// iterator ends; returns how many were taken. An item is pulled from
    /// the iterator only when there is room for it, so nothing is lost.
    pub fn fill_from<I: Iterator<Item = T>>(&mut self, iter: &mut I) -> usize {
        let room = self.spare();
        if room == 0 {
            return 0;
        }
        // Make the room contiguous once, then write straight into it
        // (rather than `push`, which checks and maybe slides per item),
        // counting in a register: the guard adds the count to `tail` when
        // the loop ends, or when `next` panics, so every written item is
        // owned (and later dropped) by the batch either way.
        let dst = self.back_ptr_for(room);
        let mut written = Written {
            tail: &mut self.tail,
            n: 0,
        };
        while written.n < room {
            let Some(item) = iter.next() else { break };
            // SAFETY: `n < room`, and `back_ptr_for(room)` made room for
            // `room` items at `dst`.
            unsafe { dst.wrapping_add(written.n).write(item) };
            written.n += 1;
        }
        written.n
    }

    /// Moves items from the front of `other` to the back of this batch, as
    /// many as fit, in order (a pointer copy, not a move per item); returns
    /// how many. What does not fit stays in `other`.
    pub fn append<const M: usize>(&mut self, other: &mut Batch<T, M>) -> usize {
        let n = self.spare().min(other.len());
        if n == 0 {
            return 0;
        }
        let dst = self.back_ptr_for(n);
        // A pointer from the whole array, not from one element: the copy
        // reads `n` elements past it.
        let src = other.items[other.head..other.head + n].as_ptr();
        // Advancing `other.head` below hands the copied items' ownership to
        // `self`: each is owned by exactly one batch.
        // SAFETY: other.items[head..head + n] are live (n <= other.len()),
        // `dst` has room for n (back_ptr_for), and two batches never overlap.
        unsafe { core::ptr::copy_nonoverlapping(src.cast::<T>(), dst, n) };
        self.tail += n;
        other.head += n;
        if other.head == other.tail {
            other.head = 0;
            other.tail = 0;
        }
        n
    }

    /// Moves every item out, front first. Items the iterator has not yielded
    /// when it is dropped are dropped with it.
    pub fn drain(&mut self) -> Drain<'_, T, N> {
        Drain { batch: self }
    }

    /// Keeps the items for which `keep` returns true, in order, and hands
    /// each removed item to `removed` (so that nothing is dropped silently:
    /// a caller can count or free them).
    pub fn retain_or(&mut self, mut keep: impl FnMut(&mut T) -> bool, mut removed: impl FnMut(T)) {
        let mut kept = Batch::<T, N>::new();
        while let Some(mut item) = self.pop_front() {
            if keep(&mut item) {
                // Cannot fail: `kept` holds at most what `self` held.
                if let Err(item) = kept.push(item) {
                    removed(item);
                }
            } else {
                removed(item);
            }
        }
        *self = kept;
    }

    // ---- raw access for `transfer` ----

    #[inline(always)]
    pub(crate) fn front_ptr(&self) -> *const T {
        // SAFETY: `head <= N`, one past the end at most.
        unsafe { self.items.as_ptr().add(self.head).cast::<T>() }
    }

    /// Forgets the first `n` items, which the caller moved out.
    ///
    /// # Safety
    /// `n <= len()` and those items were moved out.
    #[inline(always)]
    pub(crate) unsafe fn forget_front(&mut self, n: usize) {
        debug_assert!(n <= self.len());
        self.head += n;
        if self.head == self.tail {
            self.head = 0;
            self.tail = 0;
        }
    }

    /// A pointer to room for `n` items after the live ones, sliding the
    /// live items to the front first if the room is split.
    #[inline(always)]
    pub(crate) fn back_ptr_for(&mut self, n: usize) -> *mut T {
        debug_assert!(n <= self.spare());
        if self.tail + n > N {
            let len = self.len();
            let base = self.items.as_mut_ptr();
            let live = base.wrapping_add(self.head);
            // SAFETY: moves the `len` live items, which start at `live`
            // (in bounds), to the start; `copy` allows the overlap.
            unsafe { core::ptr::copy(live, base, len) };
            self.head = 0;
            self.tail = len;
        }
        // SAFETY: `tail + n <= N` now.
        unsafe { self.items.as_mut_ptr().add(self.tail).cast::<T>() }
    }

    /// Counts `n` items written after the live ones as live.
    ///
    /// # Safety
    /// The caller initialised them through `back_ptr_for(n)`.
    #[inline(always)]
    pub(crate) unsafe fn assume_pushed(&mut self, n: usize) {
        debug_assert!(self.tail + n <= N);
        self.tail += n;
    }
}

/// Adds the items written by `fill_from` to the batch's `tail` on drop.
struct Written<'a> {
    tail: &'a mut usize,
    n: usize,
}

impl Drop for Written<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        *self.tail += self.n;
    }
}

impl<T, const N: usize> Default for Batch<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T, const N: usize> Drop for Batch<T, N> {
    fn drop(&mut self) {
        self.clear();
    }
}

impl<T, const N: usize> Deref for Batch<T, N> {
    type Target = [T];
    #[inline(always)]
    fn deref(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T, const N: usize> DerefMut for Batch<T, N> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut [T] {
        self.as_mut_slice()
    }
}

impl<T: fmt::Debug, const N: usize> fmt::Debug for Batch<T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl<T: Clone, const N: usize> Clone for Batch<T, N> {
    fn clone(&self) -> Self {
        let mut out = Batch::new();
        for item in self.as_slice() {
            // Cannot fail: same capacity.
            let _ = out.push(item.clone());
        }
        out
    }
}

/// Moves the items out, front first.
#[derive(Debug)]
pub struct Drain<'a, T, const N: usize> {
    batch: &'a mut Batch<T, N>,
}

impl<T, const N: usize> Iterator for Drain<'_, T, N> {
    type Item = T;
    #[inline]
    fn next(&mut self) -> Option<T> {
        self.batch.pop_front()
    }
    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.batch.len(), Some(self.batch.len()))
    }
}

impl<T, const N: usize> ExactSizeIterator for Drain<'_, T, N> {}

impl<T, const N: usize> Drop for Drain<'_, T, N> {
    fn drop(&mut self) {
        self.batch.clear();
    }
}

/// Moves the items out by value.
#[derive(Debug)]
pub struct IntoIter<T, const N: usize> {
    batch: Batch<T, N>,
}

impl<T, const N: usize> Iterator for IntoIter<T, N> {
    type Item = T;
    #[inline]
    fn next(&mut self) -> Option<T> {
        self.batch.pop_front()
    }
    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.batch.len(), Some(self.batch.len()))
    }
}

impl<T, const N: usize> ExactSizeIterator for IntoIter<T, N> {}

impl<T, const N: usize> IntoIterator for Batch<T, N> {
    type Item = T;
    type IntoIter = IntoIter<T, N>;
    fn into_iter(self) -> IntoIter<T, N> {
        IntoIter { batch: self }
    }
}

impl<'a, T, const N: usize> IntoIterator for &'a Batch<T, N> {
    type Item = &'a T;
    type IntoIter = core::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.as_slice().iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn push_pop_and_compaction() {
        let mut b = Batch::<u32, 4>::new();
        for i in 0..4 {
            b.push(i).unwrap();
        }
        assert_eq!(b.push(9), Err(9));
        assert_eq!(b.pop_front(), Some(0));
        assert_eq!(b.pop_front(), Some(1));
        // Room is at the front now; pushing slides the live items down.
        b.push(4).unwrap();
        b.push(5).unwrap();
        assert_eq!(&b[..], &[2, 3, 4, 5]);
        assert_eq!(b.pop(), Some(5));
        assert_eq!(b.len(), 3);
    }

    #[test]
    fn drops_exactly_once() {
        let token = Rc::new(());
        {
            let mut b = Batch::<Rc<()>, 8>::new();
            for _ in 0..8 {
                b.push(token.clone()).unwrap();
            }
            drop(b.pop_front());
            let mut d = b.drain();
            drop(d.next());
            drop(d); // drops the 6 left
            assert!(b.is_empty());
            for _ in 0..3 {
                b.push(token.clone()).unwrap();
            }
            let it = b.clone().into_iter();
            drop(it);
        }
        assert_eq!(Rc::strong_count(&token), 1);
    }

    #[test]
    fn append_moves_what_fits_and_owns_it_once() {
        let token = Rc::new(());
        let mut a = Batch::<Rc<()>, 4>::new();
        let mut b = Batch::<Rc<()>, 8>::new();
        for _ in 0..6 {
            b.push(token.clone()).unwrap();
        }
        a.push(token.clone()).unwrap();
        // Room split in `a` after a pop: append slides, then takes 3.
        drop(a.pop_front());
        a.push(token.clone()).unwrap();
        assert_eq!(a.append(&mut b), 3);
        assert_eq!((a.len(), b.len()), (4, 3));
        assert_eq!(a.append(&mut b), 0, "a is full");
        a.clear();
        assert_eq!(a.append(&mut b), 3);
        assert!(b.is_empty());
        assert_eq!(Rc::strong_count(&token), 4);
        drop(a);
        drop(b);
        assert_eq!(Rc::strong_count(&token), 1);

        let mut x = Batch::<u32, 8>::new();
        let mut y = Batch::<u32, 8>::new();
        x.fill_from(&mut (0..3));
        y.fill_from(&mut (3..8));
        assert_eq!(x.append(&mut y), 5);
        assert_eq!(&x[..], &[0, 1, 2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn fill_from_slides_and_survives_a_panicking_iterator() {
        // Room split between front and back: the live items slide down.
        let mut b = Batch::<u32, 8>::new();
        assert_eq!(b.fill_from(&mut (0..6)), 6);
        assert_eq!(b.pop_front(), Some(0));
        assert_eq!(b.pop_front(), Some(1));
        assert_eq!(b.fill_from(&mut (6..100)), 4);
        assert_eq!(&b[..], &[2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(b.fill_from(&mut (0..100)), 0);

        // An iterator that panics part way: what it yielded is in the
        // batch and dropped exactly once with it.
        let token = Rc::new(());
        let mut b = Batch::<Rc<()>, 8>::new();
        let mut n = 0;
        let mut it = std::iter::from_fn(|| {
            n += 1;
            assert!(n <= 3, "iterator failure");
            Some(token.clone())
        });
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| b.fill_from(&mut it)));
        assert!(r.is_err());
        assert_eq!(b.len(), 3);
        drop(b);
        assert_eq!(Rc::strong_count(&token), 1);
    }

    #[test]
    fn retain_or_hands_back_removed() {
        let mut b = Batch::<u32, 8>::new();
        assert_eq!(b.fill_from(&mut (0..100)), 8);
        let mut removed = Vec::new();
        b.retain_or(|x| *x % 2 == 0, |x| removed.push(x));
        assert_eq!(&b[..], &[0, 2, 4, 6]);
        assert_eq!(removed, vec![1, 3, 5, 7]);
    }
}
