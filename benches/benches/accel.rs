//! Accelerator offload, side by side in one run (docs/performance.md,
//! "Accelerators"). It measures; it does not assert.
//!
//! ```text
//! cargo bench -p dataplane-benches --bench accel -- [--rounds N] [--json PATH] [--quick]
//! ```
//!
//! 1. **Round trip** of a tiny dispatch (CRC32C of one 4-byte item), from
//!    submit to the completion seen by the polling thread: our `Queue`
//!    (timeline semaphore, and fences) against a bare `ash` loop that
//!    submits one pre-recorded command buffer and spins on its fence, and
//!    the same loop blocking in `vkWaitForFences`; an empty submit for
//!    reference. Contenders run A B C ... then reversed, every round; each
//!    reports p50 and p99 of its round trips, and ours is judged on the
//!    median over rounds of (ours p50 / bare p50).
//! 2. **Kernels**: each kernel over batches of 128-byte packets (CRC32C also
//!    over 4 KiB blocks), on the device (imported mbufs, 4 batches in
//!    flight) against the CPU implementation on the calling thread, at
//!    batch sizes 1 to 4096; the crossover is the smallest batch at which
//!    the device's packets/s beats the CPU's.
//! 3. **Import vs staging**: the same 256 x 1500-byte batch read in place
//!    from the registered mbuf pool, and copied through staging memory: the
//!    bytes not copied and the time saved per batch.

use dataplane::accel::{
    self, BackendChoice, BareLoop, Buffers, Completion, Kernel, Params, Payload, Queue,
    QueueConfig, SyncMode,
};
use hugepages::mbuf::{Mbuf, MbufPool, MbufPoolConfig};
use hugepages::mempool::{DmaBuf, Mempool, MempoolConfig};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

struct Args {
    rounds: usize,
    json: Option<String>,
    quick: bool,
}

fn args() -> Args {
    let mut a = Args {
        rounds: 7,
        json: None,
        quick: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--rounds" => a.rounds = it.next().and_then(|v| v.parse().ok()).unwrap_or(7).max(1),
            "--json" => a.json = it.next(),
            "--quick" => a.quick = true,
            _ => {} // `cargo bench` passes `--bench`
        }
    }
    a
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

// ------------------------------------------------------------ round trip

type Op<'a> = Box<dyn FnMut() -> Result<(), String> + 'a>;

struct Rt<'a> {
    name: &'static str,
    op: Op<'a>,
    p50: Vec<f64>,
    p99: Vec<f64>,
}

fn queue_op(sync: SyncMode) -> Result<Op<'static>, String> {
    let mut q = Queue::<Vec<Vec<u8>>>::open(QueueConfig {
        backend: BackendChoice::Named(accel::BackendKind::Vulkan),
        sync,
        depth: 2,
        max_items: 1,
        staging_bytes: 4096,
        ..QueueConfig::default()
    })
    .map_err(|e| e.to_string())?;
    let mut spare = Some(Buffers::new(vec![vec![0u8; 4]]));
    let mut done: Vec<Completion<Vec<Vec<u8>>>> = Vec::with_capacity(2);
    Ok(Box::new(move || {
        let b = spare.take().ok_or("no buffers")?;
        q.submit(Kernel::Crc32c, b, 1, 0)
            .map_err(|r| r.reason.to_string())?;
        while q.poll(&mut done) == 0 {
            std::hint::spin_loop();
        }
        let c = done.pop().ok_or("no completion")?;
        c.status.map_err(|e| e.to_string())?;
        spare = Some(c.buffers);
        Ok(())
    }))
}

fn round_trip(rounds: usize, per_round: usize, out: &mut String, json: &mut Vec<String>) {
    let bare = |f: fn(&mut BareLoop) -> dataplane::Result<()>| -> Result<Op<'static>, String> {
        let mut b = BareLoop::open().map_err(|e| e.to_string())?;
        Ok(Box::new(move || f(&mut b).map_err(|e| e.to_string())))
    };
    let made: Vec<(&'static str, Result<Op<'static>, String>)> = vec![
        ("queue, timeline semaphore", queue_op(SyncMode::Timeline)),
        ("queue, fences", queue_op(SyncMode::Fence)),
        ("bare ash, fence polled", bare(BareLoop::dispatch_poll)),
        ("bare ash, vkWaitForFences", bare(BareLoop::dispatch_wait)),
        ("bare ash, empty submit polled", bare(BareLoop::empty_poll)),
    ];
    let mut cs = Vec::new();
    for (name, op) in made {
        match op {
            Ok(op) => cs.push(Rt {
                name,
                op,
                p50: Vec::new(),
                p99: Vec::new(),
            }),
            Err(e) => {
                let _ = writeln!(out, "round trip: {name}: unavailable: {e}");
            }
        }
    }
    if cs.is_empty() {
        return;
    }
    let mut lat = Vec::with_capacity(per_round);
    for round in 0..=rounds {
        let order: Vec<usize> = if round % 2 == 0 {
            (0..cs.len()).collect()
        } else {
            (0..cs.len()).rev().collect()
        };
        for i in order {
            lat.clear();
            for _ in 0..per_round {
                let t = Instant::now();
                if let Err(e) = (cs[i].op)() {
                    let _ = writeln!(out, "{}: {e}", cs[i].name);
                    return;
                }
                lat.push(t.elapsed().as_nanos() as f64 / 1000.0);
            }
            if round == 0 {
                continue; // warm-up
            }
            lat.sort_by(f64::total_cmp);
            cs[i].p50.push(pct(&lat, 0.5));
            cs[i].p99.push(pct(&lat, 0.99));
        }
    }
    let _ = writeln!(
        out,
        "\n## Round trip of a tiny dispatch (us; median over {rounds} rounds of each round's p50 / p99, {per_round} round trips per round)\n"
    );
    let _ = writeln!(
        out,
        "| contender | p50 | p99 | p50 / bare ash polled (median of rounds) |"
    );
    let _ = writeln!(out, "| --- | ---: | ---: | ---: |");
    let base = cs.iter().position(|c| c.name == "bare ash, fence polled");
    for c in &cs {
        let ratio = base.map(|b| {
            let mut r: Vec<f64> = c.p50.iter().zip(&cs[b].p50).map(|(a, b)| a / b).collect();
            median(&mut r)
        });
        let (mut p50, mut p99) = (c.p50.clone(), c.p99.clone());
        let (p50, p99) = (median(&mut p50), median(&mut p99));
        let _ = writeln!(
            out,
            "| {} | {p50:.1} | {p99:.1} | {} |",
            c.name,
            ratio.map_or("-".into(), |r| format!("{r:.3}"))
        );
        json.push(format!(
            "{{\"section\":\"round_trip\",\"name\":\"{}\",\"p50_us\":{p50:.3},\"p99_us\":{p99:.3},\"ratio_p50\":{}}}",
            c.name,
            ratio.map_or("null".into(), |r| format!("{r:.4}"))
        ));
    }
}

// ------------------------------------------------------------ kernels

fn frames(pool: &MbufPool, n: usize, len: usize, seed: u64) -> Vec<Mbuf> {
    let params = Params::default();
    let sig: Vec<&[u8]> = params.patterns().collect();
    (0..n)
        .map(|i| {
            let mut m = pool.alloc().expect("pool sized for the batch");
            let f = m.append(len).expect("room");
            let s = seed
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .wrapping_add(i as u64);
            for (k, b) in f.iter_mut().enumerate() {
                *b = (s >> (k % 8 * 8)) as u8 ^ k as u8;
            }
            f[12..14].copy_from_slice(&[0x08, 0x00]);
            f[14] = 0x45;
            f[23] = 17;
            if i % 16 == 0 {
                let p = sig[i % sig.len()];
                f[60..60 + p.len()].copy_from_slice(p);
            }
            accel::kernel::ipv4_update(f);
            m
        })
        .collect()
}

/// Packets/s of `kernel` over `batches` batches on the device, `depth` in
/// flight, for at least `budget`.
fn device_rate<P: Payload>(
    q: &mut Queue<P>,
    kernel: Kernel,
    mut batches: Vec<P>,
    budget: Duration,
) -> Result<f64, String> {
    let per = batches.first().map_or(0, |b| b.item_count());
    let wg = accel::workgroups_for(per);
    let mut done = Vec::new();
    let t = Instant::now();
    let mut items = 0u64;
    let mut tag = 0;
    loop {
        while let Some(b) = batches.pop() {
            match q.submit(kernel, Buffers::new(b), wg, tag) {
                Ok(()) => tag += 1,
                Err(r) => {
                    batches.push(r.buffers.items);
                    break;
                }
            }
        }
        q.poll(&mut done);
        for c in done.drain(..) {
            c.status.map_err(|e| e.to_string())?;
            items += per as u64;
            batches.push(c.buffers.items);
        }
        if t.elapsed() >= budget && q.in_flight() == 0 {
            break;
        }
        if t.elapsed() >= budget {
            // Let the last ones finish; they count.
            continue;
        }
    }
    Ok(items as f64 / t.elapsed().as_secs_f64())
}

fn cpu_rate<P: Payload>(kernel: Kernel, batches: &mut [P], budget: Duration) -> f64 {
    let params = Params::default();
    let t = Instant::now();
    let mut items = 0u64;
    let mut sink = 0u32;
    while t.elapsed() < budget {
        for b in batches.iter_mut() {
            for i in 0..b.item_count() {
                sink ^= kernel.run_cpu(&params, b.item_mut(i));
            }
            items += b.item_count() as u64;
        }
    }
    std::hint::black_box(sink);
    items as f64 / t.elapsed().as_secs_f64()
}

fn kernels(rounds: usize, quick: bool, out: &mut String, json: &mut Vec<String>) {
    let sizes: &[usize] = if quick {
        &[1, 64, 1024]
    } else {
        &[1, 16, 64, 256, 1024, 4096]
    };
    let budget = Duration::from_millis(if quick { 20 } else { 60 });
    let depth = 4;
    let pool = MbufPool::new(MbufPoolConfig {
        name: "bench_accel".into(),
        count: 4096 * (depth + 1),
        cache_size: 0,
        ..MbufPoolConfig::default()
    })
    .expect("mbuf pool");
    let blocks = Mempool::new(MempoolConfig::new("bench_blocks", 1024 * (depth + 1), 4096))
        .expect("block pool");
    let _ = writeln!(
        out,
        "\n## Kernels: device (imported mbufs, {depth} batches in flight) vs the CPU implementation on one thread\n\n\
         Packets/s, median over {rounds} rounds (device and CPU alternate within each round); 128-byte packets, 4 KiB blocks.\n"
    );
    let _ = writeln!(
        out,
        "| kernel | batch | device Mpkt/s | CPU Mpkt/s | device / CPU |"
    );
    let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: |");
    let cases: Vec<(Kernel, bool)> = vec![
        (Kernel::Crc32c, false),
        (Kernel::Crc32c, true),
        (Kernel::Ipv4Verify, false),
        (Kernel::Ipv4Update, false),
        (Kernel::RssHash, false),
        (Kernel::PatternMatch, false),
    ];
    let mut crossovers = Vec::new();
    for (kernel, big) in cases {
        let label = if big {
            format!("{kernel} (4 KiB blocks)")
        } else {
            kernel.to_string()
        };
        let mut crossover = None;
        for &n in sizes {
            if big && n > 1024 {
                continue;
            }
            let max_items = n;
            let open = |register: bool| -> Option<Queue<Vec<Mbuf>>> {
                let mut q = Queue::open(QueueConfig {
                    backend: BackendChoice::Named(accel::BackendKind::Vulkan),
                    depth,
                    max_items,
                    staging_bytes: 4 << 20,
                    ..QueueConfig::default()
                })
                .ok()?;
                if register {
                    q.register(pool.clone()).ok()?;
                }
                Some(q)
            };
            let (mut dev, mut cpu) = (Vec::new(), Vec::new());
            for round in 0..=rounds {
                let run_dev = |dev: &mut Vec<f64>| -> Option<()> {
                    let r = if big {
                        let mut q = Queue::<Vec<DmaBuf>>::open(QueueConfig {
                            backend: BackendChoice::Named(accel::BackendKind::Vulkan),
                            depth,
                            max_items,
                            staging_bytes: 4 << 20,
                            ..QueueConfig::default()
                        })
                        .ok()?;
                        q.register(blocks.clone()).ok()?;
                        let bs: Vec<Vec<DmaBuf>> = (0..depth)
                            .map(|_| (0..n).filter_map(|_| blocks.alloc_buf()).collect())
                            .collect();
                        device_rate(&mut q, kernel, bs, budget).ok()?
                    } else {
                        let mut q = open(true)?;
                        let bs: Vec<Vec<Mbuf>> = (0..depth)
                            .map(|s| frames(&pool, n, 128, s as u64))
                            .collect();
                        device_rate(&mut q, kernel, bs, budget).ok()?
                    };
                    if round > 0 {
                        dev.push(r);
                    }
                    Some(())
                };
                let run_cpu = |cpu: &mut Vec<f64>| {
                    let r = if big {
                        let mut bs: Vec<Vec<DmaBuf>> =
                            vec![(0..n).filter_map(|_| blocks.alloc_buf()).collect()];
                        cpu_rate(kernel, &mut bs, budget)
                    } else {
                        let mut bs = vec![frames(&pool, n, 128, 9)];
                        cpu_rate(kernel, &mut bs, budget)
                    };
                    if round > 0 {
                        cpu.push(r);
                    }
                };
                if round % 2 == 0 {
                    if run_dev(&mut dev).is_none() {
                        let _ = writeln!(out, "| {label} | {n} | unavailable | | |");
                        return;
                    }
                    run_cpu(&mut cpu);
                } else {
                    run_cpu(&mut cpu);
                    if run_dev(&mut dev).is_none() {
                        return;
                    }
                }
            }
            let (d, c) = (median(&mut dev), median(&mut cpu));
            if crossover.is_none() && d > c {
                crossover = Some(n);
            }
            let _ = writeln!(
                out,
                "| {label} | {n} | {:.3} | {:.3} | {:.3} |",
                d / 1e6,
                c / 1e6,
                d / c
            );
            json.push(format!(
                "{{\"section\":\"kernel\",\"kernel\":\"{label}\",\"batch\":{n},\"device_pps\":{d:.0},\"cpu_pps\":{c:.0}}}"
            ));
        }
        crossovers.push((label, crossover));
    }
    let _ = writeln!(
        out,
        "\nCrossover (smallest batch where the device beats the CPU):\n"
    );
    for (label, c) in crossovers {
        let _ = writeln!(
            out,
            "- {label}: {}",
            c.map_or(
                format!("none up to {}", sizes[sizes.len() - 1]),
                |n| format!("{n} packets")
            )
        );
    }
}

// ------------------------------------------------------------ import vs staging

fn import_vs_staging(rounds: usize, out: &mut String, json: &mut Vec<String>) {
    let n = 256;
    let len = 1500;
    let pool = MbufPool::new(MbufPoolConfig {
        name: "bench_import".into(),
        count: 2 * n,
        cache_size: 0,
        ..MbufPoolConfig::default()
    })
    .expect("pool");
    let open = |register: bool| -> Option<Queue<Vec<Mbuf>>> {
        let mut q = Queue::open(QueueConfig {
            backend: BackendChoice::Named(accel::BackendKind::Vulkan),
            depth: 1,
            max_items: n,
            staging_bytes: 1 << 20,
            ..QueueConfig::default()
        })
        .ok()?;
        if register {
            q.register(pool.clone()).ok()?;
        }
        Some(q)
    };
    let (Some(mut imported), Some(mut staged)) = (open(true), open(false)) else {
        let _ = writeln!(out, "import vs staging: no Vulkan device");
        return;
    };
    let _ = writeln!(
        out,
        "\n## Import vs staging: one batch of {n} x {len} B packets, submit to completion (us, median over {rounds} rounds of each round's p50)\n"
    );
    let _ = writeln!(
        out,
        "| kernel | imported | staged | saved per batch | bytes not copied per batch |"
    );
    let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: |");
    for kernel in [Kernel::Crc32c, Kernel::Ipv4Update, Kernel::PatternMatch] {
        let mut batch = Some(frames(&pool, n, len, 1));
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let mut once = |q: &mut Queue<Vec<Mbuf>>| -> Option<(f64, accel::BufferPath)> {
            let mut lat = Vec::new();
            let mut path = accel::BufferPath::Host;
            for _ in 0..30 {
                let t = Instant::now();
                q.submit(
                    kernel,
                    Buffers::new(batch.take()?),
                    accel::workgroups_for(n),
                    0,
                )
                .ok()?;
                let mut done = Vec::new();
                while q.poll(&mut done) == 0 {
                    std::hint::spin_loop();
                }
                lat.push(t.elapsed().as_nanos() as f64 / 1000.0);
                let c = done.pop()?;
                path = c.path;
                batch = Some(c.buffers.items);
            }
            Some((median(&mut lat), path))
        };
        let mut paths = (accel::BufferPath::Host, accel::BufferPath::Host);
        for round in 0..=rounds {
            let (x, y) = if round % 2 == 0 {
                let x = once(&mut imported);
                (x, once(&mut staged))
            } else {
                let y = once(&mut staged);
                (once(&mut imported), y)
            };
            let (Some(x), Some(y)) = (x, y) else {
                let _ = writeln!(out, "{kernel}: a submission failed");
                return;
            };
            paths = (x.1, y.1);
            if round > 0 {
                a.push(x.0);
                b.push(y.0);
            }
        }
        let (x, y) = (median(&mut a), median(&mut b));
        let _ = writeln!(
            out,
            "| {kernel} | {x:.1} ({:?}) | {y:.1} ({:?}) | {:.1} | {} |",
            paths.0,
            paths.1,
            y - x,
            n * len
        );
        json.push(format!(
            "{{\"section\":\"import\",\"kernel\":\"{kernel}\",\"imported_us\":{x:.2},\"staged_us\":{y:.2},\"bytes\":{}}}",
            n * len
        ));
    }
}

fn main() {
    let a = args();
    let mut out = String::new();
    let mut json = Vec::new();
    let probe = accel::probe();
    let _ = writeln!(
        out,
        "# Accelerator bench\n\nmachine: {} cpus, {}\nvulkan: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(
                |s| s.lines().find(|l| l.starts_with("model name")).map(|l| l
                    .split(':')
                    .nth(1)
                    .unwrap_or("")
                    .trim()
                    .to_owned())
            )
            .unwrap_or_default(),
        probe
    );
    print!("{out}");
    let mut section = String::new();
    if probe.available {
        round_trip(
            a.rounds,
            if a.quick { 300 } else { 2000 },
            &mut section,
            &mut json,
        );
        print!("{section}");
        out.push_str(&section);
        section.clear();
        kernels(a.rounds, a.quick, &mut section, &mut json);
        print!("{section}");
        out.push_str(&section);
        section.clear();
        import_vs_staging(a.rounds, &mut section, &mut json);
        print!("{section}");
        out.push_str(&section);
    }
    let m = accel::debug_messages();
    if m.count > 0 {
        println!("\nvalidation messages: {:#?}", m.first);
    }
    if let Some(path) = a.json {
        let body = format!("[\n{}\n]\n", json.join(",\n"));
        if let Err(e) = std::fs::write(&path, body) {
            eprintln!("writing {path}: {e}");
        }
    }
}
