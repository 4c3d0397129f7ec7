//! Per-packet metadata kept in an mbuf's private area.
//!
//! An L4 port (io_uring UDP) delivers datagrams, not frames, so the peer a
//! datagram came from (and the one a reply goes to) is not in the packet
//! bytes. It lives in the first [`META_PRIV_SIZE`] bytes of the mbuf's
//! private area, the place DPDK applications keep per-packet state of their
//! own (`rte_mbuf_to_priv`). The private area is per pool: backends that
//! need the metadata create their pools with at least this much, and a
//! mbuf without room simply has no peer ([`peer`] returns `None`,
//! [`set_peer`] returns `false`).
//!
//! Layout (32 bytes): `[0]` the family (0 none, 4 IPv4, 6 IPv6), `[2..4]`
//! the port, big-endian, `[4..8]` the IPv6 flow info, `[8..24]` the address
//! (IPv4 in the first 4 bytes), `[24..28]` the IPv6 scope id.

use hugepages::mbuf::Mbuf;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// Bytes of private area the metadata needs.
pub const META_PRIV_SIZE: usize = 32;

const FAMILY_NONE: u8 = 0;
const FAMILY_V4: u8 = 4;
const FAMILY_V6: u8 = 6;

/// Records `addr` as the mbuf's peer; `false` when the mbuf's pool has too
/// small a private area.
pub fn set_peer(m: &mut Mbuf, addr: SocketAddr) -> bool {
    let Some(p) = m.priv_area_mut().get_mut(..META_PRIV_SIZE) else {
        return false;
    };
    p.fill(0);
    match addr {
        SocketAddr::V4(a) => {
            p[0] = FAMILY_V4;
            p[2..4].copy_from_slice(&a.port().to_be_bytes());
            p[8..12].copy_from_slice(&a.ip().octets());
        }
        SocketAddr::V6(a) => {
            p[0] = FAMILY_V6;
            p[2..4].copy_from_slice(&a.port().to_be_bytes());
            p[4..8].copy_from_slice(&a.flowinfo().to_ne_bytes());
            p[8..24].copy_from_slice(&a.ip().octets());
            p[24..28].copy_from_slice(&a.scope_id().to_ne_bytes());
        }
    }
    true
}

/// Forgets the mbuf's peer.
pub fn clear_peer(m: &mut Mbuf) {
    if let Some(p) = m.priv_area_mut().get_mut(..META_PRIV_SIZE) {
        p[0] = FAMILY_NONE;
    }
}

/// The mbuf's peer, if one was recorded.
pub fn peer(m: &Mbuf) -> Option<SocketAddr> {
    let p = m.priv_area().get(..META_PRIV_SIZE)?;
    let port = u16::from_be_bytes([p[2], p[3]]);
    let word = |at: usize| u32::from_ne_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]]);
    match p[0] {
        FAMILY_V4 => Some(SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::new(p[8], p[9], p[10], p[11]),
            port,
        ))),
        FAMILY_V6 => {
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&p[8..24]);
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                port,
                word(4),
                word(24),
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hugepages::mbuf::{MbufPool, MbufPoolConfig};

    #[test]
    fn peers_round_trip_and_need_room() {
        let pool = MbufPool::new(MbufPoolConfig {
            name: "meta".into(),
            count: 4,
            cache_size: 0,
            priv_size: META_PRIV_SIZE,
            ..MbufPoolConfig::default()
        })
        .expect("pool");
        let mut m = pool.alloc().expect("mbuf");
        assert_eq!(peer(&m), None);
        for addr in [
            "10.1.2.3:9000".parse::<SocketAddr>().expect("v4"),
            "[fd00::1%7]:53".parse().expect("v6"),
        ] {
            assert!(set_peer(&mut m, addr));
            assert_eq!(peer(&m), Some(addr));
        }
        clear_peer(&mut m);
        assert_eq!(peer(&m), None);

        let bare = MbufPool::new(MbufPoolConfig {
            name: "meta-bare".into(),
            count: 4,
            cache_size: 0,
            ..MbufPoolConfig::default()
        })
        .expect("pool");
        let mut b = bare.alloc().expect("mbuf");
        assert!(!set_peer(&mut b, "10.0.0.1:1".parse().expect("addr")));
        assert_eq!(peer(&b), None);
    }
}
