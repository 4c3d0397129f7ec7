//! `dp-kv` against the real thing: the same commands sent to
//! `redis-server` and to `dp-kv` (two shards, so that keys cross between
//! lcores) must get the same replies, byte for byte, one at a time and
//! pipelined, in RESP2 and RESP3; `redis-benchmark` runs against it;
//! concurrent pipelined clients lose no increment; malformed requests are
//! refused with Redis's error and the connection closed; `maxmemory`
//! holds under load. Every test runs on both transport engines.
//!
//! `redis-server` and `redis-tools` come with scripts/install-deps.sh;
//! where they are missing the test says so and passes, except where
//! `DATAPLANE_REQUIRE` names `netns` (CI, which installs them).

mod support;

use dataplane::proto::resp::{Limits, Value, parse_value, value_len};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

/// A server process, killed when dropped.
struct Server {
    child: Child,
    port: u16,
    out: Option<BufReader<std::process::ChildStdout>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A killed process's io_uring is torn down after it is reaped, and
        // a listener in its fixed-file table lives until then: a server
        // started on the port meanwhile would share a reuseport group with
        // it. Wait until the port is free.
        support::poll_until(3000, || TcpListener::bind(("127.0.0.1", self.port)).is_ok());
    }
}

impl Server {
    fn new(mut child: Child, port: u16) -> Self {
        let out = child.stdout.take().map(BufReader::new);
        Self { child, port, out }
    }

    /// Waits for the line dp-kv prints once every shard listens (a
    /// connection made earlier may meet a shard still joining the port).
    fn wait_ready(mut self) -> Self {
        let Some(out) = self.out.as_mut() else {
            // redis-server: its port answers once it listens.
            let port = self.port;
            let up = support::poll_until(3000, || TcpStream::connect(("127.0.0.1", port)).is_ok());
            assert!(up, "redis-server never listened on {port}");
            return self;
        };
        loop {
            let mut line = String::new();
            let n = out.read_line(&mut line).expect("dp-kv's stdout");
            assert!(n > 0, "dp-kv on {} exited before listening", self.port);
            if line.contains("listening on") {
                return self;
            }
        }
    }

    /// Ends the run with SIGTERM and returns its JSON summary.
    fn finish(mut self) -> serde_json::Value {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        let mut out = String::new();
        if let Some(mut s) = self.out.take() {
            s.read_to_string(&mut out).expect("stdout");
        }
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "dp-kv failed: {out}");
        let last = out.lines().last().expect("a summary line");
        serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {last}"))
    }
}

/// dp-kv on `port` with `lcores` shards (unpinned, so more shards than
/// cores is allowed) and `extra` arguments, once it listens.
fn start_kv(port: u16, engine: &str, lcores: usize, extra: &[&str]) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_dp-kv"))
        .args(["--port", &port.to_string(), "--lcores", &lcores.to_string()])
        .args(["--backend", engine, "--json"])
        .args(extra)
        .env("DATAPLANE_AFFINITY", "off")
        .env("DATAPLANE_IDLE", "adaptive")
        .stdout(Stdio::piped())
        .spawn()
        .expect("dp-kv");
    Server::new(child, port).wait_ready()
}

fn dp_kv(engine: &str, extra: &[&str]) -> Server {
    start_kv(support::free_port(), engine, 2, extra)
}

fn redis_server() -> Server {
    redis_server_with(&[])
}

fn redis_server_with(extra: &[&str]) -> Server {
    let port = support::free_port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server");
    Server::new(child, port).wait_ready()
}

fn encode(cmd: &[&str]) -> Vec<u8> {
    let mut b = format!("*{}\r\n", cmd.len()).into_bytes();
    for a in cmd {
        b.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    b
}

/// `read`, again when a signal interrupts it.
fn read_some(s: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match s.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// A connection that reads whole replies.
struct Client {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn new(port: u16) -> Self {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(LIMIT)).expect("timeout");
        Self { s, buf: Vec::new() }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("send");
    }

    /// The next whole reply's bytes; empty at end of stream.
    fn reply(&mut self) -> Vec<u8> {
        let limits = Limits::default();
        loop {
            if let Some(n) = value_len(&self.buf, &limits).expect("a well-formed reply") {
                return self.buf.drain(..n).collect();
            }
            let mut chunk = [0u8; 65536];
            let n = read_some(&mut self.s, &mut chunk).expect("read");
            if n == 0 {
                assert!(self.buf.is_empty(), "a cut reply: {:?}", self.buf);
                return Vec::new();
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn call(&mut self, cmd: &[&str]) -> Vec<u8> {
        self.send(&encode(cmd));
        self.reply()
    }
}

/// Commands whose replies the two servers must agree on. Hash fields are
/// read back one at a time (neither server promises an order for more).
const SCRIPT: &[&[&str]] = &[
    &["PING"],
    &["PING", "hello"],
    &["PING", "a", "b"],
    &["ECHO", "hi"],
    &["ECHO"],
    &["SET", "k", "v"],
    &["GET", "k"],
    &["GET", "nokey"],
    &["GET"],
    &["SET", "k", "v2", "NX"],
    &["SET", "k", "v3", "XX"],
    &["SET", "k", "v4", "GET"],
    &["GET", "k"],
    &["SET", "fresh", "v", "XX"],
    &["SET", "k", "v", "NX", "XX"],
    &["SET", "n", "10"],
    &["INCR", "n"],
    &["DECR", "n"],
    &["INCRBY", "n", "5"],
    &["DECRBY", "n", "3"],
    &["INCRBY", "n", "x"],
    &["INCR", "k"],
    &["INCR", "newcounter"],
    &["SET", "big", "9223372036854775807"],
    &["INCR", "big"],
    &["DECRBY", "n", "-9223372036854775808"],
    &["APPEND", "k", "xyz"],
    &["APPEND", "newstr", "abc"],
    &["STRLEN", "k"],
    &["STRLEN", "nokey"],
    &["SETNX", "k", "z"],
    &["SETNX", "k2", "z"],
    &["MSET", "a", "1", "b", "2", "c", "3", "d", "4", "e", "5"],
    &["MGET", "a", "b", "c", "d", "e", "nokey", "a"],
    &["MSET", "a"],
    &["MSET", "a", "1", "b"],
    &["DEL", "a", "b", "c", "nokey", "a"],
    &["EXISTS", "a", "d", "e", "e", "nokey"],
    &["DEL"],
    &["EXPIRE", "d", "100"],
    &["TTL", "d"],
    &["TTL", "e"],
    &["TTL", "nokey"],
    &["PTTL", "nokey"],
    &["PERSIST", "d"],
    &["PERSIST", "d"],
    &["TTL", "d"],
    &["EXPIRE", "d", "100", "NX"],
    &["EXPIRE", "d", "100", "NX"],
    &["EXPIRE", "d", "100", "XX"],
    &["EXPIRE", "d", "50", "GT"],
    &["EXPIRE", "d", "200", "GT"],
    &["EXPIRE", "d", "300", "LT"],
    &["TTL", "d"],
    &["EXPIRE", "d", "x"],
    &["EXPIRE", "d", "10", "BAD"],
    &["EXPIRE", "d", "10", "NX", "XX"],
    &["EXPIRE", "nokey", "10"],
    &["EXPIRE", "e", "0"],
    &["EXISTS", "e"],
    &["SET", "t", "v", "EX", "100"],
    &["TTL", "t"],
    &["SET", "t", "v", "KEEPTTL"],
    &["TTL", "t"],
    &["SET", "t", "v", "EX", "0"],
    &["SET", "t", "v", "EX", "x"],
    &["SET", "t", "v", "PX", "-5"],
    &["SET", "t", "v", "FOO"],
    &["SET", "t", "v", "EX", "10", "KEEPTTL"],
    &["SET", "t", "v", "EX"],
    &["TYPE", "t"],
    &["TYPE", "nokey"],
    &["HSET", "h", "f1", "v1", "f2", "v2"],
    &["HSET", "h", "f1", "x"],
    &["HSET", "h", "f1"],
    &["HGET", "h", "f1"],
    &["HGET", "h", "nof"],
    &["HGET", "nokey", "f"],
    &["HEXISTS", "h", "f2"],
    &["HEXISTS", "h", "nof"],
    &["HLEN", "h"],
    &["HDEL", "h", "f1", "nof"],
    &["HGETALL", "h"],
    &["HGETALL", "nokey"],
    &["HDEL", "h", "f2"],
    &["EXISTS", "h"],
    &["TYPE", "h"],
    &["LPUSH", "l", "a", "b", "c"],
    &["RPUSH", "l", "d", "e"],
    &["LRANGE", "l", "0", "-1"],
    &["LRANGE", "l", "1", "2"],
    &["LRANGE", "l", "-2", "-1"],
    &["LRANGE", "l", "-100", "100"],
    &["LRANGE", "l", "5", "10"],
    &["LRANGE", "l", "3", "1"],
    &["LRANGE", "l", "x", "1"],
    &["LRANGE", "nokey", "0", "-1"],
    &["LLEN", "l"],
    &["LLEN", "nokey"],
    &["LPOP", "l"],
    &["RPOP", "l"],
    &["LPOP", "l", "2"],
    &["LPOP", "l", "0"],
    &["LPOP", "nokey"],
    &["LPOP", "nokey", "2"],
    &["LPOP", "l", "-1"],
    &["RPOP", "l", "5"],
    &["EXISTS", "l"],
    &["RPUSH", "l2", "x"],
    &["GET", "l2"],
    &["LPUSH", "k", "x"],
    &["HGET", "l2", "f"],
    &["HSET", "l2", "f", "v"],
    &["TYPE", "l2"],
    &["SET", "l2", "now a string"],
    &["TYPE", "l2"],
    &["SELECT", "0"],
    &["SELECT", "x"],
    &["CLIENT", "GETNAME"],
    &["CLIENT", "SETNAME", "me"],
    &["CLIENT", "GETNAME"],
    &["CLIENT", "SETNAME", "has space"],
    &["CLIENT", "FOO"],
    &["CONFIG", "GET", "save"],
    &["CONFIG", "GET", "appendonly"],
    &["CONFIG", "FOO"],
    &["AUTH", "x"],
    &["AUTH", "default", "x"],
    &["AUTH", "nobody", "x"],
    &["AUTH", "a", "b", "c"],
    &["FOO", "a", "b"],
    &["foo"],
    &["DBSIZE"],
    &["FLUSHALL"],
    &["DBSIZE"],
    &["GET", "k"],
];

/// Runs the script on `port` one command at a time, in `proto`.
fn replies(port: u16, proto: &str) -> Vec<(String, Vec<u8>)> {
    let mut c = Client::new(port);
    assert!(!c.call(&["FLUSHALL"]).is_empty());
    let hello = c.call(&["HELLO", proto]);
    assert!(hello.starts_with(if proto == "3" { b"%7" } else { b"*14" }));
    SCRIPT
        .iter()
        .map(|cmd| (cmd.join(" "), c.call(cmd)))
        .collect()
}

/// The same script sent in one write, replies read after.
fn pipelined(port: u16) -> Vec<u8> {
    let mut c = Client::new(port);
    assert!(!c.call(&["FLUSHALL"]).is_empty());
    let all: Vec<u8> = SCRIPT.iter().flat_map(|cmd| encode(cmd)).collect();
    c.send(&all);
    let mut out = Vec::new();
    for _ in SCRIPT {
        out.extend(c.reply());
    }
    out
}

fn same_replies_as_redis(engine: &str) {
    if !support::have("redis-server") {
        return;
    }
    let redis = redis_server();
    let kv = dp_kv(engine, &[]);
    for proto in ["2", "3"] {
        let want = replies(redis.port, proto);
        let got = replies(kv.port, proto);
        let mut differ = Vec::new();
        for ((cmd, w), (_, g)) in want.iter().zip(&got) {
            if w != g {
                differ.push(format!(
                    "RESP{proto} {cmd}\n  redis: {:?}\n  dp-kv: {:?}",
                    String::from_utf8_lossy(w),
                    String::from_utf8_lossy(g)
                ));
            }
        }
        assert!(
            differ.is_empty(),
            "{} replies differ:\n{}",
            differ.len(),
            differ.join("\n")
        );
    }
    assert_eq!(
        String::from_utf8_lossy(&pipelined(kv.port)),
        String::from_utf8_lossy(&pipelined(redis.port)),
        "pipelined"
    );
    // Durable mode answers the same, each write after its log block is
    // on disk.
    let dir = durable_dir(&format!("script-{engine}"));
    let durable = durable_kv(engine, &dir, support::free_port(), ("psync", "fua"));
    assert_eq!(
        String::from_utf8_lossy(&pipelined(durable.port)),
        String::from_utf8_lossy(&pipelined(redis.port)),
        "pipelined, durable"
    );
    drop(durable);
    // QUIT answers and closes.
    let mut c = Client::new(kv.port);
    assert_eq!(c.call(&["QUIT"]), b"+OK\r\n");
    assert!(c.reply().is_empty(), "the connection closes after QUIT");
    let s = kv.finish();
    assert_eq!(s["shards"].as_array().map(Vec::len), Some(2));
    let forwarded: u64 = s["shards"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| x["forwarded"].as_u64().unwrap_or(0))
        .sum();
    assert!(forwarded > 0, "keys crossed between the shards: {s}");
}

/// With a password, a new connection's commands and their replies, in
/// order: refusals before AUTH, wrong passwords, HELLO's own AUTH.
const AUTH_SCRIPT: &[&[&str]] = &[
    &["PING"],
    &["GET", "k"],
    &["HELLO", "3"],
    &["HELLO", "2", "AUTH", "default", "wrong"],
    &["AUTH", "wrong"],
    &["AUTH", "nobody", "secret"],
    &["AUTH", "a", "b", "c"],
    &["AUTH"],
    &["SET", "k", "v"],
    &["AUTH", "secret"],
    &["SET", "k", "v"],
    &["GET", "k"],
    &["AUTH", "default", "wrong"],
    &["GET", "k"],
    &["AUTH", "default", "secret"],
    &["DEL", "k"],
];

fn auth_replies(port: u16) -> Vec<(String, Vec<u8>)> {
    let mut c = Client::new(port);
    let mut out: Vec<(String, Vec<u8>)> = AUTH_SCRIPT
        .iter()
        .map(|cmd| (cmd.join(" "), c.call(cmd)))
        .collect();
    // HELLO with AUTH on a new connection authenticates it.
    let mut c = Client::new(port);
    let hello = c.call(&["HELLO", "2", "AUTH", "default", "secret"]);
    out.push(("HELLO 2 AUTH default secret".into(), hello[..3].to_vec()));
    out.push(("PING".into(), c.call(&["PING"])));
    out
}

fn requirepass_answers_as_redis_does(engine: &str) {
    if !support::have("redis-server") {
        return;
    }
    let redis = redis_server_with(&["--requirepass", "secret"]);
    let kv = dp_kv(engine, &["--requirepass", "secret"]);
    let want = auth_replies(redis.port);
    let got = auth_replies(kv.port);
    for ((cmd, w), (_, g)) in want.iter().zip(&got) {
        assert_eq!(
            String::from_utf8_lossy(g),
            String::from_utf8_lossy(w),
            "{cmd}"
        );
    }
    assert_eq!(want.len(), got.len());
}

/// `redis-cli` over TLS to `tls_port`: each case's exit status and
/// output (the port written as `PORT`).
fn tls_replies(tls_port: u16, ca: &str, stranger: &str) -> Vec<(String, String)> {
    let port = tls_port.to_string();
    let cases: [&[&str]; 9] = [
        &["--cacert", ca, "-a", "secret", "SET", "k", "v"],
        &["--cacert", ca, "-a", "secret", "GET", "k"],
        &["--cacert", ca, "GET", "k"],
        &["--cacert", ca, "-a", "wrong", "GET", "k"],
        &["--cacert", ca, "-a", "secret", "RPUSH", "l", "a", "b", "c"],
        &["--cacert", ca, "-a", "secret", "LRANGE", "l", "0", "-1"],
        &["--cacert", ca, "-a", "secret", "INCRBY", "n", "41"],
        // Not trusted: the system's store, and another CA.
        &["PING"],
        &["--cacert", stranger, "PING"],
    ];
    cases
        .iter()
        .map(|args| {
            let out = Command::new("timeout")
                .args(["30", "redis-cli", "--tls", "--no-auth-warning", "-p", &port])
                .args(*args)
                .output()
                .expect("redis-cli");
            let text = format!(
                "{:?} {}{}",
                out.status.code(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            (args.join(" "), text.replace(&port, "PORT"))
        })
        .collect()
}

fn tls_and_auth_answer_as_redis_does(engine: &str) {
    if !support::have("redis-server") {
        return;
    }
    let (Some(pki), Some(stranger)) = (support::Pki::new("kv"), support::Pki::new("stranger"))
    else {
        return;
    };
    let tls = |port: u16| {
        vec![
            "--tls-port".to_string(),
            port.to_string(),
            "--tls-cert-file".to_string(),
            pki.path("cert.pem"),
            "--tls-key-file".to_string(),
            pki.path("key.pem"),
            "--requirepass".to_string(),
            "secret".to_string(),
        ]
    };
    let (redis_tls, kv_tls) = (support::free_port(), support::free_port());
    let mut redis_args = tls(redis_tls);
    // redis-server asks for client certificates unless told not to.
    redis_args.extend(["--tls-auth-clients".to_string(), "no".to_string()]);
    let redis_args: Vec<&str> = redis_args.iter().map(String::as_str).collect();
    let _redis = redis_server_with(&redis_args);
    let kv_args = tls(kv_tls);
    let kv_args: Vec<&str> = kv_args.iter().map(String::as_str).collect();
    let kv = dp_kv(engine, &kv_args);
    let (ca, other) = (pki.path("ca.pem"), stranger.path("ca.pem"));
    let want = tls_replies(redis_tls, &ca, &other);
    let got = tls_replies(kv_tls, &ca, &other);
    for ((cmd, w), (_, g)) in want.iter().zip(&got) {
        assert_eq!(g, w, "redis-cli --tls {cmd}");
    }
    assert!(
        want[1].1.contains('v') && want[7].1.contains("certificate verify failed"),
        "{want:?}"
    );
    // The plain port serves the same keyspace.
    let out = Command::new("redis-cli")
        .args([
            "--no-auth-warning",
            "-a",
            "secret",
            "-p",
            &kv.port.to_string(),
            "GET",
            "k",
        ])
        .output()
        .expect("redis-cli");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "v\n");
    // redis-benchmark over TLS: every request answered.
    let out = Command::new("timeout")
        .args([
            "120",
            "redis-benchmark",
            "--tls",
            "--cacert",
            &ca,
            "-a",
            "secret",
        ])
        .args([
            "-p",
            &kv_tls.to_string(),
            "-t",
            "set,get",
            "-n",
            "5000",
            "-c",
            "8",
            "-q",
        ])
        .output()
        .expect("redis-benchmark");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for t in ["SET", "GET"] {
        assert!(
            text.contains(&format!("{t}: ")) && text.contains("requests per second"),
            "{text}"
        );
    }
    let sum = kv.finish();
    let commands: u64 = sum["shards"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s["commands"].as_u64()).sum())
        .unwrap_or(0);
    assert!(commands >= 10_000, "{sum}");
}

fn metrics_match_the_summary(engine: &str) {
    if !support::have("redis-cli") {
        return;
    }
    let Some(pki) = support::Pki::new("metrics") else {
        return;
    };
    let (tls_port, metrics_port) = (support::free_port(), support::free_port());
    let at = format!("127.0.0.1:{metrics_port}");
    let kv = dp_kv(
        engine,
        &[
            "--metrics",
            &at,
            "--tls-port",
            &tls_port.to_string(),
            "--tls-cert-file",
            &pki.path("cert.pem"),
            "--tls-key-file",
            &pki.path("key.pem"),
        ],
    );
    let ca = pki.path("ca.pem");
    let cli = |tls: bool, args: &[&str]| {
        let mut c = Command::new("redis-cli");
        if tls {
            c.args(["--tls", "--cacert", &ca, "-p", &tls_port.to_string()]);
        } else {
            c.args(["-p", &kv.port.to_string()]);
        }
        let out = c.args(args).output().expect("redis-cli");
        assert!(out.status.success(), "{out:?}");
    };
    for i in 0..3 {
        cli(false, &["SET", &format!("k{i}"), "v"]);
    }
    cli(true, &["SET", "t", "v"]);
    cli(true, &["GET", "t"]);
    // A client that does not trust the certificate (redis-cli connects a
    // second time after the first fails).
    let refused = Command::new("redis-cli")
        .args(["--tls", "-p", &tls_port.to_string(), "PING"])
        .output()
        .expect("redis-cli");
    assert!(!refused.status.success());
    // The shards publish their transports' counters every 1,024 passes:
    // wait until every connection shows.
    let mut text = String::new();
    let seen = support::poll_until(1500, || {
        text = support::scrape(&at).unwrap_or_default();
        let closed = support::metric(&text, "dataplane_transport_closed_total");
        closed >= 7
            && closed == support::metric(&text, "dataplane_transport_accepted_total")
            && support::metric(&text, "dataplane_transport_tls_failed_total") >= 2
    });
    assert!(seen, "{text}");
    assert_eq!(
        support::metric(&text, "dataplane_transport_accepted_total"),
        7,
        "{text}"
    );
    assert_eq!(
        support::metric(&text, "dataplane_transport_tls_handshakes_total"),
        2,
        "{text}"
    );
    assert_eq!(
        support::metric(&text, "dataplane_transport_tls_failed_total"),
        2,
        "{text}"
    );
    assert_eq!(
        support::metric(&text, "dataplane_transport_open"),
        0,
        "{text}"
    );
    assert!(
        support::metric(&text, "dataplane_lcore_passes_total") > 0,
        "{text}"
    );
    assert!(text.contains("dp_kv_commands_total{shard=\"1\""), "{text}");
    let commands = support::metric(&text, "dp_kv_commands_total");
    let accepted = support::metric(&text, "dp_kv_accepted_total");
    let sum = kv.finish();
    let total = |k: &str| -> u64 {
        sum["shards"]
            .as_array()
            .map(|a| a.iter().filter_map(|s| s[k].as_u64()).sum())
            .unwrap_or(0)
    };
    assert_eq!(commands, total("commands"), "{sum}");
    assert_eq!(accepted, total("accepted"), "{sum}");
    assert!(commands >= 5, "{sum}");
}

fn redis_benchmark_runs(engine: &str) {
    if !support::have("redis-benchmark") {
        return;
    }
    let kv = dp_kv(engine, &[]);
    for pipeline in ["1", "16"] {
        let out = Command::new("timeout")
            .args(["120", "redis-benchmark", "-p", &kv.port.to_string()])
            .args([
                "-t",
                "ping,set,get,incr,lpush,rpush,lpop,rpop,hset,mset,lrange_100",
            ])
            .args(["-n", "5000", "-c", "20", "-r", "1000", "-P", pipeline, "-q"])
            .output()
            .expect("redis-benchmark");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "redis-benchmark -P {pipeline}: {text}"
        );
        for t in [
            "PING_INLINE",
            "PING_MBULK",
            "SET",
            "GET",
            "INCR",
            "LPUSH",
            "MSET",
            "LRANGE_100",
        ] {
            assert!(
                text.split(['\r', '\n'])
                    .any(|l| l.trim_start().starts_with(t) && l.contains("requests per second")),
                "no {t} result in:\n{text}"
            );
        }
        assert!(!text.contains("ERR"), "{text}");
    }
    let mut c = Client::new(kv.port);
    let n = c.call(&["DBSIZE"]);
    assert!(n.starts_with(b":") && n != b":0\r\n", "{n:?}");
    let s = kv.finish();
    for shard in s["shards"].as_array().into_iter().flatten() {
        assert_eq!(shard["protocol_errors"], 0, "{s}");
    }
}

/// Threads pipelining `INCR` on keys spread over both shards: every
/// increment counted once, replies in order (each key's values rise).
fn concurrent_increments_are_all_counted(engine: &str) {
    // Two shards, and eight: more shard threads than the machine has
    // cores (unpinned), so shards are preempted with messages in flight.
    for shards in [2, 8] {
        increments_on(engine, shards);
    }
}

fn increments_on(engine: &str, shards: usize) {
    let kv = start_kv(support::free_port(), engine, shards, &[]);
    let port = kv.port;
    const THREADS: usize = 4;
    const ROUNDS: usize = 50;
    const BATCH: usize = 40;
    let keys: Vec<String> = (0..8).map(|i| format!("counter:{i}")).collect();
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let keys = keys.clone();
            std::thread::spawn(move || {
                let mut c = Client::new(port);
                let mut last = vec![0i64; keys.len()];
                for r in 0..ROUNDS {
                    let batch: Vec<usize> = (0..BATCH).map(|i| (t + r + i) % keys.len()).collect();
                    let bytes: Vec<u8> = batch
                        .iter()
                        .flat_map(|&k| encode(&["INCR", &keys[k]]))
                        .collect();
                    c.send(&bytes);
                    for &k in &batch {
                        let reply = c.reply();
                        let Ok(Some((Value::Integer(v), _))) =
                            parse_value(&reply, &Limits::default())
                        else {
                            panic!("INCR answered {reply:?}");
                        };
                        assert!(v > last[k], "{} went from {} to {v}", keys[k], last[k]);
                        last[k] = v;
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a client thread");
    }
    let mut c = Client::new(port);
    let mut cmd = vec!["MGET"];
    cmd.extend(keys.iter().map(String::as_str));
    let reply = c.call(&cmd);
    let Ok(Some((Value::Array(vals), _))) = parse_value(&reply, &Limits::default()) else {
        panic!("MGET answered {reply:?}");
    };
    let total: i64 = vals
        .iter()
        .map(|v| match v {
            Value::Bulk(b) => std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            _ => 0,
        })
        .sum();
    assert_eq!(total, (THREADS * ROUNDS * BATCH) as i64, "{shards} shards");
    let s = kv.finish();
    assert_eq!(s["shards"].as_array().map(Vec::len), Some(shards));
}

fn malformed_requests_are_refused_and_the_connection_closed(engine: &str) {
    let kv = dp_kv(engine, &["--proto-max-bulk-len", "1kb"]);
    for (bad, want) in [
        (
            &b"*1\r\n$x\r\n"[..],
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*a\r\n",
            "-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*1\r\n:1\r\n",
            "-ERR Protocol error: expected '$', got ':'\r\n",
        ),
        (
            b"*1\r\n$2048\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
    ] {
        let mut c = Client::new(kv.port);
        // A good command before the bad one is answered first.
        let mut bytes = encode(&["PING"]);
        bytes.extend_from_slice(bad);
        c.send(&bytes);
        assert_eq!(c.reply(), b"+PONG\r\n");
        assert_eq!(String::from_utf8_lossy(&c.reply()), want);
        assert!(c.reply().is_empty(), "closed after {want}");
    }
    // An inline command, as typed into telnet.
    let s = TcpStream::connect(("127.0.0.1", kv.port)).expect("connect");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    (&s).write_all(b"SET inline works\r\nGET inline\r\n")
        .expect("send");
    let mut line = String::new();
    r.read_line(&mut line).expect("read");
    assert_eq!(line, "+OK\r\n");
    let s = kv.finish();
    let errors: u64 = s["shards"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| x["protocol_errors"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(errors, 4, "{s}");
}

fn maxmemory_evicts_and_keeps_serving(engine: &str) {
    let kv = dp_kv(engine, &["--maxmemory", "1mb"]);
    let mut c = Client::new(kv.port);
    let value = "x".repeat(200);
    for round in 0..20 {
        let bytes: Vec<u8> = (0..1000)
            .flat_map(|i| encode(&["SET", &format!("key:{round}:{i}"), &value]))
            .collect();
        c.send(&bytes);
        for _ in 0..1000 {
            assert_eq!(c.reply(), b"+OK\r\n");
        }
    }
    let n = c.call(&["DBSIZE"]);
    let Ok(Some((Value::Integer(keys), _))) = parse_value(&n, &Limits::default()) else {
        panic!("DBSIZE answered {n:?}");
    };
    // 20,000 keys of ~300 bytes each do not fit in 1 MiB.
    assert!(keys > 1000 && keys < 5000, "{keys} keys");
    let s = kv.finish();
    let mut evicted = 0;
    for shard in s["shards"].as_array().into_iter().flatten() {
        evicted += shard["store"]["evicted"].as_u64().unwrap_or(0);
    }
    assert!(evicted > 10_000, "{s}");
}

/// A directory on a disk file system (O_DIRECT needs one; tmpfs has
/// none), removed when dropped.
struct Dir(std::path::PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn durable_dir(what: &str) -> Dir {
    let base = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let d = base.join(format!("dp-kv-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    Dir(d)
}

/// dp-kv in durable mode on `dir`, its logs `size` each on `backend`,
/// committed by FUA writes or flushes (`commit`).
fn durable_on(
    engine: &str,
    dir: &Dir,
    port: u16,
    lcores: usize,
    (size, backend, commit): (&str, &str, &str),
) -> Server {
    let d = dir.0.to_str().expect("a UTF-8 path");
    let args = [
        "--durable",
        d,
        "--durable-size",
        size,
        "--durable-backend",
        backend,
        "--durable-commit",
        commit,
    ];
    start_kv(port, engine, lcores, &args)
}

fn durable_kv(engine: &str, dir: &Dir, port: u16, (backend, commit): (&str, &str)) -> Server {
    durable_on(engine, dir, port, 2, ("64mb", backend, commit))
}

/// Writers pipeline `SET`s of fresh keys and `INCR`s of a few counters
/// and record every acknowledgement; the server is SIGKILLed at a random
/// moment, restarted on its log, and must hold every acknowledged `SET`
/// and at least every acknowledged increment (at most those sent). Many
/// rounds, the keys of every round checked after every restart.
fn acknowledged_writes_survive_sigkill(engine: &str, backend: &str, commit: &str) {
    let dir = durable_dir(&format!("{engine}-{backend}-{commit}"));
    let port = support::free_port();
    let mut acked_sets: Vec<(String, String)> = Vec::new();
    let mut acked_incr: std::collections::HashMap<String, i64> = Default::default();
    let mut sent_incr: std::collections::HashMap<String, i64> = Default::default();
    let mut rng: u64 = 0x853c_49e6_748f_ea9b ^ u64::from(port);
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for round in 0..8 {
        let mut kv = durable_kv(engine, &dir, port, (backend, commit));
        // Everything acknowledged so far is there.
        let mut c = Client::new(port);
        for chunk in acked_sets.chunks(500) {
            let mut cmd = vec!["MGET"];
            cmd.extend(chunk.iter().map(|(k, _)| k.as_str()));
            let reply = c.call(&cmd);
            let Ok(Some((Value::Array(vals), _))) = parse_value(&reply, &Limits::default()) else {
                panic!("MGET answered {reply:?}");
            };
            for ((k, v), got) in chunk.iter().zip(vals) {
                assert_eq!(got, Value::Bulk(v.as_bytes()), "round {round}: {k} lost");
            }
        }
        for (k, &acked) in &acked_incr {
            let reply = c.call(&["GET", k]);
            let Ok(Some((Value::Bulk(b), _))) = parse_value(&reply, &Limits::default()) else {
                panic!("round {round}: {k} lost: {reply:?}");
            };
            let v: i64 = std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse().ok())
                .expect("a number");
            assert!(
                v >= acked && v <= sent_incr[k],
                "round {round}: {k} = {v}, acked {acked}"
            );
        }
        drop(c);
        // Write, and kill at a random moment.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writers: Vec<_> = (0..2)
            .map(|t| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut sets = Vec::new();
                    let mut incr_acked = Vec::new();
                    let mut incr_sent = Vec::new();
                    let Ok(s) = TcpStream::connect(("127.0.0.1", port)) else {
                        return (sets, incr_acked, incr_sent);
                    };
                    let _ = s.set_read_timeout(Some(LIMIT));
                    let mut c = Client { s, buf: Vec::new() };
                    let mut i = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let key = format!("r{round}:t{t}:k{i}");
                        let val = format!("v{i}");
                        let counter = format!("counter:{}", i % 4);
                        let mut bytes = encode(&["SET", &key, &val]);
                        bytes.extend(encode(&["INCR", &counter]));
                        incr_sent.push(counter.clone());
                        if c.s.write_all(&bytes).is_err() {
                            break;
                        }
                        let mut chunk = [0u8; 4096];
                        let mut replies = Vec::new();
                        while replies.len() < 2 {
                            match value_len(&c.buf, &Limits::default()) {
                                Ok(Some(n)) => {
                                    replies.push(c.buf.drain(..n).collect::<Vec<u8>>());
                                    continue;
                                }
                                Ok(None) => {}
                                Err(e) => panic!("a bad reply: {e}"),
                            }
                            match read_some(&mut c.s, &mut chunk) {
                                Ok(n) if n > 0 => c.buf.extend_from_slice(&chunk[..n]),
                                _ => break,
                            }
                        }
                        if replies.first().map(Vec::as_slice) == Some(b"+OK\r\n") {
                            sets.push((key, val));
                        }
                        if let Some(r) = replies.get(1)
                            && let Ok(Some((Value::Integer(v), _))) =
                                parse_value(r, &Limits::default())
                        {
                            incr_acked.push((counter, v));
                        }
                        if replies.len() < 2 {
                            break;
                        }
                        i += 1;
                    }
                    (sets, incr_acked, incr_sent)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(50 + next() % 400));
        kv.child.kill().expect("SIGKILL");
        let _ = kv.child.wait();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in writers {
            let (sets, incrs, sent) = w.join().expect("a writer");
            acked_sets.extend(sets);
            for (k, v) in incrs {
                let e = acked_incr.entry(k).or_insert(0);
                *e = (*e).max(v);
            }
            for k in sent {
                *sent_incr.entry(k).or_insert(0) += 1;
            }
        }
        drop(kv);
    }
    println!("{} writes acknowledged over 8 kills", acked_sets.len());
    assert!(
        acked_sets.len() > 100,
        "only {} writes acknowledged",
        acked_sets.len()
    );
    // A last start checks the last round's writes, then stops cleanly.
    let kv = durable_kv(engine, &dir, port, (backend, commit));
    let mut c = Client::new(port);
    let (k, v) = acked_sets.last().expect("a write");
    assert_eq!(
        c.call(&["GET", k]),
        format!("${}\r\n{v}\r\n", v.len()).into_bytes()
    );
    let s = kv.finish();
    assert!(
        s["replayed"].as_u64().unwrap_or(0) >= acked_sets.len() as u64,
        "{s}"
    );
}

fn durable_on_io_uring(engine: &str) {
    if support::io_uring_runs() {
        acknowledged_writes_survive_sigkill(engine, "io_uring", "fua");
    }
}

fn durable_on_psync(engine: &str) {
    acknowledged_writes_survive_sigkill(engine, "psync", "fua");
}

/// The log committed by a flush after each group's writes (the other
/// way), on the kernel's TCP.
#[test]
fn durable_with_flushes_on_io_uring() {
    if support::io_uring_runs() {
        acknowledged_writes_survive_sigkill("epoll", "io_uring", "flush");
    }
}

/// A log that fills refuses writes with an error and keeps what it
/// acknowledged.
fn a_full_log_refuses_writes_and_keeps_the_rest(engine: &str) {
    let dir = durable_dir(&format!("full-{engine}"));
    let port = support::free_port();
    let kv = durable_on(engine, &dir, port, 1, ("256kb", "psync", "fua"));
    let value = "x".repeat(1000);
    let mut ok = 0;
    // The write that finds the log full was never acknowledged: its
    // connection is reset (or it gets the error, had the log failed
    // before it); every write after gets the error.
    {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(LIMIT)).expect("timeout");
        let mut c = Client { s, buf: Vec::new() };
        for i in 0..1000 {
            if c.s
                .write_all(&encode(&["SET", &format!("k{i}"), &value]))
                .is_err()
            {
                break;
            }
            let mut chunk = [0u8; 4096];
            let reply = loop {
                if let Ok(Some(n)) = value_len(&c.buf, &Limits::default()) {
                    break c.buf.drain(..n).collect::<Vec<u8>>();
                }
                match read_some(&mut c.s, &mut chunk) {
                    Ok(n) if n > 0 => c.buf.extend_from_slice(&chunk[..n]),
                    _ => break Vec::new(),
                }
            };
            if reply != b"+OK\r\n" {
                break;
            }
            ok += 1;
        }
    }
    assert!(ok > 100 && ok < 1000, "{ok} writes acknowledged");
    let mut c = Client::new(port);
    let refused = String::from_utf8_lossy(&c.call(&["SET", "after", "x"])).into_owned();
    assert!(
        refused.starts_with("-MISCONF Errors writing to the durable log: the log is full"),
        "{refused}"
    );
    // Reads still work; a restart has every acknowledged write.
    assert_eq!(
        c.call(&["GET", "k0"]),
        format!("$1000\r\n{value}\r\n").into_bytes()
    );
    drop(c);
    drop(kv);
    let _kv = durable_on(engine, &dir, port, 1, ("256kb", "psync", "fua"));
    let mut c = Client::new(port);
    // Every acknowledged write, and perhaps the one that found the log
    // full (its blocks may have reached the disk before the failure; it
    // was never acknowledged, so either is right).
    let n = c.call(&["DBSIZE"]);
    assert!(
        n == format!(":{ok}\r\n").into_bytes() || n == format!(":{}\r\n", ok + 1).into_bytes(),
        "{ok} acknowledged, DBSIZE {:?}",
        String::from_utf8_lossy(&n)
    );
    for i in [0, ok / 2, ok - 1] {
        assert_eq!(
            c.call(&["STRLEN", &format!("k{i}")]),
            b":1000\r\n",
            "k{i} was acknowledged"
        );
    }
}

/// Writes many times the log's size over a small keyspace: compactions
/// keep the log from filling, leave at most two generations on disk, and
/// a SIGKILL at the end loses nothing acknowledged.
fn compaction_keeps_the_log_from_filling(engine: &str) {
    let dir = durable_dir(&format!("compact-{engine}"));
    let port = support::free_port();
    let start = |port: u16| durable_on(engine, &dir, port, 2, ("512kb", "psync", "fua"));
    let mut kv = start(port);
    let mut c = Client::new(port);
    let mut last = std::collections::HashMap::new();
    for round in 0..300 {
        let mut bytes = Vec::new();
        let mut keys = Vec::new();
        for i in 0..50 {
            let k = format!("key:{i}");
            let v = format!("{round}:{}", "v".repeat(100));
            bytes.extend(encode(&["SET", &k, &v]));
            keys.push((k, v));
        }
        bytes.extend(encode(&["RPUSH", "list", &round.to_string()]));
        bytes.extend(encode(&[
            "HSET",
            "hash",
            &format!("f{}", round % 7),
            &round.to_string(),
        ]));
        c.send(&bytes);
        for (k, v) in keys {
            assert_eq!(c.reply(), b"+OK\r\n", "round {round}");
            last.insert(k, v);
        }
        assert!(c.reply().starts_with(b":"), "round {round}");
        assert!(c.reply().starts_with(b":"), "round {round}");
    }
    kv.child.kill().expect("SIGKILL");
    let _ = kv.child.wait();
    drop(kv);
    let logs = std::fs::read_dir(&dir.0).expect("the log dir").count();
    assert!(logs <= 4, "{logs} log files for 2 shards");
    let kv = start(port);
    let mut c = Client::new(port);
    for (k, v) in &last {
        assert_eq!(
            c.call(&["GET", k]),
            format!("${}\r\n{v}\r\n", v.len()).into_bytes(),
            "{k}"
        );
    }
    assert_eq!(c.call(&["LLEN", "list"]), b":300\r\n");
    assert_eq!(
        c.call(&["LRANGE", "list", "-1", "-1"]),
        b"*1\r\n$3\r\n299\r\n"
    );
    assert_eq!(c.call(&["HGET", "hash", "f3"]), b"$3\r\n297\r\n");
    let s = kv.finish();
    // The replay read snapshots, not every write since the start.
    assert!(s["replayed"].as_u64().unwrap_or(u64::MAX) < 300 * 52, "{s}");
}

macro_rules! on_every_engine {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn epoll() {
                    super::$name("epoll");
                }
                #[test]
                fn io_uring() {
                    if super::support::io_uring_runs() {
                        super::$name("io_uring");
                    }
                }
            }
        )*
    };
}

on_every_engine!(
    same_replies_as_redis,
    requirepass_answers_as_redis_does,
    tls_and_auth_answer_as_redis_does,
    metrics_match_the_summary,
    redis_benchmark_runs,
    concurrent_increments_are_all_counted,
    malformed_requests_are_refused_and_the_connection_closed,
    maxmemory_evicts_and_keeps_serving,
    durable_on_io_uring,
    durable_on_psync,
    a_full_log_refuses_writes_and_keeps_the_rest,
    compaction_keeps_the_log_from_filling,
);
