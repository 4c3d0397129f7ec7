//! The io_uring UDP backend between two network namespaces joined by a
//! veth pair (10.99.0.1 and 10.99.0.2, inside the namespaces only), which
//! each test creates and removes: datagrams both ways with their peers
//! recorded, zero-copy and copying sends, SO_REUSEPORT queues, drops
//! counted by reason, every mbuf back in its pool.
//!
//! Needs io_uring (fails instead of skipping when `DATAPLANE_REQUIRE`
//! names `io_uring`) and root for the namespaces.

use dataplane::net::meta;
use dataplane::net::netns::Netns;
use dataplane::net::uring::{IoUring, SocketPort};
use dataplane::net::{Backend, BackendKind, DropReason, Layer, MbufBatch, Port, PortConfig};
use dataplane::require::Capability;
use dataplane_tests::{VethBed, available_or_skip, frames, veth_bed};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

const A: &str = "10.99.0.1";
const B: &str = "10.99.0.2";

fn bed() -> Option<VethBed> {
    let probe = IoUring.probe();
    if !available_or_skip(Capability::IoUring, probe.available, &probe.reason) {
        return None;
    }
    let bed = veth_bed()?;
    bed.a
        .exec(&["ip", "addr", "add", &format!("{A}/24"), "dev", "veth0"])
        .expect("address a");
    bed.b
        .exec(&["ip", "addr", "add", &format!("{B}/24"), "dev", "veth0"])
        .expect("address b");
    Some(bed)
}

fn open(ns: &Netns, device: String, queues: u16) -> Vec<SocketPort> {
    let cfg = PortConfig::new(device)
        .with_queues(queues)
        .with_descriptors(256, 256)
        .with_mbufs(2048, 0);
    ns.run(move || SocketPort::open(&cfg))
        .expect("thread in the namespace")
        .expect("io_uring UDP port")
}

fn addr(ip: &str, port: u16) -> SocketAddr {
    format!("{ip}:{port}").parse().expect("address")
}

#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    received: Vec<u64>,
    wrong_peer: u64,
    bad_payload: u64,
}

/// Sends `count` datagrams (`seq` as the first 4 bytes, then a pattern)
/// from `tx` to its default peer, at most 128 in flight, and receives them
/// on `rx`, checking each one's peer is `from`.
fn exchange(tx: &mut SocketPort, rx: &mut [SocketPort], count: u32, from: SocketAddr) -> Tally {
    let mut t = Tally {
        received: vec![0; rx.len()],
        ..Tally::default()
    };
    let mut pending = MbufBatch::new();
    let mut seq = 0u32;
    let mut last_progress = Instant::now();
    let mut got = MbufBatch::new();
    loop {
        // Datagrams the receiving sockets dropped are not in flight.
        let lost = drops(rx);
        let in_flight = t.sent - t.received.iter().sum::<u64>() - lost;
        if seq < count && pending.is_empty() && in_flight < 128 {
            let n = (count - seq).min(32) as usize;
            assert_eq!(tx.alloc_burst(n, &mut pending), n, "tx pool");
            for m in pending.iter_mut() {
                let len = 16 + (seq % 1400) as usize;
                let data = m.append(len).expect("room");
                data.fill(seq as u8);
                data[..4].copy_from_slice(&seq.to_le_bytes());
                seq += 1;
            }
        }
        if !pending.is_empty() {
            t.sent += tx.tx_burst(&mut pending) as u64;
        }
        // Completions of sends come back through rx_burst's reaping too.
        tx.rx_burst(&mut got);
        got.clear();
        let mut progress = false;
        for (q, port) in rx.iter_mut().enumerate() {
            while port.rx_burst(&mut got) > 0 {
                progress = true;
                for m in got.drain() {
                    t.received[q] += 1;
                    if meta::peer(&m) != Some(from) {
                        t.wrong_peer += 1;
                    }
                    let d = m.data();
                    let s = u32::from_le_bytes([d[0], d[1], d[2], d[3]]);
                    if d.len() != 16 + (s % 1400) as usize || d[4..].iter().any(|&b| b != s as u8) {
                        t.bad_payload += 1;
                    }
                }
            }
        }
        if progress {
            last_progress = Instant::now();
        }
        let done = seq == count && pending.is_empty();
        if done && t.received.iter().sum::<u64>() + lost == t.sent {
            break;
        }
        if last_progress.elapsed() > Duration::from_secs(3) {
            break;
        }
        std::thread::yield_now();
    }
    t
}

fn drops(ports: &[SocketPort]) -> u64 {
    ports.iter().map(|p| p.stats().total_drops()).sum()
}

/// Waits until `port` has no send in flight (completions reaped).
fn settle(port: &mut SocketPort) {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut sink = MbufBatch::new();
    while port.tx_in_flight() > 0 && Instant::now() < deadline {
        port.rx_burst(&mut sink);
        sink.clear();
    }
}

#[test]
fn datagrams_cross_both_ways_with_their_peers() {
    let Some(bed) = bed() else { return };
    for zc in ["0", "off"] {
        let mut a = open(&bed.a, format!("udp:{A}:9000,peer={B}:9000,zc={zc}"), 1);
        let mut b = open(&bed.b, format!("udp:{B}:9000,peer={A}:9000,zc={zc}"), 1);
        assert_eq!(a[0].capabilities().layer, Layer::L4);
        let pools: Vec<_> = a.iter().chain(&b).map(|p| p.pool().clone()).collect();
        for name in ["a->b", "b->a"] {
            let (from, to, src) = if name == "a->b" {
                (&mut a, &mut b, addr(A, 9000))
            } else {
                (&mut b, &mut a, addr(B, 9000))
            };
            let before = drops(&from[..]) + drops(&to[..]);
            let sent_before = from[0].stats().tx_packets;
            let t = exchange(&mut from[0], &mut to[..], 3_000, src);
            settle(&mut from[0]);
            let received: u64 = t.received.iter().sum();
            let counted = drops(&from[..]) + drops(&to[..]) - before;
            println!(
                "zc={zc} {name}: {t:?}, drops {counted}: from {:?} in flight {}, to {:?}",
                from[0].stats(),
                from[0].tx_in_flight(),
                to[0].stats()
            );
            assert_eq!(t.sent, 3_000);
            assert_eq!(
                received + counted,
                t.sent,
                "zc={zc} {name}: sent = received + drops"
            );
            assert!(received > 0);
            assert_eq!((t.wrong_peer, t.bad_payload), (0, 0), "zc={zc} {name}");
            let s = from[0].stats();
            assert_eq!(s.tx_packets - sent_before, 3_000, "every send completed");
            assert_eq!(s.errors, 0);
        }
        drop(a);
        drop(b);
        for p in pools {
            assert_eq!(p.available(), p.capacity(), "pool {} is whole", p.name());
        }
    }
}

#[test]
fn reuseport_queues_share_the_flows() {
    let Some(bed) = bed() else { return };
    let mut b = open(&bed.b, format!("udp:{B}:9100"), 2);
    assert!(b[0].capabilities().rss);
    let mut total = Tally {
        received: vec![0; 2],
        ..Tally::default()
    };
    // 32 senders (32 source ports): the kernel hashes each 4-tuple to one
    // of the two sockets, with a secret drawn anew in each namespace, so
    // all of them landing on one socket has a chance of 2^-31 (with the
    // eight senders this test had, 1 in 128: it happened).
    for port in 9101..9133 {
        let mut a = open(&bed.a, format!("udp:{A}:{port},peer={B}:9100"), 1);
        let t = exchange(&mut a[0], &mut b[..], 200, addr(A, port));
        settle(&mut a[0]);
        total.sent += t.sent;
        for (x, y) in total.received.iter_mut().zip(&t.received) {
            *x += y;
        }
        total.wrong_peer += t.wrong_peer;
    }
    println!("reuseport: {total:?}");
    let received: u64 = total.received.iter().sum();
    assert_eq!(received + drops(&b), total.sent);
    assert_eq!(total.wrong_peer, 0);
    assert!(
        total.received.iter().all(|&n| n > 0),
        "32 flows over 2 queues: {:?}",
        total.received
    );
}

#[test]
fn oversized_and_undeliverable_datagrams_are_counted() {
    let Some(bed) = bed() else { return };
    let mut b = open(&bed.b, format!("udp:{B}:9200"), 1);
    let pool = b[0].pool().clone();
    // A datagram larger than an mbuf's 2 KiB data room, from a plain socket.
    bed.a
        .run(|| {
            let s = UdpSocket::bind(addr(A, 0)).expect("bind");
            s.send_to(&[7u8; 3000], addr(B, 9200)).expect("send");
            s.send_to(&[8u8; 100], addr(B, 9200)).expect("send");
        })
        .expect("thread");
    let mut got = MbufBatch::new();
    assert_eq!(
        frames::receive(&mut b[0], &mut got, 1),
        1,
        "the small one arrives"
    );
    assert_eq!(got[0].data(), &[8u8; 100][..]);
    assert_eq!(b[0].stats().dropped(DropReason::Oversized), 1);
    // A datagram with no peer and no default peer cannot be sent.
    let mut m = got.pop().expect("one");
    meta::clear_peer(&mut m);
    let mut out = MbufBatch::new();
    let _ = out.push(m);
    assert_eq!(b[0].tx_burst(&mut out), 1, "taken");
    assert_eq!(b[0].stats().dropped(DropReason::Filtered), 1);
    drop(b);
    assert_eq!(pool.available(), pool.capacity());
}

#[test]
fn auto_selection_reaches_io_uring_for_a_udp_device() {
    let Some(bed) = bed() else { return };
    let mut cfg = PortConfig::new(format!("udp:{A}:9300"));
    cfg.mbufs = 512;
    // DATAPLANE_REQUIRE=dpdk (as in CI): passing DPDK over is a fallback,
    // and so an error that says why.
    let opened = dataplane_tests::auto_open_in(&bed.a, cfg);
    assert_eq!(opened.backend, BackendKind::IoUring);
    let skipped: Vec<&str> = opened.skipped.iter().map(|s| s.backend).collect();
    assert_eq!(skipped, ["dpdk", "af_xdp", "af_packet"]);
}

// ---- TCP over loopback ------------------------------------------------------

fn tcp_ok() -> bool {
    let probe = IoUring.probe();
    available_or_skip(Capability::IoUring, probe.available, &probe.reason)
}

fn tcp_cfg(device: String, queues: u16) -> PortConfig {
    PortConfig::new(device)
        .with_queues(queues)
        .with_descriptors(128, 128)
        .with_mbufs(1024, 0)
}

/// The byte at offset `i` of a test stream.
fn stream_byte(i: u64) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8
}

/// Sends `total` bytes of the test stream on `port` in mbufs of varied
/// sizes (both sides of the zero-copy threshold), at most `tx_desc` in
/// flight, and returns how many mbufs went.
fn send_stream(port: &mut SocketPort, total: u64) -> u64 {
    let mut at = 0u64;
    let mut mbufs = 0u64;
    let mut sizes = [1usize, 7, 100, 1024, 1400, 64, 1500, 333].iter().cycle();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut batch = MbufBatch::new();
    while at < total {
        assert!(
            Instant::now() < deadline,
            "sending stalled at {at} of {total}"
        );
        if batch.is_empty() {
            port.alloc_burst(16, &mut batch);
            for m in batch.iter_mut() {
                let n = (*sizes.next().expect("cycle") as u64).min(total - at) as usize;
                if n == 0 {
                    break;
                }
                let d = m.append(n).expect("room");
                for (k, b) in d.iter_mut().enumerate() {
                    *b = stream_byte(at + k as u64);
                }
                at += n as u64;
            }
            // Mbufs past the end of the stream stay empty: drop them.
            while batch.last().is_some_and(|m| m.is_empty()) {
                batch.pop();
            }
        }
        mbufs += port.tx_burst(&mut batch) as u64;
        let mut sink = MbufBatch::new();
        port.rx_burst(&mut sink); // runs completions
    }
    while !batch.is_empty() {
        assert!(Instant::now() < deadline, "the last burst stalled");
        mbufs += port.tx_burst(&mut batch) as u64;
    }
    while port.tx_in_flight() > 0 {
        assert!(Instant::now() < deadline, "sends never completed");
        let mut sink = MbufBatch::new();
        port.rx_burst(&mut sink);
    }
    mbufs
}

/// Receives on `port` until the peer closes, checking every byte against
/// the test stream; returns the bytes received.
fn receive_stream(port: &mut SocketPort) -> u64 {
    let mut at = 0u64;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut batch = MbufBatch::new();
    while port.link().up || !batch.is_empty() {
        assert!(Instant::now() < deadline, "receiving stalled at {at}");
        batch.clear();
        port.rx_burst(&mut batch);
        for m in batch.iter() {
            for (k, &b) in m.data().iter().enumerate() {
                assert_eq!(b, stream_byte(at + k as u64), "byte {}", at + k as u64);
            }
            at += m.len() as u64;
        }
    }
    at
}

/// A listener on loopback and a one-queue TCP port connected to it (the
/// kernel completes the handshake from the backlog, so connecting comes
/// first and accepting after).
fn connected_tcp_port() -> (std::net::TcpListener, SocketPort) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let peer = listener.local_addr().expect("address");
    let cfg = tcp_cfg(format!("tcp:127.0.0.1:0,peer={peer}"), 1);
    let port = SocketPort::open(&cfg)
        .expect("tcp port")
        .pop()
        .expect("a queue");
    (listener, port)
}

#[test]
fn tcp_client_streams_both_ways_in_order() {
    if !tcp_ok() {
        return;
    }
    use std::io::{Read, Write};
    let (listener, mut port) = connected_tcp_port();
    assert!(!port.capabilities().rss);
    let (mut theirs, _) = listener.accept().expect("accept");
    const TOTAL: u64 = 3 << 20;
    let reader = std::thread::spawn(move || {
        let mut got = vec![0u8; TOTAL as usize];
        theirs.read_exact(&mut got).expect("the whole stream");
        for (i, &b) in got.iter().enumerate() {
            assert_eq!(b, stream_byte(i as u64), "byte {i}");
        }
        // And back: the same stream, then close.
        let back: Vec<u8> = (0..TOTAL).map(stream_byte).collect();
        theirs.write_all(&back).expect("write back");
        theirs
            .shutdown(std::net::Shutdown::Write)
            .expect("shutdown");
        theirs
    });
    let mbufs = send_stream(&mut port, TOTAL);
    let s = port.stats();
    assert_eq!(s.tx_packets, mbufs);
    assert_eq!(s.tx_bytes, TOTAL, "every byte of every mbuf went, once");
    assert_eq!(s.errors, 0);
    assert_eq!(receive_stream(&mut port), TOTAL);
    assert!(!port.link().up, "the peer closed: link down");
    let s = port.stats();
    assert_eq!(s.rx_bytes, TOTAL);
    drop(reader.join().expect("reader"));
    let pool = port.pool().clone();
    drop(port);
    assert_eq!(pool.available(), pool.capacity(), "every mbuf is back");
}

#[test]
fn tcp_listener_accepts_a_stream_per_queue() {
    if !tcp_ok() {
        return;
    }
    use std::io::{Read, Write};
    // A free port: bind, read, let go (and retry the client side).
    let local = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let clients = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut streams = Vec::new();
        while streams.len() < 2 {
            match std::net::TcpStream::connect(local) {
                Ok(s) => streams.push(s),
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("connect: {e}"),
            }
        }
        for (i, s) in streams.iter_mut().enumerate() {
            s.write_all(format!("hello from {i}").as_bytes())
                .expect("write");
            s.shutdown(std::net::Shutdown::Write).expect("shutdown");
        }
        streams
    });
    let cfg = tcp_cfg(format!("tcp:{local},accept=10"), 2);
    let mut ports = SocketPort::open(&cfg).expect("two accepted streams");
    assert_eq!(ports.len(), 2);
    let mut texts = Vec::new();
    for p in &mut ports {
        let mut text = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut batch = MbufBatch::new();
        while p.link().up {
            assert!(Instant::now() < deadline, "no end of stream");
            batch.clear();
            p.rx_burst(&mut batch);
            for m in batch.iter() {
                text.extend_from_slice(m.data());
            }
        }
        texts.push(String::from_utf8(text).expect("text"));
    }
    texts.sort();
    assert_eq!(texts, ["hello from 0", "hello from 1"]);
    let mut streams = clients.join().expect("clients");
    // And the other way, on each queue.
    for (p, s) in ports.iter_mut().zip(&mut streams) {
        let mut batch = MbufBatch::new();
        p.alloc_burst(1, &mut batch);
        batch[0].append(4).expect("room").copy_from_slice(b"pong");
        assert_eq!(p.tx_burst(&mut batch), 1);
        let mut got = [0u8; 4];
        s.read_exact(&mut got).expect("pong");
        assert_eq!(&got, b"pong");
    }
}

#[test]
fn tcp_listener_without_clients_says_so() {
    if !tcp_ok() {
        return;
    }
    let local = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let err = SocketPort::open(&tcp_cfg(format!("tcp:{local},accept=0"), 1))
        .expect_err("nobody connects");
    let text = err.to_string();
    assert!(text.contains("0 of 1 connections accepted"), "{text}");
}

#[test]
fn tcp_reset_by_the_peer_takes_the_link_down_once() {
    if !tcp_ok() {
        return;
    }
    let (listener, mut port) = connected_tcp_port();
    let (theirs, _) = listener.accept().expect("accept");
    // SO_LINGER 0: close sends a reset instead of a FIN.
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    nix::sys::socket::setsockopt(&theirs, nix::sys::socket::sockopt::Linger, &linger)
        .expect("SO_LINGER");
    drop(theirs);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut batch = MbufBatch::new();
    while port.link().up {
        assert!(Instant::now() < deadline, "the reset was never seen");
        port.rx_burst(&mut batch);
    }
    // Polling on does not re-arm a failed stream or count it again.
    let errors = port.stats().errors;
    for _ in 0..100 {
        port.rx_burst(&mut batch);
    }
    assert_eq!(port.stats().errors, errors);
    assert!(errors <= 1, "{errors}");
    drop(batch);
    let pool = port.pool().clone();
    drop(port);
    assert_eq!(pool.available(), pool.capacity());
}
