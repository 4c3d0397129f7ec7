//! Frames as a capture shows them, for the unit tests: addresses, ports
//! and checksums were computed independently of this module (by a short
//! script over the RFC layouts), so a parser that agrees with itself but
//! not with the RFCs fails on them.
//!
//! Offsets used by the tests: Ethernet header 14 bytes, so L3 starts at 14
//! (22 for the QinQ frame).

/// Decodes hex at compile time.
const fn hex<const N: usize>(s: &str) -> [u8; N] {
    const fn nibble(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => panic!("not a lowercase hex digit"),
        }
    }
    let s = s.as_bytes();
    assert!(s.len() == 2 * N, "hex length does not match the array");
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = (nibble(s[2 * i]) << 4) | nibble(s[2 * i + 1]);
        i += 1;
    }
    out
}

/// An ARP request (who has 192.168.1.1? tell 192.168.1.100), broadcast,
/// padded to the 60-byte Ethernet minimum.
pub(crate) const ARP_REQUEST: [u8; 60] = hex(concat!(
    "ffffffffffff52540012345608060001080006040001525400123456c0a80164",
    "000000000000c0a80101000000000000000000000000000000000000",
));
/// A DNS query for example.com (A) from 192.168.1.100:53001 to 8.8.8.8:53;
/// IPv4 checksum 0x4c52, UDP checksum 0x74b0.
pub(crate) const IPV4_UDP_DNS: [u8; 71] = hex(concat!(
    "0011223344555254001234560800450000391c46400040114c52c0a801640808",
    "0808cf090035002574b01a2b01000001000000000000076578616d706c650363",
    "6f6d0000010001",
));
/// A TCP SYN from 192.168.1.100:40000 to 93.184.216.34:80 with Linux's
/// options (MSS 1460, SACK permitted, timestamps 0x0a1b2c3d/0, NOP,
/// window scale 7): data offset 10, TCP checksum 0x1993.
pub(crate) const IPV4_TCP_SYN: [u8; 74] = hex(concat!(
    "00112233445552540012345608004500003cbeef4000400683e5c0a801645db8",
    "d8229c4000501234567800000000a002faf019930000020405b40402080a0a1b",
    "2c3d0000000001030307",
));
/// UDP from [2001:db8::1]:5000 to [2001:db8::2]:53 carrying "hello, v6",
/// traffic class 0xb8, flow label 0x12345, hop limit 64; UDP checksum 0xf625.
pub(crate) const IPV6_UDP: [u8; 71] = hex(concat!(
    "33330000000252540012345686dd6b8123450011114020010db8000000000000",
    "00000000000120010db8000000000000000000000002138800350011f6256865",
    "6c6c6f2c207636",
));
/// A QinQ frame (S-tag 0x88a8 VLAN 100 PCP 3, C-tag 0x8100 VLAN 200) with
/// IPv4/UDP 10.0.0.1:1234 -> 10.0.0.2:4321 carrying "qinq", padded to 64 bytes.
pub(crate) const QINQ_IPV4_UDP: [u8; 64] = hex(concat!(
    "02000000000202000000000188a86064810000c8080045000020000100004011",
    "66ca0a0000010a00000204d210e1000cf64571696e7100000000000000000000",
));
