//! Forwarding on one lcore, ours against DPDK's own programs on the same
//! virtual devices and cores, interleaved (A B B A) in one run; the
//! figures that count are the same-round ratios. It measures; it does not
//! assert (it exits 0 either way). scripts/bench-fwd.sh builds DPDK's
//! l2fwd example and runs this.
//!
//! ```text
//! cargo bench -p dataplane-benches --bench fwd -- [--rounds N] [--seconds S]
//!     [--memory huge,nohuge] [--only NAME[,NAME]] [--json PATH]
//! ```
//!
//! - `--rounds`: recorded rounds per comparison (default 5), after one
//!   unrecorded warm-up round.
//! - `--seconds`: the measured window of every sample (default 3), after
//!   2 s of warm-up in the same process.
//! - `--memory`: `huge` (hugepages, `--in-memory`) and/or `nohuge`
//!   (`--no-huge -m 256`); default both, hugepages only when enough are free.
//! - `--only`: comparisons whose key contains one of the names: `null`,
//!   `ring`.
//! - `--json`: also write every sample and the summary there.
//!
//! Contenders, on `net_null0` and `net_null1` (64-byte frames), burst 32,
//! one forwarding lcore on the second cpu of `DP_BENCH_FWD_CPUS` (default
//! `0,1`: EAL's main lcore, then the forwarding lcore):
//!
//! - `ours_io`: the framework's DPDK backend, `Port::rx_burst` on each
//!   port and `tx_burst` to the other, nothing touched (a child process of
//!   this binary, so that each sample has a fresh EAL like DPDK's programs);
//! - `ours_mac`: the same with DPDK l2fwd's MAC rewrite;
//! - `testpmd_io`, `testpmd_macswap`: `dpdk-testpmd --forward-mode=io` /
//!   `macswap`, `--nb-cores=1`, rate from its `--stats-period 1` `Tx-pps`;
//! - `l2fwd`: DPDK's `examples/l2fwd` (MAC updating on, `-q 2` so that one
//!   lcore serves both ports), rate from its `-T 1` totals; needs
//!   `DP_BENCH_L2FWD_C` (the built program);
//! - `app_io`, `app_mac`: our `l2fwd` program as users run it (`--backend
//!   dpdk --vdev net_null0 --vdev net_null1`, with `--no-mac-updating` for
//!   `app_io`), its own plan choosing the cores (main lcore on the first
//!   cpu, the data lcore on the second, as here) and `DATAPLANE_HUGEPAGES=0`
//!   for the runs without hugepages; rate from its `--json` summary, whose
//!   window (warm-up and measured seconds together) starts when the
//!   forwarding lcore does. Needs `DP_BENCH_L2FWD_APP` (the built program).
//!
//!
//! And pointers only, on one lcore (key `ring_<memory>`):
//!
//! - `ours_memory`: one `MemoryPort` pair (rings of 1024), its two ends
//!   as the two ports; 32 mbufs of 64 bytes are sent on each end first,
//!   then `a.rx_burst` goes to `b.tx_burst` and `b.rx_burst` to
//!   `a.tx_burst`. What `a` receives (ring b->a) is sent by `b` onto the
//!   same ring, so each direction is one ring that the lcore drains and
//!   refills: in process, no EAL;
//! - `testpmd_ring_io`: `dpdk-testpmd --forward-mode=io --tx-first` on
//!   `net_ring0` and `net_ring1`. A net_ring made with `--vdev` is one
//!   rte_ring that its tx fills and its rx drains, so port 0's rx goes to
//!   port 1's tx (ring 1) and back; `--tx-first` seeds one burst of 32
//!   per port. Both sides: two single-producer single-consumer rings, 64
//!   mbufs circulating, a burst of 32 popped and pushed per direction and
//!   pass, nothing allocated or freed.
//!
//! Environment: `DP_BENCH_FWD_CPUS`, `DP_BENCH_L2FWD_C`, `DP_BENCH_TESTPMD`
//! (default `dpdk-testpmd`).

use dataplane::net::dpdk::{self, EalConfig, Memory, PciScan};
use dataplane::net::memory::MemoryPort;
use dataplane::net::{MbufBatch, Port, PortConfig};
use dataplane::topology::CpuId;
use dataplane_benches::harness::{Comparison, Metric, Report, Sample, Spread, json_str};
use dataplane_benches::workload::fwd::{self, Forwarder, Touch};
use std::fmt::Write as _;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Warm-up before every measured window, in the contender's own process.
const WARMUP_S: u64 = 2;

/// The vdevs of the l2fwd comparison.
const NULL: [&str; 2] = ["net_null0", "net_null1"];

/// The vdevs of the pointers-only comparison.
const RING: [&str; 2] = ["net_ring0", "net_ring1"];

struct Args {
    rounds: usize,
    seconds: u64,
    memory: Vec<String>,
    only: Vec<String>,
    json: Option<String>,
    child: Option<String>,
    touch: Touch,
}

fn args() -> Args {
    let mut a = Args {
        rounds: 5,
        seconds: 3,
        memory: vec!["huge".into(), "nohuge".into()],
        only: Vec::new(),
        json: None,
        child: None,
        touch: Touch::Io,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (key, inline) = match arg.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        let mut value = || inline.clone().or_else(|| it.next()).unwrap_or_default();
        match key.as_str() {
            "--rounds" => a.rounds = value().parse().unwrap_or(a.rounds).max(1),
            "--seconds" => a.seconds = value().parse().unwrap_or(a.seconds).max(1),
            "--memory" => a.memory = value().split(',').map(String::from).collect(),
            "--only" => a.only = value().split(',').map(String::from).collect(),
            "--json" => a.json = Some(value()),
            "--child" => a.child = Some(value()),
            "--touch" => a.touch = value().parse().unwrap_or(Touch::Io),
            // `cargo bench` passes `--bench`.
            _ => {}
        }
    }
    a
}

fn cpus() -> (u32, u32) {
    std::env::var("DP_BENCH_FWD_CPUS")
        .ok()
        .and_then(|v| {
            let (m, f) = v.split_once(',')?;
            Some((m.trim().parse().ok()?, f.trim().parse().ok()?))
        })
        .unwrap_or((0, 1))
}

fn eal_memory_args(memory: &str) -> Vec<String> {
    match memory {
        "huge" => vec!["--in-memory".into()],
        _ => ["--no-huge", "-m", "256", "--no-shconf"]
            .map(String::from)
            .to_vec(),
    }
}

// ---- our side, in a child process --------------------------------------------------

/// `--child dpdk-null --touch T --memory M --seconds S`: forwards between
/// net_null0 and net_null1 and prints one `RESULT` line.
fn child_dpdk(memory: &str, touch: Touch, seconds: u64) -> Result<Sample, String> {
    let (main_cpu, fwd_cpu) = cpus();
    let mem = match memory {
        "huge" => Memory::Hugepages { mb: None },
        _ => Memory::NoHuge { mb: 256 },
    };
    dpdk::configure(
        EalConfig::new()
            .main_cpu(CpuId(main_cpu))
            .memory(mem)
            .pci(PciScan::None)
            .vdev("net_null0")
            .vdev("net_null1")
            .log_level("*:error"),
    )
    .map_err(|e| e.to_string())?;
    let mut ports = Vec::new();
    let mut ids = [0u16; 2];
    let mut macs = [[0u8; 6]; 2];
    for (i, name) in ["net_null0", "net_null1"].into_iter().enumerate() {
        // DPDK l2fwd's sizes: 1024 descriptors, 8192 mbufs, cache 256, burst
        // 32, and like l2fwd and testpmd one pool of 8192 for both ports
        // (our programs open their ports so too).
        let mut cfg = PortConfig::new(name).with_shared_pool(8192);
        cfg.mbufs = 4096;
        let mut q = dpdk::open(&cfg).map_err(|e| e.to_string())?;
        let q = q.pop().ok_or("no queue")?;
        ids[i] = dataplane::net::Port::id(&q).0.0;
        macs[i] = q.mac_address();
        ports.push(Box::new(q) as Box<dyn dataplane::net::Port>);
    }
    let p1 = ports.pop().ok_or("no port 1")?;
    let p0 = ports.pop().ok_or("no port 0")?;
    let result = Arc::new(Mutex::new(None));
    let fwd = Forwarder::new(
        [p0, p1],
        ids,
        macs,
        touch,
        Duration::from_secs(WARMUP_S),
        Duration::from_secs(seconds),
        result,
    );
    let (w, sample) = fwd::run(fwd, fwd_cpu)?;
    eprintln!(
        "child: {} packets, {} dropped, {:.1} Mpps (10 ms slices: p90 {:.1} Mpps)",
        w.packets,
        w.dropped,
        sample.ops_per_sec() / 1e6,
        w.slice_p90 * dataplane_benches::cpu::tsc_per_ns() * 1e3
    );
    dpdk::shutdown().map_err(|e| e.to_string())?;
    Ok(sample)
}

fn run_child(args: &Args, child: &str) -> ! {
    let memory = args.memory.first().map_or("nohuge", String::as_str);
    let r = match child {
        "dpdk-null" => child_dpdk(memory, args.touch, args.seconds),
        other => Err(format!("unknown child {other}")),
    };
    match r {
        Ok(s) => {
            println!(
                "RESULT ops={} cycles={} ns={} side_cycles=-",
                s.ops, s.cycles, s.nanos
            );
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("child {child}: {e}");
            std::process::exit(1)
        }
    }
}

fn ours(memory: &str, touch: Touch, seconds: u64) -> Result<Sample, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = Command::new(exe)
        .args(["--child", "dpdk-null", "--memory", memory])
        .args(["--touch", touch.name(), "--seconds", &seconds.to_string()])
        .output()
        .map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.lines().find(|l| l.starts_with("RESULT ")) {
        Some(line) if out.status.success() => dataplane_benches::dpdk::parse_result(line),
        _ => Err(format!(
            "ours ({}) failed: {}",
            out.status,
            tail(&String::from_utf8_lossy(&out.stderr))
        )),
    }
}

/// `ours_memory`: a MemoryPort pair forwarded into itself (see the top of
/// the file), on this process's forwarding cpu.
fn ours_memory(seconds: u64) -> Result<Sample, String> {
    let (_, fwd_cpu) = cpus();
    // testpmd's --tx-first burst and a ring as deep as its descriptors.
    let cfg = PortConfig::new("memory:fwd");
    let (mut a, mut b) = MemoryPort::pair(&cfg).map_err(|e| e.to_string())?;
    let (mut a, mut b) = (
        a.pop().ok_or("no queue on end a")?,
        b.pop().ok_or("no queue on end b")?,
    );
    for end in [&mut a, &mut b] {
        let mut batch = MbufBatch::new();
        if end.alloc_burst(cfg.burst, &mut batch) != cfg.burst {
            return Err("the pair's pool is short of mbufs".into());
        }
        for m in batch.iter_mut() {
            // testpmd txonly's default frame length.
            m.append(64).map_err(|e| e.to_string())?.fill(0);
        }
        if end.tx_burst(&mut batch) != cfg.burst {
            return Err("the seed burst did not fit the ring".into());
        }
    }
    let ids = [Port::id(&a).0.0, Port::id(&b).0.0];
    let result = Arc::new(Mutex::new(None));
    let fwd = Forwarder::new(
        [Box::new(a), Box::new(b)],
        ids,
        [[0; 6]; 2],
        Touch::Io,
        Duration::from_secs(WARMUP_S),
        Duration::from_secs(seconds),
        result,
    );
    Ok(fwd::run(fwd, fwd_cpu)?.1)
}

// ---- DPDK's side -------------------------------------------------------------------

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().rev().take(3).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

/// Runs a DPDK program for warm-up + `seconds` + 2 periods, then SIGINT.
fn run_dpdk(program: &str, args: &[String], seconds: u64) -> Result<String, String> {
    let limit = WARMUP_S + seconds + 2;
    let out = Command::new("timeout")
        .args(["-k", "5", "-s", "INT", &limit.to_string(), program])
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    // timeout's 124 is the SIGINT we asked for.
    if !out.status.success() && out.status.code() != Some(124) {
        return Err(format!(
            "{program} exited with {}: {}",
            out.status,
            tail(&String::from_utf8_lossy(&out.stderr))
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn prefix(tag: &str) -> String {
    format!("dpb{}{tag}", std::process::id())
}

/// `dpdk-testpmd` forwarding between the two vdevs `vdev0` and `vdev1`
/// (`--tx-first` seeds the loop when the devices make no packets).
fn testpmd(
    memory: &str,
    mode: &str,
    vdevs: [&str; 2],
    tx_first: bool,
    seconds: u64,
) -> Result<Sample, String> {
    let (main_cpu, fwd_cpu) = cpus();
    let program = std::env::var("DP_BENCH_TESTPMD").unwrap_or_else(|_| "dpdk-testpmd".into());
    let mut args: Vec<String> = vec![
        "-l".into(),
        format!("{main_cpu},{fwd_cpu}"),
        "--main-lcore".into(),
        main_cpu.to_string(),
        "--file-prefix".into(),
        prefix("tp"),
        "--no-pci".into(),
        "--no-telemetry".into(),
        "--vdev".into(),
        vdevs[0].into(),
        "--vdev".into(),
        vdevs[1].into(),
    ];
    args.extend(eal_memory_args(memory));
    args.extend(
        [
            "--",
            &format!("--forward-mode={mode}"),
            "--nb-cores=1",
            "--burst=32",
            "--rxd=1024",
            "--txd=1024",
            "--total-num-mbufs=8192",
            "--stats-period=1",
        ]
        .map(String::from),
    );
    if tx_first {
        args.push("--tx-first".into());
    }
    let out = run_dpdk(&program, &args, seconds)?;
    let periods = fwd::testpmd_periods(&out);
    // The first display has no previous one (0 pps); the next covers the
    // rest of the warm-up.
    let steady = periods
        .get(WARMUP_S as usize..)
        .map(|p| &p[..p.len().min(seconds as usize)])
        .unwrap_or_default();
    let rate = fwd::steady_rate(steady, 0)
        .ok_or_else(|| format!("testpmd printed {} stats periods", periods.len()))?;
    Ok(fwd::rate_sample(rate, steady.len() as f64))
}

fn l2fwd(memory: &str, seconds: u64) -> Result<Sample, String> {
    let (_, fwd_cpu) = cpus();
    let program = std::env::var("DP_BENCH_L2FWD_C")
        .map_err(|_| "DP_BENCH_L2FWD_C is not set (scripts/bench-fwd.sh builds l2fwd)")?;
    let mut args: Vec<String> = vec![
        "-l".into(),
        fwd_cpu.to_string(),
        "--file-prefix".into(),
        prefix("l2"),
        "--no-pci".into(),
        "--no-telemetry".into(),
        "--vdev".into(),
        "net_null0".into(),
        "--vdev".into(),
        "net_null1".into(),
    ];
    args.extend(eal_memory_args(memory));
    args.extend(["--", "-p", "0x3", "-q", "2", "-T", "1"].map(String::from));
    let out = run_dpdk(&program, &args, seconds)?;
    let rates = fwd::rates_from_totals(&fwd::l2fwd_totals(&out), 1.0);
    // rates[0] covers the second warm-up second.
    let steady = rates
        .get(WARMUP_S as usize - 1..)
        .map(|p| &p[..p.len().min(seconds as usize)])
        .unwrap_or_default();
    let rate = fwd::steady_rate(steady, 0)
        .ok_or_else(|| format!("l2fwd printed {} stats periods", rates.len() + 1))?;
    Ok(fwd::rate_sample(rate, steady.len() as f64))
}

/// Our `l2fwd` program on the two null vdevs (see the top of the file).
fn app(memory: &str, mac: bool, seconds: u64) -> Result<Sample, String> {
    let program = std::env::var("DP_BENCH_L2FWD_APP")
        .map_err(|_| "DP_BENCH_L2FWD_APP is not set (scripts/bench-fwd.sh builds it)")?;
    let total = WARMUP_S + seconds;
    let mut cmd = Command::new(&program);
    cmd.args([
        "--backend",
        "dpdk",
        "--vdev",
        "net_null0",
        "--vdev",
        "net_null1",
    ])
    .args(["--duration", &total.to_string(), "--json"]);
    if !mac {
        cmd.arg("--no-mac-updating");
    }
    if memory != "huge" {
        cmd.env("DATAPLANE_HUGEPAGES", "0");
    }
    let out = cmd.output().map_err(|e| format!("{program}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .filter(|_| out.status.success())
        .ok_or_else(|| {
            format!(
                "{program} ({}): {}",
                out.status,
                tail(&String::from_utf8_lossy(&out.stderr))
            )
        })?;
    let v: serde_json::Value = serde_json::from_str(summary).map_err(|e| e.to_string())?;
    let mpps = v["tx_mpps"]
        .as_f64()
        .ok_or_else(|| format!("no tx_mpps in {summary}"))?;
    Ok(fwd::rate_sample(mpps * 1e6, total as f64))
}

// ---- the comparison ------------------------------------------------------------------

fn mpps(r: &Report, name: &str) -> String {
    r.get(name)
        .and_then(|c| c.ops_per_sec())
        .map_or("-".into(), |s| format!("{:.1} Mpps", s.median / 1e6))
}

fn fmt_spread(s: Option<Spread>) -> String {
    s.map_or("-".into(), |s| {
        format!("{:.2} [{:.2} {:.2}]", s.median, s.p10, s.p90)
    })
}

struct Verdict {
    target: String,
    ours: String,
    peer: String,
    ratio: Option<Spread>,
    min: f64,
}

fn verdict(r: &Report, target: &str, ours: &str, peer: &str, min: f64) -> Verdict {
    Verdict {
        target: target.into(),
        ours: format!("{ours}: {}", mpps(r, ours)),
        peer: format!("{peer}: {}", mpps(r, peer)),
        ratio: r.speed_ratio(ours, peer),
        min,
    }
}

fn hugepages_free() -> bool {
    let free: u64 = hugepages::system::hugepage_pools()
        .iter()
        .map(|p| p.free_bytes())
        .sum();
    free >= 512 << 20
}

fn main() {
    let args = args();
    if let Some(child) = args.child.clone() {
        run_child(&args, &child);
    }
    let wanted = |key: &str| args.only.is_empty() || args.only.iter().any(|o| key.contains(o));
    let seconds = args.seconds;
    let mut reports = Vec::new();
    let mut verdicts = Vec::new();
    for memory in &args.memory {
        let m = memory.as_str();
        if m == "huge" && !hugepages_free() {
            eprintln!("fwd: skipping the hugepage runs: fewer than 512 MiB of hugepages free");
            continue;
        }
        let label = if m == "huge" {
            "hugepages"
        } else {
            "no hugepages"
        };
        let key = format!("null_{memory}");
        if !wanted(&key) {
            continue;
        }
        let title =
            format!("l2 forwarding, net_null0 <-> net_null1, 64 B, burst 32, one lcore, {label}");
        let report = Comparison::new(title, Metric::Throughput, "testpmd_io")
            .contender("ours_io", move || ours(m, Touch::Io, seconds))
            .contender("testpmd_io", move || testpmd(m, "io", NULL, false, seconds))
            .contender("ours_mac", move || ours(m, Touch::MacUpdate, seconds))
            .contender("l2fwd", move || l2fwd(m, seconds))
            .contender("testpmd_macswap", move || {
                testpmd(m, "macswap", NULL, false, seconds)
            })
            .contender("app_io", move || app(m, false, seconds))
            .contender("app_mac", move || app(m, true, seconds))
            .run(args.rounds, |name, round, s| {
                eprintln!(
                    "  {key} round {round} {name}: {:.1} Mpps",
                    s.ops_per_sec() / 1e6
                );
            });
        println!("{}", report.table());
        verdicts.push(verdict(
            &report,
            &format!("{key}: ours_mac vs DPDK l2fwd"),
            "ours_mac",
            "l2fwd",
            1.0,
        ));
        verdicts.push(verdict(
            &report,
            &format!("{key}: ours_io vs testpmd io"),
            "ours_io",
            "testpmd_io",
            1.0,
        ));
        verdicts.push(verdict(
            &report,
            &format!("{key}: ours_mac vs testpmd macswap"),
            "ours_mac",
            "testpmd_macswap",
            1.0,
        ));
        verdicts.push(verdict(
            &report,
            &format!("{key}: l2fwd program --no-mac-updating vs testpmd io"),
            "app_io",
            "testpmd_io",
            1.0,
        ));
        verdicts.push(verdict(
            &report,
            &format!("{key}: l2fwd program vs testpmd macswap"),
            "app_mac",
            "testpmd_macswap",
            1.0,
        ));
        reports.push((key, report));
    }
    for memory in &args.memory {
        let m = memory.as_str();
        let key = format!("ring_{memory}");
        if !wanted(&key) || (m == "huge" && !hugepages_free()) {
            continue;
        }
        let title = format!(
            "pointers only: MemoryPort pair vs net_ring0/net_ring1 (testpmd io, --tx-first), \
             64 mbufs circulating, burst 32, one lcore, DPDK on {}",
            if m == "huge" {
                "hugepages"
            } else {
                "no hugepages"
            }
        );
        let report = Comparison::new(title, Metric::Throughput, "testpmd_ring_io")
            .contender("ours_memory", move || ours_memory(seconds))
            .contender("testpmd_ring_io", move || {
                testpmd(m, "io", RING, true, seconds)
            })
            .run(args.rounds, |name, round, s| {
                eprintln!(
                    "  {key} round {round} {name}: {:.1} Mpps",
                    s.ops_per_sec() / 1e6
                );
            });
        println!("{}", report.table());
        verdicts.push(verdict(
            &report,
            &format!("{key}: ours_memory vs testpmd net_ring io"),
            "ours_memory",
            "testpmd_ring_io",
            0.8,
        ));
        reports.push((key, report));
    }

    let mut summary = String::from("\nSummary (same-round speed ratios: median [p10 p90])\n");
    for v in &verdicts {
        let met = match v.ratio {
            Some(s) if s.median >= v.min => "met",
            Some(_) => "MISSED",
            None => "no data",
        };
        let _ = writeln!(
            summary,
            "  {:<44} {:<26} {:<32} ratio {:<22} goal >= {:.2}x: {met}",
            v.target,
            v.ours,
            v.peer,
            fmt_spread(v.ratio),
            v.min
        );
    }
    println!("{summary}");

    if let Some(path) = args.json {
        let mut j = String::from("{\"reports\": {");
        for (i, (key, r)) in reports.iter().enumerate() {
            if i > 0 {
                j.push_str(", ");
            }
            let _ = write!(j, "{}: {}", json_str(key), r.to_json());
        }
        j.push_str("}, \"targets\": [");
        for (i, v) in verdicts.iter().enumerate() {
            if i > 0 {
                j.push_str(", ");
            }
            let _ = write!(
                j,
                "{{\"target\": {}, \"ratio_median\": {}, \"goal\": {}}}",
                json_str(&v.target),
                v.ratio
                    .map_or("null".into(), |s| format!("{:.4}", s.median)),
                v.min
            );
        }
        j.push_str("]}\n");
        if let Err(e) = std::fs::write(&path, j) {
            eprintln!("fwd: writing {path}: {e}");
        }
    }
}
