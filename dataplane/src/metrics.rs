//! Prometheus/OpenMetrics exposition of the counters lcores already
//! publish, through the official `prometheus-client` crate, and a small
//! HTTP endpoint that serves it at `/metrics`.
//!
//! Nothing here touches the data path: lcores keep their cache-padded
//! counters and publish them as they always do; a scrape builds a fresh
//! registry from the collectors ([`Metrics::collect`]), which read those
//! published values, and encodes it. So a program with metrics on runs
//! the same fast path as one without (docs/performance.md measures it).
//!
//! The endpoint is a control thread answering `GET /metrics` (and `HEAD`)
//! with the text format, 404 for any other path, one request per
//! connection; it binds where it is told and nowhere by default (programs
//! take `--metrics ADDR`; use a loopback address unless the network must
//! scrape it).

mod histogram;

pub use histogram::LatencyHistogram;

use crate::lcore::LcoreStatsView;
use crate::{Error, Result};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
pub use prometheus_client::registry::Registry;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

/// Label pairs of one series.
pub type Labels = Vec<(String, String)>;

/// Something that adds metrics to the registry of one scrape.
pub type Collect = Arc<dyn Fn(&mut Registry) + Send + Sync>;

/// The collectors of a program; cheap to clone (shared).
#[derive(Clone, Default)]
pub struct Metrics {
    collectors: Arc<RwLock<Vec<Collect>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// A family of counters, one per label set, set to the values given:
/// what a collector registers for counters it reads from elsewhere.
pub fn counters(values: impl IntoIterator<Item = (Labels, u64)>) -> Family<Labels, Counter> {
    let f = Family::<Labels, Counter>::default();
    for (labels, v) in values {
        f.get_or_create(&labels).inc_by(v);
    }
    f
}

/// A family of floating-point gauges, one per label set, set to the values
/// given (latency quantiles, ratios).
pub fn gauges(
    values: impl IntoIterator<Item = (Labels, f64)>,
) -> Family<Labels, Gauge<f64, AtomicU64>> {
    let f = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    for (labels, v) in values {
        f.get_or_create(&labels).set(v);
    }
    f
}

/// A family of latency histograms, one per label set, each holding what
/// the histogram given for it holds (copied when the family is made, as
/// the scrape that makes it reads them).
pub fn histograms(
    values: impl IntoIterator<Item = (Labels, LatencyHistogram)>,
) -> Family<Labels, LatencyHistogram> {
    let f = Family::<Labels, LatencyHistogram>::default();
    for (labels, h) in values {
        f.get_or_create(&labels).add(&h);
    }
    f
}

/// An accelerator queue's counters (`dataplane_accel_*`): submissions,
/// completions, failures and the bytes read in place or staged each way,
/// for a collector that reads them from wherever its lcore publishes.
pub fn register_accel_queue(r: &mut Registry, q: &crate::accel::QueueStats) {
    let one = |v: u64| counters([(Vec::new(), v)]);
    r.register(
        "dataplane_accel_submitted",
        "Accelerator submissions",
        one(q.submitted),
    );
    r.register(
        "dataplane_accel_completed",
        "Accelerator completions",
        one(q.completed),
    );
    r.register(
        "dataplane_accel_failed",
        "Accelerator completions with a device error",
        one(q.failed),
    );
    r.register(
        "dataplane_accel_bytes_in_place",
        "Item bytes read in place",
        one(q.bytes_in_place),
    );
    r.register(
        "dataplane_accel_bytes_staged_in",
        "Item bytes copied to the device",
        one(q.bytes_staged_in),
    );
    r.register(
        "dataplane_accel_bytes_staged_out",
        "Item bytes copied back from the device",
        one(q.bytes_staged_out),
    );
}

impl Metrics {
    /// No collectors yet.
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// Adds a collector, run at every scrape.
    pub fn collect(&self, f: impl Fn(&mut Registry) + Send + Sync + 'static) {
        self.collectors
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::new(f));
    }

    /// Per lcore (`lcore`, `role` labels): passes, busy passes, work items,
    /// and busy and idle TSC cycles, as `/eal/lcore/usage` reports them.
    pub fn lcores(&self, view: LcoreStatsView) {
        self.collect(move |r| {
            let snap = view.snapshot();
            let labels = |l: &(crate::lcore::LcoreId, crate::lcore::Role, _, _)| -> Labels {
                vec![
                    ("lcore".into(), l.0.0.to_string()),
                    ("role".into(), l.1.to_string()),
                ]
            };
            let fam = |f: &dyn Fn(&crate::lcore::LcoreStatsSnapshot) -> u64| {
                counters(snap.iter().map(|l| (labels(l), f(&l.3))))
            };
            r.register(
                "dataplane_lcore_passes",
                "Poll passes of the lcore",
                fam(&|s| s.passes),
            );
            r.register(
                "dataplane_lcore_busy_passes",
                "Passes that found work",
                fam(&|s| s.busy_passes),
            );
            r.register(
                "dataplane_lcore_work_items",
                "Items of work the lcore's pollers reported",
                fam(&|s| s.work_items),
            );
            r.register(
                "dataplane_lcore_busy_cycles",
                "TSC cycles spent in passes that found work",
                fam(&|s| s.busy_cycles),
            );
            r.register(
                "dataplane_lcore_idle_cycles",
                "TSC cycles spent in passes that found none, and backing off",
                fam(&|s| s.idle_cycles),
            );
        });
    }

    /// Per worker (`worker` label): messages received and handled,
    /// errors, panics, restarts, and the queue depth now (a gauge).
    pub fn workers(&self, view: crate::worker::WorkerStatsView) {
        self.collect(move |r| {
            let snap = view.snapshot();
            let labels = |w: &crate::worker::WorkerStats| -> Labels {
                vec![("worker".into(), w.worker.0.to_string())]
            };
            let fam = |f: &dyn Fn(&crate::worker::WorkerStats) -> u64| {
                counters(snap.iter().map(|w| (labels(w), f(w))))
            };
            r.register(
                "dataplane_worker_received",
                "Messages taken from the queue",
                fam(&|w| w.received),
            );
            r.register(
                "dataplane_worker_handled",
                "Messages handled",
                fam(&|w| w.handled),
            );
            r.register(
                "dataplane_worker_errors",
                "Handler errors",
                fam(&|w| w.errors),
            );
            r.register(
                "dataplane_worker_panics",
                "Handler panics",
                fam(&|w| w.panics),
            );
            r.register(
                "dataplane_worker_restarts",
                "Restarts under the policy",
                fam(&|w| w.restarts),
            );
            let depth = Family::<Labels, Gauge>::default();
            for w in &snap {
                depth
                    .get_or_create(&labels(w))
                    .set(i64::try_from(w.queue_depth).unwrap_or(i64::MAX));
            }
            r.register(
                "dataplane_worker_queue_depth",
                "Messages waiting for the worker",
                depth,
            );
        });
    }

    /// Per transport (the labels given, e.g. a shard's): its connection,
    /// byte and TLS counters as its owner last published them
    /// (`dataplane_transport_*`; `open` is a gauge).
    pub fn transports(&self, transports: Vec<(Labels, Arc<crate::transport::PublishedStats>)>) {
        self.collect(move |r| {
            let Some((_, first)) = transports.first() else {
                return;
            };
            for (i, field) in first.read().enumerate() {
                let name = format!("dataplane_transport_{}", field.name);
                let values = transports
                    .iter()
                    .filter_map(|(labels, t)| t.read().nth(i).map(|p| (labels.clone(), p.value)));
                if field.gauge {
                    let g = Family::<Labels, Gauge>::default();
                    for (labels, v) in values {
                        g.get_or_create(&labels)
                            .set(i64::try_from(v).unwrap_or(i64::MAX));
                    }
                    r.register(name, field.help, g);
                } else {
                    r.register(name, field.help, counters(values));
                }
            }
        });
    }

    /// The text exposition of one scrape.
    pub fn render(&self) -> String {
        let mut r = Registry::default();
        let collectors = self
            .collectors
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for c in collectors {
            c(&mut r);
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &r);
        out
    }

    /// Serves `/metrics` on `addr` until the server is dropped.
    ///
    /// # Errors
    /// [`Error::Io`] when the address cannot be bound.
    pub fn serve(&self, addr: SocketAddr) -> Result<MetricsServer> {
        let listener = TcpListener::bind(addr)
            .map_err(|e| Error::io(format!("binding {addr} for /metrics"), e))?;
        let local = listener
            .local_addr()
            .map_err(|e| Error::io("the metrics address", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io("the metrics socket", e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (me, s) = (self.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                while !s.load(Ordering::Acquire) {
                    match listener.accept() {
                        Ok((conn, _)) => {
                            if let Err(e) = me.answer(conn) {
                                tracing::debug!("metrics: a request failed: {e}");
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Err(e) => tracing::debug!("metrics: accept failed: {e}"),
                    }
                }
            })
            .map_err(|e| Error::io("starting the metrics thread", e))?;
        tracing::info!(addr = %local, "serving /metrics");
        Ok(MetricsServer {
            addr: local,
            stop,
            thread: Some(thread),
        })
    }

    /// Reads one request (its head, at most 8 KiB, within 2 s) and
    /// answers it.
    fn answer(&self, mut conn: TcpStream) -> std::io::Result<()> {
        conn.set_nonblocking(false)?;
        conn.set_read_timeout(Some(Duration::from_secs(2)))?;
        conn.set_write_timeout(Some(Duration::from_secs(2)))?;
        let mut head = Vec::with_capacity(512);
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut buf)?;
            if n == 0 || head.len() + n > 8192 {
                return respond(
                    &mut conn,
                    "400 Bad Request",
                    "text/plain",
                    b"bad request\n",
                    true,
                );
            }
            head.extend_from_slice(&buf[..n]);
        }
        let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
        let line = String::from_utf8_lossy(line);
        let mut parts = line.split(' ');
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let path = target.split('?').next().unwrap_or("");
        match (method, path) {
            ("GET" | "HEAD", "/metrics") => respond(
                &mut conn,
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                self.render().as_bytes(),
                method == "GET",
            ),
            ("GET" | "HEAD", _) => respond(
                &mut conn,
                "404 Not Found",
                "text/plain",
                b"not found\n",
                true,
            ),
            _ => respond(
                &mut conn,
                "405 Method Not Allowed",
                "text/plain",
                b"method not allowed\n",
                true,
            ),
        }
    }
}

fn respond(
    conn: &mut TcpStream,
    status: &str,
    kind: &str,
    body: &[u8],
    with_body: bool,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes())?;
    if with_body {
        conn.write_all(body)?;
    }
    conn.flush()
}

/// A running `/metrics` endpoint; dropping it stops it.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// The address it listens on (the port chosen, for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, request: &str) -> String {
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn serves_the_text_format_and_refuses_the_rest() {
        let m = Metrics::new();
        m.collect(|r| {
            r.register(
                "dataplane_port_rx_packets",
                "Packets received",
                counters([(vec![("port".to_string(), "p0".to_string())], 42)]),
            );
        });
        let text = m.render();
        assert!(
            text.contains("# TYPE dataplane_port_rx_packets counter"),
            "{text}"
        );
        assert!(
            text.contains("dataplane_port_rx_packets_total{port=\"p0\"} 42"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));

        let s = m.serve("127.0.0.1:0".parse().unwrap()).unwrap();
        let ok = get(s.addr(), "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("port=\"p0\"} 42"));
        let head = get(s.addr(), "HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(
            head.starts_with("HTTP/1.1 200") && !head.contains("# EOF"),
            "{head}"
        );
        assert!(get(s.addr(), "GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get(s.addr(), "POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        // A head that never ends is refused, not read forever.
        let junk = "x".repeat(9000);
        assert!(get(s.addr(), &junk).starts_with("HTTP/1.1 400"));
    }
}
