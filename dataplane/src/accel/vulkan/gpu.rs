//! One logical device with everything a queue made from it: pipelines,
//! descriptor sets, command buffers, the host-visible slot memory, the
//! semaphore or fences, and the imported regions. Every object is destroyed
//! on drop, in reverse order of creation, after the device is idle.

use super::instance::{DeviceInfo, Instance, unavailable};
use super::vk_err;
use crate::accel::{HostMemory, Kernel, layout, shaders};
use ash::vk;
use std::ptr::NonNull;

/// The four storage-buffer bindings of every kernel (see
/// `shaders/common.wgsl`).
pub(super) const BINDINGS: u32 = 4;
pub(super) const B_DATA: u32 = 0;
pub(super) const B_CTRL: u32 = 1;
pub(super) const B_OUT: u32 = 2;
pub(super) const B_PARAMS: u32 = 3;

/// A persistently mapped, host-coherent allocation.
pub(super) struct Mapped {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping belongs to the Gpu that holds it, and is reached only
// through `&mut` of the queue that owns that Gpu.
unsafe impl Send for Mapped {}

impl Mapped {
    /// Copies `src` to byte `off`.
    pub(super) fn write<T: Copy>(&mut self, off: usize, src: &[T]) {
        let bytes = std::mem::size_of_val(src);
        assert!(off.checked_add(bytes).is_some_and(|end| end <= self.len));
        let dst = self.ptr.as_ptr().wrapping_add(off).cast::<u8>();
        // SAFETY: the range is inside the mapping (asserted); no device
        // access overlaps it (the slot is not in flight); `T: Copy` has no
        // drop glue, and any byte pattern of it is valid to copy.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr().cast::<u8>(), dst, bytes) };
    }

    /// Copies byte `off` onwards into `dst`.
    pub(super) fn read(&self, off: usize, dst: &mut [u8]) {
        assert!(
            off.checked_add(dst.len())
                .is_some_and(|end| end <= self.len)
        );
        let src = self.ptr.as_ptr().wrapping_add(off).cast_const();
        // SAFETY: the range is inside the mapping (asserted); the device is
        // done with it (the submission completed, and its last command is a
        // barrier making shader writes visible to the host).
        unsafe { std::ptr::copy_nonoverlapping(src, dst.as_mut_ptr(), dst.len()) };
    }

    /// Appends `n` little-endian words from byte `off` to `dst`.
    pub(super) fn read_words(&self, off: usize, n: usize, dst: &mut Vec<u32>) {
        let bytes = n * 4;
        assert!(off.checked_add(bytes).is_some_and(|end| end <= self.len));
        dst.reserve(n);
        let start = dst.len();
        let src = self.ptr.as_ptr().wrapping_add(off).cast_const();
        let out = dst.spare_capacity_mut().as_mut_ptr().cast::<u8>();
        // SAFETY: `n` words are reserved in `dst` and in range in the
        // mapping (asserted); as in `read`, the device is done with them.
        unsafe { std::ptr::copy_nonoverlapping(src, out, bytes) };
        // SAFETY: the `n` words after `start` were just written.
        unsafe { dst.set_len(start + n) };
    }
}

/// A host region imported as a storage buffer.
pub(super) struct Import {
    pub(super) base: usize,
    pub(super) len: usize,
    pub(super) buffer: vk::Buffer,
    memory: vk::DeviceMemory,
}

/// The device and its objects.
pub(super) struct Gpu {
    pub(super) device: ash::Device,
    pub(super) queue: vk::Queue,
    pub(super) info: DeviceInfo,
    pub(super) timeline: bool,
    pub(super) min_offset_align: usize,
    host_ptr: Option<ash::ext::external_memory_host::Device>,
    memory_types: Vec<vk::MemoryType>,

    pub(super) semaphore: vk::Semaphore,
    pub(super) fences: Vec<vk::Fence>,
    host_buffer: vk::Buffer,
    host_memory: vk::DeviceMemory,
    pub(super) map: Option<Mapped>,
    set_layout: vk::DescriptorSetLayout,
    pub(super) pipeline_layout: vk::PipelineLayout,
    modules: Vec<vk::ShaderModule>,
    pipelines: Vec<vk::Pipeline>,
    descriptor_pool: vk::DescriptorPool,
    pub(super) sets: Vec<vk::DescriptorSet>,
    pub(super) command_pools: Vec<vk::CommandPool>,
    pub(super) command_buffers: Vec<vk::CommandBuffer>,
    pub(super) imports: Vec<Import>,

    // Released after every Vulkan object (fields drop after `drop` runs):
    // the registered memory outlives its imports, the instance its device.
    keep: Vec<HostMemory>,
    _instance: Instance,
}

impl Gpu {
    /// Creates the logical device with one queue of a compute family.
    pub(super) fn new(
        instance: Instance,
        pd: vk::PhysicalDevice,
        info: DeviceInfo,
        queue_index: u32,
        want_timeline: bool,
    ) -> crate::Result<Gpu> {
        // A compute family without graphics (async compute) first: on GPUs
        // that have one it does not queue behind rendering.
        let family = info
            .queue_families
            .iter()
            .filter(|f| f.compute && f.count > 0)
            .min_by_key(|f| f.graphics)
            .ok_or_else(|| unavailable(format!("{}: no compute queue family", info.name)))?;
        let (family_index, index) = (family.index, queue_index % family.count);
        let priorities = vec![1.0f32; index as usize + 1];
        let queue_info = [vk::DeviceQueueCreateInfo::default()
            .queue_family_index(family_index)
            .queue_priorities(&priorities)];
        let import = info.external_memory_host_alignment.is_some();
        let extensions: Vec<*const std::ffi::c_char> = if import {
            vec![ash::ext::external_memory_host::NAME.as_ptr()]
        } else {
            Vec::new()
        };
        let timeline = want_timeline && info.timeline_semaphores;
        let mut timeline_feature =
            vk::PhysicalDeviceTimelineSemaphoreFeatures::default().timeline_semaphore(true);
        let mut create = vk::DeviceCreateInfo::default()
            .queue_create_infos(&queue_info)
            .enabled_extension_names(&extensions);
        if timeline {
            create = create.push_next(&mut timeline_feature);
        }
        // SAFETY: `pd` belongs to `instance`; the extension and feature
        // were reported by the device; `create` lives across the call.
        let device = unsafe { instance.instance.create_device(pd, &create, None) }
            .map_err(vk_err("vkCreateDevice"))?;
        // SAFETY: the family and index were requested in `create`.
        let queue = unsafe { device.get_device_queue(family_index, index) };
        let host_ptr = import
            .then(|| ash::ext::external_memory_host::Device::new(&instance.instance, &device));
        // SAFETY: `pd` belongs to `instance`.
        let mem = unsafe { instance.instance.get_physical_device_memory_properties(pd) };
        // SAFETY: as above.
        let props = unsafe { instance.instance.get_physical_device_properties(pd) };
        Ok(Gpu {
            device,
            queue,
            timeline,
            min_offset_align: props.limits.min_storage_buffer_offset_alignment.max(16) as usize,
            info,
            host_ptr,
            memory_types: mem.memory_types_as_slice().to_vec(),
            semaphore: vk::Semaphore::null(),
            fences: Vec::new(),
            host_buffer: vk::Buffer::null(),
            host_memory: vk::DeviceMemory::null(),
            map: None,
            set_layout: vk::DescriptorSetLayout::null(),
            pipeline_layout: vk::PipelineLayout::null(),
            modules: Vec::new(),
            pipelines: Vec::new(),
            descriptor_pool: vk::DescriptorPool::null(),
            sets: Vec::new(),
            command_pools: Vec::new(),
            command_buffers: Vec::new(),
            imports: Vec::new(),
            keep: Vec::new(),
            _instance: instance,
        })
    }

    pub(super) fn host_buffer(&self) -> vk::Buffer {
        self.host_buffer
    }

    /// The timeline semaphore, or one fence per slot.
    pub(super) fn create_sync(&mut self, slots: usize) -> crate::Result<()> {
        if self.timeline {
            let mut kind = vk::SemaphoreTypeCreateInfo::default()
                .semaphore_type(vk::SemaphoreType::TIMELINE)
                .initial_value(0);
            let info = vk::SemaphoreCreateInfo::default().push_next(&mut kind);
            // SAFETY: timeline semaphores were enabled on this device.
            self.semaphore = unsafe { self.device.create_semaphore(&info, None) }
                .map_err(vk_err("vkCreateSemaphore"))?;
        } else {
            for _ in 0..slots {
                // SAFETY: a plain unsignalled fence.
                let f = unsafe {
                    self.device
                        .create_fence(&vk::FenceCreateInfo::default(), None)
                }
                .map_err(vk_err("vkCreateFence"))?;
                self.fences.push(f);
            }
        }
        Ok(())
    }

    fn memory_type(&self, bits: u32, want: vk::MemoryPropertyFlags) -> Option<u32> {
        (0..self.memory_types.len() as u32).find(|&i| {
            bits & (1 << i) != 0 && self.memory_types[i as usize].property_flags.contains(want)
        })
    }

    /// The host-visible, coherent buffer holding the parameters and every
    /// slot's control words, results and staging area, mapped for good.
    pub(super) fn create_host_buffer(&mut self, bytes: usize) -> crate::Result<()> {
        let info = vk::BufferCreateInfo::default()
            .size(bytes as u64)
            .usage(vk::BufferUsageFlags::STORAGE_BUFFER)
            .sharing_mode(vk::SharingMode::EXCLUSIVE);
        // SAFETY: a valid create info.
        self.host_buffer =
            unsafe { self.device.create_buffer(&info, None) }.map_err(vk_err("vkCreateBuffer"))?;
        // SAFETY: the buffer was just created on this device.
        let req = unsafe { self.device.get_buffer_memory_requirements(self.host_buffer) };
        let coherent =
            vk::MemoryPropertyFlags::HOST_VISIBLE | vk::MemoryPropertyFlags::HOST_COHERENT;
        // Cached too where there is such a type: results are read back.
        let ty = self
            .memory_type(
                req.memory_type_bits,
                coherent | vk::MemoryPropertyFlags::HOST_CACHED,
            )
            .or_else(|| self.memory_type(req.memory_type_bits, coherent))
            .ok_or_else(|| unavailable("no host-visible, coherent memory type for storage"))?;
        let alloc = vk::MemoryAllocateInfo::default()
            .allocation_size(req.size)
            .memory_type_index(ty);
        // SAFETY: a valid allocate info for a type the buffer accepts.
        self.host_memory = unsafe { self.device.allocate_memory(&alloc, None) }
            .map_err(vk_err("vkAllocateMemory"))?;
        // SAFETY: unbound buffer, fresh memory of a type it accepts, offset 0.
        unsafe {
            self.device
                .bind_buffer_memory(self.host_buffer, self.host_memory, 0)
        }
        .map_err(vk_err("vkBindBufferMemory"))?;
        // SAFETY: host-visible memory, not mapped yet, whole range.
        let ptr = unsafe {
            self.device.map_memory(
                self.host_memory,
                0,
                vk::WHOLE_SIZE,
                vk::MemoryMapFlags::empty(),
            )
        }
        .map_err(vk_err("vkMapMemory"))?;
        let ptr = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| unavailable("vkMapMemory returned a null pointer"))?;
        self.map = Some(Mapped { ptr, len: bytes });
        Ok(())
    }

    /// The descriptor set layout, the pipeline layout (with the 4-byte push
    /// constant `imm.stage`), and one compute pipeline per kernel.
    pub(super) fn create_pipelines(&mut self) -> crate::Result<()> {
        let bindings: Vec<vk::DescriptorSetLayoutBinding<'_>> = (0..BINDINGS)
            .map(|b| {
                vk::DescriptorSetLayoutBinding::default()
                    .binding(b)
                    .descriptor_type(vk::DescriptorType::STORAGE_BUFFER)
                    .descriptor_count(1)
                    .stage_flags(vk::ShaderStageFlags::COMPUTE)
            })
            .collect();
        let info = vk::DescriptorSetLayoutCreateInfo::default().bindings(&bindings);
        // SAFETY: a valid create info.
        self.set_layout = unsafe { self.device.create_descriptor_set_layout(&info, None) }
            .map_err(vk_err("vkCreateDescriptorSetLayout"))?;
        let layouts = [self.set_layout];
        let push = [vk::PushConstantRange::default()
            .stage_flags(vk::ShaderStageFlags::COMPUTE)
            .offset(0)
            .size(4)];
        let info = vk::PipelineLayoutCreateInfo::default()
            .set_layouts(&layouts)
            .push_constant_ranges(&push);
        // SAFETY: the set layout was created on this device.
        self.pipeline_layout = unsafe { self.device.create_pipeline_layout(&info, None) }
            .map_err(vk_err("vkCreatePipelineLayout"))?;
        for kernel in Kernel::ALL {
            let info = vk::ShaderModuleCreateInfo::default().code(shaders::spirv(kernel));
            // SAFETY: the words are SPIR-V that naga validated and wrote at
            // build time.
            let module = unsafe { self.device.create_shader_module(&info, None) }
                .map_err(vk_err("vkCreateShaderModule"))?;
            self.modules.push(module);
            let name = std::ffi::CString::new(kernel.name())
                .map_err(|_| unavailable("a kernel name with a NUL"))?;
            let stage = vk::PipelineShaderStageCreateInfo::default()
                .stage(vk::ShaderStageFlags::COMPUTE)
                .module(module)
                .name(&name);
            let info = [vk::ComputePipelineCreateInfo::default()
                .stage(stage)
                .layout(self.pipeline_layout)];
            // SAFETY: the module and layout were created on this device and
            // match (the shader's bindings and push constant are the
            // layout's).
            let created = unsafe {
                self.device
                    .create_compute_pipelines(vk::PipelineCache::null(), &info, None)
            };
            match created {
                Ok(p) => self.pipelines.extend(p),
                Err((p, e)) => {
                    self.pipelines.extend(p);
                    return Err(vk_err("vkCreateComputePipelines")(e));
                }
            }
        }
        Ok(())
    }

    pub(super) fn pipeline(&self, kernel: Kernel) -> vk::Pipeline {
        self.pipelines[kernel.index()]
    }

    /// One descriptor set and one command buffer per slot.
    pub(super) fn create_slots(&mut self, slots: usize) -> crate::Result<()> {
        let sizes = [vk::DescriptorPoolSize::default()
            .ty(vk::DescriptorType::STORAGE_BUFFER)
            .descriptor_count(BINDINGS * slots as u32)];
        let info = vk::DescriptorPoolCreateInfo::default()
            .max_sets(slots as u32)
            .pool_sizes(&sizes);
        // SAFETY: a valid create info.
        self.descriptor_pool = unsafe { self.device.create_descriptor_pool(&info, None) }
            .map_err(vk_err("vkCreateDescriptorPool"))?;
        let layouts = vec![self.set_layout; slots];
        let info = vk::DescriptorSetAllocateInfo::default()
            .descriptor_pool(self.descriptor_pool)
            .set_layouts(&layouts);
        // SAFETY: the pool was sized for `slots` sets of this layout.
        self.sets = unsafe { self.device.allocate_descriptor_sets(&info) }
            .map_err(vk_err("vkAllocateDescriptorSets"))?;
        // One pool per slot, reset whole before each recording (cheaper than
        // resetting single buffers, and what drivers are tuned for).
        for _ in 0..slots {
            let info = vk::CommandPoolCreateInfo::default().queue_family_index(self.family_index());
            // SAFETY: a valid create info for the queue's family.
            let pool = unsafe { self.device.create_command_pool(&info, None) }
                .map_err(vk_err("vkCreateCommandPool"))?;
            self.command_pools.push(pool);
            let info = vk::CommandBufferAllocateInfo::default()
                .command_pool(pool)
                .level(vk::CommandBufferLevel::PRIMARY)
                .command_buffer_count(1);
            // SAFETY: the pool was created on this device.
            let cbs = unsafe { self.device.allocate_command_buffers(&info) }
                .map_err(vk_err("vkAllocateCommandBuffers"))?;
            self.command_buffers.extend(cbs);
        }
        Ok(())
    }

    fn family_index(&self) -> u32 {
        self.info
            .queue_families
            .iter()
            .filter(|f| f.compute && f.count > 0)
            .min_by_key(|f| f.graphics)
            .map_or(0, |f| f.index)
    }

    /// Points binding `binding` of `set` at `range` bytes of `buffer` from
    /// `offset`.
    pub(super) fn bind(
        &self,
        set: vk::DescriptorSet,
        binding: u32,
        buffer: vk::Buffer,
        offset: usize,
        range: usize,
    ) {
        let info = [vk::DescriptorBufferInfo::default()
            .buffer(buffer)
            .offset(offset as u64)
            .range(range as u64)];
        let write = [vk::WriteDescriptorSet::default()
            .dst_set(set)
            .dst_binding(binding)
            .descriptor_type(vk::DescriptorType::STORAGE_BUFFER)
            .buffer_info(&info)];
        // SAFETY: the set is not in use by a pending submission (the caller
        // only rebinds a free slot), and the range lies in the buffer.
        unsafe { self.device.update_descriptor_sets(&write, &[]) };
    }

    /// Imports `[base, base + len)` of host memory as a storage buffer, or
    /// says why not.
    pub(super) fn import(&mut self, base: usize, len: usize) -> crate::Result<Result<(), String>> {
        let Some(ext) = &self.host_ptr else {
            return Ok(Err(format!(
                "{} has no VK_EXT_external_memory_host",
                self.info.name
            )));
        };
        let align = self.info.external_memory_host_alignment.unwrap_or(u64::MAX) as usize;
        if !base.is_multiple_of(align) || !len.is_multiple_of(align) {
            return Ok(Err(format!(
                "the region ({len} bytes at {base:#x}) is not aligned to the device's \
                 minImportedHostPointerAlignment {align}"
            )));
        }
        let handle = vk::ExternalMemoryHandleTypeFlags::HOST_ALLOCATION_EXT;
        let mut host_props = vk::MemoryHostPointerPropertiesEXT::default();
        // SAFETY: the extension is enabled; `base` is the start of `len`
        // mapped bytes that the caller keeps alive for the import's lifetime.
        let r = unsafe {
            (ext.fp().get_memory_host_pointer_properties_ext)(
                self.device.handle(),
                handle,
                base as *const std::ffi::c_void,
                &mut host_props,
            )
        };
        if r != vk::Result::SUCCESS {
            return Ok(Err(format!(
                "vkGetMemoryHostPointerPropertiesEXT refused the region: {}",
                super::result_name(r.as_raw())
            )));
        }
        let mut external = vk::ExternalMemoryBufferCreateInfo::default().handle_types(handle);
        let info = vk::BufferCreateInfo::default()
            .size(len as u64)
            .usage(vk::BufferUsageFlags::STORAGE_BUFFER)
            .sharing_mode(vk::SharingMode::EXCLUSIVE)
            .push_next(&mut external);
        // SAFETY: a valid create info.
        let buffer =
            unsafe { self.device.create_buffer(&info, None) }.map_err(vk_err("vkCreateBuffer"))?;
        let mut import = Import {
            base,
            len,
            buffer,
            memory: vk::DeviceMemory::null(),
        };
        // SAFETY: the buffer was just created on this device.
        let req = unsafe { self.device.get_buffer_memory_requirements(buffer) };
        let bits = req.memory_type_bits & host_props.memory_type_bits;
        // Coherent: the host reads and writes the region through its own
        // pointer, with no flush or invalidate.
        let want = vk::MemoryPropertyFlags::HOST_VISIBLE | vk::MemoryPropertyFlags::HOST_COHERENT;
        let ty = self.memory_type(bits, vk::MemoryPropertyFlags::empty());
        let coherent = self.memory_type(bits, want);
        let refusal = if req.size > len as u64 {
            Some(format!(
                "the buffer needs {} bytes of memory, more than the region's {len}",
                req.size
            ))
        } else if ty.is_none() {
            Some("no memory type can both back a storage buffer and import host memory".into())
        } else if coherent.is_none() {
            Some("the importable memory types are not host-coherent".into())
        } else {
            None
        };
        if let Some(why) = refusal {
            // SAFETY: created above, never bound or used.
            unsafe { self.device.destroy_buffer(buffer, None) };
            return Ok(Err(why));
        }
        let mut host = vk::ImportMemoryHostPointerInfoEXT::default()
            .handle_type(handle)
            .host_pointer(base as *mut std::ffi::c_void);
        let alloc = vk::MemoryAllocateInfo::default()
            .allocation_size(len as u64)
            .memory_type_index(coherent.unwrap_or_default())
            .push_next(&mut host);
        // SAFETY: as for vkGetMemoryHostPointerPropertiesEXT above; the type
        // is one that call allowed; the caller keeps the memory alive until
        // this allocation is freed (in `drop`, before `keep` is released).
        match unsafe { self.device.allocate_memory(&alloc, None) } {
            Ok(m) => import.memory = m,
            Err(e) => {
                // SAFETY: created above, never bound or used.
                unsafe { self.device.destroy_buffer(buffer, None) };
                return Ok(Err(format!(
                    "vkAllocateMemory refused the import: {}",
                    super::result_name(e.as_raw())
                )));
            }
        }
        // SAFETY: an unbound buffer and memory of a type it accepts, as
        // large as it needs.
        let bound = unsafe { self.device.bind_buffer_memory(buffer, import.memory, 0) };
        self.imports.push(import);
        bound.map_err(vk_err("vkBindBufferMemory"))?;
        Ok(Ok(()))
    }

    /// Keeps registered memory alive until the imports are gone.
    pub(super) fn keep(&mut self, memory: HostMemory) {
        self.keep.push(memory);
    }

    /// Waits until the device has finished everything submitted.
    pub(super) fn wait_idle(&self) -> Result<(), vk::Result> {
        // SAFETY: the device is valid; no other thread uses its queue (the
        // queue is owned by one lcore).
        unsafe { self.device.device_wait_idle() }
    }
}

impl Drop for Gpu {
    fn drop(&mut self) {
        // Nothing may be in flight while objects are destroyed. A lost
        // device reports the loss here and has nothing running either.
        if let Err(e) = self.wait_idle() {
            tracing::warn!(
                "accelerator: waiting for the device at drop: {}",
                super::result_name(e.as_raw())
            );
        }
        let d = &self.device;
        // Reverse order of creation. Destroying a null handle is a no-op.
        for import in self.imports.drain(..) {
            // SAFETY: idle device; the buffer is not used again.
            unsafe { d.destroy_buffer(import.buffer, None) };
            // SAFETY: idle device; its only buffer is destroyed.
            unsafe { d.free_memory(import.memory, None) };
        }
        for &pool in &self.command_pools {
            // SAFETY: idle device; frees its command buffer with it.
            unsafe { d.destroy_command_pool(pool, None) };
        }
        // SAFETY: idle device; frees the sets with it.
        unsafe { d.destroy_descriptor_pool(self.descriptor_pool, None) };
        for &p in &self.pipelines {
            // SAFETY: idle device; no command buffer refers to it any more.
            unsafe { d.destroy_pipeline(p, None) };
        }
        for &m in &self.modules {
            // SAFETY: the pipelines made from it are destroyed.
            unsafe { d.destroy_shader_module(m, None) };
        }
        // SAFETY: the pipelines that used it are destroyed.
        unsafe { d.destroy_pipeline_layout(self.pipeline_layout, None) };
        // SAFETY: the pipeline layout and sets that used it are destroyed.
        unsafe { d.destroy_descriptor_set_layout(self.set_layout, None) };
        if self.map.take().is_some() {
            // SAFETY: mapped in create_host_buffer; the mapping is dropped.
            unsafe { d.unmap_memory(self.host_memory) };
        }
        // SAFETY: idle device; the buffer is not used again.
        unsafe { d.destroy_buffer(self.host_buffer, None) };
        // SAFETY: idle device; its only buffer is destroyed.
        unsafe { d.free_memory(self.host_memory, None) };
        for &f in &self.fences {
            // SAFETY: idle device: no submission waits to signal it.
            unsafe { d.destroy_fence(f, None) };
        }
        // SAFETY: idle device: no submission waits to signal it.
        unsafe { d.destroy_semaphore(self.semaphore, None) };
        // SAFETY: every child object is destroyed above.
        unsafe { d.destroy_device(None) };
        // Then `keep` (the registered memory) and `instance` drop.
    }
}

/// Bytes of the parameter binding.
pub(super) const PARAMS_BYTES: usize = layout::PARAMS_WORDS as usize * 4;
