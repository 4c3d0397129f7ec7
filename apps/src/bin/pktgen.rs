//! A packet generator: UDP/IPv4 flows at a set rate (a token bucket on the
//! TSC) or flat out, on every port, and what comes back counted: packets,
//! loss, and latency from the TSC each frame carries (p50, p99, max).
//!
//! ```text
//! pktgen --port veth0 --rate 100000 --flows 64 --size 128 --duration 5
//! pktgen --backend io_uring --port udp:10.0.0.1:9000,peer=10.0.0.2:9000 --json
//! ```
//!
//! At the end of the run, sending stops and receiving goes on for
//! `--drain-ms`, so that packets still in flight are not counted as lost.
#![deny(unsafe_code)]

use clap::Parser;
use dataplane_apps::net::pktgen::{PktgenArgs, run};
use dataplane_apps::net::run::program_main;

fn main() -> anyhow::Result<()> {
    let args = PktgenArgs::parse();
    program_main(args.common.json, args.common.log, |quit| run(&args, quit))
}
