//! The user-space TCP/IP stack (`dataplane::transport::stack`) against
//! Linux's TCP: two namespaces joined by a veth pair, our stack on an
//! AF_PACKET port in one (which has no address of its own, so its kernel
//! stays out of the conversation), real programs on the kernel's stack in
//! the other. `curl` downloads from a small HTTP server written on the
//! stack's API, `socat` uploads to it, and the stack as a client downloads
//! from and uploads to `socat` and fetches files from nginx over one
//! keep-alive connection; every byte is compared. Then the same over a
//! lossy, reordering, duplicating link with a small MTU.
//!
//! This kernel has no `netem` qdisc here, so the impairments come from
//! [`FaultInjector`] around our port: loss, duplication and reordering of
//! what we send, and loss of what the kernel sends to us.
//!
//! Needs the `netns` capability, and curl, socat and ethtool (the kernel
//! side's checksum and segmentation offloads are switched off, so that the
//! frames AF_PACKET shows carry whole checksums and no 64 KiB segments).

use dataplane::net::af_packet::AfPacketPort;
use dataplane::net::fault::{FaultInjector, Faults};
use dataplane::net::{Port, PortConfig};
use dataplane::transport::stack::Stack;
use dataplane_tests::VethBed;
use dataplane_tests::stack_peers::{
    curl_and_socat_against_the_stack, stack_bed, stack_config, the_stack_as_a_client,
    the_stack_fetches_from_nginx,
};

/// The bed with the kernel's side configured, and our port.
fn setup(mtu: u16) -> Option<(VethBed, AfPacketPort)> {
    let bed = stack_bed(mtu)?;
    // Frame by frame (TPACKET_V2), as a server on the stack opens it; the
    // lossy test keeps TPACKET_V3's blocks, so both rings carry TCP.
    let cfg = PortConfig::new("veth0")
        .with_descriptors(1024, 512)
        .with_mbufs(4096, 0)
        .with_low_latency(mtu == 1500);
    let mut ports = bed
        .a
        .run(move || AfPacketPort::open(&cfg))
        .expect("thread in the namespace")
        .expect("AF_PACKET port");
    let port = ports.remove(0);
    Some((bed, port))
}

/// 2% of what we send lost, 1% duplicated, 2% reordered; 2% of what the
/// kernel sends us lost.
fn lossy(seed: u64) -> Faults {
    Faults {
        loss: 20,
        duplicate: 10,
        reorder: 20,
        rx_loss: 20,
        seed,
    }
}

fn stack<P: Port>(port: P, mtu: u16) -> Stack<P> {
    Stack::new(port, stack_config(mtu)).expect("stack")
}

#[test]
fn curl_and_socat_talk_to_a_server_on_the_stack() {
    let Some((bed, port)) = setup(1500) else {
        return;
    };
    let pool = port.pool().clone();
    let mut s = stack(port, 1500);
    curl_and_socat_against_the_stack(bed.b.name(), &mut s, 8 << 20);
    let st = s.stats();
    println!("{st:?}");
    assert!(st.arp_replies >= 1, "the kernel asked for our address");
    assert_eq!(st.accepted, 2);
    assert_eq!(st.rx_bad_checksum, 0);
    drop(s);
    assert_eq!(pool.in_use(), 0, "every mbuf back in the port's pool");
}

#[test]
fn the_stack_downloads_from_and_uploads_to_socat() {
    let Some((bed, port)) = setup(1500) else {
        return;
    };
    let mut s = stack(port, 1500);
    the_stack_as_a_client(bed.b.name(), &mut s, 4 << 20);
    let st = s.stats();
    println!("{st:?}");
    assert!(st.arp_requests >= 1, "we asked for the kernel's address");
    assert!(st.connected >= 2);
}

#[test]
fn the_stack_fetches_files_from_nginx_over_keep_alive() {
    let Some((bed, port)) = setup(1500) else {
        return;
    };
    let pool = port.pool().clone();
    let mut s = stack(port, 1500);
    if !the_stack_fetches_from_nginx(bed.b.name(), &mut s, 4 << 20) {
        return;
    }
    let st = s.stats();
    println!("{st:?}");
    assert!(st.connected >= 1);
    assert_eq!(st.rx_bad_checksum, 0);
    drop(s);
    assert_eq!(pool.in_use(), 0, "every mbuf back in the port's pool");
}

#[test]
fn transfers_with_linux_survive_loss_reordering_duplication_and_a_small_mtu() {
    let Some((bed, port)) = setup(1280) else {
        return;
    };
    let faults = lossy(0x5eed);
    let mut s = stack(FaultInjector::new(port, faults), 1280);
    curl_and_socat_against_the_stack(bed.b.name(), &mut s, 2 << 20);
    the_stack_as_a_client(bed.b.name(), &mut s, 2 << 20);
    the_stack_fetches_from_nginx(bed.b.name(), &mut s, 1 << 20);
    let st = s.stats();
    let counts = s.port().counts();
    println!("{st:?}\n{counts:?}");
    assert!(counts.dropped > 0 && counts.rx_dropped > 0 && counts.reordered > 0);
    assert!(
        st.tcp.fast_retransmits + st.tcp.timeout_retransmits > 0,
        "our retransmissions: {:?}",
        st.tcp
    );
    assert!(st.tcp.out_of_order > 0, "the kernel's losses: {:?}", st.tcp);
}

/// With SACK on (off by default), Linux negotiates it, our ACKs carry
/// blocks while data waits beyond a hole, and downloads from Linux under
/// loss complete with every byte.
#[test]
fn with_sack_on_linux_takes_our_sack_blocks_under_loss() {
    let Some((bed, port)) = setup(1280) else {
        return;
    };
    let faults = lossy(0x5ac4);
    let mut cfg = stack_config(1280);
    cfg.sack = true;
    let mut s = Stack::new(FaultInjector::new(port, faults), cfg).expect("stack");
    the_stack_as_a_client(bed.b.name(), &mut s, 1 << 20);
    the_stack_fetches_from_nginx(bed.b.name(), &mut s, 1 << 20);
    let st = s.stats();
    println!("{st:?}");
    assert!(st.tcp.out_of_order > 0, "{:?}", st.tcp);
    assert!(st.tcp.sack_acks > 0, "{:?}", st.tcp);
}

#[test]
fn udp_datagrams_cross_between_the_stack_and_a_kernel_socket() {
    let Some((bed, port)) = setup(1500) else {
        return;
    };
    let pool = port.pool().clone();
    let mut s = stack(port, 1500);
    const COUNT: u32 = 200;
    // A kernel socket in the other namespace echoes what it receives until
    // it hears "stop" (or nothing for 10 s); it says when it is bound.
    let (bound_tx, bound) = std::sync::mpsc::channel();
    let echo = bed
        .b
        .spawn(move || {
            let sock = std::net::UdpSocket::bind("10.99.0.2:7000").expect("bind");
            sock.set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .expect("timeout");
            bound_tx.send(()).expect("the test waits");
            let mut buf = [0u8; 2048];
            let mut echoed = 0u32;
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                if &buf[..n] == b"stop" {
                    break;
                }
                sock.send_to(&buf[..n], from).expect("echo");
                echoed += 1;
            }
            echoed
        })
        .expect("a thread in the namespace");
    bound.recv().expect("the echo socket is bound");
    let u = s.bind_udp(5000).expect("bind");
    let peer = std::net::SocketAddrV4::new([10, 99, 0, 2].into(), 7000);
    // Datagram i: its number, then 996 bytes that depend on it.
    let datagram = |i: u32| -> Vec<u8> {
        let mut d = i.to_be_bytes().to_vec();
        d.extend((0..996u32).map(|k| (i * 7 + k) as u8));
        d
    };
    let mut back = vec![false; COUNT as usize];
    let (mut next, mut done, mut resent, mut idle) = (0u32, 0u32, 0u32, 0u32);
    for _ in 0..400_000 {
        // Ten outstanding at most; UDP may lose one (a full ring), so a
        // datagram not echoed within about 0.1 s is sent again.
        let oldest = (0..next).find(|&i| !back[i as usize]);
        if next < COUNT && oldest.is_none_or(|o| next - o < 10) {
            assert!(s.send_to(u, peer, &datagram(next)).expect("send"));
            next += 1;
        } else if idle > 2_000
            && let Some(o) = oldest
        {
            assert!(s.send_to(u, peer, &datagram(o)).expect("send"));
            resent += 1;
            idle = 0;
        }
        s.poll();
        while s.next_event().is_some() {}
        idle += 1;
        while let Some((from, data)) = s.peek_datagram(u).expect("open") {
            assert_eq!(from, peer);
            let i = u32::from_be_bytes(data[..4].try_into().expect("a number"));
            assert!(
                data == datagram(i).as_slice(),
                "datagram {i} came back changed"
            );
            if !back[i as usize] {
                back[i as usize] = true;
                done += 1;
                idle = 0;
            }
            s.consume_datagram(u).expect("open");
        }
        if done == COUNT {
            break;
        }
        std::thread::sleep(std::time::Duration::from_micros(50));
    }
    assert!(s.send_to(u, peer, b"stop").expect("send"));
    for _ in 0..10 {
        s.poll();
    }
    let echoed = echo.join().expect("echo thread").expect("in the namespace");
    let st = s.stats();
    println!("{st:?}, {resent} sent again, {echoed} echoed");
    assert_eq!(done, COUNT, "{st:?}");
    assert!(
        resent <= COUNT / 10,
        "{resent} of {COUNT} sent again: {st:?}"
    );
    assert_eq!(st.udp_tx, u64::from(COUNT + resent) + 1);
    drop(s);
    assert_eq!(pool.in_use(), 0);
}
