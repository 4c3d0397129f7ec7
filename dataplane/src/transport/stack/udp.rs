//! UDP sockets of the stack (RFC 768): datagrams received stay in the rx
//! mbufs they arrived in (a socket holds the mbuf and the payload's place
//! in it, so [`Stack::peek_datagram`] is a slice of the frame, no copy),
//! at most [`StackConfig::datagram_queue`](super::StackConfig) per socket
//! (more are dropped and counted, so a socket nobody reads cannot drain
//! the port's pool). A datagram put back together from fragments is held
//! in a buffer of its own (`frag`). A datagram sent is built straight into
//! a frame, or fragments when longer than the MTU; one whose next hop is
//! still being asked for waits, built, until ARP answers (or gives up).

use super::{Io, Stack};
use crate::net::Port;
use crate::transport::{Event, UdpId};
use crate::wire::{EthernetAddress, IpPair, IpProtocol, Ipv4Repr, UdpPacket, UdpRepr, checksum};
use crate::{Error, Result};
use hugepages::mbuf::Mbuf;
use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4};

/// One socket: its port and the datagrams received and not taken.
#[derive(Debug)]
pub(super) struct UdpSock {
    port: u16,
    /// (what holds it, the sender, the payload's offset and length in it).
    queue: VecDeque<(Held, SocketAddrV4, usize, usize)>,
    /// A `Datagrams` event is due at the end of this pass.
    fresh: bool,
}

/// What holds a received datagram: the frame it arrived in, or a buffer
/// it was reassembled into.
#[derive(Debug)]
enum Held {
    Frame(Mbuf),
    Reassembled(Vec<u8>),
}

impl Held {
    fn bytes(&self) -> &[u8] {
        match self {
            Held::Frame(m) => m.data(),
            Held::Reassembled(v) => v,
        }
    }
}

/// Where a received datagram goes: the socket, the sender, and the
/// payload's place in the frame.
pub(super) struct Delivery {
    pub(super) sock: u32,
    pub(super) peer: SocketAddrV4,
    pub(super) at: usize,
    pub(super) len: usize,
}

impl<P: Port> Stack<P> {
    /// Opens a UDP socket on `port` of our address.
    ///
    /// # Errors
    /// [`Error::Config`] if the port is 0 or has a socket already.
    pub fn bind_udp(&mut self, port: u16) -> Result<UdpId> {
        if port == 0 || self.udp_by_port.contains_key(&port) {
            return Err(Error::Config(format!(
                "stack: UDP port {port} is 0 or already bound"
            )));
        }
        let i = self
            .udps
            .iter()
            .position(Option::is_none)
            .unwrap_or(self.udps.len());
        let sock = UdpSock {
            port,
            queue: VecDeque::new(),
            fresh: false,
        };
        if i == self.udps.len() {
            self.udps.push(Some(sock));
        } else {
            self.udps[i] = Some(sock);
        }
        self.udp_by_port.insert(port, i as u32);
        Ok(UdpId(i as u32))
    }

    fn udp(&self, u: UdpId) -> Result<&UdpSock> {
        self.udps
            .get(u.0 as usize)
            .and_then(Option::as_ref)
            .ok_or_else(|| Error::NotOpen(u.to_string()))
    }

    /// The address a UDP socket is bound to.
    ///
    /// # Errors
    /// [`Error::NotOpen`] for a socket that is not open.
    pub fn udp_addr(&self, u: UdpId) -> Result<SocketAddrV4> {
        Ok(SocketAddrV4::new(self.io.addr, self.udp(u)?.port))
    }

    /// Closes a UDP socket; the datagrams it held go back to the pool.
    ///
    /// # Errors
    /// [`Error::NotOpen`] for a socket that is not open.
    pub fn close_udp(&mut self, u: UdpId) -> Result<()> {
        let sock = self
            .udps
            .get_mut(u.0 as usize)
            .and_then(Option::take)
            .ok_or_else(|| Error::NotOpen(u.to_string()))?;
        self.udp_by_port.remove(&sock.port);
        Ok(())
    }

    /// The oldest datagram received and not taken: its sender and its
    /// payload, in the frame it arrived in.
    ///
    /// # Errors
    /// [`Error::NotOpen`] for a socket that is not open.
    pub fn peek_datagram(&self, u: UdpId) -> Result<Option<(SocketAddrV4, &[u8])>> {
        Ok(self
            .udp(u)?
            .queue
            .front()
            .map(|(held, peer, at, len)| (*peer, held.bytes().get(*at..at + len).unwrap_or(&[]))))
    }

    /// Takes the oldest datagram; its frame goes back to the pool.
    ///
    /// # Errors
    /// [`Error::NotOpen`] for a socket that is not open.
    pub fn consume_datagram(&mut self, u: UdpId) -> Result<()> {
        let sock = self
            .udps
            .get_mut(u.0 as usize)
            .and_then(Option::as_mut)
            .ok_or_else(|| Error::NotOpen(u.to_string()))?;
        sock.queue.pop_front();
        Ok(())
    }

    /// Sends `data` to `to` from socket `u`, built into a frame now (in
    /// fragments if longer than the MTU allows) and handed to the port at
    /// the end of the pass (or at [`Stack::flush`]). Returns false,
    /// counted, when it is refused: longer than an IPv4 datagram holds
    /// (65,507 bytes), no route, or no mbuf.
    ///
    /// # Errors
    /// [`Error::NotOpen`] for a socket that is not open.
    pub fn send_to(&mut self, u: UdpId, to: SocketAddrV4, data: &[u8]) -> Result<bool> {
        let src_port = self.udp(u)?.port;
        if data.len() > MAX_PAYLOAD {
            self.io.stats.udp_tx_dropped += 1;
            return Ok(false);
        }
        let Some(hop) = self.next_hop(*to.ip()) else {
            self.io.stats.udp_tx_dropped += 1;
            return Ok(false);
        };
        let now = self.now;
        let mac = self.resolve(hop, now);
        if data.len() + 28 > self.mtu {
            let sent = self.send_udp_fragments(src_port, to, data, mac, hop);
            if sent {
                self.io.stats.udp_tx += 1;
            } else {
                self.io.stats.udp_tx_dropped += 1;
            }
            return Ok(sent);
        }
        let Some(m) = self.io.build_udp(src_port, to, data) else {
            self.io.stats.udp_tx_dropped += 1;
            return Ok(false);
        };
        self.io.stats.udp_tx += 1;
        match mac {
            Some(mac) => self.io.queue_to(m, mac),
            None => self.park(hop, m),
        }
        Ok(true)
    }

    /// A datagram longer than one frame takes, in fragments to `mac`
    /// (or parked for `hop` until ARP answers); false if an mbuf ran out.
    fn send_udp_fragments(
        &mut self,
        src_port: u16,
        to: SocketAddrV4,
        data: &[u8],
        mac: Option<EthernetAddress>,
        hop: Ipv4Addr,
    ) -> bool {
        // The header, its checksum over the pseudo-header, itself and the
        // data (RFC 768; all ones for a sum of zero), so the data is
        // copied once, into the frames.
        let len = 8 + data.len();
        let mut header = [0u8; 8];
        header[..2].copy_from_slice(&src_port.to_be_bytes());
        header[2..4].copy_from_slice(&to.port().to_be_bytes());
        header[4..6].copy_from_slice(&(len as u16).to_be_bytes());
        let addrs = IpPair::V4 {
            src: self.io.addr,
            dst: *to.ip(),
        };
        let pseudo = checksum::pseudo_header(&addrs, IpProtocol::UDP, len as u32);
        let sum = !checksum::combine(&[pseudo, checksum::data(&header), checksum::data(data)]);
        let sum = if sum == 0 { 0xffff } else { sum };
        header[6..8].copy_from_slice(&sum.to_be_bytes());
        let ip = self.io.ip_to(*to.ip(), IpProtocol::UDP, len);
        self.send_fragments(ip, (&header, data), mac, hop)
    }

    /// Where a UDP datagram in a frame goes, if a socket takes it; counts
    /// what no socket takes or a full socket refuses.
    pub(super) fn udp_delivery(
        &mut self,
        ip: &Ipv4Repr,
        body: &[u8],
        at: usize,
    ) -> Result<Delivery, Refused> {
        let addrs = IpPair::V4 {
            src: ip.src_addr,
            dst: ip.dst_addr,
        };
        let Ok(packet) = UdpPacket::new_checked(body) else {
            self.io.stats.rx_malformed += 1;
            return Err(Refused::Dropped);
        };
        let repr = match UdpRepr::parse(&packet, &addrs, self.io.rx_l4) {
            Ok(r) => r,
            Err(crate::wire::WireError::BadChecksum(_)) => {
                self.io.stats.rx_bad_checksum += 1;
                return Err(Refused::Dropped);
            }
            Err(_) => {
                self.io.stats.rx_malformed += 1;
                return Err(Refused::Dropped);
            }
        };
        let Some(&sock) = self.udp_by_port.get(&repr.dst_port) else {
            self.io.stats.udp_no_socket += 1;
            return Err(Refused::NoSocket);
        };
        let full = self
            .udps
            .get(sock as usize)
            .and_then(Option::as_ref)
            .is_none_or(|s| s.queue.len() >= self.cfg.datagram_queue);
        if full {
            self.io.stats.udp_rx_dropped += 1;
            return Err(Refused::Dropped);
        }
        Ok(Delivery {
            sock,
            peer: SocketAddrV4::new(ip.src_addr, repr.src_port),
            at: at + UdpPacket::<&[u8]>::HEADER_LEN,
            len: repr.payload_len,
        })
    }

    /// Queues a received datagram's frame on its socket.
    pub(super) fn deliver(&mut self, m: Mbuf, d: Delivery) {
        self.hold(Held::Frame(m), d);
    }

    /// Queues a reassembled datagram (`body`: its UDP header and payload)
    /// on its socket.
    pub(super) fn deliver_reassembled(&mut self, body: Vec<u8>, d: Delivery) {
        self.hold(Held::Reassembled(body), d);
    }

    fn hold(&mut self, held: Held, d: Delivery) {
        if let Some(Some(sock)) = self.udps.get_mut(d.sock as usize) {
            self.io.stats.udp_rx += 1;
            sock.queue.push_back((held, d.peer, d.at, d.len));
            if !sock.fresh {
                sock.fresh = true;
                self.udp_fresh.push(d.sock);
            }
        }
    }

    /// One `Datagrams` event per socket that received in this pass.
    pub(super) fn udp_events(&mut self) {
        for i in self.udp_fresh.drain(..) {
            if let Some(Some(sock)) = self.udps.get_mut(i as usize) {
                sock.fresh = false;
                self.events.push_back(Event::Datagrams(UdpId(i)));
            }
        }
    }
}

/// The longest UDP payload an IPv4 datagram holds: 65,535 less the IP
/// and UDP headers.
const MAX_PAYLOAD: usize = 65_535 - 28;

/// Why a received datagram was not delivered (each counted).
pub(super) enum Refused {
    /// No socket on its port: port unreachable goes back.
    NoSocket,
    /// Malformed, a bad checksum, or its socket full.
    Dropped,
}

impl<P: Port> Io<P> {
    /// A UDP datagram from `src_port` to `to`, with no destination MAC
    /// yet (see [`Io::queue_to`]).
    fn build_udp(&mut self, src_port: u16, to: SocketAddrV4, data: &[u8]) -> Option<Mbuf> {
        let udp = UdpRepr {
            src_port,
            dst_port: to.port(),
            payload_len: data.len(),
        };
        let ip = self.ip_to(*to.ip(), IpProtocol::UDP, udp.buffer_len());
        let addrs = IpPair::V4 {
            src: self.addr,
            dst: *to.ip(),
        };
        let mode = super::io::tx_mode(self.tx_offload);
        self.build_ip(ip, |out| {
            out[8..8 + data.len()].copy_from_slice(data);
            let _ = udp.emit(&mut UdpPacket::new_unchecked(out), &addrs, mode);
        })
    }
}
