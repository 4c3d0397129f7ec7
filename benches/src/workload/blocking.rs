//! Blocking channels: one thread `send`s, another `recv`s on the other
//! core, both waiting (parking) when the channel is full or empty, ours
//! beside flume's and crossbeam-channel's blocking `send`/`recv`; and how
//! much CPU a receiver burns while it waits for a sender that is idle.

use super::CpuPair;
use crate::cpu::{pin_to_cpu, rdtsc};
use crate::harness::Sample;
use dataplane::channel::Channel;
use std::time::{Duration, Instant};

/// Channel capacity for every contender.
pub const CAPACITY: usize = 1024;

/// One producer, one consumer, `n` u64 items through blocking calls.
fn run<S, R>(
    cpus: CpuPair,
    n: u64,
    (tx, rx): (S, R),
    send: fn(&mut S, u64) -> bool,
    recv: fn(&mut R) -> Option<u64>,
) -> Result<Sample, String>
where
    S: Send + 'static,
    R: Send + 'static,
{
    let _pad = super::placement_pad();
    let consumer = cpus.consumer;
    let mut rx = rx;
    let worker = std::thread::spawn(move || {
        let _ = pin_to_cpu(consumer);
        let mut sum = 0u64;
        for _ in 0..n {
            match recv(&mut rx) {
                Some(v) => sum = sum.wrapping_add(v),
                None => return None,
            }
        }
        Some(sum)
    });
    // The producer runs on a thread of its own too, so that the caller's
    // affinity (the next workload's) is left alone.
    let producer = cpus.producer;
    let sender = std::thread::spawn(move || {
        pin_to_cpu(producer).map_err(|e| e.to_string())?;
        let mut tx = tx;
        let (t0, c0) = (Instant::now(), rdtsc());
        for k in 0..n {
            if !send(&mut tx, k) {
                return Err("send failed".to_string());
            }
        }
        Ok((t0, c0))
    });
    let (t0, c0) = sender
        .join()
        .map_err(|_| "producer panicked".to_string())??;
    let sum = worker
        .join()
        .map_err(|_| "consumer panicked".to_string())?
        .ok_or("recv failed")?;
    let (nanos, cycles) = (t0.elapsed().as_nanos() as f64, (rdtsc() - c0) as f64);
    if sum != super::expected_sum(n) {
        return Err(format!("consumer summed {sum}"));
    }
    Ok(Sample {
        ops: n,
        nanos,
        cycles,
        side_cycles_per_op: None,
    })
}

/// Ours: `Channel::spsc`, `send`/`recv`.
pub fn ours_spsc(cpus: CpuPair, n: u64) -> Result<Sample, String> {
    run(
        cpus,
        n,
        Channel::spsc::<u64>(CAPACITY),
        |tx, v| tx.send(v).is_ok(),
        |rx| rx.recv().ok(),
    )
}

/// Ours: `Channel::mpsc` (one sender), `send`/`recv`.
pub fn ours_mpsc(cpus: CpuPair, n: u64) -> Result<Sample, String> {
    run(
        cpus,
        n,
        Channel::mpsc::<u64>(CAPACITY),
        |tx, v| tx.send(v).is_ok(),
        |rx| rx.recv().ok(),
    )
}

/// Peer: `flume::bounded`, `send`/`recv`.
pub fn flume(cpus: CpuPair, n: u64) -> Result<Sample, String> {
    run(
        cpus,
        n,
        flume::bounded::<u64>(CAPACITY),
        |tx, v| tx.send(v).is_ok(),
        |rx| rx.recv().ok(),
    )
}

/// Peer: `crossbeam_channel::bounded`, `send`/`recv`.
pub fn crossbeam(cpus: CpuPair, n: u64) -> Result<Sample, String> {
    run(
        cpus,
        n,
        crossbeam_channel::bounded::<u64>(CAPACITY),
        |tx, v| tx.send(v).is_ok(),
        |rx| rx.recv().ok(),
    )
}

/// CPU time the calling thread has used (zero where the clock is refused).
fn thread_cpu() -> Duration {
    use nix::time::{ClockId, clock_gettime};
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).map_or(Duration::ZERO, Duration::from)
}

/// CPU time a receiver spends blocked in `recv` while its sender sleeps
/// for `idle`, then sends one item: how much a waiting thread spins.
fn idle_cpu<S, R>(
    idle: Duration,
    (tx, rx): (S, R),
    send: fn(&mut S, u64) -> bool,
    recv: fn(&mut R) -> Option<u64>,
) -> Duration
where
    S: Send + 'static,
    R: Send + 'static,
{
    let mut rx = rx;
    let waiter = std::thread::spawn(move || {
        let before = thread_cpu();
        let got = recv(&mut rx);
        (thread_cpu() - before, got)
    });
    std::thread::sleep(idle);
    let mut tx = tx;
    send(&mut tx, 1);
    let (cpu, _) = waiter.join().unwrap_or_default();
    cpu
}

/// The CPU a blocked receiver burns over `idle` with nothing to receive:
/// ours (spsc), flume, crossbeam-channel.
pub fn idle_cpu_all(idle: Duration) -> [(&'static str, Duration); 3] {
    [
        (
            "ours Channel::spsc",
            idle_cpu(
                idle,
                Channel::spsc::<u64>(CAPACITY),
                |tx, v| tx.send(v).is_ok(),
                |rx| rx.recv().ok(),
            ),
        ),
        (
            "flume",
            idle_cpu(
                idle,
                flume::bounded::<u64>(CAPACITY),
                |tx, v| tx.send(v).is_ok(),
                |rx| rx.recv().ok(),
            ),
        ),
        (
            "crossbeam-channel",
            idle_cpu(
                idle,
                crossbeam_channel::bounded::<u64>(CAPACITY),
                |tx, v| tx.send(v).is_ok(),
                |rx| rx.recv().ok(),
            ),
        ),
    ]
}
