//! gpu-offload end to end: the pipeline runs on each backend, moves
//! packets, loses none (the binary fails if an mbuf is not returned), and
//! prints one JSON summary as the last line of stdout.

use dataplane::accel;
use dataplane::net::dpdk::{self, EalState};
use dataplane::require::{self, Capability};
use std::process::Command;
use support::{frame, read_pcap, summary, write_pcap};

mod support;

fn run(backend: &str) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_gpu-offload"))
        .args([
            "--backend",
            backend,
            "--duration",
            "0.5",
            "--batch",
            "40",
            "--json",
        ])
        .output()
        .expect("running gpu-offload");
    summary(&out, &format!("gpu-offload --backend {backend}"))
}

fn check(s: &serde_json::Value, backend: &str) {
    println!("{s}");
    assert_eq!(s["backend"], backend);
    assert!(s["packets"].as_u64().unwrap_or(0) > 0, "packets moved");
    assert!(s["batches"].as_u64().unwrap_or(0) > 0);
    assert_eq!(s["failed_batches"], 0);
    // One packet in 64 carries a signature; the RSS hashes spread flows.
    assert!(s["signature_hits"].as_u64().unwrap_or(0) > 0);
    assert!(s["distinct_rss_hashes"].as_u64().unwrap_or(0) > 100);
    assert!(
        s["batch_latency"]["p99_us"].as_f64().unwrap_or(-1.0)
            >= s["batch_latency"]["p50_us"].as_f64().unwrap_or(0.0)
    );
}

#[test]
fn cpu_backend() {
    check(&run("cpu"), "cpu");
}

#[test]
fn vulkan_backend() {
    let probe = accel::probe();
    if !require::available_or_skip(Capability::Vulkan, probe.available, &probe.reason) {
        return;
    }
    let s = run("vulkan");
    check(&s, "vulkan");
    let import = accel::discover()
        .devices
        .iter()
        .any(|d| d.external_memory_host_alignment.is_some());
    if import {
        // The pool is registered: packets are read where they were written.
        assert_eq!(s["buffer_path"], "imported");
        assert_eq!(s["bytes_staged"], 0);
    }
}

// ---- on a real port: DPDK's pcap PMD replaying a file -----------------------

/// Receives from DPDK's `net_pcap` (a file of known frames, one in ten
/// with a signature), runs the kernels on the CPU twin, drops what carries
/// a signature and sends the rest out through the same port into another
/// file: every frame is accounted for, the output has exactly the clean
/// frames, unchanged, and tcpdump reads it.
#[test]
fn receives_from_a_port_and_acts_on_the_verdict() {
    let EalState::Unavailable(why) = dpdk::state() else {
        return run_pcap();
    };
    require::available_or_skip(Capability::Dpdk, false, &why);
}

fn run_pcap() {
    const N: u32 = 1000;
    let dir = std::env::temp_dir().join(format!("gpu-offload-pcap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (input, output) = (dir.join("in.pcap"), dir.join("out.pcap"));
    let frames: Vec<Vec<u8>> = (0..N).map(|i| frame(i, i % 10 == 0)).collect();
    write_pcap(&input, &frames);
    let vdev = format!(
        "net_pcap0,rx_pcap={},tx_pcap={}",
        input.display(),
        output.display()
    );
    let out = Command::new(env!("CARGO_BIN_EXE_gpu-offload"))
        .args(["--backend", "cpu", "--net", "dpdk", "--vdev", &vdev])
        .args(["--duration", "1", "--batch", "32", "--json"])
        .output()
        .expect("running gpu-offload");
    let s = summary(&out, "gpu-offload on net_pcap");
    println!("{s}");
    assert_eq!(s["ports"][0]["backend"], "dpdk", "{s}");
    assert_eq!(s["received"], N, "{s}");
    assert_eq!(s["dropped_signature"], N / 10, "{s}");
    assert_eq!(s["forwarded"], N - N / 10, "{s}");
    assert_eq!(s["dropped_tx"], 0, "{s}");
    // 100 source ports: the RSS hashes the device computed tell them apart.
    assert!(s["distinct_rss_hashes"].as_u64().unwrap_or(0) >= 90, "{s}");

    let sent = read_pcap(&output);
    let clean: Vec<&Vec<u8>> = frames
        .iter()
        .filter(|f| !f.windows(7).any(|w| w == b"/bin/sh"))
        .collect();
    assert_eq!(sent.len(), clean.len());
    for (got, want) in sent.iter().zip(clean) {
        assert_eq!(got, want, "a frame changed on its way through");
    }
    // A real reader agrees.
    if let Some(n) = support::tcpdump_count(&output) {
        assert_eq!(n, u64::from(N - N / 10), "tcpdump's count");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- over AF_PACKET on a veth pair, with pktgen on the other end ------------

/// gpu-offload on one end of a veth pair (AF_PACKET), pktgen on the other
/// at a bounded rate: every packet pktgen sends is received, judged (none
/// carries a signature) and sent back, and pktgen gets each one back.
#[test]
fn af_packet_over_veth_with_pktgen_on_the_other_end() {
    use dataplane::net::netns::{self, Netns, unique_name, veth_pair};
    let p = netns::probe();
    if !require::available_or_skip(Capability::Netns, p.available, &p.reason) {
        return;
    }
    let a = Netns::create(&unique_name("goa")).expect("namespace a");
    let b = Netns::create(&unique_name("gob")).expect("namespace b");
    veth_pair(&a, "veth0", &b, "veth0").expect("veth pair");
    let mut offload = Command::new("ip")
        .args(["netns", "exec", b.name(), env!("CARGO_BIN_EXE_gpu-offload")])
        .args(["--backend", "cpu", "--net", "af_packet", "--port", "veth0"])
        .args(["--duration", "5", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting gpu-offload");
    // Wait until its receive socket is bound to the interface in
    // namespace b (/proc/net/packet lists a namespace's AF_PACKET sockets:
    // protocol ETH_P_ALL, running): from then on frames land in its ring,
    // polled or not. It exits on its own after its run, so this ends.
    loop {
        let sockets = b.exec(&["cat", "/proc/net/packet"]).unwrap_or_default();
        let bound = sockets.lines().skip(1).any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(3) == Some(&"0003") && f.get(5) == Some(&"1")
        });
        if bound {
            break;
        }
        if offload.try_wait().expect("gpu-offload's status").is_some() {
            let out = offload.wait_with_output().expect("its output");
            panic!(
                "gpu-offload ended before its socket was bound: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let gen_out = Command::new("ip")
        .args(["netns", "exec", a.name(), env!("CARGO_BIN_EXE_pktgen")])
        .args(["--backend", "af_packet", "--port", "veth0"])
        .args(["--rate", "10000", "--duration", "1", "--json"])
        .output()
        .expect("running pktgen");
    let out = offload.wait_with_output().expect("gpu-offload ends");
    let (g, s) = (summary(&gen_out, "pktgen"), summary(&out, "gpu-offload"));
    println!("pktgen: {g}\ngpu-offload: {s}");
    let sent = g["sent"].as_u64().expect("pktgen's count sent");
    assert!(sent > 1000, "{g}");
    assert_eq!(s["ports"][0]["backend"], "af_packet", "{s}");
    // The kernel may add a few frames of its own (IPv6 neighbour
    // discovery); all of pktgen's arrive.
    let received = s["received"].as_u64().unwrap_or(0);
    assert!(received >= sent, "received {received} of {sent}: {s}");
    assert_eq!(s["dropped_signature"], 0, "{s}");
    assert_eq!(s["forwarded"], s["received"], "{s}");
    assert_eq!(g["received"], sent, "every packet came back: {g}");
    assert_eq!(g["lost"], 0, "{g}");
}

/// `/metrics` scraped while it runs: the accelerator's counters and its
/// batch latency histogram move, and end no higher than the summary's.
#[test]
fn metrics_are_served_while_it_runs() {
    let port = support::free_port();
    let at = format!("127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_gpu-offload"))
        .args([
            "--backend",
            "cpu",
            "--duration",
            "3",
            "--batch",
            "40",
            "--json",
        ])
        .args(["--metrics", &at])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("running gpu-offload");
    let mut text = String::new();
    let seen = support::poll_until(100, || {
        text = support::scrape(&at).unwrap_or_default();
        support::series(&text, "dataplane_accel_batch_latency_seconds_count") > 0
            && support::series(&text, "dataplane_accel_completed_total") > 0
    });
    assert!(seen, "{text}");
    assert!(
        text.contains("# TYPE dataplane_accel_batch_latency_seconds histogram"),
        "{text}"
    );
    assert!(
        support::series(&text, "gpu_offload_received_total") > 0,
        "{text}"
    );
    assert!(text.contains("dataplane_lcore_passes_total{"), "{text}");
    let batches = support::series(&text, "dataplane_accel_batch_latency_seconds_count");
    let out = child.wait_with_output().expect("gpu-offload");
    let s = summary(&out, "gpu-offload --metrics");
    assert!(s["batches"].as_u64().unwrap_or(0) >= batches, "{s}");
}
