//! Every code example of the original design (`shared_nothing`'s README),
//! ported with the crate name changed and nothing else: code written
//! against that design must compile and run here.
//!
//! Where a snippet is a fragment (no worker type, `...` in a body), the
//! smallest scaffolding that makes it a program is added around it and
//! marked `// scaffolding`; the design's own lines are untouched. The one
//! form that cannot be kept, `WorkerPool::new(config, factory)` beside the
//! zero-config `WorkerPool::new()` (Rust has no overloading), is written
//! `WorkerPool::with_config(config, factory)`, as docs/architecture.md's
//! migration notes say.

#![allow(dead_code, unused_mut, unused_variables, clippy::redundant_closure)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Zero-config and the profiles (the README's first lines).
mod zero_config {
    use dataplane::prelude::*;

    #[derive(Default)] // scaffolding
    pub struct Noop; // scaffolding

    impl Worker for Noop {
        // scaffolding
        type State = ();
        type Message = u64;
        fn init(&mut self) -> Result<()> {
            Ok(())
        }
        fn handle_message(&mut self, _: &mut (), _: Envelope<u64>) -> Result<()> {
            Ok(())
        }
    }

    pub fn main() -> Result<()> {
        // That's it! Auto-detects everything.
        let pool = WorkerPool::new()?;
        let _: &WorkerPool<Noop> = &pool; // scaffolding: names the worker type
        drop(pool); // scaffolding: one pool at a time on a small machine

        let pool = WorkerPool::production()?; // Balanced for production
        let _: &WorkerPool<Noop> = &pool; // scaffolding
        drop(pool); // scaffolding
        let pool = WorkerPool::low_latency()?; // <10μs optimizations
        let _: &WorkerPool<Noop> = &pool; // scaffolding
        drop(pool); // scaffolding
        let pool = WorkerPool::performance()?; // Maximum throughput
        let _: &WorkerPool<Noop> = &pool; // scaffolding
        Ok(())
    }
}

/// "Integration Example": the log segment worker.
mod log_segment {
    use dataplane::prelude::*;

    // scaffolding: the types the example names.
    pub struct LogSegment {
        id: u64,
        entries: Vec<LogEntry>,
    }
    impl LogSegment {
        fn new(id: u64) -> Result<LogSegment> {
            Ok(LogSegment {
                id,
                entries: Vec::new(),
            })
        }
        fn append(&mut self, e: LogEntry) -> Result<()> {
            self.entries.push(e);
            Ok(())
        }
    }
    pub type LogEntry = Vec<u8>;
    impl LogSegmentWorker {
        fn new() -> Self {
            LogSegmentWorker { segment_id: 7 }
        }
    }

    // Pyralog's log segment worker
    struct LogSegmentWorker {
        segment_id: u64,
    }

    impl Worker for LogSegmentWorker {
        type State = LogSegment;
        type Message = LogEntry;

        fn init(&mut self) -> Result<Self::State> {
            // Initialize isolated log segment
            LogSegment::new(self.segment_id)
        }

        fn handle_message(
            &mut self,
            state: &mut Self::State,
            msg: Envelope<Self::Message>,
        ) -> Result<()> {
            // Append to local segment (no cross-worker locking)
            state.append(msg.payload)?;
            Ok(())
        }
    }

    pub fn main() -> Result<()> {
        let log_key = "orders-17"; // scaffolding
        let entry: LogEntry = b"entry".to_vec(); // scaffolding

        // Pyralog creates worker pool per partition
        let pool = WorkerPool::builder()
            .factory(|| LogSegmentWorker::new())
            .workers(num_cpus::get())
            .cpu_affinity(true) // Pin to physical cores
            .numa_aware(true) // NUMA-local allocation
            .build()?;

        // Messages routed by consistent hashing (minimal rebalancing)
        pool.send_partitioned(&log_key, entry)?;

        let report = pool.shutdown()?; // scaffolding: check it arrived
        assert_eq!(report.workers.iter().map(|w| w.handled).sum::<u64>(), 1);
        Ok(())
    }
}

/// "Basic Worker (Current MVP)".
mod basic_worker {
    use dataplane::prelude::*;

    struct CounterWorker;

    impl Worker for CounterWorker {
        type State = u64;
        type Message = u64;

        fn init(&mut self) -> Result<Self::State> {
            Ok(0)
        }

        fn handle_message(
            &mut self,
            state: &mut Self::State,
            message: Envelope<Self::Message>,
        ) -> Result<()> {
            *state += message.payload;
            println!("Counter: {}", *state);
            Ok(())
        }
    }

    pub fn main() -> Result<()> {
        let config = WorkerConfig::new().with_name("counter");
        let mut worker = dataplane::worker::spawn(CounterWorker, config)?;

        worker.send(5)?;
        worker.send(10)?;

        worker.stop()?;
        Ok(())
    }
}

/// "Worker Pool with Partitioning".
mod pool_with_partitioning {
    use dataplane::partition::HashPartitioner;
    use dataplane::prelude::*;
    use std::sync::Arc;

    struct DataProcessor {
        id: usize,
    }

    impl Worker for DataProcessor {
        type State = Vec<String>;
        type Message = String;

        fn init(&mut self) -> Result<Self::State> {
            Ok(Vec::new())
        }

        fn handle_message(
            &mut self,
            state: &mut Self::State,
            message: Envelope<Self::Message>,
        ) -> Result<()> {
            state.push(message.payload);
            Ok(())
        }
    }

    pub fn main() -> Result<()> {
        let pool_config = dataplane::pool::PoolConfig::new().with_num_workers(4);

        let mut pool = dataplane::pool::WorkerPool::with_partitioner(
            pool_config,
            |i| DataProcessor { id: i },
            Arc::new(HashPartitioner::new()),
        )?;

        // Messages with the same key always go to the same worker
        for i in 0..100 {
            let key = format!("user-{}", i % 10);
            pool.send_partitioned(&key, format!("data-{}", i))?;
        }

        pool.stop_all()?;
        let handled: u64 = pool.stats().iter().map(|w| w.handled).sum(); // scaffolding
        assert_eq!(handled, 100); // scaffolding
        Ok(())
    }
}

/// "Channels".
mod channels {
    use dataplane::prelude::*;

    pub fn main() -> Result<()> {
        // Create different channel types
        let (tx, rx) = Channel::spsc(1024); // Single producer/consumer
        let (mut tx, mut rx) = (tx, rx); // scaffolding: use them
        tx.send(1u32)?; // scaffolding
        assert_eq!(rx.recv(), Ok(1)); // scaffolding
        let (tx, rx) = Channel::mpsc(1024); // Multi producer/single consumer
        let mut rx = rx; // scaffolding: a single consumer receives through `&mut`
        tx.send(2u32)?; // scaffolding
        assert_eq!(rx.recv(), Ok(2)); // scaffolding
        let (tx, rx) = Channel::mpmc(1024); // Multi producer/multi consumer
        tx.send(3u32)?; // scaffolding
        assert_eq!(rx.recv(), Ok(3)); // scaffolding
        let (tx, rx) = Channel::mpsc_unbounded(); // Unbounded channel
        let mut rx = rx; // scaffolding
        tx.send(4u32)?; // scaffolding
        assert_eq!(rx.recv(), Ok(4)); // scaffolding
        Ok(())
    }
}

/// "Partitioners".
mod partitioners {
    use dataplane::prelude::*;

    pub fn main() {
        let num_workers = 4; // scaffolding
        let virtual_nodes = 64; // scaffolding

        let partitioner = HashPartitioner::new();
        // Same key always maps to same worker
        assert_eq!(
            partitioner.partition("k", num_workers), // scaffolding
            partitioner.partition("k", num_workers)
        );

        let partitioner = ConsistentHashPartitioner::new(num_workers, virtual_nodes);
        // Minimal redistribution when workers are added/removed

        let partitioner = RoundRobinPartitioner::new();
        // Distribute evenly regardless of key

        let partitioner = CustomPartitioner::new(|hash, num_workers| {
            // Your custom logic here
            (hash % num_workers as u64) as usize
        });
        // scaffolding: the closure is given a hash, so sequential keys spread.
        let mut seen = [0usize; 4];
        for k in 0..4000u64 {
            seen[partitioner.partition(&k, num_workers)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 800), "{seen:?}");
    }
}

/// "Worker Pool": `PoolConfig`, `WorkerConfig`, and the three sends.
mod worker_pool {
    use dataplane::prelude::*;

    // scaffolding: a worker and what the example sends.
    pub struct MyWorker {
        pub i: usize,
    }
    impl MyWorker {
        fn new(i: usize) -> Self {
            MyWorker { i }
        }
    }
    impl Worker for MyWorker {
        type State = u64;
        type Message = u64;
        fn init(&mut self) -> Result<u64> {
            Ok(0)
        }
        fn handle_message(&mut self, s: &mut u64, m: Envelope<u64>) -> Result<()> {
            *s += m.payload;
            Ok(())
        }
    }

    pub fn main() -> Result<()> {
        let (worker_id, key, message) = (0, "user-1", 1u64); // scaffolding

        let config = PoolConfig::new()
            .with_num_workers(8)
            .with_cpu_affinity(true) // Pin workers to cores
            .with_worker_config(
                WorkerConfig::new()
                    .with_queue_capacity(1024)
                    .with_high_priority(true),
            );

        let mut pool = WorkerPool::with_config(config, |i| MyWorker::new(i))?;

        // Send to specific worker
        pool.send_to_worker(worker_id, message)?;

        // Send based on partitioning key
        pool.send_partitioned(&key, message)?;

        // Broadcast to all workers
        pool.broadcast(message)?;

        pool.stop_all()?; // scaffolding
        let handled: u64 = pool.stats().iter().map(|w| w.handled).sum(); // scaffolding
        assert_eq!(handled, 2 + pool.num_workers() as u64); // scaffolding
        Ok(())
    }
}

/// "Custom Worker State".
mod custom_state {
    use dataplane::prelude::*;
    use std::collections::HashMap;
    use std::sync::atomic::AtomicU64;
    use std::time::Instant;

    struct ComplexState {
        cache: HashMap<String, Vec<u8>>,
        counters: Vec<AtomicU64>,
        last_update: Instant,
    }

    struct MyWorker; // scaffolding

    impl Worker for MyWorker {
        type State = ComplexState;
        // ...
        type Message = (String, Vec<u8>); // scaffolding
        fn init(&mut self) -> Result<ComplexState> {
            // scaffolding
            Ok(ComplexState {
                cache: HashMap::new(),
                counters: Vec::new(),
                last_update: Instant::now(),
            })
        }
        fn handle_message(
            &mut self,
            s: &mut ComplexState,
            m: Envelope<Self::Message>,
        ) -> Result<()> {
            // scaffolding
            s.cache.insert(m.payload.0, m.payload.1);
            s.last_update = Instant::now();
            Ok(())
        }
    }

    pub fn main() -> Result<()> {
        // scaffolding: run it once.
        let mut w = dataplane::worker::spawn(MyWorker, WorkerConfig::new())?;
        w.send(("k".into(), vec![1]))?;
        w.stop()?;
        Ok(())
    }
}

/// "Inter-Worker Communication": a worker forwarding to the next through a
/// channel.
mod forwarding {
    use super::{Arc, AtomicU64, Ordering};
    use dataplane::prelude::*;

    // scaffolding: the example's types.
    pub type Message = u64;
    pub type State = ();
    fn process(_: &Envelope<Message>) {}

    struct ForwardingWorker {
        next_worker_tx: Sender<Envelope<Message>>,
    }

    impl Worker for ForwardingWorker {
        type State = State; // scaffolding
        type Message = Message; // scaffolding
        fn init(&mut self) -> Result<State> {
            // scaffolding
            Ok(())
        }

        fn handle_message(&mut self, state: &mut State, msg: Envelope<Message>) -> Result<()> {
            // Process message
            process(&msg);

            // Forward to next worker
            self.next_worker_tx.send(msg)?;
            Ok(())
        }
    }

    pub fn main(seen: Arc<AtomicU64>) -> Result<()> {
        // scaffolding: a forwarding worker feeding a thread.
        let (tx, mut rx) = Channel::mpsc(1024);
        let mut w =
            dataplane::worker::spawn(ForwardingWorker { next_worker_tx: tx }, WorkerConfig::new())?;
        for i in 0..100 {
            w.send(i)?;
        }
        for _ in 0..100 {
            let m = rx
                .recv()
                .map_err(|e| dataplane::Error::Stopped(e.to_string()))?;
            seen.fetch_add(m.payload, Ordering::Relaxed);
        }
        w.stop()?;
        Ok(())
    }
}

/// "Dynamic Worker Pool".
mod dynamic_pool {
    use super::worker_pool::MyWorker;
    use dataplane::prelude::*;

    pub fn main() -> Result<()> {
        let factory = |i| MyWorker { i }; // scaffolding
        // Start with fewer workers
        let mut pool = WorkerPool::with_config(PoolConfig::new().with_num_workers(2), factory)?;
        pool.stop_all()?; // scaffolding
        Ok(())
    }
}

#[test]
fn zero_config_and_profiles() {
    zero_config::main().unwrap();
}

#[test]
fn log_segment_worker() {
    log_segment::main().unwrap();
}

#[test]
fn basic_worker() {
    basic_worker::main().unwrap();
}

#[test]
fn worker_pool_with_partitioning() {
    pool_with_partitioning::main().unwrap();
}

#[test]
fn channels() {
    channels::main().unwrap();
}

#[test]
fn partitioner_snippets() {
    partitioners::main();
}

#[test]
fn worker_pool_config_and_sends() {
    worker_pool::main().unwrap();
}

#[test]
fn custom_worker_state() {
    custom_state::main().unwrap();
}

#[test]
fn inter_worker_forwarding() {
    let seen = Arc::new(AtomicU64::new(0));
    forwarding::main(seen.clone()).unwrap();
    assert_eq!(seen.load(Ordering::Relaxed), (0..100).sum::<u64>());
}

#[test]
fn dynamic_worker_pool() {
    dynamic_pool::main().unwrap();
}
