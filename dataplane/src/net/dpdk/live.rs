//! The backend's API over a compiled-in DPDK: the functions of the parent
//! module, on top of `eal`, `port` and `pool`.

use super::config::EalConfig;
use super::status::{EalInfo, EalState, PoolState, PoolStatus, ShutdownReport};
use super::{eal, pool, port};
use crate::backend::Probe;
use crate::net::PortConfig;
use crate::{Error, Result};
use std::sync::Arc;

pub use port::DpdkPort;

pub(super) fn probe() -> Probe {
    let build = format!("DPDK {} ({} link)", dpdk_sys::VERSION, dpdk_sys::LINK);
    match eal::state() {
        EalState::Ready(info) => Probe::ok(format!(
            "{build}; EAL running on {} (IOVA {}): {}",
            if info.hugepages {
                "hugepages"
            } else {
                "4 KiB pages"
            },
            info.iova,
            info.args.get(1..).unwrap_or_default().join(" ")
        )),
        EalState::Failed(why) => Probe::unavailable(format!("{build}; the EAL failed: {why}")),
        EalState::ShutDown => Probe::unavailable(format!("{build}; the EAL was shut down")),
        EalState::Unavailable(why) => Probe::unavailable(why),
        EalState::NotInitialised => {
            let args = eal::pending_args().unwrap_or_default();
            Probe::ok(format!(
                "{build} compiled in; the EAL starts at the first open with: {}",
                args.get(1..).unwrap_or_default().join(" ")
            ))
        }
    }
}

pub(super) fn open(cfg: &PortConfig) -> Result<Vec<DpdkPort>> {
    port::open(cfg)
}

pub(super) fn configure(config: EalConfig) -> Result<()> {
    eal::configure(config)
}

pub(super) fn init() -> Result<Arc<EalInfo>> {
    eal::init()
}

pub(super) fn state() -> EalState {
    eal::state()
}

pub(super) fn pools() -> Vec<PoolStatus> {
    pool::statuses()
}

pub(super) fn port_names() -> Vec<String> {
    match eal::state() {
        EalState::Ready(_) => port::port_names(),
        _ => Vec::new(),
    }
}

pub(super) fn lcore_id() -> Option<u32> {
    match eal::state() {
        EalState::Ready(_) => eal::lcore_id(),
        _ => None,
    }
}

pub(super) fn shutdown() -> Result<ShutdownReport> {
    let open = port::open_count();
    if open > 0 {
        return Err(Error::Config(format!(
            "{open} DPDK port(s) still open: drop their queues before the shutdown"
        )));
    }
    let draining = pool::statuses()
        .iter()
        .filter(|p| p.state == PoolState::Draining)
        .count();
    let waiting = pool::retry();
    let pools_leaked = pool::leaked();
    for (name, out) in &pools_leaked {
        tracing::warn!(pool = %name, out, "DPDK pool not freed at shutdown: mbufs still out");
    }
    let eal_cleaned_up = matches!(eal::state(), EalState::Ready(_));
    eal::cleanup()?;
    Ok(ShutdownReport {
        pools_freed: draining - waiting,
        pools_leaked,
        eal_cleaned_up,
    })
}
