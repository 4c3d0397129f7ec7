//! [`Queue`]: one lcore's compute queue, on Vulkan or the CPU.

use super::*;

/// What a queue runs on, for logs and `dp-info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueInfo {
    /// The backend.
    pub backend: BackendKind,
    /// The device's name (the CPU's model for the CPU backend).
    pub device: String,
    /// Why the CPU runs the kernels under [`BackendChoice::Auto`], if it does.
    pub fallback: Option<String>,
    /// Completion tracking: `timeline`, `fence` or `inline` (CPU).
    pub sync: &'static str,
    /// Whether registered memory can be imported (zero copy), and why (not).
    pub import: Probe,
    /// Submissions in flight at once.
    pub depth: usize,
    /// The most items per submission.
    pub max_items: usize,
    /// Staging bytes per submission.
    pub staging_bytes: usize,
}

/// A queue's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    /// Submissions accepted.
    pub submitted: u64,
    /// Completions handed back (failed ones included).
    pub completed: u64,
    /// Completions that carried a device error.
    pub failed: u64,
    /// Submissions read in place from imported memory.
    pub imported: u64,
    /// Submissions staged.
    pub staged: u64,
    /// Item bytes read in place (not copied) by imported submissions.
    pub bytes_in_place: u64,
    /// Item bytes copied into staging memory.
    pub bytes_staged_in: u64,
    /// Item bytes copied back out of staging memory.
    pub bytes_staged_out: u64,
}

pub(super) enum Backend<P: Payload> {
    Vulkan(Box<vulkan::VulkanQueue<P>>),
    Cpu(cpu::CpuQueue<P>),
}

/// A compute queue owned by one lcore: `Send`, not `Sync` (every operation
/// takes `&mut self`). See the [module docs](crate::accel).
pub struct Queue<P: Payload> {
    backend: Backend<P>,
    info: QueueInfo,
}

impl<P: Payload> fmt::Debug for Queue<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("info", &self.info)
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl<P: Payload> Queue<P> {
    /// Opens a queue on the configured backend.
    ///
    /// # Errors
    ///
    /// - [`Error::Config`]: a refused configuration.
    /// - [`Error::Required`]: Vulkan was asked for (or required under
    ///   `Auto`) and cannot be opened; the reason says why.
    /// - [`Error::Accel`]: a Vulkan call failed while setting up an
    ///   explicitly requested Vulkan queue.
    pub fn open(config: QueueConfig) -> Result<Queue<P>> {
        config.check()?;
        let required = if config.vulkan_required() {
            Requirements::of(&[Capability::Vulkan])
        } else {
            Requirements::default()
        };
        let opened = backend::select(
            &Accel::<P> {
                config: &config,
                payload: std::marker::PhantomData,
            },
            config.backend,
            &required,
        )?;
        let mut queue = opened.value;
        if let Some(skip) = opened.skipped.into_iter().next() {
            queue.info.fallback = Some(skip.reason);
        }
        Ok(queue)
    }

    pub(crate) fn cpu(config: &QueueConfig, fallback: Option<String>) -> Queue<P> {
        let q = cpu::CpuQueue::new(config);
        let info = QueueInfo {
            backend: BackendKind::Cpu,
            device: cpu::cpu_name(),
            fallback,
            sync: "inline",
            import: Probe::ok("the CPU reads items in place"),
            depth: config.depth,
            max_items: config.max_items,
            staging_bytes: 0,
        };
        Queue {
            backend: Backend::Cpu(q),
            info,
        }
    }

    pub(crate) fn vulkan(config: &QueueConfig) -> Result<Queue<P>> {
        let q = vulkan::VulkanQueue::open(config)?;
        let info = q.info().clone();
        Ok(Queue {
            backend: Backend::Vulkan(Box::new(q)),
            info,
        })
    }

    /// What the queue runs on.
    pub fn info(&self) -> &QueueInfo {
        &self.info
    }

    /// Its counters.
    pub fn stats(&self) -> QueueStats {
        match &self.backend {
            Backend::Vulkan(q) => q.stats(),
            Backend::Cpu(q) => q.stats(),
        }
    }

    /// Submissions in flight: poll until 0 to drain (the lcore's stop
    /// contract: return non-zero work while this is not 0).
    pub fn in_flight(&self) -> usize {
        match &self.backend {
            Backend::Vulkan(q) => q.in_flight(),
            Backend::Cpu(q) => q.in_flight(),
        }
    }

    /// Makes items in `memory` readable in place: each region is imported
    /// as a Vulkan storage buffer when the device supports
    /// `VK_EXT_external_memory_host` and the region meets its alignment;
    /// otherwise items there are staged. The queue keeps `memory` alive
    /// until it is dropped. Returns what happened to each region.
    ///
    /// # Errors
    ///
    /// [`Error::Accel`] when a Vulkan call fails other than by refusing the
    /// import (a refused import is reported as [`BufferPath::Staged`] with
    /// the reason).
    pub fn register(&mut self, memory: impl Into<HostMemory>) -> Result<Vec<Registration>> {
        let memory = memory.into();
        match &mut self.backend {
            Backend::Vulkan(q) => q.register(memory),
            Backend::Cpu(_) => Ok(memory
                .regions()
                .iter()
                .map(|r| Registration {
                    memory: memory.name(),
                    bytes: r.len(),
                    hugepages: r.is_hugepage_backed(),
                    path: BufferPath::Host,
                    reason: "the CPU backend reads items in place".into(),
                })
                .collect()),
        }
    }

    /// Queues `kernels` (one [`Kernel`] or several [`Kernels`], run in
    /// order) over `buffers.items`, with `workgroups` workgroups of
    /// [`WORKGROUP_SIZE`] (see [`workgroups_for`]). Never blocks: the
    /// completion comes from [`Queue::poll`] with `tag`.
    ///
    /// # Errors
    ///
    /// The buffers come back untouched in [`Rejected`] with the reason: the
    /// queue is full, too many items or bytes, workgroups that do not cover
    /// the items, or a failed or lost device.
    pub fn submit(
        &mut self,
        kernels: impl Into<Kernels>,
        buffers: Buffers<P>,
        workgroups: u32,
        tag: u64,
    ) -> std::result::Result<(), Rejected<P>> {
        let kernels = kernels.into();
        match &mut self.backend {
            Backend::Vulkan(q) => q.submit(kernels, buffers, workgroups, tag),
            Backend::Cpu(q) => q.submit(kernels, buffers, workgroups, tag),
        }
    }

    /// Appends the submissions that completed since the last call, oldest
    /// first, to `out`; returns how many. Never blocks (one semaphore
    /// counter read, or one fence status, when nothing is done).
    pub fn poll(&mut self, out: &mut Vec<Completion<P>>) -> usize {
        match &mut self.backend {
            Backend::Vulkan(q) => q.poll(out),
            Backend::Cpu(q) => q.poll(out),
        }
    }
}

/// The accelerator backends as candidates for one queue configuration.
struct Accel<'a, P> {
    config: &'a QueueConfig,
    payload: std::marker::PhantomData<fn() -> P>,
}

impl<P: Payload> Candidates for Accel<'_, P> {
    type Kind = BackendKind;
    type Value = Queue<P>;

    fn device(&self) -> &str {
        "a compute queue"
    }

    /// Vulkan's real probe is the open itself (a loader, an instance, a
    /// device with a compute queue); the CPU always runs.
    fn probe(&self, kind: BackendKind) -> Probe {
        match kind {
            BackendKind::Vulkan => Probe::ok("tried by opening a queue"),
            BackendKind::Cpu => Probe::ok("the CPU of the calling lcore"),
        }
    }

    fn open(&self, kind: BackendKind) -> Result<Queue<P>> {
        match kind {
            BackendKind::Vulkan => Queue::vulkan(self.config),
            BackendKind::Cpu => Ok(Queue::cpu(self.config, None)),
        }
    }
}

/// Checks a submission against the queue's limits: the same rules for
/// every backend.
pub(crate) fn check_submission(
    items: usize,
    workgroups: u32,
    max_items: usize,
    max_workgroups: u32,
) -> std::result::Result<(), SubmitError> {
    if items > max_items {
        return Err(SubmitError::TooManyItems {
            items,
            max: max_items,
        });
    }
    let needed = workgroups_for(items);
    if workgroups < needed || workgroups > max_workgroups {
        return Err(SubmitError::Workgroups {
            workgroups,
            items,
            needed,
            max: max_workgroups,
        });
    }
    Ok(())
}
