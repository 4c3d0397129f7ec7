//! An I/O lcore feeding workers: a dispatcher on one end of a memory port
//! pair steers packets of 64 flows to three workers, each worker marks what
//! it handled and sends it back, and the dispatcher sends it out again.
//! Every packet comes back once, each flow always from the same worker and
//! in the order it was sent, and every mbuf goes home.

use dataplane::dispatch::{self, DispatchConfig, WorkerLink};
use dataplane::lcore::{LcoreConfig, LcoreGroup, PollContext, Role};
use dataplane::net::{MbufBatch, Port, PortConfig, memory::MemoryPort};
use dataplane::prelude::*;
use std::collections::HashMap;
use std::time::{Duration, Instant};

const PACKETS: u32 = 20_000;
const FLOWS: u32 = 64;

/// A UDP/IPv4 frame of flow `flow` carrying `seq` (bytes 42..46) and, at
/// byte 46, room for the worker's mark.
fn frame(flow: u32, seq: u32) -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[..12].copy_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14..34].copy_from_slice(&[
        0x45, 0, 0, 50, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 1, 0, 2,
    ]);
    f[34..36].copy_from_slice(&(1000 + flow as u16).to_be_bytes());
    f[36..38].copy_from_slice(&4789u16.to_be_bytes());
    f[42..46].copy_from_slice(&seq.to_le_bytes());
    f[46] = 0xff;
    f
}

struct Marker {
    index: u8,
    link: WorkerLink,
    batch: MbufBatch,
}

impl Worker for Marker {
    type State = ();
    type Message = ();

    fn init(&mut self) -> Result<()> {
        Ok(())
    }

    fn handle_message(&mut self, _: &mut (), _: Envelope<()>) -> Result<()> {
        Ok(())
    }

    fn poll(&mut self, _: &mut (), _ctx: &PollContext) -> Result<usize> {
        let n = self.link.recv(&mut self.batch);
        for m in self.batch.iter_mut() {
            m.data_mut()[46] = self.index;
        }
        self.link.send(&mut self.batch);
        Ok(n + self.link.pending())
    }
}

#[test]
fn packets_go_to_their_flows_worker_and_come_back_in_order() -> Result<()> {
    // Three workers steered by flow, and one, which takes whole bursts.
    for workers in [3, 1] {
        round_trip(workers)?;
    }
    Ok(())
}

fn round_trip(workers: usize) -> Result<()> {
    let (mut ours, mut peer) = MemoryPort::pair(&PortConfig {
        mbufs: 4096,
        ..PortConfig::new(format!("dispatch{workers}"))
    })?;
    let our_pool = ours[0].pool().clone();
    let mut peer = peer.remove(0);
    let peer_pool = peer.pool().clone();
    let ports: Vec<Box<dyn Port>> = vec![Box::new(ours.remove(0))];
    let (io, links) = dispatch::dispatcher(ports, workers, DispatchConfig::default())?;
    let report = io.report();
    let mut links: Vec<Option<WorkerLink>> = links.into_iter().map(Some).collect();
    let pool = WorkerPool::builder()
        .factory(move |i: usize| Marker {
            index: i as u8,
            link: links[i].take().expect("a link per worker"),
            batch: MbufBatch::new(),
        })
        .workers(workers)
        .cpu_affinity(false)
        .env_overrides(false)
        .build()?;
    let mut group = LcoreGroup::new().allow_shared_cpus(true);
    let l = group.add(LcoreConfig::new(Role::Io).name("dispatch"));
    group.poller(l, io)?;
    let running = group.launch()?;

    // Send at a pace the rings hold (the dispatcher drops what a full
    // worker ring cannot take, as a NIC would), and take back what returns.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut sent = 0u32;
    let mut batch = MbufBatch::new();
    let mut back = MbufBatch::new();
    let mut seen: HashMap<u32, (u8, u32)> = HashMap::new();
    let mut got = 0u32;
    while got < PACKETS && Instant::now() < deadline {
        while sent < PACKETS && !batch.is_full() && sent - got < 512 {
            let Some(mut m) = peer.pool().alloc() else {
                break;
            };
            m.append(64)
                .expect("room")
                .copy_from_slice(&frame(sent % FLOWS, sent / FLOWS));
            batch.push(m).expect("room");
            sent += 1;
        }
        let n = peer.tx_burst(&mut batch);
        // Not taken: back to the pool, sent again later.
        sent -= batch.len() as u32;
        batch.clear();
        let _ = n;
        peer.rx_burst(&mut back);
        for m in back.drain() {
            let f = m.data();
            let flow = u32::from(u16::from_be_bytes([f[34], f[35]])) - 1000;
            let seq = u32::from_le_bytes(f[42..46].try_into().unwrap());
            let worker = f[46];
            assert!((worker as usize) < workers, "marked by a worker");
            match seen.get(&flow) {
                None => assert_eq!(seq, 0, "flow {flow} starts at 0"),
                Some(&(w, last)) => {
                    assert_eq!(w, worker, "flow {flow} stays on one worker");
                    assert_eq!(seq, last + 1, "flow {flow} in order");
                }
            }
            seen.insert(flow, (worker, seq));
            got += 1;
        }
        if back.is_empty() {
            std::thread::yield_now();
        }
    }
    running.stop()?;
    let r = pool.shutdown()?;
    assert_eq!(r.workers.iter().map(|w| w.errors).sum::<u64>(), 0);
    let stats = *report.lock().unwrap();
    println!("{stats:?}");
    assert_eq!(got, PACKETS, "every packet back ({stats:?})");
    assert_eq!(stats.rx, u64::from(PACKETS));
    assert_eq!(stats.worker_busy + stats.tx_dropped, 0);
    // The flows spread over every worker.
    let mut per_worker = vec![0; workers];
    for (w, _) in seen.values() {
        per_worker[*w as usize] += 1;
    }
    assert!(per_worker.iter().all(|&n| n > 0), "{per_worker:?}");
    drop(peer);
    assert_eq!(peer_pool.in_use(), 0, "every mbuf home");
    assert_eq!(our_pool.in_use(), 0);
    Ok(())
}

#[test]
fn flow_hash_keeps_a_flow_together_and_tells_flows_apart() {
    let a = dispatch::flow_hash(&frame(1, 0));
    assert_eq!(
        a,
        dispatch::flow_hash(&frame(1, 99)),
        "the payload is not hashed"
    );
    assert_ne!(a, dispatch::flow_hash(&frame(2, 0)));
    // Short or foreign frames hash without panicking.
    let _ = dispatch::flow_hash(&[]);
    let _ = dispatch::flow_hash(&[0x08; 20]);
    let mut frag = frame(1, 0);
    frag[20] = 0x20; // more fragments: ports are not read
    assert_eq!(dispatch::flow_hash(&frag), {
        let mut other = frame(7, 0);
        other[20] = 0x20;
        dispatch::flow_hash(&other)
    });
}
