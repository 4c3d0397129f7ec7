//! What the kernel-socket backends (AF_PACKET, AF_XDP) share about an
//! interface: socket options, the interface's index, MTU, MAC address and
//! link state (`SIOCGIF*`), and their port numbers.

use super::{LinkStatus, PortId};
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
