//! The pcapng blocks a capture writes (draft-ietf-opsawg-pcapng): a
//! Section Header Block, one Interface Description Block per port,
//! Enhanced Packet Blocks, and a padding block that fills a write out to
//! the storage block size.
//!
//! Everything is written in the host's byte order, which the section's
//! byte-order magic declares, as libpcap and Wireshark write it. Every
//! block is a multiple of 4 bytes long and carries its length at both
//! ends.

/// Section Header Block type.
pub const SHB: u32 = 0x0A0D_0D0A;
/// Interface Description Block type.
pub const IDB: u32 = 0x0000_0001;
/// Enhanced Packet Block type.
pub const EPB: u32 = 0x0000_0006;
/// The padding block's type: one of the types the format reserves for
/// local use (most significant bit set), which libpcap and Wireshark skip.
/// (A Custom Block, 0x40000BAD, would be the other choice, but `tshark`
/// counts each one as a frame.)
pub const PADDING: u32 = 0x8000_0001;
/// The byte-order magic.
pub const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
/// `LINKTYPE_ETHERNET`.
pub const LINKTYPE_ETHERNET: u16 = 1;
/// The smallest padding block: type, length, length.
pub const MIN_PADDING: usize = 12;

const OPT_END: u16 = 0;
const OPT_COMMENT: u16 = 1;
const SHB_USERAPPL: u16 = 4;
const IF_NAME: u16 = 2;
const IF_TSRESOL: u16 = 9;

/// Bytes of an option with `len` bytes of value (header and padding).
const fn option_len(len: usize) -> usize {
    4 + len.next_multiple_of(4)
}

fn put_u16(out: &mut [u8], at: &mut usize, v: u16) {
    out[*at..*at + 2].copy_from_slice(&v.to_ne_bytes());
    *at += 2;
}

fn put_u32(out: &mut [u8], at: &mut usize, v: u32) {
    out[*at..*at + 4].copy_from_slice(&v.to_ne_bytes());
    *at += 4;
}

fn put_bytes(out: &mut [u8], at: &mut usize, b: &[u8]) {
    out[*at..*at + b.len()].copy_from_slice(b);
    let padded = b.len().next_multiple_of(4);
    out[*at + b.len()..*at + padded].fill(0);
    *at += padded;
}

fn put_option(out: &mut [u8], at: &mut usize, code: u16, value: &[u8]) {
    put_u16(out, at, code);
    put_u16(out, at, value.len() as u16);
    put_bytes(out, at, value);
}

/// Bytes of the Section Header Block `shb` writes.
pub fn shb_len(app: &str) -> usize {
    28 + option_len(app.len()) + 4
}

/// Writes a Section Header Block of unknown section length naming `app`
/// at the start of `out`; returns its length.
///
/// # Panics
/// When `out` is shorter than [`shb_len`].
pub fn shb(out: &mut [u8], app: &str) -> usize {
    let len = shb_len(app);
    let mut at = 0;
    put_u32(out, &mut at, SHB);
    put_u32(out, &mut at, len as u32);
    put_u32(out, &mut at, BYTE_ORDER_MAGIC);
    put_u16(out, &mut at, 1);
    put_u16(out, &mut at, 0);
    // Section length: not known in advance (-1).
    out[at..at + 8].copy_from_slice(&(-1i64).to_ne_bytes());
    at += 8;
    put_option(out, &mut at, SHB_USERAPPL, app.as_bytes());
    put_u16(out, &mut at, OPT_END);
    put_u16(out, &mut at, 0);
    put_u32(out, &mut at, len as u32);
    debug_assert_eq!(at, len);
    len
}

/// Bytes of the Interface Description Block `idb` writes.
pub fn idb_len(name: &str) -> usize {
    16 + option_len(name.len()) + option_len(1) + 4 + 4
}

/// Writes an Ethernet Interface Description Block named `name`, with
/// nanosecond time stamps, at the start of `out`; returns its length.
///
/// # Panics
/// When `out` is shorter than [`idb_len`].
pub fn idb(out: &mut [u8], name: &str, snaplen: u32) -> usize {
    let len = idb_len(name);
    let mut at = 0;
    put_u32(out, &mut at, IDB);
    put_u32(out, &mut at, len as u32);
    put_u16(out, &mut at, LINKTYPE_ETHERNET);
    put_u16(out, &mut at, 0);
    put_u32(out, &mut at, snaplen);
    put_option(out, &mut at, IF_NAME, name.as_bytes());
    // 10^-9: nanoseconds.
    put_option(out, &mut at, IF_TSRESOL, &[9]);
    put_u16(out, &mut at, OPT_END);
    put_u16(out, &mut at, 0);
    put_u32(out, &mut at, len as u32);
    debug_assert_eq!(at, len);
    len
}

/// Bytes of an Enhanced Packet Block with `captured` bytes of packet and
/// a comment of `comment` bytes (none when 0).
pub const fn epb_len(captured: usize, comment: usize) -> usize {
    let options = if comment > 0 {
        option_len(comment) + 4
    } else {
        0
    };
    28 + captured.next_multiple_of(4) + options + 4
}

/// One packet as an Enhanced Packet Block.
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    /// The interface's index (its IDB's order in the section).
    pub interface: u32,
    /// Nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// The bytes kept (at most the snap length).
    pub data: &'a [u8],
    /// The packet's length on the wire.
    pub original_len: u32,
    /// An `opt_comment`, if not empty.
    pub comment: &'a [u8],
}

/// Writes `p` at the start of `out`; returns its length.
///
/// # Panics
/// When `out` is shorter than [`epb_len`] of the packet.
pub fn epb(out: &mut [u8], p: &Packet<'_>) -> usize {
    let len = epb_len(p.data.len(), p.comment.len());
    let mut at = 0;
    put_u32(out, &mut at, EPB);
    put_u32(out, &mut at, len as u32);
    put_u32(out, &mut at, p.interface);
    put_u32(out, &mut at, (p.timestamp_ns >> 32) as u32);
    put_u32(out, &mut at, p.timestamp_ns as u32);
    put_u32(out, &mut at, p.data.len() as u32);
    put_u32(out, &mut at, p.original_len);
    put_bytes(out, &mut at, p.data);
    if !p.comment.is_empty() {
        put_option(out, &mut at, OPT_COMMENT, p.comment);
        put_u16(out, &mut at, OPT_END);
        put_u16(out, &mut at, 0);
    }
    put_u32(out, &mut at, len as u32);
    debug_assert_eq!(at, len);
    len
}

/// The padding that brings `used` bytes to a multiple of `align` with one
/// padding block: at least [`MIN_PADDING`] bytes, so possibly a whole
/// `align` more.
pub fn padding_for(used: usize, align: usize) -> usize {
    let mut pad = used.next_multiple_of(align) - used;
    while pad != 0 && pad < MIN_PADDING {
        pad += align;
    }
    pad
}

/// Writes a padding block of exactly `len` bytes (a multiple of 4, at
/// least [`MIN_PADDING`]) at the start of `out`, zeros inside.
///
/// # Panics
/// For a length that is not a multiple of 4 or is too short.
pub fn padding(out: &mut [u8], len: usize) {
    assert!(
        len >= MIN_PADDING && len.is_multiple_of(4),
        "padding of {len} bytes"
    );
    let mut at = 0;
    put_u32(out, &mut at, PADDING);
    put_u32(out, &mut at, len as u32);
    out[at..len - 4].fill(0);
    at = len - 4;
    put_u32(out, &mut at, len as u32);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks a buffer of blocks, checking each one's two lengths; returns
    /// the block types.
    fn walk(buf: &[u8]) -> Vec<u32> {
        let mut at = 0;
        let mut types = Vec::new();
        while at < buf.len() {
            let t = u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap());
            let len = u32::from_ne_bytes(buf[at + 4..at + 8].try_into().unwrap()) as usize;
            assert!(
                len >= 12 && len.is_multiple_of(4),
                "block at {at}: length {len}"
            );
            let tail = u32::from_ne_bytes(buf[at + len - 4..at + len].try_into().unwrap());
            assert_eq!(tail as usize, len, "block at {at}: trailing length");
            types.push(t);
            at += len;
        }
        assert_eq!(at, buf.len());
        types
    }

    #[test]
    fn blocks_have_their_length_at_both_ends_and_padding_fills_to_the_block() {
        let mut buf = vec![0xffu8; 8192];
        let mut at = shb(&mut buf, "dp-capture");
        at += idb(&mut buf[at..], "veth0", 65535);
        for (i, n) in [60usize, 61, 62, 63, 1514].into_iter().enumerate() {
            let data = vec![i as u8; n];
            let comment: &[u8] = if i % 2 == 0 {
                b"crc32c=0x01234567"
            } else {
                b""
            };
            let p = Packet {
                interface: 0,
                timestamp_ns: 1_700_000_000_123_456_789,
                data: &data,
                original_len: n as u32,
                comment,
            };
            let len = epb(&mut buf[at..], &p);
            assert_eq!(len, epb_len(n, comment.len()));
            at += len;
        }
        for align in [512usize, 4096] {
            let pad = padding_for(at, align);
            assert!(pad >= MIN_PADDING);
            assert!((at + pad).is_multiple_of(align));
        }
        let pad = padding_for(at, 512);
        padding(&mut buf[at..], pad);
        let types = walk(&buf[..at + pad]);
        assert_eq!(types, [SHB, IDB, EPB, EPB, EPB, EPB, EPB, PADDING]);
        // Four or eight bytes short of a block: a whole block more.
        assert_eq!(padding_for(508, 512), 516);
        assert_eq!(padding_for(504, 512), 520);
        assert_eq!(padding_for(500, 512), 12);
        assert_eq!(padding_for(496, 512), 16);
        assert_eq!(padding_for(512, 512), 0);
    }
}
