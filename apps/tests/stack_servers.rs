//! `dp-http` and `dp-kv` on the user-space TCP/IP stack (`--stack-port`)
//! over AF_PACKET, two shards on two queues of a veth, against real
//! clients on the kernel's stack in the other namespace: `curl` (every
//! byte of a file and an echoed upload compared), `wrk`, `redis-cli` and
//! `redis-benchmark`.
//!
//! Needs the `netns` capability and the clients (scripts/install-deps.sh);
//! skips without them, except where `DATAPLANE_REQUIRE` names `netns`.

mod support;

use dataplane::net::netns::{self, Netns, unique_name, veth_pair};
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

const OURS: &str = "10.98.0.1";

struct Bed {
    a: Netns,
    b: Netns,
}

/// Two namespaces and a veth; the kernel's side has an address and its
/// offloads off (AF_PACKET then sees whole checksums and MTU-sized
/// segments); ours has no address, so its kernel stays out.
fn bed(tools: &[&str]) -> Option<Bed> {
    let p = netns::probe();
    if !p.available {
        assert!(!support::required("netns"), "netns: {}", p.reason);
        println!("skip: {}", p.reason);
        return None;
    }
    if !tools.iter().chain(&["ethtool"]).all(|t| support::have(t)) {
        return None;
    }
    let a = Netns::create(&unique_name("dsa")).expect("namespace");
    let b = Netns::create(&unique_name("dsb")).expect("namespace");
    veth_pair(&a, "veth0", &b, "veth0").expect("veth");
    for ns in [&a, &b] {
        ns.exec(&[
            "ethtool", "-K", "veth0", "tx", "off", "tso", "off", "gso", "off", "gro", "off",
        ])
        .expect("offloads off");
    }
    b.exec(&["ip", "addr", "add", "10.98.0.2/24", "dev", "veth0"])
        .expect("address");
    Some(Bed { a, b })
}

struct Server {
    child: Child,
    out: Option<BufReader<std::process::ChildStdout>>,
    dir: Option<PathBuf>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

impl Server {
    /// Starts `bin` with `args` in namespace `ns` and waits for the line
    /// it prints once every shard listens.
    fn start(ns: &Netns, bin: &str, args: &[&str], dir: Option<PathBuf>) -> Server {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns.name(), bin])
            .args(args)
            .args([
                "--stack-address",
                &format!("{OURS}/24"),
                "--stack-port",
                "veth0",
                "--stack-backend",
                "af_packet",
                "--lcores",
                "2",
                "--json",
            ])
            .env("DATAPLANE_AFFINITY", "off")
            .env("DATAPLANE_IDLE", "adaptive")
            .stdout(Stdio::piped())
            .spawn()
            .expect("server");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        loop {
            let mut line = String::new();
            let n = out.read_line(&mut line).expect("the server's stdout");
            assert!(n > 0, "{bin} exited before listening");
            if line.contains("listening on") {
                assert!(line.contains("stack engine"), "{line}");
                break;
            }
        }
        Server {
            child,
            out: Some(out),
            dir,
        }
    }

    /// SIGTERM, then the JSON summary.
    fn finish(mut self) -> serde_json::Value {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        let mut out = String::new();
        if let Some(mut s) = self.out.take() {
            s.read_to_string(&mut out).expect("stdout");
        }
        assert!(self.child.wait().expect("wait").success(), "{out}");
        let last = out.lines().last().expect("a summary line");
        serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {last}"))
    }
}

fn pattern(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Runs `args` in namespace `ns`; its standard output.
fn run_in(ns: &Netns, args: &[&str]) -> Vec<u8> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns.name(), "timeout", "60"])
        .args(args)
        .output()
        .expect("a client");
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn dp_http_on_the_stack_serves_curl_and_wrk() {
    let Some(bed) = bed(&["curl", "wrk"]) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("dp-stack-http-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let blob = pattern(2 << 20);
    std::fs::write(dir.join("blob.bin"), &blob).expect("file");
    let upload = pattern(300_000);
    let up = dir.join("up.bin");
    std::fs::write(&up, &upload).expect("file");
    let server = Server::start(
        &bed.a,
        env!("CARGO_BIN_EXE_dp-http"),
        &[
            "--listen",
            "0.0.0.0:8080",
            "--max-body",
            "512kb",
            "--files",
            dir.to_str().expect("path"),
        ],
        Some(dir.clone()),
    );
    let base = format!("http://{OURS}:8080");
    let hello = run_in(&bed.b, &["curl", "-sS", &format!("{base}/plaintext")]);
    assert_eq!(hello, b"Hello, World!");
    let got = run_in(&bed.b, &["curl", "-sS", &format!("{base}/files/blob.bin")]);
    assert_eq!(got.len(), blob.len());
    assert!(got == blob, "the file's bytes differ");
    let echoed = run_in(
        &bed.b,
        &[
            "curl",
            "-sS",
            "--data-binary",
            &format!("@{}", up.display()),
            &format!("{base}/echo"),
        ],
    );
    assert!(echoed == upload, "the echoed body differs");
    let text = String::from_utf8(run_in(
        &bed.b,
        &["wrk", "-t1", "-c16", "-d2s", &format!("{base}/plaintext")],
    ))
    .expect("utf-8");
    assert!(
        !text.contains("Non-2xx") && !text.contains("Socket errors"),
        "{text}"
    );
    let reqs: u64 = text
        .lines()
        .find_map(|l| {
            l.trim()
                .split_once(" requests in ")
                .and_then(|(n, _)| n.parse().ok())
        })
        .unwrap_or_else(|| panic!("no request count in {text}"));
    assert!(reqs > 100, "{text}");
    let sum = server.finish();
    assert_eq!(sum["engine"], "stack", "{sum}");
    assert!(sum["requests"].as_u64().unwrap_or(0) >= reqs + 3, "{sum}");
    assert_eq!(sum["refused"], 0, "{sum}");
}

#[test]
fn dp_kv_on_the_stack_answers_redis_cli_and_redis_benchmark() {
    let Some(bed) = bed(&["redis-cli", "redis-benchmark"]) else {
        return;
    };
    let server = Server::start(
        &bed.a,
        env!("CARGO_BIN_EXE_dp-kv"),
        &["--port", "6390"],
        None,
    );
    let cli = |args: &[&str]| {
        let mut all = vec!["redis-cli", "-h", OURS, "-p", "6390"];
        all.extend_from_slice(args);
        String::from_utf8(run_in(&bed.b, &all)).expect("utf-8")
    };
    assert_eq!(cli(&["SET", "greeting", "hello"]).trim(), "OK");
    assert_eq!(cli(&["GET", "greeting"]).trim(), "hello");
    for _ in 0..5 {
        cli(&["INCR", "n"]);
    }
    assert_eq!(cli(&["GET", "n"]).trim(), "5");
    let bench = String::from_utf8(run_in(
        &bed.b,
        &[
            "redis-benchmark",
            "-h",
            OURS,
            "-p",
            "6390",
            "-n",
            "20000",
            "-c",
            "16",
            "-t",
            "set,get",
            "-q",
        ],
    ))
    .expect("utf-8");
    assert!(bench.contains("SET:") && bench.contains("GET:"), "{bench}");
    assert_eq!(
        cli(&["DBSIZE"]).trim(),
        "3",
        "greeting, n, key:__rand_int__"
    );
    let sum = server.finish();
    assert_eq!(
        sum["engines"],
        serde_json::json!(["stack", "stack"]),
        "{sum}"
    );
}
