//! The shared store of a mempool: a bounded multi-producer multi-consumer
//! ring of object pointers, in the style of DPDK's `rte_ring` in its
//! default MP/MC mode (lib/ring/rte_ring_c11_pvt.h), which is also
//! `rte_mempool`'s default store (the `ring_mp_mc` handler). The ring is
//! generic over its entries ([`Entry`]); the pool stores the objects' pointers,
//! as `rte_mempool` does, so that a get copies them out unchanged and a put
//! only checks them (the tests store `u32`s).
//!
//! # Layout
//!
//! Positions are free-running `usize` counters (wrapping arithmetic
//! throughout); a position's slot is `pos & mask`. Each side has a `head`,
//! the next position a thread of that side may reserve, and a `tail`,
//! everything before which that side has finished with:
//!
//! ```text
//!     cons.tail     cons.head          prod.tail     prod.head
//!         | being read  |   ready to get     | being written |  free ...
//! ```
//!
//! `prod` (head and tail) is on one cache line and `cons` on another, as
//! in `struct rte_ring`: a thread using the store alone keeps both lines in
//! its cache. The slots are a separate array of `capacity` plain `T`
//! cells, the capacity being the smallest power of two that holds every
//! object of the pool.
//!
//! # Get and put
//!
//! - **get `n`** (all or nothing): read `cons.head`, read `prod.tail`; if
//!   fewer than `n` positions lie between them, fail at once, having taken
//!   nothing; otherwise CAS `cons.head` forward by `n` (on failure, retry
//!   with the head it returned). The positions `head..head + n` are now this
//!   thread's: copy their slots out, wait until `cons.tail` reaches `head`
//!   (the gets that reserved before this one have finished reading), and
//!   store `cons.tail = head + n`.
//! - **put `n`**: read `prod.head`, read `cons.tail`, CAS `prod.head`
//!   forward by `n`, write the slots, wait until `prod.tail` reaches `head`,
//!   store `prod.tail = head + n`.
//!
//! A put never finds the ring full. Every object appears at most once in
//! the positions `cons.tail..prod.head`: an object at a position at or past
//! `cons.tail` has not been handed to anyone since it was put there (a get
//! hands its objects out only after moving `cons.tail` past them), and the
//! objects a put is writing are in its caller's hands, so they are in no
//! other position of that range. So `prod.head - cons.tail` never exceeds
//! the pool's object count, hence the capacity. A put still reads
//! `cons.tail` and checks the room, because that read is what orders the
//! previous lap's slot reads before its writes (below); it can find too
//! little room only when the value it read is stale, and then it reads
//! again. (A put of an object twice, which the mempool's contract forbids,
//! could fill the ring; the put would then wait for a get forever.)
//!
//! Uncontended, a bulk get or put is two loads, one CAS, the copy, one
//! load and one store, whatever the burst size.
//!
//! # Orderings
//!
//! - `prod.tail` store: **Release**, and the get's `prod.tail` load:
//!   **Acquire**. The slots a put wrote are visible to the get that reads
//!   them.
//! - `cons.tail` store: **Release**, and the put's `cons.tail` load:
//!   **Acquire**. A get's slot reads happen before the writes of the put
//!   that reuses the slots a lap later (without the edge the put's write
//!   could race with the read).
//! - The wait for the own side's tail: **Acquire**. The tail it waits for
//!   is a plain store by the previous thread of the same side, and a plain
//!   store does not continue a release sequence: without this Acquire, a
//!   get that acquires our `prod.tail` would synchronise with our put only,
//!   not with the earlier put whose slots it also reads (and likewise for
//!   the slot reads of earlier gets and the next put). With it the chain
//!   is transitive: every put whose tail store precedes the value a reader
//!   acquires happens before that reader.
//! - `head` loads and the CAS's failure: **Acquire**; the CAS's success:
//!   **Release**. A thread that reads a head another thread installed then
//!   reads the other side's tail at least as new as the one that thread
//!   read before installing it (read-read coherence through the
//!   happens-before edge), so `prod.tail - cons.head` (get) and
//!   `cons.tail + capacity - prod.head` (put) never go below zero.
//!   Without it a stale tail under a newer head wraps to a huge count and
//!   the CAS would reserve slots nobody published: rte_ring puts an
//!   acquire fence after its head load for the same reason ("ensure the
//!   head is read before tail").
//! - [`Ring::len`] reads `cons.head` then `prod.tail`, both **Acquire**:
//!   by the same argument the difference is never negative, and the count
//!   includes exactly the puts whose tail stores it acquired (the pool's
//!   drop relies on that, see mempool).
//!
//! On x86-64 every one of these is a plain `mov` or the `lock cmpxchg`
//! that the CAS is anyway.
//!
//! The loom models (`ring/loom_tests.rs`, and the mempool's) fail when the
//! `prod.tail` Acquire or the tail wait's Acquire is weakened to Relaxed
//! (loom reports the slot cell accessed without ordering). The head
//! orderings rest on the argument above: weakened, the models still pass,
//! as loom does not produce the stale tail read they rule out.
//!
//! # Preemption
//!
//! This ring is not lock-free, like `rte_ring` in its default mode: a
//! thread preempted between its head CAS and its tail store holds up every
//! thread of the same side that reserved after it (they cannot publish
//! before it), until it runs again. A preempted get stalls later gets, a
//! preempted put later puts; neither side ever waits for the other, and a
//! get that finds too few objects still fails at once. The waiters spin
//! with `pause` for [`PUBLISH_SPINS`] rounds, then yield their core at
//! each check, so that a preempted thread sharing their core can finish.
//! DPDK avoids the stall for preemptible threads with its RTS/HTS modes;
//! here the lcore threads, which use the store only to refill and flush
//! their caches, are pinned one per core, and the threads that use it
//! directly (those without a cache slot) are the ones that may be
//! preempted in the window, for the few nanoseconds it lasts.

use crate::sync::{AtomicUsize, Ordering, UnsafeCell, spin_loop, yield_now};
use crossbeam_utils::CachePadded;

/// Pause-spins a thread waiting for its side's tail makes before it starts
/// yielding its core: about 10 µs at one `pause` per ~40 cycles, far longer
/// than a running thread takes to copy a burst (the dataplane ring's
/// figure, `PUBLISH_SPINS` in dataplane/src/ring/core.rs).
pub(crate) const PUBLISH_SPINS: u32 = 1024;

/// One side's positions (`struct rte_ring_headtail`).
#[derive(Debug)]
struct HeadTail {
    /// The next position a thread of this side may reserve.
    head: AtomicUsize,
    /// Every position before it is finished with by this side.
    tail: AtomicUsize,
}

impl HeadTail {
    fn at(pos: usize) -> Self {
        HeadTail {
            head: AtomicUsize::new(pos),
            tail: AtomicUsize::new(pos),
        }
    }

    /// Waits until the threads of this side that reserved before `old`
    /// have published, then publishes `old..new`.
    #[inline]
    fn publish(&self, old: usize, new: usize) {
        let mut spins = 0u32;
        // Acquire: module docs (the chain through the previous thread).
        while self.tail.load(Ordering::Acquire) != old {
            if spins < PUBLISH_SPINS {
                spins += 1;
                spin_loop();
            } else {
                yield_now();
            }
        }
        // Release: the slot accesses before it happen before the other
        // side's Acquire load of this tail.
        self.tail.store(new, Ordering::Release);
    }
}

/// A bounded MP/MC ring of `T`s (object pointers in a pool); see the
/// module docs.
pub(crate) struct Ring<T: Entry = u32> {
    prod: CachePadded<HeadTail>,
    cons: CachePadded<HeadTail>,
    /// `capacity - 1`.
    mask: usize,
    /// `capacity` cells. A cell is written only by the put that reserved
    /// its position and read only by the get that reserved it after that
    /// put published (module docs).
    slots: Box<[UnsafeCell<T>]>,
}

/// What the ring may hold: plain values that may move from the thread that
/// puts them to the thread that gets them. Object indices are integers; an
/// object pointer stands for an object the pool hands to one owner at a
/// time, and whoever holds it may use the object from any thread (the
/// mempool's contract), though a raw pointer is not `Send` itself.
pub(crate) trait Entry: Copy {}
impl Entry for u32 {}
impl Entry for *mut u8 {}

// Every access to a cell is ordered by the head reservations and tail
// publications described in the module docs; everything else is atomics or
// immutable.
// SAFETY: the cells hold `Entry` values, which may move between threads.
unsafe impl<T: Entry> Sync for Ring<T> {}
// SAFETY: the ring owns its cells, which hold `Entry` values (as above).
unsafe impl<T: Entry> Send for Ring<T> {}

impl<T: Entry> std::fmt::Debug for Ring<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .finish()
    }
}

#[cfg(test)]
impl Ring<u32> {
    /// A ring holding every index of `0..count` in order.
    pub(crate) fn full(count: u32) -> Option<Self> {
        Self::full_at(count, 0)
    }

    /// As [`Ring::full`], with the positions starting at `start` rather
    /// than 0 (tests start just before a wrap).
    pub(crate) fn full_at(count: u32, start: usize) -> Option<Self> {
        Self::filled_at(usize::try_from(count).ok()?, start, |i| i as u32, 0)
    }
}

impl<T: Entry> Ring<T> {
    /// A ring holding `entry(i)` for every `i` of `0..count`, in order (so
    /// the pool's lowest addresses are handed out first), or `None` when no
    /// power of two that holds `count` fits in a `usize` half-range. The
    /// slots past them hold `spare` until puts write them.
    pub(crate) fn filled(count: usize, entry: impl Fn(usize) -> T, spare: T) -> Option<Self> {
        Self::filled_at(count, 0, entry, spare)
    }

    /// As [`Ring::filled`], with the positions starting at `start` rather
    /// than 0.
    fn filled_at(count: usize, start: usize, entry: impl Fn(usize) -> T, spare: T) -> Option<Self> {
        let capacity = count.max(1).checked_next_power_of_two()?;
        // Wrapping position arithmetic needs the capacity to be at most
        // half the position range.
        if capacity > usize::MAX / 2 {
            return None;
        }
        let mask = capacity - 1;
        let slots = (0..capacity)
            .map(|slot| {
                // The position `start + i` holds entry `i`, for `i < count`.
                let i = slot.wrapping_sub(start) & mask;
                UnsafeCell::new(if i < count { entry(i) } else { spare })
            })
            .collect();
        Some(Ring {
            prod: CachePadded::new(HeadTail::at(start.wrapping_add(count))),
            cons: CachePadded::new(HeadTail::at(start)),
            mask,
            slots,
        })
    }

    /// The number of slots.
    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The number of entries a get could take now: published by puts and
    /// not reserved by gets. See "Orderings".
    pub(crate) fn len(&self) -> usize {
        let head = self.cons.head.load(Ordering::Acquire);
        let tail = self.prod.tail.load(Ordering::Acquire);
        // Never below zero (module docs); above the capacity only when the
        // head read was stale by more than a lap.
        tail.wrapping_sub(head).min(self.capacity())
    }

    /// Takes `n` entries, all or nothing, calling `emit(i, entry)` for `i`
    /// in `0..n`, oldest first. Returns false, having taken nothing and
    /// called nothing, when fewer than `n` are there.
    #[inline]
    pub(crate) fn get_bulk(&self, n: usize, mut emit: impl FnMut(usize, T)) -> bool {
        if n == 0 {
            return true;
        }
        if n > self.capacity() {
            return false;
        }
        // Acquire loads, Release CAS: module docs.
        let mut head = self.cons.head.load(Ordering::Acquire);
        loop {
            let ready = self.prod.tail.load(Ordering::Acquire).wrapping_sub(head);
            if ready < n {
                return false;
            }
            match self.cons.head.compare_exchange_weak(
                head,
                head.wrapping_add(n),
                Ordering::Release,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(now) => head = now,
            }
        }
        let (a, b) = self.run(head, n);
        for (i, cell) in a.iter().enumerate() {
            // SAFETY: this get reserved the position (no other get reads
            // it, no put writes it before our `cons.tail` store), and the
            // Acquire of `prod.tail` ordered the put's write before this.
            emit(i, cell.with(|p| unsafe { *p }));
        }
        for (i, cell) in b.iter().enumerate() {
            // SAFETY: as above.
            emit(a.len() + i, cell.with(|p| unsafe { *p }));
        }
        self.cons.publish(head, head.wrapping_add(n));
        true
    }

    /// Puts `entries`, which gets return in the same order. Each must be an
    /// object of the pool that is not in the ring already: then the
    /// ring never fills (module docs). A put that would overfill it waits
    /// for gets to make room. The iterator runs between the reservation
    /// and the publication, so it must not block (or panic: the positions
    /// would never be published).
    #[inline]
    pub(crate) fn put_bulk(&self, entries: impl ExactSizeIterator<Item = T>) {
        let n = entries.len();
        if n == 0 {
            return;
        }
        let room = self.capacity().saturating_sub(n);
        let mut spins = 0u32;
        // Acquire loads, Release CAS: module docs.
        let mut head = self.prod.head.load(Ordering::Acquire);
        loop {
            let used = head.wrapping_sub(self.cons.tail.load(Ordering::Acquire));
            if used > room || n > self.capacity() {
                // A stale `cons.tail` (module docs: the ring never fills).
                if spins < PUBLISH_SPINS {
                    spins += 1;
                    spin_loop();
                } else {
                    yield_now();
                }
                head = self.prod.head.load(Ordering::Acquire);
                continue;
            }
            match self.prod.head.compare_exchange_weak(
                head,
                head.wrapping_add(n),
                Ordering::Release,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(now) => head = now,
            }
        }
        let (a, b) = self.run(head, n);
        let mut entries = entries;
        let mut written = 0;
        for (cell, i) in a.iter().zip(&mut entries) {
            // SAFETY: this put reserved the position: no put writes it and
            // no get reads it before our `prod.tail` store, and the Acquire
            // of `cons.tail` ordered the last lap's read before this.
            cell.with_mut(|p| unsafe { *p = i });
            written += 1;
        }
        for (cell, i) in b.iter().zip(&mut entries) {
            // SAFETY: as above.
            cell.with_mut(|p| unsafe { *p = i });
            written += 1;
        }
        debug_assert!(
            written == n && entries.next().is_none(),
            "an iterator whose len is not its length"
        );
        self.prod.publish(head, head.wrapping_add(n));
    }

    /// The slots of the positions `pos..pos + n` (`n <= capacity`): up to
    /// the end of the array, then from its start.
    #[inline]
    fn run(&self, pos: usize, n: usize) -> (&[UnsafeCell<T>], &[UnsafeCell<T>]) {
        let start = pos & self.mask;
        let first = n.min(self.slots.len() - start);
        (&self.slots[start..start + first], &self.slots[..n - first])
    }
}

#[cfg(all(test, loom))]
mod loom_tests;
#[cfg(all(test, not(loom)))]
mod tests;
