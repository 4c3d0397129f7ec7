//! Every kernel on the Vulkan device (lavapipe in CI) against its CPU
//! implementation, on fresh random inputs of several sizes, through both
//! buffer paths; and proof that the comparison catches a wrong kernel.
//!
//! Without a Vulkan device these tests print `skip: <reason>`; with
//! `DATAPLANE_REQUIRE=vulkan` they fail instead. Run them once under the
//! Khronos validation layer (scripts/test.sh does): every test ends by
//! checking that no validation message was reported.

use dataplane::accel::{
    self, BackendChoice, BackendKind, BufferPath, Buffers, Completion, Kernel, Kernels,
    MICROSOFT_RSS_KEY, Params, Payload, Queue, QueueConfig,
};
use dataplane::require::Capability;
use dataplane_tests::available_or_skip;
use hugepages::mbuf::{Mbuf, MbufPool, MbufPoolConfig};
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};

/// Item counts: one, around the workgroup size (64), and a few batches.
const SIZES: [usize; 7] = [1, 7, 63, 64, 65, 130, 256];

fn vulkan<P: Payload>(config: QueueConfig) -> Option<Queue<P>> {
    let probe = accel::probe();
    if !available_or_skip(Capability::Vulkan, probe.available, &probe.reason) {
        return None;
    }
    let q = Queue::open(QueueConfig {
        backend: BackendChoice::Named(accel::BackendKind::Vulkan),
        ..config
    })
    .expect("a Vulkan queue opens where the probe found a device");
    assert_eq!(q.info().backend, BackendKind::Vulkan);
    println!("device: {} ({})", q.info().device, q.info().sync);
    Some(q)
}

fn no_validation_messages() {
    let m = accel::debug_messages();
    assert_eq!(m.count, 0, "validation messages: {:#?}", m.first);
}

fn rng() -> SmallRng {
    let seed = std::env::var("ACCEL_SEED")
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .unwrap_or_else(|| rand::rng().next_u64());
    println!("seed {seed:#x}");
    SmallRng::seed_from_u64(seed)
}

/// A frame of `len` bytes: IPv4 over Ethernet most of the time (TCP, UDP
/// or ICMP, with options, fragments and wrong checksums now and then), else
/// another ethertype or garbage; signatures planted in some.
fn frame(rng: &mut SmallRng, len: usize, params: &Params) -> Vec<u8> {
    let mut f = vec![0u8; len];
    rng.fill_bytes(&mut f);
    let kind = rng.random_range(0..10);
    if len >= 34 && kind < 8 {
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let max_ihl = ((len - 14) / 4).min(15) as u8;
        let ihl = if rng.random_bool(0.8) {
            5
        } else {
            rng.random_range(5..=max_ihl.max(5))
        };
        let version = if rng.random_bool(0.95) { 4 } else { 6 };
        f[14] = (version << 4) | ihl;
        f[20] = if rng.random_bool(0.1) { 0x20 } else { 0x40 };
        f[21] = if rng.random_bool(0.1) { 0x08 } else { 0 };
        f[23] = [6u8, 17, 1][rng.random_range(0..3)];
        if rng.random_bool(0.7) {
            let _ = accel::kernel::ipv4_update(&mut f);
        }
    } else if kind == 8 && len >= 14 {
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
    }
    let pats: Vec<&[u8]> = params.patterns().collect();
    if rng.random_bool(0.3) {
        let p = pats[rng.random_range(0..pats.len())];
        if p.len() <= len {
            let at = rng.random_range(0..=len - p.len());
            f[at..at + p.len()].copy_from_slice(p);
        }
    }
    f
}

fn lengths(rng: &mut SmallRng, n: usize, max: usize) -> Vec<usize> {
    (0..n)
        .map(|_| match rng.random_range(0..8) {
            0 => rng.random_range(0..40),
            1 => max,
            _ => rng.random_range(0..=max),
        })
        .collect()
}

/// What the CPU implementations say: kernels in order over copies of the
/// items, kernel-major, and the items as they end up.
fn reference(params: &Params, kernels: &[Kernel], items: &[Vec<u8>]) -> (Vec<u32>, Vec<Vec<u8>>) {
    let mut items = items.to_vec();
    let mut out = Vec::new();
    for &k in kernels {
        for item in items.iter_mut() {
            out.push(k.run_cpu(params, item));
        }
    }
    (out, items)
}

/// `Ok` when the device agrees with the reference, else the first
/// disagreement.
fn compare(what: &str, device: &[u32], reference: &[u32], n: usize) -> Result<(), String> {
    if device.len() != reference.len() {
        return Err(format!(
            "{what}: {} results from the device, {} expected",
            device.len(),
            reference.len()
        ));
    }
    match device.iter().zip(reference).position(|(d, r)| d != r) {
        None => Ok(()),
        Some(i) => Err(format!(
            "{what}: kernel {} item {}: device {:#010x}, reference {:#010x}",
            i / n.max(1),
            i % n.max(1),
            device[i],
            reference[i]
        )),
    }
}

fn run_one<P: Payload>(q: &mut Queue<P>, kernels: Kernels, items: P, tag: u64) -> Completion<P> {
    let n = items.item_count();
    q.submit(kernels, Buffers::new(items), accel::workgroups_for(n), tag)
        .map_err(|r| r.reason)
        .expect("an idle queue takes a submission");
    let mut done = Vec::new();
    while q.poll(&mut done) == 0 {
        std::hint::spin_loop();
    }
    let c = done.pop().expect("one completion");
    assert_eq!(c.tag, tag);
    c.status.expect("the device completes the submission");
    c
}

fn kernel_sets() -> Vec<Kernels> {
    let mut sets: Vec<Kernels> = Kernel::ALL.iter().map(|&k| Kernels::from(k)).collect();
    // The offload pipeline's three, and a writer followed by readers (the
    // readers must see what it wrote).
    sets.extend(Kernels::new(&[
        Kernel::Crc32c,
        Kernel::RssHash,
        Kernel::PatternMatch,
    ]));
    sets.extend(Kernels::new(&[
        Kernel::Ipv4Update,
        Kernel::Ipv4Verify,
        Kernel::Crc32c,
        Kernel::RssHash,
    ]));
    sets
}

#[test]
fn staged_heap_items_match_the_cpu() {
    let Some(mut q) = vulkan::<Vec<Vec<u8>>>(QueueConfig::default()) else {
        return;
    };
    let params = Params::default();
    let mut rng = rng();
    let mut tag = 0;
    for kernels in kernel_sets() {
        for n in SIZES {
            let items: Vec<Vec<u8>> = lengths(&mut rng, n, 1600)
                .into_iter()
                .map(|len| frame(&mut rng, len, &params))
                .collect();
            let (want, want_items) = reference(&params, kernels.as_slice(), &items);
            tag += 1;
            let c = run_one(&mut q, kernels, items, tag);
            assert_eq!(c.path, BufferPath::Staged, "heap memory is not registered");
            let what = format!("{kernels:?} x {n}");
            if let Err(e) = compare(&what, &c.buffers.results, &want, n) {
                panic!("{e}");
            }
            assert_eq!(
                c.buffers.items, want_items,
                "{what}: items after the kernels"
            );
        }
    }
    assert!(q.stats().bytes_staged_in > 0);
    no_validation_messages();
}

fn mbuf_pool(name: &str) -> MbufPool {
    MbufPool::new(MbufPoolConfig {
        name: name.into(),
        count: 1024,
        cache_size: 0,
        ..MbufPoolConfig::default()
    })
    .expect("an mbuf pool (4 KiB pages if no hugepages)")
}

fn fill(pool: &MbufPool, frames: &[Vec<u8>]) -> Vec<Mbuf> {
    frames
        .iter()
        .map(|f| {
            let mut m = pool.alloc().expect("a free mbuf");
            m.append(f.len()).expect("room").copy_from_slice(f);
            m
        })
        .collect()
}

#[test]
fn imported_mbufs_match_the_cpu_in_place() {
    let Some(mut q) = vulkan::<Vec<Mbuf>>(QueueConfig::default()) else {
        return;
    };
    let pool = mbuf_pool("accel_kernels");
    let regs = q.register(pool.clone()).expect("registering");
    println!("{regs:#?}");
    let import = q.info().import.available;
    let params = Params::default();
    let mut rng = rng();
    let mut tag = 0;
    for kernels in kernel_sets() {
        for n in SIZES {
            let frames: Vec<Vec<u8>> = lengths(&mut rng, n, 2000)
                .into_iter()
                .map(|len| frame(&mut rng, len, &params))
                .collect();
            let (want, want_items) = reference(&params, kernels.as_slice(), &frames);
            tag += 1;
            let c = run_one(&mut q, kernels, fill(&pool, &frames), tag);
            let expected = if import {
                BufferPath::Imported
            } else {
                BufferPath::Staged
            };
            assert_eq!(c.path, expected, "{regs:?}");
            let what = format!("{kernels:?} x {n} ({:?})", c.path);
            if let Err(e) = compare(&what, &c.buffers.results, &want, n) {
                panic!("{e}");
            }
            let after: Vec<Vec<u8>> = c.buffers.items.iter().map(|m| m.data().to_vec()).collect();
            assert_eq!(after, want_items, "{what}: the mbufs after the kernels");
        }
        // A batch of one empty frame reads nothing, and is reported in
        // place all the same when the pool is imported.
        tag += 1;
        let c = run_one(&mut q, kernels, fill(&pool, &[Vec::new()]), tag);
        let expected = if import {
            BufferPath::Imported
        } else {
            BufferPath::Staged
        };
        assert_eq!(c.path, expected, "an empty frame");
    }
    if import {
        let s = q.stats();
        assert_eq!(s.staged, 0);
        assert_eq!(s.bytes_staged_in, 0, "imported items are never copied");
        assert!(s.bytes_in_place > 0);
    }
    drop(q);
    assert_eq!(pool.in_use(), 0, "every mbuf back in its pool");
    no_validation_messages();
}

#[test]
fn blocks_of_odd_sizes_match_the_cpu() {
    use hugepages::mempool::{DmaBuf, Mempool, MempoolConfig};
    let Some(mut q) = vulkan::<Vec<DmaBuf>>(QueueConfig {
        max_items: 64,
        staging_bytes: 4 << 20,
        ..QueueConfig::default()
    }) else {
        return;
    };
    let mut rng = rng();
    for elt in [1, 4093, 9000] {
        let pool =
            Mempool::new(MempoolConfig::new(format!("blocks{elt}"), 64, elt)).expect("a mempool");
        let regs = q.register(pool.clone()).expect("registering");
        for n in [1, 33, 64] {
            let mut bufs: Vec<DmaBuf> = (0..n).map(|_| pool.alloc_buf().expect("free")).collect();
            for b in bufs.iter_mut() {
                rng.fill_bytes(b);
            }
            let want: Vec<u32> = bufs.iter().map(|b| accel::kernel::crc32c(b)).collect();
            let c = run_one(&mut q, Kernel::Crc32c.into(), bufs, n as u64);
            if let Err(e) = compare(
                &format!("crc32c of {n} x {elt} B"),
                &c.buffers.results,
                &want,
                n,
            ) {
                panic!("{e} ({regs:?})");
            }
        }
    }
    no_validation_messages();
}

#[test]
fn microsoft_rss_vectors_on_the_device() {
    let Some(mut q) = vulkan::<Vec<Vec<u8>>>(QueueConfig::default()) else {
        return;
    };
    let mut items = Vec::new();
    let mut want = Vec::new();
    for v in dataplane::wire::rss::MICROSOFT_RSS_VECTORS {
        let ((dst, dport), (src, sport)) = (v.dst, v.src);
        let (ip, tcp) = (v.ip_hash, v.tcp_hash);
        for (proto, hash) in [(6u8, tcp), (1, ip)] {
            let mut f = vec![0u8; 54];
            f[12..14].copy_from_slice(&[0x08, 0x00]);
            f[14] = 0x45;
            f[23] = proto;
            f[26..30].copy_from_slice(&src);
            f[30..34].copy_from_slice(&dst);
            f[34..36].copy_from_slice(&sport.to_be_bytes());
            f[36..38].copy_from_slice(&dport.to_be_bytes());
            items.push(f);
            want.push(hash);
        }
    }
    let n = items.len();
    let c = run_one(&mut q, Kernel::RssHash.into(), items, 1);
    if let Err(e) = compare("Microsoft RSS vectors", &c.buffers.results, &want, n) {
        panic!("{e}");
    }
    no_validation_messages();
}

#[test]
fn a_wrong_kernel_fails_the_comparison() {
    let Some(mut q) = vulkan::<Vec<Vec<u8>>>(QueueConfig::default()) else {
        return;
    };
    let mut rng = rng();
    let params = Params::default();
    let items: Vec<Vec<u8>> = (0..65).map(|_| frame(&mut rng, 200, &params)).collect();
    // CRC32C on the device, held to a near miss: the IEEE CRC-32 (another
    // polynomial, same structure).
    let crc32_ieee = |b: &[u8]| {
        !b.iter().fold(!0u32, |mut c, &x| {
            c ^= u32::from(x);
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0xedb8_8320
                } else {
                    c >> 1
                };
            }
            c
        })
    };
    let wrong: Vec<u32> = items.iter().map(|i| crc32_ieee(i)).collect();
    let c = run_one(&mut q, Kernel::Crc32c.into(), items.clone(), 1);
    let err = compare("crc32c vs crc32", &c.buffers.results, &wrong, 65)
        .expect_err("a different CRC must not compare equal");
    println!("caught: {err}");
    // The right reference passes on the same output.
    let (right, _) = reference(&params, &[Kernel::Crc32c], &items);
    assert_eq!(compare("crc32c", &c.buffers.results, &right, 65), Ok(()));

    // RSS with the Microsoft key on the device, held to another key.
    let mut other = MICROSOFT_RSS_KEY;
    other[4] ^= 0xff;
    let wrong_params =
        Params::new(other, &params.patterns().collect::<Vec<_>>()).expect("valid params");
    let (wrong, _) = reference(&wrong_params, &[Kernel::RssHash], &items);
    let c = run_one(&mut q, Kernel::RssHash.into(), items, 2);
    assert!(compare("rss under another key", &c.buffers.results, &wrong, 65).is_err());
    no_validation_messages();
}
