//! The network programs end to end.
//!
//! - Each binary answers `--help`, and runs with `--json`, whose last line
//!   of standard output is one JSON summary.
//! - Over memory ports, in this process: pktgen feeds l3fwd (and l2fwd)
//!   through registered pairs over pools the test holds, so it can check
//!   that packets sent = packets received + drops counted, and that every
//!   mbuf came back once the ports are gone.
//! - l3fwd is fed malformed frames of every kind and must count each under
//!   its reason.
//! - The demo runs to completion with everything accounted for.
//! - With DPDK, l2fwd and l3fwd run on `net_null` (an endless source and a
//!   sink) and `net_ring` (a loopback) vdevs, and pktgen on `net_ring`:
//!   received = sent + drops, and every mbuf of DPDK's pools back. Without
//!   DPDK these print `skip: <reason>` (and fail when `DATAPLANE_REQUIRE`
//!   names dpdk).

mod support;

use clap::Parser;
use dataplane::net::dpdk::{self, EalState};
use dataplane::net::memory::register_pair_with_pools;
use dataplane::net::{BackendChoice, BackendKind, MbufBatch, Port, PortConfig};
use dataplane::require::{self, Capability};
use dataplane_apps::net::frame::{UdpFlow, emit_udp};
use dataplane_apps::net::run::Summary;
use dataplane_apps::net::{l2fwd, l3fwd, pktgen};
use hugepages::mbuf::{MbufPool, MbufPoolConfig};
use serde_json::Value;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

// ---- helpers ----------------------------------------------------------------

/// Runs a program and returns its summary (the last line of stdout).
fn run_bin(exe: &str, args: &[&str]) -> Value {
    let out = Command::new(exe)
        .args(args)
        .output()
        .expect("running the program");
    support::summary(&out, &format!("{exe} {args:?}"))
}

fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

fn json(s: &Summary) -> Value {
    serde_json::to_value(s).expect("a summary serialises")
}

fn pool(name: &str) -> MbufPool {
    MbufPool::new(MbufPoolConfig {
        name: name.into(),
        count: 8192,
        cache_size: 0,
        ..MbufPoolConfig::default()
    })
    .expect("a pool")
}

fn port_cfg() -> PortConfig {
    let mut c = PortConfig::new("memory:unused");
    c.queues = 1;
    c.rx_desc = 1024;
    c
}

/// Registers `a`-`b` over `pool`.
fn pair(a: &str, b: &str, pool: &MbufPool) {
    register_pair_with_pools(a, b, &port_cfg(), pool.clone(), pool.clone()).expect("a pair");
}

fn routes_file(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("{name}-{}.routes", std::process::id()));
    std::fs::write(&path, text).expect("writing a route file");
    path
}

/// Waits for every mbuf of `pool` to come back (the lcore threads drop
/// their ports as they end).
fn all_back(pool: &MbufPool) {
    let t0 = Instant::now();
    while pool.in_use() != 0 && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(pool.in_use(), 0, "mbufs not back in their pool");
}

/// A forwarder (l2fwd or l3fwd) run in a thread of this process for
/// `secs`, and pktgen against it for less, so that the forwarder is still
/// there for every packet pktgen sends and still reading when it stops.
fn against_pktgen(
    forwarder: impl FnOnce() -> Summary + Send + 'static,
    gen_ports: &[&str],
) -> (Value, Value) {
    let fwd = std::thread::spawn(forwarder);
    std::thread::sleep(Duration::from_millis(300));
    let mut argv = vec!["pktgen", "--backend", "memory", "--lcores", "1"];
    for p in gen_ports {
        argv.extend(["--port", p]);
    }
    argv.extend([
        "--rate",
        "200000",
        "--flows",
        "16",
        "--dst-ip",
        "10.1.2.3",
        "--duration",
        "1",
        "--drain-ms",
        "300",
    ]);
    let gen_args = pktgen::PktgenArgs::try_parse_from(argv).expect("pktgen's options");
    let gen_summary =
        pktgen::run(&gen_args, Arc::new(AtomicBool::new(false))).expect("pktgen runs");
    let fwd_summary = fwd.join().expect("the forwarder thread");
    (json(&gen_summary), json(&fwd_summary))
}

// ---- every binary -------------------------------------------------------------

#[test]
fn every_program_has_help() {
    for exe in [
        env!("CARGO_BIN_EXE_l2fwd"),
        env!("CARGO_BIN_EXE_l3fwd"),
        env!("CARGO_BIN_EXE_pktgen"),
        env!("CARGO_BIN_EXE_demo"),
    ] {
        let out = Command::new(exe)
            .arg("--help")
            .output()
            .expect("running --help");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{exe} --help failed");
        assert!(text.contains("--duration"), "{exe}: {text}");
        assert!(text.contains("--json"), "{exe}: {text}");
    }
}

#[test]
fn forwarders_print_a_json_summary_last() {
    // Memory ports whose other ends nobody feeds: nothing moves, but the
    // programs start, stop on time and report.
    let routes = routes_file("json-last", "0.0.0.0/0 1\n");
    let routes = routes.to_str().expect("a UTF-8 temp path");
    for (exe, extra) in [
        (env!("CARGO_BIN_EXE_l2fwd"), vec!["-p", "0x3"]),
        (env!("CARGO_BIN_EXE_l3fwd"), vec!["--routes", routes]),
    ] {
        let mut args = vec![
            "--backend",
            "memory",
            "--port",
            "memory:a",
            "--port",
            "memory:b",
            "--duration",
            "0.3",
            "--json",
        ];
        args.extend(extra);
        let s = run_bin(exe, &args);
        assert_eq!(s["backend"], "memory", "{s}");
        assert_eq!(u(&s, "rx_packets"), 0, "{s}");
        assert!(s["rx_mpps"].is_number() && s["drops"].is_object(), "{s}");
    }
}

// ---- over memory ports, in this process ------------------------------------------

#[test]
fn l3fwd_forwards_pktgen_flows_over_memory_ports() {
    let pool = pool("apps-l3");
    // pktgen l3g0 <-> l3f0 l3fwd l3f1 <-> l3g1 pktgen
    pair("l3g0", "l3f0", &pool);
    pair("l3f1", "l3g1", &pool);
    let routes = routes_file("l3-memory", "10.0.0.0/8 1\n0.0.0.0/0 0\n");
    let args = l3fwd::L3fwdArgs::try_parse_from([
        "l3fwd",
        "--backend",
        "memory",
        "--port",
        "memory:l3f0",
        "--port",
        "memory:l3f1",
        "--routes",
        routes.to_str().expect("UTF-8"),
        "--lcores",
        "1",
        "--duration",
        "2.5",
    ])
    .expect("l3fwd's options");
    let (generated, forwarded) = against_pktgen(
        move || l3fwd::run(&args, Arc::new(AtomicBool::new(false))).expect("l3fwd runs"),
        &["memory:l3g0", "memory:l3g1"],
    );
    let (sent, received) = (u(&generated, "sent"), u(&generated, "received"));
    let drops = u(&forwarded, "drops_total") + u(&generated, "drops_total");
    assert!(sent > 1000, "pktgen sent {sent}");
    assert_eq!(u(&forwarded, "rx_packets"), sent, "l3fwd received all");
    assert_eq!(sent, received + drops, "{generated}\n{forwarded}");
    assert_eq!(u(&generated, "foreign"), 0);
    // Everything routes to port 1, back to pktgen's second port.
    all_back(&pool);
}

#[test]
fn l2fwd_forwards_pktgen_flows_over_memory_ports() {
    l2fwd_over_memory_ports("apps-l2", "l2", &[]);
}

/// dp-top under a pseudo-terminal against l2fwd's telemetry socket:
/// it draws lcores and ports, quits on `q` and restores the cursor; and
/// into a pipe it prints plain frames and stops after `--iterations`.
#[test]
fn dp_top_shows_l2fwd_and_quits_on_q() {
    let prefix = format!("dp-top-test-{}", std::process::id());
    let dir = dataplane::telemetry::runtime_dir(&prefix);
    let socket = dir.join(dataplane::telemetry::SOCKET_NAME);
    let s = socket.clone();
    let viewer = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !s.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let top = env!("CARGO_BIN_EXE_dp-top");
        // Into a pipe: two plain frames.
        let piped = std::process::Command::new(top)
            .args(["--iterations", "2", "--interval", "0.3", "--socket"])
            .arg(&s)
            .output()
            .expect("dp-top runs");
        // Under a pseudo-terminal: redrawn until `q`.
        let pty = nix::pty::openpty(None, None).expect("a pty");
        let fd = |f: &std::os::fd::OwnedFd| std::process::Stdio::from(f.try_clone().unwrap());
        let mut child = std::process::Command::new(top)
            .args(["--interval", "0.3", "--socket"])
            .arg(&s)
            .stdin(fd(&pty.slave))
            .stdout(fd(&pty.slave))
            .stderr(fd(&pty.slave))
            .spawn()
            .expect("dp-top on a pty");
        drop(pty.slave);
        let master = pty.master;
        let reader = {
            let m = master.try_clone().unwrap();
            std::thread::spawn(move || {
                let mut all = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n) = nix::unistd::read(&m, &mut buf) {
                    if n == 0 {
                        break;
                    }
                    all.extend_from_slice(&buf[..n]);
                }
                String::from_utf8_lossy(&all).into_owned()
            })
        };
        std::thread::sleep(Duration::from_millis(1200));
        nix::unistd::write(&master, b"q").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break Some(st);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        drop(master);
        (piped, status, reader.join().unwrap())
    });
    l2fwd_over_memory_ports("apps-l2t", "l2t", &["--telemetry", &prefix]);
    let (piped, status, screen) = viewer.join().unwrap();
    let text = String::from_utf8_lossy(&piped.stdout);
    assert!(
        piped.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&piped.stderr)
    );
    assert!(text.contains("--- 2") && !text.contains("--- 3"), "{text}");
    assert!(!text.contains('\x1b'), "no escapes into a pipe: {text:?}");
    assert!(
        text.contains("memory:l2tf0") && text.contains("busy"),
        "{text}"
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "quit on q: {status:?}\n{screen}"
    );
    assert!(
        screen.contains("\x1b[2J") && screen.contains("memory:l2tf1"),
        "{screen:?}"
    );
    assert!(
        screen.contains("\x1b[?25h"),
        "the cursor is shown again: {screen:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// `--metrics`: scraped while l2fwd runs, the text format has every port
/// and lcore, and its counts are what the summary ends with or less.
#[test]
fn l2fwd_serves_prometheus_metrics() {
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let a = addr.clone();
    let scraper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(&a).expect("the endpoint is up");
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out
    });
    let forwarded = l2fwd_over_memory_ports("apps-l2m", "l2m", &["--metrics", &addr]);
    let scrape = scraper.join().unwrap();
    assert!(scrape.starts_with("HTTP/1.1 200 OK"), "{scrape}");
    assert!(scrape.ends_with("# EOF\n"), "{scrape}");
    let value = |series: &str| -> u64 {
        scrape
            .lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{scrape}"))
    };
    let mut rx = 0;
    for port in ["memory:l2mf0", "memory:l2mf1"] {
        rx += value(&format!(
            "dataplane_port_rx_packets_total{{port=\"{port}\"}}"
        ));
        let _ = value(&format!(
            "dataplane_port_dropped_packets_total{{port=\"{port}\",reason=\"tx_full\"}}"
        ));
    }
    assert!(rx > 0, "{scrape}");
    assert!(
        rx <= u(&forwarded, "rx_packets"),
        "a scrape during the run counts no more than the end"
    );
    assert!(value("dataplane_lcore_busy_cycles_total{lcore=\"1\",role=\"app\"}") > 0);
}

/// The same through an I/O lcore that dispatches to two workers
/// (`--workers 2`): every packet pktgen sent comes back or is counted.
#[test]
fn l2fwd_dispatching_to_workers_over_memory_ports() {
    l2fwd_over_memory_ports("apps-l2w", "l2w", &["--workers", "2"]);
}

fn l2fwd_over_memory_ports(pool_name: &str, tag: &str, extra: &[&str]) -> Value {
    let pool = pool(pool_name);
    let name = |end: &str, i: u32| format!("{tag}{end}{i}");
    pair(&name("g", 0), &name("f", 0), &pool);
    pair(&name("f", 1), &name("g", 1), &pool);
    let (f0, f1) = (
        format!("memory:{}", name("f", 0)),
        format!("memory:{}", name("f", 1)),
    );
    let mut argv = vec![
        "l2fwd",
        "--backend",
        "memory",
        "--port",
        &f0,
        "--port",
        &f1,
        "-p",
        "3",
        "--lcores",
        "1",
        "--duration",
        "2.5",
    ];
    argv.extend(extra);
    let args = l2fwd::L2fwdArgs::try_parse_from(argv).expect("l2fwd's options");
    let (g0, g1) = (
        format!("memory:{}", name("g", 0)),
        format!("memory:{}", name("g", 1)),
    );
    let (generated, forwarded) = against_pktgen(
        move || l2fwd::run(&args, Arc::new(AtomicBool::new(false))).expect("l2fwd runs"),
        &[g0.as_str(), g1.as_str()],
    );
    let (sent, received) = (u(&generated, "sent"), u(&generated, "received"));
    let drops = u(&forwarded, "drops_total") + u(&generated, "drops_total");
    assert!(sent > 1000, "pktgen sent {sent}");
    assert_eq!(sent, received + drops, "{generated}\n{forwarded}");
    assert_eq!(
        u(&forwarded, "rx_packets"),
        u(&forwarded, "tx_packets") + u(&forwarded, "drops_total")
    );
    if extra.contains(&"--workers") {
        let d = &forwarded["dispatch"];
        assert!(
            u(d, "replies") > 1000,
            "the workers did the rewrite: {forwarded}"
        );
        assert_eq!(u(d, "dispatched"), u(d, "replies") + u(d, "reply_dropped"));
    }
    all_back(&pool);
    forwarded
}

// ---- malformed frames -----------------------------------------------------------

fn good_frame(dst: Ipv4Addr, ttl: u8, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    let flow = UdpFlow {
        src_mac: [2, 0, 0, 0, 0, 0x10],
        dst_mac: [2, 0, 0, 0, 0, 0x20],
        src_ip: Ipv4Addr::new(192, 0, 2, 1),
        dst_ip: dst,
        src_port: 4000,
        dst_port: 9,
        ttl,
    };
    emit_udp(&mut b, len, &flow, None).expect("a frame");
    b
}

/// Sends each frame on `port` from its pool.
fn send(port: &mut dyn Port, frames: &[Vec<u8>]) {
    for f in frames {
        let mut batch = MbufBatch::new();
        assert_eq!(port.alloc_burst(1, &mut batch), 1);
        for m in batch.iter_mut() {
            m.append(f.len()).expect("room").copy_from_slice(f);
        }
        assert_eq!(port.tx_burst(&mut batch), 1);
    }
}

#[test]
fn l3fwd_counts_malformed_frames_by_reason() {
    let pool = pool("apps-malformed");
    pair("mal-src", "mal-in", &pool);
    pair("mal-out", "mal-sink", &pool);
    let open = |name: &str| {
        let mut cfg = port_cfg();
        cfg.device = format!("memory:{name}");
        dataplane::net::open(&cfg, BackendChoice::Named(BackendKind::Memory))
            .expect("opening a memory end")
            .value
            .remove(0)
    };
    let (mut src, mut sink) = (open("mal-src"), open("mal-sink"));

    let routed = Ipv4Addr::new(10, 9, 8, 7);
    let good = good_frame(routed, 64, 60);
    let mut bad_checksum = good.clone();
    bad_checksum[24] ^= 0x5a; // IPv4 header checksum
    let mut bad_ihl = good.clone();
    bad_ihl[14] = 0x44; // version 4, IHL 4 words: shorter than a header
    let mut bad_version = good.clone();
    bad_version[14] = 0x65;
    let mut long_total = good.clone();
    long_total[16..18].copy_from_slice(&1000u16.to_be_bytes()); // past the frame
    let mut arp = good.clone();
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    let frames: Vec<(Vec<u8>, &str)> = vec![
        (good.clone(), "forwarded"),
        (good.clone(), "forwarded"),
        (good[..10].to_vec(), "truncated"), // a runt: not even an Ethernet header
        (good[..30].to_vec(), "truncated"), // cut inside the IPv4 header
        (long_total, "truncated"),
        (bad_checksum, "bad_checksum"),
        (bad_ihl, "malformed"),
        (bad_version, "malformed"),
        (arp, "filtered"),
        (good_frame(routed, 1, 60), "ttl_expired"),
        (good_frame(Ipv4Addr::new(172, 16, 0, 1), 64, 60), "no_route"),
        (good_frame(routed, 64, 1400), "oversized"), // over --mtu 1000
    ];
    let bytes: Vec<Vec<u8>> = frames.iter().map(|(f, _)| f.clone()).collect();
    send(src.as_mut(), &bytes);

    let routes = routes_file("malformed", "10.0.0.0/8 1\n");
    let args = l3fwd::L3fwdArgs::try_parse_from([
        "l3fwd",
        "--backend",
        "memory",
        "--port",
        "memory:mal-in",
        "--port",
        "memory:mal-out",
        "--routes",
        routes.to_str().expect("UTF-8"),
        "--mtu",
        "1000",
        "--lcores",
        "1",
        "--duration",
        "0.5",
    ])
    .expect("l3fwd's options");
    let s = json(&l3fwd::run(&args, Arc::new(AtomicBool::new(false))).expect("l3fwd runs"));

    let mut want = std::collections::BTreeMap::<&str, u64>::new();
    for (_, why) in &frames {
        *want.entry(why).or_default() += 1;
    }
    let forwarded = want.remove("forwarded").unwrap_or(0);
    let got: std::collections::BTreeMap<&str, u64> = s["drops"]
        .as_object()
        .expect("drops")
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_u64().expect("a count")))
        .collect();
    assert_eq!(got, want, "{s}");
    assert_eq!(u(&s, "rx_packets"), frames.len() as u64);
    assert_eq!(u(&s, "tx_packets"), forwarded);

    // What was forwarded has its TTL decremented and a valid checksum.
    let mut batch = MbufBatch::new();
    assert_eq!(sink.rx_burst(&mut batch), forwarded as usize);
    for m in batch.drain() {
        let info =
            dataplane::wire::parse_frame_with(m.data(), dataplane::wire::ChecksumMode::Software)
                .expect("a forwarded frame parses, checksum included");
        assert_eq!(m.data()[info.l3_offset + 8], 63, "TTL decremented");
    }
    drop((src, sink));
    all_back(&pool);
}

// ---- the demo -------------------------------------------------------------------

#[test]
fn the_demo_runs_to_completion_and_accounts_for_everything() {
    let s = run_bin(env!("CARGO_BIN_EXE_demo"), &["--duration", "1", "--json"]);
    let generated = u(&s, "generated");
    assert!(generated > 1000, "{s}");
    assert_eq!(s["accounted"], true, "{s}");
    assert_eq!(u(&s, "mbufs_outstanding"), 0, "{s}");
    assert_eq!(generated, u(&s, "delivered") + u(&s, "drops_total"), "{s}");
    for why in ["no_route", "bad_checksum", "truncated", "ttl_expired"] {
        assert!(s["drops"][why].as_u64().unwrap_or(0) > 0, "{why}: {s}");
    }
}

/// `demo --metrics`: each stage's packets and the lcores' counters,
/// scraped while it runs, no more than the summary ends with.
#[test]
fn the_demo_serves_metrics_while_it_runs() {
    let at = format!("127.0.0.1:{}", support::free_port());
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_demo"))
        .args(["--duration", "3", "--json", "--metrics", &at])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("demo");
    let mut text = String::new();
    let mut delivered = 0;
    support::poll_until(150, || {
        text = support::scrape(&at).unwrap_or_default();
        delivered = support::series(&text, "dataplane_port_rx_packets_total{port=\"sink\"}");
        delivered > 0
    });
    assert!(delivered > 0, "{text}");
    assert!(
        support::series(&text, "dataplane_port_tx_packets_total{port=\"generator\"}") > 0,
        "{text}"
    );
    assert!(
        text.contains("dataplane_port_rx_packets_total{port=\"l3fwd\"}"),
        "{text}"
    );
    assert!(text.contains("dataplane_lcore_passes_total{"), "{text}");
    let out = child.wait_with_output().expect("demo");
    let s = support::summary(&out, "demo --metrics");
    assert!(delivered <= u(&s, "delivered"), "{s}");
}

// ---- over DPDK vdevs --------------------------------------------------------------

fn dpdk_or_skip() -> bool {
    let EalState::Unavailable(why) = dpdk::state() else {
        return true;
    };
    require::available_or_skip(Capability::Dpdk, false, &why)
}

/// Runs `exe` on DPDK vdevs (each process its own EAL, `--in-memory`) and
/// checks what every DPDK run must show.
fn on_dpdk(exe: &str, args: &[&str]) -> Value {
    let mut all = vec!["--backend", "dpdk", "--lcores", "1", "--json"];
    all.extend(args);
    let s = run_bin(exe, &all);
    assert_eq!(s["backend"], "dpdk", "{s}");
    // The program also fails on its own when mbufs are missing.
    assert_eq!(u(&s, "mbufs_outstanding"), 0, "{s}");
    s
}

#[test]
fn l2fwd_on_dpdk_null_vdevs() {
    if !dpdk_or_skip() {
        return;
    }
    // net_null: an endless source and a sink.
    let s = on_dpdk(
        env!("CARGO_BIN_EXE_l2fwd"),
        &[
            "--vdev",
            "net_null0",
            "--vdev",
            "net_null1",
            "--duration",
            "0.5",
        ],
    );
    assert_forwarded_or_counted(&s);
}

#[test]
fn l3fwd_on_dpdk_null_vdevs_counts_what_it_cannot_route() {
    if !dpdk_or_skip() {
        return;
    }
    // net_null's frames are not IPv4: every one is dropped, by reason.
    let routes = routes_file("dpdk-null", "0.0.0.0/0 1\n");
    let s = on_dpdk(
        env!("CARGO_BIN_EXE_l3fwd"),
        &[
            "--vdev",
            "net_null0",
            "--vdev",
            "net_null1",
            "--routes",
            routes.to_str().expect("UTF-8"),
            "--duration",
            "0.5",
        ],
    );
    assert_forwarded_or_counted(&s);
}

#[test]
fn pktgen_and_l3fwd_on_dpdk_ring_vdevs() {
    if !dpdk_or_skip() {
        return;
    }
    // net_ring: what is sent on a port comes back on it.
    let s = on_dpdk(
        env!("CARGO_BIN_EXE_pktgen"),
        &[
            "--vdev",
            "net_ring0",
            "--rate",
            "100000",
            "--duration",
            "0.5",
        ],
    );
    let (sent, received) = (u(&s, "sent"), u(&s, "received"));
    assert!(sent > 1000, "{s}");
    assert_eq!(sent, received + u(&s, "drops_total"), "{s}");
    let routes = routes_file("dpdk-ring", "0.0.0.0/0 1\n");
    let s = on_dpdk(
        env!("CARGO_BIN_EXE_l3fwd"),
        &[
            "--vdev",
            "net_ring0",
            "--vdev",
            "net_ring1",
            "--routes",
            routes.to_str().expect("UTF-8"),
            "--duration",
            "0.3",
        ],
    );
    assert_eq!(
        u(&s, "rx_packets"),
        u(&s, "tx_packets") + u(&s, "drops_total"),
        "{s}"
    );
}

/// Something was received, and everything received was sent or counted
/// as a drop.
fn assert_forwarded_or_counted(s: &serde_json::Value) {
    assert!(u(s, "rx_packets") > 0, "{s}");
    assert_eq!(
        u(s, "rx_packets"),
        u(s, "tx_packets") + u(s, "drops_total"),
        "{s}"
    );
}

// ---- telemetry ----------------------------------------------------------------------

/// l2fwd with `--telemetry` on DPDK's null vdevs: DPDK's own
/// `dpdk-telemetry.py` connects to our socket and every command answers as
/// DPDK's would; DPDK's own socket runs beside ours; ours goes when l2fwd
/// stops.
#[test]
fn dpdk_telemetry_py_reads_l2fwd() {
    if !dpdk_or_skip() {
        return;
    }
    let script = match which("dpdk-telemetry.py") {
        Some(s) => s,
        None => {
            let required = std::env::var("DATAPLANE_REQUIRE")
                .is_ok_and(|r| r.split(',').any(|c| c.trim() == "dpdk"));
            assert!(!required, "dpdk-telemetry.py (package dpdk) is needed");
            println!(
                "skip: dpdk-telemetry.py is not installed (scripts/install-deps.sh installs it)"
            );
            return;
        }
    };
    let rt = std::env::temp_dir().join(format!("dp-telemetry-rt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&rt);
    std::fs::create_dir_all(&rt).unwrap();
    let prefix = "l2fwd-test";
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_l2fwd"))
        .env("RUNTIME_DIRECTORY", &rt)
        .args([
            "--vdev",
            "net_null0",
            "--vdev",
            "net_null1",
            "--backend",
            "dpdk",
        ])
        .args([
            "--lcores",
            "1",
            "--duration",
            "4",
            "--json",
            "--telemetry",
            prefix,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting l2fwd");
    let ours = rt.join("dpdk").join(prefix).join("dpdk_telemetry.v2");
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while !ours.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(ours.exists(), "no socket at {}", ours.display());
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&ours), 0o600);
    assert_eq!(mode(ours.parent().unwrap()), 0o700);

    let ask = |prefix: &str, commands: &[&str]| -> Vec<Value> {
        let mut c = std::process::Command::new(&script)
            .env("RUNTIME_DIRECTORY", &rt)
            .args(["-f", prefix])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("running dpdk-telemetry.py");
        {
            use std::io::Write;
            let mut stdin = c.stdin.take().unwrap();
            for cmd in commands {
                writeln!(stdin, "{cmd}").unwrap();
            }
        }
        let out = c.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<Value> = text
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(
            lines.len(),
            commands.len(),
            "one answer per command:\n{text}"
        );
        lines
    };
    let a = ask(
        prefix,
        &[
            "/",
            "/info",
            "/ethdev/list",
            "/ethdev/stats,0",
            "/ethdev/stats,1",
            "/ethdev/stats,9",
            "/ethdev/info,0",
            "/eal/lcore/list",
            "/eal/lcore/info,1",
            "/eal/lcore/usage",
            "/help,/eal/lcore/usage",
            "/no/such/command",
        ],
    );
    let list: Vec<&str> = a[0]["/"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for cmd in [
        "/ethdev/list",
        "/ethdev/stats",
        "/eal/lcore/list",
        "/eal/lcore/info",
        "/eal/lcore/usage",
    ] {
        assert!(list.contains(&cmd), "{cmd} listed: {list:?}");
    }
    assert_eq!(a[1]["/info"]["max_output_len"], 16384);
    assert_eq!(a[2]["/ethdev/list"], serde_json::json!([0, 1]));
    for s in [&a[3]["/ethdev/stats"], &a[4]["/ethdev/stats"]] {
        assert!(u(s, "ipackets") > 0, "{s}");
        assert!(u(s, "opackets") > 0, "{s}");
    }
    assert_eq!(a[5]["/ethdev/stats"], Value::Null, "no port 9");
    assert_eq!(a[6]["/ethdev/info"]["name"], "net_null0");
    let lcores = a[7]["/eal/lcore/list"].as_array().unwrap().clone();
    assert!(lcores.contains(&serde_json::json!(1)), "{lcores:?}");
    assert_eq!(a[8]["/eal/lcore/info"]["lcore_id"], 1);
    assert!(
        u(&a[8]["/eal/lcore/info"], "busy_cycles") > 0,
        "the data lcore is busy"
    );
    let usage = &a[9]["/eal/lcore/usage"];
    assert_eq!(usage["lcore_ids"].as_array().unwrap().len(), lcores.len());
    assert_eq!(usage["busy_cycles"].as_array().unwrap().len(), lcores.len());
    assert!(a[10]["/help"]["/eal/lcore/usage"].is_string());
    assert_eq!(a[11]["/no/such/command"], Value::Null);

    // DPDK's own socket, beside ours, under the EAL's file prefix.
    let dpdk_prefix = std::fs::read_dir(rt.join("dpdk"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n != prefix && rt.join("dpdk").join(n).join("dpdk_telemetry.v2").exists())
        .expect("DPDK's telemetry socket beside ours");
    let d = ask(&dpdk_prefix, &["/ethdev/list"]);
    assert_eq!(d[0]["/ethdev/list"], serde_json::json!([0, 1]));

    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!ours.exists(), "the socket goes with the program");
    let _ = std::fs::remove_dir_all(&rt);
}

/// The path of `program` on `PATH`.
fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}
