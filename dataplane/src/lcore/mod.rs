//! Lcores: threads pinned one per core, each running a run-to-completion
//! loop over the things it owns (DPDK's EAL lcores and
//! `rte_eal_mp_remote_launch`, in safe Rust).
//!
//! An [`LcoreGroup`] is built from a [`Plan`] (or lcore
//! by lcore), given [`Poller`]s, and launched. Each lcore thread pins itself
//! to its CPU, claims a mempool cache slot (so that `Mempool` and `Mbuf`
//! operations on it go through the per-lcore cache), then loops: one pass
//! calls every poller once; a pass that found nothing applies the idle
//! policy. The thread that launched the group is the *main lcore*: it runs
//! the main lcore's pollers, if any, when it calls [`Running::run_main`],
//! [`Running::stop`] or [`Running::join`].
//!
//! A stop is orderly: the lcores drain until nothing is in flight in any
//! ring between them (see the `run` module for the protocol and its
//! argument), then each poller's [`Poller::stop`] runs on its lcore.
//!
//! ```
//! use dataplane::lcore::{LcoreConfig, LcoreGroup, PollContext, Role};
//! use dataplane::ring;
//!
//! let (mut tx, mut rx) = ring::spsc::<u64>(1024)?;
//! let (mut sum_tx, mut sum_rx) = ring::spsc::<u64>(1)?;
//! let mut group = LcoreGroup::new();
//! let producer = group.add(LcoreConfig::new(Role::App));
//! let consumer = group.add(LcoreConfig::new(Role::App));
//! let mut next = 0u64;
//! group.poller(producer, move |ctx: &PollContext| {
//!     // A source: stops producing when the group drains.
//!     if ctx.stopping() || next == 10_000 { return 0; }
//!     match tx.push(next) { Ok(()) => { next += 1; 1 } Err(_) => 0 }
//! })?;
//! let mut sum = 0u64;
//! group.poller(consumer, move |ctx: &PollContext| {
//!     let mut n = 0;
//!     while let Some(v) = rx.pop() { sum += v; n += 1; }
//!     if ctx.stopping() && n == 0 { let _ = sum_tx.push(sum); }
//!     n
//! })?;
//! let running = group.launch()?;
//! std::thread::sleep(std::time::Duration::from_millis(50));
//! let reports = running.stop()?;
//! assert_eq!(reports.len(), 2);
//! // Whatever was produced before the stop was consumed.
//! assert!(sum_rx.pop().is_some());
//! # Ok::<(), dataplane::Error>(())
//! ```

mod affinity;
mod run;
mod stats;
#[cfg(test)]
mod tests;

use crate::topology::CpuId;
use crate::{Error, Result};
use serde::Serialize;
use std::cell::Cell;
use std::fmt;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub use affinity::current_cpu;
pub use run::Exit;
pub use stats::{LcoreStats, LcoreStatsSnapshot};

use run::{Coordinator, Lcore};

/// An lcore's number within a runtime: dense, from 0, the main lcore first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct LcoreId(pub u32);

impl fmt::Display for LcoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lcore{}", self.0)
    }
}

/// What an lcore is for. The plan gives each lcore one role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The thread that built the runtime; runs control work and may poll.
    Main,
    /// Runs application workers.
    App,
    /// Owns NIC queues and NVMe queue pairs.
    Io,
    /// Owns an accelerator (GPU) compute queue.
    Accel,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Main => "main",
            Role::App => "app",
            Role::Io => "io",
            Role::Accel => "accel",
        })
    }
}

/// What an lcore does when a pass over its pollers found no work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IdlePolicy {
    /// Never back off: the lowest latency, a core at 100% always.
    BusyPoll,
    /// Spin with the pause hint for `spin_polls` idle passes, then yield the
    /// core for `yield_polls` more, then sleep, doubling from 1 µs up to
    /// `max_sleep`. Any work resets the ladder.
    Adaptive {
        /// Idle passes spent pausing before the first yield.
        spin_polls: u32,
        /// Idle passes spent yielding before the first sleep.
        yield_polls: u32,
        /// The longest sleep between idle passes.
        max_sleep: Duration,
    },
    /// Sleep `interval` after every idle pass: for a power profile.
    Sleep {
        /// How long to sleep when idle.
        interval: Duration,
    },
}

impl IdlePolicy {
    /// The adaptive policy the `production` profile uses: about 10 µs of
    /// spinning, then yields, then sleeps of at most 500 µs.
    pub const ADAPTIVE: IdlePolicy = IdlePolicy::Adaptive {
        spin_polls: 256,
        yield_polls: 64,
        max_sleep: Duration::from_micros(500),
    };
}

/// What a poller sees of its lcore during a pass.
#[derive(Debug, Clone)]
pub struct PollContext {
    lcore: LcoreId,
    now: u64,
    stopping: bool,
}

impl PollContext {
    /// The lcore running the pass.
    #[inline(always)]
    pub fn lcore(&self) -> LcoreId {
        self.lcore
    }

    /// The time stamp counter at the start of the pass (see
    /// [`crate::time`]; the read that ended the previous pass, with only
    /// the quit check between); read once per pass so pollers need not.
    #[inline(always)]
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Whether the group is draining: take no new input from outside the
    /// group, flush what you hold.
    #[inline(always)]
    pub fn stopping(&self) -> bool {
        self.stopping
    }
}

/// Something an lcore polls: rings, NIC queues, NVMe queue pairs,
/// accelerator queues, timers.
pub trait Poller: Send {
    /// One pass over what this poller owns, doing at most a burst of work
    /// per source. Returns the work done (items moved, completions reaped,
    /// timers fired); 0 means there was nothing to do.
    ///
    /// While [`PollContext::stopping`] is true the group is draining, and
    /// the stop is only safe if pollers keep this contract: take no new
    /// input from outside the group (stop reading NIC rx queues, stop
    /// generating), flush anything held privately (tx buffers, partial
    /// batches), and return more than 0 as long as anything was moved *or
    /// is still held*.
    fn poll(&mut self, ctx: &PollContext) -> usize;

    /// Runs once on the lcore after the group has drained.
    fn stop(&mut self, _ctx: &PollContext) {}
}

impl<F: FnMut(&PollContext) -> usize + Send> Poller for F {
    #[inline(always)]
    fn poll(&mut self, ctx: &PollContext) -> usize {
        self(ctx)
    }
}

std::thread_local! {
    static CURRENT: Cell<Option<LcoreId>> = const { Cell::new(None) };
}

/// The lcore the calling thread is, like `rte_lcore_id()`; `None` on a
/// thread that is not an lcore.
#[inline]
pub fn current() -> Option<LcoreId> {
    CURRENT.with(Cell::get)
}

/// How one lcore is started.
#[derive(Debug, Clone)]
pub struct LcoreConfig {
    /// Its role.
    pub role: Role,
    /// The CPU to pin it to; `None` leaves it to the scheduler.
    pub cpu: Option<CpuId>,
    /// What it does when idle.
    pub idle: IdlePolicy,
    /// Thread name suffix; defaults to the role.
    pub name: Option<String>,
    /// Ask the kernel for a higher priority (nice -10); refused without
    /// CAP_SYS_NICE, which is logged once and otherwise ignored.
    pub high_priority: bool,
    /// The thread's stack size; the platform default when `None`.
    pub stack_size: Option<usize>,
}

impl LcoreConfig {
    /// An unpinned lcore of `role` with the adaptive idle policy.
    pub fn new(role: Role) -> Self {
        LcoreConfig {
            role,
            cpu: None,
            idle: IdlePolicy::ADAPTIVE,
            name: None,
            high_priority: false,
            stack_size: None,
        }
    }

    /// Pins it to `cpu`.
    pub fn cpu(mut self, cpu: CpuId) -> Self {
        self.cpu = Some(cpu);
        self
    }

    /// Sets its idle policy.
    pub fn idle(mut self, idle: IdlePolicy) -> Self {
        self.idle = idle;
        self
    }

    /// Names its thread `lcore<id>-<name>`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Asks for a higher scheduling priority.
    pub fn high_priority(mut self, on: bool) -> Self {
        self.high_priority = on;
        self
    }
}

struct Spec {
    config: LcoreConfig,
    pollers: Vec<Box<dyn Poller>>,
}

/// Lcores to launch, with their pollers.
pub struct LcoreGroup {
    lcores: Vec<Spec>,
    drain_timeout: Duration,
    allow_shared_cpus: bool,
}

impl fmt::Debug for LcoreGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LcoreGroup")
            .field(
                "lcores",
                &self
                    .lcores
                    .iter()
                    .map(|s| (&s.config, s.pollers.len()))
                    .collect::<Vec<_>>(),
            )
            .field("drain_timeout", &self.drain_timeout)
            .finish()
    }
}

impl Default for LcoreGroup {
    fn default() -> Self {
        Self::new()
    }
}

/// How long a stop may take to drain before lcores give up (and say so).
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

impl LcoreGroup {
    /// An empty group.
    pub fn new() -> Self {
        LcoreGroup {
            lcores: Vec::new(),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            allow_shared_cpus: false,
        }
    }

    /// Adds an lcore; ids are given in order from 0.
    pub fn add(&mut self, config: LcoreConfig) -> LcoreId {
        self.lcores.push(Spec {
            config,
            pollers: Vec::new(),
        });
        LcoreId(self.lcores.len() as u32 - 1)
    }

    /// The lcores added so far.
    pub fn lcores(&self) -> impl Iterator<Item = (LcoreId, &LcoreConfig)> {
        self.lcores
            .iter()
            .enumerate()
            .map(|(i, s)| (LcoreId(i as u32), &s.config))
    }

    /// Gives `poller` to lcore `id`; an lcore polls its pollers in the order
    /// they were given.
    ///
    /// # Errors
    /// [`Error::Config`] when there is no lcore `id`.
    pub fn poller(&mut self, id: LcoreId, poller: impl Poller + 'static) -> Result<()> {
        let n = self.lcores.len();
        let spec = self
            .lcores
            .get_mut(id.0 as usize)
            .ok_or_else(|| Error::Config(format!("no {id}: the group has {n} lcores")))?;
        spec.pollers.push(Box::new(poller));
        Ok(())
    }

    /// How long a stop may drain before lcores give up.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Whether two lcores may be pinned to one CPU (off by default: it is
    /// almost always a mistake with busy-polling lcores).
    pub fn allow_shared_cpus(mut self, on: bool) -> Self {
        self.allow_shared_cpus = on;
        self
    }

    fn validate(&self) -> Result<()> {
        let mains = self
            .lcores
            .iter()
            .filter(|s| s.config.role == Role::Main)
            .count();
        if mains > 1 {
            return Err(Error::Config(format!(
                "{mains} main lcores; a group has at most one"
            )));
        }
        let allowed = affinity::allowed_cpus()?;
        let mut pinned: Vec<(CpuId, LcoreId)> = Vec::new();
        for (i, s) in self.lcores.iter().enumerate() {
            let Some(cpu) = s.config.cpu else { continue };
            affinity::check_cpu(cpu, &allowed)?;
            if let Some(&(_, other)) = pinned.iter().find(|(c, _)| *c == cpu)
                && !self.allow_shared_cpus
            {
                return Err(Error::Config(format!(
                    "{other} and lcore{i} are both pinned to {cpu}; allow shared CPUs explicitly if that is meant"
                )));
            }
            pinned.push((cpu, LcoreId(i as u32)));
        }
        Ok(())
    }

    /// Checks every CPU, then starts a thread for every lcore but the main
    /// one. Nothing is started when a check fails.
    ///
    /// # Errors
    /// [`Error::Cpu`] for a CPU that does not exist, is offline or is not
    /// in the affinity mask; [`Error::Config`] for two main lcores or two
    /// lcores on one CPU (unless allowed); [`Error::Io`] when a thread
    /// cannot be spawned (the lcores already started are stopped first).
    pub fn launch(self) -> Result<Running> {
        self.validate()?;
        let n = self.lcores.len();
        let main_index = self.lcores.iter().position(|s| s.config.role == Role::Main);
        // The main lcore takes part in draining only if it has pollers to run.
        let main_absent = |i: usize| Some(i) == main_index && self.lcores[i].pollers.is_empty();
        let coord = Arc::new(Coordinator::new(n, main_absent));
        let drain_timeout = self.drain_timeout;

        let mut running = Running {
            coord,
            threads: Vec::new(),
            main: None,
            stats: Vec::new(),
        };
        for (i, spec) in self.lcores.into_iter().enumerate() {
            let id = LcoreId(i as u32);
            let stats = Arc::new(LcoreStats::default());
            running.stats.push(Info {
                id,
                role: spec.config.role,
                cpu: spec.config.cpu,
                stats: stats.clone(),
            });
            if Some(i) == main_index {
                running.main = Some(MainLcore {
                    index: i,
                    spec,
                    stats,
                });
                continue;
            }
            let coord = running.coord.clone();
            let name = format!(
                "lcore{i}-{}",
                spec.config
                    .name
                    .clone()
                    .unwrap_or_else(|| spec.config.role.to_string())
            );
            let mut builder = std::thread::Builder::new().name(name);
            if let Some(size) = spec.config.stack_size {
                builder = builder.stack_size(size);
            }
            let spawned =
                builder.spawn(move || lcore_thread(i, spec, &stats, &coord, drain_timeout));
            match spawned {
                Ok(handle) => running.threads.push((id, handle)),
                Err(e) => {
                    running.coord.request_stop();
                    // `running` drops here and joins what was started.
                    return Err(Error::io(format!("spawning the thread of {id}"), e));
                }
            }
        }
        Ok(running)
    }
}

/// What an lcore did, returned when the group stops.
#[derive(Debug, Clone, Serialize)]
pub struct LcoreReport {
    /// The lcore.
    pub id: LcoreId,
    /// Its role.
    pub role: Role,
    /// Its CPU, when pinned.
    pub cpu: Option<CpuId>,
    /// Its counters at exit.
    pub stats: LcoreStatsSnapshot,
    /// How it ended.
    pub exit: Exit,
}

struct MainLcore {
    index: usize,
    spec: Spec,
    stats: Arc<LcoreStats>,
}

struct Info {
    id: LcoreId,
    role: Role,
    cpu: Option<CpuId>,
    stats: Arc<LcoreStats>,
}

/// A launched group.
pub struct Running {
    coord: Arc<Coordinator>,
    threads: Vec<(LcoreId, JoinHandle<LcoreReport>)>,
    main: Option<MainLcore>,
    stats: Vec<Info>,
}

impl fmt::Debug for Running {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Running")
            .field(
                "lcores",
                &self
                    .stats
                    .iter()
                    .map(|i| (i.id, i.role, i.cpu))
                    .collect::<Vec<_>>(),
            )
            .field("stop_requested", &self.coord.stop_requested())
            .finish()
    }
}

/// Asks a running group to stop; cheap to clone and usable from any thread
/// (a signal-handling thread, a timer).
#[derive(Debug, Clone)]
pub struct StopHandle {
    coord: Arc<Coordinator>,
}

impl StopHandle {
    /// Asks every lcore to drain and stop. Returns at once.
    pub fn request_stop(&self) {
        self.coord.request_stop();
    }

    /// Whether a stop was requested.
    pub fn stop_requested(&self) -> bool {
        self.coord.stop_requested()
    }
}

impl Running {
    /// A handle that can ask the group to stop from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            coord: self.coord.clone(),
        }
    }

    /// Every lcore's id, role, CPU and counters now.
    pub fn stats(&self) -> Vec<(LcoreId, Role, Option<CpuId>, LcoreStatsSnapshot)> {
        self.stats
            .iter()
            .map(|i| (i.id, i.role, i.cpu, i.stats.snapshot()))
            .collect()
    }

    /// Runs the main lcore's pollers on the calling thread until the group
    /// has stopped (someone called [`StopHandle::request_stop`]). Without
    /// main pollers it just waits. The calling thread is pinned to the main
    /// lcore's CPU meanwhile and its previous mask restored afterwards.
    ///
    /// # Errors
    /// [`Error::Cpu`] or [`Error::Io`] when pinning fails.
    pub fn run_main(&mut self) -> Result<Option<LcoreReport>> {
        let Some(mut main) = self.main.take() else {
            while !self.coord.is_done() && !self.threads.iter().all(|(_, h)| h.is_finished()) {
                std::thread::sleep(Duration::from_millis(1));
            }
            return Ok(None);
        };
        if main.spec.pollers.is_empty() {
            let report = self.wait_without_main(&main);
            return Ok(Some(report));
        }
        let previous = affinity::thread_cpus()?;
        if let Some(cpu) = main.spec.config.cpu {
            affinity::pin_current(cpu)?;
        }
        let id = LcoreId(main.index as u32);
        let exit = enter_lcore(id, main.spec.config.high_priority, || {
            Lcore {
                me: main.index,
                id,
                pollers: &mut main.spec.pollers,
                idle: main.spec.config.idle,
                stats: &main.stats,
                coord: &self.coord,
                drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            }
            .run()
        });
        if let Exit::Panicked(_) = exit {
            self.coord.leave(main.index);
        }
        if main.spec.config.cpu.is_some() {
            affinity::set_current(&previous)?;
        }
        Ok(Some(LcoreReport {
            id,
            role: main.spec.config.role,
            cpu: main.spec.config.cpu,
            stats: main.stats.snapshot(),
            exit,
        }))
    }

    fn wait_without_main(&self, main: &MainLcore) -> LcoreReport {
        while !self.coord.is_done() && !self.threads.iter().all(|(_, h)| h.is_finished()) {
            std::thread::sleep(Duration::from_millis(1));
        }
        LcoreReport {
            id: LcoreId(main.index as u32),
            role: main.spec.config.role,
            cpu: main.spec.config.cpu,
            stats: main.stats.snapshot(),
            exit: Exit::Drained,
        }
    }

    /// Asks the group to stop, runs the main lcore's share of the drain on
    /// the calling thread, and waits for every lcore.
    ///
    /// # Errors
    /// As [`Running::run_main`].
    pub fn stop(self) -> Result<Vec<LcoreReport>> {
        self.coord.request_stop();
        self.join()
    }

    /// Waits for the group to stop (another thread must ask it to), running
    /// the main lcore on the calling thread meanwhile; returns every lcore's
    /// report, in id order.
    ///
    /// # Errors
    /// As [`Running::run_main`].
    pub fn join(mut self) -> Result<Vec<LcoreReport>> {
        let mut reports: Vec<LcoreReport> = self.run_main()?.into_iter().collect();
        for (id, handle) in self.threads.drain(..) {
            match handle.join() {
                Ok(report) => reports.push(report),
                // The thread body catches poller panics; reaching here means
                // the lcore machinery itself panicked.
                Err(_) => {
                    let info = &self.stats[id.0 as usize];
                    reports.push(LcoreReport {
                        id,
                        role: info.role,
                        cpu: info.cpu,
                        stats: info.stats.snapshot(),
                        exit: Exit::Panicked("lcore thread panicked outside its pollers".into()),
                    })
                }
            }
        }
        reports.sort_by_key(|r| r.id);
        Ok(reports)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        // Dropped without stop/join: stop the lcores rather than leak them.
        self.coord.request_stop();
        if let Some(main) = self.main.take() {
            self.coord.leave(main.index);
        }
        for (_, h) in self.threads.drain(..) {
            let _ = h.join();
        }
    }
}

fn lcore_thread(
    i: usize,
    mut spec: Spec,
    stats: &LcoreStats,
    coord: &Coordinator,
    drain_timeout: Duration,
) -> LcoreReport {
    let id = LcoreId(i as u32);
    let exit = match spec.config.cpu.map(affinity::pin_current) {
        Some(Err(e)) => {
            // Checked before launch, so only a race with a mask change gets here.
            coord.leave(i);
            Exit::Panicked(format!("could not pin: {e}"))
        }
        _ => {
            let exit = enter_lcore(id, spec.config.high_priority, || {
                Lcore {
                    me: i,
                    id,
                    pollers: &mut spec.pollers,
                    idle: spec.config.idle,
                    stats,
                    coord,
                    drain_timeout,
                }
                .run()
            });
            if let Exit::Panicked(_) = exit {
                coord.leave(i);
            }
            exit
        }
    };
    LcoreReport {
        id,
        role: spec.config.role,
        cpu: spec.config.cpu,
        stats: stats.snapshot(),
        exit,
    }
}

/// Sets up the calling thread as lcore `id` (its thread-local id, a
/// mempool cache slot, the priority asked for), runs `body` catching a
/// poller panic, and undoes the setup.
fn enter_lcore(id: LcoreId, high_priority: bool, body: impl FnOnce() -> Exit) -> Exit {
    let previous = CURRENT.with(|c| c.replace(Some(id)));
    let slot = match hugepages::slot::claim() {
        Ok(g) => Some(g),
        Err(hugepages::Error::SlotAlreadyClaimed { .. }) => None,
        Err(e) => {
            tracing::warn!(lcore = %id, "no mempool cache for this lcore: {e}");
            None
        }
    };
    if high_priority {
        raise_priority(id);
    }
    let exit = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(exit) => exit,
        Err(payload) => {
            let msg = panic_message(payload.as_ref());
            tracing::error!(lcore = %id, "poller panicked: {msg}");
            Exit::Panicked(msg)
        }
    };
    drop(slot);
    CURRENT.with(|c| c.set(previous));
    exit
}

fn raise_priority(id: LcoreId) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static WARNED: AtomicBool = AtomicBool::new(false);
    let tid = nix::unistd::gettid().as_raw() as libc::id_t;
    // SAFETY: `setpriority` takes plain integers and touches no memory of
    // ours; nix has no wrapper for it.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, -10) };
    if rc != 0 && !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(lcore = %id, "high priority refused: {}", std::io::Error::last_os_error());
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}
