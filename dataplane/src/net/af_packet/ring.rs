//! The memory-mapped packet rings of an AF_PACKET socket, shared with the
//! kernel (Documentation/networking/packet_mmap.rst).
//!
//! The mapping is never borrowed as a Rust slice: the kernel writes it
//! concurrently. Every access goes through raw pointers inside the mapping,
//! and ownership of a block (rx) or frame (tx) moves with its status word:
//!
//! - **rx, TPACKET_V3**: the kernel fills a block, then publishes it by
//!   storing `TP_STATUS_USER` in `block_status` after a write barrier
//!   (`prb_close_block`: `smp_wmb(); BLOCK_STATUS(pbd) = status`). We load
//!   the status with Acquire, which pairs with that barrier, read the
//!   block's packets, and hand it back by storing `TP_STATUS_KERNEL` with
//!   Release, so that our reads happen before the kernel reuses it.
//! - **tx, TPACKET_V2**: a frame whose status is `TP_STATUS_AVAILABLE`
//!   (loaded with Acquire, pairing with the kernel's store when the skb
//!   built from it is freed) is ours; we write the packet and its length,
//!   then store `TP_STATUS_SEND_REQUEST` with Release so that the kernel,
//!   which reads the status before the frame (`__packet_get_status` then
//!   `smp_rmb`), sees the packet it announces.
//!
//! Offsets the kernel writes (first packet, next packet, MAC offset,
//! lengths) are checked against the block before anything is read at them.

use hugepages::mbuf::Mbuf;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicU32, Ordering};

/// `RTE_MBUF_F_RX_VLAN`: the mbuf's `vlan_tci` is valid.
const MBUF_F_RX_VLAN: u64 = 1 << 0;
/// `RTE_MBUF_F_RX_RSS_HASH`: the mbuf's RSS hash is valid.
const MBUF_F_RX_RSS_HASH: u64 = 1 << 1;

/// A shared mapping of a socket's ring (memmap2's `MmapRaw`: a raw
/// view, since the kernel writes it concurrently), unmapped on drop.
#[derive(Debug)]
pub(super) struct Mapping {
    map: memmap2::MmapRaw,
}

impl Mapping {
    /// Maps `len` bytes of the ring of `fd`, populated, and locked in RAM
    /// when RLIMIT_MEMLOCK allows (the ring works without the lock, only
    /// with the chance of a page fault on first touch).
    pub(super) fn new(fd: BorrowedFd<'_>, len: usize) -> io::Result<Mapping> {
        let map = memmap2::MmapOptions::new()
            .len(len)
            .populate()
            .map_raw(fd.as_raw_fd())?;
        if let Err(e) = map.lock() {
            tracing::debug!("AF_PACKET ring not locked in RAM: {e}");
        }
        Ok(Mapping { map })
    }

    /// A pointer `off` bytes into the mapping; `None` past its end.
    #[inline(always)]
    fn at(&self, off: usize, need: usize) -> Option<*mut u8> {
        (off.checked_add(need)? <= self.map.len()).then(|| self.map.as_mut_ptr().wrapping_add(off))
    }
}

/// Loads a status word of the ring with Acquire.
///
/// # Safety
/// `p` is a 4-byte aligned status word inside a live mapping.
#[inline(always)]
unsafe fn load_status(p: *mut u8) -> u32 {
    // SAFETY: the caller's contract; the kernel updates the word with
    // plain stores after barriers, which is what an atomic load pairs with.
    let word = unsafe { AtomicU32::from_ptr(p.cast::<u32>()) };
    word.load(Ordering::Acquire)
}

/// Stores a status word of the ring with Release.
///
/// # Safety
/// As [`load_status`].
#[inline(always)]
unsafe fn store_status(p: *mut u8, v: u32) {
    // SAFETY: the caller's contract.
    let word = unsafe { AtomicU32::from_ptr(p.cast::<u32>()) };
    word.store(v, Ordering::Release);
}

/// Integers the ring's headers are made of: valid for any bytes.
trait Field: Copy {}
impl Field for u16 {}
impl Field for u32 {}

/// Reads a header field at `p`. Volatile: the bytes are shared with the
/// kernel, so each field is read once, where the code says, and never
/// re-read or cached by the compiler. The kernel aligns every header to
/// `TPACKET_ALIGNMENT` (16), so the fields are naturally aligned; an
/// unaligned one (which would be a kernel bug) is read unaligned instead.
///
/// # Safety
/// `p..p + size_of::<T>()` is inside a live mapping and owned by us under
/// the status protocol.
#[inline(always)]
unsafe fn read<T: Field>(p: *const u8) -> T {
    let p = p.cast::<T>();
    if p.is_aligned() {
        // SAFETY: the caller's contract; aligned, and any bytes are a `T`.
        unsafe { p.read_volatile() }
    } else {
        // SAFETY: the caller's contract.
        unsafe { p.read_unaligned() }
    }
}

/// What one rx burst found besides the packets.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct RxCounts {
    /// Packets appended.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Dropped: no mbuf.
    pub no_mbuf: u64,
    /// Dropped: longer than an mbuf, or cut by the ring.
    pub oversized: u64,
    /// Blocks with offsets that do not fit (should never happen).
    pub corrupt: u64,
}

/// A receive ring: `TPACKET_V3` blocks, or `TPACKET_V2` frames.
#[derive(Debug)]
pub(super) struct RxRing {
    map: Mapping,
    /// V3: the block size; V2: the frame size.
    block_size: usize,
    /// V3: blocks; V2: frames.
    blocks: usize,
    /// Frame by frame (`TPACKET_V2`).
    v2: bool,
    /// The block being read.
    block: usize,
    /// Inside a block we own: packets left and the next one's offset.
    owned: bool,
    left: u32,
    next: usize,
}

/// The block descriptor's fields we read (`struct tpacket_block_desc` with
/// `tpacket_hdr_v1`): offsets within the block.
mod bd {
    pub const BLOCK_STATUS: usize = 8;
    pub const NUM_PKTS: usize = 12;
    pub const OFFSET_TO_FIRST_PKT: usize = 16;
    pub const SIZE: usize = 48;
}

/// `struct tpacket3_hdr` field offsets.
mod h3 {
    pub const NEXT_OFFSET: usize = 0;
    pub const SNAPLEN: usize = 12;
    pub const LEN: usize = 16;
    pub const STATUS: usize = 20;
    pub const MAC: usize = 24;
    pub const RXHASH: usize = 28;
    pub const VLAN_TCI: usize = 32;
    pub const VLAN_TPID: usize = 36;
    pub const SIZE: usize = 48;
}

const _: () = {
    use core::mem::offset_of;
    assert!(offset_of!(libc::tpacket3_hdr, tp_next_offset) == h3::NEXT_OFFSET);
    assert!(offset_of!(libc::tpacket3_hdr, tp_snaplen) == h3::SNAPLEN);
    assert!(offset_of!(libc::tpacket3_hdr, tp_len) == h3::LEN);
    assert!(offset_of!(libc::tpacket3_hdr, tp_status) == h3::STATUS);
    assert!(offset_of!(libc::tpacket3_hdr, tp_mac) == h3::MAC);
    assert!(offset_of!(libc::tpacket3_hdr, hv1) == h3::RXHASH);
    assert!(offset_of!(libc::tpacket3_hdr, hv1) + 4 == h3::VLAN_TCI);
    assert!(offset_of!(libc::tpacket3_hdr, hv1) + 8 == h3::VLAN_TPID);
    assert!(size_of::<libc::tpacket3_hdr>() == h3::SIZE);
    assert!(size_of::<libc::tpacket_block_desc>() == bd::SIZE);
    assert!(offset_of!(libc::tpacket_hdr_v1, block_status) + 8 == bd::BLOCK_STATUS);
    assert!(offset_of!(libc::tpacket_hdr_v1, num_pkts) + 8 == bd::NUM_PKTS);
    assert!(offset_of!(libc::tpacket_hdr_v1, offset_to_first_pkt) + 8 == bd::OFFSET_TO_FIRST_PKT);
};

impl RxRing {
    pub(super) fn new(map: Mapping, block_size: usize, blocks: usize) -> RxRing {
        RxRing {
            map,
            block_size,
            blocks,
            v2: false,
            block: 0,
            owned: false,
            left: 0,
            next: 0,
        }
    }

    /// A `TPACKET_V2` ring of `frames` frames of `frame_size` bytes (the
    /// blocks a multiple of the frame size, so frame `i` is at
    /// `i * frame_size`).
    pub(super) fn new_v2(map: Mapping, frame_size: usize, frames: usize) -> RxRing {
        RxRing {
            v2: true,
            ..RxRing::new(map, frame_size, frames)
        }
    }

    /// Hands the current block back to the kernel and moves to the next.
    #[inline]
    fn release(&mut self) {
        let off = self.block * self.block_size + bd::BLOCK_STATUS;
        if let Some(p) = self.map.at(off, 4) {
            // SAFETY: the status word of a block we own, in the mapping
            // (checked), 4-byte aligned (blocks are page aligned).
            unsafe { store_status(p, libc::TP_STATUS_KERNEL) };
        }
        self.owned = false;
        self.block = (self.block + 1) % self.blocks;
    }

    /// Takes the next block if the kernel has handed it over.
    #[inline]
    fn acquire(&mut self, counts: &mut RxCounts) -> bool {
        let start = self.block * self.block_size;
        let Some(desc) = self.map.at(start, bd::SIZE) else {
            return false;
        };
        // SAFETY: the status word of a block descriptor in the mapping,
        // 4-byte aligned.
        let status = unsafe { load_status(desc.wrapping_add(bd::BLOCK_STATUS)) };
        if status & libc::TP_STATUS_USER == 0 {
            return false;
        }
        // SAFETY: the block is ours after the Acquire above; the header is
        // inside it.
        let num: u32 = unsafe { read(desc.wrapping_add(bd::NUM_PKTS)) };
        // SAFETY: as above.
        let first: u32 = unsafe { read(desc.wrapping_add(bd::OFFSET_TO_FIRST_PKT)) };
        self.owned = true;
        self.left = num;
        self.next = first as usize;
        if num > 0 && (self.next < bd::SIZE || self.next >= self.block_size) {
            counts.corrupt += 1;
            self.left = 0;
        }
        true
    }

    /// Copies up to `room` packets into mbufs from `alloc`, handing each
    /// to `deliver`; releases every block it finishes.
    #[inline]
    pub(super) fn receive(
        &mut self,
        room: usize,
        mut alloc: impl FnMut() -> Option<Mbuf>,
        mut deliver: impl FnMut(Mbuf),
    ) -> RxCounts {
        if self.v2 {
            return self.receive_v2(room, alloc, deliver);
        }
        let mut c = RxCounts::default();
        let mut taken = 0;
        while taken < room {
            if !self.owned && !self.acquire(&mut c) {
                break;
            }
            if self.left == 0 {
                self.release();
                continue;
            }
            let block = self.block * self.block_size;
            let at = self.next;
            let Some(hdr) = self
                .map
                .at(block + at, h3::SIZE)
                .filter(|_| at + h3::SIZE <= self.block_size)
            else {
                c.corrupt += 1;
                self.release();
                continue;
            };
            // SAFETY: fields of a packet header inside a block we own,
            // checked to lie within it above (and so for the reads below).
            let next: u32 = unsafe { read(hdr.wrapping_add(h3::NEXT_OFFSET)) };
            // SAFETY: as above.
            let snaplen: u32 = unsafe { read(hdr.wrapping_add(h3::SNAPLEN)) };
            // SAFETY: as above.
            let len: u32 = unsafe { read(hdr.wrapping_add(h3::LEN)) };
            // SAFETY: as above.
            let status: u32 = unsafe { read(hdr.wrapping_add(h3::STATUS)) };
            // SAFETY: as above.
            let mac: u16 = unsafe { read(hdr.wrapping_add(h3::MAC)) };
            self.left -= 1;
            self.next = at + next as usize;
            if self.left > 0 && (next == 0 || self.next >= self.block_size) {
                c.corrupt += 1;
                self.left = 0;
            }
            let data_at = at + usize::from(mac);
            let snap = snaplen as usize;
            let Some(data) = self
                .map
                .at(block + data_at, snap)
                .filter(|_| data_at + snap <= self.block_size)
            else {
                c.corrupt += 1;
                continue;
            };
            // SAFETY: as for the fields above.
            let rxhash: u32 = unsafe { read(hdr.wrapping_add(h3::RXHASH)) };
            // SAFETY: as above.
            let tci: u32 = unsafe { read(hdr.wrapping_add(h3::VLAN_TCI)) };
            // SAFETY: as above.
            let tpid: u16 = unsafe { read(hdr.wrapping_add(h3::VLAN_TPID)) };
            taken += 1;
            if snaplen < len {
                c.oversized += 1;
                continue;
            }
            let Some(mut m) = alloc() else {
                c.no_mbuf += 1;
                continue;
            };
            let vlan = (status & libc::TP_STATUS_VLAN_VALID != 0).then(|| {
                let tpid = if status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                    tpid
                } else {
                    0x8100
                };
                (tpid, tci as u16)
            });
            if copy_frame(&mut m, data, snap, vlan).is_none() {
                c.oversized += 1;
                continue;
            }
            m.set_rss_hash(rxhash);
            let mut flags = MBUF_F_RX_RSS_HASH;
            if let Some((_, tci)) = vlan {
                m.set_vlan_tci(tci);
                flags |= MBUF_F_RX_VLAN;
            }
            m.set_ol_flags(flags);
            c.packets += 1;
            c.bytes += m.len() as u64;
            deliver(m);
        }
        // Hand a finished block back now rather than at the next call.
        if self.owned && self.left == 0 {
            self.release();
        }
        c
    }
}

impl RxRing {
    /// [`RxRing::receive`] on a `TPACKET_V2` ring: a frame whose status has
    /// `TP_STATUS_USER` (loaded with Acquire, pairing with the kernel's
    /// `smp_wmb` before it sets the status in `tpacket_rcv`) is ours; it
    /// goes back with `TP_STATUS_KERNEL` stored with Release once copied.
    #[inline]
    fn receive_v2(
        &mut self,
        room: usize,
        mut alloc: impl FnMut() -> Option<Mbuf>,
        mut deliver: impl FnMut(Mbuf),
    ) -> RxCounts {
        let mut c = RxCounts::default();
        let frame_size = self.block_size;
        let mut taken = 0;
        while taken < room {
            let at = self.block * frame_size;
            let Some(hdr) = self.map.at(at, h2rx::SIZE) else {
                c.corrupt += 1;
                break;
            };
            // SAFETY: the status word of a frame header in the mapping
            // (checked), 4-byte aligned (frames are 16-byte aligned).
            let status = unsafe { load_status(hdr) };
            if status & libc::TP_STATUS_USER == 0 {
                break;
            }
            // SAFETY: the frame is ours after the Acquire above; the header
            // lies in the mapping (checked).
            let len: u32 = unsafe { read(hdr.wrapping_add(h2rx::LEN)) };
            // SAFETY: as above.
            let snaplen: u32 = unsafe { read(hdr.wrapping_add(h2rx::SNAPLEN)) };
            // SAFETY: as above.
            let mac: u16 = unsafe { read(hdr.wrapping_add(h2rx::MAC)) };
            // SAFETY: as above.
            let tci: u16 = unsafe { read(hdr.wrapping_add(h2rx::VLAN_TCI)) };
            // SAFETY: as above.
            let tpid: u16 = unsafe { read(hdr.wrapping_add(h2rx::VLAN_TPID)) };
            taken += 1;
            let snap = snaplen as usize;
            let data_at = usize::from(mac);
            let data = self
                .map
                .at(at + data_at, snap)
                .filter(|_| data_at + snap <= frame_size);
            match data {
                None => c.corrupt += 1,
                Some(_) if snaplen < len => c.oversized += 1,
                Some(data) => {
                    if let Some(mut m) = alloc() {
                        let vlan = (status & libc::TP_STATUS_VLAN_VALID != 0).then(|| {
                            let tpid = if status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                                tpid
                            } else {
                                0x8100
                            };
                            (tpid, tci)
                        });
                        if copy_frame(&mut m, data, snap, vlan).is_some() {
                            if let Some((_, tci)) = vlan {
                                m.set_vlan_tci(tci);
                                m.set_ol_flags(MBUF_F_RX_VLAN);
                            }
                            c.packets += 1;
                            c.bytes += m.len() as u64;
                            deliver(m);
                        } else {
                            c.oversized += 1;
                        }
                    } else {
                        c.no_mbuf += 1;
                    }
                }
            }
            // SAFETY: the status word of a frame we own (checked above);
            // our reads of it are done.
            unsafe { store_status(hdr, libc::TP_STATUS_KERNEL) };
            self.block = (self.block + 1) % self.blocks;
        }
        c
    }
}

/// `struct tpacket2_hdr` field offsets, for the receive side.
mod h2rx {
    pub const LEN: usize = 4;
    pub const SNAPLEN: usize = 8;
    pub const MAC: usize = 12;
    pub const VLAN_TCI: usize = 24;
    pub const VLAN_TPID: usize = 26;
    pub const SIZE: usize = 32;
}

const _: () = {
    use core::mem::offset_of;
    assert!(offset_of!(libc::tpacket2_hdr, tp_len) == h2rx::LEN);
    assert!(offset_of!(libc::tpacket2_hdr, tp_snaplen) == h2rx::SNAPLEN);
    assert!(offset_of!(libc::tpacket2_hdr, tp_mac) == h2rx::MAC);
    assert!(offset_of!(libc::tpacket2_hdr, tp_vlan_tci) == h2rx::VLAN_TCI);
    assert!(offset_of!(libc::tpacket2_hdr, tp_vlan_tpid) == h2rx::VLAN_TPID);
    assert!(size_of::<libc::tpacket2_hdr>() == h2rx::SIZE);
};

/// Copies `len` bytes at `src` (a frame in a block we own) into `m`,
/// putting back the VLAN tag the kernel took out of it, if any, so that
/// the mbuf holds the frame as it was on the wire. `None` when it does not
/// fit.
#[inline]
fn copy_frame(m: &mut Mbuf, src: *const u8, len: usize, vlan: Option<(u16, u16)>) -> Option<()> {
    const MACS: usize = 12;
    match vlan {
        Some((tpid, tci)) if len >= MACS => {
            let dst = m.append(len + 4).ok()?;
            // SAFETY: `src..src + len` is a frame of a block we own (the
            // caller checked it against the block); `dst` is ours and as
            // long; the two cannot overlap (mapping vs mbuf).
            unsafe { std::ptr::copy_nonoverlapping(src, dst.as_mut_ptr(), MACS) };
            dst[MACS..MACS + 2].copy_from_slice(&tpid.to_be_bytes());
            dst[MACS + 2..MACS + 4].copy_from_slice(&tci.to_be_bytes());
            // SAFETY: as above, for the bytes after the MAC addresses.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    src.wrapping_add(MACS),
                    dst.as_mut_ptr().wrapping_add(MACS + 4),
                    len - MACS,
                )
            };
        }
        _ => {
            let dst = m.append(len).ok()?;
            // SAFETY: as above.
            unsafe { std::ptr::copy_nonoverlapping(src, dst.as_mut_ptr(), len) };
        }
    }
    Some(())
}

/// `struct tpacket2_hdr` field offsets.
mod h2 {
    pub const STATUS: usize = 0;
    pub const LEN: usize = 4;
    pub const SNAPLEN: usize = 8;
}

const _: () = {
    use core::mem::offset_of;
    assert!(offset_of!(libc::tpacket2_hdr, tp_status) == h2::STATUS);
    assert!(offset_of!(libc::tpacket2_hdr, tp_len) == h2::LEN);
    assert!(offset_of!(libc::tpacket2_hdr, tp_snaplen) == h2::SNAPLEN);
};

/// Where a TPACKET_V2 tx frame's data starts: `TPACKET2_HDRLEN - sizeof
/// (struct sockaddr_ll)` (packet_mmap.rst, "TX ring").
pub(super) const TX_DATA_OFFSET: usize = libc::TPACKET2_HDRLEN - size_of::<libc::sockaddr_ll>();

/// What one tx burst did.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct TxCounts {
    /// Frames queued for the kernel.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Frames the kernel refused earlier (`TP_STATUS_WRONG_FORMAT`), found
    /// while reusing their slot.
    pub refused: u64,
}

/// A TPACKET_V2 transmit ring.
#[derive(Debug)]
pub(super) struct TxRing {
    map: Mapping,
    block_size: usize,
    frame_size: usize,
    frames_per_block: usize,
    frames: usize,
    next: usize,
}

impl TxRing {
    pub(super) fn new(map: Mapping, block_size: usize, frame_size: usize, frames: usize) -> TxRing {
        TxRing {
            map,
            block_size,
            frame_size,
            frames_per_block: block_size / frame_size,
            frames,
            next: 0,
        }
    }

    /// The largest frame a slot holds.
    pub(super) fn max_frame(&self) -> usize {
        self.frame_size - TX_DATA_OFFSET
    }

    #[inline(always)]
    fn frame(&self, i: usize) -> Option<*mut u8> {
        let off = (i / self.frames_per_block) * self.block_size
            + (i % self.frames_per_block) * self.frame_size;
        self.map.at(off, self.frame_size)
    }

    /// Whether the next slot is free for us.
    #[inline]
    pub(super) fn has_room(&self, counts: &mut TxCounts) -> bool {
        let Some(f) = self.frame(self.next) else {
            return false;
        };
        // SAFETY: the status word at the start of a frame in the mapping,
        // 4-byte aligned (frames are 16-byte aligned).
        let status = unsafe { load_status(f.wrapping_add(h2::STATUS)) };
        if status == libc::TP_STATUS_WRONG_FORMAT {
            counts.refused += 1;
            return true;
        }
        status == libc::TP_STATUS_AVAILABLE
    }

    /// Copies `data` into the next slot, which [`TxRing::has_room`] said is
    /// ours, and announces it. `data.len()` is at most [`TxRing::max_frame`].
    #[inline]
    pub(super) fn queue(&mut self, data: &[u8], counts: &mut TxCounts) {
        debug_assert!(data.len() <= self.max_frame());
        let Some(f) = self.frame(self.next) else {
            return;
        };
        let len = data.len().min(self.max_frame());
        // SAFETY: the frame is ours (status AVAILABLE, loaded with Acquire
        // by `has_room`); its data area holds `max_frame()` bytes; `data` is
        // an mbuf's, which cannot overlap the mapping.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), f.wrapping_add(TX_DATA_OFFSET), len)
        };
        // SAFETY: the length fields of a frame we own.
        unsafe { f.wrapping_add(h2::LEN).cast::<u32>().write(len as u32) };
        // SAFETY: as above.
        unsafe { f.wrapping_add(h2::SNAPLEN).cast::<u32>().write(len as u32) };
        // SAFETY: the frame's status word; Release publishes the writes
        // above before the kernel can see the request.
        unsafe { store_status(f.wrapping_add(h2::STATUS), libc::TP_STATUS_SEND_REQUEST) };
        self.next = (self.next + 1) % self.frames;
        counts.packets += 1;
        counts.bytes += len as u64;
    }

    /// Frames still owned by the kernel (queued or being sent).
    pub(super) fn in_flight(&self) -> usize {
        (0..self.frames)
            .filter_map(|i| self.frame(i))
            .filter(|f| {
                // SAFETY: a frame's status word in the mapping.
                let s = unsafe { load_status(f.wrapping_add(h2::STATUS)) };
                s == libc::TP_STATUS_SEND_REQUEST || s == libc::TP_STATUS_SENDING
            })
            .count()
    }
}
