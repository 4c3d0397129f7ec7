//! The user-space TCP/IP stack against itself over a memory port pair:
//! a server stack on one pinned thread, a client stack on another, each
//! owning its end of the link, as two lcores would.
//!
//! ```text
//! stack-bench bulk SERVER_CPU CLIENT_CPU SECONDS
//!     One connection; the client writes as fast as the windows allow and
//!     the server consumes. After a 0.3 s warm-up, counts SECONDS of bytes
//!     received and prints {"mode": "bulk", "gbps"}.
//! stack-bench rr SERVER_CPU CLIENT_CPU CONNS SIZE SECONDS
//!     CONNS connections, each with one SIZE-byte request outstanding; the
//!     server echoes. Prints {"mode": "rr", "conns", "rps", "p50_us",
//!     "p99_us"} as transport-bench's client does.
//! ```
//!
//! `scripts/bench-stack.sh` runs it beside Linux's TCP over loopback on
//! the same two cpus (iperf3 for bulk; transport-bench's client against
//! the C epoll echo server for request/response).

use dataplane::net::memory::MemoryPort;
use dataplane::net::{Port, PortConfig};
use dataplane::transport::Event;
use dataplane::transport::stack::{Stack, StackConfig};
use dataplane_benches::cpu::pin_to_cpu;
use hugepages::mbuf::{MbufPool, MbufPoolConfig};
use std::net::SocketAddrV4;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn usage() -> ! {
    eprintln!(
        "usage: stack-bench bulk SERVER_CPU CLIENT_CPU SECONDS\n       stack-bench rr SERVER_CPU CLIENT_CPU CONNS SIZE SECONDS"
    );
    std::process::exit(2)
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> T {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| usage())
}

fn config(last: u8) -> StackConfig {
    let mut c = StackConfig::new(format!("10.0.0.{last}/24").parse().expect("cidr"));
    // Buffers as Linux's defaults reach under load (tcp_rmem/tcp_wmem
    // autotune to a few MiB); 1 MiB each here.
    c.rx_buffer = 1 << 20;
    c.tx_buffer = 1 << 20;
    c.mtu = std::env::var("STACK_BENCH_MTU")
        .ok()
        .and_then(|m| m.parse().ok())
        .or(Some(9000));
    c
}

fn pin(cpu: usize) {
    if let Err(e) = pin_to_cpu(cpu) {
        eprintln!("stack-bench: pinning to cpu {cpu}: {e}");
    }
}

/// The server: accepts, and echoes (`echo`) or consumes what arrives;
/// counts the bytes received.
fn server<P: Port>(mut s: Stack<P>, echo: bool, stop: &AtomicBool, received: &AtomicU64) {
    s.listen(80).expect("listen");
    let mut total = 0u64;
    while !stop.load(Ordering::Relaxed) {
        s.poll();
        while let Some(ev) = s.next_event() {
            if let Event::Readable(c) | Event::Writable(c) = ev {
                let Ok(data) = s.peek(c) else { continue };
                let n = if echo {
                    let data = data.to_vec();
                    s.write(c, &data).unwrap_or(0)
                } else {
                    data.len()
                };
                total += n as u64;
                let _ = s.consume(c, n);
            }
        }
        s.flush();
        received.store(total, Ordering::Relaxed);
    }
}

fn bulk(server_cpu: usize, client_cpu: usize, secs: f64) {
    let (a, b) = ports();
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let srv = {
        let (stop, received) = (stop.clone(), received.clone());
        std::thread::spawn(move || {
            pin(server_cpu);
            let s = Stack::new(b, config(2)).expect("stack");
            server(s, false, &stop, &received);
        })
    };
    pin(client_cpu);
    let mut s = Stack::new(a, config(1)).expect("stack");
    let c = s
        .connect(SocketAddrV4::new([10, 0, 0, 2].into(), 80))
        .expect("connect");
    let chunk = vec![0x5au8; 256 << 10];
    let start = Instant::now();
    let warm = Duration::from_millis(300);
    let span = Duration::from_secs_f64(secs);
    let mut first: Option<(Instant, u64)> = None;
    let result;
    loop {
        s.poll();
        while let Some(ev) = s.next_event() {
            if let Event::Closed(_, why) = ev {
                eprintln!("stack-bench: the connection closed: {why:?}");
                std::process::exit(1);
            }
        }
        let _ = s.write(c, &chunk);
        s.flush();
        let now = Instant::now();
        match first {
            None if now - start >= warm => first = Some((now, received.load(Ordering::Relaxed))),
            Some((t0, b0)) if now - t0 >= span => {
                let bytes = received.load(Ordering::Relaxed) - b0;
                result = bytes as f64 * 8.0 / (now - t0).as_secs_f64() / 1e9;
                break;
            }
            _ => {}
        }
        if now - start > span + Duration::from_secs(10) {
            eprintln!("stack-bench: no progress");
            std::process::exit(1);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = srv.join();
    println!(
        "{}",
        serde_json::json!({ "mode": "bulk", "gbps": (result * 100.0).round() / 100.0 })
    );
}

/// The link: a memory port pair whose mbufs hold a jumbo frame (the
/// memory port's MTU is 9,000; Linux's loopback has 65,536).
fn ports() -> (MemoryPort, MemoryPort) {
    // STACK_BENCH_OFFLOAD: the link carries checksums as a virtio link
    // (and Linux's loopback) does, so neither stack computes them.
    let cfg = PortConfig::new("stack-bench")
        .with_descriptors(1024, 1024)
        .with_tx_checksum(std::env::var_os("STACK_BENCH_OFFLOAD").is_some());
    let pool = |end: &str| {
        MbufPool::new(MbufPoolConfig {
            name: format!("stack-bench-{end}"),
            count: 16384,
            cache_size: 256,
            data_room: 128 + 9216,
            ..MbufPoolConfig::default()
        })
        .expect("pool")
    };
    let (mut a, mut b) =
        MemoryPort::pair_with_pools(&cfg, pool("a"), pool("b")).expect("memory pair");
    (a.remove(0), b.remove(0))
}

fn rr(server_cpu: usize, client_cpu: usize, conns: usize, size: usize, secs: f64) {
    let (a, b) = ports();
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let srv = {
        let (stop, received) = (stop.clone(), received.clone());
        std::thread::spawn(move || {
            pin(server_cpu);
            let s = Stack::new(b, config(2)).expect("stack");
            server(s, true, &stop, &received);
        })
    };
    pin(client_cpu);
    let mut s = Stack::new(a, config(1)).expect("stack");
    let msg = vec![0x5au8; size];
    let mut slot = std::collections::HashMap::new();
    for i in 0..conns {
        let c = s
            .connect(SocketAddrV4::new([10, 0, 0, 2].into(), 80))
            .expect("connect");
        slot.insert(c, i);
    }
    let mut sent_at = vec![Instant::now(); conns];
    let mut lat: Vec<u32> = Vec::with_capacity(1 << 20);
    let mut up = 0;
    let mut done = 0u64;
    let span = Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut warm: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let measuring = warm.is_some_and(|w| now >= w);
        if warm.is_some_and(|w| now >= w + span) {
            break;
        }
        if warm.is_none() && now - start > Duration::from_secs(10) {
            eprintln!("stack-bench: {up} of {conns} connections up");
            std::process::exit(1);
        }
        s.poll();
        while let Some(ev) = s.next_event() {
            match ev {
                Event::Connected(c) => {
                    up += 1;
                    sent_at[slot[&c]] = Instant::now();
                    let _ = s.write(c, &msg);
                    if up == conns {
                        warm = Some(Instant::now() + Duration::from_millis(300));
                    }
                }
                Event::Readable(c) => {
                    let held = s.peek(c).map(<[u8]>::len).unwrap_or(0);
                    if held < size {
                        continue;
                    }
                    let whole = held / size * size;
                    let _ = s.consume(c, whole);
                    let i = slot[&c];
                    let now = Instant::now();
                    if measuring {
                        done += (whole / size) as u64;
                        if lat.len() < lat.capacity() {
                            lat.push((now - sent_at[i]).as_nanos().min(u128::from(u32::MAX)) as u32);
                        }
                    }
                    sent_at[i] = now;
                    let _ = s.write(c, &msg);
                }
                Event::Closed(_, why) => {
                    eprintln!("stack-bench: a connection failed: {why:?}");
                    std::process::exit(1);
                }
                _ => {}
            }
        }
        s.flush();
    }
    stop.store(true, Ordering::Relaxed);
    let _ = srv.join();
    lat.sort_unstable();
    let q = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
        f64::from(lat[i]) / 1000.0
    };
    println!(
        "{}",
        serde_json::json!({
            "mode": "rr",
            "conns": conns,
            "rps": (done as f64 / span.as_secs_f64()).round(),
            "p50_us": (q(0.50) * 10.0).round() / 10.0,
            "p99_us": (q(0.99) * 10.0).round() / 10.0,
        })
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("bulk") => bulk(arg(&args, 2), arg(&args, 3), arg(&args, 4)),
        Some("rr") => rr(
            arg(&args, 2),
            arg(&args, 3),
            arg(&args, 4),
            arg(&args, 5),
            arg(&args, 6),
        ),
        _ => usage(),
    }
}
