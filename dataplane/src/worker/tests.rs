use super::*;
use crate::channel::SendError;
use crate::lcore::IdlePolicy;
use crate::partition::{ConsistentHashPartitioner, PartitionerExt, RangePartitioner};
use crate::profile::Profile;
use crate::ring::Batch;
use crate::topology::Topology;
use crate::{Error, Result};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Records every payload it handles, per worker, into shared storage the
/// test can read after the stop; panics on 1_000_000 + k and errors on
/// 2_000_000 + k.
#[derive(Clone)]
struct Recorder {
    seen: Arc<Mutex<Vec<Vec<u64>>>>,
    inits: Arc<AtomicUsize>,
    ticks: Arc<AtomicUsize>,
    index: usize,
}

impl Worker for Recorder {
    type State = Vec<u64>;
    type Message = u64;

    fn init(&mut self) -> Result<Vec<u64>> {
        self.inits.fetch_add(1, Ordering::Relaxed);
        Ok(Vec::new())
    }

    fn handle_message(&mut self, state: &mut Vec<u64>, msg: Envelope<u64>) -> Result<()> {
        match msg.payload {
            p if (1_000_000..2_000_000).contains(&p) => panic!("poison {p}"),
            p if p >= 2_000_000 => return Err(Error::handler(format!("bad message {p}"))),
            p => state.push(p),
        }
        // Keep what was handled outside the state, which a restart drops.
        self.seen.lock().unwrap()[self.index].push(msg.payload);
        Ok(())
    }

    fn tick(&mut self, _state: &mut Vec<u64>) -> Result<()> {
        self.ticks.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

struct Harness {
    seen: Arc<Mutex<Vec<Vec<u64>>>>,
    inits: Arc<AtomicUsize>,
    ticks: Arc<AtomicUsize>,
}

fn harness(workers: usize) -> (Harness, PoolBuilder<Recorder>) {
    let h = Harness {
        seen: Arc::new(Mutex::new(vec![Vec::new(); workers])),
        inits: Arc::new(AtomicUsize::new(0)),
        ticks: Arc::new(AtomicUsize::new(0)),
    };
    let (seen, inits, ticks) = (h.seen.clone(), h.inits.clone(), h.ticks.clone());
    let b = WorkerPool::builder()
        .factory(move |index| Recorder {
            seen: seen.clone(),
            inits: inits.clone(),
            ticks: ticks.clone(),
            index,
        })
        .workers(workers)
        .cpu_affinity(false)
        .env_overrides(false)
        .idle(IdlePolicy::ADAPTIVE);
    (h, b)
}

fn send_all(pool: &WorkerPool<Recorder>, keys: impl Iterator<Item = u64>) {
    for k in keys {
        let mut m = k;
        loop {
            match pool.send_partitioned(&k, m) {
                Ok(()) => break,
                Err(SendError::Full(v)) => {
                    m = v;
                    std::thread::yield_now();
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
}

#[test]
fn keyed_messages_reach_their_owner_once_and_stop_drains() {
    let (h, b) = harness(3);
    let pool = b.build().unwrap();
    send_all(&pool, 0..30_000);
    let report = pool.shutdown().unwrap();
    let seen = h.seen.lock().unwrap();
    let owner = crate::partition::HashPartitioner::new();
    let _ = owner;
    let mut all = HashSet::new();
    for (w, got) in seen.iter().enumerate() {
        for &k in got {
            assert!(all.insert(k), "{k} twice");
            assert_eq!(report.workers[w].worker, WorkerId(w as u32));
        }
        assert_eq!(report.workers[w].handled, got.len() as u64);
        // Per worker, keys arrive in the order they were sent.
        assert!(
            got.windows(2).all(|p| p[0] < p[1]),
            "order within worker {w}"
        );
    }
    assert_eq!(all.len(), 30_000, "every message handled, none lost");
    assert!(report.undelivered.is_empty());
    assert!(
        report
            .workers
            .iter()
            .all(|w| w.status == WorkerStatus::Stopped && w.queue_depth == 0)
    );
}

#[test]
fn partitioned_sender_bursts_and_flushes_on_drop() {
    let (h, b) = harness(2);
    let pool = b.queue_capacity(64).build().unwrap();
    {
        let mut tx = pool.sender();
        for k in 0..10_000u64 {
            let mut m = k;
            loop {
                match tx.send_partitioned(&k, m) {
                    Ok(()) => break,
                    Err(SendError::Full(v)) => {
                        m = v;
                        std::thread::yield_now();
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }
        assert!(tx.pending() <= 2 * 32);
    } // drop flushes
    let mut pool = pool;
    pool.stop_all().unwrap();
    let seen = h.seen.lock().unwrap();
    let p = crate::partition::HashPartitioner::new();
    let _ = p;
    let total: usize = seen.iter().map(Vec::len).sum();
    assert_eq!(total, 10_000);
    // Same owner as the unbuffered path.
    let pool2 = harness(2).1.build().unwrap();
    for (w, got) in seen.iter().enumerate() {
        assert!(got.iter().take(50).all(|k| pool2.owner(k) == Ok(w)));
    }
}

#[test]
fn bad_capacity_and_too_many_pinned_workers_are_refused() {
    // Rounded up, as the original design's `with_queue_capacity(100)`
    // expects to work.
    let (_, b) = harness(1);
    let pool = b.queue_capacity(1000).build().unwrap();
    assert_eq!(pool.plan().queue_capacity, 1024);
    drop(pool);
    let (_, b) = harness(1);
    assert!(matches!(
        b.queue_capacity(0).build(),
        Err(Error::Capacity(_))
    ));

    // 24 pinned workers on a synthetic 4-core machine: all 24 run,
    // unpinned, and the plan says why.
    let (_, b) = harness(24);
    let pool = b
        .cpu_affinity(true)
        .topology(Topology::synthetic(4, 1, 1, 0))
        .build()
        .unwrap();
    assert_eq!(pool.num_workers(), 24);
    assert!(!pool.plan().affinity);
    assert!(
        pool.plan().notes.iter().any(|n| n.contains("unpinned")),
        "{:?}",
        pool.plan().notes
    );
    drop(pool);

    assert!(matches!(
        WorkerPool::<Recorder>::builder().build(),
        Err(Error::Config(_))
    ));
    let (_, b) = harness(1);
    assert!(matches!(b.workers(0).build(), Err(Error::Config(_))));
}

#[test]
fn a_key_with_no_owner_is_refused_and_handed_back() {
    let (_, b) = harness(2);
    // Three ranges for two workers: keys >= 200 have no owner.
    let pool = b
        .partitioner(RangePartitioner::new(vec![100, 200]).unwrap())
        .build()
        .unwrap();
    pool.send_partitioned(&5u64, 5).unwrap();
    pool.send_partitioned(&150u64, 150).unwrap();
    match pool.send_partitioned(&250u64, 250) {
        Err(SendError::NoOwner {
            value: 250,
            index: 2,
            workers: 2,
        }) => {}
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        pool.send_to_worker(7usize, 1),
        Err(SendError::NoOwner { value: 1, .. })
    ));
    let mut tx = pool.sender();
    assert!(matches!(
        tx.send_partitioned(&999u64, 9),
        Err(SendError::NoOwner { value: 9, .. })
    ));
    drop(tx);

    let (_, b) = harness(2);
    let pool = b
        .partitioner(ConsistentHashPartitioner::new(0, 16))
        .build()
        .unwrap();
    assert!(matches!(
        pool.send_partitioned("k", 1),
        Err(SendError::NoOwner { .. })
    ));
}

struct FailingInit {
    fails_left: Arc<AtomicUsize>,
    panic: bool,
}

impl Worker for FailingInit {
    type State = ();
    type Message = u64;
    fn init(&mut self) -> Result<()> {
        if self.fails_left.load(Ordering::Relaxed) > 0 {
            self.fails_left.fetch_sub(1, Ordering::Relaxed);
            if self.panic {
                panic!("init exploded");
            }
            return Err(Error::handler("init refused"));
        }
        Ok(())
    }
    fn handle_message(&mut self, _: &mut (), _: Envelope<u64>) -> Result<()> {
        Ok(())
    }
}

#[test]
fn a_worker_that_panics_in_init_is_a_clear_error_or_is_restarted() {
    for panic in [true, false] {
        let fails = Arc::new(AtomicUsize::new(usize::MAX));
        let f = fails.clone();
        let r = WorkerPool::builder()
            .factory(move |_| FailingInit {
                fails_left: f.clone(),
                panic,
            })
            .workers(2)
            .cpu_affinity(false)
            .env_overrides(false)
            .restart_policy(RestartPolicy::Never)
            .build();
        match r {
            Err(Error::WorkerFailed { reason, .. }) => {
                assert!(
                    reason.contains(if panic {
                        "init exploded"
                    } else {
                        "init refused"
                    }),
                    "{reason}"
                )
            }
            other => panic!("{other:?}"),
        }
    }
    // Two failures, then success: the restart policy carries it through.
    let fails = Arc::new(AtomicUsize::new(2));
    let f = fails.clone();
    let pool = WorkerPool::builder()
        .factory(move |_| FailingInit {
            fails_left: f.clone(),
            panic: true,
        })
        .workers(1)
        .cpu_affinity(false)
        .env_overrides(false)
        .build()
        .unwrap();
    let s = &pool.stats()[0];
    assert_eq!(
        (s.panics, s.restarts, s.status),
        (2, 2, WorkerStatus::Running)
    );
    pool.send_to_worker(0usize, 1).unwrap();
    assert_eq!(pool.shutdown().unwrap().workers[0].handled, 1);
}

#[test]
fn a_panicking_handler_is_isolated_restarted_and_keeps_its_queue() {
    let (h, b) = harness(2);
    let pool = b.build().unwrap();
    // Worker 0 gets 0..100 with a poison pill in the middle; worker 1 gets
    // ordinary messages throughout.
    for k in 0..100u64 {
        let m = if k == 50 { 1_000_050 } else { k };
        pool.send_to_worker(0usize, m).unwrap();
        pool.send_to_worker(1usize, 500 + k).unwrap();
    }
    // And one that returns an error.
    pool.send_to_worker(0usize, 2_000_001).unwrap();
    pool.send_to_worker(0usize, 100).unwrap();
    let report = pool.shutdown().unwrap();
    let w0 = &report.workers[0];
    assert_eq!(w0.panics, 1);
    assert_eq!(w0.lost_in_panic, 1, "only the poisoned message");
    assert_eq!(w0.errors, 1);
    assert_eq!(w0.restarts, 2);
    assert_eq!(
        w0.handled, 100,
        "every other message, including those queued behind the failures"
    );
    let seen = h.seen.lock().unwrap();
    let mut expect: Vec<u64> = (0..=100).filter(|&k| k != 50).collect();
    expect.sort_unstable();
    assert_eq!(seen[0], expect);
    assert_eq!(report.workers[1].handled, 100);
    assert_eq!(
        report.workers[1].restarts, 0,
        "the other worker was untouched"
    );
    assert_eq!(
        h.inits.load(Ordering::Relaxed),
        2 + 2,
        "state re-created on each restart"
    );
}

#[test]
fn a_worker_past_its_restart_limit_fails_and_its_queue_comes_back() {
    let (_, b) = harness(1);
    let pool = b
        .restart_policy(RestartPolicy::Limited {
            max_restarts: 1,
            within: Duration::from_secs(60),
        })
        .build()
        .unwrap();
    pool.pause(0usize).unwrap();
    for m in [1_000_001, 1, 1_000_002, 2, 3, 4] {
        pool.send_to_worker(0usize, m).unwrap();
    }
    pool.resume(0usize).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pool.stats()[0].status != WorkerStatus::Failed {
        assert!(std::time::Instant::now() < deadline, "never failed");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(matches!(
        pool.send_to_worker(0usize, 9),
        Err(SendError::Failed {
            value: 9,
            worker: 0
        })
    ));
    let pong = pool.ping(0usize, Duration::from_secs(5)).unwrap();
    assert_eq!(pong.status, WorkerStatus::Failed);
    let report = pool.shutdown().unwrap();
    let back: Vec<u64> = report.undelivered.into_iter().map(|e| e.payload).collect();
    assert_eq!(
        back,
        vec![2, 3, 4],
        "what the failed worker never handled is handed back"
    );
    assert_eq!(report.workers[0].handled, 1);
}

#[test]
fn pause_resume_ping_and_backpressure() {
    let (_, b) = harness(1);
    let pool = b.queue_capacity(8).build().unwrap();
    pool.pause(0usize).unwrap();
    // Pausing is a control message, applied at the worker's next pass; a
    // ping is answered after it, so once the pong is back nothing sent
    // afterwards is handled.
    let pong = pool.ping(0usize, Duration::from_secs(5)).unwrap();
    assert_eq!(pong.status, WorkerStatus::Paused);
    for i in 0..8 {
        pool.send_to_worker(0usize, i).unwrap();
    }
    assert!(
        matches!(pool.try_send_to_worker(0usize, 8), Err(SendError::Full(8))),
        "a full queue pushes back"
    );
    assert!(
        matches!(
            pool.send_to_worker_timeout(0usize, 8, Duration::from_millis(5)),
            Err(SendError::Full(8))
        ),
        "a timed send gives up"
    );
    let pong = pool.ping(0usize, Duration::from_secs(5)).unwrap();
    assert_eq!(pong.status, WorkerStatus::Paused);
    assert_eq!(pong.queue_depth, 8);
    assert_eq!(pong.handled, 0);
    assert_eq!(pong.last_activity, None);
    // A plain send waits (parked) for room; the worker wakes it once
    // resumed. (The capacity bounds each sending thread's lane: this
    // thread fills its own first.)
    std::thread::scope(|s| {
        let waiting = s.spawn(|| {
            for i in 100..108 {
                pool.try_send_to_worker(0usize, i).unwrap();
            }
            pool.send_to_worker(0usize, 108)
        });
        std::thread::sleep(Duration::from_millis(20));
        assert!(!waiting.is_finished(), "the send waits while full");
        pool.resume(0usize).unwrap();
        waiting.join().unwrap().unwrap();
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let pong = pool.ping(0usize, Duration::from_secs(5)).unwrap();
        if pong.handled == 17 {
            assert_eq!(pong.queue_depth, 0);
            assert!(pong.last_activity.is_some());
            assert_eq!(pong.status, WorkerStatus::Running);
            break;
        }
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(pool.ping_all(Duration::from_secs(5)).unwrap().len(), 1);
}

#[test]
fn a_paused_worker_still_drains_at_stop() {
    let (_, b) = harness(2);
    let mut pool = b.build().unwrap();
    pool.pause_all().unwrap();
    for i in 0..100u64 {
        pool.send_to_worker((i % 2) as usize, i).unwrap();
    }
    pool.stop_all().unwrap();
    let s = pool.stats();
    assert_eq!(s[0].handled + s[1].handled, 100);
    assert!(matches!(
        pool.send_to_worker(0usize, 1),
        Err(SendError::Disconnected(1))
    ));
    assert!(pool.ping(0usize, Duration::from_millis(10)).is_err());
}

#[test]
fn broadcast_reaches_everyone_and_reports_misses() {
    let (h, b) = harness(3);
    let pool = b.queue_capacity(2).build().unwrap();
    pool.broadcast(7).unwrap();
    // Let every worker handle it before pausing one.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pool.stats().iter().any(|w| w.handled < 1) {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
    pool.pause(1usize).unwrap();
    // Fill worker 1's queue so the next broadcast misses it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pool.ping(1usize, Duration::from_secs(5)).unwrap().status != WorkerStatus::Paused {
        assert!(std::time::Instant::now() < deadline);
    }
    pool.send_to_worker(1usize, 1).unwrap();
    pool.send_to_worker(1usize, 2).unwrap();
    let err = pool.try_broadcast(8).unwrap_err();
    assert_eq!(err.failed.len(), 1);
    assert_eq!(err.failed[0].0, WorkerId(1));
    // The waiting broadcast reaches worker 1 once it makes room.
    // (The capacity bounds each sending thread's lane: this thread fills
    // its own to worker 1 first.)
    std::thread::scope(|s| {
        let waiting = s.spawn(|| {
            pool.send_to_worker(1usize, 3).unwrap();
            pool.send_to_worker(1usize, 4).unwrap();
            pool.broadcast(9)
        });
        std::thread::sleep(Duration::from_millis(20));
        assert!(!waiting.is_finished(), "waits for worker 1's room");
        pool.resume(1usize).unwrap();
        waiting.join().unwrap().unwrap();
    });
    let report = pool.shutdown().unwrap();
    let seen = h.seen.lock().unwrap();
    // 7 was handled before anything else was sent; 8 and 9 came through
    // two threads' lanes, between which there is no order (the worker may
    // find 9 before it has looked at this thread's lane again).
    let mut zero = seen[0].clone();
    zero[1..].sort_unstable();
    assert_eq!(zero, vec![7, 8, 9], "{:?}", seen[0]);
    // Each thread's order is kept; the two threads' lanes interleave.
    let mut one = seen[1].clone();
    assert_eq!(one[0], 7);
    assert!(one.iter().position(|&m| m == 4) < one.iter().position(|&m| m == 9));
    one.sort();
    assert_eq!(one, vec![1, 2, 3, 4, 7, 9]);
    assert_eq!(seen[2], vec![7, 8, 9]);
    assert_eq!(report.workers.iter().map(|w| w.handled).sum::<u64>(), 12);
}

#[test]
fn bursts_and_ticks() {
    let (h, b) = harness(1);
    let pool = b
        .tick_interval(Duration::from_micros(200))
        .queue_capacity(16)
        .build()
        .unwrap();
    let mut msgs = Batch::<u64, 64>::new();
    msgs.fill_from(&mut (0..40));
    let sent = pool.send_burst_to_worker(0usize, &mut msgs).unwrap();
    assert!(sent <= 16);
    assert_eq!(msgs.len(), 40 - sent, "the rest stay with the caller");
    assert_eq!(msgs[0], sent as u64, "in order");
    std::thread::sleep(Duration::from_millis(10));
    let _ = pool.shutdown().unwrap();
    assert!(h.ticks.load(Ordering::Relaxed) > 0);
    assert_eq!(
        h.seen.lock().unwrap()[0],
        (0..sent as u64).collect::<Vec<_>>()
    );
}

#[derive(Default)]
struct Summer;

static SUMMED: AtomicU64 = AtomicU64::new(0);

impl Worker for Summer {
    type State = u64;
    type Message = u64;
    fn init(&mut self) -> Result<u64> {
        Ok(0)
    }
    fn handle_message(&mut self, s: &mut u64, m: Envelope<u64>) -> Result<()> {
        *s += m.payload;
        Ok(())
    }
    fn shutdown(&mut self, s: u64) -> Result<()> {
        SUMMED.fetch_add(s, Ordering::Relaxed);
        Ok(())
    }
}

#[test]
fn zero_config_profiles_and_the_seed_forms() {
    // Zero config on whatever machine runs the tests; no env overrides can
    // be assumed, so only check that it runs and routes.
    SUMMED.store(0, Ordering::Relaxed);
    let mut pool = WorkerPool::<Summer>::new().unwrap();
    assert!(pool.num_workers() >= 1);
    assert_eq!(pool.plan().profile, Profile::Production);
    for k in 0..1000u64 {
        pool.send_partitioned(&k, 1).unwrap();
    }
    pool.stop_all().unwrap();
    assert_eq!(
        SUMMED.load(Ordering::Relaxed),
        1000,
        "shutdown saw every message"
    );

    let pool = WorkerPool::<Summer>::power().unwrap();
    assert_eq!(pool.plan().profile, Profile::Power);
    drop(pool);

    // The original design's PoolConfig / WorkerConfig / with_partitioner forms.
    let config = PoolConfig::new()
        .with_num_workers(2)
        .with_cpu_affinity(false)
        .with_worker_config(
            WorkerConfig::new()
                .with_queue_capacity(256)
                .with_name("proc"),
        );
    let mut pool = WorkerPool::with_partitioner(
        config,
        |_| Summer,
        Arc::new(crate::partition::HashPartitioner::new()),
    )
    .unwrap();
    assert_eq!(pool.worker_ids(), vec![WorkerId(0), WorkerId(1)]);
    for i in 0..100 {
        pool.send_partitioned(&format!("user-{}", i % 10), i)
            .unwrap();
    }
    assert!(pool.all_running());
    pool.stop_all().unwrap();

    // A single worker, the original design's `worker::spawn`.
    let mut w = spawn(Summer, WorkerConfig::new().with_name("counter")).unwrap();
    w.send(5).unwrap();
    w.send(10).unwrap();
    assert!(w.is_running());
    w.stop().unwrap();
    assert_eq!(w.stats().handled, 2);
}

#[test]
fn partitioner_ext_on_the_pool_matches_owner() {
    let (_, b) = harness(4);
    let p = crate::partition::HashPartitioner::with_seed(3);
    let pool = b.partitioner(p).build().unwrap();
    for k in 0..100u64 {
        assert_eq!(pool.owner(&k), Ok(p.partition(&k, 4)));
    }
}

/// The default partitioner is held by value (inlined on every keyed send);
/// any other goes through `dyn`, and both route as the partitioner says.
#[test]
fn the_hash_partitioner_is_held_by_value_and_others_through_dyn() {
    use super::routes::Route;
    use crate::partition::{HashPartitioner, RangePartitioner};
    assert!(matches!(
        Route::of(HashPartitioner::with_seed(1)),
        Route::Hash(_)
    ));
    assert!(matches!(
        Route::of(RangePartitioner::new(vec![1]).unwrap()),
        Route::Dyn(_)
    ));
}

/// Sending threads that come and go, more of them at once than cores, each
/// on every send path in turn (one message, a burst, the buffered sender):
/// every message is handled once, and each sender's messages reach each
/// worker in the order sent, whether the thread sends through a lane of
/// its own or (lane ids taken by threads that exited, and reused) behind
/// what an earlier thread left in it.
#[test]
fn senders_that_come_and_go_keep_their_order_on_every_send_path() {
    let (h, b) = harness(2);
    let pool = b.queue_capacity(64).build().unwrap();
    let (waves, per_wave, each) = (3u64, 6u64, 1_500u64);
    for wave in 0..waves {
        std::thread::scope(|s| {
            for t in 0..per_wave {
                let pool = &pool;
                s.spawn(move || {
                    let sender = wave * per_wave + t;
                    let mut tx = pool.sender();
                    for seq in 0..each {
                        let (w, m) = ((seq % 2) as usize, sender * 10_000 + seq);
                        loop {
                            let full = match seq % 3 {
                                0 => pool.send_to_worker(w, m).is_err_and(|e| e.is_full()),
                                1 => {
                                    let mut one = Batch::<u64, 4>::new();
                                    one.push(m).unwrap();
                                    pool.send_burst_to_worker(w, &mut one).unwrap() == 0
                                }
                                _ => {
                                    tx.send_to_worker(w, m).unwrap();
                                    tx.flush() != 0
                                }
                            };
                            if !full {
                                break;
                            }
                            // Only the buffered sender keeps what it could
                            // not move; drain it before trying again.
                            while tx.flush() != 0 {
                                std::thread::yield_now();
                            }
                            if seq % 3 == 2 {
                                break;
                            }
                            std::thread::yield_now();
                        }
                    }
                });
            }
        });
    }
    pool.shutdown().unwrap();
    let seen = h.seen.lock().unwrap();
    let mut total = 0;
    for (w, got) in seen.iter().enumerate() {
        let mut last = std::collections::HashMap::new();
        for &m in got {
            let (sender, seq) = (m / 10_000, m % 10_000);
            assert_eq!(seq % 2, w as u64, "worker {w} got another's message");
            if let Some(prev) = last.insert(sender, seq) {
                assert!(
                    prev < seq,
                    "sender {sender}: {seq} after {prev} at worker {w}"
                );
            }
        }
        total += got.len() as u64;
    }
    assert_eq!(total, waves * per_wave * each, "every message handled once");
}

/// More sending threads than cores, each blocking on a queue of 2 to one
/// worker: every send waits (parks) for room and is woken by the worker's
/// takes; nothing is lost and each thread's order is kept.
#[test]
fn many_blocked_senders_on_few_cores_all_get_through() {
    const THREADS: u64 = 8;
    const PER: u64 = 2_000;
    let (h, b) = harness(1);
    let pool = b.queue_capacity(2).build().unwrap();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let pool = &pool;
            s.spawn(move || {
                for i in 0..PER {
                    pool.send_to_worker(0usize, t * 10_000 + i).unwrap();
                }
            });
        }
    });
    let report = pool.shutdown().unwrap();
    assert_eq!(report.workers[0].handled, THREADS * PER);
    let seen = h.seen.lock().unwrap();
    let mut next = [0u64; THREADS as usize];
    for &m in &seen[0] {
        let (t, i) = ((m / 10_000) as usize, m % 10_000);
        assert_eq!(i, next[t], "thread {t} out of order");
        next[t] += 1;
    }
    assert!(next.iter().all(|&n| n == PER));
}

/// A worker with I/O of its own: each message starts an operation that
/// completes a few passes later, as a device's would; `poll` reaps them.
/// Fails its first `poll` once when `fail_once` is set.
struct Device {
    done: Arc<AtomicU64>,
    polls: Arc<AtomicU64>,
    at_shutdown: Arc<Mutex<Option<usize>>>,
    fail_once: bool,
}

impl Worker for Device {
    /// Operations in flight: (id, passes left).
    type State = Vec<(u64, u32)>;
    type Message = u64;

    fn init(&mut self) -> Result<Self::State> {
        Ok(Vec::new())
    }

    fn handle_message(&mut self, state: &mut Self::State, msg: Envelope<u64>) -> Result<()> {
        state.push((msg.payload, 100));
        Ok(())
    }

    fn poll(&mut self, state: &mut Self::State, _ctx: &crate::lcore::PollContext) -> Result<usize> {
        self.polls.fetch_add(1, Ordering::Relaxed);
        if std::mem::take(&mut self.fail_once) {
            return Err(Error::handler("the device went away"));
        }
        let before = state.len();
        for op in state.iter_mut() {
            op.1 = op.1.saturating_sub(1);
        }
        state.retain(|op| op.1 > 0);
        let reaped = before - state.len();
        self.done.fetch_add(reaped as u64, Ordering::Relaxed);
        // Work: what was reaped, and what is still in flight (so a stop
        // waits for it).
        Ok(reaped + state.len())
    }

    fn shutdown(&mut self, state: Self::State) -> Result<()> {
        *self.at_shutdown.lock().unwrap() = Some(state.len());
        Ok(())
    }
}

#[test]
fn poll_drives_owned_io_every_pass_and_the_stop_waits_for_it() {
    let done = Arc::new(AtomicU64::new(0));
    let polls = Arc::new(AtomicU64::new(0));
    let at_shutdown = Arc::new(Mutex::new(None));
    let (d, p, s) = (done.clone(), polls.clone(), at_shutdown.clone());
    let pool = WorkerPool::builder()
        .factory(move || Device {
            done: d.clone(),
            polls: p.clone(),
            at_shutdown: s.clone(),
            fail_once: false,
        })
        .workers(1)
        .cpu_affinity(false)
        .env_overrides(false)
        .build()
        .unwrap();
    for i in 0..10_000u64 {
        pool.send_to_worker(0, i).unwrap();
    }
    // Stopped at once: the operations started by the last messages are
    // still in flight, and the stop must wait for them.
    let report = pool.shutdown().unwrap();
    assert_eq!(report.workers[0].handled, 10_000);
    assert_eq!(
        done.load(Ordering::Relaxed),
        10_000,
        "every operation reaped"
    );
    assert_eq!(
        *at_shutdown.lock().unwrap(),
        Some(0),
        "nothing in flight at shutdown"
    );
    assert!(polls.load(Ordering::Relaxed) >= 3);
}

#[test]
fn a_failing_poll_restarts_the_worker() {
    let done = Arc::new(AtomicU64::new(0));
    let d = done.clone();
    let pool = WorkerPool::builder()
        .factory(move || Device {
            done: d.clone(),
            polls: Arc::new(AtomicU64::new(0)),
            at_shutdown: Arc::new(Mutex::new(None)),
            fail_once: true,
        })
        .workers(1)
        .cpu_affinity(false)
        .env_overrides(false)
        .build()
        .unwrap();
    // Once restarted (the failure is in the first pass), it handles on.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pool.stats()[0].restarts == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    for i in 0..100u64 {
        pool.send_to_worker(0, i).unwrap();
    }
    let report = pool.shutdown().unwrap();
    assert_eq!(report.workers[0].restarts, 1);
    assert_eq!(report.workers[0].errors, 1);
    assert_eq!(report.workers[0].handled, 100);
    assert_eq!(done.load(Ordering::Relaxed), 100);
}

#[test]
fn the_stats_view_reads_what_the_pool_reads_and_telemetry_serves_it() {
    let (_h, b) = harness(2);
    let pool = b.build().unwrap();
    let view = pool.stats_view();
    send_all(&pool, 0..1000);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while view.snapshot().iter().map(|w| w.handled).sum::<u64>() < 1000
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    let (a, b) = (view.snapshot(), pool.stats());
    assert_eq!(a.len(), 2);
    assert_eq!(
        a.iter().map(|w| w.handled).collect::<Vec<_>>(),
        b.iter().map(|w| w.handled).collect::<Vec<_>>()
    );
    assert_eq!(a.iter().map(|w| w.handled).sum::<u64>(), 1000);
    let t = crate::telemetry::Telemetry::new();
    t.workers(view.clone()).unwrap();
    let answer: serde_json::Value = serde_json::from_str(&t.answer("/dataplane/workers")).unwrap();
    assert_eq!(answer["/dataplane/workers"][1]["worker"], 1);
    let m = crate::metrics::Metrics::new();
    m.workers(view);
    let text = m.render();
    assert!(
        text.contains("dataplane_worker_handled_total{worker=\"0\"}"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE dataplane_worker_queue_depth gauge"),
        "{text}"
    );
    pool.shutdown().unwrap();
}
