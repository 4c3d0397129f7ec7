//! Choosing a backend and a device, and how a queue is made.

use super::*;

/// Which backend a queue runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// Vulkan (a GPU, or lavapipe).
    Vulkan,
    /// The CPU kernels on the calling lcore.
    Cpu,
}

impl Kind for BackendKind {
    const SUBSYSTEM: &'static str = "accel";
    const ALL: &'static [BackendKind] = &[BackendKind::Vulkan, BackendKind::Cpu];

    fn name(self) -> &'static str {
        BackendKind::name(self)
    }

    fn capability(self) -> Option<Capability> {
        match self {
            BackendKind::Vulkan => Some(Capability::Vulkan),
            BackendKind::Cpu => None,
        }
    }
}

impl BackendKind {
    /// The name, as `--backend`, `dp-info` and `DATAPLANE_REQUIRE` spell it.
    pub const fn name(self) -> &'static str {
        match self {
            BackendKind::Vulkan => "vulkan",
            BackendKind::Cpu => "cpu",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackendKind {
    type Err = Error;

    /// Parses `vulkan` or `cpu`; case does not matter.
    fn from_str(s: &str) -> Result<Self> {
        backend::parse_kind(s)
    }
}

/// Which backend to open: [`Choice::Auto`] is Vulkan when a device can be
/// opened, else the CPU with the reason logged, unless Vulkan is required
/// (`DATAPLANE_REQUIRE=vulkan`, the `require-vulkan` feature, or
/// [`QueueConfig::require_vulkan`]).
pub type BackendChoice = Choice<BackendKind>;

/// Which Vulkan device.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DeviceSelector {
    /// The first discrete GPU, else integrated, virtual, then CPU devices
    /// (lavapipe).
    #[default]
    Auto,
    /// The device at this index in [`Discovery::devices`].
    Index(usize),
    /// The device at this PCI address (`0000:af:00.0`, as
    /// [`Gpu::address`](crate::topology::Gpu::address) spells it), for
    /// devices with `VK_EXT_pci_bus_info`.
    Pci(String),
}

/// How the Vulkan backend learns that a submission completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// A timeline semaphore where the device has them, else fences.
    #[default]
    Auto,
    /// One timeline semaphore, one counter read per poll.
    Timeline,
    /// One fence per submission slot, the oldest polled.
    Fence,
}

/// How to open a [`Queue`].
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// The backend.
    pub backend: BackendChoice,
    /// The Vulkan device.
    pub device: DeviceSelector,
    /// Which queue of the device's compute family (modulo their count):
    /// accelerator lcore `k` of a device takes queue `k`.
    pub queue_index: u32,
    /// Submissions in flight at once.
    pub depth: usize,
    /// The most items per submission.
    pub max_items: usize,
    /// Bytes of staging memory per submission (items that are not read in
    /// place are copied there, each rounded up to 4 bytes).
    pub staging_bytes: usize,
    /// The Toeplitz key and signatures.
    pub params: Params,
    /// Completion tracking.
    pub sync: SyncMode,
    /// The Vulkan loader to open; `None` reads [`LOADER_ENV`], then uses
    /// `libvulkan.so.1`.
    pub loader: Option<PathBuf>,
    /// Refuse to fall back to the CPU under [`BackendChoice::Auto`]; `None`
    /// takes it from the `require-vulkan` feature and `DATAPLANE_REQUIRE`.
    pub require_vulkan: Option<bool>,
}

impl Default for QueueConfig {
    /// Auto backend and device, depth 8, 256 items and 1 MiB of staging
    /// per submission, the default parameters.
    fn default() -> Self {
        QueueConfig {
            backend: BackendChoice::Auto,
            device: DeviceSelector::Auto,
            queue_index: 0,
            depth: 8,
            max_items: 256,
            staging_bytes: 1 << 20,
            params: Params::default(),
            sync: SyncMode::Auto,
            loader: None,
            require_vulkan: None,
        }
    }
}

impl QueueConfig {
    /// The default configuration on `backend`.
    pub fn new(backend: BackendChoice) -> Self {
        QueueConfig {
            backend,
            ..QueueConfig::default()
        }
    }

    pub(crate) fn vulkan_required(&self) -> bool {
        self.require_vulkan
            .unwrap_or(cfg!(feature = "require-vulkan") || require::required(Capability::Vulkan))
    }

    pub(crate) fn check(&self) -> Result<()> {
        let bad = |why: String| Err(Error::Config(format!("accelerator queue: {why}")));
        if self.depth == 0 || self.depth > 1024 {
            return bad(format!("depth {} must be 1 to 1024", self.depth));
        }
        if self.max_items == 0 || self.max_items > 1 << 20 {
            return bad(format!("max_items {} must be 1 to 2^20", self.max_items));
        }
        if self.staging_bytes == 0 || self.staging_bytes > 1 << 30 {
            return bad(format!(
                "staging_bytes {} must be 1 to 2^30",
                self.staging_bytes
            ));
        }
        Ok(())
    }
}
