//! Bindings to the system's SPDK.
//!
//! The build script asks pkg-config for `spdk_nvme`. When it is found the crate
//! sets `cfg(spdk_available)`; when it is not, the crate is empty apart from
//! [`AVAILABLE`], [`VERSION`] and [`REASON`], which say why, so that callers
//! can report the missing backend instead of failing to build.
#![no_std]

/// Whether SPDK was found when this crate was built.
pub const AVAILABLE: bool = cfg!(spdk_available);

/// The version pkg-config reported, or `""` when SPDK was not found.
pub const VERSION: &str = env!("SPDK_SYS_VERSION");

/// Why the library is or is not available, in one line, for logs and `dp-info`.
pub const REASON: &str = env!("SPDK_SYS_REASON");

#[cfg(test)]
mod tests {
    #[test]
    fn reason_agrees_with_availability() {
        assert!(!super::REASON.is_empty());
        assert_eq!(super::AVAILABLE, !super::VERSION.is_empty());
    }
}
