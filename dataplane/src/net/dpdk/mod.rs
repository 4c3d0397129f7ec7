//! The DPDK ethdev backend: physical NICs bound to vfio-pci, and DPDK's
//! virtual devices (`net_null`, `net_ring`, `net_tap`, `net_af_packet`,
//! `net_memif`, ...), through the system's libdpdk.
//!
//! # Using it
//!
//! ```no_run
//! use dataplane::net::dpdk::{self, EalConfig, Memory, PciScan};
//! use dataplane::net::{Backend, MbufBatch, Port, PortConfig};
//!
//! // Optional: how the EAL starts (else the defaults, at the first open).
//! dpdk::configure(EalConfig::new().pci(PciScan::None).memory(Memory::Auto))?;
//! let mut queues = dpdk::Dpdk.open(&PortConfig::new("net_ring0"))?;
//! let q = &mut queues[0];
//! let mut batch = MbufBatch::new();
//! q.alloc_burst(4, &mut batch);
//! for m in batch.iter_mut() {
//!     m.append(60).expect("room").fill(0xab);
//! }
//! q.tx_burst(&mut batch);      // net_ring loops back
//! q.rx_burst(&mut batch);      // ...and here they are
//! drop(batch);                 // mbufs back to their pool
//! drop(queues);                // port stopped, closed, pools freed
//! dpdk::shutdown()?;           // rte_eal_cleanup
//! # Ok::<(), dataplane::Error>(())
//! ```
//!
//! # The EAL
//!
//! One per process, started at the first [`Dpdk::open`] (or [`init`]) from
//! the [`EalConfig`] given to [`configure`], else [`EalConfig::new`]'s
//! defaults. Always `--in-memory` (no hugetlbfs mount, no files, no
//! multi-process), with a `--file-prefix` unique per process, so that
//! processes never see each other's state. A failure is reported with
//! DPDK's reason (`rte_strerror(rte_errno)`) and kept: DPDK cannot
//! initialise twice. See the `eal` module for the lcore model
//! (`rte_thread_register` on first use by each thread).
//!
//! # Buffers
//!
//! Received mbufs are DPDK's `rte_mbuf`s behind the framework's
//! [`Mbuf`](hugepages::mbuf::Mbuf) (the layouts are the same, checked at
//! compile time below): `rx_burst` writes the driver's pointers straight
//! into the caller's batch, no copy, no allocation. A native mbuf (from an
//! `MbufPool`) given to `tx_burst` is copied into a DPDK mbuf first,
//! because a DPDK driver frees what it sends into the mbuf's own
//! `rte_mempool`; [`DpdkPort::native_copies`] counts those copies.
//!
//! # Pools and close
//!
//! Each queue gets its own `rte_pktmbuf_pool_create` pool on the port's
//! NUMA socket, or, with [`PortConfig::shared_pool`](crate::net::PortConfig::shared_pool),
//! every queue of every port opened that way draws from one pool per
//! socket (and cache size), as DPDK's l2fwd and testpmd do; the programs
//! in `apps/` open their ports so. Dropping the last queue of a port
//! drains its receive queues, stops, closes and detaches it
//! (`rte_dev_remove`, so the name can be opened afresh), and frees each
//! pool that no open queue uses once every mbuf is back ([`pools`] shows
//! where each stands). [`shutdown`] then runs `rte_eal_cleanup`.

#[cfg(not(dpdk))]
mod absent;
mod config;
#[cfg(dpdk)]
#[allow(unsafe_code)]
mod eal;
#[cfg(dpdk)]
mod live;
#[cfg(dpdk)]
#[allow(unsafe_code)]
mod pool;
#[cfg(dpdk)]
#[allow(unsafe_code)]
mod port;
mod status;

#[cfg(not(dpdk))]
use absent as imp;
#[cfg(dpdk)]
use live as imp;

pub use config::{
    AUTO_MIN_FREE_HUGEPAGES, EAL_ARGS_ENV, EalConfig, Memory, NO_HUGE_DEFAULT_MB, PciScan,
    device_plugin_devices,
};
pub use imp::DpdkPort;
pub use status::{EalInfo, EalState, PoolState, PoolStatus, ShutdownReport};

use super::{Backend, Port, PortConfig};
use crate::Result;
use crate::backend::Probe;
use std::sync::Arc;

/// The DPDK backend.
#[derive(Debug, Clone, Copy, Default)]
pub struct Dpdk;

impl Backend for Dpdk {
    /// Whether DPDK is compiled in and the EAL can run: not yet started
    /// (it will be at the first open), running, or failed (with DPDK's
    /// reason).
    fn probe(&self) -> Probe {
        probe()
    }

    fn open(&self, cfg: &PortConfig) -> Result<Vec<Box<dyn Port>>> {
        Ok(open(cfg)?
            .into_iter()
            .map(|q| Box::new(q) as Box<dyn Port>)
            .collect())
    }
}

#[cfg(dpdk)]
fn probe() -> Probe {
    live::probe()
}

#[cfg(not(dpdk))]
fn probe() -> Probe {
    Probe::unavailable(format!("DPDK not compiled in: {}", dpdk_sys::REASON))
}

/// Opens `cfg.device` (a vdev such as `net_null0` or `net_tap0,iface=dp0`,
/// or a PCI address bound to vfio-pci): one [`DpdkPort`] per queue. The
/// EAL starts first if it has not.
///
/// # Errors
/// The EAL's failure; [`Error::Config`](crate::Error::Config) for a
/// configuration DPDK cannot honour (too many queues, too few mbufs), a
/// port that is open already, a device that does not exist, or a build
/// without DPDK; [`Error::Io`](crate::Error::Io) naming the DPDK call that
/// failed and DPDK's reason.
pub fn open(cfg: &PortConfig) -> Result<Vec<DpdkPort>> {
    imp::open(cfg)
}

/// Sets how the EAL starts; call it before the first port opens.
/// Configuring again before that replaces the configuration; once the EAL
/// runs, only the same configuration is accepted.
///
/// # Errors
/// [`Error::Config`](crate::Error::Config) when the EAL already runs with
/// another configuration, failed, or DPDK is not compiled in.
pub fn configure(config: EalConfig) -> Result<()> {
    imp::configure(config)
}

/// Starts the EAL now (else the first open does).
///
/// # Errors
/// DPDK's reason when `rte_eal_init` fails (kept for every later call);
/// [`Error::Required`](crate::Error::Required) when the memory is
/// [`Memory::Auto`], hugepages are short, and `DATAPLANE_REQUIRE` names
/// `hugepages`; [`Error::Config`](crate::Error::Config) without DPDK.
pub fn init() -> Result<Arc<EalInfo>> {
    imp::init()
}

/// Where the EAL stands.
pub fn state() -> EalState {
    imp::state()
}

/// Every pool the backend made (the last 256 freed ones included), with
/// live counts.
pub fn pools() -> Vec<PoolStatus> {
    imp::pools()
}

/// The ethdev ports DPDK knows now, by name (none before the EAL starts).
pub fn port_names() -> Vec<String> {
    imp::port_names()
}

/// The calling thread's EAL lcore id, registering the thread
/// (`rte_thread_register`) if it has none yet; `None` before the EAL
/// starts, without DPDK, or when every id is taken.
pub fn lcore_id() -> Option<u32> {
    imp::lcore_id()
}

/// Tears DPDK down: frees the pools whose mbufs are all back, then runs
/// `rte_eal_cleanup`. Every port must be closed (its queues dropped)
/// first. DPDK cannot start again in this process afterwards.
///
/// # Errors
/// [`Error::Config`](crate::Error::Config) while ports are open;
/// `rte_eal_cleanup`'s failure.
pub fn shutdown() -> Result<ShutdownReport> {
    #[cfg(dpdk)]
    {
        live::shutdown()
    }
    #[cfg(not(dpdk))]
    {
        Ok(ShutdownReport::default())
    }
}

#[cfg(dpdk)]
mod layout {
    //! `rte_mbuf` as bindgen read it from the installed headers, against
    //! the framework's `MbufHeader`: a mismatch (a DPDK built without
    //! `RTE_IOVA_IN_MBUF`, a future layout change) fails the build here,
    //! field by field, rather than corrupting packets at run time.
    use core::mem::{align_of, offset_of, size_of};
    use dpdk_sys::rte_mbuf as R;
    use hugepages::mbuf::MbufHeader as H;

    const _: () = {
        assert!(size_of::<R>() == size_of::<H>());
        assert!(align_of::<R>() == align_of::<H>());
        assert!(offset_of!(R, buf_addr) == offset_of!(H, buf_addr));
        assert!(offset_of!(R, buf_iova) == offset_of!(H, buf_iova));
        assert!(offset_of!(R, data_off) == offset_of!(H, data_off));
        assert!(offset_of!(R, refcnt) == offset_of!(H, refcnt));
        assert!(offset_of!(R, nb_segs) == offset_of!(H, nb_segs));
        assert!(offset_of!(R, port) == offset_of!(H, port));
        assert!(offset_of!(R, ol_flags) == offset_of!(H, ol_flags));
        // The packet_type union.
        assert!(offset_of!(R, __bindgen_anon_1) == offset_of!(H, packet_type));
        assert!(offset_of!(R, pkt_len) == offset_of!(H, pkt_len));
        assert!(offset_of!(R, data_len) == offset_of!(H, data_len));
        assert!(offset_of!(R, vlan_tci) == offset_of!(H, vlan_tci));
        // The hash union (hash.rss first).
        assert!(offset_of!(R, __bindgen_anon_2) == offset_of!(H, hash));
        assert!(offset_of!(R, vlan_tci_outer) == offset_of!(H, vlan_tci_outer));
        assert!(offset_of!(R, buf_len) == offset_of!(H, buf_len));
        assert!(offset_of!(R, pool) == offset_of!(H, pool));
        assert!(offset_of!(R, next) == offset_of!(H, next));
        // The tx_offload union.
        assert!(offset_of!(R, __bindgen_anon_3) == offset_of!(H, tx_offload));
        assert!(offset_of!(R, shinfo) == offset_of!(H, shinfo));
        assert!(offset_of!(R, priv_size) == offset_of!(H, priv_size));
        assert!(offset_of!(R, timesync) == offset_of!(H, timesync));
        assert!(offset_of!(R, dynfield1) == offset_of!(H, dynfield1));
        // Mbuf goes to DPDK in place as a `struct rte_mbuf *`.
        assert!(size_of::<hugepages::mbuf::Mbuf>() == size_of::<*mut R>());
    };

    // The checksum offload flags the stack sets and reads.
    const _: () = {
        use hugepages::mbuf::offload as o;
        assert!(o::RX_IP_CKSUM_BAD == dpdk_sys::RTE_MBUF_F_RX_IP_CKSUM_BAD as u64);
        assert!(o::RX_IP_CKSUM_GOOD == dpdk_sys::RTE_MBUF_F_RX_IP_CKSUM_GOOD as u64);
        assert!(o::RX_IP_CKSUM_MASK == dpdk_sys::RTE_MBUF_F_RX_IP_CKSUM_MASK as u64);
        assert!(o::RX_L4_CKSUM_BAD == dpdk_sys::RTE_MBUF_F_RX_L4_CKSUM_BAD as u64);
        assert!(o::RX_L4_CKSUM_GOOD == dpdk_sys::RTE_MBUF_F_RX_L4_CKSUM_GOOD as u64);
        assert!(o::RX_L4_CKSUM_MASK == dpdk_sys::RTE_MBUF_F_RX_L4_CKSUM_MASK as u64);
        assert!(o::RX_IP_CKSUM_NONE == dpdk_sys::RTE_MBUF_F_RX_IP_CKSUM_NONE as u64);
        assert!(o::RX_L4_CKSUM_NONE == dpdk_sys::RTE_MBUF_F_RX_L4_CKSUM_NONE as u64);
        assert!(o::TX_TCP_CKSUM == dpdk_sys::RTE_MBUF_F_TX_TCP_CKSUM);
        assert!(o::TX_UDP_CKSUM == dpdk_sys::RTE_MBUF_F_TX_UDP_CKSUM);
        assert!(o::TX_IP_CKSUM == dpdk_sys::RTE_MBUF_F_TX_IP_CKSUM);
        assert!(o::TX_IPV4 == dpdk_sys::RTE_MBUF_F_TX_IPV4);
    };
}
