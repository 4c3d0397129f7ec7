//! The user-space TCP/IP stack (`dataplane::transport::stack`) against
//! Linux's TCP: two namespaces joined by a veth pair, our stack on an
//! AF_PACKET port in one (which has no address of its own, so its kernel
//! stays out of the conversation), real programs on the kernel's stack in
//! the other. `curl` downloads from a small HTTP server written on the
//! stack's API, `socat` uploads to it, and the stack as a client downloads
//! from and uploads to `socat`; every byte is compared. Then the same over
//! a lossy, reordering, duplicating link with a small MTU.
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
};

/// The bed with the kernel's side configured, and our port.
fn setup(mtu: u16) -> Option<(VethBed, AfPacketPort)> {
    let bed = stack_bed(mtu)?;
    let cfg = PortConfig::new("veth0")
        .with_descriptors(1024, 512)
        .with_mbufs(4096, 0);
    let mut ports = bed
        .a
        .run(move || AfPacketPort::open(&cfg))
        .expect("thread in the namespace")
        .expect("AF_PACKET port");
    let port = ports.remove(0);
    Some((bed, port))
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
fn transfers_with_linux_survive_loss_reordering_duplication_and_a_small_mtu() {
    let Some((bed, port)) = setup(1280) else {
        return;
    };
    let faults = Faults {
        loss: 20,
        duplicate: 10,
        reorder: 20,
        rx_loss: 20,
        seed: 0x5eed,
    };
    let mut s = stack(FaultInjector::new(port, faults), 1280);
    curl_and_socat_against_the_stack(bed.b.name(), &mut s, 2 << 20);
    the_stack_as_a_client(bed.b.name(), &mut s, 2 << 20);
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

#[test]
fn udp_datagrams_cross_between_the_stack_and_a_kernel_socket() {
    let Some((bed, port)) = setup(1500) else {
        return;
    };
    let pool = port.pool().clone();
    let mut s = stack(port, 1500);
    const COUNT: usize = 200;
    // A kernel socket in the other namespace echoes what it receives.
    let echo = bed
        .b
        .spawn(|| {
            let sock = std::net::UdpSocket::bind("10.99.0.2:7000").expect("bind");
            sock.set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .expect("timeout");
            let mut buf = [0u8; 2048];
            for _ in 0..COUNT {
                let (n, from) = sock.recv_from(&mut buf).expect("a datagram");
                sock.send_to(&buf[..n], from).expect("echo");
            }
        })
        .expect("a thread in the namespace");
    let u = s.bind_udp(5000).expect("bind");
    let peer = std::net::SocketAddrV4::new([10, 99, 0, 2].into(), 7000);
    let datagram = |i: usize| -> Vec<u8> { (0..1000).map(|k| (i * 7 + k) as u8).collect() };
    let mut sent = 0;
    let mut got = Vec::new();
    for _ in 0..200_000 {
        // Ten at a time, so that nothing overruns a queue on the way.
        if sent < COUNT && sent - got.len() < 10 {
            assert!(s.send_to(u, peer, &datagram(sent)).expect("send"));
            sent += 1;
        }
        s.poll();
        while s.next_event().is_some() {}
        while let Some((from, data)) = s.peek_datagram(u).expect("open") {
            assert_eq!(from, peer);
            got.push(data.to_vec());
            s.consume_datagram(u).expect("open");
        }
        if got.len() == COUNT {
            break;
        }
        std::thread::sleep(std::time::Duration::from_micros(50));
    }
    echo.join().expect("echo thread").expect("in the namespace");
    assert_eq!(got.len(), COUNT, "{:?}", s.stats());
    for (i, d) in got.iter().enumerate() {
        assert!(*d == datagram(i), "datagram {i} differs");
    }
    let st = s.stats();
    assert_eq!((st.udp_tx, st.udp_rx), (COUNT as u64, COUNT as u64));
    drop(s);
    assert_eq!(pool.in_use(), 0);
}
