//! TCP segments (RFC 9293 section 3.1), their options (RFC 9293 section
//! 3.2; window scale and timestamps from RFC 7323; SACK from RFC 2018) and
//! the checksum over the IPv4 or IPv6 pseudo-header.
//!
//! TCP has no length field: a view's buffer is the whole segment (the IP
//! payload), and the payload runs to its end.

use super::{ChecksumMode, Field, Header, IpPair, IpProtocol, Result, WireError};
use super::{checksum, read_u16, read_u32, write_u16, write_u32};
use std::fmt;
use std::ops::{BitAnd, BitOr, BitOrAssign};

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ_NUM: usize = 4;
    pub const ACK_NUM: usize = 8;
    /// Data offset in the high nibble, reserved bits in the low one.
    pub const DATA_OFFSET: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: usize = 14;
    pub const CHECKSUM: usize = 16;
    pub const URGENT: usize = 18;
    pub const OPTIONS: usize = 20;
}

/// The control bits of a TCP header (RFC 9293 section 3.1, with ECE and
/// CWR from RFC 3168).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// No more data from the sender.
    pub const FIN: TcpFlags = TcpFlags(0x01);
    /// Synchronize sequence numbers.
    pub const SYN: TcpFlags = TcpFlags(0x02);
    /// Reset the connection.
    pub const RST: TcpFlags = TcpFlags(0x04);
    /// Push.
    pub const PSH: TcpFlags = TcpFlags(0x08);
    /// The acknowledgment number is significant.
    pub const ACK: TcpFlags = TcpFlags(0x10);
    /// The urgent pointer is significant.
    pub const URG: TcpFlags = TcpFlags(0x20);
    /// ECN-Echo (RFC 3168).
    pub const ECE: TcpFlags = TcpFlags(0x40);
    /// Congestion Window Reduced (RFC 3168).
    pub const CWR: TcpFlags = TcpFlags(0x80);

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl BitOr for TcpFlags {
    type Output = TcpFlags;
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | rhs.0)
    }
}

impl BitOrAssign for TcpFlags {
    fn bitor_assign(&mut self, rhs: TcpFlags) {
        self.0 |= rhs.0;
    }
}

impl BitAnd for TcpFlags {
    type Output = TcpFlags;
    fn bitand(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 & rhs.0)
    }
}

impl fmt::Debug for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [&str; 8] = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"];
        f.write_str("TcpFlags(")?;
        let mut first = true;
        for (bit, name) in NAMES.iter().enumerate() {
            if self.0 & (1 << bit) != 0 {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        f.write_str(")")
    }
}

/// Option kinds (IANA's "TCP Option Kind Numbers").
mod kind {
    pub const END_OF_LIST: u8 = 0;
    pub const NO_OPERATION: u8 = 1;
    pub const MAX_SEG_SIZE: u8 = 2;
    pub const WINDOW_SCALE: u8 = 3;
    pub const SACK_PERMITTED: u8 = 4;
    pub const SACK: u8 = 5;
    pub const TIMESTAMPS: u8 = 8;
}

/// One TCP option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TcpOption<'a> {
    /// End of option list (kind 0): the rest is padding.
    EndOfList,
    /// No-operation (kind 1): padding between options.
    NoOperation,
    /// Maximum segment size (kind 2, RFC 9293 section 3.7.1).
    MaxSegmentSize(u16),
    /// Window scale shift count (kind 3, RFC 7323 section 2). Values above
    /// 14 are carried as sent; RFC 7323 says to use 14.
    WindowScale(u8),
    /// SACK permitted (kind 4, RFC 2018).
    SackPermitted,
    /// SACK blocks (kind 5, RFC 2018 section 3).
    Sack(SackBlocks),
    /// Timestamps (kind 8, RFC 7323 section 3).
    Timestamps {
        /// The sender's timestamp value.
        tsval: u32,
        /// The echoed timestamp.
        tsecr: u32,
    },
    /// Any other option (MD5, MPTCP, ...): its kind and the
    /// bytes after the length.
    Unknown {
        /// The option kind.
        kind: u8,
        /// The option's data, without kind and length.
        data: &'a [u8],
    },
}

impl TcpOption<'_> {
    /// The number of bytes this option takes on the wire.
    pub fn buffer_len(&self) -> usize {
        match self {
            TcpOption::EndOfList | TcpOption::NoOperation => 1,
            TcpOption::MaxSegmentSize(_) => 4,
            TcpOption::WindowScale(_) => 3,
            TcpOption::SackPermitted => 2,
            TcpOption::Sack(b) => 2 + 8 * b.len(),
            TcpOption::Timestamps { .. } => 10,
            TcpOption::Unknown { data, .. } => 2 + data.len(),
        }
    }

    /// Writes the option at the start of `buffer`; returns its length.
    ///
    /// # Errors
    /// [`WireError::Truncated`] if `buffer` is too short, and
    /// [`WireError::Malformed`] ([`Field::TcpOption`]) for an unknown
    /// option whose data does not fit the length byte; nothing is written
    /// then.
    pub fn emit(&self, buffer: &mut [u8]) -> Result<usize> {
        let len = self.buffer_len();
        let Some(out) = buffer.get_mut(..len) else {
            return Err(WireError::Truncated(Header::Tcp));
        };
        let len_byte = u8::try_from(len).map_err(|_| WireError::Malformed(Field::TcpOption))?;
        match *self {
            TcpOption::EndOfList => out[0] = kind::END_OF_LIST,
            TcpOption::NoOperation => out[0] = kind::NO_OPERATION,
            TcpOption::MaxSegmentSize(mss) => {
                out[..2].copy_from_slice(&[kind::MAX_SEG_SIZE, len_byte]);
                write_u16(out, 2, mss);
            }
            TcpOption::WindowScale(shift) => {
                out.copy_from_slice(&[kind::WINDOW_SCALE, len_byte, shift]);
            }
            TcpOption::SackPermitted => out.copy_from_slice(&[kind::SACK_PERMITTED, len_byte]),
            TcpOption::Sack(b) => {
                out[..2].copy_from_slice(&[kind::SACK, len_byte]);
                for (i, &(left, right)) in b.as_slice().iter().enumerate() {
                    write_u32(out, 2 + 8 * i, left);
                    write_u32(out, 6 + 8 * i, right);
                }
            }
            TcpOption::Timestamps { tsval, tsecr } => {
                out[..2].copy_from_slice(&[kind::TIMESTAMPS, len_byte]);
                write_u32(out, 2, tsval);
                write_u32(out, 6, tsecr);
            }
            TcpOption::Unknown { kind, data } => {
                out[..2].copy_from_slice(&[kind, len_byte]);
                out[2..].copy_from_slice(data);
            }
        }
        Ok(len)
    }
}

/// One to four SACK blocks (RFC 2018): `[left, right)` sequence ranges
/// the receiver holds beyond a hole, the first the one that holds the
/// segment that arrived last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SackBlocks {
    blocks: [(u32, u32); 4],
    len: u8,
}

impl SackBlocks {
    /// Adds a block; false (and nothing added) when four are held.
    pub fn push(&mut self, left: u32, right: u32) -> bool {
        let Some(slot) = self.blocks.get_mut(usize::from(self.len)) else {
            return false;
        };
        *slot = (left, right);
        self.len += 1;
        true
    }

    /// The blocks, in order.
    pub fn as_slice(&self) -> &[(u32, u32)] {
        &self.blocks[..usize::from(self.len)]
    }

    /// How many.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// None held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first `n` (fewer when fewer are held). Slots past the length
    /// stay zero, so that equal lists compare equal.
    fn first(&self, n: usize) -> SackBlocks {
        let len = self.len.min(u8::try_from(n).unwrap_or(u8::MAX));
        let mut blocks = [(0, 0); 4];
        blocks[..usize::from(len)].copy_from_slice(&self.blocks[..usize::from(len)]);
        SackBlocks { blocks, len }
    }
}

/// Option space in a TCP header: the data offset's 15 words less the 5
/// fixed ones.
const MAX_OPTIONS: usize = 40;

/// An iterator over the options of a TCP header.
///
/// It yields each option, stops after End of Option List, and on a
/// malformed option (a length below 2 or past the end of the options, or
/// a known kind with the wrong length) yields one
/// `Err(WireError::Malformed(Field::TcpOption))` and then stops.
#[derive(Debug, Clone)]
pub struct TcpOptions<'a> {
    rest: &'a [u8],
}

impl<'a> TcpOptions<'a> {
    /// Iterates over the options in `options` (the header past its first
    /// 20 bytes).
    pub fn new(options: &'a [u8]) -> Self {
        TcpOptions { rest: options }
    }

    fn malformed(&mut self) -> Option<Result<TcpOption<'a>>> {
        self.rest = &[];
        Some(Err(WireError::Malformed(Field::TcpOption)))
    }
}

impl<'a> Iterator for TcpOptions<'a> {
    type Item = Result<TcpOption<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        let (&kind, after_kind) = self.rest.split_first()?;
        match kind {
            kind::END_OF_LIST => {
                self.rest = &[];
                return Some(Ok(TcpOption::EndOfList));
            }
            kind::NO_OPERATION => {
                self.rest = after_kind;
                return Some(Ok(TcpOption::NoOperation));
            }
            _ => {}
        }
        let Some(&len) = after_kind.first() else {
            return self.malformed();
        };
        // A length below 2 cannot cover its own kind and length bytes (and
        // would never advance); one past the end runs out of the header.
        let len = usize::from(len);
        if len < 2 {
            return self.malformed();
        }
        let (Some(data), Some(rest)) = (self.rest.get(2..len), self.rest.get(len..)) else {
            return self.malformed();
        };
        let option = match (kind, data) {
            (kind::MAX_SEG_SIZE, &[a, b]) => TcpOption::MaxSegmentSize(u16::from_be_bytes([a, b])),
            (kind::WINDOW_SCALE, &[shift]) => TcpOption::WindowScale(shift),
            (kind::SACK_PERMITTED, &[]) => TcpOption::SackPermitted,
            (kind::SACK, data) if !data.is_empty() && data.len() % 8 == 0 && data.len() <= 32 => {
                let mut b = SackBlocks::default();
                for block in data.chunks_exact(8) {
                    let word = |i: usize| {
                        u32::from_be_bytes([block[i], block[i + 1], block[i + 2], block[i + 3]])
                    };
                    b.push(word(0), word(4));
                }
                TcpOption::Sack(b)
            }
            (kind::TIMESTAMPS, &[a, b, c, d, e, f, g, h]) => TcpOption::Timestamps {
                tsval: u32::from_be_bytes([a, b, c, d]),
                tsecr: u32::from_be_bytes([e, f, g, h]),
            },
            (
                kind::MAX_SEG_SIZE
                | kind::WINDOW_SCALE
                | kind::SACK_PERMITTED
                | kind::SACK
                | kind::TIMESTAMPS,
                _,
            ) => {
                return self.malformed();
            }
            (kind, data) => TcpOption::Unknown { kind, data },
        };
        self.rest = rest;
        Some(Ok(option))
    }
}

impl std::iter::FusedIterator for TcpOptions<'_> {}

/// The sum of a TCP segment and its pseudo-header.
fn segment_sum(segment: &[u8], addrs: &IpPair) -> u16 {
    // A segment longer than 4 GiB cannot be in memory in one slice on the
    // targets this runs on; saturate rather than wrap if it were.
    let len = u32::try_from(segment.len()).unwrap_or(u32::MAX);
    checksum::combine(&[
        addrs.pseudo_header_sum(IpProtocol::TCP, len),
        checksum::data(segment),
    ])
}

/// A view of a TCP segment: the header, its options, and the payload to
/// the end of the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// The length of a header without options (data offset 5).
    pub const HEADER_LEN: usize = field::OPTIONS;
    /// The length of the longest header (data offset 15).
    pub const MAX_HEADER_LEN: usize = 60;

    /// Wraps a buffer without checking it; accessors may panic if the data
    /// offset disagrees with the buffer.
    pub const fn new_unchecked(buffer: T) -> Self {
        TcpPacket { buffer }
    }

    /// Wraps a buffer and checks the data offset; see
    /// [`check_len`](Self::check_len).
    ///
    /// # Errors
    /// As `check_len`.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the data offset against the buffer; after `Ok`, no accessor
    /// panics.
    ///
    /// # Errors
    /// - [`WireError::Truncated`]: shorter than 20 bytes or than the data
    ///   offset.
    /// - [`WireError::Malformed`] ([`Field::TcpDataOffset`]): a data offset
    ///   below 5.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let data = self.buffer.as_ref();
        let Some(fixed) = data.first_chunk::<{ field::OPTIONS }>() else {
            return Err(WireError::Truncated(Header::Tcp));
        };
        let header_len = usize::from(fixed[field::DATA_OFFSET] >> 4) * 4;
        if header_len < field::OPTIONS {
            return Err(WireError::Malformed(Field::TcpDataOffset));
        }
        if data.len() < header_len {
            return Err(WireError::Truncated(Header::Tcp));
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

    /// The sequence number.
    pub fn seq_number(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::SEQ_NUM)
    }

    /// The acknowledgment number (meaningful when ACK is set).
    pub fn ack_number(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::ACK_NUM)
    }

    /// The header length in bytes (the data offset times 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFFSET] >> 4) * 4
    }

    /// The four bits between the data offset and the flags: reserved in
    /// RFC 9293 (the lowest is AccECN's AE, RFC 3540's historic NS).
    pub fn reserved(&self) -> u8 {
        self.buffer.as_ref()[field::DATA_OFFSET] & 0x0f
    }

    /// The control bits.
    pub fn flags(&self) -> TcpFlags {
        TcpFlags(self.buffer.as_ref()[field::FLAGS])
    }

    /// The receive window (unscaled).
    pub fn window_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::WINDOW)
    }

    /// The checksum field.
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The urgent pointer (meaningful when URG is set).
    pub fn urgent_at(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::URGENT)
    }

    /// The options, as bytes: the header past its first 20 bytes.
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[field::OPTIONS..self.header_len()]
    }

    /// The options, one by one.
    pub fn options_iter(&self) -> TcpOptions<'_> {
        TcpOptions::new(self.options())
    }

    /// The payload: everything after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }

    /// Whether the checksum is right for this segment (the whole buffer)
    /// between `addrs`.
    pub fn verify_checksum(&self, addrs: &IpPair) -> bool {
        segment_sum(self.buffer.as_ref(), addrs) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    /// Sets the source port.
    pub fn set_src_port(&mut self, port: u16) {
        write_u16(self.buffer.as_mut(), field::SRC_PORT, port);
    }

    /// Sets the destination port.
    pub fn set_dst_port(&mut self, port: u16) {
        write_u16(self.buffer.as_mut(), field::DST_PORT, port);
    }

    /// Sets the sequence number.
    pub fn set_seq_number(&mut self, seq: u32) {
        write_u32(self.buffer.as_mut(), field::SEQ_NUM, seq);
    }

    /// Sets the acknowledgment number.
    pub fn set_ack_number(&mut self, ack: u32) {
        write_u32(self.buffer.as_mut(), field::ACK_NUM, ack);
    }

    /// Sets the header length in bytes (the low two bits are dropped) and
    /// clears the reserved bits. Moves the payload: check the view again
    /// afterwards.
    pub fn set_header_len(&mut self, len: usize) {
        self.buffer.as_mut()[field::DATA_OFFSET] = ((len / 4) as u8 & 0x0f) << 4;
    }

    /// Sets the control bits.
    pub fn set_flags(&mut self, flags: TcpFlags) {
        self.buffer.as_mut()[field::FLAGS] = flags.0;
    }

    /// Sets the receive window.
    pub fn set_window_len(&mut self, window: u16) {
        write_u16(self.buffer.as_mut(), field::WINDOW, window);
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, checksum: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, checksum);
    }

    /// Sets the urgent pointer.
    pub fn set_urgent_at(&mut self, urgent: u16) {
        write_u16(self.buffer.as_mut(), field::URGENT, urgent);
    }

    /// Computes the checksum over the pseudo-header of `addrs` and the
    /// segment (the whole buffer), and stores it.
    pub fn fill_checksum(&mut self, addrs: &IpPair) {
        self.set_checksum(0);
        let sum = segment_sum(self.buffer.as_ref(), addrs);
        self.set_checksum(!sum);
    }

    /// The options, writable.
    pub fn options_mut(&mut self) -> &mut [u8] {
        let header_len = self.header_len();
        &mut self.buffer.as_mut()[field::OPTIONS..header_len]
    }

    /// The payload, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let header_len = self.header_len();
        &mut self.buffer.as_mut()[header_len..]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for TcpPacket<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The common fields of a TCP header, with the options a connection's
/// first segments negotiate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TcpRepr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq_number: u32,
    /// Acknowledgment number.
    pub ack_number: u32,
    /// Control bits.
    pub flags: TcpFlags,
    /// Receive window (unscaled).
    pub window_len: u16,
    /// Urgent pointer.
    pub urgent_at: u16,
    /// The MSS option.
    pub max_seg_size: Option<u16>,
    /// The window scale option's shift count.
    pub window_scale: Option<u8>,
    /// The SACK-permitted option.
    pub sack_permitted: bool,
    /// SACK blocks (none: no SACK option). Emitted after the other
    /// options, as many as the 40 bytes of option space leave room for.
    pub sack: SackBlocks,
    /// The timestamps option: `(tsval, tsecr)`.
    pub timestamps: Option<(u32, u32)>,
    /// Payload length in bytes.
    pub payload_len: usize,
}

impl TcpRepr {
    /// Reads a checked segment's header and the options it knows (MSS,
    /// window scale, SACK permitted, timestamps; others are skipped, and
    /// the last of a repeated option wins).
    ///
    /// # Errors
    /// As [`TcpPacket::check_len`]; [`WireError::Malformed`]
    /// ([`Field::TcpOption`]) for a malformed option; and
    /// [`WireError::BadChecksum`] when `checksum` is
    /// [`ChecksumMode::Software`] and the checksum is wrong.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        packet: &TcpPacket<&T>,
        addrs: &IpPair,
        checksum: ChecksumMode,
    ) -> Result<TcpRepr> {
        packet.check_len()?;
        if checksum == ChecksumMode::Software && !packet.verify_checksum(addrs) {
            return Err(WireError::BadChecksum(Header::Tcp));
        }
        let mut repr = TcpRepr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            seq_number: packet.seq_number(),
            ack_number: packet.ack_number(),
            flags: packet.flags(),
            window_len: packet.window_len(),
            urgent_at: packet.urgent_at(),
            max_seg_size: None,
            window_scale: None,
            sack_permitted: false,
            sack: SackBlocks::default(),
            timestamps: None,
            payload_len: packet.payload().len(),
        };
        for option in packet.options_iter() {
            match option? {
                TcpOption::MaxSegmentSize(mss) => repr.max_seg_size = Some(mss),
                TcpOption::WindowScale(shift) => repr.window_scale = Some(shift),
                TcpOption::SackPermitted => repr.sack_permitted = true,
                TcpOption::Sack(b) => repr.sack = b,
                TcpOption::Timestamps { tsval, tsecr } => repr.timestamps = Some((tsval, tsecr)),
                TcpOption::EndOfList | TcpOption::NoOperation | TcpOption::Unknown { .. } => {}
            }
        }
        Ok(repr)
    }

    /// The options this emits, in Linux's order and padding (MSS;
    /// SACK-permitted with timestamps, or each after two NOPs; NOP and
    /// window scale; two NOPs and the SACK blocks), so that every option
    /// starts where Linux puts it, and their total length.
    fn options(&self) -> ([Option<TcpOption<'static>>; 11], usize) {
        let mut list = [None; 11];
        let mut n = 0;
        let mut push = |o: TcpOption<'static>| {
            list[n] = Some(o);
            n += 1;
        };
        if let Some(mss) = self.max_seg_size {
            push(TcpOption::MaxSegmentSize(mss));
        }
        match (self.sack_permitted, self.timestamps) {
            (true, Some((tsval, tsecr))) => {
                push(TcpOption::SackPermitted);
                push(TcpOption::Timestamps { tsval, tsecr });
            }
            (sack, ts) => {
                if let Some((tsval, tsecr)) = ts {
                    push(TcpOption::NoOperation);
                    push(TcpOption::NoOperation);
                    push(TcpOption::Timestamps { tsval, tsecr });
                }
                if sack {
                    push(TcpOption::NoOperation);
                    push(TcpOption::NoOperation);
                    push(TcpOption::SackPermitted);
                }
            }
        }
        if let Some(shift) = self.window_scale {
            push(TcpOption::NoOperation);
            push(TcpOption::WindowScale(shift));
        }
        // What the options above take (each combination's length), then
        // two NOPs, kind and length, and 8 bytes a block, within the 40
        // bytes of option space.
        let used = self.max_seg_size.map_or(0, |_| 4)
            + match (self.sack_permitted, self.timestamps.is_some()) {
                (_, true) => 12,
                (true, false) => 4,
                (false, false) => 0,
            }
            + self.window_scale.map_or(0, |_| 4);
        let room = MAX_OPTIONS.saturating_sub(used + 4) / 8;
        if !self.sack.is_empty() && room > 0 {
            push(TcpOption::NoOperation);
            push(TcpOption::NoOperation);
            push(TcpOption::Sack(self.sack.first(room)));
        }
        let len = list.iter().flatten().map(TcpOption::buffer_len).sum();
        (list, len)
    }

    /// The header as [`Self::emit`] writes it: SACK blocks past what the
    /// option space has room for dropped (from the last).
    pub fn fitted(mut self) -> TcpRepr {
        let (list, _) = self.options();
        let kept = list.iter().flatten().find_map(|o| match o {
            TcpOption::Sack(b) => Some(b.len()),
            _ => None,
        });
        self.sack = self.sack.first(kept.unwrap_or(0));
        self
    }

    /// The length of the header this emits, options included.
    pub fn header_len(&self) -> usize {
        // Every combination above is a multiple of 4 bytes long.
        field::OPTIONS + self.options().1
    }

    /// The length of the segment: header and payload.
    pub fn buffer_len(&self) -> usize {
        self.header_len() + self.payload_len
    }

    /// Writes the header and options, and the checksum over the payload
    /// already in the buffer after them (write it first, at
    /// [`header_len`](Self::header_len)). The segment is the first
    /// [`buffer_len`](Self::buffer_len) bytes of the buffer. Under
    /// [`ChecksumMode::Offload`] the checksum field holds the
    /// pseudo-header sum, for the NIC to finish. Reserved bits are cleared.
    ///
    /// # Errors
    /// [`WireError::Truncated`] if the buffer is shorter than
    /// `buffer_len`; nothing is written then.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut TcpPacket<T>,
        addrs: &IpPair,
        checksum: ChecksumMode,
    ) -> Result<()> {
        let (options, options_len) = self.options();
        let header_len = field::OPTIONS + options_len;
        let segment_len = header_len + self.payload_len;
        let Some(segment) = packet.buffer.as_mut().get_mut(..segment_len) else {
            return Err(WireError::Truncated(Header::Tcp));
        };
        let mut at = field::OPTIONS;
        for option in options.iter().flatten() {
            at += option.emit(&mut segment[at..header_len])?;
        }
        let mut packet = TcpPacket::new_unchecked(segment);
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_seq_number(self.seq_number);
        packet.set_ack_number(self.ack_number);
        packet.set_header_len(header_len);
        packet.set_flags(self.flags);
        packet.set_window_len(self.window_len);
        packet.set_urgent_at(self.urgent_at);
        match checksum {
            ChecksumMode::Software => packet.fill_checksum(addrs),
            ChecksumMode::Offload => {
                let len = u32::try_from(segment_len).unwrap_or(u32::MAX);
                packet.set_checksum(addrs.pseudo_header_sum(IpProtocol::TCP, len));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Ipv4Address;
    use crate::wire::testdata::IPV4_TCP_SYN;

    fn syn_addrs() -> IpPair {
        IpPair::V4 {
            src: Ipv4Address::new(192, 168, 1, 100),
            dst: Ipv4Address::new(93, 184, 216, 34),
        }
    }

    fn syn_repr() -> TcpRepr {
        TcpRepr {
            src_port: 40000,
            dst_port: 80,
            seq_number: 0x1234_5678,
            ack_number: 0,
            flags: TcpFlags::SYN,
            window_len: 64240,
            urgent_at: 0,
            max_seg_size: Some(1460),
            window_scale: Some(7),
            sack_permitted: true,
            sack: SackBlocks::default(),
            timestamps: Some((0x0a1b_2c3d, 0)),
            payload_len: 0,
        }
    }

    #[test]
    fn parses_a_syn_with_options() {
        let packet = TcpPacket::new_checked(&IPV4_TCP_SYN[34..]).expect("valid");
        assert_eq!((packet.src_port(), packet.dst_port()), (40000, 80));
        assert_eq!(packet.seq_number(), 0x1234_5678);
        assert_eq!(packet.ack_number(), 0);
        assert_eq!(packet.header_len(), 40);
        assert_eq!(packet.reserved(), 0);
        assert_eq!(packet.flags(), TcpFlags::SYN);
        assert_eq!(packet.window_len(), 64240);
        assert_eq!(packet.checksum(), 0x1993);
        assert_eq!(packet.urgent_at(), 0);
        assert!(packet.payload().is_empty());
        assert!(packet.verify_checksum(&syn_addrs()));
        let options: Vec<_> = packet.options_iter().collect();
        assert_eq!(
            options,
            vec![
                Ok(TcpOption::MaxSegmentSize(1460)),
                Ok(TcpOption::SackPermitted),
                Ok(TcpOption::Timestamps {
                    tsval: 0x0a1b_2c3d,
                    tsecr: 0
                }),
                Ok(TcpOption::NoOperation),
                Ok(TcpOption::WindowScale(7)),
            ]
        );
        assert_eq!(
            TcpRepr::parse(&packet, &syn_addrs(), ChecksumMode::Software),
            Ok(syn_repr())
        );
    }

    #[test]
    fn emits_the_captured_syn_byte_for_byte() {
        let repr = syn_repr();
        assert_eq!(repr.header_len(), 40);
        let mut buf = [0xc3u8; 40];
        repr.emit(
            &mut TcpPacket::new_unchecked(&mut buf[..]),
            &syn_addrs(),
            ChecksumMode::Software,
        )
        .expect("room");
        assert_eq!(&buf[..], &IPV4_TCP_SYN[34..]);
    }

    #[test]
    fn every_truncation_is_truncated() {
        let bytes = &IPV4_TCP_SYN[34..];
        for len in 0..bytes.len() {
            assert_eq!(
                TcpPacket::new_checked(&bytes[..len]),
                Err(WireError::Truncated(Header::Tcp)),
                "len {len}"
            );
        }
    }

    #[test]
    fn malformed_data_offset() {
        for offset in 0u8..5 {
            let mut bad = IPV4_TCP_SYN[34..].to_vec();
            bad[12] = offset << 4;
            assert_eq!(
                TcpPacket::new_checked(&bad[..]),
                Err(WireError::Malformed(Field::TcpDataOffset)),
                "offset {offset}"
            );
        }
        // Offset 15 (60 bytes) in a 40-byte segment.
        let mut bad = IPV4_TCP_SYN[34..].to_vec();
        bad[12] = 0xf0;
        assert_eq!(
            TcpPacket::new_checked(&bad[..]),
            Err(WireError::Truncated(Header::Tcp))
        );
    }

    #[test]
    fn bad_checksum_is_detected() {
        let mut bad = IPV4_TCP_SYN[34..].to_vec();
        bad[4] ^= 0x80;
        let packet = TcpPacket::new_checked(&bad[..]).expect("valid");
        assert!(!packet.verify_checksum(&syn_addrs()));
        assert_eq!(
            TcpRepr::parse(&packet, &syn_addrs(), ChecksumMode::Software),
            Err(WireError::BadChecksum(Header::Tcp))
        );
        assert!(TcpRepr::parse(&packet, &syn_addrs(), ChecksumMode::Offload).is_ok());
    }

    fn options(bytes: &[u8]) -> Vec<Result<TcpOption<'_>>> {
        TcpOptions::new(bytes).collect()
    }

    #[test]
    fn options_stop_cleanly_on_malformed_input() {
        let bad = Err(WireError::Malformed(Field::TcpOption));
        // A kind with no length byte.
        assert_eq!(options(&[1, 2]), vec![Ok(TcpOption::NoOperation), bad]);
        // Lengths 0 and 1 (which would loop forever if trusted).
        assert_eq!(options(&[30, 0, 1, 1]), vec![bad]);
        assert_eq!(options(&[30, 1, 1, 1]), vec![bad]);
        // A length past the end.
        assert_eq!(options(&[2, 4, 5]), vec![bad]);
        assert_eq!(options(&[30, 200]), vec![bad]);
        // Known kinds with the wrong length.
        assert_eq!(options(&[2, 3, 5]), vec![bad]);
        assert_eq!(options(&[3, 4, 7, 0]), vec![bad]);
        assert_eq!(options(&[4, 3, 0]), vec![bad]);
        assert_eq!(options(&[8, 2]), vec![bad]);
        // End of list stops, whatever follows.
        assert_eq!(
            options(&[1, 0, 2, 99, 99]),
            vec![Ok(TcpOption::NoOperation), Ok(TcpOption::EndOfList)]
        );
        // SACK blocks, and a SACK option whose length is not whole blocks.
        let mut one = SackBlocks::default();
        one.push(1, 2);
        assert_eq!(
            options(&[5, 10, 0, 0, 0, 1, 0, 0, 0, 2]),
            vec![Ok(TcpOption::Sack(one))]
        );
        assert_eq!(options(&[5, 2]), vec![bad]);
        // Unknown options are carried with their data.
        assert_eq!(
            options(&[30, 10, 0, 0, 0, 1, 0, 0, 0, 2]),
            vec![Ok(TcpOption::Unknown {
                kind: 30,
                data: &[0, 0, 0, 1, 0, 0, 0, 2]
            })]
        );
        assert_eq!(options(&[]), vec![]);

        // The repr refuses a header with a malformed option.
        let mut bytes = vec![0u8; 24];
        let mut packet = TcpPacket::new_unchecked(&mut bytes[..]);
        packet.set_header_len(24);
        packet.options_mut().copy_from_slice(&[2, 4, 5, 0xb4]);
        let repr = TcpRepr::parse(&packet_ref(&bytes), &syn_addrs(), ChecksumMode::Offload);
        assert_eq!(repr.map(|r| r.max_seg_size), Ok(Some(1460)));
        bytes[21] = 9;
        assert_eq!(
            TcpRepr::parse(&packet_ref(&bytes), &syn_addrs(), ChecksumMode::Offload),
            Err(WireError::Malformed(Field::TcpOption))
        );
    }

    fn packet_ref(bytes: &[u8]) -> TcpPacket<&[u8]> {
        TcpPacket::new_checked(bytes).expect("valid lengths")
    }

    #[test]
    fn option_emit_round_trips() {
        for option in [
            TcpOption::EndOfList,
            TcpOption::NoOperation,
            TcpOption::MaxSegmentSize(9000),
            TcpOption::WindowScale(14),
            TcpOption::SackPermitted,
            TcpOption::Timestamps {
                tsval: 1,
                tsecr: u32::MAX,
            },
            TcpOption::Unknown {
                kind: 30,
                data: &[1, 2, 3],
            },
        ] {
            let mut buf = [0x99u8; 16];
            let len = option.emit(&mut buf).expect("room");
            assert_eq!(len, option.buffer_len());
            assert_eq!(TcpOptions::new(&buf[..len]).next(), Some(Ok(option)));
            assert_eq!(
                option.emit(&mut buf[..len - 1]),
                Err(WireError::Truncated(Header::Tcp))
            );
        }
        let long = [0u8; 254];
        assert_eq!(
            TcpOption::Unknown {
                kind: 30,
                data: &long
            }
            .emit(&mut [0u8; 300]),
            Err(WireError::Malformed(Field::TcpOption))
        );
    }

    #[test]
    fn sack_blocks_go_after_the_other_options_as_many_as_fit() {
        let mut four = SackBlocks::default();
        for i in 0..4u32 {
            assert!(four.push(1000 * i, 1000 * i + 500));
        }
        assert!(!four.push(1, 2));
        // A pure ACK: four blocks fit (2 NOPs, kind, length, 32 bytes).
        let ack = TcpRepr {
            flags: TcpFlags::ACK,
            max_seg_size: None,
            window_scale: None,
            sack_permitted: false,
            timestamps: None,
            sack: four,
            ..syn_repr()
        };
        assert_eq!(ack.header_len(), 20 + 36);
        // With timestamps, three; with MSS and window scale too, two.
        let ts = TcpRepr {
            timestamps: Some((1, 2)),
            ..ack
        };
        assert_eq!(ts.fitted().sack.len(), 3);
        let all = TcpRepr {
            max_seg_size: Some(1460),
            window_scale: Some(7),
            ..ts
        };
        assert_eq!(all.fitted().sack.len(), 2);
        for repr in [ack, ts, all] {
            let mut buf = vec![0u8; repr.buffer_len()];
            repr.emit(
                &mut TcpPacket::new_unchecked(&mut buf[..]),
                &syn_addrs(),
                ChecksumMode::Software,
            )
            .expect("emit");
            assert!(buf.len() <= 60);
            let packet = TcpPacket::new_checked(&buf[..]).expect("valid");
            let back = TcpRepr::parse(&packet, &syn_addrs(), ChecksumMode::Software);
            assert_eq!(back, Ok(repr.fitted()));
            assert_eq!(back.map(|r| r.sack.as_slice()[0]), Ok((0, 500)));
        }
        // A SACK option whose length is not a whole number of blocks is
        // malformed.
        let bad = [5u8, 7, 0, 0, 0, 1, 0];
        assert_eq!(
            TcpOptions::new(&bad).next(),
            Some(Err(WireError::Malformed(Field::TcpOption)))
        );
    }

    #[test]
    fn emit_over_garbage_parses_back_for_every_option_set() {
        for bits in 0..16u8 {
            let repr = TcpRepr {
                max_seg_size: (bits & 1 != 0).then_some(536),
                window_scale: (bits & 2 != 0).then_some(0),
                sack_permitted: bits & 4 != 0,
                timestamps: (bits & 8 != 0).then_some((7, 9)),
                flags: TcpFlags::ACK | TcpFlags::PSH,
                ack_number: 99,
                payload_len: 3,
                ..syn_repr()
            };
            assert_eq!(repr.header_len() % 4, 0, "bits {bits}");
            let mut buf = vec![0x3cu8; repr.buffer_len()];
            let header_len = repr.header_len();
            buf[header_len..].copy_from_slice(b"abc");
            repr.emit(
                &mut TcpPacket::new_unchecked(&mut buf[..]),
                &syn_addrs(),
                ChecksumMode::Software,
            )
            .expect("room");
            let packet = TcpPacket::new_checked(&buf[..]).expect("valid");
            assert_eq!(packet.payload(), b"abc");
            assert_eq!(
                TcpRepr::parse(&packet, &syn_addrs(), ChecksumMode::Software),
                Ok(repr),
                "bits {bits}"
            );
            let mut short = vec![0u8; repr.buffer_len() - 1];
            assert_eq!(
                repr.emit(
                    &mut TcpPacket::new_unchecked(&mut short[..]),
                    &syn_addrs(),
                    ChecksumMode::Software
                ),
                Err(WireError::Truncated(Header::Tcp))
            );
            assert!(short.iter().all(|&b| b == 0), "nothing written");
        }
    }

    #[test]
    fn flags_print_by_name() {
        assert_eq!(
            format!("{:?}", TcpFlags::SYN | TcpFlags::ACK),
            "TcpFlags(SYN|ACK)"
        );
        assert!((TcpFlags::SYN | TcpFlags::ACK).contains(TcpFlags::ACK));
        assert!(!TcpFlags::SYN.contains(TcpFlags::ACK));
        assert!(TcpFlags::default().is_empty());
    }
}
