//! Unit tests of the ring API: the contract of each operation in every mode,
//! ownership (every item dropped exactly once), the chunk API, and a
//! randomized multi-threaded exactly-once/in-order checker. These also run
//! under Miri and ThreadSanitizer (see scripts/test.sh), with the sizes
//! scaled down under Miri.

use super::*;
use std::sync::Arc as StdArc;
use std::sync::atomic::{AtomicUsize, Ordering as O};

/// Counts drops so that tests can prove each item is dropped exactly once.
#[derive(Debug)]
struct Tracked(StdArc<AtomicUsize>, u64);

impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.fetch_add(1, O::Relaxed);
    }
}

#[test]
fn capacity_must_be_a_power_of_two() {
    for bad in [0, 3, 6, 1000, usize::MAX] {
        assert_eq!(spsc::<u8>(bad).err(), Some(CapacityError(bad)), "{bad}");
        assert!(mpmc::<u8>(bad).is_err());
    }
    for good in [1, 2, 1024] {
        let (tx, rx) = mpsc::<u8>(good).unwrap();
        assert_eq!((tx.capacity(), rx.capacity()), (good, good));
    }
}

#[test]
fn full_ring_hands_the_item_back() {
    let (mut tx, mut rx) = spsc::<String>(2).unwrap();
    tx.push("a".into()).unwrap();
    tx.push("b".into()).unwrap();
    let err = tx.push("c".into()).unwrap_err();
    assert_eq!(err.into_inner(), "c");
    assert_eq!(tx.len(), 2);
    assert_eq!(tx.free(), 0);
    assert_eq!(rx.pop().as_deref(), Some("a"));
    tx.push("c".into()).unwrap();
    assert_eq!(rx.pop().as_deref(), Some("b"));
    assert_eq!(rx.pop().as_deref(), Some("c"));
    assert_eq!(rx.pop(), None);
}

#[test]
fn single_item_ops_in_every_mode() {
    fn check<P, C>(
        push: impl Fn(&mut P, u32) -> bool,
        pop: impl Fn(&mut C) -> Option<u32>,
        p: &mut P,
        c: &mut C,
    ) {
        for round in 0..5u32 {
            for i in 0..4 {
                assert!(push(p, round * 10 + i));
            }
            assert!(!push(p, 99), "full");
            for i in 0..4 {
                assert_eq!(pop(c), Some(round * 10 + i));
            }
            assert_eq!(pop(c), None);
        }
    }
    let (mut p, mut c) = spsc::<u32>(4).unwrap();
    check(|p, v| p.push(v).is_ok(), |c| c.pop(), &mut p, &mut c);
    let (mut p, mut c) = spsc_stamped::<u32>(4).unwrap();
    check(|p, v| p.push(v).is_ok(), |c| c.pop(), &mut p, &mut c);
    let (mut p, mut c) = mpsc::<u32>(4).unwrap();
    check(|p, v| p.push(v).is_ok(), |c| c.pop(), &mut p, &mut c);
    let (mut p, mut c) = spmc::<u32>(4).unwrap();
    check(|p, v| p.push(v).is_ok(), |c| c.pop(), &mut p, &mut c);
    let (mut p, mut c) = mpmc::<u32>(4).unwrap();
    check(|p, v| p.push(v).is_ok(), |c| c.pop(), &mut p, &mut c);
}

#[test]
fn burst_moves_what_fits_and_keeps_the_rest_in_order() {
    let (tx, mut rx) = mpsc::<u32>(8).unwrap();
    let mut out = Batch::<u32, 16>::new();
    out.fill_from(&mut (0..12));
    assert_eq!(tx.push_burst(&mut out), 8);
    assert_eq!(&out[..], &[8, 9, 10, 11]);
    assert_eq!(tx.push_burst(&mut out), 0);

    let mut got = Batch::<u32, 5>::new();
    assert_eq!(rx.pop_burst(&mut got), 5);
    assert_eq!(&got[..], &[0, 1, 2, 3, 4]);
    assert_eq!(rx.pop_burst(&mut got), 0, "sink full");
    got.clear();
    // Crosses the wrap point: 3 left, then 4 pushed at positions 8..12.
    assert_eq!(tx.push_burst(&mut out), 4);
    assert!(out.is_empty());
    assert_eq!(rx.pop_burst(&mut got), 5);
    assert_eq!(&got[..], &[5, 6, 7, 8, 9]);
    got.clear();
    assert_eq!(rx.pop_burst(&mut got), 2);
    assert_eq!(&got[..], &[10, 11]);
}

#[test]
fn bursts_of_every_length_keep_order_across_the_wrap() {
    // Every burst length around the sizes the copy is split into (runs of
    // 16, then 8, 4, 2, 1) and past the inline limit, at every start
    // offset of a small ring, so each length also wraps.
    let cap = 128;
    let lens: Vec<usize> = if cfg!(miri) {
        vec![0, 1, 3, 15, 16, 17, 31, 32, 33, 64, 65, 100]
    } else {
        (0..=cap).collect()
    };
    let (mut tx, mut rx) = spsc::<u64>(cap).unwrap();
    let (mut next_in, mut next_out) = (0u64, 0u64);
    let mut src = vec![0u64; cap];
    let mut dst = vec![0u64; cap];
    for &n in &lens {
        for _skew in 0..if cfg!(miri) { 2 } else { 5 } {
            for (k, v) in src[..n].iter_mut().enumerate() {
                *v = next_in + k as u64;
            }
            assert_eq!(tx.push_burst(&src[..n]), n);
            next_in += n as u64;
            assert_eq!(rx.pop_burst(&mut dst[..n]), n);
            for &v in &dst[..n] {
                assert_eq!(v, next_out, "burst of {n}");
                next_out += 1;
            }
            // Move the start by an odd amount for the next round.
            tx.push(next_in).unwrap();
            next_in += 1;
            assert_eq!(rx.pop(), Some(next_out));
            next_out += 1;
        }
    }
    // The same through batches, which share the copy.
    let mut b = Batch::<u64, 64>::new();
    for n in [1, 7, 16, 33, 64] {
        b.fill_from(&mut (next_in..next_in + n));
        next_in += n;
        assert_eq!(tx.push_burst(&mut b), n as usize);
        assert!(b.is_empty());
        assert_eq!(rx.pop_burst(&mut b), n as usize);
        for v in b.drain() {
            assert_eq!(v, next_out);
            next_out += 1;
        }
    }
}

#[test]
fn bulk_is_all_or_nothing() {
    let (mut tx, rx) = spmc::<u64>(8).unwrap();
    let items: Vec<u64> = (0..6).collect();
    tx.push_bulk(&items[..]).unwrap();
    let err = tx.push_bulk(&items[..]).unwrap_err();
    assert_eq!(
        err,
        BulkError {
            requested: 6,
            available: 2
        }
    );
    assert_eq!(tx.len(), 6, "nothing moved");
    tx.push_bulk(&items[..2]).unwrap();

    let mut dst = [0u64; 10];
    let err = rx.pop_bulk(&mut dst[..], 10).unwrap_err();
    assert_eq!(
        err,
        BulkError {
            requested: 10,
            available: 8
        }
    );
    let err = rx.pop_bulk(&mut dst[..3], 4).unwrap_err();
    assert_eq!(err.available, 3, "refused for lack of room in the sink");
    assert_eq!(rx.len(), 8, "nothing moved");
    rx.pop_bulk(&mut dst[..], 8).unwrap();
    assert_eq!(&dst[..8], &[0, 1, 2, 3, 4, 5, 0, 1]);
    // Zero is always satisfiable.
    rx.pop_bulk(&mut dst[..], 0).unwrap();
    tx.push_bulk(&items[..0]).unwrap();
}

#[test]
fn copy_slices_and_uninit_sinks() {
    let (mut tx, mut rx) = spsc::<u16>(4).unwrap();
    assert_eq!(tx.push_burst(&[1u16, 2, 3, 4, 5][..]), 4);
    let mut raw = [::core::mem::MaybeUninit::<u16>::uninit(); 3];
    assert_eq!(rx.pop_burst(&mut raw[..]), 3);
    // SAFETY: the three slots were initialised by the pop.
    let got: Vec<u16> = raw.iter().map(|m| unsafe { m.assume_init() }).collect();
    assert_eq!(got, vec![1, 2, 3]);
}

#[test]
fn every_item_is_dropped_exactly_once() {
    let drops = StdArc::new(AtomicUsize::new(0));
    let t = |i| Tracked(drops.clone(), i);
    {
        let (tx, rx) = mpmc::<Tracked>(8).unwrap();
        for i in 0..6 {
            tx.push(t(i)).unwrap();
        }
        drop(rx.pop()); // 1 dropped here
        let mut b = Batch::<Tracked, 4>::new();
        assert_eq!(rx.pop_burst(&mut b), 4);
        drop(b); // 4 more
        let mut b = Batch::<Tracked, 8>::new();
        for i in 0..8 {
            b.push(t(100 + i)).unwrap();
        }
        assert_eq!(tx.push_burst(&mut b), 7);
        assert_eq!(b.len(), 1);
        // `b` (1 item) and the ring (1 + 7 items) drop at scope end.
    }
    assert_eq!(drops.load(O::Relaxed), 6 + 8);
}

#[test]
fn abandonment_is_visible() {
    let (tx, rx) = mpsc::<u8>(2).unwrap();
    let tx2 = tx.clone();
    assert!(!rx.is_abandoned());
    drop(tx);
    assert!(!rx.is_abandoned());
    drop(tx2);
    assert!(rx.is_abandoned());
    let (tx, rx) = spsc::<u8>(2).unwrap();
    drop(rx);
    assert!(tx.is_abandoned());
}

#[test]
fn write_chunk_wraps_and_commits_partially() {
    let (mut tx, mut rx) = spsc::<u32>(8).unwrap();
    // Move the positions to 6 so the next chunk wraps.
    assert_eq!(tx.push_burst(&[0u32; 6][..]), 6);
    let mut sink = [0u32; 6];
    assert_eq!(rx.pop_burst(&mut sink[..]), 6);

    assert_eq!(tx.slots(), 8);
    let mut chunk = tx.write_chunk_uninit(5).unwrap();
    let (a, b) = chunk.as_mut_slices();
    assert_eq!((a.len(), b.len()), (2, 3));
    for (i, slot) in a.iter_mut().chain(b.iter_mut()).enumerate() {
        slot.write(i as u32 + 1);
    }
    // SAFETY: all five slots were written; publish only four.
    unsafe { chunk.commit(4) };
    assert_eq!(rx.slots(), 4);
    assert_eq!(
        tx.write_chunk_uninit(5).unwrap_err(),
        ChunkError::TooFewSlots {
            requested: 5,
            available: 4
        }
    );

    let chunk = rx.read_chunk(3).unwrap();
    let (a, b) = chunk.as_slices();
    assert_eq!((a, b), (&[1, 2][..], &[3][..]));
    chunk.commit(2);
    assert_eq!(rx.pop(), Some(3));
    assert_eq!(rx.pop(), Some(4));
    assert_eq!(rx.pop(), None);
    assert!(rx.read_chunk(1).is_err());
}

#[test]
fn read_chunk_into_iter_frees_only_what_it_yielded() {
    let drops = StdArc::new(AtomicUsize::new(0));
    let (mut tx, mut rx) = spsc::<Tracked>(4).unwrap();
    let n = tx
        .write_chunk_uninit(4)
        .unwrap()
        .fill_from_iter((0..).map(|i| Tracked(drops.clone(), i)));
    assert_eq!(n, 4);
    {
        let mut it = rx.read_chunk(4).unwrap().into_iter();
        assert_eq!(it.len(), 4);
        assert_eq!(it.next().map(|t| t.1), Some(0));
        assert_eq!(it.next().map(|t| t.1), Some(1));
    }
    assert_eq!(drops.load(O::Relaxed), 2);
    assert_eq!(rx.slots(), 2, "two left in the ring");
    rx.read_chunk(2).unwrap().commit_all();
    assert_eq!(drops.load(O::Relaxed), 4);
    assert_eq!(rx.pop().map(|t| t.1), None);
    // The space is reusable.
    assert_eq!(tx.slots(), 4);
}

#[test]
fn a_panicking_drop_in_commit_loses_nothing_twice() {
    struct Bomb(StdArc<AtomicUsize>, bool);
    impl Drop for Bomb {
        fn drop(&mut self) {
            self.0.fetch_add(1, O::Relaxed);
            if self.1 {
                panic!("boom");
            }
        }
    }
    let drops = StdArc::new(AtomicUsize::new(0));
    {
        let (mut tx, mut rx) = spsc::<Bomb>(4).unwrap();
        for i in 0..4 {
            assert!(tx.push(Bomb(drops.clone(), i == 1)).is_ok());
        }
        let chunk = rx.read_chunk(3).unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| chunk.commit(3)));
        assert!(r.is_err());
        assert_eq!(
            drops.load(O::Relaxed),
            3,
            "the slice drop continues past the panic"
        );
        assert_eq!(rx.slots(), 1, "the three were freed despite the panic");
    }
    assert_eq!(
        drops.load(O::Relaxed),
        4,
        "the last one dropped with the ring, once"
    );
}

/// Items are (producer, sequence). Every item must arrive exactly once, and
/// each consumer must see each producer's items in increasing order (with
/// one consumer that is the producer's full order). Producers and consumers
/// use random burst sizes.
fn stress<P, C>(
    (ps, cs): (Vec<P>, Vec<C>),
    per_producer: u64,
    push: fn(&mut P, &mut Batch<(u32, u64), 32>) -> usize,
    pop: fn(&mut C, &mut [(u32, u64)]) -> usize,
) where
    P: Send + 'static,
    C: Send + 'static,
{
    use rand::{Rng, SeedableRng};
    let producers = ps.len();
    let total = per_producer as usize * producers;
    let received = StdArc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for (id, mut p) in ps.into_iter().enumerate() {
        senders.push(std::thread::spawn(move || {
            let mut rng = rand::rngs::SmallRng::seed_from_u64(id as u64);
            let mut next = 0u64;
            let mut batch = Batch::<(u32, u64), 32>::new();
            while next < per_producer || !batch.is_empty() {
                let want = rng.random_range(1..=32usize);
                while batch.len() < want && next < per_producer {
                    let _ = batch.push((id as u32, next));
                    next += 1;
                }
                if push(&mut p, &mut batch) == 0 {
                    std::hint::spin_loop();
                }
            }
        }));
    }
    let mut receivers = Vec::new();
    for (id, mut c) in cs.into_iter().enumerate() {
        let received = received.clone();
        receivers.push(std::thread::spawn(move || {
            let mut rng = rand::rngs::SmallRng::seed_from_u64(1000 + id as u64);
            let mut last = vec![None::<u64>; producers];
            let mut seen = Vec::new();
            let mut buf = [(0u32, 0u64); 32];
            while received.load(O::Relaxed) < total {
                let room = rng.random_range(1..=32usize);
                let n = pop(&mut c, &mut buf[..room]);
                if n == 0 {
                    std::hint::spin_loop();
                    continue;
                }
                received.fetch_add(n, O::Relaxed);
                for &(p, s) in &buf[..n] {
                    let l = &mut last[p as usize];
                    assert!(l.is_none_or(|l| s > l), "producer {p}: {s} after {l:?}");
                    *l = Some(s);
                    seen.push((p, s));
                }
            }
            seen
        }));
    }
    for s in senders {
        s.join().unwrap();
    }
    let mut all: Vec<(u32, u64)> = receivers
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort_unstable();
    let expected: Vec<(u32, u64)> = (0..producers as u32)
        .flat_map(|p| (0..per_producer).map(move |s| (p, s)))
        .collect();
    assert_eq!(all.len(), expected.len(), "count");
    assert!(all == expected, "every item exactly once");
}

const PER_PRODUCER: u64 = if cfg!(miri) { 300 } else { 100_000 };

#[test]
fn stress_spsc() {
    let (p, c) = spsc(64).unwrap();
    stress(
        (vec![p], vec![c]),
        PER_PRODUCER,
        |p, b| p.push_burst(b),
        |c, b| c.pop_burst(b),
    );
}

#[test]
fn stress_mpsc() {
    let (p, c) = mpsc(64).unwrap();
    stress(
        (vec![p.clone(), p.clone(), p], vec![c]),
        PER_PRODUCER,
        |p, b| p.push_burst(b),
        |c, b| c.pop_burst(b),
    );
}

#[test]
fn stress_spmc() {
    let (p, c) = spmc(64).unwrap();
    stress(
        (vec![p], vec![c.clone(), c.clone(), c]),
        PER_PRODUCER,
        |p, b| p.push_burst(b),
        |c, b| c.pop_burst(b),
    );
}

#[test]
fn stress_mpmc() {
    // More threads than cores, all spinning: threads get preempted at
    // arbitrary points, including between reserving and publishing slots,
    // which is where an ordering bug in the multi-threaded protocol shows.
    let (p, c) = mpmc(64).unwrap();
    let ps = (0..6).map(|_| p.clone()).collect();
    let cs = (0..3).map(|_| c.clone()).collect();
    drop((p, c));
    stress(
        (ps, cs),
        PER_PRODUCER / 2,
        |p, b| p.push_burst(b),
        |c, b| c.pop_burst(b),
    );
}

#[test]
fn stress_mpmc_single_items_and_bulk() {
    // The single-item and bulk paths under contention too: producers push
    // one at a time, consumers pop fixed bulks of 4 (all or nothing).
    let (p, c) = mpmc(16).unwrap();
    stress(
        (vec![p.clone(), p], vec![c.clone(), c]),
        PER_PRODUCER / 4 * 4,
        |p, b| match b.pop_front() {
            Some(v) => match p.push(v) {
                Ok(()) => 1,
                Err(e) => {
                    // Put it back at the front: rebuild the order.
                    let mut rest = Batch::<(u32, u64), 32>::new();
                    let _ = rest.push(e.into_inner());
                    while let Some(x) = b.pop_front() {
                        let _ = rest.push(x);
                    }
                    *b = rest;
                    0
                }
            },
            None => 0,
        },
        |c, b| {
            if b.len() >= 4 && c.pop_bulk(&mut b[..4], 4).is_ok() {
                4
            } else {
                0
            }
        },
    );
}

/// Items of at most 8 bytes: a multi-producer ring keeps each run of one
/// beside its stamp and longer runs in the slots (core.rs, "Runs of one live
/// beside their stamp").
/// A producer id and a sequence number packed into a `u64`.
fn packed(p: u32, s: u64) -> u64 {
    (u64::from(p) << 40) | s
}

/// Random mixes of single pushes and bursts of 1..=8 against random mixes
/// of single pops and bursts of 1..=8 (so that pops start inside runs and
/// runs of one come out of bursts): every item once, in each producer's
/// order.
fn stress_runs_of_one<C: Send + 'static>(
    p: Producer<u64, Multi>,
    cs: Vec<C>,
    per_producer: u64,
    pop_one: fn(&mut C) -> Option<u64>,
    pop_burst: fn(&mut C, &mut [u64]) -> usize,
) {
    use rand::{Rng, SeedableRng};
    let producers = 3u32;
    let total = per_producer as usize * producers as usize;
    let received = StdArc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..producers)
        .map(|id| {
            let p = p.clone();
            std::thread::spawn(move || {
                let mut rng = rand::rngs::SmallRng::seed_from_u64(u64::from(id));
                let mut next = 0u64;
                while next < per_producer {
                    if rng.random_bool(0.5) {
                        if p.push(packed(id, next)).is_ok() {
                            next += 1;
                        } else {
                            std::hint::spin_loop();
                        }
                        continue;
                    }
                    let want = rng.random_range(1..=8u64).min(per_producer - next);
                    let items: Vec<u64> = (next..next + want).map(|s| packed(id, s)).collect();
                    let n = p.push_burst(&items[..]);
                    if n == 0 {
                        std::hint::spin_loop();
                    }
                    next += n as u64;
                }
            })
        })
        .collect();
    drop(p);
    let receivers: Vec<_> = cs
        .into_iter()
        .enumerate()
        .map(|(id, mut c)| {
            let received = received.clone();
            std::thread::spawn(move || {
                let mut rng = rand::rngs::SmallRng::seed_from_u64(1000 + id as u64);
                let mut last = vec![None::<u64>; producers as usize];
                let mut seen = Vec::new();
                let mut buf = [0u64; 8];
                while received.load(O::Relaxed) < total {
                    let n = if rng.random_bool(0.5) {
                        match pop_one(&mut c) {
                            Some(v) => {
                                buf[0] = v;
                                1
                            }
                            None => 0,
                        }
                    } else {
                        let room = rng.random_range(1..=8usize);
                        pop_burst(&mut c, &mut buf[..room])
                    };
                    if n == 0 {
                        std::hint::spin_loop();
                        continue;
                    }
                    received.fetch_add(n, O::Relaxed);
                    for &v in &buf[..n] {
                        let (p, s) = ((v >> 40) as usize, v & ((1 << 40) - 1));
                        let l = &mut last[p];
                        assert!(l.is_none_or(|l| s > l), "producer {p}: {s} after {l:?}");
                        *l = Some(s);
                        seen.push(v);
                    }
                }
                seen
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    let mut all: Vec<u64> = receivers
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort_unstable();
    let expected: Vec<u64> = (0..producers)
        .flat_map(|p| (0..per_producer).map(move |s| packed(p, s)))
        .collect();
    assert!(all == expected, "every item exactly once");
}

#[test]
fn stress_mpsc_runs_of_one_and_bursts() {
    let (p, c) = mpsc::<u64>(16).unwrap();
    stress_runs_of_one(
        p,
        vec![c],
        PER_PRODUCER / 4,
        |c| c.pop(),
        |c, b| c.pop_burst(b),
    );
}

#[test]
fn stress_mpmc_runs_of_one_and_bursts() {
    let (p, c) = mpmc::<u64>(16).unwrap();
    stress_runs_of_one(
        p,
        vec![c.clone(), c],
        PER_PRODUCER / 4,
        |c| c.pop(),
        |c, b| c.pop_burst(b),
    );
}

/// A closure that pins the calling thread to the first CPU this process
/// may use (best effort; nothing under Miri), for tests of threads that
/// outnumber the cores.
fn first_cpu_pinner() -> impl Fn() + Copy + Send + 'static {
    #[cfg(not(miri))]
    {
        use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
        use nix::unistd::Pid;
        let allowed = sched_getaffinity(Pid::from_raw(0)).unwrap();
        let cpu = (0..CpuSet::count())
            .find(|&c| allowed.is_set(c).unwrap_or(false))
            .unwrap();
        move || {
            let mut one = CpuSet::new();
            one.set(cpu).unwrap();
            // Best effort: where pinning is refused the threads still
            // outnumber the cores of a small machine.
            let _ = sched_setaffinity(Pid::from_raw(0), &one);
        }
    }
    #[cfg(miri)]
    {
        || {}
    }
}

/// A single producer that publishes runs (`spsc_stamped`), against a
/// consumer, each mixing every way in at random: single pushes, bursts,
/// write chunks (committed in part, a chunk of one moving beside its
/// stamp) against single pops, bursts and read chunks (committed in part,
/// so that the next take starts inside a run). Every item once, in order,
/// and `len` never says more than was pushed or less than is left.
#[test]
fn stress_spsc_stamped_every_way_in_and_out() {
    stamped_mixes(PER_PRODUCER, false);
}

/// The same with producer and consumer on one CPU, so that the producer
/// is preempted between writing an item and stamping it, and the consumer
/// between taking items and releasing them (each side yields, rather than
/// spins, when it cannot go on).
#[test]
fn stress_spsc_stamped_with_both_sides_on_one_cpu() {
    stamped_mixes(PER_PRODUCER / 10, true);
}

fn stamped_mixes(total: u64, one_cpu: bool) {
    use rand::{Rng, SeedableRng};
    let pin = first_cpu_pinner();
    let wait = move || {
        if one_cpu {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    };
    if one_cpu {
        pin();
    }
    let (mut p, mut c) = spsc_stamped::<u64>(16).unwrap();
    let producer = std::thread::spawn(move || {
        if one_cpu {
            pin();
        }
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let mut next = 0u64;
        while next < total {
            let left = total - next;
            let n = match rng.random_range(0..3) {
                0 => usize::from(p.push(next).is_ok()),
                1 => {
                    let want = rng.random_range(1..=8u64).min(left);
                    let items: Vec<u64> = (next..next + want).collect();
                    p.push_burst(&items[..])
                }
                _ => {
                    let want = rng.random_range(1..=4usize).min(left as usize);
                    match p.write_chunk_uninit(want) {
                        Ok(mut chunk) => {
                            let (a, b) = chunk.as_mut_slices();
                            for (v, slot) in (next..).zip(a.iter_mut().chain(b.iter_mut())) {
                                slot.write(v);
                            }
                            let keep = rng.random_range(0..=want);
                            // SAFETY: every slot of the chunk was written.
                            unsafe { chunk.commit(keep) };
                            keep
                        }
                        Err(_) => 0,
                    }
                }
            };
            if n == 0 {
                wait();
            }
            next += n as u64;
        }
    });
    let mut rng = rand::rngs::SmallRng::seed_from_u64(8);
    let mut expect = 0u64;
    while expect < total {
        let got: Vec<u64> = match rng.random_range(0..3) {
            0 => c.pop().into_iter().collect(),
            1 => {
                let mut buf = [0u64; 8];
                let n = c.pop_burst(&mut buf[..rng.random_range(1..=8)]);
                buf[..n].to_vec()
            }
            _ => {
                let want = rng.random_range(1..=4usize);
                match c.read_chunk(want) {
                    Ok(chunk) => {
                        let (a, b) = chunk.as_slices();
                        let keep = rng.random_range(0..=want);
                        let v: Vec<u64> = a.iter().chain(b).take(keep).copied().collect();
                        chunk.commit(keep);
                        v
                    }
                    Err(_) => Vec::new(),
                }
            }
        };
        if got.is_empty() {
            wait();
        }
        assert!(c.len() <= 16);
        for v in got {
            assert_eq!(v, expect, "in order, once");
            expect += 1;
        }
    }
    producer.join().unwrap();
    assert_eq!(c.pop(), None);
    assert_eq!(c.len(), 0);
}

#[test]
fn stamped_single_producer_items_are_dropped_exactly_once() {
    let drops = StdArc::new(AtomicUsize::new(0));
    let t = |i| Box::new(Tracked(drops.clone(), i));
    {
        let (mut tx, mut rx) = spsc_stamped::<Box<Tracked>>(8).unwrap();
        tx.push(t(0)).unwrap();
        let mut b = Batch::<Box<Tracked>, 4>::new();
        for i in 1..4 {
            b.push(t(i)).unwrap();
        }
        assert_eq!(tx.push_burst(&mut b), 3);
        // A chunk of one: written in its slot, moved beside its stamp.
        let n = tx
            .write_chunk_uninit(1)
            .unwrap()
            .fill_from_iter(std::iter::once(t(4)));
        assert_eq!(n, 1);
        tx.push(t(5)).unwrap();
        assert_eq!(tx.len(), 6);
        assert_eq!(rx.pop().map(|v| v.1), Some(0));
        assert_eq!(rx.pop().map(|v| v.1), Some(1)); // the burst, partly
        let mut out = Batch::<Box<Tracked>, 8>::new();
        assert_eq!(rx.pop_burst(&mut out), 4); // 2, 3 (in the run), 4, 5
        let got: Vec<u64> = out.drain().map(|v| v.1).collect();
        assert_eq!(got, [2, 3, 4, 5]);
        assert_eq!(drops.load(O::Relaxed), 6);
        tx.push(t(6)).unwrap();
        let mut b = Batch::<Box<Tracked>, 2>::new();
        b.push(t(7)).unwrap();
        b.push(t(8)).unwrap();
        assert_eq!(tx.push_burst(&mut b), 2);
        assert_eq!(rx.len(), 3);
        // 6 (a run of one) and 7, 8 drop with the ring.
    }
    assert_eq!(drops.load(O::Relaxed), 9);
}

#[test]
fn runs_of_one_are_dropped_exactly_once() {
    // Box<Tracked> fits beside a stamp (8 bytes): runs of one there, a
    // longer run in the slots, consumed partly by single pops and bursts,
    // and the rest dropped with the ring.
    let drops = StdArc::new(AtomicUsize::new(0));
    let t = |i| Box::new(Tracked(drops.clone(), i));
    {
        let (tx, rx) = mpmc::<Box<Tracked>>(8).unwrap();
        tx.push(t(0)).unwrap();
        let mut b = Batch::<Box<Tracked>, 4>::new();
        for i in 1..4 {
            b.push(t(i)).unwrap();
        }
        assert_eq!(tx.push_burst(&mut b), 3);
        tx.push(t(4)).unwrap();
        tx.push(t(5)).unwrap();
        assert_eq!(rx.pop().map(|v| v.1), Some(0));
        assert_eq!(rx.pop().map(|v| v.1), Some(1)); // the burst run, partly
        let mut out = Batch::<Box<Tracked>, 8>::new();
        assert_eq!(rx.pop_burst(&mut out), 4); // 2, 3 (in the run), 4, 5
        let got: Vec<u64> = out.drain().map(|v| v.1).collect();
        assert_eq!(got, [2, 3, 4, 5]);
        tx.push(t(6)).unwrap();
        let mut b = Batch::<Box<Tracked>, 2>::new();
        b.push(t(7)).unwrap();
        b.push(t(8)).unwrap();
        assert_eq!(tx.push_burst(&mut b), 2);
        // 6 (a run of one) and 7, 8 drop with the ring.
    }
    assert_eq!(drops.load(O::Relaxed), 9);
}

#[test]
fn read_chunk_of_a_multi_producer_ring_sees_runs_of_one() {
    let (tx, mut rx) = mpsc::<u64>(8).unwrap();
    tx.push(0).unwrap();
    assert_eq!(tx.push_burst(&[1u64, 2][..]), 2);
    tx.push(3).unwrap();
    {
        let chunk = rx.read_chunk(4).unwrap();
        let (a, b) = chunk.as_slices();
        let all: Vec<u64> = a.iter().chain(b).copied().collect();
        assert_eq!(all, [0, 1, 2, 3]);
        // Dropped without a commit: the items stay in the ring.
    }
    assert_eq!(rx.pop(), Some(0));
    let mut out = [0u64; 4];
    assert_eq!(rx.pop_burst(&mut out[..]), 3);
    assert_eq!(out[..3], [1, 2, 3]);
    // The next lap over the same slots.
    for v in 4..8 {
        tx.push(v).unwrap();
    }
    let chunk = rx.read_chunk(4).unwrap();
    assert_eq!(
        chunk
            .as_slices()
            .0
            .iter()
            .chain(chunk.as_slices().1)
            .copied()
            .collect::<Vec<_>>(),
        [4, 5, 6, 7]
    );
    chunk.commit_all();
    assert!(rx.pop().is_none());
}

/// Eight producer threads on one core, single-item pushes, one consumer:
/// producers are preempted between reserving a slot and publishing it all
/// the time, and no push may wait for another producer to run again.
/// Every item arrives once, in each producer's order. (A producer that
/// waited on a preempted one, as rte_ring's in-order tail does, spun out
/// its time slice on every such preemption: this test then took minutes
/// where it now takes a fraction of a second; it asserts no timing.)
#[test]
fn producers_sharing_one_core_never_wait_for_each_other() {
    let pin_to_first_cpu = first_cpu_pinner();
    let per_producer: u64 = if cfg!(miri) { 50 } else { 20_000 };
    let (p, mut c) = mpsc::<(u32, u64)>(256).unwrap();
    let producers: Vec<_> = (0..8u32)
        .map(|id| {
            let p = p.clone();
            std::thread::spawn(move || {
                pin_to_first_cpu();
                for s in 0..per_producer {
                    let mut item = (id, s);
                    while let Err(PushError::Full(back)) = p.push(item) {
                        item = back;
                        std::thread::yield_now();
                    }
                }
            })
        })
        .collect();
    drop(p);
    let mut last = [None::<u64>; 8];
    let mut got = 0u64;
    while got < 8 * per_producer {
        match c.pop() {
            Some((id, s)) => {
                let l = &mut last[id as usize];
                assert!(
                    l.is_none_or(|l| s == l + 1),
                    "producer {id}: {s} after {l:?}"
                );
                *l = Some(s);
                got += 1;
            }
            None => std::thread::yield_now(),
        }
    }
    for t in producers {
        t.join().unwrap();
    }
    assert!(c.pop().is_none());
    assert!(last.iter().all(|l| *l == Some(per_producer - 1)));
}
