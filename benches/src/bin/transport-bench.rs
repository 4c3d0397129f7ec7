//! Request/response over TCP on loopback: the servers that
//! `scripts/bench-transport.sh` compares, and the one client that loads
//! them all.
//!
//! ```text
//! transport-bench server ENGINE ADDR CPU SECONDS
//!     ENGINE: io_uring | epoll (our transport) | tokio (a current-thread
//!     runtime, one task per connection: the echo server a Rust user
//!     would write instead). Echoes every byte; exits after SECONDS.
//! transport-bench client ADDR CPU CONNS SIZE SECONDS
//!     CONNS connections, each with one SIZE-byte request outstanding;
//!     after a 0.3 s warm-up counts SECONDS of responses and prints one
//!     JSON line: {"conns", "rps", "p50_us", "p99_us"}.
//! ```
//!
//! The client is our transport on io_uring (epoll where io_uring does not
//! run), the same for every server, pinned to its own cpu.

use dataplane::backend::Choice;
use dataplane::transport::{Config, EngineKind, Event, Transport};
use dataplane_benches::cpu::pin_to_cpu;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn usage() -> ! {
    eprintln!(
        "usage: transport-bench server io_uring|epoll|tokio ADDR CPU SECONDS\n       transport-bench client ADDR CPU CONNS SIZE SECONDS"
    );
    std::process::exit(2)
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> T {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| usage())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("server") => {
            let engine = args.get(2).cloned().unwrap_or_else(|| usage());
            let addr: SocketAddr = arg(&args, 3);
            let cpu: usize = arg(&args, 4);
            let secs: u64 = arg(&args, 5);
            if let Err(e) = pin_to_cpu(cpu) {
                eprintln!("transport-bench: pinning to cpu {cpu}: {e}");
            }
            let until = Instant::now() + Duration::from_secs(secs);
            match engine.as_str() {
                "tokio" => tokio_server(addr, until),
                "io_uring" => ours_server(EngineKind::IoUring, addr, until),
                "epoll" => ours_server(EngineKind::Epoll, addr, until),
                _ => usage(),
            }
        }
        Some("client") => {
            let addr: SocketAddr = arg(&args, 2);
            let cpu: usize = arg(&args, 3);
            let conns: usize = arg(&args, 4);
            let size: usize = arg(&args, 5);
            let secs: f64 = arg(&args, 6);
            if let Err(e) = pin_to_cpu(cpu) {
                eprintln!("transport-bench: pinning to cpu {cpu}: {e}");
            }
            client(addr, conns, size, Duration::from_secs_f64(secs));
        }
        _ => usage(),
    }
}

fn transport(kind: EngineKind) -> Transport {
    Transport::new(Config {
        engine: Choice::Named(kind),
        ..Config::default()
    })
    .unwrap_or_else(|e| {
        eprintln!("transport-bench: {e}");
        std::process::exit(1)
    })
}

/// Our echo server: a poll-mode loop on one lcore.
fn ours_server(kind: EngineKind, addr: SocketAddr, until: Instant) {
    let mut t = transport(kind);
    if let Err(e) = t.listen(addr) {
        eprintln!("transport-bench: {e}");
        std::process::exit(1);
    }
    // Busy time, as DPDK's `/eal/lcore/usage` counts it: the passes that
    // found work, with the handling of what they found. Printed (to stderr,
    // cumulative) every 100 ms, so that a reader can take the difference
    // over a window: the CPU time a spinning server would not report.
    let mut busy_ns = 0u64;
    let mut next_print = Instant::now();
    let mut pass = 0u32;
    loop {
        let t0 = Instant::now();
        let n = match t.poll() {
            Ok(n) => n,
            Err(_) => std::process::exit(1),
        };
        while let Some(ev) = t.next_event() {
            match ev {
                Event::Readable(c) | Event::Writable(c) => {
                    let Ok(data) = t.peek(c) else { continue };
                    // Echo what the send buffer takes; the rest waits.
                    let data = data.to_owned();
                    if let Ok(n) = t.write(c, &data) {
                        let _ = t.consume(c, n);
                    }
                }
                Event::PeerClosed(c) => {
                    let _ = t.close(c);
                }
                _ => {}
            }
        }
        if n > 0 {
            busy_ns += t0.elapsed().as_nanos() as u64;
        }
        pass = pass.wrapping_add(1);
        if pass.is_multiple_of(1024) {
            let now = Instant::now();
            if now > until {
                return;
            }
            if now >= next_print {
                next_print = now + Duration::from_millis(100);
                eprintln!(
                    "{}",
                    serde_json::json!({ "busy_ns": busy_ns, "rx_bytes": t.stats().rx_bytes })
                );
            }
        }
    }
}

/// Tokio's echo server on a current-thread runtime.
fn tokio_server(addr: SocketAddr, until: Instant) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap_or_else(|e| {
            eprintln!("transport-bench: tokio: {e}");
            std::process::exit(1)
        });
    rt.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("transport-bench: bind {addr}: {e}");
                std::process::exit(1)
            }
        };
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
            if Instant::now() > until {
                return;
            }
        }
    });
}

/// The load: `conns` connections, one request of `size` bytes outstanding
/// on each; a response is complete when `size` bytes are back.
fn client(addr: SocketAddr, conns: usize, size: usize, span: Duration) {
    let kind = if Transport::new(Config {
        engine: Choice::Named(EngineKind::IoUring),
        ..Config::default()
    })
    .is_ok()
    {
        EngineKind::IoUring
    } else {
        EngineKind::Epoll
    };
    let mut t = transport(kind);
    let msg = vec![0x5au8; size];
    let mut sent_at = vec![Instant::now(); conns];
    let mut slot_of = std::collections::HashMap::new();
    let start = Instant::now();
    for i in 0..conns {
        match t.connect(addr) {
            Ok(c) => {
                slot_of.insert(c, i);
            }
            Err(e) => {
                eprintln!("transport-bench: connect: {e}");
                std::process::exit(1);
            }
        }
    }
    let mut up = 0;
    let mut lat: Vec<u32> = Vec::with_capacity(1 << 20);
    let mut per_conn = vec![0u64; conns];
    let mut done = 0u64;
    // The warm-up starts when every connection is up.
    let mut warm: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let measuring = warm.is_some_and(|w| now >= w);
        if warm.is_some_and(|w| now >= w + span) {
            break;
        }
        if warm.is_none() && start.elapsed() > Duration::from_secs(10) {
            eprintln!("transport-bench: {up} of {conns} connections up");
            std::process::exit(1);
        }
        if t.poll().is_err() {
            std::process::exit(1);
        }
        while let Some(ev) = t.next_event() {
            match ev {
                Event::Connected(c) => {
                    up += 1;
                    sent_at[slot_of[&c]] = Instant::now();
                    let _ = t.write(c, &msg);
                    if up == conns {
                        warm = Some(Instant::now() + Duration::from_millis(300));
                    }
                }
                Event::Readable(c) => {
                    let held = t.peek(c).map(<[u8]>::len).unwrap_or(0);
                    if held < size {
                        continue;
                    }
                    let whole = held / size * size;
                    let _ = t.consume(c, whole);
                    let i = slot_of[&c];
                    let now = Instant::now();
                    if measuring {
                        done += (whole / size) as u64;
                        per_conn[i] += (whole / size) as u64;
                        if lat.len() < lat.capacity() {
                            lat.push(
                                (now - sent_at[i]).as_nanos().min(u128::from(u32::MAX)) as u32,
                            );
                        }
                    }
                    sent_at[i] = now;
                    let _ = t.write(c, &msg);
                }
                Event::Closed(_, why) => {
                    eprintln!("transport-bench: a connection failed: {why:?}");
                    std::process::exit(1);
                }
                _ => {}
            }
        }
    }
    lat.sort_unstable();
    let q = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
        f64::from(lat[i]) / 1000.0
    };
    let rps = done as f64 / span.as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "conns": conns,
            "client_engine": kind.to_string(),
            "rps": rps.round(),
            "p50_us": (q(0.50) * 10.0).round() / 10.0,
            "p99_us": (q(0.99) * 10.0).round() / 10.0,
            "min_conn": per_conn.iter().min(),
            "max_conn": per_conn.iter().max(),
        })
    );
}
