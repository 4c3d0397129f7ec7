//! An HTTP/1.1 server, one shard per lcore, shared nothing: static and
//! JSON routes, an echo route, files served from memory, and `/metrics`.
//!
//! ```text
//! dp-http --listen 127.0.0.1:8080 --cpus 0-1 --files ./public --stats
//! ```
#![deny(unsafe_code)]

use clap::Parser;
use dataplane_apps::http::{HttpArgs, run};
use dataplane_apps::net::run::quit_on_signals;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

fn main() -> anyhow::Result<()> {
    let args = HttpArgs::parse();
    dataplane_apps::init_tracing(args.log.log_format);
    let quit = Arc::new(AtomicBool::new(false));
    quit_on_signals(quit.clone())?;
    let s = run(&args, quit)?;
    if args.json {
        println!("{}", serde_json::to_string(&s)?);
    } else {
        println!(
            "dp-http: {} requests ({} refused) in {:.1} s",
            s.requests, s.refused, s.seconds
        );
    }
    Ok(())
}
