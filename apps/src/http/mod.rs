//! `dp-http`: an HTTP/1.1 server, one shard per lcore, on the transport
//! and `dataplane::proto::http`.
//!
//! Routes: `/` and `/plaintext` (a static body), `/json` (a small JSON
//! document), `POST /echo` (the body back), `/files/NAME` (files of
//! `--files DIR`, read into memory at the start and served from there)
//! and `/metrics` (the lcores' and the shards' counters in the Prometheus
//! text format).

pub mod server;

use anyhow::Context;
use dataplane::backend::Choice;
use dataplane::metrics::{Labels, Metrics, counters};
use dataplane::proto::http::{Limits, Request, Response, Router};
use dataplane::transport::EngineKind;
use serde::Serialize;
use server::{HttpConfig, HttpCounters, HttpShard};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The body of `/` and `/plaintext`.
pub const HELLO: &[u8] = b"Hello, World!";

/// `dp-http`'s command line.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "dp-http", about = "An HTTP/1.1 server, one shard per lcore")]
pub struct HttpArgs {
    /// The address and port to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The CPUs of the shards, as a list (`0-3,8`); else
    /// `DATAPLANE_CPUS`, else the plan's.
    #[arg(long)]
    pub cpus: Option<String>,
    /// Shards (one lcore each); else one per CPU of `--cpus`, else the
    /// plan's application lcores.
    #[arg(long)]
    pub lcores: Option<usize>,
    /// The transport engine: auto, io_uring or epoll.
    #[arg(long, default_value = "auto")]
    pub backend: String,
    /// A directory whose files `/files/NAME` serves (read into memory at
    /// the start; subdirectories are not served).
    #[arg(long)]
    pub files: Option<PathBuf>,
    /// Also serve Prometheus `/metrics` on this address (loopback unless
    /// told otherwise), as every app does, for a scraper kept off the
    /// server's own port; the server's `/metrics` route serves the same.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Serve `/metrics` only to requests with `Authorization: Bearer
    /// TOKEN` (others get 401).
    #[arg(long = "metrics-token", value_name = "TOKEN")]
    pub metrics_token: Option<String>,
    /// Speak HTTPS on `--listen` with this certificate chain (PEM, the
    /// server's certificate first); needs `--tls-key`.
    #[arg(long = "tls-cert", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of `--tls-cert` (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long = "tls-key", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The largest request body (`POST /echo`; over it, 413).
    #[arg(long = "max-body", default_value = "1mb", value_parser = crate::kv::parse_bytes)]
    pub max_body: usize,
    /// Stop after this many seconds (default: at SIGINT or SIGTERM).
    #[arg(long)]
    pub duration: Option<f64>,
    /// A line of counters every second on standard error.
    #[arg(long)]
    pub stats: bool,
    /// The summary at the end as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// The user-space TCP/IP stack instead of the kernel's sockets.
    #[command(flatten)]
    pub stack: crate::serve::StackArgs,
    /// Logging.
    #[command(flatten)]
    pub log: crate::LogArgs,
}

/// What a run did.
#[derive(Debug, Serialize)]
pub struct HttpSummary {
    /// The address served.
    pub addr: SocketAddr,
    /// The engine.
    pub engine: String,
    /// Seconds served.
    pub seconds: f64,
    /// CPU seconds the shards spent on passes that found work.
    pub busy_seconds: f64,
    /// Requests answered, refused ones included.
    pub requests: u64,
    /// Requests refused as malformed or over a limit.
    pub refused: u64,
    /// Responses by class, 1xx to 5xx.
    pub by_class: [u64; 5],
    /// Connections accepted.
    pub accepted: u64,
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, e)| e) {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("txt") => "text/plain; charset=utf-8",
        Some("json") => "application/json",
        Some("css") => "text/css",
        Some("js") => "text/javascript",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

/// The files of `dir`, by name.
fn load_files(dir: &std::path::Path) -> anyhow::Result<HashMap<String, Arc<[u8]>>> {
    let mut files = HashMap::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("--files {}", dir.display()))? {
        let e = e?;
        if !e.file_type()?.is_file() {
            continue;
        }
        let Ok(name) = e.file_name().into_string() else {
            continue;
        };
        let data =
            std::fs::read(e.path()).with_context(|| format!("reading {}", e.path().display()))?;
        files.insert(name, Arc::from(data));
    }
    Ok(files)
}

/// The routes of shard `id`.
/// Whether a request's `Authorization` header carries `Bearer TOKEN`
/// (RFC 6750 section 2.1; the scheme is case-insensitive). The token is
/// compared in time that does not depend on where it differs.
fn bearer_ok(req: &Request<'_>, token: &[u8]) -> bool {
    let Some(value) = req.header("authorization") else {
        return false;
    };
    let Some((scheme, given)) = value.split_at_checked(7) else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return false;
    }
    let diff = token
        .iter()
        .zip(given)
        .fold(token.len() ^ given.len(), |d, (x, y)| {
            d | usize::from(x ^ y)
        });
    diff == 0
}

fn router(
    id: usize,
    files: Arc<HashMap<String, Arc<[u8]>>>,
    metrics: Metrics,
    metrics_token: Option<Arc<[u8]>>,
) -> Router {
    let mut r = Router::new();
    fn hello(_: &Request<'_>, res: &mut Response<'_>) {
        res.header("Content-Type", "text/plain").send(HELLO);
    }
    r.route("GET", "/", hello);
    r.route("GET", "/plaintext", hello);
    let json = format!("{{\"message\":\"Hello, World!\",\"shard\":{id}}}");
    r.route("GET", "/json", move |_, res| {
        res.header("Content-Type", "application/json")
            .send(json.as_bytes());
    });
    r.route("POST", "/echo", |req, res| {
        let kind = req
            .header("content-type")
            .and_then(|v| std::str::from_utf8(v).ok())
            .unwrap_or("application/octet-stream");
        res.header("Content-Type", kind).send(req.body);
    });
    r.prefix("GET", "/files/", move |req, res| {
        let name = std::str::from_utf8(&req.path[b"/files/".len()..]).unwrap_or("");
        match files.get(name) {
            Some(data) => {
                res.header("Content-Type", content_type(name)).send(data);
            }
            None => {
                res.status(404).send(b"not found\n");
            }
        }
    });
    r.route("GET", "/metrics", move |req, res| {
        if let Some(token) = &metrics_token
            && !bearer_ok(req, token)
        {
            res.status(401)
                .header("WWW-Authenticate", "Bearer realm=\"metrics\"")
                .send(b"a bearer token is required\n");
            return;
        }
        let text = metrics.render();
        res.header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            .send(text.as_bytes());
    });
    r
}

fn shard_metrics(metrics: &Metrics, shards: Vec<Arc<HttpCounters>>) {
    metrics.transports(
        shards
            .iter()
            .enumerate()
            .map(|(i, c)| (vec![("shard".into(), i.to_string())], c.transport.clone()))
            .collect(),
    );
    metrics.collect(move |r| {
        let per = |f: &dyn Fn(&HttpCounters) -> u64| {
            counters(shards.iter().enumerate().map(|(i, c)| {
                let l: Labels = vec![("shard".into(), i.to_string())];
                (l, f(c))
            }))
        };
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        r.register(
            "dp_http_requests",
            "Requests answered",
            per(&|c| load(&c.requests)),
        );
        r.register(
            "dp_http_refused",
            "Requests refused as malformed",
            per(&|c| load(&c.refused)),
        );
        r.register(
            "dp_http_accepted",
            "Connections accepted",
            per(&|c| load(&c.accepted)),
        );
        r.register(
            "dp_http_rx_bytes",
            "Bytes received",
            per(&|c| load(&c.rx_bytes)),
        );
        r.register(
            "dp_http_tx_bytes",
            "Bytes sent",
            per(&|c| load(&c.tx_bytes)),
        );
        let classes = counters(shards.iter().enumerate().flat_map(|(i, c)| {
            (0..5).map(move |k| {
                let l: Labels = vec![
                    ("shard".into(), i.to_string()),
                    ("class".into(), format!("{}xx", k + 1)),
                ];
                (l, c.by_class[k].load(Ordering::Relaxed))
            })
        }));
        r.register("dp_http_responses", "Responses by status class", classes);
    });
}

/// Runs the server until `--duration` or `quit`.
///
/// # Errors
///
/// Bad arguments, a plan that cannot be made, an address that cannot be
/// bound.
pub fn run(args: &HttpArgs, quit: Arc<AtomicBool>) -> anyhow::Result<HttpSummary> {
    let engine: Choice<EngineKind> = args
        .backend
        .parse()
        .map_err(|e| anyhow::anyhow!("--backend {}: {e}", args.backend))?;
    let files = Arc::new(match &args.files {
        Some(dir) => load_files(dir)?,
        None => HashMap::new(),
    });
    let crate::serve::Shards { mut group, lcores } =
        crate::serve::plan_shards(args.cpus.as_deref(), args.lcores)?;
    let limits = Limits {
        max_body: args.max_body,
        ..Limits::default()
    };
    let transport = dataplane::transport::Config {
        engine,
        // A whole request must fit the receive buffer.
        rx_buffer: limits.max_body + limits.max_head + 16 * 1024,
        ..Default::default()
    };
    let tls = crate::serve::tls_config(
        args.tls_cert.as_deref(),
        args.tls_key.as_deref(),
        &["http/1.1"],
    )?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let stack = crate::serve::StackPorts::open(&args.stack, lcores.len())?;
    let (addr, engine) = match &stack {
        Some(s) => (s.listen_addr(args.listen.port()), EngineKind::Stack),
        None => crate::serve::probe_listen(args.listen, &transport)?,
    };
    let config = Arc::new(HttpConfig {
        listen: addr,
        transport,
        limits,
        stack,
        tls,
    });
    let metrics = Metrics::new();
    let token: Option<Arc<[u8]>> = args.metrics_token.as_ref().map(|t| Arc::from(t.as_bytes()));
    let mut shards = Vec::new();
    for (i, lcore) in lcores.iter().enumerate() {
        let c = Arc::new(HttpCounters::default());
        let r = router(i, files.clone(), metrics.clone(), token.clone());
        group.poller(*lcore, HttpShard::new(i, config.clone(), r, c.clone()))?;
        shards.push(c);
    }
    shard_metrics(&metrics, shards.clone());
    let running = group.launch()?;
    metrics.lcores(running.stats_view());
    let _metrics_server = match args.metrics {
        Some(at) => Some(
            metrics
                .serve(at)
                .with_context(|| format!("serving /metrics on {at}"))?,
        ),
        None => None,
    };
    let flags = shards.clone();
    // Acquire: pairs with each shard's Release store once it listens.
    let ready = move || flags.iter().all(|c| c.ready.load(Ordering::Acquire));
    let banner = format!(
        "dp-http: {} shard(s) listening on {addr} ({scheme}), {engine} engine, {} file(s)",
        lcores.len(),
        files.len()
    );
    let start = Instant::now();
    let watched = shards.clone();
    let stats = args.stats;
    let mut last = (Instant::now(), 0u64);
    let line = move || {
        let total: u64 = watched
            .iter()
            .map(|c| c.requests.load(Ordering::Relaxed))
            .sum();
        let open: u64 = watched.iter().map(|c| c.open.load(Ordering::Relaxed)).sum();
        let rate = (total - last.1) as f64 / last.0.elapsed().as_secs_f64();
        last = (Instant::now(), total);
        stats.then(|| {
            format!("dp-http: {rate:.0} requests/s, {open} connections, {total} requests in all")
        })
    };
    let reports = crate::serve::watch(
        running,
        quit,
        args.duration.map(|d| Duration::from_secs_f64(d.max(0.0))),
        ready,
        banner,
        line,
    )?;
    let sum = |f: &dyn Fn(&HttpCounters) -> u64| shards.iter().map(|c| f(c)).sum::<u64>();
    let mut by_class = [0u64; 5];
    for (k, v) in by_class.iter_mut().enumerate() {
        *v = sum(&|c| c.by_class[k].load(Ordering::Relaxed));
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(HttpSummary {
        addr,
        engine: engine.to_string(),
        seconds,
        busy_seconds: crate::serve::busy_seconds(&reports, &lcores, seconds),
        requests: sum(&|c| c.requests.load(Ordering::Relaxed)),
        refused: sum(&|c| c.refused.load(Ordering::Relaxed)),
        by_class,
        accepted: sum(&|c| c.accepted.load(Ordering::Relaxed)),
    })
}
