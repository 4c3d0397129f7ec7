//! What a [`Stack`](super::Stack) is told (its address, neighbours,
//! buffers, timers) and what it counts.

use super::tcb::{KeepAlive, TcpCounters, TcpState};
use crate::wire::EthernetAddress;
use crate::{Error, Result};
use serde::Serialize;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

/// An address with its prefix length: `10.0.0.1/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    /// The address.
    pub addr: Ipv4Addr,
    /// The prefix length, 0 to 32.
    pub prefix_len: u8,
}

impl std::str::FromStr for Ipv4Cidr {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::Config(format!(
                "'{s}' is not an IPv4 address with a prefix (10.0.0.1/24)"
            ))
        };
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        let prefix_len: u8 = p.parse().map_err(|_| bad())?;
        if prefix_len > 32 {
            return Err(bad());
        }
        Ok(Ipv4Cidr { addr, prefix_len })
    }
}

impl Ipv4Cidr {
    pub(super) fn contains(&self, other: Ipv4Addr) -> bool {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix_len))
            .unwrap_or(0);
        self.addr.to_bits() & mask == other.to_bits() & mask
    }
}

/// How a [`Stack`](super::Stack) runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackConfig {
    /// Our address and the prefix of the link.
    pub address: Ipv4Cidr,
    /// Where packets for other networks go (none: only the link).
    pub gateway: Option<Ipv4Addr>,
    /// Neighbours known without asking: (address, MAC).
    pub neighbours: Vec<(Ipv4Addr, EthernetAddress)>,
    /// A neighbour table the stacks of one port share (none: each its
    /// own). Give the stacks of a multi-queue port one, so that a stack
    /// whose ARP reply reached another queue still learns the answer.
    pub shared_neighbours: Option<super::SharedNeighbours>,
    /// Our MAC (none: the port's).
    pub mac: Option<EthernetAddress>,
    /// The IP MTU (none: the port's, at most 1500).
    pub mtu: Option<usize>,
    /// Bytes a connection's receive buffer holds (64 KiB): its window.
    pub rx_buffer: usize,
    /// Bytes a connection's send buffer holds (256 KiB).
    pub tx_buffer: usize,
    /// Connections in SYN-RECEIVED per listener (1,024); more SYNs are
    /// dropped and counted.
    pub backlog: usize,
    /// Connections at once, TIME-WAIT included (65,536).
    pub max_connections: usize,
    /// How long TIME-WAIT lasts (60 s: Linux's `TCP_TIMEWAIT_LEN`).
    pub time_wait: Duration,
    /// How long a closed connection waits in FIN-WAIT-2 for the peer's
    /// FIN (60 s: Linux's `tcp_fin_timeout`).
    pub fin_timeout: Duration,
    /// A connect not established after this long fails with
    /// `ETIMEDOUT` (75 s, BSD's connection-establishment timer).
    pub connect_timeout: Duration,
    /// A closed connection whose bytes and FIN are still unacknowledged
    /// after this long is reset (60 s).
    pub close_timeout: Duration,
    /// The delayed-ACK timer (40 ms: Linux's `TCP_DELACK_MIN`).
    pub delayed_ack: Duration,
    /// Offer SACK-permitted (RFC 2018) and accept a peer's, then tell the
    /// peer, in each ACK sent while data is held beyond a hole, which
    /// ranges arrived, and recover from loss with the peer's blocks (RFC
    /// 6675) and tail loss probes (RFC 8985). On by default: against
    /// Linux over a lossy link, transfers both ways took 0.6-0.8 of the
    /// time they take without it (docs/performance.md).
    pub sack: bool,
    /// The retransmission timeout's floor (200 ms: Linux's
    /// `TCP_RTO_MIN`; RFC 6298 says 1 s), start (1 s) and ceiling (120 s).
    pub rto_min: Duration,
    /// The first retransmission timeout (RFC 6298 section 2.1).
    pub rto_initial: Duration,
    /// The retransmission timeout's ceiling.
    pub rto_max: Duration,
    /// SYN retransmissions before a connect fails (6, Linux's
    /// `tcp_syn_retries`).
    pub syn_retries: u32,
    /// Retransmissions before an established connection times out (15,
    /// Linux's `tcp_retries2`).
    pub retries: u32,
    /// Local ports for outbound connections.
    pub ephemeral_ports: (u16, u16),
    /// Keep-alive probes on idle connections (none, as Linux's sockets
    /// without `SO_KEEPALIVE`).
    pub keepalive: Option<KeepAlive>,
    /// An established connection with no byte either way for this long
    /// is reset and ends with `TimedOut` (none; `Transport::over_port`
    /// sets it from its `Config::idle_timeout`).
    pub idle_timeout: Option<std::time::Duration>,
    /// Datagrams a UDP socket holds, received and not taken (256); more
    /// are dropped and counted.
    pub datagram_queue: usize,
    /// IPv4 reassembly's timeout and memory (30 s and 4 MiB, Linux's
    /// `ipfrag_time` and `ipfrag_high_thresh`; memory 0 drops every
    /// fragment).
    pub reassembly: super::ReassemblyLimits,
}

impl StackConfig {
    /// `address` with the defaults above.
    pub fn new(address: Ipv4Cidr) -> Self {
        StackConfig {
            address,
            gateway: None,
            neighbours: Vec::new(),
            shared_neighbours: None,
            mac: None,
            mtu: None,
            rx_buffer: 64 * 1024,
            tx_buffer: 256 * 1024,
            backlog: 1024,
            max_connections: 65_536,
            time_wait: Duration::from_secs(60),
            fin_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(75),
            close_timeout: Duration::from_secs(60),
            delayed_ack: Duration::from_millis(40),
            sack: true,
            rto_min: Duration::from_millis(200),
            rto_initial: Duration::from_secs(1),
            rto_max: Duration::from_secs(120),
            syn_retries: 6,
            retries: 15,
            ephemeral_ports: (49_152, 65_535),
            keepalive: None,
            idle_timeout: None,
            datagram_queue: 256,
            reassembly: super::ReassemblyLimits::default(),
        }
    }

    /// Refuses values no stack can run with.
    ///
    /// # Errors
    /// [`Error::Config`] naming the value and why.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::Config(format!("stack: {what}")));
        if self.rx_buffer < 1024 || self.rx_buffer > 1 << 30 {
            return bad("rx_buffer must be between 1 KiB and 1 GiB");
        }
        if self.tx_buffer < 1024 || self.tx_buffer > 1 << 30 {
            return bad("tx_buffer must be between 1 KiB and 1 GiB");
        }
        if self.connect_timeout.is_zero() || self.close_timeout.is_zero() {
            return bad("connect_timeout and close_timeout must be above zero");
        }
        if self.reassembly.timeout.is_zero() {
            return bad("reassembly.timeout must be above zero");
        }
        if self.datagram_queue == 0 {
            return bad("datagram_queue must be at least 1");
        }
        if self.backlog == 0 || self.max_connections == 0 {
            return bad("backlog and max_connections must be at least 1");
        }
        if self.mtu.is_some_and(|m| !(576..=9000).contains(&m)) {
            return bad("mtu must be between 576 and 9000");
        }
        if self.rto_min.is_zero() || self.rto_min > self.rto_max || self.rto_initial.is_zero() {
            return bad("rto_min must be above zero and at most rto_max");
        }
        if self.ephemeral_ports.0 == 0 || self.ephemeral_ports.0 > self.ephemeral_ports.1 {
            return bad("ephemeral_ports must be a non-empty range above 0");
        }
        if let Some(ka) = self.keepalive
            && (ka.idle.is_zero() || ka.interval.is_zero() || ka.probes == 0)
        {
            return bad("keepalive's idle time, interval and probes must be above zero");
        }
        if let Some(gw) = self.gateway
            && !self.address.contains(gw)
        {
            return bad("the gateway must be on the link (inside the address's prefix)");
        }
        Ok(())
    }
}

/// A stack's counters since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StackStats {
    /// Passes of [`Stack::poll`](super::Stack::poll).
    pub passes: u64,
    /// Frames received.
    pub rx_frames: u64,
    /// Frames sent.
    pub tx_frames: u64,
    /// Bytes received in order on connections.
    pub rx_bytes: u64,
    /// Bytes the application wrote to connections.
    pub tx_bytes: u64,
    /// Connections ended (for the application: its `Closed` events).
    pub closed: u64,
    /// Frames dropped because the port's transmit queue was full.
    pub tx_full: u64,
    /// Frames not sent because no mbuf was free.
    pub tx_no_mbuf: u64,
    /// Frames for another MAC, or of another protocol.
    pub rx_ignored: u64,
    /// Frames or packets too short or malformed.
    pub rx_malformed: u64,
    /// IPv4, TCP or UDP checksums that did not match (ours, or the
    /// device's verdict).
    pub rx_bad_checksum: u64,
    /// Frames whose TCP or UDP checksum the device verified, so we did
    /// not ([`PortConfig`](crate::net::PortConfig)'s receive offload).
    pub rx_checksum_offloaded: u64,
    /// IPv4 packets whose checksums the device computed
    /// ([`PortConfig::tx_checksum`](crate::net::PortConfig::tx_checksum)).
    pub tx_checksum_offloaded: u64,
    /// IPv4 packets for another address.
    pub rx_not_ours: u64,
    /// IPv4 fragments received.
    pub rx_fragments: u64,
    /// Datagrams put back together from them.
    pub reassembled: u64,
    /// Fragments refused, or datagrams dropped in reassembly: overlaps,
    /// longer than 65,535 bytes, ends that disagree, over the memory
    /// bound.
    pub reassembly_dropped: u64,
    /// Datagrams given up in reassembly after the timeout.
    pub reassembly_timeouts: u64,
    /// Datagrams sent in fragments (UDP and echo replies longer than the
    /// MTU).
    pub tx_fragmented: u64,
    /// ARP requests answered.
    pub arp_replies: u64,
    /// ARP requests sent.
    pub arp_requests: u64,
    /// Outbound connections failed because their next hop never answered
    /// ARP (`EHOSTUNREACH`).
    pub arp_failed: u64,
    /// ICMP echo requests answered.
    pub icmp_echo: u64,
    /// Port-unreachable messages sent for datagrams no socket took.
    pub icmp_unreachable_sent: u64,
    /// ICMP "fragment reassembly time exceeded" messages sent.
    pub icmp_time_exceeded_sent: u64,
    /// ICMP errors not sent: over the rate limit.
    pub icmp_limited: u64,
    /// Destination-unreachable messages received about what we sent.
    pub icmp_unreachable_received: u64,
    /// TCP segments received.
    pub tcp_rx: u64,
    /// TCP segments sent.
    pub tcp_tx: u64,
    /// Segments for no connection and no listener, answered with RST.
    pub tcp_no_socket: u64,
    /// SYNs dropped: the listener's backlog or the connection table was
    /// full.
    pub syn_dropped: u64,
    /// Connections accepted.
    pub accepted: u64,
    /// Outbound connections established.
    pub connected: u64,
    /// Connections ended by a reset from the peer.
    pub reset: u64,
    /// Connections ended by a timeout.
    pub timed_out: u64,
    /// UDP datagrams received onto a socket.
    pub udp_rx: u64,
    /// UDP datagrams sent (or waiting for their next hop's address).
    pub udp_tx: u64,
    /// UDP datagrams received for a socket whose queue was full.
    pub udp_rx_dropped: u64,
    /// UDP datagrams refused by `send_to` (too long for a frame, no
    /// route, no mbuf) or dropped when their next hop never answered.
    pub udp_tx_dropped: u64,
    /// UDP datagrams for a port with no socket.
    pub udp_no_socket: u64,
    /// Connections in the table now (TIME-WAIT included).
    pub connections: u64,
    /// Counters summed over every connection ended so far.
    pub tcp: TcpCounters,
}

/// One connection's state and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StackConnStats {
    /// Our address.
    pub local: SocketAddrV4,
    /// The peer's.
    pub peer: SocketAddrV4,
    /// The RFC 9293 state.
    pub state: TcpState,
    /// Bytes in the receive buffer.
    pub rx_buffered: usize,
    /// Bytes in the send buffer (sent and unacknowledged, or not sent).
    pub tx_buffered: usize,
    /// Congestion window, bytes.
    pub cwnd: usize,
    /// Smoothed round-trip time, microseconds (0 until measured).
    pub srtt_us: u64,
    /// Retransmissions and the like.
    pub counters: TcpCounters,
}
