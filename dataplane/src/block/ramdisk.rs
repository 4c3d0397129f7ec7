//! The RAM disk: a namespace held in a hugepage [`Region`], for tests and
//! pipelines. Every lcore's queue copies to and from the same region, so
//! the region is only ever touched through relaxed atomic words: two
//! queues writing the same block concurrently get one of the writes per
//! word (as a device would give one per atomic unit), never undefined
//! behaviour. Operations finish inside `submit`; `poll` hands out their
//! completions.

use super::completion::{Completion, Completions, Status, SubmitError, hand_over};
use super::inflight::Slot;
use super::op::{Op, OpKind};
use super::{
    Backend, Device, DeviceConfig, Geometry, Invalid, Queue, QueueConfig, QueueStats, Target,
};
use crate::backend::Probe;
use crate::{Error, Result};
use hugepages::region::{Backing, Region};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The default block size of a RAM disk: 512 B, the smallest NVMe LBA.
pub const RAM_BLOCK_SIZE: u32 = 512;

/// The largest transfer on a RAM disk: 1 MiB (any would do; this matches
/// the file backends' usual limit, so that code tested on it runs there).
const RAM_MAX_TRANSFER: u32 = 1 << 20;

/// The RAM disk backend.
#[derive(Debug)]
pub(crate) struct RamDisk;

impl Backend for RamDisk {
    fn probe(&self) -> Probe {
        Probe::ok("a hugepage region (4 KiB pages when none are free) as the namespace")
    }

    fn handles(&self, target: &Target) -> bool {
        matches!(target, Target::Ram { .. })
    }

    fn open(&self, cfg: &DeviceConfig) -> Result<Arc<dyn Device>> {
        let Target::Ram { bytes } = Target::parse(&cfg.target)? else {
            return Err(Error::Config(format!(
                "the RAM disk opens ram:SIZE targets, not {}",
                cfg.target
            )));
        };
        let block_size = cfg.block_size.unwrap_or(RAM_BLOCK_SIZE);
        if block_size < 8 || !block_size.is_power_of_two() {
            return Err(Error::Config(format!(
                "RAM disk block size {block_size}: must be a power of two of at least 8"
            )));
        }
        let blocks = bytes / u64::from(block_size);
        if blocks == 0 {
            return Err(Error::Config(format!(
                "a RAM disk of {bytes} bytes holds no block of {block_size}"
            )));
        }
        let len = usize::try_from(blocks * u64::from(block_size))
            .map_err(|_| Error::Config(format!("a RAM disk of {bytes} bytes is too large")))?;
        let region = Region::builder(len).numa_node(cfg.numa_node).build()?;
        let backing = match region.backing() {
            Backing::Hugepages { page_size, .. } => format!("{page_size} hugepages"),
            Backing::Normal { reason } => format!("4 KiB pages ({reason})"),
        };
        let notes = vec![format!("{blocks} x {block_size} B on {backing}")];
        Ok(Arc::new(RamDevice {
            target: cfg.target.clone(),
            region: Arc::new(region),
            geometry: Geometry {
                block_size,
                blocks,
                max_transfer: RAM_MAX_TRANSFER.max(block_size),
                atomic_write_unit: 8,
                buf_align: 1,
                write_zeroes: true,
                deallocate: true,
                volatile_cache: false,
            },
            notes,
        }))
    }
}

/// A RAM disk; its queues share the region.
#[derive(Debug)]
pub(crate) struct RamDevice {
    target: String,
    region: Arc<Region>,
    geometry: Geometry,
    notes: Vec<String>,
}

impl Device for RamDevice {
    fn backend(&self) -> &'static str {
        "ram"
    }

    fn target(&self) -> &str {
        &self.target
    }

    fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }

    fn queue(&self, cfg: &QueueConfig) -> Result<Box<dyn Queue>> {
        cfg.validate()?;
        Ok(Box::new(RamQueue {
            region: self.region.clone(),
            geometry: self.geometry.clone(),
            depth: cfg.depth,
            done: VecDeque::with_capacity(cfg.depth),
            stats: QueueStats::default(),
        }))
    }
}

/// One lcore's queue on a RAM disk.
#[derive(Debug)]
pub(crate) struct RamQueue {
    region: Arc<Region>,
    geometry: Geometry,
    depth: usize,
    done: VecDeque<Completion>,
    stats: QueueStats,
}

impl RamQueue {
    /// The words of `len` bytes at `offset` (both multiples of 8, inside
    /// the region: the geometry check bounds them, block sizes are
    /// multiples of 8 and the region is page-aligned).
    /// (The region is shared between queues as atomics only, so the
    /// lcores never race on plain memory.) `None` when the range is not
    /// inside the region, which the geometry check already rules out.
    fn words(&self, offset: u64, len: u64) -> Option<&[AtomicU64]> {
        let (off, n) = (
            usize::try_from(offset).ok()?,
            usize::try_from(len / 8).ok()?,
        );
        self.region.slice::<AtomicU64>(off, n)
    }
}

impl Queue for RamQueue {
    fn submit(&mut self, op: Op) -> Result<(), SubmitError> {
        if let Err(why) = self.geometry.check(&op) {
            return Err(SubmitError::Invalid { op, why });
        }
        if self.done.len() >= self.depth {
            return Err(SubmitError::Full(op));
        }
        let offset = self.geometry.offset(op.lba);
        let len = self.geometry.len(op.blocks);
        let Some(words) = self.words(offset, len) else {
            let why = Invalid::OutOfRange {
                lba: op.lba,
                blocks: op.blocks,
                device_blocks: self.geometry.blocks,
            };
            return Err(SubmitError::Invalid { op, why });
        };
        let kind = op.kind;
        let mut slot = Slot::from_op(op, if kind.has_data() { len as u32 } else { 0 });
        match kind {
            OpKind::Read => {
                if let Some(buf) = slot.buf.as_mut() {
                    for (dst, w) in buf[..len as usize].chunks_exact_mut(8).zip(words) {
                        // Relaxed: each word is independent data; ordering
                        // against other queues comes from the caller's
                        // own synchronisation (as with a real device).
                        dst.copy_from_slice(&w.load(Ordering::Relaxed).to_ne_bytes());
                    }
                }
            }
            OpKind::Write => {
                if let Some(buf) = slot.buf.as_ref() {
                    for (src, w) in buf[..len as usize].chunks_exact(8).zip(words) {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(src);
                        w.store(u64::from_ne_bytes(b), Ordering::Relaxed);
                    }
                }
            }
            OpKind::WriteZeroes | OpKind::Deallocate => {
                for w in words {
                    w.store(0, Ordering::Relaxed);
                }
            }
            OpKind::Flush => {}
        }
        self.stats.submitted += 1;
        self.done.push_back(slot.complete(Status::Success));
        Ok(())
    }

    fn poll(&mut self, out: &mut Completions) -> usize {
        hand_over(&mut self.done, out, &mut self.stats)
    }

    fn depth(&self) -> usize {
        self.depth
    }

    fn in_flight(&self) -> usize {
        self.done.len()
    }

    fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    fn backend(&self) -> &'static str {
        "ram"
    }

    fn stats(&self) -> QueueStats {
        self.stats
    }
}
