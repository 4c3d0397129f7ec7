//! pktgen's data path: UDP/IPv4 flows sent at a set rate (a token bucket
//! on the TSC) or flat out, and what comes back counted: packets, loss,
//! and latency from the TSC each frame carries in its probe.
//!
//! Each data lcore owns one queue of every port, sends its share of the
//! rate on each, and receives on each. Frames are built once per flow as
//! templates; sending one is a copy of its template and the probe.
//! Flows differ in source address and port, so that RSS (or AF_PACKET's
//! fanout, or SO_REUSEPORT) spreads them over a receiver's queues.

use super::cli::{CommonArgs, parse_mac};
use super::counters::LcoreCounters;
use super::frame::MIN_FRAME_SIZE;
use super::frame::{HEADERS_LEN, PROBE_LEN, Probe, UdpFlow, emit_udp, read_probe};
use super::l2fwd::PUBLISH_EVERY;
use super::ports::{deal_queues, lcore_totals, publish_ports};
use super::run::{self, Summary, Watch, data_plan};
use anyhow::{Context, bail};
use dataplane::lcore::{PollContext, Poller};
use dataplane::net::{DropReason, Layer, MbufBatch, Port, QueueStats};
use dataplane::time::{TscTimer, rdtsc, tsc_hz};
use dataplane::wire::{ChecksumMode, L4Kind, parse_frame_with};
use serde::Serialize;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Latencies in a log-linear histogram: 16 buckets per power of two of
/// nanoseconds (about 6% resolution), from 1 ns to about 2^40 ns.
#[derive(Debug, Clone)]
pub struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    max: u64,
}

const SUB: u32 = 16;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: vec![0; (41 * SUB) as usize],
            count: 0,
            max: 0,
        }
    }
}

impl Histogram {
    fn index(ns: u64) -> usize {
        if ns < u64::from(SUB) {
            return ns as usize;
        }
        let exp = 63 - ns.leading_zeros(); // >= 4
        let sub = (ns >> (exp - 4)) & u64::from(SUB - 1);
        ((exp - 3) * SUB) as usize + sub as usize
    }

    fn lower_bound(i: usize) -> u64 {
        let i = i as u64;
        let sub = u64::from(SUB);
        if i < sub {
            return i;
        }
        let exp = i / sub + 3;
        (sub + i % sub) << (exp - 4)
    }

    /// Records one latency.
    #[inline]
    pub fn record(&mut self, ns: u64) {
        let i = Self::index(ns).min(self.buckets.len() - 1);
        self.buckets[i] += 1;
        self.count += 1;
        self.max = self.max.max(ns);
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.max = self.max.max(other.max);
    }

    /// Latencies recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The `q` quantile (0 to 1), as its bucket's lower bound, in ns.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((self.count as f64 * q).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Self::lower_bound(i).min(self.max);
            }
        }
        self.max
    }

    /// The summary in microseconds.
    pub fn summary(&self) -> Latency {
        Latency {
            samples: self.count,
            p50_us: self.quantile(0.50) as f64 / 1e3,
            p99_us: self.quantile(0.99) as f64 / 1e3,
            max_us: self.max as f64 / 1e3,
        }
    }
}

/// Latency percentiles.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Latency {
    /// Packets measured.
    pub samples: u64,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Largest.
    pub max_us: f64,
}

/// What the flows look like.
#[derive(Debug, Clone)]
pub struct FlowSpec {
    /// Flows (distinct source address and port pairs).
    pub flows: u16,
    /// Frame size on the wire, FCS included (64 to 1518).
    pub size: usize,
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// First source address; flow i adds i.
    pub src_ip: Ipv4Addr,
    /// Destination address.
    pub dst_ip: Ipv4Addr,
    /// First source port; flow i adds i.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Time to live.
    pub ttl: u8,
}

impl FlowSpec {
    /// Flow `i` of this spec, from `src_mac`.
    pub fn flow(&self, i: u16, src_mac: [u8; 6]) -> UdpFlow {
        UdpFlow {
            src_mac,
            dst_mac: self.dst_mac,
            src_ip: Ipv4Addr::from(u32::from(self.src_ip).wrapping_add(u32::from(i))),
            dst_ip: self.dst_ip,
            src_port: self.src_port.wrapping_add(i),
            dst_port: self.dst_port,
            ttl: self.ttl,
        }
    }

    /// The frame length in the buffer (no FCS).
    pub fn frame_len(&self) -> usize {
        super::frame::wire_len(self.size)
    }
}

/// Templates of one port's flows: whole frames for L2 ports, payloads for
/// L4 ones (the socket adds the headers).
#[derive(Debug, Clone)]
struct Templates {
    frames: Vec<Vec<u8>>,
    probe_at: usize,
}

impl Templates {
    fn new(spec: &FlowSpec, layer: Layer, src_mac: [u8; 6]) -> Templates {
        let len = spec.frame_len();
        let frames = (0..spec.flows.max(1))
            .map(|i| {
                let mut buf = vec![0u8; len];
                match layer {
                    Layer::L4 => buf.truncate(len.saturating_sub(HEADERS_LEN).max(PROBE_LEN)),
                    _ => {
                        // Sizes are checked by the program; a failure leaves
                        // zeroes, which the receiver counts as foreign.
                        let _ = emit_udp(&mut buf, len, &spec.flow(i, src_mac), None);
                    }
                }
                buf
            })
            .collect();
        Templates {
            frames,
            probe_at: if layer == Layer::L4 { 0 } else { HEADERS_LEN },
        }
    }
}

/// Where a received packet's probe is, if it has one.
pub fn probe_of(data: &[u8], layer: Layer) -> Option<Probe> {
    match layer {
        Layer::L4 => read_probe(data),
        _ => {
            let info = parse_frame_with(data, ChecksumMode::Offload).ok()?;
            if info.l4 != L4Kind::Udp {
                return None;
            }
            read_probe(data.get(info.payload())?)
        }
    }
}

/// The token bucket of one lcore: `rate` packets per second, at most a
/// burst ahead.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    /// Tokens, in packets times TSC ticks per second (integer arithmetic).
    tokens: u128,
    cap: u128,
    rate: u128,
    last: u64,
}

impl TokenBucket {
    /// `rate` packets per second, holding at most `burst`, starting empty
    /// at `now`.
    pub fn new(rate: u64, burst: usize, now: u64) -> TokenBucket {
        TokenBucket {
            tokens: 0,
            cap: burst as u128 * u128::from(tsc_hz()),
            rate: u128::from(rate),
            last: now,
        }
    }

    /// Packets that may go at `now` (at most `want`); takes them.
    #[inline]
    pub fn take(&mut self, now: u64, want: usize) -> usize {
        let dt = now.wrapping_sub(self.last);
        self.last = now;
        self.tokens = (self.tokens + u128::from(dt) * self.rate).min(self.cap);
        let hz = u128::from(tsc_hz());
        let n = ((self.tokens / hz) as usize).min(want);
        self.tokens -= n as u128 * hz;
        n
    }
}

/// What a pktgen lcore hands over when it stops.
#[derive(Debug, Default, Clone)]
pub struct RxReport {
    /// Probes received.
    pub probes: u64,
    /// Packets received without a probe of ours.
    pub foreign: u64,
    /// Latencies of the probes.
    pub latency: Histogram,
}

/// One data lcore of pktgen.
pub struct PktgenLcore {
    ports: Vec<Box<dyn Port>>,
    templates: Vec<Templates>,
    layers: Vec<Layer>,
    bucket: Option<TokenBucket>,
    burst: usize,
    seq: u32,
    flow: u16,
    flows: u16,
    tx_off: Arc<AtomicBool>,
    /// Per port, packets built but not yet taken by the port.
    pending: Vec<MbufBatch>,
    app: QueueStats,
    rx: RxReport,
    hz_per_ns: f64,
    counters: Arc<LcoreCounters>,
    /// Per port: this lcore's queue's counters, for telemetry and metrics.
    port_counters: Vec<Arc<LcoreCounters>>,
    report: Arc<Mutex<RxReport>>,
    publish: TscTimer,
    batch: MbufBatch,
}

impl std::fmt::Debug for PktgenLcore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PktgenLcore")
            .field("ports", &self.ports.len())
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl PktgenLcore {
    /// An lcore sending `spec`'s flows on every port of `ports` (at `rate`
    /// packets per second in all, flat out when `None`) until `tx_off`,
    /// and receiving on them; its receive report goes to `report` at stop.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ports: Vec<Box<dyn Port>>,
        spec: &FlowSpec,
        rate: Option<u64>,
        burst: usize,
        tx_off: Arc<AtomicBool>,
        counters: Arc<LcoreCounters>,
        report: Arc<Mutex<RxReport>>,
    ) -> PktgenLcore {
        let now = rdtsc();
        let n_ports = ports.len();
        let templates = ports
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let caps = p.capabilities();
                let mac = caps.mac.unwrap_or(super::cli::default_mac(i));
                Templates::new(spec, caps.layer, mac)
            })
            .collect();
        PktgenLcore {
            layers: ports.iter().map(|p| p.capabilities().layer).collect(),
            templates,
            ports,
            bucket: rate.map(|r| TokenBucket::new(r, burst, now)),
            burst,
            seq: 0,
            flow: 0,
            flows: spec.flows.max(1),
            tx_off,
            pending: (0..n_ports).map(|_| MbufBatch::new()).collect(),
            app: QueueStats::default(),
            rx: RxReport::default(),
            hz_per_ns: tsc_hz() as f64 / 1e9,
            counters,
            port_counters: Vec::new(),
            report,
            publish: TscTimer::new(PUBLISH_EVERY, now),
            batch: MbufBatch::new(),
        }
    }

    /// Sends what port `p` did not take last time, then up to `n` new
    /// packets; what the port does not take waits for the next pass (a
    /// full queue delays the generator, it does not lose packets).
    fn send(&mut self, p: usize, n: usize) -> usize {
        let pending = &mut self.pending[p];
        if !pending.is_empty() {
            let sent = self.ports[p].tx_burst(pending);
            if !pending.is_empty() {
                return sent;
            }
        }
        let got = self.ports[p].alloc_burst(n, pending);
        if got < n {
            self.app.drop_n(DropReason::NoMbuf, (n - got) as u64);
        }
        let now = rdtsc();
        let t = &self.templates[p];
        for m in pending.iter_mut() {
            let tpl = &t.frames[usize::from(self.flow)];
            let Ok(data) = m.append(tpl.len()) else {
                continue;
            };
            data.copy_from_slice(tpl);
            let probe = Probe {
                tsc: now,
                seq: self.seq,
                flow: self.flow,
            };
            if let Some(payload) = data.get_mut(t.probe_at..) {
                super::frame::write_probe(payload, &probe);
            }
            self.seq = self.seq.wrapping_add(1);
            self.flow = (self.flow + 1) % self.flows;
        }
        // A template longer than an mbuf (the program checks sizes) would
        // leave it empty: never send those.
        pending.retain_or(|m| !m.is_empty(), drop);
        self.ports[p].tx_burst(pending)
    }

    fn receive(&mut self, p: usize) -> usize {
        let n = self.ports[p].rx_burst(&mut self.batch);
        if n == 0 {
            return 0;
        }
        let now = rdtsc();
        for m in self.batch.drain() {
            match probe_of(m.data(), self.layers[p]) {
                Some(probe) => {
                    self.rx.probes += 1;
                    let ns = now.wrapping_sub(probe.tsc) as f64 / self.hz_per_ns;
                    self.rx.latency.record(ns as u64);
                }
                None => self.rx.foreign += 1,
            }
        }
        n
    }

    fn totals(&self) -> QueueStats {
        lcore_totals(self.app, &self.ports, &[])
    }

    /// Publishes each port queue's counters into `counters` (one per port)
    /// too, for telemetry and metrics.
    pub fn port_counters(mut self, counters: Vec<Arc<LcoreCounters>>) -> Self {
        self.port_counters = counters;
        self
    }

    fn publish(&self) {
        self.counters.publish(&self.totals());
        publish_ports(&self.ports, &[], &self.port_counters);
    }
}

impl Poller for PktgenLcore {
    fn poll(&mut self, ctx: &PollContext) -> usize {
        let mut work = 0;
        // Relaxed: a flag; the packets are not published through it.
        if !ctx.stopping() && !self.tx_off.load(Ordering::Relaxed) {
            let quota = match &mut self.bucket {
                Some(b) => b.take(ctx.now(), self.burst * self.ports.len()),
                None => self.burst * self.ports.len(),
            };
            let per_port = quota.div_ceil(self.ports.len().max(1));
            let mut left = quota;
            for p in 0..self.ports.len() {
                let n = per_port.min(left);
                if n == 0 {
                    break;
                }
                left -= n;
                work += self.send(p, n);
            }
        }
        if !ctx.stopping() {
            for p in 0..self.ports.len() {
                work += self.receive(p);
            }
        }
        if self.publish.expired(ctx.now()) || ctx.stopping() {
            self.publish();
        }
        work
    }

    fn stop(&mut self, _ctx: &PollContext) {
        // Built, never taken: not sent, so not lost either.
        for b in &mut self.pending {
            b.clear();
        }
        self.publish();
        if let Ok(mut r) = self.report.lock() {
            r.probes += self.rx.probes;
            r.foreign += self.rx.foreign;
            r.latency.merge(&self.rx.latency);
        }
    }
}

/// Generate UDP/IPv4 flows and measure what comes back.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "pktgen", version)]
pub struct PktgenArgs {
    /// The options every network program takes.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Packets per second in all (0: flat out).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Flows: source addresses and ports vary over this many.
    #[arg(long, default_value_t = 1)]
    pub flows: u16,
    /// Frame size with the FCS, 64 to 1518.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Destination MAC.
    #[arg(long = "dst-mac", default_value = "02:00:00:00:00:00")]
    pub dst_mac: String,
    /// First source address (flow i adds i).
    #[arg(long = "src-ip", default_value = "10.0.0.1")]
    pub src_ip: Ipv4Addr,
    /// Destination address.
    #[arg(long = "dst-ip", default_value = "10.0.1.1")]
    pub dst_ip: Ipv4Addr,
    /// First source port (flow i adds i).
    #[arg(long = "src-port", default_value_t = 1024)]
    pub src_port: u16,
    /// Destination port.
    #[arg(long = "dst-port", default_value_t = 9)]
    pub dst_port: u16,
    /// Time to live.
    #[arg(long, default_value_t = 64)]
    pub ttl: u8,
    /// Milliseconds to keep receiving after sending stops.
    #[arg(long = "drain-ms", default_value_t = 200)]
    pub drain_ms: u64,
}

/// Runs pktgen until the duration is up or `quit` is set, then keeps
/// receiving for `--drain-ms`; returns the summary (not printed) with
/// `sent`, `received`, `lost` and `latency`.
///
/// # Errors
///
/// Bad options, a port that cannot be opened, lcores that cannot start.
pub fn run(args: &PktgenArgs, quit: Arc<AtomicBool>) -> anyhow::Result<Summary> {
    let c = &args.common;
    c.validate()?;
    if !(MIN_FRAME_SIZE..=1518).contains(&args.size) {
        bail!(
            "--size {} must be {MIN_FRAME_SIZE} to 1518 (FCS included)",
            args.size
        );
    }
    let spec = FlowSpec {
        flows: args.flows.max(1),
        size: args.size,
        dst_mac: parse_mac(&args.dst_mac)?,
        src_ip: args.src_ip,
        dst_ip: args.dst_ip,
        src_port: args.src_port,
        dst_port: args.dst_port,
        ttl: args.ttl,
    };

    let dp = data_plan(c.lcores)?;
    let queues = c.queues.unwrap_or(dp.data.len() as u16).max(1);
    let ports = c.open_ports(&dp.plan, queues)?;
    for p in &ports {
        let l4 = p.opened.value.first().map(|q| q.capabilities().layer) == Some(Layer::L4);
        if l4 && spec.frame_len() < HEADERS_LEN + PROBE_LEN {
            bail!(
                "--size {} leaves no room for the probe in a datagram",
                args.size
            );
        }
    }
    let (port_summaries, per_lcore) = deal_queues(ports);
    let lcores = per_lcore.len().min(dp.data.len()).max(1);
    let rate = (args.rate > 0).then(|| args.rate.div_ceil(lcores as u64));
    let tx_off = Arc::new(AtomicBool::new(false));
    let report = Arc::new(Mutex::new(RxReport::default()));
    let mut group = dp.group();
    let mut counters = Vec::new();
    let mut ports = run::port_counters(&port_summaries);
    for (queues, &lcore) in per_lcore.into_iter().zip(&dp.data) {
        let cnt = Arc::new(LcoreCounters::default());
        counters.push((lcore, cnt.clone()));
        let poller = PktgenLcore::new(
            queues,
            &spec,
            rate,
            c.burst,
            tx_off.clone(),
            cnt,
            report.clone(),
        )
        .port_counters(run::add_lcore(&mut ports));
        group.poller(lcore, poller).context("adding a poller")?;
    }
    let out = run::run(
        group,
        Watch {
            name: "pktgen",
            duration: c.duration()?,
            counters,
            quit,
            tx_off: Some((tx_off, Duration::from_millis(args.drain_ms))),
            lines: true,
            summed: None,
            observe: run::observe(c, ports)?,
        },
    )?;
    let mut s = Summary::new("pktgen", port_summaries, &dp.plan, &out);
    let rx = report
        .lock()
        .map(|r| r.clone())
        .map_err(|_| anyhow::anyhow!("a pktgen lcore panicked while reporting"))?;
    let sent = s.tx_packets;
    let loss = sent.saturating_sub(rx.probes);
    let latency = rx.latency.summary();
    s.extra.insert("sent".into(), sent.into());
    s.extra.insert("received".into(), rx.probes.into());
    s.extra.insert("foreign".into(), rx.foreign.into());
    s.extra.insert("lost".into(), loss.into());
    s.extra.insert(
        "loss_ratio".into(),
        (if sent == 0 {
            0.0
        } else {
            loss as f64 / sent as f64
        })
        .into(),
    );
    s.extra
        .insert("latency".into(), serde_json::to_value(latency)?);
    if !c.json {
        println!(
            "pktgen: sent {sent}, received {} ({} foreign), lost {loss}; latency p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
            rx.probes, rx.foreign, latency.p50_us, latency.p99_us, latency.max_us
        );
    }
    run::note_mbufs(&mut s);
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles() {
        let mut h = Histogram::default();
        for ns in 1..=10_000u64 {
            h.record(ns);
        }
        let p50 = h.quantile(0.5);
        assert!((4_700..=5_000).contains(&p50), "{p50}");
        let p99 = h.quantile(0.99);
        assert!((9_200..=9_900).contains(&p99), "{p99}");
        assert_eq!(h.summary().max_us, 10.0);
        for i in 0..200 {
            let lb = Histogram::lower_bound(i);
            assert_eq!(Histogram::index(lb), i, "bucket {i}");
        }
        assert_eq!(Histogram::default().quantile(0.5), 0);
    }

    #[test]
    fn the_bucket_paces() {
        let hz = tsc_hz();
        let mut b = TokenBucket::new(1_000_000, 32, 0);
        assert_eq!(b.take(0, 32), 0);
        // 10 µs at 1 Mpps: 10 packets (9 when hz / 100000 rounds down;
        // the remainder stays in the bucket).
        assert!((9..=10).contains(&b.take(hz / 100_000, 32)));
        // A long pause fills only to a burst.
        assert_eq!(b.take(hz, 64), 32);
    }
}
