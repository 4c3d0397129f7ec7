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
#![deny(unsafe_code)]

use clap::Parser;
use dataplane_apps::net::l3fwd::{L3fwdArgs, run};
use dataplane_apps::net::run::program_main;

fn main() -> anyhow::Result<()> {
    let args = L3fwdArgs::parse();
    program_main(args.common.json, args.common.log, |quit| run(&args, quit))
}
