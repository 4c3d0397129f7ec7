//! [`Mbuf`]: one packet buffer, owned, with `rte_mbuf`'s accessors and
//! bulk frees.

use super::*;

/// A packet buffer, owned: one pointer to its header. Dropping it returns
/// it to its pool (through the lcore cache when the thread holds a slot).
/// `Send` (a buffer moves between lcores through rings), not `Clone`.
///
/// Transparent over its header pointer: an array of `Mbuf`s is an array of
/// `struct rte_mbuf *`, so the DPDK backend's drivers read and write a
/// burst in place.
#[repr(transparent)]
pub struct Mbuf {
    pub(crate) hdr: NonNull<MbufHeader>,
}

// SAFETY: an Mbuf owns its buffer exclusively; freeing it is thread-safe
// (native pools are; foreign ops are required to be).
unsafe impl Send for Mbuf {}
// SAFETY: `&Mbuf` only reads the header and the data.
unsafe impl Sync for Mbuf {}

impl fmt::Debug for Mbuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mbuf")
            .field("hdr", &self.hdr)
            .field("native", &self.is_native())
            .field("len", &self.len())
            .field("headroom", &self.headroom())
            .field("tailroom", &self.tailroom())
            .field("port", &self.port())
            .finish()
    }
}

impl Mbuf {
    /// Takes ownership of an mbuf given by a backend.
    ///
    /// # Safety
    ///
    /// `hdr` points to an initialised mbuf that the caller owns and hands
    /// over: `buf_addr` is valid for `buf_len` initialised bytes,
    /// `data_off + data_len <= buf_len`, and either it is native
    /// (`priv_size` is [`NATIVE_PRIV_SIZE_TAG`], from an [`Mbuf::into_raw`]
    /// of a pool that exists) or it is a foreign mbuf that the ops given to
    /// [`register_foreign_ops`] can free (and they are registered before it
    /// is dropped).
    pub unsafe fn from_raw(hdr: NonNull<MbufHeader>) -> Mbuf {
        Mbuf { hdr }
    }

    /// Gives up ownership without freeing: the caller now owns the mbuf
    /// (and frees it by [`Mbuf::from_raw`] and drop, or a backend's own way).
    pub fn into_raw(self) -> NonNull<MbufHeader> {
        ManuallyDrop::new(self).hdr
    }

    /// The header's address.
    pub fn as_ptr(&self) -> NonNull<MbufHeader> {
        self.hdr
    }

    /// The header, read-only.
    pub fn header(&self) -> &MbufHeader {
        // SAFETY: an Mbuf owns a valid, initialised header (from_raw's
        // contract, or a native pool's initialisation).
        unsafe { self.hdr.as_ref() }
    }

    fn header_mut(&mut self) -> &mut MbufHeader {
        // SAFETY: as in `header`, and `&mut self` makes it exclusive.
        unsafe { self.hdr.as_mut() }
    }

    /// Whether the mbuf comes from a native [`MbufPool`] (not DPDK).
    pub fn is_native(&self) -> bool {
        self.header().priv_size == NATIVE_PRIV_SIZE_TAG
    }

    /// The native pool, for a native mbuf.
    fn native_pool(&self) -> Option<&PoolCore> {
        if !self.is_native() {
            return None;
        }
        let core = self.header().pool.cast::<PoolCore>().cast_const();
        // SAFETY: a native header's `pool` is its PoolCore, which is never
        // freed while one of its objects is out (mempool, "Dropping the pool").
        Some(unsafe { &*core })
    }

    /// The packet data: `len()` bytes after the headroom.
    pub fn data(&self) -> &[u8] {
        let h = self.header();
        let start = h.buf_addr.wrapping_add(h.data_off.into());
        // SAFETY: data_off + data_len <= buf_len within the initialised
        // buffer (the type's invariant, kept by every mutator), owned by us.
        unsafe { std::slice::from_raw_parts(start, h.data_len.into()) }
    }

    /// The packet data, writable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        let h = self.header();
        let (start, len) = (h.buf_addr.wrapping_add(h.data_off.into()), h.data_len);
        // SAFETY: as in `data`, and `&mut self` makes it exclusive.
        unsafe { std::slice::from_raw_parts_mut(start, len.into()) }
    }

    /// Bytes of data (`data_len`).
    pub fn len(&self) -> usize {
        self.header().data_len.into()
    }

    /// Whether there is no data.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes in the packet (`pkt_len`; equal to `len()` for one segment).
    pub fn pkt_len(&self) -> usize {
        self.header().pkt_len as usize
    }

    /// Free bytes before the data.
    pub fn headroom(&self) -> usize {
        self.header().data_off.into()
    }

    /// Free bytes after the data.
    pub fn tailroom(&self) -> usize {
        let h = self.header();
        usize::from(h.buf_len) - usize::from(h.data_off) - usize::from(h.data_len)
    }

    /// Bytes of buffer: headroom, data and tailroom.
    pub fn buf_len(&self) -> usize {
        self.header().buf_len.into()
    }

    /// The IOVA of the first data byte.
    pub fn data_iova(&self) -> Iova {
        let h = self.header();
        Iova(h.buf_iova + u64::from(h.data_off))
    }

    /// The input port.
    pub fn port(&self) -> u16 {
        self.header().port
    }

    /// Sets the input port.
    pub fn set_port(&mut self, port: u16) {
        self.header_mut().port = port;
    }

    /// The RSS hash (`hash.rss`).
    pub fn rss_hash(&self) -> u32 {
        self.header().hash[0]
    }

    /// Sets the RSS hash.
    pub fn set_rss_hash(&mut self, hash: u32) {
        self.header_mut().hash[0] = hash;
    }

    /// The offload flags.
    pub fn ol_flags(&self) -> u64 {
        self.header().ol_flags
    }

    /// Sets the offload flags.
    pub fn set_ol_flags(&mut self, flags: u64) {
        self.header_mut().ol_flags = flags;
    }

    /// The header lengths a transmit offload reads: `tx_offload`'s
    /// `l2_len` (7 bits), `l3_len` (9 bits) and `l4_len` (8 bits), in
    /// bytes; the rest of the word (TSO, outer headers) is cleared.
    /// Lengths past their bits are cut to them.
    pub fn set_tx_header_lens(&mut self, l2: usize, l3: usize, l4: usize) {
        let word = (l2 as u64 & 0x7f) | ((l3 as u64 & 0x1ff) << 7) | ((l4 as u64 & 0xff) << 16);
        self.header_mut().tx_offload = word;
    }

    /// `tx_offload`'s `(l2_len, l3_len, l4_len)`.
    pub fn tx_header_lens(&self) -> (usize, usize, usize) {
        let w = self.header().tx_offload;
        (
            (w & 0x7f) as usize,
            ((w >> 7) & 0x1ff) as usize,
            ((w >> 16) & 0xff) as usize,
        )
    }

    /// Takes `other`'s packet metadata: offload flags (all but whether
    /// this buffer is external, which stays this mbuf's own), packet
    /// type, VLAN tags, hash, input port and tx offload lengths. For a
    /// copy of a packet that must go out as the original would (a frame
    /// moved into another pool's mbuf, a duplicate).
    pub fn copy_metadata_from(&mut self, other: &Mbuf) {
        let o = other.header();
        let (flags, ptype, tci, outer, hash, port, tx) = (
            o.ol_flags,
            o.packet_type,
            o.vlan_tci,
            o.vlan_tci_outer,
            o.hash,
            o.port,
            o.tx_offload,
        );
        let h = self.header_mut();
        h.ol_flags = (flags & !MBUF_F_EXTERNAL) | (h.ol_flags & MBUF_F_EXTERNAL);
        h.packet_type = ptype;
        h.vlan_tci = tci;
        h.vlan_tci_outer = outer;
        h.hash = hash;
        h.port = port;
        h.tx_offload = tx;
    }

    /// The packet type.
    pub fn packet_type(&self) -> u32 {
        self.header().packet_type
    }

    /// Sets the packet type.
    pub fn set_packet_type(&mut self, ptype: u32) {
        self.header_mut().packet_type = ptype;
    }

    /// The VLAN TCI.
    pub fn vlan_tci(&self) -> u16 {
        self.header().vlan_tci
    }

    /// Sets the VLAN TCI.
    pub fn set_vlan_tci(&mut self, tci: u16) {
        self.header_mut().vlan_tci = tci;
    }

    /// Resets the mbuf to empty with the default headroom, as
    /// `rte_pktmbuf_reset` does (the RSS hash and private area are kept).
    pub fn reset(&mut self) {
        let h = self.header_mut();
        h.next = ptr::null_mut();
        h.pkt_len = 0;
        h.tx_offload = 0;
        h.vlan_tci = 0;
        h.vlan_tci_outer = 0;
        h.nb_segs = 1;
        h.port = MBUF_PORT_INVALID;
        h.ol_flags &= MBUF_F_EXTERNAL;
        h.packet_type = 0;
        h.data_off = h.buf_len.min(PKTMBUF_HEADROOM as u16);
        h.data_len = 0;
    }

    /// The private area between the header and the buffer.
    pub fn priv_area(&self) -> &[u8] {
        let len = self.priv_len();
        let start = self
            .hdr
            .as_ptr()
            .cast::<u8>()
            .wrapping_add(MBUF_HEADER_SIZE);
        // SAFETY: the private area follows the header in the same object,
        // initialised (native: zeroed region; foreign: from_raw's
        // contract), and owned with the mbuf.
        unsafe { std::slice::from_raw_parts(start, len) }
    }

    /// The private area, writable.
    pub fn priv_area_mut(&mut self) -> &mut [u8] {
        let len = self.priv_len();
        let start = self
            .hdr
            .as_ptr()
            .cast::<u8>()
            .wrapping_add(MBUF_HEADER_SIZE);
        // SAFETY: as in `priv_area`, and `&mut self` makes it exclusive.
        unsafe { std::slice::from_raw_parts_mut(start, len) }
    }

    fn priv_len(&self) -> usize {
        match self.native_pool() {
            Some(core) => core.mbuf.map_or(0, |i| i.priv_size.into()),
            None => self.header().priv_size.into(),
        }
    }

    /// Extends the data by `n` bytes at the front, into the headroom, and
    /// returns them (`rte_pktmbuf_prepend`).
    ///
    /// # Errors
    ///
    /// [`MbufError::NoHeadroom`] when `n` exceeds the headroom.
    pub fn prepend(&mut self, n: usize) -> Result<&mut [u8], MbufError> {
        let headroom = self.headroom();
        if n > headroom {
            return Err(MbufError::NoHeadroom {
                requested: n,
                available: headroom,
            });
        }
        // n <= data_off < 2^16, and data_len + n <= buf_len < 2^16.
        let n16 = n as u16;
        let h = self.header_mut();
        h.data_off -= n16;
        h.data_len += n16;
        h.pkt_len = h.pkt_len.wrapping_add(n16.into());
        Ok(&mut self.data_mut()[..n])
    }

    /// Extends the data by `n` bytes at the end, into the tailroom, and
    /// returns them (`rte_pktmbuf_append`).
    ///
    /// # Errors
    ///
    /// [`MbufError::NoTailroom`] when `n` exceeds the tailroom.
    pub fn append(&mut self, n: usize) -> Result<&mut [u8], MbufError> {
        let tailroom = self.tailroom();
        if n > tailroom {
            return Err(MbufError::NoTailroom {
                requested: n,
                available: tailroom,
            });
        }
        let n16 = n as u16;
        let h = self.header_mut();
        h.data_len += n16;
        h.pkt_len = h.pkt_len.wrapping_add(n16.into());
        let len = self.len();
        Ok(&mut self.data_mut()[len - n..])
    }

    /// Removes `n` bytes from the front of the data (`rte_pktmbuf_adj`).
    ///
    /// # Errors
    ///
    /// [`MbufError::TooShort`] when `n` exceeds the data length.
    pub fn adj(&mut self, n: usize) -> Result<(), MbufError> {
        let len = self.len();
        if n > len {
            return Err(MbufError::TooShort { requested: n, len });
        }
        let n16 = n as u16;
        let h = self.header_mut();
        h.data_off += n16;
        h.data_len -= n16;
        h.pkt_len = h.pkt_len.wrapping_sub(n16.into());
        Ok(())
    }

    /// Removes `n` bytes from the end of the data (`rte_pktmbuf_trim`).
    ///
    /// # Errors
    ///
    /// [`MbufError::TooShort`] when `n` exceeds the data length.
    pub fn trim(&mut self, n: usize) -> Result<(), MbufError> {
        let len = self.len();
        if n > len {
            return Err(MbufError::TooShort { requested: n, len });
        }
        let n16 = n as u16;
        let h = self.header_mut();
        h.data_len -= n16;
        h.pkt_len = h.pkt_len.wrapping_sub(n16.into());
        Ok(())
    }

    /// Sets the data length (and the packet length) to `len`, keeping the
    /// headroom: for a buffer a device or `read` filled in place.
    ///
    /// # Errors
    ///
    /// [`MbufError::ExceedsBuffer`] when `len` does not fit after the headroom.
    pub fn set_len(&mut self, len: usize) -> Result<(), MbufError> {
        let max = self.buf_len() - self.headroom();
        if len > max {
            return Err(MbufError::ExceedsBuffer {
                requested: len,
                max,
            });
        }
        let h = self.header_mut();
        h.data_len = len as u16;
        h.pkt_len = len as u32;
        Ok(())
    }

    /// Places the data `offset` bytes into the buffer, `len` bytes long
    /// (`data_off` and `data_len` at once): for a buffer a device filled at
    /// an offset of its choosing (an AF_XDP frame lands after the kernel's
    /// 256-byte XDP headroom, not after ours).
    ///
    /// # Errors
    ///
    /// [`MbufError::ExceedsBuffer`] when `offset + len` is past the buffer;
    /// nothing is changed.
    pub fn set_data(&mut self, offset: usize, len: usize) -> Result<(), MbufError> {
        let buf = self.buf_len();
        let Some(max) = buf.checked_sub(offset).filter(|&m| len <= m) else {
            return Err(MbufError::ExceedsBuffer {
                requested: offset.saturating_add(len),
                max: buf,
            });
        };
        debug_assert!(len <= max);
        let h = self.header_mut();
        // Both fit in u16: offset + len <= buf_len, a u16.
        h.data_off = offset as u16;
        h.data_len = len as u16;
        h.pkt_len = len as u32;
        Ok(())
    }

    /// Frees mbufs in bulk, as `rte_pktmbuf_free_bulk`: consecutive mbufs
    /// of the same native pool go back with one put, consecutive foreign
    /// ones with one `free_bulk` call.
    pub fn free_bulk(mbufs: impl IntoIterator<Item = Mbuf>) {
        let mut batch = Batch {
            hdrs: [NonNull::dangling(); FREE_PENDING],
            n: 0,
            pool: None,
        };
        for m in mbufs {
            let pool = m.native_pool().map(ptr::from_ref);
            if batch.n == FREE_PENDING || (batch.n > 0 && batch.pool != Some(pool)) {
                batch.flush();
            }
            batch.pool = Some(pool);
            batch.hdrs[batch.n] = m.into_raw();
            batch.n += 1;
        }
        batch.flush();
    }
}

/// Pending frees of `Mbuf::free_bulk`, all from one pool (`Some(Some(core))`)
/// or all foreign (`Some(None)`).
struct Batch {
    pub(crate) hdrs: [NonNull<MbufHeader>; FREE_PENDING],
    pub(crate) n: usize,
    pub(crate) pool: Option<Option<*const PoolCore>>,
}

impl Batch {
    fn flush(&mut self) {
        let n = std::mem::replace(&mut self.n, 0);
        if n == 0 {
            return;
        }
        let hdrs = &self.hdrs[..n];
        match self.pool {
            Some(Some(core)) => {
                // SAFETY: `core` is the live pool of these native mbufs
                // (never freed while they are out).
                let core = unsafe { &*core };
                let objs = ptr::from_ref(hdrs) as *const [*mut u8];
                // SAFETY: NonNull<MbufHeader> is a transparent non-null
                // `*const MbufHeader`, laid out as any thin pointer.
                let objs = unsafe { &*objs };
                // SAFETY: each pointer is an mbuf of this pool (a header is
                // its object's start), owned by the batch (taken with
                // into_raw) and returned once.
                unsafe { core.put_bulk(objs) };
            }
            _ => free_foreign(hdrs),
        }
    }
}

/// Frees foreign mbufs through the registered ops. Without ops, a foreign
/// mbuf exists through a broken `from_raw` contract: debug builds stop
/// here; release builds leak the mbufs rather than guess.
fn free_foreign(hdrs: &[NonNull<MbufHeader>]) {
    match FOREIGN_OPS.get() {
        Some(ops) => {
            // SAFETY: from_raw's contract: these are foreign mbufs the
            // registered ops can free, owned by us and not used again.
            unsafe { (ops.free_bulk)(hdrs) }
        }
        None => {
            debug_assert!(
                false,
                "a foreign mbuf was dropped but no ForeignMbufOps are registered"
            );
            tracing::error!(
                count = hdrs.len(),
                "foreign mbufs dropped with no ForeignMbufOps registered: leaked"
            );
        }
    }
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        match self.native_pool() {
            Some(core) => {
                let obj = self.hdr.as_ptr().cast::<u8>();
                // SAFETY: a native mbuf's header is the start of an object of
                // `core`, owned by this Mbuf and returned once, here.
                unsafe { core.put_bulk(&[obj]) }
            }
            None => match FOREIGN_OPS.get() {
                Some(ops) => {
                    // SAFETY: from_raw's contract: a foreign mbuf the ops can
                    // free, owned by us and not used again.
                    unsafe { (ops.free)(self.hdr) }
                }
                None => free_foreign(&[self.hdr]),
            },
        }
    }
}
