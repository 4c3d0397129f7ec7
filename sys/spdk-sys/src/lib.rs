//! Bindings to an installed SPDK's NVMe driver.
//!
//! The build script asks pkg-config for `spdk_nvme`, `spdk_env_dpdk` and
//! `spdk_syslibs` (SPDK 24.09 or newer; SPDK has no distribution package,
//! so `PKG_CONFIG_PATH` must name the install's `lib/pkgconfig`). When
//! they are found the crate sets `cfg(spdk)` and holds:
//!
//! - bindgen's bindings of the NVMe driver and env functions the storage
//!   backend uses (an allow-list, in `build.rs`), with the controller,
//!   namespace, qpair and completion types opaque;
//! - the shim (`csrc/shim.c`): SPDK's static inline functions and macros
//!   (`spdk_nvme_cpl_is_error`, `spdk_nvme_trtype_is_fabrics`), bitfields of
//!   the identify data and completions, and the option structures whose
//!   size SPDK checks, as real functions named `dp_spdk_*`.
//!
//! SPDK's libraries are linked statically and whole-archive, as SPDK
//! requires. When SPDK is not found the crate is empty apart from
//! [`AVAILABLE`], [`VERSION`] and [`REASON`], which say why, so that callers
//! can report the missing backend instead of failing to build.
//!
//! Everything here is a raw binding: the safe layer is the `dataplane`
//! crate's `block` SPDK backend.
#![no_std]

/// Whether SPDK was found when this crate was built.
pub const AVAILABLE: bool = cfg!(spdk);

/// The SPDK release (`spdk/version.h`, e.g. `26.09-pre`), or `""` when
/// SPDK was not found.
pub const VERSION: &str = env!("SPDK_SYS_VERSION");

/// Why the library is or is not available, in one line, for logs and `dp-info`.
pub const REASON: &str = env!("SPDK_SYS_REASON");

/// The generated bindings and the shim's declarations.
#[cfg(spdk)]
#[allow(
    non_camel_case_types,
    non_upper_case_globals,
    non_snake_case,
    dead_code,
    missing_docs,
    missing_debug_implementations,
    unsafe_op_in_unsafe_fn,
    unnecessary_transmutes,
    clippy::all,
    clippy::pedantic,
    clippy::undocumented_unsafe_blocks,
    clippy::multiple_unsafe_ops_per_block
)]
mod bindings {
    include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
}

#[cfg(spdk)]
pub use bindings::*;

#[cfg(test)]
mod tests {
    #[test]
    fn reason_agrees_with_availability() {
        assert!(!super::REASON.is_empty());
        assert_eq!(super::AVAILABLE, !super::VERSION.is_empty());
    }

    /// The version string names the headers the bindings came from.
    #[cfg(spdk)]
    #[test]
    fn version_matches_the_headers() {
        let major = super::SPDK_VERSION_MAJOR;
        let mut digits = [0u8; 4];
        let text = super::VERSION.as_bytes();
        digits[..2].copy_from_slice(&text[..2]);
        let parsed = u32::from(digits[0] - b'0') * 10 + u32::from(digits[1] - b'0');
        assert_eq!(parsed, major);
    }
}
