//! What `dp-info` reports: the detected machine, the plan of each
//! profile, every backend probe and the `DATAPLANE_REQUIRE` verdicts, as
//! data ([`Report`], serialisable to JSON) and as a human table
//! ([`render_text`]).

use dataplane::lcore::{IdlePolicy, Role};
use dataplane::profile::{Plan, Profile};
use dataplane::require::{Capability, Requirements};
use dataplane::topology::{CpuId, Topology};
use serde::Serialize;
use std::fmt::Write as _;

/// Everything `dp-info` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The machine as detected.
    pub topology: Topology,
    /// The CPUs lcores may be pinned to (online ∩ affinity ∩ cpuset).
    pub usable_cpus: Vec<CpuId>,
    /// The profile a runtime would use: `DATAPLANE_PROFILE`, else
    /// production.
    pub selected_profile: Profile,
    /// One plan per profile shown, with the environment overrides
    /// applied.
    pub plans: Vec<PlanReport>,
    /// `DATAPLANE_REQUIRE` and what it says about this machine.
    pub require: RequireReport,
    /// Every backend of every subsystem (net, block, accel), in
    /// selection order, with why it can or cannot run here.
    pub backends: Vec<dataplane::backend::BackendProbe>,
    /// The Vulkan loader and every physical device, for the
    /// accelerator backend; `None` for an imagined machine.
    pub vulkan: Option<dataplane::accel::Discovery>,
}

/// The plan of one profile, or why there is none.
#[derive(Debug, Clone, Serialize)]
pub struct PlanReport {
    /// The profile.
    pub profile: Profile,
    /// The plan, when it could be made.
    pub plan: Option<Plan>,
    /// Why not, e.g. a malformed `DATAPLANE_*` variable.
    pub error: Option<String>,
}

/// `DATAPLANE_REQUIRE` against the probes.
#[derive(Debug, Clone, Serialize)]
pub struct RequireReport {
    /// The parsed variable.
    pub parsed: Requirements,
    /// Required capabilities whose probe failed: a runtime would refuse
    /// to start.
    pub unmet: Vec<Capability>,
}

/// Detects this machine and plans `profiles` (every profile when empty)
/// with the `DATAPLANE_*` environment applied, the profile itself kept.
///
/// # Errors
///
/// When the machine's CPUs cannot be found at all.
pub fn report(profiles: &[Profile]) -> anyhow::Result<Report> {
    let topology = Topology::detect()?;
    let mut r = report_for(topology, profiles, &|name| std::env::var(name).ok());
    r.vulkan = Some(dataplane::accel::discover());
    Ok(r)
}

/// [`report`] for a given topology and environment lookup.
pub fn report_for(
    topology: Topology,
    profiles: &[Profile],
    env: &dyn Fn(&str) -> Option<String>,
) -> Report {
    let shown = if profiles.is_empty() {
        &Profile::ALL[..]
    } else {
        profiles
    };
    let selected_profile = env("DATAPLANE_PROFILE")
        .and_then(|p| p.parse().ok())
        .unwrap_or(Profile::Production);
    let plans = shown
        .iter()
        .map(|&profile| {
            // from_env would also switch the profile; put it back so
            // that each profile is shown under its own rules.
            let built = Plan::builder(&topology, profile)
                .from_env_with(env)
                .profile(profile)
                .build();
            match built {
                Ok(plan) => PlanReport {
                    profile,
                    plan: Some(plan),
                    error: None,
                },
                Err(e) => PlanReport {
                    profile,
                    plan: None,
                    error: Some(e.to_string()),
                },
            }
        })
        .collect();
    let parsed = Requirements::parse(&env(dataplane::require::ENV).unwrap_or_default());
    let unmet = parsed
        .required
        .iter()
        .copied()
        .filter(|&c| !topology.probes.of(c).available)
        .collect();
    Report {
        usable_cpus: topology.usable_cpus(),
        topology,
        selected_profile,
        plans,
        require: RequireReport { parsed, unmet },
        backends: dataplane::backend_probes(),
        vulkan: None,
    }
}

/// `0-3,8`: a CPU list in the kernel's notation.
pub fn cpu_list(cpus: &[CpuId]) -> String {
    let mut ids: Vec<u32> = cpus.iter().map(|c| c.0).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < ids.len() {
        let start = ids[i];
        let mut end = start;
        while i + 1 < ids.len() && ids[i + 1] == end + 1 {
            i += 1;
            end = ids[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if end == start {
            let _ = write!(out, "{start}");
        } else {
            let _ = write!(out, "{start}-{end}");
        }
        i += 1;
    }
    if out.is_empty() {
        "none".to_owned()
    } else {
        out
    }
}

/// Bytes in binary units with one decimal: `5.2 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 || v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[unit])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn idle(p: &IdlePolicy) -> String {
    match p {
        IdlePolicy::BusyPoll => "busy poll".to_owned(),
        IdlePolicy::Adaptive { max_sleep, .. } => {
            format!("adaptive (sleeps up to {} µs)", max_sleep.as_micros())
        }
        IdlePolicy::Sleep { interval } => {
            format!("sleep {} µs when idle", interval.as_micros())
        }
        // IdlePolicy may grow; show what it is rather than nothing.
        #[allow(unreachable_patterns)]
        other => format!("{other:?}"),
    }
}

fn role(r: Role) -> &'static str {
    match r {
        Role::Main => "main",
        Role::App => "app",
        Role::Io => "io",
        Role::Accel => "accel",
    }
}

fn on(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

/// A left-aligned table; every row as many cells as `header`.
fn table(out: &mut String, indent: &str, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let mut s = indent.to_owned();
        for (cell, w) in cells.zip(&widths) {
            let _ = write!(s, "{cell:<w$}  ");
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(out, &mut header.iter().copied());
    for row in rows {
        line(out, &mut row.iter().map(String::as_str));
    }
}

/// The report as text for a terminal.
pub fn render_text(r: &Report) -> String {
    let t = &r.topology;
    let mut out = String::new();
    let o = &mut out;

    o.push_str("Machine\n");
    let online = t.online_cpus();
    let cores = t.usable_cores();
    let packages: std::collections::BTreeSet<u32> =
        t.cpus.iter().filter_map(|c| c.package).collect();
    let smt = t.cpus.iter().map(|c| c.siblings.len()).max().unwrap_or(1);
    let cgroup = match (&t.cgroup.version, &t.cgroup.path) {
        (Some(v), Some(p)) => format!("v{v} {p}"),
        _ => "no CPU controller found".to_owned(),
    };
    let rows = [
        ("kernel", opt(t.kernel.as_deref())),
        ("cpu model", opt(t.cpu_model.as_deref())),
        (
            "cpus",
            format!(
                "{} present, {} online ({}), {} usable ({})",
                t.cpus.len(),
                online.len(),
                cpu_list(&online),
                r.usable_cpus.len(),
                cpu_list(&r.usable_cpus)
            ),
        ),
        (
            "cores",
            format!(
                "{cores} usable physical, {} package(s), {}",
                packages.len().max(1),
                if smt > 1 {
                    format!("SMT {smt} threads/core")
                } else {
                    "no SMT".to_owned()
                }
            ),
        ),
        ("isolated", cpu_list(&t.isolated_cpus())),
        (
            "affinity",
            t.affinity
                .as_deref()
                .map_or_else(|| "unknown".to_owned(), cpu_list),
        ),
        ("cgroup", cgroup),
        (
            "cgroup cpuset",
            t.cgroup
                .cpuset
                .as_deref()
                .map_or_else(|| "no limit".to_owned(), cpu_list),
        ),
        (
            "cgroup quota",
            t.cgroup
                .cpu_quota
                .map_or_else(|| "unlimited".to_owned(), |q| format!("{q} CPUs")),
        ),
    ];
    for (k, v) in rows {
        let _ = writeln!(o, "  {k:<14}{v}");
    }

    o.push_str("\nNUMA nodes\n");
    let rows: Vec<Vec<String>> = t
        .nodes
        .iter()
        .map(|n| {
            let huge: Vec<String> = n
                .hugepages
                .iter()
                .map(|p| format!("{}: {}/{} free", bytes(p.page_size as u64), p.free, p.total))
                .collect();
            vec![
                n.id.0.to_string(),
                cpu_list(&n.cpus),
                opt(n.mem_total.map(bytes)),
                opt(n.mem_free.map(bytes)),
                if huge.is_empty() {
                    "-".to_owned()
                } else {
                    huge.join(", ")
                },
            ]
        })
        .collect();
    table(
        o,
        "  ",
        &["node", "cpus", "memory", "free", "hugepages"],
        &rows,
    );

    o.push_str("\nHugepages\n");
    if t.hugepages.pools.is_empty() {
        o.push_str("  none: the kernel offers no hugepage sizes\n");
    } else {
        let rows: Vec<Vec<String>> = t
            .hugepages
            .pools
            .iter()
            .map(|p| {
                let default = t.hugepages.default_size == Some(p.page_size);
                vec![
                    format!(
                        "{}{}",
                        bytes(p.page_size as u64),
                        if default { " (default)" } else { "" }
                    ),
                    p.total.to_string(),
                    p.free.to_string(),
                    bytes(p.free_bytes()),
                ]
            })
            .collect();
        table(o, "  ", &["size", "total", "free", "free bytes"], &rows);
    }
    if t.hugepages.mounts.is_empty() {
        o.push_str("  hugetlbfs: not mounted (MAP_HUGETLB works without it)\n");
    }
    for m in &t.hugepages.mounts {
        let _ = writeln!(
            o,
            "  hugetlbfs: {} ({} pages)",
            m.path.display(),
            bytes(m.page_size as u64)
        );
    }

    o.push_str("\nNICs\n");
    if t.nics.is_empty() {
        o.push_str("  none besides lo\n");
    } else {
        let rows: Vec<Vec<String>> = t
            .nics
            .iter()
            .map(|n| {
                vec![
                    n.name.clone(),
                    if n.is_virtual {
                        "(virtual)".to_owned()
                    } else {
                        opt(n.driver.as_deref())
                    },
                    opt(n.pci.as_deref()),
                    opt(n.numa_node.map(|x| x.0)),
                    opt(n.mac.as_deref()),
                    opt(n.mtu),
                    n.operstate.clone(),
                    opt(n.speed_mbps.map(|s| format!("{s} Mb/s"))),
                    format!("{}/{}", n.rx_queues, n.tx_queues),
                ]
            })
            .collect();
        table(
            o,
            "  ",
            &[
                "name", "driver", "pci", "node", "mac", "mtu", "state", "speed", "rx/tx q",
            ],
            &rows,
        );
    }

    o.push_str("\nNVMe\n");
    if t.nvme.is_empty() {
        o.push_str("  none\n");
    } else {
        let rows: Vec<Vec<String>> = t
            .nvme
            .iter()
            .map(|c| {
                let ns: Vec<String> = c
                    .namespaces
                    .iter()
                    .map(|n| format!("{} {}", n.dev.display(), opt(n.size_bytes.map(bytes))))
                    .collect();
                vec![
                    c.name.clone(),
                    opt(c.model.as_deref()),
                    opt(c.transport.as_deref()),
                    opt(c.pci.as_deref()),
                    opt(c.numa_node.map(|x| x.0)),
                    opt(c.firmware.as_deref()),
                    if ns.is_empty() {
                        "-".to_owned()
                    } else {
                        ns.join(", ")
                    },
                ]
            })
            .collect();
        table(
            o,
            "  ",
            &[
                "name",
                "model",
                "transport",
                "pci",
                "node",
                "firmware",
                "namespaces",
            ],
            &rows,
        );
    }

    o.push_str("\nGPUs (PCI display controllers)\n");
    if t.gpus.is_empty() {
        o.push_str("  none\n");
    } else {
        let rows: Vec<Vec<String>> = t
            .gpus
            .iter()
            .map(|g| {
                vec![
                    g.address.clone(),
                    format!("{} {:04x}:{:04x}", g.vendor_name(), g.vendor, g.device),
                    g.class.clone(),
                    opt(g.numa_node.map(|x| x.0)),
                    opt(g.driver.as_deref()),
                ]
            })
            .collect();
        table(
            o,
            "  ",
            &["pci", "device", "class", "node", "driver"],
            &rows,
        );
    }

    o.push_str("\nBackends\n");
    let rows: Vec<Vec<String>> = t
        .probes
        .iter()
        .map(|(cap, p)| {
            let required = r.require.parsed.requires(cap);
            let ok = match (p.available, required) {
                (true, true) => "yes (required)",
                (true, false) => "yes",
                (false, true) => "NO (required)",
                (false, false) => "no",
            };
            vec![cap.name().to_owned(), ok.to_owned(), p.reason.clone()]
        })
        .collect();
    table(o, "  ", &["backend", "available", "reason"], &rows);
    if !r.backends.is_empty() {
        o.push_str("\nBackends by subsystem, in selection order\n");
        let rows: Vec<Vec<String>> = r
            .backends
            .iter()
            .map(|b| {
                vec![
                    b.subsystem.to_owned(),
                    b.backend.to_owned(),
                    if b.probe.available { "yes" } else { "no" }.to_owned(),
                    b.probe.reason.clone(),
                ]
            })
            .collect();
        table(
            o,
            "  ",
            &["subsystem", "backend", "available", "reason"],
            &rows,
        );
    }
    let env = &r.require.parsed;
    if env.required.is_empty() && env.unknown.is_empty() {
        o.push_str("  DATAPLANE_REQUIRE is empty: every backend may fall back\n");
    }
    for c in &r.require.unmet {
        let _ = writeln!(
            o,
            "  REQUIRED BUT UNAVAILABLE: {c} (a runtime would refuse to start)"
        );
    }
    for u in &env.unknown {
        let _ = writeln!(o, "  DATAPLANE_REQUIRE names unknown capability {u:?}");
    }

    if let Some(v) = &r.vulkan {
        o.push_str("\nVulkan devices (accelerator queues)\n");
        let _ = writeln!(o, "  loader: {}", v.loader.reason);
        for d in &v.devices {
            let usable = if d.usable.available {
                "usable".to_owned()
            } else {
                format!("not usable: {}", d.usable.reason)
            };
            let _ = writeln!(o, "  #{}: {} ({usable})", d.index, d.summary());
        }
        if v.loader.available && v.devices.is_empty() {
            o.push_str("  no physical devices: accelerator queues run on the CPU\n");
        }
    }

    if let Some(h) = &t.hwloc {
        o.push_str("\nCaches (hwloc)\n");
        for (i, domain) in h.l3_domains.iter().enumerate() {
            let cores: Vec<_> = h
                .core_caches
                .iter()
                .filter(|c| c.l3_domain == Some(i))
                .collect();
            let first = cores.first();
            let _ = writeln!(
                o,
                "  L3 #{i}: {} shared by cpus {} ({} cores; per core L2 {}, L1d {})",
                opt(first.and_then(|c| c.l3_bytes).map(bytes)),
                cpu_list(domain),
                cores.len(),
                opt(first.and_then(|c| c.l2_bytes).map(bytes)),
                opt(first.and_then(|c| c.l1d_bytes).map(bytes)),
            );
        }
        if h.l3_domains.is_empty() {
            let first = h.core_caches.first();
            let _ = writeln!(
                o,
                "  no L3; per core L2 {}, L1d {}",
                opt(first.and_then(|c| c.l2_bytes).map(bytes)),
                opt(first.and_then(|c| c.l1d_bytes).map(bytes)),
            );
        }
    }

    if !t.notes.is_empty() {
        o.push_str("\nDetection notes\n");
        for n in &t.notes {
            let _ = writeln!(o, "  - {n}");
        }
    }

    for p in &r.plans {
        let selected = if p.profile == r.selected_profile {
            " (selected)"
        } else {
            ""
        };
        let _ = write!(o, "\nPlan: {}{selected}\n", p.profile);
        let Some(plan) = &p.plan else {
            let _ = writeln!(o, "  no plan: {}", opt(p.error.as_deref()));
            continue;
        };
        let _ = writeln!(
            o,
            "  {} lcores on {} cpus: 1 main, {} io, {} accel, {} app{}",
            plan.lcores.len(),
            plan.cores_used(),
            plan.io_lcores().count(),
            plan.accel_lcores().count(),
            plan.app_lcores().count(),
            if plan.shared_cores {
                " (cores shared)"
            } else {
                ""
            },
        );
        let _ = writeln!(
            o,
            "  idle {}, burst {}, ring {}, {} mbufs/node, mempool cache {}, hugepages {}, affinity {}, numa {}",
            idle(&plan.idle),
            plan.burst,
            plan.queue_capacity,
            plan.mbufs_per_node,
            plan.mempool_cache,
            on(plan.hugepages),
            on(plan.affinity),
            on(plan.numa_aware),
        );
        let rows: Vec<Vec<String>> = plan
            .lcores
            .iter()
            .map(|l| {
                vec![
                    l.id.0.to_string(),
                    role(l.role).to_owned(),
                    l.cpu.0.to_string(),
                    l.node.0.to_string(),
                ]
            })
            .collect();
        table(o, "    ", &["lcore", "role", "cpu", "node"], &rows);
        for n in &plan.notes {
            let _ = writeln!(o, "  - {n}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_sizes() {
        let ids = |v: &[u32]| v.iter().map(|&c| CpuId(c)).collect::<Vec<_>>();
        assert_eq!(cpu_list(&ids(&[0, 1, 2, 3, 8, 10, 11])), "0-3,8,10-11");
        assert_eq!(cpu_list(&ids(&[5])), "5");
        assert_eq!(cpu_list(&[]), "none");
        assert_eq!(bytes(2 << 20), "2 MiB");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(12), "12 B");
    }

    #[test]
    fn a_synthetic_report() {
        let env = |name: &str| match name {
            "DATAPLANE_PROFILE" => Some("power".to_owned()),
            "DATAPLANE_REQUIRE" => Some("dpdk,warp".to_owned()),
            _ => None,
        };
        let r = report_for(Topology::synthetic(24, 2, 1, 2), &[], &env);
        assert_eq!(r.plans.len(), 4);
        assert_eq!(r.selected_profile, Profile::Power);
        // Each profile keeps its own rules despite DATAPLANE_PROFILE.
        let profiles: Vec<Profile> = r
            .plans
            .iter()
            .filter_map(|p| p.plan.as_ref().map(|p| p.profile))
            .collect();
        assert_eq!(profiles, Profile::ALL);
        assert_eq!(r.require.unmet, vec![Capability::Dpdk]);
        let text = render_text(&r);
        assert!(text.contains("Plan: power (selected)"), "{text}");
        assert!(text.contains("REQUIRED BUT UNAVAILABLE: dpdk"), "{text}");
        assert!(text.contains("\"warp\""), "{text}");
        let json = serde_json::to_value(&r).expect("json");
        assert_eq!(json["plans"][0]["plan"]["lcores"][0]["role"], "main");
    }

    #[test]
    fn a_bad_variable_is_shown_not_hidden() {
        let env = |name: &str| (name == "DATAPLANE_BURST").then(|| "lots".to_owned());
        let r = report_for(
            Topology::synthetic(4, 1, 1, 0),
            &[Profile::Production],
            &env,
        );
        assert_eq!(r.plans.len(), 1);
        let err = r.plans[0].error.as_deref().unwrap_or_default();
        assert!(err.contains("DATAPLANE_BURST"), "{err}");
        assert!(render_text(&r).contains("no plan: "));
    }
}
