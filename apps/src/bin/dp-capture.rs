//! Packets from a port, matched on an accelerator, written as pcapng
//! through a block queue: NIC to GPU to NVMe in one poll loop. See
//! `dataplane_apps::capture`.
//!
//! ```text
//! cargo run --release -p dataplane-apps --bin dp-capture -- --duration 2
//! dp-capture --all --out /var/capture/run1 --segment-size 1GiB --segments 10
//! dp-capture --net dpdk --vdev net_pcap0,rx_pcap=in.pcap --out /tmp/hits --json
//! dp-capture --all --out /dev/loop0 --segment-size 256MiB --lcores 3
//! ```
#![deny(unsafe_code)]

use clap::Parser;
use dataplane_apps::capture::{self, Args};

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    dataplane_apps::init_tracing(args.log.log_format);
    let summary = capture::run(&args)?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        capture::print(&summary);
    }
    Ok(())
}
