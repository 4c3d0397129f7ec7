//! Layer-2 forwarding between pairs of ports, DPDK's examples/l2fwd on the
//! framework: each data lcore owns one queue of every port and forwards
//! what it receives on port 0 to port 1 and back (2 and 3, ...), rewriting
//! the MAC addresses unless told not to.
//!
//! ```text
//! l2fwd --port veth0 --port veth1 --duration 10
//! l2fwd --backend dpdk --vdev net_ring0 --vdev net_ring1 -p 0x3 --json
//! ```
#![deny(unsafe_code)]

use clap::Parser;
use dataplane_apps::net::l2fwd::{L2fwdArgs, run};
use dataplane_apps::net::run::program_main;

fn main() -> anyhow::Result<()> {
    let args = L2fwdArgs::parse();
    program_main(args.common.json, args.common.log, |quit| run(&args, quit))
}
