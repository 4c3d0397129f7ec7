//! dp-capture end to end: packets from a generator or a real port,
//! matched on the accelerator, written as pcapng segments through a block
//! queue. tcpdump and tshark read every segment and count what the index
//! says; every packet written carries the CRC32C the accelerator computed
//! (checked against the frame's bytes); the counts add up.

use dataplane::accel::kernel::crc32c;
use dataplane::net::dpdk::{self, EalState};
use dataplane::require::{self, Capability};
use std::path::{Path, PathBuf};
use std::process::Command;
use support::{frame, reader_count, summary, write_pcap};

mod support;

/// A packet as read back from a pcapng file.
struct Epb {
    interface: u32,
    timestamp_ns: u64,
    data: Vec<u8>,
    comment: String,
}

/// Walks a little-endian pcapng file: checks each block's two lengths and
/// returns the Enhanced Packet Blocks.
fn read_pcapng(path: &Path) -> Vec<Epb> {
    let b = std::fs::read(path).expect("reading the capture");
    let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    assert_eq!(
        u32_at(0),
        0x0A0D_0D0A,
        "{}: no section header",
        path.display()
    );
    assert_eq!(u32_at(8), 0x1A2B_3C4D, "byte order");
    let mut at = 0;
    let mut out = Vec::new();
    while at < b.len() {
        let (kind, len) = (u32_at(at), u32_at(at + 4) as usize);
        assert!(
            len >= 12 && len % 4 == 0 && at + len <= b.len(),
            "block at {at}"
        );
        assert_eq!(
            u32_at(at + len - 4) as usize,
            len,
            "trailing length at {at}"
        );
        if kind == 6 {
            let caplen = u32_at(at + 20) as usize;
            let data = b[at + 28..at + 28 + caplen].to_vec();
            let mut o = at + 28 + caplen.next_multiple_of(4);
            let mut comment = String::new();
            while o + 4 <= at + len - 4 {
                let code = u16::from_le_bytes(b[o..o + 2].try_into().unwrap());
                let olen = u16::from_le_bytes(b[o + 2..o + 4].try_into().unwrap()) as usize;
                if code == 0 {
                    break;
                }
                if code == 1 {
                    comment = String::from_utf8_lossy(&b[o + 4..o + 4 + olen]).into_owned();
                }
                o += 4 + olen.next_multiple_of(4);
            }
            out.push(Epb {
                interface: u32_at(at + 8),
                timestamp_ns: (u64::from(u32_at(at + 12)) << 32) | u64::from(u32_at(at + 16)),
                data,
                comment,
            });
        }
        at += len;
    }
    out
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dp-capture-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn capture(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_dp-capture"))
        .args(args)
        .arg("--json")
        .output()
        .expect("running dp-capture");
    let s = summary(&out, &format!("dp-capture {args:?}"));
    println!("{s}");
    s
}

fn n(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// Checks the summary's arithmetic and every segment against its index
/// line, tcpdump, tshark and the CRCs; returns the packets read back.
fn check(s: &serde_json::Value, stem: &Path) -> Vec<Epb> {
    let d = &s["dropped"];
    assert_eq!(
        n(&s["received"]),
        n(&s["inspected"]) + n(&d["accel_busy"]) + n(&d["accel_error"]),
        "every packet received was inspected or dropped with a reason"
    );
    assert_eq!(
        n(&s["matched"]),
        n(&s["written"])
            + n(&d["writer_busy"])
            + n(&d["no_buffer"])
            + n(&d["write_error"])
            + n(&d["too_big"]),
        "every packet matched was written or dropped with a reason"
    );
    let segments = s["segments"].as_array().expect("segments");
    let index = std::fs::read_to_string(format!("{}.index.jsonl", stem.display())).expect("index");
    assert_eq!(
        index.lines().count(),
        segments.len(),
        "one index line per segment"
    );
    let mut all = Vec::new();
    let mut total = 0;
    for (seg, line) in segments.iter().zip(index.lines()) {
        let line: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(&line, seg);
        let path = Path::new(seg["path"].as_str().unwrap());
        let packets = n(&seg["packets"]);
        assert_eq!(std::fs::metadata(path).unwrap().len(), n(&seg["bytes"]));
        for tool in ["tcpdump", "tshark"] {
            if let Some(count) = reader_count(tool, path) {
                assert_eq!(count, packets, "{tool} on {}", path.display());
            }
        }
        let read = read_pcapng(path);
        assert_eq!(read.len() as u64, packets);
        if let (Some(first), Some(last)) = (read.first(), read.last()) {
            assert_eq!(first.timestamp_ns, n(&seg["first_ns"]));
            assert_eq!(last.timestamp_ns, n(&seg["last_ns"]));
        }
        total += packets;
        all.extend(read);
    }
    assert_eq!(
        total,
        n(&s["written"]),
        "the segments hold every packet written"
    );
    for p in &all {
        assert_eq!(p.interface, 0);
        let want = format!("crc32c=0x{:08x}", crc32c(&p.data));
        assert!(p.comment.starts_with(&want), "{} vs {want}", p.comment);
    }
    all
}

/// Everything from the generator, on every lcore layout, in segments
/// small enough to rotate several times.
#[test]
fn generated_traffic_in_rotating_segments() {
    for lcores in ["1", "3"] {
        let d = dir(&format!("gen{lcores}"));
        let stem = d.join("run");
        let s = capture(&[
            "--backend",
            "cpu",
            "--all",
            "--duration",
            "1",
            "--lcores",
            lcores,
            "--out",
            stem.to_str().unwrap(),
            "--segment-size",
            "1MiB",
            "--chunk",
            "64KiB",
            "--frame-size",
            "300",
        ]);
        assert_eq!(s["storage"], "io_uring");
        assert!(n(&s["written"]) > 0);
        assert!(s["segments"].as_array().unwrap().len() >= 2, "rotated: {s}");
        let read = check(&s, &stem);
        assert!(read.iter().all(|p| p.data.len() == 300));
        let _ = std::fs::remove_dir_all(&d);
    }
}

/// Only the packets with a signature, and `--segments` keeping the last
/// two files.
#[test]
fn only_signatures_and_old_segments_deleted() {
    let d = dir("sig");
    let stem = d.join("hits");
    let s = capture(&[
        "--backend",
        "cpu",
        "--duration",
        "1",
        "--out",
        stem.to_str().unwrap(),
        "--segment-size",
        "256KiB",
        "--chunk",
        "64KiB",
        "--segments",
        "2",
        "--signature-every",
        "4",
    ]);
    let segments = s["segments"].as_array().unwrap().clone();
    assert!(segments.len() >= 3, "{s}");
    // The older files are gone; the last two remain and read back.
    for (i, seg) in segments.iter().enumerate() {
        let exists = Path::new(seg["path"].as_str().unwrap()).exists();
        assert_eq!(exists, i + 2 >= segments.len(), "{seg}");
    }
    for seg in &segments[segments.len() - 2..] {
        let path = Path::new(seg["path"].as_str().unwrap());
        let read = read_pcapng(path);
        assert_eq!(read.len() as u64, n(&seg["packets"]));
        for p in &read {
            assert!(
                p.data.windows(7).any(|w| w == b"/bin/sh"),
                "only signatures"
            );
            assert!(p.comment.ends_with("signatures=0x1"), "{}", p.comment);
        }
        if let Some(count) = reader_count("tcpdump", path) {
            assert_eq!(count, n(&seg["packets"]));
        }
    }
    let _ = std::fs::remove_dir_all(&d);
}

/// From DPDK's `net_pcap` replaying known frames, one in ten with a
/// signature: exactly those are written, byte for byte.
#[test]
fn from_a_pcap_port_exactly_the_signatures() {
    if let EalState::Unavailable(why) = dpdk::state() {
        require::available_or_skip(Capability::Dpdk, false, &why);
        return;
    }
    const N: u32 = 1000;
    let d = dir("pcap");
    let input = d.join("in.pcap");
    let frames: Vec<Vec<u8>> = (0..N).map(|i| frame(i, i % 10 == 0)).collect();
    write_pcap(&input, &frames);
    let stem = d.join("hits");
    let vdev = format!("net_pcap0,rx_pcap={}", input.display());
    // The accelerator as chosen automatically: Vulkan where a device
    // opens (lavapipe in CI), else the CPU.
    let s = capture(&[
        "--net",
        "dpdk",
        "--vdev",
        &vdev,
        "--duration",
        "1",
        "--out",
        stem.to_str().unwrap(),
    ]);
    assert_eq!(s["ports"][0]["backend"], "dpdk", "{s}");
    assert_eq!(n(&s["received"]), u64::from(N));
    assert_eq!(n(&s["matched"]), u64::from(N / 10));
    assert_eq!(n(&s["written"]), u64::from(N / 10));
    let read = check(&s, &stem);
    let want: Vec<&Vec<u8>> = frames.iter().step_by(10).collect();
    assert_eq!(read.len(), want.len());
    for (got, want) in read.iter().zip(want) {
        assert_eq!(&got.data, want, "a frame changed on its way to disk");
    }
    let _ = std::fs::remove_dir_all(&d);
}

/// Regions of a block device (a RAM disk here), reused in turn, each
/// within its region, the counts adding up. (That a region whose tail is
/// too short for a frame ends there is the writer's unit test.)
#[test]
fn device_regions_are_reused_in_turn() {
    let s = capture(&[
        "--backend",
        "cpu",
        "--all",
        "--duration",
        "1",
        "--out",
        "ram:8MiB",
        "--segment-size",
        "1MiB",
        "--chunk",
        "64KiB",
        "--frame-size",
        "1500",
    ]);
    assert_eq!(s["storage"], "ram");
    let d = &s["dropped"];
    assert_eq!(
        n(&s["matched"]),
        n(&s["written"]) + n(&d["writer_busy"]) + n(&d["no_buffer"]) + n(&d["write_error"]),
    );
    assert_eq!(n(&d["too_big"]), 0);
    let segments = s["segments"].as_array().unwrap();
    assert!(segments.len() > 8, "every region used, and again: {s}");
    for (i, seg) in segments.iter().enumerate() {
        assert_eq!(n(&seg["offset"]), (i as u64 % 8) << 20, "{seg}");
        assert!(n(&seg["packets"]) > 0 || i + 1 == segments.len(), "{seg}");
        assert!(n(&seg["bytes"]) <= 1 << 20);
    }
    let total: u64 = segments.iter().map(|g| n(&g["packets"])).sum();
    assert_eq!(total, n(&s["written"]));
}

/// `--telemetry` and `--metrics` while dp-capture runs: the accelerator's
/// and the writer's counters answer on the socket (`/dataplane/accel`,
/// `/dataplane/block`) and in the scrape, no higher than where the run
/// ends.
#[test]
fn telemetry_and_metrics_while_capturing() {
    let d = dir("observe");
    let stem = d.join("run");
    let rt = d.join("rt");
    std::fs::create_dir_all(&rt).unwrap();
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let child = Command::new(env!("CARGO_BIN_EXE_dp-capture"))
        .env("RUNTIME_DIRECTORY", &rt)
        .args(["--backend", "cpu", "--all", "--duration", "2", "--json"])
        .args([
            "--telemetry",
            "capture-test",
            "--metrics",
            &addr.to_string(),
        ])
        .arg("--out")
        .arg(&stem)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting dp-capture");
    let socket = rt.join("dpdk/capture-test/dpdk_telemetry.v2");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !socket.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(700));
    let c = dataplane_apps::top::Client::connect(&socket).expect("the telemetry socket");
    let accel = c.ask("/dataplane/accel").unwrap()["/dataplane/accel"].clone();
    let block = c.ask("/dataplane/block").unwrap()["/dataplane/block"].clone();
    let port = c.ask("/ethdev/stats,0").unwrap()["/ethdev/stats"].clone();
    assert_eq!(accel["backend"], "cpu");
    assert!(n(&accel["queue"]["completed"]) > 0, "{accel}");
    assert!(n(&block["writes"]) > 0, "{block}");
    assert!(n(&port["ipackets"]) > 0, "{port}");
    let scrape = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let value = |series: &str| -> u64 {
        scrape
            .lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{scrape}"))
    };
    let written = value("dataplane_capture_written_total");
    let inspected = value("dataplane_capture_inspected_total");
    assert!(value("dataplane_block_written_bytes_total") > 0);
    // Every completed write timed. The histogram is read live and the
    // counters from the writer's last publication, so it may be ahead.
    let timed = value("dataplane_block_latency_seconds_count");
    assert!(timed > 0, "{scrape}");
    assert!(timed >= value("dataplane_block_writes_total"), "{scrape}");
    assert!(value("dataplane_accel_completed_total") > 0);
    assert!(value("dataplane_accel_batch_latency_seconds_count") > 0);
    let out = child.wait_with_output().unwrap();
    let s = summary(&out, "dp-capture with telemetry and metrics");
    assert!(
        written <= n(&s["written"]) && inspected <= n(&s["inspected"]),
        "{s}"
    );
    check(&s, &stem);
    let _ = std::fs::remove_dir_all(&d);
}
