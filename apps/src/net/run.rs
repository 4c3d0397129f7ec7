//! Running a program's lcores: the plan, the launch, a line of rates every
//! second, an orderly stop (at the end of `--duration`, or on SIGINT or
//! SIGTERM, DPDK l2fwd's `force_quit`), and the summary.

use super::cli::CommonArgs;
use super::counters::LcoreCounters;
use super::ports::PortSummary;
use anyhow::Context;
use dataplane::backend::Skip;
use dataplane::lcore::{Exit, LcoreGroup, LcoreId, LcoreReport, Role, Running};
use dataplane::metrics::{Labels, Metrics, MetricsServer, Registry, counters};
use dataplane::net::{DropReason, QueueStats};
use dataplane::profile::{Plan, Profile};
use dataplane::telemetry::{Telemetry, TelemetryServer};
use dataplane::topology::Topology;
use nix::sys::signal::{SigSet, Signal};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A plan and the lcores of it that run the data path.
#[derive(Debug, Clone)]
pub struct DataPlan {
    /// The plan.
    pub plan: Plan,
    /// The lcores that poll ports: the I/O lcores, or the application
    /// lcores when the plan has no I/O lcores (small machines).
    pub data: Vec<LcoreId>,
}

/// The plan of `DATAPLANE_PROFILE` (else production) with the
/// `DATAPLANE_*` overrides, and `lcores` data lcores when given (as
/// application lcores, with no I/O lcores).
///
/// # Errors
///
/// When the machine cannot be detected or the plan cannot be made (more
/// lcores than usable cores, with affinity on).
pub fn data_plan(lcores: Option<usize>) -> anyhow::Result<DataPlan> {
    let topo = Topology::detect().context("detecting the machine")?;
    let profile = std::env::var("DATAPLANE_PROFILE")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(Profile::Production);
    let mut b = Plan::builder(&topo, profile).from_env();
    if let Some(n) = lcores {
        b = b.io_lcores_per_node(0).accel_lcores(0).app_lcores(n.max(1));
    }
    let plan = b.build().context("planning lcores")?;
    Ok(DataPlan::of(plan))
}

impl DataPlan {
    /// The data lcores of `plan`.
    pub fn of(plan: Plan) -> DataPlan {
        let io: Vec<LcoreId> = plan.io_lcores().map(|l| l.id).collect();
        let data = if io.is_empty() {
            plan.app_lcores().map(|l| l.id).collect()
        } else {
            io
        };
        DataPlan { plan, data }
    }

    /// A group with one lcore per lcore of the plan.
    pub fn group(&self) -> LcoreGroup {
        self.plan.lcore_group()
    }
}

/// Blocks SIGINT and SIGTERM in the calling thread (and the threads it
/// starts later, which inherit the mask) and turns them into `flag`, set
/// from a thread of its own that waits for them.
///
/// # Errors
///
/// When the mask cannot be set or the thread cannot start.
pub fn quit_on_signals(flag: Arc<AtomicBool>) -> anyhow::Result<()> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.thread_block().context("blocking SIGINT/SIGTERM")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            while set.wait().is_ok() {
                // Relaxed: a flag polled by the main loop; nothing else is
                // published through it.
                flag.store(true, Ordering::Relaxed);
            }
        })
        .context("starting the signal thread")?;
    Ok(())
}

/// How a run is watched and ended.
#[derive(Debug)]
pub struct Watch {
    /// The program's name, leading each stats line.
    pub name: &'static str,
    /// The run time; until a signal without it.
    pub duration: Option<Duration>,
    /// Every data lcore's counters, with its id.
    pub counters: Vec<(LcoreId, Arc<LcoreCounters>)>,
    /// Set by a signal.
    pub quit: Arc<AtomicBool>,
    /// Set when the run time is up, before the lcores are stopped, and
    /// then `tail` is waited: for a generator to stop sending and still
    /// count what comes back in flight.
    pub tx_off: Option<(Arc<AtomicBool>, Duration)>,
    /// Print a line every second.
    pub lines: bool,
    /// The lcores (indices into `counters`) whose sum is the line's total;
    /// all of them when `None`. A pipeline names its middle stage, so that
    /// a packet is counted once, not once per stage.
    pub summed: Option<std::ops::Range<usize>>,
    /// The telemetry socket and `/metrics` endpoint to serve while the
    /// lcores run.
    pub observe: Option<Observe>,
}

/// What a program serves about itself while it runs: its own telemetry
/// commands and metrics (the ports'), to which the run adds the lcores'.
#[derive(Debug, Default)]
pub struct Observe {
    /// The DPDK file-prefix naming the telemetry socket's directory, and
    /// the commands.
    pub telemetry: Option<(String, Telemetry)>,
    /// Where `/metrics` is served, and the collectors.
    pub metrics: Option<(SocketAddr, Metrics)>,
}

/// The telemetry and metrics that `--telemetry` and `--metrics` ask for,
/// over `ports`; `None` when neither is.
///
/// # Errors
/// Never for these command names.
pub fn observe(c: &CommonArgs, ports: PortCounters) -> anyhow::Result<Option<Observe>> {
    observe_with(c.telemetry.as_deref(), c.metrics, ports)
}

/// As [`observe`], from the two options themselves.
///
/// # Errors
/// As [`observe`].
pub fn observe_with(
    telemetry: Option<&str>,
    metrics: Option<SocketAddr>,
    ports: PortCounters,
) -> anyhow::Result<Option<Observe>> {
    if telemetry.is_none() && metrics.is_none() {
        return Ok(None);
    }
    let ports = Arc::new(ports);
    let mut o = Observe::default();
    if let Some(prefix) = telemetry {
        let t = Telemetry::new();
        register_ethdev(&t, ports.clone())?;
        o.telemetry = Some((prefix.to_owned(), t));
    }
    if let Some(addr) = metrics {
        let m = Metrics::new();
        m.collect(move |r| port_metrics(r, &ports));
        o.metrics = Some((addr, m));
    }
    Ok(Some(o))
}

/// The telemetry socket and `/metrics` endpoint of `o`, with the lcores of
/// `running` added, served until the returned value is dropped.
///
/// # Errors
/// A socket or address that cannot be bound.
pub fn serve(o: Observe, running: &Running) -> anyhow::Result<Served> {
    let view = running.stats_view();
    let telemetry = match o.telemetry {
        Some((prefix, t)) => {
            t.lcores(view.clone())?;
            let server = t.serve(&prefix).context("starting the telemetry socket")?;
            tracing::info!(path = %server.path().display(), "telemetry");
            Some(server)
        }
        None => None,
    };
    let metrics = match o.metrics {
        Some((addr, m)) => {
            m.lcores(view);
            Some(m.serve(addr).context("serving /metrics")?)
        }
        None => None,
    };
    Ok(Served {
        _telemetry: telemetry,
        _metrics: metrics,
    })
}

/// What [`serve`] started; dropping it stops both.
#[derive(Debug)]
pub struct Served {
    _telemetry: Option<TelemetryServer>,
    _metrics: Option<MetricsServer>,
}

/// Per port (`port` label, the device as given): packets, bytes, errors,
/// and drops by reason (`reason` label).
fn port_metrics(r: &mut Registry, ports: &PortCounters) {
    let totals: Vec<(Labels, QueueStats)> = ports
        .iter()
        .map(|(name, lcores)| {
            let mut t = QueueStats::default();
            for c in lcores {
                t.add(&c.snapshot());
            }
            (vec![("port".to_string(), name.clone())], t)
        })
        .collect();
    let fam =
        |f: &dyn Fn(&QueueStats) -> u64| counters(totals.iter().map(|(l, s)| (l.clone(), f(s))));
    r.register(
        "dataplane_port_rx_packets",
        "Packets received",
        fam(&|s| s.rx_packets),
    );
    r.register(
        "dataplane_port_tx_packets",
        "Packets sent",
        fam(&|s| s.tx_packets),
    );
    r.register(
        "dataplane_port_rx_bytes",
        "Bytes received",
        fam(&|s| s.rx_bytes),
    );
    r.register(
        "dataplane_port_tx_bytes",
        "Bytes sent",
        fam(&|s| s.tx_bytes),
    );
    r.register(
        "dataplane_port_errors",
        "Errors the backend reported",
        fam(&|s| s.errors),
    );
    r.register(
        "dataplane_port_dropped_packets",
        "Packets dropped, by reason",
        counters(totals.iter().flat_map(|(l, s)| {
            DropReason::ALL.iter().map(move |why| {
                let mut labels = l.clone();
                labels.push(("reason".to_string(), why.name().to_string()));
                (labels, s.dropped(*why))
            })
        })),
    );
}

/// Per port, its name and the counters each lcore publishes for its
/// queue of it.
pub type PortCounters = Vec<(String, Vec<Arc<LcoreCounters>>)>;

/// One entry per port, no lcores yet: see [`add_lcore`].
pub fn port_counters(ports: &[PortSummary]) -> PortCounters {
    ports
        .iter()
        .map(|p| (p.device.clone(), Vec::new()))
        .collect()
}

/// Counters for a new lcore's queue of each port, added to `ports`; the
/// lcore publishes into them ([`super::ports::publish_ports`]).
pub fn add_lcore(ports: &mut PortCounters) -> Vec<Arc<LcoreCounters>> {
    ports
        .iter_mut()
        .map(|(_, lcores)| {
            let c = Arc::new(LcoreCounters::default());
            lcores.push(c.clone());
            c
        })
        .collect()
}

/// A port's counters as `/ethdev/stats` answers them: DPDK's names
/// (`ipackets`, `opackets`, `ibytes`, `obytes`, `imissed`, `ierrors`,
/// `oerrors`, `rx_nombuf`), then the drops by reason.
pub fn ethdev_stats(s: &QueueStats) -> serde_json::Value {
    let mut v = serde_json::json!({
        "ipackets": s.rx_packets,
        "opackets": s.tx_packets,
        "ibytes": s.rx_bytes,
        "obytes": s.tx_bytes,
        "imissed": s.dropped(DropReason::RxOverrun),
        "ierrors": s.errors,
        "oerrors": 0,
        "rx_nombuf": s.dropped(DropReason::NoMbuf),
    });
    for (reason, n) in drops_map(s) {
        v[format!("dropped_{reason}")] = n.into();
    }
    v
}

/// Registers `/ethdev/list` and `/ethdev/stats,N` over `ports`.
///
/// # Errors
/// Never for these names.
pub fn register_ethdev(t: &Telemetry, ports: Arc<PortCounters>) -> anyhow::Result<()> {
    let p = ports.clone();
    t.register(
        "/ethdev/list",
        "Returns list of available ethdev ports. Takes no parameters",
        move |_| Some(serde_json::json!((0..p.len()).collect::<Vec<_>>())),
    )?;
    let p = ports.clone();
    t.register(
        "/ethdev/stats",
        "Returns the common stats for a port. Parameters: int port_id",
        move |param| {
            let (_, lcores) = p.get(param.trim().parse::<usize>().ok()?)?;
            let mut total = QueueStats::default();
            for c in lcores {
                total.add(&c.snapshot());
            }
            Some(ethdev_stats(&total))
        },
    )?;
    t.register(
        "/ethdev/info",
        "Returns the device info for a port. Parameters: int port_id",
        move |param| {
            let id = param.trim().parse::<usize>().ok()?;
            let (name, lcores) = ports.get(id)?;
            Some(serde_json::json!({
                "name": name,
                "port_id": id,
                "nb_rx_queues": lcores.len(),
                "nb_tx_queues": lcores.len(),
            }))
        },
    )?;
    Ok(())
}

/// What a run did.
#[derive(Debug)]
pub struct Outcome {
    /// Every lcore's report.
    pub reports: Vec<LcoreReport>,
    /// From launch to the stop request.
    pub elapsed: Duration,
    /// Each data lcore's final totals.
    pub per_lcore: Vec<(LcoreId, QueueStats)>,
}

impl Outcome {
    /// The sum over data lcores.
    pub fn total(&self) -> QueueStats {
        let mut t = QueueStats::default();
        for (_, s) in &self.per_lcore {
            t.add(s);
        }
        t
    }
}

fn sum(
    counters: &[(LcoreId, Arc<LcoreCounters>)],
    which: Option<std::ops::Range<usize>>,
) -> QueueStats {
    let mut t = QueueStats::default();
    let which = which.unwrap_or(0..counters.len());
    for (_, c) in counters.get(which).unwrap_or_default() {
        t.add(&c.snapshot());
    }
    t
}

fn mpps(packets: u64, d: Duration) -> f64 {
    if d.is_zero() {
        0.0
    } else {
        packets as f64 / d.as_secs_f64() / 1e6
    }
}

/// Launches `group`, prints a line of rates every second, stops it when
/// the time is up or a signal came, and returns the reports.
///
/// # Errors
///
/// When the lcores cannot be launched, or one of them panicked.
pub fn run(group: LcoreGroup, mut watch: Watch) -> anyhow::Result<Outcome> {
    let running = group.launch().context("launching the lcores")?;
    // Served while the lcores run; they go with `_served`.
    let _served = watch
        .observe
        .take()
        .map(|o| serve(o, &running))
        .transpose()?;
    let t0 = Instant::now();
    let mut last = (t0, QueueStats::default());
    let mut last_lcores: Vec<QueueStats> = vec![QueueStats::default(); watch.counters.len()];
    let mut next_line = t0 + Duration::from_secs(1);
    let end = watch.duration.map(|d| t0 + d);
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let now = Instant::now();
        if watch.quit.load(Ordering::Relaxed) || end.is_some_and(|e| now >= e) {
            break;
        }
        if watch.lines && now >= next_line {
            next_line += Duration::from_secs(1);
            let s = sum(&watch.counters, watch.summed.clone());
            let dt = now - last.0;
            let mut line = format!(
                "{:<7} t={:>5.1}s  rx {:>8.3} Mpps  tx {:>8.3} Mpps  drops {}",
                watch.name,
                (now - t0).as_secs_f64(),
                mpps(s.rx_packets - last.1.rx_packets, dt),
                mpps(s.tx_packets - last.1.tx_packets, dt),
                s.total_drops()
            );
            for ((id, c), prev) in watch.counters.iter().zip(last_lcores.iter_mut()) {
                let c = c.snapshot();
                let _ = write!(
                    line,
                    " | {id} rx {:.3} tx {:.3}",
                    mpps(c.rx_packets - prev.rx_packets, dt),
                    mpps(c.tx_packets - prev.tx_packets, dt)
                );
                *prev = c;
            }
            println!("{line}");
            last = (now, s);
        }
    }
    let elapsed = t0.elapsed();
    if let Some((flag, tail)) = &watch.tx_off {
        flag.store(true, Ordering::Relaxed);
        std::thread::sleep(*tail);
    }
    let reports = running.stop().context("stopping the lcores")?;
    for r in &reports {
        if let Exit::Panicked(why) = &r.exit {
            anyhow::bail!("{} panicked: {why}", r.id);
        }
    }
    let per_lcore = watch
        .counters
        .iter()
        .map(|(id, c)| (*id, c.snapshot()))
        .collect();
    Ok(Outcome {
        reports,
        elapsed,
        per_lcore,
    })
}

/// One lcore in the summary.
#[derive(Debug, Clone, Serialize)]
pub struct LcoreSummary {
    /// The lcore.
    pub lcore: u32,
    /// Its role in the plan.
    pub role: Role,
    /// Its CPU, when pinned.
    pub cpu: Option<u32>,
    /// Packets it received.
    pub rx_packets: u64,
    /// Packets it sent.
    pub tx_packets: u64,
    /// Packets it dropped.
    pub drops: u64,
    /// Share of its time spent in passes that found work.
    pub busy: f64,
}

/// The summary every program prints (`--json`: one object, the last line
/// of standard output).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The program.
    pub app: &'static str,
    /// The backend of the ports (`mixed` when they differ).
    pub backend: String,
    /// Backends passed over for the first port, with their reasons (every
    /// port's are under `ports`).
    pub skipped: Vec<Skip>,
    /// The ports.
    pub ports: Vec<PortSummary>,
    /// Seconds the data path ran.
    pub duration_s: f64,
    /// Packets received.
    pub rx_packets: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Millions of packets received per second.
    pub rx_mpps: f64,
    /// Millions of packets sent per second.
    pub tx_mpps: f64,
    /// Drops by reason (only reasons with drops).
    pub drops: BTreeMap<&'static str, u64>,
    /// All drops.
    pub drops_total: u64,
    /// Errors the backends reported.
    pub errors: u64,
    /// The lcores.
    pub lcores: Vec<LcoreSummary>,
    /// Distinct CPUs the lcores are on.
    pub cpus: usize,
    /// Whether lcores are pinned.
    pub affinity: bool,
    /// Whether lcores share CPUs.
    pub shared_cores: bool,
    /// The plan's notes.
    pub plan_notes: Vec<String>,
    /// What only this program reports.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Summary {
    /// The summary of a run over `ports` (see [`PortSummary::of`], taken
    /// before the queues went to the lcores).
    pub fn new(app: &'static str, ports: Vec<PortSummary>, plan: &Plan, out: &Outcome) -> Summary {
        let total = out.total();
        let first = ports.first().map(|p| p.backend).unwrap_or("none");
        let backend = if ports.iter().all(|p| p.backend == first) {
            first.to_owned()
        } else {
            "mixed".to_owned()
        };
        let lcores = out
            .reports
            .iter()
            .map(|r| {
                let s = out
                    .per_lcore
                    .iter()
                    .find(|(id, _)| *id == r.id)
                    .map(|(_, s)| *s)
                    .unwrap_or_default();
                LcoreSummary {
                    lcore: r.id.0,
                    role: r.role,
                    cpu: r.cpu.map(|c| c.0),
                    rx_packets: s.rx_packets,
                    tx_packets: s.tx_packets,
                    drops: s.total_drops(),
                    busy: r.stats.busy_ratio(),
                }
            })
            .collect();
        Summary {
            app,
            backend,
            skipped: ports.first().map(|p| p.skipped.clone()).unwrap_or_default(),
            ports,
            duration_s: out.elapsed.as_secs_f64(),
            rx_packets: total.rx_packets,
            tx_packets: total.tx_packets,
            rx_bytes: total.rx_bytes,
            tx_bytes: total.tx_bytes,
            rx_mpps: mpps(total.rx_packets, out.elapsed),
            tx_mpps: mpps(total.tx_packets, out.elapsed),
            drops: drops_map(&total),
            drops_total: total.total_drops(),
            errors: total.errors,
            lcores,
            cpus: plan.cores_used(),
            affinity: plan.affinity,
            shared_cores: plan.shared_cores,
            plan_notes: plan.notes.clone(),
            extra: serde_json::Map::new(),
        }
    }

    /// Prints the summary: text, or (with `json`) one JSON object on one
    /// line, last.
    ///
    /// # Errors
    ///
    /// When the summary cannot be serialised.
    pub fn print(&self, json: bool) -> anyhow::Result<()> {
        if json {
            println!("{}", serde_json::to_string(self)?);
            return Ok(());
        }
        println!(
            "{}: {} backend, {:.2} s, rx {} ({:.3} Mpps), tx {} ({:.3} Mpps), drops {}",
            self.app,
            self.backend,
            self.duration_s,
            self.rx_packets,
            self.rx_mpps,
            self.tx_packets,
            self.tx_mpps,
            self.drops_total
        );
        for (why, n) in &self.drops {
            println!("  dropped {n:>12}  {why}");
        }
        for p in &self.ports {
            println!(
                "  port {}: {} ({} queues{})",
                p.device,
                p.backend,
                p.queues,
                p.mac
                    .as_deref()
                    .map(|m| format!(", {m}"))
                    .unwrap_or_default()
            );
            for s in &p.skipped {
                println!("    skipped {}: {}", s.backend, s.reason);
            }
        }
        for l in &self.lcores {
            println!(
                "  lcore{} {:<5} cpu {:<4} rx {:>12} tx {:>12} drops {:>8} busy {:>5.1}%",
                l.lcore,
                l.role.to_string(),
                l.cpu.map_or_else(|| "-".to_owned(), |c| c.to_string()),
                l.rx_packets,
                l.tx_packets,
                l.drops,
                l.busy * 100.0
            );
        }
        println!(
            "  {} lcores on {} cpus{}{}",
            self.lcores.len(),
            self.cpus,
            if self.affinity {
                ", pinned"
            } else {
                ", not pinned"
            },
            if self.shared_cores {
                ", sharing cores"
            } else {
                ""
            }
        );
        for n in &self.plan_notes {
            println!("  note: {n}");
        }
        Ok(())
    }
}

/// Drops by reason, for JSON.
pub fn drops_map(s: &QueueStats) -> BTreeMap<&'static str, u64> {
    s.drops_by_reason().map(|(r, n)| (r.name(), n)).collect()
}

/// Mbufs of DPDK's pools not back in them, once every port is closed:
/// `None` when DPDK made no pool (the other backends' pools are owned by
/// their ports and checked by the tests that own them).
pub fn dpdk_mbufs_outstanding() -> Option<u64> {
    let pools = dataplane::net::dpdk::pools();
    if pools.is_empty() {
        return None;
    }
    Some(
        pools
            .iter()
            .filter(|p| p.state != dataplane::net::dpdk::PoolState::Freed)
            .map(|p| u64::from(p.size.saturating_sub(p.available)))
            .sum(),
    )
}

/// Adds `mbufs_outstanding` to the summary when DPDK's pools can tell.
pub fn note_mbufs(s: &mut Summary) {
    if let Some(n) = dpdk_mbufs_outstanding() {
        s.extra.insert("mbufs_outstanding".into(), n.into());
    }
}

/// Prints the summary, then fails if it says mbufs are missing (a
/// program that loses buffers must not exit 0).
///
/// # Errors
///
/// When printing fails or mbufs are outstanding.
pub fn finish(s: &Summary, json: bool) -> anyhow::Result<()> {
    s.print(json)?;
    if let Some(n) = s.extra.get("mbufs_outstanding").and_then(|v| v.as_u64()) {
        anyhow::ensure!(n == 0, "{n} mbufs did not return to their pools");
    }
    Ok(())
}

/// A network program's `main` after parsing: logging, SIGINT and SIGTERM
/// as the quit flag, the run, and the summary (`json`: as one JSON line).
///
/// # Errors
///
/// The run's error, or a summary that shows mbufs not back in their pools.
pub fn program_main(
    json: bool,
    log: crate::LogArgs,
    run: impl FnOnce(Arc<AtomicBool>) -> anyhow::Result<Summary>,
) -> anyhow::Result<()> {
    crate::init_tracing(log.log_format);
    let quit = Arc::new(AtomicBool::new(false));
    quit_on_signals(quit.clone())?;
    let s = run(quit)?;
    finish(&s, json)
}

/// Runs a forwarding program's lcores, a line of rates every second,
/// until its duration or `quit`.
///
/// # Errors
///
/// As [`run`].
pub fn forward(
    name: &'static str,
    group: LcoreGroup,
    counters: Vec<(LcoreId, Arc<LcoreCounters>)>,
    duration: Option<Duration>,
    quit: Arc<AtomicBool>,
    observe: Option<Observe>,
) -> anyhow::Result<Outcome> {
    run(
        group,
        Watch {
            name,
            duration,
            counters,
            quit,
            tx_off: None,
            lines: true,
            summed: None,
            observe,
        },
    )
}
