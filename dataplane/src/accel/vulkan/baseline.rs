//! The peer of the round-trip comparison: a bare `ash` loop.
// ash calls are unsafe; one per block, each with its SAFETY line.

use super::{QueueConfig, SyncMode, VulkanQueue, vk_err};
use ash::vk;

/// A bare `ash` loop over the same device objects a queue makes: one
/// command buffer recorded once (the CRC32C kernel over one 4-byte item),
/// submitted with a fence and waited for, with nothing of the queue's
/// bookkeeping. The peer of the round-trip comparison in
/// `benches/benches/accel.rs`; not for applications.
#[doc(hidden)]
pub struct BareLoop {
    q: VulkanQueue<Vec<Vec<u8>>>,
}

impl std::fmt::Debug for BareLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BareLoop")
            .field("device", &self.q.info.device)
            .finish()
    }
}

#[doc(hidden)]
impl BareLoop {
    /// Opens the default Vulkan device with one fence-tracked slot.
    pub fn open() -> crate::Result<BareLoop> {
        let config = QueueConfig {
            backend: crate::accel::BackendChoice::Named(crate::accel::BackendKind::Vulkan),
            depth: 1,
            max_items: 1,
            staging_bytes: 4096,
            sync: SyncMode::Fence,
            ..QueueConfig::default()
        };
        let mut q = VulkanQueue::open(&config)?;
        let slot = &q.slots[0];
        let (ctrl, staging) = (slot.ctrl_off, slot.staging_off);
        if let Some(map) = q.gpu.map.as_mut() {
            map.write(ctrl, &[1u32, 0, 0, 4]);
            map.write(staging, &[0u32]);
        }
        q.record(0, crate::accel::Kernel::Crc32c.into(), 1)?;
        Ok(BareLoop { q })
    }

    /// The device's name.
    pub fn device(&self) -> &str {
        &self.q.info.device
    }

    fn reap(&self, block: bool) -> crate::Result<()> {
        let d = &self.q.gpu.device;
        let fence = [self.q.slots[0].fence];
        if block {
            // SAFETY: a fence of this device with a pending submission.
            unsafe { d.wait_for_fences(&fence, true, u64::MAX) }
                .map_err(vk_err("vkWaitForFences"))?;
        } else {
            // SAFETY: as above.
            while !unsafe { d.get_fence_status(fence[0]) }.map_err(vk_err("vkGetFenceStatus"))? {
                std::hint::spin_loop();
            }
        }
        // SAFETY: the fence is signalled and no submission uses it.
        unsafe { d.reset_fences(&fence) }.map_err(vk_err("vkResetFences"))
    }

    /// Submits the recorded dispatch and spins on the fence.
    pub fn dispatch_poll(&mut self) -> crate::Result<()> {
        self.q.queue_submit(0, 0).map_err(crate::Error::Accel)?;
        self.reap(false)
    }

    /// Submits the recorded dispatch and blocks in `vkWaitForFences`.
    pub fn dispatch_wait(&mut self) -> crate::Result<()> {
        self.q.queue_submit(0, 0).map_err(crate::Error::Accel)?;
        self.reap(true)
    }

    /// Submits no command buffer, only the fence, and spins on it.
    pub fn empty_poll(&mut self) -> crate::Result<()> {
        let submit = [vk::SubmitInfo::default()];
        // SAFETY: an empty submission signalling an unsignalled fence; the
        // queue is used by this thread only.
        unsafe {
            self.q
                .gpu
                .device
                .queue_submit(self.q.gpu.queue, &submit, self.q.slots[0].fence)
        }
        .map_err(vk_err("vkQueueSubmit"))?;
        self.reap(false)
    }
}
