//! The interleaving harness: named contenders run A B C, C B A, A B C, ...
//! for a number of rounds, so that ours and the peer see the same machine
//! minute by minute, and the figure that matters is the *same-round ratio*.
//!
//! On a shared VM the absolute throughput of a cross-core benchmark swings
//! by 2-5x from one minute to the next (the other tenants, the host's
//! scheduling of our vCPUs). Two contenders measured back to back within a
//! round see the same conditions, so the ratio of their times in that round
//! is stable even when both figures move; the median of those per-round
//! ratios is what a target is judged on. The order is reversed every
//! round (ABBA), so that neither contender is always the one that runs
//! right after a quiet or noisy neighbour.

use crate::cpu::{Noise, NoiseReport};
use std::fmt::Write as _;

/// One measurement: `ops` operations (items, round trips, objects) took
/// `nanos` wall-clock nanoseconds and `cycles` TSC ticks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Operations done in the timed region.
    pub ops: u64,
    /// Wall-clock time of the timed region.
    pub nanos: f64,
    /// TSC ticks of the timed region.
    pub cycles: f64,
    /// For two-thread workloads: the producer's own TSC span plus the
    /// consumer's, per operation. This is what DPDK's `ring_perf_autotest`
    /// prints for its two-core tests (enqueue side + dequeue side), about
    /// twice the wall-clock cycles per item when both sides are busy.
    pub side_cycles_per_op: Option<f64>,
}

impl Sample {
    /// Operations per second.
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / (self.nanos * 1e-9)
    }

    /// Nanoseconds per operation.
    pub fn ns_per_op(&self) -> f64 {
        self.nanos / self.ops as f64
    }

    /// TSC ticks per operation.
    pub fn cycles_per_op(&self) -> f64 {
        self.cycles / self.ops as f64
    }
}

/// Which way of printing suits a comparison; every figure is in every
/// report either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Throughput: millions of operations per second first.
    Throughput,
    /// Latency: nanoseconds per operation first.
    Latency,
    /// Cost: TSC cycles per operation first.
    Cycles,
}

type RunFn<'a> = Box<dyn FnMut() -> Result<Sample, String> + 'a>;

struct Contender<'a> {
    name: String,
    run: RunFn<'a>,
}

/// A set of contenders doing the same work, one of them the baseline.
pub struct Comparison<'a> {
    title: String,
    metric: Metric,
    baseline: String,
    contenders: Vec<Contender<'a>>,
}

impl std::fmt::Debug for Comparison<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Comparison")
            .field("title", &self.title)
            .field("baseline", &self.baseline)
            .field(
                "contenders",
                &self.contenders.iter().map(|c| &c.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl<'a> Comparison<'a> {
    /// An empty comparison whose ratios are taken against `baseline` (the
    /// name of a contender added later).
    pub fn new(title: impl Into<String>, metric: Metric, baseline: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            metric,
            baseline: baseline.into(),
            contenders: Vec::new(),
        }
    }

    /// Adds a contender: `run` does the fixed amount of work once and
    /// returns its sample, or why it could not run (a contender that fails
    /// is dropped from the later rounds, with the reason in the report).
    pub fn contender(
        mut self,
        name: impl Into<String>,
        run: impl FnMut() -> Result<Sample, String> + 'a,
    ) -> Self {
        self.contenders.push(Contender {
            name: name.into(),
            run: Box::new(run),
        });
        self
    }

    /// Runs one unrecorded warm-up round, then `rounds` rounds in ABBA
    /// order, and returns the report. `progress` is called after each
    /// sample (for a live line on stderr).
    pub fn run(mut self, rounds: usize, mut progress: impl FnMut(&str, usize, &Sample)) -> Report {
        let noise = Noise::start();
        let n = self.contenders.len();
        let mut samples: Vec<Vec<Option<Sample>>> = vec![Vec::with_capacity(rounds); n];
        let mut failed: Vec<Option<String>> = vec![None; n];
        for round in 0..=rounds {
            let order: Vec<usize> = if round % 2 == 0 {
                (0..n).collect()
            } else {
                (0..n).rev().collect()
            };
            for i in order {
                if failed[i].is_some() {
                    if round > 0 {
                        samples[i].push(None);
                    }
                    continue;
                }
                let c = &mut self.contenders[i];
                match (c.run)() {
                    Ok(s) if round == 0 => progress(&c.name, round, &s),
                    Ok(s) => {
                        progress(&c.name, round, &s);
                        samples[i].push(Some(s));
                    }
                    Err(why) => {
                        failed[i] = Some(why);
                        if round > 0 {
                            samples[i].push(None);
                        }
                    }
                }
            }
        }
        let names: Vec<String> = self.contenders.iter().map(|c| c.name.clone()).collect();
        Report {
            title: self.title,
            metric: self.metric,
            baseline: self.baseline,
            rounds,
            noise: noise.finish(),
            contenders: names
                .into_iter()
                .zip(samples)
                .zip(failed)
                .map(|((name, samples), failed)| ContenderRecord {
                    name,
                    samples,
                    failed,
                })
                .collect(),
        }
    }
}

/// Median, 10th and 90th percentile of a set of values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// The median.
    pub median: f64,
    /// The 10th percentile (linear interpolation between ranks).
    pub p10: f64,
    /// The 90th percentile.
    pub p90: f64,
}

impl Spread {
    /// The spread of `values`, or `None` when there are none.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Spread> {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let at = |q: f64| {
            let pos = q * (v.len() - 1) as f64;
            let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
            v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
        };
        Some(Spread {
            median: at(0.5),
            p10: at(0.1),
            p90: at(0.9),
        })
    }
}

/// What one contender did in every round.
#[derive(Debug, Clone)]
pub struct ContenderRecord {
    /// The contender's name.
    pub name: String,
    /// One entry per recorded round (`None`: it did not run that round).
    pub samples: Vec<Option<Sample>>,
    /// Why it stopped running, if it did.
    pub failed: Option<String>,
}

impl ContenderRecord {
    fn ok(&self) -> impl Iterator<Item = &Sample> {
        self.samples.iter().flatten()
    }

    /// Spread of operations per second.
    pub fn ops_per_sec(&self) -> Option<Spread> {
        Spread::of(self.ok().map(Sample::ops_per_sec))
    }

    /// Spread of nanoseconds per operation.
    pub fn ns_per_op(&self) -> Option<Spread> {
        Spread::of(self.ok().map(Sample::ns_per_op))
    }

    /// Spread of TSC cycles per operation.
    pub fn cycles_per_op(&self) -> Option<Spread> {
        Spread::of(self.ok().map(Sample::cycles_per_op))
    }

    /// Spread of the two sides' summed cycles per operation, for the
    /// workloads that record it.
    pub fn side_cycles_per_op(&self) -> Option<Spread> {
        Spread::of(self.ok().filter_map(|s| s.side_cycles_per_op))
    }
}

/// The outcome of [`Comparison::run`].
#[derive(Debug, Clone)]
pub struct Report {
    /// The comparison's title.
    pub title: String,
    /// How the table leads.
    pub metric: Metric,
    /// The contender ratios are taken against.
    pub baseline: String,
    /// Rounds recorded (the warm-up round is not).
    pub rounds: usize,
    /// What else ran on the machine meanwhile.
    pub noise: NoiseReport,
    /// Every contender, in the order they were added.
    pub contenders: Vec<ContenderRecord>,
}

impl Report {
    /// The contender called `name`.
    pub fn get(&self, name: &str) -> Option<&ContenderRecord> {
        self.contenders.iter().find(|c| c.name == name)
    }

    /// The spread over rounds of `name`'s speed relative to `against`:
    /// `against`'s time per operation divided by `name`'s, in the same
    /// round (above 1: `name` is faster). Rounds where either did not run
    /// are skipped.
    pub fn speed_ratio(&self, name: &str, against: &str) -> Option<Spread> {
        let (a, b) = (self.get(name)?, self.get(against)?);
        Spread::of(a.samples.iter().zip(&b.samples).filter_map(|(x, y)| {
            let (x, y) = (x.as_ref()?, y.as_ref()?);
            Some(y.ns_per_op() / x.ns_per_op())
        }))
    }

    /// As [`Report::speed_ratio`] but on TSC cycles per operation, for
    /// contenders that measure in cycles (a C program reports its own
    /// `rte_rdtsc` span; its wall-clock figure includes nothing else either).
    pub fn cycle_ratio(&self, name: &str, against: &str) -> Option<Spread> {
        let (a, b) = (self.get(name)?, self.get(against)?);
        Spread::of(a.samples.iter().zip(&b.samples).filter_map(|(x, y)| {
            let (x, y) = (x.as_ref()?, y.as_ref()?);
            Some(y.cycles_per_op() / x.cycles_per_op())
        }))
    }

    /// The report as a text table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\n== {} ({} rounds, ratio = same-round speed vs {}; >1 is faster) ==",
            self.title, self.rounds, self.baseline
        );
        let _ = writeln!(out, "   meanwhile: {}", self.noise);
        let lead = match self.metric {
            Metric::Throughput => "Mops/s median [p10 p90]",
            Metric::Latency => "ns/op median [p10 p90]",
            Metric::Cycles => "cyc/op median [p10 p90]",
        };
        let _ = writeln!(
            out,
            "{:<28} {:>30} {:>9} {:>9} {:>9} {:>24}",
            "contender", lead, "ns/op", "cyc/op", "2side", "ratio median [p10 p90]"
        );
        for c in &self.contenders {
            if let Some(why) = &c.failed
                && c.ok().next().is_none()
            {
                let _ = writeln!(out, "{:<28} did not run: {why}", c.name);
                continue;
            }
            let lead = match self.metric {
                Metric::Throughput => c.ops_per_sec().map(|s| Spread {
                    median: s.median / 1e6,
                    p10: s.p10 / 1e6,
                    p90: s.p90 / 1e6,
                }),
                Metric::Latency => c.ns_per_op(),
                Metric::Cycles => c.cycles_per_op(),
            };
            let fmt3 = |s: Option<Spread>| match s {
                Some(s) => format!("{:.2} [{:.2} {:.2}]", s.median, s.p10, s.p90),
                None => "-".into(),
            };
            let med = |s: Option<Spread>| s.map_or("-".into(), |s| format!("{:.2}", s.median));
            let ratio = if c.name == self.baseline {
                "(baseline)".to_string()
            } else {
                fmt3(self.speed_ratio(&c.name, &self.baseline))
            };
            let _ = writeln!(
                out,
                "{:<28} {:>30} {:>9} {:>9} {:>9} {:>24}",
                c.name,
                fmt3(lead),
                med(c.ns_per_op()),
                med(c.cycles_per_op()),
                med(c.side_cycles_per_op()),
                ratio
            );
            if let Some(why) = &c.failed {
                let _ = writeln!(out, "{:<28} stopped: {why}", "");
            }
        }
        out
    }

    /// The report as a JSON object (every sample included).
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        let _ = write!(
            out,
            "{{\"title\":{},\"baseline\":{},\"rounds\":{},\"others_pct\":{},\"steal_pct\":{},\"contenders\":[",
            json_str(&self.title),
            json_str(&self.baseline),
            self.rounds,
            json_num(self.noise.others_pct),
            json_num(self.noise.steal_pct)
        );
        for (i, c) in self.contenders.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{{\"name\":{},", json_str(&c.name));
            let _ = write!(
                out,
                "\"failed\":{},",
                c.failed.as_deref().map_or("null".into(), json_str)
            );
            for (key, s) in [
                ("ops_per_sec", c.ops_per_sec()),
                ("ns_per_op", c.ns_per_op()),
                ("cycles_per_op", c.cycles_per_op()),
                ("side_cycles_per_op", c.side_cycles_per_op()),
                (
                    "speed_ratio_vs_baseline",
                    self.speed_ratio(&c.name, &self.baseline),
                ),
            ] {
                let _ = write!(out, "{}:{},", json_str(key), json_spread(s));
            }
            out.push_str("\"samples\":[");
            for (k, s) in c.samples.iter().enumerate() {
                if k > 0 {
                    out.push(',');
                }
                match s {
                    None => out.push_str("null"),
                    Some(s) => {
                        let _ = write!(
                            out,
                            "{{\"ops\":{},\"nanos\":{},\"cycles\":{},\"side_cycles_per_op\":{}}}",
                            s.ops,
                            json_num(s.nanos),
                            json_num(s.cycles),
                            s.side_cycles_per_op.map_or("null".into(), json_num)
                        );
                    }
                }
            }
            out.push_str("]}");
        }
        out.push_str("]}");
        out
    }
}

/// `s` as a JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `x` as a JSON number (`null` when not finite).
pub fn json_num(x: f64) -> String {
    if x.is_finite() {
        format!("{x}")
    } else {
        "null".into()
    }
}

/// A spread as a JSON object, or `null`.
pub fn json_spread(s: Option<Spread>) -> String {
    match s {
        Some(s) => format!(
            "{{\"median\":{},\"p10\":{},\"p90\":{}}}",
            json_num(s.median),
            json_num(s.p10),
            json_num(s.p90)
        ),
        None => "null".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ns: f64) -> Sample {
        Sample {
            ops: 10,
            nanos: ns,
            cycles: ns * 2.0,
            side_cycles_per_op: None,
        }
    }

    #[test]
    fn spread_interpolates() {
        let s = Spread::of([5.0, 1.0, 3.0, 2.0, 4.0]).unwrap();
        assert_eq!(s.median, 3.0);
        assert!((s.p10 - 1.4).abs() < 1e-9);
        assert!((s.p90 - 4.6).abs() < 1e-9);
        assert!(Spread::of([]).is_none());
    }

    #[test]
    fn rounds_alternate_and_ratios_pair_by_round() {
        let order = std::cell::RefCell::new(String::new());
        let mut a_ns = [100.0, 200.0, 400.0, 100.0].into_iter();
        let mut b_ns = [50.0, 100.0, 200.0, 50.0].into_iter();
        let report = Comparison::new("t", Metric::Throughput, "a")
            .contender("a", || {
                order.borrow_mut().push('a');
                Ok(sample(a_ns.next().unwrap()))
            })
            .contender("b", || {
                order.borrow_mut().push('b');
                Ok(sample(b_ns.next().unwrap()))
            })
            .run(3, |_, _, _| {});
        assert_eq!(order.borrow().as_str(), "abbaabba");
        // The machine's speed changed 4x, the ratio never did.
        let r = report.speed_ratio("b", "a").unwrap();
        assert_eq!((r.p10, r.median, r.p90), (2.0, 2.0, 2.0));
        assert!(report.table().contains("(baseline)"));
        assert!(report.to_json().starts_with("{\"title\":\"t\""));
    }

    #[test]
    fn a_failing_contender_is_dropped_with_its_reason() {
        let report = Comparison::new("t", Metric::Cycles, "a")
            .contender("a", || Ok(sample(1.0)))
            .contender("c", || Err("no binary".into()))
            .run(2, |_, _, _| {});
        let c = report.get("c").unwrap();
        assert_eq!(c.failed.as_deref(), Some("no binary"));
        assert_eq!(c.samples, vec![None, None]);
        assert!(report.table().contains("did not run: no binary"));
    }
}
