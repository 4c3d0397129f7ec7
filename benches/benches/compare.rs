//! The interleaved comparison: every ring and mempool target of
//! docs/performance.md, ours and the peer run A B B A in one process, with
//! the same-round ratios and a summary of which targets are met. It
//! measures; it does not assert (it exits 0 either way).
//!
//! ```text
//! cargo bench -p dataplane-benches --bench compare -- [--rounds N] [--scale F]
//!     [--only NAME[,NAME]] [--json PATH]
//! ```
//!
//! - `--rounds`: recorded rounds per comparison (default 15), after one
//!   unrecorded warm-up round.
//! - `--scale`: multiplies every work size (default 1; 0.1 for a smoke run).
//! - `--only`: comparisons whose key contains one of the names: `spsc_single`,
//!   `spsc_payload`, `spsc_burst`, `pingpong`, `mpmc_single`, `shared_core`, `mpmc_burst`,
//!   `mempool`, `blocking`, `pool`.
//! - `--json`: also write every sample and the summary there.
//!
//! Environment: `DP_BENCH_CPUS=P,C` (default `0,1`); `DP_BENCH_RING_C`,
//! `DP_BENCH_MEMPOOL_C`, `DP_BENCH_EAL_ARGS` for the DPDK programs and
//! `DP_BENCH_AUTOTEST_OUT` for a saved `ring_perf_autotest` output (all set
//! by scripts/bench-ring.sh).

use dataplane_benches::cpu::tsc_per_ns;
use dataplane_benches::dpdk::{self, MEMPOOL_BIN_ENV, Program, RING_BIN_ENV};
use dataplane_benches::harness::{
    Comparison, Metric, Report, Sample, Spread, json_num, json_spread, json_str,
};
use dataplane_benches::workload::{CpuPair, blocking, mempool, pool, ring};
use std::fmt::Write as _;

struct Args {
    rounds: usize,
    scale: f64,
    only: Vec<String>,
    json: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        rounds: 15,
        scale: 1.0,
        only: Vec::new(),
        json: None,
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
            "--scale" => a.scale = value().parse().unwrap_or(a.scale),
            "--only" => a.only = value().split(',').map(String::from).collect(),
            "--json" => a.json = Some(value()),
            // `cargo bench` passes `--bench`; criterion-style filters are
            // ignored too.
            _ => {}
        }
    }
    a
}

/// One line of the summary: a target, the figures it is judged on, and
/// whether the same-run median meets it.
struct Verdict {
    target: String,
    ours: String,
    peer: String,
    ratio: Option<Spread>,
    goal: String,
    met: Option<bool>,
}

fn fmt_spread(s: Option<Spread>) -> String {
    s.map_or("-".into(), |s| {
        format!("{:.2} [{:.2} {:.2}]", s.median, s.p10, s.p90)
    })
}

fn mops(r: &Report, name: &str) -> String {
    r.get(name)
        .and_then(|c| c.ops_per_sec())
        .map_or("-".into(), |s| format!("{:.0} M/s", s.median / 1e6))
}

fn ns(r: &Report, name: &str) -> String {
    r.get(name)
        .and_then(|c| c.ns_per_op())
        .map_or("-".into(), |s| format!("{:.1} ns", s.median))
}

fn cyc(r: &Report, name: &str) -> String {
    r.get(name)
        .and_then(|c| c.cycles_per_op())
        .map_or("-".into(), |s| format!("{:.2} cyc", s.median))
}

/// `ours` at least `min` times as fast as `peer`, same round.
fn speed_target(
    r: &Report,
    target: &str,
    ours: &str,
    peer: &str,
    min: f64,
    show: fn(&Report, &str) -> String,
) -> Verdict {
    let ratio = r.speed_ratio(ours, peer);
    Verdict {
        target: target.into(),
        ours: format!("{ours}: {}", show(r, ours)),
        peer: format!("{peer}: {}", show(r, peer)),
        ratio,
        goal: format!("speed >= {min:.2}x"),
        met: ratio.map(|s| s.median >= min),
    }
}

fn main() {
    let args = args();
    let cpus = CpuPair::from_env();
    let ghz = tsc_per_ns();
    let scale = |n: f64| ((n * args.scale) as u64).max(1 << 12);
    let wanted =
        |key: &str| args.only.is_empty() || args.only.iter().any(|o| key.contains(o.as_str()));
    let progress = |name: &str, round: usize, s: &Sample| {
        eprintln!(
            "  round {round:>2} {name:<28} {:>9.2} Mops/s {:>8.2} ns/op {:>7.2} cyc/op",
            s.ops_per_sec() / 1e6,
            s.ns_per_op(),
            s.cycles_per_op()
        );
    };
    println!(
        "dataplane ring/mempool comparison: cpus {},{}; TSC {ghz:.3} GHz; {} rounds (ABBA); scale {}",
        cpus.producer, cpus.consumer, args.rounds, args.scale
    );
    let ring_c = Program::from_env(RING_BIN_ENV);
    let mempool_c = Program::from_env(MEMPOOL_BIN_ENV);
    let mut reports: Vec<Report> = Vec::new();
    let mut verdicts: Vec<Verdict> = Vec::new();
    let show = |r: Report, reports: &mut Vec<Report>| {
        println!("{}", r.table());
        reports.push(r);
    };

    if wanted("spsc_single") {
        let n = scale(10e6);
        let r = Comparison::new("1. SP/SC single item, u64", Metric::Throughput, "rtrb")
            .contender("ours", || Ok(ring::spsc_single_ours(cpus, n)))
            .contender("rtrb", || Ok(ring::spsc_single_rtrb(cpus, n)))
            .contender("ringbuf", || Ok(ring::spsc_single_ringbuf(cpus, n)))
            // Which side is faster decides the regime (docs/performance.md):
            // each loop with one side slowed by two moves per item.
            .contender("ours, consumer +2 moves", || {
                Ok(ring::spsc_single_ours_skewed(cpus, n, ring::Skew::Consumer))
            })
            .contender("rtrb, producer +2 moves", || {
                Ok(ring::spsc_single_rtrb_skewed(cpus, n, ring::Skew::Producer))
            })
            .run(args.rounds, progress);
        verdicts.push(speed_target(
            &r,
            "1 SP/SC single >= rtrb",
            "ours",
            "rtrb",
            1.0,
            mops,
        ));
        show(r, &mut reports);
    }

    if wanted("spsc_payload") {
        let n = scale(10e6);
        let r = Comparison::new(
            "1b. SP/SC single item standing for a 64-byte payload the consumer reads",
            Metric::Throughput,
            "rtrb",
        )
        .contender("ours", || Ok(ring::spsc_payload_ours(cpus, n)))
        .contender("rtrb", || Ok(ring::spsc_payload_rtrb(cpus, n)))
        .run(args.rounds, progress);
        verdicts.push(speed_target(
            &r,
            "1b SP/SC single, 64-byte payload >= rtrb",
            "ours",
            "rtrb",
            1.0,
            mops,
        ));
        show(r, &mut reports);
    }

    if wanted("spsc_burst") {
        let n = scale(40e6);
        let r = Comparison::new("2. SP/SC burst 32, u64", Metric::Throughput, "rtrb chunk")
            .contender("ours slice", || Ok(ring::spsc_burst_ours_slice(cpus, n)))
            .contender("ours batch", || Ok(ring::spsc_burst_ours_batch(cpus, n)))
            .contender("ours chunk", || Ok(ring::spsc_burst_ours_chunk(cpus, n)))
            .contender("rtrb chunk", || Ok(ring::spsc_burst_rtrb_chunk(cpus, n)))
            .contender("ringbuf slice", || {
                Ok(ring::spsc_burst_ringbuf_slice(cpus, n))
            })
            .run(args.rounds, progress);
        for ours in ["ours slice", "ours batch", "ours chunk"] {
            for peer in ["rtrb chunk", "ringbuf slice"] {
                verdicts.push(speed_target(
                    &r,
                    &format!("2 SP/SC burst32 {ours} >= {peer}"),
                    ours,
                    peer,
                    1.0,
                    mops,
                ));
            }
        }
        show(r, &mut reports);
    }

    if wanted("pingpong") {
        let n = scale(300e3);
        let r = Comparison::new(
            "3. SP/SC ping-pong round trip",
            Metric::Latency,
            "atomic mailbox",
        )
        .contender("atomic mailbox", || Ok(ring::pingpong_mailbox(cpus, n)))
        .contender("ours", || Ok(ring::pingpong_ours(cpus, n)))
        .contender("ours Channel::spsc", || Ok(ring::pingpong_channel(cpus, n)))
        .contender("rtrb", || Ok(ring::pingpong_rtrb(cpus, n)))
        // The floor of a ring that publishes with a position: two lines a
        // hop (docs/performance.md, target 3).
        .contender("two-line mailbox", || Ok(ring::pingpong_two_lines(cpus, n)))
        .run(args.rounds, progress);
        // Within 10% of the mailbox: time <= 1.1x, speed >= 1/1.1.
        let mut v = speed_target(
            &r,
            "3 ping-pong within 10% of mailbox",
            "ours",
            "atomic mailbox",
            1.0 / 1.1,
            ns,
        );
        v.goal = "time <= 1.10x (speed >= 0.91x)".into();
        verdicts.push(v);
        let mut v = speed_target(
            &r,
            "3 ping-pong Channel::spsc within 10% of mailbox",
            "ours Channel::spsc",
            "atomic mailbox",
            1.0 / 1.1,
            ns,
        );
        v.goal = "time <= 1.10x (speed >= 0.91x)".into();
        verdicts.push(v);
        verdicts.push(speed_target(
            &r,
            "3 (info) ping-pong ours vs two-line mailbox",
            "ours",
            "two-line mailbox",
            1.0 / 1.1,
            ns,
        ));
        verdicts.push(speed_target(
            &r,
            "3 (info) ping-pong ours vs rtrb",
            "ours",
            "rtrb",
            1.0,
            ns,
        ));
        show(r, &mut reports);
    }

    if wanted("mpmc_single") {
        let n = scale(5e6);
        let r = Comparison::new(
            "4a. MP/MC single item, u64, 1 thread per side",
            Metric::Throughput,
            "crossbeam ArrayQueue",
        )
        .contender("ours", || Ok(ring::mpmc_single_ours(cpus, n)))
        .contender("crossbeam ArrayQueue", || {
            Ok(ring::mpmc_single_arrayqueue(cpus, n))
        })
        .contender("ours mpsc", || Ok(ring::mpsc_single_ours(cpus, n)))
        .contender("ours spmc", || Ok(ring::spmc_single_ours(cpus, n)))
        .contender("DPDK rte_ring burst 1", {
            let c = ring_c.clone();
            move || {
                c.as_ref()
                    .map_err(Clone::clone)?
                    .ring(cpus, n, 1, ring::RING_SIZE)
            }
        })
        // The floor of any design with one claim per item and side
        // (docs/performance.md, 4a): not queues, the work one must do.
        .contender("floor: RMW + slot release", || {
            Ok(ring::mpmc_floor(cpus, n, ring::Floor::RmwSlotRelease))
        })
        .contender("floor: RMW + batched release", || {
            Ok(ring::mpmc_floor(cpus, n, ring::Floor::RmwBatchedRelease))
        })
        .contender("floor: no RMW", || {
            Ok(ring::mpmc_floor(cpus, n, ring::Floor::NoRmw))
        })
        .run(args.rounds, progress);
        for floor in [
            "floor: RMW + slot release",
            "floor: RMW + batched release",
            "floor: no RMW",
        ] {
            verdicts.push(speed_target(
                &r,
                &format!("4a (info) {floor} vs ArrayQueue"),
                floor,
                "crossbeam ArrayQueue",
                2.0,
                mops,
            ));
        }
        verdicts.push(speed_target(
            &r,
            "4a MP/MC single >= 2x ArrayQueue",
            "ours",
            "crossbeam ArrayQueue",
            2.0,
            mops,
        ));
        verdicts.push(speed_target(
            &r,
            "4a (info) MP/MC single vs rte_ring, 1 item",
            "ours",
            "DPDK rte_ring burst 1",
            1.0,
            mops,
        ));
        show(r, &mut reports);
    }

    if wanted("shared_core") {
        let n = scale(2e6);
        for k in [2usize, 4, 8] {
            let r = Comparison::new(
                format!(
                    "4c. {k} producer threads sharing cpu {}, one consumer, u64, single items",
                    cpus.producer
                ),
                Metric::Throughput,
                "crossbeam ArrayQueue",
            )
            .contender("ours mpsc", move || Ok(ring::shared_core_ours(cpus, k, n)))
            .contender("crossbeam ArrayQueue", move || {
                Ok(ring::shared_core_arrayqueue(cpus, k, n))
            })
            .contender("ours Channel::mpsc", move || {
                Ok(ring::shared_core_channel(cpus, k, n))
            })
            .contender("crossbeam-channel", move || {
                Ok(ring::shared_core_crossbeam_channel(cpus, k, n))
            })
            .contender("ours Channel::mpsc_per_thread", move || {
                Ok(ring::shared_core_per_thread(cpus, k, n))
            })
            .run(args.rounds, progress);
            verdicts.push(speed_target(
                &r,
                &format!("4c {k} producers on one core >= ArrayQueue"),
                "ours mpsc",
                "crossbeam ArrayQueue",
                1.0,
                mops,
            ));
            verdicts.push(speed_target(
                &r,
                &format!("4c (info) {k} producers: Channel::mpsc vs crossbeam-channel"),
                "ours Channel::mpsc",
                "crossbeam-channel",
                1.0,
                mops,
            ));
            verdicts.push(speed_target(
                &r,
                &format!("4c {k} producers: Channel::mpsc_per_thread >= ArrayQueue"),
                "ours Channel::mpsc_per_thread",
                "crossbeam ArrayQueue",
                1.0,
                mops,
            ));
            show(r, &mut reports);
        }
    }

    let mut autotest: Option<(Option<f64>, String)> = None;
    if wanted("mpmc_burst") {
        let n = scale(20e6);
        let c = ring_c.clone();
        let r = Comparison::new(
            "4b. MP/MC burst 32, u64, 1 thread per side",
            Metric::Cycles,
            "DPDK rte_ring",
        )
        .contender("ours", || Ok(ring::mpmc_burst_ours(cpus, n)))
        .contender("DPDK rte_ring", move || {
            c.as_ref()
                .map_err(Clone::clone)?
                .ring(cpus, n, ring::BURST, ring::RING_SIZE)
        })
        .run(args.rounds, progress);
        let ratio = r.cycle_ratio("ours", "DPDK rte_ring");
        verdicts.push(Verdict {
            target: "4b MP/MC burst32 <= rte_ring cycles/item (same run)".into(),
            ours: format!("ours: {}", cyc(&r, "ours")),
            peer: format!("rte_ring: {}", cyc(&r, "DPDK rte_ring")),
            ratio,
            goal: "cycle ratio >= 1.00x".into(),
            met: ratio.map(|s| s.median >= 1.0),
        });
        // The autotest's figure is enqueue side + dequeue side; compare
        // ours measured the same way.
        if let Ok(path) = std::env::var("DP_BENCH_AUTOTEST_OUT") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let fig = dpdk::parse_autotest_mpmc32(&text);
            let ours_side = r.get("ours").and_then(|c| c.side_cycles_per_op());
            verdicts.push(Verdict {
                target: "4b MP/MC burst32 vs ring_perf_autotest (enq+deq cyc)".into(),
                ours: format!(
                    "ours: {}",
                    ours_side.map_or("-".into(), |s| format!("{:.2} cyc", s.median))
                ),
                peer: match fig {
                    Some(f) => format!("autotest: {f:.2} cyc"),
                    None => "autotest: line not found".into(),
                },
                ratio: None,
                goal: "ours <= autotest (other run)".into(),
                met: fig.zip(ours_side).map(|(f, o)| o.median <= f),
            });
            autotest = Some((fig, path));
        }
        show(r, &mut reports);
    }

    if wanted("mempool") {
        let iters = scale(4e6);
        for cache in [mempool::CACHE_SIZE, 0] {
            let pool = mempool::pool(cache);
            let c = mempool_c.clone();
            let ours = format!("ours cache {cache}");
            let peer = format!("DPDK rte_mempool cache {cache}");
            let r = Comparison::new(
                format!("5. mempool get_bulk+put_bulk 32, cache {cache}, per object"),
                Metric::Cycles,
                peer.clone(),
            )
            .contender(ours.clone(), || {
                Ok(mempool::get_put(&pool, cpus.producer, iters))
            })
            .contender(peer.clone(), move || {
                c.as_ref().map_err(Clone::clone)?.mempool(
                    cpus.producer,
                    iters,
                    mempool::BURST,
                    cache,
                    mempool::POOL_COUNT,
                )
            })
            .run(args.rounds, progress);
            let ours_cyc = r.get(&ours).and_then(|c| c.cycles_per_op());
            let ratio = r.cycle_ratio(&ours, &peer);
            // Without a cache: at most 1.2x rte_mempool's cycles, so a
            // same-round speed ratio of at least 1 / 1.2.
            let met = if cache > 0 {
                ours_cyc.map(|s| s.median <= 2.0)
            } else {
                ratio.as_ref().map(|s| s.median >= 1.0 / 1.2)
            };
            verdicts.push(Verdict {
                target: if cache > 0 {
                    "5 mempool get/put32 cached <= 2 cyc/object".into()
                } else {
                    "5 mempool get/put32 no cache <= 1.2x rte_mempool".into()
                },
                ours: format!("ours: {}", cyc(&r, &ours)),
                peer: format!("rte_mempool: {}", cyc(&r, &peer)),
                ratio,
                goal: if cache > 0 {
                    "ours <= 2.00 cyc".into()
                } else {
                    "ratio >= 0.83".into()
                },
                met,
            });
            show(r, &mut reports);
        }
    }

    if wanted("blocking") {
        let n = scale(1e7);
        let r = Comparison::new(
            "7. Blocking send/recv: one thread sends, one receives on the other core, u64, capacity 1024",
            Metric::Throughput,
            "crossbeam-channel",
        )
        .contender("ours Channel::spsc", || blocking::ours_spsc(cpus, n))
        .contender("ours Channel::mpsc", || blocking::ours_mpsc(cpus, n))
        .contender("flume", || blocking::flume(cpus, n))
        .contender("crossbeam-channel", || blocking::crossbeam(cpus, n))
        .run(args.rounds, progress);
        for (ours, peer) in [
            ("ours Channel::spsc", "crossbeam-channel"),
            ("ours Channel::spsc", "flume"),
            ("ours Channel::mpsc", "crossbeam-channel"),
            ("ours Channel::mpsc", "flume"),
        ] {
            verdicts.push(speed_target(
                &r,
                &format!("7 blocking {ours} >= {peer}"),
                ours,
                peer,
                1.0,
                mops,
            ));
        }
        show(r, &mut reports);
        let idle = std::time::Duration::from_millis(200);
        let cpu = blocking::idle_cpu_all(idle);
        println!(
            "7. CPU used by a receiver blocked in recv() for {} ms with nothing to receive: {}",
            idle.as_millis(),
            cpu.iter()
                .map(|(name, d)| format!("{name} {:.2} ms", d.as_secs_f64() * 1e3))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    if wanted("pool") {
        let n = scale(2e7);
        let r = Comparison::new(
            "6. WorkerPool: keyed u64 messages, one sender to one worker on the other core",
            Metric::Throughput,
            "original design (flume)",
        )
        .contender("ours PartitionedSender", || {
            pool::partitioned_sender(cpus, n)
        })
        .contender("ours send_partitioned", || pool::send_partitioned(cpus, n))
        .contender("ours send_partitioned, default profile", || {
            pool::send_partitioned_default(cpus, n)
        })
        .contender("original design (flume)", || pool::flume_bounded(cpus, n))
        .contender("crossbeam-channel", || pool::crossbeam_bounded(cpus, n))
        .run(args.rounds, progress);
        let ours = r
            .get("ours PartitionedSender")
            .and_then(|c| c.ops_per_sec());
        verdicts.push(Verdict {
            target: "6 WorkerPool send_partitioned bursts >= 100 M msg/s".into(),
            ours: format!("ours: {}", mops(&r, "ours PartitionedSender")),
            peer: format!("flume: {}", mops(&r, "original design (flume)")),
            ratio: r.speed_ratio("ours PartitionedSender", "original design (flume)"),
            goal: "ours >= 100 M/s".into(),
            met: ours.map(|s| s.median >= 100e6),
        });
        let plain = r
            .get("ours send_partitioned, default profile")
            .and_then(|c| c.ops_per_sec());
        verdicts.push(Verdict {
            target: "6 plain WorkerPool::send_partitioned, default profile >= 100 M msg/s".into(),
            ours: format!(
                "ours: {}",
                mops(&r, "ours send_partitioned, default profile")
            ),
            peer: format!("crossbeam-channel: {}", mops(&r, "crossbeam-channel")),
            ratio: r.speed_ratio(
                "ours send_partitioned, default profile",
                "crossbeam-channel",
            ),
            goal: "ours >= 100 M/s".into(),
            met: plain.map(|s| s.median >= 100e6),
        });
        show(r, &mut reports);
    }

    if let Some((fig, path)) = &autotest {
        match fig {
            Some(f) => println!(
                "ring_perf_autotest (two physical cores, MP/MC bulk 32, enq+deq cycles/item): {f:.2}  [{path}]"
            ),
            None => println!(
                "ring_perf_autotest: no two-core MP/MC bulk-32 line found in {path} (format differs, or no two cores)"
            ),
        }
    }

    let mut summary = String::new();
    let _ = writeln!(
        summary,
        "\n== Summary (ratio = same-round median [p10 p90]; ours vs peer, >1 is ours faster) =="
    );
    let _ = writeln!(
        summary,
        "{:<54} {:<26} {:<34} {:>22} {:<32} met",
        "target", "ours", "peer", "ratio", "goal"
    );
    for v in &verdicts {
        let met = match v.met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        let _ = writeln!(
            summary,
            "{:<54} {:<26} {:<34} {:>22} {:<32} {met}",
            v.target,
            v.ours,
            v.peer,
            fmt_spread(v.ratio),
            v.goal
        );
    }
    print!("{summary}");

    if let Some(path) = &args.json {
        let mut j = String::new();
        let _ = write!(
            j,
            "{{\"tsc_ghz\":{},\"cpus\":[{},{}],\"rounds\":{},\"scale\":{},\"autotest_mpmc32\":{},\"comparisons\":[",
            json_num(ghz),
            cpus.producer,
            cpus.consumer,
            args.rounds,
            json_num(args.scale),
            autotest
                .as_ref()
                .and_then(|a| a.0)
                .map_or("null".into(), json_num)
        );
        for (i, r) in reports.iter().enumerate() {
            if i > 0 {
                j.push(',');
            }
            j.push_str(&r.to_json());
        }
        j.push_str("],\"targets\":[");
        for (i, v) in verdicts.iter().enumerate() {
            if i > 0 {
                j.push(',');
            }
            let _ = write!(
                j,
                "{{\"target\":{},\"ours\":{},\"peer\":{},\"ratio\":{},\"goal\":{},\"met\":{}}}",
                json_str(&v.target),
                json_str(&v.ours),
                json_str(&v.peer),
                json_spread(v.ratio),
                json_str(&v.goal),
                v.met.map_or("null".into(), |m| m.to_string())
            );
        }
        j.push_str("]}\n");
        match std::fs::write(path, j) {
            Ok(()) => println!("JSON written to {path}"),
            Err(e) => eprintln!("cannot write {path}: {e}"),
        }
    }
}
