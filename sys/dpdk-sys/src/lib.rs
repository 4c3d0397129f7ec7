//! Bindings to the system's DPDK.
//!
//! The build script asks pkg-config for `libdpdk` (22.11 or a newer LTS).
//! When it is found the crate sets `cfg(dpdk)` and holds:
//!
//! - bindgen's bindings of the EAL, ethdev, mempool and mbuf functions and
//!   types the framework uses (an allow-list, in `build.rs`);
//! - [`eth_rx_burst`] and [`eth_tx_burst`]: DPDK's inline
//!   `rte_eth_rx_burst`/`rte_eth_tx_burst` written again in Rust over the
//!   same public table (`rte_eth_fp_ops`), so that the driver is called
//!   from the caller's loop with no function in between;
//! - the shim (`csrc/shim.c`): the rest of DPDK's static inline functions
//!   the framework needs (`rte_pktmbuf_alloc`, `_alloc_bulk`, `_free`,
//!   `rte_lcore_id`, `rte_errno`) as real functions named `dp_*`,
//!   compiled with DPDK's own flags.
//!
//! When it is not found the crate is empty apart from [`AVAILABLE`],
//! [`VERSION`], [`LINK`] and [`REASON`], which say why, so that callers can
//! report the missing backend instead of failing to build.
//!
//! Everything here is a raw binding: the safe layer is the `dataplane`
//! crate's `net::dpdk` module.
#![no_std]

/// Whether DPDK was found when this crate was built.
pub const AVAILABLE: bool = cfg!(dpdk);

/// The version pkg-config reported, or `""` when DPDK was not found.
pub const VERSION: &str = env!("DPDK_SYS_VERSION");

/// How libdpdk is linked: `"shared"` (the default: EAL loads the drivers
/// from its plugin directory) or `"static"` (`DPDK_SYS_STATIC=1` at build
/// time: every driver linked in, whole-archive); `""` without DPDK.
pub const LINK: &str = env!("DPDK_SYS_LINK");

/// Why the library is or is not available, in one line, for logs and `dp-info`.
pub const REASON: &str = env!("DPDK_SYS_REASON");

/// The generated bindings and the shim's declarations.
#[cfg(dpdk)]
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

#[cfg(dpdk)]
pub use bindings::*;

#[cfg(dpdk)]
mod burst;
#[cfg(dpdk)]
pub use burst::{eth_rx_burst, eth_tx_burst};

#[cfg(test)]
mod tests {
    #[test]
    fn reason_agrees_with_availability() {
        assert!(!super::REASON.is_empty());
        assert_eq!(super::AVAILABLE, !super::VERSION.is_empty());
        assert_eq!(super::AVAILABLE, !super::LINK.is_empty());
    }

    /// The version pkg-config reported is the version of the headers the
    /// bindings were generated from.
    #[cfg(dpdk)]
    #[test]
    fn headers_match_pkg_config() {
        let headers = alloc_free_version();
        assert!(
            super::VERSION.starts_with(headers.as_str()),
            "pkg-config says {}, rte_version.h says {}",
            super::VERSION,
            headers.as_str()
        );
    }

    /// The headers' "YY.MM.m", without an allocator (the crate is
    /// `no_std`).
    #[cfg(dpdk)]
    fn alloc_free_version() -> Version {
        use core::fmt::Write;
        let mut v = Version::default();
        let _ = write!(
            v,
            "{}.{:02}.{}",
            super::RTE_VER_YEAR,
            super::RTE_VER_MONTH,
            super::RTE_VER_MINOR
        );
        v
    }

    #[cfg(dpdk)]
    #[derive(Default)]
    struct Version {
        buf: [u8; 32],
        len: usize,
    }

    #[cfg(dpdk)]
    impl Version {
        fn as_str(&self) -> &str {
            core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
        }
    }

    #[cfg(dpdk)]
    impl core::fmt::Write for Version {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            let end = self.len + s.len();
            let dst = self.buf.get_mut(self.len..end).ok_or(core::fmt::Error)?;
            dst.copy_from_slice(s.as_bytes());
            self.len = end;
            Ok(())
        }
    }
}
