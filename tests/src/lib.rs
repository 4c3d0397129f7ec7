//! Helpers shared by the end-to-end tests in `tests/tests/`.
#![deny(unsafe_code)]

use dataplane::require;

/// Decides what a test does when a capability is unavailable here: the one
/// rule every test follows (see [`dataplane::require`]).
pub use dataplane::require::available_or_skip;

use dataplane::net::netns::{self, Netns, unique_name, veth_pair};
use dataplane::net::{self, BackendChoice, PortConfig};
use dataplane::require::{Capability, Requirements};

/// Checks `DATAPLANE_REQUIRE=dpdk` on an automatic open of a device DPDK
/// cannot drive: when DPDK is required, `open` (run on whatever thread the
/// device needs) must refuse with [`dataplane::Error::Required`] naming
/// dpdk rather than fall back. Does nothing when DPDK is not required.
///
/// # Panics
/// When DPDK is required and `open` fell back or failed otherwise.
pub fn assert_dpdk_required_refuses<T: std::fmt::Debug>(
    open: impl FnOnce() -> dataplane::Result<T>,
) {
    if !require::required(Capability::Dpdk) {
        return;
    }
    let refused = open();
    assert!(
        matches!(&refused, Err(dataplane::Error::Required { capability, .. }) if *capability == "dpdk"),
        "DATAPLANE_REQUIRE=dpdk, yet: {refused:?}"
    );
}

/// Two network namespaces joined by a veth pair, `veth0` in each; both go
/// away (with the pair) when this drops.
#[derive(Debug)]
pub struct VethBed {
    /// One end.
    pub a: Netns,
    /// The other.
    pub b: Netns,
}

/// Makes a [`VethBed`], or skips through the `netns` capability (a
/// failure when `DATAPLANE_REQUIRE` names it).
///
/// # Panics
/// When the namespaces or the pair cannot be made though the probe said
/// they could.
pub fn veth_bed() -> Option<VethBed> {
    let p = netns::probe();
    if !available_or_skip(Capability::Netns, p.available, &p.reason) {
        return None;
    }
    let a = Netns::create(&unique_name("dpa")).expect("namespace a");
    let b = Netns::create(&unique_name("dpb")).expect("namespace b");
    veth_pair(&a, "veth0", &b, "veth0").expect("veth pair");
    Some(VethBed { a, b })
}

/// Opens `cfg` with the automatic choice inside `ns`, twice: once as the
/// environment's `DATAPLANE_REQUIRE` says (which must refuse when it names
/// dpdk, see [`assert_dpdk_required_refuses`]), then with nothing
/// required, which is returned.
///
/// # Panics
/// When the refusal is wrong, or the open fails.
pub fn auto_open_in(ns: &Netns, cfg: PortConfig) -> net::Opened {
    let c = cfg.clone();
    assert_dpdk_required_refuses(|| {
        ns.run(move || net::open(&c, BackendChoice::Auto).map(|o| o.backend))
            .expect("thread")
    });
    ns.run(move || net::open_with(&cfg, BackendChoice::Auto, &Requirements::parse("")))
        .expect("thread")
        .expect("opened")
}

/// The arguments that run only the ignored test `name` of a test binary,
/// on one thread, with its output shown: how a test starts the child half
/// of itself in a process of its own (DPDK's EAL, a process to kill, an
/// environment to change).
pub fn child_test_args(name: &str) -> [&str; 5] {
    [
        name,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]
}

/// This test binary, to run a child test in (see [`child_test_args`]).
///
/// # Panics
/// When the running binary's path cannot be read.
pub fn this_test_binary() -> std::path::PathBuf {
    std::env::current_exe().expect("the test binary's path")
}

/// Frames through real ports: UDP flows with a probe (sequence number and
/// flow) in each payload, sent from one port and received on others.
pub mod frames {
    use dataplane::net::{DropReason, MbufBatch, Port};
    use dataplane::wire::{ChecksumMode, parse_frame_with};
    use dataplane_apps::net::frame::{Probe, UdpFlow, emit_udp, read_probe};
    use std::net::Ipv4Addr;
    use std::time::{Duration, Instant};

    /// Flow `i` from `src` to `dst`: a UDP flow between their MACs.
    ///
    /// # Panics
    /// When a port has no MAC address.
    pub fn flow(i: u16, src: &impl Port, dst: &impl Port) -> UdpFlow {
        UdpFlow {
            src_mac: src.capabilities().mac.expect("veth has a MAC"),
            dst_mac: dst.capabilities().mac.expect("veth has a MAC"),
            src_ip: Ipv4Addr::new(10, 77, (i >> 8) as u8, i as u8),
            dst_ip: Ipv4Addr::new(10, 78, 0, 1),
            src_port: 10_000 + i,
            dst_port: 9,
            ttl: 64,
        }
    }

    /// What [`exchange`] saw.
    #[derive(Debug, Default)]
    pub struct Tally {
        /// Frames the sending port took.
        pub sent: u64,
        /// Our frames received, per rx queue.
        pub received: Vec<u64>,
        /// Frames that were not ours (none are expected: IPv6 is off and no
        /// address is configured, so the kernel sends nothing).
        pub foreign: u64,
        /// Per flow, whether sequence numbers arrived in order.
        pub in_order: bool,
        /// Per flow, the rx queue its first frame arrived on.
        pub flow_queue: Vec<Option<usize>>,
        /// A flow whose frames arrived on more than one queue.
        pub split: bool,
    }

    /// Sends `count` frames over `flows` flows from `tx`, keeping at most 256
    /// in flight, and receives them on `rx`.
    ///
    /// # Panics
    /// When the sender's pool runs dry or a frame cannot be built.
    pub fn exchange<P: Port, Q: Port>(tx: &mut P, rx: &mut [Q], count: u32, flows: u16) -> Tally {
        let mut t = Tally {
            received: vec![0; rx.len()],
            in_order: true,
            flow_queue: vec![None; usize::from(flows)],
            ..Tally::default()
        };
        let flows_v: Vec<UdpFlow> = (0..flows).map(|i| flow(i, tx, &rx[0])).collect();
        let mut last_seq = vec![None::<u32>; usize::from(flows)];
        let mut pending = MbufBatch::new();
        let mut seq = 0u32;
        let mut last_progress = Instant::now();
        loop {
            let in_flight = t.sent - t.received.iter().sum::<u64>();
            if seq < count && pending.is_empty() && in_flight < 256 {
                let n = (count - seq).min(32) as usize;
                assert_eq!(tx.alloc_burst(n, &mut pending), n, "tx pool");
                for m in pending.iter_mut() {
                    let f = (seq % u32::from(flows)) as u16;
                    let len = 60 + (seq % 200) as usize;
                    let data = m.append(len).expect("room");
                    let probe = Probe {
                        tsc: 0,
                        seq,
                        flow: f,
                    };
                    emit_udp(data, len, &flows_v[usize::from(f)], Some(&probe)).expect("frame");
                    seq += 1;
                }
            }
            if !pending.is_empty() {
                let before = pending.len();
                tx.tx_burst(&mut pending);
                t.sent += (before - pending.len()) as u64;
            }
            let mut got = MbufBatch::new();
            let mut progress = false;
            for (q, port) in rx.iter_mut().enumerate() {
                while port.rx_burst(&mut got) > 0 {
                    progress = true;
                    for m in got.drain() {
                        let probe = parse_frame_with(m.data(), ChecksumMode::Software)
                            .ok()
                            .and_then(|info| read_probe(&m.data()[info.payload()]));
                        match probe {
                            Some(p) => {
                                t.received[q] += 1;
                                let last = &mut last_seq[usize::from(p.flow)];
                                if last.is_some_and(|l| l >= p.seq) {
                                    t.in_order = false;
                                }
                                *last = Some(p.seq);
                                let fq = &mut t.flow_queue[usize::from(p.flow)];
                                t.split |= fq.is_some_and(|was| was != q);
                                *fq = Some(q);
                            }
                            None => t.foreign += 1,
                        }
                    }
                }
            }
            if progress {
                last_progress = Instant::now();
            }
            let done = seq == count && pending.is_empty();
            let all_in = t.received.iter().sum::<u64>() == t.sent;
            if done && all_in {
                break;
            }
            // Frames the kernel dropped never come: stop when nothing moves.
            if last_progress.elapsed() > Duration::from_secs(2) && (done || in_flight >= 256) {
                break;
            }
            std::thread::yield_now();
        }
        t
    }

    /// How long [`receive`] keeps polling after the last frame arrived
    /// before it gives up on the rest: a guard against a hung test (the
    /// kernel delivers over veth in microseconds), not a speed goal.
    pub const QUIET: Duration = Duration::from_secs(5);

    /// Polls `rx` into `got` until it holds `want` frames, or until nothing
    /// has arrived for [`QUIET`]; returns how many it holds. Callers assert
    /// on the count, never on the time.
    pub fn receive(rx: &mut impl Port, got: &mut MbufBatch, want: usize) -> usize {
        let mut last = Instant::now();
        while got.len() < want && last.elapsed() < QUIET {
            if rx.rx_burst(got) > 0 {
                last = Instant::now();
            } else {
                std::thread::yield_now();
            }
        }
        got.len()
    }

    /// Drops counted by all of `ports`.
    pub fn drops(ports: &[impl Port]) -> u64 {
        ports.iter().map(|p| p.stats().total_drops()).sum()
    }

    /// Sends three frames from `tx`: one over the 1500-byte MTU, one
    /// shorter than an Ethernet header and one good one; checks that all
    /// three are taken, the two bad ones counted (`Oversized`,
    /// `Truncated`) and not sent, and that the good one arrives on `rx`.
    ///
    /// # Panics
    /// When any of that does not hold.
    pub fn unsendable_frames_are_counted(tx: &mut impl Port, rx: &mut impl Port) {
        let mut pkts = MbufBatch::new();
        assert_eq!(tx.alloc_burst(3, &mut pkts), 3, "tx pool");
        pkts[0].append(1600).expect("room").fill(0xee); // over the 1500 MTU
        pkts[1].append(10).expect("room").fill(0xee); // shorter than a header
        let f = flow(0, tx, rx);
        let probe = Probe {
            tsc: 0,
            seq: 0,
            flow: 0,
        };
        emit_udp(pkts[2].append(60).expect("room"), 60, &f, Some(&probe)).expect("frame");
        assert_eq!(tx.tx_burst(&mut pkts), 3, "all taken");
        assert!(pkts.is_empty());
        let s = tx.stats();
        assert_eq!(s.dropped(DropReason::Oversized), 1);
        assert_eq!(s.dropped(DropReason::Truncated), 1);
        assert_eq!(s.tx_packets, 1);
        let mut got = MbufBatch::new();
        assert_eq!(receive(rx, &mut got, 1), 1, "the good frame arrives");
        assert_eq!(got[0].len(), 60);
    }
}

/// Real programs on the kernel's TCP against the user-space stack
/// (`dataplane::transport::stack`), for the tests that run the stack over
/// AF_PACKET (`stack_linux`) and over DPDK's `net_af_packet`
/// (`net_dpdk`): the stack is 10.99.0.1 on one end of a veth, the kernel
/// 10.99.0.2 on the other, in a namespace of its own.
pub mod stack_peers {
    use dataplane::net::Port;
    use dataplane::transport::stack::Stack;
    use dataplane::transport::{CloseReason, ConnId, Event};
    use std::collections::HashMap;
    use std::net::{Ipv4Addr, SocketAddrV4};
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    /// The stack's address.
    pub const OURS: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
    /// The kernel's.
    pub const KERNEL: &str = "10.99.0.2";

    /// Passes of the stack's loop before a test gives up (each pass
    /// sleeps 50 µs when nothing arrived, so this bounds a test at a few
    /// minutes).
    const MAX_PASSES: usize = 3_000_000;

    /// Whether `tool` runs; a skip if not (a failure where
    /// `DATAPLANE_REQUIRE` names `netns`).
    pub fn have(tool: &str) -> bool {
        let ok = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !ok {
            assert!(
                !dataplane::require::required(dataplane::require::Capability::Netns),
                "{tool} is needed (scripts/install-deps.sh installs it)"
            );
            println!("skip: {tool} is not installed (scripts/install-deps.sh installs it)");
        }
        ok
    }

    /// A [`super::VethBed`] for the stack: both ends at `mtu`, the
    /// kernel's end (`b`) at 10.99.0.2/24 with its checksum and
    /// segmentation offloads off (so that a packet socket on the other
    /// end sees whole checksums and MTU-sized segments), and curl, socat
    /// and ethtool present; `None` (a skip) where something is missing.
    ///
    /// # Panics
    /// When the bed cannot be configured.
    pub fn stack_bed(mtu: u16) -> Option<super::VethBed> {
        let bed = super::veth_bed()?;
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
        Some(bed)
    }

    /// The stack's configuration: [`OURS`]/24 at `mtu`, TIME-WAIT short.
    ///
    /// # Panics
    /// Never (the address is a constant).
    pub fn stack_config(mtu: u16) -> dataplane::transport::stack::StackConfig {
        let mut cfg =
            dataplane::transport::stack::StackConfig::new(dataplane::transport::stack::Ipv4Cidr {
                addr: OURS,
                prefix_len: 24,
            });
        cfg.mtu = Some(usize::from(mtu));
        cfg.time_wait = Duration::from_millis(100);
        cfg
    }

    /// `len` pseudo-random bytes from `seed` (xorshift).
    pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
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

    /// A file name in the temporary directory, unique to this call (the
    /// tests of one binary run at once, in one process).
    pub fn temp(name: &str) -> PathBuf {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        // Relaxed: only uniqueness matters.
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        std::env::temp_dir().join(format!("dp-stack-{}-{n}-{name}", std::process::id()))
    }

    /// A program in the kernel's namespace, killed and reaped when dropped
    /// (on every path, a failed assertion's included).
    #[derive(Debug)]
    pub struct Peer(pub Child);

    impl Drop for Peer {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    impl Peer {
        /// Its exit status, once it has exited.
        pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
            self.0.try_wait().expect("a child's status")
        }
    }

    /// Starts `args` in namespace `bed_ns` (`ip netns exec`).
    ///
    /// # Panics
    /// When it cannot start.
    pub fn spawn_in(bed_ns: &str, args: &[&str]) -> Peer {
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
    pub fn serve<P: Port>(
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
    pub fn curl_and_socat_against_the_stack<P: Port>(
        kernel_ns: &str,
        s: &mut Stack<P>,
        len: usize,
    ) {
        let body = pattern(1, len);
        let upload = pattern(2, len);
        let got = temp("curl-out");
        let sent = temp("socat-in");
        std::fs::write(&sent, &upload).expect("write upload");
        let url = "http://10.99.0.1/".to_string();
        let mut curl = spawn_in(
            kernel_ns,
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
            kernel_ns,
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
    pub fn the_stack_as_a_client<P: Port>(kernel_ns: &str, s: &mut Stack<P>, len: usize) {
        let file = pattern(3, len);
        let upload = pattern(4, len);
        let source = temp("source");
        let sink = temp("sink");
        std::fs::write(&source, &file).expect("write");
        let mut sender = spawn_in(
            kernel_ns,
            &[
                "socat",
                "-u",
                &format!("FILE:{}", source.display()),
                "TCP-LISTEN:9001,reuseaddr",
            ],
        );
        let mut receiver = spawn_in(
            kernel_ns,
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

    /// The lengths and bodies of the HTTP/1.1 responses whole in `buf`
    /// (`Content-Length` framing), and each head's text; the bytes used.
    fn responses(buf: &[u8]) -> (Vec<(String, Vec<u8>)>, usize) {
        let mut out = Vec::new();
        let mut at = 0;
        while let Some(end) = buf[at..].windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[at..at + end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .expect("a Content-Length");
            let body_at = at + end + 4;
            if buf.len() < body_at + len {
                break;
            }
            out.push((head, buf[body_at..body_at + len].to_vec()));
            at = body_at + len;
        }
        (out, at)
    }

    /// The stack as an HTTP client of nginx (Debian's nginx-light, one
    /// process) in `kernel_ns`: three requests pipelined on one
    /// connection (a file of `len` bytes, a missing one, the file again
    /// with `Connection: close`), every byte of both downloads compared,
    /// nginx's 404 seen, and nginx's close after the third answered with
    /// ours. Returns false (a skip) where nginx is missing.
    ///
    /// # Panics
    /// When anything differs or the exchange does not finish.
    pub fn the_stack_fetches_from_nginx<P: Port>(
        kernel_ns: &str,
        s: &mut Stack<P>,
        len: usize,
    ) -> bool {
        if !have("nginx") {
            return false;
        }
        let dir = temp("nginx");
        std::fs::create_dir_all(dir.join("www")).expect("nginx dir");
        let file = pattern(5, len);
        std::fs::write(dir.join("www/file.bin"), &file).expect("file");
        let d = dir.display();
        let conf = format!(
            "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid;\n\
             error_log {d}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d};\n\
             fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n\
             server {{ listen {KERNEL}:8081; root {d}/www; }} }}\n"
        );
        std::fs::write(dir.join("nginx.conf"), conf).expect("conf");
        let conf_path = dir.join("nginx.conf");
        let _nginx = spawn_in(
            kernel_ns,
            &["nginx", "-c", conf_path.to_str().expect("path")],
        );
        let kernel: Ipv4Addr = KERNEL.parse().expect("address");
        let requests = b"GET /file.bin HTTP/1.1\r\nHost: k\r\n\r\n\
            GET /missing HTTP/1.1\r\nHost: k\r\n\r\n\
            GET /file.bin HTTP/1.1\r\nHost: k\r\nConnection: close\r\n\r\n";
        let mut conn = None;
        let mut sent = 0;
        let mut got = Vec::new();
        let mut refused = 0;
        let mut closed = None;
        for _ in 0..MAX_PASSES {
            if conn.is_none() {
                conn = Some(s.connect(SocketAddrV4::new(kernel, 8081)).expect("connect"));
                sent = 0;
            }
            let before = s.stats().rx_frames;
            s.poll();
            while let Some(ev) = s.next_event() {
                match ev {
                    Event::Readable(c) => {
                        let data = s.peek(c).expect("open").to_vec();
                        s.consume(c, data.len()).expect("open");
                        got.extend_from_slice(&data);
                    }
                    Event::PeerClosed(c) => s.close(c).expect("open"),
                    Event::Closed(_, CloseReason::ConnectFailed(e)) => {
                        // nginx was not listening yet: try again.
                        assert_eq!(e, libc::ECONNREFUSED);
                        refused += 1;
                        assert!(refused < 10_000, "nginx never listened");
                        conn = None;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Event::Closed(_, why) => closed = Some(why),
                    _ => {}
                }
            }
            if let Some(c) = conn
                && sent < requests.len()
                && s.conn_stats(c)
                    .is_ok_and(|st| st.state != dataplane::transport::stack::TcpState::SynSent)
            {
                sent += s.write(c, &requests[sent..]).expect("open");
            }
            s.flush();
            if closed.is_some() {
                break;
            }
            if s.stats().rx_frames == before {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
        assert_eq!(closed, Some(CloseReason::Local), "{:?}", s.stats());
        let (answers, used) = responses(&got);
        assert_eq!(used, got.len(), "bytes after the last whole response");
        assert_eq!(
            answers.len(),
            3,
            "{:?}",
            answers.iter().map(|a| &a.0).collect::<Vec<_>>()
        );
        assert!(answers[0].0.starts_with("HTTP/1.1 200"), "{}", answers[0].0);
        assert!(answers[0].1 == file, "the first download differs");
        assert!(answers[1].0.starts_with("HTTP/1.1 404"), "{}", answers[1].0);
        assert!(answers[2].0.starts_with("HTTP/1.1 200"), "{}", answers[2].0);
        assert!(
            answers[2]
                .0
                .to_ascii_lowercase()
                .contains("connection: close"),
            "{}",
            answers[2].0
        );
        assert!(answers[2].1 == file, "the second download differs");
        let _ = std::fs::remove_dir_all(&dir);
        true
    }
}
