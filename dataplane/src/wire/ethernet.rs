//! Ethernet II frames (IEEE 802.3 clause 3.2.6, the Ethertype form): MAC
//! addresses, the Ethertype, and the payload.
//!
//! The frame check sequence is not part of the view: NICs strip it on
//! receive and add it on transmit.

use super::{Header, Result, VlanStack, WireError, read_u16, write_u16};
use std::fmt;
use std::str::FromStr;

/// A 48-bit IEEE 802 MAC address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EthernetAddress(pub [u8; 6]);

impl EthernetAddress {
    /// The broadcast address, `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: EthernetAddress = EthernetAddress([0xff; 6]);

    /// The six octets, in transmission order.
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// Whether this is the broadcast address.
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// Whether the group bit (I/G, the least significant bit of the first
    /// octet, IEEE 802 clause 8.2) is set: multicast, broadcast included.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// Whether this is an individual (unicast) address.
    pub fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }

    /// Whether the U/L bit (the second least significant bit of the first
    /// octet) says the address is locally administered rather than
    /// assigned by the manufacturer.
    pub fn is_local(&self) -> bool {
        self.0[0] & 0x02 != 0
    }
}

impl fmt::Display for EthernetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for EthernetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EthernetAddress({self})")
    }
}

impl From<[u8; 6]> for EthernetAddress {
    fn from(octets: [u8; 6]) -> Self {
        EthernetAddress(octets)
    }
}

/// A string that is not six hexadecimal octets separated by `:` or `-`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?}: expected six hex octets such as 02:00:5e:10:00:01")]
pub struct AddressParseError(String);

impl FromStr for EthernetAddress {
    type Err = AddressParseError;

    /// Parses `02:00:5e:10:00:01` or `02-00-5e-10-00-01`.
    fn from_str(s: &str) -> core::result::Result<Self, AddressParseError> {
        let err = || AddressParseError(s.to_owned());
        let sep = if s.contains('-') { '-' } else { ':' };
        let mut octets = [0u8; 6];
        let mut parts = s.split(sep);
        for octet in &mut octets {
            let part = parts.next().ok_or_else(err)?;
            if part.is_empty() || part.len() > 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err());
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(EthernetAddress(octets))
    }
}

/// An Ethertype (IEEE 802 numbers, as registered with the IEEE RA), or, for
/// values up to 1500, an IEEE 802.3 length field. Every value is
/// representable; the constants name the ones this module acts on.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EtherType(pub u16);

impl EtherType {
    /// IPv4 (RFC 894).
    pub const IPV4: EtherType = EtherType(0x0800);
    /// ARP (RFC 826).
    pub const ARP: EtherType = EtherType(0x0806);
    /// An IEEE 802.1Q customer VLAN tag (C-tag).
    pub const VLAN: EtherType = EtherType(0x8100);
    /// An IEEE 802.1ad service VLAN tag (S-tag, the outer tag of QinQ).
    pub const QINQ: EtherType = EtherType(0x88a8);
    /// IPv6 (RFC 2464).
    pub const IPV6: EtherType = EtherType(0x86dd);

    /// Whether this value introduces a VLAN tag (802.1Q or 802.1ad).
    pub fn is_vlan_tag(self) -> bool {
        self == EtherType::VLAN || self == EtherType::QINQ
    }

    /// The type's short name, for the values named above.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            EtherType::IPV4 => "ipv4",
            EtherType::ARP => "arp",
            EtherType::VLAN => "802.1q",
            EtherType::QINQ => "802.1ad",
            EtherType::IPV6 => "ipv6",
            _ => return None,
        })
    }
}

impl fmt::Display for EtherType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "0x{:04x}", self.0),
        }
    }
}

impl fmt::Debug for EtherType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EtherType({self})")
    }
}

mod field {
    use core::ops::Range;

    pub const DESTINATION: Range<usize> = 0..6;
    pub const SOURCE: Range<usize> = 6..12;
    pub const ETHERTYPE: usize = 12;
    pub const PAYLOAD: usize = 14;
}

/// A view of an Ethernet II frame, without its frame check sequence.
///
/// The Ethertype is the one right after the source address: for a tagged
/// frame it is a TPID, and [`vlan_stack`](Self::vlan_stack) walks the tags
/// to the type of the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// The length of the header: two addresses and the Ethertype.
    pub const HEADER_LEN: usize = field::PAYLOAD;

    /// Wraps a buffer without checking it; accessors may panic if it is
    /// shorter than the header.
    pub const fn new_unchecked(buffer: T) -> Self {
        EthernetFrame { buffer }
    }

    /// Wraps a buffer and checks that it holds the header.
    ///
    /// # Errors
    /// [`WireError::Truncated`] if it does not.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// Checks that the buffer holds the header; after `Ok`, no accessor
    /// panics.
    ///
    /// # Errors
    /// [`WireError::Truncated`] if it does not.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < field::PAYLOAD {
            return Err(WireError::Truncated(Header::Ethernet));
        }
        Ok(())
    }

    /// The buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The length of a frame with `payload_len` bytes of payload.
    pub const fn buffer_len(payload_len: usize) -> usize {
        field::PAYLOAD + payload_len
    }

    /// The destination address.
    pub fn dst_addr(&self) -> EthernetAddress {
        let mut octets = [0; 6];
        octets.copy_from_slice(&self.buffer.as_ref()[field::DESTINATION]);
        EthernetAddress(octets)
    }

    /// The source address.
    pub fn src_addr(&self) -> EthernetAddress {
        let mut octets = [0; 6];
        octets.copy_from_slice(&self.buffer.as_ref()[field::SOURCE]);
        EthernetAddress(octets)
    }

    /// The Ethertype (the outer TPID when the frame is tagged).
    pub fn ethertype(&self) -> EtherType {
        EtherType(read_u16(self.buffer.as_ref(), field::ETHERTYPE))
    }

    /// Everything after the header (tags included, when tagged), up to the
    /// end of the buffer: Ethernet has no length field, so this includes
    /// any padding up to the 60-byte minimum.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }

    /// Walks the VLAN tags, if any, to the Ethertype of the payload and
    /// where the payload starts.
    ///
    /// # Errors
    /// [`WireError::Truncated`] if a tag is cut short,
    /// [`WireError::Unsupported`] for more than [`MAX_VLAN_TAGS`](super::MAX_VLAN_TAGS) tags.
    pub fn vlan_stack(&self) -> Result<VlanStack> {
        VlanStack::parse(self.buffer.as_ref())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, addr: EthernetAddress) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&addr.0);
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, addr: EthernetAddress) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&addr.0);
    }

    /// Sets the Ethertype.
    pub fn set_ethertype(&mut self, ethertype: EtherType) {
        write_u16(self.buffer.as_mut(), field::ETHERTYPE, ethertype.0);
    }

    /// The payload, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for EthernetFrame<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The fields of an Ethernet II header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EthernetRepr {
    /// Source address.
    pub src_addr: EthernetAddress,
    /// Destination address.
    pub dst_addr: EthernetAddress,
    /// Ethertype (a TPID when VLAN tags follow).
    pub ethertype: EtherType,
}

impl EthernetRepr {
    /// Reads the header of a checked frame.
    ///
    /// # Errors
    /// [`WireError::Truncated`] if the frame is shorter than the header.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(frame: &EthernetFrame<&T>) -> Result<EthernetRepr> {
        frame.check_len()?;
        Ok(EthernetRepr {
            src_addr: frame.src_addr(),
            dst_addr: frame.dst_addr(),
            ethertype: frame.ethertype(),
        })
    }

    /// The length of the header this emits.
    pub const fn buffer_len(&self) -> usize {
        field::PAYLOAD
    }

    /// Writes the header into the start of `frame`.
    ///
    /// # Errors
    /// [`WireError::Truncated`] if the buffer is shorter than the header;
    /// nothing is written then.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, frame: &mut EthernetFrame<T>) -> Result<()> {
        frame.check_len()?;
        frame.set_dst_addr(self.dst_addr);
        frame.set_src_addr(self.src_addr);
        frame.set_ethertype(self.ethertype);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An untagged broadcast ARP frame's Ethernet header, padded to the
    /// 60-byte minimum as a NIC delivers it.
    fn arp_frame() -> Vec<u8> {
        let mut f = vec![
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // broadcast
            0x52, 0x54, 0x00, 0x12, 0x34, 0x56, // a QEMU NIC
            0x08, 0x06, // ARP
        ];
        f.resize(60, 0);
        f
    }

    #[test]
    fn parses_a_captured_header() {
        let bytes = arp_frame();
        let frame = EthernetFrame::new_checked(&bytes[..]).expect("valid");
        assert_eq!(frame.dst_addr(), EthernetAddress::BROADCAST);
        assert_eq!(
            frame.src_addr(),
            EthernetAddress([0x52, 0x54, 0x00, 0x12, 0x34, 0x56])
        );
        assert_eq!(frame.ethertype(), EtherType::ARP);
        assert_eq!(frame.payload().len(), 46);
        let repr = EthernetRepr::parse(&frame).expect("valid");
        assert_eq!(repr.ethertype, EtherType::ARP);
    }

    #[test]
    fn every_truncation_is_truncated() {
        let bytes = arp_frame();
        for len in 0..EthernetFrame::<&[u8]>::HEADER_LEN {
            assert_eq!(
                EthernetFrame::new_checked(&bytes[..len]),
                Err(WireError::Truncated(Header::Ethernet)),
                "len {len}"
            );
        }
        assert!(EthernetFrame::new_checked(&bytes[..14]).is_ok());
    }

    #[test]
    fn emit_over_garbage_parses_back() {
        let repr = EthernetRepr {
            src_addr: EthernetAddress([0x02, 0, 0, 0, 0, 1]),
            dst_addr: EthernetAddress([0x02, 0, 0, 0, 0, 2]),
            ethertype: EtherType::IPV6,
        };
        let mut buf = vec![0xa5u8; repr.buffer_len() + 4];
        let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
        repr.emit(&mut frame).expect("room");
        let frame = EthernetFrame::new_checked(&buf[..]).expect("valid");
        assert_eq!(EthernetRepr::parse(&frame), Ok(repr));
        assert_eq!(frame.payload(), &[0xa5; 4]);

        let mut short = [0u8; 13];
        assert_eq!(
            repr.emit(&mut EthernetFrame::new_unchecked(&mut short[..])),
            Err(WireError::Truncated(Header::Ethernet))
        );
        assert_eq!(short, [0; 13], "nothing written into a short buffer");
    }

    #[test]
    fn address_classes() {
        assert!(EthernetAddress::BROADCAST.is_broadcast());
        assert!(EthernetAddress::BROADCAST.is_multicast());
        let mcast = EthernetAddress([0x01, 0x00, 0x5e, 0x00, 0x00, 0x01]);
        assert!(mcast.is_multicast() && !mcast.is_broadcast() && !mcast.is_unicast());
        let local = EthernetAddress([0x02, 0, 0, 0, 0, 1]);
        assert!(local.is_unicast() && local.is_local());
        let oui = EthernetAddress([0x00, 0x1b, 0x21, 0, 0, 1]);
        assert!(oui.is_unicast() && !oui.is_local());
    }

    #[test]
    fn address_text() {
        let addr = EthernetAddress([0x02, 0x00, 0x5e, 0x10, 0xab, 0x01]);
        assert_eq!(addr.to_string(), "02:00:5e:10:ab:01");
        assert_eq!("02:00:5e:10:ab:01".parse(), Ok(addr));
        assert_eq!("02-00-5E-10-AB-01".parse(), Ok(addr));
        for bad in [
            "",
            "02:00:5e:10:ab",
            "02:00:5e:10:ab:01:02",
            "02:00:5e:10:ab:1g",
            "002:00:5e:10:ab:01",
            "02::5e:10:ab:01",
            "+2:00:5e:10:ab:01",
        ] {
            assert!(bad.parse::<EthernetAddress>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ethertype_text() {
        assert_eq!(EtherType::IPV4.to_string(), "ipv4");
        assert_eq!(EtherType(0x88cc).to_string(), "0x88cc");
        assert!(EtherType::QINQ.is_vlan_tag() && EtherType::VLAN.is_vlan_tag());
        assert!(!EtherType::IPV6.is_vlan_tag());
    }
}
