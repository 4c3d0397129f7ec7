//! What comes back: completions with their buffer, tag and status, and the
//! error of a refused submission, which hands the operation back.

use super::geometry::Invalid;
use super::op::{Op, OpKind};
use crate::ring::Batch;
use hugepages::mempool::DmaBuf;
use serde::Serialize;
use std::fmt;

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Status {
    /// Done, every byte.
    Success,
    /// Fewer bytes moved than asked (a file shorter than its geometry).
    Short {
        /// Bytes moved.
        bytes: u32,
    },
    /// The kernel answered with this `errno`.
    Os(i32),
    /// The NVMe controller answered with this status (type and code).
    Nvme {
        /// Status code type.
        sct: u8,
        /// Status code.
        sc: u8,
    },
    /// The transport to the controller failed (the queue pair is no
    /// longer usable).
    Transport,
}

impl Status {
    /// Whether the operation succeeded in full.
    pub fn is_ok(self) -> bool {
        self == Status::Success
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Status::Success => f.write_str("success"),
            Status::Short { bytes } => write!(f, "short transfer of {bytes} bytes"),
            Status::Os(errno) => write!(f, "{}", std::io::Error::from_raw_os_error(errno)),
            Status::Nvme { sct, sc } => write!(f, "NVMe status type {sct:#x} code {sc:#x}"),
            Status::Transport => f.write_str("transport failure"),
        }
    }
}

/// One finished operation: its buffer back, its tag, how it ended.
#[derive(Debug)]
pub struct Completion {
    /// The caller's tag from the operation.
    pub tag: u64,
    /// What the operation was.
    pub kind: OpKind,
    /// How it ended.
    pub status: Status,
    /// The operation's buffer, returned (reads: filled with the data).
    pub buf: Option<DmaBuf>,
}

/// The most completions one [`poll`](super::Queue::poll) hands back; a
/// queue deeper than this is reaped over several calls.
pub const MAX_COMPLETIONS: usize = 256;

/// A burst of completions: [`Batch`] of [`MAX_COMPLETIONS`], filled by
/// [`Queue::poll`](super::Queue::poll) up to its spare room.
pub type Completions = Batch<Completion, MAX_COMPLETIONS>;

/// Moves finished operations of a backend that completes them in
/// `submit` (psync, the RAM disk) into `out`, up to its spare room,
/// counting them and their errors; returns how many moved.
pub(crate) fn hand_over(
    done: &mut std::collections::VecDeque<Completion>,
    out: &mut Completions,
    stats: &mut super::QueueStats,
) -> usize {
    let mut n = 0;
    while out.spare() > 0 {
        let Some(c) = done.pop_front() else {
            break;
        };
        stats.completed += 1;
        if !c.status.is_ok() {
            stats.errors += 1;
        }
        if let Err(c) = out.push(c) {
            // Unreachable: room was checked; keep it rather than lose it.
            done.push_front(c);
            break;
        }
        n += 1;
    }
    n
}

/// Why a queue did not take an operation. Either way the operation, with
/// its buffer, comes back to the caller and nothing was submitted.
#[derive(Debug)]
#[non_exhaustive]
pub enum SubmitError {
    /// The queue is at its depth; poll for completions and retry.
    Full(Op),
    /// The operation breaks a rule of the device.
    Invalid {
        /// The operation, handed back.
        op: Op,
        /// Which rule.
        why: Invalid,
    },
}

impl SubmitError {
    /// The operation, handed back.
    pub fn into_op(self) -> Op {
        match self {
            SubmitError::Full(op) | SubmitError::Invalid { op, .. } => op,
        }
    }

    /// The operation, by reference.
    pub fn op(&self) -> &Op {
        match self {
            SubmitError::Full(op) | SubmitError::Invalid { op, .. } => op,
        }
    }

    /// The rule broken, for [`SubmitError::Invalid`].
    pub fn invalid(&self) -> Option<Invalid> {
        match self {
            SubmitError::Invalid { why, .. } => Some(*why),
            SubmitError::Full(_) => None,
        }
    }
}

impl fmt::Display for SubmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitError::Full(op) => write!(f, "queue full: {} not submitted", op.kind()),
            SubmitError::Invalid { op, why } => {
                write!(f, "{} refused, nothing submitted: {why}", op.kind())
            }
        }
    }
}

impl std::error::Error for SubmitError {}
