//! gpu-offload end to end: the pipeline runs on each backend, moves
//! packets, loses none (the binary fails if an mbuf is not returned), and
//! prints one JSON summary as the last line of stdout.

use dataplane::accel;
use dataplane::require::{self, Capability};
use std::process::Command;

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
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "gpu-offload --backend {backend} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().expect("a summary line");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {last}"))
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
