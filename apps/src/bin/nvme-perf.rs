//! A storage load generator in the spirit of SPDK's `perf` and fio; see
//! [`dataplane_apps::storage::perf`] for what it does and prints.
#![deny(unsafe_code)]

use clap::Parser;
use dataplane_apps::storage::perf::{self, PerfArgs};

fn main() -> anyhow::Result<()> {
    let args = PerfArgs::parse();
    dataplane_apps::init_tracing(args.log.log_format);
    let summary = perf::run(&args)?;
    perf::print_text(&summary);
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    }
    summary.check()
}
