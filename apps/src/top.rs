//! `dp-top`: a live view of a running program through its telemetry
//! socket (`--telemetry PREFIX`, see `dataplane::telemetry`), refreshed
//! once a second: per-lcore busy share, per-port packet rates and drops
//! by reason, and per-worker queue depths. It speaks only DPDK's
//! telemetry v2 protocol, so it reads any program that serves those
//! commands (a DPDK application's own socket shows its ports and lcores
//! too, as far as it answers them).
//!
//! On a terminal it redraws in place and quits on `q` (or Ctrl-C, or when
//! the program goes away), restoring the terminal; otherwise (a pipe, a
//! log) it prints one frame per refresh, plainly. `--iterations N` stops
//! after N frames.

use anyhow::{Context, bail};
use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Options.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "dp-top", version)]
pub struct Args {
    /// The DPDK file-prefix the program serves telemetry under
    /// (`--telemetry PREFIX` of our programs; `rte` is DPDK's default).
    #[arg(short = 'f', long = "file-prefix", default_value = "rte")]
    pub file_prefix: String,
    /// The instance, for a second program under the same prefix
    /// (`dpdk_telemetry.v2:N`).
    #[arg(short = 'i', long, default_value_t = 0)]
    pub instance: u32,
    /// The socket's path, instead of the prefix and instance.
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Seconds between refreshes.
    #[arg(long, default_value_t = 1.0)]
    pub interval: f64,
    /// Stop after this many frames (0: until `q`, Ctrl-C, or the program
    /// goes away).
    #[arg(long, default_value_t = 0)]
    pub iterations: u64,
}

/// A connection to a telemetry socket.
#[derive(Debug)]
pub struct Client {
    fd: OwnedFd,
    max: usize,
    commands: Vec<String>,
}

impl Client {
    /// Connects and reads the greeting and the command list.
    ///
    /// # Errors
    /// No socket there, or an answer that is not the protocol's.
    pub fn connect(path: &std::path::Path) -> anyhow::Result<Client> {
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        socket::connect(fd.as_raw_fd(), &UnixAddr::new(path)?)
            .with_context(|| format!("connecting to {}", path.display()))?;
        let mut c = Client {
            fd,
            max: 1024,
            commands: Vec::new(),
        };
        let hello = c.read()?;
        c.max = hello["max_output_len"]
            .as_u64()
            .context("the greeting has no max_output_len")? as usize;
        c.commands = c.ask("/")?["/"]
            .as_array()
            .context("`/` listed no commands")?
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        Ok(c)
    }

    fn read(&self) -> anyhow::Result<Value> {
        let mut buf = vec![0u8; self.max.max(1024)];
        let n = socket::recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
        if n == 0 {
            bail!("the program closed the socket");
        }
        Ok(serde_json::from_slice(&buf[..n])?)
    }

    /// Sends one request and reads its answer.
    ///
    /// # Errors
    /// The socket failed or the answer is not JSON.
    pub fn ask(&self, request: &str) -> anyhow::Result<Value> {
        socket::send(
            self.fd.as_raw_fd(),
            request.as_bytes(),
            MsgFlags::MSG_NOSIGNAL,
        )?;
        self.read()
    }

    /// Whether the program serves `command`.
    pub fn has(&self, command: &str) -> bool {
        self.commands.iter().any(|c| c == command)
    }
}

/// What one refresh read.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    at: Option<Instant>,
    /// Per lcore: (busy cycles, total cycles).
    lcores: BTreeMap<u64, (u64, u64)>,
    /// Per port: its name and its stats object.
    ports: BTreeMap<u64, (String, Value)>,
    workers: Vec<Value>,
}

/// Reads everything a frame shows.
///
/// # Errors
/// As [`Client::ask`].
pub fn sample(c: &Client) -> anyhow::Result<Sample> {
    let mut s = Sample {
        at: Some(Instant::now()),
        ..Sample::default()
    };
    if c.has("/eal/lcore/usage") {
        let u = &c.ask("/eal/lcore/usage")?["/eal/lcore/usage"];
        let ids = u["lcore_ids"].as_array().cloned().unwrap_or_default();
        for (i, id) in ids.iter().enumerate() {
            let busy = u["busy_cycles"][i].as_u64().unwrap_or(0);
            let total = u["total_cycles"][i].as_u64().unwrap_or(0);
            s.lcores.insert(id.as_u64().unwrap_or(0), (busy, total));
        }
    }
    if c.has("/ethdev/list") {
        let list = c.ask("/ethdev/list")?["/ethdev/list"].clone();
        for id in list.as_array().cloned().unwrap_or_default() {
            let id = id.as_u64().unwrap_or(0);
            let stats = c.ask(&format!("/ethdev/stats,{id}"))?["/ethdev/stats"].clone();
            let name = if c.has("/ethdev/info") {
                c.ask(&format!("/ethdev/info,{id}"))?["/ethdev/info"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            } else {
                String::new()
            };
            s.ports.insert(id, (name, stats));
        }
    }
    if c.has("/dataplane/workers") {
        s.workers = c.ask("/dataplane/workers")?["/dataplane/workers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
    }
    Ok(s)
}

fn rate(now: u64, before: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        0.0
    } else {
        now.saturating_sub(before) as f64 / secs
    }
}

/// The frame for `now` against the sample before it.
pub fn render(now: &Sample, before: &Sample) -> String {
    let secs = match (now.at, before.at) {
        (Some(a), Some(b)) => a.duration_since(b).as_secs_f64(),
        _ => 0.0,
    };
    let mut out = String::new();
    let _ = writeln!(out, "{:<8} {:>7}", "lcore", "busy");
    for (id, &(busy, total)) in &now.lcores {
        let (b0, t0) = before.lcores.get(id).copied().unwrap_or((0, 0));
        let dt = total.saturating_sub(t0);
        let share = if dt > 0 {
            100.0 * busy.saturating_sub(b0) as f64 / dt as f64
        } else {
            0.0
        };
        let _ = writeln!(out, "{:<8} {:>6.1}%", id, share);
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<5} {:<20} {:>12} {:>12} {:>10}  drops by reason",
        "port", "name", "rx pps", "tx pps", "rx MB/s"
    );
    for (id, (name, st)) in &now.ports {
        let old = before.ports.get(id).map(|p| &p.1);
        let get = |v: Option<&Value>, k: &str| v.and_then(|v| v[k].as_u64()).unwrap_or(0);
        let drops: Vec<String> = st
            .as_object()
            .map(|o| {
                o.iter()
                    .filter(|(k, v)| k.starts_with("dropped_") && v.as_u64().unwrap_or(0) > 0)
                    .map(|(k, v)| format!("{}={}", &k["dropped_".len()..], v))
                    .collect()
            })
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<5} {:<20} {:>12.0} {:>12.0} {:>10.1}  {}",
            id,
            name,
            rate(get(Some(st), "ipackets"), get(old, "ipackets"), secs),
            rate(get(Some(st), "opackets"), get(old, "opackets"), secs),
            rate(get(Some(st), "ibytes"), get(old, "ibytes"), secs) / 1e6,
            if drops.is_empty() {
                "-".to_owned()
            } else {
                drops.join(" ")
            }
        );
    }
    if !now.workers.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<7} {:<8} {:>12} {:>8} {:>7} {:>9}",
            "worker", "status", "handled/s", "depth", "errors", "restarts"
        );
        for w in &now.workers {
            let id = w["worker"].as_u64().unwrap_or(0);
            let old = before
                .workers
                .iter()
                .find(|o| o["worker"].as_u64() == Some(id))
                .and_then(|o| o["handled"].as_u64())
                .unwrap_or(0);
            let _ = writeln!(
                out,
                "{:<7} {:<8} {:>12.0} {:>8} {:>7} {:>9}",
                id,
                w["status"].as_str().unwrap_or("?"),
                rate(w["handled"].as_u64().unwrap_or(0), old, secs),
                w["queue_depth"].as_u64().unwrap_or(0),
                w["errors"].as_u64().unwrap_or(0),
                w["restarts"].as_u64().unwrap_or(0)
            );
        }
    }
    out
}

/// The socket `args` name.
pub fn socket_path(args: &Args) -> PathBuf {
    args.socket.clone().unwrap_or_else(|| {
        let dir = dataplane::telemetry::runtime_dir(&args.file_prefix);
        let name = dataplane::telemetry::SOCKET_NAME;
        if args.instance == 0 {
            dir.join(name)
        } else {
            dir.join(format!("{name}:{}", args.instance))
        }
    })
}

/// The terminal in non-canonical, no-echo mode while it lives (so `q` is
/// read without Enter), restored when dropped.
struct RawInput {
    saved: nix::sys::termios::Termios,
}

impl RawInput {
    fn new() -> Option<RawInput> {
        use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        raw.local_flags
            .remove(LocalFlags::ICANON | LocalFlags::ECHO);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw).ok()?;
        Some(RawInput { saved })
    }
}

impl Drop for RawInput {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(
            std::io::stdin(),
            nix::sys::termios::SetArg::TCSANOW,
            &self.saved,
        );
    }
}

/// Whether `q` was typed within `wait`.
fn quit_key(wait: Duration) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let stdin = std::io::stdin();
    let mut fds = [PollFd::new(
        std::os::fd::AsFd::as_fd(&stdin),
        PollFlags::POLLIN,
    )];
    let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
    if poll(&mut fds, PollTimeout::from(ms)).unwrap_or(0) == 0 {
        return false;
    }
    let mut b = [0u8; 16];
    match nix::unistd::read(&stdin, &mut b) {
        Ok(n) => b[..n].iter().any(|&c| c == b'q' || c == b'Q'),
        Err(_) => false,
    }
}

/// Runs the view until `q`, a signal, the program's exit, or the
/// iteration count.
///
/// # Errors
/// No socket to connect to.
pub fn run(args: &Args, quit: &std::sync::atomic::AtomicBool) -> anyhow::Result<()> {
    use std::io::{IsTerminal, Write};
    let path = socket_path(args);
    let client = Client::connect(&path)?;
    let tty = std::io::stdout().is_terminal();
    let raw = if tty && std::io::stdin().is_terminal() {
        RawInput::new()
    } else {
        None
    };
    let interval = Duration::from_secs_f64(args.interval.clamp(0.05, 3600.0));
    let mut before = Sample::default();
    let mut frames = 0u64;
    let mut out = std::io::stdout();
    if tty {
        // Hide the cursor while redrawing.
        let _ = write!(out, "\x1b[?25l");
    }
    let result = loop {
        let now = match sample(&client) {
            Ok(s) => s,
            Err(e) => break Err(e.context("the program went away")),
        };
        let frame = render(&now, &before);
        before = now;
        frames += 1;
        if tty {
            let _ = write!(
                out,
                "\x1b[H\x1b[2J{} — {}  (q quits)\r\n",
                path.display(),
                frames
            );
            let _ = write!(out, "{}", frame.replace('\n', "\r\n"));
        } else {
            let _ = writeln!(out, "--- {}", frames);
            let _ = write!(out, "{frame}");
        }
        let _ = out.flush();
        if args.iterations > 0 && frames >= args.iterations {
            break Ok(());
        }
        let q = if raw.is_some() {
            quit_key(interval)
        } else {
            std::thread::sleep(interval);
            false
        };
        if q || quit.load(std::sync::atomic::Ordering::Relaxed) {
            break Ok(());
        }
    };
    if tty {
        let _ = write!(out, "\x1b[?25h\r\n");
        let _ = out.flush();
    }
    drop(raw);
    result
}
