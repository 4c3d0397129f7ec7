//! ICMP destination-unreachable messages (RFC 792), both ways, and
//! time exceeded for a datagram whose fragments never all came.
//!
//! **Sent**: a UDP datagram for a port with no socket is answered with
//! port unreachable (type 3, code 3) quoting its IP header and the first
//! eight bytes of the datagram, as RFC 1122 section 4.1.3.1 asks, so a
//! peer's connected socket sees `ECONNREFUSED` instead of waiting; a
//! datagram given up in reassembly whose first fragment came gets
//! "fragment reassembly time exceeded" (type 11, code 1) quoting that
//! fragment. Never for a datagram from an address that is not unicast,
//! and at most
//! [`ICMP_PER_SEC`] a second with bursts of [`ICMP_BURST`] (Linux's
//! `icmp_msgs_per_sec` and `icmp_msgs_burst`), so a flood to closed ports
//! cannot turn the stack into an amplifier.
//!
//! **Received**: the quoted header names the connection. A connection
//! still opening (SYN-SENT) ends with `ConnectFailed` and the error the
//! code maps to (port unreachable: `ECONNREFUSED`, host unreachable:
//! `EHOSTUNREACH`, ...), as Linux does; an established one only counts
//! it, as a soft error (RFC 1122 section 4.2.3.9). The quoted sequence
//! number must lie in what the connection has sent and not seen
//! acknowledged, or the message is ignored (RFC 5927 section 4.1): a
//! forger must guess it. "Fragmentation needed" (code 4, RFC 1191) about
//! a segment in flight shrinks the connection's segments to the next
//! hop's MTU (never below 512 bytes of payload, Linux's floor) and sends
//! what is unacknowledged again at that size: the stack sets DF on all it
//! sends, so without this a path with a smaller MTU would swallow every
//! full-sized segment.

use super::tcb::Seq;
use super::{FlowKey, Stack};
use crate::net::Port;
use crate::wire::{EthernetAddress, IpProtocol, Ipv4Repr, checksum};
use std::net::Ipv4Addr;
use std::time::Instant;

/// Destination-unreachable messages sent per second, at most.
pub(super) const ICMP_PER_SEC: u32 = 1000;
/// The most sent in a burst.
pub(super) const ICMP_BURST: u32 = 50;

/// Destination unreachable (RFC 792).
const DEST_UNREACHABLE: u8 = 3;
/// Its code for a port with nothing behind it.
const PORT_UNREACHABLE: u8 = 3;
/// Its code for "fragmentation needed and DF set" (RFC 1191).
const FRAG_NEEDED: u8 = 4;
/// Time exceeded (RFC 792).
const TIME_EXCEEDED: u8 = 11;
/// Its code for a datagram whose fragments did not all come in time.
const REASSEMBLY_TIME_EXCEEDED: u8 = 1;

/// A token bucket for the messages we send.
#[derive(Debug)]
pub(super) struct IcmpBudget {
    tokens: u32,
    at: Instant,
}

impl IcmpBudget {
    pub(super) fn new(now: Instant) -> Self {
        IcmpBudget {
            tokens: ICMP_BURST,
            at: now,
        }
    }

    /// Takes a token if there is one.
    fn take(&mut self, now: Instant) -> bool {
        let earned = now.saturating_duration_since(self.at).as_micros() * u128::from(ICMP_PER_SEC)
            / 1_000_000;
        if earned > 0 {
            self.tokens = (u128::from(self.tokens) + earned).min(u128::from(ICMP_BURST)) as u32;
            self.at = now;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

impl<P: Port> Stack<P> {
    /// Answers a datagram that no socket takes with port unreachable:
    /// `ip_header` and `datagram` as received (the quote is the header and
    /// the datagram's first eight bytes).
    pub(super) fn port_unreachable(
        &mut self,
        src_mac: EthernetAddress,
        ip: &Ipv4Repr,
        ip_header: &[u8],
        datagram: &[u8],
    ) {
        let message = (DEST_UNREACHABLE, PORT_UNREACHABLE);
        if self.icmp_error(src_mac, ip, ip_header, datagram, message) {
            self.io.stats.icmp_unreachable_sent += 1;
        }
    }

    /// Tells the sender of a datagram given up in reassembly (RFC 792's
    /// "fragment reassembly time exceeded", quoting its first fragment).
    pub(super) fn time_exceeded(&mut self, e: &super::frag::Expired) {
        let message = (TIME_EXCEEDED, REASSEMBLY_TIME_EXCEEDED);
        if self.icmp_error(e.mac, &e.ip, &e.header, &e.first, message) {
            self.io.stats.icmp_time_exceeded_sent += 1;
        }
    }

    /// An ICMP error of `(type, code)` to `ip`'s sender quoting its
    /// header and the first eight bytes of `datagram`; false if not sent
    /// (a sender that is not unicast, or the rate limit, counted).
    fn icmp_error(
        &mut self,
        src_mac: EthernetAddress,
        ip: &Ipv4Repr,
        ip_header: &[u8],
        datagram: &[u8],
        (kind, code): (u8, u8),
    ) -> bool {
        let src = ip.src_addr;
        if src.is_broadcast() || src.is_multicast() || src.is_unspecified() {
            return false;
        }
        if !self.icmp_budget.take(self.now) {
            self.io.stats.icmp_limited += 1;
            return false;
        }
        let quote = datagram.len().min(8);
        let reply = self
            .io
            .ip_to(src, IpProtocol::ICMP, 8 + ip_header.len() + quote);
        self.io.send_ip(src_mac, reply, |out| {
            out[..8].copy_from_slice(&[kind, code, 0, 0, 0, 0, 0, 0]);
            out[8..8 + ip_header.len()].copy_from_slice(ip_header);
            out[8 + ip_header.len()..].copy_from_slice(&datagram[..quote]);
            let sum = !checksum::data(out);
            out[2..4].copy_from_slice(&sum.to_be_bytes());
        });
        true
    }

    /// A destination-unreachable message (`body`: the ICMP message, its
    /// checksum already checked).
    pub(super) fn unreachable_received(&mut self, body: &[u8]) {
        let code = body[1];
        let inner = &body[8..];
        let Some(&first) = inner.first() else {
            self.io.stats.rx_malformed += 1;
            return;
        };
        let ihl = usize::from(first & 0xf) * 4;
        if first >> 4 != 4 || ihl < 20 || inner.len() < ihl + 8 {
            self.io.stats.rx_malformed += 1;
            return;
        }
        let addr =
            |at: usize| Ipv4Addr::new(inner[at], inner[at + 1], inner[at + 2], inner[at + 3]);
        let (src, dst) = (addr(12), addr(16));
        if src != self.io.addr {
            self.io.stats.rx_ignored += 1;
            return;
        }
        self.io.stats.icmp_unreachable_received += 1;
        if inner[9] != 6 {
            return;
        }
        let l4 = &inner[ihl..];
        let key = FlowKey {
            local_port: u16::from_be_bytes([l4[0], l4[1]]),
            remote: dst,
            remote_port: u16::from_be_bytes([l4[2], l4[3]]),
        };
        let seq = Seq(u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]]));
        if code == FRAG_NEEDED {
            // The next hop's MTU (RFC 1191), in the second half of the
            // header's unused word; 0 from routers older than it.
            let mtu = u16::from_be_bytes([body[6], body[7]]);
            if mtu >= 68
                && let Some(&index) = self.flows.get(&key)
                && let Some(conn) = self.conns.get_index_mut(index)
                && conn.key == key
                && conn.tcb.path_mtu(seq, mtu)
            {
                let generation = conn.generation;
                self.mark(index, generation);
            }
            return;
        }
        let errno = match code {
            0 | 6 | 9 | 11 => libc::ENETUNREACH,
            2 => libc::ENOPROTOOPT,
            PORT_UNREACHABLE => libc::ECONNREFUSED,
            13 => libc::EACCES,
            _ => libc::EHOSTUNREACH,
        };
        if let Some(&index) = self.flows.get(&key)
            && let Some(conn) = self.conns.get_index_mut(index)
            && conn.key == key
            && conn.tcb.unreachable(seq, errno)
        {
            let generation = conn.generation;
            self.mark(index, generation);
        }
    }
}
