//! A worker pool with partitioning: messages with the same key always reach
//! the same worker (the original design's second quick start).

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

    fn shutdown(&mut self, state: Self::State) -> Result<()> {
        println!(
            "worker {}: {} messages, first {:?}",
            self.id,
            state.len(),
            state.first()
        );
        Ok(())
    }
}

fn main() -> Result<()> {
    let pool_config = dataplane::worker::PoolConfig::new().with_num_workers(4);

    let pool = dataplane::worker::WorkerPool::with_partitioner(
        pool_config,
        |i| DataProcessor { id: i },
        Arc::new(HashPartitioner::new()),
    )?;

    // Messages with the same key always go to the same worker.
    for i in 0..100 {
        let key = format!("user-{}", i % 10);
        pool.send_partitioned(&key, format!("data-{}", i))?;
    }

    let report = pool.shutdown()?;
    let handled: u64 = report.workers.iter().map(|w| w.handled).sum();
    println!(
        "handled {handled} messages on {} workers",
        report.workers.len()
    );
    assert_eq!(handled, 100);
    Ok(())
}
