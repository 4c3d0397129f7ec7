//! The poller that runs one worker on its lcore: control messages, bursts
//! of messages, ticks, and supervision.

use super::stats::{Counters, WorkerStatus};
use super::{Envelope, Worker, WorkerId};
use crate::channel::Waiters;
use crate::lcore::{PollContext, Poller, panic_message};
use crate::ring::{self, Batch, Single};
use crate::time::TscTimer;
use serde::Serialize;
use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Messages a worker takes from its ring per pass (DPDK's MAX_PKT_BURST).
pub(crate) const WORKER_BURST: usize = 32;

/// What to do when a worker's handler, `init` or `tick` panics or returns
/// an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartPolicy {
    /// Mark the worker failed at the first failure.
    Never,
    /// Re-create its state after each failure, unless `max_restarts`
    /// restarts already happened within the last `within`; then mark it
    /// failed.
    Limited {
        /// Restarts allowed within the window.
        max_restarts: u32,
        /// The window.
        within: Duration,
    },
    /// Always re-create the state.
    Always,
}

impl Default for RestartPolicy {
    /// Ten restarts a minute, like a typical supervisor's intensity limit.
    fn default() -> Self {
        RestartPolicy::Limited {
            max_restarts: 10,
            within: Duration::from_secs(60),
        }
    }
}

/// A worker's answer to a ping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pong {
    /// Who answered.
    pub worker: WorkerId,
    /// Its status.
    pub status: WorkerStatus,
    /// Messages waiting for it: in its ring and in the burst it holds.
    pub queue_depth: usize,
    /// How long ago it last handled a message; `None` if it never has.
    pub last_activity: Option<Duration>,
    /// Messages handled so far.
    pub handled: u64,
}

/// Control messages, on a ring of their own that a worker polls first.
pub(crate) enum Control {
    Pause,
    Resume,
    Ping(std::sync::mpsc::SyncSender<Pong>),
}

/// Control-ring capacity per worker.
pub(crate) const CONTROL_CAPACITY: usize = 64;

/// What the pool and the worker's lcore share about one worker.
pub(crate) struct WorkerShared<M> {
    pub(crate) counters: Counters,
    /// Why the worker last failed (control path).
    pub(crate) failure: Mutex<Option<String>>,
    /// Messages queued for a failed worker, handed back at stop.
    pub(crate) leftover: Mutex<Vec<Envelope<M>>>,
    /// Threads waiting for room in this worker's queue: woken after every
    /// burst the worker takes, and when it fails or stops.
    pub(crate) senders: Waiters,
}

impl<M> WorkerShared<M> {
    pub(crate) fn new() -> Self {
        WorkerShared {
            counters: Counters::default(),
            failure: Mutex::new(None),
            leftover: Mutex::new(Vec::new()),
            senders: Waiters::default(),
        }
    }

    pub(crate) fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// What a failing call was doing: handling a message (which it consumed)
/// or running `init` or `tick`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Blame {
    Message,
    Worker,
}

enum Failure {
    Error(crate::Error),
    Panic(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Error(e) => write!(f, "error: {e}"),
            Failure::Panic(m) => write!(f, "panic: {m}"),
        }
    }
}

/// One worker on its lcore.
pub(crate) struct WorkerPoller<W: Worker> {
    pub(crate) id: WorkerId,
    pub(crate) worker: W,
    pub(crate) state: Option<W::State>,
    /// Messages from threads without a lane.
    pub(crate) inbox: ring::Consumer<Envelope<W::Message>, Single>,
    /// Messages from threads with a lane, one lane per thread.
    pub(crate) lanes: ring::LanesRx<Envelope<W::Message>>,
    /// Which of the two a pass takes from first (alternates, so that
    /// neither starves the other under load).
    pub(crate) inbox_first: bool,
    pub(crate) control: ring::Consumer<Control, Single>,
    pub(crate) batch: Batch<Envelope<W::Message>, WORKER_BURST>,
    pub(crate) shared: Arc<WorkerShared<W::Message>>,
    pub(crate) policy: RestartPolicy,
    pub(crate) restarts: VecDeque<Instant>,
    pub(crate) tick_every: Duration,
    pub(crate) tick: Option<TscTimer>,
    pub(crate) paused: bool,
    pub(crate) failed: bool,
}

impl<W: Worker> WorkerPoller<W> {
    fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    fn queue_depth(&self) -> usize {
        self.queued() + self.batch.len()
    }

    /// Messages waiting in the lanes and the ring.
    fn queued(&self) -> usize {
        self.inbox.len() + self.lanes.len()
    }

    /// Takes a burst of messages into the batch: from the lanes and the
    /// ring, in turns.
    #[inline]
    fn take(&mut self) -> usize {
        self.inbox_first = !self.inbox_first;
        if self.inbox_first {
            let n = self.inbox.pop_burst(&mut self.batch);
            n + self.lanes.pop_burst(&mut self.batch)
        } else {
            let n = self.lanes.pop_burst(&mut self.batch);
            n + self.inbox.pop_burst(&mut self.batch)
        }
    }

    /// Applies control messages; returns how many.
    fn control(&mut self) -> usize {
        let mut n = 0;
        while let Some(c) = self.control.pop() {
            n += 1;
            match c {
                Control::Pause => {
                    self.paused = true;
                    if !self.failed && self.state.is_some() {
                        self.counters().set_status(WorkerStatus::Paused);
                    }
                }
                Control::Resume => {
                    self.paused = false;
                    if !self.failed && self.state.is_some() {
                        self.counters().set_status(WorkerStatus::Running);
                    }
                }
                Control::Ping(reply) => {
                    let s = self.counters().snapshot(self.id, self.queued());
                    // The asker may have given up waiting; nothing to do then.
                    let _ = reply.try_send(Pong {
                        worker: self.id,
                        status: s.status,
                        queue_depth: self.queue_depth(),
                        last_activity: s.last_activity,
                        handled: s.handled,
                    });
                }
            }
        }
        n
    }

    /// Runs `init`; on failure applies the policy.
    fn start(&mut self) {
        let outcome = catch_unwind(AssertUnwindSafe(|| self.worker.init()));
        let outcome = match outcome {
            Ok(Ok(state)) => {
                self.state = Some(state);
                let status = if self.paused {
                    WorkerStatus::Paused
                } else {
                    WorkerStatus::Running
                };
                self.counters().set_status(status);
                Ok(Ok(()))
            }
            Ok(Err(e)) => Ok(Err(e)),
            Err(p) => Err(p),
        };
        self.settle(outcome, Blame::Worker);
    }

    /// Counts a failure of user code and applies the restart policy; a
    /// success needs nothing.
    fn settle(&mut self, outcome: std::thread::Result<crate::Result<()>>, blame: Blame) {
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                if blame == Blame::Message {
                    self.counters().message_error();
                } else {
                    self.counters().error();
                }
                self.fail(Failure::Error(e));
            }
            Err(p) => {
                // A message being handled was moved into the handler and is
                // gone with the unwind; the rest of its burst is kept.
                self.counters().panic(u64::from(blame == Blame::Message));
                self.fail(Failure::Panic(panic_message(p.as_ref())));
            }
        }
    }

    /// Drops the state and restarts or gives up, as the policy says.
    fn fail(&mut self, why: Failure) {
        tracing::warn!(worker = %self.id, "worker failed: {why}");
        *self
            .shared
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(why.to_string());
        // Dropping user state can panic too; the worker is failing anyway.
        let state = self.state.take();
        let _ = catch_unwind(AssertUnwindSafe(move || drop(state)));
        let now = Instant::now();
        let restart = match self.policy {
            RestartPolicy::Never => false,
            RestartPolicy::Always => true,
            RestartPolicy::Limited {
                max_restarts,
                within,
            } => {
                while self
                    .restarts
                    .front()
                    .is_some_and(|t| now.duration_since(*t) > within)
                {
                    self.restarts.pop_front();
                }
                self.restarts.len() < max_restarts as usize
            }
        };
        if restart {
            self.restarts.push_back(now);
            self.counters().restart();
            tracing::info!(
                worker = %self.id,
                within_window = self.restarts.len(),
                "restarting the worker: init runs again"
            );
            // `init` runs again at the next pass.
        } else {
            tracing::error!(worker = %self.id, "restart policy gave up; worker failed: {why}");
            self.failed = true;
            self.counters().set_status(WorkerStatus::Failed);
            // Senders waiting for room now see the failure.
            self.shared.senders.notify();
        }
    }

    /// Handles the held burst; returns how many messages left it.
    fn handle_batch(&mut self, now: u64) -> usize {
        let before = self.batch.len();
        let mut handled = 0u64;
        let (worker, batch) = (&mut self.worker, &mut self.batch);
        let Some(state) = self.state.as_mut() else {
            return 0;
        };
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            while let Some(env) = batch.pop_front() {
                worker.handle_message(state, env)?;
                handled += 1;
            }
            Ok::<(), crate::Error>(())
        }));
        let taken = before - self.batch.len();
        if handled > 0 {
            self.counters().handled(handled, now);
        }
        self.settle(outcome, Blame::Message);
        taken
    }

    fn tick(&mut self) {
        let Some(state) = self.state.as_mut() else {
            return;
        };
        let worker = &mut self.worker;
        let outcome = catch_unwind(AssertUnwindSafe(|| worker.tick(state)));
        self.settle(outcome, Blame::Worker);
    }

    /// Lets the worker drive its own I/O; returns the work it reports.
    fn poll_io(&mut self, ctx: &PollContext) -> usize {
        let Some(state) = self.state.as_mut() else {
            return 0;
        };
        let worker = &mut self.worker;
        let mut work = 0;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            work = worker.poll(state, ctx)?;
            Ok(())
        }));
        self.settle(outcome, Blame::Worker);
        work
    }
}

impl<W: Worker> Poller for WorkerPoller<W> {
    fn poll(&mut self, ctx: &PollContext) -> usize {
        let mut work = self.control();
        if self.failed {
            // Its queue stays where it is; `stop` hands it back.
            return work;
        }
        if self.state.is_none() {
            self.start();
            return work + 1;
        }
        // A stop drains every queue, paused or not.
        if self.paused && !ctx.stopping() {
            return work;
        }
        if self.batch.is_empty() {
            let n = self.take();
            if n > 0 {
                // Room again: a thread waiting in a blocking send goes on.
                self.shared.senders.notify();
            }
            self.counters().received(n as u64);
        }
        if !self.batch.is_empty() {
            work += self.handle_batch(ctx.now());
        }
        let tick = self
            .tick
            .get_or_insert_with(|| TscTimer::new(self.tick_every, ctx.now()));
        if tick.expired(ctx.now()) {
            self.tick();
        }
        work += self.poll_io(ctx);
        // While draining, a held burst (after a failure) is work in flight,
        // and so are messages still in the queue, counting sends in flight
        // from other threads that are reserved but not yet published (a
        // multi-producer ring publishes each send on its own).
        let queued = if ctx.stopping() { self.queued() } else { 0 };
        work + self.batch.len() + queued
    }

    fn stop(&mut self, _ctx: &PollContext) {
        if self.failed || self.state.is_none() {
            let mut left: Vec<Envelope<W::Message>> = self.batch.drain().collect();
            // Sends in flight from other threads complete without waiting
            // for anyone; take them too.
            self.inbox.drain_reserved(|m| left.push(m));
            self.lanes.drain(|m| left.push(m));
            if !left.is_empty() {
                tracing::error!(worker = %self.id, count = left.len(), "messages undelivered: the worker failed");
                self.shared
                    .leftover
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(left);
            }
        }
        if let Some(state) = self.state.take() {
            let worker = &mut self.worker;
            match catch_unwind(AssertUnwindSafe(|| worker.shutdown(state))) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    self.counters().error();
                    tracing::warn!(worker = %self.id, "shutdown failed: {e}");
                }
                Err(p) => {
                    self.counters().panic(0);
                    tracing::warn!(worker = %self.id, "shutdown panicked: {}", panic_message(p.as_ref()));
                }
            }
        }
        if !self.failed {
            self.counters().set_status(WorkerStatus::Stopped);
        }
        self.shared.senders.notify();
    }
}
