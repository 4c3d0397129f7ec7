//! `dp-kv`: a Redis-compatible key-value server, shared nothing.
//!
//! Each application lcore runs a [`server::Shard`]: its own listener on
//! the same address (`SO_REUSEPORT` spreads the connections), its own
//! part of the keyspace ([`store::Store`]), and rings to the other shards
//! for commands on keys it does not own. The transport engine is chosen
//! as usual (io_uring, else epoll; `--backend` names one).

pub mod log;
pub mod server;
pub mod store;

use anyhow::Context;
use dataplane::backend::Choice;
use dataplane::lcore::LcoreId;
use dataplane::proto::resp::Limits;
use dataplane::transport::EngineKind;
use serde::Serialize;
use server::{KvConfig, Shard, ShardCounters};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// `dp-kv`'s command line: redis-server's `--port` and `--bind`, and the
/// framework's own.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "dp-kv",
    about = "A Redis-compatible key-value server, one shard per lcore"
)]
pub struct KvArgs {
    /// The TCP port.
    #[arg(long, default_value_t = 6379)]
    pub port: u16,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// A second port that speaks TLS (redis-server's `tls-port`; 0 picks
    /// one), with `--tls-cert-file` and `--tls-key-file`.
    #[arg(long = "tls-port", requires_all = ["tls_cert_file", "tls_key_file"])]
    pub tls_port: Option<u16>,
    /// The TLS certificate chain (PEM), as redis-server's `tls-cert-file`.
    #[arg(long = "tls-cert-file", value_name = "FILE", requires = "tls_port")]
    pub tls_cert_file: Option<std::path::PathBuf>,
    /// The private key of `--tls-cert-file` (PEM), as `tls-key-file`.
    #[arg(long = "tls-key-file", value_name = "FILE", requires = "tls_port")]
    pub tls_key_file: Option<std::path::PathBuf>,
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
    /// The memory limit over all shards (`100mb`, `2gb`, bytes; 0: none).
    /// Past it, the least recently used keys are evicted.
    #[arg(long, default_value = "0", value_parser = parse_bytes)]
    pub maxmemory: usize,
    /// Require `AUTH PASSWORD` (or `HELLO ... AUTH default PASSWORD`)
    /// before any other command, as redis-server's `requirepass`.
    #[arg(long)]
    pub requirepass: Option<String>,
    /// The longest bulk string a request may carry (`proto-max-bulk-len`).
    #[arg(long = "proto-max-bulk-len", default_value = "8mb", value_parser = parse_bytes)]
    pub max_bulk: usize,
    /// Durable mode: each shard logs its writes to `DIR/shard-I-of-N.log`
    /// on a block queue, replies to a write only once its log block is on
    /// stable storage, and replays the log at the start.
    #[arg(long, value_name = "DIR")]
    pub durable: Option<std::path::PathBuf>,
    /// The size of each shard's log file (created sparse).
    #[arg(long = "durable-size", default_value = "1gb", value_parser = parse_bytes)]
    pub durable_size: usize,
    /// The block backend of the logs: auto, io_uring, psync (or spdk for
    /// an NVMe target).
    #[arg(long = "durable-backend", default_value = "auto")]
    pub durable_backend: String,
    /// How a group of log writes is made durable: fua (each write durable
    /// on completion, one device round trip) or flush (the writes, then a
    /// flush: two).
    #[arg(long = "durable-commit", value_enum, default_value_t = log::Commit::Fua)]
    pub durable_commit: log::Commit,
    /// Serve Prometheus `/metrics` on this address (loopback unless told
    /// otherwise): the lcores', the shards' and their transports'
    /// counters.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
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

/// `100mb`, `2gb`, `64k`, or a byte count, as redis.conf writes memory.
///
/// # Errors
///
/// Text that is none of those.
pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let l = s.trim().to_ascii_lowercase();
    let split = l.find(|c: char| !c.is_ascii_digit()).unwrap_or(l.len());
    let (num, unit) = l.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size such as 100mb"))?;
    let mul: usize = match unit {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1024,
        "m" => 1_000_000,
        "mb" => 1 << 20,
        "g" => 1_000_000_000,
        "gb" => 1 << 30,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?} (k, kb, m, mb, g, gb)"
            ));
        }
    };
    n.checked_mul(mul)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// What a run did, for `--json` and the last line.
#[derive(Debug, Serialize)]
pub struct KvSummary {
    /// The address served.
    pub addr: SocketAddr,
    /// The engine of each shard.
    pub engines: Vec<String>,
    /// Seconds served.
    pub seconds: f64,
    /// CPU seconds the shards spent on passes that found work.
    pub busy_seconds: f64,
    /// Durable mode: the block backend of the logs.
    pub durable_backend: Option<String>,
    /// Durable mode: the log records replayed at the start.
    pub replayed: usize,
    /// Per shard: its lcore and counters.
    pub shards: Vec<ShardSummary>,
}

/// One shard's part of [`KvSummary`].
#[derive(Debug, Serialize)]
pub struct ShardSummary {
    /// The lcore.
    pub lcore: u32,
    /// Commands run.
    pub commands: u64,
    /// Commands sent to other shards.
    pub forwarded: u64,
    /// Connections accepted.
    pub accepted: u64,
    /// Malformed requests refused.
    pub protocol_errors: u64,
    /// The keyspace.
    pub store: store::StoreStats,
}

fn summarize(c: &ShardCounters, lcore: LcoreId) -> ShardSummary {
    ShardSummary {
        lcore: lcore.0,
        commands: c.commands.load(Ordering::Relaxed),
        forwarded: c.forwarded.load(Ordering::Relaxed),
        accepted: c.accepted.load(Ordering::Relaxed),
        protocol_errors: c.protocol_errors.load(Ordering::Relaxed),
        store: c.store.lock().map(|s| *s).unwrap_or_default(),
    }
}

/// Opens shard `i`'s log in `dir`, replays it into `store`, and returns
/// the log with the number of records replayed and the backend.
fn open_log(
    args: &KvArgs,
    dir: &std::path::Path,
    i: usize,
    n: usize,
    store: &mut store::Store,
) -> anyhow::Result<(server::Durable, usize, String)> {
    std::fs::create_dir_all(dir).with_context(|| format!("--durable {}", dir.display()))?;
    // Keys belong to shards by hash: logs written by another number of
    // shards would put them in the wrong ones.
    let mut generations = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name().to_string_lossy().into_owned();
        let Some((shard, of, generation)) = server::parse_log_name(&name) else {
            continue;
        };
        if of != n {
            anyhow::bail!(
                "--durable {}: {name} was written by {of} shards; run with {of} shards (--lcores {of})",
                dir.display()
            );
        }
        if shard == i {
            generations.push(generation);
        }
    }
    generations.sort_unstable();
    if generations.is_empty() {
        generations.push(0);
    }
    // Every generation on disk, oldest first: a compaction cut short
    // left the older one complete and the newer one's snapshot partial,
    // and the two in order give the state (the newer records overwrite).
    let mut last = None;
    let mut count = 0;
    let now = server::now_ms();
    let mut parser = dataplane::proto::resp::RequestParser::new(dataplane::proto::resp::Limits {
        max_bulk: usize::MAX / 2,
        ..Default::default()
    });
    let mut scratch = Vec::new();
    for &g in &generations {
        let path = server::log_path(dir, i, n, g);
        let path = path
            .to_str()
            .with_context(|| format!("{}: not UTF-8", path.display()))?
            .to_owned();
        let r = log::Log::open(
            &path,
            args.durable_size as u64,
            &args.durable_backend,
            args.durable_commit,
        )
        .with_context(|| format!("opening the log {path}"))?;
        for rec in &r.records {
            let Ok(Some(_)) = parser.parse(rec) else {
                anyhow::bail!("{path}: a log record that does not parse");
            };
            let a = store::Args::new(rec, parser.args());
            let Some((lb, len)) = store::lower_name(a.get(0)) else {
                continue;
            };
            scratch.clear();
            let mut w = dataplane::proto::resp::Writer::new(&mut scratch, Default::default());
            if &lb[..len] == b"flushall" {
                store.flush();
            } else if !store.exec(&lb[..len], &a, &mut w, now) {
                // Only keyspace commands are logged: anything else is a
                // log this server did not write.
                anyhow::bail!(
                    "{path}: a log record that is no keyspace command ({:?})",
                    String::from_utf8_lossy(a.get(0))
                );
            }
        }
        count += r.records.len();
        tracing::info!(shard = i, generation = g, records = r.records.len(), backend = %r.backend, "dp-kv: log replayed");
        last = Some((r.log, g, r.backend));
    }
    store.keep_evictions();
    let Some((log, generation, backend)) = last else {
        anyhow::bail!("no log generation");
    };
    let older = generations
        .iter()
        .filter(|&&g| g != generation)
        .map(|&g| server::log_path(dir, i, n, g))
        .collect();
    Ok((
        server::Durable {
            log,
            generation,
            older,
        },
        count,
        backend,
    ))
}

/// Runs the server until `--duration` or `quit`.
///
/// # Errors
///
/// Bad arguments, a plan that cannot be made, a shard that cannot bind.
pub fn run(args: &KvArgs, quit: Arc<AtomicBool>) -> anyhow::Result<KvSummary> {
    let engine: Choice<EngineKind> = args
        .backend
        .parse()
        .map_err(|e| anyhow::anyhow!("--backend {}: {e}", args.backend))?;
    let crate::serve::Shards {
        mut group,
        lcores: on,
    } = crate::serve::plan_shards(args.cpus.as_deref(), args.lcores)?;
    let n = on.len();

    let mut transport = dataplane::transport::Config {
        engine,
        ..Default::default()
    };
    // A whole request must fit the receive buffer (it grows only as far
    // as a request needs).
    transport.rx_buffer = args.max_bulk + 64 * 1024;
    let stack = crate::serve::StackPorts::open(&args.stack, n)?;
    let (addr, engine) = match &stack {
        Some(s) => (s.listen_addr(args.port), EngineKind::Stack),
        None => crate::serve::probe_listen(SocketAddr::new(args.bind, args.port), &transport)?,
    };
    let tls = match crate::serve::tls_config(
        args.tls_cert_file.as_deref(),
        args.tls_key_file.as_deref(),
        &[],
    )? {
        Some(tls) => {
            let port = args.tls_port.unwrap_or(0);
            let tls_addr = match &stack {
                Some(s) => s.listen_addr(port),
                None => crate::serve::probe_listen(SocketAddr::new(args.bind, port), &transport)?.0,
            };
            Some((tls_addr, tls))
        }
        None => None,
    };
    let tls_banner = tls
        .as_ref()
        .map(|(a, _)| format!(" and {a} (TLS)"))
        .unwrap_or_default();
    let config = Arc::new(KvConfig {
        tls,
        bind: addr,
        stack,
        maxmemory: args.maxmemory,
        requirepass: args.requirepass.as_ref().map(|p| p.as_bytes().to_vec()),
        transport,
        limits: Limits {
            max_bulk: args.max_bulk,
            ..Limits::default()
        },
        durable: args.durable.as_ref().map(|dir| server::DurableConfig {
            dir: dir.clone(),
            size: args.durable_size as u64,
            backend: args.durable_backend.clone(),
            commit: args.durable_commit,
        }),
    });
    let mut counters = Vec::new();
    let mut durable_backend = None;
    let mut replayed = 0;
    for (i, (lcore, links)) in on.iter().zip(server::mesh(n)?).enumerate() {
        let mut store = store::Store::new(0, 0x9e37_79b9_7f4a_7c15 ^ i as u64);
        let log = match &args.durable {
            Some(dir) => {
                let (d, count, backend) = open_log(args, dir, i, n, &mut store)?;
                replayed += count;
                durable_backend = Some(backend);
                Some(d)
            }
            None => None,
        };
        store.set_maxmemory(args.maxmemory / n);
        let (shard, c) = Shard::new(i, n, config.clone(), links, store, log);
        group.poller(*lcore, shard)?;
        counters.push((*lcore, c));
    }
    let running = group.launch()?;
    let _metrics = match args.metrics {
        Some(at) => {
            let m = dataplane::metrics::Metrics::new();
            m.lcores(running.stats_view());
            shard_metrics(&m, &counters);
            Some(m.serve(at).context("serving /metrics")?)
        }
        None => None,
    };
    let flags: Vec<Arc<ShardCounters>> = counters.iter().map(|(_, c)| c.clone()).collect();
    // Acquire: pairs with each shard's Release store once it listens.
    let ready = move || flags.iter().all(|c| c.ready.load(Ordering::Acquire));
    let banner = format!("dp-kv: {n} shard(s) listening on {addr}{tls_banner}, {engine} engine");
    let start = Instant::now();
    let watched: Vec<Arc<ShardCounters>> = counters.iter().map(|(_, c)| c.clone()).collect();
    let stats = args.stats;
    let mut last = (Instant::now(), 0u64);
    let line = move || {
        let total: u64 = watched
            .iter()
            .map(|c| c.commands.load(Ordering::Relaxed))
            .sum();
        let open: u64 = watched.iter().map(|c| c.open.load(Ordering::Relaxed)).sum();
        let rate = (total - last.1) as f64 / last.0.elapsed().as_secs_f64();
        last = (Instant::now(), total);
        stats.then(|| {
            format!("dp-kv: {rate:.0} commands/s, {open} connections, {total} commands in all")
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
    let seconds = start.elapsed().as_secs_f64();
    let busy_seconds = crate::serve::busy_seconds(&reports, &on, seconds);
    Ok(KvSummary {
        addr,
        engines: vec![engine.to_string(); n],
        seconds,
        busy_seconds,
        durable_backend,
        replayed,
        shards: counters.iter().map(|(l, c)| summarize(c, *l)).collect(),
    })
}

/// The shards' counters for `/metrics` (`shard` and `lcore` labels):
/// commands, forwarded commands, connections, refusals and the keyspace,
/// and each shard's transport.
fn shard_metrics(metrics: &dataplane::metrics::Metrics, shards: &[(LcoreId, Arc<ShardCounters>)]) {
    use dataplane::metrics::{Labels, counters, gauges};
    let label = |i: usize, l: &LcoreId| -> Labels {
        vec![
            ("shard".into(), i.to_string()),
            ("lcore".into(), l.0.to_string()),
        ]
    };
    let s: Vec<(Labels, Arc<ShardCounters>)> = shards
        .iter()
        .enumerate()
        .map(|(i, (l, c))| (label(i, l), c.clone()))
        .collect();
    metrics.transports(
        s.iter()
            .map(|(l, c)| (l.clone(), c.transport.clone()))
            .collect(),
    );
    metrics.collect(move |r| {
        let per =
            |f: &dyn Fn(&ShardCounters) -> u64| counters(s.iter().map(|(l, c)| (l.clone(), f(c))));
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        r.register(
            "dp_kv_commands",
            "Commands run",
            per(&|c| load(&c.commands)),
        );
        r.register(
            "dp_kv_forwarded",
            "Commands sent to the shard that owns their key",
            per(&|c| load(&c.forwarded)),
        );
        r.register(
            "dp_kv_accepted",
            "Connections accepted",
            per(&|c| load(&c.accepted)),
        );
        r.register(
            "dp_kv_protocol_errors",
            "Malformed requests refused (the connection closed)",
            per(&|c| load(&c.protocol_errors)),
        );
        let stores: Vec<(Labels, store::StoreStats)> = s
            .iter()
            .map(|(l, c)| (l.clone(), c.store.lock().map(|s| *s).unwrap_or_default()))
            .collect();
        let keyspace = |f: &dyn Fn(&store::StoreStats) -> u64| {
            counters(stores.iter().map(|(l, st)| (l.clone(), f(st))))
        };
        let level = |f: &dyn Fn(&store::StoreStats) -> usize| {
            gauges(stores.iter().map(|(l, st)| (l.clone(), f(st) as f64)))
        };
        r.register("dp_kv_keys", "Keys held", level(&|st| st.keys));
        r.register(
            "dp_kv_expires",
            "Keys with a deadline",
            level(&|st| st.expires),
        );
        r.register(
            "dp_kv_used_memory_bytes",
            "Bytes charged to the keyspace",
            level(&|st| st.used_memory),
        );
        r.register(
            "dp_kv_keyspace_hits",
            "Lookups that found their key",
            keyspace(&|st| st.hits),
        );
        r.register(
            "dp_kv_keyspace_misses",
            "Lookups that did not",
            keyspace(&|st| st.misses),
        );
        r.register(
            "dp_kv_expired_keys",
            "Keys removed at their deadline",
            keyspace(&|st| st.expired),
        );
        r.register(
            "dp_kv_evicted_keys",
            "Keys removed to stay under maxmemory",
            keyspace(&|st| st.evicted),
        );
        let open = gauges(
            s.iter()
                .map(|(l, c)| (l.clone(), c.open.load(Ordering::Relaxed) as f64)),
        );
        r.register("dp_kv_connections", "Connections open", open);
    });
}
