//! The sockets behind a port: UDP with `SO_REUSEPORT`, or TCP streams
//! connected or accepted one per queue; socket addresses to and from C.

use super::*;

/// A queue's socket.
#[derive(Debug)]
pub(super) enum Socket {
    Udp(UdpSocket),
    Tcp(TcpStream),
}

impl Socket {
    pub(super) fn raw(&self) -> std::os::fd::RawFd {
        match self {
            Socket::Udp(s) => s.as_raw_fd(),
            Socket::Tcp(s) => s.as_raw_fd(),
        }
    }

    pub(super) fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Socket::Udp(s) => s.local_addr(),
            Socket::Tcp(s) => s.local_addr(),
        }
    }
}

/// The connected streams of a `tcp:` device, one per queue: connected to
/// the peer, or accepted on `local` within the device's timeout.
pub(super) fn tcp_streams(dev: &SocketDevice, queues: u16) -> io::Result<Vec<TcpStream>> {
    use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrStorage, sockopt};
    let family = if dev.local.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let tune = |s: &TcpStream| -> io::Result<()> {
        s.set_nodelay(true)?;
        // io_uring waits for readiness itself; blocking mode would make
        // the kernel park a worker thread per receive instead.
        s.set_nonblocking(true)
    };
    let mut out = Vec::with_capacity(usize::from(queues));
    if let Some(peer) = dev.peer {
        for _ in 0..queues {
            let fd = socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
            if dev.local.port() != 0 {
                socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
            }
            // Several queues from one address: only the first may name
            // the port; the others take ephemeral ones.
            let mut local = dev.local;
            if !out.is_empty() {
                local.set_port(0);
            }
            socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(local))?;
            socket::connect(fd.as_raw_fd(), &SockaddrStorage::from(peer))?;
            let s = TcpStream::from(fd);
            tune(&s)?;
            out.push(s);
        }
        return Ok(out);
    }
    let listener = TcpListener::bind(dev.local)?;
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + dev.accept_timeout;
    while out.len() < usize::from(queues) {
        match listener.accept() {
            Ok((s, _)) => {
                tune(&s)?;
                out.push(s);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "{} of {queues} connections accepted on {} within {:?}",
                            out.len(),
                            dev.local,
                            dev.accept_timeout
                        ),
                    ));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

pub(super) fn udp_socket(local: SocketAddr, reuseport: bool) -> io::Result<UdpSocket> {
    use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrStorage, sockopt};
    let family = if local.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket::socket(
        family,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    if reuseport {
        socket::setsockopt(&fd, sockopt::ReusePort, &true)?;
    }
    // Room for bursts while the lcore is busy elsewhere (the kernel caps
    // it at net.core.rmem_max unless forced, which needs CAP_NET_ADMIN).
    let want = 4 << 20;
    if socket::setsockopt(&fd, sockopt::RcvBufForce, &want).is_err() {
        let _ = socket::setsockopt(&fd, sockopt::RcvBuf, &want);
    }
    if socket::setsockopt(&fd, sockopt::SndBufForce, &want).is_err() {
        let _ = socket::setsockopt(&fd, sockopt::SndBuf, &want);
    }
    socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(local))?;
    Ok(UdpSocket::from(fd))
}

/// `addr` as the kernel's `sockaddr_in6` (an IPv4 address in the
/// `sockaddr_in` layout at its start); returns its length.
pub(super) fn to_sockaddr(addr: SocketAddr, out: &mut libc::sockaddr_in6) -> libc::socklen_t {
    // SAFETY: sockaddr_in6 is plain data; zeroes are valid.
    *out = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            let dst = std::ptr::from_mut(out).cast::<libc::sockaddr_in>();
            // SAFETY: a sockaddr_in (16 bytes) fits in the sockaddr_in6
            // (28) that `dst` points at, with no stricter alignment.
            unsafe { dst.write(sin) };
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            out.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            out.sin6_port = a.port().to_be();
            out.sin6_flowinfo = a.flowinfo();
            out.sin6_addr.s6_addr = a.ip().octets();
            out.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Parses the name bytes the kernel wrote before a datagram.
pub(super) fn from_name(name: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes([*name.first()?, *name.get(1)?]);
    let port = u16::from_be_bytes([*name.get(2)?, *name.get(3)?]);
    match i32::from(family) {
        libc::AF_INET => {
            let a = name.get(4..8)?;
            Some(SocketAddr::from(([a[0], a[1], a[2], a[3]], port)))
        }
        libc::AF_INET6 => {
            let mut ip = [0u8; 16];
            ip.copy_from_slice(name.get(8..24)?);
            let word = |r: std::ops::Range<usize>| -> Option<u32> {
                Some(u32::from_ne_bytes(name.get(r)?.try_into().ok()?))
            };
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                ip.into(),
                port,
                word(4..8)?,
                word(24..28)?,
            )))
        }
        _ => None,
    }
}

pub(super) fn io_err(what: &str, dev: &str) -> impl FnOnce(io::Error) -> Error {
    let context = format!("io_uring {dev}: {what}");
    move |e| Error::io(context, e)
}
