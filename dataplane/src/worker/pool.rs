//! [`WorkerPool`]: workers on application lcores, and how messages reach
//! them.

use super::routes::{BroadcastError, Routes, map_err};
use super::sender::PartitionedSender;
use super::stats::{WorkerStats, WorkerStatus};
use super::supervisor::{Control, Pong};
use super::{Envelope, Worker, WorkerId};
use crate::channel::SendError;
use crate::lcore::{LcoreReport, Running};
use crate::partition::PartitionKey;
use crate::profile::Plan;
use crate::ring::Batch;
use crate::{Error, Result};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Workers on application lcores, and the routes to them. `Sync`: any
/// number of threads may send through `&self`.
pub struct WorkerPool<W: Worker> {
    routes: Routes<W::Message>,
    running: Mutex<Option<Running>>,
    plan: Plan,
}

impl<W: Worker> fmt::Debug for WorkerPool<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerPool")
            .field("workers", &self.routes.len())
            .field("profile", &self.plan.profile)
            .field("stopped", &self.routes.stopped)
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
    pub(super) fn started(routes: Routes<W::Message>, running: Running, plan: Plan) -> Self {
        WorkerPool {
            routes,
            running: Mutex::new(Some(running)),
            plan,
        }
    }

    pub(super) fn wait_started(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut starting = false;
            for (i, l) in self.routes.links.iter().enumerate() {
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
        self.routes.links.len()
    }

    /// Their ids, `0..num_workers()`.
    pub fn worker_ids(&self) -> Vec<WorkerId> {
        (0..self.routes.links.len()).map(WorkerId::from).collect()
    }

    /// The plan the pool runs on.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Whether every worker is running (or paused).
    pub fn all_running(&self) -> bool {
        !self.routes.stopped
            && self.routes.links.iter().all(|l| {
                matches!(
                    l.shared.counters.status(),
                    WorkerStatus::Running | WorkerStatus::Paused
                )
            })
    }

    /// The owner of `key`, or the index the partitioner answered.
    #[inline(always)]
    pub fn owner<K: PartitionKey + ?Sized>(&self, key: &K) -> std::result::Result<usize, usize> {
        self.routes.owner(key)
    }

    /// Sends `msg` to one worker, waiting for room while its queue is full
    /// (the thread parks after a short spin; the worker wakes it when it
    /// takes a burst).
    ///
    /// # Errors
    /// The message is handed back: [`SendError::Failed`] when the worker
    /// has failed (also while waiting), [`SendError::NoOwner`] for an index
    /// past the last worker, [`SendError::Disconnected`] after a stop.
    #[inline]
    pub fn send_to_worker(
        &self,
        worker: impl Into<WorkerId>,
        msg: W::Message,
    ) -> std::result::Result<(), SendError<W::Message>> {
        let i = worker.into().0 as usize;
        // The fast path is the non-blocking send itself; only a full queue
        // leaves it.
        match self.try_send_to_worker(i, msg) {
            Err(SendError::Full(msg)) => self
                .send_waiting(i, Envelope::new(msg), None)
                .map_err(|e| map_err(e, Envelope::into_payload)),
            r => r,
        }
    }

    /// Sends `msg` to one worker if its queue has room now; never waits.
    ///
    /// # Errors
    /// As [`send_to_worker`](Self::send_to_worker), and
    /// [`SendError::Full`] when the queue is full.
    #[inline]
    pub fn try_send_to_worker(
        &self,
        worker: impl Into<WorkerId>,
        msg: W::Message,
    ) -> std::result::Result<(), SendError<W::Message>> {
        self.try_send_envelope(worker, Envelope::new(msg))
            .map_err(|e| map_err(e, Envelope::into_payload))
    }

    /// Sends `msg` to one worker, waiting up to `timeout` for room.
    ///
    /// # Errors
    /// As [`try_send_to_worker`](Self::try_send_to_worker), after the wait.
    pub fn send_to_worker_timeout(
        &self,
        worker: impl Into<WorkerId>,
        msg: W::Message,
        timeout: Duration,
    ) -> std::result::Result<(), SendError<W::Message>> {
        let i = worker.into().0 as usize;
        let deadline = Instant::now().checked_add(timeout);
        match self.try_send_at(i, Envelope::new(msg)) {
            Err(SendError::Full(env)) => self.send_waiting(i, env, deadline),
            r => r,
        }
        .map_err(|e| map_err(e, Envelope::into_payload))
    }

    /// Sends a prepared envelope to one worker, waiting for room.
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
        match self.try_send_at(i, env) {
            Err(SendError::Full(env)) => self.send_waiting(i, env, None),
            r => r,
        }
    }

    /// Sends a prepared envelope to one worker if there is room now.
    ///
    /// # Errors
    /// As [`try_send_to_worker`](Self::try_send_to_worker), handing the
    /// envelope back.
    #[inline]
    pub fn try_send_envelope(
        &self,
        worker: impl Into<WorkerId>,
        env: Envelope<W::Message>,
    ) -> std::result::Result<(), SendError<Envelope<W::Message>>> {
        self.try_send_at(worker.into().0 as usize, env)
    }

    #[inline(always)]
    fn try_send_at(
        &self,
        i: usize,
        env: Envelope<W::Message>,
    ) -> std::result::Result<(), SendError<Envelope<W::Message>>> {
        let env = self.routes.check(i, env)?;
        self.routes.links[i].push(env).map_err(SendError::Full)
    }

    /// Waits for room in worker `i`'s queue (which exists: the first try
    /// found it full).
    #[cold]
    #[inline(never)]
    fn send_waiting(
        &self,
        i: usize,
        env: Envelope<W::Message>,
        deadline: Option<Instant>,
    ) -> std::result::Result<(), SendError<Envelope<W::Message>>> {
        self.routes.links[i]
            .shared
            .senders
            .send(deadline, env, |env| self.try_send_at(i, env))
    }

    /// Sends `msg` to the worker that owns `key` (any `Hash` key; see
    /// [`PartitionKey`]), waiting for room.
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
                workers: self.routes.links.len(),
            }),
        }
    }

    /// Sends `msg` to the worker that owns `key` if there is room now.
    ///
    /// # Errors
    /// As [`try_send_to_worker`](Self::try_send_to_worker);
    /// [`SendError::NoOwner`] as in
    /// [`send_partitioned`](Self::send_partitioned).
    #[inline]
    pub fn try_send_partitioned<K: PartitionKey + ?Sized>(
        &self,
        key: &K,
        msg: W::Message,
    ) -> std::result::Result<(), SendError<W::Message>> {
        match self.owner(key) {
            Ok(i) => self.try_send_to_worker(i, msg),
            Err(index) => Err(SendError::NoOwner {
                value: msg,
                index,
                workers: self.routes.links.len(),
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
        self.routes.check(i, ())?;
        let mut envs = Batch::<Envelope<W::Message>, N>::new();
        while let Some(m) = msgs.pop_front() {
            // Cannot fail: `envs` has the capacity `msgs` had.
            let _ = envs.push(Envelope::new(m));
        }
        let sent = self.routes.links[i].push_burst(&mut envs);
        // The unsent go back, in order (`msgs` is empty now).
        for env in envs.drain() {
            let _ = msgs.push(env.payload);
        }
        Ok(sent)
    }

    /// A sender that buffers per worker and moves messages in bursts: the
    /// fast way to send many keyed messages from one thread.
    pub fn sender(&self) -> PartitionedSender<'_, W> {
        PartitionedSender::new(&self.routes)
    }

    /// Sends a copy of `msg` to every worker, waiting for room in each
    /// queue.
    ///
    /// # Errors
    /// [`BroadcastError`] lists the workers that did not get it, each with
    /// its copy handed back; the others did.
    pub fn broadcast(&self, msg: W::Message) -> std::result::Result<(), BroadcastError<W::Message>>
    where
        W::Message: Clone,
    {
        self.broadcast_with(msg, Self::send_to_worker)
    }

    /// Sends a copy of `msg` to every worker whose queue has room now.
    ///
    /// # Errors
    /// As [`broadcast`](Self::broadcast); a full queue is a miss.
    pub fn try_broadcast(
        &self,
        msg: W::Message,
    ) -> std::result::Result<(), BroadcastError<W::Message>>
    where
        W::Message: Clone,
    {
        self.broadcast_with(msg, Self::try_send_to_worker)
    }

    fn broadcast_with(
        &self,
        msg: W::Message,
        send: impl Fn(&Self, usize, W::Message) -> std::result::Result<(), SendError<W::Message>>,
    ) -> std::result::Result<(), BroadcastError<W::Message>>
    where
        W::Message: Clone,
    {
        let mut failed = Vec::new();
        for i in 0..self.routes.links.len() {
            if let Err(e) = send(self, i, msg.clone()) {
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
        let l = self.routes.links.get(worker).ok_or(Error::NoOwner {
            index: worker,
            workers: self.routes.links.len(),
        })?;
        if self.routes.stopped {
            return Err(Error::Stopped(format!("worker {worker}")));
        }
        l.control
            .push(c)
            .map_err(|_| Error::Full(format!("worker {worker}'s control queue")))
    }

    /// Pauses a worker: it keeps its queue (senders see it fill) and still
    /// answers control messages.
    ///
    /// Like every control message this is applied at the worker's next
    /// pass: messages the worker had already taken may still be handled.
    /// Control messages are applied in order, so once a later
    /// [`ping`](Self::ping) has its answer the worker is paused.
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
        (0..self.routes.links.len()).try_for_each(|i| self.control(i, Control::Pause))
    }

    /// Resumes every worker.
    ///
    /// # Errors
    /// The first failure; the workers before it were resumed.
    pub fn resume_all(&self) -> Result<()> {
        (0..self.routes.links.len()).try_for_each(|i| self.control(i, Control::Resume))
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
        (0..self.routes.links.len())
            .map(|i| self.ping(i, timeout))
            .collect()
    }

    /// Every worker's counters now.
    pub fn stats(&self) -> Vec<WorkerStats> {
        self.routes
            .links
            .iter()
            .enumerate()
            .map(|(i, l)| l.shared.counters.snapshot(WorkerId::from(i), l.queued()))
            .collect()
    }

    /// A handle to every worker's counters that other threads keep and
    /// read while the pool runs (telemetry's `/dataplane/workers`, a
    /// metrics scrape).
    pub fn stats_view(&self) -> WorkerStatsView {
        WorkerStatsView {
            workers: self
                .routes
                .links
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    let (shared, lanes, tx) = (l.shared.clone(), l.lanes.clone(), l.tx.clone());
                    Arc::new(move || {
                        shared
                            .counters
                            .snapshot(WorkerId::from(i), lanes.len() + tx.len())
                    }) as Arc<dyn Fn() -> WorkerStats + Send + Sync>
                })
                .collect(),
        }
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

    /// Stops every worker after its queue drains (the original design's form).
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
        if self.routes.stopped {
            return PoolReport {
                workers: self.stats(),
                lcores: Vec::new(),
                undelivered: Vec::new(),
            };
        }
        self.routes.stopped = true;
        let lcores = self.stop_lcores();
        let workers = self.stats();
        let mut undelivered = Vec::new();
        for l in self.routes.links.iter() {
            undelivered.append(&mut l.shared.leftover.lock().unwrap_or_else(|p| p.into_inner()));
        }
        PoolReport {
            workers,
            lcores,
            undelivered,
        }
    }
}

impl<W: Worker> Drop for WorkerPool<W> {
    fn drop(&mut self) {
        if !self.routes.stopped {
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

/// Every worker's counters, readable from any thread: see
/// [`WorkerPool::stats_view`].
#[derive(Clone)]
pub struct WorkerStatsView {
    workers: Vec<Arc<dyn Fn() -> WorkerStats + Send + Sync>>,
}

impl fmt::Debug for WorkerStatsView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerStatsView")
            .field("workers", &self.workers.len())
            .finish()
    }
}

impl WorkerStatsView {
    /// Each worker's counters now (queue depth included).
    pub fn snapshot(&self) -> Vec<WorkerStats> {
        self.workers.iter().map(|w| w()).collect()
    }
}
