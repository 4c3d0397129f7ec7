//! The Vulkan backend: `ash` over the loader opened at run time.
//!
//! A queue owns one logical device (shared nothing: two accelerator lcores
//! on one GPU open two devices, each with its own queue of the compute
//! family). Its submission *slots* form a ring as deep as the queue: each
//! slot has a descriptor set, a command buffer, a fence when there is no
//! timeline semaphore, and its own part of one host-visible, coherent
//! buffer (control words, results, staging area). A slot re-records its
//! command buffer only when the kernels, the workgroups or the data binding
//! change, so a steady stream of same-sized batches costs one
//! `vkQueueSubmit` and one semaphore read per poll.
// The backend: ash calls are unsafe. Each block holds one call, with its
// SAFETY line; everything else here is safe code around them.

mod baseline;
mod complete;
mod gpu;
mod instance;
mod submit;

#[doc(hidden)]
pub use baseline::BareLoop;
pub(crate) use instance::probe;
pub use instance::{
    DebugMessages, DeviceInfo, DeviceType, Discovery, HeapInfo, QueueFamilyInfo, debug_messages,
    discover,
};

use super::{
    BufferPath, Buffers, Completion, DeviceError, DeviceSelector, HostMemory, Kernels, Payload,
    QueueConfig, QueueInfo, QueueStats, Registration, Rejected, SubmitError, SyncMode, layout,
};
use crate::backend::Probe;
use ash::vk;
use gpu::{B_CTRL, B_DATA, B_OUT, B_PARAMS, Gpu, PARAMS_BYTES};
use instance::{Instance, unavailable};

/// The name of a `VkResult` code, with the code.
pub(crate) fn result_name(code: i32) -> String {
    format!("{:?} ({code})", vk::Result::from_raw(code))
}

/// Maps a failed call to the crate's error.
pub(super) fn vk_err(call: &'static str) -> impl Fn(vk::Result) -> crate::Error {
    move |r| crate::Error::Accel(device_error(call, r))
}

fn device_error(call: &'static str, r: vk::Result) -> DeviceError {
    if r == vk::Result::ERROR_DEVICE_LOST {
        DeviceError::Lost { call }
    } else {
        DeviceError::Vulkan {
            call,
            code: r.as_raw(),
        }
    }
}

/// Where a submission's data binding points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Binding {
    buffer: vk::Buffer,
    offset: usize,
    range: usize,
}

/// What a slot's command buffer was recorded for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Recorded {
    kernels: Kernels,
    data: Binding,
    workgroups: u32,
}

struct Flight<P> {
    buffers: Buffers<P>,
    kernels: Kernels,
    tag: u64,
    /// The timeline value its completion signals.
    value: u64,
    path: BufferPath,
}

struct Slot<P> {
    set: vk::DescriptorSet,
    pool: vk::CommandPool,
    cb: vk::CommandBuffer,
    fence: vk::Fence,
    ctrl_off: usize,
    out_off: usize,
    staging_off: usize,
    bound: Option<Binding>,
    recorded: Option<Recorded>,
    flight: Option<Flight<P>>,
}

pub(crate) struct VulkanQueue<P: Payload> {
    // Dropped after `drop` has waited for the device, and before `gpu`:
    // in-flight payloads go back to their owners while the imports still
    // exist, and nothing runs any more.
    slots: Vec<Slot<P>>,
    gpu: Gpu,
    info: QueueInfo,
    stats: QueueStats,
    max_items: usize,
    staging_bytes: usize,
    max_range: usize,
    /// Submissions ever made and completed: the ring positions.
    head: u64,
    tail: u64,
    failed: Option<DeviceError>,
    /// Control words of the submission being built.
    scratch: Vec<u32>,
}

fn align_up(x: usize, a: usize) -> usize {
    x.div_ceil(a) * a
}

impl<P: Payload> VulkanQueue<P> {
    pub(crate) fn open(config: &QueueConfig) -> crate::Result<Self> {
        let instance = Instance::new(config.loader.as_deref())?;
        let devices = instance::physical_devices(&instance)?;
        let usable = || devices.iter().filter(|(_, d)| d.usable.available);
        let chosen = match &config.device {
            DeviceSelector::Auto => usable().min_by_key(|(_, d)| (d.device_type.rank(), d.index)),
            DeviceSelector::Index(i) => usable().find(|(_, d)| d.index == *i),
            DeviceSelector::Pci(addr) => usable().find(|(_, d)| {
                d.pci_address
                    .as_deref()
                    .is_some_and(|a| a.eq_ignore_ascii_case(addr))
            }),
        };
        let Some((pd, dev)) = chosen.cloned() else {
            let found: Vec<String> = devices.iter().map(|(_, d)| d.summary()).collect();
            return Err(unavailable(format!(
                "no usable Vulkan device matches {:?} (found: {})",
                config.device,
                if found.is_empty() {
                    "none".to_owned()
                } else {
                    found.join("; ")
                }
            )));
        };
        let want_timeline = config.sync != SyncMode::Fence;
        if config.sync == SyncMode::Timeline && !dev.timeline_semaphores {
            return Err(unavailable(format!(
                "{} has no timeline semaphores",
                dev.name
            )));
        }
        let max_range = dev.max_storage_buffer_range as usize & !3;
        if config.staging_bytes > max_range {
            return Err(crate::Error::Config(format!(
                "staging_bytes {} exceeds {}'s maxStorageBufferRange {max_range}",
                config.staging_bytes, dev.name
            )));
        }
        let mut gpu = Gpu::new(instance, pd, dev, config.queue_index, want_timeline)?;
        let depth = config.depth;
        gpu.create_sync(depth)?;
        gpu.create_pipelines()?;
        gpu.create_slots(depth)?;

        // Layout of the host buffer: parameters, then per slot the control
        // words, the results (one word per item per kernel) and staging.
        let a = gpu.min_offset_align.max(64);
        let ctrl_bytes = (layout::CTRL_HEADER_WORDS as usize
            + layout::CTRL_ITEM_WORDS as usize * config.max_items)
            * 4;
        let out_bytes = super::MAX_KERNELS * config.max_items * 4;
        let staging = align_up(config.staging_bytes, 4);
        let slot_bytes = align_up(ctrl_bytes, a) + align_up(out_bytes, a) + align_up(staging, a);
        let params_bytes = align_up(PARAMS_BYTES, a);
        gpu.create_host_buffer(params_bytes + depth * slot_bytes)?;
        let words = config.params.words();
        if let Some(map) = gpu.map.as_mut() {
            map.write(0, &words);
        }
        let mut slots = Vec::with_capacity(depth);
        for k in 0..depth {
            let ctrl_off = params_bytes + k * slot_bytes;
            let out_off = ctrl_off + align_up(ctrl_bytes, a);
            let staging_off = out_off + align_up(out_bytes, a);
            let set = gpu.sets[k];
            let host = gpu.host_buffer();
            gpu.bind(set, B_PARAMS, host, 0, PARAMS_BYTES);
            gpu.bind(set, B_CTRL, host, ctrl_off, ctrl_bytes);
            gpu.bind(set, B_OUT, host, out_off, out_bytes);
            let staged = Binding {
                buffer: host,
                offset: staging_off,
                range: staging,
            };
            gpu.bind(set, B_DATA, host, staging_off, staging);
            slots.push(Slot {
                set,
                pool: gpu.command_pools[k],
                cb: gpu.command_buffers[k],
                fence: gpu.fences.get(k).copied().unwrap_or_default(),
                ctrl_off,
                out_off,
                staging_off,
                bound: Some(staged),
                recorded: None,
                flight: None,
            });
        }
        let dev = &gpu.info;
        let import = match dev.external_memory_host_alignment {
            Some(a) => Probe::ok(format!(
                "VK_EXT_external_memory_host, host pointers aligned to {a}: registered \
                 regions are read in place"
            )),
            None => Probe::unavailable(format!(
                "{} has no VK_EXT_external_memory_host: items are staged",
                dev.name
            )),
        };
        let info = QueueInfo {
            backend: super::BackendKind::Vulkan,
            device: format!(
                "{} ({:?}, Vulkan {}{})",
                dev.name,
                dev.device_type,
                dev.api_version,
                dev.driver
                    .as_deref()
                    .map(|d| format!(", {d}"))
                    .unwrap_or_default()
            ),
            fallback: None,
            sync: if gpu.timeline { "timeline" } else { "fence" },
            import,
            depth,
            max_items: config.max_items,
            staging_bytes: staging,
        };
        tracing::info!(device = %info.device, sync = info.sync, "accelerator queue open");
        Ok(VulkanQueue {
            slots,
            gpu,
            info,
            stats: QueueStats::default(),
            max_items: config.max_items,
            staging_bytes: staging,
            max_range,
            head: 0,
            tail: 0,
            failed: None,
            scratch: Vec::with_capacity(ctrl_bytes / 4),
        })
    }

    pub(crate) fn info(&self) -> &QueueInfo {
        &self.info
    }

    pub(crate) fn stats(&self) -> QueueStats {
        self.stats
    }

    pub(crate) fn in_flight(&self) -> usize {
        (self.tail - self.head) as usize
    }

    pub(crate) fn register(&mut self, memory: HostMemory) -> crate::Result<Vec<Registration>> {
        let mut out = Vec::new();
        let spans: Vec<(usize, usize, bool)> = memory
            .regions()
            .iter()
            .map(|r| (r.as_ptr().addr(), r.len(), r.is_hugepage_backed()))
            .collect();
        for (base, len, huge) in spans {
            let result = self.gpu.import(base, len)?;
            let (path, reason) = match result {
                Ok(()) => (
                    BufferPath::Imported,
                    format!(
                        "imported with VK_EXT_external_memory_host ({len} bytes{})",
                        if huge { ", hugepages" } else { "" }
                    ),
                ),
                Err(why) => (BufferPath::Staged, why),
            };
            tracing::info!(memory = %memory.name(), ?path, "accelerator: {reason}");
            out.push(Registration {
                memory: memory.name(),
                bytes: len,
                hugepages: huge,
                path,
                reason,
            });
        }
        self.gpu.keep(memory);
        Ok(out)
    }

    /// The import window all items of `p` lie in: (import, window start,
    /// window length), or `None` when they do not share one.
    fn window(&self, p: &P) -> Option<(usize, usize, usize)> {
        let n = p.item_count();
        let (mut lo, mut hi) = (usize::MAX, 0usize);
        for i in 0..n {
            let item = p.item(i);
            if item.is_empty() {
                continue;
            }
            let a = item.as_ptr().addr();
            lo = lo.min(a);
            hi = hi.max(a + item.len());
        }
        if lo == usize::MAX {
            // Only empty items: nothing is read, so any import will do
            // (the batch is reported in place, as its items' memory is
            // imported; staging only when nothing is).
            return self
                .gpu
                .imports
                .first()
                .map(|m| (0, 0, m.len.min(self.max_range)));
        }
        let k = self
            .gpu
            .imports
            .iter()
            .position(|m| lo >= m.base && hi <= m.base + m.len)?;
        let m = &self.gpu.imports[k];
        if m.len <= self.max_range {
            return Some((k, 0, m.len));
        }
        // Larger than one binding can show: windows of maxStorageBufferRange
        // every half of it, so that any span of up to half a range fits one.
        let half = (self.max_range / 2) & !(self.gpu.min_offset_align - 1);
        let start = (lo - m.base) / half * half;
        let range = self.max_range.min(m.len - start);
        (hi - m.base <= start + range).then_some((k, start, range))
    }
}

impl<P: Payload> Drop for VulkanQueue<P> {
    fn drop(&mut self) {
        // The device must be done with every payload before the slots
        // (and the payloads in them) drop; `Gpu::drop` then destroys the
        // objects.
        if let Err(e) = self.gpu.wait_idle() {
            tracing::warn!(
                "accelerator: waiting for the device: {}",
                result_name(e.as_raw())
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::require::{Capability, available_or_skip};

    #[test]
    fn the_messenger_counts_validation_messages() {
        let inst = match Instance::new(None) {
            Ok(inst) => inst,
            Err(e) => {
                available_or_skip(Capability::Vulkan, false, &e.to_string());
                return;
            }
        };
        let before = debug_messages().count;
        if !inst.submit_debug_message(c"a test message, not a real one") {
            available_or_skip(
                Capability::Vulkan,
                false,
                "the loader has no VK_EXT_debug_utils",
            );
            return;
        }
        let after = debug_messages();
        assert_eq!(after.count, before + 1);
        assert!(after.first.iter().any(|m| m.contains("a test message")));
    }

    #[test]
    fn results_have_names() {
        assert!(result_name(-4).contains("DEVICE_LOST"));
        let e = device_error("vkQueueSubmit", vk::Result::ERROR_DEVICE_LOST);
        assert_eq!(
            e,
            DeviceError::Lost {
                call: "vkQueueSubmit"
            }
        );
        let e = device_error("vkAllocateMemory", vk::Result::ERROR_OUT_OF_DEVICE_MEMORY);
        assert!(e.to_string().contains("vkAllocateMemory"));
        assert!(e.to_string().contains("OUT_OF_DEVICE_MEMORY"));
    }
}
