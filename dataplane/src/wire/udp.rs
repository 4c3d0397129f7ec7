//! UDP datagrams (RFC 768), with the checksum over the IPv4 (RFC 768) or
//! IPv6 (RFC 8200 section 8.1) pseudo-header.

use super::{ChecksumMode, Field, Header, IpPair, IpProtocol, Result, WireError};
use super::{checksum, read_u16, write_u16};

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LENGTH: usize = 4;
    pub const CHECKSUM: usize = 6;
    pub const PAYLOAD: usize = 8;
}

/// A view of a UDP datagram: the header and the payload up to the UDP
/// length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// The length of the header.
    pub const HEADER_LEN: usize = field::PAYLOAD;

    /// Wraps a buffer without checking it; accessors may panic if the
    /// length field disagrees with the buffer.
    pub const fn new_unchecked(buffer: T) -> Self {
        UdpPacket { buffer }
    }

    /// Wraps a buffer and checks its length field; see
    /// [`check_len`](Self::check_len).
    ///
    /// # Errors
    /// As `check_len`.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the length field against the buffer; after `Ok`, no accessor
    /// panics. The buffer may extend past the UDP length.
    ///
    /// # Errors
    /// - [`WireError::Truncated`]: shorter than the header, or than the
    ///   UDP length.
    /// - [`WireError::Malformed`] ([`Field::UdpLength`]): a UDP length
    ///   shorter than the header.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let data = self.buffer.as_ref();
        let Some(header) = data.first_chunk::<{ field::PAYLOAD }>() else {
            return Err(WireError::Truncated(Header::Udp));
        };
        let len = usize::from(read_u16(header, field::LENGTH));
        if len < field::PAYLOAD {
            return Err(WireError::Malformed(Field::UdpLength));
        }
        if data.len() < len {
            return Err(WireError::Truncated(Header::Udp));
        }
        Ok(())
    }

    /// The buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The source port.
    pub fn src_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::SRC_PORT)
    }

    /// The destination port.
    pub fn dst_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// The UDP length: header and payload, in bytes.
    pub fn len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= field::PAYLOAD
    }

    /// The checksum field.
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The payload, up to the UDP length.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..usize::from(self.len())]
    }

    /// The sum of the pseudo-header and the datagram.
    fn sum(&self, addrs: &IpPair) -> u16 {
        let len = self.len();
        checksum::combine(&[
            addrs.pseudo_header_sum(IpProtocol::UDP, u32::from(len)),
            checksum::data(&self.buffer.as_ref()[..usize::from(len)]),
        ])
    }

    /// Whether the checksum is right for a datagram between `addrs`.
    ///
    /// A zero checksum means "none" over IPv4 (RFC 768) and passes; over
    /// IPv6 it is not allowed (RFC 8200 section 8.1) and fails.
    pub fn verify_checksum(&self, addrs: &IpPair) -> bool {
        if self.checksum() == 0 {
            return matches!(addrs, IpPair::V4 { .. });
        }
        self.sum(addrs) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Sets the source port.
    pub fn set_src_port(&mut self, port: u16) {
        write_u16(self.buffer.as_mut(), field::SRC_PORT, port);
    }

    /// Sets the destination port.
    pub fn set_dst_port(&mut self, port: u16) {
        write_u16(self.buffer.as_mut(), field::DST_PORT, port);
    }

    /// Sets the UDP length. Changes where the payload ends: check the view
    /// again afterwards.
    pub fn set_len(&mut self, len: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH, len);
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, checksum: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, checksum);
    }

    /// Computes the checksum over the pseudo-header of `addrs` and the
    /// datagram, and stores it. A computed zero is sent as `0xffff`, since
    /// zero means "no checksum" (RFC 768).
    pub fn fill_checksum(&mut self, addrs: &IpPair) {
        self.set_checksum(0);
        let sum = !self.sum(addrs);
        self.set_checksum(if sum == 0 { 0xffff } else { sum });
    }

    /// The payload, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len());
        &mut self.buffer.as_mut()[field::PAYLOAD..end]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for UdpPacket<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The fields of a UDP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UdpRepr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Payload length in bytes (the UDP length less the header).
    pub payload_len: usize,
}

impl UdpRepr {
    /// Reads a checked datagram's header.
    ///
    /// # Errors
    /// As [`UdpPacket::check_len`], and [`WireError::BadChecksum`] when
    /// `checksum` is [`ChecksumMode::Software`] and
    /// [`verify_checksum`](UdpPacket::verify_checksum) fails.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        packet: &UdpPacket<&T>,
        addrs: &IpPair,
        checksum: ChecksumMode,
    ) -> Result<UdpRepr> {
        packet.check_len()?;
        if checksum == ChecksumMode::Software && !packet.verify_checksum(addrs) {
            return Err(WireError::BadChecksum(Header::Udp));
        }
        Ok(UdpRepr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            payload_len: usize::from(packet.len()) - field::PAYLOAD,
        })
    }

    /// The length of the header.
    pub const fn header_len(&self) -> usize {
        field::PAYLOAD
    }

    /// The length of the header and the payload.
    pub const fn buffer_len(&self) -> usize {
        field::PAYLOAD + self.payload_len
    }

    /// Writes the header, and the checksum over the payload already in the
    /// buffer after it (write the payload first, at
    /// [`UdpPacket::HEADER_LEN`]). Under [`ChecksumMode::Offload`] the
    /// checksum field holds the pseudo-header sum, for the NIC to finish.
    ///
    /// # Errors
    /// [`WireError::Truncated`] if the buffer is shorter than
    /// [`buffer_len`](Self::buffer_len), [`WireError::Malformed`]
    /// ([`Field::UdpLength`]) if the payload does not fit the 16-bit
    /// length; nothing is written then.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut UdpPacket<T>,
        addrs: &IpPair,
        checksum: ChecksumMode,
    ) -> Result<()> {
        let len =
            u16::try_from(self.buffer_len()).map_err(|_| WireError::Malformed(Field::UdpLength))?;
        if packet.buffer.as_ref().len() < self.buffer_len() {
            return Err(WireError::Truncated(Header::Udp));
        }
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_len(len);
        match checksum {
            ChecksumMode::Software => packet.fill_checksum(addrs),
            ChecksumMode::Offload => {
                packet.set_checksum(addrs.pseudo_header_sum(IpProtocol::UDP, u32::from(len)))
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testdata::{IPV4_UDP_DNS, IPV6_UDP};
    use crate::wire::{Ipv4Address, Ipv6Address};

    fn dns_addrs() -> IpPair {
        IpPair::V4 {
            src: Ipv4Address::new(192, 168, 1, 100),
            dst: Ipv4Address::new(8, 8, 8, 8),
        }
    }

    fn v6_addrs() -> IpPair {
        IpPair::V6 {
            src: "2001:db8::1".parse::<Ipv6Address>().expect("literal"),
            dst: "2001:db8::2".parse::<Ipv6Address>().expect("literal"),
        }
    }

    #[test]
    fn parses_a_dns_query() {
        let packet = UdpPacket::new_checked(&IPV4_UDP_DNS[34..]).expect("valid");
        assert_eq!((packet.src_port(), packet.dst_port()), (53001, 53));
        assert_eq!(packet.len(), 37);
        assert_eq!(packet.checksum(), 0x74b0);
        assert!(packet.verify_checksum(&dns_addrs()));
        assert_eq!(&packet.payload()[..2], &[0x1a, 0x2b], "the DNS id");
        assert_eq!(
            UdpRepr::parse(&packet, &dns_addrs(), ChecksumMode::Software),
            Ok(UdpRepr {
                src_port: 53001,
                dst_port: 53,
                payload_len: 29
            })
        );
        // The same datagram between other addresses fails its checksum.
        let other = IpPair::V4 {
            src: Ipv4Address::new(192, 168, 1, 101),
            dst: Ipv4Address::new(8, 8, 8, 8),
        };
        assert!(!packet.verify_checksum(&other));
    }

    #[test]
    fn parses_over_ipv6() {
        let packet = UdpPacket::new_checked(&IPV6_UDP[54..]).expect("valid");
        assert_eq!((packet.src_port(), packet.dst_port()), (5000, 53));
        assert_eq!(packet.payload(), b"hello, v6");
        assert_eq!(packet.checksum(), 0xf625);
        assert!(packet.verify_checksum(&v6_addrs()));
    }

    #[test]
    fn every_truncation_is_truncated() {
        for bytes in [&IPV4_UDP_DNS[34..], &IPV6_UDP[54..]] {
            for len in 0..bytes.len() {
                assert_eq!(
                    UdpPacket::new_checked(&bytes[..len]),
                    Err(WireError::Truncated(Header::Udp)),
                    "len {len}"
                );
            }
        }
    }

    #[test]
    fn malformed_length() {
        for len in 0u16..8 {
            let mut bad = IPV4_UDP_DNS[34..].to_vec();
            bad[4..6].copy_from_slice(&len.to_be_bytes());
            assert_eq!(
                UdpPacket::new_checked(&bad[..]),
                Err(WireError::Malformed(Field::UdpLength)),
                "len {len}"
            );
        }
        // Shorter than the buffer is fine: the payload stops at the length.
        let mut short = IPV4_UDP_DNS[34..].to_vec();
        short[4..6].copy_from_slice(&8u16.to_be_bytes());
        let packet = UdpPacket::new_checked(&short[..]).expect("valid");
        assert!(packet.is_empty() && packet.payload().is_empty());
    }

    #[test]
    fn bad_and_absent_checksums() {
        let mut bad = IPV4_UDP_DNS[34..].to_vec();
        *bad.last_mut().expect("payload") ^= 0x01;
        let packet = UdpPacket::new_checked(&bad[..]).expect("valid");
        assert!(!packet.verify_checksum(&dns_addrs()));
        assert_eq!(
            UdpRepr::parse(&packet, &dns_addrs(), ChecksumMode::Software),
            Err(WireError::BadChecksum(Header::Udp))
        );
        assert!(UdpRepr::parse(&packet, &dns_addrs(), ChecksumMode::Offload).is_ok());

        // Zero: "no checksum" over IPv4, refused over IPv6.
        bad[6] = 0;
        bad[7] = 0;
        assert!(UdpPacket::new_unchecked(&bad[..]).verify_checksum(&dns_addrs()));
        let mut v6 = IPV6_UDP[54..].to_vec();
        v6[6] = 0;
        v6[7] = 0;
        assert!(!UdpPacket::new_unchecked(&v6[..]).verify_checksum(&v6_addrs()));
    }

    #[test]
    fn a_computed_zero_is_sent_as_all_ones() {
        // Find a payload whose checksum computes to zero, and check that it
        // goes out as ffff and still verifies.
        let addrs = dns_addrs();
        let mut buf = [0u8; 10];
        let repr = UdpRepr {
            src_port: 1,
            dst_port: 2,
            payload_len: 2,
        };
        for word in 0..=u16::MAX {
            buf[8..].copy_from_slice(&word.to_be_bytes());
            let mut packet = UdpPacket::new_unchecked(&mut buf[..]);
            repr.emit(&mut packet, &addrs, ChecksumMode::Software)
                .expect("room");
            packet.set_checksum(0);
            if !packet.sum(&addrs) == 0 {
                packet.fill_checksum(&addrs);
                assert_eq!(packet.checksum(), 0xffff);
                assert!(packet.verify_checksum(&addrs));
                return;
            }
        }
        panic!("some payload word makes the checksum zero");
    }

    #[test]
    fn emit_over_garbage_parses_back() {
        for addrs in [dns_addrs(), v6_addrs()] {
            let repr = UdpRepr {
                src_port: 40000,
                dst_port: 4789,
                payload_len: 5,
            };
            let mut buf = [0x77u8; 13];
            buf[8..].copy_from_slice(b"hello");
            repr.emit(
                &mut UdpPacket::new_unchecked(&mut buf[..]),
                &addrs,
                ChecksumMode::Software,
            )
            .expect("room");
            let packet = UdpPacket::new_checked(&buf[..]).expect("valid");
            assert_eq!(
                UdpRepr::parse(&packet, &addrs, ChecksumMode::Software),
                Ok(repr)
            );
            assert_eq!(packet.payload(), b"hello");

            // Offload: the field holds the pseudo-header sum, which the NIC
            // completes into the checksum software computes.
            repr.emit(
                &mut UdpPacket::new_unchecked(&mut buf[..]),
                &addrs,
                ChecksumMode::Offload,
            )
            .expect("room");
            let partial = UdpPacket::new_unchecked(&buf[..]).checksum();
            assert_eq!(partial, addrs.pseudo_header_sum(IpProtocol::UDP, 13));
            let nic = !checksum::data(&buf);
            let mut full = buf;
            UdpPacket::new_unchecked(&mut full[..]).fill_checksum(&addrs);
            assert_eq!(UdpPacket::new_unchecked(&full[..]).checksum(), nic);
        }
    }

    #[test]
    fn emit_refuses_what_does_not_fit() {
        let repr = UdpRepr {
            src_port: 1,
            dst_port: 2,
            payload_len: 4,
        };
        let mut short = [0u8; 11];
        assert_eq!(
            repr.emit(
                &mut UdpPacket::new_unchecked(&mut short[..]),
                &dns_addrs(),
                ChecksumMode::Software
            ),
            Err(WireError::Truncated(Header::Udp))
        );
        assert_eq!(short, [0; 11]);
        let huge = UdpRepr {
            payload_len: 65536 - 8,
            ..repr
        };
        assert_eq!(
            huge.emit(
                &mut UdpPacket::new_unchecked(&mut short[..]),
                &dns_addrs(),
                ChecksumMode::Software
            ),
            Err(WireError::Malformed(Field::UdpLength))
        );
    }
}
