//! A shard's write-ahead log on a [`dataplane::block::Queue`]:
//! the commands that changed its keyspace, appended as a byte stream cut
//! into blocks, committed in groups, and read back at the start.
//!
//! **Format.** Every block starts with a 32-byte header: magic
//! `DPKVLOG1`, the block's sequence number (from 0, one per block), the
//! payload bytes used, the epoch (one more at every open than the last
//! block read back), and a CRC32C over the header and those bytes. A
//! block of an older epoch after a newer one is a stale block of a group
//! a crash cut short, and ends the log. The
//! payloads, in sequence order, form one stream of records; a record is a
//! little-endian `u32` length and the command as a RESP multibulk, with
//! relative times made absolute (`SET .. EX` becomes `PXAT`, `EXPIRE`
//! becomes `PEXPIREAT`), so that replaying it gives the same state. Keys
//! evicted under `maxmemory` are logged as `DEL`s.
//!
//! **Group commit.** Records appended during a pass wait in memory; at
//! the end of the pass they go out as one group of writes of whole blocks
//! (the last one padded), made durable one of two ways ([`Commit`]):
//!
//! - **FUA** (the default): each write is durable when it completes
//!   ([`op::Write::fua`]: NVMe's Force Unit Access, `RWF_DSYNC` on
//!   io_uring), so a group is durable once its writes have completed, one
//!   device round trip. Two groups are in flight at once, and a group's
//!   replies go once it and every group before it are durable, so what is
//!   acknowledged is always a prefix of the log (which is what replay
//!   reads back).
//! - **Flush**: once every write of the group has completed, a flush, so
//!   that the device's cache holds none of it (a flush covers the writes
//!   completed before it, not those in flight): two round trips in
//!   series. The next group's writes start once the previous group's
//!   have completed, while its flush is in flight, so a group's flush
//!   also covers every group before it.
//!
//! When a group is durable, the replies waiting on its records may go.
//! Meanwhile the next one gathers: the slower the device, the larger the
//! groups. A block is never written twice: each group starts a fresh one.
//!
//! **Replay** reads blocks from the start until one does not check (bad
//! magic, sequence or CRC: the end of what was written, or a write torn by
//! a crash) and hands back the whole records before it. A record cut by
//! that end, or beyond it, was never acknowledged: its reply waited for
//! its group and every group before it.
//!
//! A failed write or flush, or a log that is full, makes the log refuse
//! everything after: the shard answers writes with an error and keeps
//! serving reads (as Redis stops accepting writes when it cannot persist).

use dataplane::block::{self, Completions, Device, DeviceConfig, Queue, QueueConfig, op};
use hugepages::mempool::Mempool;
use std::collections::VecDeque;
use std::sync::Arc;

const MAGIC: &[u8; 8] = b"DPKVLOG1";
const HEADER: usize = 32;
/// Bytes per write operation (and per buffer).
const CHUNK: usize = 256 * 1024;
/// Buffers per log: the most bytes one group writes is this many chunks.
const BUFFERS: usize = 32;

const TAG_WRITE: u64 = 1;
const TAG_FLUSH: u64 = 2;
const TAG_READ: u64 = 3;

/// How a group of the log's writes is made durable (see the
/// [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Commit {
    /// Each write durable on completion (FUA): one round trip a group.
    #[default]
    Fua,
    /// The writes, then a flush: two round trips a group.
    Flush,
}

/// A log's counters.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct LogStats {
    /// Records appended.
    pub records: u64,
    /// Groups committed.
    pub groups: u64,
    /// Blocks written.
    pub blocks: u64,
    /// Bytes of records written.
    pub bytes: u64,
}

#[derive(Debug)]
struct Group {
    /// Its number, in the tags of its operations.
    id: u64,
    /// The last ticket the group makes durable.
    last: u64,
    writes_left: usize,
}

/// Groups in flight at once (with flushes: one writing, one flushing).
const GROUPS: usize = 2;

/// One shard's log; see the [module docs](self).
pub struct Log {
    dev: Arc<dyn Device>,
    q: Option<Box<dyn Queue>>,
    pool: Mempool,
    commit: Commit,
    block: usize,
    blocks: u64,
    next_lba: u64,
    next_seq: u64,
    epoch: u64,
    /// Record bytes not yet in a group.
    stream: Vec<u8>,
    /// `(end offset in stream, ticket)` of the records in `stream`.
    ends: VecDeque<(usize, u64)>,
    appended: u64,
    durable: u64,
    groups: VecDeque<Group>,
    next_group: u64,
    failed: Option<String>,
    done: Completions,
    stats: LogStats,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("backend", &self.dev.backend())
            .field("next_lba", &self.next_lba)
            .field("durable", &self.durable)
            .finish_non_exhaustive()
    }
}

fn crc(header: &[u8], payload: &[u8]) -> u32 {
    let mut h = [0u8; HEADER];
    h.copy_from_slice(&header[..HEADER]);
    h[28..32].fill(0);
    crc32c::crc32c_append(crc32c::crc32c(&h), payload)
}

/// What [`Log::open`] found.
#[derive(Debug)]
pub struct Replayed {
    /// The log, positioned after the last valid block.
    pub log: Log,
    /// The records read back, in order (each a RESP multibulk).
    pub records: Vec<Vec<u8>>,
    /// The backend that opened the file.
    pub backend: String,
}

impl Log {
    /// Opens (creating it at `size` bytes if needed) the log at `path`,
    /// reads back its records, and leaves it ready to append after them.
    /// Reading uses a queue of the calling thread's, dropped before
    /// returning: the appending lcore makes its own at its first pass.
    ///
    /// # Errors
    ///
    /// The device cannot be opened, or a read fails.
    pub fn open(
        path: &str,
        size: u64,
        backend: &str,
        commit: Commit,
    ) -> dataplane::Result<Replayed> {
        let cfg = DeviceConfig::new(path).create_size(size).backend(
            backend.parse::<block::BackendChoice>().map_err(|e| {
                dataplane::Error::Config(format!("--durable-backend {backend}: {e}"))
            })?,
        );
        let opened = block::open(&cfg)?;
        let dev = opened.value;
        let g = dev.geometry().clone();
        let block = g.block_size as usize;
        if block <= HEADER || !CHUNK.is_multiple_of(block) {
            return Err(dataplane::Error::Config(format!(
                "{path}: block size {block} does not suit the log"
            )));
        }
        let pool = g.buffer_pool("kv-log", BUFFERS, CHUNK)?;
        let mut log = Log {
            dev: dev.clone(),
            q: None,
            pool,
            commit,
            block,
            blocks: g.blocks,
            next_lba: 0,
            next_seq: 0,
            epoch: 0,
            stream: Vec::new(),
            ends: VecDeque::new(),
            appended: 0,
            durable: 0,
            groups: VecDeque::new(),
            next_group: 0,
            failed: None,
            done: Completions::new(),
            stats: LogStats::default(),
        };
        let records = log.replay()?;
        Ok(Replayed {
            log,
            records,
            backend: dev.backend().to_owned(),
        })
    }

    fn replay(&mut self) -> dataplane::Result<Vec<Vec<u8>>> {
        let mut q = self.dev.queue(&QueueConfig::new(4).buffers(&self.pool))?;
        let per_chunk = (CHUNK / self.block) as u64;
        let mut stream = Vec::new();
        let mut lba = 0u64;
        'chunks: while lba < self.blocks {
            let n = per_chunk.min(self.blocks - lba) as u32;
            let buf = self
                .pool
                .alloc_buf()
                .ok_or_else(|| dataplane::Error::Config("log: no buffer to read into".into()))?;
            q.submit(op::Read::new(buf, lba, n).tag(TAG_READ).build())
                .map_err(|e| dataplane::Error::Config(format!("log read refused: {e}")))?;
            let mut done = Completions::new();
            while done.is_empty() {
                q.wait(&mut done, std::time::Duration::from_millis(100));
            }
            let Some(c) = done.pop_front() else {
                break;
            };
            if !c.status.is_ok() {
                return Err(dataplane::Error::Config(format!(
                    "log read at block {lba}: {}",
                    c.status
                )));
            }
            let Some(buf) = c.buf else {
                break;
            };
            for b in 0..n as usize {
                let blk = &buf[b * self.block..(b + 1) * self.block];
                let used = u32::from_le_bytes([blk[16], blk[17], blk[18], blk[19]]) as usize;
                let seq = u64::from_le_bytes(blk[8..16].try_into().unwrap_or_default());
                let sum = u32::from_le_bytes([blk[28], blk[29], blk[30], blk[31]]);
                let epoch = u64::from_le_bytes(blk[20..28].try_into().unwrap_or_default());
                if &blk[..8] != MAGIC
                    || seq != self.next_seq
                    || epoch < self.epoch
                    || used > self.block - HEADER
                    || crc(blk, &blk[HEADER..HEADER + used]) != sum
                {
                    break 'chunks;
                }
                stream.extend_from_slice(&blk[HEADER..HEADER + used]);
                self.epoch = epoch;
                self.next_seq += 1;
                self.next_lba += 1;
            }
            lba += u64::from(n);
        }
        drop(q);
        self.epoch += 1;
        let mut records = Vec::new();
        let mut at = 0;
        while at + 4 <= stream.len() {
            let len =
                u32::from_le_bytes([stream[at], stream[at + 1], stream[at + 2], stream[at + 3]])
                    as usize;
            if at + 4 + len > stream.len() {
                break;
            }
            records.push(stream[at + 4..at + 4 + len].to_vec());
            at += 4 + len;
        }
        Ok(records)
    }

    /// Numbers the next record `after + 1` (a new generation continues
    /// its predecessor's tickets).
    pub fn continue_tickets(&mut self, after: u64) {
        self.appended = after;
        self.durable = after;
    }

    /// The last ticket appended.
    pub fn appended(&self) -> u64 {
        self.appended
    }

    /// The share of the file written, 0 to 1.
    pub fn used(&self) -> f64 {
        self.next_lba as f64 / self.blocks.max(1) as f64
    }

    /// Why the log refuses writes, if it does.
    pub fn failed(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// The last ticket on stable storage.
    pub fn durable(&self) -> u64 {
        self.durable
    }

    /// The counters.
    pub fn stats(&self) -> LogStats {
        self.stats
    }

    /// The block backend.
    pub fn backend(&self) -> &'static str {
        self.dev.backend()
    }

    /// Appends a record (a RESP multibulk of `args`); its ticket, durable
    /// once [`Self::durable`] reaches it.
    pub fn append<'a>(&mut self, args: impl ExactSizeIterator<Item = &'a [u8]>) -> u64 {
        let start = self.stream.len();
        self.stream.extend_from_slice(&[0; 4]);
        let mut n = itoa::Buffer::new();
        self.stream.push(b'*');
        self.stream
            .extend_from_slice(n.format(args.len()).as_bytes());
        self.stream.extend_from_slice(b"\r\n");
        for a in args {
            self.stream.push(b'$');
            self.stream.extend_from_slice(n.format(a.len()).as_bytes());
            self.stream.extend_from_slice(b"\r\n");
            self.stream.extend_from_slice(a);
            self.stream.extend_from_slice(b"\r\n");
        }
        let len = (self.stream.len() - start - 4) as u32;
        self.stream[start..start + 4].copy_from_slice(&len.to_le_bytes());
        self.appended += 1;
        self.stats.records += 1;
        self.ends.push_back((self.stream.len(), self.appended));
        self.appended
    }

    fn fail(&mut self, why: String) {
        tracing::error!(error = %why, "dp-kv: the durable log failed; writes are refused");
        if self.failed.is_none() {
            self.failed = Some(why);
        }
    }

    /// Reaps completions and starts the next group; returns whether
    /// anything happened. Call once per pass.
    pub fn pass(&mut self) -> usize {
        if self.q.is_none() {
            match self
                .dev
                .queue(&QueueConfig::new(BUFFERS + 2).buffers(&self.pool))
            {
                Ok(q) => self.q = Some(q),
                Err(e) => {
                    self.fail(format!("opening the log's queue: {e}"));
                    return 0;
                }
            }
        }
        let mut work = self.reap();
        // With flushes, a new group's writes start once the last group's
        // have completed (so that its flush covers them too).
        let may_start = self.groups.len() < GROUPS
            && (self.commit == Commit::Fua
                || self.groups.back().is_none_or(|g| g.writes_left == 0));
        if may_start && !self.stream.is_empty() && self.failed.is_none() {
            work += self.start_group();
        }
        work
    }

    fn reap(&mut self) -> usize {
        let Some(q) = self.q.as_mut() else {
            return 0;
        };
        if q.in_flight() == 0 {
            return 0;
        }
        let n = q.poll(&mut self.done);
        let mut flush = Vec::new();
        let mut errors = Vec::new();
        for c in self.done.drain() {
            if !c.status.is_ok() {
                errors.push(format!("{:?} failed: {}", c.kind, c.status));
            }
            let (id, kind) = (c.tag >> 2, c.tag & 3);
            match kind {
                TAG_WRITE => {
                    if let Some(g) = self.groups.iter_mut().find(|g| g.id == id) {
                        g.writes_left = g.writes_left.saturating_sub(1);
                        if g.writes_left == 0 && self.commit == Commit::Flush {
                            flush.push(id);
                        }
                    }
                }
                TAG_FLUSH => {
                    // This flush covers its group and every one before.
                    let mut last = None;
                    while self.groups.front().is_some_and(|g| g.id <= id) {
                        last = self.groups.pop_front().map(|g| g.last);
                        self.stats.groups += 1;
                    }
                    if let Some(last) = last
                        && errors.is_empty()
                        && self.failed.is_none()
                    {
                        self.durable = self.durable.max(last);
                    }
                }
                _ => {}
            }
        }
        for e in errors {
            self.fail(e);
        }
        if self.commit == Commit::Fua {
            // Durable as written: the groups in log order whose writes
            // have all completed.
            while self.groups.front().is_some_and(|g| g.writes_left == 0) {
                let last = self.groups.pop_front().map(|g| g.last);
                self.stats.groups += 1;
                if let Some(last) = last
                    && self.failed.is_none()
                {
                    self.durable = self.durable.max(last);
                }
            }
        }
        for id in flush {
            if self.failed.is_some() {
                break;
            }
            let Some(q) = self.q.as_mut() else {
                break;
            };
            if let Err(e) = q.submit(op::Flush::new().tag(id << 2 | TAG_FLUSH).build()) {
                self.fail(format!("flush refused: {e}"));
            }
        }
        n
    }

    /// Writes the stream gathered so far (up to the buffers there are) as
    /// one group.
    fn start_group(&mut self) -> usize {
        let payload = self.block - HEADER;
        let per_chunk = CHUNK / self.block;
        let mut taken = 0;
        let mut writes = 0;
        while taken < self.stream.len() {
            let need = (self.stream.len() - taken).div_ceil(payload).min(per_chunk);
            if self.next_lba + need as u64 > self.blocks {
                self.fail(format!(
                    "the log is full ({} blocks of {} bytes)",
                    self.blocks, self.block
                ));
                break;
            }
            let Some(mut buf) = self.pool.alloc_buf() else {
                break;
            };
            for b in 0..need {
                let blk = &mut buf[b * self.block..(b + 1) * self.block];
                let n = payload.min(self.stream.len() - taken);
                blk.fill(0);
                blk[..8].copy_from_slice(MAGIC);
                blk[8..16].copy_from_slice(&self.next_seq.to_le_bytes());
                blk[16..20].copy_from_slice(&(n as u32).to_le_bytes());
                blk[20..28].copy_from_slice(&self.epoch.to_le_bytes());
                blk[HEADER..HEADER + n].copy_from_slice(&self.stream[taken..taken + n]);
                let sum = crc(blk, &blk[HEADER..HEADER + n]);
                blk[28..32].copy_from_slice(&sum.to_le_bytes());
                taken += n;
                self.next_seq += 1;
            }
            let Some(q) = self.q.as_mut() else {
                break;
            };
            let w = op::Write::new(buf, self.next_lba, need as u32)
                .tag(self.next_group << 2 | TAG_WRITE);
            let w = match self.commit {
                Commit::Fua => w.fua(),
                Commit::Flush => w,
            }
            .build();
            if let Err(e) = q.submit(w) {
                self.fail(format!("write refused: {e}"));
                break;
            }
            self.next_lba += need as u64;
            self.stats.blocks += need as u64;
            writes += 1;
        }
        if writes == 0 || self.failed.is_some() {
            return 0;
        }
        // The records wholly in what was taken; the rest of the stream
        // (a record cut at the end) goes in the next group.
        let mut last = self.durable;
        while let Some(&(end, t)) = self.ends.front() {
            if end > taken {
                break;
            }
            last = t;
            self.ends.pop_front();
        }
        for e in &mut self.ends {
            e.0 -= taken;
        }
        self.stats.bytes += taken as u64;
        self.stream.drain(..taken);
        self.groups.push_back(Group {
            id: self.next_group,
            last,
            writes_left: writes,
        });
        self.next_group += 1;
        writes
    }

    /// Whether anything is still to be written or is in flight.
    pub fn busy(&self) -> bool {
        !self.groups.is_empty() || (!self.stream.is_empty() && self.failed.is_none())
    }
}
