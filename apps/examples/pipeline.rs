//! A pipeline of forwarding workers: a parse stage whose workers forward to
//! an aggregate stage by key, stopped front to back so nothing in flight is
//! lost (the original design's inter-worker communication example, made whole).

use dataplane::prelude::*;
use std::sync::Arc;

/// Stage 2: sums values per key bucket.
struct Aggregate;

impl Worker for Aggregate {
    type State = u64;
    type Message = (u32, u64);

    fn init(&mut self) -> Result<u64> {
        Ok(0)
    }

    fn handle_message(&mut self, sum: &mut u64, msg: Envelope<(u32, u64)>) -> Result<()> {
        *sum += msg.payload.1;
        Ok(())
    }

    fn shutdown(&mut self, sum: u64) -> Result<()> {
        println!("aggregate: {sum}");
        Ok(())
    }
}

/// Stage 1: parses "key=value" records and forwards them to the owner of
/// their key in the next stage.
struct Parse {
    next: Arc<WorkerPool<Aggregate>>,
}

impl Worker for Parse {
    type State = u64;
    type Message = String;

    fn init(&mut self) -> Result<u64> {
        Ok(0)
    }

    fn handle_message(&mut self, bad: &mut u64, msg: Envelope<String>) -> Result<()> {
        let Some((k, v)) = msg.payload.split_once('=') else {
            *bad += 1;
            return Ok(());
        };
        let (Ok(key), Ok(value)) = (k.parse::<u32>(), v.parse::<u64>()) else {
            *bad += 1;
            return Ok(());
        };
        // A full queue downstream: the send waits for room rather than
        // drop.
        self.next.send_partitioned(&key, (key, value))?;
        Ok(())
    }

    fn shutdown(&mut self, bad: u64) -> Result<()> {
        println!("parse: {bad} malformed records dropped and counted");
        Ok(())
    }
}

fn main() -> Result<()> {
    let aggregate = Arc::new(
        WorkerPool::builder()
            .factory(|_| Aggregate)
            .workers(2)
            .cpu_affinity(false)
            .build()?,
    );
    let next = aggregate.clone();
    let parse = WorkerPool::builder()
        .factory(move |_| Parse { next: next.clone() })
        .workers(2)
        .cpu_affinity(false)
        .build()?;

    let mut sent = 0u64;
    for i in 0..10_000u64 {
        // One record in a thousand is malformed: counted and dropped.
        let record = if i % 1000 == 999 {
            "garbage".to_string()
        } else {
            sent += i;
            format!("{}={}", i % 64, i)
        };
        // Waits while the parse stage's queue is full.
        parse.send_partitioned(&i, record)?;
    }

    // Front to back: the parse stage drains into the aggregate stage, then
    // the aggregate stage drains.
    let parsed = parse.shutdown()?;
    assert_eq!(
        parsed.workers.iter().map(|w| w.handled).sum::<u64>(),
        10_000,
        "every record parsed or counted"
    );
    let aggregate =
        Arc::try_unwrap(aggregate).map_err(|_| Error::Config("stage 2 still shared".into()))?;
    let report = aggregate.shutdown()?;
    let handled: u64 = report.workers.iter().map(|w| w.handled).sum();
    println!("sent {sent} in values; aggregate handled {handled} records");
    assert_eq!(handled, 10_000 - 10);
    Ok(())
}
