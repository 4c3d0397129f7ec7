//! The AF_PACKET backend over a real veth pair between two network
//! namespaces that each test creates (and removes, on every path): frames
//! both ways, fanout over queues, drops counted by reason, every mbuf back
//! in its pool.
//!
//! Needs the `netns` capability (root: namespaces, veth, CAP_NET_RAW);
//! prints `skip: <reason>` without it, and fails instead when
//! `DATAPLANE_REQUIRE` names `netns`.

use dataplane::net::af_packet::AfPacketPort;
use dataplane::net::af_xdp::AfXdpPort;
use dataplane::net::netns::{Netns, link_counter};
use dataplane::net::{self, BackendChoice, BackendKind, DropReason, Port, PortConfig};
use dataplane_tests::frames::{drops, exchange, flow, unsendable_frames_are_counted};
use dataplane_tests::{VethBed, veth_bed};

fn bed() -> Option<VethBed> {
    veth_bed()
}

fn config(queues: u16) -> PortConfig {
    PortConfig::new("veth0")
        .with_queues(queues)
        .with_descriptors(512, 256)
        .with_mbufs(2048, 0)
}

fn open(ns: &Netns, queues: u16) -> Vec<AfPacketPort> {
    open_with(ns, config(queues))
}

fn open_with(ns: &Netns, cfg: PortConfig) -> Vec<AfPacketPort> {
    ns.run(move || AfPacketPort::open(&cfg))
        .expect("thread in the namespace")
        .expect("AF_PACKET port")
}

#[test]
fn frames_cross_both_ways_and_every_mbuf_comes_back() {
    frames_cross_both_ways(false);
}

/// The same over `TPACKET_V2` receive rings (`PortConfig::low_latency`).
#[test]
fn frames_cross_both_ways_frame_by_frame() {
    frames_cross_both_ways(true);
}

fn frames_cross_both_ways(low_latency: bool) {
    let Some(bed) = bed() else { return };
    let mut a = open_with(&bed.a, config(1).with_low_latency(low_latency));
    let mut b = open_with(&bed.b, config(1).with_low_latency(low_latency));
    let pools: Vec<_> = a.iter().chain(&b).map(|p| p.pool().clone()).collect();
    assert_eq!(a[0].capabilities().backend, "af_packet");
    assert!(a[0].link().up, "veth0 in a is up");

    for name in ["a->b", "b->a"] {
        let (from, to) = if name == "a->b" {
            (&mut a, &mut b)
        } else {
            (&mut b, &mut a)
        };
        let t = exchange(&mut from[0], &mut to[..], 5_000, 4);
        let kernel = link_counter(&bed.a, "veth0", "tx_dropped").expect("counter")
            + link_counter(&bed.b, "veth0", "tx_dropped").expect("counter")
            + link_counter(&bed.a, "veth0", "rx_dropped").expect("counter")
            + link_counter(&bed.b, "veth0", "rx_dropped").expect("counter");
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
    let (sa, sb) = (a[0].stats(), b[0].stats());
    assert_eq!(
        sa.tx_packets,
        sb.rx_packets + sb.dropped(DropReason::RxOverrun)
    );
    assert_eq!(
        sb.tx_packets,
        sa.rx_packets + sa.dropped(DropReason::RxOverrun)
    );
    drop(a);
    drop(b);
    for p in pools {
        assert_eq!(p.available(), p.capacity(), "pool {} is whole", p.name());
    }
}

#[test]
fn fanout_spreads_flows_over_queues() {
    let Some(bed) = bed() else { return };
    let mut a = open(&bed.a, 1);
    let mut b = open(&bed.b, 3);
    assert!(b[0].capabilities().rss);
    let t = exchange(&mut a[0], &mut b[..], 4_000, 64);
    println!("fanout: {t:?}");
    let received: u64 = t.received.iter().sum();
    assert_eq!(received + drops(&a) + drops(&b), t.sent);
    assert!(
        t.received.iter().all(|&n| n > 0),
        "64 flows should reach every queue: {:?}",
        t.received
    );
    assert!(t.in_order, "a flow stays on one queue, in order");
    assert!(!t.split, "a flow stays on one queue");
    // The fanout program puts each flow where the port's steering says,
    // so a stack can choose source ports that bring replies home.
    let steering = b[0].capabilities().steering.clone().expect("steering");
    for (i, q) in t.flow_queue.iter().enumerate() {
        let f = flow(i as u16, &a[0], &b[0]);
        let want = steering.queue_v4(f.src_ip, f.dst_ip, f.src_port, f.dst_port);
        assert_eq!(*q, Some(usize::from(want)), "flow {i}: {f:?}");
    }
    // What the group's queues send does not come back to them (the tx
    // sockets bypass the qdisc, and with it the taps; frames the host's
    // own stack sends are kept out by PACKET_FANOUT_FLAG_IGNORE_OUTGOING).
    let back = exchange(&mut b[1], &mut a[..], 500, 8);
    assert!(back.received[0] > 0);
    let mut got = net::MbufBatch::new();
    for q in &mut b {
        q.rx_burst(&mut got);
    }
    assert!(got.is_empty(), "{} of our own frames came back", got.len());
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
fn auto_selection_falls_back_to_af_packet_when_af_xdp_cannot_open() {
    let Some(bed) = bed() else { return };
    // An AF_XDP port holds the interface's XDP hook (where AF_XDP works
    // here at all), so the automatic choice must pass AF_XDP over.
    let xdp = BackendKind::AfXdp.backend().probe().available;
    let holder = xdp.then(|| {
        let cfg = config(1).with_mbufs(256, 0);
        bed.a
            .run(move || AfXdpPort::open(&cfg))
            .expect("thread")
            .expect("AF_XDP holds the hook")
    });
    let mut cfg = config(1);
    cfg.mbufs = 512;
    // DATAPLANE_REQUIRE=dpdk (as in CI): passing DPDK over is a fallback,
    // and so an error that says why.
    let opened = dataplane_tests::auto_open_in(&bed.a, cfg);
    assert_eq!(opened.backend, BackendKind::AfPacket);
    let skipped: Vec<_> = opened.skipped.iter().map(|s| s.backend).collect();
    assert_eq!(skipped, ["dpdk", "af_xdp"]);
    if xdp {
        assert!(
            opened.skipped[1]
                .reason
                .contains("already has an XDP program"),
            "{:?}",
            opened.skipped[1]
        );
    }
    drop(holder);
    // An interface that exists only in the namespace is not found outside.
    let err = net::open(&config(1), BackendChoice::Named(BackendKind::AfPacket));
    if nix_style_exists("veth0") {
        return;
    }
    assert!(err.is_err(), "veth0 does not exist outside the namespace");
}

fn nix_style_exists(ifname: &str) -> bool {
    std::path::Path::new(&format!("/sys/class/net/{ifname}")).exists()
}
