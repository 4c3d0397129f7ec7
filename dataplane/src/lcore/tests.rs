use super::*;
use crate::ring;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

fn cpus() -> Vec<CpuId> {
    affinity::allowed_cpus().unwrap()
}

#[test]
fn lcores_run_on_the_cpu_they_are_pinned_to() {
    let mut g = LcoreGroup::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    for &cpu in cpus().iter().take(2) {
        let id = g.add(LcoreConfig::new(Role::App).cpu(cpu));
        let seen = seen.clone();
        let mut once = false;
        g.poller(id, move |ctx: &PollContext| {
            if !once {
                once = true;
                seen.lock()
                    .unwrap()
                    .push((cpu, current_cpu(), current(), ctx.lcore()));
            }
            0
        })
        .unwrap();
    }
    let running = g.launch().unwrap();
    while seen.lock().unwrap().len() < cpus().len().min(2) {
        std::thread::yield_now();
    }
    let reports = running.stop().unwrap();
    for (want, got, current, lcore) in seen.lock().unwrap().iter() {
        assert_eq!(Some(*want), *got, "pinned");
        assert_eq!(*current, Some(*lcore), "thread-local lcore id");
    }
    assert!(reports.iter().all(|r| r.exit == Exit::Drained));
    assert_eq!(current(), None, "the test thread is not an lcore");
}

#[test]
fn bad_cpus_are_refused_before_anything_starts() {
    let started = Arc::new(AtomicUsize::new(0));
    let mut g = LcoreGroup::new();
    let ok = g.add(LcoreConfig::new(Role::App));
    let s = started.clone();
    g.poller(ok, move |_: &PollContext| {
        s.fetch_add(1, Ordering::Relaxed);
        0
    })
    .unwrap();
    g.add(LcoreConfig::new(Role::App).cpu(CpuId(100_000)));
    match g.launch() {
        Err(Error::Cpu {
            cpu: 100_000,
            reason,
        }) => assert!(!reason.is_empty()),
        other => panic!("expected a CPU error, got {other:?}"),
    }
    assert_eq!(started.load(Ordering::Relaxed), 0, "nothing ran");

    // A thread that pinned itself can still launch lcores on the other
    // CPUs the process may use: the check is against the process's mask,
    // not the calling thread's.
    let all = cpus();
    if all.len() < 2 {
        println!("skip: one CPU only; cannot test pinning from a pinned thread");
        return;
    }
    std::thread::spawn(move || {
        affinity::set_current(&all[..1]).unwrap();
        let mut g = LcoreGroup::new();
        let id = g.add(LcoreConfig::new(Role::App).cpu(all[1]));
        g.poller(id, |_: &PollContext| 0).unwrap();
        g.launch().unwrap().stop().unwrap();
    })
    .join()
    .unwrap();
}

#[test]
fn two_lcores_on_one_cpu_need_permission() {
    let cpu = cpus()[0];
    let mut g = LcoreGroup::new();
    g.add(LcoreConfig::new(Role::App).cpu(cpu));
    g.add(LcoreConfig::new(Role::Io).cpu(cpu));
    assert!(matches!(g.launch(), Err(Error::Config(m)) if m.contains("both pinned")));

    let mut g = LcoreGroup::new().allow_shared_cpus(true);
    g.add(LcoreConfig::new(Role::App).cpu(cpu));
    g.add(LcoreConfig::new(Role::Io).cpu(cpu));
    g.launch().unwrap().stop().unwrap();

    let mut g = LcoreGroup::new();
    g.add(LcoreConfig::new(Role::Main));
    g.add(LcoreConfig::new(Role::Main));
    assert!(matches!(g.launch(), Err(Error::Config(m)) if m.contains("main")));
    let mut g = LcoreGroup::new();
    assert!(g.poller(LcoreId(3), |_: &PollContext| 0).is_err());
}

/// source -> forward -> sink over two rings, stopped at a random moment:
/// everything the source produced reaches the sink.
fn pipeline_loses_nothing(idle: IdlePolicy, run_for: Duration, with_main: bool) {
    let (mut a_tx, mut a_rx) = ring::spsc::<u64>(64).unwrap();
    let (mut b_tx, mut b_rx) = ring::spsc::<u64>(64).unwrap();
    let produced = Arc::new(AtomicU64::new(0));
    let consumed = Arc::new(AtomicU64::new(0));
    let sum = Arc::new(AtomicU64::new(0));

    let mut g = LcoreGroup::new();
    let main = with_main.then(|| g.add(LcoreConfig::new(Role::Main).idle(idle)));
    let src = g.add(LcoreConfig::new(Role::Io).idle(idle));
    let fwd = g.add(LcoreConfig::new(Role::App).idle(idle));
    let sink = main.unwrap_or_else(|| g.add(LcoreConfig::new(Role::App).idle(idle)));

    let p = produced.clone();
    let mut next = 0u64;
    g.poller(src, move |ctx: &PollContext| {
        if ctx.stopping() {
            return 0;
        }
        let mut b = ring::Batch::<u64, 16>::new();
        b.fill_from(&mut (next..));
        let n = a_tx.push_burst(&mut b);
        next += n as u64;
        p.store(next, Ordering::Relaxed);
        n
    })
    .unwrap();
    // The forwarder holds a private batch: it must report it while it holds it.
    let mut held = ring::Batch::<u64, 32>::new();
    g.poller(fwd, move |_: &PollContext| {
        let got = a_rx.pop_burst(&mut held);
        let sent = b_tx.push_burst(&mut held);
        got + sent + held.len()
    })
    .unwrap();
    let (c, s) = (consumed.clone(), sum.clone());
    g.poller(sink, move |_: &PollContext| {
        let mut b = ring::Batch::<u64, 32>::new();
        let n = b_rx.pop_burst(&mut b);
        for v in b.drain() {
            s.fetch_add(v, Ordering::Relaxed);
        }
        c.fetch_add(n as u64, Ordering::Relaxed);
        n
    })
    .unwrap();

    let running = g.launch().unwrap();
    // Under load a thread may take a while to get its first timeslice:
    // stop at a random moment after the source has started, not before.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while produced.load(Ordering::Relaxed) == 0 {
        assert!(std::time::Instant::now() < deadline, "the source never ran");
        std::thread::yield_now();
    }
    std::thread::sleep(run_for);
    let reports = running.stop().unwrap();
    assert!(
        reports.iter().all(|r| r.exit == Exit::Drained),
        "{reports:?}"
    );
    let n = produced.load(Ordering::Relaxed);
    assert!(n > 0, "the source ran");
    assert_eq!(
        consumed.load(Ordering::Relaxed),
        n,
        "nothing left in flight"
    );
    assert_eq!(
        sum.load(Ordering::Relaxed),
        n * (n - 1) / 2,
        "each item once"
    );
    let work: u64 = reports.iter().map(|r| r.stats.work_items).sum();
    assert!(work >= 2 * n, "stats count the work");
}

#[test]
fn an_orderly_stop_loses_nothing_in_flight() {
    use rand::Rng;
    let mut rng = rand::rng();
    for _ in 0..if cfg!(miri) { 1 } else { 20 } {
        let t = Duration::from_micros(rng.random_range(0..3_000));
        pipeline_loses_nothing(IdlePolicy::BusyPoll, t, false);
    }
}

#[test]
fn every_idle_policy_drains_and_the_main_lcore_takes_part() {
    for idle in [
        IdlePolicy::BusyPoll,
        IdlePolicy::ADAPTIVE,
        IdlePolicy::Sleep {
            interval: Duration::from_micros(200),
        },
    ] {
        pipeline_loses_nothing(idle, Duration::from_millis(5), true);
    }
}

#[test]
fn idle_lcores_count_idle_passes() {
    let mut g = LcoreGroup::new();
    let id = g.add(LcoreConfig::new(Role::App).idle(IdlePolicy::Sleep {
        interval: Duration::from_micros(100),
    }));
    g.poller(id, |_: &PollContext| 0).unwrap();
    let running = g.launch().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let live = running.stats();
    let reports = running.stop().unwrap();
    let s = reports[0].stats;
    assert!(s.idle_passes > 0 && s.busy_passes == 0, "{s:?}");
    assert!(s.idle_cycles > 0);
    assert_eq!(live[0].1, Role::App);
}

#[test]
fn a_panicking_poller_is_isolated_and_reported() {
    let (mut tx, mut rx) = ring::spsc::<u32>(8).unwrap();
    // The panicking lcore leaves the drain only once its panic is
    // reported, and a backtrace (RUST_BACKTRACE=1) under ThreadSanitizer
    // takes seconds to symbolise: give the drain room beyond the default
    // 10 s, so the test checks the isolation, not the sanitizer's speed.
    let mut g = LcoreGroup::new().drain_timeout(Duration::from_secs(120));
    let bad = g.add(LcoreConfig::new(Role::App));
    let good = g.add(LcoreConfig::new(Role::App));
    let mut n = 0;
    g.poller(bad, move |_: &PollContext| {
        n += 1;
        if n == 100 {
            panic!("poller bug");
        }
        usize::from(tx.push(1).is_ok())
    })
    .unwrap();
    let got = Arc::new(AtomicUsize::new(0));
    let g2 = got.clone();
    g.poller(good, move |_: &PollContext| {
        let k = usize::from(rx.pop().is_some());
        g2.fetch_add(k, Ordering::Relaxed);
        k
    })
    .unwrap();
    let running = g.launch().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let reports = running.stop().unwrap();
    assert!(matches!(&reports[0].exit, Exit::Panicked(m) if m.contains("poller bug")));
    assert_eq!(
        reports[1].exit,
        Exit::Drained,
        "the other lcore drained and stopped"
    );
    assert!(got.load(Ordering::Relaxed) > 0);
}

#[test]
fn drain_times_out_on_a_poller_that_never_settles() {
    let mut g = LcoreGroup::new().drain_timeout(Duration::from_millis(30));
    let id = g.add(LcoreConfig::new(Role::App));
    // Breaks the contract: always claims work.
    g.poller(id, |_: &PollContext| 1).unwrap();
    let reports = g.launch().unwrap().stop().unwrap();
    assert_eq!(reports[0].exit, Exit::DrainTimedOut);
}

#[test]
fn dropping_a_running_group_stops_it() {
    let mut g = LcoreGroup::new();
    let id = g.add(LcoreConfig::new(Role::App));
    g.poller(id, |_: &PollContext| 0).unwrap();
    drop(g.launch().unwrap());
}

#[test]
fn a_cpu_outside_the_process_mask_is_refused() {
    let all = cpus();
    let cpu = all[0];
    let others: Vec<CpuId> = all.iter().copied().filter(|&c| c != cpu).collect();
    match affinity::check_cpu(cpu, &others) {
        Err(Error::Cpu { reason, .. }) => assert!(reason.contains("affinity mask"), "{reason}"),
        other => panic!("expected a CPU error, got {other:?}"),
    }
    assert!(affinity::check_cpu(cpu, &all).is_ok());
}
