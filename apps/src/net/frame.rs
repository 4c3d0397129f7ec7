//! The UDP/IPv4 frames pktgen and the demo send, and the probe each one
//! carries in its payload (a sequence number and the TSC at sending, for
//! loss and latency).

use dataplane::wire::{
    ChecksumMode, EtherType, EthernetAddress, EthernetFrame, EthernetRepr, IpPair, IpProtocol,
    Ipv4Packet, Ipv4Repr, UdpPacket, UdpRepr, WireError,
};
use std::net::Ipv4Addr;

/// Bytes of Ethernet, IPv4 and UDP headers before the payload.
pub const HEADERS_LEN: usize = 14 + 20 + 8;

/// The frame check sequence the NIC adds: frame sizes on the command line
/// count it, as DPDK's tools do (64 is the minimum frame).
pub const FCS_LEN: usize = 4;

/// The smallest frame size (`--size`), FCS included.
pub const MIN_FRAME_SIZE: usize = 64;

/// Bytes of the probe at the start of the payload: the TSC (8), the
/// sequence number (4), the magic (2) and the flow (2). A 64-byte frame
/// has 18 bytes of payload, so it fits.
pub const PROBE_LEN: usize = 16;

const PROBE_MAGIC: u16 = 0xd9e7;

/// A flow's addresses and ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpFlow {
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// Source address.
    pub src_ip: Ipv4Addr,
    /// Destination address.
    pub dst_ip: Ipv4Addr,
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Time to live.
    pub ttl: u8,
}

/// What a probe says about its packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// The TSC when the packet was built.
    pub tsc: u64,
    /// The sender's sequence number.
    pub seq: u32,
    /// The flow's index.
    pub flow: u16,
}

/// The frame length (without FCS) of a frame of `size` bytes with FCS.
pub fn wire_len(size: usize) -> usize {
    size.saturating_sub(FCS_LEN)
}

/// Writes an Ethernet/IPv4/UDP frame of `frame_len` bytes into `buf` (its
/// first `frame_len` bytes): headers with the IPv4 checksum, a zero UDP
/// checksum (none, which IPv4 allows), the probe if it fits, and zeroes.
///
/// # Errors
///
/// [`WireError::Truncated`] when `buf` is shorter than `frame_len` or
/// `frame_len` is shorter than the headers.
pub fn emit_udp(
    buf: &mut [u8],
    frame_len: usize,
    flow: &UdpFlow,
    probe: Option<&Probe>,
) -> Result<(), WireError> {
    let Some(buf) = buf.get_mut(..frame_len) else {
        return Err(WireError::Truncated(dataplane::wire::Header::Ethernet));
    };
    let payload_len = frame_len
        .checked_sub(HEADERS_LEN)
        .ok_or(WireError::Truncated(dataplane::wire::Header::Udp))?;
    let mut eth = EthernetFrame::new_checked(&mut *buf)?;
    EthernetRepr {
        src_addr: EthernetAddress(flow.src_mac),
        dst_addr: EthernetAddress(flow.dst_mac),
        ethertype: EtherType::IPV4,
    }
    .emit(&mut eth)?;
    let ip_repr = Ipv4Repr {
        src_addr: flow.src_ip,
        dst_addr: flow.dst_ip,
        protocol: IpProtocol::UDP,
        payload_len: 8 + payload_len,
        ttl: flow.ttl,
        dscp: 0,
        ecn: 0,
        ident: 0,
        dont_frag: true,
        more_frags: false,
        frag_offset: 0,
    };
    let mut ip = Ipv4Packet::new_unchecked(&mut buf[14..]);
    ip_repr.emit(&mut ip, ChecksumMode::Software)?;
    let udp_buf = &mut buf[34..];
    let payload = &mut udp_buf[8..];
    payload.fill(0);
    if let Some(p) = probe {
        write_probe(payload, p);
    }
    let mut udp = UdpPacket::new_unchecked(udp_buf);
    UdpRepr {
        src_port: flow.src_port,
        dst_port: flow.dst_port,
        payload_len,
    }
    .emit(
        &mut udp,
        &IpPair::V4 {
            src: flow.src_ip,
            dst: flow.dst_ip,
        },
        ChecksumMode::Offload,
    )?;
    // No UDP checksum: 0 means none in IPv4 (RFC 768).
    udp.set_checksum(0);
    Ok(())
}

/// Writes a probe at the start of `payload` if it fits; returns whether.
pub fn write_probe(payload: &mut [u8], p: &Probe) -> bool {
    let Some(out) = payload.get_mut(..PROBE_LEN) else {
        return false;
    };
    out[0..8].copy_from_slice(&p.tsc.to_le_bytes());
    out[8..12].copy_from_slice(&p.seq.to_le_bytes());
    out[12..14].copy_from_slice(&PROBE_MAGIC.to_le_bytes());
    out[14..16].copy_from_slice(&p.flow.to_le_bytes());
    true
}

/// Reads the probe at the start of `payload`, if there is one.
pub fn read_probe(payload: &[u8]) -> Option<Probe> {
    let b = payload.get(..PROBE_LEN)?;
    if u16::from_le_bytes([b[12], b[13]]) != PROBE_MAGIC {
        return None;
    }
    Some(Probe {
        tsc: u64::from_le_bytes(b[0..8].try_into().ok()?),
        seq: u32::from_le_bytes(b[8..12].try_into().ok()?),
        flow: u16::from_le_bytes([b[14], b[15]]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::wire::{L4Kind, parse_frame_with};

    #[test]
    fn frames_parse_back_with_their_probe() {
        let flow = UdpFlow {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src_ip: Ipv4Addr::new(10, 0, 0, 1),
            dst_ip: Ipv4Addr::new(10, 1, 0, 9),
            src_port: 1234,
            dst_port: 9,
            ttl: 64,
        };
        let probe = Probe {
            tsc: 0x0123_4567_89ab_cdef,
            seq: 77,
            flow: 5,
        };
        let mut buf = [0xa5u8; 128];
        let len = wire_len(MIN_FRAME_SIZE);
        emit_udp(&mut buf, len, &flow, Some(&probe)).expect("fits");
        let info = parse_frame_with(&buf[..len], ChecksumMode::Software).expect("valid");
        assert_eq!(info.l4, L4Kind::Udp);
        assert_eq!(info.payload_len, len - HEADERS_LEN);
        assert_eq!(read_probe(&buf[info.payload()]), Some(probe));
        assert!(emit_udp(&mut buf, 30, &flow, None).is_err());
        assert!(emit_udp(&mut buf, 200, &flow, None).is_err());
        assert_eq!(read_probe(&[0; 16]), None);
    }
}
