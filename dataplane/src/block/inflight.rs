//! The table of operations in flight on one queue: a slot per queue entry,
//! indexed by the id the device echoes back (io_uring's `user_data`,
//! SPDK's callback argument), holding the buffer the device owns meanwhile.

use super::completion::{Completion, Status};
use super::op::{Op, OpKind};
use hugepages::mempool::DmaBuf;

/// One operation in flight.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) tag: u64,
    pub(crate) kind: OpKind,
    /// Bytes the operation moves (0 for range operations and flush).
    pub(crate) bytes: u32,
    pub(crate) buf: Option<DmaBuf>,
    /// A write durable on completion.
    pub(crate) fua: bool,
}

impl Slot {
    pub(crate) fn from_op(op: Op, bytes: u32) -> Slot {
        Slot {
            tag: op.tag,
            kind: op.kind,
            bytes,
            buf: op.buf,
            fua: op.fua,
        }
    }

    /// The operation again, for handing back a refused submission.
    pub(crate) fn into_op(self, lba: u64, blocks: u32) -> Op {
        Op {
            kind: self.kind,
            lba,
            blocks,
            buf: self.buf,
            tag: self.tag,
            fua: self.fua,
        }
    }

    /// The completion, given what the device said: a byte count or an
    /// `errno`, as the kernel reports it.
    pub(crate) fn complete_os(self, res: i32) -> Completion {
        let status = if res < 0 {
            Status::Os(-res)
        } else if self.kind.has_data() && (res as u32) < self.bytes {
            Status::Short { bytes: res as u32 }
        } else {
            Status::Success
        };
        self.complete(status)
    }

    pub(crate) fn complete(self, status: Status) -> Completion {
        Completion {
            tag: self.tag,
            kind: self.kind,
            status,
            buf: self.buf,
        }
    }
}

/// Slots and a stack of free ids; no allocation after construction.
#[derive(Debug)]
pub(crate) struct InFlight {
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
}

impl InFlight {
    pub(crate) fn new(depth: usize) -> InFlight {
        InFlight {
            slots: (0..depth).map(|_| None).collect(),
            // Lowest ids on top, so a shallow queue reuses a few hot slots.
            free: (0..depth as u32).rev().collect(),
        }
    }

    pub(crate) fn depth(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    pub(crate) fn is_full(&self) -> bool {
        self.free.is_empty()
    }

    /// Stores the slot and returns its id; `None` when full (the caller
    /// checked, so this is never hit).
    #[inline]
    pub(crate) fn insert(&mut self, slot: Slot) -> Result<u32, Slot> {
        let Some(id) = self.free.pop() else {
            return Err(slot);
        };
        self.slots[id as usize] = Some(slot);
        Ok(id)
    }

    /// Gives up every operation still in flight: their buffers are leaked,
    /// never returned to their pool, because the device may still write
    /// them.
    pub(crate) fn leak_all(&mut self) {
        for (id, slot) in self.slots.iter_mut().enumerate() {
            if let Some(slot) = slot.take() {
                std::mem::forget(slot.buf);
                self.free.push(id as u32);
            }
        }
    }

    /// Takes the slot of a finished operation; `None` for an id that is not
    /// in flight (never, unless the device echoed garbage).
    #[inline]
    pub(crate) fn take(&mut self, id: u64) -> Option<Slot> {
        let slot = self.slots.get_mut(usize::try_from(id).ok()?)?.take()?;
        self.free.push(id as u32);
        Some(slot)
    }
}
