//! The transport against real programs on loopback: `curl` downloading from
//! a tiny HTTP server written on the API, `redis-cli` and `redis-benchmark`
//! against a RESP responder, `socat` streaming a file in, and the
//! transport as the client downloading from `nginx` and uploading to
//! `socat`. Every byte is compared.
//!
//! The programs come with scripts/install-deps.sh; where one is missing the
//! test says so and passes, except where `DATAPLANE_REQUIRE` names `netns`
//! (CI, which installs them).

use dataplane::backend::Choice;
use dataplane::transport::{CloseReason, Config, ConnId, EngineKind, Event, Transport};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);

fn transport(kind: EngineKind) -> Transport {
    Transport::new(Config {
        engine: Choice::Named(kind),
        ..Config::default()
    })
    .expect("transport")
}

/// Whether `kind` runs here; where it does not, says so (and fails where
/// `DATAPLANE_REQUIRE` names io_uring).
fn runs(kind: EngineKind) -> bool {
    let cfg = Config {
        engine: Choice::Named(kind),
        ..Config::default()
    };
    match Transport::new(cfg) {
        Ok(_) => true,
        Err(e) => {
            dataplane::require::available_or_skip(
                dataplane::require::Capability::IoUring,
                false,
                &e.to_string(),
            );
            false
        }
    }
}

/// Each test once per engine: `name::epoll` and `name::io_uring`.
macro_rules! on_every_engine {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                use super::*;
                #[test]
                fn epoll() {
                    super::$name(EngineKind::Epoll);
                }
                #[test]
                fn io_uring() {
                    if runs(EngineKind::IoUring) {
                        super::$name(EngineKind::IoUring);
                    }
                }
            }
        )*
    };
}

on_every_engine!(
    curl_downloads_a_large_body_from_a_server_on_the_api,
    redis_cli_and_redis_benchmark_against_a_resp_responder_on_the_api,
    socat_streams_a_file_into_a_server_on_the_api,
    the_transport_as_client_downloads_from_nginx_and_uploads_to_socat,
);

fn required() -> bool {
    std::env::var("DATAPLANE_REQUIRE").is_ok_and(|r| r.split(',').any(|c| c.trim() == "netns"))
}

/// Whether `tool` runs here; false (and a line saying so) when it does not.
fn have(tool: &str) -> bool {
    let ok = Command::new(tool)
        .arg(if tool == "nginx" { "-v" } else { "--version" })
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        assert!(!required(), "{tool} is needed (scripts/install-deps.sh)");
        println!("skip: {tool} is not installed (scripts/install-deps.sh installs it)");
    }
    ok
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
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

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().expect("address")
}

fn free_port() -> SocketAddr {
    TcpListener::bind(loopback())
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p =
            std::env::temp_dir().join(format!("dp-transport-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        Self(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs passes, handing events to `f`, until the child exits and `f` has
/// nothing left to do (`f` returns true when it is idle); kills the child
/// and panics after [`LIMIT`].
fn serve_until_exit(
    t: &mut Transport,
    child: &mut Child,
    mut f: impl FnMut(&mut Transport, Event),
) -> std::process::ExitStatus {
    let end = Instant::now() + LIMIT;
    loop {
        t.poll().expect("poll");
        while let Some(ev) = t.next_event() {
            f(t, ev);
        }
        if let Some(status) = child.try_wait().expect("wait") {
            // A last pass for what the child sent before it exited.
            for _ in 0..100 {
                t.poll().expect("poll");
                while let Some(ev) = t.next_event() {
                    f(t, ev);
                }
            }
            return status;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("no end after {LIMIT:?}: {:?}", t.stats());
        }
        std::thread::yield_now();
    }
}

/// A response being written as the send buffer takes it.
struct Sending {
    conn: ConnId,
    data: std::rc::Rc<Vec<u8>>,
    at: usize,
}

fn send_more(t: &mut Transport, s: &mut Sending) -> bool {
    while s.at < s.data.len() {
        let n = t.write(s.conn, &s.data[s.at..]).expect("write");
        s.at += n;
        if n == 0 {
            return false;
        }
    }
    t.close(s.conn).expect("close");
    true
}

fn curl_downloads_a_large_body_from_a_server_on_the_api(kind: EngineKind) {
    if !have("curl") {
        return;
    }
    let dir = TempDir::new("curl");
    let body = pattern(8 << 20, 5);
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(&body);
    let response = std::rc::Rc::new(response);
    let mut t = transport(kind);
    let l = t.listen(loopback()).expect("listen");
    let addr = t.listener_addr(l).expect("addr");
    let out = dir.path().join("body");
    let mut curl = Command::new("curl")
        .args(["-sS", "--fail", "-o"])
        .arg(&out)
        .arg(format!("http://{addr}/big"))
        .spawn()
        .expect("curl");
    let mut sending: Vec<Sending> = Vec::new();
    let mut requests = 0;
    let status = serve_until_exit(&mut t, &mut curl, |t, ev| match ev {
        Event::Readable(c) => {
            let req = t.peek(c).expect("peek");
            if let Some(end) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                assert!(
                    req.starts_with(b"GET /big HTTP/1.1\r\n"),
                    "{:?}",
                    String::from_utf8_lossy(req)
                );
                t.consume(c, end + 4).expect("consume");
                requests += 1;
                let mut s = Sending {
                    conn: c,
                    data: response.clone(),
                    at: 0,
                };
                if !send_more(t, &mut s) {
                    sending.push(s);
                }
            }
        }
        Event::Writable(c) => {
            if let Some(i) = sending.iter().position(|s| s.conn == c)
                && send_more(t, &mut sending[i])
            {
                sending.remove(i);
            }
        }
        _ => {}
    });
    assert!(status.success(), "curl: {status}");
    assert_eq!(requests, 1);
    let got = std::fs::read(&out).expect("curl's file");
    assert!(
        got == body,
        "curl got {} bytes, not the {} sent",
        got.len(),
        body.len()
    );
    assert_eq!(t.stats().closed, 1);
}

/// One RESP command from the front of `buf`, inline or multibulk: its
/// arguments and its length, `None` while incomplete.
fn resp_command(buf: &[u8]) -> Option<(Vec<Vec<u8>>, usize)> {
    let line_end = |from: usize| {
        buf[from..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|p| from + p)
    };
    if buf.first() != Some(&b'*') {
        let end = line_end(0)?;
        let args = buf[..end]
            .split(|&b| b == b' ')
            .filter(|a| !a.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        return Some((args, end + 2));
    }
    let end = line_end(0)?;
    let n: usize = std::str::from_utf8(&buf[1..end]).ok()?.parse().ok()?;
    let mut at = end + 2;
    let mut args = Vec::with_capacity(n);
    for _ in 0..n {
        if buf.get(at) != Some(&b'$') {
            return None;
        }
        let end = line_end(at)?;
        let len: usize = std::str::from_utf8(&buf[at + 1..end]).ok()?.parse().ok()?;
        let start = end + 2;
        if buf.len() < start + len + 2 {
            return None;
        }
        args.push(buf[start..start + len].to_vec());
        at = start + len + 2;
    }
    Some((args, at))
}

fn redis_cli_and_redis_benchmark_against_a_resp_responder_on_the_api(kind: EngineKind) {
    if !have("redis-cli") || !have("redis-benchmark") {
        return;
    }
    let mut t = transport(kind);
    let l = t.listen(loopback()).expect("listen");
    let addr = t.listener_addr(l).expect("addr");
    let pings = std::cell::Cell::new(0u64);
    let mut respond = |t: &mut Transport, ev: Event| {
        if let Event::Readable(c) = ev {
            while let Some((args, used)) = resp_command(t.peek(c).expect("peek")) {
                t.consume(c, used).expect("consume");
                let name = args
                    .first()
                    .map(|a| a.to_ascii_uppercase())
                    .unwrap_or_default();
                let reply: &[u8] = match name.as_slice() {
                    b"PING" => {
                        pings.set(pings.get() + 1);
                        b"+PONG\r\n"
                    }
                    // redis-benchmark asks for `save` and `appendonly`.
                    b"CONFIG" => b"*0\r\n",
                    _ => b"-ERR unknown command\r\n",
                };
                assert_eq!(t.write(c, reply).expect("write"), reply.len());
            }
        } else if let Event::PeerClosed(c) = ev {
            t.close(c).expect("close");
        }
    };
    let mut cli = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &addr.port().to_string(), "PING"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("redis-cli");
    serve_until_exit(&mut t, &mut cli, &mut respond);
    let out = cli.wait_with_output().expect("redis-cli");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "PONG");
    assert_eq!(pings.get(), 1);

    // 50 clients, pipelines of 16: PING_INLINE and PING_MBULK, 20,000 each.
    let mut bench = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
        .args(["-t", "ping", "-n", "20000", "-c", "50", "-P", "16", "--csv"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("redis-benchmark");
    let status = serve_until_exit(&mut t, &mut bench, &mut respond);
    let out = bench.wait_with_output().expect("redis-benchmark");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("PING_INLINE") && text.contains("PING_MBULK"),
        "{text}"
    );
    assert_eq!(pings.get(), 1 + 40_000, "{text}");
    let s = t.stats();
    assert!(s.accepted >= 51, "{s:?}");
    assert_eq!(s.open, 0, "{s:?}");
}

fn socat_streams_a_file_into_a_server_on_the_api(kind: EngineKind) {
    if !have("socat") {
        return;
    }
    let dir = TempDir::new("socat-in");
    let data = pattern(16 << 20, 9);
    let file = dir.path().join("in");
    std::fs::write(&file, &data).expect("write");
    let mut t = transport(kind);
    let l = t.listen(loopback()).expect("listen");
    let addr = t.listener_addr(l).expect("addr");
    let mut socat = Command::new("socat")
        .arg("-u")
        .arg(format!("OPEN:{}", file.display()))
        .arg(format!("TCP:{addr}"))
        .spawn()
        .expect("socat");
    let mut got = Vec::with_capacity(data.len());
    let mut ended = None;
    let status = serve_until_exit(&mut t, &mut socat, |t, ev| match ev {
        Event::Readable(c) => {
            got.extend_from_slice(t.peek(c).expect("peek"));
            let n = t.peek(c).expect("peek").len();
            t.consume(c, n).expect("consume");
        }
        Event::PeerClosed(c) => t.close(c).expect("close"),
        Event::Closed(_, why) => ended = Some(why),
        _ => {}
    });
    assert!(status.success(), "socat: {status}");
    assert!(
        got == data,
        "received {} bytes of {}",
        got.len(),
        data.len()
    );
    assert_eq!(ended, Some(CloseReason::Local));
}

fn the_transport_as_client_downloads_from_nginx_and_uploads_to_socat(kind: EngineKind) {
    if !have("nginx") || !have("socat") {
        return;
    }
    let dir = TempDir::new("client");
    let www = dir.path().join("www");
    std::fs::create_dir_all(&www).expect("www");
    let body = pattern(8 << 20, 13);
    std::fs::write(www.join("big"), &body).expect("write");
    let port = free_port();
    let d = dir.path().display();
    let conf = format!(
        "daemon off; master_process off; pid {d}/nginx.pid; error_log {d}/error.log;\n\
         events {{ worker_connections 64; }}\n\
         http {{ access_log off; client_body_temp_path {d}/t; proxy_temp_path {d}/t;\n\
         fastcgi_temp_path {d}/t; uwsgi_temp_path {d}/t; scgi_temp_path {d}/t;\n\
         server {{ listen {port}; root {}; }} }}\n",
        www.display()
    );
    std::fs::write(dir.path().join("nginx.conf"), conf).expect("conf");
    let mut nginx = Command::new("nginx")
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(dir.path().join("nginx.conf"))
        .stderr(Stdio::piped())
        .spawn()
        .expect("nginx");
    let mut t = transport(kind);

    // Connect, retrying while nginx starts.
    let end = Instant::now() + LIMIT;
    let mut got = Vec::new();
    let conn = loop {
        let c = t.connect(port).expect("connect");
        let mut up = None;
        while up.is_none() {
            t.poll().expect("poll");
            while let Some(ev) = t.next_event() {
                match ev {
                    Event::Connected(x) if x == c => up = Some(true),
                    Event::Closed(x, _) if x == c => up = Some(false),
                    _ => {}
                }
            }
            assert!(Instant::now() < end, "nginx never listened");
        }
        if up == Some(true) {
            break c;
        }
        if let Some(status) = nginx.try_wait().expect("wait") {
            panic!("nginx exited: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let req = b"GET /big HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    assert_eq!(t.write(conn, req).expect("write"), req.len());
    let mut done = false;
    while !done {
        t.poll().expect("poll");
        while let Some(ev) = t.next_event() {
            match ev {
                Event::Readable(c) => {
                    got.extend_from_slice(t.peek(c).expect("peek"));
                    let n = t.peek(c).expect("peek").len();
                    t.consume(c, n).expect("consume");
                }
                Event::PeerClosed(c) => t.close(c).expect("close"),
                Event::Closed(_, why) => {
                    assert_eq!(why, CloseReason::Local);
                    done = true;
                }
                _ => {}
            }
        }
        assert!(
            Instant::now() < end,
            "download unfinished: {} bytes",
            got.len()
        );
    }
    let _ = nginx.kill();
    let _ = nginx.wait();
    let head_end = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&got[..head_end]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        got[head_end + 4..] == body[..],
        "body of {} bytes",
        got.len() - head_end - 4
    );

    // Upload: socat listens and writes what arrives to a file.
    let out = dir.path().join("uploaded");
    let port = free_port();
    let mut socat = Command::new("socat")
        .arg("-u")
        .arg(format!(
            "TCP-LISTEN:{},bind=127.0.0.1,reuseaddr",
            port.port()
        ))
        .arg(format!("CREATE:{}", out.display()))
        .spawn()
        .expect("socat");
    let data = pattern(16 << 20, 17);
    let conn = loop {
        let c = t.connect(port).expect("connect");
        let mut up = None;
        while up.is_none() {
            t.poll().expect("poll");
            while let Some(ev) = t.next_event() {
                match ev {
                    Event::Connected(x) if x == c => up = Some(true),
                    Event::Closed(x, _) if x == c => up = Some(false),
                    _ => {}
                }
            }
            assert!(Instant::now() < end + LIMIT, "socat never listened");
        }
        if up == Some(true) {
            break c;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut at = 0;
    let mut closed = false;
    let mut push = |t: &mut Transport| {
        while !closed && at < data.len() {
            let n = t.write(conn, &data[at..]).expect("write");
            at += n;
            if n == 0 {
                return;
            }
        }
        if !closed {
            t.close(conn).expect("close");
            closed = true;
        }
    };
    push(&mut t);
    let status = serve_until_exit(&mut t, &mut socat, |t, ev| {
        if ev == Event::Writable(conn) {
            push(t);
        }
    });
    assert!(status.success(), "socat: {status}");
    let got = std::fs::read(&out).expect("socat's file");
    assert!(
        got == data,
        "socat wrote {} bytes of {}",
        got.len(),
        data.len()
    );
}
