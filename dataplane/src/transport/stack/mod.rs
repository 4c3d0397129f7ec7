//! A user-space TCP/IP stack owned by one lcore, over any L2 [`Port`]:
//! DPDK ethdev, AF_XDP, AF_PACKET or memory ports.
//!
//! ```no_run
//! use dataplane::net::{self, BackendChoice, PortConfig};
//! use dataplane::transport::Event;
//! use dataplane::transport::stack::{Stack, StackConfig};
//!
//! let port = net::open(&PortConfig::new("veth0"), BackendChoice::Auto)?.value.remove(0);
//! let mut stack = Stack::new(port, StackConfig::new("10.99.0.1/24".parse().unwrap()))?;
//! stack.listen(7)?;
//! loop {
//!     stack.poll();
//!     while let Some(ev) = stack.next_event() {
//!         match ev {
//!             Event::Readable(c) => {
//!                 let n = stack.write(c, &stack.peek(c)?.to_vec())?;
//!                 stack.consume(c, n)?;
//!             }
//!             Event::PeerClosed(c) => stack.close(c)?,
//!             _ => {}
//!         }
//!     }
//! }
//! # Ok::<(), dataplane::Error>(())
//! ```
//!
//! **Why our own.** The stack lives inside one lcore's poll loop: one
//! thread owns the port queue, the connection table, the timers and the
//! buffers, and nothing is locked or shared. smoltcp, the closest crate,
//! has no listen backlog (a listening socket becomes the connection, so a
//! server needs one pre-made socket per concurrent SYN), scans every
//! socket on each packet, and keeps its own socket set's lifetimes; the
//! kernel-bypass stacks (Seastar, F-Stack, mTCP) are C++ or C and bring
//! their own runtimes. Here a segment is looked up by its 4-tuple in a
//! hash map, parsed in place in the rx mbuf with [`crate::wire`], and its
//! connection's state machine (`tcb.rs`) is a pure function of the state,
//! the segment and the time, which the fuzz target drives directly. A
//! payload that arrives in order into an empty receive buffer stays in
//! its mbuf, and [`Stack::peek`] is a slice of it until it is consumed or
//! the next pass copies what is left (`rxbuf.rs`).
//!
//! **What it speaks.** Ethernet II; ARP (RFC 826: replies for our
//! address, learns from requests to us and from replies, asks for a next
//! hop it does not know, and takes static neighbours from the
//! configuration); IPv4 with a prefix and a default gateway, fragments
//! reassembled (with Linux's bounds and its refusal of overlaps, `frag`)
//! and UDP datagrams and echo replies too long for the MTU sent in
//! fragments (TCP sets DF and sizes its segments); ICMP echo (RFC 792)
//! and destination unreachable, sent for closed UDP ports and taken for
//! connects, and time exceeded for a datagram given up in reassembly
//! (`icmp`);
//! TCP per RFC 9293 with a listen backlog, MSS and window scaling (RFC
//! 7323), RFC 6298's retransmission timer, RFC 5681 congestion control
//! with NewReno's fast recovery (RFC 6582), delayed ACKs with the
//! quick-ACK cases, zero-window probes, TIME-WAIT and RFC 5961's checks of
//! RST, SYN and ACK. Initial sequence numbers follow RFC 6528 (a keyed
//! hash of the 4-tuple plus a 4 µs clock). Timestamps are declined
//! (never offered), so peers fall back cleanly. SACK (RFC 2018) is
//! offered and accepted unless [`StackConfig::sack`] is off: ACKs carry
//! SACK blocks, and the blocks received drive RFC 6675's loss recovery
//! and tail loss probes (`tcb`).
//!
//! **Checksums** are computed and verified in software unless the port's
//! device does it: on a port with
//! [`Capabilities::rx_checksum`](crate::net::Capabilities::rx_checksum)
//! the stack takes each mbuf's verdict (good, or verified with no sum in
//! the field: not checked again; bad: dropped and counted; not looked
//! at: checked here), and on one with
//! [`Capabilities::tx_checksum`](crate::net::Capabilities::tx_checksum)
//! (asked for with [`PortConfig::tx_checksum`](crate::net::PortConfig::tx_checksum))
//! it leaves the IPv4 checksum zero and the TCP or UDP one the
//! pseudo-header's sum, and sets the mbuf's offload flags and header
//! lengths for the device to finish, as DPDK's `RTE_MBUF_F_TX_*_CKSUM`
//! asks. [`StackStats`] counts both.
//!
//! **One stack per queue.** A port of several queues spreads received
//! flows by a hash of the 4-tuple, so a connection's segments reach the
//! stack on the queue the hash picks. For connections accepted that is
//! the stack that saw the SYN. For connections opened, [`Stack::connect`]
//! takes a source port whose replies hash to its own queue, where the
//! port says how it spreads ([`Capabilities::steering`](crate::net::Capabilities::steering):
//! a NIC's Toeplitz key and redirection table under DPDK, the fanout
//! program under AF_PACKET), as Seastar and F-Stack do. ARP has no
//! ports: replies reach queue 0 whichever stack asked, so the stacks of
//! one port share a [`SharedNeighbours`] table
//! ([`StackConfig::shared_neighbours`]) that each publishes what it
//! learns to, and a stack waiting for an answer looks there (or is given
//! its next hop in [`StackConfig::neighbours`]).
//!
//! **The API** is the kernel engines' ([`Transport`](super::Transport)):
//! [`Stack::poll`] each pass, then [`Event`]s from [`Stack::next_event`];
//! [`Stack::peek`]/[`Stack::consume`] to read (one contiguous slice of
//! every byte received in order), [`Stack::write`] to send (it takes what
//! the send buffer has room for, and a [`Event::Writable`] follows once
//! half of it is free), [`Stack::shutdown`], [`Stack::close`] and
//! [`Stack::abort`]. Each connection ends with one [`Event::Closed`].
//!
//! **Timers** sit in a hierarchical timing wheel (`wheel`, 1 ms ticks,
//! O(1) to schedule): a connection has one entry, for the earliest
//! deadline it scheduled. A deadline that moves later (an RTO pushed back
//! by each ACK) costs nothing until that entry fires and schedules the
//! rest; one that moves earlier gets an entry of its own, and the entry it
//! replaced is dropped when it fires.

#[cfg(test)]
mod claims;
mod config;
mod frag;
#[cfg(test)]
mod fragments;
mod fuzz;
mod icmp;
mod io;
mod neighbour;
mod rxbuf;
mod tcb;
#[cfg(test)]
mod tests;
mod udp;
mod wheel;

pub use config::{Ipv4Cidr, StackConfig, StackConnStats, StackStats};
pub use frag::ReassemblyLimits;
pub use fuzz::fuzz_frames;
pub use neighbour::SharedNeighbours;
pub use tcb::{KeepAlive, TcpCounters, TcpState, fuzz_drive};

use self::io::Io;
use self::neighbour::Neighbour;

use self::tcb::{Params, SegIn, SegOut, Seq, Tcb};
use self::udp::{Delivery, UdpSock};
use super::conn::Slab;
use super::{CloseReason, ConnId, Event, ListenerId};
use crate::net::{MbufBatch, Port, QueueId};
use crate::wire::{
    ChecksumMode, EtherType, EthernetAddress, EthernetFrame, IpPair, IpProtocol, Ipv4Packet,
    Ipv4Repr, TcpFlags, TcpPacket, TcpRepr, checksum,
};
use crate::{Error, Result};
use hugepages::mbuf::Mbuf;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;

/// Bursts received per [`Stack::poll`], at most.
const RX_BURSTS_PER_POLL: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FlowKey {
    local_port: u16,
    remote: Ipv4Addr,
    remote_port: u16,
}

#[derive(Debug)]
struct Conn {
    key: FlowKey,
    generation: u32,
    tcb: Tcb,
    /// The listener that accepted it (none: an outbound connection).
    listener: Option<ListenerId>,
    /// The next hop's MAC, once known.
    next_hop: Option<EthernetAddress>,
    /// Accepted or Connected was delivered.
    announced: bool,
    /// Closed was delivered: the id is no longer the application's.
    reported: bool,
    /// On the dirty list.
    queued: bool,
    /// The deadline its entry in the timer wheel was scheduled for (the
    /// earliest, when the deadline has since moved later: that entry
    /// fires early and schedules the rest).
    timer: Option<Instant>,
}

#[derive(Debug)]
struct Listener {
    port: u16,
    /// Connections in SYN-RECEIVED.
    pending: usize,
}

/// A user-space TCP/IP stack over one port queue (see the
/// [module docs](self)).
pub struct Stack<P: Port> {
    // Before `io`, as fields drop in order: the mbufs they hold go back
    // before the port (and the pool it owns) goes.
    rx: MbufBatch,
    /// Frames built for a next hop whose MAC is being asked for.
    arp_pending: Vec<(Ipv4Addr, Mbuf)>,
    udps: Vec<Option<UdpSock>>,
    /// Connections; a receive buffer may hold the rx mbuf it reads in
    /// place.
    conns: Slab<Conn>,
    io: Io<P>,
    cfg: StackConfig,
    params: Params,
    /// Connections whose receive buffer took an rx mbuf this pass, settled
    /// at the start of the next.
    lent: Vec<(u32, u32)>,
    flows: HashMap<FlowKey, u32>,
    listeners: Vec<Option<Listener>>,
    by_port: HashMap<u16, u32>,
    events: VecDeque<Event>,
    timers: wheel::Wheel<(u32, u32, Instant)>,
    /// What the wheel handed out this pass (kept to reuse its allocation).
    fired: Vec<(u32, u32, Instant)>,
    dirty: Vec<(u32, u32)>,
    segs: Vec<SegOut>,
    neighbours: HashMap<Ipv4Addr, Neighbour>,
    /// Outbound connections waiting for their next hop's MAC.
    arp_waiting: Vec<(Ipv4Addr, u32, u32)>,
    udp_by_port: HashMap<u16, u32>,
    /// Sockets that received in this pass.
    udp_fresh: Vec<u32>,
    /// The IP MTU.
    mtu: usize,
    isn_key: RandomState,
    epoch: Instant,
    /// Rate limit of the ICMP errors we send.
    icmp_budget: icmp::IcmpBudget,
    /// IPv4 datagrams waiting for fragments.
    frags: frag::Reassembly,
    /// Fragments being built (kept to reuse its allocation).
    fragments: Vec<Mbuf>,
    next_port: u16,
    now: Instant,
    ended: TcpCounters,
}

/// A received frame kept past its handling, for the payload in it.
enum Kept {
    /// A datagram for a UDP socket's queue.
    Udp(Delivery),
    /// A segment's payload a connection reads in place, from `at` in the
    /// frame.
    Tcp {
        index: u32,
        generation: u32,
        at: usize,
    },
}

impl<P: Port> std::fmt::Debug for Stack<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("address", &self.cfg.address)
            .field("mac", &self.io.mac)
            .field("connections", &self.conns.len)
            .field("stats", &self.io.stats)
            .finish_non_exhaustive()
    }
}

impl<P: Port> Stack<P> {
    /// A stack on `port` (an L2 port: it must have a MAC address, or the
    /// configuration must give one).
    ///
    /// # Errors
    /// [`Error::Config`] for a configuration [`StackConfig::validate`]
    /// refuses, or a port with no MAC and none configured.
    pub fn new(port: P, cfg: StackConfig) -> Result<Self> {
        cfg.validate()?;
        let caps = port.capabilities();
        if caps.layer != crate::net::Layer::L2 {
            return Err(Error::Config(format!(
                "stack: the {} backend's ports carry datagrams, not frames; the stack needs an L2 port",
                caps.backend
            )));
        }
        let mac = match (cfg.mac, caps.mac) {
            (Some(m), _) => m,
            (None, Some(m)) => EthernetAddress(m),
            (None, None) => {
                return Err(Error::Config(format!(
                    "stack: the {} port has no MAC address; set StackConfig::mac",
                    caps.backend
                )));
            }
        };
        let mtu = cfg.mtu.unwrap_or(caps.mtu.min(1500)).clamp(576, 9000);
        let params = Params {
            mss: u16::try_from(mtu - 40).unwrap_or(u16::MAX),
            rx_buffer: cfg.rx_buffer,
            tx_buffer: cfg.tx_buffer,
            time_wait: cfg.time_wait,
            fin_timeout: cfg.fin_timeout,
            connect_timeout: cfg.connect_timeout,
            close_timeout: cfg.close_timeout,
            delayed_ack: cfg.delayed_ack,
            rto_min: cfg.rto_min,
            rto_max: cfg.rto_max,
            rto_initial: cfg.rto_initial,
            syn_retries: cfg.syn_retries,
            retries: cfg.retries,
            keepalive: cfg.keepalive,
            sack: cfg.sack,
            idle_timeout: cfg.idle_timeout,
        };
        let mut neighbours = HashMap::new();
        for &(ip, m) in &cfg.neighbours {
            neighbours.insert(
                ip,
                Neighbour {
                    mac: Some(m),
                    asked: None,
                    tries: 0,
                },
            );
        }
        let (tx_offload, rx_offload) = (caps.tx_checksum, caps.rx_checksum);
        let now = Instant::now();
        let isn_key = RandomState::new();
        let frags = frag::Reassembly::new(cfg.reassembly);
        let next_port = cfg.ephemeral_ports.0
            + (isn_key.hash_one(now) % u64::from(cfg.ephemeral_ports.1 - cfg.ephemeral_ports.0 + 1))
                as u16;
        Ok(Stack {
            io: Io {
                port,
                mac,
                addr: cfg.address.addr,
                tx: MbufBatch::new(),
                spare: MbufBatch::new(),
                ident: 0,
                stats: StackStats::default(),
                tx_offload,
                rx_offload,
                rx_ip: ChecksumMode::Software,
                rx_l4: ChecksumMode::Software,
            },
            cfg,
            params,
            conns: Slab::new(),
            flows: HashMap::new(),
            listeners: Vec::new(),
            by_port: HashMap::new(),
            events: VecDeque::new(),
            timers: wheel::Wheel::new(now),
            fired: Vec::new(),
            lent: Vec::new(),
            dirty: Vec::new(),
            segs: Vec::new(),
            neighbours,
            arp_waiting: Vec::new(),
            arp_pending: Vec::new(),
            udps: Vec::new(),
            udp_by_port: HashMap::new(),
            udp_fresh: Vec::new(),
            mtu,
            isn_key,
            epoch: now,
            icmp_budget: icmp::IcmpBudget::new(now),
            frags,
            fragments: Vec::new(),
            next_port,
            rx: MbufBatch::new(),
            now,
            ended: TcpCounters::default(),
        })
    }

    /// The port under the stack.
    pub fn port(&self) -> &P {
        &self.io.port
    }

    /// Our MAC address.
    pub fn mac(&self) -> EthernetAddress {
        self.io.mac
    }

    /// The stack's counters.
    pub fn stats(&self) -> StackStats {
        let mut s = self.io.stats;
        s.connections = self.conns.len as u64;
        s.tcp = self.ended;
        s
    }

    /// Listens on `port` of our address.
    ///
    /// # Errors
    /// [`Error::Config`] if the port is 0 or already has a listener.
    pub fn listen(&mut self, port: u16) -> Result<ListenerId> {
        if port == 0 || self.by_port.contains_key(&port) {
            return Err(Error::Config(format!(
                "stack: port {port} is 0 or already listened on"
            )));
        }
        let id = self.listeners.len() as u32;
        self.listeners.push(Some(Listener { port, pending: 0 }));
        self.by_port.insert(port, id);
        Ok(ListenerId(id))
    }

    /// Stops listening; connections it accepted stay open.
    ///
    /// # Errors
    /// [`Error::NotOpen`] for a listener that is not open.
    pub fn unlisten(&mut self, l: ListenerId) -> Result<()> {
        let listener = self
            .listeners
            .get_mut(l.0 as usize)
            .and_then(Option::take)
            .ok_or_else(|| Error::NotOpen(l.to_string()))?;
        self.by_port.remove(&listener.port);
        Ok(())
    }

    /// The address a listener listens on.
    ///
    /// # Errors
    /// [`Error::NotOpen`] for a listener that is not open.
    pub fn listener_addr(&self, l: ListenerId) -> Result<SocketAddrV4> {
        match self.listeners.get(l.0 as usize) {
            Some(Some(listener)) => Ok(SocketAddrV4::new(self.io.addr, listener.port)),
            _ => Err(Error::NotOpen(l.to_string())),
        }
    }

    /// Our address.
    pub fn address(&self) -> Ipv4Addr {
        self.io.addr
    }

    /// Opens a connection to `peer`; [`Event::Connected`] follows, or
    /// [`Event::Closed`] with [`CloseReason::ConnectFailed`].
    ///
    /// # Errors
    /// [`Error::Config`] when no route leads to `peer`, the connection
    /// table is full, or every ephemeral port to `peer` is taken.
    ///
    /// On a port of several queues whose spreading a program can compute
    /// ([`Capabilities::steering`](crate::net::Capabilities::steering)),
    /// the source port is one whose replies arrive on this stack's queue.
    pub fn connect(&mut self, peer: SocketAddrV4) -> Result<ConnId> {
        let hop = self.next_hop(*peer.ip()).ok_or_else(|| {
            Error::Config(format!(
                "stack: no route to {peer}: not on {}/{} and no gateway",
                self.cfg.address.addr, self.cfg.address.prefix_len
            ))
        })?;
        if self.conns.len >= self.cfg.max_connections {
            return Err(Error::Config(
                "stack: the connection table is full".to_string(),
            ));
        }
        let (lo, hi) = self.cfg.ephemeral_ports;
        let span = u32::from(hi - lo) + 1;
        // With more than one queue, the replies must come back to ours:
        // take only ports that the port's steering maps here (about one
        // in `queues`), as Seastar and F-Stack do.
        let (_, QueueId(queue)) = self.io.port.id();
        let steering = self
            .io
            .port
            .capabilities()
            .steering
            .as_ref()
            .filter(|s| s.queues() > 1);
        let mut key = None;
        for _ in 0..span {
            let p = self.next_port;
            self.next_port = if p >= hi { lo } else { p + 1 };
            let k = FlowKey {
                local_port: p,
                remote: *peer.ip(),
                remote_port: peer.port(),
            };
            let home = steering
                .is_none_or(|s| s.queue_v4(*peer.ip(), self.io.addr, peer.port(), p) == queue);
            if home && !self.flows.contains_key(&k) && !self.by_port.contains_key(&p) {
                key = Some(k);
                break;
            }
        }
        let key = key.ok_or_else(|| match steering {
            None => Error::Config(format!("stack: every ephemeral port to {peer} is in use")),
            Some(_) => Error::Config(format!(
                "stack: every ephemeral port to {peer} whose replies reach queue {queue} is in use"
            )),
        })?;
        let now = Instant::now();
        let iss = self.isn(&key, now);
        let tcb = Tcb::connect(self.params, iss, now);
        let mac = self.resolve(hop, now);
        let (index, generation) = self.conns.insert(|generation| Conn {
            key,
            generation,
            tcb,
            listener: None,
            next_hop: mac,
            announced: false,
            reported: false,
            queued: false,
            timer: None,
        });
        if mac.is_none() {
            self.arp_waiting.push((hop, index, generation));
        }
        self.flows.insert(key, index);
        self.mark(index, generation);
        Ok(ConnId { index, generation })
    }

    /// The next event, if any.
    pub fn next_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// A connection the application still holds: not reported closed,
    /// and not closed by the application.
    fn conn(&self, c: ConnId) -> Result<&Conn> {
        match self.conns.get(c.index, c.generation) {
            Some(conn) if !conn.reported && !conn.tcb.app_closed => Ok(conn),
            _ => Err(Error::NotOpen(c.to_string())),
        }
    }

    fn conn_mut(&mut self, c: ConnId) -> Result<&mut Conn> {
        match self.conns.get_mut(c.index, c.generation) {
            Some(conn) if !conn.reported && !conn.tcb.app_closed => Ok(conn),
            _ => Err(Error::NotOpen(c.to_string())),
        }
    }

    /// Every byte received in order and not consumed, as one slice (of
    /// the rx mbuf that carried it, where it is read in place).
    ///
    /// # Errors
    /// [`Error::NotOpen`] for a connection that is closed.
    pub fn peek(&self, c: ConnId) -> Result<&[u8]> {
        Ok(self.conn(c)?.tcb.peek())
    }

    /// Drops the first `n` bytes received; the window reopens.
    ///
    /// # Errors
    /// [`Error::NotOpen`] for a connection that is closed.
    pub fn consume(&mut self, c: ConnId, n: usize) -> Result<()> {
        self.conn_mut(c)?.tcb.consume(n);
        self.mark(c.index, c.generation);
        Ok(())
    }

    /// Copies as much of `data` as the send buffer has room for; returns
    /// how much. The bytes leave at the next [`Stack::poll`] or
    /// [`Stack::flush`], as far as the windows allow.
    ///
    /// # Errors
    /// [`Error::NotOpen`] for a connection that is closed.
    pub fn write(&mut self, c: ConnId, data: &[u8]) -> Result<usize> {
        let conn = self.conn_mut(c)?;
        if conn.tcb.is_shut() {
            return Err(Error::Config(format!("{c}: write after shutdown")));
        }
        let n = conn.tcb.write(data);
        self.io.stats.tx_bytes += n as u64;
        self.mark(c.index, c.generation);
        Ok(n)
    }

    /// Room in the send buffer: a [`Stack::write`] of at most this many
    /// bytes takes them all.
    ///
    /// # Errors
    /// [`Error::NotOpen`] for a connection that is closed.
    pub fn send_room(&self, c: ConnId) -> Result<usize> {
        Ok(self.conn(c)?.tcb.send_room())
    }

    /// Whether the peer has sent FIN.
    ///
    /// # Errors
    /// [`Error::NotOpen`] for a connection that is closed.
    pub fn peer_closed(&self, c: ConnId) -> Result<bool> {
        Ok(self.conn(c)?.tcb.peer_closed())
    }

    /// Sends FIN after the buffered bytes; reading goes on.
    ///
    /// # Errors
    /// [`Error::NotOpen`] for a connection that is closed.
    pub fn shutdown(&mut self, c: ConnId) -> Result<()> {
        self.conn_mut(c)?.tcb.shutdown();
        self.mark(c.index, c.generation);
        Ok(())
    }

    /// Closes the connection: FIN after the buffered bytes, and
    /// [`Event::Closed`] once they are acknowledged and the peer has
    /// closed too (a reset instead if received bytes were left unread).
    ///
    /// # Errors
    /// [`Error::NotOpen`] for a connection that is closed.
    pub fn close(&mut self, c: ConnId) -> Result<()> {
        let now = self.now;
        self.conn_mut(c)?.tcb.close(now);
        self.mark(c.index, c.generation);
        Ok(())
    }

    /// Resets the connection now.
    ///
    /// # Errors
    /// [`Error::NotOpen`] for a connection that is closed.
    pub fn abort(&mut self, c: ConnId) -> Result<()> {
        let conn = self.conn_mut(c)?;
        conn.tcb.app_closed = true;
        conn.tcb.abort(CloseReason::Aborted);
        self.mark(c.index, c.generation);
        Ok(())
    }

    /// A connection's addresses, state and counters.
    ///
    /// # Errors
    /// [`Error::NotOpen`] for a connection that is closed.
    pub fn conn_stats(&self, c: ConnId) -> Result<StackConnStats> {
        let conn = self.conn(c)?;
        Ok(StackConnStats {
            local: SocketAddrV4::new(self.io.addr, conn.key.local_port),
            peer: SocketAddrV4::new(conn.key.remote, conn.key.remote_port),
            state: conn.tcb.state,
            rx_buffered: conn.tcb.rx_buffered(),
            tx_buffered: conn.tcb.tx_buffered(),
            cwnd: conn.tcb.cwnd().0,
            srtt_us: conn.tcb.srtt().map_or(0, |d| d.as_micros() as u64),
            counters: conn.tcb.counters,
        })
    }

    /// Receives and handles what arrived, runs the timers that are due,
    /// and sends what the connections have to send. Returns how many
    /// events it queued.
    pub fn poll(&mut self) -> usize {
        let before = self.events.len();
        self.now = Instant::now();
        self.io.stats.passes += 1;
        // Bytes lent last pass and not consumed move into their buffers,
        // so no rx mbuf is held across more than one pass.
        for (index, generation) in self.lent.drain(..) {
            if let Some(conn) = self.conns.get_mut(index, generation) {
                conn.tcb.settle();
            }
        }
        for _ in 0..RX_BURSTS_PER_POLL {
            if self.io.port.rx_burst(&mut self.rx) == 0 {
                break;
            }
            let mut batch = std::mem::take(&mut self.rx);
            for m in batch.drain() {
                self.io.stats.rx_frames += 1;
                if !self.io.rx_checks(m.ol_flags()) {
                    continue;
                }
                match self.frame(m.data()) {
                    Some(Kept::Udp(d)) => self.deliver(m, d),
                    Some(Kept::Tcp {
                        index,
                        generation,
                        at,
                    }) => {
                        if let Some(conn) = self.conns.get_mut(index, generation) {
                            conn.tcb.attach(m, at);
                            self.lent.push((index, generation));
                        }
                    }
                    None => drop(m),
                }
            }
            self.rx = batch;
        }
        self.udp_events();
        if self.frags.pending() > 0 {
            let mut gone = Vec::new();
            self.frags.expire(self.now, &mut self.io.stats, &mut gone);
            for e in gone {
                self.time_exceeded(&e);
            }
        }
        if !self.arp_waiting.is_empty() || !self.arp_pending.is_empty() {
            self.arp_retry();
        }
        let mut fired = std::mem::take(&mut self.fired);
        self.timers.advance(self.now, &mut fired);
        for (index, generation, at) in fired.drain(..) {
            // An entry its connection has since replaced is dropped.
            if let Some(conn) = self.conns.get_mut(index, generation)
                && conn.timer == Some(at)
            {
                conn.timer = None;
                match conn.tcb.deadline() {
                    Some(d) if d <= self.now => {
                        conn.tcb.on_timer(self.now);
                        self.mark(index, generation);
                    }
                    // The deadline moved later since: schedule the rest.
                    Some(d) => {
                        conn.timer = Some(d);
                        self.timers.insert(d, (index, generation, d));
                    }
                    None => {}
                }
            }
        }
        self.fired = fired;
        self.flush();
        self.events.len().saturating_sub(before)
    }

    /// Sends what the connections touched since the last pass have to
    /// send, and hands the port every frame built.
    pub fn flush(&mut self) {
        while let Some((index, generation)) = self.dirty.pop() {
            self.run(index, generation);
        }
        self.io.transmit();
    }

    fn mark(&mut self, index: u32, generation: u32) {
        if let Some(conn) = self.conns.get_mut(index, generation)
            && !conn.queued
        {
            conn.queued = true;
            self.dirty.push((index, generation));
        }
    }

    /// Sends a connection's segments, turns its notes into events,
    /// reschedules its timer, and frees it once closed.
    fn run(&mut self, index: u32, generation: u32) {
        let now = self.now;
        let Some(conn) = self.conns.get_mut(index, generation) else {
            return;
        };
        conn.queued = false;
        // An outbound connection whose next hop has not answered ARP
        // sends nothing yet (`arp_retry` asks again, and fails it).
        if let Some(mac) = conn.next_hop {
            self.segs.clear();
            conn.tcb.output(now, &mut self.segs);
            for seg in &self.segs {
                self.io.send_segment(mac, &conn.key, seg, &conn.tcb);
            }
        }
        let id = ConnId { index, generation };
        let notes = std::mem::take(&mut conn.tcb.notes);
        if notes.established && !conn.announced {
            conn.announced = true;
            match conn.listener {
                Some(listener) => {
                    self.io.stats.accepted += 1;
                    self.events
                        .push_back(Event::Accepted { listener, conn: id });
                    if let Some(Some(l)) = self.listeners.get_mut(listener.0 as usize) {
                        l.pending = l.pending.saturating_sub(1);
                    }
                }
                None => {
                    self.io.stats.connected += 1;
                    self.events.push_back(Event::Connected(id));
                }
            }
        }
        self.io.stats.rx_bytes += notes.received as u64;
        let visible = conn.announced || conn.listener.is_none();
        if visible && !conn.reported && !conn.tcb.app_closed {
            if notes.readable && conn.announced {
                self.events.push_back(Event::Readable(id));
            }
            if notes.peer_closed && conn.announced {
                self.events.push_back(Event::PeerClosed(id));
            }
            if notes.writable && conn.announced {
                self.events.push_back(Event::Writable(id));
            }
        }
        let state = conn.tcb.state;
        let done = state == TcpState::Closed;
        let reason = match notes.closed {
            Some(r) => Some(r),
            None if conn.tcb.app_closed && matches!(state, TcpState::TimeWait) => {
                Some(CloseReason::Local)
            }
            None => None,
        };
        if let Some(reason) = reason
            && !conn.reported
        {
            match reason {
                CloseReason::Reset => self.io.stats.reset += 1,
                CloseReason::TimedOut | CloseReason::ConnectFailed(libc::ETIMEDOUT) => {
                    self.io.stats.timed_out += 1;
                }
                _ => {}
            }
            if visible {
                conn.reported = true;
                self.io.stats.closed += 1;
                self.events.push_back(Event::Closed(id, reason));
            } else if let Some(l) = conn.listener
                && let Some(Some(l)) = self.listeners.get_mut(l.0 as usize)
            {
                // Died in SYN-RECEIVED: the application never saw it.
                l.pending = l.pending.saturating_sub(1);
            }
        }
        if done {
            let key = conn.key;
            let counters = conn.tcb.counters;
            self.conns.remove(index);
            self.flows.remove(&key);
            add_counters(&mut self.ended, &counters);
            return;
        }
        // A deadline earlier than the one scheduled gets an entry of its
        // own; a later one waits for the scheduled entry to fire, so an
        // RTO pushed back by every ACK costs nothing here.
        if let Some(at) = conn.tcb.deadline()
            && conn.timer.is_none_or(|t| at < t)
        {
            conn.timer = Some(at);
            self.timers.insert(at, (index, generation, at));
        }
    }

    /// RFC 6528: ISN = M + F(4-tuple, secret), M a 4 µs clock.
    fn isn(&self, key: &FlowKey, now: Instant) -> Seq {
        let f = self
            .isn_key
            .hash_one((key.local_port, key.remote, key.remote_port, self.io.addr));
        let m = (now.duration_since(self.epoch).as_micros() / 4) as u32;
        Seq((f as u32).wrapping_add(m))
    }

    /// The neighbour a packet to `dst` goes to.
    fn next_hop(&self, dst: Ipv4Addr) -> Option<Ipv4Addr> {
        if self.cfg.address.contains(dst) {
            Some(dst)
        } else {
            self.cfg.gateway
        }
    }

    /// Handles a received frame; where a UDP socket or a connection keeps
    /// the payload in its mbuf, says where it goes.
    fn frame(&mut self, data: &[u8]) -> Option<Kept> {
        let Ok(frame) = EthernetFrame::new_checked(data) else {
            self.io.stats.rx_malformed += 1;
            return None;
        };
        let dst = frame.dst_addr();
        if dst != self.io.mac && !dst.is_broadcast() {
            self.io.stats.rx_ignored += 1;
            return None;
        }
        let src = frame.src_addr();
        match frame.ethertype() {
            EtherType::ARP => self.arp(frame.payload()),
            EtherType::IPV4 => return self.ipv4(src, frame.payload()),
            _ => self.io.stats.rx_ignored += 1,
        }
        None
    }

    fn ipv4(&mut self, src_mac: EthernetAddress, payload: &[u8]) -> Option<Kept> {
        let Ok(packet) = Ipv4Packet::new_checked(payload) else {
            self.io.stats.rx_malformed += 1;
            return None;
        };
        let repr = match Ipv4Repr::parse(&packet, self.io.rx_ip) {
            Ok(r) => r,
            Err(crate::wire::WireError::BadChecksum(_)) => {
                self.io.stats.rx_bad_checksum += 1;
                return None;
            }
            Err(_) => {
                self.io.stats.rx_malformed += 1;
                return None;
            }
        };
        if repr.dst_addr != self.io.addr {
            self.io.stats.rx_not_ours += 1;
            return None;
        }
        if repr.more_frags || repr.frag_offset != 0 {
            self.io.stats.rx_fragments += 1;
            let header = &payload[..packet.header_len()];
            let (now, stats) = (self.now, &mut self.io.stats);
            if let Some(d) = self
                .frags
                .add(now, src_mac, &repr, header, packet.payload(), stats)
            {
                self.reassembled(src_mac, d);
            }
            return None;
        }
        let body = packet.payload();
        // The transport header's offset in the frame: Ethernet, then the
        // IP header with its options.
        let at = 14 + packet.header_len();
        match repr.protocol {
            IpProtocol::TCP => return self.tcp(src_mac, &repr, body, Some(at)),
            IpProtocol::ICMP => self.icmp(src_mac, &repr, body),
            IpProtocol::UDP => {
                return match self.udp_delivery(&repr, body, at) {
                    Ok(d) => Some(Kept::Udp(d)),
                    Err(udp::Refused::NoSocket) => {
                        let header = &payload[..packet.header_len()];
                        self.port_unreachable(src_mac, &repr, header, body);
                        None
                    }
                    Err(udp::Refused::Dropped) => None,
                };
            }
            _ => self.io.stats.rx_ignored += 1,
        }
        None
    }

    /// Handles a datagram put back together from fragments as one that
    /// came whole; its transport checksum is ours to check (a device
    /// verifies frames, not datagrams).
    fn reassembled(&mut self, src_mac: EthernetAddress, d: frag::Datagram) {
        self.io.rx_l4 = ChecksumMode::Software;
        let body = &d.payload[..];
        match d.ip.protocol {
            IpProtocol::TCP => {
                self.tcp(src_mac, &d.ip, body, None);
            }
            IpProtocol::ICMP => self.icmp(src_mac, &d.ip, body),
            IpProtocol::UDP => match self.udp_delivery(&d.ip, body, 0) {
                Ok(delivery) => self.deliver_reassembled(d.payload, delivery),
                Err(udp::Refused::NoSocket) => {
                    self.port_unreachable(src_mac, &d.ip, &d.header, body);
                }
                Err(udp::Refused::Dropped) => {}
            },
            _ => self.io.stats.rx_ignored += 1,
        }
    }

    /// Sends a whole transport datagram too long for one frame, its
    /// header (checksum included) then its data, in fragments to `mac`, or
    /// parked for `hop` until ARP answers; false if an mbuf ran out.
    fn send_fragments(
        &mut self,
        ip: Ipv4Repr,
        datagram: (&[u8], &[u8]),
        mac: Option<EthernetAddress>,
        hop: Ipv4Addr,
    ) -> bool {
        let mut frames = std::mem::take(&mut self.fragments);
        let built = self.io.build_fragments(ip, datagram, self.mtu, &mut frames);
        for m in frames.drain(..) {
            match mac {
                Some(mac) => self.io.queue_to(m, mac),
                None => self.park(hop, m),
            }
        }
        self.fragments = frames;
        built
    }

    /// Answers an echo request (RFC 792) with the same identifier,
    /// sequence number and data.
    fn icmp(&mut self, src_mac: EthernetAddress, ip: &Ipv4Repr, body: &[u8]) {
        // Echo (type 8, code 0) or destination unreachable (type 3), and a
        // valid checksum over the message.
        let unreachable = body.len() >= 8 && body[0] == 3;
        if body.len() < 8 || !(unreachable || (body[0] == 8 && body[1] == 0)) {
            self.io.stats.rx_ignored += 1;
            return;
        }
        if checksum::data(body) != 0xffff {
            self.io.stats.rx_bad_checksum += 1;
            return;
        }
        if unreachable {
            self.unreachable_received(body);
            return;
        }
        self.io.stats.icmp_echo += 1;
        let mut reply = self.io.ip_to(ip.src_addr, IpProtocol::ICMP, body.len());
        reply.dont_frag = false;
        // The request's header as the reply's (type 0), its checksum
        // summed over the header and the data the reply echoes.
        let mut header = [0u8; 8];
        header.copy_from_slice(&body[..8]);
        header[0] = 0;
        header[2..4].fill(0);
        let data = &body[8..];
        let sum = !checksum::combine(&[checksum::data(&header), checksum::data(data)]);
        header[2..4].copy_from_slice(&sum.to_be_bytes());
        if 20 + body.len() <= self.mtu {
            self.io.send_ip(src_mac, reply, |out| {
                out[..8].copy_from_slice(&header);
                out[8..].copy_from_slice(data);
            });
        } else {
            // A reassembled request: the reply goes back in fragments.
            self.send_fragments(reply, (&header, data), Some(src_mac), ip.src_addr);
        }
    }

    /// Handles a TCP segment; `at`, where `body` starts in the rx frame
    /// that carries it (none for a reassembled datagram), lets the
    /// connection read its payload in place: the frame is kept if it does.
    fn tcp(
        &mut self,
        src_mac: EthernetAddress,
        ip: &Ipv4Repr,
        body: &[u8],
        at: Option<usize>,
    ) -> Option<Kept> {
        let addrs = IpPair::V4 {
            src: ip.src_addr,
            dst: ip.dst_addr,
        };
        let Ok(packet) = TcpPacket::new_checked(body) else {
            self.io.stats.rx_malformed += 1;
            return None;
        };
        let repr = match TcpRepr::parse(&packet, &addrs, self.io.rx_l4) {
            Ok(r) => r,
            Err(crate::wire::WireError::BadChecksum(_)) => {
                self.io.stats.rx_bad_checksum += 1;
                return None;
            }
            Err(_) => {
                self.io.stats.rx_malformed += 1;
                return None;
            }
        };
        self.io.stats.tcp_rx += 1;
        let seg = SegIn {
            seq: Seq(repr.seq_number),
            ack: Seq(repr.ack_number),
            flags: repr.flags,
            window: repr.window_len,
            mss: repr.max_seg_size,
            wscale: repr.window_scale,
            sack_permitted: repr.sack_permitted,
            sack: repr.sack,
            payload: packet.payload(),
            lendable: at.is_some(),
        };
        let key = FlowKey {
            local_port: repr.dst_port,
            remote: ip.src_addr,
            remote_port: repr.src_port,
        };
        let now = self.now;
        if let Some(&index) = self.flows.get(&key)
            && let Some(conn) = self.conns.get_index_mut(index)
            && conn.key == key
        {
            conn.tcb.input(&seg, now);
            let generation = conn.generation;
            let lent = conn.tcb.awaits_frame();
            self.mark(index, generation);
            return match at {
                Some(at) if lent => Some(Kept::Tcp {
                    index,
                    generation,
                    at: at + packet.header_len(),
                }),
                _ => None,
            };
        }
        let flags = repr.flags;
        if let Some(&l) = self.by_port.get(&repr.dst_port)
            && flags.contains(TcpFlags::SYN)
            && !flags.contains(TcpFlags::ACK)
            && !flags.contains(TcpFlags::RST)
        {
            self.syn(l, key, src_mac, &seg);
            return None;
        }
        if flags.contains(TcpFlags::RST) {
            return None;
        }
        // No connection (RFC 9293 section 3.10.7.1), or a listener sent
        // something other than a SYN (section 3.10.7.2): reset.
        self.io.stats.tcp_no_socket += 1;
        let (seq, ack, rst_flags) = if flags.contains(TcpFlags::ACK) {
            (seg.ack, Seq(0), TcpFlags::RST)
        } else {
            let len = seg.payload.len()
                + usize::from(flags.contains(TcpFlags::SYN))
                + usize::from(flags.contains(TcpFlags::FIN));
            (Seq(0), seg.seq.add(len), TcpFlags::RST | TcpFlags::ACK)
        };
        let out = SegOut {
            seq,
            ack,
            flags: rst_flags,
            window: 0,
            mss: None,
            wscale: None,
            sack_permitted: false,
            sack: Default::default(),
            at: 0,
            len: 0,
        };
        self.io.send_bare(src_mac, &key, &out);
        None
    }

    /// A SYN for a listener (RFC 9293 section 3.10.7.2).
    fn syn(&mut self, l: u32, key: FlowKey, src_mac: EthernetAddress, seg: &SegIn<'_>) {
        let full = match self.listeners.get(l as usize) {
            Some(Some(listener)) => listener.pending >= self.cfg.backlog,
            _ => true,
        };
        if full || self.conns.len >= self.cfg.max_connections {
            self.io.stats.syn_dropped += 1;
            return;
        }
        if let Some(Some(listener)) = self.listeners.get_mut(l as usize) {
            listener.pending += 1;
        }
        let iss = self.isn(&key, self.now);
        let tcb = Tcb::accept(self.params, iss, seg, self.now);
        let (index, generation) = self.conns.insert(|generation| Conn {
            key,
            generation,
            tcb,
            listener: Some(ListenerId(l)),
            next_hop: Some(src_mac),
            announced: false,
            reported: false,
            queued: false,
            timer: None,
        });
        self.flows.insert(key, index);
        self.mark(index, generation);
    }
}

fn add_counters(sum: &mut TcpCounters, c: &TcpCounters) {
    sum.rx_bytes += c.rx_bytes;
    sum.tx_bytes += c.tx_bytes;
    sum.timeout_retransmits += c.timeout_retransmits;
    sum.fast_retransmits += c.fast_retransmits;
    sum.path_mtu_drops += c.path_mtu_drops;
    sum.dup_acks += c.dup_acks;
    sum.out_of_order += c.out_of_order;
    sum.out_of_window += c.out_of_window;
    sum.challenge_acks += c.challenge_acks;
    sum.window_probes += c.window_probes;
    sum.keepalive_probes += c.keepalive_probes;
    sum.sack_acks += c.sack_acks;
    sum.sack_retransmits += c.sack_retransmits;
    sum.loss_probes += c.loss_probes;
    sum.rx_in_place += c.rx_in_place;
    sum.rx_in_place_copied += c.rx_in_place_copied;
}
