//! I/O lcores that feed workers: a [`Dispatcher`] polls the rx queues of
//! its ports, steers each packet to an application worker by its flow,
//! and sends back out what the workers return; each worker owns a
//! [`WorkerLink`] and drives it from [`Worker::poll`](crate::worker::Worker::poll).
//!
//! This is DPDK's pipeline model (an rx/tx lcore and worker lcores linked
//! by `rte_ring`s): one single-producer ring from the
//! I/O lcore to each worker and one back, carrying `Mbuf`s in bursts, so
//! the hop costs two ring transfers per packet and no copy. Packets of
//! one flow always go to the same worker and come back in the order they
//! arrived.
//!
//! Steering: the flow key is the port's RSS hash when the port computed
//! one (DPDK NICs), else CRC32C of the IPv4 5-tuple (addresses, protocol,
//! and ports for TCP and UDP; the addresses alone for fragments and other
//! protocols; the MAC addresses for anything not IPv4); a
//! [`Partitioner`] then picks the worker (by default a multiply-shift
//! range reduction of the hash).
//!
//! Like a NIC, the dispatcher never waits: a packet whose worker's ring is
//! full is dropped and counted (`worker_busy`), and so is a reply its port
//! will not take (`tx_dropped`).
//!
//! ```no_run
//! use dataplane::dispatch::{self, DispatchConfig, WorkerLink};
//! use dataplane::lcore::{LcoreConfig, LcoreGroup, PollContext, Role};
//! use dataplane::net::{self, MbufBatch, PortConfig};
//! use dataplane::prelude::*;
//!
//! struct Swap { link: WorkerLink, batch: MbufBatch }
//!
//! impl Worker for Swap {
//!     type State = ();
//!     type Message = ();
//!     fn init(&mut self) -> Result<()> { Ok(()) }
//!     fn handle_message(&mut self, _: &mut (), _: Envelope<()>) -> Result<()> { Ok(()) }
//!     fn poll(&mut self, _: &mut (), _ctx: &PollContext) -> Result<usize> {
//!         let n = self.link.recv(&mut self.batch);
//!         for m in self.batch.iter_mut() {
//!             let f = m.data_mut();
//!             for i in 0..6 { f.swap(i, i + 6); }
//!         }
//!         self.link.send(&mut self.batch);
//!         Ok(n + self.link.pending())
//!     }
//! }
//!
//! let ports = net::open(&PortConfig::new("net_null0"), net::BackendChoice::Auto)?.value;
//! let (io, links) = dispatch::dispatcher(ports, 2, DispatchConfig::default())?;
//! let mut links: Vec<Option<WorkerLink>> = links.into_iter().map(Some).collect();
//! let pool = WorkerPool::builder()
//!     .factory(move |i: usize| Swap { link: links[i].take().expect("one link each"), batch: MbufBatch::new() })
//!     .workers(2)
//!     .build()?;
//! let mut group = LcoreGroup::new();
//! let l = group.add(LcoreConfig::new(Role::Io).name("io"));
//! group.poller(l, io)?;
//! let running = group.launch()?;
//! // ...
//! running.stop()?;
//! pool.shutdown()?;
//! # Ok::<(), dataplane::Error>(())
//! ```

use crate::lcore::{PollContext, Poller};
use crate::net::{MbufBatch, Port};
use crate::partition::Partitioner;
use crate::ring::{self, Consumer, Producer, Single};
use crate::{Error, Result};
use hugepages::mbuf::Mbuf;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// How a dispatcher is set up.
#[derive(Clone)]
pub struct DispatchConfig {
    /// Packets each ring between the I/O lcore and a worker holds, each
    /// way (rounded up to a power of two).
    pub ring_size: usize,
    /// Picks a worker from a flow hash; `None`: a multiply-shift range
    /// reduction of the hash (RSS's indirection table, evenly).
    pub partitioner: Option<Arc<dyn Partitioner>>,
    /// Port index each port's replies go out on (`None`: the port they
    /// came in on).
    pub dst: Option<Vec<usize>>,
}

impl Default for DispatchConfig {
    /// 1024-packet rings, even spreading, replies on the port they came in
    /// on.
    fn default() -> Self {
        DispatchConfig {
            ring_size: 1024,
            partitioner: None,
            dst: None,
        }
    }
}

impl std::fmt::Debug for DispatchConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DispatchConfig")
            .field("ring_size", &self.ring_size)
            .field("partitioner", &self.partitioner.is_some())
            .field("dst", &self.dst)
            .finish()
    }
}

/// What a dispatcher counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DispatchStats {
    /// Packets received from the ports.
    pub rx: u64,
    /// Packets handed to workers.
    pub dispatched: u64,
    /// Packets dropped because their worker's ring was full.
    pub worker_busy: u64,
    /// Packets the workers sent back.
    pub replies: u64,
    /// Packets sent on the ports.
    pub tx: u64,
    /// Replies a port would not take (dropped).
    pub tx_dropped: u64,
    /// Replies the workers dropped because the way back was full.
    pub reply_dropped: u64,
}

/// A worker's end: packets from the I/O lcore, and the way back.
pub struct WorkerLink {
    rx: Consumer<Mbuf, Single>,
    tx: Producer<Mbuf, Single>,
    /// Replies that did not fit the ring yet.
    held: MbufBatch,
    /// Replies dropped here (the way back full and `held` too), so that
    /// the dispatcher knows what will never come back.
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for WorkerLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerLink")
            .field("waiting", &self.rx.len())
            .field("held", &self.held.len())
            .finish()
    }
}

impl WorkerLink {
    /// Takes up to a burst of packets into `out`'s spare room; returns how
    /// many.
    #[inline]
    pub fn recv(&mut self, out: &mut MbufBatch) -> usize {
        self.rx.pop_burst(out)
    }

    /// Sends `batch` back to the I/O lcore to go out (on the port the
    /// dispatcher's `dst` names for the one each came in on, which
    /// `Mbuf::port` holds); `batch` is left empty. What the ring cannot
    /// take now is held and goes first next time (see
    /// [`pending`](Self::pending)); returns how many went now.
    #[inline]
    pub fn send(&mut self, batch: &mut MbufBatch) -> usize {
        let mut sent = 0;
        if !self.held.is_empty() {
            sent += self.tx.push_burst(&mut self.held);
        }
        if self.held.is_empty() {
            sent += self.tx.push_burst(&mut *batch);
        }
        // What is left waits, in order, behind what was held.
        for m in batch.drain() {
            if let Err(m) = self.held.push(m) {
                // Full of held replies: the I/O lcore is not taking them.
                // Dropped (back to its pool), as a full tx queue drops.
                drop(m);
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        sent
    }

    /// Replies held because the way back was full: non-zero means call
    /// [`send`](Self::send) again (an empty batch will do), and a worker
    /// draining for a stop should report it as work in flight.
    pub fn pending(&self) -> usize {
        self.held.len()
    }
}

/// The I/O lcore's side: a [`Poller`] owning one queue of every port.
pub struct Dispatcher {
    ports: Vec<Box<dyn Port>>,
    dst: Vec<usize>,
    to: Vec<Producer<Mbuf, Single>>,
    from: Vec<Consumer<Mbuf, Single>>,
    /// Each link's count of replies it dropped.
    link_dropped: Vec<Arc<AtomicU64>>,
    partitioner: Option<Arc<dyn Partitioner>>,
    rx: MbufBatch,
    /// Per worker: what this burst steers to it.
    staged: Vec<MbufBatch>,
    /// Per port: replies on their way out.
    out: Vec<MbufBatch>,
    back: MbufBatch,
    stats: DispatchStats,
    report: Arc<Mutex<DispatchStats>>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("ports", &self.ports.len())
            .field("workers", &self.to.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// A dispatcher over `ports` (one queue each) for `workers` workers, and
/// the workers' links, in worker order.
///
/// # Errors
/// No ports, no workers, a `dst` that names no port, or a ring size too
/// large.
pub fn dispatcher(
    ports: Vec<Box<dyn Port>>,
    workers: usize,
    cfg: DispatchConfig,
) -> Result<(Dispatcher, Vec<WorkerLink>)> {
    if ports.is_empty() || workers == 0 {
        return Err(Error::Config(format!(
            "a dispatcher needs ports and workers ({} ports, {workers} workers)",
            ports.len()
        )));
    }
    if ports.len() > usize::from(u16::MAX) {
        return Err(Error::Config(format!(
            "{} ports: at most 65535",
            ports.len()
        )));
    }
    let dst = cfg.dst.unwrap_or_else(|| (0..ports.len()).collect());
    if dst.len() != ports.len() || dst.iter().any(|&d| d >= ports.len()) {
        return Err(Error::Config(format!(
            "the reply map {dst:?} must name one of the {} ports for each",
            ports.len()
        )));
    }
    let (mut to, mut from, mut links, mut link_dropped) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..workers {
        let (tx, rx) = ring::spsc::<Mbuf>(cfg.ring_size.max(1))?;
        let (back_tx, back_rx) = ring::spsc::<Mbuf>(cfg.ring_size.max(1))?;
        let dropped = Arc::new(AtomicU64::new(0));
        to.push(tx);
        from.push(back_rx);
        link_dropped.push(dropped.clone());
        links.push(WorkerLink {
            rx,
            tx: back_tx,
            held: MbufBatch::new(),
            dropped,
        });
    }
    let d = Dispatcher {
        staged: (0..workers).map(|_| MbufBatch::new()).collect(),
        out: ports.iter().map(|_| MbufBatch::new()).collect(),
        ports,
        dst,
        to,
        from,
        link_dropped,
        partitioner: cfg.partitioner,
        rx: MbufBatch::new(),
        back: MbufBatch::new(),
        stats: DispatchStats::default(),
        report: Arc::new(Mutex::new(DispatchStats::default())),
    };
    Ok((d, links))
}

impl Dispatcher {
    /// The ports, for their counters.
    pub fn ports(&self) -> &[Box<dyn Port>] {
        &self.ports
    }

    /// Where the counters are put when the lcore stops: read them after
    /// the group has stopped. A stop waits (up to the group's drain
    /// timeout) for the replies to everything dispatched, so stop the
    /// dispatcher's lcore while the workers still run.
    pub fn report(&self) -> Arc<Mutex<DispatchStats>> {
        self.report.clone()
    }

    fn transmit(&mut self) -> usize {
        transmit(&mut self.ports, &mut self.out, &mut self.stats)
    }
}

/// The worker for `m` among `n`.
#[inline]
fn worker_of(partitioner: Option<&Arc<dyn Partitioner>>, n: usize, m: &Mbuf) -> usize {
    let hash = match m.rss_hash() {
        0 => flow_hash(m.data()),
        h => h,
    };
    match partitioner {
        None => ((u64::from(hash) * n as u64) >> 32) as usize,
        Some(p) => p.owner(u64::from(hash), n).min(n - 1),
    }
}

/// Sends each port's batch of replies; what a port refuses is dropped.
fn transmit(
    ports: &mut [Box<dyn Port>],
    out: &mut [MbufBatch],
    stats: &mut DispatchStats,
) -> usize {
    let mut n = 0;
    for (port, batch) in ports.iter_mut().zip(out.iter_mut()) {
        if batch.is_empty() {
            continue;
        }
        let sent = port.tx_burst(batch);
        n += sent;
        stats.tx += sent as u64;
        stats.tx_dropped += batch.len() as u64;
        batch.clear();
    }
    n
}

impl Poller for Dispatcher {
    fn poll(&mut self, ctx: &PollContext) -> usize {
        let mut work = 0;
        // Replies first: they free mbufs and ring room for what comes in.
        for w in 0..self.from.len() {
            let got = self.from[w].pop_burst(&mut self.back);
            if got == 0 {
                continue;
            }
            self.stats.replies += got as u64;
            work += got;
            for m in self.back.drain() {
                let d = self.dst[usize::from(m.port()).min(self.dst.len() - 1)];
                if self.out[d].is_full() {
                    work += transmit(&mut self.ports, &mut self.out, &mut self.stats);
                }
                if let Err(m) = self.out[d].push(m) {
                    drop(m);
                    self.stats.tx_dropped += 1;
                }
            }
        }
        work += self.transmit();
        if !ctx.stopping() {
            for p in 0..self.ports.len() {
                let got = self.ports[p].rx_burst(&mut self.rx);
                if got == 0 {
                    continue;
                }
                work += got;
                self.stats.rx += got as u64;
                let n = self.to.len();
                if n == 1 {
                    // One worker: nothing to steer, the burst goes whole.
                    for m in self.rx.iter_mut() {
                        m.set_port(p as u16);
                    }
                    let sent = self.to[0].push_burst(&mut self.rx);
                    self.stats.dispatched += sent as u64;
                    self.stats.worker_busy += self.rx.len() as u64;
                    self.rx.clear();
                    continue;
                }
                for mut m in self.rx.drain() {
                    m.set_port(p as u16);
                    let w = worker_of(self.partitioner.as_ref(), n, &m);
                    // A burst holds at most MAX_BURST packets, as does
                    // each staging batch: this push cannot fail.
                    let _ = self.staged[w].push(m);
                }
                for (w, batch) in self.staged.iter_mut().enumerate() {
                    if batch.is_empty() {
                        continue;
                    }
                    let sent = self.to[w].push_burst(&mut *batch);
                    self.stats.dispatched += sent as u64;
                    self.stats.worker_busy += batch.len() as u64;
                    // Dropped (back to their pool): the worker is behind.
                    batch.clear();
                }
            }
        }
        // While draining, packets still with the workers (in their rings,
        // in their hands, on the way back) keep us polling for them.
        if ctx.stopping() {
            let lost: u64 = self
                .link_dropped
                .iter()
                .map(|d| d.load(Ordering::Relaxed))
                .sum();
            let out = self.stats.replies + lost;
            work += self.stats.dispatched.saturating_sub(out) as usize;
        }
        work
    }

    fn stop(&mut self, _ctx: &PollContext) {
        self.transmit();
        self.stats.reply_dropped = self
            .link_dropped
            .iter()
            .map(|d| d.load(Ordering::Relaxed))
            .sum();
        if let Ok(mut r) = self.report.lock() {
            *r = self.stats;
        }
    }
}

/// The flow hash used when the port gives none: CRC32C of the IPv4
/// 5-tuple (the addresses alone for fragments and protocols without
/// ports), of the MAC addresses for other frames.
#[inline]
pub fn flow_hash(frame: &[u8]) -> u32 {
    const ETH: usize = 14;
    let ipv4 = frame.len() >= ETH + 20 && frame[12] == 0x08 && frame[13] == 0x00;
    if !ipv4 {
        return crc32c::crc32c(frame.get(..12).unwrap_or(frame));
    }
    let ip = &frame[ETH..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let proto = ip[9];
    let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
    let mut key = [0u8; 13];
    key[..8].copy_from_slice(&ip[12..20]);
    key[8] = proto;
    let ports = (proto == 6 || proto == 17) && !fragment && ihl >= 20;
    if ports && let Some(l4) = ip.get(ihl..ihl + 4) {
        key[9..13].copy_from_slice(l4);
    }
    crc32c::crc32c(&key)
}
