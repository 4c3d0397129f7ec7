//! Cross-core ring workloads: ours and the peers', item for item the same
//! loop. The producer pushes the `u64`s `0..n` in order, the consumer pops
//! and sums them; on a full or empty ring both sides `spin_loop()` (a
//! `pause`, as DPDK's loops call `rte_pause()`) and retry. Ping-pong loops
//! spin without `pause`, since there the reaction time is what is
//! measured.

use super::{CpuPair, cross_core};
use crate::harness::Sample;
use core::hint::spin_loop;
use core::mem::MaybeUninit;
use crossbeam_utils::CachePadded;
use dataplane::ring::{self, Batch, ChunkError};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Slots per ring: `RING_SIZE` of DPDK's app/test/test_ring_perf.c.
pub const RING_SIZE: usize = 4096;

/// Items per burst: `MAX_PKT_BURST` of DPDK's examples/l2fwd, and the
/// largest size in `ring_perf_autotest`.
pub const BURST: usize = 32;

/// Fills `buf` with `next, next + 1, ...` and returns how many that is:
/// `BURST` or what is left before `end`.
#[inline(always)]
fn fill(buf: &mut [u64; BURST], next: u64, end: u64) -> usize {
    let n = (end - next).min(BURST as u64) as usize;
    for (k, slot) in buf[..n].iter_mut().enumerate() {
        *slot = next + k as u64;
    }
    n
}

#[inline(always)]
fn sum(items: &[u64]) -> u64 {
    items.iter().fold(0, |acc, &x| acc.wrapping_add(x))
}

// ---- SP/SC, one item at a time ------------------------------------------

/// Which side of a single-item loop is slowed by two moves per item (each
/// item passed through `black_box` twice): the probe of docs/performance.md
/// target 1, which side catching the other decides the speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skew {
    /// Neither: the plain loops.
    None,
    /// The producer.
    Producer,
    /// The consumer.
    Consumer,
}

/// `v`, through two `black_box` moves when `slow`.
#[inline(always)]
fn skew(v: u64, slow: bool) -> u64 {
    if slow {
        std::hint::black_box(std::hint::black_box(v))
    } else {
        v
    }
}

/// Ours: `ring::spsc`, `push` / `pop`.
pub fn spsc_single_ours(cpus: CpuPair, items: u64) -> Sample {
    spsc_single_ours_skewed(cpus, items, Skew::None)
}

/// Ours: `ring::spsc`, `push` / `pop`, one side slowed as `s` says.
pub fn spsc_single_ours_skewed(cpus: CpuPair, items: u64, s: Skew) -> Sample {
    let _pad = super::placement_pad();
    let (mut tx, mut rx) = ring::spsc::<u64>(RING_SIZE).expect("power of two");
    cross_core(
        cpus,
        items,
        move |n| {
            let mut i = 0;
            while i < n {
                match tx.push(skew(i, s == Skew::Producer)) {
                    Ok(()) => i += 1,
                    Err(_) => spin_loop(),
                }
            }
            0
        },
        move |n| {
            let (mut got, mut acc) = (0, 0u64);
            while got < n {
                match rx.pop() {
                    Some(v) => {
                        acc = acc.wrapping_add(skew(v, s == Skew::Consumer));
                        got += 1;
                    }
                    None => spin_loop(),
                }
            }
            acc
        },
    )
}

/// Peer: `rtrb::RingBuffer`, `push` / `pop`.
pub fn spsc_single_rtrb(cpus: CpuPair, items: u64) -> Sample {
    spsc_single_rtrb_skewed(cpus, items, Skew::None)
}

/// Peer: `rtrb::RingBuffer`, `push` / `pop`, one side slowed as `s` says.
pub fn spsc_single_rtrb_skewed(cpus: CpuPair, items: u64, s: Skew) -> Sample {
    let _pad = super::placement_pad();
    let (mut tx, mut rx) = rtrb::RingBuffer::<u64>::new(RING_SIZE);
    cross_core(
        cpus,
        items,
        move |n| {
            let mut i = 0;
            while i < n {
                match tx.push(skew(i, s == Skew::Producer)) {
                    Ok(()) => i += 1,
                    Err(_) => spin_loop(),
                }
            }
            0
        },
        move |n| {
            let (mut got, mut acc) = (0, 0u64);
            while got < n {
                match rx.pop() {
                    Ok(v) => {
                        acc = acc.wrapping_add(skew(v, s == Skew::Consumer));
                        got += 1;
                    }
                    Err(_) => spin_loop(),
                }
            }
            acc
        },
    )
}

/// One 64-byte payload: what an item of a payload loop points at.
#[repr(C, align(64))]
struct Payload([AtomicU64; 8]);

/// Payloads per loop: twice the ring, so that the producer never writes a
/// payload whose item the consumer has not popped (at most `RING_SIZE`
/// items are in flight).
const PAYLOADS: u64 = 2 * RING_SIZE as u64;

/// Single items that stand for 64-byte payloads, as a ring of mbuf
/// pointers does: the producer writes item `i`'s payload (eight words,
/// `i..i + 8`) into a table, then pushes `i`; the consumer pops `i`, reads
/// the eight words and checks them. `push` returns false on a full ring,
/// `pop` `None` on an empty one. Docs/performance.md, target 1.
fn payload_loop<P, C>(cpus: CpuPair, items: u64, mut push: P, mut pop: C) -> Sample
where
    P: FnMut(u64) -> bool + Send,
    C: FnMut() -> Option<u64> + Send,
{
    let table: Arc<Vec<Payload>> = Arc::new(
        (0..PAYLOADS)
            .map(|_| Payload(core::array::from_fn(|_| AtomicU64::new(0))))
            .collect(),
    );
    let table2 = table.clone();
    cross_core(
        cpus,
        items,
        move |n| {
            let mut i = 0;
            while i < n {
                // Relaxed: the ring's push publishes these (Release).
                for (k, w) in table[(i % PAYLOADS) as usize].0.iter().enumerate() {
                    w.store(i + k as u64, Ordering::Relaxed);
                }
                while !push(i) {
                    spin_loop();
                }
                i += 1;
            }
            0
        },
        move |n| {
            let (mut got, mut acc) = (0, 0u64);
            while got < n {
                let Some(v) = pop() else {
                    spin_loop();
                    continue;
                };
                let words = &table2[(v % PAYLOADS) as usize].0;
                let sum = words
                    .iter()
                    .fold(0u64, |a, w| a.wrapping_add(w.load(Ordering::Relaxed)));
                // `8v + 28` when the payload is intact: a damaged one
                // breaks the sum that cross_core checks.
                acc = acc.wrapping_add(sum.wrapping_sub(7 * v + 28));
                got += 1;
            }
            acc
        },
    )
}

/// Ours: `ring::spsc` of indices of 64-byte payloads (see `payload_loop`).
pub fn spsc_payload_ours(cpus: CpuPair, items: u64) -> Sample {
    let _pad = super::placement_pad();
    let (mut tx, mut rx) = ring::spsc::<u64>(RING_SIZE).expect("power of two");
    payload_loop(cpus, items, move |i| tx.push(i).is_ok(), move || rx.pop())
}

/// Peer: `rtrb::RingBuffer` of indices of 64-byte payloads.
pub fn spsc_payload_rtrb(cpus: CpuPair, items: u64) -> Sample {
    let _pad = super::placement_pad();
    let (mut tx, mut rx) = rtrb::RingBuffer::<u64>::new(RING_SIZE);
    payload_loop(
        cpus,
        items,
        move |i| tx.push(i).is_ok(),
        move || rx.pop().ok(),
    )
}

/// Peer: `ringbuf::HeapRb` (caching split), `try_push` / `try_pop`.
pub fn spsc_single_ringbuf(cpus: CpuPair, items: u64) -> Sample {
    let _pad = super::placement_pad();
    use ringbuf::traits::{Consumer as _, Producer as _, Split as _};
    let (mut tx, mut rx) = ringbuf::HeapRb::<u64>::new(RING_SIZE).split();
    cross_core(
        cpus,
        items,
        move |n| {
            let mut i = 0;
            while i < n {
                match tx.try_push(i) {
                    Ok(()) => i += 1,
                    Err(_) => spin_loop(),
                }
            }
            0
        },
        move |n| {
            let (mut got, mut acc) = (0, 0u64);
            while got < n {
                match rx.try_pop() {
                    Some(v) => {
                        acc = acc.wrapping_add(v);
                        got += 1;
                    }
                    None => spin_loop(),
                }
            }
            acc
        },
    )
}

// ---- SP/SC, bursts of 32 --------------------------------------------------

/// Ours: `push_burst(&[u64])` / `pop_burst(&mut [u64])`.
pub fn spsc_burst_ours_slice(cpus: CpuPair, items: u64) -> Sample {
    let _pad = super::placement_pad();
    let (mut tx, mut rx) = ring::spsc::<u64>(RING_SIZE).expect("power of two");
    cross_core(
        cpus,
        items,
        move |n| {
            let mut buf = [0u64; BURST];
            let mut next = 0;
            while next < n {
                let k = fill(&mut buf, next, n);
                let done = tx.push_burst(&buf[..k]);
                if done == 0 {
                    spin_loop();
                }
                next += done as u64;
            }
            0
        },
        move |n| {
            let mut buf = [0u64; BURST];
            let (mut got, mut acc) = (0, 0u64);
            while got < n {
                let k = rx.pop_burst(&mut buf[..]);
                if k == 0 {
                    spin_loop();
                }
                acc = acc.wrapping_add(sum(&buf[..k]));
                got += k as u64;
            }
            acc
        },
    )
}

/// Ours: `push_burst(&mut Batch)` / `pop_burst(&mut Batch)`, the batch
/// refilled from the item iterator (what an lcore's tx path does).
pub fn spsc_burst_ours_batch(cpus: CpuPair, items: u64) -> Sample {
    let _pad = super::placement_pad();
    let (mut tx, mut rx) = ring::spsc::<u64>(RING_SIZE).expect("power of two");
    cross_core(
        cpus,
        items,
        move |n| {
            let mut batch = Batch::<u64, BURST>::new();
            let mut src = 0..n;
            loop {
                batch.fill_from(&mut src);
                if batch.is_empty() {
                    break;
                }
                if tx.push_burst(&mut batch) == 0 {
                    spin_loop();
                }
            }
            0
        },
        move |n| {
            let mut batch = Batch::<u64, BURST>::new();
            let (mut got, mut acc) = (0, 0u64);
            while got < n {
                let k = rx.pop_burst(&mut batch);
                if k == 0 {
                    spin_loop();
                }
                acc = acc.wrapping_add(sum(&batch));
                batch.clear();
                got += k as u64;
            }
            acc
        },
    )
}

/// Ours: the zero-copy chunk API, `write_chunk_uninit` / `read_chunk` of
/// up to 32 slots, written and read in place.
pub fn spsc_burst_ours_chunk(cpus: CpuPair, items: u64) -> Sample {
    let _pad = super::placement_pad();
    let (mut tx, mut rx) = ring::spsc::<u64>(RING_SIZE).expect("power of two");
    cross_core(
        cpus,
        items,
        move |n| {
            let mut next = 0;
            while next < n {
                let want = (n - next).min(BURST as u64) as usize;
                // Ask for the full burst first (answered from the cached
                // view), then for whatever is free.
                let free = match tx.write_chunk_uninit(want) {
                    Ok(mut chunk) => {
                        next = write_slots(chunk.as_mut_slices(), next);
                        // SAFETY: `write_slots` initialised every slot.
                        unsafe { chunk.commit_all() };
                        continue;
                    }
                    Err(ChunkError::TooFewSlots { available, .. }) => available,
                    Err(_) => 0,
                };
                if free == 0 {
                    spin_loop();
                    continue;
                }
                let mut chunk = tx.write_chunk_uninit(free).expect("free slots stay free");
                next = write_slots(chunk.as_mut_slices(), next);
                // SAFETY: `write_slots` initialised every slot.
                unsafe { chunk.commit_all() };
            }
            0
        },
        move |n| {
            let (mut got, mut acc) = (0, 0u64);
            while got < n {
                let avail = match rx.read_chunk(BURST) {
                    Ok(chunk) => {
                        let (a, b) = chunk.as_slices();
                        acc = acc.wrapping_add(sum(a)).wrapping_add(sum(b));
                        got += (a.len() + b.len()) as u64;
                        chunk.commit_all();
                        continue;
                    }
                    Err(ChunkError::TooFewSlots { available, .. }) => available,
                    Err(_) => 0,
                };
                if avail == 0 {
                    spin_loop();
                    continue;
                }
                let chunk = rx.read_chunk(avail).expect("items stay readable");
                let (a, b) = chunk.as_slices();
                acc = acc.wrapping_add(sum(a)).wrapping_add(sum(b));
                got += (a.len() + b.len()) as u64;
                chunk.commit_all();
            }
            acc
        },
    )
}

/// Writes `next, next + 1, ...` into both parts of a chunk; returns the
/// next value.
#[inline(always)]
fn write_slots((a, b): (&mut [MaybeUninit<u64>], &mut [MaybeUninit<u64>]), mut next: u64) -> u64 {
    for slot in a.iter_mut().chain(b.iter_mut()) {
        slot.write(next);
        next += 1;
    }
    next
}

/// Peer: rtrb's chunk API, `write_chunk_uninit` / `read_chunk`, the same
/// loop as [`spsc_burst_ours_chunk`].
pub fn spsc_burst_rtrb_chunk(cpus: CpuPair, items: u64) -> Sample {
    let _pad = super::placement_pad();
    use rtrb::chunks::ChunkError::TooFewSlots;
    let (mut tx, mut rx) = rtrb::RingBuffer::<u64>::new(RING_SIZE);
    cross_core(
        cpus,
        items,
        move |n| {
            let mut next = 0;
            while next < n {
                let want = (n - next).min(BURST as u64) as usize;
                let free = match tx.write_chunk_uninit(want) {
                    Ok(mut chunk) => {
                        next = write_slots(chunk.as_mut_slices(), next);
                        // SAFETY: `write_slots` initialised every slot.
                        unsafe { chunk.commit_all() };
                        continue;
                    }
                    Err(TooFewSlots(available)) => available,
                };
                if free == 0 {
                    spin_loop();
                    continue;
                }
                let mut chunk = tx.write_chunk_uninit(free).expect("free slots stay free");
                next = write_slots(chunk.as_mut_slices(), next);
                // SAFETY: `write_slots` initialised every slot.
                unsafe { chunk.commit_all() };
            }
            0
        },
        move |n| {
            let (mut got, mut acc) = (0, 0u64);
            while got < n {
                let avail = match rx.read_chunk(BURST) {
                    Ok(chunk) => {
                        let (a, b) = chunk.as_slices();
                        acc = acc.wrapping_add(sum(a)).wrapping_add(sum(b));
                        got += (a.len() + b.len()) as u64;
                        chunk.commit_all();
                        continue;
                    }
                    Err(TooFewSlots(available)) => available,
                };
                if avail == 0 {
                    spin_loop();
                    continue;
                }
                let chunk = rx.read_chunk(avail).expect("items stay readable");
                let (a, b) = chunk.as_slices();
                acc = acc.wrapping_add(sum(a)).wrapping_add(sum(b));
                got += (a.len() + b.len()) as u64;
                chunk.commit_all();
            }
            acc
        },
    )
}

/// Peer: ringbuf's `push_slice` / `pop_slice`, the same loop as
/// [`spsc_burst_ours_slice`].
pub fn spsc_burst_ringbuf_slice(cpus: CpuPair, items: u64) -> Sample {
    let _pad = super::placement_pad();
    use ringbuf::traits::{Consumer as _, Producer as _, Split as _};
    let (mut tx, mut rx) = ringbuf::HeapRb::<u64>::new(RING_SIZE).split();
    cross_core(
        cpus,
        items,
        move |n| {
            let mut buf = [0u64; BURST];
            let mut next = 0;
            while next < n {
                let k = fill(&mut buf, next, n);
                let done = tx.push_slice(&buf[..k]);
                if done == 0 {
                    spin_loop();
                }
                next += done as u64;
            }
            0
        },
        move |n| {
            let mut buf = [0u64; BURST];
            let (mut got, mut acc) = (0, 0u64);
            while got < n {
                let k = rx.pop_slice(&mut buf[..]);
                if k == 0 {
                    spin_loop();
                }
                acc = acc.wrapping_add(sum(&buf[..k]));
                got += k as u64;
            }
            acc
        },
    )
}

// ---- SP/SC ping-pong --------------------------------------------------------

/// Ours: two `spsc` rings; the ping side pushes `i` and waits for it to
/// come back on the other ring. One operation is one round trip.
pub fn pingpong_ours(cpus: CpuPair, round_trips: u64) -> Sample {
    let _pad = super::placement_pad();
    let (mut ping_tx, mut ping_rx) = ring::spsc::<u64>(RING_SIZE).expect("power of two");
    let (mut pong_tx, mut pong_rx) = ring::spsc::<u64>(RING_SIZE).expect("power of two");
    cross_core(
        cpus,
        round_trips,
        move |n| {
            for i in 0..n {
                // The ring never holds more than one item: push cannot fail.
                let _ = ping_tx.push(i);
                while pong_rx.pop().is_none() {}
            }
            0
        },
        move |n| {
            let mut acc = 0u64;
            for _ in 0..n {
                let v = loop {
                    if let Some(v) = ping_rx.pop() {
                        break v;
                    }
                };
                acc = acc.wrapping_add(v);
                let _ = pong_tx.push(v);
            }
            acc
        },
    )
}

/// Ours: the same over two `Channel::spsc`s, whose rings publish runs
/// (an item of at most 8 bytes beside its stamp, one line a hop), with
/// their non-blocking `try_send`/`try_recv`.
pub fn pingpong_channel(cpus: CpuPair, round_trips: u64) -> Sample {
    use dataplane::channel::Channel;
    let _pad = super::placement_pad();
    let (mut ping_tx, mut ping_rx) = Channel::spsc::<u64>(RING_SIZE);
    let (mut pong_tx, mut pong_rx) = Channel::spsc::<u64>(RING_SIZE);
    cross_core(
        cpus,
        round_trips,
        move |n| {
            for i in 0..n {
                // The channel never holds more than one item: cannot fail.
                let _ = ping_tx.try_send(i);
                while pong_rx.try_recv().is_err() {}
            }
            0
        },
        move |n| {
            let mut acc = 0u64;
            for _ in 0..n {
                let v = loop {
                    if let Ok(v) = ping_rx.try_recv() {
                        break v;
                    }
                };
                acc = acc.wrapping_add(v);
                let _ = pong_tx.try_send(v);
            }
            acc
        },
    )
}

/// Peer: the same over two `rtrb` rings.
pub fn pingpong_rtrb(cpus: CpuPair, round_trips: u64) -> Sample {
    let _pad = super::placement_pad();
    let (mut ping_tx, mut ping_rx) = rtrb::RingBuffer::<u64>::new(RING_SIZE);
    let (mut pong_tx, mut pong_rx) = rtrb::RingBuffer::<u64>::new(RING_SIZE);
    cross_core(
        cpus,
        round_trips,
        move |n| {
            for i in 0..n {
                let _ = ping_tx.push(i);
                while pong_rx.pop().is_err() {}
            }
            0
        },
        move |n| {
            let mut acc = 0u64;
            for _ in 0..n {
                let v = loop {
                    if let Ok(v) = ping_rx.pop() {
                        break v;
                    }
                };
                acc = acc.wrapping_add(v);
                let _ = pong_tx.push(v);
            }
            acc
        },
    )
}

/// The floor: a bare atomic mailbox per direction, each on its own cache
/// line. The ping side stores `i + 1` and spins until the other side
/// stores it back. Each hop moves exactly one cache line, the least any
/// cross-core handoff can do.
pub fn pingpong_mailbox(cpus: CpuPair, round_trips: u64) -> Sample {
    pingpong_boxes(cpus, round_trips, false)
}

/// The floor of a ring that publishes with a position (ours, rtrb, rte_ring):
/// per direction, the token is written to a data line, then a flag line is
/// set (the slot, then the tail), and the other side spins on the flag and
/// then reads the data. Each hop moves two lines.
pub fn pingpong_two_lines(cpus: CpuPair, round_trips: u64) -> Sample {
    pingpong_boxes(cpus, round_trips, true)
}

/// One direction of [`pingpong_boxes`]: the flag (or the only mailbox) and
/// the data line.
type Boxes = (CachePadded<AtomicU64>, CachePadded<AtomicU64>);

fn pingpong_boxes(cpus: CpuPair, round_trips: u64, two_lines: bool) -> Sample {
    let _pad = super::placement_pad();
    let boxes: Arc<(Boxes, Boxes)> = Arc::new(Default::default());
    let b2 = boxes.clone();
    // Release/Acquire: the token (or the data before it) is the message;
    // the store pairs with the other side's Acquire load of the flag.
    let send = move |(flag, data): &Boxes, token: u64| {
        if two_lines {
            data.store(token, Ordering::Relaxed);
        }
        flag.store(token, Ordering::Release);
    };
    let recv = move |(flag, data): &Boxes, token: u64| {
        while flag.load(Ordering::Acquire) != token {}
        if two_lines {
            assert_eq!(data.load(Ordering::Relaxed), token);
        }
    };
    cross_core(
        cpus,
        round_trips,
        move |n| {
            let (ping, pong) = (&boxes.0, &boxes.1);
            // The boxes carry a running count across passes, never reset.
            let base = ping.0.load(Ordering::Relaxed);
            for i in 0..n {
                let token = base + i + 1;
                send(ping, token);
                recv(pong, token);
            }
            0
        },
        move |n| {
            let (ping, pong) = (&b2.0, &b2.1);
            let base = pong.0.load(Ordering::Relaxed);
            let mut acc = 0u64;
            for i in 0..n {
                let token = base + i + 1;
                recv(ping, token);
                acc = acc.wrapping_add(i);
                send(pong, token);
            }
            acc
        },
    )
}

// ---- MP/MC -------------------------------------------------------------------

/// Ours, any mode: `push` / `pop` of one item, one thread per side.
macro_rules! single_item {
    ($name:ident, $ctor:path, $doc:literal) => {
        #[doc = $doc]
        pub fn $name(cpus: CpuPair, items: u64) -> Sample {
            #[allow(unused_mut)]
            let (mut tx, mut rx) = $ctor(RING_SIZE).expect("power of two");
            cross_core(
                cpus,
                items,
                move |n| {
                    let mut i = 0;
                    while i < n {
                        match tx.push(i) {
                            Ok(()) => i += 1,
                            Err(_) => spin_loop(),
                        }
                    }
                    0
                },
                move |n| {
                    let (mut got, mut acc) = (0, 0u64);
                    while got < n {
                        match rx.pop() {
                            Some(v) => {
                                acc = acc.wrapping_add(v);
                                got += 1;
                            }
                            None => spin_loop(),
                        }
                    }
                    acc
                },
            )
        }
    };
}

single_item!(
    mpmc_single_ours,
    ring::mpmc::<u64>,
    "Ours: `ring::mpmc` (CAS reservation on both sides, as rte_ring's default mode), one thread per side, `push` / `pop`."
);
single_item!(
    mpsc_single_ours,
    ring::mpsc::<u64>,
    "Ours: `ring::mpsc` (CAS on the producer side only), `push` / `pop`."
);
single_item!(
    spmc_single_ours,
    ring::spmc::<u64>,
    "Ours: `ring::spmc` (CAS on the consumer side only), `push` / `pop`."
);

/// Peer: `crossbeam_queue::ArrayQueue`, `push` / `pop`.
pub fn mpmc_single_arrayqueue(cpus: CpuPair, items: u64) -> Sample {
    let _pad = super::placement_pad();
    let q = Arc::new(crossbeam_queue::ArrayQueue::<u64>::new(RING_SIZE));
    let q2 = q.clone();
    cross_core(
        cpus,
        items,
        move |n| {
            let mut i = 0;
            while i < n {
                match q.push(i) {
                    Ok(()) => i += 1,
                    Err(_) => spin_loop(),
                }
            }
            0
        },
        move |n| {
            let (mut got, mut acc) = (0, 0u64);
            while got < n {
                match q2.pop() {
                    Some(v) => {
                        acc = acc.wrapping_add(v);
                        got += 1;
                    }
                    None => spin_loop(),
                }
            }
            acc
        },
    )
}

/// What a floor loop pays per item besides moving it through a slot that
/// carries its own sequence number (ArrayQueue's layout, 16 bytes a slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Floor {
    /// One locked RMW per item on each side (the claim every multi-threaded
    /// side of a bounded queue makes, on a line only that side writes) and
    /// the consumer's release of each slot into the slot's own stamp:
    /// ArrayQueue's work with nothing else.
    RmwSlotRelease,
    /// One locked RMW per item on each side; the consumer releases slots
    /// through a counter of its own that the producer reads once per lap,
    /// so the slot lines are written by the producer only.
    RmwBatchedRelease,
    /// No RMW (the claims amortised to nothing), slots released as in
    /// `RmwBatchedRelease`: what single items cost without the claims.
    NoRmw,
}

#[repr(C, align(16))]
struct FloorSlot {
    stamp: AtomicU64,
    value: AtomicU64,
}

/// A lower bound for single-item multi-producer/multi-consumer queues:
/// not a queue (one thread per side, and each side's claim counter is
/// touched but not relied on), but the minimum memory traffic and locked
/// instructions one must pay per item, in the loop every other single-item
/// contender runs. Docs/performance.md, target 4a.
pub fn mpmc_floor(cpus: CpuPair, items: u64, kind: Floor) -> Sample {
    let _pad = super::placement_pad();
    let cap = RING_SIZE as u64;
    let slots: Arc<Vec<FloorSlot>> = Arc::new(
        (0..cap)
            .map(|i| FloorSlot {
                stamp: AtomicU64::new(if kind == Floor::RmwSlotRelease { i } else { 0 }),
                value: AtomicU64::new(0),
            })
            .collect(),
    );
    let freed = Arc::new(CachePadded::new(AtomicU64::new(0)));
    let (slots2, freed2) = (slots.clone(), freed.clone());
    let mask = cap - 1;
    let (mut ppos, mut cpos) = (0u64, 0u64);
    let mut limit = cap;
    let claim_p = CachePadded::new(AtomicU64::new(0));
    let claim_c = CachePadded::new(AtomicU64::new(0));
    cross_core(
        cpus,
        items,
        move |n| {
            for i in 0..n {
                let pos = ppos;
                if kind != Floor::NoRmw {
                    claim_p.fetch_add(1, Ordering::Relaxed);
                }
                let s = &slots[(pos & mask) as usize];
                if kind == Floor::RmwSlotRelease {
                    while s.stamp.load(Ordering::Acquire) != pos {
                        spin_loop();
                    }
                } else {
                    while pos >= limit {
                        limit = freed.load(Ordering::Acquire) + cap;
                        if pos >= limit {
                            spin_loop();
                        }
                    }
                }
                s.value.store(i, Ordering::Relaxed);
                s.stamp.store(pos + 1, Ordering::Release);
                ppos = pos + 1;
            }
            0
        },
        move |n| {
            let mut acc = 0u64;
            for _ in 0..n {
                let pos = cpos;
                let s = &slots2[(pos & mask) as usize];
                while s.stamp.load(Ordering::Acquire) != pos + 1 {
                    spin_loop();
                }
                if kind != Floor::NoRmw {
                    claim_c.fetch_add(1, Ordering::Relaxed);
                }
                acc = acc.wrapping_add(s.value.load(Ordering::Relaxed));
                cpos = pos + 1;
                if kind == Floor::RmwSlotRelease {
                    s.stamp.store(pos + cap, Ordering::Release);
                } else if cpos % BURST as u64 == 0 {
                    freed2.store(cpos, Ordering::Release);
                }
            }
            acc
        },
    )
}

/// Ours: `ring::mpmc`, `push_burst` / `pop_burst` of up to 32: the loop of
/// benches/c/ring_bench.c over `rte_ring_mp_enqueue_burst` /
/// `rte_ring_mc_dequeue_burst`.
pub fn mpmc_burst_ours(cpus: CpuPair, items: u64) -> Sample {
    let _pad = super::placement_pad();
    let (tx, rx) = ring::mpmc::<u64>(RING_SIZE).expect("power of two");
    cross_core(
        cpus,
        items,
        move |n| {
            let mut buf = [0u64; BURST];
            let mut next = 0;
            while next < n {
                let k = fill(&mut buf, next, n);
                let done = tx.push_burst(&buf[..k]);
                if done == 0 {
                    spin_loop();
                }
                next += done as u64;
            }
            0
        },
        move |n| {
            let mut buf = [0u64; BURST];
            let (mut got, mut acc) = (0, 0u64);
            while got < n {
                let k = rx.pop_burst(&mut buf[..]);
                if k == 0 {
                    spin_loop();
                }
                acc = acc.wrapping_add(sum(&buf[..k]));
                got += k as u64;
            }
            acc
        },
    )
}

// ---- producers sharing one core -----------------------------------------------

/// `producers` threads all pinned to `cpus.producer`, each pushing its
/// share of `0..items` one at a time (spinning with `pause` on a full
/// queue), one consumer on `cpus.consumer` popping and summing. The
/// producers are preempted by each other at arbitrary points, including
/// between claiming a slot and publishing it. `push` and `pop` are the
/// queue's single-item operations; `pop` gets a fresh handle per sample.
pub fn shared_core<P, C>(cpus: CpuPair, producers: usize, items: u64, tx: P, rx: C) -> Sample
where
    P: Fn(u64) -> bool + Clone + Send,
    C: FnMut() -> Option<u64> + Send,
{
    use crate::cpu::pin_to_cpu;
    use std::time::Instant;
    let mut rx = rx;
    let per = items / producers as u64;
    let total = per * producers as u64;
    let start = std::sync::Barrier::new(producers + 1);
    let (t0, t1) = std::thread::scope(|s| {
        for k in 0..producers as u64 {
            let tx = tx.clone();
            let start = &start;
            s.spawn(move || {
                pin_to_cpu(cpus.producer).expect("pin a producer");
                start.wait();
                // Producer k sends k, k + P, k + 2P, ...: together 0..total.
                let mut i = k;
                while i < total {
                    if tx(i) {
                        i += producers as u64;
                    } else {
                        spin_loop();
                    }
                }
            });
        }
        let c = s.spawn(|| {
            pin_to_cpu(cpus.consumer).expect("pin the consumer");
            start.wait();
            let t0 = Instant::now();
            let (mut got, mut acc) = (0u64, 0u64);
            while got < total {
                match rx() {
                    Some(v) => {
                        acc = acc.wrapping_add(v);
                        got += 1;
                    }
                    None => spin_loop(),
                }
            }
            assert_eq!(acc, super::expected_sum(total), "consumer sum");
            (t0, Instant::now())
        });
        c.join().expect("consumer thread")
    });
    let nanos = (t1 - t0).as_nanos() as f64;
    Sample {
        ops: total,
        nanos,
        cycles: nanos * crate::cpu::tsc_per_ns(),
        side_cycles_per_op: None,
    }
}

/// Ours: `ring::mpsc`, producers sharing one core.
pub fn shared_core_ours(cpus: CpuPair, producers: usize, items: u64) -> Sample {
    let _pad = super::placement_pad();
    let (tx, mut rx) = ring::mpsc::<u64>(RING_SIZE).expect("power of two");
    shared_core(
        cpus,
        producers,
        items,
        move |v| tx.push(v).is_ok(),
        move || rx.pop(),
    )
}

/// Peer: `crossbeam_queue::ArrayQueue`, producers sharing one core.
pub fn shared_core_arrayqueue(cpus: CpuPair, producers: usize, items: u64) -> Sample {
    let _pad = super::placement_pad();
    let q = Arc::new(crossbeam_queue::ArrayQueue::<u64>::new(RING_SIZE));
    let q2 = q.clone();
    shared_core(
        cpus,
        producers,
        items,
        move |v| q.push(v).is_ok(),
        move || q2.pop(),
    )
}

/// Ours: `Channel::mpsc`, producers sharing one core.
pub fn shared_core_channel(cpus: CpuPair, producers: usize, items: u64) -> Sample {
    shared_core_of(cpus, producers, items, dataplane::channel::Channel::mpsc)
}

/// Ours: `Channel::mpsc_per_thread` (a lane per producer thread),
/// producers sharing one core.
pub fn shared_core_per_thread(cpus: CpuPair, producers: usize, items: u64) -> Sample {
    shared_core_of(
        cpus,
        producers,
        items,
        dataplane::channel::Channel::mpsc_per_thread,
    )
}

/// A constructor of our multi-producer, single-consumer channels.
type MakeMpsc = fn(usize) -> dataplane::channel::Pair<u64, ring::Multi, ring::Single>;

/// One of our multi-producer channels, made by `make`, producers sharing
/// one core.
fn shared_core_of(cpus: CpuPair, producers: usize, items: u64, make: MakeMpsc) -> Sample {
    let _pad = super::placement_pad();
    let (tx, mut rx) = make(RING_SIZE);
    shared_core(
        cpus,
        producers,
        items,
        move |v| tx.try_send(v).is_ok(),
        move || rx.try_recv().ok(),
    )
}

/// Peer: `crossbeam_channel::bounded`, producers sharing one core.
pub fn shared_core_crossbeam_channel(cpus: CpuPair, producers: usize, items: u64) -> Sample {
    let _pad = super::placement_pad();
    let (tx, rx) = crossbeam_channel::bounded::<u64>(RING_SIZE);
    shared_core(
        cpus,
        producers,
        items,
        move |v| tx.try_send(v).is_ok(),
        move || rx.try_recv().ok(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // Correctness of the loops only (every item arrives once): each
    // workload asserts its consumer's sum. Runs on whatever cpus exist.
    fn cpus() -> CpuPair {
        let allowed = crate::cpu::allowed_cpus();
        CpuPair {
            producer: allowed[0],
            consumer: *allowed.last().unwrap(),
        }
    }

    #[test]
    fn every_workload_moves_every_item() {
        let n = 100_003;
        for f in [
            spsc_single_ours,
            spsc_single_rtrb,
            spsc_single_ringbuf,
            spsc_burst_ours_slice,
            spsc_burst_ours_batch,
            spsc_burst_ours_chunk,
            spsc_burst_rtrb_chunk,
            spsc_burst_ringbuf_slice,
            mpmc_single_ours,
            mpsc_single_ours,
            spmc_single_ours,
            mpmc_single_arrayqueue,
            mpmc_burst_ours,
        ] {
            assert_eq!(f(cpus(), n).ops, n);
        }
        // The floors sum what they move, as every loop (cross_core checks).
        for kind in [
            Floor::RmwSlotRelease,
            Floor::RmwBatchedRelease,
            Floor::NoRmw,
        ] {
            assert_eq!(mpmc_floor(cpus(), n, kind).ops, n);
        }
        for f in [
            pingpong_ours,
            pingpong_channel,
            pingpong_rtrb,
            pingpong_mailbox,
            pingpong_two_lines,
        ] {
            assert_eq!(f(cpus(), 1_000).ops, 1_000);
        }
        for f in [
            shared_core_ours,
            shared_core_arrayqueue,
            shared_core_channel,
            shared_core_per_thread,
            shared_core_crossbeam_channel,
        ] {
            assert_eq!(f(cpus(), 3, 30_000).ops, 30_000);
        }
    }
}
