//! A connection's byte buffer: one allocation, the bytes held contiguous
//! from `start` to `end`, so that a parser always sees every buffered byte
//! as one slice and a flush is one `send`. Space freed at the front is
//! reclaimed by moving the held bytes down when the back runs out, which
//! costs less than a second `iovec` on every call. The allocation is made
//! when the first byte arrives and given up when the buffer empties
//! after holding more than [`KEEP`] bytes, so thousands of idle
//! connections hold no buffers.
//!
//! **Spares.** An allocation given up goes to its thread's spares (a few
//! MiB at most, [`SPARE_BYTES`]), and a buffer that needs one takes it from
//! there before asking the allocator. A transport runs on one lcore, so
//! these are that lcore's, as a mempool's cache is: no lock, no sharing.
//! A busy connection's send buffer fills and empties every pass; with
//! replies of more than [`KEEP`] bytes (16 pipelined 1 KiB values), each
//! pass freed the allocation and made a new one, whose zeroing alone was
//! 2% of a key-value server's time (docs/performance.md, Servers).
//! [`ByteBuf::adopt`] goes further for an application that builds its
//! output in a `Vec` of its own: the `Vec` becomes the buffer, with no copy.

use std::cell::RefCell;

/// An emptied buffer keeps an allocation up to this size.
const KEEP: usize = 16 * 1024;

/// Bytes of allocations a thread keeps for the next buffer to need one.
const SPARE_BYTES: usize = 8 * 1024 * 1024;

/// Allocations a thread keeps, at most.
const SPARE_COUNT: usize = 512;

thread_local! {
    /// This thread's spare allocations, each with its length initialised
    /// (so that a buffer reusing one need not zero it again).
    static SPARES: RefCell<Spares> = const { RefCell::new(Spares { bufs: Vec::new(), bytes: 0 }) };
}

struct Spares {
    bufs: Vec<Vec<u8>>,
    bytes: usize,
}

/// Keeps `v` for the next buffer of this thread, or frees it when the
/// spares are full (or the thread is exiting).
fn give_back(v: Vec<u8>) {
    let _ = SPARES.try_with(|s| {
        let Ok(mut s) = s.try_borrow_mut() else {
            return;
        };
        if s.bufs.len() < SPARE_COUNT && s.bytes + v.len() <= SPARE_BYTES {
            s.bytes += v.len();
            s.bufs.push(v);
        }
    });
}

/// The most recently given back allocation of this thread, if any.
fn take_spare() -> Option<Vec<u8>> {
    SPARES
        .try_with(|s| {
            let mut s = s.try_borrow_mut().ok()?;
            let v = s.bufs.pop()?;
            s.bytes -= v.len();
            Some(v)
        })
        .ok()
        .flatten()
}

/// Bytes this thread holds in spares (for tests).
#[cfg(test)]
fn spare_bytes() -> usize {
    SPARES.with(|s| s.borrow().bytes)
}

/// Bytes held in `data[start..end]`; at most `capacity` of them.
pub(crate) struct ByteBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
    capacity: usize,
}

impl ByteBuf {
    /// An empty buffer that holds at most `capacity` bytes.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            data: Vec::new(),
            start: 0,
            end: 0,
            capacity,
        }
    }

    /// The bytes held.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    pub(crate) fn len(&self) -> usize {
        self.end - self.start
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Bytes of the allocation beyond those held: how much a
    /// [`Self::tail`] gives without allocating.
    pub(crate) fn spare(&self) -> usize {
        (self.data.len() - self.len()).min(self.room())
    }

    /// How many more bytes it takes.
    pub(crate) fn room(&self) -> usize {
        self.capacity - self.len()
    }

    /// Drops the first `n` bytes held (all of them if `n` is more).
    pub(crate) fn consume(&mut self, n: usize) {
        self.start += n.min(self.len());
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.data.len() > KEEP {
                give_back(std::mem::take(&mut self.data));
            }
        }
    }

    /// Takes the bytes of `v` as the buffer's, without copying them: `v`
    /// becomes the allocation, and gets back an empty one (this buffer's
    /// old one, or a spare, with its capacity). Only for an empty buffer
    /// with room for all of `v`; returns whether it took them.
    pub(crate) fn adopt(&mut self, v: &mut Vec<u8>) -> bool {
        if !self.is_empty() || v.len() > self.capacity {
            return false;
        }
        std::mem::swap(&mut self.data, v);
        self.start = 0;
        self.end = self.data.len();
        if v.capacity() == 0
            && let Some(spare) = take_spare()
        {
            *v = spare;
        }
        v.clear();
        true
    }

    /// Space for up to `want` more bytes (at most [`Self::room`]) after
    /// those held, to be filled and then committed with [`Self::commit`].
    pub(crate) fn tail(&mut self, want: usize) -> &mut [u8] {
        let want = want.min(self.room());
        if self.data.len() - self.end < want {
            if self.start > 0 {
                self.data.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.data.is_empty()
                && let Some(spare) = take_spare()
            {
                self.data = spare;
            }
            if self.data.len() - self.end < want {
                // Grow to what is needed, in steps that double, at most
                // the capacity.
                let need = self.end + want;
                let new_len = need.max(self.data.len() * 2).min(self.capacity).max(need);
                self.data.resize(new_len, 0);
            }
        }
        &mut self.data[self.end..self.end + want]
    }

    /// Counts `n` bytes written into the last [`Self::tail`] as held.
    pub(crate) fn commit(&mut self, n: usize) {
        debug_assert!(self.end + n <= self.data.len());
        self.end = (self.end + n).min(self.data.len());
    }

    /// Appends as much of `src` as there is room for; returns how much.
    pub(crate) fn push(&mut self, src: &[u8]) -> usize {
        let dst = self.tail(src.len());
        let n = dst.len();
        dst.copy_from_slice(&src[..n]);
        self.commit(n);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::{ByteBuf, SPARE_BYTES, spare_bytes};

    #[test]
    fn holds_bytes_in_order_and_never_more_than_its_capacity() {
        let mut b = ByteBuf::new(8);
        assert_eq!(b.push(b"abcde"), 5);
        assert_eq!(b.push(b"fghij"), 3);
        assert_eq!(b.bytes(), b"abcdefgh");
        assert_eq!(b.room(), 0);
        b.consume(3);
        assert_eq!(b.bytes(), b"defgh");
        // The front gap is reclaimed by moving the held bytes down.
        assert_eq!(b.push(b"XYZW"), 3);
        assert_eq!(b.bytes(), b"defghXYZ");
        b.consume(100);
        assert!(b.is_empty());
        assert_eq!(b.room(), 8);
    }

    #[test]
    fn an_emptied_large_allocation_serves_the_next_buffer_of_the_thread() {
        // A thread of its own: the spares are per thread.
        std::thread::spawn(|| {
            let mut a = ByteBuf::new(1 << 20);
            assert_eq!(a.push(&[7u8; 40_000]), 40_000);
            let at = a.bytes().as_ptr();
            a.consume(40_000);
            assert!(a.is_empty());
            assert_eq!(spare_bytes(), 40_000, "kept, not freed");
            // The next buffer to need room takes it, bytes and all: no
            // allocation, no zeroing.
            let mut b = ByteBuf::new(1 << 20);
            assert_eq!(b.push(b"hello"), 5);
            assert_eq!(b.bytes(), b"hello");
            assert_eq!(b.bytes().as_ptr(), at);
            assert_eq!(spare_bytes(), 0);
            // A small allocation stays with its buffer, as before.
            let mut c = ByteBuf::new(64);
            c.push(b"abc");
            c.consume(3);
            assert_eq!(spare_bytes(), 0);
            // The spares are bounded: past SPARE_BYTES, allocations are
            // freed.
            let mut many: Vec<ByteBuf> = (0..SPARE_BYTES / 40_000 + 8)
                .map(|_| {
                    let mut d = ByteBuf::new(1 << 20);
                    d.push(&[1u8; 40_000]);
                    d
                })
                .collect();
            for d in &mut many {
                d.consume(usize::MAX);
            }
            assert!(spare_bytes() <= SPARE_BYTES);
            assert!(spare_bytes() > SPARE_BYTES - 80_000);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn adopt_takes_a_vec_without_copying_and_hands_back_an_empty_one() {
        std::thread::spawn(|| {
            let mut b = ByteBuf::new(100);
            let mut v = b"reply".to_vec();
            let at = v.as_ptr();
            assert!(b.adopt(&mut v));
            assert_eq!(b.bytes(), b"reply");
            assert_eq!(b.bytes().as_ptr(), at, "the same bytes, not a copy");
            assert!(v.is_empty());
            // Not while it holds bytes, nor past its capacity.
            let mut w = b"more".to_vec();
            assert!(!b.adopt(&mut w));
            assert_eq!(w, b"more");
            // It goes on as a buffer: appends, consumes, takes room back.
            assert_eq!(b.push(b"!"), 1);
            assert_eq!(b.bytes(), b"reply!");
            b.consume(6);
            let mut big = vec![0u8; 101];
            assert!(!b.adopt(&mut big));
            assert_eq!(big.len(), 101);
            // An emptied adopted allocation past KEEP goes to the spares,
            // and the next adopt hands it back to the caller.
            let mut large = ByteBuf::new(1 << 20);
            let mut v = vec![3u8; 20_000];
            let at = v.as_ptr();
            assert!(large.adopt(&mut v));
            assert_eq!(
                v.capacity(),
                0,
                "the buffer had no allocation, nor the spares"
            );
            large.consume(20_000);
            let mut next = b"x".to_vec();
            assert!(large.adopt(&mut next));
            assert_eq!(next.as_ptr(), at, "the spare, handed back");
            assert!(next.is_empty() && next.capacity() >= 20_000);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_random_sequence_matches_a_plain_queue() {
        use std::collections::VecDeque;
        let mut b = ByteBuf::new(1000);
        let mut model: VecDeque<u8> = VecDeque::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..20_000u64 {
            let r = next();
            if r % 2 == 0 {
                let len = (r >> 8) as usize % 300;
                let src: Vec<u8> = (0..len).map(|k| (i as usize + k) as u8).collect();
                let n = b.push(&src);
                assert_eq!(n, len.min(1000 - model.len()));
                model.extend(&src[..n]);
            } else {
                let n = (r >> 8) as usize % 300;
                b.consume(n);
                for _ in 0..n.min(model.len()) {
                    model.pop_front();
                }
            }
            assert_eq!(b.len(), model.len());
            assert!(b.bytes().iter().eq(model.iter()));
        }
    }
}
