//! [`PlanBuilder`]: overrides from code and from the environment.

use super::overrides::{Overrides, Setting};
use super::{Plan, Profile, planner};
use crate::lcore::IdlePolicy;
use crate::topology::{CpuId, Topology};
use crate::{Error, Result};
use std::time::Duration;

/// Builds a [`Plan`] from a profile's defaults and overrides. Each method
/// replaces what an earlier call (or [`from_env`](Self::from_env)) set;
/// values are checked in [`build`](Self::build), which names the call or
/// variable a refused value came from.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until build() is called"]
pub struct PlanBuilder<'t> {
    topo: &'t Topology,
    profile: Profile,
    overrides: Overrides,
    /// The first malformed environment value, reported by `build`.
    /// (Kept as text so that the builder stays `Clone`.)
    env_error: Option<String>,
}

fn set<T>(value: T, source: String) -> Option<Setting<T>> {
    Some(Setting { value, source })
}

impl<'t> PlanBuilder<'t> {
    pub(super) fn new(topo: &'t Topology, profile: Profile) -> Self {
        Self {
            topo,
            profile,
            overrides: Overrides::default(),
            env_error: None,
        }
    }

    /// Switches to another profile's defaults; overrides stay.
    pub fn profile(mut self, profile: Profile) -> Self {
        self.profile = profile;
        self
    }

    /// Application lcores (at least 1).
    pub fn app_lcores(mut self, n: usize) -> Self {
        self.overrides.app_lcores = set(n, format!("app_lcores({n})"));
        self
    }

    /// I/O lcores on each NUMA node (0 lets application lcores poll their
    /// own queues).
    pub fn io_lcores_per_node(mut self, n: usize) -> Self {
        self.overrides.io_lcores_per_node = set(n, format!("io_lcores_per_node({n})"));
        self
    }

    /// Accelerator lcores.
    pub fn accel_lcores(mut self, n: usize) -> Self {
        self.overrides.accel_lcores = set(n, format!("accel_lcores({n})"));
        self
    }

    /// The CPUs to place lcores on, used exactly as given: each must be
    /// usable, SMT siblings are not dropped, no housekeeping core is kept.
    pub fn cpus(mut self, cpus: impl IntoIterator<Item = CpuId>) -> Self {
        let list: Vec<CpuId> = cpus.into_iter().collect();
        let shown: Vec<u32> = list.iter().map(|c| c.0).collect();
        self.overrides.cpus = set(list, format!("cpus({shown:?})"));
        self
    }

    /// Whether lcores are pinned to their CPU.
    pub fn affinity(mut self, on: bool) -> Self {
        self.overrides.affinity = set(on, format!("affinity({on})"));
        self
    }

    /// Whether placement and pools follow NUMA nodes.
    pub fn numa_aware(mut self, on: bool) -> Self {
        self.overrides.numa_aware = set(on, format!("numa_aware({on})"));
        self
    }

    /// The idle policy.
    pub fn idle(mut self, idle: IdlePolicy) -> Self {
        self.overrides.idle = set(idle, format!("idle({idle:?})"));
        self
    }

    /// The burst size (1 up to the ring capacity).
    pub fn burst(mut self, n: usize) -> Self {
        self.overrides.burst = set(n, format!("burst({n})"));
        self
    }

    /// The ring capacity (a power of two, at least 2).
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.overrides.queue_capacity = set(n, format!("queue_capacity({n})"));
        self
    }

    /// Mbufs in each NUMA node's pool.
    pub fn mbufs_per_node(mut self, n: usize) -> Self {
        self.overrides.mbufs_per_node = set(n, format!("mbufs_per_node({n})"));
        self
    }

    /// Objects in each lcore's mempool cache (at most 512).
    pub fn mempool_cache(mut self, n: usize) -> Self {
        self.overrides.mempool_cache = set(n, format!("mempool_cache({n})"));
        self
    }

    /// Whether pools use hugepages.
    pub fn hugepages(mut self, on: bool) -> Self {
        self.overrides.hugepages = set(on, format!("hugepages({on})"));
        self
    }

    /// Applies the `DATAPLANE_*` variables of this process (see the table in
    /// the [module docs](super)). A malformed value makes
    /// [`build`](Self::build) fail.
    pub fn from_env(self) -> Self {
        self.from_env_with(|name| std::env::var(name).ok())
    }

    /// Like [`from_env`](Self::from_env) with the variables looked up by
    /// `get`, so that tests need not touch the process environment.
    pub fn from_env_with(mut self, get: impl Fn(&str) -> Option<String>) -> Self {
        if let Err(e) = self.apply_env(&get) {
            // Keep the first: it is the one the user should fix first.
            self.env_error.get_or_insert(match e {
                Error::Config(msg) => msg,
                other => other.to_string(),
            });
        }
        self
    }

    fn apply_env(&mut self, get: &dyn Fn(&str) -> Option<String>) -> Result<()> {
        let var = |name: &'static str| -> Option<(&'static str, String)> {
            get(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .map(|v| (name, v))
        };
        let o = &mut self.overrides;
        if let Some((n, v)) = var("DATAPLANE_PROFILE") {
            self.profile = v.parse().map_err(|_| {
                bad(
                    n,
                    &v,
                    "production, low_latency (or low-latency), performance or power",
                )
            })?;
        }
        if let Some((n, v)) = var("DATAPLANE_CPUS") {
            let list = parse_cpu_list(&v).ok_or_else(|| bad(n, &v, "a CPU list such as 2-5,8"))?;
            o.cpus = set(list, format!("{n}={v}"));
        }
        let count = |name, min: usize| -> Result<Option<Setting<usize>>> {
            let Some((n, v)) = var(name) else {
                return Ok(None);
            };
            let x: usize = v
                .parse()
                .ok()
                .filter(|&x| x >= min)
                .ok_or_else(|| bad(n, &v, &format!("an integer >= {min}")))?;
            Ok(set(x, format!("{n}={v}")))
        };
        let flag = |name| -> Result<Option<Setting<bool>>> {
            let Some((n, v)) = var(name) else {
                return Ok(None);
            };
            let b =
                parse_bool(&v).ok_or_else(|| bad(n, &v, "on/off, 1/0, true/false or yes/no"))?;
            Ok(set(b, format!("{n}={v}")))
        };
        macro_rules! apply {
            ($field:ident, $e:expr) => {
                if let Some(s) = $e {
                    o.$field = Some(s);
                }
            };
        }
        apply!(app_lcores, count("DATAPLANE_APP_LCORES", 1)?);
        apply!(
            io_lcores_per_node,
            count("DATAPLANE_IO_LCORES_PER_NODE", 0)?
        );
        apply!(accel_lcores, count("DATAPLANE_ACCEL_LCORES", 0)?);
        apply!(affinity, flag("DATAPLANE_AFFINITY")?);
        apply!(numa_aware, flag("DATAPLANE_NUMA")?);
        if let Some((n, v)) = var("DATAPLANE_IDLE") {
            let idle = parse_idle(&v)
                .ok_or_else(|| bad(n, &v, "busy, adaptive or sleep:<µs> (µs >= 1)"))?;
            o.idle = set(idle, format!("{n}={v}"));
        }
        apply!(burst, count("DATAPLANE_BURST", 1)?);
        apply!(queue_capacity, count("DATAPLANE_QUEUE_CAPACITY", 2)?);
        apply!(mbufs_per_node, count("DATAPLANE_MBUFS", 1)?);
        apply!(mempool_cache, count("DATAPLANE_MEMPOOL_CACHE", 0)?);
        apply!(hugepages, flag("DATAPLANE_HUGEPAGES")?);
        Ok(())
    }

    /// Plans.
    ///
    /// # Errors
    ///
    /// - [`Error::Config`] for a malformed environment value, an override
    ///   out of range (naming where it came from), or no usable CPU;
    /// - [`Error::Cpu`] for a CPU in an explicit list that cannot be used;
    /// - [`Error::TooManyLcores`] when explicit counts need more CPUs than
    ///   there are while affinity is on.
    pub fn build(self) -> Result<Plan> {
        if let Some(msg) = self.env_error {
            return Err(Error::Config(msg));
        }
        planner::plan(self.topo, self.profile, &self.overrides)
    }
}

fn bad(var: &str, value: &str, expected: &str) -> Error {
    Error::Config(format!("{var}={value:?} is not valid: expected {expected}"))
}

/// A strict CPU list: `n` or `a-b` (a <= b) items separated by commas.
/// Unlike the kernel-file parser, anything malformed refuses the whole list.
pub fn parse_cpu_list(s: &str) -> Option<Vec<CpuId>> {
    let num = |p: &str| p.trim().parse::<u32>().ok();
    for part in s.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                // The kernel's own bound on a list range.
                if a > b || b - a >= 1 << 20 {
                    return None;
                }
            }
            None => {
                num(part)?;
            }
        }
    }
    let list: Vec<CpuId> = hugepages::system::parse_list(s)
        .into_iter()
        .map(CpuId)
        .collect();
    (!list.is_empty()).then_some(list)
}

pub(super) fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "on" | "1" | "true" | "yes" => Some(true),
        "off" | "0" | "false" | "no" => Some(false),
        _ => None,
    }
}

pub(super) fn parse_idle(s: &str) -> Option<IdlePolicy> {
    let s = s.to_ascii_lowercase();
    match s.as_str() {
        "busy" | "busy_poll" | "busy-poll" | "poll" => Some(IdlePolicy::BusyPoll),
        "adaptive" => Some(IdlePolicy::ADAPTIVE),
        _ => {
            let us: u64 = s.strip_prefix("sleep:")?.trim().parse().ok()?;
            (us >= 1).then(|| IdlePolicy::Sleep {
                interval: Duration::from_micros(us),
            })
        }
    }
}
