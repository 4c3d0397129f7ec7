//! The `udp:` and `tcp:` device syntax.

use super::*;

/// The transport of an io_uring port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// UDP: one datagram per mbuf.
    Udp,
    /// TCP: a connected stream per queue, a piece of it per mbuf.
    Tcp,
}

/// A parsed `udp:` or `tcp:` device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketDevice {
    /// UDP or TCP.
    pub transport: Transport,
    /// The address the sockets bind.
    pub local: SocketAddr,
    /// UDP: where datagrams without a peer in their metadata go. TCP: the
    /// address to connect to; `None` listens on `local`.
    pub peer: Option<SocketAddr>,
    /// The smallest datagram sent zero-copy; `None`: never.
    pub zc_min: Option<usize>,
    /// TCP without a peer: how long opening waits for the connections.
    pub accept_timeout: Duration,
}

impl SocketDevice {
    /// Parses `udp:LOCAL[,peer=ADDR][,zc=BYTES|off]` or
    /// `tcp:LOCAL[,peer=ADDR][,zc=BYTES|off][,accept=SECS]`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] saying what part is wrong.
    pub fn parse(device: &str) -> Result<SocketDevice> {
        let bad = |why: String| Error::Config(format!("io_uring device {device:?}: {why}"));
        let (transport, rest) = if let Some(rest) = device.strip_prefix(UDP_PREFIX) {
            (Transport::Udp, rest)
        } else if let Some(rest) = device.strip_prefix(TCP_PREFIX) {
            (Transport::Tcp, rest)
        } else {
            return Err(bad(format!(
                "expected {UDP_PREFIX}ADDR:PORT[,peer=ADDR:PORT] or {TCP_PREFIX}ADDR:PORT[,peer=ADDR:PORT]"
            )));
        };
        let mut parts = rest.split(',');
        let local = parts
            .next()
            .unwrap_or_default()
            .parse::<SocketAddr>()
            .map_err(|e| bad(format!("local address: {e}")))?;
        let mut dev = SocketDevice {
            transport,
            local,
            peer: None,
            zc_min: Some(ZC_MIN_BYTES),
            accept_timeout: TCP_ACCEPT_TIMEOUT,
        };
        for opt in parts {
            match opt.split_once('=') {
                Some(("peer", v)) => {
                    dev.peer = Some(v.parse().map_err(|e| bad(format!("peer: {e}")))?);
                }
                Some(("zc", "off")) => dev.zc_min = None,
                Some(("zc", v)) => {
                    dev.zc_min = Some(v.parse().map_err(|e| bad(format!("zc: {e}")))?);
                }
                Some(("accept", v)) if transport == Transport::Tcp => {
                    let secs: u64 = v.parse().map_err(|e| bad(format!("accept: {e}")))?;
                    dev.accept_timeout = Duration::from_secs(secs);
                }
                _ => return Err(bad(format!("unknown option {opt:?}"))),
            }
        }
        Ok(dev)
    }
}
