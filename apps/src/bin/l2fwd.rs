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
use dataplane_apps::init_tracing;
use dataplane_apps::net::l2fwd::{L2fwdArgs, run};
use dataplane_apps::net::run::{finish, quit_on_signals};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

fn main() -> anyhow::Result<()> {
    let args = L2fwdArgs::parse();
    init_tracing();
    let quit = Arc::new(AtomicBool::new(false));
    quit_on_signals(quit.clone())?;
    let s = run(&args, quit)?;
    finish(&s, args.common.json)
}
