//! Criterion benches of the DIR-24-8 LPM (`dataplane::net::lpm::Lpm4`),
//! one thread, so that elements per second are lookups per second per
//! core.
//!
//! The table is shaped like a slice of a BGP table: 4,000 random prefixes
//! with the length mix of the Internet's IPv4 routes (about 60% /24, 30%
//! /16 to /23, 5% /8 to /15, 5% longer than /24, which need tbl8 groups),
//! and a default route. Addresses are random over the whole space (each
//! lookup touches a random line of the 64 MiB first table: the cache-miss
//! case, as a router facing the Internet sees) and, separately, drawn from
//! the table's own prefixes (hits, a tenth of them in tbl8 groups).
//!
//! Lookups run one at a time (`lookup`) and in bursts of 32 (`lookup_burst`,
//! as l3fwd does: all first-table loads issued before any second one).

use criterion::{Criterion, Throughput};
use dataplane::net::lpm::Lpm4;
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Duration;

/// Routes in the table.
const ROUTES: usize = 4000;
/// Addresses looked up per iteration: 4 Mi, so that the random ones touch
/// 4 Mi lines of the 64 MiB first table and no cache holds them between
/// iterations (16 Ki addresses touch 1 MiB, which L2/L3 keep, and measured
/// 500 M lookups/s: the cache, not the table). The array itself (16 MiB)
/// is read in order, which the prefetchers hide.
const ADDRS: usize = 4 << 20;
/// l3fwd's burst (DPDK's MAX_PKT_BURST).
const BURST: usize = 32;

/// xorshift64*: reproducible, and no dependency for a few random numbers.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn prefix_len(r: &mut Rng) -> u8 {
    match r.next() % 100 {
        0..=59 => 24,
        60..=89 => 16 + (r.next() % 8) as u8,
        90..=94 => 8 + (r.next() % 8) as u8,
        _ => 25 + (r.next() % 8) as u8,
    }
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

/// The table and its prefixes.
fn table(r: &mut Rng) -> (Lpm4, Vec<(u32, u8)>) {
    let mut prefixes = Vec::with_capacity(ROUTES);
    while prefixes.len() < ROUTES {
        let len = prefix_len(r);
        let p = (r.next() as u32) & mask(len);
        if !prefixes.contains(&(p, len)) {
            prefixes.push((p, len));
        }
    }
    let longer = prefixes.iter().filter(|(_, l)| *l > 24).count();
    let mut lpm = Lpm4::new(longer).expect("the LPM's first table");
    for (i, &(p, len)) in prefixes.iter().enumerate() {
        lpm.add(Ipv4Addr::from(p), len, (i % 256) as u32)
            .expect("a route");
    }
    lpm.add(Ipv4Addr::UNSPECIFIED, 0, 999).expect("the default");
    (lpm, prefixes)
}

fn lookups(c: &mut Criterion) {
    let mut r = Rng(0x5eed_1e55_c0ff_ee01);
    let (lpm, prefixes) = table(&mut r);
    let uniform: Vec<u32> = (0..ADDRS).map(|_| r.next() as u32).collect();
    let in_table: Vec<u32> = (0..ADDRS)
        .map(|_| {
            let (p, len) = prefixes[(r.next() % prefixes.len() as u64) as usize];
            p | (r.next() as u32 & !mask(len))
        })
        .collect();
    eprintln!(
        "lpm: {ROUTES} routes + default, {} with tbl8 groups, first table on {}",
        prefixes.iter().filter(|(_, l)| *l > 24).count(),
        if lpm.on_hugepages() {
            "hugepages"
        } else {
            "4 KiB pages"
        }
    );
    for (name, addrs) in [("random", &uniform), ("in_table", &in_table)] {
        // Every lookup must hit (the default catches the rest).
        assert!(addrs.iter().all(|&a| lpm.lookup(a).is_some()));
        let mut g = c.benchmark_group(format!("lpm_{name}"));
        g.sample_size(10)
            .measurement_time(Duration::from_secs(3))
            .throughput(Throughput::Elements(ADDRS as u64));
        g.bench_function("lookup", |b| {
            b.iter(|| {
                let mut acc = 0u32;
                for &a in addrs.iter() {
                    acc = acc.wrapping_add(lpm.lookup(black_box(a)).unwrap_or(0));
                }
                acc
            })
        });
        g.bench_function("lookup_burst32", |b| {
            let mut hops = [0u32; BURST];
            b.iter(|| {
                let mut acc = 0u64;
                for chunk in addrs.chunks_exact(BURST) {
                    acc ^= lpm.lookup_burst(black_box(chunk), &mut hops);
                    acc = acc.wrapping_add(u64::from(hops[BURST - 1]));
                }
                acc
            })
        });
        g.finish();
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    lookups(&mut c);
    c.final_summary();
}
