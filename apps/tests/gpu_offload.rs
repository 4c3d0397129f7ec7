//! gpu-offload end to end: the pipeline runs on each backend, moves
//! packets, loses none (the binary fails if an mbuf is not returned), and
//! prints one JSON summary as the last line of stdout.

use dataplane::accel;
use dataplane::net::dpdk::{self, EalState};
use dataplane::require::{self, Capability};
use std::process::{Command, Output};

/// The JSON summary a program printed as its last line of stdout, after
/// checking that it succeeded.
fn summary(out: &Output, what: &str) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{what} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().expect("a summary line");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{what}: {e}: {last}"))
}

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

/// A UDP/IPv4 frame of 128 bytes; `signature` puts `/bin/sh` in its
/// payload.
fn frame(i: u32, signature: bool) -> Vec<u8> {
    let mut payload: Vec<u8> = (0..86u32).map(|k| (i + k) as u8).collect();
    if signature {
        payload[10..17].copy_from_slice(b"/bin/sh");
    }
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 8, 0];
    let mut ip = [
        0x45u8, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 1, 0, 2,
    ];
    ip[2..4].copy_from_slice(&(20 + 8 + payload.len() as u16).to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&(1024 + (i % 100) as u16).to_be_bytes());
    f.extend_from_slice(&4789u16.to_be_bytes());
    f.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&payload);
    f
}

/// A classic pcap file of `frames`.
fn write_pcap(path: &std::path::Path, frames: &[Vec<u8>]) {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    for v in [0u32, 0, 65535, 1] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for (i, f) in frames.iter().enumerate() {
        for v in [1u32, i as u32, f.len() as u32, f.len() as u32] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(f);
    }
    std::fs::write(path, out).expect("writing the pcap");
}

/// The packets of a pcap file (either timestamp resolution).
fn read_pcap(path: &std::path::Path) -> Vec<Vec<u8>> {
    let b = std::fs::read(path).expect("reading the pcap");
    assert!(b.len() >= 24, "no pcap header");
    let magic = u32::from_le_bytes(b[0..4].try_into().unwrap());
    assert!(
        matches!(magic, 0xa1b2_c3d4 | 0xa1b2_3c4d),
        "magic {magic:#x}"
    );
    let mut at = 24;
    let mut out = Vec::new();
    while at + 16 <= b.len() {
        let len = u32::from_le_bytes(b[at + 8..at + 12].try_into().unwrap()) as usize;
        out.push(b[at + 16..at + 16 + len].to_vec());
        at += 16 + len;
    }
    out
}

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
    // A real reader agrees. tcpdump comes with scripts/install-deps.sh;
    // where it is missing the check says so, and fails wherever
    // DATAPLANE_REQUIRE asks for DPDK (CI, which installs it).
    match Command::new("tcpdump")
        .args(["--count", "-r"])
        .arg(&output)
        .output()
    {
        Ok(t) => {
            let text = String::from_utf8_lossy(&t.stdout).to_string()
                + &String::from_utf8_lossy(&t.stderr);
            assert!(
                text.contains(&format!("{} packets", N - N / 10)),
                "tcpdump: {text}"
            );
        }
        Err(e) => {
            let required = std::env::var("DATAPLANE_REQUIRE")
                .is_ok_and(|r| r.split(',').any(|c| c.trim() == "dpdk"));
            assert!(!required, "tcpdump is needed to read the output: {e}");
            println!("skip: tcpdump: {e} (scripts/install-deps.sh installs it)");
        }
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
