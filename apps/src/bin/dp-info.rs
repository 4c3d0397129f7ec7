//! Prints the detected hardware, the plan for each profile and every backend
//! probe: what the runtime would do on this machine, and why.
//!
//! ```text
//! cargo run --release -p dataplane-apps --bin dp-info
//! cargo run --release -p dataplane-apps --bin dp-info -- --json
//! cargo run --release -p dataplane-apps --bin dp-info -- --profile low_latency
//! cargo run --release -p dataplane-apps --bin dp-info -- --synthetic 24:2:1:2
//! ```
//!
//! The `DATAPLANE_*` variables are applied to the plans, as a runtime would;
//! `DATAPLANE_REQUIRE` is checked against the probes and reported, never
//! fatal here: `dp-info` exits 0 on any machine so that it can explain one
//! that lacks everything.
#![deny(unsafe_code)]

use clap::Parser;
use dataplane::profile::Profile;
use dataplane::topology::Topology;
use dataplane_apps::info;

/// Show what this machine offers a dataplane application and how the
/// runtime would use it.
#[derive(Debug, Parser)]
#[command(name = "dp-info", version)]
struct Args {
    /// Logging.
    #[command(flatten)]
    log: dataplane_apps::LogArgs,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,

    /// Show only this profile's plan: production, low_latency, performance
    /// or power.
    #[arg(long, value_name = "PROFILE")]
    profile: Option<Profile>,

    /// Plan for an imagined machine instead of this one:
    /// CPUS:NODES:SMT:GPUS, e.g. 24:2:1:2 (no probes, no devices).
    #[arg(long, value_name = "CPUS:NODES:SMT:GPUS", value_parser = parse_shape)]
    synthetic: Option<[usize; 4]>,
}

fn parse_shape(s: &str) -> Result<[usize; 4], String> {
    let parts: Vec<usize> = s
        .split(':')
        .map(|p| p.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{s:?}: {e}"))?;
    match parts[..] {
        [cpus, nodes, smt, gpus] if cpus >= 1 && nodes >= 1 && smt >= 1 => {
            Ok([cpus, nodes, smt, gpus])
        }
        _ => Err(format!(
            "{s:?}: expected four numbers CPUS:NODES:SMT:GPUS, the first three at least 1"
        )),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    dataplane_apps::init_tracing(args.log.log_format);

    let profiles: Vec<Profile> = args.profile.into_iter().collect();
    let report = match args.synthetic {
        Some([cpus, nodes, smt, gpus]) => info::report_for(
            Topology::synthetic(cpus, nodes, smt, gpus),
            &profiles,
            &|name| std::env::var(name).ok(),
        ),
        None => info::report(&profiles)?,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", info::render_text(&report));
    }
    Ok(())
}
