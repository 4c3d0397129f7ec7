//! DPDK-compatible telemetry: a Unix `SOCK_SEQPACKET` socket speaking
//! DPDK's telemetry v2 protocol, so that `dpdk-telemetry.py` and
//! Telegraf's `dpdk` input read a running program unchanged.
//!
//! The protocol, as DPDK 22.11's `lib/telemetry` speaks it: on connect the
//! server sends `{"version": ..., "pid": ..., "max_output_len": 16384}`;
//! each request is one packet, a command and optionally `,` and a
//! parameter (`/ethdev/stats,0`); each answer is one packet, a JSON object
//! with the command as its one key (`{"/ethdev/stats": {...}}`), `null`
//! for a command it does not know or a parameter it refuses. `/` lists
//! the commands, `/help,CMD` says what one does, `/info` repeats the
//! greeting.
//!
//! Commands are registered with [`Telemetry::register`]; [`Telemetry::lcores`]
//! adds `/eal/lcore/list`, `/eal/lcore/info,N` and `/eal/lcore/usage` (busy
//! and total TSC cycles per lcore, as DPDK 23.03's `/eal/lcore/usage`)
//! over a running group; programs add `/ethdev/...` and their own
//! (`/dataplane/...`).
//!
//! The socket lives where DPDK's would: `$RUNTIME_DIRECTORY`, else
//! `/var/run` for root and `$XDG_RUNTIME_DIR` (or `/tmp`) for others, then
//! `dpdk/<file-prefix>/dpdk_telemetry.v2`. The directory is made mode
//! 0700 and the socket 0600: only its owner can connect. When a live
//! socket already has the name (a DPDK EAL of this process with
//! telemetry on, another program), the next free instance suffix is
//! taken, `dpdk_telemetry.v2:1` and so on, which `dpdk-telemetry.py -i N`
//! connects to. A stale socket (nobody listening) is replaced.
//!
//! The server is a control thread, never an lcore: it answers from
//! counters the lcores publish, and each connection gets a thread of its
//! own (at most [`MAX_CLIENTS`] at once, as DPDK allows).

use crate::lcore::LcoreStatsView;
use crate::{Error, Result};
use nix::sys::socket::{self, AddressFamily, Backlog, MsgFlags, SockFlag, SockType, UnixAddr};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;

/// The most bytes of one answer (DPDK's `MAX_OUTPUT_LEN`).
pub const MAX_OUTPUT_LEN: usize = 16 * 1024;
/// The most bytes of one request (DPDK's `MAX_CMD_LEN` plus a parameter).
pub const MAX_REQUEST_LEN: usize = 1024;
/// The most clients connected at once (DPDK's `MAX_CONNECTIONS`).
pub const MAX_CLIENTS: usize = 10;
/// The socket's name in its directory.
pub const SOCKET_NAME: &str = "dpdk_telemetry.v2";

/// A command's answer for a parameter (empty when none was given): a
/// JSON value, or `None` for a parameter it refuses.
pub type Handler = Arc<dyn Fn(&str) -> Option<Value> + Send + Sync>;

struct Command {
    help: String,
    handler: Handler,
}

/// The commands and their handlers; cheap to clone (shared).
#[derive(Clone, Default)]
pub struct Telemetry {
    commands: Arc<RwLock<BTreeMap<String, Command>>>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("commands", &self.commands().len())
            .finish()
    }
}

/// The greeting, and `/info`'s answer.
fn info() -> Value {
    json!({
        "version": format!("dataplane {}", env!("CARGO_PKG_VERSION")),
        "pid": std::process::id(),
        "max_output_len": MAX_OUTPUT_LEN,
    })
}

impl Telemetry {
    /// A registry with `/`, `/info` and `/help`.
    pub fn new() -> Telemetry {
        Telemetry::default()
    }

    /// Adds (or replaces) a command: `/` and then lower-case letters,
    /// digits, `_` and `/`, at most 56 bytes (DPDK's rule).
    ///
    /// # Errors
    /// [`Error::Config`] for a name DPDK would refuse, or one of the three
    /// built in.
    pub fn register(
        &self,
        command: &str,
        help: &str,
        handler: impl Fn(&str) -> Option<Value> + Send + Sync + 'static,
    ) -> Result<()> {
        let valid = command.len() <= 56
            && command.len() > 1
            && command.starts_with('/')
            && command
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'/');
        if !valid || matches!(command, "/info" | "/help") {
            return Err(Error::Config(format!(
                "telemetry command {command:?}: names are '/' then [a-z0-9_/], at most 56 bytes, \
                 and not a built-in one"
            )));
        }
        let mut map = self.commands.write().unwrap_or_else(|p| p.into_inner());
        map.insert(
            command.to_string(),
            Command {
                help: help.to_string(),
                handler: Arc::new(handler),
            },
        );
        Ok(())
    }

    /// Every command, sorted, the built-in ones included.
    pub fn commands(&self) -> Vec<String> {
        let map = self.commands.read().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<String> = ["/", "/help", "/info"]
            .iter()
            .map(|s| s.to_string())
            .chain(map.keys().cloned())
            .collect();
        all.sort();
        all
    }

    /// Adds `/eal/lcore/list`, `/eal/lcore/info,N` and `/eal/lcore/usage`
    /// over `lcores`.
    ///
    /// # Errors
    /// As [`register`](Self::register) (never, for these names).
    pub fn lcores(&self, lcores: LcoreStatsView) -> Result<()> {
        let v = lcores.clone();
        self.register(
            "/eal/lcore/list",
            "List of lcore ids. Takes no parameters",
            move |_| {
                Some(json!(
                    v.snapshot().iter().map(|l| l.0.0).collect::<Vec<_>>()
                ))
            },
        )?;
        let v = lcores.clone();
        self.register(
            "/eal/lcore/info",
            "Returns lcore info. Parameters: int lcore_id",
            move |p| {
                let id: u32 = p.trim().parse().ok()?;
                let (lcore, role, cpu, s) = v.snapshot().into_iter().find(|l| l.0.0 == id)?;
                Some(json!({
                    "lcore_id": lcore.0,
                    "socket": 0,
                    "role": "RTE",
                    "dataplane_role": role.to_string(),
                    "cpuset": cpu.map(|c| vec![c.0]).unwrap_or_default(),
                    "total_cycles": s.busy_cycles + s.idle_cycles,
                    "busy_cycles": s.busy_cycles,
                    "passes": s.passes,
                    "busy_passes": s.busy_passes,
                    "work_items": s.work_items,
                }))
            },
        )?;
        self.register(
            "/eal/lcore/usage",
            "Returns lcore cycles usage. Takes no parameters",
            move |_| {
                let snap = lcores.snapshot();
                Some(json!({
                    "lcore_ids": snap.iter().map(|l| l.0.0).collect::<Vec<_>>(),
                    "total_cycles": snap.iter().map(|l| l.3.busy_cycles + l.3.idle_cycles).collect::<Vec<_>>(),
                    "busy_cycles": snap.iter().map(|l| l.3.busy_cycles).collect::<Vec<_>>(),
                }))
            },
        )
    }

    /// Adds `/dataplane/workers`: every worker's counters (status,
    /// received, handled, errors, panics, restarts, queue depth).
    ///
    /// # Errors
    /// Never for this name.
    pub fn workers(&self, view: crate::worker::WorkerStatsView) -> Result<()> {
        self.register(
            "/dataplane/workers",
            "Returns every worker's counters. Takes no parameters",
            move |_| serde_json::to_value(view.snapshot()).ok(),
        )
    }

    /// The answer to one request, as the socket sends it.
    pub fn answer(&self, request: &str) -> String {
        let request = request.trim_end_matches(['\0', '\n', '\r']);
        let (cmd, param) = request.split_once(',').unwrap_or((request, ""));
        let value = match cmd {
            "/" => Some(json!(self.commands())),
            "/info" => Some(info()),
            "/help" => {
                let map = self.commands.read().unwrap_or_else(|p| p.into_inner());
                let help = match param {
                    "/" => Some("Returns list of available commands, Takes no parameters"),
                    "/info" => Some("Returns DPDK Telemetry information. Takes no parameters"),
                    "/help" => Some("Returns help text for a command. Parameters: string command"),
                    other => map.get(other).map(|c| c.help.as_str()),
                };
                help.map(|h| json!({ param: h }))
            }
            _ => {
                let handler = {
                    let map = self.commands.read().unwrap_or_else(|p| p.into_inner());
                    map.get(cmd).map(|c| c.handler.clone())
                };
                // A handler that panics answers null, like one that refuses.
                handler.and_then(|h| {
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h(param)))
                        .ok()
                        .flatten()
                })
            }
        };
        let key = if cmd.len() <= 56 { cmd } else { "" };
        let out = json!({ key: value }).to_string();
        if out.len() > MAX_OUTPUT_LEN {
            tracing::warn!(
                command = cmd,
                bytes = out.len(),
                "telemetry answer too long"
            );
            return json!({ key: null }).to_string();
        }
        out
    }

    /// Serves the commands on the socket for `file_prefix` (see the module
    /// docs) until the server is dropped.
    ///
    /// # Errors
    /// [`Error::Io`] when the directory or socket cannot be made.
    pub fn serve(&self, file_prefix: &str) -> Result<TelemetryServer> {
        let dir = runtime_dir(file_prefix);
        self.serve_in(&dir)
    }

    /// As [`serve`](Self::serve), in `dir`.
    ///
    /// # Errors
    /// As [`serve`](Self::serve).
    pub fn serve_in(&self, dir: &Path) -> Result<TelemetryServer> {
        let io = |what: &str, e: std::io::Error| Error::io(what, e);
        std::fs::create_dir_all(dir).map_err(|e| io(&format!("creating {}", dir.display()), e))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io(&format!("restricting {} to its owner", dir.display()), e))?;
        let (fd, path) = bind_free(dir)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| io(&format!("restricting {}", path.display()), e))?;
        socket::listen(&fd, Backlog::new(MAX_CLIENTS as i32).map_err(nix_err)?).map_err(nix_err)?;
        let stop = Arc::new(AtomicBool::new(false));
        let clients = Arc::new(AtomicUsize::new(0));
        let me = self.clone();
        let (s, c) = (stop.clone(), clients.clone());
        let thread = std::thread::Builder::new()
            .name("telemetry".into())
            .spawn(move || accept_loop(&me, &fd, &s, &c))
            .map_err(|e| io("starting the telemetry thread", e))?;
        tracing::info!(path = %path.display(), "telemetry socket listening");
        Ok(TelemetryServer {
            path,
            stop,
            thread: Some(thread),
        })
    }
}

fn nix_err(e: nix::Error) -> Error {
    Error::io("the telemetry socket", std::io::Error::from(e))
}

/// DPDK's runtime directory for `file_prefix`.
pub fn runtime_dir(file_prefix: &str) -> PathBuf {
    let base = std::env::var_os("RUNTIME_DIRECTORY")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            if nix::unistd::geteuid().is_root() {
                PathBuf::from("/var/run")
            } else {
                std::env::var_os("XDG_RUNTIME_DIR")
                    .map_or_else(|| PathBuf::from("/tmp"), PathBuf::from)
            }
        });
    base.join("dpdk").join(file_prefix)
}

/// Binds the first free name: `dpdk_telemetry.v2`, then `:1`, `:2`, ...;
/// a name whose socket nobody listens on is taken over.
fn bind_free(dir: &Path) -> Result<(OwnedFd, PathBuf)> {
    for instance in 0..64 {
        let path = if instance == 0 {
            dir.join(SOCKET_NAME)
        } else {
            dir.join(format!("{SOCKET_NAME}:{instance}"))
        };
        if path.exists() {
            if in_use(&path) {
                continue;
            }
            let _ = std::fs::remove_file(&path);
        }
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(nix_err)?;
        let addr = UnixAddr::new(&path).map_err(nix_err)?;
        match socket::bind(fd.as_raw_fd(), &addr) {
            Ok(()) => return Ok((fd, path)),
            Err(nix::Error::EADDRINUSE) => continue,
            Err(e) => return Err(nix_err(e)),
        }
    }
    Err(Error::io(
        format!("no free telemetry socket name in {}", dir.display()),
        std::io::Error::from(std::io::ErrorKind::AddrInUse),
    ))
}

/// Whether something listens on the socket at `path`.
fn in_use(path: &Path) -> bool {
    let Ok(fd) = socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    ) else {
        return false;
    };
    let Ok(addr) = UnixAddr::new(path) else {
        return false;
    };
    socket::connect(fd.as_raw_fd(), &addr).is_ok()
}

fn accept_loop(t: &Telemetry, listener: &OwnedFd, stop: &AtomicBool, clients: &Arc<AtomicUsize>) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    while !stop.load(Ordering::Acquire) {
        let mut fds = [PollFd::new(
            std::os::fd::AsFd::as_fd(listener),
            PollFlags::POLLIN,
        )];
        match poll(&mut fds, PollTimeout::from(100u16)) {
            Ok(0) | Err(nix::Error::EINTR) => continue,
            Ok(_) => {}
            Err(e) => {
                tracing::error!("telemetry: poll failed: {e}; the socket stops answering");
                return;
            }
        }
        let conn = match socket::accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
            // SAFETY: accept4 returned a new descriptor that nothing else
            // owns.
            Ok(raw) => unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) },
            Err(_) => continue,
        };
        if clients.fetch_add(1, Ordering::AcqRel) >= MAX_CLIENTS {
            clients.fetch_sub(1, Ordering::AcqRel);
            let _ = socket::send(
                conn.as_raw_fd(),
                b"{\"error\": \"too many telemetry clients\"}",
                MsgFlags::MSG_NOSIGNAL,
            );
            continue;
        }
        let (t, c) = (t.clone(), clients.clone());
        let spawned = std::thread::Builder::new()
            .name("telemetry-client".into())
            .spawn(move || {
                serve_client(&t, &conn);
                c.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            clients.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn serve_client(t: &Telemetry, conn: &OwnedFd) {
    let fd = conn.as_raw_fd();
    if socket::send(fd, info().to_string().as_bytes(), MsgFlags::MSG_NOSIGNAL).is_err() {
        return;
    }
    let mut buf = vec![0u8; MAX_REQUEST_LEN];
    loop {
        let n = match socket::recv(fd, &mut buf, MsgFlags::empty()) {
            Ok(0) | Err(_) => return, // closed
            Ok(n) => n,
        };
        let request = String::from_utf8_lossy(&buf[..n]);
        let answer = t.answer(&request);
        if socket::send(fd, answer.as_bytes(), MsgFlags::MSG_NOSIGNAL).is_err() {
            return;
        }
    }
}

/// A running telemetry socket; dropping it stops the accept loop and
/// removes the socket file (connected clients finish on their own).
#[derive(Debug)]
pub struct TelemetryServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TelemetryServer {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TelemetryServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_as_dpdk_does() {
        let t = Telemetry::new();
        t.register("/ethdev/list", "List of ports", |_| Some(json!([0, 1])))
            .unwrap();
        t.register(
            "/ethdev/stats",
            "Port stats. Parameters: int port_id",
            |p| {
                let id: u32 = p.parse().ok()?;
                (id < 2).then(|| json!({ "ipackets": id }))
            },
        )
        .unwrap();
        let v = |s: &str| -> Value { serde_json::from_str(&t.answer(s)).unwrap() };
        assert_eq!(v("/ethdev/list"), json!({"/ethdev/list": [0, 1]}));
        assert_eq!(
            v("/ethdev/stats,1"),
            json!({"/ethdev/stats": {"ipackets": 1}})
        );
        assert_eq!(v("/ethdev/stats,7"), json!({"/ethdev/stats": null}));
        assert_eq!(v("/ethdev/stats,x"), json!({"/ethdev/stats": null}));
        assert_eq!(v("/nope"), json!({"/nope": null}));
        assert_eq!(
            v("/"),
            json!({"/": ["/", "/ethdev/list", "/ethdev/stats", "/help", "/info"]})
        );
        assert_eq!(
            v("/help,/ethdev/list"),
            json!({"/help": {"/ethdev/list": "List of ports"}})
        );
        assert_eq!(v("/info")["/info"]["max_output_len"], MAX_OUTPUT_LEN);
        // Names DPDK refuses.
        assert!(t.register("nope", "", |_| None).is_err());
        assert!(t.register("/Upper", "", |_| None).is_err());
        assert!(t.register("/info", "", |_| None).is_err());
        // A panicking handler answers null; an answer too long, null.
        t.register("/boom", "", |_| panic!("boom")).unwrap();
        assert_eq!(v("/boom"), json!({"/boom": null}));
        t.register("/big", "", |_| Some(json!("x".repeat(MAX_OUTPUT_LEN))))
            .unwrap();
        assert_eq!(v("/big"), json!({"/big": null}));
    }

    #[test]
    fn serves_on_a_seqpacket_socket_and_takes_the_next_instance() {
        let dir = std::env::temp_dir().join(format!("dp-telemetry-{}", std::process::id()));
        let t = Telemetry::new();
        t.register("/x", "x", |p| Some(json!(p))).unwrap();
        let a = t.serve_in(&dir).unwrap();
        let b = t.serve_in(&dir).unwrap();
        assert_eq!(a.path(), dir.join(SOCKET_NAME));
        assert_eq!(b.path(), dir.join(format!("{SOCKET_NAME}:1")));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(a.path()), 0o600);

        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::empty(),
            None,
        )
        .unwrap();
        socket::connect(fd.as_raw_fd(), &UnixAddr::new(a.path()).unwrap()).unwrap();
        let mut buf = vec![0u8; MAX_OUTPUT_LEN];
        let n = socket::recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
        let hello: Value = serde_json::from_slice(&buf[..n]).unwrap();
        assert_eq!(hello["pid"], std::process::id());
        socket::send(fd.as_raw_fd(), b"/x,hello", MsgFlags::empty()).unwrap();
        let n = socket::recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
        assert_eq!(&buf[..n], br#"{"/x":"hello"}"#);
        drop(fd);
        let path = a.path().to_path_buf();
        drop(a);
        assert!(!path.exists(), "the socket is removed when the server goes");
        drop(b);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn runtime_dir_follows_dpdk() {
        // RUNTIME_DIRECTORY is what systemd sets; the rest depends on the
        // user, so only the tail is checked here.
        assert!(runtime_dir("rte").ends_with("dpdk/rte"));
    }
}
