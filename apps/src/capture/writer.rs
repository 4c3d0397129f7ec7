//! The writer stage: packets appended as pcapng blocks into chunk-sized
//! DMA buffers, each chunk written with one operation on a
//! `block::Queue`, segments rotated by size, and an index line per
//! finished segment.
//!
//! A chunk is written whole, or, when flushed early (the flush interval,
//! a rotation, the stop), up to the next storage block; the bytes up to
//! that boundary are a padding block that pcapng readers skip. So every
//! write is block-aligned for `O_DIRECT` and SPDK, and a segment is a
//! valid pcapng file up to its last completed write.
//!
//! Segments are files (`STEM-00000.pcapng`, ...; each truncated to what
//! was written when it closes, the oldest deleted beyond `--segments`) or
//! regions of one block device or RAM disk, reused in turn. A segment
//! closes when its writes have completed and a flush has made them
//! durable; only then is its index line written.

use super::pcapng;
use anyhow::{Context, bail};
use dataplane::block::{self, Completions, DeviceConfig, OpKind, QueueConfig, op};
use hugepages::mempool::{DmaBuf, MEMPOOL_MAX_ALIGN, Mempool};
use serde::Serialize;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

/// Where segments go.
#[derive(Debug, Clone)]
pub enum Output {
    /// One file per segment: `STEM-NNNNN.pcapng`.
    Files {
        /// The path without the `-NNNNN.pcapng` suffix.
        stem: PathBuf,
    },
    /// Regions of one block device, file or RAM disk (`/dev/loop0`,
    /// `ram:1GiB`), `segment_bytes` each, reused in turn.
    Device {
        /// The target, as `block::open` takes it.
        target: String,
    },
}

impl Output {
    /// A block device (`/dev/...`) or RAM disk (`ram:...`) is written in
    /// regions; anything else names files.
    pub fn parse(out: &str) -> Output {
        if out.starts_with("/dev/") || out.starts_with("ram:") {
            Output::Device {
                target: out.to_string(),
            }
        } else {
            let stem = out.strip_suffix(".pcapng").unwrap_or(out);
            Output::Files { stem: stem.into() }
        }
    }
}

/// How the writer is set up.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Where segments go.
    pub output: Output,
    /// Storage backend.
    pub storage: block::BackendChoice,
    /// Bytes per segment.
    pub segment_bytes: u64,
    /// Segments kept: files beyond it are deleted, oldest first (0: all);
    /// on a device, the regions reused in turn (0: as many as fit).
    pub segments: usize,
    /// Bytes per write.
    pub chunk_bytes: usize,
    /// Writes in flight.
    pub depth: usize,
    /// Interface names, one IDB each, in port order.
    pub interfaces: Vec<String>,
    /// Bytes kept of each packet.
    pub snaplen: u32,
    /// Where index lines go (JSON, one per closed segment).
    pub index: Option<PathBuf>,
}

/// One closed segment, as its index line says.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentIndex {
    /// Its number, from 0.
    pub segment: u64,
    /// The file, or the device.
    pub path: String,
    /// Its first byte on the device (0 for files).
    pub offset: u64,
    /// Bytes written, padding included.
    pub bytes: u64,
    /// Packets in it.
    pub packets: u64,
    /// The first and last packets' time stamps (ns since the epoch; 0
    /// when empty).
    pub first_ns: u64,
    /// See `first_ns`.
    pub last_ns: u64,
}

/// What the writer counted.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WriterReport {
    /// Packets whose write completed.
    pub written: u64,
    /// Bytes written to storage, blocks and padding included.
    pub bytes: u64,
    /// Packets dropped because every chunk buffer was in flight: the
    /// storage did not keep up.
    pub dropped_no_buffer: u64,
    /// Packets lost in a write that failed.
    pub dropped_write_error: u64,
    /// Packets longer than a whole write (`--chunk`) with their block:
    /// cut them with `--snaplen`.
    pub dropped_too_big: u64,
    /// Write operations completed.
    pub writes: u64,
    /// The storage backend.
    pub backend: &'static str,
    /// Closed segments, oldest first.
    pub segments: Vec<SegmentIndex>,
    /// Each write's latency, submission to completion seen, in ns (a
    /// handle: copies of the report read the same counters).
    #[serde(skip)]
    pub latency: dataplane::metrics::LatencyHistogram,
}

impl WriterReport {
    /// The counters without the segment list (cheap to copy while
    /// running).
    pub fn counters(&self) -> WriterReport {
        WriterReport {
            written: self.written,
            bytes: self.bytes,
            dropped_no_buffer: self.dropped_no_buffer,
            dropped_write_error: self.dropped_write_error,
            dropped_too_big: self.dropped_too_big,
            writes: self.writes,
            backend: self.backend,
            segments: Vec::new(),
            latency: self.latency.clone(),
        }
    }
}

/// A segment being written, or closing.
struct Segment {
    index: SegmentIndex,
    queue: Box<dyn block::Queue>,
    /// Device files: the path, truncated at close.
    file: Option<PathBuf>,
    base_lba: u64,
    /// Bytes the segment may hold.
    capacity: u64,
    /// Bytes handed to writes so far.
    offset: u64,
    /// The flush submitted, once closing.
    flushing: bool,
    flushed: bool,
    /// Packets and bytes in writes not yet completed.
    pending_packets: u64,
}

/// A chunk being filled.
struct Chunk {
    buf: DmaBuf,
    used: usize,
    /// The bytes this chunk may take (less than the buffer at a segment's
    /// end).
    limit: usize,
    packets: u64,
    /// TSC when its first packet went in.
    opened: u64,
}

/// The writer stage's state (on one lcore).
pub struct Writer {
    cfg: WriterConfig,
    device: Option<Arc<dyn block::Device>>,
    bufs: Mempool,
    block_size: usize,
    current: Option<Segment>,
    closing: Vec<Segment>,
    chunk: Option<Chunk>,
    next_segment: u64,
    /// Segments that fit on the device (device output).
    regions: u64,
    done: Completions,
    report: WriterReport,
    header_len: usize,
    /// Submission times (TSC) of the writes in flight, by slot: a write
    /// takes slot `n % len` for its `n`th submission, and no more writes
    /// than slots (one per chunk buffer) are ever in flight.
    stamps: Vec<u64>,
    submitted: u64,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("next_segment", &self.next_segment)
            .field("report", &self.report)
            .finish_non_exhaustive()
    }
}

/// Packets of a write in its tag's high half; in the low half, the slot
/// of its submission time (16 bits) and its blocks (16 bits).
fn tag(packets: u64, slot: u16, blocks: u16) -> u64 {
    (packets << 32) | (u64::from(slot) << 16) | u64::from(blocks)
}

impl Writer {
    /// Opens the first segment.
    ///
    /// # Errors
    /// A bad configuration or a target that does not open.
    pub fn open(cfg: WriterConfig) -> anyhow::Result<Writer> {
        if cfg.chunk_bytes == 0 || cfg.depth == 0 {
            bail!("the chunk size and the write depth must be above 0");
        }
        // A write's tag holds its slot and its blocks in 16 bits each.
        if cfg.depth >= u16::MAX as usize {
            bail!("a write depth of {} (at most {})", cfg.depth, u16::MAX - 1);
        }
        let header_len = pcapng::shb_len(APP)
            + cfg
                .interfaces
                .iter()
                .map(|n| pcapng::idb_len(n))
                .sum::<usize>();
        let (device, block_size, max_transfer, regions) = match &cfg.output {
            Output::Device { target } => {
                let opened = block::open(&DeviceConfig::new(target.clone()).backend(cfg.storage))
                    .with_context(|| format!("opening {target}"))?;
                let g = opened.value.geometry().clone();
                let fit = g.bytes() / cfg.segment_bytes.max(1);
                if fit == 0 {
                    bail!(
                        "{target} holds {} bytes, less than one segment of {}",
                        g.bytes(),
                        cfg.segment_bytes
                    );
                }
                let regions = if cfg.segments == 0 {
                    fit
                } else {
                    (cfg.segments as u64).min(fit)
                };
                (Some(opened.value), g.block_size, g.max_transfer, regions)
            }
            Output::Files { .. } => (None, 4096, 128 << 10, 0),
        };
        let bs = block_size as usize;
        if !cfg.segment_bytes.is_multiple_of(bs as u64) {
            bail!(
                "the segment size {} is not a multiple of the block size {bs}",
                cfg.segment_bytes
            );
        }
        let chunk_bytes = cfg
            .chunk_bytes
            .min(max_transfer as usize)
            .next_multiple_of(bs);
        if chunk_bytes / bs > usize::from(u16::MAX) {
            bail!(
                "a write of {chunk_bytes} bytes is {} blocks of {bs} (at most {})",
                chunk_bytes / bs,
                u16::MAX
            );
        }
        if (chunk_bytes as u64) > cfg.segment_bytes
            || header_len + pcapng::MIN_PADDING > chunk_bytes
        {
            bail!(
                "a segment of {} bytes does not hold a write of {chunk_bytes} (and its headers)",
                cfg.segment_bytes
            );
        }
        let bufs = Mempool::new(hugepages::mempool::MempoolConfig {
            align: bs.clamp(hugepages::mempool::MEMPOOL_DEFAULT_ALIGN, MEMPOOL_MAX_ALIGN),
            cache_size: 0,
            ..hugepages::mempool::MempoolConfig::new("capture-chunks", cfg.depth + 1, chunk_bytes)
        })
        .context("the chunk buffer pool")?;
        let mut w = Writer {
            cfg: WriterConfig { chunk_bytes, ..cfg },
            device,
            bufs,
            block_size: bs,
            current: None,
            closing: Vec::new(),
            chunk: None,
            next_segment: 0,
            regions,
            done: Completions::new(),
            report: WriterReport::default(),
            header_len,
            stamps: vec![0; cfg.depth + 1],
            submitted: 0,
        };
        w.start_segment()?;
        Ok(w)
    }

    /// The storage backend's name.
    pub fn backend(&self) -> &'static str {
        self.report.backend
    }

    fn start_segment(&mut self) -> anyhow::Result<()> {
        let k = self.next_segment;
        self.next_segment += 1;
        // Room for every buffer's write (`depth` in flight and the one
        // being filled) and the closing flush: a submission never finds
        // the queue full.
        let qcfg = QueueConfig::new(self.cfg.depth + 2).buffers(&self.bufs);
        let (queue, file, base_lba, path) = match (&self.cfg.output, &self.device) {
            (Output::Device { target }, Some(dev)) => {
                let region = k % self.regions;
                let lba = region * self.cfg.segment_bytes / self.block_size as u64;
                (dev.queue(&qcfg)?, None, lba, target.clone())
            }
            (Output::Files { stem }, _) => {
                let path = PathBuf::from(format!("{}-{k:05}.pcapng", stem.display()));
                // A new file each time: nothing of an earlier run is left
                // beyond what this one writes.
                match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(e).with_context(|| format!("removing {}", path.display()));
                    }
                    _ => {}
                }
                let opened = block::open(
                    &DeviceConfig::new(path.display().to_string())
                        .backend(self.cfg.storage)
                        .create_size(self.cfg.segment_bytes)
                        .block_size(self.block_size as u32),
                )
                .with_context(|| format!("creating {}", path.display()))?;
                let q = opened.value.queue(&qcfg)?;
                (q, Some(path.clone()), 0, path.display().to_string())
            }
            (Output::Device { .. }, None) => bail!("no device"),
        };
        self.report.backend = queue.backend();
        self.current = Some(Segment {
            index: SegmentIndex {
                segment: k,
                path,
                offset: base_lba * self.block_size as u64,
                bytes: 0,
                packets: 0,
                first_ns: 0,
                last_ns: 0,
            },
            queue,
            file,
            base_lba,
            capacity: self.cfg.segment_bytes,
            offset: 0,
            flushing: false,
            flushed: false,
            pending_packets: 0,
        });
        Ok(())
    }

    /// A new chunk for the current segment, its headers written when it is
    /// the segment's first; `None` when every buffer is in flight.
    fn new_chunk(&mut self, now: u64) -> Option<Chunk> {
        let seg = self.current.as_ref()?;
        let mut buf = self.bufs.alloc_buf()?;
        let room = (seg.capacity - seg.offset) as usize;
        let limit = room.min(self.cfg.chunk_bytes);
        let mut used = 0;
        if seg.offset == 0 {
            used += pcapng::shb(&mut buf[..], APP);
            for name in &self.cfg.interfaces {
                used += pcapng::idb(&mut buf[used..], name, self.cfg.snaplen);
            }
        }
        Some(Chunk {
            buf,
            used,
            limit,
            packets: 0,
            opened: now,
        })
    }

    /// Appends one packet; `false` when it was dropped (counted).
    pub fn append(&mut self, p: &pcapng::Packet<'_>, now: u64) -> anyhow::Result<bool> {
        let need = pcapng::epb_len(p.data.len(), p.comment.len());
        // At most: the chunk is full and goes out, the segment is full and
        // rotates, the new chunk takes it.
        for _ in 0..3 {
            if self.chunk.is_none() {
                match self.new_chunk(now) {
                    Some(c) => self.chunk = Some(c),
                    None => {
                        self.report.dropped_no_buffer += 1;
                        return Ok(false);
                    }
                }
            }
            let Some(c) = self.chunk.as_mut() else {
                unreachable!("a chunk was just made")
            };
            // It fits if it fills the chunk exactly or leaves room for a
            // padding block.
            let end = c.used + need;
            if end == c.limit || end + pcapng::MIN_PADDING <= c.limit {
                pcapng::epb(&mut c.buf[c.used..], p);
                c.used = end;
                c.packets += 1;
                if let Some(seg) = self.current.as_mut() {
                    if seg.index.first_ns == 0 {
                        seg.index.first_ns = p.timestamp_ns;
                    }
                    seg.index.last_ns = p.timestamp_ns;
                }
                if c.used == c.limit {
                    self.submit_chunk(false)?;
                }
                return Ok(true);
            }
            if c.packets == 0 && c.used <= self.header_len {
                if c.limit < self.cfg.chunk_bytes && c.used == 0 {
                    // The segment's tail is too short for this packet:
                    // the segment ends here (its buffer goes home unused).
                    self.chunk = None;
                    self.rotate()?;
                    continue;
                }
                // Bigger than a whole chunk: it cannot be written.
                self.report.dropped_too_big += 1;
                return Ok(false);
            }
            // Full: out with it (rotating if the segment is full), then try
            // a new chunk.
            self.submit_chunk(false)?;
        }
        self.report.dropped_no_buffer += 1;
        Ok(false)
    }

    /// Writes the current chunk: whole when `early` is false, else up to
    /// the next block boundary. Rotates when the segment is full.
    fn submit_chunk(&mut self, early: bool) -> anyhow::Result<()> {
        let Some(mut c) = self.chunk.take() else {
            return Ok(());
        };
        let bs = self.block_size;
        let len = if early || c.used < c.limit {
            let mut pad = pcapng::padding_for(c.used, bs);
            if c.used + pad > c.limit {
                pad = c.limit - c.used;
            }
            if pad > 0 {
                pcapng::padding(&mut c.buf[c.used..], pad);
            }
            c.used + pad
        } else {
            c.used
        };
        debug_assert!(len.is_multiple_of(bs));
        let Some(seg) = self.current.as_mut() else {
            bail!("no segment open");
        };
        let blocks = (len / bs) as u16;
        let lba = seg.base_lba + seg.offset / bs as u64;
        let slot = (self.submitted % self.stamps.len() as u64) as u16;
        self.submitted += 1;
        self.stamps[usize::from(slot)] = dataplane::time::rdtsc();
        let op = op::Write::new(c.buf, lba, u32::from(blocks))
            .tag(tag(c.packets, slot, blocks))
            .build();
        if let Err(e) = seg.queue.submit(op) {
            // The queue's depth covers every buffer, so it is never full;
            // a refusal is a bug or a device rule broken.
            self.report.dropped_write_error += c.packets;
            bail!("a write was refused: {e:?}");
        }
        seg.offset += len as u64;
        seg.index.bytes = seg.offset;
        seg.index.packets += c.packets;
        seg.pending_packets += c.packets;
        // Room for another chunk with at least one small packet?
        let room = seg.capacity - seg.offset;
        if room < (bs + pcapng::MIN_PADDING + pcapng::epb_len(64, 0)) as u64 {
            self.rotate()?;
        }
        Ok(())
    }

    /// Closes the current segment and opens the next.
    fn rotate(&mut self) -> anyhow::Result<()> {
        self.close_current();
        self.start_segment()
    }

    fn close_current(&mut self) {
        if let Some(seg) = self.current.take() {
            self.closing.push(seg);
        }
    }

    /// Writes out a chunk that has waited `flush_ticks`, and reaps
    /// completions; returns the work done.
    pub fn poll(&mut self, now: u64, flush_ticks: u64) -> anyhow::Result<usize> {
        let mut work = 0;
        if let Some(c) = &self.chunk
            && c.packets > 0
            && now.wrapping_sub(c.opened) >= flush_ticks
        {
            self.submit_chunk(true)?;
            work += 1;
        }
        if let Some(seg) = self.current.as_mut() {
            work += reap(seg, &mut self.done, &mut self.report, &self.stamps);
        }
        let mut i = 0;
        while i < self.closing.len() {
            let seg = &mut self.closing[i];
            work += reap(seg, &mut self.done, &mut self.report, &self.stamps);
            if seg.queue.in_flight() == 0 && !seg.flushing {
                seg.flushing = true;
                if seg
                    .queue
                    .submit(op::Flush::new().tag(u64::MAX).build())
                    .is_err()
                {
                    seg.flushed = true;
                }
                work += 1;
            }
            if seg.flushed && seg.queue.in_flight() == 0 {
                let seg = self.closing.remove(i);
                self.finish(seg)?;
                work += 1;
            } else {
                i += 1;
            }
        }
        Ok(work)
    }

    /// Flushes what is held and closes the current segment (at stop).
    pub fn close(&mut self) -> anyhow::Result<()> {
        if self.chunk.as_ref().is_some_and(|c| c.packets > 0) {
            self.submit_chunk(true)?;
        }
        // An empty chunk of a segment with nothing in it: drop it.
        self.chunk = None;
        match self.current.take() {
            // Nothing written (it was opened by the last rotation): not a
            // segment at all, and a file of it is no pcapng file.
            Some(seg) if seg.offset == 0 => {
                drop(seg.queue);
                if let Some(path) = &seg.file {
                    std::fs::remove_file(path)
                        .with_context(|| format!("removing the empty {}", path.display()))?;
                }
            }
            Some(seg) => self.closing.push(seg),
            None => {}
        }
        Ok(())
    }

    /// Writes, flushes and segments still in progress.
    pub fn in_progress(&self) -> usize {
        self.closing.len()
            + self.current.as_ref().map_or(0, |s| s.queue.in_flight())
            + usize::from(self.chunk.as_ref().is_some_and(|c| c.packets > 0))
    }

    /// The counters.
    pub fn report(&self) -> &WriterReport {
        &self.report
    }

    /// A closed segment's file trimmed, its index line written, and the
    /// oldest file deleted beyond the limit.
    fn finish(&mut self, seg: Segment) -> anyhow::Result<()> {
        drop(seg.queue);
        if let Some(path) = &seg.file {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .with_context(|| format!("opening {} to trim it", path.display()))?;
            f.set_len(seg.offset)
                .with_context(|| format!("trimming {}", path.display()))?;
            f.sync_all()?;
            let keep = self.cfg.segments as u64;
            if keep > 0
                && seg.index.segment >= keep
                && let Output::Files { stem } = &self.cfg.output
            {
                let old = format!("{}-{:05}.pcapng", stem.display(), seg.index.segment - keep);
                let _ = std::fs::remove_file(old);
            }
        }
        if let Some(index) = &self.cfg.index {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(index)
                .with_context(|| format!("opening the index {}", index.display()))?;
            writeln!(f, "{}", serde_json::to_string(&seg.index)?)?;
        }
        self.report.segments.push(seg.index);
        Ok(())
    }
}

/// Reaps a segment's completions into the counters.
fn reap(
    seg: &mut Segment,
    done: &mut Completions,
    report: &mut WriterReport,
    stamps: &[u64],
) -> usize {
    let n = seg.queue.poll(done);
    let now = if n == 0 { 0 } else { dataplane::time::rdtsc() };
    for c in done.drain() {
        if c.tag == u64::MAX && c.kind == OpKind::Flush {
            seg.flushed = true;
            if !c.status.is_ok() {
                tracing::error!(segment = seg.index.segment, "flush failed: {:?}", c.status);
            }
            continue;
        }
        let packets = c.tag >> 32;
        let slot = ((c.tag >> 16) & 0xffff) as usize;
        let blocks = c.tag & 0xffff;
        seg.pending_packets -= packets;
        if let Some(&at) = stamps.get(slot) {
            let ns = dataplane::time::tsc_to_duration(now.saturating_sub(at)).as_nanos();
            report.latency.record(u64::try_from(ns).unwrap_or(u64::MAX));
        }
        if c.status.is_ok() {
            report.written += packets;
            report.bytes += blocks * seg.queue.geometry().block_size as u64;
            report.writes += 1;
        } else {
            tracing::error!(segment = seg.index.segment, "write failed: {:?}", c.status);
            report.dropped_write_error += packets;
            seg.index.packets -= packets;
        }
        // The chunk buffer goes home with `c`.
    }
    n
}

/// The application named in each section header.
pub const APP: &str = "dataplane dp-capture";

#[cfg(test)]
mod tests {
    use super::*;

    /// Every frame size from 600 to 1600 bytes into one-write segments of
    /// 512-byte blocks: whatever a segment's tail is left with, the
    /// segment ends there and the next takes the frame; nothing is dropped
    /// and every segment closes with packets in it.
    #[test]
    fn a_segment_tail_too_short_for_the_frame_ends_the_segment() {
        for size in (600..1600).step_by(7) {
            let mut w = Writer::open(WriterConfig {
                output: Output::Device {
                    target: "ram:1MiB".into(),
                },
                storage: block::BackendChoice::Auto,
                segment_bytes: 64 << 10,
                segments: 0,
                chunk_bytes: 64 << 10,
                depth: 2,
                interfaces: vec!["test0".into()],
                snaplen: 65535,
                index: None,
            })
            .unwrap();
            let frame = vec![0x5a; size];
            let p = pcapng::Packet {
                interface: 0,
                timestamp_ns: 1,
                data: &frame,
                original_len: size as u32,
                comment: b"crc32c=0x00000000 signatures=0x0",
            };
            for _ in 0..600 {
                assert!(
                    w.append(&p, 0).unwrap(),
                    "frame of {size} dropped: {:?}",
                    w.report()
                );
                w.poll(0, u64::MAX).unwrap();
            }
            w.close().unwrap();
            for _ in 0..100 {
                if w.in_progress() == 0 {
                    break;
                }
                w.poll(0, u64::MAX).unwrap();
            }
            let r = w.report();
            assert_eq!(r.written, 600, "{size}: {r:?}");
            assert_eq!(r.latency.count(), r.writes, "{size}: every write timed");
            assert!(r.segments.len() >= 4, "{size}");
            assert!(r.segments.iter().all(|s| s.packets > 0), "{size}: {r:?}");
        }
    }
}
