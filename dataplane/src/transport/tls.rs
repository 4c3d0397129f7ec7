//! TLS on the transport's connections, with rustls.
//!
//! [`Transport::listen_tls`] speaks TLS on every connection its listener
//! accepts, and [`Transport::connect_tls`] on a connection out. The
//! application's code is unchanged: [`Transport::peek`],
//! [`Transport::consume`], [`Transport::write`] and the events carry
//! plaintext, and a connection without TLS in the same transport is not
//! touched.
//!
//! **A layer above the engines.** The engine's receive buffer holds the
//! ciphertext; on `Readable` the layer moves it through the connection's
//! `rustls::Connection` into a plaintext buffer of [`Config::rx_buffer`]
//! bytes, and reports `Readable` only when plaintext arrived (a pass that
//! carried only handshake messages reports nothing). While the plaintext
//! buffer is full the ciphertext stays in the engine's buffer, which then
//! fills and stops the engine reading: TCP's window pushes back as it
//! does without TLS. A write is encrypted at once into the engine's send
//! buffer, and takes only as many bytes as will fit there once sealed (a
//! record adds at most [`RECORD_OVERHEAD`] bytes per 16 KiB), so rustls
//! never holds a backlog of its own; before the handshake completes,
//! rustls keeps the plaintext (at most [`Config::tx_buffer`] bytes) and
//! seals it when the keys exist. Because the layer works on the engine's
//! byte buffers, it runs on every engine: io_uring, epoll and the
//! user-space stack. What it costs is one copy each way beside the
//! cipher: records are decrypted in rustls's buffer and copied out, and
//! sealed into rustls's buffer and copied into the engine's.
//!
//! **Closing.** [`Transport::shutdown`] and [`Transport::close`] send
//! `close_notify` before the FIN. A TLS failure (a certificate the client
//! does not trust, a protocol error, a bad record, an alert from the
//! peer) sends rustls's alert, closes the connection, and ends it with
//! [`CloseReason::Tls`]; the reason is logged at debug level and counted
//! in [`Stats::tls_failed`](super::Stats::tls_failed).
//!
//! **The crypto provider** is rustls's `ring` provider, chosen because it
//! builds from crates.io with only a C compiler (no CMake, no Go, no
//! system OpenSSL), and so does everything the project's build needs.
//! [`server_config`] and [`client_config`] build configurations with it
//! from PEM files; a configuration built by hand may use any provider.

use super::buf::ByteBuf;
use super::{CloseReason, Config, ConnId, Event, ListenerId, Transport};
use crate::{Error, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::VecDeque;
use std::io::{self, BufRead, IoSlice, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

pub use rustls;
pub use rustls::pki_types::ServerName;
pub use rustls::{ClientConfig, ServerConfig};

/// The most a TLS record adds to the plaintext it carries: TLS 1.2's
/// AES-GCM adds 29 bytes (a 5-byte header, an 8-byte explicit nonce and a
/// 16-byte tag), ChaCha20-Poly1305 21, TLS 1.3 22 (the header, the inner
/// content type and the tag; rustls adds no padding).
pub const RECORD_OVERHEAD: usize = 32;

/// The plaintext a record carries at most (RFC 8446, 5.1).
const MAX_FRAGMENT: usize = 16 * 1024;

/// How many plaintext bytes fit, once sealed, in `room` bytes.
fn plaintext_room(room: usize) -> usize {
    let records = room.div_ceil(MAX_FRAGMENT + RECORD_OVERHEAD);
    room.saturating_sub(records * RECORD_OVERHEAD)
}

fn tls_config_err(what: impl std::fmt::Display, e: impl std::fmt::Display) -> Error {
    Error::Config(format!("tls: {what}: {e}"))
}

/// rustls 0.23.48 deprecated its `ring` provider for having no
/// post-quantum key exchange (X25519MLKEM768 comes with aws-lc-rs, whose
/// build wants more than a C compiler on some hosts): the key exchanges
/// offered here are X25519, P-256 and P-384 (docs/security.md).
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate in a PEM file.
///
/// # Errors
///
/// [`Error::Config`] naming the file when it cannot be read, holds a
/// malformed PEM section, or holds no certificate.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let what = || format!("certificates in {}", path.display());
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_config_err(what(), e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| tls_config_err(what(), e))?;
    if certs.is_empty() {
        return Err(tls_config_err(what(), "no CERTIFICATE section"));
    }
    Ok(certs)
}

/// A server configuration (TLS 1.2 and 1.3, rustls's safe defaults, no
/// client certificates) for the certificate chain in `cert_pem` (the
/// server's certificate first) and the private key in `key_pem` (PKCS#8,
/// PKCS#1 or SEC1), announcing `alpn` (e.g. `http/1.1`; empty for none).
///
/// # Errors
///
/// [`Error::Config`] naming the file that cannot be read or parsed, or a
/// key that does not fit the certificate.
pub fn server_config(cert_pem: &Path, key_pem: &Path, alpn: &[&str]) -> Result<Arc<ServerConfig>> {
    let certs = load_certs(cert_pem)?;
    let key = PrivateKeyDer::from_pem_file(key_pem)
        .map_err(|e| tls_config_err(format!("the private key in {}", key_pem.display()), e))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_config_err("protocol versions", e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            tls_config_err(
                format!(
                    "the key in {} for {}",
                    key_pem.display(),
                    cert_pem.display()
                ),
                e,
            )
        })?;
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok(Arc::new(config))
}

/// A client configuration that trusts the CA certificates in `ca_pem`
/// (and nothing else), announcing `alpn`.
///
/// # Errors
///
/// [`Error::Config`] naming the file that cannot be read or parsed, or a
/// certificate that is not a usable trust anchor.
pub fn client_config(ca_pem: &Path, alpn: &[&str]) -> Result<Arc<ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(ca_pem)? {
        roots
            .add(cert)
            .map_err(|e| tls_config_err(format!("a CA certificate in {}", ca_pem.display()), e))?;
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_config_err("protocol versions", e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok(Arc::new(config))
}

/// One connection's TLS state.
struct Session {
    generation: u32,
    tls: rustls::Connection,
    /// Decrypted bytes the application has not consumed.
    plain: ByteBuf,
    /// Plaintext written before the handshake completed (held by rustls).
    early: usize,
    handshaken: bool,
    /// The application closed or aborted it, or TLS failed: the
    /// application's calls are refused and its events skipped.
    closing: bool,
    /// TLS failed: its `Closed` says [`CloseReason::Tls`].
    failed: bool,
    /// `shutdown` or `close` was asked for: no more writes.
    shut: bool,
    /// `close_notify` is still to be sent (waiting for the handshake).
    notify_pending: bool,
    /// The peer's `close_notify` arrived.
    peer_notified: bool,
    /// The peer's FIN arrived (its ciphertext before it may still wait in
    /// the engine's buffer).
    fin_seen: bool,
    /// `PeerClosed` was raised (on `close_notify` or on the FIN).
    peer_told: bool,
    /// What to do to the engine's connection once rustls's output is in
    /// its send buffer: shut it down (`Some(false)`) or close it
    /// (`Some(true)`).
    then: Option<bool>,
    /// A write took less than it was given: `Writable` when room returns.
    want_writable: bool,
    /// In the layer's `dirty` list.
    in_dirty: bool,
}

impl Session {
    fn new(generation: u32, tls: rustls::Connection, rx_buffer: usize) -> Self {
        Self {
            generation,
            tls,
            plain: ByteBuf::new(rx_buffer),
            early: 0,
            handshaken: false,
            closing: false,
            failed: false,
            shut: false,
            notify_pending: false,
            peer_notified: false,
            fin_seen: false,
            peer_told: false,
            then: None,
            want_writable: false,
            in_dirty: false,
        }
    }

    /// Work left for [`TlsLayer::after_poll`].
    fn pending(&self) -> bool {
        self.tls.wants_write() || self.notify_pending || self.then.is_some() || self.want_writable
    }
}

/// TLS counters, part of [`super::Stats`].
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct TlsStats {
    pub(super) handshakes: u64,
    pub(super) failed: u64,
}

/// The sessions of a transport's TLS connections and the configurations
/// of its TLS listeners.
pub(super) struct TlsLayer {
    /// By listener index.
    servers: Vec<Option<Arc<ServerConfig>>>,
    /// By connection index.
    sessions: Vec<Option<Session>>,
    /// `Readable` and `Writable` the layer raised itself.
    events: VecDeque<Event>,
    /// Sessions with work for [`Self::after_poll`].
    dirty: Vec<ConnId>,
    rx_buffer: usize,
    tx_buffer: usize,
    pub(super) stats: TlsStats,
}

/// The engine's send buffer as rustls's `Write`: takes what fits.
struct Sink<'a> {
    t: &'a mut Transport,
    c: ConnId,
}

impl Write for Sink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.t.write(self.c, buf) {
            Ok(0) if !buf.is_empty() => Err(io::ErrorKind::WouldBlock.into()),
            Ok(n) => Ok(n),
            Err(e) => Err(io::Error::other(e.to_string())),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut total = 0;
        for b in bufs {
            match self.write(b) {
                Ok(n) => {
                    total += n;
                    if n < b.len() {
                        break;
                    }
                }
                Err(e) if total == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Moves rustls's sealed output into the engine's send buffer, as much as
/// fits (the rest stays with rustls until the next pass).
fn pump_out(s: &mut Session, t: &mut Transport, c: ConnId) {
    while s.tls.wants_write() {
        match s.tls.write_tls(&mut Sink { t, c }) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
}

/// Moves ciphertext from the engine's receive buffer through rustls into
/// the plaintext buffer, while it has room. `Ok(true)` when plaintext
/// arrived; the inner `Err` is TLS's verdict on the peer.
fn pump_in(
    s: &mut Session,
    t: &mut Transport,
    c: ConnId,
    stats: &mut TlsStats,
) -> Result<std::result::Result<bool, rustls::Error>> {
    let before = s.plain.len();
    loop {
        if s.plain.room() > 0 {
            let mut reader = s.tls.reader();
            match reader.fill_buf() {
                Ok(chunk) if !chunk.is_empty() => {
                    let n = s.plain.push(chunk);
                    reader.consume(n);
                    continue;
                }
                // Empty: the peer's close_notify, after which nothing counts.
                Ok(_) => {
                    s.peer_notified = true;
                    break;
                }
                // WouldBlock: rustls holds no more plaintext.
                Err(_) => {}
            }
        }
        if s.plain.room() == 0 {
            break;
        }
        let cipher = t.engine_peek(c)?;
        if cipher.is_empty() {
            break;
        }
        let mut from = cipher;
        let n = match s.tls.read_tls(&mut from) {
            Ok(n) => n,
            // rustls's own buffer is full of plaintext not yet taken.
            Err(_) => break,
        };
        t.consume(c, n)?;
        if let Err(e) = s.tls.process_new_packets() {
            return Ok(Err(e));
        }
        if n == 0 {
            break;
        }
    }
    if !s.handshaken && !s.tls.is_handshaking() {
        s.handshaken = true;
        s.early = 0;
        stats.handshakes += 1;
    }
    Ok(Ok(s.plain.len() > before))
}

fn session_in(sessions: &mut [Option<Session>], c: ConnId) -> Option<&mut Session> {
    match sessions.get_mut(c.index as usize) {
        Some(Some(s)) if s.generation == c.generation => Some(s),
        _ => None,
    }
}

impl TlsLayer {
    fn new(config: &Config) -> Self {
        Self {
            servers: Vec::new(),
            sessions: Vec::new(),
            events: VecDeque::new(),
            dirty: Vec::new(),
            rx_buffer: config.rx_buffer,
            tx_buffer: config.tx_buffer,
            stats: TlsStats::default(),
        }
    }

    /// Whether `c` is one of its connections (open or closing).
    pub(super) fn owns(&self, c: ConnId) -> bool {
        self.session(c).is_some()
    }

    fn session(&self, c: ConnId) -> Option<&Session> {
        match self.sessions.get(c.index as usize) {
            Some(Some(s)) if s.generation == c.generation => Some(s),
            _ => None,
        }
    }

    fn session_mut(&mut self, c: ConnId) -> Option<&mut Session> {
        session_in(&mut self.sessions, c)
    }

    fn open(&self, c: ConnId) -> Result<&Session> {
        match self.session(c) {
            Some(s) if !s.closing => Ok(s),
            _ => Err(Error::NotOpen(format!("{c} is not open"))),
        }
    }

    fn open_mut(&mut self, c: ConnId) -> Result<&mut Session> {
        match self.session_mut(c) {
            Some(s) if !s.closing => Ok(s),
            _ => Err(Error::NotOpen(format!("{c} is not open"))),
        }
    }

    fn insert(&mut self, c: ConnId, tls: rustls::Connection) {
        let i = c.index as usize;
        if self.sessions.len() <= i {
            self.sessions.resize_with(i + 1, || None);
        }
        self.sessions[i] = Some(Session::new(c.generation, tls, self.rx_buffer));
    }

    fn mark_dirty(&mut self, c: ConnId) {
        if let Some(s) = self.session_mut(c)
            && !s.in_dirty
        {
            s.in_dirty = true;
            self.dirty.push(c);
        }
    }

    /// Ends a session whose peer failed TLS: its alert goes out, then the
    /// connection is closed.
    fn fail(&mut self, t: &mut Transport, c: ConnId, e: &rustls::Error) {
        tracing::debug!(%c, error = %e, "transport: TLS failed; closing the connection");
        self.stats.failed += 1;
        if let Some(s) = self.session_mut(c) {
            s.failed = true;
            s.closing = true;
            s.plain.consume(usize::MAX);
            pump_out(s, t, c);
        }
        let _ = t.close(c);
    }

    /// Ciphertext arrived (or room for plaintext did, or the FIN): raises
    /// `Readable` when plaintext arrived and `PeerClosed` when the peer's
    /// `close_notify` did (or, with `fin`, its FIN).
    fn receive(&mut self, t: &mut Transport, c: ConnId, fin: bool) {
        let Some(s) = session_in(&mut self.sessions, c) else {
            return;
        };
        let verdict = pump_in(s, t, c, &mut self.stats);
        let Some(s) = session_in(&mut self.sessions, c) else {
            return;
        };
        match verdict {
            Ok(Ok(new)) => {
                pump_out(s, t, c);
                if s.closing {
                    s.plain.consume(usize::MAX);
                } else {
                    if new {
                        self.events.push_back(Event::Readable(c));
                    }
                    s.fin_seen |= fin;
                    // After the FIN, once every byte before it has been
                    // through TLS (a full plaintext buffer leaves some in
                    // the engine's until the application consumes).
                    let drained = t.engine_peek(c).map_or(true, <[u8]>::is_empty);
                    if (s.peer_notified || (s.fin_seen && drained)) && !s.peer_told {
                        s.peer_told = true;
                        self.events.push_back(Event::PeerClosed(c));
                    }
                }
                if s.pending() {
                    self.mark_dirty(c);
                }
            }
            Ok(Err(e)) => self.fail(t, c, &e),
            // The engine's connection is gone: its `Closed` follows.
            Err(_) => {}
        }
    }

    /// How much plaintext a write takes now.
    fn room(&self, s: &Session, t: &Transport, c: ConnId) -> usize {
        if s.shut {
            0
        } else if s.tls.is_handshaking() {
            self.tx_buffer.saturating_sub(s.early)
        } else if s.tls.wants_write() {
            0
        } else {
            plaintext_room(t.engine_send_room(c).unwrap_or(0))
        }
    }

    /// Whether the peer sent `close_notify`.
    pub(super) fn peer_notified(&self, c: ConnId) -> Result<bool> {
        Ok(self.open(c)?.peer_notified)
    }

    pub(super) fn peek(&self, c: ConnId) -> Result<&[u8]> {
        Ok(self.open(c)?.plain.bytes())
    }

    pub(super) fn consume(&mut self, t: &mut Transport, c: ConnId, n: usize) -> Result<()> {
        self.open_mut(c)?.plain.consume(n);
        self.receive(t, c, false);
        Ok(())
    }

    pub(super) fn send_room(&self, t: &Transport, c: ConnId) -> Result<usize> {
        let s = self.open(c)?;
        Ok(self.room(s, t, c))
    }

    pub(super) fn write(&mut self, t: &mut Transport, c: ConnId, data: &[u8]) -> Result<usize> {
        let s = self.open(c)?;
        if s.shut {
            return Err(Error::Config(format!("{c}: write after shutdown")));
        }
        let room = self.room(s, t, c);
        let Some(s) = self.session_mut(c) else {
            return Err(Error::NotOpen(format!("{c} is not open")));
        };
        let take = data.len().min(room);
        let n = if take == 0 {
            0
        } else {
            s.tls
                .writer()
                .write(&data[..take])
                .map_err(|e| Error::Config(format!("{c}: TLS write: {e}")))?
        };
        if s.tls.is_handshaking() {
            s.early += n;
        }
        pump_out(s, t, c);
        if n < data.len() {
            s.want_writable = true;
        }
        if s.pending() {
            self.mark_dirty(c);
        }
        Ok(n)
    }

    pub(super) fn flush(&mut self, t: &mut Transport, c: ConnId) -> Result<()> {
        let s = self.open_mut(c)?;
        pump_out(s, t, c);
        t.flush(c)
    }

    /// `close_notify`, then the engine's FIN (`close`: and the end of the
    /// connection) once rustls's output is in the engine's buffer.
    fn finish(&mut self, t: &mut Transport, c: ConnId, close: bool) -> Result<()> {
        let s = self.open_mut(c)?;
        s.shut = true;
        if close {
            s.closing = true;
            s.plain.consume(usize::MAX);
        }
        if s.then != Some(true) {
            s.then = Some(close);
        }
        // Sent once (rustls sends it at most once); during the handshake,
        // after the plaintext written before it.
        if s.tls.is_handshaking() {
            s.notify_pending = true;
        } else {
            s.tls.send_close_notify();
        }
        self.settle(t, c);
        Ok(())
    }

    pub(super) fn shutdown(&mut self, t: &mut Transport, c: ConnId) -> Result<()> {
        if self.open(c)?.shut {
            return Ok(());
        }
        self.finish(t, c, false)
    }

    pub(super) fn close(&mut self, t: &mut Transport, c: ConnId) -> Result<()> {
        self.finish(t, c, true)
    }

    pub(super) fn abort(&mut self, t: &mut Transport, c: ConnId) -> Result<()> {
        let s = self
            .session_mut(c)
            .ok_or_else(|| Error::NotOpen(format!("{c} is not open")))?;
        s.closing = true;
        s.then = None;
        s.plain.consume(usize::MAX);
        t.abort(c)
    }

    /// Sends what rustls holds and takes the steps it was waiting for.
    fn settle(&mut self, t: &mut Transport, c: ConnId) {
        let half = self.tx_buffer / 2;
        let Some(s) = self.session_mut(c) else {
            return;
        };
        pump_out(s, t, c);
        if s.notify_pending && !s.tls.is_handshaking() {
            s.notify_pending = false;
            s.tls.send_close_notify();
            pump_out(s, t, c);
        }
        if let Some(close) = s.then
            && !s.notify_pending
            && !s.tls.wants_write()
        {
            s.then = None;
            let _ = if close { t.close(c) } else { t.shutdown(c) };
        }
        let mut writable = false;
        if s.want_writable && !s.closing && !s.shut {
            let room = if s.tls.wants_write() {
                0
            } else {
                plaintext_room(t.engine_send_room(c).unwrap_or(0))
            };
            if room >= half {
                s.want_writable = false;
                writable = true;
            }
        } else if s.closing || s.shut {
            s.want_writable = false;
        }
        let pending = s.pending();
        if writable {
            self.events.push_back(Event::Writable(c));
        }
        if pending {
            self.mark_dirty(c);
        }
    }

    /// After the engine's pass: moves on every session with work left.
    /// Returns the events it raised.
    pub(super) fn after_poll(&mut self, t: &mut Transport) -> usize {
        let before = self.events.len();
        let dirty = std::mem::take(&mut self.dirty);
        for c in dirty {
            if let Some(s) = self.session_mut(c) {
                s.in_dirty = false;
                self.settle(t, c);
            }
        }
        self.events.len() - before
    }

    /// The next event for the application, with TLS's work done on the
    /// engine's events for TLS connections.
    pub(super) fn next_event(&mut self, t: &mut Transport) -> Option<Event> {
        loop {
            if let Some(ev) = self.events.pop_front() {
                if let Event::Readable(c) | Event::Writable(c) | Event::PeerClosed(c) = ev
                    && self.open(c).is_err()
                {
                    continue;
                }
                return Some(ev);
            }
            let ev = t.next_event()?;
            match ev {
                Event::Accepted { listener, conn } => {
                    let config = self.servers.get(listener.0 as usize).cloned().flatten();
                    if let Some(config) = config {
                        match rustls::ServerConnection::new(config) {
                            Ok(sc) => self.insert(conn, sc.into()),
                            Err(e) => {
                                tracing::warn!(%conn, error = %e, "transport: TLS server session refused");
                                let _ = t.abort(conn);
                                continue;
                            }
                        }
                    }
                    return Some(ev);
                }
                Event::Connected(c) => {
                    if self.owns(c) {
                        self.settle(t, c);
                        if self.open(c).is_err() {
                            continue;
                        }
                    }
                    return Some(ev);
                }
                Event::Readable(c) => {
                    if !self.owns(c) {
                        return Some(ev);
                    }
                    self.receive(t, c, false);
                }
                Event::Writable(c) => {
                    if !self.owns(c) {
                        return Some(ev);
                    }
                    self.settle(t, c);
                }
                Event::PeerClosed(c) => {
                    if !self.owns(c) {
                        return Some(ev);
                    }
                    self.receive(t, c, true);
                }
                Event::Closed(c, _) => {
                    if let Some(slot) = self.sessions.get_mut(c.index as usize)
                        && slot.as_ref().is_some_and(|s| s.generation == c.generation)
                        && let Some(s) = slot.take()
                        && s.failed
                    {
                        return Some(Event::Closed(c, CloseReason::Tls));
                    }
                    return Some(ev);
                }
                Event::Datagrams(_) => return Some(ev),
            }
        }
    }
}

impl Transport {
    /// Runs `f` with the TLS layer taken out, so that the transport it is
    /// given answers for the engine's bytes (ciphertext); `None` when no
    /// connection ever used TLS.
    pub(super) fn with_tls<R>(
        &mut self,
        f: impl FnOnce(&mut TlsLayer, &mut Transport) -> R,
    ) -> Option<R> {
        let mut layer = self.tls.take()?;
        let r = f(&mut layer, self);
        self.tls = Some(layer);
        Some(r)
    }

    /// The TLS layer, when `c` is one of its connections.
    pub(super) fn tls_for(&self, c: ConnId) -> Option<&TlsLayer> {
        self.tls.as_deref().filter(|l| l.owns(c))
    }

    fn tls_layer(&mut self) -> &mut TlsLayer {
        let config = &self.core.config;
        self.tls
            .get_or_insert_with(|| Box::new(TlsLayer::new(config)))
    }

    /// Listens on `addr` as [`Self::listen`] does, and speaks TLS with
    /// `config` on every connection the listener accepts: the
    /// application's reads and writes are plaintext, and the handshake
    /// runs before the first `Readable` (see the [module docs](self)).
    ///
    /// # Errors
    ///
    /// As [`Self::listen`].
    pub fn listen_tls(
        &mut self,
        addr: SocketAddr,
        config: Arc<ServerConfig>,
    ) -> Result<ListenerId> {
        let l = self.listen(addr)?;
        let servers = &mut self.tls_layer().servers;
        let i = l.0 as usize;
        if servers.len() <= i {
            servers.resize(i + 1, None);
        }
        servers[i] = Some(config);
        Ok(l)
    }

    /// Connects to `addr` as [`Self::connect`] does and speaks TLS with
    /// `config`, checking that the server's certificate is valid for
    /// `name`. Writes before the handshake completes are held (up to
    /// [`Config::tx_buffer`] bytes) and sent once it has.
    ///
    /// # Errors
    ///
    /// As [`Self::connect`], and [`Error::Config`] when rustls refuses
    /// the configuration.
    pub fn connect_tls(
        &mut self,
        addr: SocketAddr,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> Result<ConnId> {
        let session = rustls::ClientConnection::new(config, name)
            .map_err(|e| tls_config_err("a client session", e))?;
        let c = self.connect(addr)?;
        self.tls_layer().insert(c, session.into());
        self.with_tls(|l, t| l.settle(t, c));
        Ok(c)
    }

    /// A TLS connection's rustls state (the negotiated version, cipher
    /// suite and ALPN protocol, the peer's certificates), or `None` for a
    /// connection without TLS.
    pub fn tls_session(&self, c: ConnId) -> Option<&rustls::Connection> {
        self.tls_for(c)?.session(c).map(|s| &s.tls)
    }

    /// Forgets a closed listener's TLS configuration.
    pub(super) fn tls_unlisten(&mut self, l: ListenerId) {
        if let Some(slot) = self
            .tls
            .as_mut()
            .and_then(|t| t.servers.get_mut(l.0 as usize))
        {
            *slot = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_FRAGMENT, RECORD_OVERHEAD, plaintext_room};

    #[test]
    fn sealed_plaintext_fits_the_room_it_was_sized_for() {
        for room in (0..200_000).step_by(97).chain([
            MAX_FRAGMENT,
            MAX_FRAGMENT + RECORD_OVERHEAD,
            MAX_FRAGMENT + RECORD_OVERHEAD + 1,
        ]) {
            let n = plaintext_room(room);
            let sealed = n + n.div_ceil(MAX_FRAGMENT) * RECORD_OVERHEAD;
            assert!(
                sealed <= room,
                "{n} plaintext bytes seal to {sealed} > {room}"
            );
            // And it wastes no more than a record's overhead per record.
            assert!(room - n <= room.div_ceil(MAX_FRAGMENT) * RECORD_OVERHEAD + RECORD_OVERHEAD);
        }
    }
}
