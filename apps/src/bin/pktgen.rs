//! A packet generator: UDP/IPv4 flows at a set rate (a token bucket on the
//! TSC) or flat out, on every port, and what comes back counted: packets,
//! loss, and latency from the TSC each frame carries (p50, p99, max).
//!
//! ```text
//! pktgen --port veth0 --rate 100000 --flows 64 --size 128 --duration 5
//! pktgen --backend io-uring --port udp:10.0.0.1:9000,peer=10.0.0.2:9000 --json
//! ```
//!
//! At the end of the run, sending stops and receiving goes on for
//! `--drain-ms`, so that packets still in flight are not counted as lost.

use anyhow::{Context, bail};
use clap::Parser;
use dataplane::net::Layer;
use dataplane_apps::net::cli::{CommonArgs, deal_queues, parse_mac};
use dataplane_apps::net::counters::LcoreCounters;
use dataplane_apps::net::frame::{HEADERS_LEN, MIN_FRAME_SIZE, PROBE_LEN};
use dataplane_apps::net::pktgen::{FlowSpec, PktgenLcore, RxReport};
use dataplane_apps::net::run::{self, Summary, Watch, data_plan, quit_on_signals};
use std::net::Ipv4Addr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Generate UDP/IPv4 flows and measure what comes back.
#[derive(Debug, Parser)]
#[command(name = "pktgen", version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Packets per second in all (0: flat out).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Flows: source addresses and ports vary over this many.
    #[arg(long, default_value_t = 1)]
    flows: u16,
    /// Frame size with the FCS, 64 to 1518.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Destination MAC.
    #[arg(long = "dst-mac", default_value = "02:00:00:00:00:00")]
    dst_mac: String,
    /// First source address (flow i adds i).
    #[arg(long = "src-ip", default_value = "10.0.0.1")]
    src_ip: Ipv4Addr,
    /// Destination address.
    #[arg(long = "dst-ip", default_value = "10.0.1.1")]
    dst_ip: Ipv4Addr,
    /// First source port (flow i adds i).
    #[arg(long = "src-port", default_value_t = 1024)]
    src_port: u16,
    /// Destination port.
    #[arg(long = "dst-port", default_value_t = 9)]
    dst_port: u16,
    /// Time to live.
    #[arg(long, default_value_t = 64)]
    ttl: u8,
    /// Milliseconds to keep receiving after sending stops.
    #[arg(long = "drain-ms", default_value_t = 200)]
    drain_ms: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
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
    let quit = Arc::new(AtomicBool::new(false));
    quit_on_signals(quit.clone())?;

    let dp = data_plan(c.lcores)?;
    let queues = c.queues.unwrap_or(dp.data.len() as u16).max(1);
    let ports = c.open_ports(&dp.plan, queues)?;
    for p in &ports {
        let l4 = p.opened.ports.first().map(|q| q.capabilities().layer) == Some(Layer::L4);
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
        );
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
    s.print(c.json)
}
