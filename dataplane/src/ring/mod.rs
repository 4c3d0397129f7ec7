//! Bounded lock-free rings: the only links between lcores.
//!
//! DPDK's `rte_ring` in Rust's type system. A ring has a power-of-two
//! capacity and one of four modes, chosen by its constructor and carried in
//! the handle types:
//!
//! | constructor | producer handle | consumer handle |
//! | --- | --- | --- |
//! | [`spsc`] | `Producer<T, Single>`: `Send`, not `Clone`, not `Sync`, `&mut self` | `Consumer<T, Single>`: likewise |
//! | [`mpsc`] | `Producer<T, Multi>`: `Send + Sync + Clone`, `&self` | `Consumer<T, Single>` |
//! | [`spmc`] | `Producer<T, Single>` | `Consumer<T, Multi>` |
//! | [`mpmc`] | `Producer<T, Multi>` | `Consumer<T, Multi>` |
//!
//! The handle types are the contract. A single producer cannot be cloned:
//!
//! ```compile_fail
//! let (tx, _rx) = dataplane::ring::spsc::<u8>(2).unwrap();
//! let _second = tx.clone();
//! ```
//!
//! nor shared between threads (it is `Send`, not `Sync`):
//!
//! ```compile_fail
//! fn shared<T: Sync>(_: &T) {}
//! let (tx, _rx) = dataplane::ring::spsc::<u8>(2).unwrap();
//! shared(&tx);
//! ```
//!
//! while a multi-producer handle is both, and pushes through `&self`:
//!
//! ```
//! fn shared<T: Sync + Send + Clone>(_: &T) {}
//! let (tx, mut rx) = dataplane::ring::mpsc::<u8>(2)?;
//! shared(&tx);
//! std::thread::scope(|s| {
//!     s.spawn(|| tx.push(1));
//!     s.spawn(|| tx.push(2));
//! });
//! assert_eq!(rx.len(), 2);
//! # Ok::<(), dataplane::Error>(())
//! ```
//!
//! Operations come in DPDK's three sizes:
//!
//! - `push` / `pop`: one item. A full ring hands the item back
//!   ([`PushError::Full`]).
//! - `*_burst`: as many as fit, up to what was offered; returns the count.
//!   Items that did not fit stay with the caller, in order.
//! - `*_bulk`: all or nothing ([`BulkError`] says how much room there was).
//!
//! Bursts move items out of and into a [`Batch`] (or, for `T: Copy`, plain
//! slices; see [`Source`] and [`Sink`]). A single-producer, single-consumer
//! ring also has a zero-copy chunk API ([`Producer::write_chunk_uninit`],
//! [`Consumer::read_chunk`]) that exposes the slots themselves as two
//! slices around the wrap point.
//!
//! # Design
//!
//! The position protocol is rte_ring's (head/tail per side; a multi-threaded
//! side reserves with a CAS on its head), except that multiple producers
//! publish each reserved run with a stamp of its own instead of a shared
//! tail in reservation order; see `core.rs` for the protocol and each
//! synchronising edge. Each
//! side keeps a cached copy of the other side's tail (a single-threaded
//! side in its handle, as `rtrb` does; a multi-threaded side beside its
//! head), so it touches the other side's cache line only when the cached
//! copy says the ring is too full (or too empty) for the request. Handles
//! copy the read-only fields, and every position a side writes (its head,
//! its tail) lives on its own padded line: the tail is what the other side
//! polls, and a head beside it would bounce with every poll (docs/performance.md
//! has the measurements).
//!
//! A push never waits for another thread: a producer preempted between
//! reserving its slots and publishing them delays only what the consumers
//! see (the ring looks as if it ended at its run), not the other producers,
//! so threads that outnumber cores (thread pools, async tasks, overcommitted
//! machines) can share a multi-producer ring. Multiple consumers still
//! release their slots in reservation order, as rte_ring's default mode
//! does: a consumer preempted mid-pop holds up the consumers behind it
//! (they spin briefly, then yield their core).

mod batch;
mod core;
mod lanes;
mod transfer;

#[cfg(not(loom))]
mod chunk;
#[cfg(all(test, loom))]
mod loom_tests;
#[cfg(all(test, not(loom)))]
mod tests;

use ::core::fmt;
use ::core::marker::PhantomData;
use hugepages::sync::{Arc, Ordering};

pub use batch::{Batch, Drain, IntoIter};
#[cfg(not(loom))]
pub use chunk::{ChunkError, ReadChunk, ReadChunkIntoIter, WriteChunkUninit};
pub use transfer::{Sink, Source, UpTo};

pub(crate) use lanes::{LaneError, LanesRx, LanesTx, lanes};

use self::core::{Local, Shared, Want};

/// A ring capacity that is zero or not a power of two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("ring capacity {0} must be a non-zero power of two")]
pub struct CapacityError(pub usize);

impl CapacityError {
    /// Checks a ring capacity: non-zero and a power of two.
    ///
    /// # Errors
    /// [`CapacityError`] otherwise.
    pub fn check(capacity: usize) -> Result<(), CapacityError> {
        check_capacity(capacity)
    }
}

/// A full ring handing back the item that did not fit.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum PushError<T> {
    /// No free slot; here is the item back.
    Full(T),
}

impl<T> PushError<T> {
    /// The item that was not pushed.
    pub fn into_inner(self) -> T {
        match self {
            PushError::Full(v) => v,
        }
    }
}

impl<T> fmt::Debug for PushError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Full(..)")
    }
}

impl<T> fmt::Display for PushError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ring is full")
    }
}

impl<T> std::error::Error for PushError<T> {}

/// An all-or-nothing operation that could not be done in full; nothing
/// moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("bulk of {requested} refused: only {available} available")]
pub struct BulkError {
    /// Items offered (push) or asked for (pop).
    pub requested: usize,
    /// Free slots (push) or items (pop) seen at the time.
    pub available: usize,
}

mod sealed {
    pub trait Sealed {
        /// Several threads on this side.
        const MULTI: bool;
    }
}

/// How many threads may use one side of a ring: [`Single`] or [`Multi`].
pub trait Mode: sealed::Sealed + Send + 'static {}

/// One thread at a time on this side: no CAS, `&mut self` operations, and a
/// handle that cannot be cloned or shared.
#[derive(Debug)]
pub enum Single {}

/// Any number of threads on this side: CAS reservation, `&self`
/// operations, and a handle that is `Clone + Sync`.
#[derive(Debug)]
pub enum Multi {}

impl sealed::Sealed for Single {
    const MULTI: bool = false;
}
impl sealed::Sealed for Multi {
    const MULTI: bool = true;
}
impl Mode for Single {}
impl Mode for Multi {}

/// The sending side of a ring.
pub struct Producer<T, M: Mode> {
    shared: Arc<Shared<T>>,
    /// Position and cached bound; used by `Single` only.
    local: Local,
    /// A single producer must not be `Sync`; `Multi` opts back in below.
    _not_sync: PhantomData<(::core::cell::Cell<()>, M)>,
}

/// The receiving side of a ring.
pub struct Consumer<T, M: Mode> {
    shared: Arc<Shared<T>>,
    /// Position and cached bound; used by `Single` only.
    local: Local,
    _not_sync: PhantomData<(::core::cell::Cell<()>, M)>,
}

// SAFETY: a handle moves items of type `T` between threads, so `T: Send`
// suffices; the shared state is only reached through the position protocol.
unsafe impl<T: Send, M: Mode> Send for Producer<T, M> {}
// SAFETY: as above.
unsafe impl<T: Send, M: Mode> Send for Consumer<T, M> {}
// SAFETY: `Multi` handles keep no per-handle state and every operation takes
// `&self` and reserves slots by CAS, so concurrent use from several threads
// is the intended use.
unsafe impl<T: Send> Sync for Producer<T, Multi> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for Consumer<T, Multi> {}

fn check_capacity(capacity: usize) -> Result<(), CapacityError> {
    if capacity == 0 || !capacity.is_power_of_two() {
        return Err(CapacityError(capacity));
    }
    Ok(())
}

/// A ring's two ends.
pub type Pair<T, P, C> = (Producer<T, P>, Consumer<T, C>);

fn pair<T, P: Mode, C: Mode>(capacity: usize) -> Result<Pair<T, P, C>, CapacityError> {
    check_capacity(capacity)?;
    Ok(pair_checked(capacity))
}

/// A ring's two ends, for a capacity that passed [`check_capacity`].
fn pair_checked<T, P: Mode, C: Mode>(capacity: usize) -> Pair<T, P, C> {
    pair_with(capacity, <P as sealed::Sealed>::MULTI)
}

/// A ring's two ends; `stamped`: the producers publish runs (always, for
/// multiple producers).
fn pair_with<T, P: Mode, C: Mode>(capacity: usize, stamped: bool) -> Pair<T, P, C> {
    debug_assert!(check_capacity(capacity).is_ok());
    let stamped = stamped || <P as sealed::Sealed>::MULTI;
    let shared = Arc::new(Shared::new(capacity, stamped));
    let (pl, cl) = (shared.sp_local(), shared.sc_local());
    (
        Producer {
            shared: shared.clone(),
            local: pl,
            _not_sync: PhantomData,
        },
        Consumer {
            shared,
            local: cl,
            _not_sync: PhantomData,
        },
    )
}

/// A single-producer, single-consumer ring of `capacity` slots.
///
/// # Errors
/// [`CapacityError`] when `capacity` is zero or not a power of two.
pub fn spsc<T>(capacity: usize) -> Result<Pair<T, Single, Single>, CapacityError> {
    pair(capacity)
}

/// A single-producer, single-consumer ring whose producer publishes runs
/// as a multi-producer ring's do, when `T` fits beside a stamp (at most 8
/// bytes; otherwise this is [`spsc`]): a single push puts its item and
/// its stamp on one line, and the consumer learns of the item from that
/// line alone, where [`spsc`]'s consumer reads the producer's tail and
/// then the slot, two lines that each move between the cores.
///
/// The trade (docs/performance.md, target 7): a consumer that keeps up
/// with its producer, as a blocking channel's receiver does, takes single
/// items about twice as fast, and bursts move as fast; but a stream of
/// single items that fills the ring moves 16 bytes an item rather than 8,
/// about a fifth slower. `Channel::spsc`, whose receivers wait for items one by one, is
/// built on this; the data-plane rings stay on [`spsc`].
pub(crate) fn spsc_stamped<T>(capacity: usize) -> Result<Pair<T, Single, Single>, CapacityError> {
    check_capacity(capacity)?;
    Ok(pair_with(capacity, Shared::<T>::FITS_ENTRY))
}

/// A multi-producer, single-consumer ring of `capacity` slots.
///
/// # Errors
/// [`CapacityError`] when `capacity` is zero or not a power of two.
pub fn mpsc<T>(capacity: usize) -> Result<Pair<T, Multi, Single>, CapacityError> {
    pair(capacity)
}

/// A single-producer, multi-consumer ring of `capacity` slots.
///
/// # Errors
/// [`CapacityError`] when `capacity` is zero or not a power of two.
pub fn spmc<T>(capacity: usize) -> Result<Pair<T, Single, Multi>, CapacityError> {
    pair(capacity)
}

/// A multi-producer, multi-consumer ring of `capacity` slots.
///
/// # Errors
/// [`CapacityError`] when `capacity` is zero or not a power of two.
pub fn mpmc<T>(capacity: usize) -> Result<Pair<T, Multi, Multi>, CapacityError> {
    pair(capacity)
}

// ---- operations common to every mode ---------------------------------------

impl<T, M: Mode> Producer<T, M> {
    /// The ring's capacity.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.shared.capacity()
    }

    /// Items in the ring now (a snapshot: other threads move on).
    #[inline]
    pub fn len(&self) -> usize {
        self.shared.len()
    }

    /// Whether the ring holds no items now.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Free slots now (a snapshot).
    #[inline]
    pub fn free(&self) -> usize {
        self.capacity() - self.len()
    }

    /// Whether every consumer handle has been dropped: pushed items would
    /// never be read.
    pub fn is_abandoned(&self) -> bool {
        self.shared.handles(false).load(Ordering::Acquire) == 0
    }
}

impl<T, M: Mode> Consumer<T, M> {
    /// The ring's capacity.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.shared.capacity()
    }

    /// Items in the ring now (a snapshot: other threads move on).
    #[inline]
    pub fn len(&self) -> usize {
        self.shared.len()
    }

    /// Whether the ring holds no items now.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether every producer handle has been dropped: once the ring is
    /// empty, no item will ever arrive.
    pub fn is_abandoned(&self) -> bool {
        self.shared.handles(true).load(Ordering::Acquire) == 0
    }
}

impl<T, M: Mode> Drop for Producer<T, M> {
    fn drop(&mut self) {
        // Release: our pushes happen-before a consumer that sees the count
        // reach zero (it then drains what is left).
        self.shared.handles(true).fetch_sub(1, Ordering::Release);
    }
}

impl<T, M: Mode> Drop for Consumer<T, M> {
    fn drop(&mut self) {
        self.shared.handles(false).fetch_sub(1, Ordering::Release);
    }
}

impl<T, M: Mode> fmt::Debug for Producer<T, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("capacity", &self.capacity())
            .field("len", &self.len())
            .field("local", &self.local)
            .finish()
    }
}

impl<T, M: Mode> fmt::Debug for Consumer<T, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("capacity", &self.capacity())
            .field("len", &self.len())
            .field("local", &self.local)
            .finish()
    }
}

impl<T> Clone for Producer<T, Multi> {
    fn clone(&self) -> Self {
        // Relaxed: a new handle needs no ordering, like `Arc::clone`.
        self.shared.handles(true).fetch_add(1, Ordering::Relaxed);
        Producer {
            shared: self.shared.clone(),
            local: self.local,
            _not_sync: PhantomData,
        }
    }
}

impl<T> Clone for Consumer<T, Multi> {
    fn clone(&self) -> Self {
        self.shared.handles(false).fetch_add(1, Ordering::Relaxed);
        Consumer {
            shared: self.shared.clone(),
            local: self.local,
            _not_sync: PhantomData,
        }
    }
}

// ---- single producer --------------------------------------------------------

impl<T> Producer<T, Single> {
    /// Pushes one item, or hands it back when the ring is full.
    ///
    /// # Errors
    /// [`PushError::Full`] with the item.
    #[inline]
    pub fn push(&mut self, value: T) -> Result<(), PushError<T>> {
        if self.shared.sp_reserve(&mut self.local, Want::Exactly(1)) == 0 {
            return Err(PushError::Full(value));
        }
        let pos = self.local.pos;
        // SAFETY: `pos` is below the limit just checked and only this handle
        // writes.
        unsafe { self.shared.write_one(pos, value) };
        self.local.pos = pos.wrapping_add(1);
        self.shared.publish_sp(pos, 1);
        Ok(())
    }

    /// Pushes as many items of `src` as fit, front first; returns how many.
    /// The rest stay in `src`.
    #[inline]
    pub fn push_burst<S: Source<T>>(&mut self, mut src: S) -> usize {
        let n = self
            .shared
            .sp_reserve(&mut self.local, Want::UpTo(src.remaining()));
        self.sp_commit(n, &mut src);
        n
    }

    /// Pushes every item of `src`, or none.
    ///
    /// # Errors
    /// [`BulkError`] when they do not all fit; `src` is untouched.
    #[inline]
    pub fn push_bulk<S: Source<T>>(&mut self, mut src: S) -> Result<(), BulkError> {
        let want = src.remaining();
        let n = self.shared.sp_reserve(&mut self.local, Want::Exactly(want));
        if n == 0 && want != 0 {
            return Err(BulkError {
                requested: want,
                available: self.local.limit.wrapping_sub(self.local.pos),
            });
        }
        self.sp_commit(n, &mut src);
        Ok(())
    }

    #[inline(always)]
    fn sp_commit<S: Source<T>>(&mut self, n: usize, src: &mut S) {
        if n == 0 {
            return;
        }
        // SAFETY: `sp_reserve` granted `pos..pos + n`; `n <= src.remaining()`.
        unsafe { self.shared.write_slots(self.local.pos, n, src) };
        let pos = self.local.pos;
        self.local.pos = pos.wrapping_add(n);
        self.shared.publish_sp(pos, n);
    }
}

// ---- multi producer ---------------------------------------------------------

impl<T> Producer<T, Multi> {
    /// Pushes one item, or hands it back when the ring is full.
    ///
    /// # Errors
    /// [`PushError::Full`] with the item.
    #[inline]
    pub fn push(&self, value: T) -> Result<(), PushError<T>> {
        let (pos, n) = self.shared.mp_reserve(Want::Exactly(1));
        if n == 0 {
            return Err(PushError::Full(value));
        }
        // SAFETY: the CAS in `mp_reserve` gave us `pos` alone.
        unsafe { self.shared.write_one(pos, value) };
        self.shared.publish_run(pos, 1);
        Ok(())
    }

    /// Pushes as many items of `src` as fit, front first; returns how many.
    /// The rest stay in `src`.
    #[inline]
    pub fn push_burst<S: Source<T>>(&self, mut src: S) -> usize {
        let (pos, n) = self.shared.mp_reserve(Want::UpTo(src.remaining()));
        self.mp_commit(pos, n, &mut src);
        n
    }

    /// Pushes every item of `src`, or none.
    ///
    /// # Errors
    /// [`BulkError`] when they do not all fit; `src` is untouched.
    #[inline]
    pub fn push_bulk<S: Source<T>>(&self, mut src: S) -> Result<(), BulkError> {
        let want = src.remaining();
        let (pos, n) = self.shared.mp_reserve(Want::Exactly(want));
        if n == 0 && want != 0 {
            return Err(BulkError {
                requested: want,
                available: self.free(),
            });
        }
        self.mp_commit(pos, n, &mut src);
        Ok(())
    }

    #[inline(always)]
    fn mp_commit<S: Source<T>>(&self, pos: usize, n: usize, src: &mut S) {
        if n == 0 {
            return;
        }
        // SAFETY: the CAS in `mp_reserve` gave us `pos..pos + n` alone;
        // `n <= src.remaining()`.
        unsafe { self.shared.write_slots(pos, n, src) };
        self.shared.publish_run(pos, n);
    }
}

// ---- single consumer --------------------------------------------------------

impl<T> Consumer<T, Single> {
    /// Pops one item, or `None` when the ring is empty.
    #[inline]
    pub fn pop(&mut self) -> Option<T> {
        if self.shared.sc_reserve(&mut self.local, Want::Exactly(1)) == 0 {
            return None;
        }
        let pos = self.local.pos;
        // SAFETY: `pos` is below the published tail just checked and only
        // this handle reads.
        let value = unsafe { self.shared.read_one(pos) };
        self.local.pos = pos.wrapping_add(1);
        Shared::<T>::publish_single(&self.shared.cons, self.local.pos);
        Some(value)
    }

    /// Pops as many items as `dst` has room for and the ring holds;
    /// returns how many.
    #[inline]
    pub fn pop_burst<D: Sink<T>>(&mut self, mut dst: D) -> usize {
        let n = self
            .shared
            .sc_reserve(&mut self.local, Want::UpTo(dst.spare()));
        self.sc_commit(n, &mut dst);
        n
    }

    /// Pops exactly `n` items into `dst`, or none.
    ///
    /// # Errors
    /// [`BulkError`] when the ring holds fewer than `n` items or `dst` has
    /// room for fewer; nothing moved.
    #[inline]
    pub fn pop_bulk<D: Sink<T>>(&mut self, mut dst: D, n: usize) -> Result<(), BulkError> {
        if n > dst.spare() {
            return Err(BulkError {
                requested: n,
                available: dst.spare(),
            });
        }
        let got = self.shared.sc_reserve(&mut self.local, Want::Exactly(n));
        if got == 0 && n != 0 {
            return Err(BulkError {
                requested: n,
                available: self.local.limit.wrapping_sub(self.local.pos),
            });
        }
        self.sc_commit(got, &mut dst);
        Ok(())
    }

    #[inline(always)]
    fn sc_commit<D: Sink<T>>(&mut self, n: usize, dst: &mut D) {
        if n == 0 {
            return;
        }
        // SAFETY: `sc_reserve` found `pos..pos + n` published; `n <= spare`.
        unsafe { self.shared.read_slots(self.local.pos, n, dst) };
        self.local.pos = self.local.pos.wrapping_add(n);
        Shared::<T>::publish_single(&self.shared.cons, self.local.pos);
    }
}

impl<T> Consumer<T, Single> {
    /// Whether at least one item is ready to pop (refreshing the cached
    /// view only when it shows none).
    #[inline]
    pub(crate) fn has_items(&mut self) -> bool {
        self.shared.sc_reserve(&mut self.local, Want::UpTo(1)) != 0
    }

    /// Pops every item whose slot some producer had reserved when this was
    /// called, in ring order, waiting (spinning, then yielding) for pushes
    /// still in flight to be published. A multi-producer ring publishes
    /// each push on its own, so an item whose push has returned may still be
    /// hidden behind an earlier reservation; this is how a consumer makes
    /// sure it has everything sent so far.
    pub(crate) fn drain_reserved(&mut self, mut f: impl FnMut(T)) {
        let end = self.shared.reserved_end();
        let mut spins = 0u32;
        while self.local.pos != end {
            match self.pop() {
                Some(v) => {
                    f(v);
                    spins = 0;
                }
                None if spins < self::core::PUBLISH_SPINS => {
                    spins += 1;
                    hugepages::sync::spin_loop();
                }
                None => hugepages::sync::yield_now(),
            }
        }
    }
}

// ---- multi consumer ---------------------------------------------------------

impl<T> Consumer<T, Multi> {
    /// Pops one item, or `None` when the ring is empty.
    #[inline]
    pub fn pop(&self) -> Option<T> {
        let (pos, n) = self.shared.mc_reserve(Want::Exactly(1));
        if n == 0 {
            return None;
        }
        // SAFETY: the CAS in `mc_reserve` gave us the published item at `pos`.
        let value = unsafe { self.shared.read_one(pos) };
        Shared::<T>::publish_multi(&self.shared.cons, pos, pos.wrapping_add(1));
        Some(value)
    }

    /// Pops as many items as `dst` has room for and the ring holds;
    /// returns how many.
    #[inline]
    pub fn pop_burst<D: Sink<T>>(&self, mut dst: D) -> usize {
        let (pos, n) = self.shared.mc_reserve(Want::UpTo(dst.spare()));
        self.mc_commit(pos, n, &mut dst);
        n
    }

    /// Pops exactly `n` items into `dst`, or none.
    ///
    /// # Errors
    /// [`BulkError`] when the ring holds fewer than `n` items or `dst` has
    /// room for fewer; nothing moved.
    #[inline]
    pub fn pop_bulk<D: Sink<T>>(&self, mut dst: D, n: usize) -> Result<(), BulkError> {
        if n > dst.spare() {
            return Err(BulkError {
                requested: n,
                available: dst.spare(),
            });
        }
        let (pos, got) = self.shared.mc_reserve(Want::Exactly(n));
        if got == 0 && n != 0 {
            return Err(BulkError {
                requested: n,
                available: self.len(),
            });
        }
        self.mc_commit(pos, got, &mut dst);
        Ok(())
    }

    #[inline(always)]
    fn mc_commit<D: Sink<T>>(&self, pos: usize, n: usize, dst: &mut D) {
        if n == 0 {
            return;
        }
        // SAFETY: the CAS in `mc_reserve` gave us `pos..pos + n`, published;
        // `n <= spare`.
        unsafe { self.shared.read_slots(pos, n, dst) };
        Shared::<T>::publish_multi(&self.shared.cons, pos, pos.wrapping_add(n));
    }
}
