//! The ring shared by both sides and the position protocols (single/multi
//! producer × single/multi consumer), after DPDK's `rte_ring_core.h` and
//! `rte_ring_c11_pvt.h`, with per-run publication for multiple producers.
//!
//! Positions are free-running `usize` counters; a slot is `pos & mask`.
//! Each side has a `head` (the next position a thread may reserve) and a
//! `tail` (everything before it is released to the other side):
//!
//! ```text
//!        cons.tail      cons.head        prod.tail      prod.head
//!            |  being read  |  readable     | being written |  free ...
//! ```
//!
//! A single-threaded side needs no reservation: it keeps its head in its
//! handle and only publishes its tail. A multi-threaded side reserves with a
//! CAS on its head and fills its slots. Then the two kinds of
//! multi-threaded side part:
//!
//! - **Multiple producers publish each run on its own.** A producer that
//!   reserved the run `pos..end` (one item or a burst) writes its items,
//!   then stores `end` in the stamp of `pos`'s slot, in an array beside the
//!   slots (so that the slots stay a run of `T` for the burst copies and the
//!   chunk view). A consumer at a run boundary `b` reads the stamp of `b`:
//!   a value in `b + 1 ..= b + capacity` is the end of the run that starts
//!   at `b` in this lap (a stamp left by an earlier lap is at most `b`), and
//!   the next boundary; anything else means not published yet. Consumers
//!   only ever look at boundaries: a single consumer's cached limit is one,
//!   and the consumers' shared bound only grows (from boundary to
//!   boundary), so it never falls behind their head. No producer ever waits
//!   for another: one preempted between its reservation and its stamp holds
//!   back only the consumers, which see the ring end at its run until it
//!   runs again, as with crossbeam's `ArrayQueue`. (rte_ring's in-order tail,
//!   which this replaced, made every producer behind a preempted one spin
//!   out its time slice; with producers sharing a core that cut a ring to a
//!   few hundred thousand items a second.) `prod.tail` is unused.
//! - **Runs of one live beside their stamp.** The stamp array's entries are
//!   16 bytes: the stamp and room for one item of at most 8 bytes (a
//!   pointer, an index, a `u64`). A run of one item (a `push`, or a burst
//!   that reserved one slot) puts its item there instead of in its slot,
//!   so that a consumer of single items reads one line per item, the
//!   line the producer wrote, as in crossbeam's `ArrayQueue`; longer runs
//!   stay in the slots, which bursts copy in one move. A reader tells the
//!   two apart from the position alone: this lap's stamp of a run from
//!   `p` that says `p + 1` is a run of one; a position inside a longer run
//!   keeps an older lap's stamp, which is at most `p`. A reservation that
//!   starts inside a run (after a pop took part of it) goes one item at a
//!   time to the next run's start. The chunk API, which lends the slots
//!   out, first moves the runs of one it covers into their slots and
//!   restamps them as an older lap's (`gather_runs_of_one`).
//!   docs/performance.md (4a, 4c) has the measurements: single items of a
//!   multi-producer, single-consumer ring 1.7x faster, bursts unchanged.
//! - **A single producer may publish runs too** (`spsc_stamped`): the
//!   same stamps and runs of one, no reservation; it stores its end in
//!   `prod.reserve.head`, where a multi-producer ring's reservations are,
//!   for `len` and `Drop`. The chunk API writes the slots in place, so a
//!   committed chunk of one moves its item beside the stamp first.
//! - **Multiple consumers release in order**, as rte_ring does: a consumer
//!   waits for the consumers that reserved before it to publish `cons.tail`,
//!   so that producers need only that one position to know what is free.
//!   A consumer preempted mid-pop can hold up the consumers behind it (they
//!   spin, then yield their core).
//!
//! Synchronisation, one edge per direction: a producer's `Release` store of
//! `prod.tail` (single producer) or of a run's stamp (multiple producers)
//! pairs with a consumer's `Acquire` load of it (the slot writes are visible
//! before the consumer reads them); a consumer's `Release` store of
//! `cons.tail` pairs with a producer's `Acquire` load of it (the slot reads
//! are finished before a producer overwrites the slots).

use core::mem::MaybeUninit;
use crossbeam_utils::CachePadded;
use hugepages::sync::{AtomicUsize, Ordering, UnsafeCell, spin_loop, yield_now};

use super::transfer::{Sink, Source};

/// One slot. Under `cfg(not(loom))` the wrapper is `repr(transparent)` all
/// the way down, so a run of slots has the layout of a run of `T`.
pub(crate) type Slot<T> = UnsafeCell<MaybeUninit<T>>;

/// One entry of a multi-producer ring's stamp array: the stamp of the run
/// that starts at its position and, when that run is one item of at most
/// 8 bytes, the item itself, so that the consumer finds item and stamp on
/// one line (module docs, "Runs of one live beside their stamp").
#[derive(Debug)]
#[repr(C, align(16))]
pub(crate) struct Entry {
    stamp: AtomicUsize,
    item: UnsafeCell<MaybeUninit<u64>>,
}

/// One side's positions (`struct rte_ring_headtail`), the reservation line
/// and the tail each on its own cache line(s). Unlike rte_ring, the head is
/// not beside the tail: the other side polls the tail, and a head on the
/// same line would be pulled into the shared state by every poll, so that
/// the next CAS on it had to take the line back, a cross-core round trip
/// per reservation.
#[derive(Debug)]
pub(crate) struct HeadTail {
    /// Where a multi-threaded side reserves; unused by a single-threaded
    /// side (which keeps the same two values in its handle, [`Local`]).
    pub(crate) reserve: CachePadded<Reserve>,
    /// Everything before this position is published to the other side.
    pub(crate) tail: CachePadded<AtomicUsize>,
}

/// A multi-threaded side's reservation state. Only this side's threads
/// touch it, so with one thread per side the line never leaves its core.
#[derive(Debug)]
pub(crate) struct Reserve {
    /// Next position to reserve.
    pub(crate) head: AtomicUsize,
    /// The other side's tail as last seen by a thread of this side (plus
    /// the capacity, for producers): positions before it may be reserved.
    /// A cache, like [`Local::limit`] of a single-threaded side: it may be
    /// stale, which only under-reports room, and a reservation reads the
    /// other side's tail (its cache line) only when the cache says there is
    /// too little.
    pub(crate) bound: AtomicUsize,
}

impl HeadTail {
    fn new(bound: usize) -> Self {
        HeadTail {
            reserve: CachePadded::new(Reserve {
                head: AtomicUsize::new(0),
                bound: AtomicUsize::new(bound),
            }),
            tail: CachePadded::new(AtomicUsize::new(0)),
        }
    }
}

/// Pause-spins a consumer makes waiting for another thread (a consumer
/// ahead of it, a push in flight) before it starts yielding its core: about 10 µs at one pause per ~40
/// cycles, far longer than a running thread takes to copy a burst.
pub(crate) const PUBLISH_SPINS: u32 = 1024;

/// Items a consumer of a multi-producer ring looks for past what it asked
/// for, so that runs of single pushes are found a few at a time.
const RUNS_AHEAD: usize = 8;

/// How many items a reservation asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    /// Exactly this many, or none (`*_bulk`).
    Exactly(usize),
    /// As many as possible up to this many (`*_burst`).
    UpTo(usize),
}

impl Want {
    /// The number asked for.
    #[inline(always)]
    fn count(self) -> usize {
        match self {
            Want::Exactly(n) | Want::UpTo(n) => n,
        }
    }

    #[inline(always)]
    fn grant(self, room: usize) -> usize {
        match self {
            Want::Exactly(n) if n <= room => n,
            Want::Exactly(_) => 0,
            Want::UpTo(n) => n.min(room),
        }
    }
}

/// The state both sides share.
#[derive(Debug)]
pub(crate) struct Shared<T> {
    pub(crate) prod: HeadTail,
    pub(crate) cons: HeadTail,
    /// Read-only after construction; behind its own padding so that the
    /// written lines above never share a line with it.
    ro: CachePadded<ReadOnly<T>>,
}

#[derive(Debug)]
struct ReadOnly<T> {
    slots: Box<[Slot<T>]>,
    /// Stamped rings: per slot, the end of the run published from it and,
    /// for a run of one small item, the item (see the module docs). Empty
    /// for rings whose single producer publishes `prod.tail` instead.
    stamps: Box<[Entry]>,
    mask: usize,
    /// Live producer and consumer handles, for `is_abandoned`.
    producers: AtomicUsize,
    consumers: AtomicUsize,
}

/// A single-threaded side's private view: its own position and a possibly
/// stale bound derived from the other side's tail. Stale is safe: the other
/// side only ever moves forward, so a stale bound under-reports room.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Local {
    /// This side's position (its head and, after each operation, its tail).
    pub(crate) pos: usize,
    /// Producer: `cons.tail + capacity` as last seen. Consumer: `prod.tail`
    /// as last seen. Either way: positions before it may be used.
    pub(crate) limit: usize,
}

impl<T> Shared<T> {
    /// A ring of `capacity` slots; the caller has checked it is a power of
    /// two. `stamped`: the producers publish runs (multi-threaded ones
    /// always; a single producer where `ring::spsc_stamped` asks).
    pub(crate) fn new(capacity: usize, stamped: bool) -> Self {
        debug_assert!(capacity.is_power_of_two());
        let slots = (0..capacity)
            .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
            .collect();
        // A stamp of 0 is no run's end for any position of the first lap
        // (`0 - b` wraps above the capacity).
        let stamps = if stamped {
            (0..capacity)
                .map(|_| Entry {
                    stamp: AtomicUsize::new(0),
                    item: UnsafeCell::new(MaybeUninit::uninit()),
                })
                .collect()
        } else {
            Box::default()
        };
        Shared {
            // Producers may fill the empty ring; consumers have nothing yet.
            prod: HeadTail::new(capacity),
            cons: HeadTail::new(0),
            ro: CachePadded::new(ReadOnly {
                slots,
                stamps,
                mask: capacity - 1,
                producers: AtomicUsize::new(1),
                consumers: AtomicUsize::new(1),
            }),
        }
    }

    #[inline(always)]
    pub(crate) fn capacity(&self) -> usize {
        self.ro.mask + 1
    }

    pub(crate) fn handles(&self, producer: bool) -> &AtomicUsize {
        if producer {
            &self.ro.producers
        } else {
            &self.ro.consumers
        }
    }

    // ---- producer side ----------------------------------------------------

    /// Local view for a new single producer.
    pub(crate) fn sp_local(&self) -> Local {
        Local {
            pos: 0,
            limit: self.capacity(),
        }
    }

    /// Single producer: how many of `want` fit, refreshing the cached bound
    /// only when the cached one is too small.
    #[inline(always)]
    pub(crate) fn sp_reserve(&self, local: &mut Local, want: Want) -> usize {
        if local.limit.wrapping_sub(local.pos) < want.count() {
            // Acquire: pairs with the consumer's Release store of `cons.tail`
            // in `publish`; its reads of these slots are done.
            local.limit = self
                .cons
                .tail
                .load(Ordering::Acquire)
                .wrapping_add(self.capacity());
        }
        want.grant(local.limit.wrapping_sub(local.pos))
    }

    /// Multi producer: reserve up to `want` slots with a CAS on `prod.head`.
    /// Returns the first reserved position and the count (0: no room).
    #[inline]
    pub(crate) fn mp_reserve(&self, want: Want) -> (usize, usize) {
        self.multi_reserve(&self.prod.reserve, want, false, |_| {
            // Acquire: pairs with the consumers' Release store of
            // `cons.tail`: their reads of the slots before it are done.
            self.cons
                .tail
                .load(Ordering::Acquire)
                .wrapping_add(self.capacity())
        })
    }

    /// A multi-threaded side's reservation: up to `want` positions from
    /// `r.head`, below `r.bound`, which is refreshed by `refresh(wanted)`
    /// only when it allows too few. `refresh` returns a position before
    /// which every position is ready for this side, with an Acquire edge
    /// from the other side's accesses to those slots. `grows`: the bound
    /// must only grow (the consumers of a multi-producer ring scan from it);
    /// otherwise a racing refresh may store an older bound after ours,
    /// which only under-reports room. Returns the first position and the
    /// count.
    #[inline(always)]
    fn multi_reserve(
        &self,
        r: &Reserve,
        want: Want,
        grows: bool,
        refresh: impl Fn(usize) -> usize,
    ) -> (usize, usize) {
        let cap = self.capacity();
        // The head first, then the bound (as DPDK loads the head before
        // the other side's tail): a bound that is behind the head, or a
        // head that is behind the other side, shows up below as too little
        // room or as a difference above the capacity, and is refreshed.
        let mut head = r.head.load(Ordering::Relaxed);
        // Acquire: pairs with the Release store of `bound` below, by
        // whichever thread of this side refreshed it after acquiring the
        // other side's tail; so the other side's accesses to the slots
        // below the bound happen-before ours.
        let mut bound = r.bound.load(Ordering::Acquire);
        let mut fresh = false;
        let wanted = want.count();
        loop {
            let room = bound.wrapping_sub(head);
            // As a single-threaded side does: trust the cached bound when it
            // allows all that was asked for, else look at the other side's
            // tail once (so that a burst moves as many as really fit).
            if room <= cap && (fresh || room >= wanted) {
                let n = want.grant(room);
                if n == 0 {
                    return (head, 0);
                }
                // Relaxed: the CAS only claims positions. Slot contents are
                // ordered by the tail stores and the bound, not by `head`; a
                // successful CAS means `head` was current, and the bound is
                // never ahead of the other side's tail, so `room`
                // under-reports at worst.
                match r.head.compare_exchange_weak(
                    head,
                    head.wrapping_add(n),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return (head, n),
                    Err(actual) => {
                        // Another thread moved on; a refresh may now find
                        // more than the bound in hand.
                        head = actual;
                        fresh = false;
                        continue;
                    }
                }
            }
            if room > cap && fresh {
                // `head` was read before the other side moved past it: a
                // stale pair (DPDK orders these loads with a fence
                // instead). Reload it, then the tail.
                spin_loop();
                head = r.head.load(Ordering::Relaxed);
            }
            bound = refresh(wanted);
            if grows {
                Self::raise(&r.bound, bound);
            } else {
                // Release: passes the refresh's Acquire edge on to this
                // side's other threads (their Acquire load of `bound`).
                r.bound.store(bound, Ordering::Release);
            }
            fresh = true;
        }
    }

    /// Whether the producers publish runs (a multi-producer ring, or a
    /// single producer's made by `spsc_stamped`).
    #[inline(always)]
    fn is_stamped(&self) -> bool {
        !self.ro.stamps.is_empty()
    }

    /// Raises `bound` to `new` unless it is already there or beyond (in
    /// position order). The bound only grows: the consumers of a
    /// multi-producer ring scan from it, so it must stay a run boundary at
    /// or ahead of their head.
    #[inline]
    fn raise(bound: &AtomicUsize, new: usize) {
        let mut cur = bound.load(Ordering::Relaxed);
        // `new` ahead of `cur`: their distance is below half the position
        // space (both are within a capacity of the head).
        while new != cur && new.wrapping_sub(cur) <= usize::MAX / 2 {
            // Release: passes the refresh's Acquire edge on to this side's
            // other threads (their Acquire load of `bound`).
            match bound.compare_exchange_weak(cur, new, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    // ---- consumer side ----------------------------------------------------

    /// Local view for a new single consumer.
    pub(crate) fn sc_local(&self) -> Local {
        Local { pos: 0, limit: 0 }
    }

    /// Single consumer: how many of `want` are readable.
    #[inline(always)]
    pub(crate) fn sc_reserve(&self, local: &mut Local, want: Want) -> usize {
        if local.limit.wrapping_sub(local.pos) < want.count() {
            local.limit = if self.is_stamped() {
                // `limit` is a run boundary at or after `pos`.
                self.published_runs(local.pos, local.limit, want.count())
            } else {
                // Acquire: pairs with the producer's Release store of
                // `prod.tail`; the slot writes before it are visible.
                self.prod.tail.load(Ordering::Acquire)
            };
        }
        want.grant(local.limit.wrapping_sub(local.pos))
    }

    /// Multi consumer: reserve up to `want` items with a CAS on `cons.head`.
    #[inline]
    pub(crate) fn mc_reserve(&self, want: Want) -> (usize, usize) {
        let r = &self.cons.reserve;
        self.multi_reserve(r, want, self.is_stamped(), |wanted| {
            if self.is_stamped() {
                // The bound is a run boundary at or after every consumer's
                // head (it only grows, and no reservation passes it);
                // Acquire as in `multi_reserve`.
                let head = r.head.load(Ordering::Relaxed);
                let from = r.bound.load(Ordering::Acquire);
                self.published_runs(head, from, wanted)
            } else {
                // Acquire: pairs with the producer's Release store of
                // `prod.tail`; the slot writes before it are visible.
                self.prod.tail.load(Ordering::Acquire)
            }
        })
    }

    /// Stamped rings: follows the published runs from the boundary
    /// `from` (at or after `pos`) until `wanted` items past `pos` are
    /// covered or a run is not published yet; returns the boundary reached.
    #[inline]
    fn published_runs(&self, pos: usize, from: usize, wanted: usize) -> usize {
        let cap = self.capacity();
        let wanted = wanted.max(RUNS_AHEAD).min(cap);
        let mut b = from;
        while b.wrapping_sub(pos) < wanted {
            // Acquire: pairs with the producer's Release store of this
            // stamp (`publish_run`): the run's slot writes are visible.
            let end = self.stamp(b).load(Ordering::Acquire);
            // This lap's run from `b` ends in `b + 1 ..= b + cap`; a stamp
            // of an earlier lap's run from this slot is at most `b`.
            if end.wrapping_sub(b).wrapping_sub(1) >= cap {
                break;
            }
            b = end;
        }
        b
    }

    // ---- publishing -------------------------------------------------------

    /// Stamped rings: publish the run of `n` items written from `pos`.
    /// Never waits.
    #[inline(always)]
    pub(crate) fn publish_run(&self, pos: usize, n: usize) {
        debug_assert!(self.is_stamped() && n > 0);
        // Release: the slot writes before it happen-before a consumer's
        // Acquire load that sees this run's end (`published_runs`).
        self.stamp(pos)
            .store(pos.wrapping_add(n), Ordering::Release);
    }

    #[inline(always)]
    fn stamp(&self, pos: usize) -> &AtomicUsize {
        &self.entry(pos).stamp
    }

    #[inline(always)]
    fn entry(&self, pos: usize) -> &Entry {
        let idx = pos & self.ro.mask;
        debug_assert!(idx < self.ro.stamps.len());
        // SAFETY: `stamps` has `mask + 1` entries when `stamped`, the only
        // case that calls this; `idx <= mask`.
        unsafe { self.ro.stamps.get_unchecked(idx) }
    }

    /// Whether a `T` fits in an [`Entry`] beside the stamp.
    pub(crate) const FITS_ENTRY: bool = core::mem::size_of::<T>() <= core::mem::size_of::<u64>()
        && core::mem::align_of::<T>() <= core::mem::align_of::<u64>();

    /// Whether runs of one item live in the stamp array (stamped rings of
    /// items that fit there).
    #[inline(always)]
    fn inline_runs(&self) -> bool {
        Self::FITS_ENTRY && self.is_stamped()
    }

    /// Whether the published item at `pos` (reserved to the caller for
    /// reading) is a run of one kept beside its stamp: this lap's stamp of
    /// a run from `pos` says `pos + 1`, and a position inside a longer run
    /// keeps an older lap's stamp, which is at most `pos`.
    #[inline(always)]
    fn is_inline(&self, pos: usize) -> bool {
        // Relaxed: the caller's reservation was bounded by an Acquire load
        // of this run's stamp (its own, or the consumer's that raised the
        // shared bound, passed on through `bound`), and nobody writes the
        // stamp again until the position is released.
        self.inline_runs() && self.stamp(pos).load(Ordering::Relaxed) == pos.wrapping_add(1)
    }

    /// Single producer: publish the `n` items written from `pos`, its
    /// position before them. A stamped ring publishes them as a run, as a
    /// multi-producer ring does (so that its consumer finds a single item
    /// on the line the item is on), then records the producers' end in
    /// `prod.reserve.head`, where [`Self::len`] and `Drop` look for it.
    #[inline(always)]
    pub(crate) fn publish_sp(&self, pos: usize, n: usize) {
        let end = pos.wrapping_add(n);
        if self.is_stamped() {
            self.publish_run(pos, n);
            // Release: after the stamp, so that whoever sees this end (an
            // Acquire load in `prod_end`) also sees the run published.
            self.prod.reserve.head.store(end, Ordering::Release);
        } else {
            Self::publish_single(&self.prod, end);
        }
    }

    /// Single producer, for a run written into the slots in place (the
    /// chunk API): a run of one on a ring that keeps those beside their
    /// stamp moves there first, then the run is published.
    ///
    /// # Safety
    /// `pos..pos + n` were reserved to the caller and written in the slots.
    #[inline]
    pub(crate) unsafe fn publish_sp_slots(&self, pos: usize, n: usize) {
        if n == 1 && self.inline_runs() {
            // SAFETY: the caller's: the slot of a reserved, written
            // position; its item moves to the entry (the slot is left
            // logically uninitialised).
            let v = self.slot(pos).with(|p| unsafe { p.cast::<T>().read() });
            // SAFETY: the entry of a reserved position, and `T` fits there.
            self.entry(pos)
                .item
                .with_mut(|p| unsafe { p.cast::<T>().write(v) });
        }
        if n > 0 {
            self.publish_sp(pos, n);
        }
    }

    /// Single-threaded side: publish everything before `new`.
    #[inline(always)]
    pub(crate) fn publish_single(side: &HeadTail, new: usize) {
        // Release: the slot writes (producer) or reads (consumer) before
        // this store happen-before the other side's Acquire load of it.
        side.tail.store(new, Ordering::Release);
    }

    /// Multiple consumers: wait for the consumers that reserved before `old`
    /// to publish, then publish `old..new`. As in rte_ring's default mode a
    /// consumer preempted between reserving and publishing holds up the ones
    /// behind it; lcores are pinned one per core, which keeps that rare, and
    /// where threads outnumber cores the waiter yields its core after a
    /// short spin so that the preempted thread can finish.
    #[inline]
    pub(crate) fn publish_multi(side: &HeadTail, old: usize, new: usize) {
        let mut spins = 0u32;
        // Acquire: pairs with the previous thread's Release store below, so
        // its slot accesses happen-before ours and, through our Release
        // store, before the other side's Acquire. (A plain store does not
        // extend a release sequence, so Relaxed here would lose that edge.)
        while side.tail.load(Ordering::Acquire) != old {
            if spins < PUBLISH_SPINS {
                spins += 1;
                spin_loop();
            } else {
                yield_now();
            }
        }
        side.tail.store(new, Ordering::Release);
    }

    // ---- moving items -----------------------------------------------------

    /// Moves `n` items out of `src` into the slots starting at `pos`.
    ///
    /// # Safety
    /// The caller has reserved `pos..pos + n` for writing, `n <= src.remaining()`.
    #[inline(always)]
    pub(crate) unsafe fn write_slots<S: Source<T>>(&self, pos: usize, n: usize, src: &mut S) {
        if n == 1 && self.inline_runs() {
            self.entry(pos).item.with_mut(|p| {
                // SAFETY: the entry of a reserved position is ours until we
                // publish; `T` fits in it (`FITS_ENTRY`); one item is left.
                unsafe { src.move_to(p.cast::<T>(), 1) }
            });
            return;
        }
        let idx = pos & self.ro.mask;
        let first = n.min(self.capacity() - idx);
        #[cfg(not(loom))]
        {
            let base = self.slot_base();
            // `idx + first <= capacity` and `n - first <= idx` (the wrapped
            // part ends before the first part starts, as `n <= capacity`):
            // both ranges are in bounds, reserved to us, and disjoint.
            let at = base.wrapping_add(idx);
            // SAFETY: `at..at + first` is in bounds and ours; `first <= n`
            // items are left in `src`.
            unsafe { src.move_to(at, first) };
            // Most bursts do not wrap: skip the empty second part rather
            // than pay a second call of the copy.
            if n > first {
                // SAFETY: `base..base + (n - first)` likewise, for the rest.
                unsafe { src.move_to(base, n - first) };
            }
        }
        #[cfg(loom)]
        for i in 0..n {
            let _ = first;
            self.ro.slots[(pos.wrapping_add(i)) & self.ro.mask].with_mut(|p| {
                // SAFETY: the slot is reserved to us; one item is left in `src`.
                unsafe { src.move_to(p.cast::<T>(), 1) }
            });
        }
    }

    /// Moves the `n` items in the slots starting at `pos` into `dst`.
    ///
    /// # Safety
    /// The caller has reserved `pos..pos + n` for reading (they hold
    /// published items) and `n <= dst.spare()`.
    #[inline(always)]
    pub(crate) unsafe fn read_slots<D: Sink<T>>(&self, pos: usize, n: usize, dst: &mut D) {
        if !self.inline_runs() {
            // SAFETY: the caller's contract.
            return unsafe { self.read_run(pos, n, dst) };
        }
        // Run by run: a run of one from its entry, a longer run from its
        // slots in one move. A reservation that starts inside a run (after
        // a pop of part of it) does not know where that run ends: its
        // positions go one at a time until the next run starts.
        let cap = self.capacity();
        let end = pos.wrapping_add(n);
        let mut q = pos;
        while q != end {
            let stamp = self.stamp(q).load(Ordering::Relaxed);
            let run = stamp.wrapping_sub(q);
            if run == 1 {
                // SAFETY: `q` is reserved to us and holds a run of one,
                // in its entry; `dst` has room (at most `n` items go).
                unsafe { self.read_entry(q, dst) };
                q = q.wrapping_add(1);
            } else {
                let k = if run.wrapping_sub(1) < cap {
                    run.min(end.wrapping_sub(q))
                } else {
                    1
                };
                // SAFETY: `q..q + k` are reserved to us and in the slots.
                unsafe { self.read_run(q, k, dst) };
                q = q.wrapping_add(k);
            }
        }
    }

    /// Moves the run of one at `pos` out of its entry into `dst`.
    ///
    /// # Safety
    /// `pos` is reserved to the caller for reading and [`is_inline`](Self::is_inline); `dst` has room.
    #[inline(always)]
    unsafe fn read_entry<D: Sink<T>>(&self, pos: usize, dst: &mut D) {
        self.entry(pos).item.with(|p| {
            // SAFETY: the caller's contract: `pos` is ours and its item is in
            // the entry, where `T` fits; `dst` has room for it.
            unsafe { dst.move_from(p.cast::<T>(), 1) }
        });
    }

    /// Single consumer, before lending `pos..pos + n` out as slices: moves
    /// the runs of one there from their entries into their slots, and
    /// stamps each with `pos` (an older lap's look), so that every reader
    /// after this takes it from the slot.
    ///
    /// # Safety
    /// `pos..pos + n` are reserved to the caller (published, not released).
    pub(crate) unsafe fn gather_runs_of_one(&self, pos: usize, n: usize) {
        if !self.inline_runs() {
            return;
        }
        for i in 0..n {
            let q = pos.wrapping_add(i);
            if self.is_inline(q) {
                // SAFETY: reserved to us; the item moves from the entry
                // (left logically uninitialised) to the slot.
                let v = self.entry(q).item.with(|p| unsafe { p.cast::<T>().read() });
                // SAFETY: the slot of a reserved position.
                self.slot(q).with_mut(|p| unsafe { p.cast::<T>().write(v) });
                // Relaxed: only this consumer reads it before the release.
                self.stamp(q).store(q, Ordering::Relaxed);
            }
        }
    }

    /// Moves the `n` items in the slots starting at `pos` into `dst`.
    ///
    /// # Safety
    /// As [`read_slots`](Self::read_slots), and the items are in the slots.
    #[inline(always)]
    unsafe fn read_run<D: Sink<T>>(&self, pos: usize, n: usize, dst: &mut D) {
        let idx = pos & self.ro.mask;
        let first = n.min(self.capacity() - idx);
        #[cfg(not(loom))]
        {
            let base = self.slot_base();
            // The same two ranges as in `write_slots`; they hold published
            // items that become logically uninitialised once moved out.
            let at = base.wrapping_add(idx);
            // SAFETY: `at..at + first` is in bounds, ours and initialised;
            // `dst` has room for `n >= first`.
            unsafe { dst.move_from(at, first) };
            if n > first {
                // SAFETY: `base..base + (n - first)` likewise, for the rest.
                unsafe { dst.move_from(base, n - first) };
            }
        }
        #[cfg(loom)]
        for i in 0..n {
            let _ = first;
            self.ro.slots[(pos.wrapping_add(i)) & self.ro.mask].with(|p| {
                // SAFETY: the slot is reserved to us and initialised.
                unsafe { dst.move_from(p.cast::<T>(), 1) }
            });
        }
    }

    /// Writes one item into the slot at `pos`.
    ///
    /// # Safety
    /// The caller has reserved `pos` for writing.
    #[inline(always)]
    pub(crate) unsafe fn write_one(&self, pos: usize, value: T) {
        if self.inline_runs() {
            self.entry(pos).item.with_mut(|p| {
                // SAFETY: the entry of a reserved position is ours until we
                // publish, and `T` fits in it (`FITS_ENTRY`).
                unsafe { p.cast::<T>().write(value) }
            });
            return;
        }
        let slot = self.slot(pos);
        // SAFETY: the slot is reserved to us; nobody else touches it until
        // we publish.
        slot.with_mut(|p| unsafe { p.cast::<T>().write(value) });
    }

    /// Moves the item out of the slot at `pos`.
    ///
    /// # Safety
    /// The caller has reserved `pos` for reading; it holds a published item.
    #[inline(always)]
    pub(crate) unsafe fn read_one(&self, pos: usize) -> T {
        if self.is_inline(pos) {
            return self.entry(pos).item.with(|p| {
                // SAFETY: `pos` is reserved to us and holds a run of one, in
                // its entry (`is_inline`); moving out leaves it logically
                // uninitialised, which the positions record.
                unsafe { p.cast::<T>().read() }
            });
        }
        let slot = self.slot(pos);
        // SAFETY: the slot is reserved to us and initialised; moving out
        // leaves it logically uninitialised, which the positions record.
        slot.with(|p| unsafe { p.cast::<T>().read() })
    }

    #[inline(always)]
    fn slot(&self, pos: usize) -> &Slot<T> {
        let idx = pos & self.ro.mask;
        debug_assert!(idx < self.ro.slots.len());
        // SAFETY: `idx <= mask < slots.len()`.
        unsafe { self.ro.slots.get_unchecked(idx) }
    }

    /// The slots as a raw run of `T`.
    #[cfg(not(loom))]
    #[inline(always)]
    pub(crate) fn slot_base(&self) -> *mut T {
        // `Slot<T>` is `repr(transparent)` over `MaybeUninit<T>`, and the
        // cells grant mutation through a shared reference.
        self.ro.slots.as_ptr().cast_mut().cast::<T>()
    }

    /// The producers' end: `prod.tail`, or for stamped rings `prod.head`
    /// (reserved slots count as taken; a single producer stores its
    /// position there after each publication).
    fn prod_end(&self, order: Ordering) -> usize {
        if self.is_stamped() {
            self.prod.reserve.head.load(order)
        } else {
            self.prod.tail.load(order)
        }
    }

    /// The end of what producers have reserved (and will publish) so far.
    pub(crate) fn reserved_end(&self) -> usize {
        self.prod_end(Ordering::Acquire)
    }

    /// Items in the ring (published, or reserved by a producer) and not yet
    /// released by the consumers, as seen now.
    pub(crate) fn len(&self) -> usize {
        let cons = self.cons.tail.load(Ordering::Acquire);
        let prod = self.prod_end(Ordering::Acquire);
        prod.wrapping_sub(cons).min(self.capacity())
    }
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        if !core::mem::needs_drop::<T>() {
            return;
        }
        // Every handle is gone (this is the last Arc), so every reservation
        // was written and published (no push returns between reserving and
        // publishing) and the positions are final. Arc's drop already
        // synchronised with the other handles' drops.
        let mut pos = self.cons.tail.load(Ordering::Relaxed);
        let end = self.prod_end(Ordering::Relaxed);
        while pos != end {
            // SAFETY: `cons.tail..prod.tail` holds published, unconsumed items
            // and nobody else can reach them any more.
            drop(unsafe { self.read_one(pos) });
            pos = pos.wrapping_add(1);
        }
    }
}
