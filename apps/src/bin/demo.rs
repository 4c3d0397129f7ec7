//! The framework in one process, with nothing installed but cargo: a
//! generator lcore sends UDP/IPv4 flows through in-memory ports to l3fwd
//! lcores, which route them by longest-prefix match to a sink lcore.
//! Rates per lcore every second, then a summary: packets, Mpps, drops by
//! reason (the generator sends a few bad frames on purpose), the lcores and
//! CPUs used, and whether every packet and every mbuf is accounted for.
//!
//! ```text
//! cargo run --release -p dataplane-apps --bin demo
//! cargo run --release -p dataplane-apps --bin demo -- --duration 2 --json
//! ```
//!
//! On a machine with fewer cores than lcores (a 2-core laptop) the lcores
//! are not pinned and share the cores; the output says so.
#![deny(unsafe_code)]

use clap::Parser;
use dataplane_apps::net::demo::{DemoConfig, run_demo};
use dataplane_apps::net::run::quit_on_signals;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// A generator, l3fwd lcores and a sink, joined by in-memory ports.
#[derive(Debug, Parser)]
#[command(name = "demo", version)]
struct Args {
    /// Logging.
    #[command(flatten)]
    log: dataplane_apps::LogArgs,
    /// Seconds to run.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// l3fwd lcores.
    #[arg(long, default_value_t = 2)]
    forwarders: usize,
    /// Frame size with the FCS, 64 to 1518.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Flows generated.
    #[arg(long, default_value_t = 1024)]
    flows: u16,
    /// Packets per second in all (0: flat out).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Packets per burst.
    #[arg(long, default_value_t = 32)]
    burst: usize,
    /// Print one JSON summary object as the last line of stdout.
    #[arg(long)]
    json: bool,
    /// Serve Prometheus `/metrics` on this address while running (the
    /// lcores', and each stage's packets).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    dataplane_apps::init_tracing(args.log.log_format);
    anyhow::ensure!(
        (64..=1518).contains(&args.size),
        "--size {} must be 64 to 1518",
        args.size
    );
    anyhow::ensure!(
        (1..=dataplane::net::MAX_BURST).contains(&args.burst),
        "--burst must be 1 to 64"
    );
    let quit = Arc::new(AtomicBool::new(false));
    quit_on_signals(quit.clone())?;
    let cfg = DemoConfig {
        duration: Duration::try_from_secs_f64(args.duration)
            .map_err(|_| anyhow::anyhow!("--duration must be >= 0"))?,
        forwarders: args.forwarders.max(1),
        burst: args.burst,
        flows: args.flows.max(1),
        size: args.size,
        rate: (args.rate > 0).then_some(args.rate),
        lines: true,
        metrics: args.metrics,
    };
    let (summary, figures) = run_demo(&cfg, quit)?;
    if !args.json {
        println!(
            "demo: generated {}, delivered {} ({:.3} Mpps through l3fwd), dropped {}; {}; latency p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
            figures.generated,
            figures.delivered,
            summary.tx_mpps,
            summary.drops_total,
            if figures.accounted && figures.mbufs_outstanding == 0 {
                "every packet and every mbuf accounted for".to_owned()
            } else {
                format!(
                    "NOT ACCOUNTED: {} mbufs outstanding",
                    figures.mbufs_outstanding
                )
            },
            figures.latency.p50_us,
            figures.latency.p99_us,
            figures.latency.max_us
        );
    }
    summary.print(args.json)?;
    anyhow::ensure!(
        figures.accounted && figures.mbufs_outstanding == 0,
        "packets or mbufs unaccounted for"
    );
    Ok(())
}
