//! A worker that owns a port queue, a block queue and an accelerator queue
//! on its lcore and drives all three from `Worker::poll`, in one
//! run-to-completion loop: packets arrive on a memory port, the
//! accelerator computes each one's CRC32C, the packet and its CRC are
//! written to a RAM disk, read back and checked. Every mbuf and every DMA
//! buffer goes back to its pool.

use dataplane::accel::{self, Buffers, Kernel, Kernels};
use dataplane::block::{self, Completions, DeviceConfig, QueueConfig, op};
use dataplane::lcore::PollContext;
use dataplane::net::{MbufBatch, Port, PortConfig, memory::MemoryPort};
use dataplane::prelude::*;
use hugepages::mbuf::Mbuf;
use hugepages::mempool::Mempool;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const PACKETS: u64 = 3000;
const FRAME: usize = 200;
/// One record per block: seq (8), frame length (4), CRC (4), the frame.
const HEADER: usize = 16;
/// Packets per accelerator submission.
const BATCH: usize = 32;

/// The frame the sender makes for `seq`; the checker makes it again.
fn frame(seq: u64) -> Vec<u8> {
    let mut f = vec![0u8; FRAME];
    f[..8].copy_from_slice(&seq.to_le_bytes());
    for (i, b) in f[8..].iter_mut().enumerate() {
        *b = (seq as u8).wrapping_mul(31).wrapping_add(i as u8);
    }
    f
}

#[derive(Default)]
struct Tally {
    received: AtomicU64,
    checked: AtomicU64,
    bad: AtomicU64,
}

/// What lives on the lcore: queues opened there by `init`.
struct Io {
    block: Box<dyn block::Queue>,
    accel: accel::Queue<Vec<Mbuf>>,
    done: Completions,
    accel_done: Vec<accel::Completion<Vec<Mbuf>>>,
    rx: MbufBatch,
    /// Packets waiting for a submission.
    pending: Vec<Mbuf>,
    /// Records waiting for room in the block queue.
    writes: Vec<op::Op>,
    next_lba: u64,
}

struct Capture {
    port: Box<dyn Port>,
    device: Arc<dyn block::Device>,
    bufs: Mempool,
    tally: Arc<Tally>,
}

impl Worker for Capture {
    type State = Io;
    type Message = ();

    fn init(&mut self) -> Result<Io> {
        // On the worker's own lcore: the queue pairs are this lcore's.
        let block = self
            .device
            .queue(&QueueConfig::new(64).buffers(&self.bufs))?;
        let accel = accel::Queue::open(accel::QueueConfig {
            depth: 4,
            max_items: BATCH,
            staging_bytes: BATCH * 256,
            ..accel::QueueConfig::default()
        })?;
        Ok(Io {
            block,
            accel,
            done: Completions::new(),
            accel_done: Vec::new(),
            rx: MbufBatch::new(),
            pending: Vec::new(),
            writes: Vec::new(),
            next_lba: 0,
        })
    }

    fn handle_message(&mut self, _io: &mut Io, _msg: Envelope<()>) -> Result<()> {
        Ok(())
    }

    fn poll(&mut self, io: &mut Io, ctx: &PollContext) -> Result<usize> {
        let mut work = 0;
        // NIC: a burst in, unless stopping.
        if !ctx.stopping() && io.pending.len() < 64 {
            let n = self.port.rx_burst(&mut io.rx);
            self.tally.received.fetch_add(n as u64, Ordering::Relaxed);
            io.pending.extend(io.rx.drain());
            work += n;
        }
        // Accelerator: the held packets in one submission.
        if !io.pending.is_empty() && io.accel.in_flight() < 4 {
            let n = io.pending.len().min(BATCH);
            let items: Vec<Mbuf> = io.pending.drain(..n).collect();
            match io.accel.submit(
                Kernels::new(&[Kernel::Crc32c]).expect("one kernel"),
                Buffers::new(items),
                accel::workgroups_for(n),
                0,
            ) {
                Ok(()) => work += 1,
                Err(rejected) => {
                    // Full: back to the front, in order, for the next pass.
                    io.pending.splice(0..0, rejected.buffers.items);
                }
            }
        }
        work += io.accel.poll(&mut io.accel_done);
        for c in io.accel_done.drain(..) {
            c.status
                .map_err(|e| dataplane::Error::handler(e.to_string()))?;
            for (m, crc) in c.buffers.items.into_iter().zip(c.buffers.results) {
                let mut buf = self
                    .bufs
                    .alloc_buf()
                    .expect("the buffer pool covers every record");
                let seq = u64::from_le_bytes(m.data()[..8].try_into().expect("8 bytes"));
                buf[..8].copy_from_slice(&seq.to_le_bytes());
                buf[8..12].copy_from_slice(&(m.len() as u32).to_le_bytes());
                buf[12..16].copy_from_slice(&crc.to_le_bytes());
                buf[HEADER..HEADER + m.len()].copy_from_slice(m.data());
                // The mbuf goes home here: its bytes are in the record.
                drop(m);
                io.writes
                    .push(op::Write::new(buf, io.next_lba, 1).tag(io.next_lba).build());
                io.next_lba += 1;
            }
        }
        // Storage: writes in, then each completed write read back.
        while let Some(w) = io.writes.pop() {
            if let Err(e) = io.block.submit(w) {
                io.writes.push(e.into_op());
                break;
            }
            work += 1;
        }
        work += io.block.poll(&mut io.done);
        for c in io.done.drain() {
            assert!(c.status.is_ok(), "{:?}", c.status);
            let buf = c.buf.expect("data operations hand their buffer back");
            match c.kind {
                block::OpKind::Write => {
                    // Reuse the buffer for the read, cleared so the check
                    // sees what the disk holds.
                    let mut buf = buf;
                    buf.fill(0);
                    io.writes
                        .push(op::Read::new(buf, c.tag, 1).tag(c.tag).build());
                }
                block::OpKind::Read => {
                    let seq = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes"));
                    let len = u32::from_le_bytes(buf[8..12].try_into().expect("4")) as usize;
                    let crc = u32::from_le_bytes(buf[12..16].try_into().expect("4"));
                    let expected = frame(seq);
                    let ok = len == FRAME
                        && buf[HEADER..HEADER + len] == expected[..]
                        && crc == accel::kernel::crc32c(&expected);
                    let counter = if ok {
                        &self.tally.checked
                    } else {
                        &self.tally.bad
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        // While stopping, what is held or in flight keeps the lcore polling.
        Ok(work + io.pending.len() + io.writes.len() + io.accel.in_flight() + io.block.in_flight())
    }
}

#[test]
fn one_worker_owns_a_port_a_block_queue_and_an_accelerator_queue() -> Result<()> {
    let (mut ours, mut peer) = MemoryPort::pair(&PortConfig {
        mbufs: 1024,
        ..PortConfig::new("worker-io")
    })?;
    let our_pool = ours[0].pool().clone();
    let port: Box<dyn Port> = Box::new(ours.remove(0));
    let mut peer = peer.remove(0);
    let device = block::open(&DeviceConfig::new("ram:4MiB"))?.value;
    let bufs = device.geometry().buffer_pool("worker-io", 512, 512)?;
    let tally = Arc::new(Tally::default());

    let mut port = Some(port);
    let (d, b, t) = (device.clone(), bufs.clone(), tally.clone());
    let pool = WorkerPool::builder()
        .factory(move || Capture {
            port: port.take().expect("one worker"),
            device: d.clone(),
            bufs: b.clone(),
            tally: t.clone(),
        })
        .workers(1)
        .cpu_affinity(false)
        .env_overrides(false)
        .build()?;

    // The sender: frames into the peer end, as fast as the ring takes them.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seq = 0;
    let mut batch = MbufBatch::new();
    while seq < PACKETS && Instant::now() < deadline {
        while !batch.is_full() && seq + (batch.len() as u64) < PACKETS {
            let Some(mut m) = peer.pool().alloc() else {
                break;
            };
            let f = frame(seq + batch.len() as u64);
            m.append(FRAME).expect("room").copy_from_slice(&f);
            batch.push(m).expect("not full");
        }
        seq += peer.tx_burst(&mut batch) as u64;
        if !batch.is_empty() {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    drop(batch);
    while tally.checked.load(Ordering::Relaxed) + tally.bad.load(Ordering::Relaxed) < PACKETS
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    let report = pool.shutdown()?;
    let w = &report.workers[0];
    assert_eq!((w.errors, w.panics), (0, 0), "{w:?}");
    assert_eq!(tally.received.load(Ordering::Relaxed), PACKETS);
    assert_eq!(tally.bad.load(Ordering::Relaxed), 0);
    assert_eq!(
        tally.checked.load(Ordering::Relaxed),
        PACKETS,
        "every packet written, read back and checked"
    );
    assert_eq!(peer.pool().in_use(), 0, "every mbuf home");
    assert_eq!(our_pool.in_use(), 0);
    assert_eq!(bufs.in_use(), 0, "every DMA buffer home");
    Ok(())
}
