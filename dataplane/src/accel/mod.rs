//! Accelerator compute queues owned by lcores: Vulkan through `ash` (a real
//! GPU, or lavapipe on the CPU), with the CPU running the same kernels as
//! the fallback.

use crate::topology::BackendProbe;

/// Every accelerator backend, in selection order, with whether it can run
/// here.
pub fn probes() -> Vec<BackendProbe> {
    Vec::new()
}
