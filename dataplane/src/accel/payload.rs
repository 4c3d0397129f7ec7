//! What a submission works on: owned items whose bytes a device may read
//! and write while the submission is in flight.
// `Payload` is an unsafe trait (its implementors promise where the bytes
// are and that nobody else reaches them); its implementations here are the
// only unsafe code of this file.

use crate::ring::Batch;
use hugepages::mbuf::Mbuf;
use hugepages::mempool::DmaBuf;

/// Items that move into a submission and come back with its completion:
/// packets ([`Mbuf`]s), blocks ([`DmaBuf`]s) or plain heap buffers.
///
/// While a submission is in flight the device reads (and, for
/// [`Kernel::Ipv4Update`](super::Kernel::Ipv4Update), writes) the items'
/// bytes in place when they lie in memory registered with the queue (see
/// [`Queue::register`](super::Queue::register)), so the queue holds the
/// payload itself, never a borrow of it: nothing else can reach those bytes
/// until the completion hands the payload back.
///
/// # Safety
///
/// An implementation promises, for as long as the value lives, including
/// across moves of it:
///
/// - the bytes of each item are not inside the value itself (moving the
///   value does not move them), and `item(i)` and `item_mut(i)` return the
///   same address and length for the same `i` until the value is changed
///   through some other `&mut self` method;
/// - no other handle, reference or pointer reads or writes those bytes: the
///   value owns them exclusively, as a `Box<[u8]>` does;
/// - different items do not overlap.
pub unsafe trait Payload: Send {
    /// Number of items.
    fn item_count(&self) -> usize;

    /// Item `i`'s bytes. May panic when `i >= item_count()`.
    fn item(&self, i: usize) -> &[u8];

    /// Item `i`'s bytes, writable. May panic when `i >= item_count()`.
    fn item_mut(&mut self, i: usize) -> &mut [u8];
}

// SAFETY: an Mbuf owns its buffer exclusively (it is not Clone), the data
// lives in the pool's memory, not in the Mbuf handle, and two mbufs never
// share a buffer.
unsafe impl Payload for Vec<Mbuf> {
    fn item_count(&self) -> usize {
        self.len()
    }
    fn item(&self, i: usize) -> &[u8] {
        self[i].data()
    }
    fn item_mut(&mut self, i: usize) -> &mut [u8] {
        self[i].data_mut()
    }
}

// SAFETY: as for Vec<Mbuf>: the batch moves mbuf handles, not their data.
unsafe impl<const N: usize> Payload for Batch<Mbuf, N> {
    fn item_count(&self) -> usize {
        self.len()
    }
    fn item(&self, i: usize) -> &[u8] {
        self.as_slice()[i].data()
    }
    fn item_mut(&mut self, i: usize) -> &mut [u8] {
        self.as_mut_slice()[i].data_mut()
    }
}

// SAFETY: a DmaBuf owns its mempool object exclusively (like a Box<[u8]>);
// objects of a pool do not overlap.
unsafe impl Payload for Vec<DmaBuf> {
    fn item_count(&self) -> usize {
        self.len()
    }
    fn item(&self, i: usize) -> &[u8] {
        &self[i]
    }
    fn item_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self[i]
    }
}

// SAFETY: each box owns its heap bytes exclusively; moving the Vec moves
// the boxes' pointers, not the bytes.
unsafe impl Payload for Vec<Box<[u8]>> {
    fn item_count(&self) -> usize {
        self.len()
    }
    fn item(&self, i: usize) -> &[u8] {
        &self[i]
    }
    fn item_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self[i]
    }
}

// SAFETY: as for Vec<Box<[u8]>>; item_mut hands out the slice, never the
// inner Vec, so no item can be reallocated while the payload is queued.
unsafe impl Payload for Vec<Vec<u8>> {
    fn item_count(&self) -> usize {
        self.len()
    }
    fn item(&self, i: usize) -> &[u8] {
        &self[i]
    }
    fn item_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self[i]
    }
}
