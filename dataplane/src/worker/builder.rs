//! [`PoolBuilder`]: a plan for this machine, then one worker per
//! application lcore with its rings, started.

use super::config::{PoolConfig, WorkerConfig};
use super::pool::WorkerPool;
use super::routes::{Link, Route, Routes};
use super::supervisor::{CONTROL_CAPACITY, Control, RestartPolicy, WorkerPoller, WorkerShared};
use super::{Envelope, Worker, WorkerId};
use crate::lcore::{IdlePolicy, LcoreConfig, LcoreGroup, Role};
use crate::partition::{HashPartitioner, Partitioner};
use crate::profile::{Plan, Profile};
use crate::ring::{self, Batch};
use crate::topology::{CpuId, Topology};
use crate::{Error, Result};
use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

type Factory<W> = Box<dyn FnMut(usize) -> W>;

/// What [`PoolBuilder::factory`] takes: a closure of the worker's index
/// (`|i| MyWorker::new(i)`) or of nothing (`|| MyWorker::new()`). `Args`
/// only tells the two apart.
pub trait WorkerFactory<W, Args>: 'static {
    /// The closure as one of the worker's index.
    fn into_factory(self) -> Box<dyn FnMut(usize) -> W>;
}

impl<W, F: FnMut(usize) -> W + 'static> WorkerFactory<W, (usize,)> for F {
    fn into_factory(self) -> Box<dyn FnMut(usize) -> W> {
        Box::new(self)
    }
}

impl<W, F: FnMut() -> W + 'static> WorkerFactory<W, ()> for F {
    fn into_factory(mut self) -> Box<dyn FnMut(usize) -> W> {
        Box::new(move |_| self())
    }
}

/// Builds a [`WorkerPool`]; start from [`WorkerPool::builder`].
///
/// Every setting starts from the profile's plan for this machine (see
/// [`crate::profile`]); `DATAPLANE_*` environment overrides apply on top of
/// the profile, and the calls made on this builder apply last.
pub struct PoolBuilder<W: Worker> {
    factory: Option<Factory<W>>,
    prebuilt: Vec<W>,
    profile: Profile,
    workers: Option<usize>,
    affinity: Option<bool>,
    numa_aware: Option<bool>,
    idle: Option<IdlePolicy>,
    queue_capacity: Option<usize>,
    partitioner: Option<Route>,
    restart: RestartPolicy,
    tick_interval: Duration,
    worker_config: WorkerConfig,
    cpus: Option<Vec<CpuId>>,
    topology: Option<Topology>,
    env: bool,
    start_timeout: Duration,
}

impl<W: Worker> fmt::Debug for PoolBuilder<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("profile", &self.profile)
            .field("workers", &self.workers)
            .field("affinity", &self.affinity)
            .field("queue_capacity", &self.queue_capacity)
            .field("restart", &self.restart)
            .finish_non_exhaustive()
    }
}

impl<W: Worker> PoolBuilder<W> {
    pub(super) fn new(profile: Profile) -> Self {
        PoolBuilder {
            factory: None,
            prebuilt: Vec::new(),
            profile,
            workers: None,
            affinity: None,
            numa_aware: None,
            idle: None,
            queue_capacity: None,
            partitioner: None,
            restart: RestartPolicy::default(),
            tick_interval: Duration::from_millis(1),
            worker_config: WorkerConfig::default(),
            cpus: None,
            topology: None,
            env: true,
            start_timeout: Duration::from_secs(10),
        }
    }

    /// Makes the workers: `|i| ...` gets each worker's index, `|| ...`
    /// nothing (called once per worker, on the building thread).
    pub fn factory<Args>(mut self, f: impl WorkerFactory<W, Args>) -> Self {
        self.factory = Some(f.into_factory());
        self
    }

    /// Starts from another profile's plan.
    pub fn profile(mut self, profile: Profile) -> Self {
        self.profile = profile;
        self
    }

    /// Runs `n` workers, one per application lcore.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// Pins each worker to its plan CPU (on by default in every profile).
    /// With it off, workers may outnumber cores.
    pub fn cpu_affinity(mut self, on: bool) -> Self {
        self.affinity = Some(on);
        self
    }

    /// Places workers by NUMA node.
    pub fn numa_aware(mut self, on: bool) -> Self {
        self.numa_aware = Some(on);
        self
    }

    /// What idle workers do.
    pub fn idle(mut self, idle: IdlePolicy) -> Self {
        self.idle = Some(idle);
        self
    }

    /// Each worker's queue capacity: what one sending thread may have
    /// queued for a worker (each thread sends through a lane of its own;
    /// see the [module docs](super#sending-threads-and-order)). Rounded up
    /// to a power of two, as the rings need (100 gives 128; logged).
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = Some(n);
        self
    }

    /// Routes keyed sends (default: [`HashPartitioner`]).
    pub fn partitioner(mut self, p: impl Partitioner + 'static) -> Self {
        self.partitioner = Some(Route::of(p));
        self
    }

    /// Routes keyed sends through a shared partitioner.
    pub fn partitioner_arc(mut self, p: Arc<dyn Partitioner>) -> Self {
        self.partitioner = Some(Route::Dyn(p));
        self
    }

    /// What happens when a worker fails.
    pub fn restart_policy(mut self, policy: RestartPolicy) -> Self {
        self.restart = policy;
        self
    }

    /// How often `Worker::tick` runs.
    pub fn tick_interval(mut self, d: Duration) -> Self {
        self.tick_interval = d;
        self
    }

    /// Per-worker settings (name, priority, stack, queue capacity).
    pub fn worker_config(mut self, c: WorkerConfig) -> Self {
        if self.queue_capacity.is_none() {
            self.queue_capacity = Some(c.queue_capacity);
        }
        self.worker_config = c;
        self
    }

    /// Runs workers on exactly these CPUs.
    pub fn cpus(mut self, cpus: impl IntoIterator<Item = CpuId>) -> Self {
        self.cpus = Some(cpus.into_iter().collect());
        self
    }

    /// Plans on this topology instead of the detected one.
    pub fn topology(mut self, t: Topology) -> Self {
        self.topology = Some(t);
        self
    }

    /// Whether `DATAPLANE_*` environment overrides apply (on by default).
    pub fn env_overrides(mut self, on: bool) -> Self {
        self.env = on;
        self
    }

    /// How long `build` waits for every worker's `init`.
    pub fn start_timeout(mut self, d: Duration) -> Self {
        self.start_timeout = d;
        self
    }

    pub(super) fn with_workers(mut self, ws: Vec<W>) -> Self {
        self.workers = Some(ws.len());
        self.prebuilt = ws;
        self
    }

    /// Plans, starts one worker per application lcore, and waits until
    /// each has run `init`.
    ///
    /// # Errors
    /// - [`Error::Config`] without a factory, with zero workers, or for a
    ///   refused plan setting or environment override;
    /// - [`Error::TooManyLcores`] never for pinning: more pinned workers
    ///   than usable cores run unpinned instead (logged, and noted in the
    ///   plan's `notes`);
    /// - [`Error::Capacity`] for a queue capacity of zero or past 2^30;
    /// - [`Error::Cpu`] for a CPU that cannot be used;
    /// - [`Error::WorkerFailed`] when a worker's `init` fails and its
    ///   restart policy gives up (the other workers are stopped);
    /// - [`Error::Timeout`] when `init` does not finish in time.
    pub fn build(mut self) -> Result<WorkerPool<W>> {
        if self.factory.is_none() && self.prebuilt.is_empty() {
            return Err(Error::Config(
                "a worker pool needs a factory: PoolBuilder::factory(|i| MyWorker::new(i))".into(),
            ));
        }
        if self.workers == Some(0) {
            return Err(Error::Config(
                "a worker pool needs at least one worker".into(),
            ));
        }
        let topo = match self.topology.take() {
            Some(t) => t,
            None => Topology::detect()?,
        };
        let mut pb = Plan::builder(&topo, self.profile);
        if self.env {
            pb = pb.from_env();
        }
        if let Some(n) = self.workers {
            pb = pb.app_lcores(n);
        }
        if let Some(a) = self.affinity {
            pb = pb.affinity(a);
        }
        if let Some(a) = self.numa_aware {
            pb = pb.numa_aware(a);
        }
        if let Some(i) = self.idle {
            pb = pb.idle(i);
        }
        if let Some(q) = self.queue_capacity {
            pb = pb.queue_capacity(queue_size(q)?);
        }
        if let Some(cpus) = self.cpus.take() {
            pb = pb.cpus(cpus);
        }
        let plan = match pb.clone().build() {
            // More pinned workers than cores (the original design's
            // `.workers(num_cpus).cpu_affinity(true)` on a small machine):
            // run them all, unpinned, rather than refuse or run fewer.
            Err(Error::TooManyLcores { requested, allowed }) => {
                let why = format!(
                    "{requested} pinned lcores (the workers and the main thread) need more than \
                     the {allowed} usable cores: the workers run unpinned, sharing cores; \
                     ask for at most {} workers to pin them",
                    allowed.saturating_sub(1).max(1)
                );
                tracing::warn!("{why}");
                let mut plan = pb.affinity(false).build()?;
                plan.notes.push(why);
                plan
            }
            r => r?,
        };
        let app: Vec<_> = plan.app_lcores().copied().collect();
        let n = self.workers.unwrap_or(app.len());
        if app.len() < n {
            return Err(Error::TooManyLcores {
                requested: n,
                allowed: app.len(),
            });
        }

        let mut workers = std::mem::take(&mut self.prebuilt);
        if let Some(f) = self.factory.as_mut() {
            workers.extend((workers.len()..n).map(f));
        }
        let mut links = Vec::with_capacity(n);
        let mut group = LcoreGroup::new().allow_shared_cpus(plan.shared_cores || !plan.affinity);
        for (i, (worker, lp)) in workers.into_iter().zip(&app).enumerate() {
            let (tx, inbox) = ring::mpsc::<Envelope<W::Message>>(plan.queue_capacity)?;
            let (lanes_tx, lanes) = ring::lanes::<Envelope<W::Message>>(plan.queue_capacity)?;
            let (ctl_tx, control) = ring::mpsc::<Control>(CONTROL_CAPACITY)?;
            let shared = Arc::new(WorkerShared::new());
            let id = WorkerId(i as u32);
            let poller = WorkerPoller {
                id,
                worker,
                state: None,
                inbox,
                lanes,
                inbox_first: false,
                control,
                batch: Batch::new(),
                shared: shared.clone(),
                policy: self.restart,
                restarts: VecDeque::new(),
                tick_every: self.tick_interval,
                tick: None,
                paused: false,
                failed: false,
            };
            let wc = &self.worker_config;
            let mut lc = LcoreConfig::new(Role::App)
                .idle(plan.idle)
                .name(
                    wc.name
                        .clone()
                        .map_or_else(|| format!("worker{i}"), |n| format!("{n}{i}")),
                )
                .high_priority(wc.high_priority);
            lc.stack_size = wc.stack_size;
            if let Some(cpu) = wc.pinned_cpu.filter(|_| n == 1) {
                lc = lc.cpu(CpuId(cpu as u32));
            } else if plan.affinity {
                lc = lc.cpu(lp.cpu);
            }
            let lcore = group.add(lc);
            group.poller(lcore, poller)?;
            links.push(Link {
                lanes: lanes_tx,
                tx,
                control: ctl_tx,
                shared,
            });
        }
        let running = group.launch()?;
        let routes = Routes::new(
            links,
            self.partitioner
                .unwrap_or_else(|| Route::Hash(HashPartitioner::new())),
        );
        let pool = WorkerPool::started(routes, running, plan);
        pool.wait_started(self.start_timeout)?;
        Ok(pool)
    }
}

/// A worker queue's ring size for a requested capacity: the next power of
/// two (as DPDK rounds a ring created with `RING_F_EXACT_SZ`), logged when
/// it differs.
fn queue_size(requested: usize) -> Result<usize> {
    let size = match requested {
        0 => None,
        n => n.checked_next_power_of_two(),
    }
    .filter(|&s| s <= 1 << 30)
    .ok_or(crate::ring::CapacityError(requested))?;
    if size != requested {
        tracing::info!(
            requested,
            capacity = size,
            "worker queue capacity rounded up to a power of two"
        );
    }
    Ok(size)
}

/// The ways to build a pool: the builder, the original design's
/// constructors, and the profiles.
impl<W: Worker> WorkerPool<W> {
    /// A builder with the `production` profile.
    pub fn builder() -> PoolBuilder<W> {
        PoolBuilder::new(Profile::Production)
    }

    /// The original design's form: `config` and a factory, hash-partitioned.
    ///
    /// # Errors
    /// As [`PoolBuilder::build`].
    pub fn with_config(
        config: PoolConfig,
        factory: impl FnMut(usize) -> W + 'static,
    ) -> Result<Self> {
        Self::with_route(config, factory, Route::Hash(HashPartitioner::new()))
    }

    /// The original design's form with a partitioner.
    ///
    /// # Errors
    /// As [`PoolBuilder::build`].
    pub fn with_partitioner(
        config: PoolConfig,
        factory: impl FnMut(usize) -> W + 'static,
        partitioner: Arc<dyn Partitioner>,
    ) -> Result<Self> {
        Self::with_route(config, factory, Route::Dyn(partitioner))
    }

    fn with_route(
        config: PoolConfig,
        factory: impl FnMut(usize) -> W + 'static,
        route: Route,
    ) -> Result<Self> {
        let mut b = Self::builder()
            .factory(factory)
            .cpu_affinity(config.enable_cpu_affinity)
            .worker_config(config.worker_config);
        b.partitioner = Some(route);
        if config.num_workers > 0 {
            b = b.workers(config.num_workers);
        }
        b.build()
    }
}

impl<W: Worker + Default> WorkerPool<W> {
    /// Zero-config: the `production` plan for this machine (one worker per
    /// application lcore, pinned), `DATAPLANE_*` overrides applied.
    ///
    /// # Errors
    /// As [`PoolBuilder::build`].
    pub fn new() -> Result<Self> {
        Self::builder().factory(|_| W::default()).build()
    }

    /// Zero-config with the `production` profile.
    ///
    /// # Errors
    /// As [`PoolBuilder::build`].
    pub fn production() -> Result<Self> {
        Self::new()
    }

    /// Zero-config with the `low_latency` profile: one worker per physical
    /// core, busy polling, small bursts.
    ///
    /// # Errors
    /// As [`PoolBuilder::build`].
    pub fn low_latency() -> Result<Self> {
        Self::builder()
            .profile(Profile::LowLatency)
            .factory(|_| W::default())
            .build()
    }

    /// Zero-config with the `performance` profile: every hardware thread,
    /// busy polling, large queues.
    ///
    /// # Errors
    /// As [`PoolBuilder::build`].
    pub fn performance() -> Result<Self> {
        Self::builder()
            .profile(Profile::Performance)
            .factory(|_| W::default())
            .build()
    }

    /// Zero-config with the `power` profile: fewer workers that sleep when
    /// idle.
    ///
    /// # Errors
    /// As [`PoolBuilder::build`].
    pub fn power() -> Result<Self> {
        Self::builder()
            .profile(Profile::Power)
            .factory(|_| W::default())
            .build()
    }
}
