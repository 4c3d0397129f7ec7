//! VLAN tags: IEEE 802.1Q customer tags (TPID 0x8100) and IEEE 802.1ad
//! service tags (TPID 0x88a8, the outer tag of "QinQ").
//!
//! A tag is four bytes between the source address and the Ethertype: the
//! TPID, which takes the Ethertype's place, then the tag control
//! information (IEEE 802.1Q-2018 clause 9.6: PCP in the top 3 bits, DEI,
//! then the 12-bit VLAN id). [`VlanPacket`] views the TCI and the Ethertype
//! that follows it, as smoltcp views any header after an Ethertype;
//! [`VlanStack`] walks a whole frame's tags at once.

use super::{
    EtherType, EthernetFrame, Field, Header, Result, WireError, get_u16, read_u16, write_u16,
};
use std::fmt;

/// How many tags [`VlanStack`] follows: one 802.1Q tag, or an 802.1ad
/// S-tag and a C-tag (QinQ). A third tag is refused as unsupported.
pub const MAX_VLAN_TAGS: usize = 2;

/// A 12-bit VLAN identifier (0 to 4095).
///
/// 0 means "priority tag, no VLAN" and 4095 is reserved (IEEE 802.1Q-2018
/// table 9-2); both are carried as they are, the data path decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct VlanId(u16);

impl VlanId {
    /// The largest identifier.
    pub const MAX: u16 = 0x0fff;

    /// The identifier `id`, or `None` if it does not fit in 12 bits.
    pub const fn new(id: u16) -> Option<VlanId> {
        if id <= Self::MAX {
            Some(VlanId(id))
        } else {
            None
        }
    }

    /// The identifier's value.
    pub const fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for VlanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Splits a TCI into PCP, DEI and VID.
fn split_tci(tci: u16) -> (u8, bool, VlanId) {
    (
        (tci >> 13) as u8,
        tci & 0x1000 != 0,
        VlanId(tci & VlanId::MAX),
    )
}

/// Builds a TCI; a PCP above 7 is a bug in the caller.
fn make_tci(pcp: u8, dei: bool, vid: VlanId) -> u16 {
    debug_assert!(pcp <= 7, "PCP {pcp} does not fit in 3 bits");
    (u16::from(pcp & 7) << 13) | (u16::from(dei) << 12) | vid.0
}

/// One tag of a frame, as [`VlanStack`] found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct VlanTag {
    /// The tag protocol identifier: [`EtherType::VLAN`] or
    /// [`EtherType::QINQ`].
    pub tpid: EtherType,
    /// Priority code point (0 to 7).
    pub pcp: u8,
    /// Drop eligible indicator.
    pub dei: bool,
    /// The VLAN.
    pub vid: VlanId,
}

impl VlanTag {
    /// The tag with control information `tci`.
    pub fn from_tci(tpid: EtherType, tci: u16) -> VlanTag {
        let (pcp, dei, vid) = split_tci(tci);
        VlanTag {
            tpid,
            pcp,
            dei,
            vid,
        }
    }

    /// The tag control information.
    ///
    /// # Panics
    /// In debug builds, if `pcp` is above 7 (release builds keep its low
    /// 3 bits).
    pub fn tci(&self) -> u16 {
        make_tci(self.pcp, self.dei, self.vid)
    }
}

/// A frame's VLAN tags, outermost first, and what they carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VlanStack {
    tags: [VlanTag; MAX_VLAN_TAGS],
    count: u8,
    ethertype: EtherType,
    l3_offset: usize,
}

impl VlanStack {
    /// Walks the tags of the Ethernet frame in `frame` (from its first
    /// byte) to the Ethertype of the payload.
    ///
    /// # Errors
    /// [`WireError::Truncated`] if the frame ends inside its header or a
    /// tag, [`WireError::Unsupported`] ([`Field::VlanDepth`]) for more
    /// than [`MAX_VLAN_TAGS`] tags.
    #[inline]
    pub fn parse(frame: &[u8]) -> Result<VlanStack> {
        let mut stack = VlanStack {
            tags: [VlanTag::default(); MAX_VLAN_TAGS],
            count: 0,
            ethertype: EtherType(0),
            l3_offset: 0,
        };
        if frame.len() < EthernetFrame::<&[u8]>::HEADER_LEN {
            return Err(WireError::Truncated(Header::Ethernet));
        }
        // The offset of the current Ethertype (or TPID) field.
        let mut at = EthernetFrame::<&[u8]>::HEADER_LEN - 2;
        loop {
            let ethertype =
                EtherType(get_u16(frame, at).ok_or(WireError::Truncated(Header::Vlan))?);
            if !ethertype.is_vlan_tag() {
                stack.ethertype = ethertype;
                stack.l3_offset = at + 2;
                return Ok(stack);
            }
            let slot = stack
                .tags
                .get_mut(usize::from(stack.count))
                .ok_or(WireError::Unsupported(Field::VlanDepth))?;
            let tci = get_u16(frame, at + 2).ok_or(WireError::Truncated(Header::Vlan))?;
            *slot = VlanTag::from_tci(ethertype, tci);
            stack.count += 1;
            at += VlanPacket::<&[u8]>::HEADER_LEN;
        }
    }

    /// The tags, outermost first (empty for an untagged frame).
    pub fn tags(&self) -> &[VlanTag] {
        &self.tags[..usize::from(self.count)]
    }

    /// The innermost tag's VLAN (the customer VLAN of a QinQ frame), as
    /// DPDK's `vlan_tci` holds it.
    pub fn inner_vid(&self) -> Option<VlanId> {
        self.tags().last().map(|t| t.vid)
    }

    /// The outer tag's VLAN when there are two (the service VLAN of a QinQ
    /// frame), as DPDK's `vlan_tci_outer` holds it.
    pub fn outer_vid(&self) -> Option<VlanId> {
        match self.tags() {
            [outer, _inner] => Some(outer.vid),
            _ => None,
        }
    }

    /// The Ethertype of the payload after the last tag.
    pub fn ethertype(&self) -> EtherType {
        self.ethertype
    }

    /// Where the payload after the last tag starts, from the start of the
    /// frame.
    pub fn l3_offset(&self) -> usize {
        self.l3_offset
    }
}

mod field {
    pub const TCI: usize = 0;
    pub const ETHERTYPE: usize = 2;
    pub const PAYLOAD: usize = 4;
}

/// A view of one VLAN tag's control information and the Ethertype after
/// it: the four bytes that follow a TPID (the payload of an Ethernet frame
/// whose Ethertype is [`EtherType::VLAN`] or [`EtherType::QINQ`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VlanPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VlanPacket<T> {
    /// The length of the TCI and the Ethertype.
    pub const HEADER_LEN: usize = field::PAYLOAD;

    /// Wraps a buffer without checking it; accessors may panic if it is
    /// shorter than four bytes.
    pub const fn new_unchecked(buffer: T) -> Self {
        VlanPacket { buffer }
    }

    /// Wraps a buffer and checks that it holds the tag.
    ///
    /// # Errors
    /// [`WireError::Truncated`] if it does not.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds the tag; after `Ok`, no accessor panics.
    ///
    /// # Errors
    /// [`WireError::Truncated`] if it does not.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < field::PAYLOAD {
            return Err(WireError::Truncated(Header::Vlan));
        }
        Ok(())
    }

    /// The buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The tag control information.
    pub fn tci(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::TCI)
    }

    /// The priority code point.
    pub fn pcp(&self) -> u8 {
        split_tci(self.tci()).0
    }

    /// The drop eligible indicator.
    pub fn dei(&self) -> bool {
        split_tci(self.tci()).1
    }

    /// The VLAN.
    pub fn vlan_id(&self) -> VlanId {
        split_tci(self.tci()).2
    }

    /// The Ethertype of what follows (another TPID for a stacked tag).
    pub fn ethertype(&self) -> EtherType {
        EtherType(read_u16(self.buffer.as_ref(), field::ETHERTYPE))
    }

    /// What follows the tag, to the end of the buffer.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VlanPacket<T> {
    /// Sets the tag control information.
    pub fn set_tci(&mut self, tci: u16) {
        write_u16(self.buffer.as_mut(), field::TCI, tci);
    }

    /// Sets the Ethertype of what follows.
    pub fn set_ethertype(&mut self, ethertype: EtherType) {
        write_u16(self.buffer.as_mut(), field::ETHERTYPE, ethertype.0);
    }

    /// What follows the tag, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

/// The fields of a VLAN tag and the Ethertype it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VlanRepr {
    /// Priority code point (0 to 7).
    pub pcp: u8,
    /// Drop eligible indicator.
    pub dei: bool,
    /// The VLAN.
    pub vid: VlanId,
    /// The Ethertype of what follows.
    pub ethertype: EtherType,
}

impl VlanRepr {
    /// Reads a checked tag.
    ///
    /// # Errors
    /// [`WireError::Truncated`] if the buffer is shorter than the tag.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &VlanPacket<&T>) -> Result<VlanRepr> {
        packet.check_len()?;
        let (pcp, dei, vid) = split_tci(packet.tci());
        Ok(VlanRepr {
            pcp,
            dei,
            vid,
            ethertype: packet.ethertype(),
        })
    }

    /// The length of what this emits.
    pub const fn buffer_len(&self) -> usize {
        field::PAYLOAD
    }

    /// Writes the tag's TCI and Ethertype.
    ///
    /// # Errors
    /// [`WireError::Truncated`] if the buffer is shorter than the tag;
    /// nothing is written then.
    ///
    /// # Panics
    /// In debug builds, if `pcp` is above 7.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut VlanPacket<T>) -> Result<()> {
        packet.check_len()?;
        packet.set_tci(make_tci(self.pcp, self.dei, self.vid));
        packet.set_ethertype(self.ethertype);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A QinQ frame: S-tag 0x88a8 VLAN 100 (PCP 3), C-tag 0x8100 VLAN 200
    /// (DEI set), then IPv4.
    const QINQ: [u8; 22] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, //
        0x88, 0xa8, 0x60, 0x64, // S-tag: PCP 3, VID 100
        0x81, 0x00, 0x10, 0xc8, // C-tag: DEI, VID 200
        0x08, 0x00, // IPv4
    ];

    #[test]
    fn walks_qinq() {
        let stack = VlanStack::parse(&QINQ).expect("valid");
        assert_eq!(stack.ethertype(), EtherType::IPV4);
        assert_eq!(stack.l3_offset(), 22);
        assert_eq!(
            stack.tags(),
            &[
                VlanTag {
                    tpid: EtherType::QINQ,
                    pcp: 3,
                    dei: false,
                    vid: VlanId(100)
                },
                VlanTag {
                    tpid: EtherType::VLAN,
                    pcp: 0,
                    dei: true,
                    vid: VlanId(200)
                },
            ]
        );
        assert_eq!(stack.outer_vid(), VlanId::new(100));
        assert_eq!(stack.inner_vid(), VlanId::new(200));
        assert_eq!(stack.tags()[0].tci(), 0x6064);
        // The same through the views.
        let frame = EthernetFrame::new_checked(&QINQ[..]).expect("valid");
        assert_eq!(frame.vlan_stack(), Ok(stack));
        let outer = VlanPacket::new_checked(frame.payload()).expect("valid");
        assert_eq!((outer.pcp(), outer.dei()), (3, false));
        assert_eq!(outer.vlan_id(), VlanId(100));
        assert_eq!(outer.ethertype(), EtherType::VLAN);
        let inner = VlanRepr::parse(&VlanPacket::new_checked(outer.payload()).expect("valid"));
        assert_eq!(
            inner,
            Ok(VlanRepr {
                pcp: 0,
                dei: true,
                vid: VlanId(200),
                ethertype: EtherType::IPV4
            })
        );
    }

    #[test]
    fn single_and_untagged() {
        let mut single = QINQ.to_vec();
        single.drain(12..16);
        let stack = VlanStack::parse(&single).expect("valid");
        assert_eq!(stack.tags().len(), 1);
        assert_eq!(stack.inner_vid(), VlanId::new(200));
        assert_eq!(stack.outer_vid(), None);
        assert_eq!(stack.l3_offset(), 18);

        let mut untagged = single.clone();
        untagged.drain(12..16);
        let stack = VlanStack::parse(&untagged).expect("valid");
        assert!(stack.tags().is_empty());
        assert_eq!(stack.inner_vid(), None);
        assert_eq!(
            (stack.ethertype(), stack.l3_offset()),
            (EtherType::IPV4, 14)
        );
    }

    #[test]
    fn every_truncation_is_truncated() {
        for len in 0..QINQ.len() {
            let err = VlanStack::parse(&QINQ[..len]).expect_err("truncated");
            assert!(matches!(err, WireError::Truncated(_)), "len {len}: {err:?}");
        }
        for len in 0..4 {
            assert_eq!(
                VlanPacket::new_checked(&QINQ[14..14 + len]),
                Err(WireError::Truncated(Header::Vlan))
            );
        }
    }

    #[test]
    fn three_tags_are_unsupported() {
        let mut triple = QINQ.to_vec();
        triple.splice(16..16, [0x81, 0x00, 0x00, 0x05]);
        assert_eq!(
            VlanStack::parse(&triple),
            Err(WireError::Unsupported(Field::VlanDepth))
        );
    }

    #[test]
    fn emit_over_garbage_parses_back() {
        let repr = VlanRepr {
            pcp: 7,
            dei: true,
            vid: VlanId(VlanId::MAX),
            ethertype: EtherType::IPV6,
        };
        let mut buf = [0x5au8; 6];
        repr.emit(&mut VlanPacket::new_unchecked(&mut buf[..]))
            .expect("room");
        let packet = VlanPacket::new_checked(&buf[..]).expect("valid");
        assert_eq!(VlanRepr::parse(&packet), Ok(repr));
        assert_eq!(packet.payload(), &[0x5a, 0x5a]);
        let mut short = [0u8; 3];
        assert_eq!(
            repr.emit(&mut VlanPacket::new_unchecked(&mut short[..])),
            Err(WireError::Truncated(Header::Vlan))
        );
    }

    #[test]
    fn vlan_id_bounds() {
        assert_eq!(VlanId::new(4095).map(VlanId::get), Some(4095));
        assert_eq!(VlanId::new(4096), None);
    }
}
