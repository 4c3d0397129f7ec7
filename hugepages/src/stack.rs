//! The shared store of a mempool: a lock-free LIFO stack of `u32` object
//! indices, in the style of DPDK's lock-free stack (`rte_stack_lf`,
//! lib/stack/rte_stack_lf_c11.h).
//!
//! # Layout
//!
//! - `head`: one `AtomicU64` packing `{tag: u32 (high), index: u32 (low)}`,
//!   the index of the top object (or [`NIL`]) and a counter bumped by every
//!   successful update of the head.
//! - `next`: a side array with one `AtomicU32` link per object: the index
//!   of the object below it. Links live beside the objects, not in them, so
//!   a user scribbling over a free object cannot corrupt the store.
//! - `len`: the number of objects that may be popped. It is a reservation
//!   counter, not a mirror of the list: a pop first takes `n` from it
//!   (failing at once when fewer are there: bulk is all or nothing) and
//!   only then unlinks; a push links and publishes first and only then adds
//!   to it. So `len` never exceeds the objects on the list that no other
//!   pop has reserved, and a pop that reserved `n` finds `n` objects under
//!   the head it reads (or a stale head, see below).
//!
//! In the uncontended case a bulk pop is one CAS on `len` and one CAS on
//! `head`; a bulk push is one CAS on `head` and one `fetch_add` on `len`,
//! whatever the burst size: the walk over `n` links is private loads.
//!
//! # ABA
//!
//! A pop reads head `{i, t}`, walks `n` links from `i` to find the new top
//! `j`, and CASes `{i, t}` to `{j, t + 1}`. Without the tag, the classic ABA
//! failure: between the read and the CAS other threads pop `i` and the
//! objects below it and push `i` back on top of different objects; the CAS
//! would then install `j`, which is no longer free. Every successful head
//! update (push or pop) increments the tag, so the CAS succeeds only if
//! the head was not updated at all since it was read, unless exactly 2^32
//! updates happened while this thread sat between its load and its CAS
//! and the same index is on top again. 2^32 updates take at least seconds
//! of uninterrupted CAS traffic on one cache line (tens of ns each), while
//! the window is a handful of instructions; a thread preempted that long
//! in exactly that window is the accepted risk, as in DPDK (whose tag is
//! 64 bits beside a 64-bit pointer, needing a 128-bit CAS; with 32-bit
//! indices we get the pair into one 64-bit CAS, which every target has).
//!
//! Since an unchanged head means the list was not touched, the links a
//! successful pop walked are the list's links. A pop that walked a list
//! which changed under it may have read links being rewritten (that is why
//! they are atomics), may have met [`NIL`] early (it then re-reads the
//! head and walks again, like DPDK), and its CAS then fails.
//!
//! # Orderings
//!
//! - push: links stored Relaxed, then head CAS **Release** on success: the
//!   links, and the objects' contents the caller wrote, are published with
//!   the new head. Every write to `head` is an RMW, so a later Acquire of
//!   any head value synchronises with every earlier push (release
//!   sequences continue through RMWs), however deep its objects now lie.
//!   Failure is Relaxed: a push does not read the list, it only relinks
//!   its last object to the head it saw.
//! - push: then `len.fetch_add` **Release**, pairing with the reservation.
//! - pop: `len` CAS **Acquire** on success: it synchronises with the push
//!   whose `fetch_add` made room, so the head read next is at least that
//!   push's, and the `n` reserved objects are under it.
//! - pop: head load **Acquire** (and the CAS's failure ordering, which
//!   feeds the next walk): the links walked were written before the
//!   Release that published them.
//! - pop: head CAS **AcqRel** on success. Acquire as above. Release so
//!   that the Relaxed link loads of the walk happen-before the writes of
//!   whoever pops these objects next and relinks them: without it, those
//!   loads could read the future links (load buffering).
//! - `len` loads for statistics are Acquire (the pool's drop relies on it,
//!   see mempool).

use crate::sync::{AtomicU32, AtomicU64, Ordering, spin_loop};
use crossbeam_utils::CachePadded;

/// "No object": the end of the list. Never a valid index.
pub(crate) const NIL: u32 = u32::MAX;

/// The largest number of objects a stack holds (indices `0..MAX_OBJECTS`,
/// so that [`NIL`] is never one of them).
pub(crate) const MAX_OBJECTS: usize = NIL as usize;

fn pack(index: u32, tag: u32) -> u64 {
    (u64::from(tag) << 32) | u64::from(index)
}

fn index(head: u64) -> u32 {
    head as u32
}

fn tag(head: u64) -> u32 {
    (head >> 32) as u32
}

/// A lock-free LIFO of the indices `0..capacity`; see the module docs.
pub(crate) struct Stack {
    head: CachePadded<AtomicU64>,
    len: CachePadded<AtomicU32>,
    next: Box<[AtomicU32]>,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("len", &self.len())
            .field("capacity", &self.next.len())
            .finish()
    }
}

impl Stack {
    /// A stack holding every index of `0..count`, with 0 on top (so the
    /// lowest addresses are handed out first). `count <= MAX_OBJECTS`.
    pub(crate) fn full(count: u32) -> Self {
        debug_assert!(count as usize <= MAX_OBJECTS);
        let next: Box<[AtomicU32]> = (0..count)
            .map(|i| AtomicU32::new(if i + 1 == count { NIL } else { i + 1 }))
            .collect();
        let top = if count == 0 { NIL } else { 0 };
        Self {
            head: CachePadded::new(AtomicU64::new(pack(top, 0))),
            len: CachePadded::new(AtomicU32::new(count)),
            next,
        }
    }

    /// The number of indices that can be popped now.
    pub(crate) fn len(&self) -> u32 {
        // Acquire: see "Orderings" (a reader that sees a push counted also
        // sees everything that push did).
        self.len.load(Ordering::Acquire)
    }

    /// Pops `n` indices, all or nothing, calling `emit(i, index)` for
    /// `i` in `0..n` (top of the stack first). Returns false, having popped
    /// nothing, when fewer than `n` are available.
    ///
    /// `emit` may be called more than once for the same `i` (a walk over a
    /// list that changed is redone); the last call for each `i` wins.
    pub(crate) fn pop_bulk(&self, n: usize, mut emit: impl FnMut(usize, u32)) -> bool {
        if n == 0 {
            return true;
        }
        let Ok(n32) = u32::try_from(n) else {
            return false;
        };
        // Reserve n. Relaxed first load: the CAS below re-checks.
        let mut avail = self.len.load(Ordering::Relaxed);
        loop {
            if avail < n32 {
                return false;
            }
            // Acquire: pairs with the Release fetch_add of push (module docs).
            match self.len.compare_exchange_weak(
                avail,
                avail - n32,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => avail = now,
            }
        }
        // Unlink n. Acquire: pairs with the Release of the CAS that
        // published this head (and every earlier one, all being RMWs).
        let mut old = self.head.load(Ordering::Acquire);
        loop {
            let mut cur = index(old);
            let mut walked = 0;
            while walked < n && cur != NIL {
                emit(walked, cur);
                // Relaxed: published by the Acquire above; a value from a
                // concurrent relink is only ever used if the CAS fails.
                cur = self.next[cur as usize].load(Ordering::Relaxed);
                walked += 1;
            }
            if walked < n {
                // NIL before n links: the list changed while we walked it
                // (our reservation guarantees n under a current head).
                spin_loop();
                old = self.head.load(Ordering::Acquire);
                continue;
            }
            let new = pack(cur, tag(old).wrapping_add(1));
            // AcqRel on success, Acquire on failure: module docs.
            match self
                .head
                .compare_exchange_weak(old, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(now) => old = now,
            }
        }
    }

    /// Pushes `indices`, the first one ending up on top (so that a pop of
    /// the same count returns them in the same order). Each index must be
    /// below the capacity and not on the stack already.
    ///
    /// # Panics
    ///
    /// When an index is out of range, which the mempool's pointer check
    /// rules out before calling.
    pub(crate) fn push_bulk(&self, indices: impl IntoIterator<Item = u32>) {
        let mut indices = indices.into_iter();
        let Some(first) = indices.next() else {
            return;
        };
        // Link the chain first -> ... -> last privately: these objects are
        // ours until the CAS publishes them. Relaxed: published by it.
        let mut last = first;
        let mut n: u32 = 1;
        for i in indices {
            self.next[last as usize].store(i, Ordering::Relaxed);
            last = i;
            n += 1;
        }
        let mut old = self.head.load(Ordering::Relaxed);
        loop {
            self.next[last as usize].store(index(old), Ordering::Relaxed);
            let new = pack(first, tag(old).wrapping_add(1));
            // Release on success, Relaxed on failure: module docs.
            match self
                .head
                .compare_exchange_weak(old, new, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => old = now,
            }
        }
        // Only now may pops reserve these objects. Release: pairs with the
        // Acquire reservation in `pop_bulk`.
        self.len.fetch_add(n, Ordering::Release);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn pop(s: &Stack, n: usize) -> Option<Vec<u32>> {
        let mut out = vec![NIL; n];
        s.pop_bulk(n, |i, x| out[i] = x).then_some(out)
    }

    #[test]
    fn lifo_and_all_or_nothing() {
        let s = Stack::full(5);
        assert_eq!(s.len(), 5);
        assert_eq!(pop(&s, 2), Some(vec![0, 1]));
        assert_eq!(pop(&s, 4), None, "bulk pop is all or nothing");
        assert_eq!(s.len(), 3);
        s.push_bulk([1, 0]);
        assert_eq!(s.len(), 5);
        assert_eq!(pop(&s, 5), Some(vec![1, 0, 2, 3, 4]));
        assert_eq!(pop(&s, 1), None);
        assert!(s.pop_bulk(0, |_, _| unreachable!()));
        s.push_bulk([]);
        assert_eq!(s.len(), 0);
        s.push_bulk([4]);
        assert_eq!(pop(&s, 1), Some(vec![4]));
    }

    #[test]
    fn empty_stack() {
        let s = Stack::full(0);
        assert_eq!(pop(&s, 1), None);
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn tag_advances_on_every_update() {
        let s = Stack::full(2);
        let t0 = tag(s.head.load(Ordering::Relaxed));
        let got = pop(&s, 1).unwrap();
        s.push_bulk(got);
        // Same index on top, different tag: the ABA defence.
        let h = s.head.load(Ordering::Relaxed);
        assert_eq!(index(h), 0);
        assert_eq!(tag(h), t0.wrapping_add(2));
    }

    #[test]
    fn threads_never_share_an_index() {
        use std::sync::Arc;
        let count = if cfg!(miri) { 16 } else { 256 };
        let iters = if cfg!(miri) { 50 } else { 20_000 };
        let s = Arc::new(Stack::full(count));
        let owner: Arc<Vec<std::sync::atomic::AtomicU32>> =
            Arc::new((0..count).map(|_| Default::default()).collect());
        let threads: Vec<_> = (1..=4u32)
            .map(|t| {
                let (s, owner) = (s.clone(), owner.clone());
                std::thread::spawn(move || {
                    use std::sync::atomic::Ordering::Relaxed;
                    for k in 0..iters {
                        let n = 1 + (k * 7 + t as usize) % 5;
                        let Some(got) = pop(&s, n) else { continue };
                        for &i in &got {
                            let prev = owner[i as usize].swap(t, Relaxed);
                            assert_eq!(prev, 0, "index {i} handed out twice");
                        }
                        for &i in &got {
                            owner[i as usize].store(0, Relaxed);
                        }
                        s.push_bulk(got);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(s.len(), count);
        let mut all = pop(&s, count as usize).unwrap();
        all.sort_unstable();
        assert_eq!(all, (0..count).collect::<Vec<_>>());
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    fn model() -> loom::model::Builder {
        let mut b = loom::model::Builder::new();
        // Bounded preemptions keep the state space small enough to finish
        // in seconds while still covering the ABA-shaped interleavings
        // (a pop preempted between its head load and its CAS).
        b.preemption_bound = Some(3);
        b
    }

    /// Takes `n` indices and marks them owned; panics on a double hand-out.
    fn take(s: &Stack, owner: &[AtomicU32], n: usize, me: u32) -> Option<Vec<u32>> {
        let mut got = vec![NIL; n];
        if !s.pop_bulk(n, |i, x| got[i] = x) {
            return None;
        }
        for &i in &got {
            let prev = owner[i as usize].swap(me, Ordering::Relaxed);
            assert_eq!(prev, 0, "index {i} handed to {me} while {prev} holds it");
        }
        Some(got)
    }

    fn give(s: &Stack, owner: &[AtomicU32], mut got: Vec<u32>) {
        for &i in &got {
            owner[i as usize].store(0, Ordering::Relaxed);
        }
        // Push back in another order than popped, so the list is reshaped.
        got.reverse();
        s.push_bulk(got);
    }

    #[test]
    fn loom_stack_bulk_push_pop() {
        model().check(|| {
            let s = Arc::new(Stack::full(3));
            let owner: Arc<Vec<AtomicU32>> = Arc::new((0..3).map(|_| AtomicU32::new(0)).collect());
            let threads: Vec<_> = [(1, 2), (2, 1)]
                .into_iter()
                .map(|(me, n)| {
                    let (s, owner) = (s.clone(), owner.clone());
                    thread::spawn(move || {
                        if let Some(got) = take(&s, &owner, n, me) {
                            give(&s, &owner, got);
                        }
                    })
                })
                .collect();
            // The main thread pops one and pushes it back: with the
            // others, an index comes back to the top under a preempted pop
            // (the ABA shape the tag defends against).
            if let Some(got) = take(&s, &owner, 1, 3) {
                give(&s, &owner, got);
            }
            for t in threads {
                t.join().unwrap();
            }
            assert_eq!(s.len(), 3);
            let mut all = vec![NIL; 3];
            assert!(s.pop_bulk(3, |i, x| all[i] = x));
            all.sort_unstable();
            assert_eq!(all, [0, 1, 2]);
        });
    }

    #[test]
    fn loom_stack_all_or_nothing_under_contention() {
        model().check(|| {
            let s = Arc::new(Stack::full(2));
            let s1 = s.clone();
            let t = thread::spawn(move || {
                let mut got = [NIL; 2];
                let ok = s1.pop_bulk(2, |i, x| got[i] = x);
                if ok {
                    s1.push_bulk(got);
                }
                ok
            });
            let mut one = [NIL; 1];
            let mine = s.pop_bulk(1, |i, x| one[i] = x);
            if mine {
                s.push_bulk(one);
            }
            let theirs = t.join().unwrap();
            // Both may succeed one after the other, never both at once
            // (3 > 2), and a failure took nothing.
            assert!(mine || theirs);
            assert_eq!(s.len(), 2);
        });
    }
}
