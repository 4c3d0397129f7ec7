//! ARP (RFC 826) for the stack's one address: answering requests for
//! it, learning neighbours, asking for next hops, and what waits for an
//! answer (connections, and datagrams built into frames).

use super::Stack;
use crate::net::Port;
use crate::transport::CloseReason;
use crate::wire::{ArpOperation, ArpPacket, ArpRepr, EthernetAddress};
use hugepages::mbuf::Mbuf;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// Between two ARP requests for the same address (Linux's default
/// `retrans_time` is 1 s).
pub(super) const ARP_RETRY: Duration = Duration::from_secs(1);
/// Frames kept for next hops whose addresses are being asked for.
pub(super) const ARP_PENDING_MAX: usize = 256;
/// ARP requests before a connection waiting for the answer fails with
/// `EHOSTUNREACH` (Linux's `mcast_solicit`, 3).
pub(super) const ARP_TRIES: u32 = 3;

#[derive(Debug)]
pub(super) struct Neighbour {
    pub(super) mac: Option<EthernetAddress>,
    pub(super) asked: Option<Instant>,
    pub(super) tries: u32,
}

impl<P: Port> Stack<P> {
    /// The MAC of neighbour `ip`, asking for it if unknown.
    pub(super) fn resolve(&mut self, ip: Ipv4Addr, now: Instant) -> Option<EthernetAddress> {
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
