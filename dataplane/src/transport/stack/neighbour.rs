//! ARP (RFC 826) for the stack's one address: answering requests for
//! it, learning neighbours, asking for next hops, and what waits for an
//! answer (connections, and datagrams built into frames).

use super::Stack;
use crate::net::Port;
use crate::transport::CloseReason;
use crate::wire::{ArpOperation, ArpPacket, ArpRepr, EthernetAddress};
use arc_swap::ArcSwap;
use hugepages::mbuf::Mbuf;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Between two ARP requests for the same address (Linux's default
/// `retrans_time` is 1 s).
pub(super) const ARP_RETRY: Duration = Duration::from_secs(1);
/// Frames kept for next hops whose addresses are being asked for.
pub(super) const ARP_PENDING_MAX: usize = 256;
/// ARP requests before a connection waiting for the answer fails with
/// `EHOSTUNREACH` (Linux's `mcast_solicit`, 3).
pub(super) const ARP_TRIES: u32 = 3;

/// Neighbours learned by any stack of a port, for the others.
///
/// A port of several queues runs a stack per queue, and an ARP reply has
/// no ports for RSS or the fanout program to spread by: it reaches queue
/// 0, whichever stack asked. With one `SharedNeighbours` in every stack's
/// [`StackConfig::shared_neighbours`](super::StackConfig::shared_neighbours),
/// a stack publishes each neighbour it learns, and a stack waiting for
/// an answer that went elsewhere finds it here. Publishing copies the
/// table and swaps it in (`arc-swap`), which happens once per new or
/// moved neighbour; reading is a lock-free load, and only a stack whose
/// own table misses reads it. Cheap to clone (one table).
#[derive(Clone, Default)]
pub struct SharedNeighbours {
    table: Arc<ArcSwap<HashMap<Ipv4Addr, EthernetAddress>>>,
}

impl SharedNeighbours {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The MAC of `ip`, if a stack has learned it.
    pub fn get(&self, ip: Ipv4Addr) -> Option<EthernetAddress> {
        self.table.load().get(&ip).copied()
    }

    /// Records `ip` at `mac` (nothing to do when already so).
    pub fn publish(&self, ip: Ipv4Addr, mac: EthernetAddress) {
        if self.get(ip) == Some(mac) {
            return;
        }
        self.table.rcu(|t| {
            let mut t = HashMap::clone(t);
            t.insert(ip, mac);
            t
        });
    }

    /// Neighbours known.
    pub fn len(&self) -> usize {
        self.table.load().len()
    }

    /// Whether none is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Debug for SharedNeighbours {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.table.load().iter()).finish()
    }
}

/// The same table, not an equal one.
impl PartialEq for SharedNeighbours {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.table, &other.table)
    }
}

impl Eq for SharedNeighbours {}

#[derive(Debug)]
pub(super) struct Neighbour {
    pub(super) mac: Option<EthernetAddress>,
    pub(super) asked: Option<Instant>,
    pub(super) tries: u32,
}

impl<P: Port> Stack<P> {
    /// The MAC of neighbour `ip`, asking for it if unknown.
    pub(super) fn resolve(&mut self, ip: Ipv4Addr, now: Instant) -> Option<EthernetAddress> {
        let known = self.neighbours.get(&ip).and_then(|n| n.mac);
        if known.is_none()
            && let Some(mac) = self.cfg.shared_neighbours.as_ref().and_then(|s| s.get(ip))
        {
            self.learn(ip, mac);
            return Some(mac);
        }
        let n = self.neighbours.entry(ip).or_insert(Neighbour {
            mac: None,
            asked: None,
            tries: 0,
        });
        if n.mac.is_some() {
            return n.mac;
        }
        if n.asked.is_none_or(|t| now.duration_since(t) >= ARP_RETRY) && n.tries < ARP_TRIES {
            n.asked = Some(now);
            n.tries += 1;
            self.io.send_arp(ArpRepr {
                operation: ArpOperation::REQUEST,
                sender_hardware_addr: self.io.mac,
                sender_protocol_addr: self.io.addr,
                target_hardware_addr: EthernetAddress([0; 6]),
                target_protocol_addr: ip,
            });
            self.io.stats.arp_requests += 1;
        }
        None
    }

    /// Records `ip` at `mac` and wakes the connections waiting for it.
    pub(super) fn learn(&mut self, ip: Ipv4Addr, mac: EthernetAddress) {
        if let Some(s) = &self.cfg.shared_neighbours {
            s.publish(ip, mac);
        }
        self.neighbours.insert(
            ip,
            Neighbour {
                mac: Some(mac),
                asked: None,
                tries: 0,
            },
        );
        // In the order they were sent.
        for (hop, m) in std::mem::take(&mut self.arp_pending) {
            if hop == ip {
                self.io.queue_to(m, mac);
            } else {
                self.arp_pending.push((hop, m));
            }
        }
        let mut i = 0;
        while i < self.arp_waiting.len() {
            let (hop, index, generation) = self.arp_waiting[i];
            if hop == ip {
                self.arp_waiting.swap_remove(i);
                if let Some(conn) = self.conns.get_mut(index, generation) {
                    conn.next_hop = Some(mac);
                    self.mark(index, generation);
                }
            } else {
                i += 1;
            }
        }
    }

    /// Asks again (once per [`ARP_RETRY`]) for next hops that have not
    /// answered, while a connection waits for one.
    pub(super) fn arp_retry(&mut self) {
        let now = self.now;
        // Answers another stack of the port received (an ARP reply reaches
        // queue 0 whoever asked).
        if let Some(shared) = self.cfg.shared_neighbours.clone() {
            let found: Vec<(Ipv4Addr, EthernetAddress)> = self
                .arp_waiting
                .iter()
                .map(|w| w.0)
                .chain(self.arp_pending.iter().map(|p| p.0))
                .filter(|ip| self.neighbours.get(ip).is_none_or(|n| n.mac.is_none()))
                .filter_map(|ip| shared.get(ip).map(|mac| (ip, mac)))
                .collect();
            for (ip, mac) in found {
                self.learn(ip, mac);
            }
        }
        let conns = &self.conns;
        self.arp_waiting.retain(|&(_, index, generation)| {
            conns
                .get(index, generation)
                .is_some_and(|c| c.next_hop.is_none())
        });
        let mut i = 0;
        while i < self.arp_waiting.len() {
            let (ip, index, generation) = self.arp_waiting[i];
            self.resolve(ip, now);
            let gave_up = self.neighbours.get(&ip).is_some_and(|n| {
                n.tries >= ARP_TRIES && n.asked.is_some_and(|t| now.duration_since(t) >= ARP_RETRY)
            });
            if gave_up {
                self.arp_waiting.swap_remove(i);
                self.neighbours.remove(&ip);
                if let Some(conn) = self.conns.get_mut(index, generation) {
                    conn.tcb
                        .fail(CloseReason::ConnectFailed(libc::EHOSTUNREACH));
                    self.io.stats.arp_failed += 1;
                }
                self.mark(index, generation);
            } else {
                i += 1;
            }
        }
        let mut k = 0;
        while k < self.arp_pending.len() {
            let ip = self.arp_pending[k].0;
            self.resolve(ip, now);
            let gave_up = self.neighbours.get(&ip).is_some_and(|n| {
                n.tries >= ARP_TRIES && n.asked.is_some_and(|t| now.duration_since(t) >= ARP_RETRY)
            });
            if gave_up {
                drop(self.arp_pending.swap_remove(k));
                self.io.stats.udp_tx_dropped += 1;
            } else {
                k += 1;
            }
        }
        if self.arp_pending.is_empty() && self.arp_waiting.is_empty() {
            self.neighbours
                .retain(|_, n| n.mac.is_some() || n.tries < ARP_TRIES);
        }
    }

    /// Keeps a frame (built, no destination MAC yet) until ARP answers for
    /// `hop`; the oldest goes when too many wait.
    pub(super) fn park(&mut self, hop: Ipv4Addr, m: Mbuf) {
        if self.arp_pending.len() >= ARP_PENDING_MAX {
            drop(self.arp_pending.remove(0));
            self.io.stats.udp_tx_dropped += 1;
        }
        self.arp_pending.push((hop, m));
    }

    /// RFC 826's packet reception, for our one address.
    pub(super) fn arp(&mut self, payload: &[u8]) {
        let Ok(packet) = ArpPacket::new_checked(payload) else {
            self.io.stats.rx_malformed += 1;
            return;
        };
        let Ok(repr) = ArpRepr::parse(&packet) else {
            self.io.stats.rx_malformed += 1;
            return;
        };
        let for_us = repr.target_protocol_addr == self.io.addr;
        let known = self.neighbours.contains_key(&repr.sender_protocol_addr);
        // Merge: update a known sender; add one that is talking to us.
        if (known || for_us) && repr.sender_hardware_addr.is_unicast() {
            self.learn(repr.sender_protocol_addr, repr.sender_hardware_addr);
        }
        if for_us && repr.operation == ArpOperation::REQUEST {
            self.io.send_arp(repr.reply(self.io.mac));
            self.io.stats.arp_replies += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SharedNeighbours;
    use crate::wire::EthernetAddress;
    use std::net::Ipv4Addr;

    #[test]
    fn a_published_neighbour_is_seen_through_every_clone() {
        let a = SharedNeighbours::new();
        let b = a.clone();
        assert_eq!(a, b, "clones are one table");
        assert_ne!(a, SharedNeighbours::new());
        let ip = Ipv4Addr::new(10, 0, 0, 2);
        assert!(b.get(ip).is_none() && b.is_empty());
        a.publish(ip, EthernetAddress([2, 0, 0, 0, 0, 2]));
        assert_eq!(b.get(ip), Some(EthernetAddress([2, 0, 0, 0, 0, 2])));
        // A neighbour that moved is updated; the same answer is no change.
        b.publish(ip, EthernetAddress([2, 0, 0, 0, 0, 3]));
        b.publish(ip, EthernetAddress([2, 0, 0, 0, 0, 3]));
        assert_eq!(a.get(ip), Some(EthernetAddress([2, 0, 0, 0, 0, 3])));
        assert_eq!(a.len(), 1);
        // Publishers on several threads lose nothing.
        std::thread::scope(|s| {
            for t in 0..4u8 {
                let n = a.clone();
                s.spawn(move || {
                    for i in 0..50u8 {
                        n.publish(
                            Ipv4Addr::new(10, 1, t, i),
                            EthernetAddress([2, 0, 0, 0, t, i]),
                        );
                    }
                });
            }
        });
        assert_eq!(a.len(), 1 + 4 * 50);
    }
}
