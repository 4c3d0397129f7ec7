//! Sender lanes: many sending threads into one consumer, each thread on a
//! single-producer ring of its own.
//!
//! A multi-producer ring pays a locked read-modify-write on its shared
//! head for every push, however many threads really send. When each
//! sending thread has its own single-producer ring into the consumer
//! (Seastar's queue per pair of shards, generalised to any thread) a push
//! is a plain store and a release, the single-producer path, and no
//! producer can ever be held up by another: a thread preempted mid-push
//! delays nothing but its own lane. The consumer polls the lanes that
//! exist, round robin.
//!
//! A thread's lane is chosen by its **lane id**, a small number it claims
//! from a process-wide table on its first push through any [`Lanes`] and
//! releases when it exits (like the mempool's lcore cache slots, but for
//! every thread). Lane *k* of every `Lanes` is reached only by the thread
//! holding id *k*, so it needs no synchronisation beyond the id's handover:
//! releasing an id is a Release RMW on the table and claiming it an
//! Acquire RMW, so the next holder sees the lane exactly as the last one
//! left it, and keeps filling it behind what is still queued. A thread
//! that finds every id taken ([`MAX_LANES`] threads sending at once) has
//! no lane for its whole life and says so ([`LaneError::NoLane`]); the
//! caller then uses a multi-producer ring, so each thread keeps one path
//! and its sends stay in order. Sends a thread makes from thread-local
//! destructors after its id's own has run go that way too.
//!
//! Lanes are made on first use, one ring of `capacity` slots per sending
//! thread: a send that finds its lane full is pushed back even if other
//! lanes have room.

use super::core::Shared;
use super::{Batch, Consumer, Producer, Single, Sink, Source};
use core::cell::UnsafeCell;
use crossbeam_utils::CachePadded;
use hugepages::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Lane ids, and so lanes per [`Lanes`].
pub(crate) const MAX_LANES: usize = 128;
const WORDS: usize = MAX_LANES / 64;

/// The process-wide table of lane ids and the calling thread's id.
mod ids {
    use super::{MAX_LANES, WORDS};
    use hugepages::sync::{AtomicU64, Ordering};
    use std::cell::Cell;

    /// The thread has not asked for an id yet.
    const UNASSIGNED: u32 = u32::MAX;
    /// The thread has no id and never will (none was free, or it is
    /// exiting).
    const NONE: u32 = u32::MAX - 1;

    /// A bitmap of claimed ids. Orderings: a claim is an Acquire RMW and a
    /// release a Release RMW on the id's word, so the next holder of an id
    /// sees every write the previous holder made to its lanes (RMWs by
    /// other threads in between continue the release sequence).
    pub(super) struct Table {
        words: [AtomicU64; WORDS],
    }

    impl Table {
        #[cfg(not(loom))]
        pub(super) const fn new() -> Self {
            Table {
                words: [const { AtomicU64::new(0) }; WORDS],
            }
        }

        /// Loom's atomics have no `const` constructor.
        #[cfg(loom)]
        pub(super) fn new() -> Self {
            Table {
                words: std::array::from_fn(|_| AtomicU64::new(0)),
            }
        }

        /// A table whose ids are all taken but the first `free`.
        #[cfg(any(test, loom))]
        pub(super) fn with_free(free: usize) -> Self {
            let t = Table::new();
            for (w, word) in t.words.iter().enumerate() {
                let lo = (w * 64).min(free);
                let free_here = (free - lo).min(64);
                let taken = if free_here == 64 {
                    0
                } else {
                    u64::MAX << free_here
                };
                word.store(taken, Ordering::Relaxed);
            }
            t
        }

        /// The lowest free id, claimed.
        pub(super) fn take(&self) -> Option<u32> {
            for (w, word) in self.words.iter().enumerate() {
                let mut cur = word.load(Ordering::Relaxed);
                while cur != u64::MAX {
                    let bit = (!cur).trailing_zeros();
                    match word.compare_exchange_weak(
                        cur,
                        cur | 1 << bit,
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    ) {
                        Ok(_) => return Some(w as u32 * 64 + bit),
                        Err(actual) => cur = actual,
                    }
                }
            }
            None
        }

        pub(super) fn release(&self, id: u32) {
            let (w, bit) = (id as usize / 64, id % 64);
            debug_assert!(self.words[w].load(Ordering::Relaxed) & 1 << bit != 0);
            self.words[w].fetch_and(!(1 << bit), Ordering::Release);
        }
    }

    #[cfg(not(loom))]
    static TABLE: Table = Table::new();
    // Loom builds compile the lanes but only run the models below, which
    // make tables of their own.
    #[cfg(loom)]
    static TABLE: std::sync::LazyLock<Table> = std::sync::LazyLock::new(Table::new);

    /// Gives the id back when the thread exits.
    struct Held(Cell<u32>);

    impl Drop for Held {
        fn drop(&mut self) {
            let id = self.0.get();
            if (id as usize) < MAX_LANES {
                ID.set(NONE);
                TABLE.release(id);
            }
        }
    }

    thread_local! {
        /// Read on every send: const-initialised and without a destructor,
        /// so reading it is a plain load.
        static ID: Cell<u32> = const { Cell::new(UNASSIGNED) };
        static HELD: Held = const { Held(Cell::new(NONE)) };
    }

    /// The calling thread's lane id, claimed on first call; `None` for the
    /// thread's whole life when none was free.
    #[inline(always)]
    pub(crate) fn current() -> Option<usize> {
        let id = ID.get();
        if (id as usize) < MAX_LANES {
            Some(id as usize)
        } else if id == NONE {
            None
        } else {
            claim()
        }
    }

    #[cold]
    fn claim() -> Option<usize> {
        let Some(id) = TABLE.take() else {
            ID.set(NONE);
            tracing::info!(
                lane_ids = MAX_LANES,
                "every lane id is taken: this thread sends through the shared multi-producer rings"
            );
            return None;
        };
        // Registers the release at thread exit; a thread already tearing
        // its thread-locals down cannot, and goes without.
        if HELD.try_with(|h| h.0.set(id)).is_err() {
            TABLE.release(id);
            ID.set(NONE);
            tracing::debug!("thread exiting: it sends through the shared multi-producer rings");
            return None;
        }
        ID.set(id);
        Some(id as usize)
    }

    /// The handover of one id between two threads, each writing the
    /// state that the id owns (a lane's producer) while it holds it: loom
    /// reports a data race on the cell if a release does not order the
    /// holder's writes before the next holder's.
    #[cfg(all(test, loom))]
    mod loom_tests {
        use super::*;
        use hugepages::sync::{Arc, UnsafeCell};
        use loom::thread;

        #[test]
        fn loom_lane_id_handover() {
            loom::model(|| {
                let table = Arc::new(Table::with_free(1));
                let state = Arc::new(UnsafeCell::new(0u32));
                let use_once = |table: &Table, state: &UnsafeCell<u32>| loop {
                    if let Some(id) = table.take() {
                        assert_eq!(id, 0);
                        // SAFETY: the holder of id 0 owns `state` (the
                        // property under test).
                        state.with_mut(|p| unsafe { *p += 1 });
                        table.release(id);
                        return;
                    }
                    thread::yield_now();
                };
                let (t2, s2) = (table.clone(), state.clone());
                let h = thread::spawn(move || use_once(&t2, &s2));
                use_once(&table, &state);
                h.join().unwrap();
                // SAFETY: both threads are done.
                assert_eq!(state.with(|p| unsafe { *p }), 2);
            });
        }
    }

    #[cfg(all(test, not(loom)))]
    mod tests {
        use super::*;

        #[test]
        fn a_table_with_free_ids() {
            let t = Table::with_free(66);
            let all: Vec<u32> = (0..MAX_LANES).map_while(|_| t.take()).collect();
            assert_eq!(all, (0..66).collect::<Vec<_>>());
        }

        #[test]
        fn ids_are_unique_until_released() {
            let t = Table::new();
            let all: Vec<u32> = (0..MAX_LANES).map_while(|_| t.take()).collect();
            assert_eq!(all, (0..MAX_LANES as u32).collect::<Vec<_>>());
            assert_eq!(t.take(), None, "every id is taken");
            t.release(70);
            t.release(3);
            assert_eq!(t.take(), Some(3));
            assert_eq!(t.take(), Some(70));
            assert_eq!(t.take(), None);
        }

        #[test]
        fn a_thread_keeps_its_id() {
            let (a, b) = std::thread::spawn(|| (current(), current()))
                .join()
                .unwrap();
            assert!(a.is_some());
            assert_eq!(a, b);
        }
    }
}

/// Why a value did not go into the calling thread's lane; the value is
/// handed back.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LaneError<T> {
    /// The thread's lane is full.
    Full(T),
    /// The thread has no lane: send another way.
    NoLane(T),
}

/// One thread's ring into the consumer: the producer handle used only by
/// the holder of the lane's id, the consumer handle only by the
/// [`LanesRx`]; each on its own line, as each is written by its side.
struct Lane<T> {
    tx: CachePadded<UnsafeCell<Producer<T, Single>>>,
    rx: CachePadded<UnsafeCell<Consumer<T, Single>>>,
    /// The ring itself, for counting from any thread.
    ring: Arc<Shared<T>>,
}

/// The lanes into one consumer.
pub(crate) struct Lanes<T> {
    lanes: Box<[OnceLock<Box<Lane<T>>>]>,
    /// Which lanes exist (set once a lane is made, never cleared), so the
    /// consumer looks at those only.
    live: [AtomicU64; WORDS],
    /// Slots per lane (checked: a power of two).
    capacity: usize,
}

// Lane *k*'s producer handle is reached only by the thread holding lane
// id *k* (`LanesTx`), whose id handover orders successive holders; its
// consumer handle only through the one `LanesRx`, which is `Send` but not
// `Sync` and takes `&mut self` to pop.
// SAFETY: each handle has one user at a time (above); values of `T: Send` move between threads.
unsafe impl<T: Send> Sync for Lanes<T> {}
// SAFETY: as for `Sync`: sharing or moving `Lanes` moves only `T: Send` values.
unsafe impl<T: Send> Send for Lanes<T> {}

/// The senders' side of [`Lanes`]: cloned freely, used from any thread.
pub(crate) struct LanesTx<T>(Arc<Lanes<T>>);

/// The consumer's side of [`Lanes`]: one per `Lanes`.
pub(crate) struct LanesRx<T> {
    lanes: Arc<Lanes<T>>,
    /// The lane to look at first next time (round robin).
    next: u32,
    /// The lane single pops take from while it has items, up to
    /// [`STREAK`] in a row, and how many it has given so far.
    current: u32,
    streak: u32,
}

/// Single pops taken from one lane in a row before the others get a turn:
/// moving to another lane costs its lines, so a busy lane is drained a
/// burst's worth at a time, as `pop_burst` does.
const STREAK: u32 = 32;

// SAFETY: `LanesRx` is the only user of every lane's consumer handle; moving
// it to another thread moves that role (`T: Send`).
unsafe impl<T: Send> Send for LanesRx<T> {}

impl<T> Clone for LanesTx<T> {
    fn clone(&self) -> Self {
        LanesTx(self.0.clone())
    }
}

/// Lanes of `capacity` slots each into one consumer.
///
/// # Errors
/// [`CapacityError`](super::CapacityError) when `capacity` is zero or not a
/// power of two.
pub(crate) fn lanes<T>(capacity: usize) -> Result<(LanesTx<T>, LanesRx<T>), super::CapacityError> {
    super::check_capacity(capacity)?;
    let lanes = Arc::new(Lanes {
        lanes: (0..MAX_LANES).map(|_| OnceLock::new()).collect(),
        live: [const { AtomicU64::new(0) }; WORDS],
        capacity,
    });
    Ok((
        LanesTx(lanes.clone()),
        LanesRx {
            lanes,
            next: 0,
            current: 0,
            streak: STREAK,
        },
    ))
}

impl<T> Lanes<T> {
    /// Lane `id`, made now if it does not exist yet.
    #[inline(always)]
    fn lane(&self, id: usize) -> &Lane<T> {
        match self.lanes[id].get() {
            Some(lane) => lane,
            None => self.make(id),
        }
    }

    #[cold]
    fn make(&self, id: usize) -> &Lane<T> {
        let lane = self.lanes[id].get_or_init(|| {
            let (tx, rx) = super::pair_checked::<T, Single, Single>(self.capacity);
            let ring = tx.shared.clone();
            Box::new(Lane {
                ring,
                tx: CachePadded::new(UnsafeCell::new(tx)),
                rx: CachePadded::new(UnsafeCell::new(rx)),
            })
        });
        // Release: the consumer's Acquire load of `live` then finds the
        // lane made (the `OnceLock` orders its own contents too).
        self.live[id / 64].fetch_or(1 << (id % 64), Ordering::Release);
        lane
    }

    /// Items queued in every lane, as seen now (from any thread).
    fn len(&self) -> usize {
        self.live_from(0)
            .filter_map(|id| self.lanes[id].get())
            .map(|lane| lane.ring.len())
            .sum()
    }

    /// The ids of the lanes that exist, from `start` round (a snapshot:
    /// the iterator borrows nothing).
    #[inline(always)]
    fn live_from(&self, start: u32) -> impl Iterator<Item = usize> + use<T> {
        let mut live = self.live().rotate_right(start);
        core::iter::from_fn(move || {
            if live == 0 {
                return None;
            }
            let id = (live.trailing_zeros() + start) as usize % MAX_LANES;
            live &= live - 1;
            Some(id)
        })
    }

    /// Every lane that exists, as a bitmap.
    #[inline(always)]
    fn live(&self) -> u128 {
        // Acquire: pairs with `make`'s Release.
        let lo = self.live[0].load(Ordering::Acquire);
        let hi = self.live[1].load(Ordering::Acquire);
        u128::from(hi) << 64 | u128::from(lo)
    }
}

impl<T> LanesTx<T> {
    /// The calling thread's lane's producer, made if need be; `None` when
    /// the thread has no lane id.
    ///
    /// # Safety
    /// The caller uses the reference for one push or burst, which moves
    /// items and runs none of its caller's code, and drops it before
    /// asking again: it is then the only reference to that producer.
    // A `&mut` from `&self`: what makes it unique is the thread's lane id,
    // which the borrow checker cannot see.
    #[allow(clippy::mut_from_ref)]
    #[inline(always)]
    unsafe fn producer(&self) -> Option<&mut Producer<T, Single>> {
        let id = ids::current()?;
        let lane = self.0.lane(id);
        // SAFETY: only the thread holding id `id` reaches lane `id`'s
        // producer, one handover at a time (module docs), and the caller
        // keeps this the only reference while it lives.
        Some(unsafe { &mut *lane.tx.get() })
    }

    /// Pushes `value` into the calling thread's lane.
    ///
    /// # Errors
    /// [`LaneError::Full`] when the lane is full, [`LaneError::NoLane`] when
    /// the thread has none; either way with the value.
    #[inline]
    pub(crate) fn push(&self, value: T) -> Result<(), LaneError<T>> {
        // SAFETY: one push, as `producer` asks.
        match unsafe { self.producer() } {
            Some(tx) => tx.push(value).map_err(|e| LaneError::Full(e.into_inner())),
            None => Err(LaneError::NoLane(value)),
        }
    }

    /// Moves as many items of `src` as fit into the calling thread's lane,
    /// front first; returns how many.
    ///
    /// # Errors
    /// `src`, untouched, when the thread has no lane.
    #[inline]
    pub(crate) fn push_burst<S: Source<T>>(&self, src: S) -> Result<usize, S> {
        // SAFETY: one burst out of a `Source` (sealed: a `Batch` or a slice
        // of `Copy` items, no code of the caller's), as `producer` asks.
        match unsafe { self.producer() } {
            Some(tx) => Ok(tx.push_burst(src)),
            None => Err(src),
        }
    }

    /// Items queued in every lane, as seen now.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

impl<T> LanesRx<T> {
    /// Lane `id`'s consumer, if the lane exists.
    #[inline(always)]
    fn consumer(&mut self, id: usize) -> Option<&mut Consumer<T, Single>> {
        let lane = self.lanes.lanes[id].get()?;
        // SAFETY: this `LanesRx` is the only user of every lane's consumer,
        // and `&mut self` makes this the only reference through it.
        Some(unsafe { &mut *lane.rx.get() })
    }

    /// Moves items from the lanes into `dst` until it is full or every
    /// lane is empty, starting one lane further round each call that
    /// fills `dst`; returns how many.
    #[inline]
    pub(crate) fn pop_burst<const N: usize>(&mut self, dst: &mut Batch<T, N>) -> usize {
        let mut got = 0;
        for id in self.lanes.live_from(self.next) {
            if dst.is_full() {
                break;
            }
            if let Some(rx) = self.consumer(id) {
                got += rx.pop_burst(&mut *dst);
                if dst.is_full() {
                    self.next = ((id + 1) % MAX_LANES) as u32;
                }
            }
        }
        got
    }

    /// Items queued in every lane, as seen now.
    pub(crate) fn len(&self) -> usize {
        self.lanes.len()
    }

    /// The next lane round from `self.next` that has an item ready; the
    /// one after it becomes the next to look at first.
    #[inline]
    fn ready(&mut self) -> Option<&mut Consumer<T, Single>> {
        let id = self
            .lanes
            .live_from(self.next)
            .find(|&id| self.consumer(id).is_some_and(|rx| rx.has_items()))?;
        self.next = ((id + 1) % MAX_LANES) as u32;
        self.consumer(id)
    }

    /// Pops one item: from the lane of the last pop while it has items,
    /// up to [`STREAK`] in a row, else from the lanes in turn.
    #[inline]
    pub(crate) fn pop(&mut self) -> Option<T> {
        if self.streak < STREAK {
            let id = self.current as usize;
            if let Some(v) = self.consumer(id).and_then(|rx| rx.pop()) {
                self.streak += 1;
                return Some(v);
            }
        }
        let v = self.ready()?.pop();
        // `ready` moved `next` one past the lane it found.
        self.current = (self.next + MAX_LANES as u32 - 1) % MAX_LANES as u32;
        self.streak = 1;
        v
    }

    /// Pops as many items as `dst` has room for from one lane that has
    /// some (the lanes in turn); returns how many.
    ///
    /// # Errors
    /// `dst`, untouched, when every lane is empty.
    #[inline]
    pub(crate) fn pop_burst_one<D: Sink<T>>(&mut self, dst: D) -> Result<usize, D> {
        match self.ready() {
            Some(rx) => Ok(rx.pop_burst(dst)),
            None => Err(dst),
        }
    }

    /// Hands every queued item to `f`, lane by lane, each lane in order.
    /// Pushes that complete meanwhile may be taken or left.
    pub(crate) fn drain(&mut self, mut f: impl FnMut(T)) {
        for id in self.lanes.live_from(0) {
            if let Some(rx) = self.consumer(id) {
                while let Some(v) = rx.pop() {
                    f(v);
                }
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Barrier;

    #[test]
    fn one_thread_fills_its_lane_and_is_pushed_back() {
        let (tx, mut rx) = lanes::<u32>(4).unwrap();
        for i in 0..4 {
            assert_eq!(tx.push(i), Ok(()));
        }
        assert_eq!(tx.push(4), Err(LaneError::Full(4)));
        assert_eq!(rx.len(), 4);
        let mut b = Batch::<u32, 8>::new();
        assert_eq!(rx.pop_burst(&mut b), 4);
        assert_eq!(b.drain().collect::<Vec<_>>(), [0, 1, 2, 3]);
        assert_eq!(rx.len(), 0);
        let mut burst = Batch::<u32, 8>::new();
        for i in 10..16 {
            burst.push(i).unwrap();
        }
        assert_eq!(tx.push_burst(&mut burst).ok(), Some(4));
        assert_eq!(burst.len(), 2, "what did not fit stays");
        let mut got = Vec::new();
        rx.drain(|v| got.push(v));
        assert_eq!(got, [10, 11, 12, 13]);
    }

    #[test]
    fn bad_capacity_is_refused() {
        assert!(lanes::<u8>(3).is_err());
        assert!(lanes::<u8>(0).is_err());
    }

    /// Many short-lived threads, more at once than there are cores, each
    /// sending a numbered run: every value arrives once, each thread's in
    /// order, and threads that come later reuse the ids (and lanes) of
    /// threads that have exited, behind what those left queued (a thread
    /// without a lane fails the test; there are more threads in all than
    /// ids).
    #[test]
    fn threads_come_and_go_and_every_value_arrives_in_order() {
        #[cfg(miri)]
        let (waves, per_wave, each) = (2u64, 3u64, 20u64);
        #[cfg(not(miri))]
        // More threads in all than there are ids: ids must come back.
        let (waves, per_wave, each) = (12u64, 12u64, 2_000u64);
        let (tx, mut rx) = lanes::<(u64, u64)>(64).unwrap();
        let mut last = vec![None::<u64>; (waves * per_wave) as usize];
        let mut got = 0u64;
        let mut batch = Batch::<(u64, u64), 32>::new();
        let mut take = |rx: &mut LanesRx<(u64, u64)>, last: &mut Vec<Option<u64>>| {
            let n = rx.pop_burst(&mut batch);
            for (sender, seq) in batch.drain() {
                let prev = last[sender as usize].replace(seq);
                assert_eq!(
                    prev.map_or(0, |p| p + 1),
                    seq,
                    "sender {sender} out of order"
                );
            }
            n as u64
        };
        for wave in 0..waves {
            let barrier = Arc::new(Barrier::new(per_wave as usize));
            let handles: Vec<_> = (0..per_wave)
                .map(|t| {
                    let (tx, barrier) = (tx.clone(), barrier.clone());
                    let sender = wave * per_wave + t;
                    std::thread::spawn(move || {
                        barrier.wait();
                        let mut seq = 0;
                        while seq < each {
                            match tx.push((sender, seq)) {
                                Ok(()) => seq += 1,
                                Err(LaneError::Full(_)) => std::thread::yield_now(),
                                Err(LaneError::NoLane(_)) => panic!("no lane for {sender}"),
                            }
                        }
                    })
                })
                .collect();
            while !handles.iter().all(|h| h.is_finished()) {
                got += take(&mut rx, &mut last);
            }
            for h in handles {
                h.join().unwrap();
            }
        }
        while got < waves * per_wave * each {
            let n = take(&mut rx, &mut last);
            assert!(n > 0, "values lost: {got} of {}", waves * per_wave * each);
            got += n;
        }
        assert!(last.iter().all(|l| *l == Some(each - 1)));
        assert_eq!(rx.len(), 0);
    }

    /// Items left in lanes when both sides are gone are dropped, once.
    #[test]
    fn queued_items_are_dropped_with_the_lanes() {
        let item = Arc::new(());
        let (tx, rx) = lanes::<Arc<()>>(8).unwrap();
        for _ in 0..5 {
            tx.push(item.clone()).unwrap();
        }
        assert_eq!(Arc::strong_count(&item), 6);
        drop((tx, rx));
        assert_eq!(Arc::strong_count(&item), 1);
    }
}
