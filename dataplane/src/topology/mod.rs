//! Zero-config hardware detection.

use serde::Serialize;

/// A logical CPU number, as the kernel numbers them under
/// `/sys/devices/system/cpu/cpuN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct CpuId(pub u32);

impl core::fmt::Display for CpuId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "cpu{}", self.0)
    }
}
