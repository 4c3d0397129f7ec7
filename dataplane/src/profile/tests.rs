//! Plans over synthetic machines: the rules, the overrides, the refusals.

use super::builder::{parse_bool, parse_cpu_list, parse_idle};
use super::*;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// The invariants every plan keeps, whatever the machine and profile.
fn check_valid(topo: &Topology, plan: &Plan) {
    let usable = topo.usable_cpus();
    assert!(!plan.lcores.is_empty());
    assert_eq!(plan.lcores[0].role, Role::Main, "main first");
    assert_eq!(
        plan.lcores.iter().filter(|l| l.role == Role::Main).count(),
        1
    );
    for (i, l) in plan.lcores.iter().enumerate() {
        assert_eq!(l.id, LcoreId(i as u32), "dense ids");
        assert!(usable.contains(&l.cpu), "{} on unusable {}", l.id, l.cpu);
        assert_eq!(topo.cpu(l.cpu).map(|c| c.node), Some(l.node));
    }
    assert!(plan.app_lcores().count() >= 1);
    if !plan.shared_cores {
        assert_eq!(
            plan.cores_used(),
            plan.lcores.len(),
            "two lcores on one CPU: {plan:#?}"
        );
    } else {
        assert!(
            plan.notes.iter().any(|n| n.contains("share")),
            "{:?}",
            plan.notes
        );
    }
    assert!(plan.queue_capacity.is_power_of_two());
    assert!(plan.burst >= 1 && plan.burst <= plan.queue_capacity);
    assert!(plan.mempool_cache <= 512);
    assert!(plan.mbufs_per_node >= 8192);
    // I/O lcores balanced across nodes.
    let mut io: BTreeMap<NumaNode, usize> = BTreeMap::new();
    for l in plan.io_lcores() {
        *io.entry(l.node).or_default() += 1;
    }
    if let (Some(min), Some(max)) = (io.values().min(), io.values().max()) {
        assert!(max - min <= 1, "unbalanced I/O lcores {io:?}");
    }
}

fn count(plan: &Plan, role: Role) -> usize {
    plan.lcores_with(role).count()
}

#[test]
fn the_24_core_2_node_2_gpu_machine() {
    let topo = Topology::synthetic(24, 2, 1, 2);
    let plan = Plan::for_profile(&topo, Profile::Production).expect("plan");
    check_valid(&topo, &plan);
    assert_eq!(count(&plan, Role::Main), 1);
    assert_eq!(count(&plan, Role::App), 16);
    assert_eq!(count(&plan, Role::Io), 4);
    assert_eq!(count(&plan, Role::Accel), 2);
    assert!(plan.affinity && plan.numa_aware && !plan.shared_cores);
    assert_eq!(plan.idle, IdlePolicy::ADAPTIVE);
    assert_eq!((plan.burst, plan.queue_capacity), (32, 4096));
    // cpu0 is left to the OS; main on the next housekeeping core.
    assert_eq!(plan.main().map(|l| l.cpu), Some(CpuId(1)));
    assert!(plan.lcores.iter().all(|l| l.cpu != CpuId(0)));
    // Two I/O lcores on each node; each GPU's lcore on the GPU's node.
    for node in [NumaNode(0), NumaNode(1)] {
        assert_eq!(plan.io_lcores().filter(|l| l.node == node).count(), 2);
    }
    let accel: Vec<NumaNode> = plan.accel_lcores().map(|l| l.node).collect();
    assert_eq!(accel, vec![NumaNode(0), NumaNode(1)]);
    // Pools: 12 lcores on the busier node (node 1: 12 CPUs, all used).
    assert_eq!(plan.mempool_cache, 256);
    assert_eq!(plan.mbufs_per_node, 12 * (1024 + 1024 + 32 + 256));
}

#[test]
fn every_profile_on_every_shape() {
    for cpus in [1, 2, 3, 4, 8, 24, 128] {
        for nodes in [1, 2, 4] {
            for smt in [1, 2] {
                for gpus in [0, 2] {
                    let topo = Topology::synthetic(cpus, nodes, smt, gpus);
                    for profile in Profile::ALL {
                        let plan = Plan::for_profile(&topo, profile).unwrap_or_else(|e| {
                            panic!("{cpus}/{nodes}/{smt}/{gpus} {profile}: {e}")
                        });
                        check_valid(&topo, &plan);
                        check_counts(&topo, profile, &plan);
                    }
                }
            }
        }
    }
}

/// The counts rules 1-8 give when nothing had to give way.
fn check_counts(topo: &Topology, profile: Profile, plan: &Plan) {
    let cores = if profile.all_threads() {
        topo.usable_cpus().len()
    } else {
        topo.usable_cores()
    };
    let nodes = topo.nodes.iter().filter(|n| !n.cpus.is_empty()).count();
    let io_per_node = match cores {
        16.. => 2,
        4.. => 1,
        _ => 0,
    };
    let reserve = usize::from(profile.keeps_housekeeping_core() && cores >= 8);
    let fits = 1 + io_per_node * nodes + topo.gpus.len() < cores - reserve;
    let what = format!(
        "{} cores {nodes} nodes {} gpus {profile}",
        cores,
        topo.gpus.len()
    );
    if fits {
        assert_eq!(count(plan, Role::Io), io_per_node * nodes, "{what}");
        assert_eq!(count(plan, Role::Accel), topo.gpus.len(), "{what}");
        let rest = cores - reserve - 1 - io_per_node * nodes - topo.gpus.len();
        let app = if profile == Profile::Power {
            rest.div_ceil(2)
        } else {
            rest
        };
        assert_eq!(count(plan, Role::App), app, "{what}");
    }
    if io_per_node == 0 || count(plan, Role::Io) == 0 {
        assert!(
            plan.notes.iter().any(|n| n.contains("poll their own")),
            "{what}"
        );
    }
    assert_eq!(plan.shared_cores, cores == 1, "{what}");
    match profile {
        Profile::LowLatency => {
            assert_eq!(
                (plan.idle, plan.burst, plan.queue_capacity),
                (IdlePolicy::BusyPoll, 8, 1024)
            );
        }
        Profile::Performance => {
            assert_eq!(
                (plan.idle, plan.burst, plan.queue_capacity),
                (IdlePolicy::BusyPoll, 64, 16384)
            );
        }
        Profile::Power => assert_eq!(
            plan.idle,
            IdlePolicy::Sleep {
                interval: Duration::from_millis(1)
            }
        ),
        Profile::Production => assert_eq!(plan.idle, IdlePolicy::ADAPTIVE),
    }
    if !profile.all_threads() {
        // No two lcores on SMT siblings.
        let mut keys: Vec<CpuId> = plan
            .lcores
            .iter()
            .filter_map(|l| topo.cpu(l.cpu).map(|c| c.core_key()))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), plan.cores_used(), "{what}");
    }
}

#[test]
fn smt_siblings() {
    // 8 cores x 2 threads: low_latency uses one thread per core.
    let topo = Topology::synthetic(16, 1, 2, 0);
    let ll = Plan::for_profile(&topo, Profile::LowLatency).expect("plan");
    assert_eq!(ll.cores_used(), 7, "8 cores, one left to the OS");
    assert!(ll.lcores.iter().all(|l| l.cpu.0 < 8), "first threads only");
    let perf = Plan::for_profile(&topo, Profile::Performance).expect("plan");
    assert_eq!(perf.cores_used(), 16, "every thread, no housekeeping");
    assert_eq!(count(&perf, Role::Io), 2, "16 threads count as 16 cores");
}

#[test]
fn isolated_cpus_first_main_on_housekeeping() {
    let mut topo = Topology::synthetic(12, 1, 1, 0);
    for c in &mut topo.cpus {
        c.isolated = c.id.0 >= 4;
    }
    let plan = Plan::for_profile(&topo, Profile::LowLatency).expect("plan");
    check_valid(&topo, &plan);
    // cpu0 left to the OS, main on cpu1, I/O and the first apps isolated.
    assert_eq!(plan.main().map(|l| l.cpu), Some(CpuId(1)));
    assert!(plan.lcores.iter().all(|l| l.cpu != CpuId(0)));
    assert!(plan.io_lcores().all(|l| l.cpu.0 >= 4));
    assert!(plan.notes.iter().any(|n| n.contains("isolated")));

    // Everything isolated: main has to go on an isolated CPU, and says so.
    for c in &mut topo.cpus {
        c.isolated = true;
    }
    let plan = Plan::for_profile(&topo, Profile::Production).expect("plan");
    check_valid(&topo, &plan);
    assert!(plan.notes.iter().any(|n| n.contains("no housekeeping CPU")));
}

#[test]
fn only_usable_cpus() {
    let mut topo = Topology::synthetic(8, 1, 1, 0);
    topo.cpus[3].online = false;
    topo.cpus[4].allowed = false;
    topo.cpus[5].in_cpuset = false;
    for profile in Profile::ALL {
        let plan = Plan::for_profile(&topo, profile).expect("plan");
        check_valid(&topo, &plan);
    }
    for c in &mut topo.cpus {
        c.allowed = false;
    }
    let err = Plan::for_profile(&topo, Profile::Production).expect_err("nothing usable");
    assert!(err.to_string().contains("no usable CPU"), "{err}");
}

#[test]
fn tiny_machines_share_or_shrink() {
    let one = Topology::synthetic(1, 1, 1, 1);
    let plan = Plan::for_profile(&one, Profile::Production).expect("plan");
    assert!(plan.shared_cores);
    assert_eq!(plan.cores_used(), 1);
    assert_eq!(count(&plan, Role::Accel), 0);
    assert!(plan.notes.iter().any(|n| n.contains("accelerator")));

    // 2 cores, 2 GPUs: main and one app lcore, the GPUs driven by the app.
    let two = Topology::synthetic(2, 1, 1, 2);
    let plan = Plan::for_profile(&two, Profile::Production).expect("plan");
    assert!(!plan.shared_cores);
    assert_eq!((count(&plan, Role::App), count(&plan, Role::Accel)), (1, 0));

    // 4 cores on 4 nodes, 1 GPU: I/O gives way, the GPU gets its lcore back.
    let sparse = Topology::synthetic(4, 4, 1, 1);
    let plan = Plan::for_profile(&sparse, Profile::Production).expect("plan");
    check_valid(&sparse, &plan);
    assert_eq!(count(&plan, Role::Io), 0);
    assert_eq!(count(&plan, Role::Accel), 1);
    assert_eq!(count(&plan, Role::App), 2);
}

#[test]
fn cgroup_quota_shrinks_busy_polling_plans() {
    let mut topo = Topology::synthetic(16, 1, 1, 0);
    topo.cgroup.cpu_quota = Some(2.5);
    let plan = Plan::for_profile(&topo, Profile::LowLatency).expect("plan");
    check_valid(&topo, &plan);
    assert_eq!(plan.cores_used(), 2);
    assert!(plan.notes.iter().any(|n| n.contains("quota")));
    // Adaptive idling backs off, so production keeps its lcores.
    let prod = Plan::for_profile(&topo, Profile::Production).expect("plan");
    assert_eq!(prod.cores_used(), 15);
    // Below one CPU: one core, shared.
    topo.cgroup.cpu_quota = Some(0.5);
    let plan = Plan::for_profile(&topo, Profile::Performance).expect("plan");
    assert_eq!(plan.cores_used(), 1);
    assert!(plan.shared_cores);
    // Explicit counts over the quota are kept, with a note.
    let plan = Plan::builder(&topo, Profile::Performance)
        .app_lcores(4)
        .build()
        .expect("plan");
    assert_eq!(count(&plan, Role::App), 4);
    assert!(plan.notes.iter().any(|n| n.contains("throttled")));
}

#[test]
fn builder_overrides() {
    let topo = Topology::synthetic(24, 2, 1, 2);
    let plan = Plan::builder(&topo, Profile::Production)
        .app_lcores(3)
        .io_lcores_per_node(1)
        .accel_lcores(1)
        .affinity(false)
        .numa_aware(false)
        .idle(IdlePolicy::BusyPoll)
        .burst(16)
        .queue_capacity(256)
        .mbufs_per_node(10_000)
        .mempool_cache(128)
        .hugepages(true)
        .build()
        .expect("plan");
    check_valid(&topo, &plan);
    assert_eq!(count(&plan, Role::App), 3);
    assert_eq!(count(&plan, Role::Io), 1, "not NUMA-aware: one node");
    assert_eq!(count(&plan, Role::Accel), 1);
    assert!(!plan.affinity && !plan.numa_aware && plan.hugepages);
    assert_eq!(plan.idle, IdlePolicy::BusyPoll);
    assert_eq!((plan.burst, plan.queue_capacity), (16, 256));
    assert_eq!((plan.mbufs_per_node, plan.mempool_cache), (10_000, 128));
    assert!(plan.notes.iter().any(|n| n.contains("hugepages asked for")));

    // An explicit CPU list is used as given.
    let plan = Plan::builder(&topo, Profile::Production)
        .cpus([CpuId(0), CpuId(5), CpuId(6), CpuId(7)])
        .build()
        .expect("plan");
    check_valid(&topo, &plan);
    assert_eq!(plan.main().map(|l| l.cpu), Some(CpuId(0)));
    assert_eq!(plan.cores_used(), 4);

    // The profile can change after the fact; overrides stay.
    let plan = Plan::builder(&topo, Profile::Production)
        .burst(4)
        .profile(Profile::Power)
        .build()
        .expect("plan");
    assert_eq!(plan.profile, Profile::Power);
    assert_eq!(plan.burst, 4);

    // Affinity off: any count, sharing as needed.
    let plan = Plan::builder(&Topology::synthetic(2, 1, 1, 0), Profile::Production)
        .app_lcores(6)
        .affinity(false)
        .build()
        .expect("plan");
    assert!(plan.shared_cores);
    assert_eq!(count(&plan, Role::App), 6);
}

#[test]
fn bad_overrides_are_refused() {
    let topo = Topology::synthetic(8, 1, 1, 0);
    let refused = |b: PlanBuilder<'_>, needle: &str| {
        let err = b.build().expect_err(needle);
        assert!(err.to_string().contains(needle), "{err} lacks {needle}");
    };
    let b = || Plan::builder(&topo, Profile::Production);
    refused(b().app_lcores(0), "app_lcores(0)");
    refused(b().app_lcores(20), "21 pinned lcores requested but only 7");
    refused(b().io_lcores_per_node(9), "pinned lcores requested");
    refused(b().queue_capacity(1000), "queue_capacity(1000)");
    refused(b().queue_capacity(1), "power of two");
    refused(b().burst(0), "burst(0)");
    refused(b().burst(8192), "ring capacity (4096)");
    refused(b().mempool_cache(513), "at most 512");
    refused(b().mbufs_per_node(100), "1.5 x the mempool cache");
    refused(b().cpus(Vec::new()), "empty");
    refused(b().cpus([CpuId(99)]), "cpu 99 cannot be used: not present");
    let mut offline = Topology::synthetic(8, 1, 1, 0);
    offline.cpus[2].online = false;
    offline.cpus[3].allowed = false;
    offline.cpus[4].in_cpuset = false;
    let b = || Plan::builder(&offline, Profile::Production);
    refused(b().cpus([CpuId(2)]), "offline");
    refused(b().cpus([CpuId(3)]), "affinity mask");
    refused(b().cpus([CpuId(4)]), "cpuset");
}

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

#[test]
fn environment_overrides() {
    let topo = Topology::synthetic(24, 2, 1, 2);
    let plan = Plan::builder(&topo, Profile::Production)
        .from_env_with(env(&[
            ("DATAPLANE_PROFILE", "low-latency"),
            ("DATAPLANE_CPUS", "2-9, 12"),
            ("DATAPLANE_APP_LCORES", "3"),
            ("DATAPLANE_IO_LCORES_PER_NODE", "1"),
            ("DATAPLANE_ACCEL_LCORES", "0"),
            ("DATAPLANE_AFFINITY", "on"),
            ("DATAPLANE_NUMA", "yes"),
            ("DATAPLANE_IDLE", "sleep:250"),
            ("DATAPLANE_BURST", "16"),
            ("DATAPLANE_QUEUE_CAPACITY", "2048"),
            ("DATAPLANE_MBUFS", "16384"),
            ("DATAPLANE_MEMPOOL_CACHE", "64"),
            ("DATAPLANE_HUGEPAGES", "0"),
        ]))
        .build()
        .expect("plan");
    check_valid(&topo, &plan);
    assert_eq!(plan.profile, Profile::LowLatency);
    assert!(
        plan.lcores
            .iter()
            .all(|l| (2..=9).contains(&l.cpu.0) || l.cpu.0 == 12)
    );
    assert_eq!(count(&plan, Role::App), 3);
    assert_eq!(count(&plan, Role::Io), 2);
    assert_eq!(count(&plan, Role::Accel), 0);
    assert_eq!(
        plan.idle,
        IdlePolicy::Sleep {
            interval: Duration::from_micros(250)
        }
    );
    assert_eq!(
        (
            plan.burst,
            plan.queue_capacity,
            plan.mbufs_per_node,
            plan.mempool_cache
        ),
        (16, 2048, 16384, 64)
    );
    assert!(!plan.hugepages && plan.affinity && plan.numa_aware);

    // Later calls win over earlier ones.
    let e = env(&[("DATAPLANE_BURST", "16")]);
    let b = Plan::builder(&topo, Profile::Production);
    assert_eq!(
        b.clone()
            .from_env_with(&e)
            .burst(8)
            .build()
            .map(|p| p.burst)
            .ok(),
        Some(8)
    );
    assert_eq!(
        b.burst(8).from_env_with(&e).build().map(|p| p.burst).ok(),
        Some(16)
    );

    // Empty counts as unset.
    let plan = Plan::builder(&topo, Profile::Production)
        .from_env_with(env(&[("DATAPLANE_BURST", "")]))
        .build()
        .expect("plan");
    assert_eq!(plan.burst, 32);
}

#[test]
fn malformed_environment_is_refused() {
    let topo = Topology::synthetic(8, 1, 1, 0);
    for (var, value, expected) in [
        ("DATAPLANE_PROFILE", "fast", "production, low_latency"),
        ("DATAPLANE_CPUS", "2-x", "CPU list"),
        ("DATAPLANE_CPUS", "5-2", "CPU list"),
        ("DATAPLANE_APP_LCORES", "0", ">= 1"),
        ("DATAPLANE_APP_LCORES", "-3", ">= 1"),
        ("DATAPLANE_IO_LCORES_PER_NODE", "two", ">= 0"),
        ("DATAPLANE_ACCEL_LCORES", "1.5", ">= 0"),
        ("DATAPLANE_AFFINITY", "maybe", "on/off"),
        ("DATAPLANE_NUMA", "2", "on/off"),
        ("DATAPLANE_IDLE", "sleep:0", "sleep:<µs>"),
        ("DATAPLANE_IDLE", "spin", "busy, adaptive"),
        ("DATAPLANE_BURST", "0", ">= 1"),
        ("DATAPLANE_QUEUE_CAPACITY", "1", ">= 2"),
        ("DATAPLANE_MBUFS", "lots", ">= 1"),
        ("DATAPLANE_MEMPOOL_CACHE", "-1", ">= 0"),
        ("DATAPLANE_HUGEPAGES", "please", "on/off"),
    ] {
        let err = Plan::builder(&topo, Profile::Production)
            .from_env_with(env(&[(var, value)]))
            .build()
            .expect_err(var);
        let msg = err.to_string();
        assert!(
            msg.contains(var) && msg.contains(value) && msg.contains(expected),
            "{var}={value}: {msg}"
        );
    }
    // Well-formed but out of range: the refusal names the variable.
    let err = Plan::builder(&topo, Profile::Production)
        .from_env_with(env(&[("DATAPLANE_QUEUE_CAPACITY", "1000")]))
        .build()
        .expect_err("not a power of two");
    assert!(
        err.to_string().contains("DATAPLANE_QUEUE_CAPACITY=1000"),
        "{err}"
    );
}

#[test]
fn parsers() {
    assert_eq!(
        parse_cpu_list("2-4,8"),
        Some(vec![CpuId(2), CpuId(3), CpuId(4), CpuId(8)])
    );
    assert_eq!(parse_cpu_list("3"), Some(vec![CpuId(3)]));
    assert_eq!(parse_cpu_list(""), None);
    assert_eq!(parse_cpu_list("1,,2"), None);
    assert_eq!(parse_cpu_list("0-99999999"), None);
    assert_eq!(parse_bool("OFF"), Some(false));
    assert_eq!(parse_bool("True"), Some(true));
    assert_eq!(parse_bool("2"), None);
    assert_eq!(parse_idle("busy"), Some(IdlePolicy::BusyPoll));
    assert_eq!(parse_idle("adaptive"), Some(IdlePolicy::ADAPTIVE));
    assert_eq!(
        parse_idle("sleep:1000"),
        Some(IdlePolicy::Sleep {
            interval: Duration::from_millis(1)
        })
    );
    assert_eq!(parse_idle("sleep:"), None);
    for p in Profile::ALL {
        assert_eq!(p.name().parse::<Profile>().ok(), Some(p));
        assert_eq!(p.to_string(), p.name());
    }
    assert_eq!(
        "Low-Latency".parse::<Profile>().ok(),
        Some(Profile::LowLatency)
    );
    assert!("turbo".parse::<Profile>().is_err());
}

#[test]
fn stop_from_another_thread_and_plans_launch() {
    let topo = Topology::synthetic(2, 1, 1, 0);
    let plan = Plan::builder(&topo, Profile::Production)
        .affinity(false)
        .build()
        .unwrap();
    let g = plan.lcore_group();
    assert_eq!(g.lcores().count(), plan.lcores.len());
    let running = g.launch().unwrap();
    let stop = running.stop_handle();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(5));
        stop.request_stop();
    });
    let reports = running.join().unwrap();
    t.join().unwrap();
    assert_eq!(reports.len(), plan.lcores.len());
}
