use super::*;
use crate::slot;
use crate::test_support::{Capability, skip};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

fn pool(count: usize, cache_size: usize) -> MbufPool {
    MbufPool::new(MbufPoolConfig {
        name: "mbufs".into(),
        count,
        cache_size,
        priv_size: 16,
        page_size: PageSize::Size4K,
        ..MbufPoolConfig::default()
    })
    .unwrap()
}

fn assert_all_back(p: &MbufPool) {
    assert_eq!(p.available(), p.capacity(), "mbufs leaked");
    assert_eq!(p.in_use(), 0);
}

#[test]
fn native_tag_can_never_be_a_dpdk_priv_size() {
    assert_ne!(NATIVE_PRIV_SIZE_TAG as usize % MBUF_PRIV_ALIGN, 0);
    assert_eq!(size_of::<MbufHeader>(), 128);
    assert_eq!(align_of::<MbufHeader>(), 64);
}

/// Compiles a C program against the installed DPDK headers and compares
/// every offset with ours (the const assertions pin them; this checks the
/// numbers in those assertions against the real header).
#[test]
#[cfg_attr(miri, ignore)] // runs a compiler
fn layout_matches_installed_rte_mbuf() {
    let cflags = match std::process::Command::new("pkg-config")
        .args(["--cflags", "libdpdk"])
        .output()
    {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        _ => {
            skip(
                Capability::Dpdk,
                "libdpdk-dev (pkg-config libdpdk) not installed",
            );
            return;
        }
    };
    let fields = [
        ("buf_addr", offset_of!(MbufHeader, buf_addr)),
        ("buf_iova", offset_of!(MbufHeader, buf_iova)),
        ("data_off", offset_of!(MbufHeader, data_off)),
        ("refcnt", offset_of!(MbufHeader, refcnt)),
        ("nb_segs", offset_of!(MbufHeader, nb_segs)),
        ("port", offset_of!(MbufHeader, port)),
        ("ol_flags", offset_of!(MbufHeader, ol_flags)),
        ("packet_type", offset_of!(MbufHeader, packet_type)),
        ("pkt_len", offset_of!(MbufHeader, pkt_len)),
        ("data_len", offset_of!(MbufHeader, data_len)),
        ("vlan_tci", offset_of!(MbufHeader, vlan_tci)),
        ("hash", offset_of!(MbufHeader, hash)),
        ("vlan_tci_outer", offset_of!(MbufHeader, vlan_tci_outer)),
        ("buf_len", offset_of!(MbufHeader, buf_len)),
        ("pool", offset_of!(MbufHeader, pool)),
        ("next", offset_of!(MbufHeader, next)),
        ("tx_offload", offset_of!(MbufHeader, tx_offload)),
        ("shinfo", offset_of!(MbufHeader, shinfo)),
        ("priv_size", offset_of!(MbufHeader, priv_size)),
        ("timesync", offset_of!(MbufHeader, timesync)),
        ("dynfield1", offset_of!(MbufHeader, dynfield1)),
    ];
    let mut c = String::from(
        "#include <stdio.h>\n#include <stddef.h>\n#include <rte_mbuf_core.h>\nint main(void) {\n",
    );
    c += "printf(\"size %zu\\n\", sizeof(struct rte_mbuf));\n";
    for (f, _) in &fields {
        c += &format!("printf(\"{f} %zu\\n\", offsetof(struct rte_mbuf, {f}));\n");
    }
    c += "return 0; }\n";
    let dir = std::env::temp_dir().join(format!("dataplane-mbuf-layout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("layout.c"), c).unwrap();
    let exe = dir.join("layout");
    let built = std::process::Command::new("cc")
        .args(cflags.split_whitespace())
        .arg(dir.join("layout.c"))
        .arg("-o")
        .arg(&exe)
        .output();
    match built {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            let _ = std::fs::remove_dir_all(&dir);
            let why = String::from_utf8_lossy(&o.stderr);
            skip(
                Capability::Dpdk,
                &format!(
                    "cannot compile against rte_mbuf_core.h: {}",
                    why.lines().next().unwrap_or("")
                ),
            );
            return;
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            skip(Capability::Dpdk, &format!("no C compiler: {e}"));
            return;
        }
    }
    let out = std::process::Command::new(&exe).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let out = String::from_utf8(out.stdout).unwrap();
    let c_offsets: std::collections::HashMap<&str, usize> = out
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k, v.parse().unwrap()))
        .collect();
    assert_eq!(c_offsets["size"], size_of::<MbufHeader>());
    for (f, ours) in fields {
        assert_eq!(c_offsets[f], ours, "offset of {f}");
    }
}

#[test]
fn refuses_bad_configuration() {
    let refused = |c: MbufPoolConfig, what: &str| match MbufPool::new(c) {
        Err(Error::Config(msg)) => assert!(msg.contains(what), "{msg:?} lacks {what:?}"),
        other => panic!("expected a refusal about {what}, got {other:?}"),
    };
    let base = MbufPoolConfig {
        count: 64,
        cache_size: 0,
        ..MbufPoolConfig::default()
    };
    refused(
        MbufPoolConfig {
            data_room: 70_000,
            ..base.clone()
        },
        "data_room",
    );
    for priv_size in [7, 65_536, 12] {
        refused(
            MbufPoolConfig {
                priv_size,
                ..base.clone()
            },
            "priv_size",
        );
    }
    refused(
        MbufPoolConfig {
            count: 0,
            ..base.clone()
        },
        "count",
    );
}

#[test]
fn headers_are_initialised_like_rte_pktmbuf_pool_create() {
    let p = pool(64, 8);
    assert_eq!(p.data_room(), MBUF_DEFAULT_BUF_SIZE);
    assert_eq!(p.priv_size(), 16);
    let m = p.alloc().unwrap();
    let h = m.header();
    let obj = m.as_ptr().as_ptr().cast::<u8>();
    assert_eq!(h.buf_addr, obj.wrapping_add(128 + 16));
    assert_eq!(h.buf_len as usize, MBUF_DEFAULT_BUF_SIZE);
    assert_eq!(h.refcnt, 1);
    assert_eq!(h.nb_segs, 1);
    assert!(h.next.is_null());
    assert_eq!(h.priv_size, NATIVE_PRIV_SIZE_TAG);
    assert_eq!(h.port, MBUF_PORT_INVALID);
    assert!(m.is_native());
    assert!(m.is_empty());
    assert_eq!(m.pkt_len(), 0);
    assert_eq!(m.headroom(), PKTMBUF_HEADROOM);
    assert_eq!(m.tailroom(), MBUF_DEFAULT_BUF_SIZE - PKTMBUF_HEADROOM);
    assert_eq!(m.buf_len(), MBUF_DEFAULT_BUF_SIZE);
    assert_eq!(m.priv_area().len(), 16);
    let data = h.buf_addr.wrapping_add(PKTMBUF_HEADROOM);
    assert_eq!(m.data_iova(), p.pool.iova_of(data).unwrap());
    assert_eq!(m.data().as_ptr(), data.cast_const());
    drop(m);
    assert_all_back(&p);
}

#[test]
fn mutators_at_and_past_their_bounds() {
    let p = pool(8, 0);
    let mut m = p.alloc().unwrap();
    let (head, tail) = (m.headroom(), m.tailroom());

    // append: exactly the tailroom works, one more does not.
    m.append(tail - 10).unwrap().fill(b'a');
    assert_eq!(
        m.append(11),
        Err(MbufError::NoTailroom {
            requested: 11,
            available: 10
        })
    );
    m.append(10).unwrap().fill(b'b');
    assert_eq!(m.tailroom(), 0);
    assert!(m.append(1).is_err());
    assert!(m.append(usize::MAX).is_err());
    assert_eq!(m.len(), tail);
    assert_eq!(m.pkt_len(), tail);
    assert_eq!(m.data()[tail - 1], b'b');

    // prepend: exactly the headroom works, one more does not.
    assert_eq!(
        m.prepend(head + 1),
        Err(MbufError::NoHeadroom {
            requested: head + 1,
            available: head
        })
    );
    m.prepend(head).unwrap().fill(b'h');
    assert_eq!(m.headroom(), 0);
    assert!(m.prepend(1).is_err());
    assert!(m.prepend(usize::MAX).is_err());
    assert_eq!(m.len(), m.buf_len());
    assert_eq!(m.data()[0], b'h');
    assert_eq!(m.data_iova(), Iova(m.header().buf_iova));

    // adj and trim: up to the length, not past it.
    let len = m.len();
    assert_eq!(
        m.adj(len + 1),
        Err(MbufError::TooShort {
            requested: len + 1,
            len
        })
    );
    assert!(m.trim(len + 1).is_err());
    assert!(m.trim(usize::MAX).is_err());
    m.adj(head).unwrap();
    assert_eq!(m.data()[0], b'a');
    assert_eq!(m.headroom(), head);
    m.trim(10).unwrap();
    assert_eq!(m.data()[m.len() - 1], b'a');
    m.adj(m.len()).unwrap();
    assert!(m.is_empty());
    assert_eq!(m.pkt_len(), 0);
    assert!(m.adj(1).is_err());
    assert!(m.trim(1).is_err());
    m.trim(0).unwrap();

    // set_len: within the buffer after the headroom.
    let max = m.buf_len() - m.headroom();
    assert_eq!(
        m.set_len(max + 1),
        Err(MbufError::ExceedsBuffer {
            requested: max + 1,
            max
        })
    );
    m.set_len(max).unwrap();
    assert_eq!((m.len(), m.pkt_len(), m.tailroom()), (max, max, 0));
    m.set_len(0).unwrap();
    assert!(m.set_len(usize::MAX).is_err());
    assert!(
        !MbufError::TooShort {
            requested: 1,
            len: 0
        }
        .to_string()
        .is_empty()
    );

    // The accessors round-trip.
    m.set_port(3);
    m.set_rss_hash(0xdead_beef);
    m.set_ol_flags(MBUF_F_EXTERNAL | 1);
    m.set_packet_type(0x11);
    m.set_vlan_tci(42);
    m.priv_area_mut().fill(9);
    assert_eq!(
        (
            m.port(),
            m.rss_hash(),
            m.ol_flags(),
            m.packet_type(),
            m.vlan_tci()
        ),
        (3, 0xdead_beef, MBUF_F_EXTERNAL | 1, 0x11, 42)
    );
    m.append(5).unwrap();
    m.reset();
    // rte_pktmbuf_reset keeps the hash and the external flag only.
    assert_eq!(
        (
            m.port(),
            m.rss_hash(),
            m.ol_flags(),
            m.packet_type(),
            m.vlan_tci()
        ),
        (MBUF_PORT_INVALID, 0xdead_beef, MBUF_F_EXTERNAL, 0, 0)
    );
    assert_eq!((m.len(), m.headroom()), (0, PKTMBUF_HEADROOM));
    assert_eq!(m.priv_area(), &[9; 16]);
    // A copy's metadata: everything but the external flag, which stays
    // the copy's own.
    let mut from = p.alloc().unwrap();
    from.set_port(7);
    from.set_rss_hash(0x1234);
    from.set_ol_flags(MBUF_F_EXTERNAL | offload::TX_IPV4 | offload::TX_TCP_CKSUM);
    from.set_packet_type(0x21);
    from.set_vlan_tci(9);
    from.set_tx_header_lens(14, 20, 20);
    let mut to = p.alloc().unwrap();
    to.copy_metadata_from(&from);
    assert_eq!(
        (
            to.port(),
            to.rss_hash(),
            to.ol_flags(),
            to.packet_type(),
            to.vlan_tci()
        ),
        (7, 0x1234, offload::TX_IPV4 | offload::TX_TCP_CKSUM, 0x21, 9)
    );
    assert_eq!(to.tx_header_lens(), (14, 20, 20));
    m.copy_metadata_from(&to);
    assert_eq!(m.ol_flags() & MBUF_F_EXTERNAL, MBUF_F_EXTERNAL, "m's own");
    drop((m, from, to));
    assert_all_back(&p);
}

#[test]
fn small_data_room_has_less_headroom() {
    let p = MbufPool::new(MbufPoolConfig {
        count: 4,
        cache_size: 0,
        data_room: 100,
        page_size: PageSize::Size4K,
        ..MbufPoolConfig::default()
    })
    .unwrap();
    let m = p.alloc().unwrap();
    assert_eq!((m.headroom(), m.tailroom(), m.buf_len()), (100, 0, 100));
    assert!(m.priv_area().is_empty());
}

#[test]
fn drop_returns_to_the_pool_with_and_without_a_slot() {
    let p = pool(64, 8);
    let m = p.alloc().unwrap();
    assert_eq!(p.in_use(), 1);
    drop(m);
    assert_all_back(&p);
    thread::scope(|s| {
        s.spawn(|| {
            let _slot = slot::claim().unwrap();
            let ms: Vec<Mbuf> = (0..20).map(|_| p.alloc().unwrap()).collect();
            assert_eq!(p.in_use(), 20);
            // Dropped on a thread without a slot.
            thread::spawn(move || drop(ms)).join().unwrap();
            assert_eq!(p.in_use(), 0);
            p.flush_cache();
        });
    });
    assert_all_back(&p);
}

#[test]
fn bulk_alloc_and_free() {
    let p = pool(700, 32);
    let mut v = Vec::new();
    p.alloc_bulk(32, &mut v).unwrap();
    assert_eq!(v.len(), 32);
    assert!(
        v.iter()
            .all(|m| m.is_empty() && m.headroom() == PKTMBUF_HEADROOM)
    );
    assert_eq!(p.alloc_bulk(700, &mut v), Err(PoolExhausted));
    assert_eq!(v.len(), 32, "a failed bulk alloc adds nothing");
    assert_eq!(p.in_use(), 32);
    // Larger than the stack array: the heap path.
    p.alloc_bulk(600, &mut v).unwrap();
    assert_eq!(p.in_use(), 632);
    p.alloc_bulk(0, &mut v).unwrap();
    Mbuf::free_bulk(v.drain(..));
    assert_all_back(&p);

    // Interleaved pools: each mbuf goes home.
    let q = pool(200, 0);
    let mut mixed = Vec::new();
    for _ in 0..40 {
        mixed.push(p.alloc().unwrap());
        mixed.push(q.alloc().unwrap());
        mixed.push(q.alloc().unwrap());
    }
    Mbuf::free_bulk(mixed);
    Mbuf::free_bulk([]);
    assert_all_back(&p);
    assert_all_back(&q);
    // One pool's run longer than FREE_PENDING: flushed in pieces.
    let run: Vec<Mbuf> = (0..150).map(|_| q.alloc().unwrap()).collect();
    Mbuf::free_bulk(run);
    assert_all_back(&p);
    assert_all_back(&q);
}

#[test]
fn mbuf_moves_between_threads() {
    let p = pool(16, 0);
    let mut m = p.alloc().unwrap();
    m.append(3).unwrap().copy_from_slice(b"abc");
    let raw = m.into_raw();
    assert_eq!(p.in_use(), 1);
    // SAFETY: `raw` came from into_raw of a live pool's mbuf, owned by us.
    let m = unsafe { Mbuf::from_raw(raw) };
    let got = thread::spawn(move || {
        let v = m.data().to_vec();
        drop(m);
        v
    })
    .join()
    .unwrap();
    assert_eq!(got, b"abc");
    assert_all_back(&p);
    assert!(format!("{p:?}").contains("MbufPool"));
}

#[test]
#[cfg_attr(miri, ignore)] // leaks the pool on purpose
fn mbuf_outliving_its_pool_handle_is_safe() {
    let p = pool(16, 0);
    let mut m = p.alloc().unwrap();
    drop(p);
    // The pool was leaked, not freed: the mbuf still works and goes home.
    m.append(10).unwrap().fill(1);
    assert_eq!(m.data(), &[1; 10]);
    drop(m);
}

/// A stand-in for a DPDK mbuf: header, no private area, a 256-byte buffer.
#[repr(C, align(64))]
struct FakeDpdkMbuf {
    hdr: MbufHeader,
    buf: [u8; 256],
}

static FOREIGN_FREED: AtomicUsize = AtomicUsize::new(0);
static FOREIGN_BULK_CALLS: AtomicUsize = AtomicUsize::new(0);

/// # Safety
///
/// `m` came from `fake_dpdk_mbuf`.
unsafe fn fake_free(m: NonNull<MbufHeader>) {
    // SAFETY: the caller passes a header of a leaked Box<FakeDpdkMbuf>.
    drop(unsafe { Box::from_raw(m.cast::<FakeDpdkMbuf>().as_ptr()) });
    FOREIGN_FREED.fetch_add(1, Ordering::Relaxed);
}

/// # Safety
///
/// As `fake_free`, for each.
unsafe fn fake_free_bulk(ms: &[NonNull<MbufHeader>]) {
    FOREIGN_BULK_CALLS.fetch_add(1, Ordering::Relaxed);
    for &m in ms {
        // SAFETY: as the caller promises.
        unsafe { fake_free(m) };
    }
}

static FAKE_OPS: ForeignMbufOps = ForeignMbufOps {
    free: fake_free,
    free_bulk: fake_free_bulk,
};
static OTHER_OPS: ForeignMbufOps = ForeignMbufOps {
    free: fake_free,
    free_bulk: fake_free_bulk,
};

fn fake_dpdk_mbuf() -> Mbuf {
    let b = Box::new(FakeDpdkMbuf {
        hdr: MbufHeader {
            buf_iova: 0x1000,
            data_off: 64,
            port: 0,
            buf_len: 256,
            ..MbufHeader::default()
        },
        buf: [0; 256],
    });
    // The buffer pointer is derived from the leaked box, so that it stays
    // valid for as long as the box is owned through the header pointer.
    let raw = Box::into_raw(b);
    // SAFETY: `raw` is a live allocation; only its address is taken.
    let buf = unsafe { &raw mut (*raw).buf }.cast::<u8>();
    // SAFETY: as above; nothing else refers to it yet.
    unsafe { (*raw).hdr.buf_addr = buf };
    let hdr = NonNull::new(raw).unwrap().cast::<MbufHeader>();
    // SAFETY: a valid, initialised, owned foreign mbuf that FAKE_OPS frees.
    unsafe { Mbuf::from_raw(hdr) }
}

#[test]
fn foreign_mbufs_go_through_the_registered_ops() {
    register_foreign_ops(&FAKE_OPS).unwrap();
    register_foreign_ops(&FAKE_OPS).unwrap();
    assert!(matches!(
        register_foreign_ops(&OTHER_OPS),
        Err(Error::ForeignOpsAlreadyRegistered)
    ));

    let mut m = fake_dpdk_mbuf();
    assert!(!m.is_native());
    assert!(m.priv_area().is_empty());
    assert_eq!(m.data_iova(), Iova(0x1000 + 64));
    m.append(4).unwrap().copy_from_slice(b"dpdk");
    assert_eq!(m.data(), b"dpdk");
    assert!(m.append(200).is_err());
    let before = FOREIGN_FREED.load(Ordering::Relaxed);
    drop(m);
    assert_eq!(FOREIGN_FREED.load(Ordering::Relaxed), before + 1);

    // free_bulk: native runs go to their pool, foreign runs to free_bulk.
    let p = pool(8, 0);
    let bulk_calls = FOREIGN_BULK_CALLS.load(Ordering::Relaxed);
    let ms = vec![
        p.alloc().unwrap(),
        fake_dpdk_mbuf(),
        fake_dpdk_mbuf(),
        p.alloc().unwrap(),
        fake_dpdk_mbuf(),
    ];
    Mbuf::free_bulk(ms);
    assert_eq!(FOREIGN_FREED.load(Ordering::Relaxed), before + 4);
    assert_eq!(FOREIGN_BULK_CALLS.load(Ordering::Relaxed), bulk_calls + 2);
    assert_all_back(&p);
}

#[test]
fn every_byte_of_an_mbuf_names_it_and_nothing_else_does() {
    // 4 KiB pages: with a 2 KiB data room an mbuf (2304 bytes) does not
    // divide the page, so the pool leaves a gap before each page boundary
    // rather than let an object straddle it. Addresses must be mapped to
    // objects with that layout, not by a stride from the first.
    let p = pool(64, 0);
    let mut seen = std::collections::HashSet::new();
    let mut held = Vec::new();
    while let Some(m) = p.alloc() {
        let hdr = m.as_ptr();
        let start = hdr.as_ptr().cast::<u8>().cast_const();
        let end = m.header().buf_addr.wrapping_add(m.buf_len());
        for probe in [
            start,
            start.wrapping_add(127),
            m.data().as_ptr(),
            end.wrapping_sub(1),
        ] {
            let (i, h) = p.mbuf_containing(probe).expect("a byte of the mbuf");
            assert_eq!(h, hdr);
            assert!(i < p.capacity());
            seen.insert(i);
        }
        // The byte after the object is another object's or nobody's.
        if let Some((_, h)) = p.mbuf_containing(end) {
            assert_ne!(h, hdr);
        }
        held.push(m);
    }
    assert_eq!(seen.len(), p.capacity(), "one index per mbuf");
    let region = &p.regions()[0];
    assert!(
        p.mbuf_containing(region.as_ptr().wrapping_add(region.len()))
            .is_none()
    );
    assert!(p.mbuf_containing(std::ptr::null()).is_none());
    drop(held);
    assert_all_back(&p);
}
