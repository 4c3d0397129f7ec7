//! The shared-nothing programming model: workers with isolated state, fed
//! by messages, on application lcores.
//!
//! A [`Worker`] owns its `State` outright (created by `init` on its own
//! lcore and never shared); messages reach it in bursts, wrapped in an
//! [`Envelope`], through rings of its own (below). A
//! [`WorkerPool`] runs one worker per application lcore of a
//! [`Plan`](crate::profile::Plan) and routes messages to them: to a worker
//! by index, by key through a [`Partitioner`](crate::partition::Partitioner),
//! or to all.
//!
//! ```
//! use dataplane::prelude::*;
//!
//! struct Counter;
//!
//! impl Worker for Counter {
//!     type State = u64;
//!     type Message = u64;
//!
//!     fn init(&mut self) -> Result<u64> {
//!         Ok(0)
//!     }
//!
//!     fn handle_message(&mut self, state: &mut u64, msg: Envelope<u64>) -> Result<()> {
//!         *state += msg.payload;
//!         Ok(())
//!     }
//! }
//!
//! let mut pool = WorkerPool::builder()
//!     .factory(|_| Counter)
//!     .workers(1)
//!     .cpu_affinity(false)
//!     .build()?;
//! for key in 0..100u64 {
//!     pool.send_partitioned(&key, key)?;
//! }
//! let report = pool.shutdown()?;
//! assert_eq!(report.workers[0].handled, 100);
//! # Ok::<(), dataplane::Error>(())
//! ```
//!
//! # Sending threads and order
//!
//! Each thread that sends to a worker does so through a lane of its own: a
//! single-producer ring into that worker, made on the thread's first send
//! and kept for the thread's life (its lane id goes back when it exits,
//! and the next thread to take the id carries on behind what is still
//! queued). A send is then the single-producer path, a store and a release,
//! with no read-modify-write shared with other senders, and a sender
//! preempted mid-send holds up nobody else. The worker takes from its lanes
//! in turn. Threads beyond the process's lane ids (128 sending at once)
//! share one multi-producer ring per worker instead.
//! A lane holds the queue capacity's worth of envelopes (64 KiB for
//! `u64` messages at the production profile's capacity of 4096), made only for a
//! thread that sends to that worker, and freed with the pool.
//!
//! So: a thread's messages to a worker are handled in the order it sent
//! them, whichever send function it uses (`send_to_worker`,
//! `send_partitioned`, bursts, a [`PartitionedSender`] once flushed);
//! messages of different threads are not ordered, even when one send
//! happened before the other. The queue capacity bounds each lane: a
//! thread whose lane to a worker is full is pushed back
//! ([`SendError::Full`](crate::channel::SendError::Full)) while other
//! threads may still send.
//!
//! # Supervision
//!
//! A handler that panics or returns an error is isolated: the other
//! workers go on, the failure is counted, the worker's state is dropped and
//! re-created with `init` according to its [`RestartPolicy`], and the
//! messages still queued for it are kept. A worker whose policy gives up is
//! marked failed: sends to it are refused (the message handed back), and
//! what was queued for it is returned by [`WorkerPool::shutdown`].
//!
//! # I/O
//!
//! A worker can own I/O on its lcore: port queues, a block queue, an
//! accelerator queue, mempools. What must be opened once for all lcores
//! (a port's queues, a block device) is opened before the pool starts and
//! moved into each worker by its factory (`|i| Capture::new(queues[i].take())`);
//! the worker value lives on its lcore for the pool's life and survives
//! restarts. What belongs to the lcore itself (an io_uring block queue,
//! which its first user owns; a per-lcore accelerator queue) is best
//! opened in `init`, which runs on the lcore, and kept in the state.
//! [`Worker::poll`] then runs on every pass of the lcore, after the
//! worker's messages, in the same run-to-completion loop: receive a burst,
//! submit, reap completions, transmit, with no other thread and no lock.
//! A failing `poll` is treated like a failing `tick`.
//!
//! # Control
//!
//! Each worker also polls a small control ring: [`WorkerPool::pause`] and
//! [`WorkerPool::resume`] (a paused worker keeps its queue and answers
//! control messages), and [`WorkerPool::ping`], answered with a [`Pong`]
//! carrying the worker's queue depth and how long ago it last handled a
//! message.

mod builder;
mod config;
mod handle;
mod pool;
mod routes;
mod sender;
mod stats;
mod supervisor;
#[cfg(test)]
mod tests;

pub use builder::{PoolBuilder, WorkerFactory};
pub use config::{PoolConfig, WorkerConfig};
pub use handle::{WorkerHandle, spawn};
pub use pool::{PoolReport, WorkerPool, WorkerStatsView};
pub use routes::BroadcastError;
pub use sender::PartitionedSender;
pub use stats::{WorkerStats, WorkerStatus};
pub use supervisor::{Pong, RestartPolicy};

use crate::Result;
use crate::lcore::PollContext;
use serde::Serialize;
use std::fmt;

/// A worker's index in its pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct WorkerId(pub u32);

/// Worker indices of any integer type, so that `send_to_worker(0, m)`
/// works with a plain literal. An index past `u32::MAX` or below zero names
/// no worker (a send to it is refused with `SendError::NoOwner`).
macro_rules! worker_ids {
    ($($t:ty),*) => {$(
        impl From<$t> for WorkerId {
            #[inline(always)]
            fn from(i: $t) -> Self {
                WorkerId(u32::try_from(i).unwrap_or(u32::MAX))
            }
        }
    )*};
}
worker_ids!(usize, u64, i32, i64, isize);

impl From<u32> for WorkerId {
    #[inline(always)]
    fn from(i: u32) -> Self {
        WorkerId(i)
    }
}

impl From<u16> for WorkerId {
    #[inline(always)]
    fn from(i: u16) -> Self {
        WorkerId(u32::from(i))
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "worker{}", self.0)
    }
}

/// A message on its way to a worker.
///
/// Deliberately small (16 bytes around a `u64` payload): at tens of
/// millions of messages per second the envelope is most of the bytes that
/// cross between cores, so it carries no clock reading or id. Put those in
/// the payload when you need them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope<T> {
    /// The message.
    pub payload: T,
    /// The sending worker, when a worker sent it.
    pub source: Option<WorkerId>,
}

impl<T> Envelope<T> {
    /// An envelope from outside the pool.
    #[inline(always)]
    pub fn new(payload: T) -> Self {
        Envelope {
            payload,
            source: None,
        }
    }

    /// Marks the sending worker.
    #[inline(always)]
    pub fn with_source(mut self, source: WorkerId) -> Self {
        self.source = Some(source);
        self
    }

    /// The payload.
    #[inline(always)]
    pub fn into_payload(self) -> T {
        self.payload
    }
}

/// A unit of isolated state and the code that changes it.
///
/// `init` runs on the worker's own lcore, and the state never leaves it.
/// Keep everything a handler mutates in `State`: after a panic the state is
/// dropped and re-created, while the worker value itself is kept.
pub trait Worker: Send + Sized + 'static {
    /// The worker's isolated state.
    type State: Send + 'static;
    /// The messages it handles.
    type Message: Send + 'static;

    /// Creates the state (again after a failure, under the restart policy).
    ///
    /// # Errors
    /// A failure here is handled like a failing handler.
    fn init(&mut self) -> Result<Self::State>;

    /// Handles one message.
    ///
    /// # Errors
    /// An error is counted and the worker restarted under its policy.
    fn handle_message(
        &mut self,
        state: &mut Self::State,
        message: Envelope<Self::Message>,
    ) -> Result<()>;

    /// Runs when the pool stops, after the worker's queue has drained.
    ///
    /// # Errors
    /// Counted and logged; the worker stops regardless.
    fn shutdown(&mut self, _state: Self::State) -> Result<()> {
        Ok(())
    }

    /// Runs every tick interval of the pool (1 ms by default).
    ///
    /// # Errors
    /// As for `handle_message`.
    fn tick(&mut self, _state: &mut Self::State) -> Result<()> {
        Ok(())
    }

    /// Runs on every pass of the worker's lcore, after its messages: the
    /// place to drive the I/O the worker owns (see [I/O](self#io)): rx
    /// bursts from its port queues, completions of its block and
    /// accelerator queues. Returns the work done (packets moved,
    /// completions reaped), which the lcore's idle policy reads: 0 lets it
    /// back off.
    ///
    /// While the pool stops ([`PollContext::stopping`]) take no new input
    /// from outside (no more rx bursts), finish what is in flight, and
    /// return more than 0 while anything is: the lcore keeps polling until
    /// every worker returns 0, and only then calls `shutdown`.
    ///
    /// Not called while the worker is paused, failed, or has no state.
    ///
    /// # Errors
    /// As for `tick`: counted, and the state re-created under the restart
    /// policy.
    fn poll(&mut self, _state: &mut Self::State, _ctx: &PollContext) -> Result<usize> {
        Ok(0)
    }
}
