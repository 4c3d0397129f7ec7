//! The server: one [`Shard`] per lcore, each owning its connections (on
//! its own `SO_REUSEPORT` listener), its part of the keyspace and its
//! rings to every other shard.
//!
//! A key belongs to the shard its hash picks. A command arrives on the
//! shard that accepted the connection; if that shard owns the key it runs
//! at once and its reply is appended to the connection's output, else the
//! command is copied into a message on the ring to the owner, which runs
//! it and sends the encoded reply back on the ring the other way
//! (Seastar's and Dragonfly's model: no lock anywhere, one copy of a
//! command that crosses). A command on keys of several shards (`MGET`,
//! `MSET`, `DEL`, `EXISTS`) is split into one command per shard and the
//! replies are merged; `DBSIZE`, `FLUSHALL` and `INFO` go to every shard.
//! Like Redis Cluster's multi-slot commands, and unlike a single Redis,
//! such a command is atomic on each shard, not across them.
//!
//! Replies leave in request order: a connection keeps a queue of
//! *slots*, one per command answered out of line, and a reply that
//! arrives from a ring fills its slot; the queue's finished head goes
//! out. While nothing is pending, replies go straight to the output.
//!
//! **Backpressure.** A connection stops being read while its output
//! holds more than [`OUT_HIGH`] bytes the transport could not take, or
//! while [`MAX_PENDING`] commands wait on other shards; the transport
//! then stops reading its socket and TCP closes the client's window. A
//! full ring between shards holds messages in the sender's outbox, which
//! that bound keeps finite.

use super::log::Log;
use super::store::{
    Args, Store, StoreStats, arity_ok, is_write, key_layout, log_form, lower_name, wrong_args,
};
use dataplane::lcore::{PollContext, Poller};
use dataplane::partition::reduce;
use dataplane::proto::resp::{Limits, RequestParser, Version, Writer, parse_i64, value_len};
use dataplane::ring::{self, Consumer, Producer, Single};
use dataplane::transport::{ConnId, Event, ListenerId, Transport};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The shard's connections by id: a hash map with a fast hasher (the ids
/// are the transport's slot numbers, not input an attacker picks; SipHash
/// was 0.85% of dp-http's samples under wrk).
type Conns = HashMap<ConnId, Client, foldhash::fast::RandomState>;

/// Output bytes past which a connection is not read.
pub const OUT_HIGH: usize = 256 * 1024;
/// Commands a connection may have waiting on other shards.
pub const MAX_PENDING: usize = 1024;
/// Messages each ring between two shards holds.
const RING: usize = 4096;
/// Keys sampled for expiry per pass.
const EXPIRE_SAMPLE: usize = 20;

/// What the server is told.
#[derive(Debug, Clone)]
pub struct KvConfig {
    /// Where every shard listens.
    pub bind: SocketAddr,
    /// The memory limit over all shards, bytes (0: none).
    pub maxmemory: usize,
    /// The password every connection must give first (`requirepass`).
    pub requirepass: Option<Vec<u8>>,
    /// The transport's settings (engine, buffers).
    pub transport: dataplane::transport::Config,
    /// The protocol's limits.
    pub limits: Limits,
    /// Durable mode: where and how the logs are kept.
    pub durable: Option<DurableConfig>,
    /// The port queues when the shards run on the user-space stack.
    pub stack: Option<Arc<crate::serve::StackPorts>>,
    /// A second listener that speaks TLS: its address and configuration.
    pub tls: Option<(SocketAddr, Arc<dataplane::transport::tls::ServerConfig>)>,
}

/// Where and how the logs are kept.
#[derive(Debug, Clone)]
pub struct DurableConfig {
    /// The directory of the log files.
    pub dir: std::path::PathBuf,
    /// Each log file's size, bytes.
    pub size: u64,
    /// The block backend.
    pub backend: String,
    /// How a group of log writes is made durable.
    pub commit: super::log::Commit,
}

/// A shard's log file: `shard-I-of-N.GEN.log` in the directory.
pub fn log_path(
    dir: &std::path::Path,
    shard: usize,
    n: usize,
    generation: u64,
) -> std::path::PathBuf {
    dir.join(format!("shard-{shard}-of-{n}.{generation}.log"))
}

/// `(shard, shards, generation)` of a log file's name.
pub fn parse_log_name(name: &str) -> Option<(usize, usize, u64)> {
    let rest = name.strip_prefix("shard-")?.strip_suffix(".log")?;
    let (shard, rest) = rest.split_once("-of-")?;
    let (n, generation) = rest.split_once('.')?;
    Some((
        shard.parse().ok()?,
        n.parse().ok()?,
        generation.parse().ok()?,
    ))
}

/// A shard's durable state at its start: the log to append to (the newest
/// generation, replayed), its generation, and the older generations'
/// files, which the first compaction removes.
#[derive(Debug)]
pub struct Durable {
    /// The log.
    pub log: Log,
    /// Its generation.
    pub generation: u64,
    /// Older generations still on disk.
    pub older: Vec<std::path::PathBuf>,
}

/// A compaction in progress: the new generation's snapshot is written
/// from `cursor` down to 0, a few hundred keys a pass, while new writes
/// go to the new generation too; once the snapshot's last record and the
/// old generation are on stable storage, the older files are removed.
#[derive(Debug)]
struct Compaction {
    cursor: usize,
    /// The snapshot's last ticket, once it is all appended.
    last: Option<u64>,
}

/// Keys a compaction writes per pass.
const COMPACT_BURST: usize = 256;

/// The version `HELLO` and `INFO` report: the Redis release whose
/// replies this server reproduces.
pub const REDIS_VERSION: &str = "7.0.15";

/// What a command needs from another shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Command,
    Info,
    DbSize,
    Flush,
}

/// A command crossing to the shard that owns its keys.
#[derive(Debug)]
struct Req {
    from: usize,
    conn: ConnId,
    seq: u64,
    part: u32,
    version: Version,
    kind: Kind,
    buf: Vec<u8>,
    ranges: Vec<Range<usize>>,
}

/// Its encoded reply, going back.
#[derive(Debug)]
struct Rep {
    conn: ConnId,
    seq: u64,
    part: u32,
    bytes: Vec<u8>,
}

/// A shard's ends of the rings to and from every other shard (`None` at
/// its own index).
pub struct Links {
    req_tx: Vec<Option<Producer<Req, Single>>>,
    req_rx: Vec<Consumer<Req, Single>>,
    rep_tx: Vec<Option<Producer<Rep, Single>>>,
    rep_rx: Vec<Consumer<Rep, Single>>,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links")
            .field("peers", &self.req_rx.len())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("id", &self.id)
            .field("connections", &self.conns.len())
            .finish_non_exhaustive()
    }
}

/// The rings between `n` shards: one each way per ordered pair.
///
/// # Errors
///
/// Never in practice (the capacity is a valid power of two).
pub fn mesh(n: usize) -> dataplane::Result<Vec<Links>> {
    let mut links: Vec<Links> = (0..n)
        .map(|_| Links {
            req_tx: (0..n).map(|_| None).collect(),
            req_rx: Vec::new(),
            rep_tx: (0..n).map(|_| None).collect(),
            rep_rx: Vec::new(),
        })
        .collect();
    for from in 0..n {
        for to in 0..n {
            if from == to {
                continue;
            }
            let cap = |e: ring::CapacityError| dataplane::Error::Config(e.to_string());
            let (tx, rx) = ring::spsc::<Req>(RING).map_err(cap)?;
            links[from].req_tx[to] = Some(tx);
            links[to].req_rx.push(rx);
            let (tx, rx) = ring::spsc::<Rep>(RING).map_err(cap)?;
            links[from].rep_tx[to] = Some(tx);
            links[to].rep_rx.push(rx);
        }
    }
    Ok(links)
}

/// How the parts of a split command become one reply.
#[derive(Debug)]
enum Combine {
    /// The one part as it is.
    Single,
    /// The sum of the parts' integers (`DEL`, `EXISTS`, `DBSIZE`).
    Sum,
    /// `+OK` when every part is (`MSET`, `FLUSHALL`).
    AllOk,
    /// `MGET`: for each key in order, its part and its place there.
    Mget(Vec<(u32, u32)>),
    /// `INFO`: the server section, then each shard's text.
    Info(Vec<u8>),
}

#[derive(Debug)]
struct Slot {
    parts: Vec<Option<Vec<u8>>>,
    missing: usize,
    combine: Combine,
    /// The log ticket its writes on this shard need on stable storage
    /// before the reply may go (0: none).
    ticket: u64,
}

/// Redis's reply to a wrong user or password.
const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

/// A connection's state on its shard.
#[derive(Debug)]
struct Client {
    id: u64,
    version: Version,
    name: Option<Vec<u8>>,
    /// Replies the transport has not taken yet.
    out: Vec<u8>,
    /// Commands answered out of line, oldest first; `base` is the first's
    /// sequence number.
    slots: VecDeque<Slot>,
    base: u64,
    /// Close once the output is sent (`QUIT`, a protocol error, the
    /// peer's FIN).
    closing: bool,
    /// Reading stopped for backpressure with bytes still received.
    stalled: bool,
    /// Authenticated (always, without `requirepass`).
    authed: bool,
}

/// A shard's counters, read by the stats line while the lcore runs.
#[derive(Debug, Default)]
pub struct ShardCounters {
    /// Commands run on this shard (its own and other shards').
    pub commands: AtomicU64,
    /// Commands this shard sent to another.
    pub forwarded: AtomicU64,
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections open.
    pub open: AtomicU64,
    /// Requests refused as malformed (the connection closed).
    pub protocol_errors: AtomicU64,
    /// Set once the shard listens.
    pub ready: std::sync::atomic::AtomicBool,
    /// The keyspace's counters, refreshed once per 1,024 passes.
    pub store: Mutex<StoreStats>,
    /// The transport's counters, published as often.
    pub transport: Arc<dataplane::transport::PublishedStats>,
}

/// One lcore's part of the server: the [`Poller`] of that lcore.
pub struct Shard {
    id: usize,
    config: Arc<KvConfig>,
    t: Option<Transport>,
    listener: Option<ListenerId>,
    parser: RequestParser,
    conns: Conns,
    st: State,
}

/// Everything but the transport, the parser and the connections, so that
/// a command borrowed from a connection's received bytes can run while
/// they are borrowed.
struct State {
    id: usize,
    n: usize,
    store: Store,
    links: Links,
    req_out: Vec<VecDeque<Req>>,
    rep_out: Vec<VecDeque<Rep>>,
    now: u64,
    next_client: u64,
    counters: Arc<ShardCounters>,
    config: Arc<KvConfig>,
    dirty: Vec<ConnId>,
    passes: u64,
    /// The durable log (`--durable`).
    log: Option<Log>,
    /// The previous generation, while a compaction finishes with it.
    old_log: Option<Log>,
    generation: u64,
    older: Vec<std::path::PathBuf>,
    compaction: Option<Compaction>,
    /// Connections with a reply waiting on the log.
    waiting: Vec<ConnId>,
    /// Replies to other shards waiting on the log: (ticket, shard, reply).
    held: VecDeque<(u64, usize, Rep)>,
}

/// The shard of `n` that owns `key`.
pub fn owner_of(key: &[u8], n: usize) -> usize {
    if n <= 1 {
        0
    } else {
        let h = u64::from(crc32c::crc32c(key));
        reduce(h.wrapping_mul(0x9e37_79b9_7f4a_7c15), n)
    }
}

/// Milliseconds since the Unix epoch, from the coarse clock (a read of
/// the vDSO's page, no timer read: the lcore asks once per pass; its
/// resolution, a few milliseconds, is finer than Redis's key expiry
/// promises).
pub fn now_ms() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME_COARSE) {
        Ok(t) => t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000,
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    }
}

impl Shard {
    /// Shard `id` of `n`, with its links from [`mesh`]. The transport is
    /// made and the listener bound on the shard's lcore, at its first
    /// pass (so that io_uring's ring belongs to that thread and the
    /// listener learns its CPU).
    pub fn new(
        id: usize,
        n: usize,
        config: Arc<KvConfig>,
        links: Links,
        store: Store,
        durable: Option<Durable>,
    ) -> (Self, Arc<ShardCounters>) {
        let (log, generation, older) = match durable {
            Some(d) => (Some(d.log), d.generation, d.older),
            None => (None, 0, Vec::new()),
        };
        let counters = Arc::new(ShardCounters::default());
        let shard = Self {
            id,
            config: config.clone(),
            t: None,
            listener: None,
            parser: RequestParser::new(config.limits),
            conns: Conns::default(),
            st: State {
                id,
                n,
                store,
                log,
                old_log: None,
                generation,
                older,
                compaction: None,
                waiting: Vec::new(),
                held: VecDeque::new(),
                links,
                req_out: (0..n).map(|_| VecDeque::new()).collect(),
                rep_out: (0..n).map(|_| VecDeque::new()).collect(),
                now: now_ms(),
                next_client: 0,
                counters: counters.clone(),
                config,
                dirty: Vec::new(),
                passes: 0,
            },
        };
        (shard, counters)
    }

    /// Makes the transport and binds the listener; on this lcore.
    ///
    /// # Errors
    ///
    /// When no engine runs or the address cannot be bound.
    pub fn open(&mut self) -> dataplane::Result<SocketAddr> {
        let mut t = crate::serve::shard_transport(
            self.config.stack.as_deref(),
            self.id,
            &self.config.transport,
        )?;
        let l = t.listen(self.config.bind)?;
        let addr = t.listener_addr(l)?;
        if let Some((tls_addr, tls)) = &self.config.tls {
            let tl = t.listen_tls(*tls_addr, tls.clone())?;
            tracing::info!(shard = self.id, addr = %t.listener_addr(tl)?, "dp-kv: listening with TLS");
        }
        tracing::info!(shard = self.id, engine = %t.engine(), %addr, "dp-kv: listening");
        self.t = Some(t);
        self.listener = Some(l);
        Ok(addr)
    }

    /// The transport's engine, once open.
    pub fn engine(&self) -> Option<dataplane::transport::EngineKind> {
        self.t.as_ref().map(Transport::engine)
    }

    fn pass(&mut self) -> dataplane::Result<usize> {
        if self.t.is_none() {
            self.open()?;
            // Release: the main thread reads it to say the server listens.
            self.st.counters.ready.store(true, Ordering::Release);
        }
        let mut work = 0;
        self.st.now = now_ms();
        self.st.passes += 1;
        let Shard {
            t,
            parser,
            conns,
            st,
            ..
        } = self;
        let Some(t) = t.as_mut() else {
            return Ok(0);
        };
        work += t.poll()?;
        while let Some(ev) = t.next_event() {
            match ev {
                Event::Accepted { conn, .. } => {
                    st.next_client += 1;
                    let id = st.next_client * st.n as u64 + st.id as u64;
                    conns.insert(
                        conn,
                        Client {
                            id,
                            version: Version::Resp2,
                            name: None,
                            out: Vec::new(),
                            slots: VecDeque::new(),
                            base: 0,
                            closing: false,
                            stalled: false,
                            authed: st.config.requirepass.is_none(),
                        },
                    );
                    st.counters.accepted.fetch_add(1, Ordering::Relaxed);
                    st.counters.open.fetch_add(1, Ordering::Relaxed);
                }
                Event::Readable(c) | Event::Writable(c) => serve(t, parser, conns, st, c),
                Event::PeerClosed(c) => {
                    // Answer the whole commands before the FIN, then close
                    // once the answers are out.
                    serve(t, parser, conns, st, c);
                    if let Some(cl) = conns.get_mut(&c) {
                        cl.closing = true;
                    }
                    settle(t, conns, c);
                }
                Event::Closed(c, _) => {
                    if conns.remove(&c).is_some() {
                        st.counters.open.fetch_sub(1, Ordering::Relaxed);
                    }
                }
                Event::Connected(_) | Event::Datagrams(_) => {}
            }
        }
        work += st.run_remote();
        work += st.take_replies(conns);
        work += st.commit(t, conns);
        while let Some(c) = st.dirty.pop() {
            serve(t, parser, conns, st, c);
        }
        work += st.flush_outboxes();
        work += st.store.expire_some(st.now, EXPIRE_SAMPLE);
        if st.passes.is_multiple_of(1024) {
            st.counters.transport.publish(&t.stats());
            if let Ok(mut s) = st.counters.store.lock() {
                *s = st.store.stats();
            }
        }
        Ok(work)
    }
}

impl Poller for Shard {
    fn poll(&mut self, ctx: &PollContext) -> usize {
        if ctx.stopping() {
            // Draining: no new requests; finish what other shards sent
            // and hand back what is held for them.
            let Shard { conns, st, .. } = self;
            if let Ok(mut s) = st.counters.store.lock() {
                *s = st.store.stats();
            }
            let mut log_busy = 0;
            for l in st.log.iter_mut().chain(st.old_log.iter_mut()) {
                l.pass();
                log_busy += usize::from(l.busy());
            }
            return st.run_remote()
                + st.take_replies(conns)
                + st.flush_outboxes()
                + log_busy
                + self.held();
        }
        match self.pass() {
            Ok(n) => n + self.held(),
            Err(e) => {
                // The listener or the engine failed: the shard cannot
                // serve; say so once a second rather than spin silently.
                if self.st.passes % 100_000 == 1 {
                    tracing::error!(shard = self.id, error = %e, "dp-kv: shard pass failed");
                }
                0
            }
        }
    }
}

/// Sends what the connection's output holds, and closes it when it is
/// closing and has nothing left to say. A connection the transport has
/// already closed is left to its `Closed` event.
fn settle(t: &mut Transport, conns: &mut Conns, c: ConnId) {
    if let Err(e) = try_settle(t, conns, c) {
        tracing::debug!(conn = %c, error = %e, "dp-kv: connection gone");
    }
}

fn try_settle(t: &mut Transport, conns: &mut Conns, c: ConnId) -> dataplane::Result<()> {
    let Some(cl) = conns.get_mut(&c) else {
        return Ok(());
    };
    if !cl.out.is_empty() {
        // The output itself, when the send buffer is empty: no copy.
        t.write_from(c, &mut cl.out)?;
    }
    if cl.closing && cl.out.is_empty() && cl.slots.is_empty() {
        t.close(c)?;
    }
    Ok(())
}

/// Runs the whole commands connection `c` has received, as far as
/// backpressure allows.
fn serve(
    t: &mut Transport,
    parser: &mut RequestParser,
    conns: &mut Conns,
    st: &mut State,
    c: ConnId,
) {
    // Parse, send, and go on while sending made room for more.
    loop {
        if let Err(e) = serve_once(t, parser, conns, st, c) {
            tracing::debug!(conn = %c, error = %e, "dp-kv: connection gone");
            return;
        }
        settle(t, conns, c);
        let Some(cl) = conns.get_mut(&c) else {
            return;
        };
        if !cl.stalled || cl.out.len() >= OUT_HIGH || cl.slots.len() >= MAX_PENDING {
            return;
        }
    }
}

fn serve_once(
    t: &mut Transport,
    parser: &mut RequestParser,
    conns: &mut Conns,
    st: &mut State,
    c: ConnId,
) -> dataplane::Result<()> {
    settle(t, conns, c);
    let Some(cl) = conns.get_mut(&c) else {
        return Ok(());
    };
    let buf = t.peek(c)?;
    let mut used = 0;
    cl.stalled = false;
    while used < buf.len() && !cl.closing {
        if cl.out.len() >= OUT_HIGH || cl.slots.len() >= MAX_PENDING {
            cl.stalled = true;
            break;
        }
        let rest = &buf[used..];
        match parser.parse(rest) {
            Ok(Some(n)) => {
                used += n;
                if !parser.args().is_empty() {
                    st.dispatch(cl, c, &Args::new(rest, parser.args()));
                }
            }
            Ok(None) => break,
            Err(e) => {
                st.counters.protocol_errors.fetch_add(1, Ordering::Relaxed);
                st.reply_now(cl, |w| w.error(&e.to_string()));
                cl.closing = true;
                used = buf.len();
            }
        }
    }
    t.consume(c, used)
}

impl State {
    /// The shard that owns `key`: a fixed hash (CRC32C, as Redis
    /// Cluster's slots use a CRC), so that a restarted server finds each
    /// key in the shard whose log holds it.
    fn owner(&self, key: &[u8]) -> usize {
        owner_of(key, self.n)
    }

    /// Writes a reply made here: straight to the output when nothing is
    /// pending, else into a finished slot behind the pending ones.
    fn reply_now(&mut self, cl: &mut Client, f: impl FnOnce(&mut Writer<'_>)) {
        if cl.slots.is_empty() {
            f(&mut Writer::new(&mut cl.out, cl.version));
        } else {
            let mut b = Vec::new();
            f(&mut Writer::new(&mut b, cl.version));
            cl.slots.push_back(Slot {
                parts: vec![Some(b)],
                missing: 0,
                combine: Combine::Single,
                ticket: 0,
            });
        }
    }

    /// Opens a slot for a command in `parts` pieces; its sequence number.
    fn open_slot(cl: &mut Client, parts: usize, combine: Combine) -> u64 {
        cl.slots.push_back(Slot {
            parts: (0..parts).map(|_| None).collect(),
            missing: parts,
            combine,
            ticket: 0,
        });
        cl.base + cl.slots.len() as u64 - 1
    }

    /// Runs `a` on shard `to` for part `part` of slot `seq`: here at once,
    /// or over the ring.
    #[allow(clippy::too_many_arguments)]
    fn send_part(
        &mut self,
        cl: &mut Client,
        c: ConnId,
        seq: u64,
        part: u32,
        to: usize,
        kind: Kind,
        args: &mut dyn Iterator<Item = &[u8]>,
    ) {
        let mut buf = Vec::new();
        let mut ranges = Vec::new();
        for a in args {
            ranges.push(buf.len()..buf.len() + a.len());
            buf.extend_from_slice(a);
        }
        if to == self.id {
            let mut out = Vec::new();
            let ticket = self.run(
                kind,
                &Args::new(&buf, &ranges),
                &mut Writer::new(&mut out, cl.version),
            );
            fill(cl, seq, part, out);
            if ticket > self.durable()
                && let Some(slot) = seq
                    .checked_sub(cl.base)
                    .and_then(|i| cl.slots.get_mut(i as usize))
            {
                slot.ticket = slot.ticket.max(ticket);
                self.waiting.push(c);
            }
            return;
        }
        self.counters.forwarded.fetch_add(1, Ordering::Relaxed);
        let req = Req {
            from: self.id,
            conn: c,
            seq,
            part,
            version: cl.version,
            kind,
            buf,
            ranges,
        };
        push_or_hold(&mut self.links.req_tx[to], &mut self.req_out[to], req);
    }

    /// The last log ticket on stable storage (everything, without a log).
    fn durable(&self) -> u64 {
        match (&self.old_log, &self.log) {
            // The old generation's tickets come first.
            (Some(o), Some(_)) if o.durable() < o.appended() => o.durable(),
            (_, Some(l)) => l.durable(),
            _ => u64::MAX,
        }
    }

    /// Why the log refuses writes, if it does (either generation).
    fn log_failed(&self) -> Option<String> {
        self.log
            .iter()
            .chain(self.old_log.iter())
            .find_map(|l| l.failed().map(str::to_owned))
    }

    /// Starts, advances or finishes a compaction; returns the work done.
    fn compact(&mut self) -> usize {
        let (Some(cfg), Some(log)) = (self.config.durable.as_ref(), self.log.as_ref()) else {
            return 0;
        };
        if self.compaction.is_none() {
            let due = log.used() > 0.5 || (!self.older.is_empty() && self.old_log.is_none());
            if !due || log.failed().is_some() {
                return 0;
            }
            let path = log_path(&cfg.dir, self.id, self.n, self.generation + 1);
            let opened = path
                .to_str()
                .ok_or_else(|| dataplane::Error::Config(format!("{}: not UTF-8", path.display())))
                .and_then(|p| Log::open(p, cfg.size, &cfg.backend, cfg.commit));
            let mut next = match opened {
                Ok(r) => r.log,
                Err(e) => {
                    tracing::error!(shard = self.id, error = %e, "dp-kv: cannot open the next log generation");
                    return 0;
                }
            };
            next.continue_tickets(log.appended());
            self.older
                .push(log_path(&cfg.dir, self.id, self.n, self.generation));
            self.generation += 1;
            self.old_log = self.log.replace(next);
            self.compaction = Some(Compaction {
                cursor: self.store.len(),
                last: None,
            });
            tracing::info!(
                shard = self.id,
                generation = self.generation,
                "dp-kv: compacting the log"
            );
            return 1;
        }
        let Some(c) = self.compaction.as_mut() else {
            return 0;
        };
        let Some(log) = self.log.as_mut() else {
            return 0;
        };
        match c.last {
            None => {
                for _ in 0..COMPACT_BURST {
                    if c.cursor == 0 {
                        c.last = Some(log.appended());
                        break;
                    }
                    c.cursor -= 1;
                    self.store.dump(c.cursor, self.now, &mut |args| {
                        log.append(args.iter().copied());
                    });
                }
                1
            }
            Some(last) => {
                let old_done = self
                    .old_log
                    .as_ref()
                    .is_none_or(|o| o.durable() == o.appended() && !o.busy());
                if log.durable() < last || !old_done {
                    return 0;
                }
                for p in self.older.drain(..) {
                    if let Err(e) = std::fs::remove_file(&p) {
                        tracing::warn!(path = %p.display(), error = %e, "dp-kv: cannot remove an old log");
                    }
                }
                self.old_log = None;
                self.compaction = None;
                tracing::info!(
                    shard = self.id,
                    generation = self.generation,
                    "dp-kv: compaction done"
                );
                1
            }
        }
    }

    /// Runs a command on this shard's keyspace (its own or another's);
    /// returns the log ticket its reply waits for (0: none).
    fn run(&mut self, kind: Kind, a: &Args<'_>, w: &mut Writer<'_>) -> u64 {
        self.counters.commands.fetch_add(1, Ordering::Relaxed);
        let mut ticket = 0;
        match kind {
            Kind::Command => {
                let (lb, len) = lower_name(a.get(0)).unwrap_or(([0; 16], 0));
                let name = &lb[..len];
                let logged = self.log.is_some() && is_write(name);
                if logged && let Some(why) = self.log_failed() {
                    w.error(&format!("MISCONF Errors writing to the durable log: {why}"));
                    return 0;
                }
                let start = w.out.len();
                if !self.store.exec(name, a, w, self.now) {
                    unknown(w, a);
                }
                if logged && let Some(log) = self.log.as_mut() {
                    // Evictions first: the command may reuse a key they
                    // removed.
                    for k in self.store.take_evictions() {
                        ticket = log.append([&b"DEL"[..], &k].into_iter());
                    }
                    if w.out.get(start) != Some(&b'-') {
                        let mut scratch = Vec::new();
                        let args = log_form(name, a, self.now, &mut scratch);
                        ticket = log.append(args.into_iter());
                    }
                }
            }
            Kind::DbSize => w.integer(self.store.len() as i64),
            Kind::Flush => {
                self.store.flush();
                if let Some(log) = self.log.as_mut() {
                    ticket = log.append([&b"FLUSHALL"[..]].into_iter());
                }
                w.ok();
            }
            Kind::Info => {
                let s = self.store.stats();
                let c = &self.counters;
                let text = format!(
                    "# Shard {}\r\nshard_keys:{}\r\nshard_expires:{}\r\nshard_used_memory:{}\r\n\
                     shard_keyspace_hits:{}\r\nshard_keyspace_misses:{}\r\nshard_expired_keys:{}\r\n\
                     shard_evicted_keys:{}\r\nshard_commands:{}\r\nshard_forwarded:{}\r\n\
                     shard_connections:{}\r\n\r\n",
                    self.id,
                    s.keys,
                    s.expires,
                    s.used_memory,
                    s.hits,
                    s.misses,
                    s.expired,
                    s.evicted,
                    c.commands.load(Ordering::Relaxed),
                    c.forwarded.load(Ordering::Relaxed),
                    c.open.load(Ordering::Relaxed),
                );
                w.bulk(text.as_bytes());
            }
        }
        ticket
    }

    /// A command from a connection of this shard.
    fn dispatch(&mut self, cl: &mut Client, c: ConnId, a: &Args<'_>) {
        let Some((lb, len)) = lower_name(a.get(0)) else {
            self.reply_now(cl, |w| unknown(w, a));
            return;
        };
        let name = &lb[..len];
        // For error replies only: not worked out for every command.
        let cmd = || std::str::from_utf8(name).unwrap_or("?");
        if !cl.authed && !matches!(name, b"auth" | b"hello" | b"quit") {
            self.reply_now(cl, |w| w.error("NOAUTH Authentication required."));
            return;
        }
        if let Some((first, step)) = key_layout(name) {
            let arity = super::store::keyspace_arity(name).map_or(-1, |x| x.0);
            if !arity_ok(a.len(), arity) || (name == b"mset" && a.len().is_multiple_of(2)) {
                self.reply_now(cl, |w| wrong_args(w, cmd()));
                return;
            }
            if step == 0 {
                let to = self.owner(a.get(first));
                if to == self.id && cl.slots.is_empty() && !(self.log.is_some() && is_write(name)) {
                    self.counters.commands.fetch_add(1, Ordering::Relaxed);
                    let mut w = Writer::new(&mut cl.out, cl.version);
                    if !self.store.exec(name, a, &mut w, self.now) {
                        unknown(&mut w, a);
                    }
                } else {
                    let seq = Self::open_slot(cl, 1, Combine::Single);
                    self.send_part(
                        cl,
                        c,
                        seq,
                        0,
                        to,
                        Kind::Command,
                        &mut (0..a.len()).map(|i| a.get(i)),
                    );
                    // Run here, it may be finished already (a read, or a
                    // write refused before it reached the log).
                    self.release(cl);
                }
                return;
            }
            self.multi_key(cl, c, a, name, step);
            return;
        }
        match name {
            b"ping" => match a.len() {
                1 => self.reply_now(cl, |w| w.simple(b"PONG")),
                2 => self.reply_now(cl, |w| w.bulk(a.get(1))),
                _ => self.reply_now(cl, |w| wrong_args(w, cmd())),
            },
            b"echo" if a.len() == 2 => self.reply_now(cl, |w| w.bulk(a.get(1))),
            b"quit" => {
                self.reply_now(cl, |w| w.ok());
                cl.closing = true;
            }
            b"select" if a.len() == 2 => match parse_i64(a.get(1)) {
                None => self.reply_now(cl, |w| w.error(NOT_INT)),
                Some(0) => self.reply_now(cl, |w| w.ok()),
                Some(_) => self.reply_now(cl, |w| w.error("ERR DB index is out of range")),
            },
            b"hello" => self.hello(cl, a),
            b"auth" if a.len() == 2 || a.len() == 3 => self.auth(cl, a),
            b"auth" if a.len() > 3 => self.reply_now(cl, |w| w.error("ERR syntax error")),
            b"client" if a.len() >= 2 => self.client(cl, a),
            b"config" if a.len() >= 2 => self.config(cl, a),
            b"command" => self.reply_now(cl, |w| w.array(0)),
            b"dbsize" if a.len() == 1 => self.broadcast(cl, c, Kind::DbSize, Combine::Sum),
            b"flushall" | b"flushdb" if a.len() <= 2 => {
                self.broadcast(cl, c, Kind::Flush, Combine::AllOk);
            }
            b"info" => {
                let s = format!(
                    "# Server\r\nredis_version:{REDIS_VERSION}\r\nredis_mode:standalone\r\n\
                     server_name:dp-kv\r\nprocess_id:{}\r\ntcp_port:{}\r\nshards:{}\r\n\r\n",
                    std::process::id(),
                    self.config.bind.port(),
                    self.n
                );
                self.broadcast(cl, c, Kind::Info, Combine::Info(s.into_bytes()));
            }
            b"echo" | b"select" | b"client" | b"config" | b"dbsize" | b"flushall" | b"flushdb"
            | b"auth" => {
                self.reply_now(cl, |w| wrong_args(w, cmd()));
            }
            _ => self.reply_now(cl, |w| unknown(w, a)),
        }
    }

    fn broadcast(&mut self, cl: &mut Client, c: ConnId, kind: Kind, combine: Combine) {
        let seq = Self::open_slot(cl, self.n, combine);
        for to in 0..self.n {
            self.send_part(cl, c, seq, to as u32, to, kind, &mut std::iter::empty());
        }
        self.release(cl);
    }

    /// Splits a command on many keys by owner.
    fn multi_key(&mut self, cl: &mut Client, c: ConnId, a: &Args<'_>, name: &[u8], step: usize) {
        let mut groups: Vec<Vec<usize>> = vec![Vec::new(); self.n];
        let mut order = Vec::with_capacity((a.len() - 1) / step);
        for i in (1..a.len()).step_by(step) {
            let to = self.owner(a.get(i));
            order.push((to as u32, groups[to].len() as u32));
            groups[to].push(i);
        }
        let used: Vec<usize> = (0..self.n).filter(|&s| !groups[s].is_empty()).collect();
        let combine = match name {
            _ if used.len() == 1 => Combine::Single,
            b"mget" => {
                // Parts are numbered by their place in `used`.
                let place: Vec<u32> = (0..self.n)
                    .map(|s| used.iter().position(|&u| u == s).unwrap_or(0) as u32)
                    .collect();
                Combine::Mget(order.iter().map(|&(s, j)| (place[s as usize], j)).collect())
            }
            b"mset" => Combine::AllOk,
            _ => Combine::Sum,
        };
        let seq = Self::open_slot(cl, used.len(), combine);
        for (part, &to) in used.iter().enumerate() {
            let keys = &groups[to];
            let mut args = std::iter::once(a.get(0)).chain(keys.iter().flat_map(|&i| {
                let v = (step == 2).then(|| a.get(i + 1));
                std::iter::once(a.get(i)).chain(v)
            }));
            self.send_part(cl, c, seq, part as u32, to, Kind::Command, &mut args);
        }
        self.release(cl);
    }

    /// Moves the finished head of the slot queue to the output.
    fn release(&mut self, cl: &mut Client) {
        let durable = self.durable();
        while cl
            .slots
            .front()
            .is_some_and(|s| s.missing == 0 && s.ticket <= durable)
        {
            let Some(slot) = cl.slots.pop_front() else {
                break;
            };
            cl.base += 1;
            combine(slot, &mut Writer::new(&mut cl.out, cl.version));
        }
    }

    /// Runs the commands other shards sent here.
    fn run_remote(&mut self) -> usize {
        let mut work = 0;
        for i in 0..self.links.req_rx.len() {
            // A burst per ring per pass, so one busy peer cannot starve
            // this shard's own connections.
            for _ in 0..256 {
                let Some(req) = self.links.req_rx[i].pop() else {
                    break;
                };
                work += 1;
                let mut out = Vec::new();
                let ticket = self.run(
                    req.kind,
                    &Args::new(&req.buf, &req.ranges),
                    &mut Writer::new(&mut out, req.version),
                );
                let rep = Rep {
                    conn: req.conn,
                    seq: req.seq,
                    part: req.part,
                    bytes: out,
                };
                if ticket > self.durable() {
                    self.held.push_back((ticket, req.from, rep));
                } else {
                    push_or_hold(
                        &mut self.links.rep_tx[req.from],
                        &mut self.rep_out[req.from],
                        rep,
                    );
                }
            }
        }
        work
    }

    /// Files the replies other shards sent back.
    fn take_replies(&mut self, conns: &mut Conns) -> usize {
        let mut work = 0;
        for i in 0..self.links.rep_rx.len() {
            while let Some(rep) = self.links.rep_rx[i].pop() {
                work += 1;
                // The connection may have closed since: its reply is
                // dropped with it.
                if let Some(cl) = conns.get_mut(&rep.conn) {
                    fill(cl, rep.seq, rep.part, rep.bytes);
                    self.release(cl);
                    self.dirty.push(rep.conn);
                }
            }
        }
        self.dirty.sort_unstable();
        self.dirty.dedup();
        work
    }

    /// Drives the log: starts a group with what this pass appended, and
    /// lets go of the replies its last commit made durable. If the log has
    /// failed, the replies waiting on it can never be sent as successes:
    /// their connections are reset (nothing acknowledged is lost; what was
    /// not acknowledged is refused) and other shards get an error.
    fn commit(&mut self, t: &mut Transport, conns: &mut Conns) -> usize {
        if self.log.is_none() {
            return 0;
        }
        let mut work = self.compact();
        for l in self.log.iter_mut().chain(self.old_log.iter_mut()) {
            work += l.pass();
        }
        let durable = self.durable();
        let failed = self.log_failed();
        while self.held.front().is_some_and(|h| h.0 <= durable) {
            if let Some((_, to, rep)) = self.held.pop_front() {
                push_or_hold(&mut self.links.rep_tx[to], &mut self.rep_out[to], rep);
            }
        }
        if let Some(why) = &failed {
            for (_, to, mut rep) in self.held.drain(..) {
                rep.bytes = format!("-ERR durable log failed: {why}\r\n").into_bytes();
                push_or_hold(&mut self.links.rep_tx[to], &mut self.rep_out[to], rep);
            }
        }
        let waiting = std::mem::take(&mut self.waiting);
        for c in waiting {
            let Some(cl) = conns.get_mut(&c) else {
                continue;
            };
            self.release(cl);
            if cl.slots.iter().any(|s| s.ticket > durable) {
                if failed.is_some() {
                    let _ = t.abort(c);
                    continue;
                }
                self.waiting.push(c);
            }
            self.dirty.push(c);
        }
        self.waiting.sort_unstable();
        self.waiting.dedup();
        work
    }

    fn flush_outboxes(&mut self) -> usize {
        let mut work = 0;
        for to in 0..self.n {
            work += drain(&mut self.links.req_tx[to], &mut self.req_out[to]);
            work += drain(&mut self.links.rep_tx[to], &mut self.rep_out[to]);
        }
        work
    }

    /// `AUTH [default] PASSWORD`, as Redis 7 answers it.
    fn auth(&mut self, cl: &mut Client, a: &Args<'_>) {
        let (user, pass): (&[u8], &[u8]) = if a.len() == 2 {
            if self.config.requirepass.is_none() {
                self.reply_now(cl, |w| {
                    w.error(
                        "ERR AUTH <password> called without any password configured for the \
                         default user. Are you sure your configuration is correct?",
                    );
                });
                return;
            }
            (b"default", a.get(1))
        } else {
            (a.get(1), a.get(2))
        };
        if self.password_ok(user, pass) {
            cl.authed = true;
            self.reply_now(cl, |w| w.ok());
        } else {
            self.reply_now(cl, |w| w.error(WRONGPASS));
        }
    }

    /// Whether `user` and `pass` name the `default` user; the password is
    /// compared in time that does not depend on where it differs.
    fn password_ok(&self, user: &[u8], pass: &[u8]) -> bool {
        if user != b"default" {
            return false;
        }
        match &self.config.requirepass {
            None => true,
            Some(want) => {
                let diff = want
                    .iter()
                    .zip(pass)
                    .fold(want.len() ^ pass.len(), |d, (x, y)| d | usize::from(x ^ y));
                diff == 0
            }
        }
    }

    fn hello(&mut self, cl: &mut Client, a: &Args<'_>) {
        let mut version = cl.version;
        if a.len() >= 2 {
            match parse_i64(a.get(1)) {
                Some(2) => version = Version::Resp2,
                Some(3) => version = Version::Resp3,
                Some(_) => {
                    self.reply_now(cl, |w| w.error("NOPROTO unsupported protocol version"));
                    return;
                }
                None => {
                    self.reply_now(cl, |w| {
                        w.error("ERR Protocol version is not an integer or out of range");
                    });
                    return;
                }
            }
        }
        let mut j = 2;
        let mut name = None;
        while j < a.len() {
            let opt = a.get(j).to_ascii_uppercase();
            if opt == b"AUTH" && j + 2 < a.len() {
                // The one user is Redis's `default`: with `nopass` when no
                // password is configured (any password is accepted).
                if !self.password_ok(a.get(j + 1), a.get(j + 2)) {
                    self.reply_now(cl, |w| w.error(WRONGPASS));
                    return;
                }
                cl.authed = true;
                j += 3;
            } else if opt == b"SETNAME" && j + 1 < a.len() {
                name = Some(a.get(j + 1).to_vec());
                j += 2;
            } else {
                let o = String::from_utf8_lossy(a.get(j)).into_owned();
                self.reply_now(cl, |w| {
                    w.error(&format!("ERR Syntax error in HELLO option '{o}'"))
                });
                return;
            }
        }
        if !cl.authed {
            self.reply_now(cl, |w| {
                w.error(
                    "NOAUTH HELLO must be called with the client already authenticated, \
                     otherwise the HELLO AUTH <user> <pass> option can be used to \
                     authenticate the client and select the RESP protocol version at the same time",
                );
            });
            return;
        }
        cl.version = version;
        if name.is_some() {
            cl.name = name;
        }
        let id = cl.id;
        self.reply_now(cl, |w| {
            w.map(7);
            w.bulk(b"server");
            w.bulk(b"redis");
            w.bulk(b"version");
            w.bulk(REDIS_VERSION.as_bytes());
            w.bulk(b"proto");
            w.integer(super::store::proto_number(version));
            w.bulk(b"id");
            w.integer(id as i64);
            w.bulk(b"mode");
            w.bulk(b"standalone");
            w.bulk(b"role");
            w.bulk(b"master");
            w.bulk(b"modules");
            w.array(0);
        });
    }

    fn client(&mut self, cl: &mut Client, a: &Args<'_>) {
        let sub = a.get(1).to_ascii_lowercase();
        match (sub.as_slice(), a.len()) {
            (b"id", 2) => {
                let id = cl.id as i64;
                self.reply_now(cl, |w| w.integer(id));
            }
            (b"getname", 2) => {
                let name = cl.name.clone();
                self.reply_now(cl, |w| w.opt_bulk(name.as_deref()));
            }
            (b"setname", 3) => {
                let name = a.get(2);
                if name.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
                    self.reply_now(cl, |w| {
                        w.error("ERR Client names cannot contain spaces, newlines or special characters.");
                    });
                } else {
                    cl.name = (!name.is_empty()).then(|| name.to_vec());
                    self.reply_now(cl, |w| w.ok());
                }
            }
            (b"id" | b"getname" | b"setname", _) => {
                let full = format!("client|{}", String::from_utf8_lossy(&sub));
                self.reply_now(cl, |w| wrong_args(w, &full));
            }
            _ => {
                let s = String::from_utf8_lossy(a.get(1)).into_owned();
                self.reply_now(cl, |w| {
                    w.error(&format!("ERR unknown subcommand '{s}'. Try CLIENT HELP."));
                });
            }
        }
    }

    fn config(&mut self, cl: &mut Client, a: &Args<'_>) {
        let sub = a.get(1).to_ascii_lowercase();
        if sub != b"get" {
            let s = String::from_utf8_lossy(a.get(1)).into_owned();
            self.reply_now(cl, |w| {
                w.error(&format!("ERR unknown subcommand '{s}'. Try CONFIG HELP."));
            });
            return;
        }
        if a.len() < 3 {
            self.reply_now(cl, |w| wrong_args(w, "config|get"));
            return;
        }
        let params = [
            ("appendonly", "no".to_owned()),
            ("bind", self.config.bind.ip().to_string()),
            ("databases", "1".to_owned()),
            ("maxmemory", self.config.maxmemory.to_string()),
            ("maxmemory-policy", "allkeys-lru".to_owned()),
            ("port", self.config.bind.port().to_string()),
            (
                "proto-max-bulk-len",
                self.config.limits.max_bulk.to_string(),
            ),
            ("save", String::new()),
        ];
        let mut found: Vec<&(&str, String)> = Vec::new();
        for pat in a.from(2) {
            let pat = pat.to_ascii_lowercase();
            for p in &params {
                if (pat == b"*" || pat == p.0.as_bytes()) && !found.iter().any(|f| f.0 == p.0) {
                    found.push(p);
                }
            }
        }
        self.reply_now(cl, |w| {
            w.map(found.len());
            for (k, v) in found {
                w.bulk(k.as_bytes());
                w.bulk(v.as_bytes());
            }
        });
    }
}

const NOT_INT: &str = "ERR value is not an integer or out of range";

/// Redis's reply to a command it does not know, up to 128 bytes of
/// arguments quoted.
fn unknown(w: &mut Writer<'_>, a: &Args<'_>) {
    let name = String::from_utf8_lossy(a.get(0));
    let name: String = name.chars().take(128).collect();
    let mut args = String::new();
    for x in a.from(1) {
        if args.len() >= 128 {
            break;
        }
        let room = 128 - args.len();
        let s = String::from_utf8_lossy(x);
        let s: String = s.chars().take(room).collect();
        args.push('\'');
        args.push_str(&s);
        args.push_str("' ");
    }
    w.error(&format!(
        "ERR unknown command '{name}', with args beginning with: {args}"
    ));
}

fn fill(cl: &mut Client, seq: u64, part: u32, bytes: Vec<u8>) {
    let Some(i) = seq.checked_sub(cl.base) else {
        return;
    };
    if let Some(slot) = cl.slots.get_mut(i as usize)
        && let Some(p) = slot.parts.get_mut(part as usize)
        && p.is_none()
    {
        *p = Some(bytes);
        slot.missing -= 1;
    }
}

fn push_or_hold<T>(tx: &mut Option<Producer<T, Single>>, held: &mut VecDeque<T>, v: T) {
    let Some(tx) = tx.as_mut() else {
        return;
    };
    if held.is_empty() {
        if let Err(e) = tx.push(v) {
            held.push_back(e.into_inner());
        }
    } else {
        held.push_back(v);
    }
}

fn drain<T>(tx: &mut Option<Producer<T, Single>>, held: &mut VecDeque<T>) -> usize {
    let Some(tx) = tx.as_mut() else {
        return 0;
    };
    let mut n = 0;
    while let Some(v) = held.pop_front() {
        if let Err(e) = tx.push(v) {
            held.push_front(e.into_inner());
            break;
        }
        n += 1;
    }
    n
}

/// The integer of a `:n` reply.
fn int_of(b: &[u8]) -> Option<i64> {
    b.strip_prefix(b":")
        .and_then(|b| b.strip_suffix(b"\r\n"))
        .and_then(parse_i64)
}

/// The elements of an array reply made by this server (`*n` then `n`
/// values), as ranges.
fn elements(b: &[u8]) -> Vec<Range<usize>> {
    let limits = Limits::default();
    let Some(hdr) = b.iter().position(|&x| x == b'\n') else {
        return Vec::new();
    };
    let mut at = hdr + 1;
    let mut v = Vec::new();
    while at < b.len() {
        match value_len(&b[at..], &limits) {
            Ok(Some(n)) => {
                v.push(at..at + n);
                at += n;
            }
            _ => break,
        }
    }
    v
}

fn combine(slot: Slot, w: &mut Writer<'_>) {
    let parts: Vec<Vec<u8>> = slot
        .parts
        .into_iter()
        .map(Option::unwrap_or_default)
        .collect();
    // A part's error is the reply.
    if !matches!(slot.combine, Combine::Single)
        && let Some(e) = parts.iter().find(|p| p.first() == Some(&b'-'))
    {
        w.out.extend_from_slice(e);
        return;
    }
    match slot.combine {
        Combine::Single => {
            for p in &parts {
                w.out.extend_from_slice(p);
            }
        }
        Combine::Sum => w.integer(parts.iter().filter_map(|p| int_of(p)).sum()),
        Combine::AllOk => w.ok(),
        Combine::Mget(order) => {
            let split: Vec<Vec<Range<usize>>> = parts.iter().map(|p| elements(p)).collect();
            w.array(order.len());
            for (p, j) in order {
                match split.get(p as usize).and_then(|s| s.get(j as usize)) {
                    Some(r) => w.out.extend_from_slice(&parts[p as usize][r.clone()]),
                    None => w.null(),
                }
            }
        }
        Combine::Info(mut text) => {
            let limits = Limits::default();
            for p in &parts {
                if let Ok(Some((dataplane::proto::resp::Value::Bulk(s), _))) =
                    dataplane::proto::resp::parse_value(p, &limits)
                {
                    text.extend_from_slice(s);
                }
            }
            w.verbatim(&text);
        }
    }
}

/// Keeps the lcore's stop contract: a shard reports work while it holds
/// messages for other shards.
impl Shard {
    /// Messages held for other shards' full rings.
    pub fn held(&self) -> usize {
        self.st.req_out.iter().map(VecDeque::len).sum::<usize>()
            + self.st.rep_out.iter().map(VecDeque::len).sum::<usize>()
    }
}
