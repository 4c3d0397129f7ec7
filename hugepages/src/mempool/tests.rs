use super::*;
use crate::test_support::{Capability, skip};
use std::collections::HashSet;
use std::sync::mpsc;
use std::thread;

fn pool(count: usize, elt_size: usize, cache_size: usize) -> Mempool {
    Mempool::new(MempoolConfig {
        name: "test".into(),
        count,
        elt_size,
        cache_size,
        // Under Miri every pool is heap memory anyway; elsewhere keep the
        // small test pools on normal pages unless a test asks otherwise.
        page_size: PageSize::Size4K,
        ..MempoolConfig::default()
    })
    .unwrap()
}

/// The end-of-test leak check: every object is back.
fn assert_all_back(p: &Mempool) {
    assert_eq!(p.available(), p.capacity(), "objects leaked");
    assert_eq!(p.in_use(), 0);
}

/// Store and cache counts of the calling thread's slot.
fn counts(p: &Mempool) -> (usize, usize) {
    let core = p.core();
    let cache = slot::current().map_or(0, |s| {
        core.caches[s.index()].len.load(Ordering::Relaxed) as usize
    });
    (core.store.len(), cache)
}

/// Runs `f` on a new thread holding a slot.
fn with_slot<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    thread::scope(|s| {
        s.spawn(|| {
            let _slot = slot::claim().expect("a free slot");
            f()
        })
        .join()
        .unwrap()
    })
}

fn cfg(count: usize, elt_size: usize) -> MempoolConfig {
    MempoolConfig::new("bad", count, elt_size)
}

#[test]
fn refuses_bad_configuration() {
    let refused = |c: MempoolConfig, what: &str| match Mempool::new(c) {
        Err(Error::Config(msg)) => assert!(msg.contains(what), "{msg:?} lacks {what:?}"),
        other => panic!("expected a refusal about {what}, got {other:?}"),
    };
    refused(cfg(0, 64), "count");
    refused(cfg(8, 0), "elt_size");
    refused(cfg(1 << 33, 64), "32-bit");
    for align in [0, 3, 4, 48, 8192] {
        refused(
            MempoolConfig {
                align,
                ..cfg(8, 64)
            },
            "align",
        );
    }
    refused(
        MempoolConfig {
            cache_size: MEMPOOL_CACHE_MAX_SIZE + 1,
            ..cfg(10_000, 64)
        },
        "MEMPOOL_CACHE_MAX_SIZE",
    );
    refused(
        MempoolConfig {
            cache_size: 100,
            ..cfg(149, 64)
        },
        "1.5",
    );
    refused(cfg(4, usize::MAX - 10), "overflow");
    refused(cfg(usize::from(u16::MAX), usize::MAX / 1000), "overflow");
    refused(
        MempoolConfig {
            iova_mode: Some(IovaMode::Pa),
            ..cfg(4, 3 << 20)
        },
        "straddle",
    );
    refused(
        MempoolConfig {
            max_region_len: Some(100),
            ..cfg(4, 4096)
        },
        "max_region_len",
    );
}

#[test]
fn smallest_cache_that_fits_is_accepted() {
    // 1.5 x 100 = 150 objects: exactly enough.
    let p = Mempool::new(MempoolConfig {
        cache_size: 100,
        page_size: PageSize::Size4K,
        ..cfg(150, 8)
    })
    .unwrap();
    assert_eq!(p.cache_size(), 100);
    assert_all_back(&p);
}

#[test]
fn objects_are_distinct_aligned_and_inside() {
    let p = Mempool::new(MempoolConfig {
        align: 128,
        page_size: PageSize::Size4K,
        ..cfg(37, 100)
    })
    .unwrap();
    assert_eq!(p.stride(), 128);
    assert_eq!(p.elt_size(), 100);
    let mut objs = vec![ptr::null_mut(); 37];
    p.get_bulk(&mut objs).unwrap();
    let set: HashSet<usize> = objs.iter().map(|o| o.addr()).collect();
    assert_eq!(set.len(), 37);
    for &o in &objs {
        assert_eq!(o.addr() % 128, 0);
        assert!(p.is_object(o));
        assert!(!p.is_object(o.wrapping_add(1)), "inside an object");
        assert!(p.regions().iter().any(|r| r.contains(o)));
        assert!(p.iova_of(o.wrapping_add(99)).is_some());
    }
    // Lowest addresses first from a fresh pool.
    assert!(objs.windows(2).all(|w| w[0] < w[1]));
    let end = objs[36].wrapping_add(128);
    assert!(!p.is_object(end));
    assert!(!p.is_object(ptr::null()));
    // SAFETY: from this pool, returned once, unused.
    unsafe { p.put_bulk(&objs) };
    assert_all_back(&p);
}

#[test]
fn bulk_is_all_or_nothing() {
    let p = pool(10, 64, 0);
    let mut four = [ptr::null_mut(); 4];
    p.get_bulk(&mut four).unwrap();
    assert_eq!(p.in_use(), 4);
    let mut seven = [ptr::null_mut(); 7];
    assert_eq!(p.get_bulk(&mut seven), Err(PoolExhausted));
    assert_eq!(p.available(), 6, "a failed bulk get takes nothing");
    let mut six = [ptr::null_mut(); 6];
    p.get_bulk(&mut six).unwrap();
    assert!(p.get().is_none());
    assert!(p.alloc_buf().is_none());
    p.get_bulk(&mut []).unwrap();
    for objs in [&four[..], &six[..], &[]] {
        // SAFETY: from this pool, returned once, unused.
        unsafe { p.put_bulk(objs) };
    }
    assert_all_back(&p);
    assert_eq!(PoolExhausted.to_string(), "mempool exhausted");
}

#[test]
fn cache_refill_and_flush_across_the_threshold() {
    // cache 8: flush threshold 12, array 20.
    let p = pool(64, 64, 8);
    with_slot(|| {
        assert_eq!(counts(&p), (64, 0));
        // Get 1 from an empty cache: refill with 8 + 1 - 0 = 9, hand out 1.
        let a = p.get().unwrap();
        assert_eq!(counts(&p), (55, 8));
        assert_eq!(p.available(), 63);
        // The cache is LIFO: a put object is the next one got.
        // SAFETY: from this pool, returned once, unused.
        unsafe { p.put(a) };
        assert_eq!(counts(&p), (55, 9));
        assert_eq!(p.get(), Some(a));
        // SAFETY: as above.
        unsafe { p.put(a) };

        // 9 + 2 = 11 < 12: stays in the cache.
        let mut two = [ptr::null_mut(); 2];
        p.get_bulk(&mut two).unwrap();
        assert_eq!(counts(&p), (55, 7));
        // SAFETY: as above.
        unsafe { p.put_bulk(&two) };
        assert_eq!(counts(&p), (55, 9));
        let mut three = [ptr::null_mut(); 3];
        p.get_bulk(&mut three).unwrap();
        assert_eq!(counts(&p), (55, 6));
        // SAFETY: as above.
        unsafe { p.put_bulk(&three) };
        assert_eq!(counts(&p), (55, 9));
        // 9 + 3 = 12 reaches the threshold: everything above 8 is flushed.
        let mut more = [ptr::null_mut(); 3];
        p.store_get_for_test(&mut more);
        assert_eq!(counts(&p), (52, 9));
        // SAFETY: as above.
        unsafe { p.put_bulk(&more) };
        assert_eq!(counts(&p), (56, 8));

        // n >= cache_size bypasses the cache on get; n > cache_size on put.
        let mut big = [ptr::null_mut(); 9];
        p.get_bulk(&mut big).unwrap();
        assert_eq!(counts(&p), (47, 8));
        // SAFETY: as above.
        unsafe { p.put_bulk(&big) };
        assert_eq!(counts(&p), (56, 8));
        let mut eight = [ptr::null_mut(); 8];
        p.get_bulk(&mut eight).unwrap();
        assert_eq!(counts(&p), (48, 8));
        // A put of exactly cache_size goes to the cache, and flushes.
        // SAFETY: as above.
        unsafe { p.put_bulk(&eight) };
        assert_eq!(counts(&p), (56, 8));

        // Refill failure: the store cannot give cache_size + n, but can
        // give n directly.
        let mut most = vec![ptr::null_mut(); 54];
        p.store_get_for_test(&mut most);
        assert_eq!(counts(&p), (2, 8));
        let mut seven = [ptr::null_mut(); 7];
        p.get_bulk(&mut seven).unwrap();
        assert_eq!(counts(&p), (2, 1));
        let mut three = [ptr::null_mut(); 3];
        // Cache has 1 < 3: refill wants 8 + 3 - 1 = 10 > 2, so the store
        // is asked for 3 directly, which also fails: nothing moves.
        assert_eq!(p.get_bulk(&mut three), Err(PoolExhausted));
        assert_eq!(counts(&p), (2, 1));
        let mut two = [ptr::null_mut(); 2];
        p.get_bulk(&mut two).unwrap();
        assert_eq!(counts(&p), (0, 1), "served from the store, cache untouched");
        for objs in [&two[..], &seven[..], &most[..]] {
            // SAFETY: as above.
            unsafe { p.put_bulk(objs) };
        }
        p.flush_cache();
        assert_eq!(counts(&p), (64, 0));
    });
    assert_all_back(&p);
}

impl Mempool {
    /// Takes objects from the store, bypassing the caches (test set-up).
    fn store_get_for_test(&self, out: &mut [*mut u8]) {
        self.core().store_get(out).unwrap();
    }
}

#[test]
fn thread_without_slot_uses_the_store() {
    let p = pool(32, 64, 4);
    thread::scope(|s| {
        s.spawn(|| {
            assert_eq!(slot::current(), None);
            let mut objs = [ptr::null_mut(); 3];
            p.get_bulk(&mut objs).unwrap();
            assert_eq!(counts(&p), (29, 0));
            // SAFETY: from this pool, returned once, unused.
            unsafe { p.put_bulk(&objs) };
            assert_eq!(counts(&p), (32, 0));
            p.flush_cache(); // no slot: nothing to do
        });
    });
    let cached: u32 = p
        .core()
        .caches
        .iter()
        .map(|c| c.len.load(Ordering::Relaxed))
        .sum();
    assert_eq!(cached, 0);
    assert_all_back(&p);
}

/// Objects in flight between threads.
struct Objs(Vec<*mut u8>);
// SAFETY: the objects are owned by whoever holds the vector.
unsafe impl Send for Objs {}

#[test]
fn objects_freed_by_other_threads() {
    let p = pool(256, 64, 16);
    let (tx_plain, rx_plain) = mpsc::channel::<Objs>();
    let (tx_lcore, rx_lcore) = mpsc::channel::<Objs>();
    thread::scope(|s| {
        // The allocating lcore.
        s.spawn(|| {
            let _slot = slot::claim().unwrap();
            for round in 0..20 {
                let mut objs = vec![ptr::null_mut(); 1 + round % 12];
                p.get_bulk(&mut objs).unwrap();
                let tx = if round % 2 == 0 { &tx_plain } else { &tx_lcore };
                tx.send(Objs(objs)).unwrap();
            }
            drop((tx_plain, tx_lcore));
            // This lcore's cache still holds objects: counted as available.
        });
        // A thread without a slot frees into the store.
        s.spawn(|| {
            for Objs(objs) in rx_plain {
                // SAFETY: from this pool, returned once, unused.
                unsafe { p.put_bulk(&objs) };
            }
        });
        // Another lcore frees into its own cache.
        s.spawn(|| {
            let _slot = slot::claim().unwrap();
            for Objs(objs) in rx_lcore {
                // SAFETY: as above.
                unsafe { p.put_bulk(&objs) };
            }
            p.flush_cache();
        });
    });
    assert_all_back(&p);
}

#[test]
fn slot_handover_keeps_the_cache() {
    let p = pool(64, 64, 8);
    let first = with_slot(|| {
        let objs = [p.get().unwrap(), p.get().unwrap()];
        // SAFETY: from this pool, returned once, unused.
        unsafe { p.put_bulk(&objs.map(NonNull::as_ptr)) };
        slot::current().unwrap()
    });
    // The slot is free again; its cache keeps the objects, still counted.
    let cached = p.core().caches[first.index()].len.load(Ordering::Acquire);
    assert!(cached > 0);
    assert_all_back(&p);
}

#[test]
fn dma_buf_is_owned_and_returns_on_drop() {
    let p = pool(4, 1000, 0);
    let mut b = p.alloc_buf().unwrap();
    assert_eq!(b.len(), 1000);
    assert_eq!(p.in_use(), 1);
    b.fill(0xA5);
    b[999] = 1;
    assert_eq!(b.iova(), p.iova_of(b.as_ptr()).unwrap());
    assert_eq!(b.pool().name(), "test");
    // DmaBuf is Send: dropped on another thread.
    thread::spawn(move || {
        assert_eq!(b[0], 0xA5);
        drop(b);
    })
    .join()
    .unwrap();
    assert_all_back(&p);
    // The pool outlives its handle while a buffer holds one.
    let b = p.alloc_buf().unwrap();
    drop(p);
    assert_eq!(b.pool().in_use(), 1);
    let p2 = b.pool().clone();
    drop(b);
    assert_all_back(&p2);
}

#[test]
#[cfg_attr(miri, ignore)] // leaks on purpose
fn drop_with_objects_out_leaks_and_stays_valid() {
    let p = pool(8, 64, 0);
    let obj = p.get().unwrap();
    drop(p);
    // The pool is leaked, not freed: the object is still ours to use.
    // SAFETY: the object is ours and its memory was not unmapped.
    unsafe { obj.as_ptr().write_bytes(7, 64) };
}

#[test]
fn multiple_regions() {
    let p = Mempool::new(MempoolConfig {
        max_region_len: Some(4096),
        page_size: PageSize::Size4K,
        ..cfg(20, 1000)
    })
    .unwrap();
    // 1024-byte stride: 4 objects per 4 KiB region.
    assert_eq!(p.regions().len(), 5);
    let mut objs = vec![ptr::null_mut(); 20];
    p.get_bulk(&mut objs).unwrap();
    for &o in &objs {
        assert!(p.is_object(o));
        assert!(p.iova_of(o).is_some());
    }
    let set: HashSet<usize> = objs.iter().map(|o| o.addr()).collect();
    assert_eq!(set.len(), 20);
    // SAFETY: from this pool, returned once, unused.
    unsafe { p.put_bulk(&objs) };
    assert_all_back(&p);
}

#[test]
#[cfg_attr(miri, ignore)] // mmap, pagemap
fn pa_mode_objects_never_straddle_a_page() {
    let config = MempoolConfig {
        name: "pa".into(),
        count: 2000, // 697 objects of 3008 bytes per 2 MiB page: 3 pages
        elt_size: 3000,
        page_size: PageSize::Size2M,
        allow_fallback: false,
        ..MempoolConfig::default()
    };
    let p = match Mempool::new(config) {
        Ok(p) => p,
        Err(e) => return skip(Capability::Hugepages, &e.to_string()),
    };
    let region = &p.regions()[0];
    if region.iova_mode() != IovaMode::Pa {
        let why = format!("no PA mode: {}", region.iova_mode_reason());
        return skip(Capability::Hugepages, &why);
    }
    let page = region.page_size().bytes();
    let mut objs = vec![ptr::null_mut(); 2000];
    p.get_bulk(&mut objs).unwrap();
    let mut pages = HashSet::new();
    for &o in &objs {
        let off = o.addr() - region.as_ptr().addr();
        assert!(
            off % page + p.elt_size() <= page,
            "object at {off:#x} straddles"
        );
        assert!(region.is_iova_contiguous(o, p.elt_size()));
        let iova = p.iova_of(o).unwrap().0;
        assert_eq!(p.iova_of(o.wrapping_add(2999)).unwrap().0, iova + 2999);
        pages.insert(off / page);
    }
    assert_eq!(pages.len(), 3);
    // SAFETY: from this pool, returned once, unused.
    unsafe { p.put_bulk(&objs) };
    assert_all_back(&p);
}

#[test]
#[cfg_attr(miri, ignore)] // mmap
fn hugepage_pool_or_fallback_is_reported() {
    let p = Mempool::new(MempoolConfig {
        name: "huge".into(),
        count: 1024,
        elt_size: 2048,
        cache_size: 64,
        ..MempoolConfig::default()
    })
    .unwrap();
    let r = &p.regions()[0];
    if let crate::region::Backing::Normal { reason } = r.backing() {
        assert!(!reason.is_empty());
        return skip(Capability::Hugepages, &format!("pool fell back: {reason}"));
    }
    let b = p.alloc_buf().unwrap();
    assert!(r.contains(b.as_ptr()));
    drop(b);
    assert_all_back(&p);
    assert!(format!("{p:?}").contains("huge"));
}

/// Several threads, some with slots, some without, doing random-size bulk
/// gets and puts. Each object carries its holder's id while held, so a
/// double allocation is caught by the next holder; the final count must
/// be exact.
#[test]
fn randomized_stress() {
    use rand::{Rng, SeedableRng, rngs::SmallRng};
    const FREE: u64 = 0;
    let (threads, iters, count) = if cfg!(miri) {
        (3, 40, 64)
    } else {
        (6, 20_000, 1024)
    };
    let p = pool(count, 64, 16);
    let seed: u64 = rand::rng().random();
    println!("seed {seed}");
    thread::scope(|s| {
        for t in 0..threads {
            let p = &p;
            s.spawn(move || {
                let id = t as u64 + 1;
                let _slot = (t % 2 == 0).then(|| slot::claim().unwrap());
                let mut rng = SmallRng::seed_from_u64(seed ^ id);
                let mut held: Vec<*mut u8> = Vec::new();
                let mut burst = [ptr::null_mut(); 48];
                for _ in 0..iters {
                    if held.len() < 96 && rng.random_bool(0.55) {
                        let n = rng.random_range(1..=48);
                        if p.get_bulk(&mut burst[..n]).is_ok() {
                            for &o in &burst[..n] {
                                let stamp = o.cast::<u64>();
                                // SAFETY: a free object we now hold; 64-byte aligned.
                                let prev = unsafe { stamp.read() };
                                assert_eq!(prev, FREE, "object {o:p} held by {prev} too");
                                // SAFETY: as above.
                                unsafe { stamp.write(id) };
                            }
                            held.extend_from_slice(&burst[..n]);
                        }
                    } else if !held.is_empty() {
                        let n = rng.random_range(1..=held.len().min(48));
                        let give = held.split_off(held.len() - n);
                        for &o in &give {
                            let stamp = o.cast::<u64>();
                            // SAFETY: we hold the object.
                            assert_eq!(unsafe { stamp.read() }, id);
                            // SAFETY: as above.
                            unsafe { stamp.write(FREE) };
                        }
                        // SAFETY: from this pool, returned once, unused.
                        unsafe { p.put_bulk(&give) };
                    }
                }
                for &o in &held {
                    // SAFETY: we hold the object.
                    unsafe { o.cast::<u64>().write(FREE) };
                }
                // SAFETY: from this pool, returned once, unused.
                unsafe { p.put_bulk(&held) };
                p.flush_cache();
            });
        }
    });
    assert_all_back(&p);
    // And the store gives every object exactly once.
    let mut all = vec![ptr::null_mut(); count];
    p.get_bulk(&mut all).unwrap();
    let set: HashSet<usize> = all.iter().map(|o| o.addr()).collect();
    assert_eq!(set.len(), count);
    // SAFETY: from this pool, returned once, unused.
    unsafe { p.put_bulk(&all) };
    assert_all_back(&p);
}

/// The shared store under contention, for a bounded time: four threads,
/// two holding cache slots and two without, take and return random-size
/// bursts (1 to 100, past the put chunk and the cache size, so that both
/// the cache and the store paths run, and gets often find too few
/// objects). Each object's owner is recorded on take and cleared on
/// return, so a double hand-out fails at once; at the end every object is
/// back exactly once. Run for both index layouts (power-of-two stride:
/// shift; 72 bytes: the general search and division) with and without
/// caches.
#[test]
fn store_stress_timed() {
    use rand::{Rng, SeedableRng, rngs::SmallRng};
    use std::sync::atomic::{AtomicBool, AtomicU32 as StdU32, Ordering::Relaxed};
    use std::time::{Duration, Instant};
    let (count, budget, min_iters) = if cfg!(miri) {
        (48, Duration::ZERO, 15)
    } else {
        (512, Duration::from_millis(80), 1000)
    };
    let seed: u64 = rand::rng().random();
    println!("seed {seed}");
    for (elt_size, cache_size) in [(64, 0), (72, 0), (64, 8), (72, 8)] {
        let p = Mempool::new(MempoolConfig {
            name: "stress".into(),
            count,
            elt_size,
            align: 8,
            cache_size,
            page_size: PageSize::Size4K,
            ..MempoolConfig::default()
        })
        .unwrap();
        assert_eq!(p.core().packed.is_some(), elt_size == 64);
        let owner: Vec<StdU32> = (0..count).map(|_| StdU32::new(0)).collect();
        let stop = AtomicBool::new(false);
        let start = Instant::now();
        thread::scope(|s| {
            for t in 1..=4u32 {
                let (p, owner, stop) = (&p, &owner, &stop);
                s.spawn(move || {
                    let _slot = (t % 2 == 0).then(|| slot::claim().unwrap());
                    let mut rng = SmallRng::seed_from_u64(seed ^ u64::from(t));
                    let mut held: Vec<*mut u8> = Vec::new();
                    let mut burst = [ptr::null_mut(); 100];
                    let mut iters = 0;
                    while iters < min_iters || !stop.load(Relaxed) {
                        iters += 1;
                        if held.len() < count / 4 && rng.random_bool(0.5) {
                            let n = rng.random_range(1..=100);
                            if p.get_bulk(&mut burst[..n]).is_err() {
                                continue;
                            }
                            for &o in &burst[..n] {
                                let i = p.core().index_of(o).expect("an object of the pool");
                                let prev = owner[i as usize].swap(t, Relaxed);
                                assert_eq!(
                                    prev, 0,
                                    "object {i} handed to {t} while {prev} holds it"
                                );
                            }
                            held.extend_from_slice(&burst[..n]);
                        } else if !held.is_empty() {
                            let n = rng.random_range(1..=held.len().min(100));
                            let give = held.split_off(held.len() - n);
                            for &o in &give {
                                let i = p.core().index_of(o).expect("an object of the pool");
                                assert_eq!(owner[i as usize].swap(0, Relaxed), t);
                            }
                            // SAFETY: from this pool, returned once, unused.
                            unsafe { p.put_bulk(&give) };
                        }
                    }
                    for &o in &held {
                        let i = p.core().index_of(o).expect("an object of the pool");
                        owner[i as usize].store(0, Relaxed);
                    }
                    // SAFETY: from this pool, returned once, unused.
                    unsafe { p.put_bulk(&held) };
                    p.flush_cache();
                });
            }
            while start.elapsed() < budget {
                thread::sleep(Duration::from_millis(5));
            }
            stop.store(true, Relaxed);
        });
        assert_all_back(&p);
        let mut all = vec![ptr::null_mut(); count];
        p.get_bulk(&mut all).unwrap();
        let set: HashSet<usize> = all.iter().map(|o| o.addr()).collect();
        assert_eq!(set.len(), count, "elt_size {elt_size}, cache {cache_size}");
        // SAFETY: from this pool, returned once, unused.
        unsafe { p.put_bulk(&all) };
        assert_all_back(&p);
    }
}

/// A put that breaks the contract with a pointer not of the pool (which
/// debug builds assert against in `put_bulk`) drops that pointer and keeps
/// the others, in both the packed layout and the searched one.
#[test]
#[cfg_attr(miri, ignore)] // mmap
fn store_put_drops_a_pointer_not_of_the_pool() {
    let packed = pool(8, 64, 0);
    let searched = Mempool::new(MempoolConfig {
        max_region_len: Some(4096),
        page_size: PageSize::Size4K,
        ..cfg(8, 1000)
    })
    .unwrap();
    assert!(packed.core().packed.is_some() && searched.core().packed.is_none());
    for p in [&packed, &searched] {
        let mut objs = vec![ptr::null_mut(); 8];
        p.get_bulk(&mut objs).unwrap();
        let mut foreign = [0u8; 64];
        let inside = objs[1].wrapping_add(8);
        let put = [objs[0], foreign.as_mut_ptr(), inside, objs[1]];
        p.core().store_put(&put);
        assert_eq!(p.available(), 2, "only the two objects went back");
        let mut back = vec![ptr::null_mut(); 2];
        p.get_bulk(&mut back).unwrap();
        assert_eq!(back, [objs[0], objs[1]], "in order, the others dropped");
        // SAFETY: every object came from this pool and goes back once.
        unsafe { p.put_bulk(&objs) };
        assert_all_back(p);
    }
}
