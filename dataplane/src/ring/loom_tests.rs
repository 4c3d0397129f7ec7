//! Loom models of every ring mode: `RUSTFLAGS="--cfg loom" cargo test
//! -p dataplane --release --lib loom`. Each model is small (capacity 2, a
//! few items) so that loom can explore every interleaving within a bounded
//! number of preemptions; capacity 2 forces the wrap and the full/empty
//! edges on every run.

use super::*;
use loom::thread;

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    // The multi-consumer in-order release spins (yielding to loom); allow
    // for it.
    b.max_branches = 10_000;
    b.check(f);
}

/// Spins (yielding to loom) until `f` makes progress.
fn until(mut f: impl FnMut() -> bool) {
    while !f() {
        thread::yield_now();
    }
}

/// Pops `0..n` one at a time from a single consumer, waiting for each.
fn pops_in_order(c: &mut Consumer<u32, Single>, n: u32) {
    for i in 0..n {
        let mut got = None;
        until(|| {
            got = c.pop();
            got.is_some()
        });
        assert_eq!(got, Some(i));
    }
}

#[test]
fn loom_spsc_single_items_wrap() {
    model(|| {
        let (mut p, mut c) = spsc::<u32>(2).unwrap();
        let t = thread::spawn(move || {
            for i in 0..3 {
                until(|| p.push(i).is_ok());
            }
        });
        pops_in_order(&mut c, 3);
        t.join().unwrap();
    });
}

#[test]
fn loom_spsc_bursts() {
    model(|| {
        let (mut p, mut c) = spsc::<u32>(2).unwrap();
        let t = thread::spawn(move || {
            let mut b = Batch::<u32, 3>::new();
            b.fill_from(&mut (0..3));
            until(|| {
                p.push_burst(&mut b);
                b.is_empty()
            });
        });
        let mut got = Vec::new();
        while got.len() < 3 {
            let mut b = Batch::<u32, 2>::new();
            if c.pop_burst(&mut b) == 0 {
                thread::yield_now();
            }
            got.extend(b.drain());
        }
        assert_eq!(got, [0, 1, 2]);
        t.join().unwrap();
    });
}

#[test]
fn loom_spsc_stamped_single_items_and_bursts_wrap() {
    // A single producer that publishes runs: a run of one beside its
    // stamp, then a burst of two in the slots, across the wrap; the
    // consumer pops one at a time (starting inside the burst's run).
    model(|| {
        let (mut p, mut c) = spsc_stamped::<u32>(2).unwrap();
        let t = thread::spawn(move || {
            until(|| p.push(0).is_ok());
            let mut b = Batch::<u32, 2>::new();
            b.fill_from(&mut (1..3));
            until(|| {
                p.push_burst(&mut b);
                b.is_empty()
            });
        });
        pops_in_order(&mut c, 3);
        t.join().unwrap();
    });
}

#[test]
fn loom_mpsc_two_producers() {
    // Capacity 2, three pushes: at least one may find the ring full. No
    // thread waits for another; each records what it managed to do, and the
    // items that went in must come out exactly once, in per-producer order.
    model(|| {
        let (p, mut c) = mpsc::<(u8, u8)>(2).unwrap();
        let p2 = p.clone();
        let a = thread::spawn(move || {
            (0..2)
                .filter(|&s| p.push((0, s)).is_ok())
                .collect::<Vec<u8>>()
        });
        let b = thread::spawn(move || p2.push((1, 0)).is_ok());
        let mut got: Vec<(u8, u8)> = c.pop().into_iter().collect();
        let sent0 = a.join().unwrap();
        let sent1 = b.join().unwrap();
        while let Some(v) = c.pop() {
            got.push(v);
        }
        let from0: Vec<u8> = got.iter().filter(|v| v.0 == 0).map(|v| v.1).collect();
        let mut want0 = sent0.clone();
        want0.sort_unstable();
        assert_eq!(from0, want0, "producer 0: exactly its sent items, in order");
        assert_eq!(got.contains(&(1, 0)), sent1);
        assert_eq!(got.len(), sent0.len() + usize::from(sent1));
    });
}

#[test]
fn loom_spmc_two_consumers() {
    model(|| {
        let (mut p, c) = spmc::<u32>(2).unwrap();
        let c2 = c.clone();
        let take = |c: Consumer<u32, Multi>| {
            thread::spawn(move || {
                let mut mine = Vec::new();
                for _ in 0..2 {
                    let mut b = Batch::<u32, 2>::new();
                    c.pop_burst(&mut b);
                    mine.extend(b.drain());
                    thread::yield_now();
                }
                mine
            })
        };
        let (x, y) = (take(c), take(c2));
        let mut b = Batch::<u32, 3>::new();
        b.fill_from(&mut (0..3));
        // Push what fits; the consumers may stop early, so do not wait.
        p.push_burst(&mut b);
        let mut all = x.join().unwrap();
        let ys = y.join().unwrap();
        for w in [&all, &ys] {
            assert!(
                w.windows(2).all(|w| w[0] < w[1]),
                "each consumer sees order"
            );
        }
        all.extend(ys);
        all.sort_unstable();
        all.dedup();
        let total = all.len();
        assert!(total <= 3, "no item twice");
        assert!(all.iter().all(|&v| v < 3));
    });
}

#[test]
fn loom_mpmc_exactly_once() {
    // Two producers (a single item; a burst of two) and two consumers (a
    // single pop; a burst), all concurrent, none waiting for another.
    model(|| {
        let (p, c) = mpmc::<u32>(2).unwrap();
        let (p2, c2) = (p.clone(), c.clone());
        let pa = thread::spawn(move || if p.push(1).is_ok() { vec![1] } else { vec![] });
        let cb = thread::spawn(move || {
            let mut b = Batch::<u32, 2>::new();
            c2.pop_burst(&mut b);
            b.drain().collect::<Vec<_>>()
        });
        let mut b = Batch::<u32, 2>::new();
        b.fill_from(&mut (10..12));
        p2.push_burst(&mut b);
        let mut sent: Vec<u32> = (10..12).filter(|v| !b.contains(v)).collect();
        let mut got: Vec<u32> = c.pop().into_iter().collect();
        sent.extend(pa.join().unwrap());
        got.extend(cb.join().unwrap());
        while let Some(v) = c.pop() {
            got.push(v);
        }
        sent.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, sent, "exactly what went in came out");
    });
}

#[test]
fn loom_items_left_behind_are_dropped_once() {
    use loom::sync::Arc as LArc;
    model(|| {
        let token = LArc::new(());
        let (p, c) = mpmc::<LArc<()>>(2).unwrap();
        let t2 = token.clone();
        let t = thread::spawn(move || {
            let _ = p.push(t2.clone());
            let _ = p.push(t2);
        });
        drop(c.pop());
        drop(c);
        t.join().unwrap();
        assert_eq!(LArc::strong_count(&token), 1);
    });
}

#[test]
fn loom_mpsc_runs_across_the_wrap() {
    // Capacity 2, a run of two then a single item: the third reuses the
    // first slot, so the consumer meets the previous lap's stamp there and
    // must not take it for this lap's.
    model(|| {
        let (p, mut c) = mpsc::<u32>(2).unwrap();
        let t = thread::spawn(move || {
            let mut b = Batch::<u32, 2>::new();
            b.fill_from(&mut (0..2));
            until(|| {
                p.push_burst(&mut b);
                b.is_empty()
            });
            until(|| p.push(2).is_ok());
        });
        let mut got = Vec::new();
        while got.len() < 3 {
            match c.pop() {
                Some(v) => got.push(v),
                None => thread::yield_now(),
            }
        }
        t.join().unwrap();
        assert_eq!(got, [0, 1, 2]);
        assert!(c.pop().is_none());
    });
}
