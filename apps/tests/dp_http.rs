//! `dp-http` against real clients: `curl` for every route (keep-alive
//! reuse, HEAD, a 300 KB file, `Expect: 100-continue` and chunked
//! uploads echoed byte for byte, 404 and 405, `/metrics`), malformed
//! requests answered with their status and the connection closed, and a
//! bounded `wrk` run with no error. Every test runs on both transport
//! engines, with two shards.
//!
//! `curl` and `wrk` come with scripts/install-deps.sh; where one is
//! missing the test says so and passes, except where `DATAPLANE_REQUIRE`
//! names `netns` (CI, which installs them).

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

struct Server {
    child: Child,
    port: u16,
    dir: PathBuf,
    out: Option<BufReader<std::process::ChildStdout>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn finish(mut self) -> serde_json::Value {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        let mut out = String::new();
        if let Some(mut s) = self.out.take() {
            s.read_to_string(&mut out).expect("stdout");
        }
        assert!(
            self.child.wait().expect("wait").success(),
            "dp-http failed: {out}"
        );
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

fn dp_http(engine: &str) -> Server {
    dp_http_with(engine, &[])
}

fn dp_http_with(engine: &str, extra: &[&str]) -> Server {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let dir = std::env::temp_dir().join(format!("dp-http-{engine}-{port}"));
    std::fs::create_dir_all(&dir).expect("files dir");
    std::fs::write(dir.join("blob.bin"), pattern(300_000)).expect("a file");
    std::fs::write(dir.join("index.html"), "<h1>hi</h1>\n").expect("a file");
    let child = Command::new(env!("CARGO_BIN_EXE_dp-http"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--lcores",
            "2",
            "--json",
        ])
        .args(["--backend", engine, "--max-body", "512kb"])
        .args(extra)
        .arg("--files")
        .arg(&dir)
        .env("DATAPLANE_AFFINITY", "off")
        .env("DATAPLANE_IDLE", "adaptive")
        .stdout(Stdio::piped())
        .spawn()
        .expect("dp-http");
    let mut child = child;
    let mut out = BufReader::new(child.stdout.take().expect("dp-http's stdout"));
    // The line dp-http prints once every shard listens.
    loop {
        let mut line = String::new();
        let n = out.read_line(&mut line).expect("dp-http's stdout");
        assert!(n > 0, "dp-http exited before listening");
        if line.contains("listening on") {
            break;
        }
    }
    Server {
        child,
        port,
        dir,
        out: Some(out),
    }
}

fn curl(args: &[&str]) -> (String, Vec<u8>) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30"])
        .args(args)
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.stdout,
    )
}

fn curl_serves_every_route(engine: &str) {
    if !support::have("curl") {
        return;
    }
    let s = dp_http(engine);
    let (_, body) = curl(&[&s.url("/")]);
    assert_eq!(body, b"Hello, World!");
    let (_, body) = curl(&[&s.url("/json")]);
    let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(v["message"], "Hello, World!");
    // Keep-alive: the second request reuses the first's connection.
    let (log, body) = curl(&["-v", &s.url("/plaintext"), &s.url("/files/index.html")]);
    assert!(log.contains("Re-using existing connection"), "{log}");
    assert_eq!(body, b"Hello, World!<h1>hi</h1>\n");
    let (log, body) = curl(&["-v", "-I", &s.url("/files/blob.bin")]);
    assert!(log.contains("HTTP/1.1 200 OK"), "{log}");
    assert!(String::from_utf8_lossy(&body).contains("Content-Length: 300000"));
    let (_, body) = curl(&[&s.url("/files/blob.bin")]);
    assert!(body == pattern(300_000), "the file differs");
    // Uploads echoed: with Expect: 100-continue, and chunked.
    let upload = s.dir.join("upload.bin");
    std::fs::write(&upload, pattern(200_000)).expect("upload file");
    let at = format!("@{}", upload.display());
    let (log, body) = curl(&[
        "-v",
        "-H",
        "Expect: 100-continue",
        "--data-binary",
        &at,
        &s.url("/echo"),
    ]);
    assert!(log.contains("HTTP/1.1 100 Continue"), "{log}");
    assert!(body == pattern(200_000), "the echo differs");
    let (_, body) = curl(&[
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &at,
        &s.url("/echo"),
    ]);
    assert!(body == pattern(200_000), "the chunked echo differs");
    let code = |args: &[&str]| {
        let mut a = vec!["-o", "/dev/null", "-w", "%{http_code}"];
        a.extend_from_slice(args);
        String::from_utf8(curl(&a).1).expect("a code")
    };
    assert_eq!(code(&[&s.url("/nope")]), "404");
    assert_eq!(code(&[&s.url("/files/absent")]), "404");
    assert_eq!(code(&["-X", "DELETE", &s.url("/json")]), "405");
    let big = s.dir.join("big.bin");
    std::fs::write(&big, pattern(600_000)).expect("big file");
    assert_eq!(
        code(&[
            "--data-binary",
            &format!("@{}", big.display()),
            &s.url("/echo")
        ]),
        "413"
    );
    let (_, metrics) = curl(&[&s.url("/metrics")]);
    let metrics = String::from_utf8_lossy(&metrics);
    for m in [
        "dp_http_requests_total{shard=",
        "dataplane_lcore_passes",
        "dataplane_transport_accepted_total{shard=",
    ] {
        assert!(metrics.contains(m), "{m} missing from:\n{metrics}");
    }
    let sum = s.finish();
    assert!(sum["requests"].as_u64().unwrap_or(0) >= 13, "{sum}");
}

/// Sends `raw` on a fresh connection; the whole response, read to the end
/// of stream (the server must close).
fn exchange(port: u16, raw: &[u8]) -> String {
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    c.set_read_timeout(Some(LIMIT)).expect("timeout");
    c.write_all(raw).expect("send");
    let mut out = Vec::new();
    c.read_to_end(&mut out).expect("read to the close");
    String::from_utf8_lossy(&out).into_owned()
}

fn malformed_requests_get_their_status_and_a_close(engine: &str) {
    let s = dp_http(engine);
    let long_target = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(9000));
    let many: String = (0..200).map(|i| format!("X-{i}: v\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"GET /\r\n\r\n".to_vec(), "400 Bad Request"),
        (
            b"GET / HTTP/1.1\r\nNoColon\r\n\r\n".to_vec(),
            "400 Bad Request",
        ),
        (
            b"POST /echo HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n".to_vec(),
            "400 Bad Request",
        ),
        (
            b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(),
            "400 Bad Request",
        ),
        (
            b"POST /echo HTTP/1.1\r\nContent-Length: 9999999\r\n\r\n".to_vec(),
            "413 Content Too Large",
        ),
        (long_target.into_bytes(), "414 URI Too Long"),
        (many.into_bytes(), "431 Request Header Fields Too Large"),
        (
            b"GET / HTTP/2.0\r\n\r\n".to_vec(),
            "505 HTTP Version Not Supported",
        ),
        (
            b"POST /echo HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(),
            "501 Not Implemented",
        ),
    ];
    for (raw, want) in &cases {
        // A good request first: it is answered before the refusal.
        let mut bytes = b"GET / HTTP/1.1\r\n\r\n".to_vec();
        bytes.extend_from_slice(raw);
        let got = exchange(s.port, &bytes);
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        let second = got
            .find("\r\n\r\nHello, World!")
            .map(|i| &got[i + 17..])
            .unwrap_or("");
        assert!(
            second.starts_with(&format!("HTTP/1.1 {want}\r\n")),
            "want {want}, got {got}"
        );
        assert!(second.contains("Connection: close\r\n"), "{second}");
    }
    // HTTP/1.0 closes after one response; `Connection: close` too.
    let got = exchange(s.port, b"GET /json HTTP/1.0\r\n\r\n");
    assert!(
        got.starts_with("HTTP/1.1 200 OK") && got.ends_with('}'),
        "{got}"
    );
    let got = exchange(s.port, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert!(got.ends_with("Hello, World!"), "{got}");
    // Pipelined requests, answered in order.
    let got = exchange(
        s.port,
        b"GET /files/index.html HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nConnection: close\r\n\r\n",
    );
    let a = got.find("<h1>hi</h1>").expect("the file");
    let b = got.find("404 Not Found").expect("the 404");
    let c = got.rfind("Hello, World!").expect("the last");
    assert!(a < b && b < c, "{got}");
    let sum = s.finish();
    assert_eq!(sum["refused"].as_u64(), Some(cases.len() as u64), "{sum}");
}

fn metrics_need_the_bearer_token_when_one_is_set(engine: &str) {
    let s = dp_http_with(engine, &["--metrics-token", "s3cret"]);
    let url = s.url("/metrics");
    let status = |extra: &[&str]| {
        let mut args = vec!["-o", "/dev/null", "-w", "%{http_code}"];
        args.extend_from_slice(extra);
        args.push(&url);
        String::from_utf8(curl(&args).1).expect("utf-8")
    };
    assert_eq!(status(&[]), "401");
    assert_eq!(status(&["-H", "Authorization: Bearer wrong"]), "401");
    assert_eq!(status(&["-H", "Authorization: Basic s3cret"]), "401");
    assert_eq!(status(&["-H", "Authorization: Bearer s3cret"]), "200");
    assert_eq!(status(&["-H", "Authorization: bearer s3cret"]), "200");
    let (headers, _) = curl(&["-sS", "-D", "/dev/stderr", "-o", "/dev/null", &url]);
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{headers}"
    );
    // Other routes need nothing.
    assert_eq!(curl(&[&s.url("/plaintext")]).1, b"Hello, World!");
}

/// `--metrics ADDR` serves the same registry on a port of its own, with
/// no token (the address, loopback here, is what guards it).
fn metrics_are_also_served_on_their_own_address(engine: &str) {
    let at = format!("127.0.0.1:{}", support::free_port());
    let s = dp_http_with(engine, &["--metrics", &at, "--metrics-token", "s3cret"]);
    for _ in 0..5 {
        assert_eq!(curl(&[&s.url("/plaintext")]).1, b"Hello, World!");
    }
    let text = support::scrape(&at).expect("a scrape of --metrics");
    assert!(
        support::metric(&text, "dp_http_requests_total") >= 5,
        "{text}"
    );
    assert!(text.contains("dataplane_lcore_passes"), "{text}");
    let sum = s.finish();
    assert!(sum["requests"].as_u64().unwrap_or(0) >= 5, "{sum}");
}

/// Runs `openssl s_client` against the server with `ca` as its trust
/// store, sending `request`; its output, and whether it succeeded.
fn s_client(port: u16, ca: &str, request: &[u8]) -> (bool, String) {
    let mut child = Command::new("timeout")
        .args(["30", "openssl", "s_client", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .args([
            "-servername",
            "localhost",
            "-verify_return_error",
            "-CAfile",
            ca,
        ])
        .args(["-ign_eof"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl s_client");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(request)
        .expect("request");
    let out = child.wait_with_output().expect("s_client");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn https_with_curl_and_openssl(engine: &str) {
    let (Some(pki), Some(stranger)) = (support::Pki::new("http"), support::Pki::new("other"))
    else {
        return;
    };
    let s = dp_http_with(
        engine,
        &[
            "--tls-cert",
            &pki.path("cert.pem"),
            "--tls-key",
            &pki.path("key.pem"),
            "--metrics-token",
            "s3cret",
        ],
    );
    let url = |path: &str| format!("https://localhost:{}{path}", s.port);
    let ca = pki.path("ca.pem");
    // Keep-alive over TLS: two requests on one connection, a 300 KB file
    // (many records), and a chunked upload echoed byte for byte.
    let (log, body) = curl(&[
        "-v",
        "--cacert",
        &ca,
        &url("/plaintext"),
        &url("/plaintext"),
    ]);
    assert_eq!(body, b"Hello, World!Hello, World!");
    assert!(
        log.contains("Re-using existing connection") || log.contains("Reusing existing"),
        "{log}"
    );
    assert!(log.contains("ALPN: server accepted http/1.1"), "{log}");
    let (_, file) = curl(&["--cacert", &ca, &url("/files/blob.bin")]);
    assert!(file == pattern(300_000), "the file differs over TLS");
    let upload = s.dir.join("upload.bin");
    std::fs::write(&upload, pattern(200_000)).expect("write");
    let (_, echoed) = curl(&[
        "--cacert",
        &ca,
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &format!("@{}", upload.display()),
        &url("/echo"),
    ]);
    assert!(echoed == pattern(200_000), "the echo differs over TLS");
    // The bearer token still guards /metrics.
    let status = |extra: &[&str]| {
        let mut args = vec!["--cacert", &ca, "-o", "/dev/null", "-w", "%{http_code}"];
        args.extend_from_slice(extra);
        let u = url("/metrics");
        args.push(&u);
        String::from_utf8(curl(&args).1).expect("utf-8")
    };
    assert_eq!(status(&[]), "401");
    assert_eq!(status(&["-H", "Authorization: Bearer s3cret"]), "200");
    // A client that does not trust the certificate is refused: curl with
    // the system's store (60: not verified), and with another CA.
    for extra in [&[][..], &["--cacert", &stranger.path("ca.pem")][..]] {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "30"])
            .args(extra)
            .arg(url("/plaintext"))
            .output()
            .expect("curl");
        assert_eq!(
            out.status.code(),
            Some(60),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Plain HTTP to the TLS port gets no HTTP answer.
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30"])
        .arg(format!("http://127.0.0.1:{}/plaintext", s.port))
        .output()
        .expect("curl");
    assert!(!out.status.success() && out.stdout.is_empty(), "{out:?}");
    // openssl s_client: verified, TLS 1.3, and an HTTP exchange through it.
    let request = b"GET /plaintext HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let (ok, text) = s_client(s.port, &ca, request);
    assert!(ok, "{text}");
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    assert!(text.contains("TLSv1.3"), "{text}");
    assert!(text.contains("Hello, World!"), "{text}");
    let (ok, text) = s_client(s.port, &stranger.path("ca.pem"), request);
    assert!(!ok && !text.contains("Hello, World!"), "{text}");
    // wrk over https: 32 connections at once for two seconds, no error.
    let mut wrk_requests = 0;
    if support::have("wrk") {
        let out = Command::new("timeout")
            .args(["60", "wrk", "-t1", "-c32", "-d2s", &url("/plaintext")])
            .output()
            .expect("wrk");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "wrk: {text}");
        assert!(
            !text.contains("Non-2xx") && !text.contains("Socket errors"),
            "{text}"
        );
        wrk_requests = text
            .lines()
            .find_map(|l| {
                l.trim()
                    .split_once(" requests in ")
                    .and_then(|(n, _)| n.parse().ok())
            })
            .unwrap_or_else(|| panic!("no request count in {text}"));
        assert!(wrk_requests > 100, "{text}");
    }
    let sum = s.finish();
    // Every response wrk counted, and the six above; one 401.
    assert!(
        sum["by_class"][1].as_u64().unwrap_or(0) >= 6 + wrk_requests,
        "{sum}"
    );
    assert_eq!(sum["by_class"][3], 1, "{sum}");
    assert_eq!(sum["refused"], 0, "{sum}");
}

fn wrk_runs_without_errors(engine: &str) {
    if !support::have("wrk") {
        return;
    }
    let s = dp_http(engine);
    let out = Command::new("timeout")
        .args([
            "60",
            "wrk",
            "-t1",
            "-c32",
            "-d2s",
            "--latency",
            &s.url("/plaintext"),
        ])
        .output()
        .expect("wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "wrk: {text}");
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
    let sum = s.finish();
    assert!(sum["requests"].as_u64().unwrap_or(0) >= reqs, "{sum}");
    assert_eq!(sum["refused"], 0, "{sum}");
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
    curl_serves_every_route,
    malformed_requests_get_their_status_and_a_close,
    metrics_need_the_bearer_token_when_one_is_set,
    metrics_are_also_served_on_their_own_address,
    https_with_curl_and_openssl,
    wrk_runs_without_errors,
);
