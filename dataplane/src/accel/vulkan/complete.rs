//! Completing: one semaphore counter read (or fence status) per poll,
//! results copied back, payloads handed back, and every flight failed
//! when the device is lost.

use super::*;

impl<P: Payload> VulkanQueue<P> {
    /// How far the device got: every submission with a value up to the
    /// returned one is complete.
    pub(super) fn completed_value(&self) -> Result<u64, DeviceError> {
        if self.gpu.timeline {
            // SAFETY: a timeline semaphore of this device.
            unsafe {
                self.gpu
                    .device
                    .get_semaphore_counter_value(self.gpu.semaphore)
            }
            .map_err(|r| device_error("vkGetSemaphoreCounterValue", r))
        } else {
            // Fences signal in submission order on one queue (a signal
            // covers every earlier submission): walk from the oldest.
            let depth = self.slots.len() as u64;
            let mut done = self.head;
            while done < self.tail {
                let fence = self.slots[(done % depth) as usize].fence;
                // SAFETY: a fence of this device.
                match unsafe { self.gpu.device.get_fence_status(fence) } {
                    Ok(true) => done += 1,
                    Ok(false) => break,
                    Err(r) => return Err(device_error("vkGetFenceStatus", r)),
                }
            }
            Ok(done)
        }
    }

    pub(crate) fn poll(&mut self, out: &mut Vec<Completion<P>>) -> usize {
        if self.head == self.tail {
            return 0;
        }
        let done = match self.completed_value() {
            Ok(v) => v,
            Err(e) => return self.fail_all(e, out),
        };
        let depth = self.slots.len() as u64;
        let mut n = 0;
        while self.head < self.tail && self.head < done {
            let k = (self.head % depth) as usize;
            if !self.gpu.timeline {
                let fence = [self.slots[k].fence];
                // SAFETY: the fence is signalled and no submission uses it.
                if let Err(r) = unsafe { self.gpu.device.reset_fences(&fence) } {
                    return n + self.fail_all(device_error("vkResetFences", r), out);
                }
            }
            self.head += 1;
            let Some(flight) = self.slots[k].flight.take() else {
                continue;
            };
            out.push(self.finish(k, flight));
            n += 1;
        }
        n
    }

    /// Results out of the slot, staged items back into the payload.
    pub(super) fn finish(&mut self, k: usize, mut f: Flight<P>) -> Completion<P> {
        debug_assert!(f.value <= self.head);
        let slot = &self.slots[k];
        let n = f.buffers.items.item_count();
        if let Some(map) = self.gpu.map.as_ref() {
            map.read_words(slot.out_off, n * f.kernels.len(), &mut f.buffers.results);
            if f.path == BufferPath::Staged && f.kernels.as_slice().iter().any(|k| k.writes_items())
            {
                let mut off = 0;
                for i in 0..n {
                    let item = f.buffers.items.item_mut(i);
                    map.read(slot.staging_off + off, item);
                    off += align_up(item.len(), 4);
                    self.stats.bytes_staged_out += item.len() as u64;
                }
            }
        }
        self.stats.completed += 1;
        Completion {
            tag: f.tag,
            kernels: f.kernels,
            buffers: f.buffers,
            path: f.path,
            status: Ok(()),
        }
    }

    /// The device failed: wait for it to stop (a lost device returns at
    /// once), then hand every in-flight payload back with the error.
    pub(super) fn fail_all(&mut self, e: DeviceError, out: &mut Vec<Completion<P>>) -> usize {
        tracing::error!("accelerator: {e}; failing {} submissions", self.in_flight());
        self.failed = Some(e);
        let _ = self.gpu.wait_idle();
        let depth = self.slots.len() as u64;
        let mut n = 0;
        while self.head < self.tail {
            let k = (self.head % depth) as usize;
            self.head += 1;
            if let Some(f) = self.slots[k].flight.take() {
                let mut buffers = f.buffers;
                buffers.results.clear();
                self.stats.completed += 1;
                self.stats.failed += 1;
                out.push(Completion {
                    tag: f.tag,
                    kernels: f.kernels,
                    buffers,
                    path: f.path,
                    status: Err(e),
                });
                n += 1;
            }
        }
        n
    }
}
