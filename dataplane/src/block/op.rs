//! Operations: one builder per kind, each ending in [`build`](Read::build)
//! to an [`Op`] that a [`Queue`](super::Queue) takes by value.
//!
//! Addresses are in logical blocks of the device (NVMe's LBA and block
//! count), so a misaligned offset cannot be expressed; the buffer's
//! alignment, the bounds and the transfer size are checked at submission.
//! The data of a read or write starts at the buffer's first byte.

use hugepages::mempool::DmaBuf;
use serde::Serialize;
use std::fmt;

/// What an operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// Read blocks into the buffer.
    Read,
    /// Write blocks from the buffer.
    Write,
    /// Make every completed write durable (NVMe Flush, `fdatasync`).
    Flush,
    /// Set blocks to zero without a data buffer (NVMe Write Zeroes).
    WriteZeroes,
    /// Tell the device the blocks are unused (NVMe Dataset Management
    /// deallocate, a discard or hole punch); they read back as zeroes on
    /// every backend here.
    Deallocate,
}

impl OpKind {
    /// Every kind.
    pub const ALL: [OpKind; 5] = [
        OpKind::Read,
        OpKind::Write,
        OpKind::Flush,
        OpKind::WriteZeroes,
        OpKind::Deallocate,
    ];

    /// Whether the operation moves data through a buffer.
    pub const fn has_data(self) -> bool {
        matches!(self, OpKind::Read | OpKind::Write)
    }

    /// The name, as logs and `nvme-perf` spell it.
    pub const fn name(self) -> &'static str {
        match self {
            OpKind::Read => "read",
            OpKind::Write => "write",
            OpKind::Flush => "flush",
            OpKind::WriteZeroes => "write_zeroes",
            OpKind::Deallocate => "deallocate",
        }
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One operation, ready to submit: built by [`Read`], [`Write`], [`Flush`],
/// [`WriteZeroes`] or [`Deallocate`]. It owns its buffer; the buffer moves
/// into the queue with the operation and comes back with its
/// [`Completion`](super::Completion), or with the error when the queue
/// refuses it.
#[derive(Debug)]
pub struct Op {
    pub(crate) kind: OpKind,
    pub(crate) lba: u64,
    pub(crate) blocks: u32,
    pub(crate) buf: Option<DmaBuf>,
    pub(crate) tag: u64,
    /// A write durable on completion (NVMe's Force Unit Access).
    pub(crate) fua: bool,
}

impl Op {
    /// What it does.
    pub fn kind(&self) -> OpKind {
        self.kind
    }

    /// The first logical block.
    pub fn lba(&self) -> u64 {
        self.lba
    }

    /// Logical blocks covered (0 for a flush).
    pub fn blocks(&self) -> u32 {
        self.blocks
    }

    /// The caller's tag, handed back in the completion.
    pub fn tag(&self) -> u64 {
        self.tag
    }

    /// Whether a write is durable when it completes ([`Write::fua`]).
    pub fn fua(&self) -> bool {
        self.fua
    }

    /// The buffer, if the operation has one.
    pub fn buf(&self) -> Option<&DmaBuf> {
        self.buf.as_ref()
    }

    /// Takes the buffer back (from an operation a queue refused).
    pub fn into_buf(self) -> Option<DmaBuf> {
        self.buf
    }
}

macro_rules! data_builder {
    ($(#[$doc:meta])* $name:ident, $kind:expr) => {
        $(#[$doc])*
        #[derive(Debug)]
        #[must_use = "an operation does nothing until it is built and submitted"]
        pub struct $name {
            buf: DmaBuf,
            lba: u64,
            blocks: u32,
            tag: u64,
            fua: bool,
        }

        impl $name {
            /// `blocks` logical blocks at `lba`, through the first
            /// `blocks * block_size` bytes of `buf`; tag 0.
            pub fn new(buf: DmaBuf, lba: u64, blocks: u32) -> Self {
                Self { buf, lba, blocks, tag: 0, fua: false }
            }

            /// The caller's tag, handed back in the completion.
            pub fn tag(mut self, tag: u64) -> Self {
                self.tag = tag;
                self
            }

            /// The operation.
            pub fn build(self) -> Op {
                Op {
                    kind: $kind,
                    lba: self.lba,
                    blocks: self.blocks,
                    buf: Some(self.buf),
                    tag: self.tag,
                    fua: self.fua,
                }
            }
        }
    };
}

data_builder!(
    /// Reads blocks into a buffer.
    Read,
    OpKind::Read
);
data_builder!(
    /// Writes blocks from a buffer.
    Write,
    OpKind::Write
);

impl Write {
    /// Durable when it completes, as if a [`Flush`] had followed it and
    /// completed, without the second round trip: NVMe's Force Unit Access
    /// bit under SPDK, `RWF_DSYNC` on io_uring (the kernel sets FUA on
    /// the device's write, or flushes after it where the device has no
    /// FUA, and for a file commits what the data needs of its metadata),
    /// `fdatasync` after the write under psync, nothing on a RAM disk.
    /// It covers this write only, not others completed before it.
    pub fn fua(mut self) -> Self {
        self.fua = true;
        self
    }
}

macro_rules! range_builder {
    ($(#[$doc:meta])* $name:ident, $kind:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        #[must_use = "an operation does nothing until it is built and submitted"]
        pub struct $name {
            lba: u64,
            blocks: u32,
            tag: u64,
        }

        impl $name {
            /// `blocks` logical blocks at `lba`; tag 0.
            pub fn new(lba: u64, blocks: u32) -> Self {
                Self { lba, blocks, tag: 0 }
            }

            /// The caller's tag, handed back in the completion.
            pub fn tag(mut self, tag: u64) -> Self {
                self.tag = tag;
                self
            }

            /// The operation.
            pub fn build(self) -> Op {
                Op {
                    kind: $kind,
                    lba: self.lba,
                    blocks: self.blocks,
                    buf: None,
                    tag: self.tag,
                    fua: false,
                }
            }
        }
    };
}

range_builder!(
    /// Zeroes blocks without moving data.
    WriteZeroes,
    OpKind::WriteZeroes
);
range_builder!(
    /// Deallocates (trims) blocks.
    Deallocate,
    OpKind::Deallocate
);

/// Makes every write completed before it durable.
#[derive(Debug, Clone, Copy, Default)]
#[must_use = "an operation does nothing until it is built and submitted"]
pub struct Flush {
    tag: u64,
}

impl Flush {
    /// A flush with tag 0.
    pub fn new() -> Self {
        Self { tag: 0 }
    }

    /// The caller's tag, handed back in the completion.
    pub fn tag(mut self, tag: u64) -> Self {
        self.tag = tag;
        self
    }

    /// The operation.
    pub fn build(self) -> Op {
        Op {
            kind: OpKind::Flush,
            lba: 0,
            blocks: 0,
            buf: None,
            tag: self.tag,
            fua: false,
        }
    }
}
