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
use dataplane::require::{Capability, required};
use dataplane::transport::stack::{Stack, StackConfig};
use dataplane::transport::{CloseReason, ConnId, Event};
use dataplane_tests::{VethBed, veth_bed};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const OURS: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const KERNEL: &str = "10.99.0.2";

/// Passes of the stack's loop before a test gives up (each pass sleeps
/// 50 µs when nothing arrived, so this bounds a test at a few minutes).
const MAX_PASSES: usize = 3_000_000;

fn have(tool: &str) -> bool {
    let ok = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        assert!(
            !required(Capability::Netns),
            "{tool} is needed (scripts/install-deps.sh installs it)"
        );
        println!("skip: {tool} is not installed (scripts/install-deps.sh installs it)");
    }
    ok
}

/// The bed, the kernel's side configured, and our port.
fn setup(mtu: u16) -> Option<(VethBed, AfPacketPort)> {
    let bed = veth_bed()?;
    if !["curl", "socat", "ethtool"].into_iter().all(have) {
        return None;
    }
    let mtu = mtu.to_string();
    for ns in [&bed.a, &bed.b] {
        ns.exec(&["ip", "link", "set", "veth0", "mtu", &mtu])
            .expect("mtu");
        ns.exec(&[
            "ethtool", "-K", "veth0", "tx", "off", "tso", "off", "gso", "off", "gro", "off",
        ])
        .expect("offloads off");
    }
    bed.b
        .exec(&["ip", "addr", "add", "10.99.0.2/24", "dev", "veth0"])
        .expect("address");
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
    let mut cfg = StackConfig::new("10.99.0.1/24".parse().expect("cidr"));
    cfg.mtu = Some(usize::from(mtu));
    cfg.time_wait = Duration::from_millis(100);
    Stack::new(port, cfg).expect("stack")
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("dp-stack-{}-{name}", std::process::id()))
}

/// A program in the kernel's namespace, killed and reaped when dropped
/// (on every path, a failed assertion's included).
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Peer {
    fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.0.try_wait().expect("a child's status")
    }
}

fn spawn_in(bed_ns: &str, args: &[&str]) -> Peer {
    Peer(
        Command::new("ip")
            .args(["netns", "exec", bed_ns])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn in the namespace"),
    )
}

/// A server's connection: what it has read, what it still sends.
#[derive(Default)]
struct Served {
    request: Vec<u8>,
    reply: Vec<u8>,
    sent: usize,
    answered: bool,
    closing: bool,
}

/// A tiny HTTP/1.1 server on port 80: every request gets `body`, then the
/// connection closes. A second server on port 9000 keeps what it is sent
/// until the peer closes. Runs until `done` (given the bytes received on
/// 9000 and the connections open) says so; returns those bytes.
fn serve<P: Port>(
    s: &mut Stack<P>,
    body: &[u8],
    mut done: impl FnMut(&[u8], usize) -> bool,
) -> Vec<u8> {
    let http = s.listen(80).expect("listen 80");
    let _sink = s.listen(9000).expect("listen 9000");
    let mut conns: HashMap<ConnId, Served> = HashMap::new();
    let mut http_conns = std::collections::HashSet::new();
    let mut uploaded = Vec::new();
    for _ in 0..MAX_PASSES {
        let before = s.stats().rx_frames;
        s.poll();
        while let Some(ev) = s.next_event() {
            match ev {
                Event::Accepted { listener, conn } => {
                    if listener == http {
                        http_conns.insert(conn);
                    }
                    conns.insert(conn, Served::default());
                }
                Event::Readable(c) => {
                    let data = s.peek(c).expect("open").to_vec();
                    s.consume(c, data.len()).expect("open");
                    let served = conns.entry(c).or_default();
                    if http_conns.contains(&c) {
                        served.request.extend_from_slice(&data);
                    } else {
                        uploaded.extend_from_slice(&data);
                    }
                }
                Event::PeerClosed(c) if !http_conns.contains(&c) => {
                    s.close(c).expect("open");
                }
                Event::Closed(c, why) => {
                    assert!(
                        why == CloseReason::Local || why == CloseReason::Reset,
                        "{c}: {why:?}"
                    );
                    conns.remove(&c);
                }
                _ => {}
            }
        }
        for (&c, served) in &mut conns {
            if !http_conns.contains(&c) || served.closing {
                continue;
            }
            if !served.answered && served.request.windows(4).any(|w| w == b"\r\n\r\n") {
                served.answered = true;
                served.reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                served.reply.extend_from_slice(body);
            }
            if served.answered && served.sent < served.reply.len() {
                served.sent += s.write(c, &served.reply[served.sent..]).expect("open");
            }
            if served.answered && served.sent == served.reply.len() {
                served.closing = true;
                s.close(c).expect("open");
            }
        }
        s.flush();
        if done(&uploaded, conns.len()) {
            return uploaded;
        }
        if s.stats().rx_frames == before {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    panic!("the transfer did not finish: {:?}", s.stats());
}

/// curl downloads `len` bytes from the server; socat uploads `len`.
fn curl_and_socat_against_the_stack<P: Port>(bed: &VethBed, s: &mut Stack<P>, len: usize) {
    let body = pattern(1, len);
    let upload = pattern(2, len);
    let got = temp("curl-out");
    let sent = temp("socat-in");
    std::fs::write(&sent, &upload).expect("write upload");
    let url = "http://10.99.0.1/".to_string();
    let mut curl = spawn_in(
        bed.b.name(),
        &[
            "curl",
            "-sS",
            "--max-time",
            "120",
            "-o",
            got.to_str().expect("path"),
            &url,
        ],
    );
    let target = format!("TCP:{OURS}:9000");
    let mut socat = spawn_in(
        bed.b.name(),
        &["socat", "-u", &format!("FILE:{}", sent.display()), &target],
    );
    let mut status = (None, None);
    // Done when both programs have exited and every connection has
    // closed (socat exits once the kernel has taken its bytes; the stack
    // reads the rest after).
    let uploaded = serve(s, &body, |uploaded, open| {
        if status.0.is_none() {
            status.0 = curl.try_wait();
        }
        if status.1.is_none() {
            status.1 = socat.try_wait();
        }
        status.0.is_some() && status.1.is_some() && open == 0 && !uploaded.is_empty()
    });
    let (curl_status, socat_status) = (status.0.expect("curl"), status.1.expect("socat"));
    assert!(curl_status.success(), "curl: {curl_status}");
    assert!(socat_status.success(), "socat: {socat_status}");
    let downloaded = std::fs::read(&got).expect("curl's file");
    assert_eq!(downloaded.len(), body.len(), "curl's byte count");
    assert!(downloaded == body, "curl's bytes differ");
    assert_eq!(uploaded.len(), upload.len(), "socat's byte count");
    assert!(uploaded == upload, "socat's bytes differ");
    let _ = std::fs::remove_file(got);
    let _ = std::fs::remove_file(sent);
}

/// The stack connects to `socat` listeners in the kernel's namespace:
/// one sends it a file, the other keeps what the stack sends.
fn the_stack_as_a_client<P: Port>(bed: &VethBed, s: &mut Stack<P>, len: usize) {
    let file = pattern(3, len);
    let upload = pattern(4, len);
    let source = temp("source");
    let sink = temp("sink");
    std::fs::write(&source, &file).expect("write");
    let mut sender = spawn_in(
        bed.b.name(),
        &[
            "socat",
            "-u",
            &format!("FILE:{}", source.display()),
            "TCP-LISTEN:9001,reuseaddr",
        ],
    );
    let mut receiver = spawn_in(
        bed.b.name(),
        &[
            "socat",
            "-u",
            "TCP-LISTEN:9002,reuseaddr",
            &format!("CREATE:{}", sink.display()),
        ],
    );
    let kernel: Ipv4Addr = KERNEL.parse().expect("address");
    let mut down = None;
    let mut up = None;
    let mut got = Vec::new();
    let mut sent = 0;
    let mut shut = false;
    let mut closed = 0;
    let mut refused = 0;
    let mut receiver_status = None;
    for _ in 0..MAX_PASSES {
        if down.is_none() {
            down = Some(s.connect(SocketAddrV4::new(kernel, 9001)).expect("connect"));
        }
        if up.is_none() {
            up = Some(s.connect(SocketAddrV4::new(kernel, 9002)).expect("connect"));
        }
        let before = s.stats().rx_frames;
        s.poll();
        while let Some(ev) = s.next_event() {
            match ev {
                Event::Readable(c) if Some(c) == down => {
                    let data = s.peek(c).expect("open").to_vec();
                    s.consume(c, data.len()).expect("open");
                    got.extend_from_slice(&data);
                }
                Event::PeerClosed(c) if Some(c) == down => s.close(c).expect("open"),
                Event::PeerClosed(c) if Some(c) == up => s.close(c).expect("open"),
                Event::Closed(c, CloseReason::ConnectFailed(e)) => {
                    // The listener was not up yet: try again.
                    assert_eq!(e, libc::ECONNREFUSED);
                    refused += 1;
                    assert!(refused < 10_000, "socat never listened");
                    if Some(c) == down {
                        down = None;
                    } else {
                        up = None;
                        sent = 0;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Event::Closed(c, why) => {
                    assert_eq!(why, CloseReason::Local, "{c}");
                    closed += 1;
                }
                _ => {}
            }
        }
        if let Some(c) = up
            && s.conn_stats(c)
                .is_ok_and(|st| st.state != dataplane::transport::stack::TcpState::SynSent)
        {
            if sent < upload.len() {
                sent += s.write(c, &upload[sent..]).expect("open");
            } else if !shut {
                shut = true;
                s.shutdown(c).expect("open");
            }
        }
        s.flush();
        if receiver_status.is_none() {
            receiver_status = receiver.try_wait();
        }
        if closed == 2 && receiver_status.is_some() {
            break;
        }
        if s.stats().rx_frames == before {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    assert_eq!(closed, 2, "both connections closed: {:?}", s.stats());
    let sender_status = sender.0.wait().expect("socat");
    assert!(sender_status.success(), "sending socat: {sender_status}");
    let receiver_status = receiver_status.expect("receiving socat");
    assert!(
        receiver_status.success(),
        "receiving socat: {receiver_status}"
    );
    assert_eq!(got.len(), file.len(), "bytes downloaded");
    assert!(got == file, "downloaded bytes differ");
    let written = std::fs::read(&sink).expect("socat's file");
    assert_eq!(written.len(), upload.len(), "bytes uploaded");
    assert!(written == upload, "uploaded bytes differ");
    let _ = std::fs::remove_file(source);
    let _ = std::fs::remove_file(sink);
}

#[test]
fn curl_and_socat_talk_to_a_server_on_the_stack() {
    let Some((bed, port)) = setup(1500) else {
        return;
    };
    let pool = port.pool().clone();
    let mut s = stack(port, 1500);
    curl_and_socat_against_the_stack(&bed, &mut s, 8 << 20);
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
    the_stack_as_a_client(&bed, &mut s, 4 << 20);
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
    curl_and_socat_against_the_stack(&bed, &mut s, 2 << 20);
    the_stack_as_a_client(&bed, &mut s, 2 << 20);
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
