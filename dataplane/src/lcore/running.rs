//! A launched group: the lcore threads' loop, stopping with the drain
//! protocol, and what each lcore reports.

use super::group::Spec;
use super::*;

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

pub(super) struct MainLcore {
    index: usize,
    spec: Spec,
    stats: Arc<LcoreStats>,
}

pub(super) struct Info {
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

    /// A handle to every lcore's counters that other threads keep and
    /// read while the group runs (a telemetry server, a metrics scrape).
    pub fn stats_view(&self) -> LcoreStatsView {
        LcoreStatsView {
            lcores: self
                .stats
                .iter()
                .map(|i| (i.id, i.role, i.cpu, i.stats.clone()))
                .collect(),
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

pub(super) fn lcore_thread(
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
pub(super) fn enter_lcore(id: LcoreId, high_priority: bool, body: impl FnOnce() -> Exit) -> Exit {
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

pub(super) fn raise_priority(id: LcoreId) {
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

impl LcoreGroup {
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

/// Every lcore's counters, readable from any thread: see
/// [`Running::stats_view`].
#[derive(Clone)]
pub struct LcoreStatsView {
    lcores: Vec<(LcoreId, Role, Option<CpuId>, Arc<LcoreStats>)>,
}

impl fmt::Debug for LcoreStatsView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LcoreStatsView")
            .field("lcores", &self.lcores.len())
            .finish()
    }
}

impl LcoreStatsView {
    /// Each lcore with its role, CPU and counters now.
    pub fn snapshot(&self) -> Vec<(LcoreId, Role, Option<CpuId>, LcoreStatsSnapshot)> {
        self.lcores
            .iter()
            .map(|(id, role, cpu, s)| (*id, *role, *cpu, s.snapshot()))
            .collect()
    }
}
