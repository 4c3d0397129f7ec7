//! The backend's mbuf pools: one `rte_mempool` per queue, on the port's
//! socket, or one per socket shared by the ports opened with
//! `PortConfig::shared_pool`; freed only once no queue uses it and every
//! mbuf is back.
//!
//! A pool outlives its port when mbufs from it are still out (held by the
//! application, or in flight in another port's queue): freeing it then
//! would let those mbufs be freed into unmapped memory. Such a pool waits,
//! and every later port close and [`shutdown`](super::shutdown) tries
//! again. The registry keeps the last [`FREED_KEPT`] freed pools with the
//! count they were freed at, so that tests and operators can check that
//! every mbuf came home.

use super::eal;
use super::status::{PoolState, PoolStatus};
use crate::net::{PortId, QueueId};
use crate::{Error, Result};
use dpdk_sys as sys;
use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Freed pools remembered by [`pools`](super::pools) (256, also in its
/// docs).
pub const FREED_KEPT: usize = 256;

/// A pool pointer that may move between threads: the pool is
/// thread-safe, and the registry only touches it under its lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PoolPtr(pub(super) NonNull<sys::rte_mempool>);

// SAFETY: rte_mempool operations are thread-safe (multi-producer and
// -consumer rings behind per-lcore caches); the pointer is freed only
// under the registry lock, once no queue uses it.
unsafe impl Send for PoolPtr {}

struct Entry {
    status: PoolStatus,
    ptr: Option<PoolPtr>,
    /// Queues using the pool (one for a queue's own pool).
    users: u32,
    /// Mbufs promised to those queues (each its receive ring and a
    /// burst): a shared pool takes another queue only while it has room.
    reserved: u32,
    /// For a shared pool, what another port must ask for to share it.
    shared: Option<SharedKey>,
}

/// What makes two ports' queues able to share a pool: the socket its
/// memory is on and the per-lcore cache size (the data room is always
/// the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SharedKey {
    socket: i32,
    cache: u32,
}

static POOLS: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

fn lock() -> MutexGuard<'static, Vec<Entry>> {
    // Every write under the lock is a push, a field store or a retain, so
    // a panic elsewhere cannot leave the list inconsistent.
    POOLS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Creates the pool of one queue (`rte_pktmbuf_pool_create`, the default
/// data room, no private area).
pub(super) fn create(
    port: PortId,
    queue: QueueId,
    count: u32,
    cache: u32,
    socket: i32,
) -> Result<PoolPtr> {
    let mut pools = lock();
    make(&mut pools, port, queue, count, cache, socket, None, 0)
}

/// The shared pool of `socket` with `cache`, for one more queue that
/// needs `need` mbufs of it: the existing one, or a new one of `count`
/// mbufs made for `port`'s `queue`. Refused, with the reason, when the
/// existing pool's mbufs are all promised to the queues already on it.
pub(super) fn shared(
    port: PortId,
    queue: QueueId,
    count: u32,
    need: u32,
    cache: u32,
    socket: i32,
) -> Result<PoolPtr> {
    let key = SharedKey { socket, cache };
    // Held across the creation, so that two ports opening at once share
    // one pool rather than each making its own.
    let mut pools = lock();
    if let Some(e) = pools
        .iter_mut()
        .find(|e| e.shared == Some(key) && e.status.state == PoolState::InUse)
        && let Some(p) = e.ptr
    {
        if e.reserved.saturating_add(need) > e.status.size {
            return Err(Error::Config(format!(
                "the shared pool {} has {} mbufs, {} of them promised to the {} queues on it; \
                 queue {} of port {} needs {need} more: give every port the total of all \
                 their queues as shared_pool",
                e.status.name, e.status.size, e.reserved, e.users, queue.0, port.0
            )));
        }
        e.users += 1;
        e.reserved += need;
        return Ok(p);
    }
    make(
        &mut pools,
        port,
        queue,
        count,
        cache,
        socket,
        Some(key),
        need,
    )
}

/// Makes a pool (`rte_pktmbuf_pool_create`) and registers it with one
/// user, which is promised `reserved` of its mbufs.
#[allow(clippy::too_many_arguments)]
fn make(
    pools: &mut Vec<Entry>,
    port: PortId,
    queue: QueueId,
    count: u32,
    cache: u32,
    socket: i32,
    shared: Option<SharedKey>,
    reserved: u32,
) -> Result<PoolPtr> {
    static GENERATION: AtomicU32 = AtomicU32::new(0);
    // Relaxed: only uniqueness of the name matters.
    let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
    // At most 25 characters (RTE_MEMPOOL_NAMESIZE - 1): "dp" + 5 + "q" +
    // 5 + "g" + 10 = 23 for a queue's pool, "dps" + 11 + "g" + 10 = 25
    // for a shared one.
    let name = match shared {
        None => format!("dp{}q{}g{generation}", port.0, queue.0),
        Some(key) => format!("dps{}g{generation}", key.socket),
    };
    let cname = CString::new(name.as_str()).map_err(|_| Error::Config("pool name".into()))?;
    // SAFETY: a NUL-terminated name; DPDK copies it.
    let raw = unsafe {
        sys::rte_pktmbuf_pool_create(
            cname.as_ptr(),
            count,
            cache,
            0,
            sys::RTE_MBUF_DEFAULT_BUF_SIZE as u16,
            socket,
        )
    };
    let Some(ptr) = NonNull::new(raw) else {
        let errno = eal::rte_errno();
        return Err(Error::io(
            format!(
                "rte_pktmbuf_pool_create({name}, {count} mbufs, cache {cache}, socket {socket})"
            ),
            std::io::Error::other(format!("{} (rte_errno {errno})", eal::strerror(errno))),
        ));
    };
    let ptr = PoolPtr(ptr);
    pools.push(Entry {
        status: PoolStatus {
            name,
            port,
            queue,
            size: count,
            available: avail(ptr),
            state: PoolState::InUse,
            shared: shared.is_some(),
        },
        ptr: Some(ptr),
        users: 1,
        reserved,
        shared,
    });
    Ok(ptr)
}

/// Free mbufs of a live pool.
pub(super) fn avail(ptr: PoolPtr) -> u32 {
    // SAFETY: `ptr` is a live pool (callers hold it through a queue or the
    // registry lock).
    unsafe { sys::rte_mempool_avail_count(ptr.0.as_ptr()) }
}

/// A window of DPDK's memory around every object of a live pool:
/// `1 << shift` bytes from `base`, so that an address `a` lies in it when
/// `(a - base) >> shift == 0` (wrapping: below `base` is outside too).
/// The window lies inside the memseg list that holds the pool, a range
/// DPDK keeps reserved for its own memory (pages it frees are mapped
/// again as inaccessible), so no native pool is ever in it: an mbuf
/// whose address is in the window is DPDK's (this pool's or another DPDK
/// pool's), told without reading its header, by a subtraction and an OR
/// a pointer that vectorise with SSE2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DpdkWindow {
    pub(super) base: usize,
    pub(super) shift: u32,
}

impl DpdkWindow {
    /// A window no mbuf is in (`base` 0, `shift` 0: only address 0).
    pub(super) const NONE: DpdkWindow = DpdkWindow { base: 0, shift: 0 };

    /// The largest window inside `[lo, hi)` around `[start, end)`, so
    /// that the other DPDK pools in the same memseg list (another port's,
    /// when ports do not share one) pass the check too: the largest power
    /// of two the list holds, starting at `start`, or lower where it would
    /// run past `hi`.
    pub(super) fn around(start: usize, end: usize, lo: usize, hi: usize) -> Option<DpdkWindow> {
        if start >= end || start < lo || end > hi {
            return None;
        }
        let shift = usize::BITS - 1 - (hi - lo).leading_zeros();
        let size = 1usize << shift;
        if size < end - start {
            return None;
        }
        // In [lo, hi - size] (size <= hi - lo), at or below `start`, and
        // reaching `end` (size >= end - start).
        let base = start.min(hi - size);
        Some(DpdkWindow { base, shift })
    }

    /// Whether every one of `addrs` is in the window.
    #[inline(always)]
    pub(super) fn holds_all(&self, addrs: impl Iterator<Item = usize>) -> bool {
        let mut offsets = 0usize;
        for a in addrs {
            offsets |= a.wrapping_sub(self.base);
        }
        // `shift` < 64: `around` makes `1 << shift` a window's size.
        offsets >> self.shift == 0
    }
}

/// The window of DPDK memory around `ptr`'s objects ([`DpdkWindow`]), or
/// why there is none: its chunks are not all in one memseg list of DPDK's
/// own memory, or the list has no power of two that holds them.
pub(super) fn dpdk_window(ptr: PoolPtr) -> std::result::Result<DpdkWindow, String> {
    /// The lowest and highest chunk addresses seen.
    struct Hull {
        start: usize,
        end: usize,
    }
    unsafe extern "C" fn visit(
        _mp: *mut sys::rte_mempool,
        opaque: *mut std::ffi::c_void,
        memhdr: *mut sys::rte_mempool_memhdr,
        _idx: u32,
    ) {
        // SAFETY: `opaque` is the `Hull` that `dpdk_window` passes, alive
        // and not otherwise borrowed during the walk.
        let hull = unsafe { &mut *opaque.cast::<Hull>() };
        // SAFETY: DPDK hands each chunk header of the live pool.
        let hdr = unsafe { &*memhdr };
        let start = hdr.addr as usize;
        hull.start = hull.start.min(start);
        hull.end = hull.end.max(start.saturating_add(hdr.len));
    }
    let mut hull = Hull {
        start: usize::MAX,
        end: 0,
    };
    // SAFETY: a live pool (callers hold it through a queue); `visit` only
    // reads each chunk header and writes `hull`, which outlives the walk.
    unsafe {
        sys::rte_mempool_mem_iter(
            ptr.0.as_ptr(),
            Some(visit),
            (&raw mut hull).cast::<std::ffi::c_void>(),
        )
    };
    if hull.start >= hull.end {
        return Err("the pool has no memory chunks".into());
    }
    let list = |addr: usize| {
        // SAFETY: any address may be looked up; the list, when found, is
        // one of the EAL's, alive until rte_eal_cleanup (after every port
        // closes).
        let msl = unsafe { sys::rte_mem_virt2memseg_list(addr as *const std::ffi::c_void) };
        NonNull::new(msl)
    };
    let span = format!("{:#x}..{:#x}", hull.start, hull.end);
    let msl = list(hull.start).ok_or_else(|| format!("{span} is in no memseg list"))?;
    if list(hull.end - 1) != Some(msl) {
        return Err(format!("{span} spans more than one memseg list"));
    }
    // SAFETY: a live memseg list of the EAL (above).
    let msl = unsafe { msl.as_ref() };
    if msl.external != 0 {
        return Err(format!("{span} is in external memory"));
    }
    // SAFETY: `base_va` and `addr_64` are the same 64 bits.
    let lo = unsafe { msl.__bindgen_anon_1.addr_64 } as usize;
    let hi = lo.saturating_add(msl.len);
    DpdkWindow::around(hull.start, hull.end, lo, hi)
        .ok_or_else(|| format!("{span} does not fit a power of two of its list {lo:#x}..{hi:#x}"))
}

/// The port of these pools (one entry per queue, each queue promised
/// `need` mbufs) has closed: a pool no
/// other queue uses any more is freed if every mbuf is back, else left
/// draining. Then draining pools of earlier ports are tried again.
pub(super) fn release(ptrs: &[PoolPtr], need: u32) {
    let mut pools = lock();
    for e in pools.iter_mut() {
        let Some(p) = e.ptr else { continue };
        let queues = ptrs.iter().filter(|&&q| q == p).count() as u32;
        if queues == 0 || e.status.state != PoolState::InUse {
            continue;
        }
        e.users = e.users.saturating_sub(queues);
        e.reserved = e.reserved.saturating_sub(queues.saturating_mul(need));
        if e.users == 0 {
            e.status.state = PoolState::Draining;
        }
    }
    free_drained(&mut pools);
}

/// Frees every draining pool whose mbufs are all back; returns how many
/// are still draining.
pub(super) fn retry() -> usize {
    let mut pools = lock();
    free_drained(&mut pools)
}

fn free_drained(pools: &mut Vec<Entry>) -> usize {
    let mut waiting = 0;
    for e in pools.iter_mut() {
        let Some(p) = e.ptr else { continue };
        if e.status.state != PoolState::Draining {
            continue;
        }
        let available = avail(p);
        e.status.available = available;
        if available < e.status.size {
            waiting += 1;
            continue;
        }
        // SAFETY: every mbuf is back in the pool (none can be out: the
        // count includes the per-lcore caches), and no queue uses the
        // pool since its port closed.
        unsafe { sys::rte_mempool_free(p.0.as_ptr()) };
        e.ptr = None;
        e.status.state = PoolState::Freed;
    }
    // Bound the history of freed pools.
    let freed = pools
        .iter()
        .filter(|e| e.status.state == PoolState::Freed)
        .count();
    if freed > FREED_KEPT {
        let mut drop = freed - FREED_KEPT;
        pools.retain(|e| {
            if drop > 0 && e.status.state == PoolState::Freed {
                drop -= 1;
                false
            } else {
                true
            }
        });
    }
    waiting
}

/// Every pool the backend has made and not forgotten, oldest first, with
/// live counts.
pub(super) fn statuses() -> Vec<PoolStatus> {
    let mut pools = lock();
    for e in pools.iter_mut() {
        if let Some(p) = e.ptr {
            e.status.available = avail(p);
        }
    }
    pools.iter().map(|e| e.status.clone()).collect()
}

/// Pools still holding memory (in use or draining), for the shutdown
/// report: their names and the mbufs still out.
pub(super) fn leaked() -> Vec<(String, u32)> {
    let pools = lock();
    pools
        .iter()
        .filter_map(|e| {
            let p = e.ptr?;
            Some((
                e.status.name.clone(),
                e.status.size - avail(p).min(e.status.size),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::DpdkWindow;

    #[test]
    fn the_window_is_the_largest_power_of_two_of_the_list_around_the_pool() {
        let mb = 1usize << 20;
        // The first run's shared pool (4.6 MiB) in a 16 GiB list of 2 MiB
        // pages: the window is the whole list.
        let list = (0x11_8020_0000, 0x11_8020_0000 + 16 * 1024 * mb);
        let w =
            DpdkWindow::around(0x11_8055_eb40, 0x11_80a0_0000, list.0, list.1).expect("a window");
        assert_eq!((w.base, w.shift), (list.0, 34));
        // A list of 3 MiB: 2 MiB of it, from the pool's start, or ending
        // with the list where that would run past it.
        let short = (list.0, list.0 + 3 * mb);
        let w =
            DpdkWindow::around(short.0 + mb / 2, short.0 + mb, short.0, short.1).expect("a window");
        assert_eq!((w.base, w.shift), (short.0 + mb / 2, 21));
        let w =
            DpdkWindow::around(short.1 - mb, short.1 - mb / 2, short.0, short.1).expect("a window");
        assert_eq!((w.base, w.shift), (short.1 - 2 * mb, 21));
        // Refused where the pool is larger than the largest power of two
        // the list holds, and where the pool is not in the list.
        assert_eq!(
            DpdkWindow::around(short.0, short.1 - mb / 2, short.0, short.1),
            None
        );
        assert_eq!(DpdkWindow::around(list.0, list.0, list.0, list.1), None);
        assert_eq!(
            DpdkWindow::around(list.0 - 1, list.0 + 1, list.0, list.1),
            None
        );
        assert_eq!(
            DpdkWindow::around(list.1 - 1, list.1 + 1, list.0, list.1),
            None
        );
    }

    #[test]
    fn an_address_outside_the_window_fails_the_whole_burst() {
        let w = DpdkWindow {
            base: 0x7f00_0010_0040,
            shift: 25,
        };
        let inside = [0x7f00_0010_0040, 0x7f00_0123_4580, 0x7f00_020f_ff80];
        assert!(w.holds_all(inside.iter().copied()));
        for outside in [0x7f00_0210_0040, 0x7f00_0010_0000, 0x5555_0000_0000] {
            let mut burst = inside.to_vec();
            burst.insert(1, outside);
            assert!(!w.holds_all(burst.into_iter()), "{outside:#x}");
        }
        assert!(!DpdkWindow::NONE.holds_all(inside.iter().copied()));
    }
}
