//! The worker-pool workload: one thread sends `u64` messages keyed by
//! themselves to one worker on the other core, which sums them. Timed from
//! the first send until every message has been handled (our pool: until
//! `shutdown` has drained the worker; the channel peers: until the
//! receiving thread has summed the last one), so a figure counts messages
//! delivered and handled, not merely queued.
//!
//! Peers: the original shared-nothing design's transport (a `flume`
//! bounded channel of 1024 per worker, one `send` per message, the worker
//! taking one message per `try_recv`), and crossbeam-channel used the same
//! way, in the same run.

use super::CpuPair;
use crate::cpu::{pin_to_cpu, rdtsc};
use crate::harness::Sample;
use dataplane::prelude::*;
use dataplane::topology::CpuId;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Sums its messages; reports the sum when the pool stops.
struct Summer {
    out: Arc<AtomicU64>,
}

impl Worker for Summer {
    type State = u64;
    type Message = u64;

    fn init(&mut self) -> Result<u64> {
        Ok(0)
    }

    #[inline]
    fn handle_message(&mut self, sum: &mut u64, msg: Envelope<u64>) -> Result<()> {
        *sum = sum.wrapping_add(msg.payload);
        Ok(())
    }

    fn shutdown(&mut self, sum: u64) -> Result<()> {
        self.out.store(sum, Ordering::Release);
        Ok(())
    }
}

fn pool(cpus: CpuPair) -> Result<(WorkerPool<Summer>, Arc<AtomicU64>), String> {
    pool_with(cpus, Profile::Performance)
}

fn pool_with(
    cpus: CpuPair,
    profile: Profile,
) -> Result<(WorkerPool<Summer>, Arc<AtomicU64>), String> {
    let out = Arc::new(AtomicU64::new(0));
    let o = out.clone();
    let pool = WorkerPool::builder()
        .profile(profile)
        .env_overrides(false)
        .factory(move |_| Summer { out: o.clone() })
        .workers(1)
        // The sender's cpu is the plan's main lcore; the worker gets the other.
        .cpus([CpuId(cpus.producer as u32), CpuId(cpus.consumer as u32)])
        .queue_capacity(4096)
        .build()
        .map_err(|e| e.to_string())?;
    Ok((pool, out))
}

fn check(out: &AtomicU64, n: u64) -> Result<(), String> {
    let got = out.load(Ordering::Acquire);
    if got != super::expected_sum(n) {
        return Err(format!(
            "worker summed {got}, expected {}",
            super::expected_sum(n)
        ));
    }
    Ok(())
}

/// Ours: `PartitionedSender::send_partitioned` (per-worker buffers moved
/// into the worker's ring 32 at a time).
pub fn partitioned_sender(cpus: CpuPair, n: u64) -> Result<Sample, String> {
    let (pool, out) = pool(cpus)?;
    pin_to_cpu(cpus.producer).map_err(|e| e.to_string())?;
    let (t0, c0) = (Instant::now(), rdtsc());
    {
        let mut tx = pool.sender();
        let mut k = 0u64;
        while k < n {
            match tx.send_partitioned(&k, k) {
                Ok(()) => k += 1,
                Err(SendError::Full(_)) => core::hint::spin_loop(),
                Err(e) => return Err(e.to_string()),
            }
        }
        if tx.flush() != 0 {
            while tx.flush() != 0 {
                core::hint::spin_loop();
            }
        }
    }
    pool.shutdown().map_err(|e| e.to_string())?;
    let (nanos, cycles) = (t0.elapsed().as_nanos() as f64, (rdtsc() - c0) as f64);
    check(&out, n)?;
    Ok(Sample {
        ops: n,
        nanos,
        cycles,
        side_cycles_per_op: None,
    })
}

/// Ours, unbuffered: one `WorkerPool::send_partitioned` per message (the
/// sending thread's lane, a single-producer ring into the worker).
pub fn send_partitioned(cpus: CpuPair, n: u64) -> Result<Sample, String> {
    unbuffered(pool(cpus)?, cpus, n)
}

/// As [`send_partitioned`], with the default profile (adaptive idling)
/// instead of the performance profile (busy polling).
pub fn send_partitioned_default(cpus: CpuPair, n: u64) -> Result<Sample, String> {
    unbuffered(pool_with(cpus, Profile::Production)?, cpus, n)
}

fn unbuffered(
    (pool, out): (WorkerPool<Summer>, Arc<AtomicU64>),
    cpus: CpuPair,
    n: u64,
) -> Result<Sample, String> {
    pin_to_cpu(cpus.producer).map_err(|e| e.to_string())?;
    let (t0, c0) = (Instant::now(), rdtsc());
    let mut k = 0u64;
    while k < n {
        match pool.send_partitioned(&k, k) {
            Ok(()) => k += 1,
            Err(SendError::Full(_)) => core::hint::spin_loop(),
            Err(e) => return Err(e.to_string()),
        }
    }
    pool.shutdown().map_err(|e| e.to_string())?;
    let (nanos, cycles) = (t0.elapsed().as_nanos() as f64, (rdtsc() - c0) as f64);
    check(&out, n)?;
    Ok(Sample {
        ops: n,
        nanos,
        cycles,
        side_cycles_per_op: None,
    })
}

/// A channel-fed worker thread, the original design's shape.
fn channel_peer<S, R>(
    cpus: CpuPair,
    n: u64,
    (tx, rx): (S, R),
    send: fn(&S, u64),
    recv: fn(&R) -> Option<u64>,
) -> Result<Sample, String>
where
    S: Send + 'static,
    R: Send + 'static,
{
    let consumer = cpus.consumer;
    let worker = std::thread::spawn(move || {
        let _ = pin_to_cpu(consumer);
        let (mut got, mut sum) = (0u64, 0u64);
        while got < n {
            match recv(&rx) {
                Some(v) => {
                    sum = sum.wrapping_add(v);
                    got += 1;
                }
                None => core::hint::spin_loop(),
            }
        }
        sum
    });
    pin_to_cpu(cpus.producer).map_err(|e| e.to_string())?;
    let (t0, c0) = (Instant::now(), rdtsc());
    for k in 0..n {
        send(&tx, k);
    }
    let sum = worker.join().map_err(|_| "worker panicked".to_string())?;
    let (nanos, cycles) = (t0.elapsed().as_nanos() as f64, (rdtsc() - c0) as f64);
    if sum != super::expected_sum(n) {
        return Err(format!("worker summed {sum}"));
    }
    Ok(Sample {
        ops: n,
        nanos,
        cycles,
        side_cycles_per_op: None,
    })
}

/// Peer: the original design's transport, `flume::bounded(1024)`.
pub fn flume_bounded(cpus: CpuPair, n: u64) -> Result<Sample, String> {
    channel_peer(
        cpus,
        n,
        flume::bounded::<u64>(1024),
        |tx, v| {
            let _ = tx.send(v);
        },
        |rx| rx.try_recv().ok(),
    )
}

/// Peer: `crossbeam_channel::bounded(1024)`, used the same way.
pub fn crossbeam_bounded(cpus: CpuPair, n: u64) -> Result<Sample, String> {
    channel_peer(
        cpus,
        n,
        crossbeam_channel::bounded::<u64>(1024),
        |tx, v| {
            let _ = tx.send(v);
        },
        |rx| rx.try_recv().ok(),
    )
}
