use super::*;

fn get(r: &Ring, n: usize) -> Option<Vec<u32>> {
    let mut out = vec![u32::MAX; n];
    r.get_bulk(n, |i, x| out[i] = x).then_some(out)
}

#[test]
fn fifo_and_all_or_nothing() {
    let r = Ring::full(5).unwrap();
    assert_eq!(r.capacity(), 8);
    assert_eq!(r.len(), 5);
    assert_eq!(get(&r, 2), Some(vec![0, 1]));
    assert_eq!(get(&r, 4), None, "bulk get is all or nothing");
    assert_eq!(r.len(), 3);
    r.put_bulk([1, 0].iter().copied());
    assert_eq!(r.len(), 5);
    assert_eq!(get(&r, 5), Some(vec![2, 3, 4, 1, 0]));
    assert_eq!(get(&r, 1), None);
    assert!(r.get_bulk(0, |_, _| unreachable!()));
    r.put_bulk([].iter().copied());
    assert_eq!(r.len(), 0);
    r.put_bulk([4].iter().copied());
    assert_eq!(get(&r, 1), Some(vec![4]));
    assert_eq!(get(&r, 9), None, "more than the capacity");
}

#[test]
fn capacity_is_the_power_of_two_that_holds_count() {
    for (count, cap) in [
        (0, 1),
        (1, 1),
        (2, 2),
        (3, 4),
        (4, 4),
        (8191, 8192),
        (8192, 8192),
    ] {
        let r = Ring::full(count).unwrap();
        assert_eq!(
            (r.capacity(), r.len()),
            (cap, count as usize),
            "count {count}"
        );
    }
    // A full ring of a power-of-two count: every slot holds an object.
    let r = Ring::full(4).unwrap();
    assert_eq!(get(&r, 4), Some(vec![0, 1, 2, 3]));
    r.put_bulk([3, 2, 1, 0].iter().copied());
    assert_eq!(get(&r, 4), Some(vec![3, 2, 1, 0]));
}

#[test]
fn empty_ring() {
    let r = Ring::full(0).unwrap();
    assert_eq!(get(&r, 1), None);
    assert_eq!(r.len(), 0);
}

#[test]
fn runs_across_the_slot_wrap_and_the_position_wrap() {
    // Positions start 3 before usize's wrap, which is also the array's:
    // every bulk below straddles one or both.
    let r = Ring::full_at(6, usize::MAX - 2).unwrap();
    assert_eq!(r.len(), 6);
    for lap in 0..20u32 {
        let got = get(&r, 5).unwrap();
        assert_eq!(r.len(), 1);
        let mut back = got.clone();
        back.rotate_left((lap % 5) as usize);
        r.put_bulk(back.iter().copied());
        assert_eq!(r.len(), 6);
        let mut all = get(&r, 6).unwrap();
        r.put_bulk(all.iter().copied());
        all.sort_unstable();
        assert_eq!(all, [0, 1, 2, 3, 4, 5]);
    }
}

#[test]
fn threads_never_share_an_index() {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU32 as StdU32;
    let count = if cfg!(miri) { 16 } else { 256 };
    let iters = if cfg!(miri) { 50 } else { 20_000 };
    let r = Arc::new(Ring::full(count).unwrap());
    let owner: Arc<Vec<StdU32>> = Arc::new((0..count).map(|_| Default::default()).collect());
    let threads: Vec<_> = (1..=4u32)
        .map(|t| {
            let (r, owner) = (r.clone(), owner.clone());
            std::thread::spawn(move || {
                use std::sync::atomic::Ordering::Relaxed;
                for k in 0..iters {
                    let n = 1 + (k * 7 + t as usize) % 5;
                    let Some(got) = get(&r, n) else { continue };
                    for &i in &got {
                        let prev = owner[i as usize].swap(t, Relaxed);
                        assert_eq!(prev, 0, "index {i} handed out twice");
                    }
                    for &i in &got {
                        owner[i as usize].store(0, Relaxed);
                    }
                    r.put_bulk(got.iter().copied());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(r.len(), count as usize);
    let mut all = get(&r, count as usize).unwrap();
    all.sort_unstable();
    assert_eq!(all, (0..count).collect::<Vec<_>>());
}
