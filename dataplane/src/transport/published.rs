//! A transport's counters where other threads can read them: the lcore
//! that owns the [`Transport`](super::Transport) stores its [`Stats`]
//! now and then (every few hundred passes, say), and a metrics scrape or
//! a stats line reads them, with no lock and nothing on the fast path.

use super::Stats;
use crossbeam_utils::CachePadded;
use std::sync::atomic::{AtomicU64, Ordering};

/// One counter: its name (a [`Stats`] field), what it counts, whether it
/// is a gauge (a level, not a running count), and how to read it.
type Field = (&'static str, &'static str, bool, fn(&Stats) -> u64);

/// Every counter of [`Stats`] but the engine's system-call counts.
const FIELDS: [Field; 17] = [
    ("passes", "Calls of poll", false, |s| s.passes),
    ("accepted", "Connections accepted", false, |s| s.accepted),
    (
        "connected",
        "Outbound connections established",
        false,
        |s| s.connected,
    ),
    (
        "connect_failed",
        "Outbound connections that failed to connect",
        false,
        |s| s.connect_failed,
    ),
    ("closed", "Connections ended, for any reason", false, |s| {
        s.closed
    }),
    ("reset", "Connections reset by the peer", false, |s| s.reset),
    ("timed_out", "Connections ended by a timeout", false, |s| {
        s.timed_out
    }),
    (
        "accept_paused",
        "Passes that left connections waiting at max_connections",
        false,
        |s| s.accept_paused,
    ),
    ("open", "Connections open", true, |s| s.open),
    ("rx_bytes", "Bytes received on connections", false, |s| {
        s.rx_bytes
    }),
    ("tx_bytes", "Bytes sent on connections", false, |s| {
        s.tx_bytes
    }),
    (
        "tx_full",
        "Writes that found the send buffer full",
        false,
        |s| s.tx_full,
    ),
    ("datagrams_rx", "Datagrams received", false, |s| {
        s.datagrams_rx
    }),
    ("datagrams_tx", "Datagrams sent", false, |s| s.datagrams_tx),
    (
        "datagrams_dropped",
        "Datagrams dropped: too long, or the send queue full",
        false,
        |s| s.datagrams_truncated + s.datagrams_tx_dropped,
    ),
    ("tls_handshakes", "TLS handshakes completed", false, |s| {
        s.tls_handshakes
    }),
    (
        "tls_failed",
        "Connections ended by a TLS failure",
        false,
        |s| s.tls_failed,
    ),
];

/// A transport's [`Stats`] as the owner last published them.
#[derive(Debug, Default)]
pub struct PublishedStats {
    values: CachePadded<[AtomicU64; FIELDS.len()]>,
}

/// One published counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The [`Stats`] field (`datagrams_dropped` sums the two drop counts).
    pub name: &'static str,
    /// What it counts.
    pub help: &'static str,
    /// A level (connections open) rather than a running count.
    pub gauge: bool,
    /// Its value when last published.
    pub value: u64,
}

impl PublishedStats {
    /// Zeros, until the owner publishes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `stats` for readers. Each counter is stored on its own
    /// (Relaxed: a reader may see one counter of a later publication
    /// beside another of an earlier one; none goes backwards).
    pub fn publish(&self, stats: &Stats) {
        for (slot, field) in self.values.iter().zip(FIELDS) {
            slot.store(field.3(stats), Ordering::Relaxed);
        }
    }

    /// Every counter as last published.
    pub fn read(&self) -> impl Iterator<Item = Published> + '_ {
        self.values
            .iter()
            .zip(FIELDS)
            .map(|(slot, (name, help, gauge, _))| Published {
                name,
                help,
                gauge,
                value: slot.load(Ordering::Relaxed),
            })
    }

    /// The counter called `name`, as last published.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.read().find(|p| p.name == name).map(|p| p.value)
    }
}

#[cfg(test)]
mod tests {
    use super::{PublishedStats, Stats};

    #[test]
    fn readers_see_what_was_published_by_name() {
        let p = PublishedStats::new();
        assert_eq!(p.get("accepted"), Some(0));
        p.publish(&Stats {
            accepted: 3,
            open: 2,
            tls_failed: 1,
            datagrams_truncated: 4,
            datagrams_tx_dropped: 5,
            ..Stats::default()
        });
        assert_eq!(p.get("accepted"), Some(3));
        assert_eq!(p.get("tls_failed"), Some(1));
        assert_eq!(p.get("datagrams_dropped"), Some(9));
        assert_eq!(p.get("nonesuch"), None);
        let open = p.read().find(|x| x.name == "open").expect("open");
        assert!(open.gauge && open.value == 2);
        assert_eq!(p.read().filter(|x| x.gauge).count(), 1);
    }
}
