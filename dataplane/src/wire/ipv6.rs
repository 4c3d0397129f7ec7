//! IPv6 headers (RFC 8200): the fixed header (section 3), and a walk over
//! the extension headers (section 4: Hop-by-Hop Options, Routing,
//! Fragment, Destination Options; and the Authentication Header of RFC
//! 4302) to the upper-layer header.

use super::{Field, Header, IpPair, IpProtocol, Result, WireError};
use super::{read_u16, read_u32, write_u16, write_u32};

/// An IPv6 address: the standard library's, so that it displays, parses
/// and converts like every other Rust program's.
pub type Ipv6Address = core::net::Ipv6Addr;

mod field {
    use core::ops::Range;

    /// Version (4 bits), traffic class (8), flow label (20).
    pub const VER_TC_FLOW: usize = 0;
    pub const LENGTH: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC_ADDR: Range<usize> = 8..24;
    pub const DST_ADDR: Range<usize> = 24..40;
    pub const PAYLOAD: usize = 40;
}

const FLOW_LABEL_MASK: u32 = 0x000f_ffff;

/// The Fragment header's fields (RFC 8200 section 4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6Fragment {
    /// The offset of this fragment's data in the original packet's
    /// fragmentable part, in bytes (a multiple of 8).
    pub offset: u16,
    /// More fragments follow.
    pub more_frags: bool,
    /// The identification shared by the fragments of one packet.
    pub ident: u32,
}

/// Where the extension headers end: what [`Ipv6Packet::upper_layer`]
/// found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6UpperLayer {
    /// The first Next Header value that is not an extension header this
    /// walk follows: the upper-layer protocol (UDP, TCP, ICMPv6...),
    /// [`IpProtocol::ESP`] (encrypted from here on), or
    /// [`IpProtocol::IPV6_NO_NEXT_HEADER`]. For a fragment other than the
    /// first, the Fragment header's Next Header.
    pub protocol: IpProtocol,
    /// Where that header starts, from the start of the IPv6 header.
    pub offset: usize,
    /// The Fragment header, if the packet has one. When its `offset` is
    /// not zero, no upper-layer header is present: it is in the first
    /// fragment.
    pub fragment: Option<Ipv6Fragment>,
}

impl Ipv6UpperLayer {
    /// Whether the upper-layer header is present at `offset`: not a
    /// fragment other than the first.
    pub fn has_header(&self) -> bool {
        self.fragment.is_none_or(|f| f.offset == 0)
    }
}

/// A view of an IPv6 packet: the fixed header and the payload up to the
/// payload length (extension headers included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// The length of the fixed header.
    pub const HEADER_LEN: usize = field::PAYLOAD;

    /// How many extension headers [`upper_layer`](Self::upper_layer)
    /// follows before giving up. RFC 8200 section 4.1 allows each at most
    /// once (Destination Options twice): Hop-by-Hop, Destination Options,
    /// Routing, Fragment, Authentication, Destination Options makes 6, so
    /// 8 passes every conforming packet and bounds the work per packet.
    pub const MAX_EXTENSION_HEADERS: usize = 8;

    /// Wraps a buffer without checking it; accessors may panic if the
    /// payload length disagrees with the buffer.
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv6Packet { buffer }
    }

    /// Wraps a buffer and checks the version and payload length; see
    /// [`check_len`](Self::check_len).
    ///
    /// # Errors
    /// As `check_len`.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the version and the payload length against the buffer; after
    /// `Ok`, no accessor panics. The buffer may extend past the payload
    /// (Ethernet padding).
    ///
    /// # Errors
    /// - [`WireError::Truncated`]: shorter than 40 bytes, or than the
    ///   payload length claims.
    /// - [`WireError::Malformed`] ([`Field::Ipv6Version`]): a version other
    ///   than 6.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let data = self.buffer.as_ref();
        let Some(fixed) = data.first_chunk::<{ field::PAYLOAD }>() else {
            return Err(WireError::Truncated(Header::Ipv6));
        };
        if fixed[field::VER_TC_FLOW] >> 4 != 6 {
            return Err(WireError::Malformed(Field::Ipv6Version));
        }
        let payload_len = usize::from(read_u16(fixed, field::LENGTH));
        if data.len() < field::PAYLOAD + payload_len {
            return Err(WireError::Truncated(Header::Ipv6));
        }
        Ok(())
    }

    /// The buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The version (6 in a checked packet).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TC_FLOW] >> 4
    }

    /// The traffic class: DSCP in the high six bits, ECN in the low two
    /// (RFC 2474, RFC 3168).
    pub fn traffic_class(&self) -> u8 {
        (read_u32(self.buffer.as_ref(), field::VER_TC_FLOW) >> 20) as u8
    }

    /// The flow label (20 bits, RFC 6437).
    pub fn flow_label(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::VER_TC_FLOW) & FLOW_LABEL_MASK
    }

    /// The payload length: everything after the fixed header, extension
    /// headers included.
    pub fn payload_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// The Next Header of the fixed header.
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[field::NEXT_HEADER])
    }

    /// The hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// The source address.
    pub fn src_addr(&self) -> Ipv6Address {
        let mut octets = [0; 16];
        octets.copy_from_slice(&self.buffer.as_ref()[field::SRC_ADDR]);
        Ipv6Address::from(octets)
    }

    /// The destination address.
    pub fn dst_addr(&self) -> Ipv6Address {
        let mut octets = [0; 16];
        octets.copy_from_slice(&self.buffer.as_ref()[field::DST_ADDR]);
        Ipv6Address::from(octets)
    }

    /// Both addresses, for pseudo-header checksums and flow keys.
    pub fn addrs(&self) -> IpPair {
        IpPair::V6 {
            src: self.src_addr(),
            dst: self.dst_addr(),
        }
    }

    /// The payload: extension headers and upper-layer packet, up to the
    /// payload length.
    pub fn payload(&self) -> &[u8] {
        let end = field::PAYLOAD + usize::from(self.payload_len());
        &self.buffer.as_ref()[field::PAYLOAD..end]
    }

    /// Walks the extension headers to the upper-layer header.
    ///
    /// # Errors
    /// - [`WireError::Truncated`] ([`Header::Ipv6Extension`]): an extension
    ///   header runs past the payload.
    /// - [`WireError::Malformed`] ([`Field::Ipv6HopByHop`]): a Hop-by-Hop
    ///   Options header after another header (RFC 8200 section 4.3).
    /// - [`WireError::Unsupported`] ([`Field::Ipv6ExtensionChain`]): more
    ///   than [`MAX_EXTENSION_HEADERS`](Self::MAX_EXTENSION_HEADERS).
    #[inline]
    pub fn upper_layer(&self) -> Result<Ipv6UpperLayer> {
        walk_extensions(self.next_header(), self.payload())
    }
}

/// Walks the extension headers in `payload`, the first of type `first`.
#[inline]
fn walk_extensions(first: IpProtocol, payload: &[u8]) -> Result<Ipv6UpperLayer> {
    let truncated = WireError::Truncated(Header::Ipv6Extension);
    let mut next = first;
    let mut at = 0;
    let mut fragment = None;
    for index in 0..=Ipv6Packet::<&[u8]>::MAX_EXTENSION_HEADERS {
        let header_len = match next {
            IpProtocol::HOP_BY_HOP | IpProtocol::IPV6_ROUTING | IpProtocol::IPV6_DESTINATION => {
                if next == IpProtocol::HOP_BY_HOP && index != 0 {
                    return Err(WireError::Malformed(Field::Ipv6HopByHop));
                }
                // Hdr Ext Len counts 8-octet units after the first 8.
                let len = payload.get(at + 1).ok_or(truncated)?;
                (usize::from(*len) + 1) * 8
            }
            IpProtocol::AH => {
                // RFC 4302 section 2.2: Payload Len counts 4-octet units,
                // minus 2.
                let len = payload.get(at + 1).ok_or(truncated)?;
                (usize::from(*len) + 2) * 4
            }
            IpProtocol::IPV6_FRAGMENT => Ipv6FragmentHeader::<&[u8]>::HEADER_LEN,
            _ => break,
        };
        if index == Ipv6Packet::<&[u8]>::MAX_EXTENSION_HEADERS {
            return Err(WireError::Unsupported(Field::Ipv6ExtensionChain));
        }
        let header = payload.get(at..at + header_len).ok_or(truncated)?;
        // The first byte of every header walked here is its Next Header.
        let this = next;
        next = IpProtocol(header[0]);
        at += header_len;
        if this == IpProtocol::IPV6_FRAGMENT {
            let frag = Ipv6FragmentHeader::new_unchecked(header);
            let info = Ipv6Fragment {
                offset: frag.frag_offset(),
                more_frags: frag.more_frags(),
                ident: frag.ident(),
            };
            fragment = Some(info);
            if info.offset != 0 {
                // The rest of the chain and the upper-layer header are in
                // the first fragment.
                break;
            }
        }
    }
    Ok(Ipv6UpperLayer {
        protocol: next,
        offset: field::PAYLOAD + at,
        fragment,
    })
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Sets the version.
    pub fn set_version(&mut self, version: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_TC_FLOW];
        *b = (*b & 0x0f) | (version << 4);
    }

    /// Sets the traffic class.
    pub fn set_traffic_class(&mut self, tc: u8) {
        let word = read_u32(self.buffer.as_ref(), field::VER_TC_FLOW);
        let word = (word & 0xf00f_ffff) | (u32::from(tc) << 20);
        write_u32(self.buffer.as_mut(), field::VER_TC_FLOW, word);
    }

    /// Sets the flow label (its low 20 bits).
    pub fn set_flow_label(&mut self, label: u32) {
        let word = read_u32(self.buffer.as_ref(), field::VER_TC_FLOW);
        let word = (word & !FLOW_LABEL_MASK) | (label & FLOW_LABEL_MASK);
        write_u32(self.buffer.as_mut(), field::VER_TC_FLOW, word);
    }

    /// Sets the payload length. Changes where the payload ends: check the
    /// view again afterwards.
    pub fn set_payload_len(&mut self, len: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH, len);
    }

    /// Sets the Next Header.
    pub fn set_next_header(&mut self, next: IpProtocol) {
        self.buffer.as_mut()[field::NEXT_HEADER] = next.0;
    }

    /// Sets the hop limit.
    pub fn set_hop_limit(&mut self, hops: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = hops;
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, addr: Ipv6Address) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, addr: Ipv6Address) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// The payload, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = field::PAYLOAD + usize::from(self.payload_len());
        &mut self.buffer.as_mut()[field::PAYLOAD..end]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Ipv6Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// A view of an extension header in RFC 8200's common layout (Hop-by-Hop
/// Options, Routing, Destination Options): Next Header, Hdr Ext Len in
/// 8-octet units not counting the first 8, then the header's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv6ExtHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6ExtHeader<T> {
    /// The length of the shortest such header.
    pub const MIN_HEADER_LEN: usize = 8;

    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv6ExtHeader { buffer }
    }

    /// Wraps a buffer and checks its length field.
    ///
    /// # Errors
    /// As [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Self> {
        let header = Self::new_unchecked(buffer);
        header.check_len()?;
        Ok(header)
    }

    /// Checks that the buffer holds the header its length field gives;
    /// after `Ok`, no accessor panics.
    ///
    /// # Errors
    /// [`WireError::Truncated`] if it does not.
    pub fn check_len(&self) -> Result<()> {
        let data = self.buffer.as_ref();
        match data.get(1) {
            Some(&len) if data.len() >= (usize::from(len) + 1) * 8 => Ok(()),
            _ => Err(WireError::Truncated(Header::Ipv6Extension)),
        }
    }

    /// The buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The type of the next header.
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[0])
    }

    /// The header's length in bytes.
    pub fn header_len(&self) -> usize {
        (usize::from(self.buffer.as_ref()[1]) + 1) * 8
    }

    /// The header's data after Next Header and Hdr Ext Len (options, or
    /// the routing type, segments left and addresses).
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[2..self.header_len()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6ExtHeader<T> {
    /// Sets the type of the next header.
    pub fn set_next_header(&mut self, next: IpProtocol) {
        self.buffer.as_mut()[0] = next.0;
    }

    /// Sets the header length in bytes: a multiple of 8 from 8 to 2048
    /// (other values are rounded down to one). Check the view again
    /// afterwards.
    pub fn set_header_len(&mut self, len: usize) {
        self.buffer.as_mut()[1] = (len / 8).clamp(1, 256).saturating_sub(1) as u8;
    }

    /// The header's data, writable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        let end = self.header_len();
        &mut self.buffer.as_mut()[2..end]
    }
}

mod frag_field {
    pub const NEXT_HEADER: usize = 0;
    pub const OFFSET_FLAGS: usize = 2;
    pub const IDENT: usize = 4;
    pub const END: usize = 8;
}

/// A view of the Fragment header (RFC 8200 section 4.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv6FragmentHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6FragmentHeader<T> {
    /// The header's length.
    pub const HEADER_LEN: usize = frag_field::END;

    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv6FragmentHeader { buffer }
    }

    /// Wraps a buffer and checks that it holds the header.
    ///
    /// # Errors
    /// [`WireError::Truncated`] if it does not.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let header = Self::new_unchecked(buffer);
        header.check_len()?;
        Ok(header)
    }

    /// Checks that the buffer holds the header; after `Ok`, no accessor
    /// panics.
    ///
    /// # Errors
    /// [`WireError::Truncated`] if it does not.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < frag_field::END {
            return Err(WireError::Truncated(Header::Ipv6Extension));
        }
        Ok(())
    }

    /// The buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The type of the next header.
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[frag_field::NEXT_HEADER])
    }

    /// The fragment offset in bytes (the field counts 8-octet units).
    pub fn frag_offset(&self) -> u16 {
        read_u16(self.buffer.as_ref(), frag_field::OFFSET_FLAGS) & !0x7
    }

    /// More fragments follow.
    pub fn more_frags(&self) -> bool {
        read_u16(self.buffer.as_ref(), frag_field::OFFSET_FLAGS) & 0x1 != 0
    }

    /// The identification.
    pub fn ident(&self) -> u32 {
        read_u32(self.buffer.as_ref(), frag_field::IDENT)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6FragmentHeader<T> {
    /// Sets the type of the next header.
    pub fn set_next_header(&mut self, next: IpProtocol) {
        self.buffer.as_mut()[frag_field::NEXT_HEADER] = next.0;
    }

    /// Sets the offset (bytes, a multiple of 8) and the M flag, and clears
    /// the reserved fields.
    pub fn set_frag_offset(&mut self, offset: u16, more_frags: bool) {
        self.buffer.as_mut()[1] = 0;
        let word = (offset & !0x7) | u16::from(more_frags);
        write_u16(self.buffer.as_mut(), frag_field::OFFSET_FLAGS, word);
    }

    /// Sets the identification.
    pub fn set_ident(&mut self, ident: u32) {
        write_u32(self.buffer.as_mut(), frag_field::IDENT, ident);
    }
}

/// The fields of the fixed IPv6 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6Repr {
    /// Source address.
    pub src_addr: Ipv6Address,
    /// Destination address.
    pub dst_addr: Ipv6Address,
    /// Next Header.
    pub next_header: IpProtocol,
    /// Payload length in bytes (extension headers included).
    pub payload_len: usize,
    /// Hop limit.
    pub hop_limit: u8,
    /// Traffic class.
    pub traffic_class: u8,
    /// Flow label (20 bits).
    pub flow_label: u32,
}

impl Ipv6Repr {
    /// Reads a checked packet's fixed header.
    ///
    /// # Errors
    /// As [`Ipv6Packet::check_len`].
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Ipv6Packet<&T>) -> Result<Ipv6Repr> {
        packet.check_len()?;
        Ok(Ipv6Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            next_header: packet.next_header(),
            payload_len: usize::from(packet.payload_len()),
            hop_limit: packet.hop_limit(),
            traffic_class: packet.traffic_class(),
            flow_label: packet.flow_label(),
        })
    }

    /// The length of the header this emits.
    pub const fn header_len(&self) -> usize {
        field::PAYLOAD
    }

    /// The length of the header and the payload.
    pub const fn buffer_len(&self) -> usize {
        field::PAYLOAD + self.payload_len
    }

    /// Both addresses, for pseudo-header checksums and flow keys.
    pub fn addrs(&self) -> IpPair {
        IpPair::V6 {
            src: self.src_addr,
            dst: self.dst_addr,
        }
    }

    /// Writes the fixed header into the start of `packet`; the payload is
    /// the caller's to write. (IPv6 has no header checksum.)
    ///
    /// # Errors
    /// [`WireError::Truncated`] if the buffer is shorter than the header,
    /// [`WireError::Malformed`] ([`Field::Ipv6PayloadLen`]) if the payload
    /// does not fit 16 bits; nothing is written then.
    ///
    /// # Panics
    /// In debug builds, if `flow_label` does not fit 20 bits.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Ipv6Packet<T>) -> Result<()> {
        debug_assert!(
            self.flow_label <= FLOW_LABEL_MASK,
            "flow label over 20 bits"
        );
        let payload_len = u16::try_from(self.payload_len)
            .map_err(|_| WireError::Malformed(Field::Ipv6PayloadLen))?;
        if packet.buffer.as_ref().len() < field::PAYLOAD {
            return Err(WireError::Truncated(Header::Ipv6));
        }
        let word =
            (6 << 28) | (u32::from(self.traffic_class) << 20) | (self.flow_label & FLOW_LABEL_MASK);
        write_u32(packet.buffer.as_mut(), field::VER_TC_FLOW, word);
        packet.set_payload_len(payload_len);
        packet.set_next_header(self.next_header);
        packet.set_hop_limit(self.hop_limit);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testdata::IPV6_UDP;

    fn addr(s: &str) -> Ipv6Address {
        s.parse().expect("literal")
    }

    #[test]
    fn parses_a_udp_packet() {
        let packet = Ipv6Packet::new_checked(&IPV6_UDP[14..]).expect("valid");
        assert_eq!(packet.version(), 6);
        assert_eq!(packet.traffic_class(), 0xb8);
        assert_eq!(packet.flow_label(), 0x12345);
        assert_eq!(packet.payload_len(), 17);
        assert_eq!(packet.next_header(), IpProtocol::UDP);
        assert_eq!(packet.hop_limit(), 64);
        assert_eq!(packet.src_addr(), addr("2001:db8::1"));
        assert_eq!(packet.dst_addr(), addr("2001:db8::2"));
        assert_eq!(packet.payload().len(), 17);
        assert_eq!(
            packet.upper_layer(),
            Ok(Ipv6UpperLayer {
                protocol: IpProtocol::UDP,
                offset: 40,
                fragment: None
            })
        );
        assert_eq!(
            Ipv6Repr::parse(&packet),
            Ok(Ipv6Repr {
                src_addr: addr("2001:db8::1"),
                dst_addr: addr("2001:db8::2"),
                next_header: IpProtocol::UDP,
                payload_len: 17,
                hop_limit: 64,
                traffic_class: 0xb8,
                flow_label: 0x12345,
            })
        );
    }

    #[test]
    fn every_truncation_is_truncated() {
        let bytes = &IPV6_UDP[14..];
        for len in 0..bytes.len() {
            assert_eq!(
                Ipv6Packet::new_checked(&bytes[..len]),
                Err(WireError::Truncated(Header::Ipv6)),
                "len {len}"
            );
        }
    }

    #[test]
    fn malformed_version_and_padding() {
        let mut bad = IPV6_UDP[14..].to_vec();
        bad[0] = 0x4b;
        assert_eq!(
            Ipv6Packet::new_checked(&bad[..]),
            Err(WireError::Malformed(Field::Ipv6Version))
        );
        let mut padded = IPV6_UDP[14..].to_vec();
        padded.extend_from_slice(&[0; 5]);
        let packet = Ipv6Packet::new_checked(&padded[..]).expect("padding is fine");
        assert_eq!(packet.payload().len(), 17);
    }

    /// Builds a packet: the fixed header, then each `(type, length)`
    /// extension header in turn, then 8 bytes of upper-layer data.
    fn chain(headers: &[(IpProtocol, usize)], upper: IpProtocol) -> Vec<u8> {
        let ext_len: usize = headers.iter().map(|h| h.1).sum();
        let mut bytes = vec![0u8; 40 + ext_len + 8];
        let mut packet = Ipv6Packet::new_unchecked(&mut bytes[..]);
        packet.set_version(6);
        packet.set_payload_len((ext_len + 8) as u16);
        packet.set_next_header(headers.first().map_or(upper, |h| h.0));
        let mut at = 40;
        for (i, &(kind, len)) in headers.iter().enumerate() {
            let next = headers.get(i + 1).map_or(upper, |h| h.0);
            let buf = &mut bytes[at..at + len];
            match kind {
                IpProtocol::IPV6_FRAGMENT => {
                    let mut frag = Ipv6FragmentHeader::new_unchecked(buf);
                    frag.set_next_header(next);
                    frag.set_frag_offset(0, true);
                    frag.set_ident(0xdead_beef);
                }
                IpProtocol::AH => {
                    buf[0] = next.0;
                    buf[1] = (len / 4 - 2) as u8;
                }
                _ => {
                    let mut ext = Ipv6ExtHeader::new_unchecked(buf);
                    ext.set_next_header(next);
                    ext.set_header_len(len);
                }
            }
            at += len;
        }
        bytes
    }

    #[test]
    fn walks_every_common_extension_header() {
        use IpProtocol as P;
        let headers = [
            (P::HOP_BY_HOP, 8),
            (P::IPV6_DESTINATION, 16),
            (P::IPV6_ROUTING, 24),
            (P::IPV6_FRAGMENT, 8),
            (P::AH, 24),
            (P::IPV6_DESTINATION, 8),
        ];
        let bytes = chain(&headers, P::TCP);
        let packet = Ipv6Packet::new_checked(&bytes[..]).expect("valid");
        let upper = packet.upper_layer().expect("walkable");
        assert_eq!(upper.protocol, P::TCP);
        assert_eq!(upper.offset, 40 + 88);
        assert_eq!(
            upper.fragment,
            Some(Ipv6Fragment {
                offset: 0,
                more_frags: true,
                ident: 0xdead_beef
            })
        );
        assert!(upper.has_header());

        // The views read the same chain.
        let hbh = Ipv6ExtHeader::new_checked(&bytes[40..]).expect("valid");
        assert_eq!(
            (hbh.next_header(), hbh.header_len()),
            (P::IPV6_DESTINATION, 8)
        );
        assert_eq!(hbh.data().len(), 6);
        let frag = Ipv6FragmentHeader::new_checked(&bytes[88..96]).expect("valid");
        assert_eq!(frag.next_header(), P::AH);

        // Every truncation of the payload (with a payload length to match)
        // is refused as truncated, never misread.
        for cut in 0..bytes.len() - 40 - 8 {
            let mut short = bytes[..40 + cut].to_vec();
            short[4..6].copy_from_slice(&(cut as u16).to_be_bytes());
            let packet = Ipv6Packet::new_checked(&short[..]).expect("lengths agree");
            assert_eq!(
                packet.upper_layer(),
                Err(WireError::Truncated(Header::Ipv6Extension)),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn a_later_fragment_has_no_upper_layer_header() {
        let mut bytes = chain(&[(IpProtocol::IPV6_FRAGMENT, 8)], IpProtocol::UDP);
        Ipv6FragmentHeader::new_unchecked(&mut bytes[40..48]).set_frag_offset(1448, false);
        let upper = Ipv6Packet::new_checked(&bytes[..])
            .and_then(|p| p.upper_layer())
            .expect("walkable");
        assert_eq!(upper.protocol, IpProtocol::UDP);
        assert_eq!(upper.offset, 48);
        assert_eq!(
            upper.fragment.map(|f| (f.offset, f.more_frags)),
            Some((1448, false))
        );
        assert!(!upper.has_header());
    }

    #[test]
    fn hop_by_hop_only_first() {
        let bytes = chain(
            &[
                (IpProtocol::IPV6_DESTINATION, 8),
                (IpProtocol::HOP_BY_HOP, 8),
            ],
            IpProtocol::UDP,
        );
        assert_eq!(
            Ipv6Packet::new_checked(&bytes[..]).and_then(|p| p.upper_layer()),
            Err(WireError::Malformed(Field::Ipv6HopByHop))
        );
    }

    #[test]
    fn long_chains_are_refused() {
        let max = Ipv6Packet::<&[u8]>::MAX_EXTENSION_HEADERS;
        let ok = chain(
            &vec![(IpProtocol::IPV6_DESTINATION, 8); max],
            IpProtocol::UDP,
        );
        let upper = Ipv6Packet::new_checked(&ok[..]).and_then(|p| p.upper_layer());
        assert_eq!(upper.map(|u| u.offset), Ok(40 + 8 * max));
        let long = chain(
            &vec![(IpProtocol::IPV6_DESTINATION, 8); max + 1],
            IpProtocol::UDP,
        );
        assert_eq!(
            Ipv6Packet::new_checked(&long[..]).and_then(|p| p.upper_layer()),
            Err(WireError::Unsupported(Field::Ipv6ExtensionChain))
        );
    }

    #[test]
    fn no_next_header_and_esp_end_the_walk() {
        for end in [
            IpProtocol::IPV6_NO_NEXT_HEADER,
            IpProtocol::ESP,
            IpProtocol::ICMPV6,
        ] {
            let bytes = chain(&[(IpProtocol::HOP_BY_HOP, 8)], end);
            let upper = Ipv6Packet::new_checked(&bytes[..]).and_then(|p| p.upper_layer());
            assert_eq!(upper.map(|u| (u.protocol, u.offset)), Ok((end, 48)));
        }
    }

    #[test]
    fn emit_over_garbage_parses_back() {
        let repr = Ipv6Repr {
            src_addr: addr("fe80::1"),
            dst_addr: addr("ff02::1:ff00:2"),
            next_header: IpProtocol::ICMPV6,
            payload_len: 24,
            hop_limit: 255,
            traffic_class: 0xff,
            flow_label: 0xf_ffff,
        };
        let mut buf = vec![0xa5u8; repr.buffer_len()];
        repr.emit(&mut Ipv6Packet::new_unchecked(&mut buf[..]))
            .expect("room");
        let packet = Ipv6Packet::new_checked(&buf[..]).expect("valid");
        assert_eq!(Ipv6Repr::parse(&packet), Ok(repr));
        assert_eq!(packet.payload(), &[0xa5; 24][..]);

        let mut short = [0u8; 39];
        assert_eq!(
            repr.emit(&mut Ipv6Packet::new_unchecked(&mut short[..])),
            Err(WireError::Truncated(Header::Ipv6))
        );
        let jumbo = Ipv6Repr {
            payload_len: 65536,
            ..repr
        };
        assert_eq!(
            jumbo.emit(&mut Ipv6Packet::new_unchecked(&mut buf[..])),
            Err(WireError::Malformed(Field::Ipv6PayloadLen))
        );
    }
}
