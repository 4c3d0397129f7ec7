//! The zero-copy chunk API of single-producer, single-consumer rings: the
//! slots themselves, as two slices around the wrap point, written or read in
//! place and then committed with one tail store.

use core::mem::MaybeUninit;
use core::ptr;

use super::core::{Shared, Want};
use super::{Consumer, Producer, Single};

/// A chunk of the requested size is not available; nothing was reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkError {
    /// Fewer free slots (writing) or items (reading) than requested.
    #[error("chunk of {requested} refused: only {available} available")]
    TooFewSlots {
        /// The requested chunk size.
        requested: usize,
        /// What was available.
        available: usize,
    },
}

impl<T> Producer<T, Single> {
    /// Free slots, refreshing the cached view of the consumer.
    pub fn slots(&mut self) -> usize {
        self.shared
            .sp_reserve(&mut self.local, Want::UpTo(usize::MAX))
    }

    /// Reserves `n` free slots to be written in place. Nothing is visible to
    /// the consumer until the chunk is committed; a chunk dropped without a
    /// commit gives its slots back (anything written in them is leaked, not
    /// dropped).
    ///
    /// ```
    /// let (mut tx, mut rx) = dataplane::ring::spsc::<u64>(8)?;
    /// let chunk = tx.write_chunk_uninit(5).expect("room");
    /// assert_eq!(chunk.fill_from_iter(10..), 5);
    /// assert_eq!(rx.pop(), Some(10));
    /// # Ok::<(), dataplane::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`ChunkError::TooFewSlots`] when fewer than `n` slots are free.
    pub fn write_chunk_uninit(&mut self, n: usize) -> Result<WriteChunkUninit<'_, T>, ChunkError> {
        let got = self.shared.sp_reserve(&mut self.local, Want::Exactly(n));
        if got != n {
            let available = self.local.limit.wrapping_sub(self.local.pos);
            return Err(ChunkError::TooFewSlots {
                requested: n,
                available,
            });
        }
        Ok(WriteChunkUninit {
            producer: self,
            len: n,
        })
    }
}

/// `len` reserved, uninitialised slots of a single-producer ring.
#[derive(Debug)]
pub struct WriteChunkUninit<'a, T> {
    producer: &'a mut Producer<T, Single>,
    len: usize,
}

impl<T> WriteChunkUninit<'_, T> {
    /// Slots in the chunk.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the chunk has no slots.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The slots, in ring order: the part before the wrap point, then the
    /// part after it (empty when the chunk does not wrap).
    pub fn as_mut_slices(&mut self) -> (&mut [MaybeUninit<T>], &mut [MaybeUninit<T>]) {
        let shared = &self.producer.shared;
        let idx = self.producer.local.pos & (shared.capacity() - 1);
        let first = self.len.min(shared.capacity() - idx);
        let base = shared.slot_base().cast::<MaybeUninit<T>>();
        // The two ranges are in bounds and disjoint (as in
        // `Shared::write_slots`), reserved to this producer, and never read
        // by the consumer before the commit publishes them; `&mut self` keeps
        // them unique while borrowed.
        // SAFETY: the part before the wrap point, as above.
        let a = unsafe { core::slice::from_raw_parts_mut(base.wrapping_add(idx), first) };
        // SAFETY: the part after it, as above.
        let b = unsafe { core::slice::from_raw_parts_mut(base, self.len - first) };
        (a, b)
    }

    /// Publishes the first `n` slots of the chunk.
    ///
    /// # Safety
    /// The first `n` slots (in ring order) have been initialised, and
    /// `n <= len()`.
    pub unsafe fn commit(self, n: usize) {
        debug_assert!(n <= self.len);
        let p = self.producer;
        let pos = p.local.pos;
        p.local.pos = pos.wrapping_add(n);
        // SAFETY: `pos..pos + n` were reserved by this chunk and the caller
        // has written them.
        unsafe { p.shared.publish_sp_slots(pos, n) };
    }

    /// Publishes every slot of the chunk.
    ///
    /// # Safety
    /// Every slot of the chunk has been initialised.
    pub unsafe fn commit_all(self) {
        let n = self.len;
        // SAFETY: forwarded to the caller.
        unsafe { self.commit(n) }
    }

    /// Moves items from `iter` into the chunk's slots, in order, until the
    /// chunk or the iterator ends, and publishes them; returns how many.
    /// (If the iterator panics, what it had yielded is leaked, not
    /// published.)
    pub fn fill_from_iter<I: IntoIterator<Item = T>>(mut self, iter: I) -> usize {
        let mut iter = iter.into_iter();
        let mut n = 0;
        let (a, b) = self.as_mut_slices();
        for slot in a.iter_mut().chain(b.iter_mut()) {
            let Some(item) = iter.next() else { break };
            slot.write(item);
            n += 1;
        }
        // SAFETY: exactly the first `n` slots were written just above.
        unsafe { self.commit(n) };
        n
    }
}

impl<T> Consumer<T, Single> {
    /// Items available, refreshing the cached view of the producer.
    pub fn slots(&mut self) -> usize {
        self.shared
            .sc_reserve(&mut self.local, Want::UpTo(usize::MAX))
    }

    /// Borrows the next `n` items in place. They stay in the ring until the
    /// chunk is committed (which drops them and frees their slots) or moved
    /// out with `into_iter`.
    ///
    /// # Errors
    /// [`ChunkError::TooFewSlots`] when fewer than `n` items are available.
    pub fn read_chunk(&mut self, n: usize) -> Result<ReadChunk<'_, T>, ChunkError> {
        let got = self.shared.sc_reserve(&mut self.local, Want::Exactly(n));
        if got != n {
            let available = self.local.limit.wrapping_sub(self.local.pos);
            return Err(ChunkError::TooFewSlots {
                requested: n,
                available,
            });
        }
        // A multi-producer ring keeps runs of one beside their stamps:
        // bring them into the slots that the chunk lends out.
        // SAFETY: `pos..pos + n` were just reserved to this consumer.
        unsafe { self.shared.gather_runs_of_one(self.local.pos, n) };
        Ok(ReadChunk {
            consumer: self,
            len: n,
        })
    }
}

/// `len` published items of a single-consumer ring, borrowed in place.
#[derive(Debug)]
pub struct ReadChunk<'a, T> {
    consumer: &'a mut Consumer<T, Single>,
    len: usize,
}

/// Publishes the consumer position on drop, so that a panicking `T::drop`
/// during a commit cannot leave dropped items inside the ring.
struct PublishOnDrop<'a, T> {
    consumer: &'a mut Consumer<T, Single>,
    n: usize,
}

impl<T> Drop for PublishOnDrop<'_, T> {
    fn drop(&mut self) {
        let c = &mut *self.consumer;
        c.local.pos = c.local.pos.wrapping_add(self.n);
        Shared::<T>::publish_single(&c.shared.cons, c.local.pos);
    }
}

impl<T> ReadChunk<'_, T> {
    /// Items in the chunk.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the chunk has no items.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn raw_parts(&self) -> (*mut T, usize, *mut T, usize) {
        let shared = &self.consumer.shared;
        let idx = self.consumer.local.pos & (shared.capacity() - 1);
        let first = self.len.min(shared.capacity() - idx);
        let base = shared.slot_base();
        (base.wrapping_add(idx), first, base, self.len - first)
    }

    /// The items, in ring order: before the wrap point, then after it.
    pub fn as_slices(&self) -> (&[T], &[T]) {
        let (a, an, b, bn) = self.raw_parts();
        // The ranges are in bounds, disjoint, hold published items, and the
        // producer does not reuse them before we publish.
        // SAFETY: the part before the wrap point, as above.
        let first = unsafe { core::slice::from_raw_parts(a, an) };
        // SAFETY: the part after it, as above.
        let second = unsafe { core::slice::from_raw_parts(b, bn) };
        (first, second)
    }

    /// The items, mutably, in ring order.
    pub fn as_mut_slices(&mut self) -> (&mut [T], &mut [T]) {
        let (a, an, b, bn) = self.raw_parts();
        // As in `as_slices`; `&mut self` makes the borrow unique.
        // SAFETY: the part before the wrap point, as above.
        let first = unsafe { core::slice::from_raw_parts_mut(a, an) };
        // SAFETY: the part after it, as above.
        let second = unsafe { core::slice::from_raw_parts_mut(b, bn) };
        (first, second)
    }

    /// Drops the first `n` items (at most `len()`) and frees their slots.
    pub fn commit(self, n: usize) {
        let n = n.min(self.len);
        let (a, an, b, bn) = self.raw_parts();
        let guard = PublishOnDrop {
            consumer: self.consumer,
            n,
        };
        let first = n.min(an);
        // The first `n` items are initialised and ours; the guard publishes
        // past them even if a drop panics, so none is dropped twice.
        // SAFETY: the part before the wrap point, as above.
        unsafe { ptr::drop_in_place(ptr::slice_from_raw_parts_mut(a, first)) };
        // SAFETY: the part after it, as above.
        unsafe { ptr::drop_in_place(ptr::slice_from_raw_parts_mut(b, (n - first).min(bn))) };
        drop(guard);
    }

    /// Drops every item of the chunk and frees their slots.
    pub fn commit_all(self) {
        let n = self.len;
        self.commit(n);
    }
}

impl<'a, T> IntoIterator for ReadChunk<'a, T> {
    type Item = T;
    type IntoIter = ReadChunkIntoIter<'a, T>;

    /// Moves the items out one by one; when the iterator is dropped, the
    /// items it yielded are freed from the ring and the rest stay.
    fn into_iter(self) -> ReadChunkIntoIter<'a, T> {
        let (a, an, b, bn) = self.raw_parts();
        ReadChunkIntoIter {
            guard: PublishOnDrop {
                consumer: self.consumer,
                n: 0,
            },
            a,
            an,
            b,
            bn,
        }
    }
}

/// Moves a [`ReadChunk`]'s items out, in order.
pub struct ReadChunkIntoIter<'a, T> {
    guard: PublishOnDrop<'a, T>,
    a: *mut T,
    an: usize,
    b: *mut T,
    bn: usize,
}

impl<T> Iterator for ReadChunkIntoIter<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        let i = self.guard.n;
        let p = if i < self.an {
            self.a.wrapping_add(i)
        } else if i - self.an < self.bn {
            self.b.wrapping_add(i - self.an)
        } else {
            return None;
        };
        self.guard.n += 1;
        // SAFETY: an initialised item we own; counting it in `n` means the
        // guard frees its slot and nobody reads it again.
        Some(unsafe { p.read() })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.an + self.bn - self.guard.n;
        (left, Some(left))
    }
}

impl<T> ExactSizeIterator for ReadChunkIntoIter<'_, T> {}

impl<T> core::fmt::Debug for ReadChunkIntoIter<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ReadChunkIntoIter")
            .field("yielded", &self.guard.n)
            .finish()
    }
}
