//! NVMe-style queue pairs owned by lcores: SPDK NVMe, io_uring, psync and
//! RAM-disk backends behind one `Queue` trait.

use crate::topology::BackendProbe;

/// Every storage backend, in selection order, with whether it can run here.
pub fn probes() -> Vec<BackendProbe> {
    Vec::new()
}
