//! The original design's configuration structs: [`WorkerConfig`] and
//! [`PoolConfig`].

/// How one worker runs (the original design's `WorkerConfig`).
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Thread name suffix.
    pub name: Option<String>,
    /// A CPU to pin to (single workers started with
    /// [`spawn`](super::spawn)).
    pub pinned_cpu: Option<usize>,
    /// Capacity of the worker's message ring (a power of two).
    pub queue_capacity: usize,
    /// Ask for a higher scheduling priority (needs CAP_SYS_NICE).
    pub high_priority: bool,
    /// Thread stack size.
    pub stack_size: Option<usize>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            name: None,
            pinned_cpu: None,
            queue_capacity: 1024,
            high_priority: false,
            stack_size: None,
        }
    }
}

impl WorkerConfig {
    /// The defaults: a 1024-message queue, no pinning.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
    /// Pins the worker to `cpu` (a single worker started with
    /// [`spawn`](super::spawn); a pool pins its workers to the plan's CPUs,
    /// switched by [`PoolConfig::with_cpu_affinity`]).
    pub fn with_pinned_cpu(mut self, cpu: usize) -> Self {
        self.pinned_cpu = Some(cpu);
        self
    }
    /// Sets the queue capacity.
    pub fn with_queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity;
        self
    }
    /// Asks for a higher priority.
    pub fn with_high_priority(mut self, high: bool) -> Self {
        self.high_priority = high;
        self
    }
    /// Sets the stack size.
    pub fn with_stack_size(mut self, size: usize) -> Self {
        self.stack_size = Some(size);
        self
    }
}

/// How a pool runs (the original design's `PoolConfig`).
#[derive(Debug, Clone, Default)]
pub struct PoolConfig {
    /// Workers; 0 takes the plan's application lcores.
    pub num_workers: usize,
    /// Settings for each worker.
    pub worker_config: WorkerConfig,
    /// Pin each worker to its plan CPU.
    pub enable_cpu_affinity: bool,
}

impl PoolConfig {
    /// The defaults: as many workers as the plan has application lcores,
    /// unpinned.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the number of workers.
    pub fn with_num_workers(mut self, n: usize) -> Self {
        self.num_workers = n;
        self
    }
    /// Sets each worker's settings.
    pub fn with_worker_config(mut self, c: WorkerConfig) -> Self {
        self.worker_config = c;
        self
    }
    /// Whether each worker is pinned to its plan CPU (a switch; to pin a
    /// single worker to a CPU of your choice see
    /// [`WorkerConfig::with_pinned_cpu`]).
    pub fn with_cpu_affinity(mut self, on: bool) -> Self {
        self.enable_cpu_affinity = on;
        self
    }
}
