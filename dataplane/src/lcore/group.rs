//! [`LcoreGroup`]: lcores configured, checked and given their pollers,
//! then launched.

use super::*;

/// How one lcore is started.
#[derive(Debug, Clone)]
pub struct LcoreConfig {
    /// Its role.
    pub role: Role,
    /// The CPU to pin it to; `None` leaves it to the scheduler.
    pub cpu: Option<CpuId>,
    /// What it does when idle.
    pub idle: IdlePolicy,
    /// Thread name suffix; defaults to the role.
    pub name: Option<String>,
    /// Ask the kernel for a higher priority (nice -10); refused without
    /// CAP_SYS_NICE, which is logged once and otherwise ignored.
    pub high_priority: bool,
    /// The thread's stack size; the platform default when `None`.
    pub stack_size: Option<usize>,
}

impl LcoreConfig {
    /// An unpinned lcore of `role` with the adaptive idle policy.
    pub fn new(role: Role) -> Self {
        LcoreConfig {
            role,
            cpu: None,
            idle: IdlePolicy::ADAPTIVE,
            name: None,
            high_priority: false,
            stack_size: None,
        }
    }

    /// Pins it to `cpu`.
    pub fn cpu(mut self, cpu: CpuId) -> Self {
        self.cpu = Some(cpu);
        self
    }

    /// Sets its idle policy.
    pub fn idle(mut self, idle: IdlePolicy) -> Self {
        self.idle = idle;
        self
    }

    /// Names its thread `lcore<id>-<name>`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Asks for a higher scheduling priority.
    pub fn high_priority(mut self, on: bool) -> Self {
        self.high_priority = on;
        self
    }
}

pub(super) struct Spec {
    pub(super) config: LcoreConfig,
    pub(super) pollers: Vec<Box<dyn Poller>>,
}

/// Lcores to launch, with their pollers.
pub struct LcoreGroup {
    pub(super) lcores: Vec<Spec>,
    pub(super) drain_timeout: Duration,
    pub(super) allow_shared_cpus: bool,
}

impl fmt::Debug for LcoreGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LcoreGroup")
            .field(
                "lcores",
                &self
                    .lcores
                    .iter()
                    .map(|s| (&s.config, s.pollers.len()))
                    .collect::<Vec<_>>(),
            )
            .field("drain_timeout", &self.drain_timeout)
            .finish()
    }
}

impl Default for LcoreGroup {
    fn default() -> Self {
        Self::new()
    }
}

/// How long a stop may take to drain before lcores give up (and say so).
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

impl LcoreGroup {
    /// An empty group.
    pub fn new() -> Self {
        LcoreGroup {
            lcores: Vec::new(),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            allow_shared_cpus: false,
        }
    }

    /// Adds an lcore; ids are given in order from 0.
    pub fn add(&mut self, config: LcoreConfig) -> LcoreId {
        self.lcores.push(Spec {
            config,
            pollers: Vec::new(),
        });
        LcoreId(self.lcores.len() as u32 - 1)
    }

    /// The lcores added so far.
    pub fn lcores(&self) -> impl Iterator<Item = (LcoreId, &LcoreConfig)> {
        self.lcores
            .iter()
            .enumerate()
            .map(|(i, s)| (LcoreId(i as u32), &s.config))
    }

    /// Gives `poller` to lcore `id`; an lcore polls its pollers in the order
    /// they were given.
    ///
    /// # Errors
    /// [`Error::Config`] when there is no lcore `id`.
    pub fn poller(&mut self, id: LcoreId, poller: impl Poller + 'static) -> Result<()> {
        let n = self.lcores.len();
        let spec = self
            .lcores
            .get_mut(id.0 as usize)
            .ok_or_else(|| Error::Config(format!("no {id}: the group has {n} lcores")))?;
        spec.pollers.push(Box::new(poller));
        Ok(())
    }

    /// How long a stop may drain before lcores give up.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Whether two lcores may be pinned to one CPU (off by default: it is
    /// almost always a mistake with busy-polling lcores).
    pub fn allow_shared_cpus(mut self, on: bool) -> Self {
        self.allow_shared_cpus = on;
        self
    }

    pub(super) fn validate(&self) -> Result<()> {
        let mains = self
            .lcores
            .iter()
            .filter(|s| s.config.role == Role::Main)
            .count();
        if mains > 1 {
            return Err(Error::Config(format!(
                "{mains} main lcores; a group has at most one"
            )));
        }
        let allowed = affinity::allowed_cpus()?;
        let mut pinned: Vec<(CpuId, LcoreId)> = Vec::new();
        for (i, s) in self.lcores.iter().enumerate() {
            let Some(cpu) = s.config.cpu else { continue };
            affinity::check_cpu(cpu, &allowed)?;
            if let Some(&(_, other)) = pinned.iter().find(|(c, _)| *c == cpu)
                && !self.allow_shared_cpus
            {
                return Err(Error::Config(format!(
                    "{other} and lcore{i} are both pinned to {cpu}; allow shared CPUs explicitly if that is meant"
                )));
            }
            pinned.push((cpu, LcoreId(i as u32)));
        }
        Ok(())
    }
}
