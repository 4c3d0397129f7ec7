//! What the kernel-socket backends (AF_PACKET, AF_XDP) share about an
//! interface: socket options, the interface's index, MTU, MAC address and
//! link state (`SIOCGIF*`), the NIC's RSS key and indirection table
//! (`ETHTOOL_GRSSH`), and their port numbers.

use super::{LinkStatus, PortId};
use crate::wire::rss::Steering;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU16, Ordering};

/// Sets a socket option from a plain value.
pub(crate) fn setsockopt<T>(
    fd: BorrowedFd<'_>,
    level: i32,
    name: i32,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` is a live `T` of `size_of::<T>()` bytes, which is
    // what the option reads; the kernel copies it before returning.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(value).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A socket for the interface ioctls (`SIOCGIF*`), for backends whose own
/// sockets do not take them (AF_XDP's answer EOPNOTSUPP).
pub(crate) fn ioctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; it returns a new fd or -1.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An `ifreq` naming `ifname`.
pub(crate) fn ifreq(ifname: &str) -> io::Result<libc::ifreq> {
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = ifname.as_bytes();
    if bytes.is_empty() || bytes.len() >= req.ifr_name.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{ifname:?} is not an interface name"),
        ));
    }
    for (d, s) in req.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    Ok(req)
}

/// Runs an interface ioctl (`SIOCGIF*`) on `fd`.
pub(crate) fn if_ioctl(
    fd: BorrowedFd<'_>,
    request: libc::Ioctl,
    req: &mut libc::ifreq,
) -> io::Result<()> {
    // SAFETY: the SIOCGIF* requests read the name and write one union
    // member of the `ifreq` we pass, which lives for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request, std::ptr::from_mut(req)) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// What the kernel says about an interface.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IfInfo {
    pub(crate) index: i32,
    pub(crate) mtu: usize,
    pub(crate) mac: Option<[u8; 6]>,
}

pub(crate) fn if_info(fd: BorrowedFd<'_>, ifname: &str) -> io::Result<IfInfo> {
    let index = nix::net::if_::if_nametoindex(ifname).map_err(|e| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface {ifname:?} in this network namespace ({e})"),
        )
    })?;
    let mut req = ifreq(ifname)?;
    if_ioctl(fd, libc::SIOCGIFMTU, &mut req)?;
    // SAFETY: SIOCGIFMTU wrote the `ifru_mtu` member.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    let mut req = ifreq(ifname)?;
    if_ioctl(fd, libc::SIOCGIFHWADDR, &mut req)?;
    // SAFETY: SIOCGIFHWADDR wrote the `ifru_hwaddr` member.
    let hw = unsafe { req.ifr_ifru.ifru_hwaddr };
    let mac = (hw.sa_family == libc::ARPHRD_ETHER).then(|| {
        let mut m = [0u8; 6];
        for (d, s) in m.iter_mut().zip(hw.sa_data) {
            *d = s as u8;
        }
        m
    });
    Ok(IfInfo {
        index: index as i32,
        mtu: usize::try_from(mtu).unwrap_or(1500),
        mac,
    })
}

pub(crate) fn link_of(fd: BorrowedFd<'_>, ifname: &str) -> LinkStatus {
    let flags = ifreq(ifname).and_then(|mut req| {
        if_ioctl(fd, libc::SIOCGIFFLAGS, &mut req)?;
        // SAFETY: SIOCGIFFLAGS wrote the `ifru_flags` member.
        Ok(i32::from(unsafe { req.ifr_ifru.ifru_flags }))
    });
    LinkStatus {
        up: flags.is_ok_and(|f| f & libc::IFF_UP != 0 && f & libc::IFF_RUNNING != 0),
        speed_mbps: None,
        full_duplex: None,
    }
}

/// A port number for an interface port: distinct per open in this
/// process, above DPDK's (which count from 0).
pub(crate) fn next_port_id() -> PortId {
    static NEXT: AtomicU16 = AtomicU16::new(0x4000);
    // Relaxed: only uniqueness matters.
    PortId(NEXT.fetch_add(1, Ordering::Relaxed))
}

/// `ETHTOOL_GRSSH`: read the RSS hash key, indirection table and function.
const ETHTOOL_GRSSH: u32 = 0x46;
/// `ETH_RSS_HASH_TOP`: the Toeplitz hash function.
const ETH_RSS_HASH_TOP: u8 = 1;
/// `struct ethtool_rxfh` up to its `rss_config` array, in 32-bit words.
const RXFH_WORDS: usize = 6;

/// The NIC's RSS as software can compute it: its Toeplitz key and
/// indirection table, from `ETHTOOL_GRSSH` (what `ethtool -x` shows), for
/// backends whose queues are the NIC's own (AF_XDP). `Ok(None)` for a
/// hash other than plain Toeplitz (XOR, CRC32, or a symmetric input
/// transform); an error where the driver does not say (veth:
/// `EOPNOTSUPP`).
pub(crate) fn nic_rss(fd: BorrowedFd<'_>, ifname: &str) -> io::Result<Option<Steering>> {
    // First ask for the sizes, then for the table and key.
    let mut head = [0u32; RXFH_WORDS];
    head[0] = ETHTOOL_GRSSH;
    ethtool(fd, ifname, &mut head)?;
    let (indir, key) = (head[2] as usize, head[3] as usize);
    if indir > 1 << 16 || key > 256 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{ifname}: an RSS table of {indir} entries and a key of {key} bytes"),
        ));
    }
    let mut buf = vec![0u32; RXFH_WORDS + indir + key.div_ceil(4)];
    buf[0] = ETHTOOL_GRSSH;
    buf[2] = indir as u32;
    buf[3] = key as u32;
    ethtool(fd, ifname, &mut buf)?;
    Ok(parse_rxfh(&buf))
}

/// Reads a filled `struct ethtool_rxfh` (as 32-bit words).
fn parse_rxfh(words: &[u32]) -> Option<Steering> {
    let head = words.get(..RXFH_WORDS)?;
    let (indir, key) = (head[2] as usize, head[3] as usize);
    // hfunc and input_xfrm are the first two bytes of word 4.
    let [hfunc, input_xfrm, ..] = head[4].to_ne_bytes();
    if hfunc != ETH_RSS_HASH_TOP || input_xfrm != 0 {
        return None;
    }
    let table = words.get(RXFH_WORDS..RXFH_WORDS + indir)?;
    let reta = table
        .iter()
        .map(|&q| u16::try_from(q).ok())
        .collect::<Option<Vec<u16>>>()?;
    let key_bytes: Vec<u8> = words
        .get(RXFH_WORDS + indir..)?
        .iter()
        .flat_map(|w| w.to_ne_bytes())
        .take(key)
        .collect();
    Steering::toeplitz(&key_bytes, reta).ok()
}

/// Runs `SIOCETHTOOL` with `data` (a command's struct, as words).
fn ethtool(fd: BorrowedFd<'_>, ifname: &str, data: &mut [u32]) -> io::Result<()> {
    let mut req = ifreq(ifname)?;
    req.ifr_ifru.ifru_data = data.as_mut_ptr().cast();
    // SAFETY: `req` and `data` live for the call, and the kernel writes
    // no more than the size fields in `data` describe, which it holds.
    let rc = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::SIOCETHTOOL,
            std::ptr::from_mut(&mut req),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::rss::MICROSOFT_RSS_KEY;

    /// An `ethtool_rxfh` as a driver fills it.
    fn rxfh(hfunc: u8, xfrm: u8, reta: &[u32], key: &[u8]) -> Vec<u32> {
        let mut w = vec![ETHTOOL_GRSSH, 0, reta.len() as u32, key.len() as u32];
        w.push(u32::from_ne_bytes([hfunc, xfrm, 0, 0]));
        w.push(0);
        w.extend_from_slice(reta);
        let mut k = key.to_vec();
        k.resize(key.len().next_multiple_of(4), 0);
        w.extend(
            k.chunks(4)
                .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]])),
        );
        w
    }

    #[test]
    fn a_toeplitz_table_and_key_become_a_steering() {
        let reta: Vec<u32> = (0..128).map(|i| i % 4).collect();
        let s =
            parse_rxfh(&rxfh(ETH_RSS_HASH_TOP, 0, &reta, &MICROSOFT_RSS_KEY)).expect("toeplitz");
        assert_eq!(
            s,
            Steering::toeplitz(&MICROSOFT_RSS_KEY, (0..128).map(|i| i % 4).collect())
                .expect("valid")
        );
        // XOR or CRC32 hashing, a symmetric transform, a short key, a
        // truncated answer: not computable.
        assert!(parse_rxfh(&rxfh(2, 0, &reta, &MICROSOFT_RSS_KEY)).is_none());
        assert!(parse_rxfh(&rxfh(ETH_RSS_HASH_TOP, 1, &reta, &MICROSOFT_RSS_KEY)).is_none());
        assert!(parse_rxfh(&rxfh(ETH_RSS_HASH_TOP, 0, &reta, &[1; 8])).is_none());
        let full = rxfh(ETH_RSS_HASH_TOP, 0, &reta, &MICROSOFT_RSS_KEY);
        assert!(parse_rxfh(&full[..40]).is_none());
    }
}
