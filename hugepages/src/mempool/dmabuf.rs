//! [`DmaBuf`]: one object of a [`Mempool`], owned, for the storage layer.

use super::*;

/// An object of a [`Mempool`], owned: derefs to its `elt_size` bytes, knows
/// its IOVA, and returns to the pool on drop. For the storage layer (NVMe,
/// io_uring): the buffer must outlive any I/O it is given to, which the
/// submitting API's `unsafe` contract states.
pub struct DmaBuf {
    pub(super) pool: Mempool,
    pub(super) ptr: NonNull<u8>,
}

// SAFETY: a DmaBuf owns its object exclusively (like a Box<[u8]>), and the
// pool handle is Send.
unsafe impl Send for DmaBuf {}
// SAFETY: `&DmaBuf` only reads the bytes, as `&Box<[u8]>` would.
unsafe impl Sync for DmaBuf {}

impl DmaBuf {
    /// The IOVA of the first byte: what a device is given.
    pub fn iova(&self) -> Iova {
        // A DmaBuf's pointer is always an object of its pool, which has an
        // IOVA; the fallback is never taken.
        self.pool
            .iova_of(self.ptr.as_ptr())
            .unwrap_or(Iova(self.ptr.as_ptr().addr() as u64))
    }

    /// The first byte.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// The first byte, for writing (by the CPU or a device).
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The pool the buffer came from.
    pub fn pool(&self) -> &Mempool {
        &self.pool
    }
}

impl Deref for DmaBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: the object is `elt_size` bytes, owned by this DmaBuf
        // alone, and initialised (regions start zeroed; put requires
        // initialised bytes).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.pool.elt_size()) }
    }
}

impl DerefMut for DmaBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.pool.elt_size()) }
    }
}

impl fmt::Debug for DmaBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DmaBuf")
            .field("pool", &self.pool.name())
            .field("ptr", &self.ptr)
            .field("len", &self.pool.elt_size())
            .finish()
    }
}

impl Drop for DmaBuf {
    fn drop(&mut self) {
        // SAFETY: the object came from this pool, is returned once (the
        // DmaBuf is dropped once) and nobody uses it after the DmaBuf.
        unsafe { self.pool.put(self.ptr) }
    }
}
