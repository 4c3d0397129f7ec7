//! The SPDK NVMe backend: `spdk_nvme_probe` over PCIe (vfio-pci) or
//! NVMe-oF TCP, one I/O qpair per lcore, reads and writes straight from
//! hugepage buffers, completions reaped by
//! `spdk_nvme_qpair_process_completions` in the lcore's poll loop: no
//! locks, no interrupts, no system calls on PCIe. Without SPDK in the
//! build (see `spdk-sys`) it only says why.

use super::{Backend, Device, DeviceConfig, Target};
use crate::backend::Probe;
use crate::{Error, Result};
use std::sync::Arc;

/// The SPDK NVMe backend.
#[derive(Debug)]
pub(crate) struct Spdk;

impl Backend for Spdk {
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
        #[cfg(spdk)]
        {
            driver::open(cfg)
        }
        #[cfg(not(spdk))]
        {
            Err(Error::Config(format!(
                "cannot open {}: {}",
                cfg.target,
                self.probe().reason
            )))
        }
    }
}

/// A transport ID in SPDK's syntax and the namespace asked for: a PCI
/// address becomes `trtype:PCIe traddr:...`; an `ns:N` word is ours.
#[cfg_attr(not(spdk), allow(dead_code))]
fn split_target(target: &str) -> Result<(String, Option<u32>)> {
    let mut nsid = None;
    let mut words = Vec::new();
    for w in target.split_whitespace() {
        match w.strip_prefix("ns:").or_else(|| w.strip_prefix("ns=")) {
            Some(n) => {
                nsid = Some(n.parse::<u32>().map_err(|_| {
                    Error::Config(format!("{target}: namespace {n:?} is not a number"))
                })?);
            }
            None => words.push(w),
        }
    }
    let trid = words.join(" ");
    if !trid.contains("trtype") {
        return Ok((format!("trtype:PCIe traddr:{trid}"), nsid));
    }
    Ok((trid, nsid))
}

#[cfg(spdk)]
mod driver;

#[cfg(test)]
mod tests {
    use super::split_target;

    #[test]
    fn targets_split() {
        let (t, ns) = split_target("0000:03:00.0").expect("a PCI address");
        assert_eq!(t, "trtype:PCIe traddr:0000:03:00.0");
        assert_eq!(ns, None);
        let (t, ns) = split_target("trtype:TCP traddr:127.0.0.1 trsvcid:4420 ns:2").expect("ok");
        assert_eq!(t, "trtype:TCP traddr:127.0.0.1 trsvcid:4420");
        assert_eq!(ns, Some(2));
        assert!(split_target("trtype:TCP ns:x").is_err());
    }
}
