//! IPv4 forwarding by longest-prefix match, DPDK's examples/l3fwd (LPM
//! mode) on the framework, with the route table from a file: each data
//! lcore owns one queue of every port, checks each frame (IPv4 header
//! checksum included), decrements its TTL with the incremental checksum
//! update, rewrites its MAC addresses for the next hop, and sends it out of
//! the port its route names. Every drop is counted by reason.
//!
//! ```text
//! l3fwd --port veth0 --port veth1 --routes routes.txt --duration 10
//! ```
//!
//! Route file: `PREFIX/LEN NEXTHOP_PORT [DST_MAC]` per line, `#` comments
//! (see `dataplane_apps::net::l3fwd`).

use anyhow::Context;
use clap::Parser;
use dataplane_apps::net::cli::{CommonArgs, deal_queues};
use dataplane_apps::net::counters::LcoreCounters;
use dataplane_apps::net::l3fwd::{L3fwd, L3fwdLcore, parse_routes};
use dataplane_apps::net::run::{self, Summary, Watch, data_plan, quit_on_signals};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// Forward IPv4 packets by longest-prefix match over a route table.
#[derive(Debug, Parser)]
#[command(name = "l3fwd", version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// The route table: `PREFIX/LEN NEXTHOP_PORT [DST_MAC]` per line.
    #[arg(long, value_name = "FILE")]
    routes: PathBuf,
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
    let text = std::fs::read_to_string(&args.routes)
        .with_context(|| format!("reading {}", args.routes.display()))?;
    let routes =
        parse_routes(&text).with_context(|| format!("route file {}", args.routes.display()))?;
    let quit = Arc::new(AtomicBool::new(false));
    quit_on_signals(quit.clone())?;

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
    for (queues, &lcore) in per_lcore.into_iter().zip(&dp.data) {
        let cnt = Arc::new(LcoreCounters::default());
        counters.push((lcore, cnt.clone()));
        let poller = L3fwdLcore::new(table.clone(), queues, c.burst, c.drain(), cnt);
        group.poller(lcore, poller).context("adding a poller")?;
    }
    let out = run::run(
        group,
        Watch {
            name: "l3fwd",
            duration: c.duration()?,
            counters,
            quit,
            tx_off: None,
            lines: true,
            summed: None,
        },
    )?;
    let mut s = Summary::new("l3fwd", port_summaries, &dp.plan, &out);
    s.extra.insert("routes".into(), routes.len().into());
    s.extra
        .insert("lpm_on_hugepages".into(), table.lpm().on_hugepages().into());
    s.print(c.json)
}
