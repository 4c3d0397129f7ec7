//! Ethdev ports: opening (configure, pools, queues, start), the queues'
//! fast path, and the orderly close when the last queue is dropped.

use super::eal;
use super::pool::{self, DpdkWindow, PoolPtr};
use crate::net::{
    Capabilities, DropReason, Layer, LinkStatus, MAX_BURST, MbufBatch, Port, PortConfig, PortId,
    QueueId, QueueStats,
};
use crate::wire::rss::{RSS_KEY_LEN, Steering};
use crate::{Error, Result};
use dpdk_sys as sys;
use hugepages::mbuf::{Mbuf, MbufHeader};
use std::ffi::{CStr, CString};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The backend's name, as `--backend` spells it.
pub(super) const NAME: &str = "dpdk";

/// Receive checksum offloads enabled when the device has all three.
const RX_CKSUM: u64 = (sys::RTE_ETH_RX_OFFLOAD_IPV4_CKSUM
    | sys::RTE_ETH_RX_OFFLOAD_UDP_CKSUM
    | sys::RTE_ETH_RX_OFFLOAD_TCP_CKSUM) as u64;

/// Transmit checksum offloads enabled when the device has all three (the
/// TCP stack then leaves IPv4, TCP and UDP checksums to the device).
const TX_CKSUM: u64 = (sys::RTE_ETH_TX_OFFLOAD_IPV4_CKSUM
    | sys::RTE_ETH_TX_OFFLOAD_UDP_CKSUM
    | sys::RTE_ETH_TX_OFFLOAD_TCP_CKSUM) as u64;

/// Flows RSS spreads over the queues, where the device hashes them.
const RSS_HF: u64 = (sys::RTE_ETH_RSS_IP | sys::RTE_ETH_RSS_UDP | sys::RTE_ETH_RSS_TCP) as u64;

/// Ports open in this process (DPDK port ids).
static OPEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());

fn open_ports() -> MutexGuard<'static, Vec<u16>> {
    // Writes are single pushes and retains: a poisoned list is consistent.
    OPEN.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How many ports are open.
pub(super) fn open_count() -> usize {
    open_ports().len()
}

/// The part of a port its queues share; dropping the last queue closes
/// the port.
#[derive(Debug)]
struct PortShared {
    port: u16,
    name: String,
    /// The generic device, for `rte_dev_remove` after the close.
    device: Option<NonNull<sys::rte_device>>,
    queues: u16,
    pools: Vec<PoolPtr>,
    /// Mbufs each queue needs of its pool ([`queue_need`]), given back to
    /// a shared pool's reservation at the close.
    pool_need: u32,
    started: bool,
    /// The port's driver counters as last read ([`PortShared::driver_stats`]).
    stats: Mutex<DriverStats>,
}

/// How old the driver's counters a queue reports may be: a PMD's
/// `rte_eth_stats_get` can take tens of microseconds of register reads,
/// which the lcores polling the port's queues should not pay on every
/// call (the programs publish every 10 ms, each queue from its own lcore).
const DRIVER_STATS_MAX_AGE: Duration = Duration::from_millis(10);

/// A port's `rte_eth_stats` and when they were read.
#[derive(Debug)]
struct DriverStats {
    read_at: Option<Instant>,
    stats: sys::rte_eth_stats,
    /// The driver has failed a read (logged once).
    failed: bool,
}

impl PortShared {
    /// The port's `rte_eth_stats`, read again when the last read is
    /// older than [`DRIVER_STATS_MAX_AGE`]. A failed read keeps the last
    /// good one (so that no counter goes backwards), and is logged the
    /// first time; `None` when no read has succeeded yet. One caller at a
    /// time: ethdev's control path is not
    /// thread-safe, and PMDs that fold read-to-clear registers into their
    /// totals (ixgbe, e1000) would lose counts to two callers at once.
    fn driver_stats(&self) -> Option<sys::rte_eth_stats> {
        // Every write under the lock is a whole field: a poisoned cache is
        // consistent.
        let mut cache = self
            .stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        let fresh = cache
            .read_at
            .is_some_and(|t| now.duration_since(t) < DRIVER_STATS_MAX_AGE);
        if !fresh {
            let mut st = sys::rte_eth_stats::default();
            // SAFETY: an open port and a place for its counters; one caller
            // at a time for the port (the lock).
            let rc = unsafe { sys::rte_eth_stats_get(self.port, &mut st) };
            if rc == 0 {
                cache.stats = st;
                cache.read_at = Some(now);
            } else {
                if !cache.failed {
                    cache.failed = true;
                    tracing::warn!(
                        port = %self.name,
                        "rte_eth_stats_get failed ({}): its counters stay at their last reading",
                        eal::strerror(-rc)
                    );
                }
            }
        }
        // Nothing to report until a read has succeeded.
        cache.read_at.map(|_| cache.stats)
    }
}

// SAFETY: the device pointer is only passed to rte_dev_remove, once, from
// Drop; DPDK's control path is thread-safe for one caller at a time, and
// Drop runs once.
unsafe impl Send for PortShared {}
// SAFETY: shared references to PortShared read plain fields or take the
// stats cache's lock; the pool pointers are thread-safe (rte_mempool).
unsafe impl Sync for PortShared {}

impl Drop for PortShared {
    fn drop(&mut self) {
        let port = self.port;
        if self.started {
            drain(port, self.queues, &self.pools);
            // SAFETY: a started port of ours; no queue handle is left.
            let rc = unsafe { sys::rte_eth_dev_stop(port) };
            if rc < 0 {
                tracing::warn!(port = %self.name, "rte_eth_dev_stop: {}", eal::strerror(-rc));
            }
        }
        // SAFETY: the port is ours and stopped; closing releases its queues
        // (and the mbufs the driver holds in them).
        let rc = unsafe { sys::rte_eth_dev_close(port) };
        if rc < 0 {
            tracing::warn!(port = %self.name, "rte_eth_dev_close: {}", eal::strerror(-rc));
        }
        if let Some(dev) = self.device {
            // Detached, so that opening the same name again probes afresh.
            let guard = hotplug();
            // SAFETY: the device of the port just closed; nothing else of
            // ours refers to it.
            let rc = unsafe { sys::rte_dev_remove(dev.as_ptr()) };
            drop(guard);
            if rc < 0 {
                tracing::warn!(port = %self.name, "rte_dev_remove: {}", eal::strerror(-rc));
            }
        }
        // What the close set off on the interrupt thread (a memif peer's
        // disconnect) runs before anything else is torn down.
        eal::settle_interrupts();
        pool::release(&self.pools, self.pool_need);
        open_ports().retain(|&p| p != port);
        tracing::debug!(port = %self.name, "closed");
    }
}

/// Receives and frees what is left in the receive queues before the stop:
/// software devices (net_ring) keep transmitted mbufs in rings that their
/// close does not free. Bounded, because net_null never runs dry.
fn drain(port: u16, queues: u16, pools: &[PoolPtr]) {
    let size: u32 = pools.iter().map(|&p| pool_size(p)).sum();
    let max_bursts = size as usize / MAX_BURST + 2;
    let mut buf = [std::ptr::null_mut::<sys::rte_mbuf>(); MAX_BURST];
    for q in 0..queues {
        for _ in 0..max_bursts {
            // SAFETY: a started port and one of its queues; `buf` has room
            // for MAX_BURST pointers. No queue handle exists any more, so
            // this thread is the queue's only user.
            let n = unsafe { sys::eth_rx_burst(port, q, buf.as_mut_ptr(), MAX_BURST as u16) };
            if n == 0 {
                break;
            }
            // SAFETY: the first `n` entries are mbufs just received, owned
            // here and not used again.
            unsafe { sys::rte_pktmbuf_free_bulk(buf.as_mut_ptr(), n.into()) };
        }
    }
}

fn pool_size(p: PoolPtr) -> u32 {
    // SAFETY: a live pool.
    unsafe { sys::dp_mempool_size(p.0.as_ptr()) }
}

/// `rc < 0` from a DPDK call, as an error naming the call and the port.
fn check(rc: i32, what: impl FnOnce() -> String) -> Result<()> {
    if rc < 0 {
        Err(eal::call_error(what(), rc))
    } else {
        Ok(())
    }
}

/// `bb:dd.f` → `0000:bb:dd.f`: DPDK names PCI ports by the full address.
fn normalise(name: &str) -> String {
    let short = name.len() == 7
        && name.as_bytes()[2] == b':'
        && name.as_bytes()[5] == b'.'
        && name
            .bytes()
            .enumerate()
            .all(|(i, b)| i == 2 || i == 5 || b.is_ascii_hexdigit());
    if short {
        format!("0000:{name}")
    } else {
        name.to_owned()
    }
}

fn port_by_name(name: &str) -> Option<u16> {
    let cname = CString::new(name).ok()?;
    let mut id = 0u16;
    // SAFETY: a NUL-terminated name and a place for the id.
    let rc = unsafe { sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) };
    (rc == 0).then_some(id)
}

/// Finds the port of `device` (`name[,devargs]`), probing the device
/// (`rte_dev_probe`: a vdev is created, a PCI device bound to vfio-pci is
/// attached) when no port has that name yet.
/// Serialises DPDK's hotplug (`rte_dev_probe`, `rte_dev_remove` and the
/// port lookup around them): two threads probing vdevs at once made EAL
/// lose one ("Cannot find device", `ENODEV`), seen when four threads
/// opened ports at the same time.
fn hotplug() -> MutexGuard<'static, ()> {
    static HOTPLUG: Mutex<()> = Mutex::new(());
    HOTPLUG
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn find_or_probe(device: &str, vdevs: &[String]) -> Result<(u16, String)> {
    let (name, args) = match device.split_once(',') {
        Some((n, a)) => (normalise(n), Some(a)),
        None => (normalise(device), None),
    };
    if let Some(id) = port_by_name(&name) {
        if args.is_some() {
            return Err(Error::Config(format!(
                "DPDK port {name} exists already; its arguments cannot change ({device})"
            )));
        }
        return Ok((id, name));
    }
    // A vdev named in the EAL configuration keeps its arguments when it
    // is probed again after an earlier close.
    let devargs = match args {
        Some(_) => device.to_owned(),
        None => vdevs
            .iter()
            .find(|v| v.split(',').next() == Some(name.as_str()))
            .cloned()
            .unwrap_or_else(|| name.clone()),
    };
    let cargs = CString::new(devargs.as_str())
        .map_err(|_| Error::Config(format!("device {device:?} holds a NUL")))?;
    // SAFETY: a NUL-terminated devargs string; DPDK copies it.
    let rc = unsafe { sys::rte_dev_probe(cargs.as_ptr()) };
    check(rc, || format!("rte_dev_probe({devargs})"))?;
    port_by_name(&name)
        .map(|id| (id, name.clone()))
        .ok_or_else(|| {
            Error::Config(format!(
                "rte_dev_probe({devargs}) succeeded but no ethdev port is named {name}"
            ))
        })
}

fn validate(cfg: &PortConfig) -> Result<()> {
    let bad = |why: String| Err(Error::Config(format!("DPDK port {}: {why}", cfg.device)));
    if cfg.queues == 0 {
        return bad("0 queues".into());
    }
    if cfg.burst == 0 || cfg.burst > MAX_BURST {
        return bad(format!("burst {} is not in 1..={MAX_BURST}", cfg.burst));
    }
    if cfg.rx_desc == 0 || cfg.tx_desc == 0 {
        return bad("0 descriptors".into());
    }
    let cache_max = sys::RTE_MEMPOOL_CACHE_MAX_SIZE as usize;
    if cfg.mbuf_cache > cache_max {
        return bad(format!(
            "mbuf cache {} exceeds RTE_MEMPOOL_CACHE_MAX_SIZE ({cache_max})",
            cfg.mbuf_cache
        ));
    }
    let needed = queue_need(cfg);
    // A shared pool replaces the queues' own pools: its size is what must
    // cover them, and `mbufs` is not used.
    if let Some(total) = cfg.shared_pool {
        let least = needed * cfg.queues as usize;
        if total < least || total > u32::MAX as usize {
            return bad(format!(
                "a shared pool of {total} mbufs cannot serve {} queues of this port: at least {least}",
                cfg.queues
            ));
        }
    } else if cfg.mbufs < needed || cfg.mbufs > u32::MAX as usize {
        return bad(format!(
            "{} mbufs per queue cannot fill {} receive descriptors plus a burst of {} (or 1.5 x the cache of {}): at least {needed}",
            cfg.mbufs, cfg.rx_desc, cfg.burst, cfg.mbuf_cache
        ));
    }
    Ok(())
}

/// The mbufs one queue needs of its pool to run: its receive descriptors
/// filled plus a burst, and at least rte_mempool's flush threshold (1.5x
/// the cache), below which DPDK refuses a pool.
fn queue_need(cfg: &PortConfig) -> usize {
    (cfg.rx_desc as usize + cfg.burst).max(cfg.mbuf_cache * 3 / 2)
}

/// Opens `cfg.device`: one [`DpdkPort`] per queue.
pub(super) fn open(cfg: &PortConfig) -> Result<Vec<DpdkPort>> {
    let _span =
        tracing::info_span!("port_setup", device = %cfg.device, queues = cfg.queues).entered();
    validate(cfg)?;
    eal::init()?;
    let vdevs = eal::configured_vdevs();
    let (port, name) = {
        let _hotplug = hotplug();
        find_or_probe(&cfg.device, &vdevs)?
    };
    {
        let mut open = open_ports();
        if open.contains(&port) {
            return Err(Error::Config(format!(
                "DPDK port {name} is open already; drop its queues first"
            )));
        }
        open.push(port);
    }
    // From here on, dropping `shared` closes (and detaches) the port.
    let mut shared = PortShared {
        port,
        name: name.clone(),
        device: None,
        queues: cfg.queues,
        pools: Vec::new(),
        // Validated: at most the pool size, a u32.
        pool_need: queue_need(cfg) as u32,
        started: false,
        stats: Mutex::new(DriverStats {
            read_at: None,
            stats: sys::rte_eth_stats::default(),
            failed: false,
        }),
    };
    let caps = setup(cfg, &mut shared)?;
    let shared = Arc::new(shared);
    Ok((0..cfg.queues)
        .map(|q| {
            let pool = shared.pools[q as usize];
            let window = pool::dpdk_window(pool).unwrap_or_else(|why| {
                tracing::info!(
                    port = %name, queue = q,
                    "mbufs sent here are checked for native ones by their headers, not by address: {why}"
                );
                DpdkWindow::NONE
            });
            DpdkPort {
                port,
                queue: q,
                burst: cfg.burst as u16,
                pool,
                counters: Counters::default(),
                window,
                foreign_pool: pool.0.as_ptr().cast(),
                software_bytes: cfg.software_byte_counts,
                caps: caps.clone(),
                shared: shared.clone(),
            }
        })
        .collect())
}

/// The port's RSS as software can compute it: the key and redirection
/// table the PMD reports, for the Toeplitz hash (ethdev's default
/// function). `None`, logged, where the PMD does not report them.
fn steering(port: u16, info: &sys::rte_eth_dev_info, name: &str) -> Option<Steering> {
    if info.reta_size == 0 {
        tracing::info!(port = %name, "RSS table size not reported: outbound source ports are not steered");
        return None;
    }
    // The Toeplitz key of IPv4 and IPv6 with ports (40 bytes) where the
    // PMD does not say (net_null reports 0 and has 40).
    let key_len = match info.hash_key_size {
        0 => RSS_KEY_LEN as u8,
        n => n,
    };
    // Room for the longest key a `u8` length can give: some PMDs copy
    // their whole key whatever length is asked (net_null copies 40).
    let mut key = [0u8; 256];
    let mut conf = sys::rte_eth_rss_conf {
        rss_key: key.as_mut_ptr(),
        rss_key_len: key_len,
        ..Default::default()
    };
    // SAFETY: a started port, and a key buffer larger than any key
    // (`conf` points into `key`, which outlives the call).
    let rc = unsafe { sys::rte_eth_dev_rss_hash_conf_get(port, &mut conf) };
    if rc != 0 {
        tracing::info!(port = %name, "RSS key unknown ({}): outbound source ports are not steered", eal::strerror(-rc));
        return None;
    }
    let group = sys::RTE_ETH_RETA_GROUP_SIZE as usize;
    let size = usize::from(info.reta_size);
    let mut groups = vec![sys::rte_eth_rss_reta_entry64::default(); size.div_ceil(group).max(1)];
    for g in &mut groups {
        g.mask = u64::MAX;
    }
    // SAFETY: a started port, and one 64-entry group per 64 entries of the
    // table, every mask bit set (entries to read).
    let rc = unsafe { sys::rte_eth_dev_rss_reta_query(port, groups.as_mut_ptr(), info.reta_size) };
    if rc != 0 {
        tracing::info!(port = %name, reta_size = size, "RSS redirection table unknown ({}): outbound source ports are not steered", eal::strerror(-rc));
        return None;
    }
    let reta: Vec<u16> = groups.iter().flat_map(|g| g.reta).take(size).collect();
    match Steering::toeplitz(&key[..usize::from(key_len)], reta) {
        Ok(s) => Some(s),
        Err(why) => {
            tracing::info!(port = %name, "RSS not computable ({why}): outbound source ports are not steered");
            None
        }
    }
}

/// Configures, creates the pools, sets up the queues and starts the port.
fn setup(cfg: &PortConfig, shared: &mut PortShared) -> Result<Capabilities> {
    let port = shared.port;
    let name = shared.name.clone();
    let at = |call: &str| format!("{call} on DPDK port {name}");

    let mut info = sys::rte_eth_dev_info::default();
    // SAFETY: a valid port id and a zeroed struct to fill.
    let rc = unsafe { sys::rte_eth_dev_info_get(port, &mut info) };
    check(rc, || at("rte_eth_dev_info_get"))?;
    shared.device = NonNull::new(info.device);
    if cfg.queues > info.max_rx_queues || cfg.queues > info.max_tx_queues {
        return Err(Error::Config(format!(
            "DPDK port {name} has at most {} rx and {} tx queues; {} asked for",
            info.max_rx_queues, info.max_tx_queues, cfg.queues
        )));
    }

    let mut conf = sys::rte_eth_conf::default();
    let rss_hf = RSS_HF & info.flow_type_rss_offloads;
    let rss = cfg.queues > 1 && rss_hf != 0;
    if rss {
        conf.rxmode.mq_mode = sys::RTE_ETH_MQ_RX_RSS;
        conf.rx_adv_conf.rss_conf.rss_hf = rss_hf;
    }
    let rx_checksum = info.rx_offload_capa & RX_CKSUM == RX_CKSUM;
    if rx_checksum {
        conf.rxmode.offloads |= RX_CKSUM;
    }
    let tx_checksum = cfg.tx_checksum && info.tx_offload_capa & TX_CKSUM == TX_CKSUM;
    if tx_checksum {
        conf.txmode.offloads |= TX_CKSUM;
    }
    // SAFETY: a valid port, stopped, and a filled configuration.
    let rc = unsafe { sys::rte_eth_dev_configure(port, cfg.queues, cfg.queues, &conf) };
    check(rc, || at("rte_eth_dev_configure"))?;

    let (mut nb_rx, mut nb_tx) = (cfg.rx_desc, cfg.tx_desc);
    // SAFETY: a configured port and two counts to clamp in place.
    let rc = unsafe { sys::rte_eth_dev_adjust_nb_rx_tx_desc(port, &mut nb_rx, &mut nb_tx) };
    check(rc, || at("rte_eth_dev_adjust_nb_rx_tx_desc"))?;

    let socket = match cfg.numa_node {
        Some(node) => node.0 as i32,
        // SAFETY: a valid port id.
        None => unsafe { sys::rte_eth_dev_socket_id(port) },
    };
    let socket = if socket < 0 {
        sys::SOCKET_ID_ANY
    } else {
        socket
    };
    for q in 0..cfg.queues {
        let (port_id, queue_id, cache) = (PortId(port), QueueId(q), cfg.mbuf_cache as u32);
        let pool = match cfg.shared_pool {
            // Validated: fits in u32.
            Some(total) => {
                let need = shared.pool_need;
                pool::shared(port_id, queue_id, total as u32, need, cache, socket)?
            }
            None => pool::create(port_id, queue_id, cfg.mbufs as u32, cache, socket)?,
        };
        shared.pools.push(pool);
        // SAFETY: a configured port, a queue below the configured count, the
        // default queue configuration (null), and a live pool that outlives
        // the queue (freed only after the close).
        let rc = unsafe {
            sys::rte_eth_rx_queue_setup(
                port,
                q,
                nb_rx,
                socket as u32,
                std::ptr::null(),
                pool.0.as_ptr(),
            )
        };
        check(rc, || at(&format!("rte_eth_rx_queue_setup({q})")))?;
        // SAFETY: as above, for the transmit queue.
        let rc =
            unsafe { sys::rte_eth_tx_queue_setup(port, q, nb_tx, socket as u32, std::ptr::null()) };
        check(rc, || at(&format!("rte_eth_tx_queue_setup({q})")))?;
    }

    // SAFETY: a configured port with every queue set up.
    let rc = unsafe { sys::rte_eth_dev_start(port) };
    check(rc, || at("rte_eth_dev_start"))?;
    shared.started = true;
    if cfg.promiscuous {
        // SAFETY: a started port.
        let rc = unsafe { sys::rte_eth_promiscuous_enable(port) };
        if rc < 0 {
            tracing::info!(port = %name, "promiscuous mode unavailable: {}", eal::strerror(-rc));
        }
    }

    let mut mtu = 0u16;
    // SAFETY: a valid port and a place for the MTU.
    let rc = unsafe { sys::rte_eth_dev_get_mtu(port, &mut mtu) };
    if rc < 0 {
        mtu = 1500;
    }
    let mut caps = Capabilities::basic(NAME, Layer::L2, cfg.burst, mtu.into(), cfg.queues);
    caps.rx_checksum = rx_checksum;
    caps.tx_checksum = tx_checksum;
    caps.rss = rss;
    if rss {
        caps.steering = steering(port, &info, &name);
    }
    let mut mac = sys::rte_ether_addr::default();
    // SAFETY: a valid port and a place for the address.
    let rc = unsafe { sys::rte_eth_macaddr_get(port, &mut mac) };
    if rc == 0 && mac.addr_bytes != [0; 6] {
        caps.mac = Some(mac.addr_bytes);
    }
    tracing::info!(
        port = %name,
        id = port,
        queues = cfg.queues,
        rx_desc = nb_rx,
        tx_desc = nb_tx,
        socket,
        rss,
        rx_checksum,
        tx_checksum,
        "DPDK port started"
    );
    Ok(caps)
}

/// A queue's own counters.
#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    rx_packets: u64,
    rx_bytes: u64,
    tx_packets: u64,
    tx_bytes: u64,
    drops: [u64; DropReason::ALL.len()],
    native_copies: u64,
}

/// One rx/tx queue pair of a DPDK ethdev port, owned by one lcore.
///
/// Received mbufs are DPDK's own `rte_mbuf`s, handed out as
/// [`Mbuf`](hugepages::mbuf::Mbuf)s without a copy; dropping one returns it
/// to its DPDK pool. Dropping the last queue of a port stops, closes and
/// detaches the port, and frees its pools once every mbuf is back.
#[derive(Debug)]
pub struct DpdkPort {
    port: u16,
    queue: u16,
    burst: u16,
    pool: PoolPtr,
    counters: Counters,
    /// DPDK's memory around this queue's pool, as much of its memseg list
    /// as a power of two takes ([`DpdkWindow`]; none where
    /// it cannot say): a burst whose every address lies there holds no
    /// native mbuf, and no header is read to know it.
    window: DpdkWindow,
    /// The last `rte_mempool` an mbuf sent here from elsewhere came from:
    /// mbufs of that pool need no more than a look at their `pool` field.
    foreign_pool: *mut std::ffi::c_void,
    /// [`PortConfig::software_byte_counts`].
    software_bytes: bool,
    caps: Capabilities,
    shared: Arc<PortShared>,
}

// SAFETY: a queue is used by one thread at a time (`&mut self`); its raw
// pointers are an rte_mempool (thread-safe) and a pool address only
// compared, never dereferenced.
unsafe impl Send for DpdkPort {}

impl DpdkPort {
    /// The port's DPDK name (`net_null0`, `0000:03:00.0`).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The ethdev port id, for calling DPDK's own API on this port (its
    /// statistics, flow rules, callbacks).
    pub fn port_id(&self) -> u16 {
        self.port
    }

    /// The rx and tx queue id this handle owns on its port.
    pub fn queue_id(&self) -> u16 {
        self.queue
    }

    /// The port's MAC address (`rte_eth_macaddr_get`).
    pub fn mac_address(&self) -> [u8; 6] {
        let mut addr = sys::rte_ether_addr::default();
        // SAFETY: an open port and a place for the address.
        let rc = unsafe { sys::rte_eth_macaddr_get(self.port, &mut addr) };
        if rc < 0 { [0; 6] } else { addr.addr_bytes }
    }

    /// Native mbufs (from an `MbufPool`) this queue copied into DPDK mbufs
    /// to send them: a DPDK driver frees what it sends into the mbuf's
    /// `rte_mempool`, which a native mbuf does not have.
    pub fn native_copies(&self) -> u64 {
        self.counters.native_copies
    }

    /// Whether a burst of this queue's own mbufs is told from native ones
    /// by the mbufs' addresses alone (they lie in a window of DPDK's
    /// memory around the pool), so that sending it reads no header. False
    /// where the pool's memory allows no such window; every burst's mbufs
    /// are then checked by their headers.
    pub fn checks_natives_by_address(&self) -> bool {
        self.window != DpdkWindow::NONE
    }

    /// Free mbufs in this queue's pool (`rte_mempool_avail_count`).
    pub fn pool_available(&self) -> u32 {
        pool::avail(self.pool)
    }

    /// Mbufs in this queue's pool.
    pub fn pool_size(&self) -> u32 {
        pool_size(self.pool)
    }

    /// Sums `pkt_len` (line 0 of each header, which the caller or the
    /// driver has just touched).
    #[inline(always)]
    fn bytes(pkts: &[Mbuf]) -> u64 {
        pkts.iter().map(|m| u64::from(m.header().pkt_len)).sum()
    }

    /// Whether `pkts` holds a native mbuf, from each header's `pool` (line
    /// 0), and `priv_size` (line 1) for a pool not seen before. A DPDK pool
    /// seen before is foreign for good: a native pool, on the Rust heap
    /// or our own hugepage mappings, is never at an address inside DPDK's
    /// memory.
    #[inline(never)]
    fn any_native(&mut self, pkts: &[Mbuf]) -> bool {
        for m in pkts {
            let pool = m.header().pool;
            if pool != self.foreign_pool {
                if m.is_native() {
                    return true;
                }
                self.foreign_pool = pool;
            }
        }
        false
    }

    /// Replaces native mbufs in `pkts` by DPDK copies from this queue's
    /// pool, in place; those too large for a DPDK mbuf are dropped
    /// (counted as `Oversized`). Returns how many mbufs at the front are
    /// sendable: all of them, or up to the first native one left when the
    /// pool ran dry (it stays in the batch, unsent, as the contract says).
    #[cold]
    #[inline(never)]
    fn convert_natives(&mut self, pkts: &mut MbufBatch) -> usize {
        let room = sys::RTE_MBUF_DEFAULT_BUF_SIZE as usize - sys::RTE_PKTMBUF_HEADROOM as usize;
        let mut oversized = 0u64;
        pkts.retain_or(
            |m| !m.is_native() || m.len() <= room,
            |m| {
                oversized += 1;
                drop(m);
            },
        );
        self.counters.drops[DropReason::Oversized.index()] += oversized;
        for i in 0..pkts.len() {
            if !pkts[i].is_native() {
                continue;
            }
            let Some(copy) = self.copy_into_dpdk(&pkts[i]) else {
                return i;
            };
            // The native original goes back to its own pool here.
            drop(std::mem::replace(&mut pkts[i], copy));
            self.counters.native_copies += 1;
        }
        pkts.len()
    }

    /// A DPDK mbuf holding `m`'s data and metadata; `None` when the pool
    /// is empty.
    fn copy_into_dpdk(&self, m: &Mbuf) -> Option<Mbuf> {
        // SAFETY: a live pool of this queue.
        let raw = unsafe { sys::dp_pktmbuf_alloc(self.pool.0.as_ptr()) };
        let raw = NonNull::new(raw)?;
        // SAFETY: a fresh, reset mbuf of a DPDK pool, owned here; the free
        // hooks are registered (EAL init).
        let mut copy = unsafe { Mbuf::from_raw(raw.cast::<MbufHeader>()) };
        // Checked by the caller: the data fits after the headroom.
        copy.append(m.len()).ok()?.copy_from_slice(m.data());
        copy.copy_metadata_from(m);
        Some(copy)
    }
}

impl Port for DpdkPort {
    #[inline]
    fn rx_burst(&mut self, out: &mut MbufBatch) -> usize {
        let n = out.spare().min(self.burst as usize);
        if n == 0 {
            return 0;
        }
        eal::ensure_lcore();
        let dst = out.back_ptr_for(n).cast::<*mut sys::rte_mbuf>();
        // SAFETY: an open port's queue owned by this handle; `dst` has room
        // for `n` pointers (back_ptr_for). Mbuf is a transparent non-null
        // `rte_mbuf *`, so the driver writes Mbufs in place.
        let got = unsafe { sys::eth_rx_burst(self.port, self.queue, dst, n as u16) } as usize;
        // SAFETY: the driver initialised `got <= n` entries at `dst` with
        // mbufs it hands over: DPDK mbufs that the foreign ops registered
        // at EAL init free (Mbuf::from_raw's contract, for each).
        unsafe { out.assume_pushed(got) };
        self.counters.rx_packets += got as u64;
        if self.software_bytes {
            let len = out.len();
            self.counters.rx_bytes += Self::bytes(&out[len - got..]);
        }
        got
    }

    #[inline]
    fn tx_burst(&mut self, pkts: &mut MbufBatch) -> usize {
        let mut n = pkts.len();
        if n == 0 {
            return 0;
        }
        eal::ensure_lcore();
        // Mbufs in DPDK's memory around this queue's pool (its own, and
        // those of the other pools in the same memseg list: another port's
        // when forwarding) are told by address; the others by their
        // headers.
        let addrs = pkts.iter().map(|m| m.as_ptr().as_ptr() as usize);
        if !self.window.holds_all(addrs) && self.any_native(pkts) {
            n = self.convert_natives(pkts);
            if n == 0 {
                return 0;
            }
        }
        // Counted before the send: what the driver takes it may free at
        // once.
        let mut bytes = if self.software_bytes {
            Self::bytes(&pkts[..n])
        } else {
            0
        };
        let src = pkts
            .as_mut_slice()
            .as_mut_ptr()
            .cast::<*mut sys::rte_mbuf>();
        // SAFETY: an open port's queue owned by this handle; `src` holds
        // `n` DPDK mbufs (natives were replaced above) that the driver takes
        // ownership of for the count it returns.
        let sent = unsafe { sys::eth_tx_burst(self.port, self.queue, src, n as u16) } as usize;
        if self.software_bytes && sent < n {
            bytes -= Self::bytes(&pkts[sent..n]);
        }
        // SAFETY: the first `sent` mbufs now belong to the driver.
        unsafe { pkts.forget_front(sent) };
        self.counters.tx_packets += sent as u64;
        self.counters.tx_bytes += bytes;
        sent
    }

    fn alloc_burst(&mut self, n: usize, out: &mut MbufBatch) -> usize {
        let n = n.min(out.spare());
        if n == 0 {
            return 0;
        }
        eal::ensure_lcore();
        let dst = out.back_ptr_for(n).cast::<*mut sys::rte_mbuf>();
        // SAFETY: a live pool; `dst` has room for `n` pointers.
        let rc = unsafe { sys::dp_pktmbuf_alloc_bulk(self.pool.0.as_ptr(), dst, n as u32) };
        if rc == 0 {
            // SAFETY: all `n` entries hold fresh mbufs, handed over as in
            // rx_burst.
            unsafe { out.assume_pushed(n) };
            return n;
        }
        // Fewer than `n` left: take what there is, one by one.
        let mut got = 0;
        while got < n {
            // SAFETY: a live pool.
            let raw = unsafe { sys::dp_pktmbuf_alloc(self.pool.0.as_ptr()) };
            let Some(raw) = NonNull::new(raw) else { break };
            // SAFETY: a fresh DPDK mbuf owned here, freed by the registered
            // hooks.
            let m = unsafe { Mbuf::from_raw(raw.cast::<MbufHeader>()) };
            if out.push(m).is_err() {
                break;
            }
            got += 1;
        }
        got
    }

    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn link(&self) -> LinkStatus {
        let mut link = sys::rte_eth_link::default();
        // SAFETY: an open port and a place for its link.
        let rc = unsafe { sys::rte_eth_link_get_nowait(self.port, &mut link) };
        if rc < 0 {
            return LinkStatus {
                up: false,
                speed_mbps: None,
                full_duplex: None,
            };
        }
        let up = u32::from(link.link_status()) == sys::RTE_ETH_LINK_UP;
        let speed = link.link_speed;
        LinkStatus {
            up,
            speed_mbps: (speed != 0 && speed != sys::RTE_ETH_SPEED_NUM_UNKNOWN).then_some(speed),
            full_duplex: up.then(|| u32::from(link.link_duplex()) == sys::RTE_ETH_LINK_FULL_DUPLEX),
        }
    }

    /// This queue's packets and its own drops; its bytes as the driver
    /// counts them (`driver_bytes`), or as this queue did with
    /// [`PortConfig::software_byte_counts`]. Queue 0 also carries the
    /// port's drops and errors from `rte_eth_stats_get` (`imissed` as
    /// `RxOverrun`, `rx_nombuf` as `NoMbuf`, `ierrors + oerrors` as
    /// errors), so that a sum over the queues counts each once. The
    /// driver's figures are read at most every 10 ms for the whole port
    /// and may be that old; the packet counts are current.
    fn stats(&self) -> QueueStats {
        let c = &self.counters;
        let mut s = QueueStats {
            rx_packets: c.rx_packets,
            rx_bytes: c.rx_bytes,
            tx_packets: c.tx_packets,
            tx_bytes: c.tx_bytes,
            drops: c.drops,
            errors: 0,
        };
        if self.queue != 0 && self.software_bytes {
            return s;
        }
        let Some(st) = self.shared.driver_stats() else {
            return s;
        };
        if !self.software_bytes {
            (s.rx_bytes, s.tx_bytes) = driver_bytes(&st, self.queue, self.shared.queues);
        }
        if self.queue == 0 {
            s.drops[DropReason::RxOverrun.index()] += st.imissed;
            s.drops[DropReason::NoMbuf.index()] += st.rx_nombuf;
            s.errors += st.ierrors + st.oerrors;
        }
        s
    }

    fn id(&self) -> (PortId, QueueId) {
        (PortId(self.port), QueueId(self.queue))
    }
}

/// Queue `queue`'s received and sent bytes (of `queues`) in the driver's
/// counters: its own (`q_ibytes`, `q_obytes`) where the driver keeps them
/// per queue, which ethdev has room for on the first
/// `RTE_ETHDEV_QUEUE_STAT_CNTRS` queues; queue 0 also takes the port's
/// bytes that no queue counter holds (all of them, on a driver that counts
/// only per port), so that the queues add up to the port's `ibytes` and
/// `obytes`.
fn driver_bytes(st: &sys::rte_eth_stats, queue: u16, queues: u16) -> (u64, u64) {
    let counted = (queues as usize).min(st.q_ibytes.len());
    let q = queue as usize;
    let (mut rx, mut tx) = match (st.q_ibytes.get(q), st.q_obytes.get(q)) {
        (Some(&rx), Some(&tx)) if q < counted => (rx, tx),
        _ => (0, 0),
    };
    if queue == 0 {
        let rx_queues: u64 = st.q_ibytes[..counted].iter().sum();
        let tx_queues: u64 = st.q_obytes[..counted].iter().sum();
        rx += st.ibytes.saturating_sub(rx_queues);
        tx += st.obytes.saturating_sub(tx_queues);
    }
    (rx, tx)
}

/// The names of the ethdev ports DPDK knows now.
pub(super) fn port_names() -> Vec<String> {
    let mut out = Vec::new();
    for id in 0..sys::RTE_MAX_ETHPORTS as u16 {
        // SAFETY: any id may be asked about.
        if unsafe { sys::rte_eth_dev_is_valid_port(id) } == 0 {
            continue;
        }
        let mut buf = [0 as std::ffi::c_char; sys::RTE_ETH_NAME_MAX_LEN as usize];
        // SAFETY: a valid port and a buffer of RTE_ETH_NAME_MAX_LEN.
        let rc = unsafe { sys::rte_eth_dev_get_name_by_port(id, buf.as_mut_ptr()) };
        if rc == 0 {
            // SAFETY: DPDK wrote a NUL-terminated name into `buf`.
            let name = unsafe { CStr::from_ptr(buf.as_ptr()) };
            out.push(name.to_string_lossy().into_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(ibytes: u64, obytes: u64, queues: &[(u64, u64)]) -> sys::rte_eth_stats {
        let mut st = sys::rte_eth_stats {
            ibytes,
            obytes,
            ..Default::default()
        };
        for (i, &(rx, tx)) in queues.iter().enumerate() {
            st.q_ibytes[i] = rx;
            st.q_obytes[i] = tx;
        }
        st
    }

    #[test]
    fn driver_bytes_are_per_queue_where_the_driver_keeps_them() {
        let st = stats(600, 60, &[(100, 10), (200, 20), (300, 30)]);
        let got: Vec<_> = (0..3).map(|q| driver_bytes(&st, q, 3)).collect();
        assert_eq!(got, [(100, 10), (200, 20), (300, 30)]);
    }

    #[test]
    fn queue_0_takes_the_bytes_no_queue_counter_holds() {
        // A driver that counts per port only.
        let st = stats(600, 60, &[]);
        assert_eq!(driver_bytes(&st, 0, 2), (600, 60));
        assert_eq!(driver_bytes(&st, 1, 2), (0, 0));
        // More queues than ethdev has counters for: the rest lands on 0.
        let n = st.q_ibytes.len();
        let mut per_queue = vec![(1, 1); n];
        per_queue[0] = (5, 5);
        let st = stats(5 + (n as u64 - 1) + 1000, 5 + (n as u64 - 1), &per_queue);
        let queues = n as u16 + 4;
        let sum = (0..queues)
            .map(|q| driver_bytes(&st, q, queues))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        assert_eq!(sum, (st.ibytes, st.obytes), "the queues add up to the port");
        assert_eq!(driver_bytes(&st, 0, queues), (1005, 5));
        assert_eq!(driver_bytes(&st, n as u16, queues), (0, 0));
        // Queue counters above the port's (a driver that counts them
        // differently): never negative.
        let st = stats(10, 0, &[(50, 0)]);
        assert_eq!(driver_bytes(&st, 0, 1), (50, 0));
    }
}
