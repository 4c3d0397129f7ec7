//! Reading CPUs, NUMA nodes and the cgroup from a sysfs/procfs tree.
//!
//! Every path is taken relative to a root so that tests can point the
//! readers at a small fake tree. A file that is missing or malformed yields
//! `None` (and, where it matters, a note), never a panic.

use super::{Cgroup, Cpu, CpuId, Hugepages, Node, Probe, Probes, Topology};
use crate::{Error, NumaNode, Result};
use hugepages::system::parse_list;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// A sysfs/procfs tree rooted somewhere: `/` on a live machine.
#[derive(Debug, Clone, Copy)]
pub(super) struct Root<'a>(pub(super) &'a Path);

impl Root<'_> {
    /// `rel` under the root; `rel` may start with `/` (as mount points do).
    pub(super) fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel.trim_start_matches('/'))
    }

    /// The trimmed contents of `rel`, `None` when it cannot be read.
    pub(super) fn read(&self, rel: &str) -> Option<String> {
        read_trimmed(&self.path(rel))
    }
}

/// The trimmed contents of a file, `None` when it cannot be read as text.
pub(super) fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

/// A file holding one number, `None` when missing or malformed.
pub(super) fn read_num<T: std::str::FromStr>(path: &Path) -> Option<T> {
    read_trimmed(path)?.parse().ok()
}

/// A kernel list (`0-3,8`) as CPU ids.
fn cpu_list(s: &str) -> Vec<CpuId> {
    parse_list(s).into_iter().map(CpuId).collect()
}

/// Reads everything that lives in files under `root`; see
/// [`Topology::detect_at`].
pub(super) fn read(root_path: &Path) -> Result<Topology> {
    let root = Root(root_path);
    let mut notes = Vec::new();

    let cpus_dir = root.path("sys/devices/system/cpu");
    let present = match root.read("sys/devices/system/cpu/present") {
        Some(s) => cpu_list(&s),
        None => scan_numbered(&cpus_dir, "cpu")
            .into_iter()
            .map(CpuId)
            .collect(),
    };
    if present.is_empty() {
        return Err(Error::io(
            format!("finding CPUs under {}", cpus_dir.display()),
            io::Error::new(
                io::ErrorKind::NotFound,
                "no cpu list and no cpuN directories",
            ),
        ));
    }
    let online: BTreeSet<CpuId> = match root.read("sys/devices/system/cpu/online") {
        Some(s) => cpu_list(&s).into_iter().collect(),
        None => {
            notes.push(format!(
                "{} unreadable: every present CPU counted as online",
                cpus_dir.join("online").display()
            ));
            present.iter().copied().collect()
        }
    };
    let mut isolated: BTreeSet<CpuId> = BTreeSet::new();
    for file in ["isolated", "nohz_full"] {
        if let Some(s) = root.read(&format!("sys/devices/system/cpu/{file}")) {
            // nohz_full reads "(null)" on kernels booted without it.
            isolated.extend(cpu_list(&s));
        }
    }

    let nodes = read_nodes(root, &present, &mut notes);
    let node_of: BTreeMap<CpuId, NumaNode> = nodes
        .iter()
        .flat_map(|n| n.cpus.iter().map(move |c| (*c, n.id)))
        .collect();

    let cgroup = read_cgroup(root, &mut notes);
    let cpuset: Option<BTreeSet<CpuId>> =
        cgroup.cpuset.as_ref().map(|s| s.iter().copied().collect());

    let mut cpus: Vec<Cpu> = present
        .iter()
        .map(|&id| {
            let dir = cpus_dir.join(format!("cpu{}", id.0)).join("topology");
            // Newer kernels call it core_cpus_list; thread_siblings_list is
            // the older name with the same contents.
            let mut siblings = read_trimmed(&dir.join("thread_siblings_list"))
                .or_else(|| read_trimmed(&dir.join("core_cpus_list")))
                .map(|s| cpu_list(&s))
                .unwrap_or_default();
            if !siblings.contains(&id) {
                // Offline CPUs have no topology directory: alone on a core
                // as far as we can tell.
                siblings = vec![id];
            }
            Cpu {
                id,
                core: read_num(&dir.join("core_id")),
                package: read_num(&dir.join("physical_package_id")),
                node: node_of.get(&id).copied().unwrap_or_default(),
                siblings,
                online: online.contains(&id),
                isolated: isolated.contains(&id),
                allowed: true,
                in_cpuset: cpuset.as_ref().is_none_or(|s| s.contains(&id)),
            }
        })
        .collect();
    cpus.sort_by_key(|c| c.id);

    let unprobed = || {
        Probe::unavailable(format!(
            "not probed: topology read from {}",
            root_path.display()
        ))
    };
    Ok(Topology {
        kernel: root.read("proc/sys/kernel/osrelease"),
        cpu_model: root.read("proc/cpuinfo").and_then(|s| cpu_model(&s)),
        cpus,
        affinity: None,
        cgroup,
        nodes,
        hugepages: Hugepages::default(),
        // Filled by `devices`, which reads through this module.
        nics: Vec::new(),
        nvme: Vec::new(),
        gpus: Vec::new(),
        probes: Probes::all(unprobed),
        hwloc: None,
        notes,
    })
}

/// The numbers N of the entries `prefixN` in `dir`, sorted.
pub(super) fn scan_numbered(dir: &Path, prefix: &str) -> Vec<u32> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<u32> = entries
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_prefix(prefix)?
                .parse()
                .ok()
        })
        .collect();
    out.sort_unstable();
    out
}

/// The first "model name" (x86) or "Processor"/"cpu model" line.
fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        let key = key.trim();
        let wanted = key == "model name" || key == "Processor" || key == "cpu model";
        (wanted && !value.trim().is_empty()).then(|| value.trim().to_owned())
    })
}

fn read_nodes(root: Root<'_>, present: &[CpuId], notes: &mut Vec<String>) -> Vec<Node> {
    let node_dir = root.path("sys/devices/system/node");
    let ids: Vec<u32> = match root.read("sys/devices/system/node/online") {
        Some(s) => parse_list(&s),
        None => scan_numbered(&node_dir, "node"),
    };
    if ids.is_empty() {
        // A kernel built without NUMA: one node holds everything.
        return vec![Node {
            id: NumaNode(0),
            cpus: present.to_vec(),
            mem_total: None,
            mem_free: None,
            hugepages: Vec::new(),
        }];
    }
    let mut nodes: Vec<Node> = ids
        .into_iter()
        .map(|n| {
            let dir = node_dir.join(format!("node{n}"));
            let cpus = read_trimmed(&dir.join("cpulist"))
                .map(|s| cpu_list(&s))
                .unwrap_or_default();
            let meminfo = read_trimmed(&dir.join("meminfo")).unwrap_or_default();
            Node {
                id: NumaNode(n),
                cpus,
                mem_total: node_meminfo(&meminfo, "MemTotal:"),
                mem_free: node_meminfo(&meminfo, "MemFree:"),
                hugepages: Vec::new(),
            }
        })
        .collect();
    // A present CPU that no node lists is counted on node 0 (it is what the
    // kernel does for memory without affinity), and noted.
    let listed: BTreeSet<CpuId> = nodes.iter().flat_map(|n| n.cpus.iter().copied()).collect();
    let orphans: Vec<CpuId> = present
        .iter()
        .filter(|c| !listed.contains(c))
        .copied()
        .collect();
    if !orphans.is_empty() {
        notes.push(format!(
            "{} CPUs listed by no node's cpulist; counted on node{}",
            orphans.len(),
            nodes[0].id.0
        ));
        nodes[0].cpus.extend(orphans);
        nodes[0].cpus.sort_unstable();
    }
    nodes
}

/// "Node 0 MemTotal:  5466324 kB" -> bytes.
fn node_meminfo(meminfo: &str, key: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let rest = line.split(key).nth(1)?;
        let kb: u64 = rest.trim().strip_suffix("kB")?.trim().parse().ok()?;
        kb.checked_mul(1024)
    })
}

/// One line of `/proc/self/cgroup`: hierarchy id, controllers, path.
struct CgroupLine<'a> {
    hierarchy: &'a str,
    controllers: Vec<&'a str>,
    path: &'a str,
}

fn cgroup_lines(s: &str) -> Vec<CgroupLine<'_>> {
    s.lines()
        .filter_map(|line| {
            let mut f = line.splitn(3, ':');
            let hierarchy = f.next()?;
            let controllers = f.next()?.split(',').filter(|c| !c.is_empty()).collect();
            Some(CgroupLine {
                hierarchy,
                controllers,
                path: f.next()?,
            })
        })
        .collect()
}

/// Mount points of cgroup file systems: (fstype, mount point, options).
fn cgroup_mounts(mounts: &str) -> Vec<(&str, &str, Vec<&str>)> {
    mounts
        .lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (_dev, point, fstype, opts) = (f.next()?, f.next()?, f.next()?, f.next()?);
            matches!(fstype, "cgroup" | "cgroup2")
                .then(|| (fstype, point, opts.split(',').collect()))
        })
        .collect()
}

/// The CPU part of this process's cgroup: v2 when the unified hierarchy has
/// the cpuset or cpu controller, else the v1 controllers.
pub(super) fn read_cgroup(root: Root<'_>, notes: &mut Vec<String>) -> Cgroup {
    let Some(self_cgroup) = root.read("proc/self/cgroup") else {
        return Cgroup::default();
    };
    let lines = cgroup_lines(&self_cgroup);
    let mounts_text = root
        .read("proc/self/mounts")
        .or_else(|| root.read("proc/mounts"))
        .unwrap_or_default();
    let mounts = cgroup_mounts(&mounts_text);
    let mut out = Cgroup::default();

    // Unified hierarchy (v2): "0::/path".
    let v2_line = lines
        .iter()
        .find(|l| l.hierarchy == "0" && l.controllers.is_empty());
    let v2_mount = mounts.iter().find(|m| m.0 == "cgroup2");
    if let (Some(line), Some(mount)) = (v2_line, v2_mount) {
        let dir = join_cgroup(root, mount.1, line.path);
        let cpuset = read_trimmed(&dir.join("cpuset.cpus.effective")).map(|s| cpu_list(&s));
        let quota = quota_along(&root.path(mount.1), line.path, notes, |d| {
            read_trimmed(&d.join("cpu.max")).map(|s| parse_cpu_max(&s))
        });
        if cpuset.is_some() || quota.1 {
            out.version = Some(2);
            out.path = Some(line.path.to_owned());
            out.cpuset = cpuset;
            out.cpu_quota = quota.0;
            return out;
        }
    }

    // Legacy controllers (v1): "3:cpuset:/path", "1:cpu,cpuacct:/path".
    let v1_dir = |controller: &str| -> Option<(PathBuf, &str, String)> {
        let line = lines.iter().find(|l| l.controllers.contains(&controller))?;
        let mount = mounts
            .iter()
            .find(|m| m.0 == "cgroup" && m.2.contains(&controller))?;
        Some((
            join_cgroup(root, mount.1, line.path),
            line.path,
            mount.1.to_owned(),
        ))
    };
    if let Some((dir, path, _)) = v1_dir("cpuset")
        && let Some(s) = read_trimmed(&dir.join("cpuset.effective_cpus"))
    {
        out.version = Some(1);
        out.path = Some(path.to_owned());
        out.cpuset = Some(cpu_list(&s));
    }
    if let Some((_, path, mount)) = v1_dir("cpu") {
        let (quota, found) = quota_along(&root.path(&mount), path, notes, |d| {
            let q: i64 = read_num(&d.join("cpu.cfs_quota_us"))?;
            let p: i64 = read_num(&d.join("cpu.cfs_period_us"))?;
            Some(if q < 0 || p <= 0 {
                Ok(None)
            } else {
                Ok(Some(q as f64 / p as f64))
            })
        });
        if found {
            out.version = Some(1);
            out.path.get_or_insert_with(|| path.to_owned());
            out.cpu_quota = quota;
        }
    }
    out
}

/// The cgroup directory for `path` under the mount point.
fn join_cgroup(root: Root<'_>, mount: &str, path: &str) -> PathBuf {
    root.path(mount).join(path.trim_start_matches('/'))
}

/// The smallest quota from the cgroup at `path` up to the mount's root: a
/// parent's limit binds its children too. Returns (quota, whether any quota
/// file was found).
fn quota_along(
    mount_dir: &Path,
    path: &str,
    notes: &mut Vec<String>,
    read: impl Fn(&Path) -> Option<Result<Option<f64>, String>>,
) -> (Option<f64>, bool) {
    let mut dir = mount_dir.join(path.trim_start_matches('/'));
    let mut found = false;
    let mut min: Option<f64> = None;
    loop {
        match read(&dir) {
            Some(Ok(q)) => {
                found = true;
                if let Some(q) = q {
                    min = Some(min.map_or(q, |m: f64| m.min(q)));
                }
            }
            Some(Err(bad)) => {
                found = true;
                notes.push(format!("{}: cannot parse CPU quota {bad:?}", dir.display()));
            }
            None => {}
        }
        if dir.as_path() == mount_dir || !dir.pop() || !dir.starts_with(mount_dir) {
            break;
        }
    }
    (min, found)
}

/// `cpu.max`: "max 100000" is unlimited, "150000 100000" is 1.5 CPUs.
pub(super) fn parse_cpu_max(s: &str) -> Result<Option<f64>, String> {
    let mut f = s.split_whitespace();
    let quota = f.next().ok_or_else(|| s.to_owned())?;
    // The period defaults to 100 ms when the file holds only the quota.
    let period: u64 = match f.next() {
        Some(p) => p.parse().map_err(|_| s.to_owned())?,
        None => 100_000,
    };
    if quota == "max" {
        return Ok(None);
    }
    let quota: u64 = quota.parse().map_err(|_| s.to_owned())?;
    if period == 0 {
        return Err(s.to_owned());
    }
    Ok(Some(quota as f64 / period as f64))
}

/// This process's affinity mask, as it was the first time it was asked
/// for (see [`super::process_affinity`]).
pub(super) fn affinity() -> nix::Result<Vec<CpuId>> {
    static FIRST: std::sync::OnceLock<Vec<CpuId>> = std::sync::OnceLock::new();
    if let Some(mask) = FIRST.get() {
        return Ok(mask.clone());
    }
    let mask = thread_affinity()?;
    Ok(FIRST.get_or_init(|| mask).clone())
}

/// The calling thread's affinity mask now.
pub(crate) fn thread_affinity() -> nix::Result<Vec<CpuId>> {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))?;
    let max = nix::sched::CpuSet::count();
    Ok((0..max)
        .filter(|&i| set.is_set(i).unwrap_or(false))
        .filter_map(|i| u32::try_from(i).ok().map(CpuId))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_max() {
        assert_eq!(parse_cpu_max("max 100000"), Ok(None));
        assert_eq!(parse_cpu_max("150000 100000"), Ok(Some(1.5)));
        assert_eq!(parse_cpu_max("50000"), Ok(Some(0.5)));
        assert!(parse_cpu_max("").is_err());
        assert!(parse_cpu_max("lots 100000").is_err());
        assert!(parse_cpu_max("1 0").is_err());
    }

    #[test]
    fn meminfo_and_model() {
        let m = "Node 0 MemTotal:  1024 kB\nNode 0 MemFree:    512 kB\n";
        assert_eq!(node_meminfo(m, "MemTotal:"), Some(1 << 20));
        assert_eq!(node_meminfo(m, "MemFree:"), Some(512 << 10));
        assert_eq!(node_meminfo("garbage", "MemFree:"), None);
        assert_eq!(
            cpu_model("processor : 0\nmodel name\t: Fancy CPU @ 3GHz\n").as_deref(),
            Some("Fancy CPU @ 3GHz")
        );
        assert_eq!(cpu_model("nothing here"), None);
    }

    #[test]
    fn cgroup_files() {
        let lines = cgroup_lines("4:memory:/x\n1:cpu,cpuacct:/a/b\n0::/svc\nbogus");
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[1].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(lines[2].path, "/svc");
        let mounts = cgroup_mounts(
            "cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\ncgroup /c/cpu cgroup rw,cpu,cpuacct 0 0\nproc /proc proc rw 0 0",
        );
        assert_eq!(mounts.len(), 2);
        assert!(mounts[1].2.contains(&"cpuacct"));
    }
}
