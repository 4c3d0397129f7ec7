//! A storage load generator in the spirit of SPDK's `perf` and fio: each
//! lcore owns one queue pair on the target and keeps it at a fixed depth,
//! submitting and reaping in its run-to-completion loop.
//!
//! ```text
//! nvme-perf --target /dev/nvme0n1 --rw randread --bs 4k --qd 32 --time 10
//! nvme-perf --target ram:1G --rw randrw --mix 70 --lcores 2 --json
//! nvme-perf --target 'trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:4420 subnqn:nqn.2016-06.io.spdk:cnode1' --qd 32
//! nvme-perf --target /work/file --size 1G --backend psync --qd 1
//! ```
//!
//! Prints per-lcore and total IOPS and bandwidth, a latency histogram
//! summary (mean, p50, p99, p99.9, max), CPU time per I/O (the process's
//! user plus system CPU time over the measured window, as `getrusage`
//! accounts it, divided by the I/Os completed in it), system calls per I/O;
//! with `--json`, a summary object as the last line of stdout.

mod latency;
mod load;
mod verify;

pub use latency::Latency;

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use dataplane::block::{self, Completions, Device, DeviceConfig, PollMode, Queue, QueueConfig, op};
use dataplane::lcore::{IdlePolicy, LcoreConfig, LcoreGroup, PollContext, Role};
use dataplane::time::{rdtsc, tsc_hz};
use dataplane::topology::{CpuId, Topology};
use hugepages::mempool::DmaBuf;
use latency::Histogram;
use load::{LcoreResult, Live, Load, Rng, process_cpu_ns};
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use verify::Verify;

/// The I/O pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pattern {
    /// Random reads.
    Randread,
    /// Random writes.
    Randwrite,
    /// Random reads and writes, `--mix` percent reads.
    Randrw,
    /// Sequential reads.
    Read,
    /// Sequential writes.
    Write,
    /// Sequential reads and writes, `--mix` percent reads.
    Rw,
}

impl Pattern {
    /// Whether offsets are random.
    pub fn random(self) -> bool {
        matches!(
            self,
            Pattern::Randread | Pattern::Randwrite | Pattern::Randrw
        )
    }

    /// Percent of I/Os that read, given `--mix`.
    pub fn read_percent(self, mix: u8) -> u8 {
        match self {
            Pattern::Randread | Pattern::Read => 100,
            Pattern::Randwrite | Pattern::Write => 0,
            Pattern::Randrw | Pattern::Rw => mix,
        }
    }
}

/// Drive a block target at a fixed queue depth per lcore and report
/// throughput, latency and CPU cost.
#[derive(Debug, Parser)]
#[command(name = "nvme-perf", version)]
pub struct PerfArgs {
    /// Logging.
    #[command(flatten)]
    pub log: crate::LogArgs,
    /// What to drive: a file or block device, `ram:SIZE`, or an SPDK
    /// transport ID / PCI address.
    #[arg(long)]
    pub target: String,

    /// Storage backend: auto, spdk, io_uring, psync or ram. `auto` takes
    /// the first that can open the target.
    #[arg(long, default_value = "auto")]
    pub backend: block::BackendChoice,

    /// The pattern.
    #[arg(long, value_enum, default_value = "randread")]
    pub rw: Pattern,

    /// Percent reads for randrw and rw.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub mix: u8,

    /// Bytes per I/O (4k, 128k, 1m, or a number).
    #[arg(long, default_value = "4k", value_parser = parse_size)]
    pub bs: u64,

    /// Operations in flight per lcore.
    #[arg(long, default_value_t = 32)]
    pub qd: usize,

    /// Lcores, each with its own queue pair (pinned to the first usable
    /// CPUs, or to --cpus).
    #[arg(long, default_value_t = 1)]
    pub lcores: usize,

    /// CPUs to pin the lcores to, in order (e.g. `1` or `0,1`).
    #[arg(long, value_delimiter = ',')]
    pub cpus: Vec<u32>,

    /// Seconds to measure.
    #[arg(long, default_value_t = 10.0)]
    pub time: f64,

    /// Seconds to run before measuring.
    #[arg(long, default_value_t = 0.0)]
    pub ramp: f64,

    /// Files: create or extend to this size (e.g. 1G).
    #[arg(long, value_parser = parse_size)]
    pub size: Option<u64>,

    /// Use only the first SPAN bytes of the target (default: all of it).
    #[arg(long, value_parser = parse_size)]
    pub span: Option<u64>,

    /// Buffered I/O instead of O_DIRECT (files and block devices).
    #[arg(long)]
    pub buffered: bool,

    /// Writes durable on completion (FUA: NVMe's Force Unit Access bit
    /// under SPDK, RWF_DSYNC on io_uring, a write then fdatasync under
    /// psync), as fio's --sync=dsync makes them.
    #[arg(long)]
    pub fua: bool,

    /// io_uring: polled completions: auto, off or required.
    #[arg(long, value_enum, default_value = "auto")]
    pub iopoll: IoPoll,

    /// Sleep in the kernel for a completion when there is nothing to submit
    /// (fio's way: the core is left to the kernel threads behind files
    /// and loop devices) instead of polling (SPDK's way, a core at 100%).
    /// io_uring only; the other backends always poll.
    #[arg(long)]
    pub wait: bool,

    /// io_uring: a kernel submission thread (SQPOLL) idling after this many ms.
    #[arg(long)]
    pub sqpoll: Option<u32>,

    /// Read-after-write checking: every write (of a pattern naming its LBA
    /// and a generation) is read back into a poisoned buffer and compared.
    /// Replaces --rw's read/write choice; half the I/Os are reads.
    #[arg(long)]
    pub verify: bool,

    /// Serve DPDK's telemetry v2 protocol under this file-prefix: lcores
    /// and `/dataplane/block` (per lcore: I/Os, errors, queue counters,
    /// latency so far).
    #[arg(long, value_name = "PREFIX")]
    pub telemetry: Option<String>,

    /// Serve Prometheus metrics at `http://ADDR/metrics`: the same, with
    /// the latency as a summary (quantiles).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,

    /// Print a JSON summary as the last line of stdout.
    #[arg(long)]
    pub json: bool,
}

/// io_uring's polled completions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IoPoll {
    /// When the device has poll queues.
    Auto,
    /// Never.
    Off,
    /// Or refuse to open.
    Required,
}

fn parse_size(s: &str) -> Result<u64, String> {
    block::parse_size(s).map_err(|e| e.to_string())
}

/// The JSON summary.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// Always `nvme-perf`.
    pub tool: &'static str,
    /// The target as given.
    pub target: String,
    /// The backend that opened it.
    pub backend: String,
    /// The pattern.
    pub rw: Pattern,
    /// Percent of I/Os that read.
    pub mix_read_percent: u8,
    /// Bytes per I/O.
    pub bs: u64,
    /// Operations in flight per lcore.
    pub qd: usize,
    /// Lcores driving the target.
    pub lcores: usize,
    /// The measured window.
    pub seconds: f64,
    /// I/Os completed in the window.
    pub ios: u64,
    /// I/Os per second.
    pub iops: f64,
    /// Bandwidth in MiB/s.
    pub mib_per_s: f64,
    /// Failed completions and refused submissions.
    pub errors: u64,
    /// What `--verify` found, when asked.
    pub verify: Option<VerifySummary>,
    /// Completion latency.
    pub latency: Latency,
    /// Process CPU time (user plus system) per I/O in the window.
    pub cpu_ns_per_io: f64,
    /// The lcore threads' CPU time per I/O.
    pub lcore_cpu_ns_per_io: f64,
    /// System calls per I/O (an upper bound: the whole run's calls over the window's I/Os).
    pub syscalls_per_io: f64,
    /// What the device found and decided when it opened.
    pub notes: Vec<String>,
    /// Each lcore's figures.
    pub per_lcore: Vec<LcoreSummary>,
}

/// What `--verify` found.
#[derive(Debug, Serialize)]
pub struct VerifySummary {
    /// Reads compared with what was written before them.
    pub checked: u64,
    /// Of those, how many differed.
    pub mismatches: u64,
}

/// One lcore's figures.
#[derive(Debug, Serialize)]
pub struct LcoreSummary {
    /// The lcore's index.
    pub lcore: usize,
    /// Its CPU.
    pub cpu: Option<u32>,
    /// I/Os completed in the window.
    pub ios: u64,
    /// Reads completed.
    pub reads: u64,
    /// Writes completed.
    pub writes: u64,
    /// I/Os per second.
    pub iops: f64,
    /// Bandwidth in MiB/s.
    pub mib_per_s: f64,
    /// Completion latency.
    pub latency: Latency,
    /// The lcore thread's CPU time per I/O.
    pub cpu_ns_per_io: f64,
    /// System calls made.
    pub syscalls: u64,
}

impl Summary {
    /// `Ok` when every I/O succeeded and every read-back matched.
    ///
    /// # Errors
    ///
    /// The count of I/O errors, or of reads that differ from what was
    /// written.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.errors > 0 {
            bail!("{} I/O errors", self.errors);
        }
        if let Some(v) = &self.verify
            && v.mismatches > 0
        {
            bail!(
                "verify: {} of {} reads differ from what was written",
                v.mismatches,
                v.checked
            );
        }
        Ok(())
    }
}

/// Runs the load `args` describes and returns what it measured.
///
/// # Errors
///
/// A refused argument (with the flag's name), a target that does not open,
/// or an lcore that could not start or report.
pub fn run(args: &PerfArgs) -> anyhow::Result<Summary> {
    if args.qd == 0 || args.lcores == 0 || args.time <= 0.0 {
        bail!("--qd, --lcores and --time must be positive");
    }

    let mut cfg = DeviceConfig::new(&args.target);
    cfg.backend = args.backend;
    cfg.create_size = args.size;
    cfg.direct = !args.buffered;
    cfg.iopoll = match args.iopoll {
        IoPoll::Auto => PollMode::Auto,
        IoPoll::Off => PollMode::Off,
        IoPoll::Required => PollMode::Required,
    };
    cfg.sqpoll_idle_ms = args.sqpoll;
    let opened = block::open(&cfg).with_context(|| format!("opening {}", args.target))?;
    // For people; with JSON logs, the selection's own events say it.
    if args.log.log_format == crate::LogFormat::Text {
        for s in &opened.skipped {
            eprintln!("nvme-perf: skipped {}: {}", s.backend, s.reason);
        }
    }
    let dev: Arc<dyn Device> = opened.value;
    let g = dev.geometry().clone();
    if args.bs == 0 || !args.bs.is_multiple_of(u64::from(g.block_size)) {
        bail!(
            "--bs {} is not a multiple of the device's {}-byte blocks",
            args.bs,
            g.block_size
        );
    }
    if args.bs > u64::from(g.max_transfer) {
        bail!(
            "--bs {} is over the device's maximum transfer of {} bytes",
            args.bs,
            g.max_transfer
        );
    }
    if args.verify && (args.bs < 8 || !args.bs.is_multiple_of(8)) {
        bail!("--verify needs --bs to be a multiple of 8 bytes");
    }
    let blocks_per_io = u32::try_from(args.bs / u64::from(g.block_size))?;
    let span = args.span.unwrap_or(g.bytes()).min(g.bytes());
    let slots = span / args.bs;
    if slots == 0 {
        bail!("the target ({span} bytes) holds no {}-byte I/O", args.bs);
    }
    let lanes = (args.qd * args.lcores) as u64;
    if args.verify && slots < lanes {
        bail!(
            "--verify gives each of the {lanes} operations in flight its own slots; the target \
             holds only {slots} of {} bytes",
            args.bs
        );
    }

    // CPUs: as asked, else the last usable ones (leaving the first, where
    // the main thread and the system run, when there is more than one).
    let cpus: Vec<CpuId> = if args.cpus.is_empty() {
        let usable = Topology::detect()?.usable_cpus();
        let skip = usize::from(usable.len() > args.lcores);
        usable.into_iter().skip(skip).take(args.lcores).collect()
    } else {
        args.cpus.iter().map(|&c| CpuId(c)).collect()
    };
    if cpus.len() < args.lcores {
        bail!(
            "{} lcores but only {} CPUs to pin them to",
            args.lcores,
            cpus.len()
        );
    }

    let hz = tsc_hz() as f64;
    let ns_per_tick = 1e9 / hz;
    let start_tsc = rdtsc();
    // Lcores start within a few ms; measuring starts after the ramp plus a
    // small margin so that every lcore's window is the same.
    let margin = Duration::from_millis(50);
    let measure_from = start_tsc + ((args.ramp + margin.as_secs_f64()) * hz) as u64;
    let measure_until = measure_from + (args.time * hz) as u64;

    let mut group = LcoreGroup::new().allow_shared_cpus(true);
    let mut reports = Vec::new();
    let observing = args.metrics.is_some() || args.telemetry.is_some();
    let mut lives: Vec<Arc<Mutex<Live>>> = Vec::new();
    let mut pools = Vec::new();
    for (i, cpu) in cpus.iter().take(args.lcores).enumerate() {
        let pool = g.buffer_pool(&format!("perf{i}"), args.qd, args.bs as usize)?;
        let queue = dev.queue(&QueueConfig::new(args.qd).buffers(&pool))?;
        let mut spare = Vec::with_capacity(args.qd);
        for _ in 0..args.qd {
            let mut b = pool.alloc_buf().context("a buffer")?;
            // Writes carry a non-zero pattern, so that no layer can
            // shortcut zeroes.
            for (j, x) in b.iter_mut().enumerate() {
                *x = (j as u8) ^ 0x5a;
            }
            spare.push(b);
        }
        let report = Arc::new(Mutex::new(None));
        reports.push((i, *cpu, report.clone()));
        pools.push(pool);
        let load = Load {
            queue,
            spare,
            stamps: vec![0; args.qd],
            free_tags: (0..args.qd as u32).rev().collect(),
            out: Completions::new(),
            rng: Rng(0x9e37_79b9_7f4a_7c15 ^ ((i as u64 + 1) << 32) ^ start_tsc),
            random: args.rw.random(),
            read_pct: u64::from(args.rw.read_percent(args.mix)),
            blocks_per_io,
            io_bytes: args.bs as usize,
            slots,
            base_slot: slots / args.lcores as u64 * i as u64,
            next_seq: 0,
            verify: args.verify.then(|| Verify {
                lanes,
                lane_base: (i * args.qd) as u64,
                written: vec![None; args.qd],
                seq: vec![0; args.qd],
                generation: (i as u64) << 48,
                checked: 0,
                mismatches: 0,
            }),
            wait: args.wait,
            fua: args.fua,
            measure_from,
            measure_until,
            ns_per_tick,
            cpu_at_end: 0,
            result: LcoreResult::new(),
            cpu_at_start: 0,
            report,
            live: observing.then(|| {
                let l = Arc::new(Mutex::new(Live::default()));
                lives.push(l.clone());
                (l, (hz * 0.25) as u64)
            }),
            next_publish: 0,
        };
        let id = group.add(
            LcoreConfig::new(Role::Io)
                .cpu(*cpu)
                .idle(IdlePolicy::BusyPoll)
                .name(format!("perf{i}")),
        );
        group.poller(id, load)?;
    }

    let observe = observe(args, lives)?;
    let running = group.launch()?;
    let _served = observe
        .map(|o| crate::net::run::serve(o, &running))
        .transpose()?;
    let wait_until = Instant::now() + Duration::from_secs_f64(args.ramp) + margin;
    std::thread::sleep(wait_until.saturating_duration_since(Instant::now()));
    let cpu0 = process_cpu_ns();
    std::thread::sleep(Duration::from_secs_f64(args.time));
    let cpu1 = process_cpu_ns();
    running.stop()?;

    let mut total = Histogram::new();
    let (mut ios, mut errors, mut lcore_cpu, mut syscalls) = (0u64, 0u64, 0u64, 0u64);
    let (mut verified, mut mismatches) = (0u64, 0u64);
    let mut per = Vec::new();
    let bytes_per = args.bs as f64;
    for (i, cpu, report) in &reports {
        let r = report
            .lock()
            .ok()
            .and_then(|mut s| s.take())
            .context("an lcore reported nothing")?;
        let secs = args.time;
        total.merge(&r.hist);
        ios += r.ios;
        // Both count failed completions; the queue also counts kernel
        // errors, this program also refused submissions.
        errors += r.errors.max(r.queue.errors);
        verified += r.verified;
        mismatches += r.mismatches;
        lcore_cpu += r.thread_cpu_ns;
        syscalls += r.queue.syscalls;
        per.push(LcoreSummary {
            lcore: *i,
            cpu: Some(cpu.0),
            ios: r.ios,
            reads: r.reads,
            writes: r.writes,
            iops: r.ios as f64 / secs,
            mib_per_s: r.ios as f64 * bytes_per / secs / (1 << 20) as f64,
            latency: Latency::from(&r.hist),
            cpu_ns_per_io: r.thread_cpu_ns as f64 / r.ios.max(1) as f64,
            syscalls: r.queue.syscalls,
        });
    }
    drop(pools);
    let summary = Summary {
        tool: "nvme-perf",
        target: args.target.clone(),
        backend: dev.backend().to_owned(),
        rw: args.rw,
        mix_read_percent: if args.verify {
            50
        } else {
            args.rw.read_percent(args.mix)
        },
        bs: args.bs,
        qd: args.qd,
        lcores: args.lcores,
        seconds: args.time,
        ios,
        iops: ios as f64 / args.time,
        mib_per_s: ios as f64 * bytes_per / args.time / (1 << 20) as f64,
        errors,
        verify: args.verify.then_some(VerifySummary {
            checked: verified,
            mismatches,
        }),
        latency: Latency::from(&total),
        cpu_ns_per_io: cpu1.saturating_sub(cpu0) as f64 / ios.max(1) as f64,
        lcore_cpu_ns_per_io: lcore_cpu as f64 / ios.max(1) as f64,
        // Counted over the whole run (ramp and drain included) against the
        // measured I/Os: an upper bound.
        syscalls_per_io: syscalls as f64 / ios.max(1) as f64,
        notes: dev.notes(),
        per_lcore: per,
    };
    Ok(summary)
}

/// Prints the summary as a table.
pub fn print_text(s: &Summary) {
    println!(
        "nvme-perf: {} on {} ({}), {:?} bs={} qd={} lcores={} for {:.1} s",
        s.backend,
        s.target,
        s.notes.join("; "),
        s.rw,
        s.bs,
        s.qd,
        s.lcores,
        s.seconds
    );
    println!(
        "{:>6} {:>5} {:>12} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10}",
        "lcore",
        "cpu",
        "IOPS",
        "MiB/s",
        "mean us",
        "p50 us",
        "p99 us",
        "p99.9 us",
        "max us",
        "cpu ns/IO"
    );
    for l in &s.per_lcore {
        println!(
            "{:>6} {:>5} {:>12.0} {:>10.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>10.0}",
            l.lcore,
            l.cpu.map_or("-".into(), |c| c.to_string()),
            l.iops,
            l.mib_per_s,
            l.latency.mean_us,
            l.latency.p50_us,
            l.latency.p99_us,
            l.latency.p999_us,
            l.latency.max_us,
            l.cpu_ns_per_io
        );
    }
    println!(
        "{:>6} {:>5} {:>12.0} {:>10.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>10.0}",
        "total",
        "",
        s.iops,
        s.mib_per_s,
        s.latency.mean_us,
        s.latency.p50_us,
        s.latency.p99_us,
        s.latency.p999_us,
        s.latency.max_us,
        s.cpu_ns_per_io
    );
    println!(
        "process CPU {:.0} ns per I/O (lcores {:.0}); {:.3} system calls per I/O; {} errors",
        s.cpu_ns_per_io, s.lcore_cpu_ns_per_io, s.syscalls_per_io, s.errors
    );
    if let Some(v) = &s.verify {
        println!(
            "verify: {} reads checked against what was written, {} differ",
            v.checked, v.mismatches
        );
    }
}

/// `--telemetry` and `--metrics` over each lcore's published [`Live`].
fn observe(
    args: &PerfArgs,
    lives: Vec<Arc<Mutex<Live>>>,
) -> anyhow::Result<Option<crate::net::run::Observe>> {
    let Some(o) =
        crate::net::run::observe_with(args.telemetry.as_deref(), args.metrics, Vec::new())?
    else {
        return Ok(None);
    };
    let lives = Arc::new(lives);
    let snapshot = {
        let l = lives.clone();
        move || -> Vec<Live> {
            l.iter()
                .map(|x| x.lock().map(|g| g.clone()).unwrap_or_default())
                .collect()
        }
    };
    if let Some((_, t)) = &o.telemetry {
        let snap = snapshot.clone();
        t.register(
            "/dataplane/block",
            "Per load lcore: I/Os, errors, queue counters and latency so far. Takes no parameters",
            move |_| {
                Some(serde_json::json!(
                    snap()
                        .iter()
                        .enumerate()
                        .map(|(i, l)| serde_json::json!({
                            "lcore": i,
                            "ios": l.ios,
                            "reads": l.reads,
                            "writes": l.writes,
                            "errors": l.errors,
                            "queue": l.queue,
                            "latency": Latency::from(&l.hist),
                        }))
                        .collect::<Vec<_>>()
                ))
            },
        )?;
    }
    if let Some((_, m)) = &o.metrics {
        m.collect(move |r| {
            use dataplane::metrics::{Labels, counters};
            let snap = snapshot();
            let label = |i: usize| -> Labels { vec![("lcore".into(), i.to_string())] };
            let fam = |f: &dyn Fn(&Live) -> u64| {
                counters(snap.iter().enumerate().map(|(i, l)| (label(i), f(l))))
            };
            r.register(
                "dataplane_block_ios",
                "I/Os completed while measuring",
                fam(&|l| l.ios),
            );
            r.register(
                "dataplane_block_reads",
                "Reads completed while measuring",
                fam(&|l| l.reads),
            );
            r.register(
                "dataplane_block_writes",
                "Writes completed while measuring",
                fam(&|l| l.writes),
            );
            r.register(
                "dataplane_block_errors",
                "I/Os completed with an error",
                fam(&|l| l.errors),
            );
            r.register(
                "dataplane_block_submitted",
                "Operations the queue accepted",
                fam(&|l| l.queue.submitted),
            );
            r.register(
                "dataplane_block_syscalls",
                "System calls the queue made",
                fam(&|l| l.queue.syscalls),
            );
            let latency = dataplane::metrics::histograms(snap.iter().enumerate().map(|(i, l)| {
                let h = dataplane::metrics::LatencyHistogram::new();
                l.hist.export_into(&h);
                (label(i), h)
            }));
            r.register(
                "dataplane_block_latency_seconds",
                "I/O latency so far, submission to completion",
                latency,
            );
        });
    }
    Ok(Some(o))
}
