//! The kernels' SPIR-V, compiled from `dataplane/shaders/*.wgsl` by
//! `build/shaders.rs`.

include!(concat!(env!("OUT_DIR"), "/shaders.rs"));

use super::Kernel;

/// The SPIR-V words of `kernel`.
pub(crate) fn spirv(kernel: Kernel) -> &'static [u32] {
    match kernel {
        Kernel::Crc32c => CRC32C,
        Kernel::Ipv4Verify => IPV4_VERIFY,
        Kernel::Ipv4Update => IPV4_UPDATE,
        Kernel::RssHash => RSS_HASH,
        Kernel::PatternMatch => PATTERN_MATCH,
    }
}
