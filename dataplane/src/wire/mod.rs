//! Zero-copy, bounds-checked views and emitters of packet headers
//! (Ethernet with 802.1Q/802.1ad tags, ARP, IPv4, IPv6, UDP, TCP), in
//! smoltcp's `Packet<T: AsRef<[u8]>>` style.
//!
//! # Views
//!
//! Each header has a view over a byte buffer, such as
//! [`Ipv4Packet<T>`], that reads and writes fields in place. A view is made
//! in one of two ways:
//!
//! - `new_unchecked(buffer)` wraps the buffer as it is. Accessors index the
//!   buffer directly and panic if it is too short: use it only on buffers
//!   you have sized yourself (emitting).
//! - `new_checked(buffer)` is `new_unchecked` followed by `check_len`.
//!   **After `check_len` returns `Ok`, no accessor of the view panics**:
//!   every length field has been checked against the buffer. Setters that
//!   change a length field (`set_header_len`, `set_total_len`, ...) can
//!   break that promise; check again after using them.
//!
//! `check_len` looks at the length fields only (and at the version of IP
//! headers, without which the lengths mean nothing). Checksums and values
//! that are well-formed but unusual are for the `Repr` types and the
//! classifier.
//!
//! # Representations
//!
//! Each header also has a `Repr` (such as [`Ipv4Repr`]): its meaningful
//! fields as plain data. `Repr::parse` reads one from a checked view and
//! refuses what it cannot represent; `Repr::emit` writes one into a view
//! over a buffer of at least `Repr::buffer_len()` bytes, setting every
//! byte of the header whatever the buffer held before.
//!
//! # The classifier
//!
//! [`parse_frame`] reads a whole Ethernet frame in one pass (tags, IPv4 or
//! IPv6 with extension headers, UDP or TCP) and returns a [`FrameInfo`]:
//! offsets, the flow's 5-tuple and the payload range. It is what the data
//! path calls on every packet.
//!
//! # Errors
//!
//! Everything that refuses input returns a [`WireError`], which maps to
//! the [`DropReason`](crate::net::DropReason) the drop is counted under.
//!
//! ```
//! use dataplane::wire::{parse_frame, L4Kind};
//!
//! // An Ethernet frame carrying an IPv4/UDP datagram with 4 bytes of data.
//! let frame: [u8; 46] = [
//!     0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00, // Ethernet
//!     0x45, 0, 0, 32, 0, 0, 0x40, 0, 64, 17, 0, 0, //          IPv4 ...
//!     10, 0, 0, 1, 10, 0, 0, 2, //                             ... addresses
//!     0x30, 0x39, 0, 53, 0, 12, 0, 0, //                       UDP 12345 -> 53
//!     b'p', b'i', b'n', b'g',
//! ];
//! let info = parse_frame(&frame)?;
//! assert_eq!(info.l4, L4Kind::Udp);
//! let flow = info.flow.expect("an IP frame has a flow");
//! assert_eq!((flow.src_port, flow.dst_port), (12345, 53));
//! assert_eq!(&frame[info.payload()], b"ping");
//! # Ok::<(), dataplane::wire::WireError>(())
//! ```

mod arp;
pub mod checksum;
mod error;
mod ethernet;
mod frame;
mod ip;
mod ipv4;
mod ipv6;
pub mod rss;
mod tcp;
#[cfg(test)]
mod testdata;
mod udp;
mod vlan;

pub use arp::{ArpOperation, ArpPacket, ArpRepr};
pub use error::{Field, Header, WireError};
pub use ethernet::{AddressParseError, EtherType, EthernetAddress, EthernetFrame, EthernetRepr};
pub use frame::{FiveTuple, FrameInfo, L3Kind, L4Kind, parse_frame, parse_frame_with};
pub use ip::{IpPair, IpProtocol};
pub use ipv4::{Ipv4Address, Ipv4Packet, Ipv4Repr};
pub use ipv6::{
    Ipv6Address, Ipv6ExtHeader, Ipv6Fragment, Ipv6FragmentHeader, Ipv6Packet, Ipv6Repr,
    Ipv6UpperLayer,
};
pub use tcp::{SackBlocks, TcpFlags, TcpOption, TcpOptions, TcpPacket, TcpRepr};
pub use udp::{UdpPacket, UdpRepr};
pub use vlan::{MAX_VLAN_TAGS, VlanId, VlanPacket, VlanRepr, VlanStack, VlanTag};

/// The result of parsing or emitting a header.
pub type Result<T> = core::result::Result<T, WireError>;

/// Who computes and checks checksums: this code, or the NIC.
///
/// With [`Offload`](ChecksumMode::Offload), parsing does not look at
/// checksums, and emitting leaves them as transmit offload expects them:
/// zero in the IPv4 header, and the pseudo-header sum (not complemented) in
/// UDP and TCP headers, which is what DPDK's `RTE_MBUF_F_TX_IP_CKSUM` /
/// `RTE_MBUF_F_TX_UDP_CKSUM` (with `rte_ipv4_phdr_cksum`) and Linux's
/// `CHECKSUM_PARTIAL` ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ChecksumMode {
    /// Compute checksums when emitting and verify them when parsing.
    #[default]
    Software,
    /// The NIC computes them on transmit and has verified them on receive.
    Offload,
}

/// Reads a big-endian `u16` at `at`. Callers index within a checked view
/// (or a length they checked), so this does not fail there.
#[inline(always)]
fn read_u16(data: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([data[at], data[at + 1]])
}

/// Reads a big-endian `u32` at `at`, under the same contract as
/// [`read_u16`].
#[inline(always)]
fn read_u32(data: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
}

/// Writes a big-endian `u16` at `at`.
#[inline(always)]
fn write_u16(data: &mut [u8], at: usize, value: u16) {
    data[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

/// Writes a big-endian `u32` at `at`.
#[inline(always)]
fn write_u32(data: &mut [u8], at: usize, value: u32) {
    data[at..at + 4].copy_from_slice(&value.to_be_bytes());
}

/// Reads a big-endian `u16` at `at`, or `None` past the end: for code that
/// walks a buffer it has not checked yet.
#[inline(always)]
fn get_u16(data: &[u8], at: usize) -> Option<u16> {
    let bytes = data.get(at..)?.first_chunk::<2>()?;
    Some(u16::from_be_bytes(*bytes))
}
