//! nvme-perf end to end: short runs on a file (io_uring or whatever opens
//! it, and psync) and on the RAM disk, with read-after-write verification,
//! in this process through the library; each must complete I/Os and find
//! no corruption. The binary is run for its `--help`, its refusals and its
//! JSON line.

use clap::Parser;
use dataplane_apps::storage::perf::{self, PerfArgs};
use std::path::PathBuf;
use std::process::{Command, Output};

fn nvme_perf(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nvme-perf"))
        .args(args)
        .output()
        .expect("running nvme-perf")
}

/// Runs the load generator in this process with `args` plus a short
/// measurement, checks it found no error, and returns its summary as the
/// JSON `--json` prints.
fn run(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["nvme-perf"];
    all.extend_from_slice(args);
    all.extend(["--time", "0.3"]);
    let parsed = PerfArgs::try_parse_from(&all).unwrap_or_else(|e| panic!("{all:?}: {e}"));
    let summary = perf::run(&parsed).unwrap_or_else(|e| panic!("nvme-perf {all:?} failed: {e:#}"));
    perf::print_text(&summary);
    summary
        .check()
        .unwrap_or_else(|e| panic!("nvme-perf {all:?}: {e:#}"));
    let s = serde_json::to_value(&summary).expect("the summary serialises");
    println!("{s}");
    s
}

/// The binary itself: `--json` prints the same summary as its last line.
#[test]
fn the_binary_prints_one_json_summary_last() {
    let out = nvme_perf(&[
        "--target", "ram:4MiB", "--qd", "4", "--time", "0.2", "--json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().expect("a summary line");
    let s: serde_json::Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {last}"));
    assert_eq!(s["tool"], "nvme-perf");
    check(&s, 1);
}

fn check(s: &serde_json::Value, lcores: usize) {
    assert!(s["ios"].as_u64().unwrap_or(0) > 0, "no I/O completed");
    assert!(s["iops"].as_f64().unwrap_or(0.0) > 0.0);
    assert_eq!(s["errors"], 0);
    let per = s["per_lcore"].as_array().expect("per-lcore figures");
    assert_eq!(per.len(), lcores);
    for l in per {
        assert!(l["ios"].as_u64().unwrap_or(0) > 0, "an idle lcore: {l}");
    }
    let lat = &s["latency"];
    let p = |k: &str| lat[k].as_f64().unwrap_or(-1.0);
    assert!(p("p50_us") > 0.0);
    assert!(p("p50_us") <= p("p99_us") && p("p99_us") <= p("p999_us"));
    assert!(p("p999_us") <= p("max_us"));
}

fn check_verified(s: &serde_json::Value) {
    assert!(
        s["verify"]["checked"].as_u64().unwrap_or(0) > 0,
        "nothing was read back"
    );
    assert_eq!(s["verify"]["mismatches"], 0);
    assert!(s["per_lcore"][0]["writes"].as_u64().unwrap_or(0) > 0);
    assert!(s["per_lcore"][0]["reads"].as_u64().unwrap_or(0) > 0);
}

/// A file of its own under the target directory (a real file system:
/// O_DIRECT works there, unlike on some tmpfs).
fn scratch(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_file(&p);
    p
}

#[test]
fn ram_disk_random_reads_and_verify() {
    let s = run(&["--target", "ram:8MiB", "--backend", "ram", "--qd", "16"]);
    assert_eq!(s["backend"], "ram");
    assert_eq!(s["rw"], "randread");
    check(&s, 1);
    let s = run(&[
        "--target", "ram:8MiB", "--qd", "8", "--lcores", "2", "--verify",
    ]);
    assert_eq!(s["backend"], "ram");
    check(&s, 2);
    check_verified(&s);
}

#[test]
fn file_with_the_automatic_backend_and_verify() {
    let path = scratch("nvme-perf-auto.img");
    let p = path.to_string_lossy();
    let s = run(&["--target", &p, "--size", "8M", "--qd", "8", "--verify"]);
    // io_uring where the kernel allows it, else psync: either is a file
    // backend.
    let backend = s["backend"].as_str().unwrap_or_default();
    assert!(matches!(backend, "io_uring" | "psync"), "{backend}");
    check(&s, 1);
    check_verified(&s);
    let s = run(&["--target", &p, "--rw", "randrw", "--mix", "70", "--qd", "4"]);
    check(&s, 1);
    // Sleeping for completions instead of polling, with verification, at
    // a depth past the sleeping submitter's chunk (4), so that requests
    // also go in through the enters that do not sleep; writes FUA.
    let s = run(&["--target", &p, "--qd", "32", "--wait", "--verify", "--fua"]);
    check(&s, 1);
    check_verified(&s);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn file_with_psync_sequential_and_verify() {
    let path = scratch("nvme-perf-psync.img");
    let p = path.to_string_lossy();
    let s = run(&[
        "--target",
        &p,
        "--size",
        "4M",
        "--backend",
        "psync",
        "--rw",
        "write",
        "--bs",
        "8k",
        "--qd",
        "2",
        "--fua",
    ]);
    assert_eq!(s["backend"], "psync");
    assert_eq!(s["bs"], 8192);
    check(&s, 1);
    let s = run(&[
        "--target",
        &p,
        "--backend",
        "psync",
        "--rw",
        "read",
        "--qd",
        "4",
        "--verify",
    ]);
    check(&s, 1);
    check_verified(&s);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn help_and_refusals() {
    let out = nvme_perf(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--rw",
        "--bs",
        "--qd",
        "--lcores",
        "--time",
        "--backend",
        "--json",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
    // A block size that is no multiple of the device's blocks.
    let out = nvme_perf(&["--target", "ram:1MiB", "--bs", "100", "--time", "0.1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bs"));
    // An unknown backend.
    let out = nvme_perf(&["--target", "ram:1MiB", "--backend", "nope", "--time", "0.1"]);
    assert!(!out.status.success());
}

/// `--log-format json`: every line on standard error is one JSON object
/// (a log collector's input), with the level and the structured fields;
/// `RUST_LOG` sets the level. The default stays text.
#[test]
fn log_lines_are_json_when_asked() {
    let run = |format: &str| {
        Command::new(env!("CARGO_BIN_EXE_nvme-perf"))
            .args([
                "--target",
                "ram:4MiB",
                "--time",
                "0.1",
                "--log-format",
                format,
            ])
            .env("RUST_LOG", "info")
            .output()
            .expect("running nvme-perf")
    };
    let out = run("json");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    // Backend selection is logged with its fields.
    let selection = lines
        .iter()
        .find(|l| l["fields"]["subsystem"] == "block")
        .unwrap_or_else(|| panic!("no backend selection event in {stderr}"));
    assert_eq!(selection["level"], "INFO");
    assert!(selection["fields"]["backend"].is_string());
    assert!(selection["timestamp"].is_string());
    // Inside the control path's span, which names what is being opened.
    assert_eq!(selection["span"]["name"], "select_backend", "{selection}");
    assert_eq!(selection["span"]["device"], "ram:4MiB", "{selection}");

    let out = run("text");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("subsystem=\"block\"") || stderr.contains("subsystem=block"),
        "{stderr}"
    );
    assert!(
        stderr
            .lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_err())
    );

    let bad = nvme_perf(&["--target", "ram:4MiB", "--log-format", "xml"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("possible values"));
}

/// `--telemetry` and `--metrics` while nvme-perf runs on a RAM disk:
/// `/dataplane/block` answers per lcore with I/Os and latency so far, the
/// scrape has the I/O counters and the latency quantiles, and neither
/// counts more than the summary ends with.
#[test]
fn block_telemetry_and_metrics_while_running() {
    let rt = scratch("perf-telemetry-rt");
    let _ = std::fs::remove_dir_all(&rt);
    std::fs::create_dir_all(&rt).unwrap();
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let child = Command::new(env!("CARGO_BIN_EXE_nvme-perf"))
        .env("RUNTIME_DIRECTORY", &rt)
        .args([
            "--target",
            "ram:64MiB",
            "--rw",
            "randread",
            "--bs",
            "4k",
            "--qd",
            "8",
        ])
        .args([
            "--time",
            "2",
            "--ramp",
            "0",
            "--json",
            "--telemetry",
            "perf-test",
        ])
        .args(["--metrics", &addr.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting nvme-perf");
    let socket = rt.join("dpdk/perf-test/dpdk_telemetry.v2");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !socket.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(800));
    let c = dataplane_apps::top::Client::connect(&socket).expect("the telemetry socket");
    let block = c.ask("/dataplane/block").unwrap()["/dataplane/block"].clone();
    let live_ios = block[0]["ios"].as_u64().unwrap_or(0);
    assert!(live_ios > 0, "{block}");
    assert!(
        block[0]["latency"]["p99_us"].as_f64().unwrap_or(0.0) > 0.0,
        "{block}"
    );
    let scrape = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    assert!(
        scrape.contains("dataplane_block_ios_total{lcore=\"0\"}"),
        "{scrape}"
    );
    // A histogram: cumulative buckets, a +Inf bucket holding every I/O
    // counted so far, and its sum.
    let inf = scrape
        .lines()
        .find(|l| {
            l.starts_with("dataplane_block_latency_seconds_bucket{") && l.contains("le=\"+Inf\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok());
    assert!(inf.is_some_and(|n| n > 0), "{scrape}");
    assert!(
        scrape.contains("# TYPE dataplane_block_latency_seconds histogram"),
        "{scrape}"
    );
    assert!(
        scrape.contains("dataplane_block_latency_seconds_sum{lcore=\"0\"}"),
        "{scrape}"
    );
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let s: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert!(live_ios <= s["ios"].as_u64().unwrap(), "{s}");
    let _ = std::fs::remove_dir_all(&rt);
}
