//! l2fwd's data path: DPDK's examples/l2fwd, one lcore's loop. Each data
//! lcore owns one queue of every port; what it receives on a port goes out
//! on that port's partner (ports pair up 0-1, 2-3, ...), with the
//! destination MAC set to `02:00:00:00:00:<partner>` and the source to the
//! partner's own address (`--no-mac-updating` leaves frames as they are).
//! Transmit goes through a [`TxBuffer`] per port, flushed at a full burst
//! or by the drain timer; a received burst of a full transmit burst with
//! nothing buffered goes out with one `tx_burst`, untouched but for the
//! MAC rewrite.

use super::cli::{CommonArgs, default_mac};
use super::counters::LcoreCounters;
use super::ports::{deal_queues, lcore_totals, publish_ports, service_tx};
use super::run::{self, Summary, data_plan};
use anyhow::Context;
use dataplane::dispatch::{self, DispatchConfig, Dispatcher, WorkerLink};
use dataplane::lcore::{PollContext, Poller};
use dataplane::net::{MbufBatch, OnFull, Port, QueueStats, TxBuffer};
use dataplane::time::{TscTimer, rdtsc};
use dataplane::worker::{Envelope, Worker, WorkerPool};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// How often an lcore publishes its counters.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(10);

/// Which port each port forwards to: the enabled ports of `mask` (bit i:
/// the i-th port), paired in order.
///
/// # Errors
///
/// A mask that selects no port, a port that does not exist, or an odd
/// number of ports.
pub fn pairs(ports: usize, mask: u64) -> Result<Vec<Option<usize>>, String> {
    let enabled: Vec<usize> = (0..ports.min(64)).filter(|i| mask >> i & 1 == 1).collect();
    if enabled.is_empty() {
        return Err(format!(
            "port mask {mask:#x} selects none of the {ports} ports"
        ));
    }
    if ports < 64 && mask >> ports != 0 {
        return Err(format!(
            "port mask {mask:#x} names ports past the {ports} given"
        ));
    }
    if !enabled.len().is_multiple_of(2) {
        return Err(format!(
            "port mask {mask:#x} selects {} ports; l2fwd forwards between pairs",
            enabled.len()
        ));
    }
    let mut dst = vec![None; ports];
    for pair in enabled.chunks(2) {
        dst[pair[0]] = Some(pair[1]);
        dst[pair[1]] = Some(pair[0]);
    }
    Ok(dst)
}

/// Rewrites the Ethernet addresses as l2fwd does (`l2fwd_mac_updating`).
/// Frames shorter than an Ethernet header are left alone (the port counts
/// them when it refuses to send them).
#[inline]
pub fn update_macs(frame: &mut [u8], dst: [u8; 6], src: [u8; 6]) {
    if let Some(h) = frame.get_mut(..12) {
        h[..6].copy_from_slice(&dst);
        h[6..].copy_from_slice(&src);
    }
}

/// One data lcore of l2fwd.
pub struct L2fwdLcore {
    ports: Vec<Box<dyn Port>>,
    dst: Vec<Option<usize>>,
    tx: Vec<TxBuffer>,
    macs: Option<Vec<([u8; 6], [u8; 6])>>,
    /// Keep receiving while the group drains: the ports are fed from
    /// inside the group (memory ports from another lcore).
    rx_internal: bool,
    app: QueueStats,
    counters: Arc<LcoreCounters>,
    /// Per port: this lcore's queue's counters, for telemetry.
    port_counters: Vec<Arc<LcoreCounters>>,
    publish: TscTimer,
    batch: MbufBatch,
}

impl std::fmt::Debug for L2fwdLcore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("L2fwdLcore")
            .field("ports", &self.ports.len())
            .field("dst", &self.dst)
            .finish_non_exhaustive()
    }
}

impl L2fwdLcore {
    /// An lcore owning `ports` (one queue of each), forwarding port i to
    /// `dst[i]`, with MAC updating when `mac_updating`.
    pub fn new(
        ports: Vec<Box<dyn Port>>,
        dst: Vec<Option<usize>>,
        mac_updating: bool,
        burst: usize,
        drain: Duration,
        counters: Arc<LcoreCounters>,
    ) -> L2fwdLcore {
        let now = rdtsc();
        let macs = mac_updating.then(|| {
            (0..ports.len())
                .map(|p| {
                    let own = ports[p].capabilities().mac.unwrap_or(default_mac(p));
                    (default_mac(p), own)
                })
                .collect()
        });
        L2fwdLcore {
            tx: (0..ports.len())
                .map(|_| TxBuffer::new(burst, drain, OnFull::Drop, now))
                .collect(),
            ports,
            dst,
            macs,
            rx_internal: false,
            app: QueueStats::default(),
            counters,
            port_counters: Vec::new(),
            publish: TscTimer::new(PUBLISH_EVERY, now),
            batch: MbufBatch::new(),
        }
    }

    /// Keeps receiving while the group drains (ports fed from inside it).
    pub fn rx_internal(mut self, on: bool) -> Self {
        self.rx_internal = on;
        self
    }

    /// Publishes each port queue's counters into `counters` (one per
    /// port, in port order) too, for telemetry.
    pub fn port_counters(mut self, counters: Vec<Arc<LcoreCounters>>) -> Self {
        self.port_counters = counters;
        self
    }

    fn totals(&self) -> QueueStats {
        lcore_totals(self.app, &self.ports, &self.tx)
    }

    fn publish(&self) {
        self.counters.publish(&self.totals());
        publish_ports(&self.ports, &self.tx, &self.port_counters);
    }
}

impl Poller for L2fwdLcore {
    fn poll(&mut self, ctx: &PollContext) -> usize {
        let mut work = 0;
        if !ctx.stopping() || self.rx_internal {
            for p in 0..self.ports.len() {
                let Some(d) = self.dst[p] else { continue };
                let n = self.ports[p].rx_burst(&mut self.batch);
                if n == 0 {
                    continue;
                }
                work += n;
                if let Some(macs) = &self.macs {
                    let (dst_mac, src_mac) = macs[d];
                    for m in self.batch.iter_mut() {
                        update_macs(m.data_mut(), dst_mac, src_mac);
                    }
                }
                // A whole burst goes straight to the port when nothing is
                // buffered for it; OnFull::Drop leaves nothing in `batch`.
                self.tx[d].push_batch(&mut self.batch, &mut self.ports[d]);
            }
        }
        service_tx(&mut self.tx, &mut self.ports, ctx);
        if self.publish.expired(ctx.now()) || ctx.stopping() {
            self.publish();
        }
        work
    }

    fn stop(&mut self, _ctx: &PollContext) {
        for (buf, port) in self.tx.iter_mut().zip(self.ports.iter_mut()) {
            buf.flush(port);
        }
        self.publish();
    }
}

/// Forward frames between pairs of ports (0-1, 2-3, ...), as DPDK's l2fwd.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "l2fwd", version)]
pub struct L2fwdArgs {
    /// The options every network program takes.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Hexadecimal mask of the ports to forward between (bit i: the i-th
    /// port); all of them by default.
    #[arg(short = 'p', long = "portmask", value_parser = parse_mask)]
    pub portmask: Option<u64>,
    /// Leave the MAC addresses as they are.
    #[arg(long = "no-mac-updating")]
    pub no_mac_updating: bool,
    /// Worker lcores for the MAC rewrite: the data lcore receives, steers
    /// each packet by its flow to a worker over a ring, and sends what the
    /// workers return (`dataplane::dispatch`); 0 does it all on the data
    /// lcore, as DPDK's l2fwd does. Needs one data lcore.
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
}

/// Parses a hexadecimal port mask, with or without `0x`.
///
/// # Errors
///
/// Anything but hexadecimal digits.
pub fn parse_mask(s: &str) -> Result<u64, String> {
    u64::from_str_radix(s.trim_start_matches("0x").trim_start_matches("0X"), 16)
        .map_err(|e| format!("{s:?} is not a hexadecimal port mask: {e}"))
}

/// Runs l2fwd until the duration is up or `quit` is set; returns the
/// summary (not printed).
///
/// # Errors
///
/// Bad options, a port that cannot be opened, lcores that cannot start.
pub fn run(args: &L2fwdArgs, quit: Arc<AtomicBool>) -> anyhow::Result<Summary> {
    let c = &args.common;
    c.validate()?;
    let dp = data_plan(c.lcores)?;
    let queues = c.queues.unwrap_or(dp.data.len() as u16).max(1);
    let ports = c.open_ports(&dp.plan, queues)?;
    let n = ports.len();
    let mask = args
        .portmask
        .unwrap_or(if n >= 64 { u64::MAX } else { (1 << n) - 1 });
    let dst = pairs(n, mask).map_err(anyhow::Error::msg)?;
    let (port_summaries, per_lcore) = deal_queues(ports);
    anyhow::ensure!(
        per_lcore.len() <= dp.data.len(),
        "{} queues per port but {} data lcores; give --queues {} or more lcores",
        per_lcore.len(),
        dp.data.len(),
        dp.data.len()
    );
    if args.workers > 0 {
        return run_dispatched(args, dp, port_summaries, per_lcore, &dst, quit);
    }
    let mut group = dp.group();
    let mut counters = Vec::new();
    let mut ports = run::port_counters(&port_summaries);
    for (queues, &lcore) in per_lcore.into_iter().zip(&dp.data) {
        let cnt = Arc::new(LcoreCounters::default());
        counters.push((lcore, cnt.clone()));
        let per_port = run::add_lcore(&mut ports);
        let poller = L2fwdLcore::new(
            queues,
            dst.clone(),
            !args.no_mac_updating,
            c.burst,
            c.drain(),
            cnt,
        )
        .port_counters(per_port);
        group.poller(lcore, poller).context("adding a poller")?;
    }
    let observe = run::observe(c, ports)?;
    let out = run::forward("l2fwd", group, counters, c.duration()?, quit, observe)?;
    let mut s = Summary::new("l2fwd", port_summaries, &dp.plan, &out);
    run::note_mbufs(&mut s);
    Ok(s)
}

/// A worker of `l2fwd --workers`: rewrites the MACs of what its link
/// brings and sends it back.
struct MacWorker {
    link: WorkerLink,
    /// Per receiving port: the (destination, source) MACs for its partner.
    macs: Option<Vec<([u8; 6], [u8; 6])>>,
    batch: MbufBatch,
}

impl Worker for MacWorker {
    type State = ();
    type Message = ();

    fn init(&mut self) -> dataplane::Result<()> {
        Ok(())
    }

    fn handle_message(&mut self, _: &mut (), _: Envelope<()>) -> dataplane::Result<()> {
        Ok(())
    }

    fn poll(&mut self, _: &mut (), _ctx: &PollContext) -> dataplane::Result<usize> {
        let n = self.link.recv(&mut self.batch);
        if let Some(macs) = &self.macs {
            for m in self.batch.iter_mut() {
                let (dst, src) = macs[usize::from(m.port()).min(macs.len() - 1)];
                update_macs(m.data_mut(), dst, src);
            }
        }
        self.link.send(&mut self.batch);
        Ok(n + self.link.pending())
    }
}

/// The data lcore of `l2fwd --workers`: the dispatcher, publishing its
/// ports' counters as the plain data lcore does.
struct DispatchLcore {
    inner: Dispatcher,
    counters: Arc<LcoreCounters>,
    /// Per port, for telemetry and metrics.
    port_counters: Vec<Arc<LcoreCounters>>,
    publish: TscTimer,
}

impl DispatchLcore {
    fn publish(&self) {
        self.counters.publish(&lcore_totals(
            QueueStats::default(),
            self.inner.ports(),
            &[],
        ));
        publish_ports(self.inner.ports(), &[], &self.port_counters);
    }
}

impl Poller for DispatchLcore {
    fn poll(&mut self, ctx: &PollContext) -> usize {
        let work = self.inner.poll(ctx);
        if self.publish.expired(ctx.now()) || ctx.stopping() {
            self.publish();
        }
        work
    }

    fn stop(&mut self, ctx: &PollContext) {
        self.inner.stop(ctx);
        self.publish();
    }
}

/// `l2fwd --workers N`: one data lcore dispatching to N workers.
fn run_dispatched(
    args: &L2fwdArgs,
    dp: super::run::DataPlan,
    port_summaries: Vec<super::ports::PortSummary>,
    mut per_lcore: Vec<Vec<Box<dyn Port>>>,
    dst: &[Option<usize>],
    quit: Arc<AtomicBool>,
) -> anyhow::Result<Summary> {
    let c = &args.common;
    anyhow::ensure!(
        per_lcore.len() == 1,
        "--workers needs one data lcore and one queue per port ({} given)",
        per_lcore.len()
    );
    anyhow::ensure!(
        dst.iter().all(Option::is_some),
        "--workers forwards between every port given: a port mask that leaves ports out is not supported"
    );
    let ports = per_lcore.pop().context("a port queue")?;
    let dst: Vec<usize> = dst.iter().map(|d| d.unwrap_or(0)).collect();
    // MACs by receiving port: those of the port it goes out on.
    let macs = (!args.no_mac_updating).then(|| {
        dst.iter()
            .map(|&d| {
                let own = ports[d].capabilities().mac.unwrap_or(default_mac(d));
                (default_mac(d), own)
            })
            .collect::<Vec<_>>()
    });
    let (io, links) = dispatch::dispatcher(
        ports,
        args.workers,
        DispatchConfig {
            dst: Some(dst),
            ..DispatchConfig::default()
        },
    )?;
    let report = io.report();
    let mut links: Vec<Option<WorkerLink>> = links.into_iter().map(Some).collect();
    let pool = WorkerPool::builder()
        .factory(move |i: usize| MacWorker {
            link: links[i].take().expect("a link per worker"),
            macs: macs.clone(),
            batch: MbufBatch::new(),
        })
        .workers(args.workers)
        .cpu_affinity(false)
        .build()
        .context("starting the workers")?;
    let mut ports = run::port_counters(&port_summaries);
    let per_port = run::add_lcore(&mut ports);
    let mut observe = run::observe(c, ports)?;
    if let Some(o) = observe.as_mut() {
        if let Some((_, t)) = &o.telemetry {
            t.workers(pool.stats_view())?;
        }
        if let Some((_, m)) = &o.metrics {
            m.workers(pool.stats_view());
        }
    }
    let mut group = dp.group();
    let lcore = dp.data[0];
    let cnt = Arc::new(LcoreCounters::default());
    group
        .poller(
            lcore,
            DispatchLcore {
                inner: io,
                counters: cnt.clone(),
                port_counters: per_port,
                publish: TscTimer::new(PUBLISH_EVERY, rdtsc()),
            },
        )
        .context("adding the dispatcher")?;
    // The dispatcher stops first and waits for the replies to what it
    // handed out; then the workers.
    let out = run::forward(
        "l2fwd",
        group,
        vec![(lcore, cnt)],
        c.duration()?,
        quit,
        observe,
    )?;
    pool.shutdown().context("stopping the workers")?;
    let mut s = Summary::new("l2fwd", port_summaries, &dp.plan, &out);
    let stats = report.lock().map(|r| *r).unwrap_or_default();
    // The dispatcher's own drops, beside the ports'.
    for (reason, n) in [
        ("worker_busy", stats.worker_busy),
        ("dispatch_tx_full", stats.tx_dropped),
        ("reply_dropped", stats.reply_dropped),
    ] {
        if n > 0 {
            *s.drops.entry(reason).or_default() += n;
            s.drops_total += n;
        }
    }
    s.extra.insert("workers".into(), args.workers.into());
    s.extra.insert(
        "dispatch".into(),
        serde_json::to_value(stats).context("the counters")?,
    );
    run::note_mbufs(&mut s);
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_masks_pair_ports() {
        assert_eq!(pairs(2, 0x3), Ok(vec![Some(1), Some(0)]));
        assert_eq!(
            pairs(4, 0xd),
            Err("port mask 0xd selects 3 ports; l2fwd forwards between pairs".into())
        );
        assert_eq!(pairs(4, 0xf), Ok(vec![Some(1), Some(0), Some(3), Some(2)]));
        assert_eq!(pairs(4, 0x5), Ok(vec![Some(2), None, Some(0), None]));
        assert!(pairs(2, 0).is_err());
        assert!(pairs(2, 0x4).is_err());
        let mut f = [0u8; 14];
        update_macs(&mut f, [1; 6], [2; 6]);
        assert_eq!(&f[..12], &[1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2]);
        update_macs(&mut f[..5], [9; 6], [9; 6]);
    }
}
