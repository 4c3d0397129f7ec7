//! Lcore cache slots: which per-thread cache of every mempool a thread owns.
//!
//! Every [`Mempool`](crate::mempool::Mempool) has [`MAX_LCORE_SLOTS`] cache
//! slots, like `rte_mempool`'s per-lcore caches. A thread that holds slot
//! *k* (a [`SlotGuard`] from [`claim`]) is the only one that touches cache
//! *k* of any pool, so the cache needs no atomic read-modify-write on its
//! fast path. A thread without a slot (a control thread, a thread pool
//! worker) is served by the pool's shared store directly: safe from a
//! non-lcore thread, without the cache, as DPDK says.
//!
//! The framework's lcore launcher claims one slot per lcore thread;
//! application threads may claim their own.
//!
//! ```
//! use hugepages::slot;
//!
//! std::thread::spawn(|| {
//!     assert_eq!(slot::current(), None);
//!     let guard = slot::claim()?;
//!     assert_eq!(slot::current(), Some(guard.id()));
//!     // A thread holds at most one slot.
//!     assert!(slot::claim().is_err());
//!     drop(guard);
//!     assert_eq!(slot::current(), None);
//!     Ok::<(), hugepages::Error>(())
//! })
//! .join()
//! .unwrap()?;
//! # Ok::<(), hugepages::Error>(())
//! ```

use crate::Error;
use crate::sync::{AtomicU64, Ordering};
use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;

/// Cache slots per process, and so per mempool (`RTE_MAX_LCORE` is 128 in
/// DPDK's default x86 build config).
#[cfg(not(loom))]
pub const MAX_LCORE_SLOTS: usize = 128;
/// Cache slots per process: a handful under loom, whose models track every
/// atomic and cell of every cache.
#[cfg(loom)]
pub const MAX_LCORE_SLOTS: usize = 4;

const WORDS: usize = MAX_LCORE_SLOTS.div_ceil(64);
/// "No slot" in the thread-local; never a valid index.
const NONE: u32 = u32::MAX;

/// The index of a cache slot, below [`MAX_LCORE_SLOTS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlotId(u32);

impl SlotId {
    /// The slot's index, below [`MAX_LCORE_SLOTS`].
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for SlotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "slot{}", self.0)
    }
}

/// A bitmap of claimed slots.
///
/// Orderings: a claim is an Acquire RMW and a release a Release RMW on the
/// same word, so the next owner of a slot sees every write the previous
/// owner made to that slot's caches (and the RMWs of other claimers in
/// between continue the release sequence).
pub(crate) struct SlotTable {
    words: [AtomicU64; WORDS],
}

impl SlotTable {
    #[cfg(any(test, loom))]
    pub(crate) fn new() -> Self {
        Self {
            words: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Takes the lowest free slot.
    pub(crate) fn claim(&self) -> Option<SlotId> {
        for (w, word) in self.words.iter().enumerate() {
            let mut cur = word.load(Ordering::Relaxed);
            while cur != u64::MAX {
                let bit = (!cur).trailing_zeros();
                if w * 64 + bit as usize >= MAX_LCORE_SLOTS {
                    break;
                }
                // Acquire: pairs with the Release in `release`, handing the
                // slot's caches over from the previous owner.
                match word.compare_exchange_weak(
                    cur,
                    cur | 1 << bit,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Some(SlotId(w as u32 * 64 + bit)),
                    Err(now) => cur = now,
                }
            }
        }
        None
    }

    /// Gives `id` back.
    pub(crate) fn release(&self, id: SlotId) {
        let (w, bit) = (id.index() / 64, id.index() % 64);
        // Release: pairs with the Acquire in `claim` (see the type's docs).
        let prev = self.words[w].fetch_and(!(1 << bit), Ordering::Release);
        debug_assert!(prev & 1 << bit != 0, "{id} released but not claimed");
    }
}

#[cfg(not(loom))]
static TABLE: SlotTable = SlotTable {
    words: [const { AtomicU64::new(0) }; WORDS],
};
#[cfg(not(loom))]
fn table() -> &'static SlotTable {
    &TABLE
}

#[cfg(loom)]
loom::lazy_static! {
    static ref TABLE: SlotTable = SlotTable::new();
}
#[cfg(loom)]
fn table() -> &'static SlotTable {
    &TABLE
}

// The slot of this thread. `const` initialiser and no destructor: a lookup
// is one TLS load, and it stays readable while other thread-locals are
// destroyed (a pool put from a TLS destructor finds NONE or a live slot).
#[cfg(not(loom))]
std::thread_local! {
    static CURRENT: Cell<u32> = const { Cell::new(NONE) };
}
#[cfg(loom)]
loom::thread_local! {
    static CURRENT: Cell<u32> = Cell::new(NONE);
}

/// The slot the calling thread holds, if any.
#[inline]
pub fn current() -> Option<SlotId> {
    let id = CURRENT.with(Cell::get);
    (id != NONE).then_some(SlotId(id))
}

/// Gives the calling thread a slot of its own until the guard drops.
///
/// # Errors
///
/// [`Error::SlotAlreadyClaimed`] when the thread holds one already;
/// [`Error::SlotsExhausted`] when all [`MAX_LCORE_SLOTS`] are held.
pub fn claim() -> Result<SlotGuard, Error> {
    if let Some(id) = current() {
        return Err(Error::SlotAlreadyClaimed { slot: id.index() });
    }
    let id = table().claim().ok_or(Error::SlotsExhausted {
        max: MAX_LCORE_SLOTS,
    })?;
    CURRENT.with(|c| c.set(id.0));
    Ok(SlotGuard {
        id,
        _not_send: PhantomData,
    })
}

/// Ownership of a cache slot by the current thread; releases it on drop.
///
/// Not `Send`: the slot is recorded in the owning thread's thread-local,
/// and ownership of every pool's cache *k* rests on exactly one thread
/// finding *k* there. Objects left in the slot's caches stay there (counted
/// as available) for the slot's next owner; call
/// [`Mempool::flush_cache`](crate::mempool::Mempool::flush_cache) first to
/// hand them to other threads. A guard that is leaked keeps its slot.
#[must_use = "the slot is released when the guard is dropped"]
pub struct SlotGuard {
    id: SlotId,
    _not_send: PhantomData<*const ()>,
}

impl SlotGuard {
    /// The slot held.
    pub fn id(&self) -> SlotId {
        self.id
    }
}

impl fmt::Debug for SlotGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlotGuard").field("id", &self.id).finish()
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(NONE));
        table().release(self.id);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn table_hands_out_every_slot_once() {
        let t = SlotTable::new();
        let ids: Vec<SlotId> = std::iter::from_fn(|| t.claim()).collect();
        assert_eq!(ids.len(), MAX_LCORE_SLOTS);
        let mut idx: Vec<usize> = ids.iter().map(|i| i.index()).collect();
        idx.sort_unstable();
        idx.dedup();
        assert_eq!(idx.len(), MAX_LCORE_SLOTS);
        assert!(t.claim().is_none(), "a 129th slot");
        t.release(ids[70]);
        assert_eq!(t.claim(), Some(ids[70]));
    }

    #[test]
    fn claim_is_per_thread_and_released_on_drop() {
        std::thread::spawn(|| {
            assert_eq!(current(), None);
            let g = claim().expect("a free slot");
            let id = g.id();
            assert_eq!(current(), Some(id));
            match claim() {
                Err(Error::SlotAlreadyClaimed { slot }) => assert_eq!(slot, id.index()),
                other => panic!("second claim: {other:?}"),
            }
            // Another thread gets a different slot while this one holds it.
            let other = std::thread::spawn(|| claim().map(|g| g.id()).ok())
                .join()
                .unwrap();
            assert_ne!(other, Some(id));
            drop(g);
            assert_eq!(current(), None);
        })
        .join()
        .unwrap();
    }
}
