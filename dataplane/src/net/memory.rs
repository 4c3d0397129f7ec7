//! In-memory port pairs: DPDK's `net_ring` in the framework's own rings.
//!
//! A pair has two ends; each end has the same number of queues, and queue
//! `q` of one end is linked to queue `q` of the other by two SPSC rings of
//! `Mbuf`s, one per direction. `tx_burst` on one end moves mbuf pointers
//! onto the ring and `rx_burst` on the other takes them off: no copy, no
//! syscall, and a full ring pushes back (the unsent stay with the caller).
//! Each end has an [`MbufPool`] for `alloc_burst`; received mbufs belong to
//! whatever pool the sender allocated them from, and go back there when
//! freed.
//!
//! Two ways in:
//!
//! - [`MemoryPort::pair`] returns both ends' queues at once (tests,
//!   pipelines built in one place);
//! - [`register_pair`] names the two ends so that [`open`](super::open)
//!   finds them (`memory:NAME`), each end once. Opening a `memory:NAME`
//!   that is not registered creates a pair whose other end is
//!   `NAME.peer`, left registered for a later open.

use super::{
    Backend, Capabilities, Layer, LinkStatus, MAX_BURST, MbufBatch, Port, PortConfig, PortId,
    QueueId, QueueStats,
};
use crate::backend::Probe;
use crate::ring::{self, Consumer, Producer, Single};
use crate::{Error, Result};
use hugepages::mbuf::{Mbuf, MbufPool, MbufPoolConfig};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU16, Ordering};

/// The prefix that names a memory port in a device string.
pub const DEVICE_PREFIX: &str = "memory:";

/// The MTU memory ports report: a jumbo frame fits any default mbuf chain
/// a sender builds, and nothing on the path cuts frames.
const MEMORY_MTU: usize = 9000;

/// One queue of one end of a memory pair.
pub struct MemoryPort {
    id: (PortId, QueueId),
    rx: Consumer<Mbuf, Single>,
    tx: Producer<Mbuf, Single>,
    pool: MbufPool,
    caps: Capabilities,
    /// Checksums travel as a virtio link carries them (see
    /// [`MemoryPort::pair`]).
    offload: bool,
    burst: usize,
    stats: QueueStats,
}

impl std::fmt::Debug for MemoryPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryPort")
            .field("id", &self.id)
            .field("rx_waiting", &self.rx.len())
            .field("tx_queued", &self.tx.len())
            .field("pool", &self.pool.name())
            .finish()
    }
}

fn next_port_id() -> PortId {
    // Memory ports are numbered apart from other backends' from 0x8000 up
    // so that a pipeline mixing them never sees two ports with one id.
    static NEXT: AtomicU16 = AtomicU16::new(0x8000);
    // Relaxed: only uniqueness matters.
    PortId(NEXT.fetch_add(1, Ordering::Relaxed))
}

impl MemoryPort {
    /// Creates a pair: `cfg.queues` queues on each end, each direction of
    /// each queue a ring of `cfg.rx_desc` mbufs (rounded up to a power of
    /// two), and one pool of `cfg.mbufs` mbufs per end for `alloc_burst`.
    ///
    /// With [`PortConfig::tx_checksum`] both ends offer checksum offload
    /// as a virtio link does (and Linux's loopback: it computes nothing
    /// either): a frame sent with a sum left to the device arrives with
    /// that sum not computed and marked `RX_*_CKSUM_NONE`, verified, so
    /// neither end spends a pass over the payload on it.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for zero queues or a burst over [`MAX_BURST`];
    /// [`Error::Memory`] when a pool cannot be made.
    pub fn pair(cfg: &PortConfig) -> Result<(Vec<MemoryPort>, Vec<MemoryPort>)> {
        check(cfg)?;
        let pool = |end: &str| {
            MbufPool::new(MbufPoolConfig {
                name: format!("mem-{}-{end}", cfg.device),
                count: cfg.mbufs,
                cache_size: cfg.mbuf_cache,
                numa_node: cfg.numa_node,
                ..MbufPoolConfig::default()
            })
        };
        let (pool_a, pool_b) = (pool("a")?, pool("b")?);
        MemoryPort::pair_with_pools(cfg, pool_a, pool_b)
    }

    /// A pair whose ends allocate from the pools given (one pool may serve
    /// both ends, and several pairs: a pipeline's single per-node pool).
    /// `cfg.mbufs` and `cfg.mbuf_cache` are not used.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for zero queues or a burst over [`MAX_BURST`].
    pub fn pair_with_pools(
        cfg: &PortConfig,
        pool_a: MbufPool,
        pool_b: MbufPool,
    ) -> Result<(Vec<MemoryPort>, Vec<MemoryPort>)> {
        check(cfg)?;
        let (ida, idb) = (next_port_id(), next_port_id());
        let depth = usize::from(cfg.rx_desc.max(1)).next_power_of_two();
        let caps = |id: PortId| {
            let mut c = Capabilities::basic("memory", Layer::L2, cfg.burst, MEMORY_MTU, cfg.queues);
            // Locally administered, unicast, from the port id.
            let [hi, lo] = id.0.to_be_bytes();
            c.mac = Some([0x02, 0, 0, 0, hi, lo]);
            (c.tx_checksum, c.rx_checksum) = (cfg.tx_checksum, cfg.tx_checksum);
            c
        };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for q in 0..cfg.queues {
            let (a_to_b, b_from_a) = ring::spsc::<Mbuf>(depth)?;
            let (b_to_a, a_from_b) = ring::spsc::<Mbuf>(depth)?;
            a.push(MemoryPort {
                id: (ida, QueueId(q)),
                rx: a_from_b,
                tx: a_to_b,
                pool: pool_a.clone(),
                caps: caps(ida),
                offload: cfg.tx_checksum,
                burst: cfg.burst,
                stats: QueueStats::default(),
            });
            b.push(MemoryPort {
                id: (idb, QueueId(q)),
                rx: b_from_a,
                tx: b_to_a,
                pool: pool_b.clone(),
                caps: caps(idb),
                offload: cfg.tx_checksum,
                burst: cfg.burst,
                stats: QueueStats::default(),
            });
        }
        Ok((a, b))
    }

    /// The pool `alloc_burst` takes from.
    pub fn pool(&self) -> &MbufPool {
        &self.pool
    }

    /// Mbufs sent by the other end and not yet received here.
    pub fn rx_waiting(&self) -> usize {
        self.rx.len()
    }
}

/// What the receiving end of an offloading pair finds of a frame sent
/// with `tx` offload flags: a sum left to the device is not computed (the
/// field keeps what the sender put there) and the data counts as
/// verified, `RX_*_CKSUM_NONE`, as DPDK's virtio driver reports a frame
/// whose header says `VIRTIO_NET_HDR_F_NEEDS_CSUM` and Linux's loopback
/// and veth pass `CHECKSUM_PARTIAL` on: nothing on a memory link can
/// corrupt it. A frame sent with its sums computed is not vouched for
/// (the receiver checks it).
fn carried(tx: u64) -> u64 {
    use hugepages::mbuf::offload as o;
    let mut rx = 0;
    if tx & o::TX_IP_CKSUM != 0 {
        rx |= o::RX_IP_CKSUM_NONE;
    }
    if tx & o::TX_UDP_CKSUM != 0 {
        // TX_TCP_CKSUM and TX_UDP_CKSUM share the two-bit field.
        rx |= o::RX_L4_CKSUM_NONE;
    }
    rx
}

fn check(cfg: &PortConfig) -> Result<()> {
    if cfg.queues == 0 {
        return Err(Error::Config(format!("{}: zero queues", cfg.device)));
    }
    if cfg.burst == 0 || cfg.burst > MAX_BURST {
        return Err(Error::Config(format!(
            "{}: burst {} must be 1..={MAX_BURST}",
            cfg.device, cfg.burst
        )));
    }
    Ok(())
}

impl Port for MemoryPort {
    #[inline]
    fn rx_burst(&mut self, out: &mut MbufBatch) -> usize {
        let before = out.len();
        let n = self.rx.pop_burst(out.up_to(self.burst));
        let bytes: usize = out[before..].iter().map(Mbuf::len).sum();
        self.stats.rx_packets += n as u64;
        self.stats.rx_bytes += bytes as u64;
        n
    }

    #[inline]
    fn tx_burst(&mut self, pkts: &mut MbufBatch) -> usize {
        if self.offload {
            for m in pkts.iter_mut() {
                m.set_ol_flags(carried(m.ol_flags()));
            }
        }
        let bytes: usize = pkts.iter().map(Mbuf::len).sum();
        let n = self.tx.push_burst(&mut *pkts);
        // The unsent stay at the front of `pkts`: subtract their bytes.
        let unsent: usize = pkts.iter().map(Mbuf::len).sum();
        self.stats.tx_packets += n as u64;
        self.stats.tx_bytes += (bytes - unsent) as u64;
        n
    }

    #[inline]
    fn alloc_burst(&mut self, n: usize, out: &mut MbufBatch) -> usize {
        alloc_from(&self.pool, n, out)
    }

    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn link(&self) -> LinkStatus {
        LinkStatus {
            up: !self.tx.is_abandoned(),
            speed_mbps: None,
            full_duplex: Some(true),
        }
    }

    fn stats(&self) -> QueueStats {
        self.stats
    }

    fn id(&self) -> (PortId, QueueId) {
        self.id
    }
}

/// Allocates up to `n` mbufs from `pool` into `out` (at most its room):
/// all at once when the pool has them, else one by one until it runs out.
pub(crate) fn alloc_from(pool: &MbufPool, n: usize, out: &mut MbufBatch) -> usize {
    let n = n.min(out.spare());
    if n == 0 {
        return 0;
    }
    if pool.alloc_bulk(n, &mut Append(out)).is_ok() {
        return n;
    }
    let mut got = 0;
    while got < n {
        let Some(m) = pool.alloc() else { break };
        if out.push(m).is_err() {
            break;
        }
        got += 1;
    }
    got
}

/// `Extend` for a batch, for `MbufPool::alloc_bulk` (which is only asked
/// for what fits).
struct Append<'a>(&'a mut MbufBatch);

impl Extend<Mbuf> for Append<'_> {
    fn extend<I: IntoIterator<Item = Mbuf>>(&mut self, iter: I) {
        for m in iter {
            // Cannot fail: callers ask for at most the batch's room (a
            // failure would only free the mbuf back to its pool).
            let _ = self.0.push(m);
        }
    }
}

/// Every end by name: its queues until it is opened, `None` after.
type Registry = HashMap<String, Option<Vec<MemoryPort>>>;

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

fn with_registry<R>(f: impl FnOnce(&mut Registry) -> R) -> R {
    let mut guard = match REGISTRY.lock() {
        Ok(g) => g,
        // The map stays consistent: every update is a single insert/remove.
        Err(poisoned) => poisoned.into_inner(),
    };
    f(guard.get_or_insert_with(HashMap::new))
}

/// Creates a pair with [`MemoryPort::pair`] and registers its ends as
/// `memory:a` and `memory:b` for [`open`](super::open) (the names are given
/// without the prefix).
///
/// # Errors
///
/// [`Error::Config`] when a name is empty, the two are equal, or one is
/// already registered; the errors of [`MemoryPort::pair`].
pub fn register_pair(a: &str, b: &str, cfg: &PortConfig) -> Result<()> {
    check_names(a, b)?;
    let (ea, eb) = MemoryPort::pair(cfg)?;
    register_ends(a, b, ea, eb)
}

/// [`register_pair`] over the pools given ([`MemoryPort::pair_with_pools`]):
/// the caller keeps a handle on them, to check after the run that every
/// mbuf came back.
///
/// # Errors
///
/// As [`register_pair`].
pub fn register_pair_with_pools(
    a: &str,
    b: &str,
    cfg: &PortConfig,
    pool_a: MbufPool,
    pool_b: MbufPool,
) -> Result<()> {
    check_names(a, b)?;
    let (ea, eb) = MemoryPort::pair_with_pools(cfg, pool_a, pool_b)?;
    register_ends(a, b, ea, eb)
}

fn check_names(a: &str, b: &str) -> Result<()> {
    if a.is_empty() || b.is_empty() || a == b {
        return Err(Error::Config(format!(
            "memory pair names must be two different non-empty names, not {a:?} and {b:?}"
        )));
    }
    Ok(())
}

fn register_ends(a: &str, b: &str, ea: Vec<MemoryPort>, eb: Vec<MemoryPort>) -> Result<()> {
    with_registry(|r| {
        if let Some(taken) = [a, b].into_iter().find(|n| r.contains_key(*n)) {
            return Err(Error::Config(format!(
                "memory port {taken:?} is already registered"
            )));
        }
        r.insert(a.to_owned(), Some(ea));
        r.insert(b.to_owned(), Some(eb));
        Ok(())
    })
}

/// Forgets the name of an end, opened or not, so that it can be
/// registered again (queues never opened are dropped, with any mbufs
/// queued to them); returns whether it was there.
pub fn unregister(name: &str) -> bool {
    with_registry(|r| r.remove(name).is_some())
}

/// The memory-port backend.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory;

impl Backend for Memory {
    fn probe(&self) -> Probe {
        Probe::ok("in-memory port pairs over SPSC rings need nothing from the machine")
    }

    fn open(&self, cfg: &PortConfig) -> Result<Vec<Box<dyn Port>>> {
        let name = cfg.device.strip_prefix(DEVICE_PREFIX).ok_or_else(|| {
            Error::Config(format!(
                "{:?} is not a memory port (expected {DEVICE_PREFIX}NAME)",
                cfg.device
            ))
        })?;
        if name.is_empty() {
            return Err(Error::Config("memory port with an empty name".into()));
        }
        check(cfg)?;
        let ports = with_registry(|r| -> Result<Vec<MemoryPort>> {
            match r.get_mut(name) {
                Some(slot) => {
                    let n = slot.as_ref().map(Vec::len);
                    match n {
                        None => Err(Error::Config(format!("memory port {name} is already open"))),
                        Some(n) if n != usize::from(cfg.queues) => Err(Error::Config(format!(
                            "memory port {name} has {n} queues; {} asked for",
                            cfg.queues
                        ))),
                        Some(_) => slot.take().ok_or_else(|| Error::Config(name.to_owned())),
                    }
                }
                None => {
                    let peer = format!("{name}.peer");
                    if r.contains_key(&peer) {
                        return Err(Error::Config(format!(
                            "memory port {name} does not exist and {peer} is taken"
                        )));
                    }
                    let (mine, theirs) = MemoryPort::pair(cfg)?;
                    r.insert(peer.clone(), Some(theirs));
                    r.insert(name.to_owned(), None);
                    tracing::info!(
                        "memory port {name} created; its other end is {DEVICE_PREFIX}{peer}"
                    );
                    Ok(mine)
                }
            }
        })?;
        Ok(ports
            .into_iter()
            .map(|p| Box::new(p) as Box<dyn Port>)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offloading_pair_marks_what_it_carried_unverified_sums_verified_data() {
        use hugepages::mbuf::offload as o;
        let (mut a, mut b) = MemoryPort::pair(&cfg(1, 64).with_tx_checksum(true)).expect("pair");
        let (a, b) = (&mut a[0], &mut b[0]);
        assert!(a.capabilities().tx_checksum && b.capabilities().rx_checksum);
        let mut batch = MbufBatch::new();
        assert_eq!(a.alloc_burst(4, &mut batch), 4);
        let sent = [
            o::TX_IPV4 | o::TX_IP_CKSUM | o::TX_TCP_CKSUM,
            o::TX_IPV4 | o::TX_IP_CKSUM | o::TX_UDP_CKSUM,
            o::TX_IPV4 | o::TX_IP_CKSUM,
            0,
        ];
        for (m, f) in batch.iter_mut().zip(sent) {
            m.set_ol_flags(f);
        }
        assert_eq!(a.tx_burst(&mut batch), 4);
        let mut got = MbufBatch::new();
        assert_eq!(b.rx_burst(&mut got), 4);
        let flags: Vec<u64> = got.iter().map(Mbuf::ol_flags).collect();
        let both = o::RX_IP_CKSUM_NONE | o::RX_L4_CKSUM_NONE;
        assert_eq!(flags, [both, both, o::RX_IP_CKSUM_NONE, 0]);
        // Without the offload, flags travel untouched and nothing is
        // offered.
        let (mut c, mut d) = MemoryPort::pair(&cfg(1, 64)).expect("pair");
        let (c, d) = (&mut c[0], &mut d[0]);
        assert!(!c.capabilities().tx_checksum && !d.capabilities().rx_checksum);
        assert_eq!(c.alloc_burst(1, &mut batch), 1);
        batch[0].set_ol_flags(o::TX_TCP_CKSUM);
        assert_eq!(c.tx_burst(&mut batch), 1);
        assert_eq!(d.rx_burst(&mut got), 1);
        assert_eq!(got[4].ol_flags(), o::TX_TCP_CKSUM);
    }

    fn cfg(queues: u16, depth: u16) -> PortConfig {
        let mut c = PortConfig::new("memory:test");
        c.queues = queues;
        c.rx_desc = depth;
        c.mbufs = 256;
        c.mbuf_cache = 0;
        c
    }

    #[test]
    fn frames_cross_without_copies_and_pools_fill_back() {
        let (mut a, mut b) = MemoryPort::pair(&cfg(2, 64)).expect("pair");
        let pool = a[1].pool().clone();
        let mut batch = MbufBatch::new();
        assert_eq!(a[1].alloc_burst(10, &mut batch), 10);
        let addrs: Vec<_> = batch.iter().map(|m| m.as_ptr()).collect();
        for (i, m) in batch.iter_mut().enumerate() {
            m.append(60).expect("room").fill(i as u8);
        }
        assert_eq!(a[1].tx_burst(&mut batch), 10);
        assert!(batch.is_empty());
        let mut got = MbufBatch::new();
        assert_eq!(b[0].rx_burst(&mut got), 0, "queue 0 saw queue 1's frames");
        assert_eq!(b[1].rx_burst(&mut got), 10);
        let got_addrs: Vec<_> = got.iter().map(|m| m.as_ptr()).collect();
        assert_eq!(addrs, got_addrs, "the same buffers arrive");
        assert_eq!(got[3].data()[0], 3);
        assert_eq!(a[1].stats().tx_packets, 10);
        assert_eq!(a[1].stats().tx_bytes, 600);
        assert_eq!(b[1].stats().rx_bytes, 600);
        drop(got);
        assert_eq!(pool.available(), pool.capacity());
    }

    #[test]
    fn a_full_ring_pushes_back_in_order() {
        let (mut a, mut b) = MemoryPort::pair(&cfg(1, 4)).expect("pair");
        let mut batch = MbufBatch::new();
        a[0].alloc_burst(6, &mut batch);
        for (i, m) in batch.iter_mut().enumerate() {
            m.append(1).expect("room")[0] = i as u8;
        }
        assert_eq!(a[0].tx_burst(&mut batch), 4);
        assert_eq!(batch.len(), 2);
        assert_eq!(batch[0].data(), [4]);
        let mut got = MbufBatch::new();
        assert_eq!(b[0].rx_burst(&mut got), 4);
        assert_eq!(a[0].tx_burst(&mut batch), 2);
        assert_eq!(b[0].rx_burst(&mut got), 2);
        let order: Vec<u8> = got.iter().map(|m| m.data()[0]).collect();
        assert_eq!(order, [0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn bursts_are_capped() {
        let mut c = cfg(1, 256);
        c.burst = 8;
        let (mut a, mut b) = MemoryPort::pair(&c).expect("pair");
        let mut batch = MbufBatch::new();
        a[0].alloc_burst(20, &mut batch);
        assert_eq!(a[0].tx_burst(&mut batch), 20);
        let mut got = MbufBatch::new();
        assert_eq!(b[0].rx_burst(&mut got), 8);
        assert_eq!(b[0].rx_burst(&mut got), 8);
        assert_eq!(b[0].rx_burst(&mut got), 4);
        assert_eq!(b[0].rx_burst(&mut got), 0);
    }

    #[test]
    fn registered_ends_open_once_each() {
        let c = cfg(1, 16);
        register_pair("reg-a", "reg-b", &c).expect("registered");
        assert!(register_pair("reg-a", "reg-c", &c).is_err());
        let mut ca = c.clone();
        ca.device = "memory:reg-a".into();
        let mut pa = Memory.open(&ca).expect("a");
        let again = Memory.open(&ca).expect_err("open once");
        assert!(again.to_string().contains("already open"), "{again}");
        let mut cb = c.clone();
        cb.device = "memory:reg-b".into();
        cb.queues = 2;
        assert!(Memory.open(&cb).is_err(), "queue count must match");
        cb.queues = 1;
        let mut pb = Memory.open(&cb).expect("b");
        let mut batch = MbufBatch::new();
        pa[0].alloc_burst(3, &mut batch);
        pa[0].tx_burst(&mut batch);
        let mut got = MbufBatch::new();
        assert_eq!(pb[0].rx_burst(&mut got), 3);
    }

    #[test]
    fn an_unregistered_name_makes_a_pair_with_a_peer() {
        let mut c = cfg(1, 16);
        c.device = "memory:auto-x".into();
        let mut mine = Memory.open(&c).expect("created");
        c.device = "memory:auto-x.peer".into();
        let mut peer = Memory.open(&c).expect("peer registered");
        let mut batch = MbufBatch::new();
        mine[0].alloc_burst(2, &mut batch);
        mine[0].tx_burst(&mut batch);
        let mut got = MbufBatch::new();
        assert_eq!(peer[0].rx_burst(&mut got), 2);
        c.device = "veth0".into();
        assert!(Memory.open(&c).is_err());
    }
}
