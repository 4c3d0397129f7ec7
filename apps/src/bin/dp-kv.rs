//! A Redis-compatible key-value server, one shard per lcore, shared
//! nothing: `redis-cli` and `redis-benchmark` talk to it as to
//! redis-server.
//!
//! ```text
//! dp-kv --port 6379 --cpus 0-1 --maxmemory 1gb --stats
//! ```
#![deny(unsafe_code)]

use clap::Parser;
use dataplane_apps::kv::{KvArgs, run};
use dataplane_apps::net::run::quit_on_signals;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

fn main() -> anyhow::Result<()> {
    let args = KvArgs::parse();
    dataplane_apps::init_tracing(args.log.log_format);
    let quit = Arc::new(AtomicBool::new(false));
    quit_on_signals(quit.clone())?;
    let s = run(&args, quit)?;
    if args.json {
        println!("{}", serde_json::to_string(&s)?);
    } else {
        let commands: u64 = s.shards.iter().map(|x| x.commands).sum();
        let keys: usize = s.shards.iter().map(|x| x.store.keys).sum();
        println!(
            "dp-kv: {commands} commands in {:.1} s, {keys} keys at the last count",
            s.seconds
        );
    }
    Ok(())
}
