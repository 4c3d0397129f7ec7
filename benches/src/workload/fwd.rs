//! Forwarding between two ports on one lcore, DPDK `examples/l2fwd`'s loop
//! over the framework's `Port`: receive a burst on each port, optionally
//! rewrite the Ethernet addresses as l2fwd does (`--mac-updating`, its
//! default), send the burst on the other port, count and free what the
//! other port did not take.
//!
//! The loop runs as a poller of a one-lcore `LcoreGroup` (the framework's
//! real run-to-completion loop, pinned), and measures itself: after a
//! warm-up it counts the packets sent over a window timed with the TSC
//! it is given each pass. DPDK's side is its own programs (`dpdk-testpmd`
//! and the l2fwd example) run as processes; the parsers of their periodic
//! statistics are here too, so that both sides are measured over the same
//! kind of window: steady state, start-up excluded.

use crate::cpu::tsc_per_ns;
use crate::harness::Sample;
use dataplane::lcore::{IdlePolicy, LcoreConfig, LcoreGroup, PollContext, Poller, Role};
use dataplane::net::{MbufBatch, Port};
use dataplane::topology::CpuId;
use hugepages::mbuf::Mbuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the loop does to each packet between receive and send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Touch {
    /// Nothing: testpmd's `io` forwarding mode.
    Io,
    /// Destination `02:00:00:00:00:<port>` and the sending port's own
    /// address as source: DPDK l2fwd's `l2fwd_mac_updating`.
    MacUpdate,
}

impl Touch {
    /// `io` or `mac`.
    pub fn name(self) -> &'static str {
        match self {
            Touch::Io => "io",
            Touch::MacUpdate => "mac",
        }
    }
}

impl std::str::FromStr for Touch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "io" => Ok(Touch::Io),
            "mac" => Ok(Touch::MacUpdate),
            _ => Err(format!("unknown touch {s:?}: io or mac")),
        }
    }
}

/// l2fwd's MAC rewrite: an 8-byte store of the destination (its last two
/// bytes are overwritten by the source next, as in l2fwd), then the source.
#[inline(always)]
pub fn mac_update(m: &mut Mbuf, dst_port: u16, src: &[u8; 6]) {
    let d = m.data_mut();
    if d.len() < 14 {
        return;
    }
    let dst = 0x0000_0000_0002u64 + (u64::from(dst_port) << 40);
    d[..8].copy_from_slice(&dst.to_le_bytes());
    d[6..12].copy_from_slice(src);
}

/// What one measured window saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// Packets sent (both directions).
    pub packets: u64,
    /// Packets the sending port did not take (freed and counted).
    pub dropped: u64,
    /// TSC ticks of the window.
    pub cycles: u64,
    /// The 90th percentile of the packets per TSC tick over the window's
    /// 10 ms slices: the speed when no other process had the cpu (on a
    /// shared machine the whole window's rate includes preemption).
    pub slice_p90: f64,
}

/// Slices of a window, for [`Window::slice_p90`].
const SLICE_NS: f64 = 10e6;

/// The forwarding poller.
pub struct Forwarder {
    ports: [Box<dyn Port>; 2],
    ids: [u16; 2],
    macs: [[u8; 6]; 2],
    touch: Touch,
    batch: MbufBatch,
    sent: u64,
    dropped: u64,
    warmup: u64,
    measure: u64,
    start: Option<(u64, u64, u64)>,
    first: Option<u64>,
    slice: u64,
    slice_start: (u64, u64),
    slices: Vec<f64>,
    result: Arc<Mutex<Option<Window>>>,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("touch", &self.touch)
            .field("sent", &self.sent)
            .field("dropped", &self.dropped)
            .finish()
    }
}

impl Forwarder {
    /// Forwards between `ports[0]` and `ports[1]` (whose DPDK-style ids and
    /// MAC addresses are `ids` and `macs`), measuring the window of
    /// `measure` that starts `warmup` after the first pass; the window's
    /// figures appear in `result`.
    pub fn new(
        ports: [Box<dyn Port>; 2],
        ids: [u16; 2],
        macs: [[u8; 6]; 2],
        touch: Touch,
        warmup: Duration,
        measure: Duration,
        result: Arc<Mutex<Option<Window>>>,
    ) -> Self {
        let tsc = tsc_per_ns();
        Forwarder {
            ports,
            ids,
            macs,
            touch,
            batch: MbufBatch::new(),
            sent: 0,
            dropped: 0,
            warmup: (warmup.as_nanos() as f64 * tsc) as u64,
            measure: (measure.as_nanos() as f64 * tsc) as u64,
            start: None,
            first: None,
            slice: (SLICE_NS * tsc) as u64,
            slice_start: (0, 0),
            slices: Vec::with_capacity((measure.as_nanos() as f64 / SLICE_NS) as usize + 16),
            result,
        }
    }

    /// One direction: a burst from `from`, sent on the other port.
    #[inline(always)]
    fn forward(&mut self, from: usize) -> usize {
        let to = 1 - from;
        let (a, b) = self.ports.split_at_mut(1);
        let (rx, tx) = if from == 0 {
            (&mut a[0], &mut b[0])
        } else {
            (&mut b[0], &mut a[0])
        };
        let n = rx.rx_burst(&mut self.batch);
        if n == 0 {
            return 0;
        }
        if self.touch == Touch::MacUpdate {
            let (dst, src) = (self.ids[to], &self.macs[to]);
            for m in self.batch.iter_mut() {
                mac_update(m, dst, src);
            }
        }
        self.sent += tx.tx_burst(&mut self.batch) as u64;
        if !self.batch.is_empty() {
            // l2fwd's tx buffer drops what the port did not take, counted.
            self.dropped += self.batch.len() as u64;
            self.batch.clear();
        }
        n
    }
}

impl Poller for Forwarder {
    #[inline]
    fn poll(&mut self, ctx: &PollContext) -> usize {
        if ctx.stopping() {
            return 0;
        }
        let work = self.forward(0) + self.forward(1);
        let now = ctx.now();
        let first = *self.first.get_or_insert(now);
        match self.start {
            None if now.wrapping_sub(first) >= self.warmup => {
                self.start = Some((now, self.sent, self.dropped));
                self.slice_start = (now, self.sent);
            }
            Some((t0, s0, d0)) if now.wrapping_sub(t0) >= self.measure => {
                if let Ok(mut r) = self.result.lock()
                    && r.is_none()
                {
                    self.slices.sort_by(f64::total_cmp);
                    let p90 = self
                        .slices
                        .get(self.slices.len() * 9 / 10)
                        .copied()
                        .unwrap_or(0.0);
                    *r = Some(Window {
                        packets: self.sent - s0,
                        dropped: self.dropped - d0,
                        cycles: now - t0,
                        slice_p90: p90,
                    });
                }
            }
            Some(_) if now.wrapping_sub(self.slice_start.0) >= self.slice => {
                let (t, s) = self.slice_start;
                if self.slices.len() < self.slices.capacity() {
                    self.slices
                        .push((self.sent - s) as f64 / now.wrapping_sub(t) as f64);
                }
                self.slice_start = (now, self.sent);
            }
            _ => {}
        }
        work
    }
}

/// Runs `fwd` on one busy-polling lcore pinned to `cpu` until its window
/// is measured (or `warmup + measure + 10 s` pass), then stops it.
///
/// # Errors
/// The lcore could not start, or no window was measured in time.
pub fn run(fwd: Forwarder, cpu: u32) -> Result<(Window, Sample), String> {
    let result = fwd.result.clone();
    let limit = Duration::from_nanos(((fwd.warmup + fwd.measure) as f64 / tsc_per_ns()) as u64)
        + Duration::from_secs(10);
    let mut group = LcoreGroup::new();
    let id = group.add(
        LcoreConfig::new(Role::Io)
            .cpu(CpuId(cpu))
            .idle(IdlePolicy::BusyPoll)
            .name("fwd"),
    );
    group.poller(id, fwd).map_err(|e| e.to_string())?;
    let running = group.launch().map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let window = loop {
        if let Some(w) = result.lock().ok().and_then(|r| *r) {
            break Some(w);
        }
        if t0.elapsed() > limit {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    running.stop().map_err(|e| e.to_string())?;
    let w = window.ok_or_else(|| format!("no window measured within {limit:?}"))?;
    if w.packets == 0 {
        return Err("nothing was forwarded".into());
    }
    Ok((
        w,
        Sample {
            ops: w.packets,
            nanos: w.cycles as f64 / tsc_per_ns(),
            cycles: w.cycles as f64,
            side_cycles_per_op: None,
        },
    ))
}

/// A rate in packets per second held for `seconds`, as a [`Sample`] (for
/// DPDK's programs, which report rates rather than TSC spans).
pub fn rate_sample(pps: f64, seconds: f64) -> Sample {
    let nanos = seconds * 1e9;
    Sample {
        ops: (pps * seconds) as u64,
        nanos,
        cycles: nanos * tsc_per_ns(),
        side_cycles_per_op: None,
    }
}

/// testpmd's periodic statistics (`--stats-period 1`): per period, the sum
/// over ports of `Tx-pps` (testpmd computes it from TSC deltas since the
/// last display). Returns the per-period sums in order.
pub fn testpmd_periods(output: &str) -> Vec<f64> {
    let mut periods = Vec::new();
    let mut current: Option<f64> = None;
    for line in output.lines() {
        // Each display starts with the clear-screen sequence and the
        // "NIC statistics for port 0" banner.
        if line.contains("NIC statistics for port 0") {
            if let Some(sum) = current.take() {
                periods.push(sum);
            }
            current = Some(0.0);
        }
        if let Some(rest) = line.trim().strip_prefix("Tx-pps:")
            && let Some(sum) = current.as_mut()
            && let Some(v) = rest
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
        {
            *sum += v;
        }
    }
    if let Some(sum) = current {
        periods.push(sum);
    }
    periods
}

/// DPDK l2fwd's periodic statistics (`-T 1`): the aggregate
/// `Total packets sent` of each display. Returns them in order.
pub fn l2fwd_totals(output: &str) -> Vec<u64> {
    output
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Total packets sent:"))
        .filter_map(|v| v.trim().parse().ok())
        .collect()
}

/// The mean rate of the periods after the first `skip` (warm-up), of
/// per-period rates.
pub fn steady_rate(periods: &[f64], skip: usize) -> Option<f64> {
    let steady = periods.get(skip..)?;
    (!steady.is_empty()).then(|| steady.iter().sum::<f64>() / steady.len() as f64)
}

/// Per-period rates from cumulative totals printed every `period_s`.
pub fn rates_from_totals(totals: &[u64], period_s: f64) -> Vec<f64> {
    totals
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]) as f64 / period_s)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_testpmd() {
        let out = "\u{1b}[2J\n  ######################## NIC statistics for port 0  ########################\n  RX-packets: 10\n  Rx-pps:            5          Rx-bps:            0\n  Tx-pps:            7          Tx-bps:            0\n  ######################## NIC statistics for port 1  ########################\n  Tx-pps:            3          Tx-bps:            0\n  ######################## NIC statistics for port 0  ########################\n  Tx-pps:           20          Tx-bps:            0\n  ######################## NIC statistics for port 1  ########################\n  Tx-pps:           22          Tx-bps:            0\n";
        assert_eq!(testpmd_periods(out), vec![10.0, 42.0]);
        assert_eq!(steady_rate(&[10.0, 42.0], 1), Some(42.0));
        assert_eq!(steady_rate(&[10.0], 1), None);
    }

    #[test]
    fn parses_l2fwd() {
        let out = "Aggregate statistics ===\nTotal packets sent:          100\nTotal packets received: 100\nTotal packets sent:          350\n";
        let t = l2fwd_totals(out);
        assert_eq!(t, vec![100, 350]);
        assert_eq!(rates_from_totals(&t, 1.0), vec![250.0]);
    }
}
