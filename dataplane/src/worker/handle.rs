//! A single worker on its own lcore: [`spawn`] and its [`WorkerHandle`].

use super::config::WorkerConfig;
use super::pool::WorkerPool;
use super::stats::WorkerStats;
use super::supervisor::Pong;
use super::{Envelope, Worker, WorkerId};
use crate::Result;
use crate::channel::SendError;
use std::time::Duration;

/// One worker on its own lcore (the original design's `worker::spawn`).
///
/// # Errors
/// As [`PoolBuilder::build`](super::PoolBuilder::build).
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

    /// Sends a message, waiting for room while the worker's queue is full.
    ///
    /// # Errors
    /// As [`WorkerPool::send_to_worker`].
    pub fn send(&self, msg: W::Message) -> std::result::Result<(), SendError<W::Message>> {
        self.pool.send_to_worker(0usize, msg)
    }

    /// Sends a message if its queue has room now; never waits.
    ///
    /// # Errors
    /// As [`WorkerPool::try_send_to_worker`].
    pub fn try_send(&self, msg: W::Message) -> std::result::Result<(), SendError<W::Message>> {
        self.pool.try_send_to_worker(0usize, msg)
    }

    /// Sends an envelope, waiting for room.
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
