//! Buffers and lifetime on the Vulkan device: zero-copy import of hugepage
//! memory, the staging fallback and when it is taken, several submissions
//! in flight with timeline semaphores and with fences, refusals that hand
//! the buffers back, and a drop with work in flight that returns every mbuf
//! to its pool.

use dataplane::accel::{
    self, BackendChoice, BufferPath, Buffers, Completion, Kernel, Kernels, Payload, Queue,
    QueueConfig, SubmitError, SyncMode,
};
use dataplane::require::{self, Capability};
use dataplane_tests::available_or_skip;
use hugepages::mbuf::{Mbuf, MbufPool, MbufPoolConfig};
use hugepages::region::{PageSize, Region};
use std::sync::Arc;

fn vulkan<P: Payload>(config: QueueConfig) -> Option<Queue<P>> {
    let probe = accel::probe();
    if !available_or_skip(Capability::Vulkan, probe.available, &probe.reason) {
        return None;
    }
    Some(
        Queue::open(QueueConfig {
            backend: BackendChoice::Named(accel::BackendKind::Vulkan),
            ..config
        })
        .expect("a Vulkan queue opens where the probe found a device"),
    )
}

fn no_validation_messages() {
    let m = accel::debug_messages();
    assert_eq!(m.count, 0, "validation messages: {:#?}", m.first);
}

fn pool(name: &str, count: usize) -> MbufPool {
    MbufPool::new(MbufPoolConfig {
        name: name.into(),
        count,
        cache_size: 0,
        ..MbufPoolConfig::default()
    })
    .expect("an mbuf pool")
}

fn packets(pool: &MbufPool, n: usize, seed: u8) -> Vec<Mbuf> {
    (0..n)
        .map(|i| {
            let mut m = pool.alloc().expect("free mbuf");
            let d = m.append(60 + i % 7).expect("room");
            for (k, b) in d.iter_mut().enumerate() {
                *b = (k as u8)
                    .wrapping_mul(31)
                    .wrapping_add(seed)
                    .wrapping_add(i as u8);
            }
            m
        })
        .collect()
}

fn crcs(items: &impl Payload) -> Vec<u32> {
    (0..items.item_count())
        .map(|i| accel::kernel::crc32c(items.item(i)))
        .collect()
}

fn wait_all<P: Payload>(q: &mut Queue<P>, n: usize) -> Vec<Completion<P>> {
    let mut done = Vec::new();
    while done.len() < n {
        q.poll(&mut done);
    }
    done
}

#[test]
fn hugepage_memory_is_imported_and_read_in_place() {
    let Some(mut q) = vulkan::<Vec<Mbuf>>(QueueConfig::default()) else {
        return;
    };
    let p = pool("accel_import", 512);
    let huge = p.regions().iter().all(Region::is_hugepage_backed);
    let why = format!("{:?}", p.regions().first().map(Region::backing));
    if !available_or_skip(Capability::Hugepages, huge, &why) {
        return;
    }
    let regs = q.register(p.clone()).expect("register");
    println!("{}: {regs:#?}", q.info().device);
    let ext = q.info().import.available;
    for r in &regs {
        assert!(r.hugepages);
        // lavapipe has VK_EXT_external_memory_host; a device without it
        // must say so instead.
        if ext {
            assert_eq!(r.path, BufferPath::Imported, "{}", r.reason);
        } else {
            assert_eq!(r.path, BufferPath::Staged);
            assert!(r.reason.contains("external_memory_host"), "{}", r.reason);
        }
    }
    if require::required(Capability::Vulkan)
        && accel::discover()
            .devices
            .iter()
            .any(|d| d.name.contains("llvmpipe") && d.external_memory_host_alignment.is_some())
    {
        assert!(ext, "lavapipe supports VK_EXT_external_memory_host");
    }
    // The device writes IPv4 checksums straight into the mbufs: no copy
    // in, none out.
    let mut pkts = packets(&p, 100, 1);
    for m in pkts.iter_mut() {
        let d = m.data_mut();
        d[12..14].copy_from_slice(&[0x08, 0x00]);
        d[14] = 0x45;
        d[24..26].copy_from_slice(&[0, 0]);
    }
    let want: Vec<u32> = pkts
        .iter()
        .map(|m| accel::kernel::ipv4_update(&mut m.data().to_vec()))
        .collect();
    q.submit(Kernel::Ipv4Update, Buffers::new(pkts), 2, 9)
        .map_err(|r| r.reason)
        .expect("room");
    let c = wait_all(&mut q, 1).pop().expect("one");
    assert_eq!(c.buffers.results, want);
    for (m, csum) in c.buffers.items.iter().zip(&want) {
        assert_eq!(
            u32::from(u16::from_be_bytes([m.data()[24], m.data()[25]])),
            *csum
        );
        assert_eq!(accel::kernel::ipv4_verify(m.data()), 1);
    }
    let s = q.stats();
    if ext {
        assert_eq!(c.path, BufferPath::Imported);
        assert_eq!((s.bytes_staged_in, s.bytes_staged_out), (0, 0));
        assert_eq!(
            s.bytes_in_place,
            c.buffers.items.iter().map(|m| m.len() as u64).sum::<u64>()
        );
    }
    // A whole region registers the same way.
    let region = Region::builder(2 << 20)
        .page_size(PageSize::Size2M)
        .allow_fallback(true)
        .build()
        .expect("a region");
    let regs = q.register(Arc::new(region)).expect("register");
    assert_eq!(regs.len(), 1);
    assert_eq!(
        regs[0].path == BufferPath::Imported,
        ext,
        "{}",
        regs[0].reason
    );
    no_validation_messages();
}

#[test]
fn items_outside_one_imported_region_are_staged() {
    let Some(mut q) = vulkan::<Vec<Mbuf>>(QueueConfig::default()) else {
        return;
    };
    let a = pool("accel_a", 64);
    let b = pool("accel_b", 64);
    q.register(a.clone()).expect("register");
    let ext = q.info().import.available;
    // All in `a`: in place. All in `b` (not registered): staged. Mixed:
    // staged (one binding shows one region).
    let cases = [
        (packets(&a, 10, 1), ext),
        (packets(&b, 10, 2), false),
        (
            {
                let mut v = packets(&a, 5, 3);
                v.extend(packets(&b, 5, 4));
                v
            },
            false,
        ),
    ];
    for (i, (pkts, in_place)) in cases.into_iter().enumerate() {
        let want = crcs(&pkts);
        q.submit(Kernel::Crc32c, Buffers::new(pkts), 1, i as u64)
            .map_err(|r| r.reason)
            .expect("room");
        let c = wait_all(&mut q, 1).pop().expect("one");
        assert_eq!(c.buffers.results, want);
        let path = if in_place {
            BufferPath::Imported
        } else {
            BufferPath::Staged
        };
        assert_eq!(c.path, path, "case {i}");
    }
    no_validation_messages();
}

fn in_flight_in_order(sync: SyncMode) {
    let depth = 6;
    let Some(mut q) = vulkan::<Vec<Vec<u8>>>(QueueConfig {
        depth,
        sync,
        ..QueueConfig::default()
    }) else {
        return;
    };
    println!("{}: {}", q.info().device, q.info().sync);
    let k = Kernels::new(&[Kernel::Crc32c, Kernel::PatternMatch]).expect("two");
    let mut want = Vec::new();
    let mut done = Vec::new();
    let mut results = Vec::new();
    for round in 0..5u64 {
        for t in 0..depth as u64 {
            let items: Vec<Vec<u8>> = (0..70)
                .map(|i| vec![(round + t + i) as u8; 100 + i as usize])
                .collect();
            let mut w = crcs(&items);
            w.extend(std::iter::repeat_n(0, items.len()));
            want.push(w);
            let buffers = Buffers::with_results(items, std::mem::take(&mut results));
            q.submit(k, buffers, 2, round * 100 + t)
                .map_err(|r| r.reason)
                .expect("room up to the depth");
        }
        assert_eq!(q.in_flight(), depth);
        let full = q
            .submit(k, Buffers::new(vec![vec![1]]), 1, 0)
            .expect_err("full");
        assert_eq!(full.reason, SubmitError::Full(depth));
        assert_eq!(full.buffers.items, vec![vec![1]], "handed back untouched");
        let got = wait_all(&mut q, depth);
        for (t, c) in got.into_iter().enumerate() {
            assert_eq!(c.tag, round * 100 + t as u64, "completions come in order");
            assert_eq!(c.buffers.results, want[round as usize * depth + t]);
            results = c.buffers.results;
            done.push(c.tag);
        }
    }
    assert_eq!(q.in_flight(), 0);
    assert_eq!(q.poll(&mut Vec::new()), 0);
    assert_eq!(q.stats().completed, 5 * depth as u64);
    no_validation_messages();
}

#[test]
fn several_in_flight_with_a_timeline_semaphore() {
    in_flight_in_order(SyncMode::Timeline);
}

#[test]
fn several_in_flight_with_fences() {
    in_flight_in_order(SyncMode::Fence);
}

#[test]
fn refusals_hand_the_buffers_back() {
    let Some(mut q) = vulkan::<Vec<Vec<u8>>>(QueueConfig {
        max_items: 8,
        staging_bytes: 1000,
        ..QueueConfig::default()
    }) else {
        return;
    };
    let r = q
        .submit(Kernel::Crc32c, Buffers::new(vec![vec![0u8; 10]; 9]), 1, 1)
        .expect_err("too many");
    assert!(matches!(
        r.reason,
        SubmitError::TooManyItems { items: 9, max: 8 }
    ));
    assert_eq!(r.buffers.items.len(), 9);
    let r = q
        .submit(
            Kernel::Crc32c,
            Buffers::new(vec![vec![0u8; 999], vec![1]]),
            1,
            2,
        )
        .expect_err("too large");
    assert!(
        matches!(
            r.reason,
            SubmitError::TooLarge {
                bytes: 1004,
                max: 1000
            }
        ),
        "{:?}",
        r.reason
    );
    let r = q
        .submit(Kernel::Crc32c, Buffers::new(vec![vec![0u8; 1]]), 0, 3)
        .expect_err("no workgroups");
    assert!(matches!(
        r.reason,
        SubmitError::Workgroups { needed: 1, .. }
    ));
    assert_eq!(q.stats().submitted, 0);
    // Empty submissions are fine.
    q.submit(Kernel::Crc32c, Buffers::new(Vec::new()), 0, 4)
        .map_err(|r| r.reason)
        .expect("empty");
    let c = wait_all(&mut q, 1).pop().expect("one");
    assert!(c.buffers.results.is_empty());
    no_validation_messages();
}

#[test]
fn dropping_a_queue_with_work_in_flight_returns_every_mbuf() {
    let p = pool("accel_drop", 256);
    {
        let Some(mut q) = vulkan::<Vec<Mbuf>>(QueueConfig::default()) else {
            return;
        };
        q.register(p.clone()).expect("register");
        for t in 0..4 {
            let k = Kernels::new(&[Kernel::Crc32c, Kernel::RssHash, Kernel::PatternMatch])
                .expect("three");
            q.submit(k, Buffers::new(packets(&p, 50, t as u8)), 1, t)
                .map_err(|r| r.reason)
                .expect("room");
        }
        assert_eq!(p.in_use(), 200);
        // Dropped without polling.
    }
    assert_eq!(
        p.in_use(),
        0,
        "the drop waited for the device and freed the mbufs"
    );
    no_validation_messages();
}
