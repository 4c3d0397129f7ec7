//! What the running kernel offers: hugepage pools by size and NUMA node, and
//! hugetlbfs mounts. Read from sysfs and procfs, which every Linux has; a
//! missing file means "none", never an error.

use crate::NumaNode;
use serde::Serialize;
use std::fs;
use std::path::{Path, PathBuf};

/// One pool of hugepages of one size, machine-wide or on one NUMA node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HugepagePool {
    /// Page size in bytes (2 MiB, 1 GiB, ...).
    pub page_size: usize,
    /// The node, or `None` for the machine-wide pool.
    pub node: Option<NumaNode>,
    /// Pages reserved in the pool (`nr_hugepages`).
    pub total: u64,
    /// Pages not yet faulted in by anyone (`free_hugepages`).
    pub free: u64,
}

impl HugepagePool {
    /// Free bytes in this pool.
    pub fn free_bytes(&self) -> u64 {
        self.free.saturating_mul(self.page_size as u64)
    }
}

/// A mounted hugetlbfs, where hugepage-backed files can be created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HugetlbfsMount {
    /// Mount point.
    pub path: PathBuf,
    /// Page size of the mount (its `pagesize=` option, else the default size).
    pub page_size: usize,
}

/// The machine-wide hugepage pools, one per supported size, smallest first.
pub fn hugepage_pools() -> Vec<HugepagePool> {
    pools_under(Path::new("/sys/kernel/mm/hugepages"), None)
}

/// The per-node hugepage pools of every online NUMA node, by node then size.
pub fn node_hugepage_pools() -> Vec<HugepagePool> {
    let mut out = Vec::new();
    for node in online_nodes() {
        let dir = PathBuf::from(format!("/sys/devices/system/node/node{}/hugepages", node.0));
        out.extend(pools_under(&dir, Some(node)));
    }
    out
}

/// The online NUMA nodes; `[node0]` on kernels built without NUMA.
pub fn online_nodes() -> Vec<NumaNode> {
    match fs::read_to_string("/sys/devices/system/node/online") {
        Ok(s) => parse_list(s.trim()).into_iter().map(NumaNode).collect(),
        Err(_) => vec![NumaNode(0)],
    }
}

/// The kernel's default hugepage size (`Hugepagesize:` in /proc/meminfo).
pub fn default_hugepage_size() -> Option<usize> {
    let meminfo = fs::read_to_string("/proc/meminfo").ok()?;
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("Hugepagesize:"))
        .and_then(parse_kb)
}

/// Every hugetlbfs mount in /proc/mounts.
pub fn hugetlbfs_mounts() -> Vec<HugetlbfsMount> {
    let Ok(mounts) = fs::read_to_string("/proc/mounts") else {
        return Vec::new();
    };
    let default = default_hugepage_size();
    mounts
        .lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (_dev, path, fstype, opts) = (f.next()?, f.next()?, f.next()?, f.next()?);
            if fstype != "hugetlbfs" {
                return None;
            }
            let page_size = opts
                .split(',')
                .find_map(|o| o.strip_prefix("pagesize="))
                .and_then(parse_size_suffix)
                .or(default)?;
            Some(HugetlbfsMount {
                path: PathBuf::from(unescape_mount_path(path)),
                page_size,
            })
        })
        .collect()
}

fn pools_under(dir: &Path, node: Option<NumaNode>) -> Vec<HugepagePool> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut pools: Vec<HugepagePool> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name();
            let kb = name
                .to_str()?
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?;
            let page_size = kb.parse::<usize>().ok()?.checked_mul(1024)?;
            let read = |f: &str| -> u64 {
                fs::read_to_string(e.path().join(f))
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(0)
            };
            Some(HugepagePool {
                page_size,
                node,
                total: read("nr_hugepages"),
                free: read("free_hugepages"),
            })
        })
        .collect();
    pools.sort_by_key(|p| p.page_size);
    pools
}

/// Parses a kernel CPU/node list such as `0-3,8,10-11`. Malformed parts are
/// skipped: the kernel writes these files, but a bad one must not panic.
pub fn parse_list(s: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>())
                    && a <= b
                    && b - a < 1 << 20
                {
                    out.extend(a..=b);
                }
            }
            None => out.extend(part.parse::<u32>().ok()),
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// "2048 kB" -> 2 MiB.
fn parse_kb(s: &str) -> Option<usize> {
    s.trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<usize>()
        .ok()?
        .checked_mul(1024)
}

/// "2M" / "1G" / "2097152" -> bytes.
fn parse_size_suffix(s: &str) -> Option<usize> {
    let (num, mult) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 1 << 10),
        b'M' | b'm' => (&s[..s.len() - 1], 1 << 20),
        b'G' | b'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<usize>().ok()?.checked_mul(mult)
}

/// /proc/mounts escapes space, tab, newline and backslash as octal.
fn unescape_mount_path(p: &str) -> String {
    let b = p.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists() {
        assert_eq!(parse_list("0-3,8,10-11"), vec![0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(parse_list(""), Vec::<u32>::new());
        assert_eq!(parse_list("5"), vec![5]);
        // Garbage is skipped, not a panic.
        assert_eq!(parse_list("x,3-1,2-,7"), vec![7]);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_kb(" 2048 kB"), Some(2 << 20));
        assert_eq!(parse_size_suffix("1G"), Some(1 << 30));
        assert_eq!(parse_size_suffix("2M"), Some(2 << 20));
        assert_eq!(parse_size_suffix("4096"), Some(4096));
        assert_eq!(parse_size_suffix("G"), None);
    }

    #[test]
    fn mount_paths() {
        assert_eq!(
            unescape_mount_path(r"/mnt/huge\040pages"),
            "/mnt/huge pages"
        );
        assert_eq!(unescape_mount_path(r"/x\0"), r"/x\0");
    }

    #[test]
    #[cfg_attr(miri, ignore)] // reads sysfs
    fn reads_this_machine() {
        // Whatever this machine has, the reads succeed and are self-consistent.
        for p in hugepage_pools().iter().chain(node_hugepage_pools().iter()) {
            assert!(p.page_size.is_power_of_two());
            assert!(p.free <= p.total);
        }
        assert!(!online_nodes().is_empty());
    }
}
