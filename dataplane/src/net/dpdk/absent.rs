//! The backend's API where DPDK is not compiled in: every call says why.

use super::config::EalConfig;
use super::status::{EalInfo, EalState, PoolStatus};
use crate::net::{
    Capabilities, LinkStatus, MbufBatch, Port, PortConfig, PortId, QueueId, QueueStats,
};
use crate::{Error, Result};
use std::sync::Arc;

fn reason() -> String {
    format!("DPDK is not compiled in: {}", dpdk_sys::REASON)
}

fn error() -> Error {
    Error::Config(format!("the DPDK backend is unavailable: {}", reason()))
}

/// A DPDK queue. A build without DPDK never makes one (its field is
/// private and nothing constructs it); its methods answer like an idle
/// queue.
#[derive(Debug)]
pub struct DpdkPort {
    caps: Capabilities,
}

impl DpdkPort {
    /// The port's DPDK name.
    pub fn name(&self) -> &str {
        ""
    }

    /// The ethdev port id.
    pub fn port_id(&self) -> u16 {
        0
    }

    /// The rx and tx queue id this handle owns on its port.
    pub fn queue_id(&self) -> u16 {
        0
    }

    /// The port's MAC address.
    pub fn mac_address(&self) -> [u8; 6] {
        [0; 6]
    }

    /// Native mbufs copied into DPDK mbufs to send them.
    pub fn native_copies(&self) -> u64 {
        0
    }

    /// Whether a burst of the queue's own mbufs is told from native ones
    /// by address alone.
    pub fn checks_natives_by_address(&self) -> bool {
        false
    }

    /// Free mbufs in this queue's pool.
    pub fn pool_available(&self) -> u32 {
        0
    }

    /// Mbufs in this queue's pool.
    pub fn pool_size(&self) -> u32 {
        0
    }
}

/// Like the real queue, dropping one closes it (here: nothing to close).
impl Drop for DpdkPort {
    fn drop(&mut self) {}
}

impl Port for DpdkPort {
    fn rx_burst(&mut self, _out: &mut MbufBatch) -> usize {
        0
    }
    fn tx_burst(&mut self, _pkts: &mut MbufBatch) -> usize {
        0
    }
    fn alloc_burst(&mut self, _n: usize, _out: &mut MbufBatch) -> usize {
        0
    }
    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }
    fn link(&self) -> LinkStatus {
        LinkStatus {
            up: false,
            speed_mbps: None,
            full_duplex: None,
        }
    }
    fn stats(&self) -> QueueStats {
        QueueStats::default()
    }
    fn id(&self) -> (PortId, QueueId) {
        (PortId(0), QueueId(0))
    }
}

pub(super) fn open(_cfg: &PortConfig) -> Result<Vec<DpdkPort>> {
    Err(error())
}

pub(super) fn configure(_config: EalConfig) -> Result<()> {
    Err(error())
}

pub(super) fn init() -> Result<Arc<EalInfo>> {
    Err(error())
}

pub(super) fn state() -> EalState {
    EalState::Unavailable(reason())
}

pub(super) fn pools() -> Vec<PoolStatus> {
    Vec::new()
}

pub(super) fn port_names() -> Vec<String> {
    Vec::new()
}

pub(super) fn lcore_id() -> Option<u32> {
    None
}
