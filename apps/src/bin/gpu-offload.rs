//! Packet processing offloaded to an accelerator: an I/O lcore receives
//! bursts from its port queues and hands them over a ring to an
//! accelerator lcore; that one batches them, runs CRC32C, the RSS hash and
//! the signature match on the device in one submission, stamps each mbuf
//! with its hash, drops the packets that carry a signature (the verdict)
//! and passes the rest back over a ring to the I/O lcore, which sends them
//! on. Without ports, a generator lcore on one end of an in-memory port
//! pair feeds the I/O lcore on the other and takes back what it sends.
//!
//! ```text
//! cargo run --release -p dataplane-apps --bin gpu-offload
//! cargo run --release -p dataplane-apps --bin gpu-offload -- --backend cpu --batch 256
//! cargo run --release -p dataplane-apps --bin gpu-offload -- --duration 2 --json
//! ```
//!
//! Packets live in a hugepage mbuf pool registered with the queue, so on a
//! device with `VK_EXT_external_memory_host` the kernels read them where
//! the generator wrote them; the summary says which path was taken.
//!
//! With `--port` or `--vdev` the I/O lcore receives from real ports
//! instead (any network backend: DPDK vdevs and NICs, AF_XDP, AF_PACKET,
//! io_uring, memory; `--net` picks one), and acts on the verdict: a packet
//! that carries a signature is dropped and counted, the others go out
//! again, on the partner port (ports pair 0-1, 2-3 as in l2fwd) or on the
//! port they came from when there is only one (another odd number of ports
//! is refused, as l2fwd refuses it). Mbufs of a port's own pool are
//! read in place when the queue can import them and staged otherwise.
//!
//! ```text
//! gpu-offload --backend cpu --net dpdk \
//!     --vdev net_pcap0,rx_pcap=in.pcap,tx_pcap=out.pcap --duration 2 --json
//! ```
#![deny(unsafe_code)]

use anyhow::{Context, bail};
use clap::Parser;
use dataplane::accel::{
    self, BackendChoice, BufferPath, Buffers, Completion, Kernel, Kernels, Queue, QueueConfig,
};
use dataplane::lcore::{LcoreConfig, LcoreGroup, PollContext, Poller, Role};
use dataplane::metrics::{
    LatencyHistogram, Metrics, MetricsServer, counters, register_accel_queue,
};
use dataplane::net::{self, MbufBatch, Port};
use dataplane::ring::{self, Consumer, Producer, Single};
use dataplane_apps::net::cli::CommonArgs;
use dataplane_apps::net::l2fwd::pairs;
use dataplane_apps::net::ports::{PortSummary, deal_queues};
use dataplane_apps::net::synth::Generator;
use hugepages::mbuf::{Mbuf, MbufPool, MbufPoolConfig};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Packets per ring burst (DPDK's MAX_PKT_BURST).
const BURST: usize = 32;
/// Ring capacity between lcores.
const RING_SIZE: usize = 4096;
/// Frame length of generated packets: 14 + 20 + 8 + 86 bytes of payload.
const FRAME_LEN: usize = 128;

/// Run CRC32C, the RSS hash and a signature match over generated packets
/// on an accelerator, and report packets/s and batch latency.
#[derive(Debug, Parser)]
#[command(name = "gpu-offload", version)]
struct Args {
    /// Logging.
    #[command(flatten)]
    log: dataplane_apps::LogArgs,
    /// vulkan, cpu, or auto (Vulkan when a device opens, else the CPU).
    #[arg(long, default_value = "auto")]
    backend: BackendChoice,
    /// Packets per submission.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Submissions in flight at once.
    #[arg(long, default_value_t = 4)]
    depth: usize,
    /// Microseconds a partial batch waits for more packets before it is
    /// submitted anyway.
    #[arg(long = "batch-timeout-us", default_value_t = 100)]
    batch_timeout_us: u64,
    /// Mbufs in the pool.
    #[arg(long, default_value_t = 16384)]
    mbufs: usize,
    /// Print one JSON summary object as the last line of stdout.
    #[arg(long)]
    json: bool,
    /// Receive from this port instead of generating packets (repeat for
    /// more): an interface, a PCI address or a DPDK device name.
    #[arg(long = "port", value_name = "DEVICE")]
    ports: Vec<String>,
    /// A DPDK virtual device to create and receive from (`net_pcap0,rx_pcap=in.pcap,tx_pcap=out.pcap`).
    #[arg(long = "vdev", value_name = "VDEV")]
    vdevs: Vec<String>,
    /// Network backend for --port/--vdev: auto, dpdk, af_xdp, af_packet,
    /// io_uring or memory.
    #[arg(long = "net", default_value = "auto")]
    net: net::BackendChoice,
    /// Serve Prometheus `/metrics` on this address while running: the
    /// lcores', the ports' packets, the accelerator queue's counters and
    /// its batch latency histogram.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
}

/// What the lcores publish as they run, for `/metrics`.
#[derive(Debug, Default)]
struct Live {
    received: AtomicU64,
    forwarded: AtomicU64,
    dropped_tx: AtomicU64,
    hits: AtomicU64,
    /// The accelerator queue's counters, refreshed (with `try_lock`, so
    /// the lcore never waits) after each pass that completed batches.
    accel: Mutex<accel::QueueStats>,
    /// Submission to completion seen, per batch, in ns.
    latency: LatencyHistogram,
}

/// Batch latency quantiles, from a histogram whose buckets are 1/16 of a
/// power of two wide (each quantile is its bucket's top, at most 6.25%
/// above the exact one; `max_us` is exact).
#[derive(Debug, Default, Clone, Serialize)]
struct Latency {
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
}

#[derive(Debug, Serialize)]
struct Summary {
    /// The ports received from, when not generating.
    ports: Vec<PortSummary>,
    /// Packets received from them.
    received: u64,
    /// Packets sent on (no signature).
    forwarded: u64,
    /// Packets dropped on the verdict (a signature).
    dropped_signature: u64,
    /// Packets a port would not take.
    dropped_tx: u64,
    backend: &'static str,
    device: String,
    fallback: Option<String>,
    sync: &'static str,
    buffer_path: Option<BufferPath>,
    batch: usize,
    duration_s: f64,
    packets: u64,
    packets_per_s: f64,
    batches: u64,
    batch_latency: Latency,
    signature_hits: u64,
    distinct_rss_hashes: usize,
    bytes_in_place: u64,
    bytes_staged: u64,
    failed_batches: u64,
}

/// What the accelerator lcore learned, handed over when it stops.
#[derive(Debug, Default)]
struct AccelReport {
    batches: u64,
    hits: u64,
    failed: u64,
    path: Option<BufferPath>,
    stats: accel::QueueStats,
}

type Tx = Producer<Mbuf, Single>;
type Rx = Consumer<Mbuf, Single>;

/// Moves what `out` holds into `tx` in order, keeping the rest for the
/// next pass.
fn flush(out: &mut VecDeque<Mbuf>, tx: &mut Tx) -> usize {
    let mut n = 0;
    while let Some(m) = out.pop_front() {
        match tx.push(m) {
            Ok(()) => n += 1,
            Err(e) => {
                out.push_front(e.into_inner());
                break;
            }
        }
    }
    n
}

// ------------------------------------------------------------ port I/O lcore

/// What the port I/O lcore counted, handed over at stop.
#[derive(Debug, Default, Clone, Copy)]
struct PortCounts {
    received: u64,
    forwarded: u64,
    dropped_tx: u64,
}

/// Owns one queue of every port: receives bursts and hands them to the
/// accelerator lcore, and sends on what comes back (the packets without a
/// signature) to each one's destination port.
struct PortIo {
    ports: Vec<Box<dyn Port>>,
    /// Port index each port's packets go out on.
    dst: Vec<usize>,
    to_accel: Tx,
    from_accel: Rx,
    rx: MbufBatch,
    held: VecDeque<Mbuf>,
    out: Vec<MbufBatch>,
    counts: PortCounts,
    handoff: Arc<Mutex<PortCounts>>,
    live: Arc<Live>,
    hashes: std::collections::HashSet<u32>,
    distinct: Arc<Mutex<usize>>,
}

impl PortIo {
    /// Sends what each port's batch holds; what a port refuses is dropped
    /// and counted (a port that pushes back must not stall the others).
    fn transmit(&mut self) -> usize {
        let mut n = 0;
        for (port, batch) in self.ports.iter_mut().zip(self.out.iter_mut()) {
            if batch.is_empty() {
                continue;
            }
            let sent = port.tx_burst(batch);
            n += sent;
            self.counts.forwarded += sent as u64;
            self.counts.dropped_tx += batch.len() as u64;
            batch.clear();
        }
        n
    }
}

impl Poller for PortIo {
    fn poll(&mut self, ctx: &PollContext) -> usize {
        let mut work = flush(&mut self.held, &mut self.to_accel);
        // Verdicts back: out on each packet's destination port.
        for _ in 0..4 * BURST {
            let Some(m) = self.from_accel.pop() else {
                break;
            };
            if self.hashes.len() < 1 << 16 {
                self.hashes.insert(m.rss_hash());
            }
            let d = self.dst[usize::from(m.port()).min(self.dst.len() - 1)];
            if self.out[d].is_full() {
                work += self.transmit();
            }
            // Room now: `transmit` leaves every batch empty.
            if let Err(m) = self.out[d].push(m) {
                drop(m);
                self.counts.dropped_tx += 1;
            }
            work += 1;
        }
        work += self.transmit();
        // Relaxed: readers want each counter untorn, not an order.
        self.live
            .received
            .store(self.counts.received, Ordering::Relaxed);
        self.live
            .forwarded
            .store(self.counts.forwarded, Ordering::Relaxed);
        self.live
            .dropped_tx
            .store(self.counts.dropped_tx, Ordering::Relaxed);
        if self.held.is_empty() && !ctx.stopping() {
            for (i, port) in self.ports.iter_mut().enumerate() {
                let got = port.rx_burst(&mut self.rx);
                self.counts.received += got as u64;
                for mut m in self.rx.drain() {
                    // Which port it came from, for the way back.
                    m.set_port(i as u16);
                    if let Err(e) = self.to_accel.push(m) {
                        self.held.push_back(e.into_inner());
                    }
                }
                work += got;
            }
        }
        work + self.held.len()
    }

    fn stop(&mut self, _ctx: &PollContext) {
        self.transmit();
        if let Ok(mut c) = self.handoff.lock() {
            *c = self.counts;
        }
        if let Ok(mut d) = self.distinct.lock() {
            *d = self.hashes.len();
        }
    }
}

// ------------------------------------------------------------ accelerator

struct Accel {
    queue: Queue<Vec<Mbuf>>,
    kernels: Kernels,
    batch_size: usize,
    rx: Rx,
    tx: Tx,
    batch: Vec<Mbuf>,
    /// Batch vectors and result vectors to reuse (no allocation per batch).
    spare: Vec<(Vec<Mbuf>, Vec<u32>)>,
    out: VecDeque<Mbuf>,
    done: Vec<Completion<Vec<Mbuf>>>,
    submitted_at: Vec<Instant>,
    next_tag: u64,
    report: AccelReport,
    handoff: Arc<Mutex<Option<AccelReport>>>,
    live: Arc<Live>,
    /// Drop packets that carry a signature here (port mode); otherwise
    /// pass everything on, stamped.
    drop_hits: bool,
    /// TSC when the batch's first packet arrived.
    oldest: u64,
    /// TSC ticks a partial batch may wait for more packets.
    timeout: u64,
}

impl Accel {
    fn submit(&mut self) -> usize {
        if self.batch.is_empty() || self.queue.in_flight() >= self.queue.info().depth {
            return 0;
        }
        let (next, results) = self
            .spare
            .pop()
            .unwrap_or_else(|| (Vec::with_capacity(self.batch_size), Vec::new()));
        let items = std::mem::replace(&mut self.batch, next);
        let n = items.len();
        let tag = self.next_tag;
        let slot = (tag % self.submitted_at.len() as u64) as usize;
        self.submitted_at[slot] = Instant::now();
        match self.queue.submit(
            self.kernels,
            Buffers::with_results(items, results),
            accel::workgroups_for(n),
            tag,
        ) {
            Ok(()) => {
                self.next_tag += 1;
                1
            }
            Err(rejected) => {
                // Full or failed: keep the packets and try again later.
                let spare = std::mem::replace(&mut self.batch, rejected.buffers.items);
                self.spare.push((spare, rejected.buffers.results));
                if !matches!(rejected.reason, accel::SubmitError::Full(_)) {
                    tracing::error!("submission refused: {}", rejected.reason);
                }
                0
            }
        }
    }

    fn reap(&mut self) -> usize {
        let n = self.queue.poll(&mut self.done);
        let now = Instant::now();
        for c in self.done.drain(..) {
            let slot = (c.tag % self.submitted_at.len() as u64) as usize;
            let took = now.duration_since(self.submitted_at[slot]);
            self.live
                .latency
                .record(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
            self.report.batches += 1;
            self.report.path = Some(c.path);
            let Buffers {
                items: mut pkts,
                results,
            } = c.buffers;
            if c.status.is_err() {
                self.report.failed += 1;
            } else {
                // results: [crc x n][rss x n][signatures x n]
                let count = pkts.len();
                for (i, m) in pkts.iter_mut().enumerate() {
                    m.set_rss_hash(results[count + i]);
                }
                for (i, m) in pkts.drain(..).enumerate() {
                    let hit = results[2 * count + i] != 0;
                    self.report.hits += u64::from(hit);
                    if hit && self.drop_hits {
                        drop(m); // back to its pool: the verdict
                    } else {
                        self.out.push_back(m);
                    }
                }
            }
            // A failed batch's packets (still in `pkts`) go on unjudged.
            self.out.extend(pkts.drain(..));
            self.spare.push((pkts, results));
        }
        if n > 0 {
            self.live.hits.store(self.report.hits, Ordering::Relaxed);
            if let Ok(mut s) = self.live.accel.try_lock() {
                *s = self.queue.stats();
            }
        }
        n
    }
}

impl Poller for Accel {
    fn poll(&mut self, ctx: &PollContext) -> usize {
        let mut work = self.reap();
        work += flush(&mut self.out, &mut self.tx);
        while self.batch.len() < self.batch_size {
            let Some(m) = self.rx.pop() else { break };
            if self.batch.is_empty() {
                self.oldest = ctx.now();
            }
            self.batch.push(m);
            work += 1;
        }
        // A full batch goes out; a partial one once its first packet has
        // waited the batch timeout (DPDK's tx drain, for light traffic),
        // and when draining.
        if self.batch.len() >= self.batch_size
            || ctx.stopping()
            || (!self.batch.is_empty() && ctx.now().wrapping_sub(self.oldest) >= self.timeout)
        {
            work += self.submit();
        }
        // Hold the drain open while anything is in flight or held.
        work + self.queue.in_flight() + self.batch.len() + self.out.len()
    }

    fn stop(&mut self, _ctx: &PollContext) {
        let mut report = std::mem::take(&mut self.report);
        report.stats = self.queue.stats();
        if let Ok(mut slot) = self.handoff.lock() {
            *slot = Some(report);
        }
    }
}

/// Serves `/metrics` at `at` until the handle is dropped: the lcores'
/// counters, the ports' packets and the accelerator's.
fn serve_metrics(
    at: std::net::SocketAddr,
    running: &dataplane::lcore::Running,
    live: Arc<Live>,
) -> anyhow::Result<MetricsServer> {
    let m = Metrics::new();
    m.lcores(running.stats_view());
    m.collect(move |r| {
        let one = |v: u64| counters([(Vec::new(), v)]);
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        r.register(
            "gpu_offload_received",
            "Packets received",
            one(load(&live.received)),
        );
        r.register(
            "gpu_offload_forwarded",
            "Packets sent on after the verdict",
            one(load(&live.forwarded)),
        );
        r.register(
            "gpu_offload_dropped_signature",
            "Packets dropped on the verdict (a signature)",
            one(load(&live.hits)),
        );
        r.register(
            "gpu_offload_dropped_tx",
            "Packets a port would not take",
            one(load(&live.dropped_tx)),
        );
        let q = live.accel.lock().map(|s| *s).unwrap_or_default();
        register_accel_queue(r, &q);
        r.register(
            "dataplane_accel_batch_latency_seconds",
            "Submission to completion seen, per batch",
            live.latency.clone(),
        );
    });
    m.serve(at).context("serving /metrics")
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    dataplane_apps::init_tracing(args.log.log_format);
    if args.batch == 0 || args.batch > 4096 {
        bail!("--batch {} must be 1 to 4096", args.batch);
    }
    if !(args.duration > 0.0 && args.duration.is_finite()) {
        bail!(
            "--duration {} must be a positive number of seconds",
            args.duration
        );
    }

    let pool = MbufPool::new(MbufPoolConfig {
        name: "gpu_offload".into(),
        count: args.mbufs,
        ..MbufPoolConfig::default()
    })
    .context("creating the mbuf pool")?;
    let mut queue = Queue::<Vec<Mbuf>>::open(QueueConfig {
        backend: args.backend,
        depth: args.depth,
        max_items: args.batch,
        staging_bytes: (args.batch * FRAME_LEN).next_multiple_of(4096),
        ..QueueConfig::default()
    })
    .context("opening the accelerator queue")?;
    let regs = queue
        .register(pool.clone())
        .context("registering the pool")?;
    let info = queue.info().clone();
    if !args.json {
        println!(
            "backend: {} on {} ({})",
            info.backend, info.device, info.sync
        );
        if let Some(why) = &info.fallback {
            println!("fallback: {why}");
        }
        for r in &regs {
            println!("buffers: {:?}: {}", r.path, r.reason);
        }
    }

    let accel_report = Arc::new(Mutex::new(None));
    let distinct = Arc::new(Mutex::new(0usize));
    let port_counts = Arc::new(Mutex::new(PortCounts::default()));
    let live = Arc::new(Live::default());
    let port_mode = !args.ports.is_empty() || !args.vdevs.is_empty();
    let kernels = Kernels::new(&[Kernel::Crc32c, Kernel::RssHash, Kernel::PatternMatch])
        .context("three kernels")?;

    let mut group = LcoreGroup::new();
    let (io_tx, accel_rx) = ring::spsc::<Mbuf>(RING_SIZE)?;
    let (accel_tx, back_rx) = ring::spsc::<Mbuf>(RING_SIZE)?;
    let mut port_summaries = Vec::new();
    let (ports, dst): (Vec<Box<dyn Port>>, Vec<usize>) = if port_mode {
        let plan = dataplane::profile::Plan::for_profile(
            &dataplane::topology::Topology::detect()?,
            dataplane::profile::Profile::Production,
        )?;
        let common = CommonArgs {
            log: args.log,
            backend: args.net,
            ports: args.ports.clone(),
            vdevs: args.vdevs.clone(),
            burst: BURST,
            drain_us: 100,
            queues: Some(1),
            lcores: None,
            mbufs: args.mbufs,
            duration: None,
            json: args.json,
            telemetry: None,
            metrics: None,
        };
        let opened = common.open_ports(&plan, 1)?;
        let (summaries, mut per_lcore) = deal_queues(opened);
        port_summaries = summaries;
        let ports = per_lcore.pop().context("no port queue opened")?;
        let n = ports.len();
        // Pairs as l2fwd's (0-1, 2-3, ...); a single port answers on itself.
        let dst = if n == 1 {
            vec![0]
        } else {
            let mask = if n >= 64 { u64::MAX } else { (1 << n) - 1 };
            pairs(n, mask)
                .map_err(anyhow::Error::msg)?
                .into_iter()
                .enumerate()
                .map(|(i, d)| d.unwrap_or(i))
                .collect()
        };
        if !args.json {
            for p in &port_summaries {
                println!("port {}: {} backend", p.device, p.backend);
            }
        }
        (ports, dst)
    } else {
        // One in-memory port pair: the generator on one end, the I/O lcore
        // on the other, both drawing on the pool registered with the queue
        // (so the kernels read the packets in place).
        let cfg = net::PortConfig::new("gpu-offload");
        let (mut gen_end, mut io_end) =
            net::memory::MemoryPort::pair_with_pools(&cfg, pool.clone(), pool.clone())?;
        let (gen_port, io_port) = (
            gen_end.pop().context("a memory port queue")?,
            io_end.pop().context("a memory port queue")?,
        );
        let g = group.add(LcoreConfig::new(Role::App).name("pktgen"));
        group.poller(
            g,
            Generator::new(pool.clone(), Box::new(gen_port), FRAME_LEN, 64),
        )?;
        (vec![Box::new(io_port) as Box<dyn Port>], vec![0])
    };
    let io = group.add(LcoreConfig::new(Role::Io).name("io"));
    group.poller(
        io,
        PortIo {
            out: ports.iter().map(|_| MbufBatch::new()).collect(),
            ports,
            dst,
            to_accel: io_tx,
            from_accel: back_rx,
            rx: MbufBatch::new(),
            held: VecDeque::with_capacity(BURST),
            counts: PortCounts::default(),
            handoff: port_counts.clone(),
            live: live.clone(),
            hashes: Default::default(),
            distinct: distinct.clone(),
        },
    )?;
    let acc = group.add(LcoreConfig::new(Role::Accel).name("accel"));
    group.poller(
        acc,
        Accel {
            queue,
            kernels,
            batch_size: args.batch,
            rx: accel_rx,
            tx: accel_tx,
            batch: Vec::with_capacity(args.batch),
            spare: Vec::new(),
            out: VecDeque::with_capacity(args.batch * args.depth),
            done: Vec::with_capacity(args.depth),
            submitted_at: vec![Instant::now(); args.depth.max(1) * 2],
            next_tag: 0,
            report: AccelReport::default(),
            handoff: accel_report.clone(),
            live: live.clone(),
            drop_hits: true,
            oldest: 0,
            timeout: dataplane::time::duration_to_tsc(Duration::from_micros(args.batch_timeout_us)),
        },
    )?;

    let t0 = Instant::now();
    let running = group.launch()?;
    let _metrics = match args.metrics {
        Some(at) => Some(serve_metrics(at, &running, live.clone())?),
        None => None,
    };
    std::thread::sleep(Duration::from_secs_f64(args.duration));
    let reports = running.stop()?;
    let elapsed = t0.elapsed().as_secs_f64();
    for r in &reports {
        if !matches!(r.exit, dataplane::lcore::Exit::Drained) {
            bail!("lcore {} ({}) ended with {:?}", r.id, r.role, r.exit);
        }
    }
    let report = accel_report
        .lock()
        .ok()
        .and_then(|mut r| r.take())
        .context("the accelerator lcore reported nothing")?;
    let us = |ns: u64| ns as f64 / 1e3;
    let counts = port_counts.lock().map(|c| *c).unwrap_or_default();
    // Every packet the I/O lcore received went through the kernels.
    let packets = counts.received;
    let summary = Summary {
        ports: port_summaries,
        received: counts.received,
        forwarded: counts.forwarded,
        dropped_signature: report.hits,
        dropped_tx: counts.dropped_tx,
        backend: info.backend.name(),
        device: info.device.clone(),
        fallback: info.fallback.clone(),
        sync: info.sync,
        buffer_path: report.path,
        batch: args.batch,
        duration_s: elapsed,
        packets,
        packets_per_s: packets as f64 / elapsed,
        batches: report.batches,
        batch_latency: Latency {
            p50_us: us(live.latency.quantile(0.50)),
            p99_us: us(live.latency.quantile(0.99)),
            max_us: us(live.latency.max()),
        },
        signature_hits: report.hits,
        distinct_rss_hashes: distinct.lock().map(|d| *d).unwrap_or(0),
        bytes_in_place: report.stats.bytes_in_place,
        bytes_staged: report.stats.bytes_staged_in + report.stats.bytes_staged_out,
        failed_batches: report.failed,
    };
    let leaked = pool.in_use();
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "{:.0} packets/s ({} packets in {:.2} s), batch {} x [crc32c, rss_hash, pattern_match]",
            summary.packets_per_s, summary.packets, summary.duration_s, summary.batch
        );
        println!(
            "batch latency (submit to completion seen): p50 {:.1} us, p99 {:.1} us, max {:.1} us over {} batches",
            summary.batch_latency.p50_us,
            summary.batch_latency.p99_us,
            summary.batch_latency.max_us,
            summary.batches
        );
        println!(
            "ports: {} received, {} forwarded, {} dropped on a signature, {} refused by a port",
            summary.received, summary.forwarded, summary.dropped_signature, summary.dropped_tx
        );
        println!(
            "buffers: {:?}; {} bytes read in place, {} bytes staged; {} signature hits; {} distinct RSS hashes",
            summary.buffer_path,
            summary.bytes_in_place,
            summary.bytes_staged,
            summary.signature_hits,
            summary.distinct_rss_hashes
        );
    }
    if summary.failed_batches > 0 {
        bail!("{} batches failed on the device", summary.failed_batches);
    }
    if leaked != 0 {
        bail!("{leaked} mbufs were not returned to the pool");
    }
    // Under VK_INSTANCE_LAYERS=VK_LAYER_KHRONOS_validation, any message
    // fails the run.
    let messages = accel::debug_messages();
    if messages.count > 0 {
        bail!(
            "{} Vulkan validation messages: {:#?}",
            messages.count,
            messages.first
        );
    }
    Ok(())
}
