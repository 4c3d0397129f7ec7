//! Layer-2 forwarding between pairs of ports, DPDK's examples/l2fwd on the
//! framework: each data lcore owns one queue of every port and forwards
//! what it receives on port 0 to port 1 and back (2 and 3, ...), rewriting
//! the MAC addresses unless told not to.
//!
//! ```text
//! l2fwd --port veth0 --port veth1 --duration 10
//! l2fwd --backend dpdk --vdev net_ring0 --vdev net_ring1 -p 0x3 --json
//! ```

use anyhow::Context;
use clap::Parser;
use dataplane_apps::net::cli::{CommonArgs, deal_queues};
use dataplane_apps::net::counters::LcoreCounters;
use dataplane_apps::net::l2fwd::{L2fwdLcore, pairs};
use dataplane_apps::net::run::{self, Summary, Watch, data_plan, quit_on_signals};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// Forward frames between pairs of ports (0-1, 2-3, ...), as DPDK's l2fwd.
#[derive(Debug, Parser)]
#[command(name = "l2fwd", version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Hexadecimal mask of the ports to forward between (bit i: the i-th
    /// --port); all of them by default.
    #[arg(short = 'p', long = "portmask", value_parser = parse_mask)]
    portmask: Option<u64>,
    /// Leave the MAC addresses as they are.
    #[arg(long = "no-mac-updating")]
    no_mac_updating: bool,
}

fn parse_mask(s: &str) -> Result<u64, String> {
    u64::from_str_radix(s.trim_start_matches("0x").trim_start_matches("0X"), 16)
        .map_err(|e| format!("{s:?} is not a hexadecimal port mask: {e}"))
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
    let quit = Arc::new(AtomicBool::new(false));
    quit_on_signals(quit.clone())?;

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
    let mut group = dp.group();
    let mut counters = Vec::new();
    for (queues, &lcore) in per_lcore.into_iter().zip(&dp.data) {
        let cnt = Arc::new(LcoreCounters::default());
        counters.push((lcore, cnt.clone()));
        let poller = L2fwdLcore::new(
            queues,
            dst.clone(),
            !args.no_mac_updating,
            c.burst,
            c.drain(),
            cnt,
        );
        group.poller(lcore, poller).context("adding a poller")?;
    }
    let out = run::run(
        group,
        Watch {
            name: "l2fwd",
            duration: c.duration()?,
            counters,
            quit,
            tx_off: None,
            lines: true,
            summed: None,
        },
    )?;
    Summary::new("l2fwd", port_summaries, &dp.plan, &out).print(c.json)
}
