//! TLS over both kernel engines: against rustls's blocking client on a
//! thread, between the transport's own client and server, and refusing
//! an untrusted certificate and plaintext, every byte compared.

use super::*;
use crate::transport::tls::{self, ServerName};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

on_every_engine!(
    random_reads_and_writes_both_ways_through_small_buffers_lose_nothing,
    echoes_through_tls_to_a_rustls_client_and_says_close_notify,
    its_own_client_and_server_talk_beside_a_plain_connection,
    an_untrusted_certificate_ends_both_sides_with_the_tls_reason,
    plaintext_to_a_tls_listener_gets_an_alert_and_is_closed,
);

/// A CA and a certificate for `localhost` and 127.0.0.1 that it signed,
/// as PEM files in a directory of the test's own.
pub(crate) struct Pki {
    dir: PathBuf,
}

impl Pki {
    pub(crate) fn new(tag: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "dp-tls-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("dataplane test CA {tag}"),
        );
        let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key).expect("CA");
        let key = rcgen::KeyPair::generate().expect("key");
        let leaf =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("params")
                .signed_by(&key, &ca)
                .expect("certificate");
        std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
        std::fs::write(dir.join("cert.pem"), leaf.pem()).expect("write");
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("write");
        Self { dir }
    }

    pub(crate) fn server(&self) -> Arc<tls::ServerConfig> {
        tls::server_config(&self.dir.join("cert.pem"), &self.dir.join("key.pem"), &[])
            .expect("server config")
    }

    pub(crate) fn client(&self) -> Arc<tls::ClientConfig> {
        tls::client_config(&self.dir.join("ca.pem"), &[]).expect("client config")
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(crate) fn localhost() -> ServerName<'static> {
    ServerName::try_from("localhost").expect("name")
}

fn echoes_through_tls_to_a_rustls_client_and_says_close_notify(kind: EngineKind) {
    let pki = Pki::new("echo");
    // Small buffers, so that both directions fill and push back.
    let mut t = Transport::new(Config {
        rx_buffer: 16 * 1024,
        tx_buffer: 8 * 1024,
        ..cfg(kind)
    })
    .expect("transport");
    let l = t.listen_tls(any_port(), pki.server()).expect("listen");
    let addr = t.listener_addr(l).expect("addr");
    let client_config = pki.client();
    let data = pattern(1 << 20, 11);
    let sent = data.clone();
    let client = std::thread::spawn(move || {
        let conn = rustls::ClientConnection::new(client_config, localhost()).expect("session");
        let mut s = rustls::StreamOwned::new(conn, TcpStream::connect(addr).expect("connect"));
        let mut back = Vec::new();
        for piece in sent.chunks(64 * 1024) {
            s.write_all(piece).expect("write");
            let mut got = vec![0u8; piece.len()];
            s.read_exact(&mut got).expect("read");
            back.extend_from_slice(&got);
        }
        s.conn.send_close_notify();
        s.flush().expect("flush");
        // The server answers close_notify with its own before the FIN:
        // without it, rustls reads an unexpected end of file.
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).expect("a clean end");
        assert!(rest.is_empty());
        back
    });
    drive(&mut t, |t, ev| {
        echo(t, ev);
        matches!(ev, Event::Closed(..))
    });
    let back = client.join().expect("client");
    assert!(back == data, "the echo differs");
    let st = t.stats();
    assert_eq!((st.tls_handshakes, st.tls_failed), (1, 0));
}

fn its_own_client_and_server_talk_beside_a_plain_connection(kind: EngineKind) {
    let pki = Pki::new("pair");
    let mut t = Transport::new(cfg(kind)).expect("transport");
    let secure = t.listen_tls(any_port(), pki.server()).expect("listen");
    let plain = t.listen(any_port()).expect("listen");
    let secure_addr = t.listener_addr(secure).expect("addr");
    let plain_addr = t.listener_addr(plain).expect("addr");
    let c = t
        .connect_tls(secure_addr, pki.client(), localhost())
        .expect("connect");
    let p = t.connect(plain_addr).expect("connect");
    // Written and shut down before the handshake: held, then sent, then
    // close_notify and FIN.
    assert!(t.send_room(c).expect("room") > 0);
    assert_eq!(t.write(c, b"hello").expect("write"), 5);
    t.shutdown(c).expect("shutdown");
    assert!(t.write(c, b"late").is_err());
    assert_eq!(t.write(p, b"plain").expect("write"), 5);
    t.shutdown(p).expect("shutdown");
    let mut heard: std::collections::HashMap<ConnId, Vec<u8>> = Default::default();
    let mut closed = 0;
    drive(&mut t, |t, ev| {
        match ev {
            Event::Readable(x) => {
                let got = t.peek(x).expect("peek").to_vec();
                t.consume(x, got.len()).expect("consume");
                heard.entry(x).or_default().extend_from_slice(&got);
            }
            Event::PeerClosed(x) => {
                // The servers' sides answer after the clients' FIN.
                if x != c && x != p {
                    assert_eq!(t.write(x, b"world").expect("write"), 5);
                }
                t.close(x).expect("close");
            }
            Event::Closed(x, why) => {
                assert_eq!(why, CloseReason::Local, "{x}");
                closed += 1;
            }
            _ => {}
        }
        closed == 4
    });
    assert_eq!(heard.get(&c).map(Vec::as_slice), Some(&b"world"[..]));
    assert_eq!(heard.get(&p).map(Vec::as_slice), Some(&b"world"[..]));
    let mut bodies: Vec<&[u8]> = heard.values().map(Vec::as_slice).collect();
    bodies.sort();
    assert_eq!(bodies, [&b"hello"[..], b"plain", b"world", b"world"]);
    let st = t.stats();
    assert_eq!((st.tls_handshakes, st.tls_failed), (2, 0));
}

fn an_untrusted_certificate_ends_both_sides_with_the_tls_reason(kind: EngineKind) {
    let pki = Pki::new("server");
    let stranger = Pki::new("stranger");
    let mut t = Transport::new(cfg(kind)).expect("transport");
    let l = t.listen_tls(any_port(), pki.server()).expect("listen");
    let addr = t.listener_addr(l).expect("addr");
    let c = t
        .connect_tls(addr, stranger.client(), localhost())
        .expect("connect");
    assert_eq!(t.write(c, b"secret").expect("write"), 6);
    let mut reasons = Vec::new();
    drive(&mut t, |t, ev| {
        match ev {
            Event::Readable(_) => panic!("plaintext over an untrusted connection"),
            Event::PeerClosed(x) => t.close(x).expect("close"),
            Event::Closed(x, why) => reasons.push((x == c, why)),
            _ => {}
        }
        reasons.len() == 2
    });
    reasons.sort_by_key(|r| r.0);
    // The client refused the certificate; the server heard its alert.
    assert_eq!(
        reasons,
        [(false, CloseReason::Tls), (true, CloseReason::Tls)]
    );
    assert_eq!(t.stats().tls_failed, 2);
    assert_eq!(t.stats().tls_handshakes, 0);
}

fn plaintext_to_a_tls_listener_gets_an_alert_and_is_closed(kind: EngineKind) {
    let pki = Pki::new("plain");
    let mut t = Transport::new(cfg(kind)).expect("transport");
    let l = t.listen_tls(any_port(), pki.server()).expect("listen");
    let addr = t.listener_addr(l).expect("addr");
    let client = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("write");
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        got
    });
    let mut why = None;
    drive(&mut t, |_, ev| {
        if let Event::Closed(_, r) = ev {
            why = Some(r);
        }
        assert!(!matches!(ev, Event::Readable(_)));
        why.is_some()
    });
    assert_eq!(why, Some(CloseReason::Tls));
    let got = client.join().expect("client");
    // An alert record (content type 21) and then the end of the stream.
    assert_eq!(got.first(), Some(&21), "{got:?}");
}

/// Both sides of one TLS connection send 300 KB at once through 4 KiB
/// receive and 2 KiB send buffers, writing random amounts whenever there
/// is room and consuming random amounts of what arrived, so that every
/// backpressure path (a full plaintext buffer, ciphertext left in the
/// engine's buffer, a write cut to the sealed room) is taken many times;
/// every byte arrives in order, then both close cleanly.
fn random_reads_and_writes_both_ways_through_small_buffers_lose_nothing(kind: EngineKind) {
    let pki = Pki::new("random");
    let mut t = Transport::new(Config {
        rx_buffer: 4096,
        tx_buffer: 2048,
        ..cfg(kind)
    })
    .expect("transport");
    let l = t.listen_tls(any_port(), pki.server()).expect("listen");
    let addr = t.listener_addr(l).expect("addr");
    let client = t
        .connect_tls(addr, pki.client(), localhost())
        .expect("connect");
    const LEN: usize = 300_000;
    let want = [pattern(LEN, 21), pattern(LEN, 22)];
    // Per side (0: client, 1: server): its id, bytes sent, bytes heard.
    let mut ids = [Some(client), None];
    let mut sent = [0usize; 2];
    let mut heard: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let mut shut = [false; 2];
    let mut done = [false; 2];
    let mut closed = 0;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ kind as u64;
    let mut rnd = move |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n.max(1) as u64) as usize
    };
    // Bounded by passes, not by a clock: a loopback pass that moves
    // nothing yields the core, and a few hundred thousand of them is far
    // past what 600 KB needs.
    let mut passes = 0u32;
    while closed < 2 {
        passes += 1;
        assert!(
            passes < 5_000_000,
            "no end after {passes} passes: sent {sent:?}, heard {} and {}",
            heard[0].len(),
            heard[1].len()
        );
        t.poll().expect("poll");
        while let Some(ev) = t.next_event() {
            match ev {
                Event::Accepted { conn, .. } => ids[1] = Some(conn),
                Event::Readable(c) => {
                    let side = usize::from(Some(c) == ids[1]);
                    let got = t.peek(c).expect("peek");
                    let n = 1 + rnd(got.len());
                    heard[side].extend_from_slice(&got[..n]);
                    t.consume(c, n).expect("consume");
                }

                // Announced only once no byte before it waits, decrypted
                // or not.
                Event::PeerClosed(c) => assert!(t.peer_closed(c).expect("open"), "{c}"),
                Event::Closed(_, why) => {
                    assert_eq!(why, CloseReason::Local);
                    closed += 1;
                }
                _ => {}
            }
        }
        for side in 0..2 {
            let Some(c) = ids[side] else { continue };
            // Read on without waiting for an event: a partial consume
            // leaves bytes that no new event announces.
            if let Ok(got) = t.peek(c)
                && !got.is_empty()
            {
                let n = 1 + rnd(got.len());
                heard[side].extend_from_slice(&got[..n]);
                t.consume(c, n).expect("consume");
            }
            if shut[side] {
                if !done[side]
                    && t.peer_closed(c).unwrap_or(false)
                    && t.peek(c).is_ok_and(<[u8]>::is_empty)
                {
                    done[side] = true;
                    t.close(c).expect("close");
                }
                continue;
            }
            let Ok(room) = t.send_room(c) else { continue };
            if room > 0 && sent[side] < LEN {
                let n = (1 + rnd(room)).min(LEN - sent[side]);
                let took = t
                    .write(c, &want[side][sent[side]..sent[side] + n])
                    .expect("write");
                assert_eq!(took, n, "send_room promised {room}");
                sent[side] += took;
            }
            if sent[side] == LEN {
                shut[side] = true;
                t.shutdown(c).expect("shutdown");
            }
        }
        std::thread::yield_now();
    }
    // What each side heard is what the other sent.
    assert!(
        heard[1] == want[0],
        "the server heard {} bytes, not the client's",
        heard[1].len()
    );
    assert!(
        heard[0] == want[1],
        "the client heard {} bytes, not the server's",
        heard[0].len()
    );
    assert_eq!(t.stats().tls_handshakes, 2);
}
