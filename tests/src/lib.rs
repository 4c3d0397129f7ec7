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
