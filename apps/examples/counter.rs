//! The basic worker: one counter on its own lcore (the original design's quick start,
//! with the crate name changed).

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

    fn shutdown(&mut self, state: Self::State) -> Result<()> {
        println!("final count: {state}");
        Ok(())
    }
}

fn main() -> Result<()> {
    let config = WorkerConfig::new().with_name("counter");
    let mut worker = dataplane::worker::spawn(CounterWorker, config)?;

    worker.send(5)?;
    worker.send(10)?;

    worker.stop()?;
    let stats = worker.stats();
    assert_eq!(stats.handled, 2);
    Ok(())
}
