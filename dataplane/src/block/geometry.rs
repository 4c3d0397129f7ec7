//! A namespace's geometry, and the submission-time checks every backend
//! runs before anything reaches the device.

use super::op::{Op, OpKind};
use serde::Serialize;
use std::fmt;

/// The shape of a namespace (or file, or RAM disk) and what it accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Geometry {
    /// Bytes per logical block (512 or 4096 on NVMe).
    pub block_size: u32,
    /// Logical blocks in the namespace.
    pub blocks: u64,
    /// The largest transfer one operation may carry, in bytes (NVMe MDTS,
    /// the block layer's `max_sectors_kb`).
    pub max_transfer: u32,
    /// The largest write that is atomic across a power failure, in bytes
    /// (NVMe AWUPF, the block layer's `atomic_write_unit_max_bytes`; one
    /// logical block when the device says nothing more).
    pub atomic_write_unit: u32,
    /// The alignment a data buffer's address must have, in bytes (1: any).
    pub buf_align: u32,
    /// Whether Write Zeroes is supported.
    pub write_zeroes: bool,
    /// Whether Deallocate is supported.
    pub deallocate: bool,
    /// Whether the device has a volatile write cache that a flush empties
    /// (false: a completed write is already durable, and flush is cheap).
    pub volatile_cache: bool,
}

impl Geometry {
    /// A geometry with the given block size and count and defaults for the
    /// rest: a 128 KiB maximum transfer, atomic unit of one block, buffers
    /// aligned to the block size, every operation supported, a volatile
    /// cache.
    pub fn new(block_size: u32, blocks: u64) -> Self {
        Geometry {
            block_size,
            blocks,
            max_transfer: 128 << 10,
            atomic_write_unit: block_size,
            buf_align: block_size,
            write_zeroes: true,
            deallocate: true,
            volatile_cache: true,
        }
    }

    /// Whether data buffers must be aligned (more than byte alignment).
    pub fn needs_aligned_buffers(&self) -> bool {
        self.buf_align > 1
    }

    /// Bytes in the namespace.
    pub fn bytes(&self) -> u64 {
        self.blocks.saturating_mul(u64::from(self.block_size))
    }

    /// Checks an operation against the geometry: the buffer (present when
    /// needed, aligned, large enough), the bounds, the transfer size and
    /// support for the kind.
    ///
    /// # Errors
    /// The first rule broken; the operation must not be submitted.
    pub fn check(&self, op: &Op) -> Result<(), Invalid> {
        let kind = op.kind;
        match kind {
            OpKind::Flush => return Ok(()),
            OpKind::WriteZeroes if !self.write_zeroes => return Err(Invalid::Unsupported(kind)),
            OpKind::Deallocate if !self.deallocate => return Err(Invalid::Unsupported(kind)),
            _ => {}
        }
        if op.blocks == 0 {
            return Err(Invalid::NoBlocks);
        }
        let end = op.lba.checked_add(u64::from(op.blocks));
        if end.is_none_or(|end| end > self.blocks) {
            return Err(Invalid::OutOfRange {
                lba: op.lba,
                blocks: op.blocks,
                device_blocks: self.blocks,
            });
        }
        if !kind.has_data() {
            return Ok(());
        }
        let bytes = u64::from(op.blocks) * u64::from(self.block_size);
        if bytes > u64::from(self.max_transfer) {
            return Err(Invalid::TooLarge {
                bytes,
                max: self.max_transfer,
            });
        }
        let Some(buf) = &op.buf else {
            return Err(Invalid::NoBuffer);
        };
        if (buf.len() as u64) < bytes {
            return Err(Invalid::BufferTooSmall {
                need: bytes,
                have: buf.len(),
            });
        }
        let addr = buf.as_ptr().addr();
        if self.buf_align > 1 && !addr.is_multiple_of(self.buf_align as usize) {
            return Err(Invalid::Misaligned {
                addr,
                align: self.buf_align,
            });
        }
        Ok(())
    }

    /// `lba` in bytes.
    pub(crate) fn offset(&self, lba: u64) -> u64 {
        lba * u64::from(self.block_size)
    }

    /// `blocks` in bytes; fits a `u32` for data operations, which
    /// [`Geometry::check`] bounds by `max_transfer`.
    pub(crate) fn len(&self, blocks: u32) -> u64 {
        u64::from(blocks) * u64::from(self.block_size)
    }
}

/// Why a queue refused an operation before submitting anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Invalid {
    /// The buffer's address is not aligned as the device needs.
    Misaligned {
        /// The buffer's address.
        addr: usize,
        /// The alignment needed, in bytes.
        align: u32,
    },
    /// The range runs past the end of the namespace.
    OutOfRange {
        /// The first block asked for.
        lba: u64,
        /// Blocks asked for.
        blocks: u32,
        /// Blocks in the namespace.
        device_blocks: u64,
    },
    /// The transfer is larger than the device's maximum.
    TooLarge {
        /// Bytes asked for.
        bytes: u64,
        /// The device's maximum.
        max: u32,
    },
    /// The buffer is smaller than the transfer.
    BufferTooSmall {
        /// Bytes the transfer needs.
        need: u64,
        /// Bytes the buffer has.
        have: usize,
    },
    /// A read or write without a buffer.
    NoBuffer,
    /// A range operation of zero blocks.
    NoBlocks,
    /// The device (or this backend) does not do this kind of operation.
    Unsupported(OpKind),
    /// The buffer is not in memory this queue can hand to the device (not
    /// registered with SPDK for a PCIe controller).
    UnregisteredBuffer {
        /// The buffer's address.
        addr: usize,
    },
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Invalid::Misaligned { addr, align } => write!(
                f,
                "buffer at {addr:#x} is not aligned to the device's {align} bytes"
            ),
            Invalid::OutOfRange {
                lba,
                blocks,
                device_blocks,
            } => write!(
                f,
                "blocks {lba}..{} run past the end of the device ({device_blocks} blocks)",
                u128::from(lba) + u128::from(blocks)
            ),
            Invalid::TooLarge { bytes, max } => write!(
                f,
                "a transfer of {bytes} bytes is over the device's maximum of {max}"
            ),
            Invalid::BufferTooSmall { need, have } => write!(
                f,
                "the transfer needs {need} bytes but the buffer has {have}"
            ),
            Invalid::NoBuffer => f.write_str("a read or write needs a buffer"),
            Invalid::NoBlocks => f.write_str("a range of zero blocks"),
            Invalid::Unsupported(kind) => write!(f, "the device does not support {kind}"),
            Invalid::UnregisteredBuffer { addr } => write!(
                f,
                "buffer at {addr:#x} is not in memory registered with this queue's device"
            ),
        }
    }
}
