//! IPv4 headers (RFC 791 section 3.1), with DSCP/ECN (RFC 2474, RFC 3168)
//! in the old Type of Service byte, and the header checksum (RFC 1071)
//! with RFC 1624's incremental update for routers.

use super::{ChecksumMode, Field, Header, IpPair, IpProtocol, Result, WireError};
use super::{checksum, read_u16, write_u16};

/// An IPv4 address: the standard library's, so that it displays, parses
/// and converts like every other Rust program's.
pub type Ipv4Address = core::net::Ipv4Addr;

mod field {
    use core::ops::Range;

    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC_ADDR: Range<usize> = 12..16;
    pub const DST_ADDR: Range<usize> = 16..20;
    pub const OPTIONS: usize = 20;
}

/// The Flags field's bits, in the 16-bit word they share with the
/// fragment offset (RFC 791: bit 0 reserved, then DF, then MF).
const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const FRAG_OFFSET_MASK: u16 = 0x1fff;

/// A view of an IPv4 packet: the header, its options, and the payload up
/// to the total length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// The length of a header without options (IHL 5).
    pub const HEADER_LEN: usize = field::OPTIONS;
    /// The length of the longest header (IHL 15).
    pub const MAX_HEADER_LEN: usize = 60;

    /// Wraps a buffer without checking it; accessors may panic if the
    /// length fields disagree with the buffer.
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    /// Wraps a buffer and checks its length fields; see
    /// [`check_len`](Self::check_len).
    ///
    /// # Errors
    /// As `check_len`.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the version and the length fields against the buffer; after
    /// `Ok`, no accessor panics.
    ///
    /// The buffer may be longer than the total length (a frame padded to
    /// the Ethernet minimum); [`payload`](Self::payload) stops at the
    /// total length.
    ///
    /// # Errors
    /// - [`WireError::Truncated`]: shorter than 20 bytes, than the header
    ///   length, or than the total length.
    /// - [`WireError::Malformed`]: a version other than 4
    ///   ([`Field::Ipv4Version`]), an IHL below 5
    ///   ([`Field::Ipv4HeaderLen`]), or a total length shorter than the
    ///   header ([`Field::Ipv4TotalLen`]).
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let data = self.buffer.as_ref();
        let Some(fixed) = data.first_chunk::<{ field::OPTIONS }>() else {
            return Err(WireError::Truncated(Header::Ipv4));
        };
        if fixed[field::VER_IHL] >> 4 != 4 {
            return Err(WireError::Malformed(Field::Ipv4Version));
        }
        let header_len = usize::from(fixed[field::VER_IHL] & 0x0f) * 4;
        let total_len = usize::from(read_u16(fixed, field::LENGTH));
        if header_len < field::OPTIONS {
            return Err(WireError::Malformed(Field::Ipv4HeaderLen));
        }
        if total_len < header_len {
            return Err(WireError::Malformed(Field::Ipv4TotalLen));
        }
        // total_len >= header_len, so this covers the header too.
        if data.len() < total_len {
            return Err(WireError::Truncated(Header::Ipv4));
        }
        Ok(())
    }

    /// The buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The version (4 in a checked packet).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// The header length in bytes (IHL times 4), options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// The Differentiated Services Code Point (RFC 2474).
    pub fn dscp(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] >> 2
    }

    /// The Explicit Congestion Notification codepoint (RFC 3168).
    pub fn ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] & 0x03
    }

    /// The total length: header and payload, in bytes.
    pub fn total_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// The identification, for reassembly.
    pub fn ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::IDENT)
    }

    /// Don't Fragment.
    pub fn dont_frag(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLAGS_FRAG) & FLAG_DF != 0
    }

    /// More Fragments.
    pub fn more_frags(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLAGS_FRAG) & FLAG_MF != 0
    }

    /// The fragment offset in bytes (the field counts 8-byte units).
    pub fn frag_offset(&self) -> u16 {
        (read_u16(self.buffer.as_ref(), field::FLAGS_FRAG) & FRAG_OFFSET_MASK) << 3
    }

    /// Whether this is a fragment of a larger datagram (MF set, or a
    /// non-zero offset): only the first fragment holds the upper-layer
    /// header, and none holds all of the upper-layer packet.
    pub fn is_fragment(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLAGS_FRAG) & (FLAG_MF | FRAG_OFFSET_MASK) != 0
    }

    /// The time to live.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// The protocol of the payload.
    pub fn protocol(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[field::PROTOCOL])
    }

    /// The header checksum field.
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The source address.
    pub fn src_addr(&self) -> Ipv4Address {
        let mut octets = [0; 4];
        octets.copy_from_slice(&self.buffer.as_ref()[field::SRC_ADDR]);
        Ipv4Address::from(octets)
    }

    /// The destination address.
    pub fn dst_addr(&self) -> Ipv4Address {
        let mut octets = [0; 4];
        octets.copy_from_slice(&self.buffer.as_ref()[field::DST_ADDR]);
        Ipv4Address::from(octets)
    }

    /// Both addresses, for pseudo-header checksums and flow keys.
    pub fn addrs(&self) -> IpPair {
        IpPair::V4 {
            src: self.src_addr(),
            dst: self.dst_addr(),
        }
    }

    /// The options: the header past its first 20 bytes (RFC 791's option
    /// list, with its padding).
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[field::OPTIONS..self.header_len()]
    }

    /// The payload: from the end of the header to the total length
    /// (padding after it is not included).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..usize::from(self.total_len())]
    }

    /// Whether the header checksum is right: the sum of the header,
    /// checksum included, is `0xffff` (RFC 1071 section 1).
    pub fn verify_checksum(&self) -> bool {
        checksum::data(&self.buffer.as_ref()[..self.header_len()]) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets the version.
    pub fn set_version(&mut self, version: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0x0f) | (version << 4);
    }

    /// Sets the header length in bytes; the low two bits are dropped (IHL
    /// counts 32-bit words). Changes where the payload starts: check the
    /// view again afterwards.
    pub fn set_header_len(&mut self, len: usize) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0xf0) | ((len / 4) as u8 & 0x0f);
    }

    /// Sets the DSCP (its low six bits).
    pub fn set_dscp(&mut self, dscp: u8) {
        let b = &mut self.buffer.as_mut()[field::DSCP_ECN];
        *b = (*b & 0x03) | (dscp << 2);
    }

    /// Sets the ECN codepoint (its low two bits).
    pub fn set_ecn(&mut self, ecn: u8) {
        let b = &mut self.buffer.as_mut()[field::DSCP_ECN];
        *b = (*b & 0xfc) | (ecn & 0x03);
    }

    /// Sets the total length. Changes where the payload ends: check the
    /// view again afterwards.
    pub fn set_total_len(&mut self, len: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH, len);
    }

    /// Sets the identification.
    pub fn set_ident(&mut self, ident: u16) {
        write_u16(self.buffer.as_mut(), field::IDENT, ident);
    }

    /// Sets the flags and fragment offset word: DF, MF, and the offset in
    /// bytes (a multiple of 8; the low three bits are dropped). The
    /// reserved flag is cleared, as RFC 791 requires.
    pub fn set_flags_and_frag_offset(&mut self, dont_frag: bool, more_frags: bool, offset: u16) {
        let word = (if dont_frag { FLAG_DF } else { 0 })
            | (if more_frags { FLAG_MF } else { 0 })
            | ((offset >> 3) & FRAG_OFFSET_MASK);
        write_u16(self.buffer.as_mut(), field::FLAGS_FRAG, word);
    }

    /// Sets the time to live.
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    /// Sets the protocol.
    pub fn set_protocol(&mut self, protocol: IpProtocol) {
        self.buffer.as_mut()[field::PROTOCOL] = protocol.0;
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, checksum: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, checksum);
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, addr: Ipv4Address) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, addr: Ipv4Address) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// Computes the header checksum over the header (options included) and
    /// stores it.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let header_len = self.header_len();
        let sum = checksum::data(&self.buffer.as_ref()[..header_len]);
        self.set_checksum(!sum);
    }

    /// Decrements the TTL, as a router forwarding the packet does, and
    /// updates the checksum incrementally (RFC 1624 equation 3 over the
    /// TTL/protocol word) instead of summing the header again. The result
    /// is the checksum a full computation would give.
    ///
    /// Returns the new TTL, or `None`, changing nothing, when the TTL is
    /// already 0. A router drops a packet whose TTL would reach 0 (RFC 1812
    /// section 5.3.1), so it checks [`ttl`](Self::ttl) `> 1` first.
    #[inline]
    pub fn decrement_ttl_and_update_checksum(&mut self) -> Option<u8> {
        let data = self.buffer.as_mut();
        let ttl = data[field::TTL].checked_sub(1)?;
        let old_word = read_u16(data, field::TTL);
        data[field::TTL] = ttl;
        let new_word = read_u16(data, field::TTL);
        let sum = checksum::update(read_u16(data, field::CHECKSUM), old_word, new_word);
        write_u16(data, field::CHECKSUM, sum);
        Some(ttl)
    }

    /// The options, writable.
    pub fn options_mut(&mut self) -> &mut [u8] {
        let header_len = self.header_len();
        &mut self.buffer.as_mut()[field::OPTIONS..header_len]
    }

    /// The payload, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = self.header_len()..usize::from(self.total_len());
        &mut self.buffer.as_mut()[range]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Ipv4Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The fields of an IPv4 header without options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Repr {
    /// Source address.
    pub src_addr: Ipv4Address,
    /// Destination address.
    pub dst_addr: Ipv4Address,
    /// Protocol of the payload.
    pub protocol: IpProtocol,
    /// Payload length in bytes (the total length less the header).
    pub payload_len: usize,
    /// Time to live.
    pub ttl: u8,
    /// Differentiated Services Code Point (0 to 63).
    pub dscp: u8,
    /// ECN codepoint (0 to 3).
    pub ecn: u8,
    /// Identification.
    pub ident: u16,
    /// Don't Fragment.
    pub dont_frag: bool,
    /// More Fragments.
    pub more_frags: bool,
    /// Fragment offset in bytes (a multiple of 8, at most 65528).
    pub frag_offset: u16,
}

impl Ipv4Repr {
    /// Reads a checked packet's header. Options are skipped (they are in
    /// [`Ipv4Packet::options`]); `payload_len` is the total length less
    /// the header, options included.
    ///
    /// # Errors
    /// As [`Ipv4Packet::check_len`], and [`WireError::BadChecksum`] when
    /// `checksum` is [`ChecksumMode::Software`] and the header checksum is
    /// wrong.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        packet: &Ipv4Packet<&T>,
        checksum: ChecksumMode,
    ) -> Result<Ipv4Repr> {
        packet.check_len()?;
        if checksum == ChecksumMode::Software && !packet.verify_checksum() {
            return Err(WireError::BadChecksum(Header::Ipv4));
        }
        Ok(Ipv4Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            protocol: packet.protocol(),
            payload_len: usize::from(packet.total_len()) - packet.header_len(),
            ttl: packet.ttl(),
            dscp: packet.dscp(),
            ecn: packet.ecn(),
            ident: packet.ident(),
            dont_frag: packet.dont_frag(),
            more_frags: packet.more_frags(),
            frag_offset: packet.frag_offset(),
        })
    }

    /// The length of the header this emits.
    pub const fn header_len(&self) -> usize {
        field::OPTIONS
    }

    /// The length of the header and the payload.
    pub const fn buffer_len(&self) -> usize {
        field::OPTIONS + self.payload_len
    }

    /// Both addresses, for pseudo-header checksums and flow keys.
    pub fn addrs(&self) -> IpPair {
        IpPair::V4 {
            src: self.src_addr,
            dst: self.dst_addr,
        }
    }

    /// Writes a header without options into the start of `packet`, and its
    /// checksum (or a zero checksum for the NIC to fill, under
    /// [`ChecksumMode::Offload`]). The payload is the caller's to write.
    ///
    /// # Errors
    /// [`WireError::Truncated`] if the buffer is shorter than the header,
    /// [`WireError::Malformed`] ([`Field::Ipv4TotalLen`]) if the payload
    /// does not fit the 16-bit total length; nothing is written then.
    ///
    /// # Panics
    /// In debug builds, if `dscp`, `ecn` or `frag_offset` do not fit their
    /// fields (release builds keep the bits that fit).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Ipv4Packet<T>,
        checksum: ChecksumMode,
    ) -> Result<()> {
        debug_assert!(self.dscp < 64 && self.ecn < 4, "DSCP/ECN out of range");
        debug_assert!(
            self.frag_offset.is_multiple_of(8),
            "fragment offset not 8-aligned"
        );
        let total_len = u16::try_from(self.buffer_len())
            .map_err(|_| WireError::Malformed(Field::Ipv4TotalLen))?;
        if packet.buffer.as_ref().len() < field::OPTIONS {
            return Err(WireError::Truncated(Header::Ipv4));
        }
        packet.buffer.as_mut()[field::VER_IHL] = 0x45;
        packet.buffer.as_mut()[field::DSCP_ECN] = (self.dscp << 2) | (self.ecn & 0x03);
        packet.set_total_len(total_len);
        packet.set_ident(self.ident);
        packet.set_flags_and_frag_offset(self.dont_frag, self.more_frags, self.frag_offset);
        packet.set_ttl(self.ttl);
        packet.set_protocol(self.protocol);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
        match checksum {
            ChecksumMode::Software => packet.fill_checksum(),
            ChecksumMode::Offload => packet.set_checksum(0),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testdata::{IPV4_TCP_SYN, IPV4_UDP_DNS, QINQ_IPV4_UDP};
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    #[test]
    fn parses_a_dns_query() {
        let packet = Ipv4Packet::new_checked(&IPV4_UDP_DNS[14..]).expect("valid");
        assert_eq!(packet.version(), 4);
        assert_eq!(packet.header_len(), 20);
        assert_eq!((packet.dscp(), packet.ecn()), (0, 0));
        assert_eq!(packet.total_len(), 57);
        assert_eq!(packet.ident(), 0x1c46);
        assert!(packet.dont_frag() && !packet.more_frags() && !packet.is_fragment());
        assert_eq!(packet.frag_offset(), 0);
        assert_eq!(packet.ttl(), 64);
        assert_eq!(packet.protocol(), IpProtocol::UDP);
        assert_eq!(packet.checksum(), 0x4c52);
        assert!(packet.verify_checksum());
        assert_eq!(packet.src_addr(), Ipv4Address::new(192, 168, 1, 100));
        assert_eq!(packet.dst_addr(), Ipv4Address::new(8, 8, 8, 8));
        assert!(packet.options().is_empty());
        assert_eq!(packet.payload().len(), 37);
        let repr = Ipv4Repr::parse(&packet, ChecksumMode::Software).expect("valid");
        assert_eq!(
            repr,
            Ipv4Repr {
                src_addr: Ipv4Address::new(192, 168, 1, 100),
                dst_addr: Ipv4Address::new(8, 8, 8, 8),
                protocol: IpProtocol::UDP,
                payload_len: 37,
                ttl: 64,
                dscp: 0,
                ecn: 0,
                ident: 0x1c46,
                dont_frag: true,
                more_frags: false,
                frag_offset: 0,
            }
        );
    }

    #[test]
    fn padding_after_the_total_length_is_not_payload() {
        // The QinQ frame is padded to 64 bytes after a 32-byte datagram.
        let packet = Ipv4Packet::new_checked(&QINQ_IPV4_UDP[22..]).expect("valid");
        assert_eq!(packet.total_len(), 32);
        assert_eq!(packet.payload().len(), 12);
        assert!(packet.verify_checksum());
    }

    #[test]
    fn every_truncation_is_truncated() {
        for bytes in [&IPV4_UDP_DNS[14..], &IPV4_TCP_SYN[14..]] {
            for len in 0..bytes.len() {
                assert_eq!(
                    Ipv4Packet::new_checked(&bytes[..len]),
                    Err(WireError::Truncated(Header::Ipv4)),
                    "len {len}"
                );
            }
            assert!(Ipv4Packet::new_checked(bytes).is_ok());
        }
    }

    #[test]
    fn malformed_fields() {
        let good = &IPV4_UDP_DNS[14..];
        let mut bad = good.to_vec();
        bad[0] = 0x65;
        assert_eq!(
            Ipv4Packet::new_checked(&bad[..]),
            Err(WireError::Malformed(Field::Ipv4Version))
        );
        for ihl in 0..5 {
            bad = good.to_vec();
            bad[0] = 0x40 | ihl;
            assert_eq!(
                Ipv4Packet::new_checked(&bad[..]),
                Err(WireError::Malformed(Field::Ipv4HeaderLen)),
                "ihl {ihl}"
            );
        }
        // IHL 15 (60 bytes) within a 57-byte total length.
        bad = good.to_vec();
        bad[0] = 0x4f;
        assert_eq!(
            Ipv4Packet::new_checked(&bad[..]),
            Err(WireError::Malformed(Field::Ipv4TotalLen))
        );
        // IHL 14 (56 bytes) is within the total length: valid lengths.
        bad[0] = 0x4e;
        let packet = Ipv4Packet::new_checked(&bad[..]).expect("lengths are consistent");
        assert_eq!(packet.options().len(), 36);
        assert_eq!(packet.payload().len(), 1);
        // IHL beyond the buffer: a 24-byte header in a 22-byte buffer.
        let mut short = good[..22].to_vec();
        short[0] = 0x46;
        short[2..4].copy_from_slice(&24u16.to_be_bytes());
        assert_eq!(
            Ipv4Packet::new_checked(&short[..]),
            Err(WireError::Truncated(Header::Ipv4))
        );
        // A total length shorter than the header.
        for total in [0u16, 1, 19] {
            bad = good.to_vec();
            bad[2..4].copy_from_slice(&total.to_be_bytes());
            assert_eq!(
                Ipv4Packet::new_checked(&bad[..]),
                Err(WireError::Malformed(Field::Ipv4TotalLen)),
                "total {total}"
            );
        }
        // A total length past the buffer.
        bad = good.to_vec();
        bad[2..4].copy_from_slice(&58u16.to_be_bytes());
        assert_eq!(
            Ipv4Packet::new_checked(&bad[..]),
            Err(WireError::Truncated(Header::Ipv4))
        );
    }

    #[test]
    fn bad_checksums_are_detected() {
        let good = &IPV4_UDP_DNS[14..];
        // Any single flipped bit in the header is caught.
        for bit in 0..160 {
            let mut bad = good.to_vec();
            bad[bit / 8] ^= 1 << (bit % 8);
            let Ok(packet) = Ipv4Packet::new_checked(&bad[..]) else {
                continue; // the flip broke a length field first
            };
            assert!(!packet.verify_checksum(), "bit {bit}");
            assert_eq!(
                Ipv4Repr::parse(&packet, ChecksumMode::Software),
                Err(WireError::BadChecksum(Header::Ipv4))
            );
            assert!(Ipv4Repr::parse(&packet, ChecksumMode::Offload).is_ok());
        }
    }

    #[test]
    fn options_are_covered_by_the_checksum() {
        // The header with a 4-byte option list (NOP NOP NOP EOL).
        let mut bytes = vec![0u8; 24 + 4];
        let mut packet = Ipv4Packet::new_unchecked(&mut bytes[..]);
        packet.set_version(4);
        packet.set_header_len(24);
        packet.set_total_len(28);
        packet.set_ttl(1);
        packet.options_mut().copy_from_slice(&[1, 1, 1, 0]);
        packet.fill_checksum();
        let packet = Ipv4Packet::new_checked(&bytes[..]).expect("valid");
        assert!(packet.verify_checksum());
        assert_eq!(packet.options(), &[1, 1, 1, 0]);
        let mut bad = bytes.clone();
        bad[22] = 0x44; // inside the options
        assert!(
            !Ipv4Packet::new_checked(&bad[..])
                .expect("lengths")
                .verify_checksum()
        );
    }

    fn random_repr(rng: &mut SmallRng) -> Ipv4Repr {
        Ipv4Repr {
            src_addr: Ipv4Address::from_bits(rng.random()),
            dst_addr: Ipv4Address::from_bits(rng.random()),
            protocol: IpProtocol(rng.random()),
            payload_len: rng.random_range(0..=64),
            ttl: rng.random(),
            dscp: rng.random_range(0..64),
            ecn: rng.random_range(0..4),
            ident: rng.random(),
            dont_frag: rng.random(),
            more_frags: rng.random(),
            frag_offset: rng.random_range(0..=0x1fff) * 8,
        }
    }

    #[test]
    fn emit_over_garbage_parses_back() {
        let mut rng = SmallRng::seed_from_u64(791);
        for _ in 0..2000 {
            let repr = random_repr(&mut rng);
            let mut buf = vec![0u8; repr.buffer_len()];
            rng.fill(&mut buf[..]);
            repr.emit(
                &mut Ipv4Packet::new_unchecked(&mut buf[..]),
                ChecksumMode::Software,
            )
            .expect("room");
            let packet = Ipv4Packet::new_checked(&buf[..]).expect("valid");
            assert!(packet.verify_checksum());
            assert_eq!(Ipv4Repr::parse(&packet, ChecksumMode::Software), Ok(repr));
        }
    }

    #[test]
    fn emit_refuses_what_does_not_fit() {
        let mut rng = SmallRng::seed_from_u64(1);
        let mut repr = random_repr(&mut rng);
        let mut short = [0u8; 19];
        assert_eq!(
            repr.emit(
                &mut Ipv4Packet::new_unchecked(&mut short[..]),
                ChecksumMode::Software
            ),
            Err(WireError::Truncated(Header::Ipv4))
        );
        repr.payload_len = 65536 - 20;
        let mut buf = [0u8; 20];
        assert_eq!(
            repr.emit(
                &mut Ipv4Packet::new_unchecked(&mut buf[..]),
                ChecksumMode::Software
            ),
            Err(WireError::Malformed(Field::Ipv4TotalLen))
        );
        assert_eq!(buf, [0; 20], "nothing written");
    }

    #[test]
    fn offload_leaves_a_zero_checksum() {
        let repr = random_repr(&mut SmallRng::seed_from_u64(2));
        let mut buf = vec![0xffu8; repr.buffer_len()];
        repr.emit(
            &mut Ipv4Packet::new_unchecked(&mut buf[..]),
            ChecksumMode::Offload,
        )
        .expect("room");
        assert_eq!(
            Ipv4Packet::new_checked(&buf[..]).expect("valid").checksum(),
            0
        );
    }

    #[test]
    fn ttl_decrement_matches_recomputing() {
        // Random headers, options included, every TTL: the incremental
        // update (RFC 1624) must give exactly the recomputed checksum.
        let mut rng = SmallRng::seed_from_u64(1624);
        let mut buf = [0u8; 60];
        for _ in 0..100_000 {
            rng.fill(&mut buf[..]);
            let header_len = rng.random_range(5..=15usize) * 4;
            let mut packet = Ipv4Packet::new_unchecked(&mut buf[..header_len]);
            packet.set_version(4);
            packet.set_header_len(header_len);
            packet.set_total_len(header_len as u16);
            packet.set_ttl(rng.random_range(1..=255));
            packet.fill_checksum();
            let ttl = packet.ttl();

            assert_eq!(packet.decrement_ttl_and_update_checksum(), Some(ttl - 1));
            let updated = packet.checksum();
            assert!(packet.verify_checksum());
            packet.fill_checksum();
            assert_eq!(
                updated,
                packet.checksum(),
                "header {:02x?}",
                &buf[..header_len]
            );
        }
    }

    #[test]
    fn ttl_decrement_at_zero_changes_nothing() {
        let mut bytes = IPV4_UDP_DNS[14..].to_vec();
        let mut packet = Ipv4Packet::new_checked(&mut bytes[..]).expect("valid");
        packet.set_ttl(1);
        packet.fill_checksum();
        assert_eq!(packet.decrement_ttl_and_update_checksum(), Some(0));
        assert!(packet.verify_checksum());
        let before = packet.as_ref().to_vec();
        assert_eq!(packet.decrement_ttl_and_update_checksum(), None);
        assert_eq!(packet.as_ref(), &before[..]);
    }
}
