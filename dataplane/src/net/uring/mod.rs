//! io_uring UDP and TCP sockets: an L4 port where each mbuf is one
//! datagram (UDP) or a piece of one stream (TCP; see the end).
//!
//! Each queue is a UDP socket with its own ring. The sockets of a port
//! share one address with `SO_REUSEPORT`, so the kernel spreads flows over
//! them by the 4-tuple hash, as RSS spreads them over a NIC's queues.
//!
//! **Receive.** One multishot `IORING_OP_RECVMSG` per queue, submitted once
//! and kept armed, takes buffers from a provided-buffer ring
//! (`IORING_REGISTER_PBUF_RING`) and posts one completion per datagram. The
//! buffers are the port pool's mbufs themselves, lent to the kernel: the
//! kernel writes `io_uring_recvmsg_out` and the peer's address into the
//! headroom and the payload at the normal data offset, so a datagram
//! arrives in its mbuf with no copy of ours; its peer address goes into the
//! mbuf's private area ([`super::meta`]). A lent mbuf is held as a raw
//! pointer, never as an `Mbuf`, until its completion hands it back; each
//! one taken is replaced from the pool in the same burst.
//!
//! **Send.** One SQE per datagram, to the address in its metadata (or the
//! port's default `peer`): `IORING_OP_SEND_ZC` from a registered buffer
//! (the pool's memory, registered with `IORING_REGISTER_BUFFERS`) for
//! datagrams of at least `zc` bytes from the port's own pool, and
//! `IORING_OP_SEND` otherwise (a small datagram is cheaper to copy than to
//! pin and wait for a notification for). The socket is a registered file.
//! The mbuf stays with the port until the kernel is done with it: the
//! completion for a copy, the notification for a zero-copy send.
//!
//! **Submission.** The ring is set up with `IORING_SETUP_COOP_TASKRUN` and
//! `IORING_SETUP_TASKRUN_FLAG`: the kernel does not interrupt the lcore to
//! post completions, it flags that work is pending. `tx_burst` submits
//! its SQEs with one `io_uring_enter`, which also runs that pending work;
//! `rx_burst` reads the completion ring directly and enters the kernel only
//! when the flag is up and nothing has entered since the last `rx_burst`.
//! A poll pass that receives and sends makes one system call.
//!
//! **Drops.** `SO_MEMINFO`'s drop count (datagrams the socket dropped with
//! its queue full, including while no buffer was lent) is `RxOverrun`; a
//! datagram longer than an mbuf's data room is `Oversized`; a datagram to
//! send with no destination is `Filtered`.
//!
//! Device syntax: `udp:LOCAL_ADDR:PORT[,peer=ADDR:PORT][,zc=BYTES|off]`,
//! e.g. `udp:10.0.0.1:9000,peer=10.0.0.2:9000` or `udp:[fd00::1]:53`. With
//! more than one queue the port must be given (not 0).
//!
//! **TCP.** `tcp:LOCAL_ADDR:PORT,peer=ADDR:PORT` connects one stream per
//! queue to the peer; `tcp:LOCAL_ADDR:PORT[,accept=SECS]` listens there and
//! waits (10 s by default) for one connection per queue when it opens.
//! Everything above holds with these differences: an mbuf is a piece of
//! the byte stream, not a message (boundaries are the kernel's, in order);
//! a send carries `MSG_WAITALL`, so the kernel finishes a short send
//! itself, and a burst's sends are one linked chain (`IOSQE_IO_LINK`) with
//! at most one chain in flight, so each mbuf goes out whole and in order
//! (sends in flight side by side on a stream are not ordered); no peer
//! metadata; and when the peer closes its side, the port's link goes down
//! and receiving stops.

// The submodules: the device syntax, the sockets, the provided-buffer
// ring, and the port (opening, completions, the Port impl).
mod burst;
mod completions;
mod device;
mod port;
mod socket;

pub use device::{SocketDevice, Transport};
pub use port::SocketPort;

use crate::uring::buf_ring::BufRing;

use super::meta::{self, META_PRIV_SIZE};
use super::{
    Backend, Capabilities, DropReason, Layer, LinkStatus, MAX_BURST, MbufBatch, Port, PortConfig,
    PortId, QueueId, QueueStats,
};
use crate::backend::Probe;
use crate::{Error, Result};
use ::io_uring::{IoUring as Ring, cqueue, opcode, squeue, types};
use hugepages::mbuf::{Mbuf, MbufHeader, MbufPool, MbufPoolConfig};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

/// The device prefix of an io_uring UDP port.
pub const UDP_PREFIX: &str = "udp:";

/// The device prefix of an io_uring TCP port.
pub const TCP_PREFIX: &str = "tcp:";

/// How long a listening `tcp:` port waits for its connections at open
/// unless `accept=SECS` says otherwise.
pub const TCP_ACCEPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Datagrams of at least this many bytes from the port's own pool go out
/// with `SEND_ZC` from registered memory; below it, `SEND` copies (the
/// default; `zc=BYTES` in the device changes it). docs/performance.md has
/// the measurement behind the figure.
pub const ZC_MIN_BYTES: usize = 1024;

/// Bytes reserved for the peer's address in each receive buffer: a
/// `sockaddr_in6` (28) rounded up to 8.
const NAME_LEN: usize = 32;

/// `struct io_uring_recvmsg_out`: namelen, controllen, payloadlen, flags,
/// each a `__u32` (include/uapi/linux/io_uring.h).
const RECVMSG_OUT: usize = 16;

/// What the kernel writes before the payload: `io_uring_recvmsg_out` and
/// the name.
const RECV_PREFIX: usize = RECVMSG_OUT + NAME_LEN;

/// `user_data` of the multishot receive.
const RECV_TAG: u64 = 1 << 63;
/// `user_data` of a cancel request.
const CANCEL_TAG: u64 = (1 << 63) | 1;
/// `user_data` bit of a send; the low bits are its slot.
const SEND_TAG: u64 = 1 << 62;

/// The buffer group of the provided-buffer ring (one ring per port queue).
const BGID: u16 = 0;

/// How long dropping a port waits for the kernel to give back what it
/// holds before it leaks it instead (never freeing memory the kernel may
/// still write).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// The io_uring UDP backend.
#[derive(Debug, Clone, Copy, Default)]
pub struct IoUring;

/// The opcodes the port uses, by name, for the probe.
const NEEDED_OPS: [(u8, &str); 4] = [
    (opcode::RecvMsgMulti::CODE, "RECVMSG"),
    (opcode::Send::CODE, "SEND"),
    (opcode::SendZc::CODE, "SEND_ZC"),
    (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
];

fn probe_now() -> Probe {
    let base = crate::topology::io_uring_probe();
    if !base.available {
        return base;
    }
    let ring = match Ring::new(8) {
        Ok(r) => r,
        Err(e) => return Probe::unavailable(format!("io_uring_setup: {e}")),
    };
    let missing = match crate::uring::missing_opcodes(&ring, &NEEDED_OPS) {
        Ok(m) => m,
        Err(e) => return Probe::unavailable(format!("IORING_REGISTER_PROBE failed: {e}")),
    };
    if !missing.is_empty() {
        return Probe::unavailable(format!(
            "the kernel's io_uring lacks {} ({})",
            missing.join(", "),
            base.reason
        ));
    }
    // Provided-buffer rings (5.19) and multishot receive (6.0) have no
    // opcode of their own: register a small ring to see.
    match BufRing::new(8).and_then(|br| {
        // SAFETY: `br` is a page-aligned ring of 8 entries that outlives
        // its registration (unregistered just below, before it drops).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(br.addr(), 8, BGID, 0)
        }?;
        ring.submitter().unregister_buf_ring(BGID)
    }) {
        Ok(()) => Probe::ok(format!(
            "io_uring with multishot RECVMSG, SEND, SEND_ZC and provided-buffer rings ({})",
            base.reason
        )),
        Err(e) => Probe::unavailable(format!(
            "IORING_REGISTER_PBUF_RING failed ({e}): kernel older than 5.19? ({})",
            base.reason
        )),
    }
}

impl Backend for IoUring {
    fn probe(&self) -> Probe {
        static PROBE: OnceLock<Probe> = OnceLock::new();
        PROBE.get_or_init(probe_now).clone()
    }

    fn open(&self, cfg: &PortConfig) -> Result<Vec<Box<dyn Port>>> {
        SocketPort::open(cfg).map(|ports| {
            ports
                .into_iter()
                .map(|p| Box::new(p) as Box<dyn Port>)
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::socket::{from_name, to_sockaddr};
    use super::*;

    #[test]
    fn devices_parse() {
        let d = SocketDevice::parse("udp:10.0.0.1:9000,peer=10.0.0.2:9001,zc=off").expect("ok");
        assert_eq!(d.local, "10.0.0.1:9000".parse().expect("addr"));
        assert_eq!(d.peer, Some("10.0.0.2:9001".parse().expect("addr")));
        assert_eq!(d.zc_min, None);
        let d = SocketDevice::parse("udp:[::1]:53,zc=4096").expect("ok");
        assert!(d.local.is_ipv6());
        assert_eq!(d.zc_min, Some(4096));
        let d = SocketDevice::parse("tcp:127.0.0.1:0,peer=127.0.0.1:80").expect("ok");
        assert_eq!(d.transport, Transport::Tcp);
        assert_eq!(d.peer, Some("127.0.0.1:80".parse().expect("addr")));
        let d = SocketDevice::parse("tcp:0.0.0.0:7000,accept=3").expect("ok");
        assert_eq!((d.peer, d.accept_timeout), (None, Duration::from_secs(3)));
        for bad in [
            "veth0",
            "udp:1.2.3.4",
            "udp:1.2.3.4:5,peer=x",
            "udp:1.2.3.4:5,mtu=9",
            "udp:1.2.3.4:5,accept=3",
            "tcp:1.2.3.4:5,accept=soon",
        ] {
            assert!(SocketDevice::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_round_trip() {
        for addr in ["192.0.2.7:4242", "[fd00::5]:99"] {
            let a: SocketAddr = addr.parse().expect("addr");
            let mut raw: libc::sockaddr_in6 =
                // SAFETY: plain data; zeroes are valid.
                unsafe { std::mem::zeroed() };
            let len = to_sockaddr(a, &mut raw) as usize;
            let ptr = std::ptr::from_ref(&raw).cast::<u8>();
            // SAFETY: `raw` is `size_of::<sockaddr_in6>()` initialised bytes.
            let bytes = unsafe { std::slice::from_raw_parts(ptr, size_of::<libc::sockaddr_in6>()) };
            assert!(len <= NAME_LEN);
            assert_eq!(from_name(bytes), Some(a));
        }
        assert_eq!(from_name(&[0; 4]), None);
    }

    #[test]
    fn the_probe_names_what_it_found() {
        let p = IoUring.probe();
        assert!(!p.reason.is_empty());
        println!("io_uring backend: {p}");
    }
}
