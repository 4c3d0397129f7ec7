//! Submitting: the kernels recorded into a slot's command buffer, the
//! items copied or bound in place, one queue submit signalling the
//! timeline (or the slot's fence).

use super::*;

impl<P: Payload> VulkanQueue<P> {
    pub(crate) fn submit(
        &mut self,
        kernels: Kernels,
        buffers: Buffers<P>,
        workgroups: u32,
        tag: u64,
    ) -> Result<(), Rejected<P>> {
        match self.try_submit(kernels, buffers, workgroups, tag) {
            Ok(()) => Ok(()),
            Err((reason, buffers)) => Err(Rejected { reason, buffers }),
        }
    }

    pub(super) fn try_submit(
        &mut self,
        kernels: Kernels,
        mut buffers: Buffers<P>,
        workgroups: u32,
        tag: u64,
    ) -> Result<(), (SubmitError, Buffers<P>)> {
        if let Some(e) = self.failed {
            return Err((e.into(), buffers));
        }
        let depth = self.slots.len();
        if self.in_flight() >= depth {
            return Err((SubmitError::Full(depth), buffers));
        }
        let items = &buffers.items;
        let n = items.item_count();
        if let Err(e) = crate::accel::check_submission(
            n,
            workgroups,
            self.max_items,
            self.gpu.info.max_workgroups,
        ) {
            return Err((e, buffers));
        }
        let k = (self.tail % depth as u64) as usize;

        // Where the items are read from: in place, or a staged copy.
        let window = self.window(items);
        self.scratch.clear();
        self.scratch.extend([n as u32, 0]);
        let (path, data, bytes) = if let Some((m, start, range)) = window {
            let import = &self.gpu.imports[m];
            let base = import.base + start;
            let mut bytes = 0;
            for i in 0..n {
                let item = items.item(i);
                let off = if item.is_empty() {
                    0
                } else {
                    item.as_ptr().addr() - base
                };
                self.scratch.extend([off as u32, item.len() as u32]);
                bytes += item.len();
            }
            let data = Binding {
                buffer: import.buffer,
                offset: start,
                range,
            };
            (BufferPath::Imported, data, bytes)
        } else {
            let need: usize = (0..n).map(|i| align_up(items.item(i).len(), 4)).sum();
            if need > self.staging_bytes {
                return Err((
                    SubmitError::TooLarge {
                        bytes: need,
                        max: self.staging_bytes,
                    },
                    buffers,
                ));
            }
            let slot = &self.slots[k];
            let Some(map) = self.gpu.map.as_mut() else {
                return Err((
                    SubmitError::Device(DeviceError::Vulkan {
                        call: "vkMapMemory",
                        code: vk::Result::ERROR_MEMORY_MAP_FAILED.as_raw(),
                    }),
                    buffers,
                ));
            };
            let mut off = 0;
            let mut bytes = 0;
            for i in 0..n {
                let item = items.item(i);
                map.write(slot.staging_off + off, item);
                self.scratch.extend([off as u32, item.len() as u32]);
                off += align_up(item.len(), 4);
                bytes += item.len();
            }
            let data = Binding {
                buffer: self.gpu.host_buffer(),
                offset: slot.staging_off,
                range: self.staging_bytes,
            };
            (BufferPath::Staged, data, bytes)
        };
        let slot = &self.slots[k];
        if let Some(map) = self.gpu.map.as_mut() {
            map.write(slot.ctrl_off, &self.scratch);
        }

        // Rebind and re-record only what changed.
        if slot.bound != Some(data) {
            self.gpu
                .bind(slot.set, B_DATA, data.buffer, data.offset, data.range);
            self.slots[k].bound = Some(data);
            self.slots[k].recorded = None;
        }
        let want = Recorded {
            kernels,
            data,
            workgroups,
        };
        if self.slots[k].recorded != Some(want) {
            if let Err(e) = self.record(k, kernels, workgroups) {
                self.slots[k].recorded = None;
                return Err((e.into(), buffers));
            }
            self.slots[k].recorded = Some(want);
        }

        let value = self.tail + 1;
        if let Err(e) = self.queue_submit(k, value) {
            if let DeviceError::Lost { .. } = e {
                self.failed = Some(e);
            }
            return Err((e.into(), buffers));
        }
        self.tail += 1;
        self.stats.submitted += 1;
        match path {
            BufferPath::Imported => {
                self.stats.imported += 1;
                self.stats.bytes_in_place += bytes as u64;
            }
            _ => {
                self.stats.staged += 1;
                self.stats.bytes_staged_in += bytes as u64;
            }
        }
        buffers.results.clear();
        self.slots[k].flight = Some(Flight {
            buffers,
            kernels,
            tag,
            value,
            path,
        });
        Ok(())
    }

    /// Records slot `k`'s command buffer: each kernel in turn (a barrier
    /// between them when an earlier one wrote the items), then a barrier
    /// that makes the shaders' writes visible to the host.
    pub(super) fn record(
        &self,
        k: usize,
        kernels: Kernels,
        workgroups: u32,
    ) -> Result<(), DeviceError> {
        let d = &self.gpu.device;
        let slot = &self.slots[k];
        let cb = slot.cb;
        // SAFETY: the slot is free, so its pool's only command buffer is not
        // pending.
        unsafe { d.reset_command_pool(slot.pool, vk::CommandPoolResetFlags::empty()) }
            .map_err(|r| device_error("vkResetCommandPool", r))?;
        let begin = vk::CommandBufferBeginInfo::default();
        // SAFETY: a reset buffer, recorded by this thread only.
        unsafe { d.begin_command_buffer(cb, &begin) }
            .map_err(|r| device_error("vkBeginCommandBuffer", r))?;
        let layout = self.gpu.pipeline_layout;
        let compute = vk::PipelineBindPoint::COMPUTE;
        let stage = vk::PipelineStageFlags::COMPUTE_SHADER;
        let mut wrote = false;
        for (i, &kernel) in kernels.as_slice().iter().enumerate() {
            if wrote {
                let barrier = [vk::MemoryBarrier::default()
                    .src_access_mask(vk::AccessFlags::SHADER_WRITE)
                    .dst_access_mask(vk::AccessFlags::SHADER_READ | vk::AccessFlags::SHADER_WRITE)];
                // SAFETY: recording; a global memory barrier only.
                unsafe {
                    d.cmd_pipeline_barrier(
                        cb,
                        stage,
                        stage,
                        vk::DependencyFlags::empty(),
                        &barrier,
                        &[],
                        &[],
                    )
                };
            }
            // SAFETY: recording; the pipeline was created on this device.
            unsafe { d.cmd_bind_pipeline(cb, compute, self.gpu.pipeline(kernel)) };
            if i == 0 {
                // SAFETY: recording; the set matches the pipeline layout and
                // every binding points at a live buffer.
                unsafe { d.cmd_bind_descriptor_sets(cb, compute, layout, 0, &[slot.set], &[]) };
            }
            let stage_index = (i as u32).to_ne_bytes();
            // SAFETY: recording; 4 bytes at offset 0, as the layout's range.
            unsafe {
                d.cmd_push_constants(cb, layout, vk::ShaderStageFlags::COMPUTE, 0, &stage_index)
            };
            // SAFETY: recording; a pipeline and its set are bound.
            unsafe { d.cmd_dispatch(cb, workgroups, 1, 1) };
            wrote |= kernel.writes_items();
        }
        let to_host = [vk::MemoryBarrier::default()
            .src_access_mask(vk::AccessFlags::SHADER_WRITE)
            .dst_access_mask(vk::AccessFlags::HOST_READ)];
        // SAFETY: recording; a global memory barrier only.
        unsafe {
            d.cmd_pipeline_barrier(
                cb,
                stage,
                vk::PipelineStageFlags::HOST,
                vk::DependencyFlags::empty(),
                &to_host,
                &[],
                &[],
            )
        };
        // SAFETY: the buffer is recording.
        unsafe { d.end_command_buffer(cb) }.map_err(|r| device_error("vkEndCommandBuffer", r))
    }

    pub(super) fn queue_submit(&self, k: usize, value: u64) -> Result<(), DeviceError> {
        let slot = &self.slots[k];
        let cbs = [slot.cb];
        if self.gpu.timeline {
            let values = [value];
            let sems = [self.gpu.semaphore];
            let mut timeline =
                vk::TimelineSemaphoreSubmitInfo::default().signal_semaphore_values(&values);
            let submit = [vk::SubmitInfo::default()
                .command_buffers(&cbs)
                .signal_semaphores(&sems)
                .push_next(&mut timeline)];
            // SAFETY: the command buffer is recorded and not pending; values
            // only grow (one per submission); the queue is used by this
            // thread only.
            unsafe {
                self.gpu
                    .device
                    .queue_submit(self.gpu.queue, &submit, vk::Fence::null())
            }
            .map_err(|r| device_error("vkQueueSubmit", r))
        } else {
            let submit = [vk::SubmitInfo::default().command_buffers(&cbs)];
            // SAFETY: as above; the slot's fence is unsignalled (reset when
            // its last submission was reaped).
            unsafe {
                self.gpu
                    .device
                    .queue_submit(self.gpu.queue, &submit, slot.fence)
            }
            .map_err(|r| device_error("vkQueueSubmit", r))
        }
    }
}
