//! The psync backend: `pread`, `pwrite`, `fdatasync` and `fallocate` on a
//! file or block device, for kernels and sandboxes where io_uring is not
//! allowed. Each operation runs to its end inside `submit` (as fio's psync
//! engine does) and its completion is handed out by the next `poll`.

use super::completion::{Completion, Completions, Status, SubmitError, hand_over};
use super::file::{self, OpenFile};
use super::inflight::Slot;
use super::op::{Op, OpKind};
use super::{Backend, Device, DeviceConfig, Geometry, Queue, QueueConfig, QueueStats, Target};
use crate::backend::Probe;
use crate::{Error, Result};
use nix::fcntl::{FallocateFlags, fallocate};
use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// The psync backend.
#[derive(Debug)]
pub(crate) struct Psync;

impl Backend for Psync {
    fn probe(&self) -> Probe {
        Probe::ok("pread/pwrite/fdatasync need nothing beyond the file")
    }

    fn handles(&self, target: &Target) -> bool {
        matches!(target, Target::Path(_))
    }

    fn open(&self, cfg: &DeviceConfig) -> Result<Arc<dyn Device>> {
        let Target::Path(path) = Target::parse(&cfg.target)? else {
            return Err(Error::Config(format!(
                "psync opens paths, not {}",
                cfg.target
            )));
        };
        let f = file::open(&path, cfg)?;
        Ok(Arc::new(PsyncDevice {
            target: cfg.target.clone(),
            file: Arc::new(f),
        }))
    }
}

/// A file or block device opened for psync queues.
#[derive(Debug)]
pub(crate) struct PsyncDevice {
    target: String,
    file: Arc<OpenFile>,
}

impl Device for PsyncDevice {
    fn backend(&self) -> &'static str {
        "psync"
    }

    fn target(&self) -> &str {
        &self.target
    }

    fn geometry(&self) -> &Geometry {
        &self.file.geometry
    }

    fn notes(&self) -> Vec<String> {
        self.file.notes.clone()
    }

    fn queue(&self, cfg: &QueueConfig) -> Result<Box<dyn Queue>> {
        cfg.validate()?;
        Ok(Box::new(PsyncQueue {
            file: self.file.clone(),
            geometry: self.file.geometry.clone(),
            depth: cfg.depth,
            done: VecDeque::with_capacity(cfg.depth),
            stats: QueueStats::default(),
        }))
    }
}

/// One lcore's psync queue.
#[derive(Debug)]
pub(crate) struct PsyncQueue {
    file: Arc<OpenFile>,
    geometry: Geometry,
    depth: usize,
    done: VecDeque<Completion>,
    stats: QueueStats,
}

/// Retries a call interrupted by a signal.
fn retry<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

fn errno(e: &io::Error) -> Status {
    Status::Os(e.raw_os_error().unwrap_or(libc::EIO))
}

impl PsyncQueue {
    fn file(&self) -> &File {
        &self.file.file
    }

    /// Runs a read or write to its end, looping over partial transfers as
    /// `pread`/`pwrite` may return them; a read that meets the end of the
    /// file reports what it moved.
    fn transfer(&self, slot: &mut Slot, offset: u64) -> Status {
        let len = slot.bytes as usize;
        let Some(buf) = slot.buf.as_mut() else {
            return Status::Os(libc::EINVAL);
        };
        let mut done = 0usize;
        while done < len {
            let at = offset + done as u64;
            let r = match slot.kind {
                OpKind::Read => retry(|| self.file().read_at(&mut buf[done..len], at)),
                _ => retry(|| self.file().write_at(&buf[done..len], at)),
            };
            match r {
                Ok(0) => {
                    return Status::Short { bytes: done as u32 };
                }
                Ok(n) => done += n,
                Err(e) => return errno(&e),
            }
        }
        if slot.fua && slot.kind == OpKind::Write {
            // Durable on completion: the write's data and what its
            // metadata needs, in the same operation.
            if let Err(e) = retry(|| self.file().sync_data()) {
                return errno(&e);
            }
        }
        Status::Success
    }

    fn range(&self, mode: FallocateFlags, offset: u64, len: u64) -> Status {
        let (Ok(off), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return Status::Os(libc::EFBIG);
        };
        match retry(|| fallocate(self.file(), mode, off, len).map_err(io::Error::from)) {
            Ok(()) => Status::Success,
            Err(e) => errno(&e),
        }
    }
}

impl Queue for PsyncQueue {
    fn submit(&mut self, op: Op) -> Result<(), SubmitError> {
        if let Err(why) = self.geometry.check(&op) {
            return Err(SubmitError::Invalid { op, why });
        }
        if self.done.len() >= self.depth {
            return Err(SubmitError::Full(op));
        }
        let offset = self.geometry.offset(op.lba);
        let len = self.geometry.len(op.blocks);
        let kind = op.kind;
        let mut slot = Slot::from_op(op, if kind.has_data() { len as u32 } else { 0 });
        let status = match kind {
            OpKind::Read | OpKind::Write => self.transfer(&mut slot, offset),
            OpKind::Flush => match retry(|| self.file().sync_data()) {
                Ok(()) => Status::Success,
                Err(e) => errno(&e),
            },
            OpKind::WriteZeroes => self.range(
                FallocateFlags::FALLOC_FL_ZERO_RANGE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
                offset,
                len,
            ),
            OpKind::Deallocate => self.range(
                FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
                offset,
                len,
            ),
        };
        self.stats.submitted += 1;
        self.stats.syscalls += 1;
        self.done.push_back(slot.complete(status));
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
        "psync"
    }

    fn stats(&self) -> QueueStats {
        self.stats
    }
}
