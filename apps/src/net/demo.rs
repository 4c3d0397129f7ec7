//! The demo pipeline: a generator lcore, l3fwd lcores and a sink lcore,
//! joined by in-memory port pairs, all in one process with nothing
//! installed.
//!
//! ```text
//!            memory pair "in"        memory pairs "out1", "out2"
//! generator ──── queue q ────▶ l3fwd lcore q ──── queue q ────▶ sink
//!   (RSS-like: flow i → queue i mod k)     (route by LPM)
//! ```
//!
//! The generator sends UDP/IPv4 flows to addresses the route table sends
//! to one output or the other, and a few frames the forwarder must drop:
//! one in 499 to an address with no route, one in 997 with a bad IPv4
//! checksum, one in 991 cut short, one in 1000 with a TTL of 1. At the end
//! every packet generated is accounted for: delivered to the sink, or
//! dropped with a reason; and every mbuf is back in its pool.

use super::counters::LcoreCounters;
use super::frame::{Probe, UdpFlow, emit_udp, write_probe};
use super::l2fwd::PUBLISH_EVERY;
use super::l3fwd::{L3fwd, L3fwdLcore, parse_routes};
use super::pktgen::{Histogram, Latency, probe_of};
use super::ports::lcore_totals;
use super::run::{self, DataPlan, Outcome, Summary, Watch};
use anyhow::Context;
use dataplane::lcore::{LcoreId, PollContext, Poller};
use dataplane::net::memory::MemoryPort;
use dataplane::net::{DropReason, Layer, MbufBatch, Port, PortConfig, QueueStats};
use dataplane::profile::{Plan, Profile};
use dataplane::time::{TscTimer, rdtsc, tsc_hz};
use dataplane::topology::Topology;
use hugepages::mbuf::{MbufPool, MbufPoolConfig};
use serde::Serialize;
use std::net::Ipv4Addr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The demo's route table: two outputs, a nested prefix, and no default
/// route (so that 172.16.0.0/12 has none).
pub const ROUTES: &str = "\
# prefix         port
10.0.0.0/9       1
10.128.0.0/9     2
10.64.0.0/16     2     # more specific than 10.0.0.0/9
192.168.0.0/16   1
";

/// How the demo runs.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// How long the data path runs.
    pub duration: Duration,
    /// l3fwd lcores (and queues per port).
    pub forwarders: usize,
    /// Packets per burst.
    pub burst: usize,
    /// Flows generated.
    pub flows: u16,
    /// Frame size, FCS included.
    pub size: usize,
    /// Packets per second in all; flat out when `None`.
    pub rate: Option<u64>,
    /// Print a line of rates every second.
    pub lines: bool,
    /// Serve `/metrics` here while running: the lcores' counters, and
    /// each stage's packets as `dataplane_port_*` with the stage
    /// (`generator`, `l3fwd`, `sink`) as the `port` label.
    pub metrics: Option<std::net::SocketAddr>,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            duration: Duration::from_secs(5),
            forwarders: 2,
            burst: 32,
            flows: 1024,
            size: 64,
            rate: None,
            lines: true,
            metrics: None,
        }
    }
}

/// The demo's own figures, besides the forwarders' in [`Summary`].
#[derive(Debug, Clone, Serialize)]
pub struct DemoFigures {
    /// Packets the generator sent into the pipeline.
    pub generated: u64,
    /// Packets that reached the sink.
    pub delivered: u64,
    /// Generated = delivered + every counted drop, nothing in flight.
    pub accounted: bool,
    /// Mbufs not back in their pools after the stop (0 when all are).
    pub mbufs_outstanding: usize,
    /// Generator to sink, through a forwarder.
    pub latency: Latency,
}

/// The frames the generator sends: one template per flow, and the four
/// kinds of bad frame.
#[derive(Debug)]
struct Frames {
    good: Vec<Vec<u8>>,
    no_route: Vec<u8>,
    bad_checksum: Vec<u8>,
    truncated: Vec<u8>,
    ttl_one: Vec<u8>,
}

fn frames(flows: u16, len: usize) -> anyhow::Result<Frames> {
    let flow = |i: u16, dst: Ipv4Addr, ttl: u8| UdpFlow {
        src_mac: [2, 0, 0, 0, 0xd0, 0],
        dst_mac: [2, 0, 0, 0, 0, 0],
        src_ip: Ipv4Addr::new(172, 31, (i >> 8) as u8, i as u8),
        dst_ip: dst,
        src_port: 1024 + i,
        dst_port: 9,
        ttl,
    };
    let build = |f: UdpFlow| -> anyhow::Result<Vec<u8>> {
        let mut b = vec![0u8; len];
        emit_udp(&mut b, len, &f, None).context("building a demo frame")?;
        Ok(b)
    };
    let good = (0..flows.max(1))
        .map(|i| {
            // Spread over both halves of 10/8 and 192.168/16, with some in
            // the nested 10.64/16.
            let dst = match i % 4 {
                0 => Ipv4Addr::new(10, (i % 128) as u8, (i >> 4) as u8, 1),
                1 => Ipv4Addr::new(10, 128 + (i % 128) as u8, 0, 1),
                2 => Ipv4Addr::new(10, 64, (i >> 2) as u8, 1),
                _ => Ipv4Addr::new(192, 168, (i >> 2) as u8, 1),
            };
            build(flow(i, dst, 64))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let no_route = build(flow(0, Ipv4Addr::new(172, 16, 0, 1), 64))?;
    let mut bad_checksum = good[0].clone();
    bad_checksum[24] ^= 0xff; // the IPv4 header checksum's first byte
    let truncated = good[0][..30].to_vec();
    let ttl_one = build(flow(0, Ipv4Addr::new(10, 1, 2, 3), 1))?;
    Ok(Frames {
        good,
        no_route,
        bad_checksum,
        truncated,
        ttl_one,
    })
}

/// The generator lcore: flows over the forwarders' queues, flat out or at
/// a rate; a full ring holds it back (nothing is lost there).
struct Generator {
    ports: Vec<Box<dyn Port>>,
    frames: Frames,
    pending: Vec<MbufBatch>,
    burst: usize,
    bucket: Option<super::pktgen::TokenBucket>,
    seq: u32,
    app: QueueStats,
    counters: Arc<LcoreCounters>,
    publish: TscTimer,
}

impl Generator {
    /// The frame number `seq` on queue `q`: the bad kinds by `seq`, else
    /// a flow of this queue's share (flow f on queue f mod k).
    fn frame(&self, seq: u32, q: usize) -> &[u8] {
        if seq % 499 == 498 {
            &self.frames.no_route
        } else if seq % 997 == 996 {
            &self.frames.bad_checksum
        } else if seq % 991 == 990 {
            &self.frames.truncated
        } else if seq % 1000 == 999 {
            &self.frames.ttl_one
        } else {
            let (n, k) = (self.frames.good.len(), self.ports.len());
            let per_queue = (n / k).max(1);
            &self.frames.good[(q + k * (seq as usize % per_queue)) % n]
        }
    }

    fn totals(&self) -> QueueStats {
        lcore_totals(self.app, &self.ports, &[])
    }
}

impl Poller for Generator {
    fn poll(&mut self, ctx: &PollContext) -> usize {
        let mut work = 0;
        if !ctx.stopping() {
            let mut quota = match &mut self.bucket {
                Some(b) => b.take(ctx.now(), self.burst * self.ports.len()),
                None => self.burst * self.ports.len(),
            };
            for q in 0..self.ports.len() {
                if !self.pending[q].is_empty() {
                    work += self.ports[q].tx_burst(&mut self.pending[q]);
                    continue;
                }
                let n = quota.min(self.burst);
                quota -= n;
                if n == 0 {
                    continue;
                }
                let mut batch = std::mem::take(&mut self.pending[q]);
                let got = self.ports[q].alloc_burst(n, &mut batch);
                if got < n {
                    self.app.drop_n(DropReason::NoMbuf, (n - got) as u64);
                }
                let now = rdtsc();
                for m in batch.iter_mut() {
                    let seq = self.seq;
                    self.seq = self.seq.wrapping_add(1);
                    let tpl = self.frame(seq, q);
                    if let Ok(data) = m.append(tpl.len()) {
                        data.copy_from_slice(tpl);
                        if let Some(p) = data.get_mut(super::frame::HEADERS_LEN..) {
                            write_probe(
                                p,
                                &Probe {
                                    tsc: now,
                                    seq,
                                    flow: 0,
                                },
                            );
                        }
                    }
                }
                batch.retain_or(|m| !m.is_empty(), drop);
                work += self.ports[q].tx_burst(&mut batch);
                self.pending[q] = batch;
            }
        }
        if self.publish.expired(ctx.now()) || ctx.stopping() {
            self.counters.publish(&self.totals());
        }
        work
    }

    fn stop(&mut self, _ctx: &PollContext) {
        // Built but never taken by a ring: never sent, not lost.
        for b in &mut self.pending {
            b.clear();
        }
        self.counters.publish(&self.totals());
    }
}

/// The sink lcore: takes everything the forwarders send, measures the
/// latency from each probe, frees the mbufs.
struct Sink {
    ports: Vec<Box<dyn Port>>,
    latency: Histogram,
    ns_per_tick: f64,
    counters: Arc<LcoreCounters>,
    report: Arc<Mutex<Histogram>>,
    publish: TscTimer,
    batch: MbufBatch,
}

impl Sink {
    fn totals(&self) -> QueueStats {
        let mut s = QueueStats::default();
        for p in &self.ports {
            s.add(&p.stats());
        }
        s
    }
}

impl Poller for Sink {
    fn poll(&mut self, ctx: &PollContext) -> usize {
        let mut work = 0;
        // Fed from inside the group: read while it drains too.
        for p in &mut self.ports {
            let n = p.rx_burst(&mut self.batch);
            if n == 0 {
                continue;
            }
            work += n;
            let now = rdtsc();
            for m in self.batch.drain() {
                if let Some(probe) = probe_of(m.data(), Layer::L2) {
                    let ns = now.wrapping_sub(probe.tsc) as f64 * self.ns_per_tick;
                    self.latency.record(ns as u64);
                }
            }
        }
        if self.publish.expired(ctx.now()) || ctx.stopping() {
            self.counters.publish(&self.totals());
        }
        work
    }

    fn stop(&mut self, _ctx: &PollContext) {
        self.counters.publish(&self.totals());
        if let Ok(mut h) = self.report.lock() {
            h.merge(&self.latency);
        }
    }
}

/// The plan: main, generator, forwarders and sink, pinned when there are
/// cores for all, else unpinned and sharing cores (the plan notes say so).
///
/// # Errors
///
/// When the machine cannot be detected or planned.
pub fn plan(forwarders: usize) -> anyhow::Result<Plan> {
    let topo = Topology::detect().context("detecting the machine")?;
    let lcores = forwarders + 2;
    let fits = topo.usable_cores() > lcores;
    let plan = Plan::builder(&topo, Profile::Production)
        .from_env()
        .io_lcores_per_node(0)
        .accel_lcores(0)
        .app_lcores(lcores)
        .affinity(fits)
        .build()
        .context("planning the demo's lcores")?;
    Ok(plan)
}

/// Runs the demo; returns the summary (the forwarders' figures, with the
/// demo's own under `extra`) and the demo's figures.
///
/// # Errors
///
/// When the plan, the ports or the lcores cannot be set up.
pub fn run_demo(cfg: &DemoConfig, quit: Arc<AtomicBool>) -> anyhow::Result<(Summary, DemoFigures)> {
    let k = cfg.forwarders.max(1);
    let plan = plan(k)?;
    let dp = DataPlan::of(plan.clone());
    let ids: Vec<LcoreId> = dp.data.clone();
    anyhow::ensure!(
        ids.len() == k + 2,
        "the plan has {} app lcores, not {}",
        ids.len(),
        k + 2
    );
    let mut port_cfg = PortConfig::new("memory:demo");
    port_cfg.queues = k as u16;
    port_cfg.burst = cfg.burst;
    port_cfg.rx_desc = 1024;
    // One pool for the whole pipeline, as one per NUMA node would be: the
    // generator allocates from it, the sink frees into it.
    let pool = MbufPool::new(MbufPoolConfig {
        name: "demo".into(),
        count: 16_384,
        cache_size: plan.mempool_cache.min(256),
        ..MbufPoolConfig::default()
    })?;
    let pair = || MemoryPort::pair_with_pools(&port_cfg, pool.clone(), pool.clone());
    let (gen_end, mut in_end) = pair()?;
    let (mut out1_fwd, out1_sink) = pair()?;
    let (mut out2_fwd, out2_sink) = pair()?;
    let pools = vec![pool.clone()];

    let routes = parse_routes(ROUTES).map_err(|e| anyhow::anyhow!("demo routes: {e}"))?;
    let table = Arc::new(L3fwd::new(&routes, 3)?);
    let len = super::frame::wire_len(cfg.size);
    let mut group = dp.group();
    let counters: Vec<(LcoreId, Arc<LcoreCounters>)> = ids
        .iter()
        .map(|&id| (id, Arc::new(LcoreCounters::default())))
        .collect();
    let now = rdtsc();
    let gen_ports: Vec<Box<dyn Port>> = gen_end
        .into_iter()
        .map(|p| Box::new(p) as Box<dyn Port>)
        .collect();
    group.poller(
        ids[0],
        Generator {
            pending: (0..k).map(|_| MbufBatch::new()).collect(),
            ports: gen_ports,
            frames: frames(cfg.flows, len)?,
            burst: cfg.burst,
            bucket: cfg
                .rate
                .map(|r| super::pktgen::TokenBucket::new(r, cfg.burst * k, now)),
            seq: 0,
            app: QueueStats::default(),
            counters: counters[0].1.clone(),
            publish: TscTimer::new(PUBLISH_EVERY, now),
        },
    )?;
    for q in (0..k).rev() {
        let ports: Vec<Box<dyn Port>> = vec![
            Box::new(in_end.remove(q)),
            Box::new(out1_fwd.remove(q)),
            Box::new(out2_fwd.remove(q)),
        ];
        let lcore = L3fwdLcore::new(
            table.clone(),
            ports,
            cfg.burst,
            Duration::from_micros(dataplane::net::TX_DRAIN_US),
            counters[1 + q].1.clone(),
        )
        .rx_internal(true)
        .backpressure(true)
        .skip_rx(1)
        .skip_rx(2);
        group.poller(ids[1 + q], lcore)?;
    }
    let latency = Arc::new(Mutex::new(Histogram::default()));
    let sink_ports: Vec<Box<dyn Port>> = out1_sink
        .into_iter()
        .chain(out2_sink)
        .map(|p| Box::new(p) as Box<dyn Port>)
        .collect();
    group.poller(
        ids[k + 1],
        Sink {
            ports: sink_ports,
            latency: Histogram::default(),
            ns_per_tick: 1e9 / tsc_hz() as f64,
            counters: counters[k + 1].1.clone(),
            report: latency.clone(),
            publish: TscTimer::new(PUBLISH_EVERY, now),
            batch: MbufBatch::new(),
        },
    )?;
    let group = group.allow_shared_cpus(true);
    if cfg.lines {
        let list = |v: &[LcoreId]| {
            v.iter()
                .map(|l| l.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "demo: generator on {}, l3fwd on {}, sink on {}: {} lcores (with main) on {} cpus, {}",
            ids[0],
            list(&ids[1..=k]),
            ids[k + 1],
            plan.lcores.len(),
            plan.cores_used(),
            if plan.affinity {
                "each pinned to its own core"
            } else {
                "not pinned: fewer cores than lcores, so they share cores (rates are lower than with a core each)"
            }
        );
    }
    let outcome = run::run(
        group,
        Watch {
            name: "demo",
            duration: Some(cfg.duration),
            counters: counters.clone(),
            quit,
            tx_off: None,
            lines: cfg.lines,
            summed: Some(1..k + 1),
            observe: run::observe_with(
                None,
                cfg.metrics,
                vec![
                    ("generator".into(), vec![counters[0].1.clone()]),
                    (
                        "l3fwd".into(),
                        counters[1..=k].iter().map(|c| c.1.clone()).collect(),
                    ),
                    ("sink".into(), vec![counters[k + 1].1.clone()]),
                ],
            )?,
        },
    )?;
    Ok(summarise(&plan, &outcome, k, &pools, &latency))
}

fn summarise(
    plan: &Plan,
    out: &Outcome,
    k: usize,
    pools: &[MbufPool],
    latency: &Mutex<Histogram>,
) -> (Summary, DemoFigures) {
    let stat = |i: usize| out.per_lcore.get(i).map(|(_, s)| *s).unwrap_or_default();
    let generated = stat(0).tx_packets;
    let mut fwd = QueueStats::default();
    for i in 1..=k {
        fwd.add(&stat(i));
    }
    let delivered = stat(k + 1).rx_packets;
    // The forwarders' ports count both directions: what they received is
    // what came from the generator, what they sent went to the sink.
    let accounted = fwd.rx_packets == generated
        && fwd.tx_packets == delivered
        && generated == delivered + fwd.total_drops();
    let outstanding = pools.iter().map(MbufPool::in_use).sum();
    let latency = latency.lock().map(|h| h.summary()).unwrap_or_default();
    let figures = DemoFigures {
        generated,
        delivered,
        accounted,
        mbufs_outstanding: outstanding,
        latency,
    };
    let mut s = Summary::new("demo", Vec::new(), plan, out);
    s.backend = "memory".into();
    s.rx_packets = fwd.rx_packets;
    s.tx_packets = fwd.tx_packets;
    s.rx_bytes = fwd.rx_bytes;
    s.tx_bytes = fwd.tx_bytes;
    let secs = out.elapsed.as_secs_f64().max(1e-9);
    s.rx_mpps = fwd.rx_packets as f64 / secs / 1e6;
    s.tx_mpps = fwd.tx_packets as f64 / secs / 1e6;
    s.drops = run::drops_map(&fwd);
    s.drops_total = fwd.total_drops();
    s.errors = fwd.errors;
    if let Ok(serde_json::Value::Object(m)) = serde_json::to_value(&figures) {
        s.extra = m;
    }
    (s, figures)
}
