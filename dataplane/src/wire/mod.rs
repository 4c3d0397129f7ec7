//! Zero-copy, bounds-checked views and emitters of packet headers
//! (Ethernet with VLAN, ARP, IPv4, IPv6, UDP, TCP), in smoltcp's
//! `Packet<T: AsRef<[u8]>>` + `check_len` style.
#![deny(unsafe_code)]
