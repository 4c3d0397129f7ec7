//! What the servers (`dp-kv`, `dp-http`) share: the lcores their shards
//! run on, and a run watched until its duration or a signal.

use anyhow::Context;
use dataplane::lcore::{Exit, LcoreGroup, LcoreId, LcoreReport, Role, Running};
use dataplane::profile::{Plan, Profile, parse_cpu_list};
use dataplane::topology::Topology;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The lcores a server's shards run on, and the group to launch.
#[derive(Debug)]
pub struct Shards {
    /// The group of the plan (pollers still to add).
    pub group: LcoreGroup,
    /// One lcore per shard.
    pub lcores: Vec<LcoreId>,
}

/// Plans one shard per lcore: on the CPUs of `cpus` (a list such as
/// `0-3,8`; else `DATAPLANE_CPUS`, else the plan's) and `lcores` of them
/// (else one per CPU of `cpus`, else the plan's application lcores).
/// Shards run on the main lcore too, as DPDK's main lcore works, so that
/// `--cpus 0-3` gives four shards on four cores; a single shard runs on
/// an application lcore, the main thread only watching.
///
/// # Errors
///
/// A malformed CPU list, a machine that cannot be detected, a plan that
/// cannot be made.
pub fn plan_shards(cpus: Option<&str>, lcores: Option<usize>) -> anyhow::Result<Shards> {
    let cpus = match cpus {
        Some(list) => Some(
            parse_cpu_list(list)
                .with_context(|| format!("--cpus {list:?}: expected a CPU list such as 0-3,8"))?,
        ),
        None => None,
    };
    let topo = Topology::detect().context("detecting the machine")?;
    let profile = std::env::var("DATAPLANE_PROFILE")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(Profile::Production);
    let mut b = Plan::builder(&topo, profile).from_env();
    let lcores = lcores.or(cpus.as_ref().map(Vec::len));
    let one_cpu = cpus.as_ref().is_some_and(|c| c.len() == 1);
    if let Some(cpus) = cpus {
        b = b.cpus(cpus);
    }
    // On one CPU the planner puts the main lcore and one application
    // lcore on it together (explicit counts that do not fit are refused).
    if let Some(n) = lcores.filter(|&n| !(one_cpu && n == 1)) {
        b = b
            .io_lcores_per_node(0)
            .accel_lcores(0)
            .app_lcores(n.saturating_sub(1).max(1));
    }
    let plan = b.build().context("planning lcores")?;
    let apps: Vec<LcoreId> = plan.app_lcores().map(|l| l.id).collect();
    let main = plan
        .lcores
        .iter()
        .find(|l| l.role == Role::Main)
        .map(|l| l.id);
    let on: Vec<LcoreId> = match (lcores, main) {
        (Some(1), _) | (_, None) => apps,
        (_, Some(m)) => std::iter::once(m).chain(apps).collect(),
    };
    anyhow::ensure!(!on.is_empty(), "the plan has no lcore to run a shard on");
    Ok(Shards {
        group: plan.lcore_group(),
        lcores: on,
    })
}

/// Runs the launched group until `duration` or `quit`, calling `line`
/// once a second (for the stats line; `None` prints nothing), then
/// stops it and returns the reports. The main lcore's shard runs on the
/// calling thread meanwhile; a watcher thread ends the run. The watcher
/// first waits until `ready` (every shard has bound its listener, which
/// each does at its first pass) and then prints `banner`, so that a
/// client that waits for the banner never meets a shard still joining
/// the port; a server whose shards are not all listening within 10 s is
/// stopped with an error.
///
/// # Errors
///
/// An lcore that panicked, or a watcher thread that cannot start.
pub fn watch(
    running: Running,
    quit: Arc<AtomicBool>,
    duration: Option<Duration>,
    ready: impl Fn() -> bool + Send + 'static,
    banner: String,
    mut line: impl FnMut() -> Option<String> + Send + 'static,
) -> anyhow::Result<Vec<LcoreReport>> {
    let end = duration.map(|d| Instant::now() + d);
    let stop = running.stop_handle();
    let failed = Arc::new(AtomicBool::new(false));
    let failed2 = failed.clone();
    let watcher = std::thread::Builder::new()
        .name("watch".into())
        .spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !ready() {
                if Instant::now() >= deadline {
                    // Relaxed: read after the join below.
                    failed2.store(true, Ordering::Relaxed);
                    stop.request_stop();
                    return;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            println!("{banner}");
            let mut last = Instant::now();
            // Relaxed: a flag set by the signal thread, nothing published
            // with it.
            while !quit.load(Ordering::Relaxed) && end.is_none_or(|e| Instant::now() < e) {
                std::thread::sleep(Duration::from_millis(20));
                if last.elapsed() >= Duration::from_secs(1) {
                    last = Instant::now();
                    if let Some(l) = line() {
                        eprintln!("{l}");
                    }
                }
            }
            stop.request_stop();
        })
        .context("starting the watcher thread")?;
    let reports = running.join()?;
    let _ = watcher.join();
    anyhow::ensure!(
        !failed.load(Ordering::Relaxed),
        "a shard did not start listening within 10 s (see the log)"
    );
    for r in &reports {
        if let Exit::Panicked(m) = &r.exit {
            anyhow::bail!("lcore {} panicked: {m}", r.id.0);
        }
    }
    Ok(reports)
}

/// CPU time the shards' lcores spent on passes that found work (DPDK's
/// `/eal/lcore/usage` busy time), in seconds over a run of `seconds`: a
/// polling server's CPU cost, which `top` cannot tell (it spins).
pub fn busy_seconds(reports: &[LcoreReport], shards: &[LcoreId], seconds: f64) -> f64 {
    reports
        .iter()
        .filter(|r| shards.contains(&r.id))
        .map(|r| r.stats.busy_ratio() * seconds)
        .sum()
}

/// Checks that `addr` is free and picks the port for port 0, with a plain
/// socket (no `SO_REUSEPORT`, so a port another server listens on is
/// refused, as redis-server and nginx refuse it), closed at once; then
/// makes a transport with `config` to learn the engine every shard will
/// get. Not a transport's listener: an io_uring transport's listener
/// outlives the transport until the kernel tears its ring down, and
/// connections that land on it meanwhile are reset.
///
/// # Errors
///
/// The address is taken, or no engine runs.
pub fn probe_listen(
    addr: std::net::SocketAddr,
    config: &dataplane::transport::Config,
) -> anyhow::Result<(std::net::SocketAddr, dataplane::transport::EngineKind)> {
    let l = std::net::TcpListener::bind(addr).with_context(|| format!("listening on {addr}"))?;
    let addr = l.local_addr().context("the listener's address")?;
    drop(l);
    let t =
        dataplane::transport::Transport::new(config.clone()).context("opening the transport")?;
    Ok((addr, t.engine()))
}

/// The options that run a server's connections on the user-space TCP/IP
/// stack over an L2 port instead of the kernel's sockets.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StackArgs {
    /// Serve on the user-space TCP/IP stack over this device's queues
    /// (one per shard): a DPDK PCI address or vdev, or an interface for
    /// AF_XDP or AF_PACKET (`veth0`). The listen address's port is kept;
    /// its address is `--stack-address`'s.
    #[arg(long = "stack-port", value_name = "DEVICE")]
    pub stack_port: Option<String>,
    /// The stack's address and prefix (`10.0.0.1/24`).
    #[arg(long = "stack-address", value_name = "CIDR")]
    pub stack_address: Option<String>,
    /// The stack's default gateway.
    #[arg(long = "stack-gateway", value_name = "IP")]
    pub stack_gateway: Option<std::net::Ipv4Addr>,
    /// The port backend: auto, dpdk, af_xdp, af_packet or memory.
    #[arg(long = "stack-backend", default_value = "auto")]
    pub stack_backend: String,
}

/// The port queues of a server on the user-space stack, one per shard,
/// each taken once by its shard's lcore when it opens its transport.
pub struct StackPorts {
    queues: std::sync::Mutex<Vec<Option<Box<dyn dataplane::net::Port>>>>,
    config: dataplane::transport::stack::StackConfig,
    /// The backend that opened the port.
    pub backend: String,
}

impl std::fmt::Debug for StackPorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StackPorts")
            .field("backend", &self.backend)
            .field("address", &self.config.address)
            .finish_non_exhaustive()
    }
}

impl StackPorts {
    /// Opens `args.port` with one queue per shard (RSS, or AF_PACKET's
    /// fanout by flow hash, keeps each connection on one queue); `None`
    /// when no `--stack-port` is given.
    ///
    /// # Errors
    ///
    /// A bad address, or a port that cannot be opened.
    pub fn open(args: &StackArgs, shards: usize) -> anyhow::Result<Option<Arc<StackPorts>>> {
        let Some(device) = &args.stack_port else {
            return Ok(None);
        };
        let address: dataplane::transport::stack::Ipv4Cidr = args
            .stack_address
            .as_deref()
            .context("--stack-port needs --stack-address (10.0.0.1/24)")?
            .parse()
            .context("--stack-address")?;
        let mut config = dataplane::transport::stack::StackConfig::new(address);
        config.gateway = args.stack_gateway;
        // One neighbour table for the shards' stacks (cloned with the
        // configuration): an ARP reply reaches one queue only.
        config.shared_neighbours = Some(dataplane::transport::stack::SharedNeighbours::new());
        config.validate().context("the stack's configuration")?;
        let choice: dataplane::net::BackendChoice = args
            .stack_backend
            .parse()
            .map_err(|e| anyhow::anyhow!("--stack-backend {}: {e}", args.stack_backend))?;
        let queues = u16::try_from(shards).context("too many shards for one port")?;
        // Frame by frame: a server answering requests must not wait for a
        // receive batch to fill (AF_PACKET's TPACKET_V3 blocks). Checksums
        // on the device where it computes them.
        let cfg = dataplane::net::PortConfig::new(device.clone())
            .with_queues(queues)
            .with_low_latency(true)
            .with_tx_checksum(true);
        let opened = dataplane::net::open(&cfg, choice)
            .with_context(|| format!("opening {device} for the stack"))?;
        Ok(Some(Arc::new(StackPorts {
            queues: std::sync::Mutex::new(opened.value.into_iter().map(Some).collect()),
            config,
            backend: opened.backend.to_string(),
        })))
    }

    /// The address the servers listen on: the stack's, with `port`.
    pub fn listen_addr(&self, port: u16) -> std::net::SocketAddr {
        std::net::SocketAddr::from((self.config.address.addr, port))
    }
}

/// Shard `shard`'s transport: on its queue of the stack's port when there
/// is one, else on the kernel's sockets with `config`'s engine.
///
/// # Errors
///
/// As [`dataplane::transport::Transport::new`] and
/// [`dataplane::transport::Transport::over_port`]; a queue taken twice.
pub fn shard_transport(
    stack: Option<&StackPorts>,
    shard: usize,
    config: &dataplane::transport::Config,
) -> dataplane::Result<dataplane::transport::Transport> {
    let Some(s) = stack else {
        return dataplane::transport::Transport::new(config.clone());
    };
    // Taken once, at the shard's start: not on any hot path.
    let port = s
        .queues
        .lock()
        .map_err(|_| dataplane::Error::Config("the stack's queues: a shard panicked".into()))?
        .get_mut(shard)
        .and_then(Option::take)
        .ok_or_else(|| dataplane::Error::Config(format!("no port queue for shard {shard}")))?;
    dataplane::transport::Transport::over_port(port, s.config.clone(), config.clone())
}

/// A server's TLS configuration from its certificate chain and key (PEM
/// files, both or neither), announcing `alpn`.
///
/// # Errors
///
/// Only one of the two given, or a file that cannot be read or parsed.
pub fn tls_config(
    cert: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
    alpn: &[&str],
) -> anyhow::Result<Option<Arc<dataplane::transport::tls::ServerConfig>>> {
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(dataplane::transport::tls::server_config(
            cert, key, alpn,
        )?)),
        _ => anyhow::bail!("TLS needs both a certificate and its key"),
    }
}
