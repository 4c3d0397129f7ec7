//! The AF_XDP backend over a real veth pair between two network
//! namespaces that each test creates (and removes, on every path): the XDP
//! program attached and detached, frames both ways (against another
//! AF_XDP port and against AF_PACKET), mbufs of other pools copied in,
//! drops counted by reason, several queues, and every mbuf back in its
//! pool when the ports close.
//!
//! Needs the `netns` and `xdp` capabilities (root: namespaces, veth,
//! CAP_NET_RAW, CAP_BPF); prints `skip: <reason>` without them, and fails
//! instead when `DATAPLANE_REQUIRE` names them.

use dataplane::net::af_packet::AfPacketPort;
use dataplane::net::af_xdp::AfXdpPort;
use dataplane::net::netns::{Netns, link_counter};
use dataplane::net::{self, BackendChoice, BackendKind, DropReason, MbufBatch, Port, PortConfig};
use dataplane::require::{Capability, available_or_skip};
use dataplane_apps::net::frame::{Probe, emit_udp};
use dataplane_tests::frames::{drops, exchange, flow, unsendable_frames_are_counted};
use dataplane_tests::{VethBed, veth_bed};
use hugepages::mbuf::{MbufPool, MbufPoolConfig};
use std::time::{Duration, Instant};

fn bed() -> Option<VethBed> {
    let probe = net::BackendKind::AfXdp.backend().probe();
    if !available_or_skip(Capability::Xdp, probe.available, &probe.reason) {
        return None;
    }
    veth_bed()
}

fn config(queues: u16) -> PortConfig {
    PortConfig::new("veth0")
        .with_queues(queues)
        .with_descriptors(512, 256)
        .with_mbufs(2048, 0)
}

fn open(ns: &Netns, queues: u16) -> Vec<AfXdpPort> {
    let cfg = config(queues);
    ns.run(move || AfXdpPort::open(&cfg))
        .expect("thread in the namespace")
        .expect("AF_XDP port")
}

/// Whether an XDP program is attached to `veth0` in `ns` (`ip link` shows
/// `xdp`, `xdpgeneric` or `xdpdrv`).
fn xdp_attached(ns: &Netns) -> bool {
    let out = ns
        .exec(&["ip", "-details", "link", "show", "veth0"])
        .expect("ip link");
    out.contains("prog/xdp")
}

fn veth_drops(bed: &VethBed) -> u64 {
    ["tx_dropped", "rx_dropped"]
        .iter()
        .flat_map(|c| [(&bed.a, *c), (&bed.b, *c)])
        .map(|(ns, c)| link_counter(ns, "veth0", c).expect("counter"))
        .sum()
}

#[test]
fn frames_cross_both_ways_and_every_mbuf_comes_back() {
    let Some(bed) = bed() else { return };
    let mut a = open(&bed.a, 1);
    let mut b = open(&bed.b, 1);
    let pools: Vec<_> = a.iter().chain(&b).map(|p| p.pool().clone()).collect();
    assert_eq!(a[0].capabilities().backend, "af_xdp");
    assert!(a[0].is_driver_mode(), "veth has a native XDP hook");
    assert!(!a[0].is_zero_copy(), "veth has no zero-copy");
    assert!(a[0].link().up, "veth0 in a is up");
    assert!(xdp_attached(&bed.a), "the program is attached while open");

    for name in ["a->b", "b->a"] {
        let (from, to) = if name == "a->b" {
            (&mut a, &mut b)
        } else {
            (&mut b, &mut a)
        };
        let t = exchange(&mut from[0], &mut to[..], 5_000, 4);
        let kernel = veth_drops(&bed);
        let ours = drops(&from[..]) + drops(&to[..]);
        let received: u64 = t.received.iter().sum();
        println!("{name}: {t:?}, port drops {ours}, veth drops {kernel}");
        assert_eq!(t.sent, 5_000, "{name}: every frame handed to the kernel");
        assert_eq!(
            received + ours + kernel,
            t.sent,
            "{name}: sent = received + counted drops"
        );
        assert!(received > 0, "{name}: nothing arrived");
        assert!(t.in_order, "{name}: one queue keeps each flow in order");
        assert_eq!(t.foreign, 0, "{name}: frames we did not send");
    }
    drop(a);
    drop(b);
    for p in pools {
        assert_eq!(p.available(), p.capacity(), "pool {} is whole", p.name());
    }
    assert!(
        !xdp_attached(&bed.a),
        "closing the port detached the program"
    );
}

fn open_af_packet(ns: &Netns) -> Vec<AfPacketPort> {
    let cfg = config(1);
    ns.run(move || AfPacketPort::open(&cfg))
        .expect("thread in the namespace")
        .expect("AF_PACKET port")
}

/// Frames from `tx` (built in `pool`, not `tx`'s own) received on `rx`.
fn send_from_pool(tx: &mut impl Port, rx: &mut impl Port, pool: &MbufPool, count: u32) -> u64 {
    let f = flow(1, tx, rx);
    let mut got = 0u64;
    let mut seq = 0u32;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut pending = MbufBatch::new();
    while got < u64::from(count) && Instant::now() < deadline {
        while seq < count && !pending.is_full() {
            let mut m = pool.alloc().expect("the foreign pool has room");
            let len = 64 + (seq % 100) as usize;
            let probe = Probe {
                tsc: 0,
                seq,
                flow: 1,
            };
            emit_udp(m.append(len).expect("room"), len, &f, Some(&probe)).expect("frame");
            let _ = pending.push(m);
            seq += 1;
        }
        tx.tx_burst(&mut pending);
        let mut batch = MbufBatch::new();
        got += rx.rx_burst(&mut batch) as u64;
    }
    got
}

#[test]
fn af_packet_peers_and_mbufs_of_other_pools_are_copied() {
    let Some(bed) = bed() else { return };
    let mut a = open(&bed.a, 1);
    let mut b = open_af_packet(&bed.b);
    let own = a[0].pool().clone();
    let foreign = MbufPool::new(MbufPoolConfig {
        name: "xdp-foreign".into(),
        count: 512,
        cache_size: 0,
        ..MbufPoolConfig::default()
    })
    .expect("pool");
    // AF_XDP -> AF_PACKET, every frame from a pool the port does not own:
    // each is copied into the port's UMEM and freed to its own pool.
    let got = send_from_pool(&mut a[0], &mut b[0], &foreign, 2_000);
    assert_eq!(got, 2_000, "every frame arrives at the AF_PACKET end");
    assert_eq!(foreign.in_use(), 0, "the originals went back to their pool");
    // And the other way, through the generic exchange.
    let t = exchange(&mut b[0], &mut a[..], 3_000, 8);
    let lost = drops(&a) + drops(&b) + veth_drops(&bed);
    assert_eq!(t.received.iter().sum::<u64>() + lost, t.sent);
    assert!(t.in_order && t.foreign == 0, "{t:?}");
    let s = a[0].stats();
    assert_eq!(s.tx_packets, 2_000);
    drop(a);
    assert_eq!(own.in_use(), 0, "the UMEM pool is whole");
}

#[test]
fn frames_that_cannot_be_sent_are_counted_not_sent() {
    let Some(bed) = bed() else { return };
    let mut a = open(&bed.a, 1);
    let mut b = open(&bed.b, 1);
    let pool = a[0].pool().clone();
    unsendable_frames_are_counted(&mut a[0], &mut b[0]);
    drop(a);
    assert_eq!(pool.available(), pool.capacity());
}

#[test]
fn an_empty_fill_ring_drops_are_counted() {
    let Some(bed) = bed() else { return };
    // 128 mbufs: a fill ring of 64, so the kernel runs out of buffers
    // long before the 1 000 frames are in.
    let cfg = config(1).with_mbufs(128, 0);
    let mut a = bed
        .a
        .run(move || AfXdpPort::open(&cfg))
        .expect("thread")
        .expect("AF_XDP port");
    let mut b = open_af_packet(&bed.b);
    let f = flow(2, &b[0], &a[0]);
    let mut sent = 0u64;
    let mut pending = MbufBatch::new();
    while sent < 1_000 {
        let n = b[0].alloc_burst(32, &mut pending);
        assert!(n > 0, "the sender's pool refills as frames go");
        for m in pending.iter_mut() {
            emit_udp(m.append(60).expect("room"), 60, &f, None).expect("frame");
        }
        let before = pending.len();
        b[0].tx_burst(&mut pending);
        sent += (before - pending.len()) as u64;
        pending.clear();
    }
    std::thread::sleep(Duration::from_millis(200));
    let mut received = 0u64;
    let mut batch = MbufBatch::new();
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        received += a[0].rx_burst(&mut batch) as u64;
        batch.clear();
    }
    let s = a[0].stats();
    let no_mbuf = s.dropped(DropReason::NoMbuf);
    println!("sent {sent}, received {received}, {s:?}");
    assert!(no_mbuf > 0, "an empty fill ring drops, counted: {s:?}");
    // (veth counts the failed redirects among its own rx drops too.)
    assert_eq!(
        received + no_mbuf + s.dropped(DropReason::RxOverrun),
        sent,
        "every frame received or counted"
    );
}

#[test]
fn one_program_per_interface_and_it_goes_with_the_port() {
    let Some(bed) = bed() else { return };
    let a = open(&bed.a, 1);
    let cfg = config(1);
    let again = bed.a.run(move || AfXdpPort::open(&cfg)).expect("thread");
    let err = again.expect_err("the interface already has our program");
    assert!(
        err.to_string().contains("already has an XDP program"),
        "{err}"
    );
    drop(a);
    assert!(!xdp_attached(&bed.a));
    let a = open(&bed.a, 1);
    assert!(xdp_attached(&bed.a), "open again after the first closed");
    drop(a);
}

#[test]
fn each_queue_has_its_own_socket() {
    let p = net::netns::probe();
    if !available_or_skip(Capability::Netns, p.available, &p.reason) {
        return;
    }
    let probe = BackendKind::AfXdp.backend().probe();
    if !available_or_skip(Capability::Xdp, probe.available, &probe.reason) {
        return;
    }
    let a = Netns::create(&net::netns::unique_name("dxa")).expect("namespace a");
    let b = Netns::create(&net::netns::unique_name("dxb")).expect("namespace b");
    a.exec(&[
        "ip",
        "link",
        "add",
        "veth0",
        "numtxqueues",
        "2",
        "numrxqueues",
        "2",
        "type",
        "veth",
        "peer",
        "name",
        "veth0",
        "netns",
        b.name(),
        "numtxqueues",
        "2",
        "numrxqueues",
        "2",
    ])
    .expect("a two-queue veth pair");
    a.exec(&["ip", "link", "set", "veth0", "up"]).expect("up");
    b.exec(&["ip", "link", "set", "veth0", "up"]).expect("up");
    let mut rx = open(&a, 2);
    assert_eq!(rx.len(), 2);
    assert!(rx[0].capabilities().rss);
    // veth has no RSS to report (ETHTOOL_GRSSH: not supported), so no
    // steering: a stack on it cannot choose source ports by queue.
    assert_eq!(rx[0].capabilities().steering, None);
    // veth hands a frame to the peer's rx queue with the number of the tx
    // queue it was sent on, and an AF_XDP socket sends on its own queue:
    // each sending queue's flows must arrive on the matching queue alone.
    let mut tx = open(&b, 2);
    for q in 0..2 {
        let t = exchange(&mut tx[q], &mut rx[..], 2_000, 16);
        println!("from queue {q}: {t:?}");
        let received: u64 = t.received.iter().sum();
        assert_eq!(received + drops(&rx) + drops(&tx), t.sent);
        assert_eq!(t.received[q], received, "all on queue {q}: {t:?}");
        assert!(t.in_order, "a flow stays on one queue, in order");
    }
    let pools: Vec<_> = rx.iter().chain(&tx).map(|p| p.pool().clone()).collect();
    drop(rx);
    drop(tx);
    assert!(pools.iter().all(|p| p.in_use() == 0));
}

#[test]
fn auto_selection_opens_an_interface_with_af_xdp() {
    let Some(bed) = bed() else { return };
    let cfg = config(1).with_mbufs(512, 0);
    let opened = dataplane_tests::auto_open_in(&bed.a, cfg);
    assert_eq!(opened.backend, BackendKind::AfXdp);
    let skipped: Vec<_> = opened.skipped.iter().map(|s| s.backend).collect();
    assert_eq!(skipped, ["dpdk"]);
    drop(opened);
    // Named, it never falls back: an interface that is not there.
    let cfg = PortConfig::new("nosuchif0").with_mbufs(256, 0);
    let err = bed
        .a
        .run(move || net::open(&cfg, BackendChoice::Named(BackendKind::AfXdp)))
        .expect("thread")
        .expect_err("no such interface");
    assert!(err.to_string().contains("af_xdp"), "{err}");
}
