//! Building frames and handing them to the port: the part of the stack
//! that owns the port queue, kept apart from the connections so that a
//! connection's send buffer can be read while its frame is built.

use super::tcb::{SegOut, Tcb};
use super::{FlowKey, StackStats, frag};
use crate::net::{MbufBatch, Port};
use crate::wire::{
    ArpOperation, ArpPacket, ArpRepr, ChecksumMode, EtherType, EthernetAddress, EthernetFrame,
    EthernetRepr, IpPair, IpProtocol, Ipv4Packet, Ipv4Repr, TcpPacket, TcpRepr,
};
use hugepages::mbuf::Mbuf;
use std::net::Ipv4Addr;

/// The port and what sending needs, apart from the connections so that
/// a connection's send buffer can be read while a frame is built.
pub(super) struct Io<P: Port> {
    // Fields drop in order: the mbufs go back before the port (and the
    // pool it owns) goes.
    pub(super) tx: MbufBatch,
    pub(super) spare: MbufBatch,
    pub(super) port: P,
    pub(super) mac: EthernetAddress,
    pub(super) addr: Ipv4Addr,
    pub(super) ident: u16,
    pub(super) stats: StackStats,
    /// The device computes IPv4, TCP and UDP checksums on transmit
    /// ([`Capabilities::tx_checksum`](crate::net::Capabilities::tx_checksum)).
    pub(super) tx_offload: bool,
    /// The device verifies them on receive and says so in each mbuf.
    pub(super) rx_offload: bool,
    /// How the frame being handled has its IPv4 and TCP/UDP checksums
    /// checked: by us, or not at all where the device found them good.
    pub(super) rx_ip: ChecksumMode,
    pub(super) rx_l4: ChecksumMode,
}

/// The checksum mode of what we send: the device's where it has the
/// offload.
pub(super) fn tx_mode(offload: bool) -> ChecksumMode {
    if offload {
        ChecksumMode::Offload
    } else {
        ChecksumMode::Software
    }
}

impl<P: Port> Io<P> {
    /// Reads a received mbuf's checksum flags into [`Io::rx_ip`] and
    /// [`Io::rx_l4`]; false (and counted) for a frame the device found a
    /// bad checksum in.
    pub(super) fn rx_checks(&mut self, flags: u64) -> bool {
        use hugepages::mbuf::offload as o;
        (self.rx_ip, self.rx_l4) = (ChecksumMode::Software, ChecksumMode::Software);
        if !self.rx_offload {
            return true;
        }
        let ip = flags & o::RX_IP_CKSUM_MASK;
        let l4 = flags & o::RX_L4_CKSUM_MASK;
        if ip == o::RX_IP_CKSUM_BAD || l4 == o::RX_L4_CKSUM_BAD {
            self.stats.rx_bad_checksum += 1;
            return false;
        }
        // NONE: the field is not the sum, but the device verified the
        // data, so it must not be checked here either.
        if ip == o::RX_IP_CKSUM_GOOD || ip == o::RX_IP_CKSUM_NONE {
            self.rx_ip = ChecksumMode::Offload;
        }
        if l4 == o::RX_L4_CKSUM_GOOD || l4 == o::RX_L4_CKSUM_NONE {
            self.rx_l4 = ChecksumMode::Offload;
            self.stats.rx_checksum_offloaded += 1;
        }
        true
    }

    /// An mbuf to build a frame in.
    pub(super) fn mbuf(&mut self) -> Option<hugepages::mbuf::Mbuf> {
        if self.spare.as_slice().is_empty() {
            self.port.alloc_burst(32, &mut self.spare);
        }
        let m = self.spare.pop();
        if m.is_none() {
            self.stats.tx_no_mbuf += 1;
        }
        m
    }

    /// Queues a built frame, handing the queue to the port when full.
    pub(super) fn queue(&mut self, m: hugepages::mbuf::Mbuf) {
        let m = match self.tx.push(m) {
            Ok(()) => return,
            Err(m) => m,
        };
        self.transmit();
        if let Err(m) = self.tx.push(m) {
            self.stats.tx_full += 1;
            drop(m);
        }
    }

    /// Hands the queued frames to the port; what it cannot take now is
    /// dropped and counted (TCP sends it again).
    pub(super) fn transmit(&mut self) {
        let queued = self.tx.as_slice().len();
        if queued == 0 {
            return;
        }
        let sent = self.port.tx_burst(&mut self.tx);
        self.stats.tx_frames += sent as u64;
        let left = self.tx.as_slice().len();
        if left > 0 {
            // One more try, then drop: the lcore must not spin on a
            // full queue.
            let again = self.port.tx_burst(&mut self.tx);
            self.stats.tx_frames += again as u64;
            self.stats.tx_full += self.tx.as_slice().len() as u64;
            self.tx.clear();
        }
    }

    pub(super) fn send_arp(&mut self, repr: ArpRepr) {
        let Some(mut m) = self.mbuf() else {
            return;
        };
        let dst = if repr.operation == ArpOperation::REQUEST {
            EthernetAddress::BROADCAST
        } else {
            repr.target_hardware_addr
        };
        // 14 + 28, padded to Ethernet's minimum of 60.
        let Ok(buf) = m.append(60) else {
            return;
        };
        buf.fill(0);
        let eth = EthernetRepr {
            src_addr: self.mac,
            dst_addr: dst,
            ethertype: EtherType::ARP,
        };
        let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
        if eth.emit(&mut frame).is_err() {
            return;
        }
        let mut packet = ArpPacket::new_unchecked(&mut buf[14..]);
        if repr.emit(&mut packet).is_err() {
            return;
        }
        self.queue(m);
    }

    /// Builds an IPv4 packet to `dst_mac` whose payload `fill` writes,
    /// and queues it.
    pub(super) fn send_ip(
        &mut self,
        dst_mac: EthernetAddress,
        ip: Ipv4Repr,
        fill: impl FnOnce(&mut [u8]),
    ) {
        if let Some(m) = self.build_ip(ip, fill) {
            self.queue_to(m, dst_mac);
        }
    }

    /// Sets a built frame's destination MAC and queues it.
    pub(super) fn queue_to(&mut self, mut m: Mbuf, dst_mac: EthernetAddress) {
        if let Some(d) = m.data_mut().get_mut(..6) {
            d.copy_from_slice(&dst_mac.0);
        }
        self.queue(m);
    }

    /// An IPv4 packet in a frame with no destination MAC yet, its payload
    /// written by `fill`.
    pub(super) fn build_ip(
        &mut self,
        mut ip: Ipv4Repr,
        fill: impl FnOnce(&mut [u8]),
    ) -> Option<Mbuf> {
        ip.ident = self.ident;
        self.ident = self.ident.wrapping_add(1);
        self.build_frame(ip, fill)
    }

    /// A datagram too long for one frame, as fragments (RFC 791): its
    /// payload is the transport `header` (checksum computed in software:
    /// a device sums one frame, not a datagram) and then `data`, copied
    /// straight into the frames. Each fragment but the last carries
    /// [`frag::fragment_size`] bytes; all share one identification, DF
    /// clear. The frames, with no destination MAC yet, go to `out`; false
    /// (and `out` emptied) if an mbuf ran out.
    pub(super) fn build_fragments(
        &mut self,
        mut ip: Ipv4Repr,
        (header, data): (&[u8], &[u8]),
        mtu: usize,
        out: &mut Vec<Mbuf>,
    ) -> bool {
        ip.ident = self.ident;
        self.ident = self.ident.wrapping_add(1);
        ip.dont_frag = false;
        let size = frag::fragment_size(mtu);
        let total = header.len() + data.len();
        for at in (0..total).step_by(size) {
            let len = size.min(total - at);
            let mut f = ip;
            f.frag_offset = at as u16;
            f.more_frags = at + len < total;
            f.payload_len = len;
            let fill = |out: &mut [u8]| {
                // The part of the header in this fragment, then the data.
                let h = header.get(at..).unwrap_or(&[]);
                let h = &h[..h.len().min(len)];
                out[..h.len()].copy_from_slice(h);
                let from = (at + h.len()).saturating_sub(header.len());
                out[h.len()..].copy_from_slice(&data[from..from + len - h.len()]);
            };
            match self.build_frame(f, fill) {
                Some(m) => out.push(m),
                None => {
                    out.clear();
                    return false;
                }
            }
        }
        self.stats.tx_fragmented += 1;
        true
    }

    /// One frame of `ip` (its identification set), its payload written
    /// by `fill`.
    fn build_frame(&mut self, ip: Ipv4Repr, fill: impl FnOnce(&mut [u8])) -> Option<Mbuf> {
        let dst_mac = EthernetAddress([0; 6]);
        let mut m = self.mbuf()?;
        let total = 14 + 20 + ip.payload_len;
        let Ok(buf) = m.append(total.max(60)) else {
            return None;
        };
        if total < 60 {
            buf[total..].fill(0);
        }
        let eth = EthernetRepr {
            src_addr: self.mac,
            dst_addr: dst_mac,
            ethertype: EtherType::IPV4,
        };
        if eth
            .emit(&mut EthernetFrame::new_unchecked(&mut buf[..]))
            .is_err()
        {
            return None;
        }
        if ip
            .emit(
                &mut Ipv4Packet::new_unchecked(&mut buf[14..]),
                tx_mode(self.tx_offload),
            )
            .is_err()
        {
            return None;
        }
        fill(&mut buf[34..total]);
        if self.tx_offload {
            use hugepages::mbuf::offload as o;
            // TCP and UDP headers were emitted with the pseudo-header sum
            // for the device to finish; ICMP carries its own, and so does
            // a fragment (summed over the whole datagram).
            let fragment = ip.more_frags || ip.frag_offset != 0;
            let l4 = match ip.protocol {
                _ if fragment => 0,
                IpProtocol::TCP => o::TX_TCP_CKSUM,
                IpProtocol::UDP => o::TX_UDP_CKSUM,
                _ => 0,
            };
            m.set_ol_flags(m.ol_flags() | o::TX_IPV4 | o::TX_IP_CKSUM | l4);
            m.set_tx_header_lens(14, 20, 0);
            self.stats.tx_checksum_offloaded += 1;
        }
        Some(m)
    }

    pub(super) fn send_segment(
        &mut self,
        dst_mac: EthernetAddress,
        key: &FlowKey,
        seg: &SegOut,
        tcb: &Tcb,
    ) {
        let (a, b) = tcb.payload(seg.at, seg.len);
        self.send_tcp(dst_mac, key, seg, a, b);
    }

    pub(super) fn send_bare(&mut self, dst_mac: EthernetAddress, key: &FlowKey, seg: &SegOut) {
        self.send_tcp(dst_mac, key, seg, &[], &[]);
    }

    pub(super) fn send_tcp(
        &mut self,
        dst_mac: EthernetAddress,
        key: &FlowKey,
        seg: &SegOut,
        a: &[u8],
        b: &[u8],
    ) {
        let repr = TcpRepr {
            src_port: key.local_port,
            dst_port: key.remote_port,
            seq_number: seg.seq.0,
            ack_number: seg.ack.0,
            flags: seg.flags,
            window_len: seg.window,
            urgent_at: 0,
            max_seg_size: seg.mss,
            window_scale: seg.wscale,
            sack_permitted: seg.sack_permitted,
            sack: seg.sack,
            timestamps: None,
            payload_len: a.len() + b.len(),
        };
        let ip = self.ip_to(key.remote, IpProtocol::TCP, repr.buffer_len());
        let addrs = IpPair::V4 {
            src: self.addr,
            dst: key.remote,
        };
        self.stats.tcp_tx += 1;
        let mode = tx_mode(self.tx_offload);
        self.send_ip(dst_mac, ip, |out| {
            let h = repr.header_len();
            out[h..h + a.len()].copy_from_slice(a);
            out[h + a.len()..h + a.len() + b.len()].copy_from_slice(b);
            let _ = repr.emit(&mut TcpPacket::new_unchecked(out), &addrs, mode);
        });
    }

    /// The header of an IPv4 packet from our address to `dst` (TTL 64,
    /// DF set; the identification is filled in when it is built).
    pub(super) fn ip_to(
        &self,
        dst: Ipv4Addr,
        protocol: IpProtocol,
        payload_len: usize,
    ) -> Ipv4Repr {
        Ipv4Repr {
            src_addr: self.addr,
            dst_addr: dst,
            protocol,
            payload_len,
            ttl: 64,
            dscp: 0,
            ecn: 0,
            ident: 0,
            dont_frag: true,
            more_frags: false,
            frag_offset: 0,
        }
    }
}
