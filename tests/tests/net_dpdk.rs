//! End to end: the DPDK backend on DPDK's own virtual devices, each with
//! and without hugepages: `net_ring` (loopback through rte_rings),
//! `net_null` (an endless source and a sink; also two ports sharing one
//! pool), `net_tap` (a kernel tap
//! interface, inside a network namespace the test makes), `net_memif` (a
//! server and a client port in one process, over a socket in a temporary
//! directory) and `net_af_packet` (both ends of a veth pair in a namespace
//! the test makes), plus a forced EAL failure.
//!
//! DPDK's EAL starts once per process and cannot start again, so every
//! scenario runs in a child process of this test binary (the ignored test
//! `child`, told what to do by an environment variable) with its own EAL
//! (`--in-memory`, a unique `--file-prefix`): the scenarios run in parallel
//! and each sees a fresh DPDK.
//!
//! Each scenario checks that packets sent equal packets received plus the
//! drops counted, and that every mbuf returned to its pool
//! (`rte_mempool_avail_count == size` before each pool is freed).
//!
//! Without DPDK (or, for the hugepage variants, free hugepages; for
//! `net_tap` and `net_af_packet`, root) a test prints `skip: <reason>`; with `DATAPLANE_REQUIRE`
//! naming the capability, it fails instead.

mod net_dpdk_scenarios;

use dataplane::net::dpdk::{self, EalState, Memory};
use dataplane::require::Capability;
use dataplane_tests::available_or_skip;
use net_dpdk_scenarios as scenarios;
use std::process::Command;

/// Names the scenario a child process runs.
const CHILD_ENV: &str = "DATAPLANE_DPDK_TEST_SCENARIO";

// ---- the parent side ------------------------------------------------------------

fn dpdk_or_skip() -> bool {
    let why = match dpdk::state() {
        EalState::Unavailable(why) => why,
        _ => return true,
    };
    available_or_skip(Capability::Dpdk, false, &why)
}

fn hugepages_or_skip() -> bool {
    let free: u64 = hugepages::system::hugepage_pools()
        .iter()
        .map(|p| p.free_bytes())
        .sum();
    let want = dpdk::AUTO_MIN_FREE_HUGEPAGES * (2 << 20);
    available_or_skip(
        Capability::Hugepages,
        free >= want,
        &format!(
            "{} MiB of hugepages free, {} MiB needed",
            free >> 20,
            want >> 20
        ),
    )
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the process's effective user.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Runs `scenario` in a child process (optionally under a wrapper command
/// such as `ip netns exec NS`) and fails with its output if it fails.
fn run_child(scenario: &str, wrapper: &[&str], env: &[(&str, &str)]) {
    let exe = dataplane_tests::this_test_binary();
    let mut cmd = match wrapper.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    cmd.args(dataplane_tests::child_test_args("child"))
        .env(CHILD_ENV, scenario);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("start the child process");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("--- child {scenario} stdout:\n{stdout}\n--- child {scenario} stderr:\n{stderr}");
    assert!(
        out.status.success(),
        "scenario {scenario} failed ({}); its output is above",
        out.status
    );
    assert!(
        stdout.contains(&format!("scenario {scenario}: ok")),
        "scenario {scenario} did not run to its end"
    );
}

#[test]
fn ring_hugepages() {
    if dpdk_or_skip() && hugepages_or_skip() {
        run_child("ring:huge", &[], &[]);
    }
}

#[test]
fn ring_no_huge() {
    if dpdk_or_skip() {
        run_child("ring:nohuge", &[], &[]);
    }
}

#[test]
fn null_hugepages() {
    if dpdk_or_skip() && hugepages_or_skip() {
        run_child("null:huge", &[], &[]);
    }
}

#[test]
fn null_no_huge() {
    if dpdk_or_skip() {
        run_child("null:nohuge", &[], &[]);
    }
}

#[test]
fn shared_pool_hugepages() {
    if dpdk_or_skip() && hugepages_or_skip() {
        run_child("shared-pool:huge", &[], &[]);
    }
}

#[test]
fn shared_pool_no_huge() {
    if dpdk_or_skip() {
        run_child("shared-pool:nohuge", &[], &[]);
    }
}

/// A network namespace made for one test and removed after it.
struct Netns(String);

impl Netns {
    fn create(tag: &str) -> Option<Netns> {
        let name = format!("dp{tag}{}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Netns(name))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Whether net_tap can make its kernel interface (root); a skip, or a
/// failure where DATAPLANE_REQUIRE names dpdk, if not.
fn root_for_tap_or_skip() -> bool {
    available_or_skip(
        Capability::Dpdk,
        is_root(),
        "net_tap creates a kernel interface, which needs root",
    )
}

fn tap(memory: &str) {
    if !dpdk_or_skip() || (memory == "huge" && !hugepages_or_skip()) {
        return;
    }
    if !root_for_tap_or_skip() {
        return;
    }
    let scenario = format!("tap:{memory}");
    match Netns::create(memory) {
        Some(ns) => run_child(&scenario, &["ip", "netns", "exec", &ns.0], &[]),
        None => {
            // No namespaces here: the interface gets a unique name and goes
            // away when the port closes.
            println!("note: no network namespace could be made; the tap lives in this one");
            run_child(&scenario, &[], &[]);
        }
    }
}

#[test]
fn tap_hugepages() {
    tap("huge");
}

#[test]
fn tap_no_huge() {
    tap("nohuge");
}

/// net_memif: a server port and a client port of one process, connected
/// through a socket file in a temporary directory.
#[test]
fn memif_no_huge() {
    if !dpdk_or_skip() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("dp-memif-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let sock = dir.join("memif.sock");
    let sock = sock.to_string_lossy();
    run_child(
        "memif:nohuge",
        &[],
        &[("DATAPLANE_DPDK_TEST_SOCKET", &sock)],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// net_af_packet: both ends of a veth pair, in a namespace of its own.
#[test]
fn af_packet_no_huge() {
    if !dpdk_or_skip()
        || !available_or_skip(
            Capability::Dpdk,
            is_root(),
            "net_af_packet needs a veth pair, which needs root",
        )
    {
        return;
    }
    let Some(ns) = Netns::create("afp") else {
        available_or_skip(
            Capability::Dpdk,
            false,
            "no network namespace could be made",
        );
        return;
    };
    let exec = |args: &[&str]| {
        let ok = Command::new("ip")
            .args(["netns", "exec", &ns.0])
            .args(args)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "{args:?} failed in {}", ns.0);
    };
    exec(&[
        "ip", "link", "add", "dpva", "type", "veth", "peer", "name", "dpvb",
    ]);
    for dev in ["dpva", "dpvb"] {
        // No IPv6: the kernel's own neighbour discovery stays off the wire.
        exec(&[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{dev}.disable_ipv6=1"),
        ]);
        exec(&["ip", "link", "set", dev, "up"]);
    }
    run_child("afpacket:nohuge", &["ip", "netns", "exec", &ns.0], &[]);
}

/// The user-space TCP/IP stack over `net_af_packet` on one end of a veth,
/// Linux's TCP on the other: curl downloads from a server on the stack and
/// socat uploads to it, every byte compared (the same transfers as
/// `stack_linux` runs over our own AF_PACKET backend).
#[test]
fn tcp_stack_over_af_packet_no_huge() {
    if !dpdk_or_skip() {
        return;
    }
    let Some(bed) = dataplane_tests::stack_peers::stack_bed(1500) else {
        return;
    };
    run_child(
        "stack:nohuge",
        &["ip", "netns", "exec", bed.a.name()],
        &[("DATAPLANE_DPDK_TEST_PEER_NS", bed.b.name())],
    );
}

/// The user-space TCP/IP stack over `net_tap` with checksums left to the
/// port both ways; curl and socat on the tap's kernel side.
#[test]
fn tcp_stack_with_checksum_offload_over_tap_no_huge() {
    if !dpdk_or_skip() {
        return;
    }
    if !root_for_tap_or_skip() {
        return;
    }
    use dataplane_tests::stack_peers::have;
    if !(have("curl") && have("socat")) {
        return;
    }
    let Some(ns) = Netns::create("st") else {
        available_or_skip(
            Capability::Netns,
            false,
            "no network namespace could be made",
        );
        return;
    };
    run_child(
        "stack-tap:nohuge",
        &["ip", "netns", "exec", &ns.0],
        &[("DATAPLANE_DPDK_TEST_PEER_NS", &ns.0)],
    );
}

/// An EAL that cannot start (an argument EAL does not know, through
/// DATAPLANE_EAL_ARGS): the backend reports DPDK's reason, keeps it, and
/// its probe says unavailable.
#[test]
fn eal_failure_is_reported() {
    if dpdk_or_skip() {
        run_child(
            "eal-failure",
            &[],
            &[(dpdk::EAL_ARGS_ENV, "--no-such-eal-option")],
        );
    }
}

// ---- the child side ---------------------------------------------------------------

/// The entry point of the child processes; does nothing unless
/// [`CHILD_ENV`] names a scenario.
#[test]
#[ignore = "run by the other tests in a child process of their own"]
fn child() {
    let Ok(scenario) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (what, memory) = scenario.split_once(':').unwrap_or((scenario.as_str(), ""));
    let memory = match memory {
        "huge" => Memory::Hugepages { mb: None },
        _ => Memory::NoHuge { mb: 256 },
    };
    match what {
        "ring" => scenarios::ring(memory),
        "null" => scenarios::null(memory),
        "shared-pool" => scenarios::shared_pool(memory),
        "tap" => scenarios::tap_child(memory),
        "memif" => {
            let sock = std::env::var("DATAPLANE_DPDK_TEST_SOCKET").expect("the socket path");
            let server = format!("net_memif0,role=server,id=0,socket={sock},socket-abstract=no");
            let client = format!("net_memif1,role=client,id=0,socket={sock},socket-abstract=no");
            scenarios::between(memory, &client, &server);
        }
        "afpacket" => scenarios::between(
            memory,
            "net_af_packet0,iface=dpva",
            "net_af_packet1,iface=dpvb",
        ),
        "stack" => {
            let peer = std::env::var("DATAPLANE_DPDK_TEST_PEER_NS").expect("the peer's namespace");
            scenarios::tcp_stack(memory, "net_af_packet0,iface=veth0", &peer);
        }
        "stack-tap" => {
            let peer = std::env::var("DATAPLANE_DPDK_TEST_PEER_NS").expect("the peer's namespace");
            scenarios::tcp_stack_on_tap(memory, &peer);
        }
        "eal-failure" => scenarios::eal_failure(),
        other => panic!("unknown scenario {other:?}"),
    }
    println!("scenario {scenario}: ok");
}
