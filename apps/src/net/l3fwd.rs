//! l3fwd's data path: IPv4 forwarding by longest-prefix match (DPDK's
//! examples/l3fwd in its LPM mode), with the route table from a file.
//!
//! For each burst: every frame is classified and checked
//! ([`parse_frame_with`] with the IPv4 header checksum verified), frames
//! that are not IPv4 or whose TTL would run out are dropped, the
//! destinations of the rest are looked up together
//! ([`Lpm4::lookup_burst`]), and each routed frame gets its TTL decremented
//! with the checksum updated incrementally (RFC 1624), its Ethernet
//! addresses rewritten for the next hop, and goes to the egress port's
//! transmit buffer. Every drop is counted under its reason.
//!
//! # Route file
//!
//! One route per line, `PREFIX/LEN NEXTHOP_PORT [DST_MAC]`; `#` starts a
//! comment; blank lines are ignored. Without a MAC the next hop is
//! `02:00:00:00:00:<port>` (DPDK l3fwd's default destinations).
//!
//! ```text
//! # destination     port  next-hop MAC
//! 10.0.0.0/8        0
//! 10.1.0.0/16       1     02:00:00:00:01:01
//! 0.0.0.0/0         1
//! ```

use super::cli::{CommonArgs, default_mac, parse_mac};
use super::counters::LcoreCounters;
use super::l2fwd::{PUBLISH_EVERY, update_macs};
use super::ports::{deal_queues, lcore_totals, publish_ports, service_tx};
use super::run::{self, Summary, data_plan};
use anyhow::Context;
use dataplane::lcore::{PollContext, Poller};
use dataplane::net::lpm::{Lpm4, MAX_NEXT_HOP};
use dataplane::net::{DropReason, MAX_BURST, MbufBatch, OnFull, Port, QueueStats, TxBuffer};
use dataplane::time::{TscTimer, rdtsc};
use dataplane::wire::{ChecksumMode, Ipv4Packet, L3Kind, parse_frame_with};
use hugepages::mbuf::Mbuf;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// One route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The prefix (bits past `len` are zero).
    pub prefix: Ipv4Addr,
    /// Its length, 0 to 32.
    pub len: u8,
    /// The egress port, an index into the program's ports.
    pub port: usize,
    /// The next hop's MAC; `02:00:00:00:00:<port>` when not given.
    pub mac: Option<[u8; 6]>,
}

/// A line of a route file that was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteError {
    /// 1-based.
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for RouteError {}

/// Parses a route file; see the module docs for the format. A prefix
/// given twice is refused.
///
/// # Errors
///
/// The first malformed line, with its number.
pub fn parse_routes(text: &str) -> Result<Vec<Route>, RouteError> {
    let mut routes: Vec<(usize, Route)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let bad = |message: String| RouteError { line, message };
        let content = raw.split('#').next().unwrap_or_default().trim();
        if content.is_empty() {
            continue;
        }
        let fields: Vec<&str> = content.split_whitespace().collect();
        if !(2..=3).contains(&fields.len()) {
            return Err(bad(format!(
                "expected PREFIX/LEN NEXTHOP_PORT [DST_MAC], found {} fields",
                fields.len()
            )));
        }
        let (addr, len) = fields[0]
            .split_once('/')
            .ok_or_else(|| bad(format!("{:?} is not PREFIX/LEN", fields[0])))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| bad(format!("{addr:?} is not an IPv4 address")))?;
        let len: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| bad(format!("prefix length {len:?} is not 0 to 32")))?;
        let mask = if len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(len))
        };
        if u32::from(addr) & !mask != 0 {
            return Err(bad(format!(
                "{addr}/{len} has host bits set (the prefix is {}/{len})",
                Ipv4Addr::from(u32::from(addr) & mask)
            )));
        }
        let port: usize = fields[1]
            .parse()
            .map_err(|_| bad(format!("next-hop port {:?} is not a number", fields[1])))?;
        let mac = match fields.get(2) {
            Some(m) => Some(parse_mac(m).map_err(|e| bad(e.to_string()))?),
            None => None,
        };
        if let Some((first, _)) = routes
            .iter()
            .find(|(_, r)| r.prefix == addr && r.len == len)
        {
            return Err(bad(format!(
                "{addr}/{len} is already routed on line {first}"
            )));
        }
        routes.push((
            line,
            Route {
                prefix: addr,
                len,
                port,
                mac,
            },
        ));
    }
    Ok(routes.into_iter().map(|(_, r)| r).collect())
}

/// The forwarding table and rules, shared read-only by the lcores.
pub struct L3fwd {
    lpm: Lpm4,
    /// Next hops: the egress port and the MAC to send to.
    hops: Vec<(usize, [u8; 6])>,
    ports: usize,
}

impl fmt::Debug for L3fwd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("L3fwd")
            .field("lpm", &self.lpm)
            .field("hops", &self.hops.len())
            .field("ports", &self.ports)
            .finish()
    }
}

/// What the forwarding of one burst did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Forwarded {
    /// Frames routed to an egress port.
    pub routed: usize,
    /// Frames dropped.
    pub dropped: usize,
}

impl L3fwd {
    /// A table of `routes` for `ports` ports.
    ///
    /// # Errors
    ///
    /// A route to a port that does not exist, or a table the LPM cannot
    /// hold.
    pub fn new(routes: &[Route], ports: usize) -> anyhow::Result<L3fwd> {
        let longer = routes.iter().filter(|r| r.len > 24).count();
        let mut lpm = Lpm4::new(longer.max(64))?;
        let mut hops: Vec<(usize, [u8; 6])> = Vec::new();
        for r in routes {
            if r.port >= ports {
                anyhow::bail!(
                    "route {}/{} goes to port {}, but there are {ports} ports",
                    r.prefix,
                    r.len,
                    r.port
                );
            }
            let hop = (r.port, r.mac.unwrap_or(default_mac(r.port)));
            let index = match hops.iter().position(|h| *h == hop) {
                Some(i) => i,
                None => {
                    hops.push(hop);
                    hops.len() - 1
                }
            };
            if index as u32 > MAX_NEXT_HOP {
                anyhow::bail!("more than {MAX_NEXT_HOP} next hops");
            }
            lpm.add(r.prefix, r.len, index as u32)?;
        }
        Ok(L3fwd { lpm, hops, ports })
    }

    /// The LPM.
    pub fn lpm(&self) -> &Lpm4 {
        &self.lpm
    }

    /// Routes the frames of `pkts` (emptying it): each routed frame is
    /// rewritten and handed to `out` with its egress port, each dropped one
    /// to `drop` with its reason. `src_macs[p]` is port p's address (the
    /// new source), `mtus[p]` its MTU (a longer IP packet is `Oversized`).
    #[inline]
    pub fn forward_burst(
        &self,
        pkts: &mut MbufBatch,
        src_macs: &[[u8; 6]],
        mtus: &[usize],
        mut out: impl FnMut(usize, Mbuf),
        mut drop: impl FnMut(DropReason, Mbuf),
    ) -> Forwarded {
        let mut f = Forwarded::default();
        let mut kept = MbufBatch::new();
        // Per kept frame: destination, L3 offset and length.
        let mut dst = [0u32; MAX_BURST];
        let mut l3 = [(0usize, 0usize); MAX_BURST];
        for m in pkts.drain() {
            let checked = parse_frame_with(m.data(), ChecksumMode::Software);
            let info = match checked {
                Ok(info) => info,
                Err(e) => {
                    f.dropped += 1;
                    drop(DropReason::from(e), m);
                    continue;
                }
            };
            if info.l3 != L3Kind::Ipv4 {
                f.dropped += 1;
                drop(DropReason::Filtered, m);
                continue;
            }
            let ip = Ipv4Packet::new_unchecked(&m.data()[info.l3_offset..]);
            // RFC 1812 5.3.1: a TTL that would reach 0 is not forwarded.
            if ip.ttl() <= 1 {
                f.dropped += 1;
                drop(DropReason::TtlExpired, m);
                continue;
            }
            let i = kept.len();
            dst[i] = u32::from(ip.dst_addr());
            l3[i] = (info.l3_offset, info.l3_len);
            // Cannot fail: `kept` holds at most what `pkts` held.
            if let Err(m) = kept.push(m) {
                drop(DropReason::Filtered, m);
            }
        }
        let mut hops = [0u32; MAX_BURST];
        let n = kept.len();
        let hits = self.lpm.lookup_burst(&dst[..n], &mut hops[..n]);
        for (i, mut m) in kept.drain().enumerate() {
            if hits >> i & 1 == 0 {
                f.dropped += 1;
                drop(DropReason::NoRoute, m);
                continue;
            }
            let Some(&(port, mac)) = self.hops.get(hops[i] as usize) else {
                f.dropped += 1;
                drop(DropReason::NoRoute, m);
                continue;
            };
            let (off, len) = l3[i];
            if mtus.get(port).is_some_and(|&mtu| len > mtu) {
                f.dropped += 1;
                drop(DropReason::Oversized, m);
                continue;
            }
            let data = m.data_mut();
            if let Some(ip) = data.get_mut(off..) {
                Ipv4Packet::new_unchecked(ip).decrement_ttl_and_update_checksum();
            }
            update_macs(
                data,
                mac,
                src_macs.get(port).copied().unwrap_or(default_mac(port)),
            );
            f.routed += 1;
            out(port, m);
        }
        f
    }
}

/// One data lcore of l3fwd: one queue of every port.
pub struct L3fwdLcore {
    table: Arc<L3fwd>,
    ports: Vec<Box<dyn Port>>,
    tx: Vec<TxBuffer>,
    src_macs: Vec<[u8; 6]>,
    mtus: Vec<usize>,
    /// Ports read while the group drains (fed from inside the group).
    rx_internal: bool,
    /// Ports not read at all (the demo's outputs).
    rx_skip: Vec<bool>,
    /// Hold packets a port does not take and stop reading until they go
    /// ([`OnFull::Keep`]), instead of dropping them.
    backpressure: bool,
    burst: usize,
    app: QueueStats,
    counters: Arc<LcoreCounters>,
    /// Per port: this lcore's queue's counters, for telemetry and metrics.
    port_counters: Vec<Arc<LcoreCounters>>,
    publish: TscTimer,
    batch: MbufBatch,
    drain: Duration,
}

impl fmt::Debug for L3fwdLcore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("L3fwdLcore")
            .field("ports", &self.ports.len())
            .field("app", &self.app)
            .finish_non_exhaustive()
    }
}

impl L3fwdLcore {
    /// An lcore forwarding between `ports` by `table`.
    pub fn new(
        table: Arc<L3fwd>,
        ports: Vec<Box<dyn Port>>,
        burst: usize,
        drain: Duration,
        counters: Arc<LcoreCounters>,
    ) -> L3fwdLcore {
        let now = rdtsc();
        let src_macs = ports
            .iter()
            .enumerate()
            .map(|(i, p)| p.capabilities().mac.unwrap_or(default_mac(i)))
            .collect();
        let mtus = ports.iter().map(|p| p.capabilities().mtu).collect();
        L3fwdLcore {
            table,
            tx: (0..ports.len())
                .map(|_| TxBuffer::new(burst, drain, OnFull::Drop, now))
                .collect(),
            rx_skip: vec![false; ports.len()],
            backpressure: false,
            burst,
            ports,
            src_macs,
            mtus,
            rx_internal: false,
            app: QueueStats::default(),
            counters,
            port_counters: Vec::new(),
            publish: TscTimer::new(PUBLISH_EVERY, now),
            batch: MbufBatch::new(),
            drain,
        }
    }

    /// Keeps receiving while the group drains (ports fed from inside it).
    pub fn rx_internal(mut self, on: bool) -> Self {
        self.rx_internal = on;
        self
    }

    /// Holds what a port will not take and stops reading until it goes,
    /// instead of dropping it (for pipelines inside one process, where the
    /// backpressure reaches the source).
    pub fn backpressure(mut self, on: bool) -> Self {
        self.backpressure = on;
        let mode = if on { OnFull::Keep } else { OnFull::Drop };
        let now = rdtsc();
        self.tx = (0..self.ports.len())
            .map(|_| TxBuffer::new(self.burst, self.drain, mode, now))
            .collect();
        self
    }

    /// Caps every egress MTU at `mtu` (DPDK l3fwd's `--max-pkt-len`): a
    /// longer IP packet is dropped as `Oversized`.
    pub fn max_mtu(mut self, mtu: usize) -> Self {
        for m in &mut self.mtus {
            *m = (*m).min(mtu);
        }
        self
    }

    /// Does not read port `p` (an output-only port).
    pub fn skip_rx(mut self, p: usize) -> Self {
        if let Some(s) = self.rx_skip.get_mut(p) {
            *s = true;
        }
        self
    }

    /// Counters: the ports', the forwarding drops, and transmit buffers
    /// that overflowed.
    pub fn totals(&self) -> QueueStats {
        lcore_totals(self.app, &self.ports, &self.tx)
    }

    /// Publishes each port queue's counters into `counters` (one per port)
    /// too, for telemetry and metrics.
    pub fn port_counters(mut self, counters: Vec<Arc<LcoreCounters>>) -> Self {
        self.port_counters = counters;
        self
    }

    fn publish(&self) {
        self.counters.publish(&self.totals());
        publish_ports(&self.ports, &self.tx, &self.port_counters);
    }
}

impl Poller for L3fwdLcore {
    fn poll(&mut self, ctx: &PollContext) -> usize {
        let mut work = 0;
        if !ctx.stopping() || self.rx_internal {
            for p in 0..self.ports.len() {
                if self.rx_skip[p] {
                    continue;
                }
                // With backpressure, read only what every buffer can hold.
                if self.backpressure {
                    for (buf, port) in self.tx.iter_mut().zip(self.ports.iter_mut()) {
                        if buf.room() < self.burst {
                            work += buf.flush(port);
                        }
                    }
                    if self.tx.iter().any(|b| b.room() < self.burst) {
                        break;
                    }
                }
                let n = self.ports[p].rx_burst(&mut self.batch);
                if n == 0 {
                    continue;
                }
                work += n;
                let (tx, ports, app) = (&mut self.tx, &mut self.ports, &mut self.app);
                let mut tx_full = 0u64;
                self.table.forward_burst(
                    &mut self.batch,
                    &self.src_macs,
                    &self.mtus,
                    |e, m| {
                        // Drop mode never hands the packet back; Keep mode
                        // has room for the burst (checked before reading).
                        if let Err(m) = tx[e].push(m, &mut ports[e]) {
                            tx_full += 1;
                            std::mem::drop(m);
                        }
                    },
                    |why, m| {
                        app.drop_one(why);
                        std::mem::drop(m);
                    },
                );
                app.drop_n(DropReason::TxFull, tx_full);
            }
        }
        let (sent, held) = service_tx(&mut self.tx, &mut self.ports, ctx);
        work += sent;
        if self.publish.expired(ctx.now()) || ctx.stopping() {
            self.publish();
        }
        // Draining: packets still held keep the lcore busy (the lcore
        // contract), so that the group waits for them to go.
        if ctx.stopping() { work + held } else { work }
    }

    fn stop(&mut self, _ctx: &PollContext) {
        for (buf, port) in self.tx.iter_mut().zip(self.ports.iter_mut()) {
            buf.flush(port);
            // Whatever is still held now cannot go any more: count it.
            buf.discard();
        }
        self.publish();
    }
}

/// Forward IPv4 packets by longest-prefix match over a route table.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "l3fwd", version)]
pub struct L3fwdArgs {
    /// The options every network program takes.
    #[command(flatten)]
    pub common: CommonArgs,
    /// The route table: `PREFIX/LEN NEXTHOP_PORT [DST_MAC]` per line.
    #[arg(long, value_name = "FILE")]
    pub routes: PathBuf,
    /// Largest IP packet forwarded, in bytes (the ports' MTU by default);
    /// longer ones are dropped as oversized.
    #[arg(long)]
    pub mtu: Option<usize>,
}

/// Runs l3fwd until the duration is up or `quit` is set; returns the
/// summary (not printed).
///
/// # Errors
///
/// Bad options, an unreadable or malformed route file, a port that cannot
/// be opened, lcores that cannot start.
pub fn run(args: &L3fwdArgs, quit: Arc<AtomicBool>) -> anyhow::Result<Summary> {
    let c = &args.common;
    c.validate()?;
    let text = std::fs::read_to_string(&args.routes)
        .with_context(|| format!("reading {}", args.routes.display()))?;
    let routes =
        parse_routes(&text).with_context(|| format!("route file {}", args.routes.display()))?;
    let dp = data_plan(c.lcores)?;
    let queues = c.queues.unwrap_or(dp.data.len() as u16).max(1);
    let ports = c.open_ports(&dp.plan, queues)?;
    let table = Arc::new(
        L3fwd::new(&routes, ports.len())
            .with_context(|| format!("route file {}", args.routes.display()))?,
    );
    let (port_summaries, per_lcore) = deal_queues(ports);
    anyhow::ensure!(
        per_lcore.len() <= dp.data.len(),
        "{} queues per port but {} data lcores",
        per_lcore.len(),
        dp.data.len()
    );
    let mut group = dp.group();
    let mut counters = Vec::new();
    let mut ports = run::port_counters(&port_summaries);
    for (queues, &lcore) in per_lcore.into_iter().zip(&dp.data) {
        let cnt = Arc::new(LcoreCounters::default());
        counters.push((lcore, cnt.clone()));
        let mut poller = L3fwdLcore::new(table.clone(), queues, c.burst, c.drain(), cnt)
            .port_counters(run::add_lcore(&mut ports));
        if let Some(mtu) = args.mtu {
            poller = poller.max_mtu(mtu);
        }
        group.poller(lcore, poller).context("adding a poller")?;
    }
    let observe = run::observe(c, ports)?;
    let out = run::forward("l3fwd", group, counters, c.duration()?, quit, observe)?;
    let mut s = Summary::new("l3fwd", port_summaries, &dp.plan, &out);
    s.extra.insert("routes".into(), routes.len().into());
    s.extra
        .insert("lpm_on_hugepages".into(), table.lpm().on_hugepages().into());
    run::note_mbufs(&mut s);
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_files_parse_and_refuse_with_line_numbers() {
        let text = "# a table\n\n10.0.0.0/8 0\n10.1.0.0/16 1 02:00:00:00:01:01  # via the router\n0.0.0.0/0 1\n";
        let routes = parse_routes(text).expect("valid");
        assert_eq!(routes.len(), 3);
        assert_eq!(routes[1].mac, Some([2, 0, 0, 0, 1, 1]));
        assert_eq!(routes[2].len, 0);
        for (bad, line, what) in [
            ("10.0.0.0/8 0\n10.0.0.0 1\n", 2, "PREFIX/LEN"),
            ("10.0.0.0/33 0\n", 1, "prefix length"),
            ("\n\n10.0.0.1/8 0\n", 3, "host bits"),
            ("10.0.0.0/8 x\n", 1, "not a number"),
            ("10.0.0.0/8 0 02:00\n", 1, "MAC"),
            ("10.0.0.0/8\n", 1, "fields"),
            (
                "10.0.0.0/8 0\n10.0.0.0/8 1\n",
                2,
                "already routed on line 1",
            ),
            ("300.0.0.0/8 0\n", 1, "IPv4 address"),
        ] {
            let e = parse_routes(bad).expect_err(bad);
            assert_eq!(e.line, line, "{bad:?}: {e}");
            assert!(e.message.contains(what), "{bad:?}: {e}");
        }
        assert!(L3fwd::new(&routes, 1).is_err(), "port 1 of 1");
    }
}
