//! The options every network program takes, and opening its ports.

use super::ports::OpenedPort;
use anyhow::{Context, bail};
use dataplane::net::dpdk::{self, EalConfig};
use dataplane::net::{self, BackendChoice, MAX_BURST, PortConfig, TX_DRAIN_US};
use dataplane::profile::Plan;
use std::time::Duration;

/// Options shared by l2fwd, l3fwd and pktgen.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Logging.
    #[command(flatten)]
    pub log: crate::LogArgs,
    /// Network backend: auto, dpdk, af_xdp, af_packet, io_uring or memory. `auto`
    /// takes the first that can open each port, in that order.
    #[arg(long, default_value = "auto")]
    pub backend: BackendChoice,
    /// A port, in its backend's syntax: an interface (`veth0`), a DPDK
    /// device (`0000:03:00.0`, `net_ring0`), `udp:ADDR:PORT[,peer=..]`, or
    /// `memory:NAME`. Repeat for more ports; without any, the `--vdev`s
    /// are the ports.
    #[arg(long = "port", value_name = "DEVICE")]
    pub ports: Vec<String>,
    /// A DPDK virtual device for the EAL (`net_ring0`, `net_tap0,iface=dp0`);
    /// repeat for more.
    #[arg(long = "vdev", value_name = "VDEV")]
    pub vdevs: Vec<String>,
    /// Packets per burst (DPDK's MAX_PKT_BURST), 1 to 64.
    #[arg(long, default_value_t = 32)]
    pub burst: usize,
    /// Transmit buffers are flushed at least this often, in microseconds.
    #[arg(long = "drain-us", default_value_t = TX_DRAIN_US)]
    pub drain_us: u64,
    /// Queues per port (one per data lcore by default).
    #[arg(long)]
    pub queues: Option<u16>,
    /// Data-path lcores (the plan's I/O lcores, or its application
    /// lcores on machines too small for I/O lcores, by default).
    #[arg(long)]
    pub lcores: Option<usize>,
    /// Mbufs per queue.
    #[arg(long, default_value_t = 8192)]
    pub mbufs: usize,
    /// Seconds to run; until Ctrl-C without it.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Print one JSON summary object as the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// Serve DPDK's telemetry v2 protocol on a socket for this DPDK
    /// file-prefix (`dpdk-telemetry.py -f PREFIX` connects to it): lcore
    /// usage and per-port counters (`dataplane::telemetry`).
    #[arg(long, value_name = "PREFIX")]
    pub telemetry: Option<String>,
    /// Serve Prometheus metrics (lcores, ports, drops by reason) at
    /// `http://ADDR/metrics`; give a loopback address (`127.0.0.1:9100`)
    /// unless the network must scrape it.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
}

impl CommonArgs {
    /// The run time, if bounded.
    ///
    /// # Errors
    ///
    /// A negative or non-finite duration.
    pub fn duration(&self) -> anyhow::Result<Option<Duration>> {
        self.duration
            .map(|s| Duration::try_from_secs_f64(s).context("--duration must be >= 0 seconds"))
            .transpose()
    }

    /// The transmit drain period.
    pub fn drain(&self) -> Duration {
        Duration::from_micros(self.drain_us)
    }

    /// Checks the values clap cannot.
    ///
    /// # Errors
    ///
    /// A burst outside 1..=64, or no port at all.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.burst == 0 || self.burst > MAX_BURST {
            bail!("--burst {} must be 1..={MAX_BURST}", self.burst);
        }
        if self.devices().is_empty() {
            bail!(
                "no port: give --port DEVICE (or --vdev for DPDK; in a pod, the device plugin's \
                 PCIDEVICE_* variables name them)"
            );
        }
        Ok(())
    }

    /// The devices to open: `--port`s, else the names of the `--vdev`s,
    /// else the PCI addresses in the device plugin's `PCIDEVICE_*`
    /// variables.
    pub fn devices(&self) -> Vec<String> {
        if !self.ports.is_empty() {
            return self.ports.clone();
        }
        if self.vdevs.is_empty() {
            // In a pod given SR-IOV VFs by the device plugin, those are the
            // ports (deploy/ sets this up).
            return dpdk::device_plugin_devices();
        }
        self.vdevs
            .iter()
            .map(|v| v.split(',').next().unwrap_or(v).to_owned())
            .collect()
    }

    /// Opens every device with `queues` queues each. `--vdev`s go to
    /// DPDK's EAL configuration first (with the plan's main CPU and memory).
    ///
    /// # Errors
    ///
    /// The device that could not be opened, with every backend's reason.
    pub fn open_ports(&self, plan: &Plan, queues: u16) -> anyhow::Result<Vec<OpenedPort>> {
        if !self.vdevs.is_empty() {
            let mut eal = EalConfig::from_plan(plan);
            // DPDK's own telemetry socket beside ours, when ours is asked
            // for: its ethdev and mempool commands answer too.
            eal.telemetry = self.telemetry.is_some();
            for v in &self.vdevs {
                eal = eal.vdev(v.clone());
            }
            dpdk::configure(eal).context("configuring DPDK's EAL for --vdev")?;
        }
        let devices = self.devices();
        // One pool per socket for every port, as DPDK's l2fwd makes (on the
        // DPDK backend; the others keep a pool per queue): forwarding
        // between ports then reuses the mbufs just freed.
        let shared_pool = self.mbufs * usize::from(queues) * devices.len();
        devices
            .into_iter()
            .map(|device| {
                let mut cfg = PortConfig::new(device.clone());
                cfg.queues = queues;
                cfg.burst = self.burst;
                cfg.mbufs = self.mbufs;
                cfg.mbuf_cache = plan.mempool_cache.min(self.mbufs / 4);
                cfg.shared_pool = Some(shared_pool);
                let opened = net::open(&cfg, self.backend)
                    .with_context(|| format!("opening port {device}"))?;
                Ok(OpenedPort { device, opened })
            })
            .collect()
    }
}

/// Parses `aa:bb:cc:dd:ee:ff`.
///
/// # Errors
///
/// Anything else.
pub fn parse_mac(s: &str) -> anyhow::Result<[u8; 6]> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        bail!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)");
    }
    let mut mac = [0u8; 6];
    for (m, p) in mac.iter_mut().zip(parts) {
        *m = u8::from_str_radix(p, 16).with_context(|| format!("{s:?} is not a MAC address"))?;
    }
    Ok(mac)
}

/// DPDK l2fwd's destination MAC for a port: `02:00:00:00:00:<port>`.
pub fn default_mac(port: usize) -> [u8; 6] {
    [0x02, 0, 0, 0, 0, port as u8]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("02:00:0a:ff:00:01").ok(),
            Some([2, 0, 10, 255, 0, 1])
        );
        assert!(parse_mac("02:00:0a:ff:00").is_err());
        assert!(parse_mac("zz:00:0a:ff:00:01").is_err());
        assert_eq!(default_mac(3), [2, 0, 0, 0, 0, 3]);
    }
}
