//! Model checks of the ring on its own; the mempool's loom tests cover it
//! behind the caches.

use super::*;
use loom::sync::Arc;
use loom::sync::atomic::AtomicU32;
use loom::thread;

fn model() -> loom::model::Builder {
    let mut b = loom::model::Builder::new();
    // Bounded preemptions keep the state space small enough to finish in
    // seconds while still covering a thread preempted between its head CAS
    // and its tail store, which the others must wait out.
    b.preemption_bound = Some(3);
    b
}

/// Takes `n` indices and marks them owned; panics on a double hand-out.
fn take(r: &Ring, owner: &[AtomicU32], n: usize, me: u32) -> Option<Vec<u32>> {
    let mut got = vec![u32::MAX; n];
    if !r.get_bulk(n, |i, x| got[i] = x) {
        return None;
    }
    for &i in &got {
        let prev = owner[i as usize].swap(me, Ordering::Relaxed);
        assert_eq!(prev, 0, "index {i} handed to {me} while {prev} holds it");
    }
    Some(got)
}

fn give(r: &Ring, owner: &[AtomicU32], mut got: Vec<u32>) {
    for &i in &got {
        owner[i as usize].store(0, Ordering::Relaxed);
    }
    // Put back in another order than taken, so the ring's contents move.
    got.reverse();
    r.put_bulk(got.iter().copied());
}

/// Every index is in the ring exactly once.
fn check_all_back(r: &Ring, count: u32) {
    assert_eq!(r.len(), count as usize);
    let mut all = vec![u32::MAX; count as usize];
    assert!(r.get_bulk(count as usize, |i, x| all[i] = x));
    all.sort_unstable();
    assert_eq!(all, (0..count).collect::<Vec<_>>());
}

/// Two threads getting and putting bursts at once, the main thread single
/// objects: nothing lost or handed out twice, and the slot cells (loom
/// checks every access) are never read and written at once.
#[test]
fn loom_ring_bulk_get_put() {
    model().check(|| {
        let r = Arc::new(Ring::full(3).unwrap());
        let owner: Arc<Vec<AtomicU32>> = Arc::new((0..3).map(|_| AtomicU32::new(0)).collect());
        let threads: Vec<_> = [(1, 2), (2, 1)]
            .into_iter()
            .map(|(me, n)| {
                let (r, owner) = (r.clone(), owner.clone());
                thread::spawn(move || {
                    if let Some(got) = take(&r, &owner, n, me) {
                        give(&r, &owner, got);
                    }
                })
            })
            .collect();
        if let Some(got) = take(&r, &owner, 1, 3) {
            give(&r, &owner, got);
        }
        for t in threads {
            t.join().unwrap();
        }
        check_all_back(&r, 3);
    });
}

/// A get racing a put whose run crosses the end of the slot array and the
/// wrap of the positions: the get either fails, having taken nothing, or
/// takes objects only after their put published them (loom checks that
/// no slot cell is read while it is written).
#[test]
fn loom_ring_get_races_put_across_the_wrap() {
    model().check(|| {
        // Capacity 4, positions from usize::MAX - 4 (slot 3) to usize::MAX
        // (slot 3 again, a lap on): indices 0..4 in slots 3, 0, 1, 2.
        let r = Arc::new(Ring::full_at(4, usize::MAX - 4).unwrap());
        let owner: Arc<Vec<AtomicU32>> = Arc::new((0..4).map(|_| AtomicU32::new(0)).collect());
        // Two out (positions MAX-4, MAX-3); put back, they go to positions
        // MAX and 0: slots 3 and 0, across both wraps.
        let out = take(&r, &owner, 2, 9).unwrap();
        let putter = {
            let (r, owner) = (r.clone(), owner.clone());
            thread::spawn(move || give(&r, &owner, out))
        };
        // One (position MAX-2) is there whatever the put is doing; then
        // three (MAX-1, MAX, 0: slots 2, 3, 0) only once the put published.
        let first = take(&r, &owner, 1, 1).unwrap();
        if let Some(got) = take(&r, &owner, 3, 1) {
            give(&r, &owner, got);
        }
        give(&r, &owner, first);
        putter.join().unwrap();
        check_all_back(&r, 4);
    });
}

/// A get of the whole ring against a get of one: both may succeed one
/// after the other, never both at once, and a failure took nothing.
#[test]
fn loom_ring_all_or_nothing_under_contention() {
    model().check(|| {
        let r = Arc::new(Ring::full(2).unwrap());
        let r1 = r.clone();
        let t = thread::spawn(move || {
            let mut got = [u32::MAX; 2];
            let ok = r1.get_bulk(2, |i, x| got[i] = x);
            if ok {
                r1.put_bulk(got.iter().copied());
            }
            ok
        });
        let mut one = [u32::MAX; 1];
        let mine = r.get_bulk(1, |i, x| one[i] = x);
        if mine {
            r.put_bulk(one.iter().copied());
        }
        let theirs = t.join().unwrap();
        assert!(mine || theirs);
        check_all_back(&r, 2);
    });
}
