//! `dp-capture`: packets from a port, matched on an accelerator, written as
//! pcapng through a block queue, NIC to GPU to NVMe in one poll loop (or
//! spread over lcores).
//!
//! Three stages, linked by single-producer rings:
//!
//! - **rx** receives bursts from one queue of every port and time-stamps
//!   each burst (`CLOCK_REALTIME`, nanoseconds);
//! - **match** batches packets and runs CRC32C and the signature match on
//!   the accelerator (or its CPU twin) in one submission per batch, and
//!   passes on the packets that carry a signature (every packet with
//!   `--all`), each with its CRC and the signatures found;
//! - **write** appends them as pcapng Enhanced Packet Blocks (the CRC and
//!   signatures in a comment) to chunk buffers written with one operation
//!   each on a `block::Queue`, in rotating segments with an index
//!   ([`writer`]).
//!
//! `--lcores 1` runs the three in turn on one lcore; 2 puts rx and match
//! on one and the writer on another; 3 gives each its own. A stage that
//! cannot hand a packet on drops it and counts why: `accel_busy` (the
//! match stage's ring was full: packets not inspected), `writer_busy` (the
//! writer's ring was full), `no_buffer` (every chunk was in flight: the
//! storage did not keep up), `write_error` (a write failed), `too_big`
//! (longer than a whole write). So
//! `matched = written + writer_busy + no_buffer + write_error + too_big` and
//! `received = inspected + accel_busy`, which the summary shows.

pub mod pcapng;
pub mod writer;

use crate::net::cli::CommonArgs;
use crate::net::counters::LcoreCounters;
use crate::net::ports::{PortSummary, deal_queues, publish_ports};
use crate::net::run;
use crate::net::synth::Generator;
use anyhow::{Context, bail};
use dataplane::accel::{self, Buffers, Kernel, Kernels};
use dataplane::lcore::{Exit, LcoreConfig, LcoreGroup, PollContext, Poller, Role};
use dataplane::net::{self, MbufBatch, Port};
use dataplane::ring::{self, Consumer, Producer, Single};
use hugepages::mbuf::{Mbuf, MbufPool, MbufPoolConfig};
use serde::Serialize;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use writer::{Output, SegmentIndex, Writer, WriterConfig};

/// Ring capacity between stages.
const RING_SIZE: usize = 4096;
/// Packets per rx burst.
const BURST: usize = 32;

/// Capture packets that carry a signature (or all) to pcapng files or a
/// block device, matching on an accelerator.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "dp-capture", version)]
pub struct Args {
    /// Logging.
    #[command(flatten)]
    pub log: crate::LogArgs,
    /// Receive from this port (repeat for more): an interface, a PCI
    /// address, a DPDK device name. Without ports or vdevs, a generator
    /// lcore feeds an in-memory port.
    #[arg(long = "port", value_name = "DEVICE")]
    pub ports: Vec<String>,
    /// A DPDK virtual device to create and receive from.
    #[arg(long = "vdev", value_name = "VDEV")]
    pub vdevs: Vec<String>,
    /// Network backend for --port/--vdev: auto, dpdk, af_xdp, af_packet,
    /// io_uring or memory.
    #[arg(long = "net", default_value = "auto")]
    pub net: net::BackendChoice,
    /// Accelerator: vulkan, cpu, or auto.
    #[arg(long, default_value = "auto")]
    pub backend: accel::BackendChoice,
    /// Where to write: a path stem for segment files (`STEM-00000.pcapng`,
    /// ...), or a block device (`/dev/...`) or RAM disk (`ram:1GiB`)
    /// written in regions. Default: `dp-capture` in the temporary
    /// directory.
    #[arg(long)]
    pub out: Option<String>,
    /// Storage backend: auto, spdk, io_uring, psync or ram.
    #[arg(long, default_value = "auto")]
    pub storage: dataplane::block::BackendChoice,
    /// Bytes per segment (`64MiB`, `1GiB`).
    #[arg(long = "segment-size", default_value = "64MiB", value_parser = parse_size)]
    pub segment_size: u64,
    /// Segments kept: older files are deleted (0: keep all); on a device,
    /// the regions used in turn (0: as many as fit).
    #[arg(long, default_value_t = 0)]
    pub segments: usize,
    /// Bytes per write.
    #[arg(long, default_value = "128KiB", value_parser = parse_size)]
    pub chunk: u64,
    /// Writes in flight.
    #[arg(long, default_value_t = 8)]
    pub depth: usize,
    /// The index file (one JSON line per closed segment). Default: beside
    /// segment files, `STEM.index.jsonl`; none for a device.
    #[arg(long)]
    pub index: Option<PathBuf>,
    /// Capture every packet, not only those with a signature.
    #[arg(long)]
    pub all: bool,
    /// Bytes kept of each packet.
    #[arg(long, default_value_t = 65535)]
    pub snaplen: u32,
    /// Leave out the per-packet comment with the CRC32C and signatures.
    #[arg(long = "no-annotate")]
    pub no_annotate: bool,
    /// Lcores for rx, match and write: 1 (all on one), 2 (rx and match,
    /// then write), or 3.
    #[arg(long, default_value_t = 1)]
    pub lcores: usize,
    /// Packets per accelerator submission.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Accelerator submissions in flight.
    #[arg(long = "accel-depth", default_value_t = 4)]
    pub accel_depth: usize,
    /// Microseconds a partial batch waits before it is submitted anyway.
    #[arg(long = "batch-timeout-us", default_value_t = 100)]
    pub batch_timeout_us: u64,
    /// Milliseconds a partly filled chunk waits before it is written.
    #[arg(long = "flush-ms", default_value_t = 100)]
    pub flush_ms: u64,
    /// Seconds to run.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Frame size of generated packets (without ports).
    #[arg(long = "frame-size", default_value_t = 512)]
    pub frame_size: usize,
    /// One generated frame in this many carries a signature.
    #[arg(long = "signature-every", default_value_t = 16)]
    pub signature_every: u64,
    /// Mbufs per port queue (and in the generator's pool).
    #[arg(long, default_value_t = 16384)]
    pub mbufs: usize,
    /// Print one JSON summary object as the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// Serve DPDK's telemetry v2 protocol under this file-prefix: lcores,
    /// ports, and the capture's `/dataplane/accel` and `/dataplane/block`.
    #[arg(long, value_name = "PREFIX")]
    pub telemetry: Option<String>,
    /// Serve Prometheus metrics at `http://ADDR/metrics`.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
}

fn parse_size(s: &str) -> Result<u64, String> {
    dataplane::block::parse_size(s).map_err(|e| e.to_string())
}

/// Drops by reason (see the module docs).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Drops {
    /// Not inspected: the match stage's ring was full.
    pub accel_busy: u64,
    /// Matched, not written: the writer's ring was full.
    pub writer_busy: u64,
    /// Matched, not written: every chunk buffer was in flight.
    pub no_buffer: u64,
    /// Matched, lost in a failed write.
    pub write_error: u64,
    /// Received, not inspected: the accelerator failed the batch.
    pub accel_error: u64,
    /// Matched, not written: longer than a whole write.
    pub too_big: u64,
}

/// The run's summary.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// The ports received from (empty when generating).
    pub ports: Vec<PortSummary>,
    /// Packets received.
    pub received: u64,
    /// Packets the accelerator inspected.
    pub inspected: u64,
    /// Packets to capture: with a signature, or all with `--all`.
    pub matched: u64,
    /// Packets whose write completed.
    pub written: u64,
    /// Drops by reason.
    pub dropped: Drops,
    /// Bytes written to storage (pcapng blocks and padding).
    pub bytes_written: u64,
    /// Write operations.
    pub writes: u64,
    /// Packets written per second.
    pub packets_per_s: f64,
    /// Megabytes (10^6) written per second.
    pub mbytes_per_s: f64,
    /// Seconds run.
    pub duration_s: f64,
    /// Lcores the stages ran on.
    pub lcores: usize,
    /// The accelerator backend and device.
    pub accel: String,
    /// Why the CPU runs the kernels, if it does.
    pub accel_fallback: Option<String>,
    /// The storage backend.
    pub storage: &'static str,
    /// Closed segments.
    pub segments: Vec<SegmentIndex>,
}

/// A packet and its rx time stamp.
type Stamped = (Mbuf, u64);

/// A packet to write, with what the accelerator found.
struct Captured {
    m: Mbuf,
    ts_ns: u64,
    crc: u32,
    signatures: u32,
}

fn realtime_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

// ------------------------------------------------------------------ rx

/// How often the stages publish their counters while running (for
/// `--telemetry` and `--metrics`), as the forwarders do.
const PUBLISH_EVERY: Duration = Duration::from_millis(10);

/// Whether the publish timer at `*next` has expired at `now`; moves it on.
fn publish_due(next: &mut u64, now: u64) -> bool {
    if now < *next {
        return false;
    }
    *next = now + dataplane::time::duration_to_tsc(PUBLISH_EVERY);
    true
}

#[derive(Debug, Default, Clone, Copy, Serialize)]
struct RxCounts {
    received: u64,
    accel_busy: u64,
}

struct Rx {
    ports: Vec<Box<dyn Port>>,
    out: Producer<Stamped, Single>,
    batch: MbufBatch,
    counts: RxCounts,
    handoff: Arc<Mutex<RxCounts>>,
    /// Per port, for telemetry and metrics.
    port_counters: Vec<Arc<LcoreCounters>>,
    next_publish: u64,
}

impl Rx {
    fn publish(&self) {
        publish_ports(&self.ports, &[], &self.port_counters);
        // Never wait for a reader on the data path: skip a turn instead.
        if let Ok(mut c) = self.handoff.try_lock() {
            *c = self.counts;
        }
    }
}

impl Poller for Rx {
    fn poll(&mut self, ctx: &PollContext) -> usize {
        if publish_due(&mut self.next_publish, ctx.now()) {
            self.publish();
        }
        if ctx.stopping() {
            return 0;
        }
        let mut work = 0;
        for (i, port) in self.ports.iter_mut().enumerate() {
            let n = port.rx_burst(&mut self.batch);
            if n == 0 {
                continue;
            }
            work += n;
            self.counts.received += n as u64;
            let ts = realtime_ns();
            for mut m in self.batch.drain() {
                m.set_port(i as u16);
                if self.out.push((m, ts)).is_err() {
                    // Dropped (the mbuf goes home): the match stage is
                    // behind, as a NIC drops when its ring is full.
                    self.counts.accel_busy += 1;
                }
            }
        }
        work
    }

    fn stop(&mut self, _ctx: &PollContext) {
        publish_ports(&self.ports, &[], &self.port_counters);
        if let Ok(mut c) = self.handoff.lock() {
            *c = self.counts;
        }
    }
}

// ------------------------------------------------------------------ match

#[derive(Debug, Default, Clone, Copy, Serialize)]
struct MatchCounts {
    inspected: u64,
    matched: u64,
    writer_busy: u64,
    accel_error: u64,
}

struct Match {
    queue: accel::Queue<Vec<Mbuf>>,
    kernels: Kernels,
    batch_size: usize,
    input: Consumer<Stamped, Single>,
    out: Producer<Captured, Single>,
    batch: Vec<Mbuf>,
    stamps: Vec<u64>,
    /// The submissions in flight: tag, the packets' time stamps, and the
    /// TSC at submission.
    in_flight: VecDeque<(u64, Vec<u64>, u64)>,
    /// Each batch's latency on the accelerator, submission to completion
    /// seen, in ns (served on `/metrics`).
    latency: dataplane::metrics::LatencyHistogram,
    spare: Vec<(Vec<Mbuf>, Vec<u32>, Vec<u64>)>,
    done: Vec<accel::Completion<Vec<Mbuf>>>,
    next_tag: u64,
    all: bool,
    oldest: u64,
    timeout: u64,
    counts: MatchCounts,
    /// The counters and the accelerator queue's, published every
    /// [`PUBLISH_EVERY`] and at stop.
    handoff: Arc<Mutex<(MatchCounts, accel::QueueStats)>>,
    next_publish: u64,
}

impl Match {
    fn submit(&mut self) -> usize {
        if self.batch.is_empty() || self.queue.in_flight() >= self.queue.info().depth {
            return 0;
        }
        let (items, results, stamps) = self.spare.pop().unwrap_or_else(|| {
            (
                Vec::with_capacity(self.batch_size),
                Vec::new(),
                Vec::with_capacity(self.batch_size),
            )
        });
        let items = std::mem::replace(&mut self.batch, items);
        let stamps = std::mem::replace(&mut self.stamps, stamps);
        let n = items.len();
        let tag = self.next_tag;
        match self.queue.submit(
            self.kernels,
            Buffers::with_results(items, results),
            accel::workgroups_for(n),
            tag,
        ) {
            Ok(()) => {
                self.next_tag += 1;
                self.in_flight
                    .push_back((tag, stamps, dataplane::time::rdtsc()));
                1
            }
            Err(rejected) => {
                let empty_items = std::mem::replace(&mut self.batch, rejected.buffers.items);
                let empty_stamps = std::mem::replace(&mut self.stamps, stamps);
                self.spare
                    .push((empty_items, rejected.buffers.results, empty_stamps));
                if !matches!(rejected.reason, accel::SubmitError::Full(_)) {
                    tracing::error!("submission refused: {}", rejected.reason);
                }
                0
            }
        }
    }

    fn reap(&mut self) -> usize {
        let n = self.queue.poll(&mut self.done);
        let now = if self.done.is_empty() {
            0
        } else {
            dataplane::time::rdtsc()
        };
        for c in self.done.drain(..) {
            let Some(at) = self.in_flight.iter().position(|(t, _, _)| *t == c.tag) else {
                tracing::error!(tag = c.tag, "a completion for no submission");
                continue;
            };
            let (_, mut stamps, submitted) = self.in_flight.remove(at).unwrap_or_default();
            let ns = dataplane::time::tsc_to_duration(now.saturating_sub(submitted)).as_nanos();
            self.latency.record(u64::try_from(ns).unwrap_or(u64::MAX));
            let Buffers {
                items: mut pkts,
                results,
            } = c.buffers;
            let count = pkts.len();
            if c.status.is_err() || results.len() < 2 * count {
                self.counts.accel_error += count as u64;
                pkts.clear();
            } else {
                self.counts.inspected += count as u64;
                // results: [crc x n][signatures x n]
                for (i, (m, ts)) in pkts.drain(..).zip(stamps.drain(..)).enumerate() {
                    let signatures = results[count + i];
                    if signatures == 0 && !self.all {
                        continue; // not captured: home to its pool
                    }
                    self.counts.matched += 1;
                    let cap = Captured {
                        m,
                        ts_ns: ts,
                        crc: results[i],
                        signatures,
                    };
                    if self.out.push(cap).is_err() {
                        self.counts.writer_busy += 1;
                    }
                }
            }
            stamps.clear();
            self.spare.push((pkts, results, stamps));
        }
        n
    }
}

impl Poller for Match {
    fn poll(&mut self, ctx: &PollContext) -> usize {
        if publish_due(&mut self.next_publish, ctx.now())
            && let Ok(mut c) = self.handoff.try_lock()
        {
            *c = (self.counts, self.queue.stats());
        }
        let mut work = self.reap();
        while self.batch.len() < self.batch_size {
            let Some((m, ts)) = self.input.pop() else {
                break;
            };
            if self.batch.is_empty() {
                self.oldest = ctx.now();
            }
            self.batch.push(m);
            self.stamps.push(ts);
            work += 1;
        }
        if self.batch.len() >= self.batch_size
            || ctx.stopping()
            || (!self.batch.is_empty() && ctx.now().wrapping_sub(self.oldest) >= self.timeout)
        {
            work += self.submit();
        }
        work + self.queue.in_flight() + self.batch.len()
    }

    fn stop(&mut self, _ctx: &PollContext) {
        if let Ok(mut c) = self.handoff.lock() {
            *c = (self.counts, self.queue.stats());
        }
    }
}

// ------------------------------------------------------------------ write

/// What the write stage hands over at stop.
#[derive(Debug, Default)]
struct WriteReport {
    report: writer::WriterReport,
    error: Option<String>,
}

struct Write {
    writer: Writer,
    input: Consumer<Captured, Single>,
    flush_ticks: u64,
    annotate: bool,
    snaplen: usize,
    comment: Vec<u8>,
    closed: bool,
    error: Option<String>,
    /// Packets taken after a fatal writer error (counted as write errors).
    lost: u64,
    handoff: Arc<Mutex<WriteReport>>,
    next_publish: u64,
}

impl Write {
    fn fail(&mut self, e: &anyhow::Error) {
        if self.error.is_none() {
            tracing::error!("the writer failed: {e:#}");
            self.error = Some(format!("{e:#}"));
        }
    }
}

/// `crc32c=0x........ signatures=0x....`, without allocating or the
/// formatting machinery (a few percent of the writer's time per packet).
fn annotate(out: &mut Vec<u8>, crc: u32, signatures: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.clear();
    out.extend_from_slice(b"crc32c=0x");
    out.extend((0..8).rev().map(|i| HEX[(crc >> (4 * i)) as usize & 0xf]));
    out.extend_from_slice(b" signatures=0x");
    let digits = (32 - signatures.leading_zeros()).div_ceil(4).max(1);
    out.extend(
        (0..digits)
            .rev()
            .map(|i| HEX[(signatures >> (4 * i)) as usize & 0xf]),
    );
}

impl Poller for Write {
    fn poll(&mut self, ctx: &PollContext) -> usize {
        if publish_due(&mut self.next_publish, ctx.now())
            && let Ok(mut h) = self.handoff.try_lock()
        {
            // The counters; the segment list only at stop.
            h.report = self.writer.report().counters();
        }
        let mut work = 0;
        for _ in 0..4 * BURST {
            let Some(c) = self.input.pop() else {
                break;
            };
            work += 1;
            if self.error.is_some() {
                self.lost += 1;
                continue;
            }
            if self.annotate {
                annotate(&mut self.comment, c.crc, c.signatures);
            }
            let data = c.m.data();
            let p = pcapng::Packet {
                interface: u32::from(c.m.port()),
                timestamp_ns: c.ts_ns,
                data: &data[..data.len().min(self.snaplen)],
                original_len: data.len() as u32,
                comment: if self.annotate { &self.comment } else { &[] },
            };
            if let Err(e) = self.writer.append(&p, ctx.now()) {
                self.fail(&e);
                self.lost += 1;
            }
        }
        if ctx.stopping() && !self.closed && self.input.is_empty() {
            self.closed = true;
            if let Err(e) = self.writer.close() {
                self.fail(&e);
            }
        }
        match self.writer.poll(ctx.now(), self.flush_ticks) {
            Ok(n) => work += n,
            Err(e) => self.fail(&e),
        }
        // While stopping: until the last segment is closed.
        let open = if ctx.stopping() && self.error.is_none() {
            self.writer.in_progress() + usize::from(!self.closed)
        } else {
            0
        };
        work + open
    }

    fn stop(&mut self, _ctx: &PollContext) {
        if let Ok(mut h) = self.handoff.lock() {
            let mut report = self.writer.report().clone();
            report.dropped_write_error += self.lost;
            *h = WriteReport {
                report,
                error: self.error.take(),
            };
        }
    }
}

/// An lcore's name, role and stages.
type Lcore = (&'static str, Role, Vec<Box<dyn Poller>>);

/// Several stages polled in turn on one lcore.
struct Chain(Vec<Box<dyn Poller>>);

impl Poller for Chain {
    fn poll(&mut self, ctx: &PollContext) -> usize {
        self.0.iter_mut().map(|p| p.poll(ctx)).sum()
    }

    fn stop(&mut self, ctx: &PollContext) {
        for p in &mut self.0 {
            p.stop(ctx);
        }
    }
}

// ------------------------------------------------------------------ run

/// Runs a capture as `args` say and returns its summary.
///
/// # Errors
/// Bad options, ports or targets that do not open, a writer that failed,
/// or mbufs not returned.
pub fn run(args: &Args) -> anyhow::Result<Summary> {
    if !(1..=3).contains(&args.lcores) {
        bail!("--lcores {} must be 1, 2 or 3", args.lcores);
    }
    if args.batch == 0 || args.batch > 4096 {
        bail!("--batch {} must be 1 to 4096", args.batch);
    }
    if !(args.duration > 0.0 && args.duration.is_finite()) {
        bail!(
            "--duration {} must be a positive number of seconds",
            args.duration
        );
    }
    if args.frame_size < 64 || args.frame_size > 9000 {
        bail!("--frame-size {} must be 64 to 9000", args.frame_size);
    }
    let port_mode = !args.ports.is_empty() || !args.vdevs.is_empty();
    let mut group = LcoreGroup::new();

    // Ports: real ones, or one end of a memory pair with a generator on
    // the other.
    let mut port_summaries = Vec::new();
    let mut generator_pool = None;
    let (ports, names): (Vec<Box<dyn Port>>, Vec<String>) = if port_mode {
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
        let names = summaries.iter().map(|s| s.device.clone()).collect();
        port_summaries = summaries;
        (per_lcore.pop().context("no port queue opened")?, names)
    } else {
        let pool = MbufPool::new(MbufPoolConfig {
            name: "dp_capture".into(),
            count: args.mbufs,
            data_room: (args.frame_size + 128).max(2048),
            ..MbufPoolConfig::default()
        })
        .context("creating the mbuf pool")?;
        let cfg = net::PortConfig::new("dp-capture");
        let (mut gen_end, mut rx_end) =
            net::memory::MemoryPort::pair_with_pools(&cfg, pool.clone(), pool.clone())?;
        let gen_port = gen_end.pop().context("a memory port queue")?;
        let rx_port = rx_end.pop().context("a memory port queue")?;
        let g = group.add(LcoreConfig::new(Role::App).name("pktgen"));
        group.poller(
            g,
            Generator::new(
                pool.clone(),
                Box::new(gen_port),
                args.frame_size,
                args.signature_every,
            ),
        )?;
        generator_pool = Some(pool);
        (
            vec![Box::new(rx_port) as Box<dyn Port>],
            vec!["generator".into()],
        )
    };

    let queue = accel::Queue::<Vec<Mbuf>>::open(accel::QueueConfig {
        backend: args.backend,
        depth: args.accel_depth,
        max_items: args.batch,
        staging_bytes: (args.batch * args.frame_size.max(2048)).next_multiple_of(4096),
        ..accel::QueueConfig::default()
    })
    .context("opening the accelerator queue")?;
    let info = queue.info().clone();

    let output = match &args.out {
        Some(o) => Output::parse(o),
        None => Output::Files {
            stem: std::env::temp_dir().join("dp-capture"),
        },
    };
    let index = args.index.clone().or_else(|| match &output {
        Output::Files { stem } => Some(PathBuf::from(format!("{}.index.jsonl", stem.display()))),
        Output::Device { .. } => None,
    });
    let writer = Writer::open(WriterConfig {
        output,
        storage: args.storage,
        segment_bytes: args.segment_size,
        segments: args.segments,
        chunk_bytes: usize::try_from(args.chunk).context("--chunk")?,
        depth: args.depth,
        interfaces: names.clone(),
        snaplen: args.snaplen,
        index,
    })?;
    let storage = writer.backend();
    if !args.json {
        println!("accelerator: {} on {}", info.backend, info.device);
        if let Some(why) = &info.fallback {
            println!("fallback: {why}");
        }
        println!("storage: {storage}");
    }

    let mut port_counters: run::PortCounters =
        names.iter().map(|n| (n.clone(), Vec::new())).collect();
    let (rx_tx, match_rx) = ring::spsc::<Stamped>(RING_SIZE)?;
    let (match_tx, write_rx) = ring::spsc::<Captured>(RING_SIZE)?;
    let rx_counts = Arc::new(Mutex::new(RxCounts::default()));
    let match_counts = Arc::new(Mutex::new((
        MatchCounts::default(),
        accel::QueueStats::default(),
    )));
    let write_report = Arc::new(Mutex::new(WriteReport::default()));
    let rx: Box<dyn Poller> = Box::new(Rx {
        ports,
        out: rx_tx,
        batch: MbufBatch::new(),
        counts: RxCounts::default(),
        handoff: rx_counts.clone(),
        port_counters: run::add_lcore(&mut port_counters),
        next_publish: 0,
    });
    let accel_latency = dataplane::metrics::LatencyHistogram::new();
    let matcher: Box<dyn Poller> = Box::new(Match {
        queue,
        kernels: Kernels::new(&[Kernel::Crc32c, Kernel::PatternMatch]).context("two kernels")?,
        batch_size: args.batch,
        input: match_rx,
        out: match_tx,
        batch: Vec::with_capacity(args.batch),
        stamps: Vec::with_capacity(args.batch),
        in_flight: VecDeque::new(),
        spare: Vec::new(),
        done: Vec::new(),
        next_tag: 0,
        all: args.all,
        oldest: 0,
        timeout: dataplane::time::duration_to_tsc(Duration::from_micros(args.batch_timeout_us)),
        counts: MatchCounts::default(),
        handoff: match_counts.clone(),
        next_publish: 0,
        latency: accel_latency.clone(),
    });
    let write: Box<dyn Poller> = Box::new(Write {
        writer,
        input: write_rx,
        flush_ticks: dataplane::time::duration_to_tsc(Duration::from_millis(args.flush_ms)),
        annotate: !args.no_annotate,
        snaplen: args.snaplen as usize,
        comment: Vec::with_capacity(64),
        closed: false,
        error: None,
        lost: 0,
        handoff: write_report.clone(),
        next_publish: 0,
    });
    let stages: Vec<Lcore> = match args.lcores {
        1 => vec![("capture", Role::Io, vec![rx, matcher, write])],
        2 => vec![
            ("rx-match", Role::Io, vec![rx, matcher]),
            ("write", Role::App, vec![write]),
        ],
        _ => vec![
            ("rx", Role::Io, vec![rx]),
            ("match", Role::Accel, vec![matcher]),
            ("write", Role::App, vec![write]),
        ],
    };
    for (name, role, pollers) in stages {
        let l = group.add(LcoreConfig::new(role).name(name));
        group.poller(l, Chain(pollers))?;
    }

    let t0 = Instant::now();
    let observe = observe(
        args,
        port_counters,
        match_counts.clone(),
        accel_latency,
        write_report.clone(),
        info.backend.name(),
    )?;
    let running = group.launch()?;
    let _served = observe.map(|o| run::serve(o, &running)).transpose()?;
    std::thread::sleep(Duration::from_secs_f64(args.duration));
    let reports = running.stop()?;
    let elapsed = t0.elapsed().as_secs_f64();
    for r in &reports {
        if !matches!(r.exit, Exit::Drained) {
            bail!("lcore {} ({}) ended with {:?}", r.id, r.role, r.exit);
        }
    }
    let rx = *rx_counts.lock().map_err(|_| anyhow::anyhow!("rx counts"))?;
    let (m, _) = *match_counts
        .lock()
        .map_err(|_| anyhow::anyhow!("match counts"))?;
    let w = std::mem::take(
        &mut *write_report
            .lock()
            .map_err(|_| anyhow::anyhow!("write report"))?,
    );
    if let Some(e) = w.error {
        bail!("the writer failed: {e}");
    }
    if let Some(pool) = &generator_pool {
        let out = pool.in_use();
        if out != 0 {
            bail!("{out} mbufs were not returned to the pool");
        }
    }
    let r = w.report;
    Ok(Summary {
        ports: port_summaries,
        received: rx.received,
        inspected: m.inspected,
        matched: m.matched,
        written: r.written,
        dropped: Drops {
            accel_busy: rx.accel_busy,
            writer_busy: m.writer_busy,
            no_buffer: r.dropped_no_buffer,
            write_error: r.dropped_write_error,
            accel_error: m.accel_error,
            too_big: r.dropped_too_big,
        },
        bytes_written: r.bytes,
        writes: r.writes,
        packets_per_s: r.written as f64 / elapsed,
        mbytes_per_s: r.bytes as f64 / elapsed / 1e6,
        duration_s: elapsed,
        lcores: args.lcores,
        accel: format!("{} on {}", info.backend, info.device),
        accel_fallback: info.fallback,
        storage,
        segments: r.segments,
    })
}

/// `--telemetry` and `--metrics`: the ports' counters (as the forwarders
/// serve them), and the accelerator's and the writer's, which the match
/// and write stages publish every [`PUBLISH_EVERY`].
fn observe(
    args: &Args,
    ports: run::PortCounters,
    accel: Arc<Mutex<(MatchCounts, accel::QueueStats)>>,
    accel_latency: dataplane::metrics::LatencyHistogram,
    block: Arc<Mutex<WriteReport>>,
    accel_backend: &'static str,
) -> anyhow::Result<Option<run::Observe>> {
    let Some(o) = run::observe_with(args.telemetry.as_deref(), args.metrics, ports)? else {
        return Ok(None);
    };
    let accel_now = {
        let a = accel.clone();
        move || a.lock().map(|g| *g).unwrap_or_default()
    };
    let block_now = {
        let b = block.clone();
        move || b.lock().map(|g| g.report.counters()).unwrap_or_default()
    };
    if let Some((_, t)) = &o.telemetry {
        let a = accel_now.clone();
        t.register(
            "/dataplane/accel",
            "The accelerator queue's counters and the match stage's. Takes no parameters",
            move |_| {
                let (m, q) = a();
                Some(serde_json::json!({ "backend": accel_backend, "queue": q, "match": m }))
            },
        )?;
        let b = block_now.clone();
        t.register(
            "/dataplane/block",
            "The capture writer's block-queue counters. Takes no parameters",
            move |_| serde_json::to_value(b()).ok(),
        )?;
    }
    if let Some((_, m)) = &o.metrics {
        m.collect(move |r| {
            let (mc, q) = accel_now();
            let one = |v: u64| dataplane::metrics::counters([(Vec::new(), v)]);
            dataplane::metrics::register_accel_queue(r, &q);
            r.register(
                "dataplane_accel_batch_latency_seconds",
                "A batch's time on the accelerator, submission to completion seen",
                dataplane::metrics::histograms([(Vec::new(), accel_latency.clone())]),
            );
            r.register(
                "dataplane_capture_inspected",
                "Packets the accelerator inspected",
                one(mc.inspected),
            );
            r.register(
                "dataplane_capture_matched",
                "Packets to capture",
                one(mc.matched),
            );
            let w = block_now();
            r.register(
                "dataplane_block_writes",
                "Block writes completed",
                one(w.writes),
            );
            r.register(
                "dataplane_block_written_bytes",
                "Bytes written to storage",
                one(w.bytes),
            );
            r.register(
                "dataplane_block_latency_seconds",
                "Write latency, submission to completion",
                dataplane::metrics::histograms([(Vec::new(), w.latency.clone())]),
            );
            r.register(
                "dataplane_capture_written",
                "Packets whose write completed",
                one(w.written),
            );
            r.register(
                "dataplane_capture_dropped",
                "Matched packets not written, by reason",
                dataplane::metrics::counters([
                    (
                        vec![("reason".to_string(), "no_buffer".to_string())],
                        w.dropped_no_buffer,
                    ),
                    (
                        vec![("reason".to_string(), "write_error".to_string())],
                        w.dropped_write_error,
                    ),
                    (
                        vec![("reason".to_string(), "too_big".to_string())],
                        w.dropped_too_big,
                    ),
                    (
                        vec![("reason".to_string(), "writer_busy".to_string())],
                        mc.writer_busy,
                    ),
                ]),
            );
        });
    }
    Ok(Some(o))
}

/// Prints `s` as text.
pub fn print(s: &Summary) {
    println!(
        "{} received, {} inspected, {} matched, {} written ({:.0} packets/s, {:.1} MB/s over {:.2} s on {} lcore(s))",
        s.received,
        s.inspected,
        s.matched,
        s.written,
        s.packets_per_s,
        s.mbytes_per_s,
        s.duration_s,
        s.lcores
    );
    println!(
        "dropped: {} accel_busy, {} writer_busy, {} no_buffer, {} write_error, {} accel_error, {} too_big",
        s.dropped.accel_busy,
        s.dropped.writer_busy,
        s.dropped.no_buffer,
        s.dropped.write_error,
        s.dropped.accel_error,
        s.dropped.too_big
    );
    for seg in &s.segments {
        println!(
            "segment {}: {} ({} packets, {} bytes at offset {})",
            seg.segment, seg.path, seg.packets, seg.bytes, seg.offset
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn annotations_read_as_formatted() {
        let mut out = Vec::new();
        for (crc, sig) in [
            (0, 0),
            (0x0123_abcd, 1),
            (u32::MAX, 0xf),
            (7, 0x10),
            (1, u32::MAX),
        ] {
            super::annotate(&mut out, crc, sig);
            assert_eq!(
                String::from_utf8(out.clone()).unwrap(),
                format!("crc32c=0x{crc:08x} signatures=0x{sig:x}")
            );
        }
    }
}
