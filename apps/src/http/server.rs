//! One lcore's part of `dp-http`: its listener (`SO_REUSEPORT`, so the
//! kernel spreads connections over the shards), its connections and its
//! router. Nothing is shared between shards but the read-only file cache
//! and the metrics collectors' handles to the counters.
//!
//! A pass polls the transport and, for each connection with bytes, parses
//! every whole request, routes it and appends the response to the
//! connection's output, which goes to the transport in one write. A
//! connection whose output the transport could not take is not read until
//! it drains (backpressure down to TCP's window); a request with
//! `Expect: 100-continue` gets its `100 Continue` once its head is whole;
//! a refused request gets its status, `Connection: close`, and the
//! connection is closed once the response is out.

use dataplane::lcore::{PollContext, Poller};
use dataplane::proto::http::{Limits, Parsed, RequestParser, Response, Router, http_date, reason};
use dataplane::transport::{ConnId, Event, Transport};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The shard's connections by id: a hash map with a fast hasher (the ids
/// are the transport's slot numbers, not input an attacker picks; SipHash
/// was 0.85% of dp-http's samples under wrk).
type Conns = HashMap<ConnId, Conn, foldhash::fast::RandomState>;

/// Output bytes past which a connection is not read.
const OUT_HIGH: usize = 256 * 1024;

/// What every shard is told.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Where every shard listens.
    pub listen: SocketAddr,
    /// The transport's settings.
    pub transport: dataplane::transport::Config,
    /// The parser's limits.
    pub limits: Limits,
    /// The port queues when the shards run on the user-space stack.
    pub stack: Option<Arc<crate::serve::StackPorts>>,
    /// HTTPS: the listener speaks TLS with this configuration.
    pub tls: Option<Arc<dataplane::transport::tls::ServerConfig>>,
}

/// A shard's counters, read by the stats line and `/metrics`.
#[derive(Debug, Default)]
pub struct HttpCounters {
    /// Requests answered (refused ones included).
    pub requests: AtomicU64,
    /// Responses by class: 1xx..5xx at 0..4.
    pub by_class: [AtomicU64; 5],
    /// Requests refused as malformed or over a limit.
    pub refused: AtomicU64,
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections open.
    pub open: AtomicU64,
    /// Set once the shard listens.
    pub ready: std::sync::atomic::AtomicBool,
    /// Bytes received and sent on this shard's transport (published
    /// every 1,024 passes).
    pub rx_bytes: AtomicU64,
    /// As `rx_bytes`, sent.
    pub tx_bytes: AtomicU64,
    /// The transport's counters, published as often.
    pub transport: Arc<dataplane::transport::PublishedStats>,
}

impl HttpCounters {
    fn answered(&self, status: u16) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if let Some(c) = self.by_class.get(usize::from(status / 100).wrapping_sub(1)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[derive(Debug, Default)]
struct Conn {
    out: Vec<u8>,
    closing: bool,
    continued: bool,
}

/// One lcore's server: the [`Poller`] of that lcore.
pub struct HttpShard {
    id: usize,
    config: Arc<HttpConfig>,
    t: Option<Transport>,
    parser: RequestParser,
    router: Router,
    conns: Conns,
    counters: Arc<HttpCounters>,
    date: (u64, String),
    passes: u64,
}

impl std::fmt::Debug for HttpShard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpShard")
            .field("id", &self.id)
            .field("connections", &self.conns.len())
            .finish_non_exhaustive()
    }
}

impl HttpShard {
    /// Shard `id` with its router; the transport is made on its lcore at
    /// the first pass.
    pub fn new(
        id: usize,
        config: Arc<HttpConfig>,
        router: Router,
        counters: Arc<HttpCounters>,
    ) -> Self {
        Self {
            id,
            parser: RequestParser::new(config.limits),
            config,
            t: None,
            router,
            conns: Conns::default(),
            counters,
            date: (0, String::new()),
            passes: 0,
        }
    }

    fn pass(&mut self) -> dataplane::Result<usize> {
        if self.t.is_none() {
            let mut t = crate::serve::shard_transport(
                self.config.stack.as_deref(),
                self.id,
                &self.config.transport,
            )?;
            match &self.config.tls {
                Some(tls) => t.listen_tls(self.config.listen, tls.clone())?,
                None => t.listen(self.config.listen)?,
            };
            self.t = Some(t);
            // Release: the main thread reads it to say the server listens.
            self.counters.ready.store(true, Ordering::Release);
        }
        self.passes += 1;
        // The coarse clock, as dp-kv reads it: no timer read per pass.
        let secs = crate::kv::server::now_ms() / 1000;
        if secs != self.date.0 {
            self.date = (secs, http_date(secs));
        }
        let HttpShard {
            t,
            parser,
            router,
            conns,
            counters,
            date,
            ..
        } = self;
        let Some(t) = t.as_mut() else {
            return Ok(0);
        };
        let work = t.poll()?;
        while let Some(ev) = t.next_event() {
            match ev {
                Event::Accepted { conn, .. } => {
                    conns.insert(conn, Conn::default());
                    counters.accepted.fetch_add(1, Ordering::Relaxed);
                    counters.open.fetch_add(1, Ordering::Relaxed);
                }
                Event::Readable(c) | Event::Writable(c) => {
                    serve(t, parser, router, conns, counters, &date.1, c);
                }
                Event::PeerClosed(c) => {
                    serve(t, parser, router, conns, counters, &date.1, c);
                    if let Some(cl) = conns.get_mut(&c) {
                        cl.closing = true;
                    }
                    settle(t, conns, c);
                }
                Event::Closed(c, _) => {
                    if conns.remove(&c).is_some() {
                        counters.open.fetch_sub(1, Ordering::Relaxed);
                    }
                }
                Event::Connected(_) | Event::Datagrams(_) => {}
            }
        }
        if self.passes.is_multiple_of(1024) {
            let s = t.stats();
            self.counters.rx_bytes.store(s.rx_bytes, Ordering::Relaxed);
            self.counters.tx_bytes.store(s.tx_bytes, Ordering::Relaxed);
            self.counters.transport.publish(&s);
        }
        Ok(work)
    }
}

impl Poller for HttpShard {
    fn poll(&mut self, ctx: &PollContext) -> usize {
        if ctx.stopping() {
            return 0;
        }
        match self.pass() {
            Ok(n) => n,
            Err(e) => {
                if self.passes % 100_000 <= 1 {
                    tracing::error!(shard = self.id, error = %e, "dp-http: shard pass failed");
                }
                self.passes += 1;
                0
            }
        }
    }
}

fn settle(t: &mut Transport, conns: &mut Conns, c: ConnId) {
    let Some(cl) = conns.get_mut(&c) else {
        return;
    };
    if !cl.out.is_empty() {
        // The output itself, when the send buffer is empty: no copy.
        match t.write_from(c, &mut cl.out) {
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(conn = %c, error = %e, "dp-http: connection gone");
                return;
            }
        }
    }
    if cl.closing && cl.out.is_empty() {
        let _ = t.close(c);
    }
}

/// Answers the whole requests connection `c` has received, as far as
/// backpressure allows.
fn serve(
    t: &mut Transport,
    parser: &mut RequestParser,
    router: &mut Router,
    conns: &mut Conns,
    counters: &HttpCounters,
    date: &str,
    c: ConnId,
) {
    loop {
        settle(t, conns, c);
        let Some(cl) = conns.get_mut(&c) else {
            return;
        };
        let Ok(buf) = t.peek(c) else {
            return;
        };
        let mut used = 0;
        let mut stalled = false;
        while used < buf.len() && !cl.closing {
            if cl.out.len() >= OUT_HIGH {
                stalled = true;
                break;
            }
            let rest = &buf[used..];
            match parser.parse(rest) {
                Ok(Parsed::Complete(n)) => {
                    let req = parser.request(rest);
                    let mut res = Response::new(&mut cl.out, &req, date);
                    router.handle(&req, &mut res);
                    counters.answered(res.status_code());
                    cl.closing = !res.keeps_alive();
                    cl.continued = false;
                    used += n;
                }
                Ok(Parsed::Incomplete { expects_continue }) => {
                    if expects_continue && !cl.continued {
                        cl.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                        cl.continued = true;
                        counters.by_class[0].fetch_add(1, Ordering::Relaxed);
                    }
                    break;
                }
                Err(e) => {
                    counters.refused.fetch_add(1, Ordering::Relaxed);
                    counters.answered(e.status);
                    let body = format!("{} {}: {}\n", e.status, reason(e.status), e.why);
                    let head = format!(
                        "HTTP/1.1 {} {}\r\nServer: dataplane\r\nDate: {date}\r\nContent-Type: text/plain\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n",
                        e.status,
                        reason(e.status),
                        body.len()
                    );
                    cl.out.extend_from_slice(head.as_bytes());
                    cl.out.extend_from_slice(body.as_bytes());
                    cl.closing = true;
                    used = buf.len();
                }
            }
        }
        if t.consume(c, used).is_err() {
            return;
        }
        settle(t, conns, c);
        let again = conns
            .get(&c)
            .is_some_and(|cl| stalled && cl.out.len() < OUT_HIGH && !cl.closing);
        if !again {
            return;
        }
    }
}
