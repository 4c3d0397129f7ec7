//! The DPDK ethdev backend.

use super::{Backend, Port, PortConfig};
use crate::topology::Probe;

/// The DPDK backend.
#[derive(Debug)]
pub(crate) struct Dpdk;

impl Backend for Dpdk {
    fn name(&self) -> &'static str {
        "dpdk"
    }

    fn probe(&self) -> Probe {
        Probe::unavailable("the DPDK ethdev backend is not built yet")
    }

    fn open(&self, cfg: &PortConfig) -> crate::Result<Vec<Box<dyn Port>>> {
        Err(crate::Error::Config(format!(
            "cannot open {}: {}",
            cfg.device,
            self.probe().reason
        )))
    }
}
