//! NIC queues owned by lcores: one [`Port`] per rx/tx queue pair, moving
//! [`Mbuf`]s in bursts with no locks (and, on the DPDK backend, no
//! syscalls and no copies).
//!
//! Backends, in selection order: DPDK ethdev (physical NICs bound to
//! vfio-pci, and vdevs), AF_XDP (frames redirected by an XDP program into
//! our mbufs, zero-copy where the driver can), AF_PACKET with
//! memory-mapped rings (the raw-socket fallback), io_uring UDP/TCP sockets (for apps that work at L4), and
//! in-memory port pairs (tests, pipelines, the demo). Each has a probe that
//! says why it can or cannot run; the first that can open the requested
//! device wins, and every skip is logged once with its reason
//! ([`open`], [`BackendChoice`]).
//!
//! | backend | `--backend` | device | layer |
//! | --- | --- | --- | --- |
//! | DPDK ethdev | `dpdk` | a PCI address or a vdev | L2 |
//! | [`af_xdp`] | `af_xdp` | an interface name: `veth0` | L2 |
//! | [`af_packet`] | `af_packet` | an interface name: `veth0` | L2 |
//! | [`uring`] (io_uring UDP, TCP) | `io_uring` | `udp:LOCAL_ADDR:PORT[,peer=ADDR:PORT]`, `tcp:LOCAL_ADDR:PORT[,peer=ADDR:PORT]` | L4 |
//! | [`memory`] | `memory` | `memory:NAME` (a pair end) | L2 |
//!
//! Around the ports: [`TxBuffer`] (DPDK's `rte_eth_tx_buffer` with the
//! drain timer of examples/l2fwd), [`lpm`] (DIR-24-8 IPv4 longest-prefix
//! match, for l3fwd), [`meta`] (per-mbuf metadata such as a datagram's
//! peer address) and [`netns`] (network namespaces and veth pairs for
//! tests and benchmarks).

#[allow(unsafe_code)]
pub mod af_packet;
#[allow(unsafe_code)]
pub mod af_xdp;
pub mod dpdk;
pub mod fault;
#[allow(unsafe_code)]
mod iface;
pub mod lpm;
pub mod memory;
pub mod meta;
pub mod netns;
mod select;
mod tx_buffer;
#[allow(unsafe_code)]
pub mod uring;

pub use select::{BackendChoice, BackendKind, Opened, open, open_with, probes};
pub use tx_buffer::{OnFull, TX_DRAIN_US, TxBuffer};

use crate::backend::Probe;
use crate::ring::Batch;
use crate::wire::WireError;
use hugepages::NumaNode;
use hugepages::mbuf::Mbuf;
use serde::Serialize;
use std::fmt;

/// A port's number in its backend (DPDK's `port_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct PortId(pub u16);

/// A queue's number within its port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct QueueId(pub u16);

impl fmt::Display for PortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "port{}", self.0)
    }
}

/// The most packets one `rx_burst`/`tx_burst` moves; a port's configured
/// burst (32 by default, DPDK's `MAX_PKT_BURST`) is at most this.
pub const MAX_BURST: usize = 64;

/// A burst of packets: the `struct rte_mbuf *pkts[MAX_PKT_BURST]` array.
pub type MbufBatch = Batch<Mbuf, MAX_BURST>;

/// Where a backend delivers packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    /// Whole Ethernet frames (DPDK, AF_PACKET, memory ports).
    L2,
    /// Transport payloads of a socket (io_uring UDP/TCP): each mbuf holds
    /// one datagram, or a stream chunk.
    L4,
}

/// What a port can do. Backends fill what they know; new fields may come.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Capabilities {
    /// The backend's name, as `--backend` spells it.
    pub backend: &'static str,
    /// Where packets are delivered.
    pub layer: Layer,
    /// The most packets per burst.
    pub max_burst: usize,
    /// The MTU.
    pub mtu: usize,
    /// The NIC verifies IPv4/UDP/TCP checksums on receive.
    pub rx_checksum: bool,
    /// The NIC computes IPv4/UDP/TCP checksums on transmit.
    pub tx_checksum: bool,
    /// Receive-side scaling spreads flows over the queues, and mbufs carry
    /// the RSS hash.
    pub rss: bool,
    /// Which queue a flow arrives on, where a program can compute it (see
    /// [`Steering`](crate::wire::rss::Steering)): the TCP stack picks
    /// source ports by it so replies come back to the queue that asked.
    /// `None` where the spreading is the kernel's or the NIC's secret, or
    /// there is one queue.
    pub steering: Option<crate::wire::rss::Steering>,
    /// Queues of the port.
    pub queues: u16,
    /// The port's MAC address, for L2 ports that have one (what l2fwd
    /// writes as the source of frames it forwards).
    pub mac: Option<[u8; 6]>,
}

impl Capabilities {
    /// The minimal capabilities of a backend that offloads nothing.
    pub fn basic(
        backend: &'static str,
        layer: Layer,
        max_burst: usize,
        mtu: usize,
        queues: u16,
    ) -> Self {
        Capabilities {
            backend,
            layer,
            max_burst,
            mtu,
            rx_checksum: false,
            tx_checksum: false,
            rss: false,
            steering: None,
            queues,
            mac: None,
        }
    }
}

/// A link's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LinkStatus {
    /// Carrier present.
    pub up: bool,
    /// Speed, when known.
    pub speed_mbps: Option<u32>,
    /// Full duplex, when known.
    pub full_duplex: Option<bool>,
}

/// Why a packet was dropped. Every drop is counted under one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DropReason {
    /// No mbuf to receive into.
    NoMbuf,
    /// The NIC or kernel ring overflowed before we read it.
    RxOverrun,
    /// Shorter than the headers it claims (runt, truncated).
    Truncated,
    /// A header field that cannot be (bad version, bad length field).
    Malformed,
    /// An IP/UDP/TCP checksum that does not match.
    BadChecksum,
    /// Larger than the MTU.
    Oversized,
    /// Not for us (filtered: wrong ethertype, unknown destination).
    Filtered,
    /// No route (l3fwd).
    NoRoute,
    /// The TTL ran out (l3fwd).
    TtlExpired,
    /// The tx queue or the ring to the next lcore stayed full.
    TxFull,
}

impl DropReason {
    /// Every reason, in a fixed order (the index of [`QueueStats::drops`]).
    pub const ALL: [DropReason; 10] = [
        DropReason::NoMbuf,
        DropReason::RxOverrun,
        DropReason::Truncated,
        DropReason::Malformed,
        DropReason::BadChecksum,
        DropReason::Oversized,
        DropReason::Filtered,
        DropReason::NoRoute,
        DropReason::TtlExpired,
        DropReason::TxFull,
    ];

    /// This reason's index in [`DropReason::ALL`] (the declaration order,
    /// which `ALL` follows: checked at compile time below).
    #[inline(always)]
    pub const fn index(self) -> usize {
        self as usize
    }
}

const _: () = {
    let mut i = 0;
    while i < DropReason::ALL.len() {
        assert!(DropReason::ALL[i].index() == i);
        i += 1;
    }
};

/// One queue's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    /// Packets received.
    pub rx_packets: u64,
    /// Bytes received (on DPDK ports, the driver's count unless
    /// [`PortConfig::software_byte_counts`]).
    pub rx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Bytes sent (as `rx_bytes`).
    pub tx_bytes: u64,
    /// Drops, indexed by [`DropReason::index`].
    pub drops: [u64; DropReason::ALL.len()],
    /// Errors the backend reported (failed syscalls, NIC error counters).
    pub errors: u64,
}

impl QueueStats {
    /// Drops of one reason.
    pub fn dropped(&self, why: DropReason) -> u64 {
        self.drops[why.index()]
    }

    /// Counts a drop.
    pub fn drop_one(&mut self, why: DropReason) {
        self.drops[why.index()] += 1;
    }

    /// All drops.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }
}

/// One rx/tx queue pair of a port, owned by one lcore: `Send`, not `Sync`
/// (operations take `&mut self`).
///
/// Ownership of packets moves with them: `rx_burst` appends received mbufs
/// to `out`; `tx_burst` takes mbufs from the front of `pkts` and leaves the
/// ones it could not send there, in order, for the caller to retry or free.
/// A packet that can never be sent (larger than the port's frames, or an
/// L4 datagram with no destination) is taken, freed and counted under its
/// [`DropReason`] rather than left to block the ones behind it.
pub trait Port: Send {
    /// Receives up to the port's burst (and `out`'s room); returns how many
    /// were appended. Never blocks.
    fn rx_burst(&mut self, out: &mut MbufBatch) -> usize;

    /// Sends from the front of `pkts`; returns how many were taken (sent,
    /// or dropped and counted as the trait docs say). The unsent stay in
    /// `pkts`. Never blocks.
    fn tx_burst(&mut self, pkts: &mut MbufBatch) -> usize;

    /// Allocates up to `n` empty mbufs that this port can transmit (from
    /// the backend's own pool: a DPDK mempool on the DPDK backend, the
    /// port's `MbufPool` otherwise) and appends them to `out`; returns how
    /// many (fewer when the pool runs low: counted as `NoMbuf` drops by the
    /// caller that wanted them).
    fn alloc_burst(&mut self, n: usize, out: &mut MbufBatch) -> usize;

    /// What the port can do.
    fn capabilities(&self) -> &Capabilities;

    /// The link, now.
    fn link(&self) -> LinkStatus;

    /// This queue's counters.
    fn stats(&self) -> QueueStats;

    /// The port and queue.
    fn id(&self) -> (PortId, QueueId);
}

/// How to open a port.
#[derive(Debug, Clone)]
pub struct PortConfig {
    /// The device in the backend's terms: a PCI address or a vdev for DPDK
    /// (`0000:03:00.0`, `net_null0`), an interface for AF_PACKET (`veth0`),
    /// a socket address for io_uring, a pair name for memory ports.
    pub device: String,
    /// Queue pairs to open (one per I/O lcore).
    pub queues: u16,
    /// Packets per burst, at most [`MAX_BURST`].
    pub burst: usize,
    /// Receive descriptors (ring entries) per queue.
    pub rx_desc: u16,
    /// Transmit descriptors per queue.
    pub tx_desc: u16,
    /// Mbufs in each queue's receive pool (the backend creates the pool:
    /// a DPDK mempool on the DPDK backend, an `MbufPool` otherwise).
    pub mbufs: usize,
    /// Per-lcore cache of that pool.
    pub mbuf_cache: usize,
    /// The NUMA node the queues' memory should come from.
    pub numa_node: Option<NumaNode>,
    /// Receive every frame, not only those addressed to the port.
    pub promiscuous: bool,
    /// Draw every queue's mbufs from one pool per NUMA socket shared by all
    /// the ports opened with this set, as DPDK's l2fwd and testpmd do,
    /// instead of a pool per queue (`mbufs` is then unused); the value is
    /// that pool's size, used by the port that creates it (the first one
    /// opened on the socket with the same cache size). Each queue is
    /// promised its receive ring and a burst of it; a port whose queues
    /// would take more than the pool has left is refused with the reason,
    /// so give every port the total of all of them. DPDK backend only; the other backends keep a
    /// pool per queue. Sharing pays when ports forward to each other:
    /// what one port's transmit frees is what the other's next receive
    /// takes, still in cache (docs/performance.md, the l2fwd program).
    pub shared_pool: Option<usize>,
    /// Hand each received frame over as it arrives, where a backend would
    /// otherwise batch at some cost in latency: AF_PACKET then receives
    /// through a `TPACKET_V2` ring (a status word per frame) instead of
    /// `TPACKET_V3`'s blocks, which reach user space only when full or
    /// when their retire timer (1 ms at the least) runs out. For servers
    /// that answer requests (the user-space TCP stack); forwarding and
    /// capture keep the batching. Other backends hand frames over as they
    /// arrive either way.
    pub low_latency: bool,
    /// Ask the device to compute IPv4, TCP and UDP checksums on transmit
    /// where it can (DPDK ports whose PMD offers all three; the others
    /// ignore it), and say so in [`Capabilities::tx_checksum`]. Off by
    /// default: on some PMDs (ixgbe's and i40e's vector paths) any
    /// transmit offload moves the queue to a slower full-featured path,
    /// which forwarding would pay for. The TCP stack's servers turn it on.
    pub tx_checksum: bool,
    /// Count bytes in software on DPDK ports: each queue reads every
    /// mbuf's `pkt_len` as it receives and sends it. Off by default: the
    /// bytes are then the driver's (`rte_eth_stats`), as testpmd and DPDK's
    /// telemetry report them, and a forwarding loop touches no mbuf header
    /// (on `net_null` the two reads were about a tenth of the l2fwd
    /// program's time; docs/performance.md). Drivers that count no bytes
    /// (`net_null` and `net_ring` in DPDK 22.11) then report none; turn
    /// this on to have them. The other backends count bytes in software
    /// always, from lengths they read anyway.
    pub software_byte_counts: bool,
}

impl PortConfig {
    /// `device` with DPDK l2fwd's defaults: one queue, burst 32, 1024 rx
    /// and tx descriptors, 8192 mbufs with a 256-entry cache.
    pub fn new(device: impl Into<String>) -> Self {
        PortConfig {
            device: device.into(),
            queues: 1,
            burst: 32,
            rx_desc: 1024,
            tx_desc: 1024,
            mbufs: 8192,
            mbuf_cache: 256,
            numa_node: None,
            promiscuous: true,
            shared_pool: None,
            low_latency: false,
            tx_checksum: false,
            software_byte_counts: false,
        }
    }
}

impl PortConfig {
    /// Sets the queues.
    pub fn with_queues(mut self, queues: u16) -> Self {
        self.queues = queues;
        self
    }

    /// Sets the rx and tx descriptors per queue.
    pub fn with_descriptors(mut self, rx: u16, tx: u16) -> Self {
        self.rx_desc = rx;
        self.tx_desc = tx;
        self
    }

    /// Sets the mbufs of each queue's pool and its per-lcore cache.
    pub fn with_mbufs(mut self, mbufs: usize, cache: usize) -> Self {
        self.mbufs = mbufs;
        self.mbuf_cache = cache;
        self
    }

    /// Receives frame by frame ([`low_latency`](Self::low_latency)).
    pub fn with_low_latency(mut self, on: bool) -> Self {
        self.low_latency = on;
        self
    }

    /// Checksums computed by the device on transmit, where it can
    /// ([`tx_checksum`](Self::tx_checksum)).
    pub fn with_tx_checksum(mut self, on: bool) -> Self {
        self.tx_checksum = on;
        self
    }

    /// Bytes counted in software on DPDK ports
    /// ([`software_byte_counts`](Self::software_byte_counts)).
    pub fn with_software_byte_counts(mut self, on: bool) -> Self {
        self.software_byte_counts = on;
        self
    }

    /// Shares one pool of `mbufs` per NUMA socket between every port
    /// opened this way ([`shared_pool`](Self::shared_pool)).
    pub fn with_shared_pool(mut self, mbufs: usize) -> Self {
        self.shared_pool = Some(mbufs);
        self
    }
}

/// A way to open ports: one per backend, named by its [`BackendKind`].
pub trait Backend: Send + Sync {
    /// Whether it can run on this machine at all, and why (not).
    fn probe(&self) -> Probe;

    /// Opens `cfg.device`, one [`Port`] per queue.
    ///
    /// # Errors
    /// Why this backend cannot open this device; the selector logs it and
    /// tries the next backend.
    fn open(&self, cfg: &PortConfig) -> crate::Result<Vec<Box<dyn Port>>>;
}

impl fmt::Debug for dyn Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (port, queue) = self.id();
        f.debug_struct("Port")
            .field("backend", &self.capabilities().backend)
            .field("port", &port.0)
            .field("queue", &queue.0)
            .finish()
    }
}

impl<P: Port + ?Sized> Port for Box<P> {
    #[inline]
    fn rx_burst(&mut self, out: &mut MbufBatch) -> usize {
        (**self).rx_burst(out)
    }

    #[inline]
    fn tx_burst(&mut self, pkts: &mut MbufBatch) -> usize {
        (**self).tx_burst(pkts)
    }

    #[inline]
    fn alloc_burst(&mut self, n: usize, out: &mut MbufBatch) -> usize {
        (**self).alloc_burst(n, out)
    }

    fn capabilities(&self) -> &Capabilities {
        (**self).capabilities()
    }

    fn link(&self) -> LinkStatus {
        (**self).link()
    }

    fn stats(&self) -> QueueStats {
        (**self).stats()
    }

    fn id(&self) -> (PortId, QueueId) {
        (**self).id()
    }
}

impl QueueStats {
    /// Adds `other`'s counters to these (for a port's total over its
    /// queues, or an app's over its lcores).
    pub fn add(&mut self, other: &QueueStats) {
        self.rx_packets += other.rx_packets;
        self.rx_bytes += other.rx_bytes;
        self.tx_packets += other.tx_packets;
        self.tx_bytes += other.tx_bytes;
        for (d, o) in self.drops.iter_mut().zip(other.drops) {
            *d += o;
        }
        self.errors += other.errors;
    }

    /// Counts `n` drops of one reason.
    pub fn drop_n(&mut self, why: DropReason, n: u64) {
        self.drops[why.index()] += n;
    }

    /// The drops as `(reason, count)` for every reason with a count, in
    /// [`DropReason::ALL`]'s order.
    pub fn drops_by_reason(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL
            .iter()
            .zip(self.drops)
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| (*r, n))
    }
}

impl DropReason {
    /// The name as JSON and logs spell it (`no_mbuf`, `rx_overrun`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::NoMbuf => "no_mbuf",
            DropReason::RxOverrun => "rx_overrun",
            DropReason::Truncated => "truncated",
            DropReason::Malformed => "malformed",
            DropReason::BadChecksum => "bad_checksum",
            DropReason::Oversized => "oversized",
            DropReason::Filtered => "filtered",
            DropReason::NoRoute => "no_route",
            DropReason::TtlExpired => "ttl_expired",
            DropReason::TxFull => "tx_full",
        }
    }
}

impl From<WireError> for DropReason {
    /// The reason a packet the parsers refused is dropped under.
    /// Unsupported packets count as `Filtered`: they are not broken, they
    /// are not for this data path.
    fn from(e: WireError) -> DropReason {
        match e {
            WireError::Truncated(_) => DropReason::Truncated,
            WireError::Malformed(_) => DropReason::Malformed,
            WireError::BadChecksum(_) => DropReason::BadChecksum,
            WireError::Unsupported(_) => DropReason::Filtered,
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Field, Header};

    #[test]
    fn wire_errors_map_to_drop_reasons() {
        for (e, want) in [
            (WireError::Truncated(Header::Udp), DropReason::Truncated),
            (
                WireError::Malformed(Field::Ipv4HeaderLen),
                DropReason::Malformed,
            ),
            (
                WireError::BadChecksum(Header::Ipv4),
                DropReason::BadChecksum,
            ),
            (
                WireError::Unsupported(Field::VlanDepth),
                DropReason::Filtered,
            ),
        ] {
            assert_eq!(DropReason::from(e), want, "{e}");
        }
    }
}
