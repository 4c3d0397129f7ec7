//! Partitioners: which worker owns a key.
//!
//! Every key is first reduced to a 64-bit *partition key* by
//! [`PartitionKey`]: integers are used as they are (so that ranges mean
//! something), anything else is hashed with a seeded hash (so that an
//! attacker who picks flow keys cannot pile them onto one worker without
//! knowing the seed). A [`Partitioner`] then maps that `u64` to a worker
//! index:
//!
//! | partitioner | maps a key by | when |
//! | --- | --- | --- |
//! | [`HashPartitioner`] | a seeded mix, then Lemire's multiply-shift range reduction | the default: same key, same worker |
//! | [`RangePartitioner`] | boundaries on the key itself | ordered keys (ids, addresses) with locality |
//! | [`ConsistentHashPartitioner`] | a ring of virtual nodes | workers come and go: about 1/n of the keys move |
//! | [`RoundRobinPartitioner`] | a counter, ignoring the key | spreading stateless work evenly |
//! | [`CustomPartitioner`] | your closure | anything else |
//!
//! A partitioner may answer an index that is not a worker (a range table
//! longer than the pool, an empty consistent-hash ring); the pool refuses
//! such a send with `SendError::NoOwner` and hands the message back.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Reduces a key to the `u64` that partitioners work on. Implemented for
/// every `Hash` type, so any key the original design took works:
///
/// - a key whose `Hash` writes one integer (`u64`, `i32`, `usize`, `char`,
///   `bool`, a `#[derive(Hash)]` newtype around one of them, a reference
///   to one) is used as that integer, zero-extended, so that ranges over
///   ids mean something ([`RangePartitioner`]);
/// - anything else (strings, byte slices, tuples, structs of several
///   fields) is hashed with this process's seeded hash ([`compute_hash`]).
///
/// ```
/// use dataplane::partition::PartitionKey;
///
/// #[derive(Hash)]
/// struct UserId(u64);
///
/// assert_eq!(7u32.partition_key(), 7);
/// assert_eq!(UserId(7).partition_key(), 7);
/// assert_ne!("user-7".partition_key(), "user-8".partition_key());
/// ```
pub trait PartitionKey {
    /// The key's partition key.
    fn partition_key(&self) -> u64;
}

impl<K: Hash + ?Sized> PartitionKey for K {
    #[inline]
    fn partition_key(&self) -> u64 {
        let mut h = KeyHasher::Empty;
        self.hash(&mut h);
        match h {
            KeyHasher::Empty => compute_hash(&()),
            KeyHasher::Int(v) => v,
            KeyHasher::Hashing(h) => h.finish(),
        }
    }
}

/// Sees how a key hashes itself: one integer write is kept as it is; a
/// second write, or bytes, turns it into the seeded hasher (fed the
/// integer first, so nothing written is lost).
enum KeyHasher {
    Empty,
    Int(u64),
    Hashing(<foldhash::quality::RandomState as BuildHasher>::Hasher),
}

impl KeyHasher {
    #[inline]
    fn int(&mut self, v: u64) {
        match self {
            KeyHasher::Empty => *self = KeyHasher::Int(v),
            _ => self.hashing().write_u64(v),
        }
    }

    /// The seeded hasher, started with whatever was written so far.
    #[inline]
    fn hashing(&mut self) -> &mut <foldhash::quality::RandomState as BuildHasher>::Hasher {
        if !matches!(self, KeyHasher::Hashing(_)) {
            let mut h = hasher().build_hasher();
            if let KeyHasher::Int(v) = *self {
                h.write_u64(v);
            }
            *self = KeyHasher::Hashing(h);
        }
        match self {
            KeyHasher::Hashing(h) => h,
            _ => unreachable!("just set"),
        }
    }
}

impl Hasher for KeyHasher {
    #[inline]
    fn finish(&self) -> u64 {
        match self {
            KeyHasher::Empty => 0,
            KeyHasher::Int(v) => *v,
            KeyHasher::Hashing(h) => h.finish(),
        }
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        self.hashing().write(bytes);
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.int(u64::from(i));
    }
    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.int(u64::from(i));
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.int(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.int(i);
    }
    #[inline]
    fn write_u128(&mut self, i: u128) {
        // Both halves, folded: a u128 id keeps its low and high bits.
        self.int((i as u64) ^ ((i >> 64) as u64));
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.int(i as u64);
    }
}

/// Any `Hash` key, always hashed (never used as an integer): for integer
/// keys that should spread like strings do under a partitioner that uses
/// the key as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hashed<K>(pub K);

impl<K: Hash> Hash for Hashed<K> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Two writes: never taken for an integer key.
        state.write_u64(compute_hash(&self.0));
        state.write_u8(0xff);
    }
}

fn hasher() -> &'static foldhash::quality::RandomState {
    static STATE: OnceLock<foldhash::quality::RandomState> = OnceLock::new();
    STATE.get_or_init(foldhash::quality::RandomState::default)
}

/// Hashes `key` with this process's seeded hash (foldhash, seeded once
/// per process from the OS): stable within a process, unpredictable from
/// outside it.
#[inline]
pub fn compute_hash<K: Hash + ?Sized>(key: &K) -> u64 {
    hasher().hash_one(key)
}

/// A seeded 64-bit mix (a folded 64x64->128 multiply, as foldhash does):
/// spreads integer keys whose low bits are all alike.
#[inline(always)]
pub fn mix(key: u64, seed: u64) -> u64 {
    // Odd constant from the fractional digits of pi (as in foldhash).
    const K: u64 = 0x243f_6a88_85a3_08d3;
    let full = ((key ^ seed) as u128).wrapping_mul(K as u128);
    (full as u64) ^ ((full >> 64) as u64)
}

/// A full-avalanche 64-bit finaliser (splitmix64's): every input bit
/// flips each output bit with probability about 1/2. Consistent hashing
/// needs this for its ring points, which are built from small sequential
/// numbers that one multiply does not spread evenly.
#[inline]
pub fn avalanche(mut z: u64) -> u64 {
    // Constants from Steele, Lea and Flood, "Fast splittable pseudorandom
    // number generators" (OOPSLA 2014).
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Maps `hash` onto `0..n` with one multiply (Lemire's fast range
/// reduction): uses the high bits, which a multiplicative mix fills best,
/// and needs no division.
#[inline(always)]
pub fn reduce(hash: u64, n: usize) -> usize {
    ((hash as u128 * n as u128) >> 64) as usize
}

/// Maps a partition key to the index of the worker that owns it.
///
/// `key` is the key's [`PartitionKey`]: the integer itself for integer
/// keys (so that ranges mean something), a seeded hash otherwise; a
/// partitioner that wants to spread sequential integers hashes them
/// itself, as [`HashPartitioner`] does. An answer of `workers` or more
/// means "no owner".
pub trait Partitioner: Send + Sync {
    /// The owning worker's index for partition key `key` among `workers`
    /// workers.
    fn owner(&self, key: u64, workers: usize) -> usize;
}

/// Partitions any [`PartitionKey`] directly.
pub trait PartitionerExt: Partitioner {
    /// The owning worker's index for `key` among `workers` workers.
    #[inline]
    fn partition<K: PartitionKey + ?Sized>(&self, key: &K, workers: usize) -> usize {
        self.owner(key.partition_key(), workers)
    }
}

impl<P: Partitioner + ?Sized> PartitionerExt for P {}

/// Same key, same worker: a seeded mix and a range reduction.
#[derive(Debug, Clone, Copy)]
pub struct HashPartitioner {
    seed: u64,
}

impl HashPartitioner {
    /// With this process's random seed.
    pub fn new() -> Self {
        HashPartitioner {
            seed: compute_hash(&0u64),
        }
    }

    /// With a fixed seed: the same mapping in every process (for
    /// reproducible tests, or mappings shared between machines).
    pub fn with_seed(seed: u64) -> Self {
        HashPartitioner { seed }
    }
}

impl Default for HashPartitioner {
    fn default() -> Self {
        Self::new()
    }
}

impl Partitioner for HashPartitioner {
    #[inline(always)]
    fn owner(&self, key: u64, workers: usize) -> usize {
        if workers == 0 {
            return 0;
        }
        reduce(mix(key, self.seed), workers)
    }
}

/// Ordered ranges: with boundaries `[b0, b1, …]`, keys below `b0` go to
/// worker 0, keys in `b0..b1` to worker 1, and keys at or above the last
/// boundary to worker `boundaries.len()`. Keys are integers compared as
/// `u64` (signed integers are compared by their two's-complement bits: use
/// unsigned keys, or offset them).
#[derive(Debug, Clone)]
pub struct RangePartitioner {
    boundaries: Vec<u64>,
}

impl RangePartitioner {
    /// Boundaries must be strictly increasing; `n` workers need `n - 1`.
    ///
    /// # Errors
    /// [`crate::Error::Config`] when they are not strictly increasing.
    pub fn new(boundaries: Vec<u64>) -> crate::Result<Self> {
        if let Some(w) = boundaries.windows(2).find(|w| w[0] >= w[1]) {
            return Err(crate::Error::Config(format!(
                "range boundaries must increase strictly: {} then {}",
                w[0], w[1]
            )));
        }
        Ok(RangePartitioner { boundaries })
    }

    /// Workers this table has ranges for.
    pub fn workers(&self) -> usize {
        self.boundaries.len() + 1
    }
}

impl Partitioner for RangePartitioner {
    #[inline]
    fn owner(&self, key: u64, _workers: usize) -> usize {
        // The answer may exceed the pool's size: the pool refuses it.
        self.boundaries.partition_point(|&b| b <= key)
    }
}

/// A ring of virtual nodes: each worker owns `virtual_nodes` points on a
/// 64-bit ring and a key belongs to the first point at or after its mixed
/// value. Adding or removing one worker of `n` moves about `1/n` of the
/// keys, all to or from that worker.
#[derive(Debug, Clone)]
pub struct ConsistentHashPartitioner {
    virtual_nodes: usize,
    seed: u64,
    /// Sorted by point.
    ring: Vec<(u64, u32)>,
}

impl ConsistentHashPartitioner {
    /// Workers `0..workers`, each with `virtual_nodes` points (100–200 give
    /// a spread within a few percent). The seed is fixed so that the ring
    /// is the same in every process.
    pub fn new(workers: usize, virtual_nodes: usize) -> Self {
        let mut p = ConsistentHashPartitioner {
            virtual_nodes,
            seed: 0x5eed_c0de_5eed_c0de,
            ring: Vec::new(),
        };
        for w in 0..workers {
            p.add_worker(w);
        }
        p
    }

    fn point(&self, worker: usize, vnode: usize) -> u64 {
        avalanche(avalanche(worker as u64 ^ self.seed) ^ vnode as u64)
    }

    /// Adds worker `id`'s points (no-op if present).
    pub fn add_worker(&mut self, id: usize) {
        if self.ring.iter().any(|&(_, w)| w as usize == id) {
            return;
        }
        for v in 0..self.virtual_nodes {
            let p = self.point(id, v);
            let at = self.ring.partition_point(|&(q, _)| q < p);
            self.ring.insert(at, (p, id as u32));
        }
    }

    /// Removes worker `id`'s points.
    pub fn remove_worker(&mut self, id: usize) {
        self.ring.retain(|&(_, w)| w as usize != id);
    }

    /// Workers on the ring.
    pub fn num_workers(&self) -> usize {
        let mut ids: Vec<u32> = self.ring.iter().map(|&(_, w)| w).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    }
}

impl Partitioner for ConsistentHashPartitioner {
    #[inline]
    fn owner(&self, key: u64, _workers: usize) -> usize {
        if self.ring.is_empty() {
            return usize::MAX;
        }
        let h = avalanche(key ^ self.seed.rotate_left(32));
        let i = self.ring.partition_point(|&(p, _)| p < h);
        self.ring[if i == self.ring.len() { 0 } else { i }].1 as usize
    }
}

/// Ignores the key: 0, 1, …, n-1, 0, … in order of calls (shared by every
/// sender, so concurrent senders interleave).
#[derive(Debug, Default)]
pub struct RoundRobinPartitioner {
    next: AtomicUsize,
}

impl RoundRobinPartitioner {
    /// Starting at worker 0.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Partitioner for RoundRobinPartitioner {
    #[inline]
    fn owner(&self, _key: u64, workers: usize) -> usize {
        if workers == 0 {
            return 0;
        }
        // Relaxed: only the count matters.
        self.next.fetch_add(1, Ordering::Relaxed) % workers
    }
}

/// Your own mapping from `(hash, workers)` to a worker index, as the
/// original design has it: the closure gets a well-mixed 64-bit hash of
/// the key (the partition key passed through [`avalanche`], so sequential
/// integer keys spread too). For the key itself, implement [`Partitioner`].
pub struct CustomPartitioner<F> {
    f: F,
}

impl<F: Fn(u64, usize) -> usize + Send + Sync> CustomPartitioner<F> {
    /// Wraps `f`.
    pub fn new(f: F) -> Self {
        CustomPartitioner { f }
    }
}

impl<F> std::fmt::Debug for CustomPartitioner<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CustomPartitioner")
    }
}

impl<F: Fn(u64, usize) -> usize + Send + Sync> Partitioner for CustomPartitioner<F> {
    #[inline]
    fn owner(&self, key: u64, workers: usize) -> usize {
        (self.f)(avalanche(key), workers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_and_in_range() {
        let p = HashPartitioner::new();
        for n in [1, 2, 3, 7, 16] {
            for k in 0..1000u64 {
                let w = p.partition(&k, n);
                assert!(w < n);
                assert_eq!(w, p.partition(&k, n));
            }
        }
        assert_eq!(
            p.partition("user-1", 4),
            p.partition(&String::from("user-1"), 4)
        );
        let fixed = HashPartitioner::with_seed(7);
        assert_eq!(
            fixed.partition(&42u32, 8),
            HashPartitioner::with_seed(7).partition(&42u64, 8)
        );
    }

    #[test]
    fn hash_spreads_sequential_and_strided_keys() {
        let p = HashPartitioner::new();
        for stride in [1u64, 64, 4096, 1 << 32] {
            let mut counts = [0usize; 8];
            for k in 0..80_000u64 {
                counts[p.partition(&(k * stride), 8)] += 1;
            }
            for c in counts {
                assert!((9_000..11_000).contains(&c), "stride {stride}: {counts:?}");
            }
        }
    }

    #[test]
    fn ranges() {
        let p = RangePartitioner::new(vec![10, 20]).unwrap();
        assert_eq!(p.workers(), 3);
        assert_eq!(p.partition(&0u32, 3), 0);
        assert_eq!(p.partition(&9u32, 3), 0);
        assert_eq!(p.partition(&10u32, 3), 1);
        assert_eq!(p.partition(&19u32, 3), 1);
        assert_eq!(p.partition(&20u32, 3), 2);
        assert_eq!(p.partition(&u64::MAX, 3), 2);
        // More ranges than workers: an index that is not a worker.
        assert_eq!(p.partition(&25u32, 2), 2);
        assert!(RangePartitioner::new(vec![5, 5]).is_err());
        assert!(RangePartitioner::new(vec![6, 5]).is_err());
    }

    #[test]
    fn consistent_hash_moves_about_one_nth_of_the_keys() {
        const KEYS: u64 = 100_000;
        let before = ConsistentHashPartitioner::new(8, 160);
        let mut after = before.clone();
        after.add_worker(8);
        let moved = (0..KEYS)
            .filter(|k| before.partition(k, 8) != after.partition(k, 9))
            .count();
        // Ideal: 1/9 of the keys, all to the new worker.
        let ideal = KEYS as f64 / 9.0;
        assert!(
            (moved as f64 - ideal).abs() < ideal * 0.25,
            "moved {moved}, ideal {ideal}"
        );
        assert!((0..KEYS).all(|k| {
            let (a, b) = (before.partition(&k, 8), after.partition(&k, 9));
            a == b || b == 8
        }));

        let mut fewer = before.clone();
        fewer.remove_worker(3);
        assert_eq!(fewer.num_workers(), 7);
        let moved = (0..KEYS)
            .filter(|k| before.partition(k, 8) != fewer.partition(k, 8))
            .count();
        let ideal = KEYS as f64 / 8.0;
        assert!(
            (moved as f64 - ideal).abs() < ideal * 0.25,
            "moved {moved}, ideal {ideal}"
        );
        assert!(
            (0..KEYS).all(|k| before.partition(&k, 8) == 3
                || before.partition(&k, 8) == fewer.partition(&k, 8))
        );

        // The spread over workers is even within the virtual-node noise.
        let mut counts = [0usize; 8];
        for k in 0..KEYS {
            counts[before.partition(&k, 8)] += 1;
        }
        assert!(
            counts
                .iter()
                .all(|&c| (c as f64 - KEYS as f64 / 8.0).abs() < KEYS as f64 / 8.0 * 0.3),
            "{counts:?}"
        );

        let empty = ConsistentHashPartitioner::new(0, 10);
        assert_eq!(empty.partition(&1u8, 4), usize::MAX, "no owner");
    }

    #[test]
    fn round_robin_and_custom() {
        let p = RoundRobinPartitioner::new();
        let got: Vec<usize> = (0..7).map(|_| p.partition("any", 3)).collect();
        assert_eq!(got, [0, 1, 2, 0, 1, 2, 0]);
        // The closure sees a hash of the key, as the original design's
        // did: sequential keys spread instead of striping.
        let c = CustomPartitioner::new(|h, n| (h % n as u64) as usize);
        assert_eq!(c.partition(&10u64, 4), (avalanche(10) % 4) as usize);
        let dynp: &dyn Partitioner = &c;
        assert_eq!(dynp.partition(&11u64, 4), (avalanche(11) % 4) as usize);
        let mut seen = [0u32; 4];
        for k in 0..4000u64 {
            seen[c.partition(&k, 4)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 800), "{seen:?}");
    }

    #[test]
    fn any_hash_key_partitions() {
        #[derive(Hash)]
        struct UserId(u64);
        #[derive(Hash)]
        struct Pair(u32, u32);
        assert_eq!(
            UserId(42).partition_key(),
            42,
            "a newtype id is its integer"
        );
        assert_eq!(42u8.partition_key(), 42);
        assert_eq!('a'.partition_key(), 97);
        assert_eq!((&&7usize).partition_key(), 7);
        assert_eq!(
            Pair(1, 2).partition_key(),
            Pair(1, 2).partition_key(),
            "stable within a process"
        );
        assert_ne!(Pair(1, 2).partition_key(), Pair(2, 1).partition_key());
        assert_ne!(Hashed(5u64).partition_key(), 5, "Hashed always hashes");
        assert_eq!(
            "user-1".partition_key(),
            String::from("user-1").partition_key()
        );
        assert_eq!(b"ab"[..].partition_key(), b"ab".to_vec().partition_key());
        let r = RangePartitioner::new(vec![10, 20]).unwrap();
        assert_eq!(r.partition(&UserId(15), 3), 1);
    }
}
