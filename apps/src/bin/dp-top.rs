//! A live view of a running program through its telemetry socket: see
//! `dataplane_apps::top`.
//!
//! ```text
//! l2fwd --vdev net_null0 --vdev net_null1 --telemetry rte &
//! dp-top                 # q quits
//! dp-top -f myprefix --iterations 5 > log.txt
//! ```
#![deny(unsafe_code)]

use clap::Parser;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

fn main() -> anyhow::Result<()> {
    let args = dataplane_apps::top::Args::parse();
    dataplane_apps::init_tracing(dataplane_apps::LogFormat::Text);
    let quit = Arc::new(AtomicBool::new(false));
    dataplane_apps::net::run::quit_on_signals(quit.clone())?;
    dataplane_apps::top::run(&args, &quit)
}
