//! Network namespaces and veth pairs, for tests and benchmarks that need
//! real traffic between real interfaces without touching the machine's
//! own network.
//!
//! A [`Netns`] is a named namespace (`ip netns add`) that is deleted when
//! the value is dropped, on every path including a panic's unwinding;
//! deleting it destroys the interfaces inside it. IPv6 is switched off in
//! it before any interface comes up, so that router solicitations and
//! neighbour discovery do not add frames the test did not send. Sockets
//! are opened inside it by running code on a thread that has joined it
//! ([`Netns::run`]); a socket stays in the namespace it was created in, so
//! ports opened there can be moved to any thread afterwards.
//!
//! ```no_run
//! use dataplane::net::netns::{Netns, veth_pair};
//!
//! let a = Netns::create("dpt-doc-a")?;
//! let b = Netns::create("dpt-doc-b")?;
//! veth_pair(&a, "veth0", &b, "veth0")?;
//! a.exec(&["ip", "addr", "add", "10.99.0.1/24", "dev", "veth0"])?;
//! let index = a.run(|| nix::net::if_::if_nametoindex("veth0"))?;
//! # Ok::<(), dataplane::Error>(())
//! ```
//!
//! The commands are iproute2's `ip` (and `sysctl` through `ip netns exec`);
//! [`probe`] says whether they can run here.

use crate::backend::Probe;
use crate::{Error, Result};
use std::fs::File;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A network namespace that is deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
    file: File,
}

/// Whether namespaces and veth pairs can be made here: root (or
/// CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2's `ip`; the `netns`
/// capability of `DATAPLANE_REQUIRE`.
pub fn probe() -> Probe {
    crate::topology::netns_probe()
}

/// A name no other test or process uses at the same time:
/// `{prefix}-{pid}-{n}`, at most 15 characters after a prefix of up to 4
/// (an interface name's limit, so the same scheme names interfaces).
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Relaxed: only uniqueness matters.
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id() % 100_000)
}

fn run_cmd(args: &[&str]) -> Result<String> {
    let Some((program, rest)) = args.split_first() else {
        return Err(Error::Config("an empty command".into()));
    };
    let out = Command::new(program)
        .args(rest)
        .output()
        .map_err(|e| Error::io(format!("running {}", args.join(" ")), e))?;
    if !out.status.success() {
        return Err(Error::Config(format!(
            "`{}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Netns {
    /// Creates the namespace `name`, with IPv6 off and `lo` up.
    ///
    /// # Errors
    ///
    /// When `ip netns add` fails (it exists already, no privilege) or the
    /// namespace cannot be opened; a namespace that was made is deleted
    /// again.
    pub fn create(name: &str) -> Result<Netns> {
        run_cmd(&["ip", "netns", "add", name])?;
        let path = format!("/run/netns/{name}");
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                let _ = run_cmd(&["ip", "netns", "del", name]);
                return Err(Error::io(format!("opening {path}"), e));
            }
        };
        let ns = Netns {
            name: name.to_owned(),
            file,
        };
        ns.exec(&[
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ])?;
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs a command inside the namespace (`ip netns exec NAME ...`);
    /// returns its standard output.
    ///
    /// # Errors
    ///
    /// When it cannot start or exits with a failure (its standard error is
    /// in the message).
    pub fn exec(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["ip", "netns", "exec", self.name.as_str()];
        all.extend_from_slice(args);
        run_cmd(&all)
    }

    /// Runs `f` on a new thread that has joined the namespace, and returns
    /// what it returns. Sockets it opens belong to the namespace.
    ///
    /// # Errors
    ///
    /// When the thread cannot join the namespace, or `f` panics.
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> Result<R> {
        std::thread::scope(|s| {
            let joined = s.spawn(|| {
                nix::sched::setns(&self.file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(
                    |e| Error::io(format!("joining network namespace {}", self.name), e.into()),
                )?;
                Ok(f())
            });
            joined
                .join()
                .map_err(|_| Error::Stopped(format!("a thread in namespace {}", self.name)))?
        })
    }

    /// Starts a thread in the namespace that runs `f` (for a long-lived
    /// peer: a sender or an echo loop).
    ///
    /// # Errors
    ///
    /// When the thread cannot be spawned; joining the namespace failing
    /// shows up as the thread's `Err`.
    pub fn spawn<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<std::thread::JoinHandle<Result<R>>> {
        let file = self
            .file
            .try_clone()
            .map_err(|e| Error::io(format!("duplicating the fd of {}", self.name), e))?;
        let name = self.name.clone();
        std::thread::Builder::new()
            .name(format!("netns-{name}"))
            .spawn(move || {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
                    Error::io(format!("joining network namespace {name}"), e.into())
                })?;
                Ok(f())
            })
            .map_err(|e| Error::io("spawning a namespace thread", e))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = run_cmd(&["ip", "netns", "del", &self.name]) {
            tracing::error!("could not delete network namespace {}: {e}", self.name);
        }
    }
}

/// Creates a veth pair with one end, `if_a`, in `a` and the other, `if_b`,
/// in `b`, and brings both up. Deleting either namespace removes the pair.
///
/// # Errors
///
/// When `ip link add` or `ip link set` fails.
pub fn veth_pair(a: &Netns, if_a: &str, b: &Netns, if_b: &str) -> Result<()> {
    run_cmd(&[
        "ip", "link", "add", if_a, "netns", &a.name, "type", "veth", "peer", "name", if_b, "netns",
        &b.name,
    ])?;
    a.exec(&["ip", "link", "set", if_a, "up"])?;
    b.exec(&["ip", "link", "set", if_b, "up"])?;
    Ok(())
}

/// The kernel's counters of an interface inside `ns`
/// (`/sys/class/net/IF/statistics/NAME`, as `ip -s link` shows them):
/// `rx_packets`, `tx_dropped`, `rx_dropped`, ...
///
/// # Errors
///
/// When the counter cannot be read or is not a number.
pub fn link_counter(ns: &Netns, ifname: &str, counter: &str) -> Result<u64> {
    let path = format!("/sys/class/net/{ifname}/statistics/{counter}");
    let text = ns.exec(&["cat", &path])?;
    text.trim()
        .parse()
        .map_err(|_| Error::Config(format!("{path} in {} reads {text:?}", ns.name)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::require::Capability;

    #[test]
    fn names_are_unique_and_short() {
        let a = unique_name("dpt");
        let b = unique_name("dpt");
        assert_ne!(a, b);
        assert!(a.len() <= 15, "{a}");
    }

    #[test]
    fn a_namespace_comes_and_goes() {
        let p = probe();
        if !crate::require::available_or_skip(Capability::Netns, p.available, &p.reason) {
            return;
        }
        let name = unique_name("dpu");
        let ns = Netns::create(&name).expect("create");
        let lo = ns
            .run(|| nix::net::if_::if_nametoindex("lo"))
            .expect("run")
            .expect("lo exists");
        assert!(lo > 0);
        // A name that only exists inside the namespace.
        let b = Netns::create(&unique_name("dpu")).expect("second");
        veth_pair(&ns, "vx0", &b, "vx1").expect("veth");
        assert!(
            ns.run(|| nix::net::if_::if_nametoindex("vx0"))
                .expect("run")
                .is_ok()
        );
        assert!(
            nix::net::if_::if_nametoindex("vx0").is_err(),
            "leaked into the host"
        );
        assert_eq!(link_counter(&ns, "vx0", "rx_dropped").expect("counter"), 0);
        drop(ns);
        drop(b);
        assert!(!std::path::Path::new(&format!("/run/netns/{name}")).exists());
    }
}
