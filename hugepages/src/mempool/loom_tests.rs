//! Model checks of the lcore cache in front of the shared store.

use super::*;
use loom::thread;

fn model() -> loom::model::Builder {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b
}

fn tiny_pool(count: usize, cache_size: usize) -> Mempool {
    Mempool::new(MempoolConfig {
        name: "loom".into(),
        count,
        elt_size: 8,
        align: 8,
        cache_size,
        page_size: PageSize::Size4K,
        ..MempoolConfig::default()
    })
    .unwrap()
}

/// Every object is back and the store hands each out exactly once.
fn check_all_back(p: &Mempool) {
    assert_eq!(p.available(), p.capacity());
    let mut all = vec![ptr::null_mut(); p.capacity()];
    p.get_bulk(&mut all).unwrap();
    let mut sorted = all.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), p.capacity());
    // SAFETY: from this pool, returned once, unused.
    unsafe { p.put_bulk(&all) };
}

/// A slot-owning thread crossing the flush threshold (cache 2: flush at 3)
/// against a thread without a slot using the store directly.
#[test]
fn loom_cache_and_store() {
    model().check(|| {
        let p = tiny_pool(4, 2);
        let lcore = {
            let p = p.clone();
            thread::spawn(move || {
                let _slot = slot::claim().unwrap();
                // Refill: 2 + 1 from the store, one handed out.
                let Some(a) = p.get() else { return };
                let mut two = [ptr::null_mut(); 2];
                // n >= cache_size: from the store (may be exhausted).
                let got_two = p.get_bulk(&mut two).is_ok();
                // SAFETY: from this pool, returned once, unused.
                unsafe { p.put(a) };
                if got_two {
                    // Cache 2 + 2 reaches the threshold: flush to the store.
                    // SAFETY: as above.
                    unsafe { p.put_bulk(&two) };
                }
                p.flush_cache();
            })
        };
        // No slot: straight to the store.
        let mut one = [ptr::null_mut(); 1];
        if p.get_bulk(&mut one).is_ok() {
            // SAFETY: from this pool, returned once, unused.
            unsafe { p.put_bulk(&one) };
        }
        lcore.join().unwrap();
        check_all_back(&p);
    });
}

/// An object taken through an lcore cache and freed by a thread without a
/// slot (into the store), racing a bulk get from a third thread: counts
/// stay exact, nothing is lost or handed out twice.
#[test]
fn loom_foreign_free_into_store() {
    model().check(|| {
        let p = tiny_pool(3, 2);
        let lcore = {
            let p = p.clone();
            thread::spawn(move || {
                let _slot = slot::claim().unwrap();
                let a = p.get().unwrap();
                // The rest of the refill goes back for the others.
                p.flush_cache();
                // Handed to the other thread as an address.
                a.as_ptr().addr()
            })
        };
        let addr = lcore.join().unwrap();
        let obj = p
            .core()
            .objs
            .iter()
            .copied()
            .find(|o| o.addr() == addr)
            .unwrap();
        let q = p.clone();
        let freer = thread::spawn(move || {
            // SAFETY: the object came from this pool and is no longer used.
            unsafe { q.put_bulk(&[obj]) };
        });
        let mut two = [ptr::null_mut(); 2];
        let got = p.get_bulk(&mut two).is_ok();
        if got {
            // SAFETY: from this pool, returned once, unused.
            unsafe { p.put_bulk(&two) };
        }
        freer.join().unwrap();
        check_all_back(&p);
    });
}

/// Two threads claiming slots one after the other may get the same one:
/// the second owner must see the cache exactly as the first left it (the
/// Release/Acquire handover of the slot bitmap; loom flags the cache's
/// cell as racy without it).
#[test]
fn loom_slot_handover() {
    model().check(|| {
        let p = tiny_pool(3, 2);
        let lcores: Vec<_> = (0..2)
            .map(|_| {
                let p = p.clone();
                thread::spawn(move || {
                    let _slot = slot::claim().unwrap();
                    if let Some(o) = p.get() {
                        // SAFETY: from this pool, returned once, unused.
                        unsafe { p.put(o) };
                    }
                    // The slot is released with objects left in its cache.
                })
            })
            .collect();
        for t in lcores {
            t.join().unwrap();
        }
        assert_eq!(p.available(), p.capacity());
    });
}
