//! Criterion benches of the Internet checksum (`dataplane::wire::checksum`)
//! against the textbook loop of RFC 1071 section 4.1 (16-bit words into a
//! 32-bit accumulator, folded at the end), at the sizes a data path sees:
//! an IPv4 header, a minimum frame, a TCP MSS-sized segment of the old
//! 576-byte MTU, a full frame, a jumbo frame. Every buffer starts one byte
//! past an 8-byte boundary, the unaligned case a parser meets after a
//! 14-byte Ethernet header. One element is one byte.
//!
//! Also: a router's TTL decrement with RFC 1624's incremental update
//! against summing the 20-byte header again.

use criterion::{Criterion, Throughput};
use dataplane::wire::{ChecksumMode, IpProtocol, Ipv4Address, Ipv4Packet, Ipv4Repr, checksum};
use std::hint::black_box;
use std::time::Duration;

/// RFC 1071 section 4.1's C loop, in Rust.
fn textbook(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

fn data(c: &mut Criterion) {
    // A pattern rather than zeros, so the carries happen.
    let buf: Vec<u8> = (0..9001u32).map(|i| (i * 131 + 7) as u8).collect();
    for len in [20usize, 64, 576, 1500, 9000] {
        let bytes = &buf[1..1 + len];
        assert_eq!(checksum::data(bytes), textbook(bytes));
        let mut g = c.benchmark_group(format!("checksum_{len}B"));
        g.measurement_time(Duration::from_secs(2))
            .throughput(Throughput::Bytes(len as u64));
        g.bench_function("ours", |b| b.iter(|| checksum::data(black_box(bytes))));
        g.bench_function("rfc1071_textbook", |b| {
            b.iter(|| textbook(black_box(bytes)))
        });
        g.finish();
    }
}

fn ttl(c: &mut Criterion) {
    let repr = Ipv4Repr {
        src_addr: Ipv4Address::new(192, 0, 2, 1),
        dst_addr: Ipv4Address::new(198, 51, 100, 1),
        protocol: IpProtocol::UDP,
        payload_len: 0,
        ttl: 64,
        dscp: 0,
        ecn: 0,
        ident: 0x1234,
        dont_frag: true,
        more_frags: false,
        frag_offset: 0,
    };
    let mut header = [0u8; 20];
    repr.emit(
        &mut Ipv4Packet::new_unchecked(&mut header[..]),
        ChecksumMode::Software,
    )
    .expect("20 bytes hold the header");
    let mut g = c.benchmark_group("ipv4_ttl_decrement");
    g.measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(1));
    g.bench_function("rfc1624_incremental", |b| {
        b.iter(|| {
            let mut h = black_box(header);
            let mut p = Ipv4Packet::new_unchecked(&mut h[..]);
            p.decrement_ttl_and_update_checksum();
            h
        })
    });
    g.bench_function("recompute", |b| {
        b.iter(|| {
            let mut h = black_box(header);
            let mut p = Ipv4Packet::new_unchecked(&mut h[..]);
            let ttl = p.ttl();
            p.set_ttl(ttl.wrapping_sub(1));
            p.fill_checksum();
            h
        })
    });
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    data(&mut c);
    ttl(&mut c);
    c.final_summary();
}
