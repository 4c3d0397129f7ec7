//! [`WorkerPool`]: workers on application lcores, and how messages reach
//! them.
#![deny(unsafe_code)]

use super::sender::{BroadcastError, PartitionedSender};
use super::stats::{WorkerStats, WorkerStatus};
use super::supervisor::{
    CONTROL_CAPACITY, Control, Pong, RestartPolicy, WorkerPoller, WorkerShared,
};
use super::{Envelope, Worker, WorkerId};
use crate::channel::SendError;
use crate::lcore::{IdlePolicy, LcoreConfig, LcoreGroup, LcoreReport, Role, Running};
use crate::partition::{HashPartitioner, PartitionKey, Partitioner};
use crate::profile::{Plan, Profile};
use crate::ring::{self, Batch, Multi};
use crate::topology::{CpuId, Topology};
use crate::{Error, Result};
use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How one worker runs (the seed's `WorkerConfig`).
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Thread name suffix.
    pub name: Option<String>,
    /// A CPU to pin to (single workers started with [`spawn`]).
    pub cpu_affinity: Option<usize>,
    /// Capacity of the worker's message ring (a power of two).
    pub queue_capacity: usize,
    /// Ask for a higher scheduling priority (needs CAP_SYS_NICE).
    pub high_priority: bool,
    /// Thread stack size.
    pub stack_size: Option<usize>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            name: None,
            cpu_affinity: None,
            queue_capacity: 1024,
            high_priority: false,
            stack_size: None,
        }
    }
}

impl WorkerConfig {
    /// The defaults: a 1024-message queue, no pinning.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
    /// Pins to `cpu`.
    pub fn with_cpu_affinity(mut self, cpu: usize) -> Self {
        self.cpu_affinity = Some(cpu);
        self
    }
    /// Sets the queue capacity.
    pub fn with_queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity;
        self
    }
    /// Asks for a higher priority.
    pub fn with_high_priority(mut self, high: bool) -> Self {
        self.high_priority = high;
        self
    }
    /// Sets the stack size.
    pub fn with_stack_size(mut self, size: usize) -> Self {
        self.stack_size = Some(size);
        self
    }
}

/// How a pool runs (the seed's `PoolConfig`).
#[derive(Debug, Clone, Default)]
pub struct PoolConfig {
    /// Workers; 0 takes the plan's application lcores.
    pub num_workers: usize,
    /// Settings for each worker.
    pub worker_config: WorkerConfig,
    /// Pin each worker to its plan CPU.
    pub enable_cpu_affinity: bool,
}

impl PoolConfig {
    /// The defaults: as many workers as the plan has application lcores,
    /// unpinned.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the number of workers.
    pub fn with_num_workers(mut self, n: usize) -> Self {
        self.num_workers = n;
        self
    }
    /// Sets each worker's settings.
    pub fn with_worker_config(mut self, c: WorkerConfig) -> Self {
        self.worker_config = c;
        self
    }
    /// Pins workers to their plan CPUs.
    pub fn with_cpu_affinity(mut self, on: bool) -> Self {
        self.enable_cpu_affinity = on;
        self
    }
}

type Factory<W> = Box<dyn FnMut(usize) -> W>;

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
    partitioner: Option<Arc<dyn Partitioner>>,
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
    fn new(profile: Profile) -> Self {
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

    /// Makes worker `i` (called once per worker, on the building thread).
    pub fn factory(mut self, f: impl FnMut(usize) -> W + 'static) -> Self {
        self.factory = Some(Box::new(f));
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

    /// Each worker's queue capacity (a power of two).
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = Some(n);
        self
    }

    /// Routes keyed sends (default: [`HashPartitioner`]).
    pub fn partitioner(mut self, p: impl Partitioner + 'static) -> Self {
        self.partitioner = Some(Arc::new(p));
        self
    }

    /// Routes keyed sends through a shared partitioner.
    pub fn partitioner_arc(mut self, p: Arc<dyn Partitioner>) -> Self {
        self.partitioner = Some(p);
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

    fn with_workers(mut self, ws: Vec<W>) -> Self {
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
    /// - [`Error::TooManyLcores`] for more pinned workers than usable cores;
    /// - [`Error::Capacity`] for a queue capacity that is not a power of two;
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
            crate::ring::CapacityError::check(q)?;
            pb = pb.queue_capacity(q);
        }
        if let Some(cpus) = self.cpus.take() {
            pb = pb.cpus(cpus);
        }
        let plan = pb.build()?;
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
            let (ctl_tx, control) = ring::mpsc::<Control>(CONTROL_CAPACITY)?;
            let shared = Arc::new(WorkerShared::new());
            let id = WorkerId(i as u32);
            let poller = WorkerPoller {
                id,
                worker,
                state: None,
                inbox,
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
            if let Some(cpu) = wc.cpu_affinity.filter(|_| n == 1) {
                lc = lc.cpu(CpuId(cpu as u32));
            } else if plan.affinity {
                lc = lc.cpu(lp.cpu);
            }
            let lcore = group.add(lc);
            group.poller(lcore, poller)?;
            links.push(Link {
                tx,
                control: ctl_tx,
                shared,
            });
        }
        let running = group.launch()?;
        let pool = WorkerPool {
            links: links.into_boxed_slice(),
            partitioner: self
                .partitioner
                .unwrap_or_else(|| Arc::new(HashPartitioner::new())),
            running: Mutex::new(Some(running)),
            stopped: false,
            plan,
        };
        pool.wait_started(self.start_timeout)?;
        Ok(pool)
    }
}

pub(crate) struct Link<M> {
    pub(crate) tx: ring::Producer<Envelope<M>, Multi>,
    pub(crate) control: ring::Producer<Control, Multi>,
    pub(crate) shared: Arc<WorkerShared<M>>,
}

/// Workers on application lcores, and the routes to them. `Sync`: any
/// number of threads may send through `&self`.
pub struct WorkerPool<W: Worker> {
    links: Box<[Link<W::Message>]>,
    partitioner: Arc<dyn Partitioner>,
    running: Mutex<Option<Running>>,
    stopped: bool,
    plan: Plan,
}

impl<W: Worker> fmt::Debug for WorkerPool<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerPool")
            .field("workers", &self.links.len())
            .field("profile", &self.plan.profile)
            .field("stopped", &self.stopped)
            .finish_non_exhaustive()
    }
}

/// What a stopped pool did.
#[derive(Debug)]
pub struct PoolReport<M> {
    /// Every worker's counters at stop.
    pub workers: Vec<WorkerStats>,
    /// Every worker lcore's report.
    pub lcores: Vec<LcoreReport>,
    /// Messages that were queued for a failed worker, handed back.
    pub undelivered: Vec<Envelope<M>>,
}

impl<W: Worker> WorkerPool<W> {
    /// A builder with the `production` profile.
    pub fn builder() -> PoolBuilder<W> {
        PoolBuilder::new(Profile::Production)
    }

    /// The seed's form: `config` and a factory, hash-partitioned.
    ///
    /// # Errors
    /// As [`PoolBuilder::build`].
    pub fn with_config(
        config: PoolConfig,
        factory: impl FnMut(usize) -> W + 'static,
    ) -> Result<Self> {
        Self::with_partitioner(config, factory, Arc::new(HashPartitioner::new()))
    }

    /// The seed's form with a partitioner.
    ///
    /// # Errors
    /// As [`PoolBuilder::build`].
    pub fn with_partitioner(
        config: PoolConfig,
        factory: impl FnMut(usize) -> W + 'static,
        partitioner: Arc<dyn Partitioner>,
    ) -> Result<Self> {
        let mut b = Self::builder()
            .factory(factory)
            .cpu_affinity(config.enable_cpu_affinity)
            .worker_config(config.worker_config)
            .partitioner_arc(partitioner);
        if config.num_workers > 0 {
            b = b.workers(config.num_workers);
        }
        b.build()
    }

    fn wait_started(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut starting = false;
            for (i, l) in self.links.iter().enumerate() {
                match l.shared.counters.status() {
                    WorkerStatus::Starting => starting = true,
                    WorkerStatus::Failed => {
                        let reason = l.shared.failure().unwrap_or_else(|| "init failed".into());
                        self.stop_lcores();
                        return Err(Error::WorkerFailed { worker: i, reason });
                    }
                    _ => {}
                }
            }
            if !starting {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.stop_lcores();
                return Err(Error::Timeout(timeout));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    fn stop_lcores(&self) -> Vec<LcoreReport> {
        let running = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match running.map(Running::stop) {
            Some(Ok(r)) => r,
            Some(Err(e)) => {
                tracing::error!("stopping the pool's lcores: {e}");
                Vec::new()
            }
            None => Vec::new(),
        }
    }

    /// Workers in the pool.
    pub fn num_workers(&self) -> usize {
        self.links.len()
    }

    /// Their ids, `0..num_workers()`.
    pub fn worker_ids(&self) -> Vec<WorkerId> {
        (0..self.links.len()).map(WorkerId::from).collect()
    }

    /// The plan the pool runs on.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Whether every worker is running (or paused).
    pub fn all_running(&self) -> bool {
        !self.stopped
            && self.links.iter().all(|l| {
                matches!(
                    l.shared.counters.status(),
                    WorkerStatus::Running | WorkerStatus::Paused
                )
            })
    }

    #[inline(always)]
    pub(crate) fn link(&self, i: usize) -> Option<&Link<W::Message>> {
        self.links.get(i)
    }

    #[inline(always)]
    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// The owner of `key`, or the index the partitioner answered.
    #[inline(always)]
    pub fn owner<K: PartitionKey + ?Sized>(&self, key: &K) -> std::result::Result<usize, usize> {
        let i = self
            .partitioner
            .partition_hash(key.partition_key(), self.links.len());
        if i < self.links.len() { Ok(i) } else { Err(i) }
    }

    /// Checks that worker `i` can take messages.
    #[inline(always)]
    pub(crate) fn check<T>(&self, i: usize, value: T) -> std::result::Result<T, SendError<T>> {
        let Some(l) = self.links.get(i) else {
            return Err(SendError::NoOwner {
                value,
                index: i,
                workers: self.links.len(),
            });
        };
        if self.stopped {
            return Err(SendError::Disconnected(value));
        }
        if l.shared.counters.status() == WorkerStatus::Failed {
            return Err(SendError::Failed { value, worker: i });
        }
        Ok(value)
    }

    /// Sends `msg` to one worker.
    ///
    /// # Errors
    /// The message is handed back: [`SendError::Full`] when the worker's
    /// queue is full, [`SendError::Failed`] when it has failed,
    /// [`SendError::NoOwner`] for an index past the last worker,
    /// [`SendError::Disconnected`] after a stop.
    #[inline]
    pub fn send_to_worker(
        &self,
        worker: impl Into<WorkerId>,
        msg: W::Message,
    ) -> std::result::Result<(), SendError<W::Message>> {
        self.send_envelope(worker, Envelope::new(msg))
            .map_err(|e| map_err(e, Envelope::into_payload))
    }

    /// Sends a prepared envelope to one worker.
    ///
    /// # Errors
    /// As [`send_to_worker`](Self::send_to_worker), handing the envelope back.
    #[inline]
    pub fn send_envelope(
        &self,
        worker: impl Into<WorkerId>,
        env: Envelope<W::Message>,
    ) -> std::result::Result<(), SendError<Envelope<W::Message>>> {
        let i = worker.into().0 as usize;
        let env = self.check(i, env)?;
        self.links[i]
            .tx
            .push(env)
            .map_err(|e| SendError::Full(e.into_inner()))
    }

    /// Sends `msg` to the worker that owns `key`.
    ///
    /// # Errors
    /// As [`send_to_worker`](Self::send_to_worker); [`SendError::NoOwner`]
    /// when the partitioner answers an index that is not a worker.
    #[inline]
    pub fn send_partitioned<K: PartitionKey + ?Sized>(
        &self,
        key: &K,
        msg: W::Message,
    ) -> std::result::Result<(), SendError<W::Message>> {
        match self.owner(key) {
            Ok(i) => self.send_to_worker(i, msg),
            Err(index) => Err(SendError::NoOwner {
                value: msg,
                index,
                workers: self.links.len(),
            }),
        }
    }

    /// Sends as many messages of `msgs` to one worker as its queue takes;
    /// returns how many. The rest stay in `msgs`, in order.
    ///
    /// # Errors
    /// When the worker cannot take messages at all (failed, no such
    /// worker, stopped); `msgs` is untouched.
    #[inline]
    pub fn send_burst_to_worker<const N: usize>(
        &self,
        worker: impl Into<WorkerId>,
        msgs: &mut Batch<W::Message, N>,
    ) -> std::result::Result<usize, SendError<()>> {
        let i = worker.into().0 as usize;
        self.check(i, ())?;
        let mut envs = Batch::<Envelope<W::Message>, N>::new();
        while let Some(m) = msgs.pop_front() {
            // Cannot fail: `envs` has the capacity `msgs` had.
            let _ = envs.push(Envelope::new(m));
        }
        let sent = self.links[i].tx.push_burst(&mut envs);
        // The unsent go back, in order (`msgs` is empty now).
        for env in envs.drain() {
            let _ = msgs.push(env.payload);
        }
        Ok(sent)
    }

    /// A sender that buffers per worker and moves messages in bursts: the
    /// fast way to send many keyed messages from one thread.
    pub fn sender(&self) -> PartitionedSender<'_, W> {
        PartitionedSender::new(self)
    }

    /// Sends a copy of `msg` to every worker.
    ///
    /// # Errors
    /// [`BroadcastError`] lists the workers that did not get it, each with
    /// its copy handed back; the others did.
    pub fn broadcast(&self, msg: W::Message) -> std::result::Result<(), BroadcastError<W::Message>>
    where
        W::Message: Clone,
    {
        let mut failed = Vec::new();
        for i in 0..self.links.len() {
            if let Err(e) = self.send_to_worker(i, msg.clone()) {
                failed.push((WorkerId::from(i), e));
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(BroadcastError { failed })
        }
    }

    fn control(&self, worker: usize, c: Control) -> Result<()> {
        let l = self.links.get(worker).ok_or(Error::NoOwner {
            index: worker,
            workers: self.links.len(),
        })?;
        if self.stopped {
            return Err(Error::Stopped(format!("worker {worker}")));
        }
        l.control
            .push(c)
            .map_err(|_| Error::Full(format!("worker {worker}'s control queue")))
    }

    /// Pauses a worker: it keeps its queue (senders see it fill) and still
    /// answers control messages.
    ///
    /// # Errors
    /// No such worker, the pool stopped, or its control queue is full.
    pub fn pause(&self, worker: impl Into<WorkerId>) -> Result<()> {
        self.control(worker.into().0 as usize, Control::Pause)
    }

    /// Resumes a paused worker.
    ///
    /// # Errors
    /// As [`pause`](Self::pause).
    pub fn resume(&self, worker: impl Into<WorkerId>) -> Result<()> {
        self.control(worker.into().0 as usize, Control::Resume)
    }

    /// Pauses every worker.
    ///
    /// # Errors
    /// The first failure; the workers before it were paused.
    pub fn pause_all(&self) -> Result<()> {
        (0..self.links.len()).try_for_each(|i| self.control(i, Control::Pause))
    }

    /// Resumes every worker.
    ///
    /// # Errors
    /// The first failure; the workers before it were resumed.
    pub fn resume_all(&self) -> Result<()> {
        (0..self.links.len()).try_for_each(|i| self.control(i, Control::Resume))
    }

    /// Asks a worker how it is and waits up to `timeout` for the answer.
    ///
    /// # Errors
    /// As [`pause`](Self::pause), or [`Error::Timeout`].
    pub fn ping(&self, worker: impl Into<WorkerId>, timeout: Duration) -> Result<Pong> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.control(worker.into().0 as usize, Control::Ping(tx))?;
        rx.recv_timeout(timeout)
            .map_err(|_| Error::Timeout(timeout))
    }

    /// Pings every worker.
    ///
    /// # Errors
    /// The first failure.
    pub fn ping_all(&self, timeout: Duration) -> Result<Vec<Pong>> {
        (0..self.links.len())
            .map(|i| self.ping(i, timeout))
            .collect()
    }

    /// Every worker's counters now.
    pub fn stats(&self) -> Vec<WorkerStats> {
        self.links
            .iter()
            .enumerate()
            .map(|(i, l)| l.shared.counters.snapshot(WorkerId::from(i), l.tx.len()))
            .collect()
    }

    /// Every lcore's counters now.
    pub fn lcore_stats(&self) -> Vec<crate::lcore::LcoreStatsSnapshot> {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|r| r.stats().into_iter().map(|s| s.3).collect())
            .unwrap_or_default()
    }

    /// Stops every worker after its queue drains (the seed's form).
    ///
    /// # Errors
    /// [`Error::Undelivered`] when messages were queued for a failed worker
    /// (use [`shutdown`](Self::shutdown) to get them back).
    pub fn stop_all(&mut self) -> Result<()> {
        let report = self.stop_inner();
        match report.undelivered.len() {
            0 => Ok(()),
            count => {
                let worker = report
                    .workers
                    .iter()
                    .find(|w| w.status == WorkerStatus::Failed)
                    .map_or(0, |w| w.worker.0 as usize);
                Err(Error::Undelivered { count, worker })
            }
        }
    }

    /// Stops every worker after its queue drains and reports: counters,
    /// lcore reports, and the messages a failed worker never handled.
    ///
    /// # Errors
    /// None today; reserved for stops that cannot complete.
    pub fn shutdown(mut self) -> Result<PoolReport<W::Message>> {
        Ok(self.stop_inner())
    }

    fn stop_inner(&mut self) -> PoolReport<W::Message> {
        if self.stopped {
            return PoolReport {
                workers: self.stats(),
                lcores: Vec::new(),
                undelivered: Vec::new(),
            };
        }
        self.stopped = true;
        let lcores = self.stop_lcores();
        let workers = self.stats();
        let mut undelivered = Vec::new();
        for l in self.links.iter() {
            undelivered.append(&mut l.shared.leftover.lock().unwrap_or_else(|p| p.into_inner()));
        }
        PoolReport {
            workers,
            lcores,
            undelivered,
        }
    }
}

/// Maps the value inside a send error.
pub(crate) fn map_err<A, B>(e: SendError<A>, f: impl FnOnce(A) -> B) -> SendError<B> {
    match e {
        SendError::Full(v) => SendError::Full(f(v)),
        SendError::Disconnected(v) => SendError::Disconnected(f(v)),
        SendError::Failed { value, worker } => SendError::Failed {
            value: f(value),
            worker,
        },
        SendError::NoOwner {
            value,
            index,
            workers,
        } => SendError::NoOwner {
            value: f(value),
            index,
            workers,
        },
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

impl<W: Worker> Drop for WorkerPool<W> {
    fn drop(&mut self) {
        if !self.stopped {
            let report = self.stop_inner();
            if !report.undelivered.is_empty() {
                tracing::error!(
                    count = report.undelivered.len(),
                    "pool dropped with messages for failed workers"
                );
            }
        }
    }
}

/// One worker on its own lcore (the seed's `worker::spawn`).
///
/// # Errors
/// As [`PoolBuilder::build`].
pub fn spawn<W: Worker>(worker: W, config: WorkerConfig) -> Result<WorkerHandle<W>> {
    // Pinned only where the config names a CPU.
    let pool = WorkerPool::builder()
        .with_workers(vec![worker])
        .cpu_affinity(false)
        .worker_config(config)
        .build()?;
    Ok(WorkerHandle { pool })
}

/// A single running worker.
#[derive(Debug)]
pub struct WorkerHandle<W: Worker> {
    pool: WorkerPool<W>,
}

impl<W: Worker> WorkerHandle<W> {
    /// Its id (always 0).
    pub fn id(&self) -> WorkerId {
        WorkerId(0)
    }

    /// Sends a message.
    ///
    /// # Errors
    /// As [`WorkerPool::send_to_worker`].
    pub fn send(&self, msg: W::Message) -> std::result::Result<(), SendError<W::Message>> {
        self.pool.send_to_worker(0usize, msg)
    }

    /// Sends an envelope.
    ///
    /// # Errors
    /// As [`WorkerPool::send_envelope`].
    pub fn send_envelope(
        &self,
        env: Envelope<W::Message>,
    ) -> std::result::Result<(), SendError<Envelope<W::Message>>> {
        self.pool.send_envelope(0usize, env)
    }

    /// Pauses it.
    ///
    /// # Errors
    /// As [`WorkerPool::pause`].
    pub fn pause(&self) -> Result<()> {
        self.pool.pause(0usize)
    }

    /// Resumes it.
    ///
    /// # Errors
    /// As [`WorkerPool::resume`].
    pub fn resume(&self) -> Result<()> {
        self.pool.resume(0usize)
    }

    /// Pings it.
    ///
    /// # Errors
    /// As [`WorkerPool::ping`].
    pub fn ping(&self, timeout: Duration) -> Result<Pong> {
        self.pool.ping(0usize, timeout)
    }

    /// Whether it is running.
    pub fn is_running(&self) -> bool {
        self.pool.all_running()
    }

    /// Its counters.
    pub fn stats(&self) -> WorkerStats {
        self.pool.stats().remove(0)
    }

    /// Stops it after its queue drains.
    ///
    /// # Errors
    /// As [`WorkerPool::stop_all`].
    pub fn stop(&mut self) -> Result<()> {
        self.pool.stop_all()
    }
}
