//! What the apps' end-to-end tests share: reading a program's JSON
//! summary, making and reading pcap files, and asking real readers
//! (tcpdump, tshark) what they see.
#![allow(dead_code)] // each test file uses a part

use std::path::Path;
use std::process::{Command, Output};

/// The JSON summary a program printed as its last line of stdout, after
/// checking that it succeeded.
pub fn summary(out: &Output, what: &str) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{what} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().expect("a summary line");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{what}: {e}: {last}"))
}

/// A UDP/IPv4 frame of 128 bytes; `signature` puts `/bin/sh` in its
/// payload.
pub fn frame(i: u32, signature: bool) -> Vec<u8> {
    let mut payload: Vec<u8> = (0..86u32).map(|k| (i + k) as u8).collect();
    if signature {
        payload[10..17].copy_from_slice(b"/bin/sh");
    }
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 8, 0];
    let mut ip = [
        0x45u8, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 1, 0, 2,
    ];
    ip[2..4].copy_from_slice(&(20 + 8 + payload.len() as u16).to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&(1024 + (i % 100) as u16).to_be_bytes());
    f.extend_from_slice(&4789u16.to_be_bytes());
    f.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&payload);
    f
}

/// A classic pcap file of `frames`.
pub fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    for v in [0u32, 0, 65535, 1] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for (i, f) in frames.iter().enumerate() {
        for v in [1u32, i as u32, f.len() as u32, f.len() as u32] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(f);
    }
    std::fs::write(path, out).expect("writing the pcap");
}

/// The packets of a pcap file (either timestamp resolution).
pub fn read_pcap(path: &Path) -> Vec<Vec<u8>> {
    let b = std::fs::read(path).expect("reading the pcap");
    assert!(b.len() >= 24, "no pcap header");
    let magic = u32::from_le_bytes(b[0..4].try_into().unwrap());
    assert!(
        matches!(magic, 0xa1b2_c3d4 | 0xa1b2_3c4d),
        "magic {magic:#x}"
    );
    let mut at = 24;
    let mut out = Vec::new();
    while at + 16 <= b.len() {
        let len = u32::from_le_bytes(b[at + 8..at + 12].try_into().unwrap()) as usize;
        out.push(b[at + 16..at + 16 + len].to_vec());
        at += 16 + len;
    }
    out
}

/// Whether `DATAPLANE_REQUIRE` names `capability`.
pub fn required(capability: &str) -> bool {
    std::env::var("DATAPLANE_REQUIRE").is_ok_and(|r| r.split(',').any(|c| c.trim() == capability))
}

/// The packets a real reader counts in a capture file: `tool` is
/// `tcpdump` or `tshark`. Both come with scripts/install-deps.sh; where
/// one is missing this says so and returns `None`, and fails wherever
/// `DATAPLANE_REQUIRE` names `dpdk` (CI, which installs them).
pub fn reader_count(tool: &str, path: &Path) -> Option<u64> {
    let mut cmd = Command::new(tool);
    match tool {
        "tcpdump" => cmd.args(["--count", "-r"]).arg(path),
        _ => cmd
            .args(["-T", "fields", "-e", "frame.number", "-r"])
            .arg(path),
    };
    match cmd.output() {
        Ok(t) => {
            let stdout = String::from_utf8_lossy(&t.stdout);
            let stderr = String::from_utf8_lossy(&t.stderr);
            assert!(
                t.status.success(),
                "{tool} -r {}: {stdout}{stderr}",
                path.display()
            );
            let n = if tool == "tcpdump" {
                let text = format!("{stdout}{stderr}");
                text.split_whitespace()
                    .zip(text.split_whitespace().skip(1))
                    .find(|(_, w)| *w == "packets" || *w == "packet")
                    .and_then(|(n, _)| n.parse().ok())
                    .unwrap_or_else(|| panic!("{tool}: {text}"))
            } else {
                stdout.lines().filter(|l| !l.trim().is_empty()).count() as u64
            };
            Some(n)
        }
        Err(e) => {
            assert!(
                !required("dpdk"),
                "{tool} is needed to read the capture: {e}"
            );
            println!("skip: {tool}: {e} (scripts/install-deps.sh installs it)");
            None
        }
    }
}

/// [`reader_count`] with tcpdump.
pub fn tcpdump_count(path: &Path) -> Option<u64> {
    reader_count("tcpdump", path)
}

/// Whether `tool` runs here; where it does not, says so, and fails where
/// `DATAPLANE_REQUIRE` names `netns` (CI installs every peer).
pub fn have(tool: &str) -> bool {
    have_with(tool, "--version")
}

/// Whether the transport's io_uring engine runs here; where it does not,
/// says why (and fails where `DATAPLANE_REQUIRE` names io_uring). Probed on
/// a thread of its own: a ring's teardown may queue task work on the
/// thread that made it, which interrupts that thread's next blocking
/// system call (EINTR), such as a test client's read.
pub fn io_uring_runs() -> bool {
    let cfg = dataplane::transport::Config {
        engine: "io_uring".parse().expect("an engine name"),
        ..Default::default()
    };
    let made = std::thread::spawn(move || dataplane::transport::Transport::new(cfg).map(drop))
        .join()
        .expect("the probe thread");
    match made {
        Ok(()) => true,
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

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Waits, in at most `tries` steps of 20 ms, until `ready` holds; false
/// if it never did. Bounds a wait for a peer to start or a port to be
/// freed by a count of tries, not by reading a clock.
pub fn poll_until(tries: u32, mut ready: impl FnMut() -> bool) -> bool {
    for _ in 0..tries {
        if ready() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    ready()
}

/// A test CA and a server certificate for `localhost` and 127.0.0.1 that
/// it signed, made with the `openssl` command line as docs/security.md
/// shows, as PEM files in a directory of their own (removed on drop).
pub struct Pki {
    pub dir: std::path::PathBuf,
}

impl Pki {
    /// `None` (the test says why and passes) where `openssl` is missing,
    /// except where `DATAPLANE_REQUIRE` names `netns`.
    pub fn new(tag: &str) -> Option<Self> {
        if !have_with("openssl", "version") {
            return None;
        }
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "dp-pki-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(
            dir.join("ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .expect("ext");
        let steps: [&[&str]; 3] = [
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                &format!("/CN=dataplane test CA {tag}"),
            ],
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "key.pem",
                "-out",
                "req.csr",
                "-subj",
                "/CN=localhost",
            ],
            &[
                "x509",
                "-req",
                "-in",
                "req.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "cert.pem",
                "-days",
                "2",
                "-extfile",
                "ext",
            ],
        ];
        for args in steps {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .expect("openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Some(Self { dir })
    }

    /// A file of it: `ca.pem`, `cert.pem` or `key.pem`.
    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// [`have`] for a tool that answers `arg` rather than `--version`.
pub fn have_with(tool: &str, arg: &str) -> bool {
    let ok = Command::new(tool)
        .arg(arg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok();
    if !ok {
        assert!(
            !required("netns"),
            "{tool} is needed (scripts/install-deps.sh)"
        );
        println!("skip: {tool} is not installed (scripts/install-deps.sh installs it)");
    }
    ok
}

/// One scrape of `/metrics` at `addr` (`None` while nothing listens).
pub fn scrape(addr: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// The sum of the values of a scrape's lines that start with `prefix` (a
/// metric name with `{`, or a whole series); 0 when there are none.
pub fn series(text: &str, prefix: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The sum of every series of the metric `name` in a scrape.
pub fn metric(text: &str, name: &str) -> u64 {
    series(text, &format!("{name}{{")) + series(text, &format!("{name} "))
}
