//! `rte_eth_rx_burst` and `rte_eth_tx_burst`, which DPDK defines `static
//! inline` in `rte_ethdev.h`, written again in Rust.
//!
//! Since 21.11 the two functions read a public, ABI-stable table,
//! `rte_eth_fp_ops[port]` (`rte_ethdev_core.h`): the driver's burst
//! function, its per-queue data, and the per-queue callback lists. Calling
//! a C forwarder instead (as the shim does for the other inline functions) costs a call, a
//! return and the argument shuffle per burst in the middle of the
//! forwarding loop; reading the table here lets the compiler inline the
//! lookup into the caller, exactly as a C application gets it.
//!
//! What the headers compile in, these do too: the callback check
//! (`RTE_ETHDEV_RXTX_CALLBACKS`, on in every distribution build; with it
//! off the lists stay empty and the check costs one predictable branch).
//! What they compile out by default, these leave out: the
//! `RTE_ETHDEV_DEBUG_RX`/`_TX` argument checks (callers pass an open
//! port's own queue) and the fast-path trace points (`RTE_ENABLE_TRACE_FP`
//! is off in distribution builds).

use crate::bindings::{
    rte_eth_call_rx_callbacks, rte_eth_call_tx_callbacks, rte_eth_fp_ops, rte_ethdev_qdata,
    rte_mbuf,
};
use core::ffi::c_void;
use core::sync::atomic::{AtomicPtr, Ordering};

/// A copy of the fast-path entry of `port_id` (read as the C inline reads
/// it: plainly, each call; DPDK rewrites an entry only while the port
/// starts or stops, never while a queue of it is polled).
///
/// # Safety
///
/// `port_id` is below `RTE_MAX_ETHPORTS` (every valid port id is).
#[inline(always)]
unsafe fn entry(port_id: u16) -> rte_eth_fp_ops {
    let table = (&raw const rte_eth_fp_ops).cast::<rte_eth_fp_ops>();
    // SAFETY: within the table (the caller's contract).
    let p = unsafe { table.add(usize::from(port_id)) };
    // SAFETY: an initialised entry of a static table (plain data; the
    // compiler keeps only the fields used).
    unsafe { p.read() }
}

/// Queue `queue`'s driver data and callback list head in `q` (a port's
/// `rxq` or `txq`), read as the C inline reads them: the data plainly,
/// the head relaxed (DPDK stores it with a release store, and the
/// callback's fields are reached through it, a data dependency).
///
/// # Safety
///
/// `q`'s arrays have more than `queue` entries (a configured queue of a
/// started port).
#[inline(always)]
unsafe fn queue(q: rte_ethdev_qdata, queue: u16) -> (*mut c_void, *mut c_void) {
    let i = usize::from(queue);
    // SAFETY: in bounds (the caller's contract).
    let data = unsafe { q.data.add(i) };
    // SAFETY: in bounds (the caller's contract).
    let head = unsafe { q.clbk.add(i) };
    // SAFETY: an initialised entry, written only while the port starts.
    let data = unsafe { data.read() };
    // SAFETY: DPDK accesses the pointer-sized, aligned slot atomically.
    let head = unsafe { AtomicPtr::from_ptr(head) };
    (data, head.load(Ordering::Relaxed))
}

/// `rte_eth_rx_burst(port_id, queue_id, rx_pkts, nb_pkts)`.
///
/// # Safety
///
/// As for the C function: `port_id` is a started port, `queue_id` one of
/// its configured rx queues, polled by this thread alone, and `rx_pkts`
/// has room for `nb_pkts` pointers.
#[inline(always)]
pub unsafe fn eth_rx_burst(
    port_id: u16,
    queue_id: u16,
    rx_pkts: *mut *mut rte_mbuf,
    nb_pkts: u16,
) -> u16 {
    // SAFETY: a started port's id is below RTE_MAX_ETHPORTS.
    let p = unsafe { entry(port_id) };
    // SAFETY: rte_eth_dev_start filled the queue arrays for every
    // configured queue; `queue_id` is one (the caller's contract).
    let (qd, cb) = unsafe { queue(p.rxq, queue_id) };
    // A stopped port has DPDK's dummy function here, never null; the
    // branch only keeps a zeroed entry from being a call to address 0.
    let Some(rx) = p.rx_pkt_burst else { return 0 };
    // SAFETY: the driver's own function with its queue's data, called as
    // the C inline calls it.
    let mut nb_rx = unsafe { rx(qd, rx_pkts, nb_pkts) };
    if !cb.is_null() {
        // SAFETY: DPDK's own function for a non-empty list, with the
        // arguments the C inline passes.
        nb_rx =
            unsafe { rte_eth_call_rx_callbacks(port_id, queue_id, rx_pkts, nb_rx, nb_pkts, cb) };
    }
    nb_rx
}

/// `rte_eth_tx_burst(port_id, queue_id, tx_pkts, nb_pkts)`.
///
/// # Safety
///
/// As for the C function: `port_id` is a started port, `queue_id` one of
/// its configured tx queues, used by this thread alone, and `tx_pkts`
/// holds `nb_pkts` mbufs, of which the driver takes the first it returns.
#[inline(always)]
pub unsafe fn eth_tx_burst(
    port_id: u16,
    queue_id: u16,
    tx_pkts: *mut *mut rte_mbuf,
    nb_pkts: u16,
) -> u16 {
    // SAFETY: as in eth_rx_burst.
    let p = unsafe { entry(port_id) };
    // SAFETY: as in eth_rx_burst.
    let (qd, cb) = unsafe { queue(p.txq, queue_id) };
    let mut nb_pkts = nb_pkts;
    // Callbacks run first on tx: they may drop or add packets.
    if !cb.is_null() {
        // SAFETY: as in eth_rx_burst.
        nb_pkts = unsafe { rte_eth_call_tx_callbacks(port_id, queue_id, tx_pkts, nb_pkts, cb) };
    }
    let Some(tx) = p.tx_pkt_burst else { return 0 };
    // SAFETY: as in eth_rx_burst.
    unsafe { tx(qd, tx_pkts, nb_pkts) }
}
