//! Ports as a program opened them: each device with what selection found,
//! its summary for the report, and its queues dealt out to data lcores.

use super::counters::LcoreCounters;
use dataplane::backend::Skip;
use dataplane::lcore::PollContext;
use dataplane::net::{DropReason, Opened, Port, QueueStats, TxBuffer};
use serde::Serialize;
use std::sync::Arc;

/// A port as opened: the device string and what selection found.
#[derive(Debug)]
pub struct OpenedPort {
    /// The device as given.
    pub device: String,
    /// The backend, the queues and the skipped backends.
    pub opened: Opened,
}

/// The summaries of the ports, then their queues dealt out: element i
/// holds queue i of every port, in port order, for data lcore i.
pub fn deal_queues(ports: Vec<OpenedPort>) -> (Vec<PortSummary>, Vec<Vec<Box<dyn Port>>>) {
    let summaries = ports.iter().map(PortSummary::of).collect();
    let queues = ports
        .iter()
        .map(|p| p.opened.value.len())
        .min()
        .unwrap_or(0);
    let mut per_lcore: Vec<Vec<Box<dyn Port>>> = (0..queues).map(|_| Vec::new()).collect();
    for p in ports {
        for (q, port) in p.opened.value.into_iter().enumerate().take(queues) {
            per_lcore[q].push(port);
        }
    }
    (summaries, per_lcore)
}

/// One port in the summary.
#[derive(Debug, Clone, Serialize)]
pub struct PortSummary {
    /// The device as given.
    pub device: String,
    /// The backend that opened it.
    pub backend: &'static str,
    /// Queues opened.
    pub queues: usize,
    /// The MAC address, for L2 ports.
    pub mac: Option<String>,
    /// Backends passed over for it, with their reasons.
    pub skipped: Vec<Skip>,
}

impl PortSummary {
    /// The summary of an opened port.
    pub fn of(p: &OpenedPort) -> PortSummary {
        let mac = p.opened.value.first().and_then(|q| q.capabilities().mac);
        PortSummary {
            device: p.device.clone(),
            backend: p.opened.backend.name(),
            queues: p.opened.value.len(),
            mac: mac.map(|m| {
                m.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":")
            }),
            skipped: p.opened.skipped.clone(),
        }
    }
}

/// An lcore's counters: its own (`app`: drops it decided), plus every
/// port's, plus what its transmit buffers dropped when full.
pub fn lcore_totals(app: QueueStats, ports: &[Box<dyn Port>], tx: &[TxBuffer]) -> QueueStats {
    let mut s = app;
    for p in ports {
        s.add(&p.stats());
    }
    let dropped: u64 = tx.iter().map(TxBuffer::dropped).sum();
    s.drop_n(DropReason::TxFull, dropped);
    s
}

/// Gives each transmit buffer its pass: flushed when the lcore is
/// stopping, else sent when full or past its drain time. Returns the
/// packets sent and those still held.
pub fn service_tx(
    tx: &mut [TxBuffer],
    ports: &mut [Box<dyn Port>],
    ctx: &PollContext,
) -> (usize, usize) {
    let now = ctx.now();
    let (mut sent, mut held) = (0, 0);
    for (buf, port) in tx.iter_mut().zip(ports.iter_mut()) {
        sent += if ctx.stopping() {
            buf.flush(port)
        } else {
            buf.poll(port, now)
        };
        held += buf.len();
    }
    (sent, held)
}

/// Publishes each port queue's counters, with its transmit buffer's drops,
/// into `out` (one per port, in port order): what telemetry and metrics
/// read per port. Called by the owning lcore with its totals.
pub fn publish_ports(ports: &[Box<dyn Port>], tx: &[TxBuffer], out: &[Arc<LcoreCounters>]) {
    for (i, (port, c)) in ports.iter().zip(out).enumerate() {
        let mut s = port.stats();
        if let Some(t) = tx.get(i) {
            s.drop_n(DropReason::TxFull, t.dropped());
        }
        c.publish(&s);
    }
}
