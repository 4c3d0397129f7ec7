//! ARP packets (RFC 826). The view reads any hardware and protocol address
//! lengths; [`ArpRepr`] is the one case a data plane answers: Ethernet
//! hardware addresses and IPv4 protocol addresses.

use super::{EtherType, EthernetAddress, Field, Header, Ipv4Address, Result, WireError};
use super::{read_u16, write_u16};
use std::fmt;

/// An ARP operation code (RFC 826 `ar$op`; IANA's "ARP Parameters").
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ArpOperation(pub u16);

impl ArpOperation {
    /// A request: who has the target protocol address?
    pub const REQUEST: ArpOperation = ArpOperation(1);
    /// A reply: the sender has the sender protocol address.
    pub const REPLY: ArpOperation = ArpOperation(2);
}

impl fmt::Debug for ArpOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ArpOperation::REQUEST => f.write_str("ArpOperation(request)"),
            ArpOperation::REPLY => f.write_str("ArpOperation(reply)"),
            ArpOperation(op) => write!(f, "ArpOperation({op})"),
        }
    }
}

/// The hardware type of Ethernet (RFC 826 `ares_hrd$Ethernet`).
const HARDWARE_ETHERNET: u16 = 1;

mod field {
    pub const HTYPE: usize = 0;
    pub const PTYPE: usize = 2;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: usize = 6;
    /// Where the variable-length addresses start.
    pub const ADDRESSES: usize = 8;
}

/// A view of an ARP packet: a fixed 8-byte header, then the sender's and
/// the target's hardware and protocol addresses, of the lengths the header
/// gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// The length of the fixed header.
    pub const HEADER_LEN: usize = field::ADDRESSES;
    /// The length of an Ethernet/IPv4 ARP packet.
    pub const ETHERNET_IPV4_LEN: usize = field::ADDRESSES + 2 * (6 + 4);

    /// Wraps a buffer without checking it; accessors may panic if it is
    /// shorter than the addresses the header announces.
    pub const fn new_unchecked(buffer: T) -> Self {
        ArpPacket { buffer }
    }

    /// Wraps a buffer and checks its length; see
    /// [`check_len`](Self::check_len).
    ///
    /// # Errors
    /// As `check_len`.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds the header and the four addresses of
    /// the lengths it gives; after `Ok`, no accessor panics. Trailing
    /// bytes (Ethernet padding) are allowed.
    ///
    /// # Errors
    /// [`WireError::Truncated`] if it does not.
    pub fn check_len(&self) -> Result<()> {
        let data = self.buffer.as_ref();
        let Some(fixed) = data.first_chunk::<{ field::ADDRESSES }>() else {
            return Err(WireError::Truncated(Header::Arp));
        };
        let hlen = usize::from(fixed[field::HLEN]);
        let plen = usize::from(fixed[field::PLEN]);
        if data.len() < field::ADDRESSES + 2 * (hlen + plen) {
            return Err(WireError::Truncated(Header::Arp));
        }
        Ok(())
    }

    /// The buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The hardware type (1 for Ethernet).
    pub fn hardware_type(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::HTYPE)
    }

    /// The protocol type, an Ethertype (IPv4 for IPv4).
    pub fn protocol_type(&self) -> EtherType {
        EtherType(read_u16(self.buffer.as_ref(), field::PTYPE))
    }

    /// The length of a hardware address.
    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }

    /// The length of a protocol address.
    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }

    /// The operation.
    pub fn operation(&self) -> ArpOperation {
        ArpOperation(read_u16(self.buffer.as_ref(), field::OPER))
    }

    /// The offsets of the four addresses: sender hardware, sender
    /// protocol, target hardware, target protocol.
    fn offsets(&self) -> [usize; 5] {
        let hlen = usize::from(self.hardware_len());
        let plen = usize::from(self.protocol_len());
        let sha = field::ADDRESSES;
        [
            sha,
            sha + hlen,
            sha + hlen + plen,
            sha + 2 * hlen + plen,
            sha + 2 * (hlen + plen),
        ]
    }

    /// The sender's hardware address.
    pub fn sender_hardware_addr(&self) -> &[u8] {
        let o = self.offsets();
        &self.buffer.as_ref()[o[0]..o[1]]
    }

    /// The sender's protocol address.
    pub fn sender_protocol_addr(&self) -> &[u8] {
        let o = self.offsets();
        &self.buffer.as_ref()[o[1]..o[2]]
    }

    /// The target's hardware address (zero in a request).
    pub fn target_hardware_addr(&self) -> &[u8] {
        let o = self.offsets();
        &self.buffer.as_ref()[o[2]..o[3]]
    }

    /// The target's protocol address.
    pub fn target_protocol_addr(&self) -> &[u8] {
        let o = self.offsets();
        &self.buffer.as_ref()[o[3]..o[4]]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Sets the hardware type.
    pub fn set_hardware_type(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::HTYPE, value);
    }

    /// Sets the protocol type.
    pub fn set_protocol_type(&mut self, value: EtherType) {
        write_u16(self.buffer.as_mut(), field::PTYPE, value.0);
    }

    /// Sets the hardware address length. Moves the addresses: check the
    /// view again afterwards.
    pub fn set_hardware_len(&mut self, value: u8) {
        self.buffer.as_mut()[field::HLEN] = value;
    }

    /// Sets the protocol address length. Moves the addresses: check the
    /// view again afterwards.
    pub fn set_protocol_len(&mut self, value: u8) {
        self.buffer.as_mut()[field::PLEN] = value;
    }

    /// Sets the operation.
    pub fn set_operation(&mut self, value: ArpOperation) {
        write_u16(self.buffer.as_mut(), field::OPER, value.0);
    }

    /// Sets the sender's hardware address; `addr` must be
    /// [`hardware_len`](Self::hardware_len) bytes long.
    pub fn set_sender_hardware_addr(&mut self, addr: &[u8]) {
        let o = self.offsets();
        self.buffer.as_mut()[o[0]..o[1]].copy_from_slice(addr);
    }

    /// Sets the sender's protocol address; `addr` must be
    /// [`protocol_len`](Self::protocol_len) bytes long.
    pub fn set_sender_protocol_addr(&mut self, addr: &[u8]) {
        let o = self.offsets();
        self.buffer.as_mut()[o[1]..o[2]].copy_from_slice(addr);
    }

    /// Sets the target's hardware address; `addr` must be
    /// [`hardware_len`](Self::hardware_len) bytes long.
    pub fn set_target_hardware_addr(&mut self, addr: &[u8]) {
        let o = self.offsets();
        self.buffer.as_mut()[o[2]..o[3]].copy_from_slice(addr);
    }

    /// Sets the target's protocol address; `addr` must be
    /// [`protocol_len`](Self::protocol_len) bytes long.
    pub fn set_target_protocol_addr(&mut self, addr: &[u8]) {
        let o = self.offsets();
        self.buffer.as_mut()[o[3]..o[4]].copy_from_slice(addr);
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for ArpPacket<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// An ARP packet for IPv4 over Ethernet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArpRepr {
    /// Request or reply (or another code, carried as it is).
    pub operation: ArpOperation,
    /// The sender's MAC address.
    pub sender_hardware_addr: EthernetAddress,
    /// The sender's IPv4 address.
    pub sender_protocol_addr: Ipv4Address,
    /// The target's MAC address (zero in a request).
    pub target_hardware_addr: EthernetAddress,
    /// The target's IPv4 address.
    pub target_protocol_addr: Ipv4Address,
}

impl ArpRepr {
    /// Reads a checked Ethernet/IPv4 ARP packet.
    ///
    /// # Errors
    /// [`WireError::Truncated`] as [`ArpPacket::check_len`];
    /// [`WireError::Unsupported`] for another hardware type, protocol
    /// type, or address lengths other than 6 and 4.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &ArpPacket<&T>) -> Result<ArpRepr> {
        packet.check_len()?;
        if packet.hardware_type() != HARDWARE_ETHERNET {
            return Err(WireError::Unsupported(Field::ArpHardwareType));
        }
        if packet.protocol_type() != EtherType::IPV4 {
            return Err(WireError::Unsupported(Field::ArpProtocolType));
        }
        if packet.hardware_len() != 6 {
            return Err(WireError::Unsupported(Field::ArpHardwareLen));
        }
        if packet.protocol_len() != 4 {
            return Err(WireError::Unsupported(Field::ArpProtocolLen));
        }
        // The lengths are 6 and 4 and were checked against the buffer, so
        // these conversions cannot fail; say so in the error anyway.
        let mac = |b: &[u8]| {
            <[u8; 6]>::try_from(b)
                .map(EthernetAddress)
                .map_err(|_| WireError::Truncated(Header::Arp))
        };
        let ip = |b: &[u8]| {
            <[u8; 4]>::try_from(b)
                .map(Ipv4Address::from)
                .map_err(|_| WireError::Truncated(Header::Arp))
        };
        Ok(ArpRepr {
            operation: packet.operation(),
            sender_hardware_addr: mac(packet.sender_hardware_addr())?,
            sender_protocol_addr: ip(packet.sender_protocol_addr())?,
            target_hardware_addr: mac(packet.target_hardware_addr())?,
            target_protocol_addr: ip(packet.target_protocol_addr())?,
        })
    }

    /// The length of what this emits (28 bytes).
    pub const fn buffer_len(&self) -> usize {
        ArpPacket::<&[u8]>::ETHERNET_IPV4_LEN
    }

    /// The reply to this request, from `hardware_addr`: the requested
    /// protocol address now belongs to the sender.
    pub fn reply(&self, hardware_addr: EthernetAddress) -> ArpRepr {
        ArpRepr {
            operation: ArpOperation::REPLY,
            sender_hardware_addr: hardware_addr,
            sender_protocol_addr: self.target_protocol_addr,
            target_hardware_addr: self.sender_hardware_addr,
            target_protocol_addr: self.sender_protocol_addr,
        }
    }

    /// Writes the packet into the start of `packet`.
    ///
    /// # Errors
    /// [`WireError::Truncated`] if the buffer is shorter than 28 bytes;
    /// nothing is written then.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut ArpPacket<T>) -> Result<()> {
        if packet.buffer.as_ref().len() < self.buffer_len() {
            return Err(WireError::Truncated(Header::Arp));
        }
        packet.set_hardware_type(HARDWARE_ETHERNET);
        packet.set_protocol_type(EtherType::IPV4);
        packet.set_hardware_len(6);
        packet.set_protocol_len(4);
        packet.set_operation(self.operation);
        packet.set_sender_hardware_addr(&self.sender_hardware_addr.0);
        packet.set_sender_protocol_addr(&self.sender_protocol_addr.octets());
        packet.set_target_hardware_addr(&self.target_hardware_addr.0);
        packet.set_target_protocol_addr(&self.target_protocol_addr.octets());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testdata::ARP_REQUEST;

    fn request() -> ArpRepr {
        ArpRepr {
            operation: ArpOperation::REQUEST,
            sender_hardware_addr: EthernetAddress([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]),
            sender_protocol_addr: Ipv4Address::new(192, 168, 1, 100),
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: Ipv4Address::new(192, 168, 1, 1),
        }
    }

    #[test]
    fn parses_a_captured_request() {
        let packet = ArpPacket::new_checked(&ARP_REQUEST[14..]).expect("valid");
        assert_eq!(packet.hardware_type(), 1);
        assert_eq!(packet.protocol_type(), EtherType::IPV4);
        assert_eq!((packet.hardware_len(), packet.protocol_len()), (6, 4));
        assert_eq!(packet.operation(), ArpOperation::REQUEST);
        assert_eq!(packet.sender_protocol_addr(), &[192, 168, 1, 100]);
        assert_eq!(packet.target_protocol_addr(), &[192, 168, 1, 1]);
        assert_eq!(ArpRepr::parse(&packet), Ok(request()));
    }

    #[test]
    fn every_truncation_is_truncated() {
        let bytes = &ARP_REQUEST[14..14 + 28];
        for len in 0..bytes.len() {
            assert_eq!(
                ArpPacket::new_checked(&bytes[..len]),
                Err(WireError::Truncated(Header::Arp)),
                "len {len}"
            );
        }
        assert!(ArpPacket::new_checked(bytes).is_ok());
    }

    #[test]
    fn other_lengths_read_but_are_unsupported() {
        // An ARP packet with 8-byte hardware addresses and 16-byte protocol
        // addresses: readable, not representable.
        let mut bytes = [0u8; 8 + 2 * (8 + 16)];
        let mut packet = ArpPacket::new_unchecked(&mut bytes[..]);
        packet.set_hardware_type(HARDWARE_ETHERNET);
        packet.set_protocol_type(EtherType::IPV4);
        packet.set_hardware_len(8);
        packet.set_protocol_len(16);
        packet.set_target_protocol_addr(&[7; 16]);
        let packet = ArpPacket::new_checked(&bytes[..]).expect("lengths fit");
        assert_eq!(packet.target_protocol_addr(), &[7; 16]);
        assert_eq!(packet.sender_hardware_addr().len(), 8);
        assert_eq!(
            ArpRepr::parse(&packet),
            Err(WireError::Unsupported(Field::ArpHardwareLen))
        );
        assert_eq!(
            ArpPacket::new_checked(&bytes[..bytes.len() - 1]),
            Err(WireError::Truncated(Header::Arp))
        );

        let base = &ARP_REQUEST[14..];
        for (at, value, field) in [
            (1, 6, Field::ArpHardwareType),
            (3, 0xdd, Field::ArpProtocolType),
            (5, 5, Field::ArpProtocolLen),
        ] {
            let mut bad = base.to_vec();
            bad[at] = value;
            let packet = ArpPacket::new_checked(&bad[..]).expect("lengths fit");
            assert_eq!(ArpRepr::parse(&packet), Err(WireError::Unsupported(field)));
        }
    }

    #[test]
    fn emit_over_garbage_parses_back() {
        let repr = request().reply(EthernetAddress([0x02, 0, 0, 0, 0, 9]));
        assert_eq!(repr.operation, ArpOperation::REPLY);
        assert_eq!(repr.target_protocol_addr, request().sender_protocol_addr);
        let mut buf = [0xeeu8; 28];
        repr.emit(&mut ArpPacket::new_unchecked(&mut buf[..]))
            .expect("room");
        let packet = ArpPacket::new_checked(&buf[..]).expect("valid");
        assert_eq!(ArpRepr::parse(&packet), Ok(repr));
        let mut short = [0u8; 27];
        assert_eq!(
            repr.emit(&mut ArpPacket::new_unchecked(&mut short[..])),
            Err(WireError::Truncated(Header::Arp))
        );
    }
}
