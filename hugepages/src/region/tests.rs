use super::*;
use crate::test_support::{Capability, hugepage_region, skip};

const MIB: usize = 1 << 20;

/// Writes a distinct byte at the start of every 4 KiB page and reads them
/// all back: the whole region is mapped and writable.
fn exercise(r: &Region) {
    let p = r.as_ptr();
    for (k, off) in (0..r.len()).step_by(4096).enumerate() {
        let q = p.wrapping_add(off);
        // SAFETY: off < len: inside the region, which nothing else uses.
        unsafe { q.write(k as u8) };
    }
    for (k, off) in (0..r.len()).step_by(4096).enumerate() {
        let q = p.wrapping_add(off);
        // SAFETY: as above.
        assert_eq!(unsafe { q.read() }, k as u8);
    }
}

#[test]
fn heap_or_normal_pages_anywhere() {
    // Runs under Miri too: 4 KiB pages on request, VA mode.
    let r = Region::builder(10_000)
        .page_size(PageSize::Size4K)
        .iova_mode(IovaMode::Va)
        .build()
        .unwrap();
    assert_eq!(r.len(), 12_288, "rounded up to 4 KiB");
    assert_eq!(r.page_size(), PageSize::Size4K);
    assert!(!r.is_hugepage_backed());
    assert!(matches!(r.backing(), Backing::Normal { .. }));
    assert_eq!(r.iova_mode(), IovaMode::Va);
    assert_eq!(r.as_ptr().addr() % 4096, 0);
    exercise(&r);
    let p = r.as_ptr();
    assert_eq!(r.iova(p), Some(Iova(p.addr() as u64)));
    let last = p.wrapping_add(r.len() - 1);
    assert_eq!(r.iova(last), Some(Iova(last.addr() as u64)));
    assert_eq!(r.iova(p.wrapping_add(r.len())), None);
    assert_eq!(r.iova(p.wrapping_sub(1)), None);
    assert!(r.contains(last));
    assert!(r.is_iova_contiguous(p, r.len()));
    assert!(r.is_iova_contiguous(last, 0));
    assert!(!r.is_iova_contiguous(p, r.len() + 1));
    assert!(!r.is_iova_contiguous(last, usize::MAX));
    assert!(!r.is_iova_contiguous(p.wrapping_sub(1), 1));
}

#[test]
fn refuses_bad_lengths() {
    assert!(matches!(Region::builder(0).build(), Err(Error::Config(_))));
    assert!(matches!(
        Region::builder(usize::MAX).build(),
        Err(Error::Config(_))
    ));
}

#[test]
fn pa_on_4k_pages_is_refused() {
    let e = Region::builder(4096)
        .page_size(PageSize::Size4K)
        .iova_mode(IovaMode::Pa)
        .build()
        .unwrap_err();
    assert!(matches!(e, Error::IovaUnavailable { .. }), "{e}");
}

#[test]
#[cfg_attr(miri, ignore)] // mmap
fn explicit_4k_pages_say_so() {
    let r = Region::builder(MIB)
        .page_size(PageSize::Size4K)
        .build()
        .unwrap();
    assert_eq!(
        r.backing(),
        &Backing::Normal {
            reason: "4 KiB pages were requested".into()
        }
    );
    assert_eq!(r.iova_mode(), IovaMode::Va);
    assert!(
        r.iova_mode_reason().contains("4 KiB"),
        "{}",
        r.iova_mode_reason()
    );
    exercise(&r);
}

#[test]
#[cfg_attr(miri, ignore)] // mmap, sysfs
fn hugepage_region_2m() {
    let Some(r) = hugepage_region(Region::builder(3 * MIB).page_size(PageSize::Size2M)) else {
        return;
    };
    assert_eq!(r.len(), 4 * MIB, "3 MiB rounds up to two 2 MiB pages");
    assert_eq!(r.page_size(), PageSize::Size2M);
    assert_eq!(
        r.backing(),
        &Backing::Hugepages {
            page_size: PageSize::Size2M,
            source: HugepageSource::Anonymous
        }
    );
    assert_eq!(r.as_ptr().addr() % (2 * MIB), 0);
    assert_eq!(r.numa_policy(), &NumaPolicy::Default);
    exercise(&r);
}

/// The forced fallback: this machine has no free 1 GiB pages (if it has,
/// the test says so and skips).
#[test]
#[cfg_attr(miri, ignore)] // mmap, sysfs
fn falls_back_without_1g_pages() {
    if let Ok(r) = Region::builder(MIB)
        .page_size(PageSize::Size1G)
        .allow_fallback(false)
        .build()
    {
        println!(
            "skip: this machine has free 1 GiB hugepages ({:?})",
            r.backing()
        );
        return;
    }
    let e = Region::builder(MIB)
        .page_size(PageSize::Size1G)
        .allow_fallback(false)
        .build()
        .unwrap_err();
    match &e {
        Error::HugepagesUnavailable { page_size, reason } => {
            assert_eq!(*page_size, PageSize::Size1G);
            assert!(reason.contains("1 GiB"), "{reason}");
        }
        other => panic!("expected HugepagesUnavailable, got {other:?}"),
    }

    let r = Region::builder(MIB)
        .page_size(PageSize::Size1G)
        .allow_fallback(true)
        .build()
        .unwrap();
    let Backing::Normal { reason } = r.backing() else {
        panic!("expected a fallback, got {:?}", r.backing());
    };
    // The reason names the size and either the missing pool or its state.
    assert!(reason.contains("1 GiB"), "{reason}");
    assert!(
        reason.contains("no 1 GiB hugepage pool") || reason.contains("reserved"),
        "{reason}"
    );
    // The fallback is rounded to 4 KiB pages, not to the 1 GiB asked for.
    assert_eq!(r.len(), MIB);
    assert_eq!(r.page_size(), PageSize::Size4K);
    assert_eq!(r.iova_mode(), IovaMode::Va);
    exercise(&r);
}

#[test]
#[cfg_attr(miri, ignore)] // mmap
fn va_mode_is_the_address() {
    let r = Region::builder(2 * MIB)
        .iova_mode(IovaMode::Va)
        .build()
        .unwrap();
    assert_eq!(r.iova_mode(), IovaMode::Va);
    for off in [0, 1, 4095, 4096, MIB + 17, 2 * MIB - 1] {
        let p = r.as_ptr().wrapping_add(off);
        assert_eq!(r.iova(p), Some(Iova(p.addr() as u64)));
    }
    assert_eq!(r.iova(r.as_ptr().wrapping_add(2 * MIB)), None);
}

/// The physical address of the 4 KiB page at `p`, read from pagemap
/// independently of the region's table.
#[cfg(not(miri))]
fn physical_address(p: *mut u8) -> u64 {
    let p = NonNull::new(p).unwrap();
    pagemap::page_addresses(p, 4096, PageSize::Size4K).unwrap()[0]
}
#[cfg(miri)]
fn physical_address(_: *mut u8) -> u64 {
    unreachable!("the tests calling this are ignored under Miri")
}

#[test]
#[cfg_attr(miri, ignore)] // mmap, pagemap
fn pa_mode_matches_pagemap() {
    let Some(r) = hugepage_region(Region::builder(4 * MIB)) else {
        return;
    };
    if r.iova_mode() != IovaMode::Pa {
        // Physical addresses need CAP_SYS_ADMIN beside the hugepages: part
        // of what `hugepages` promises a DMA-capable deployment.
        let why = format!("no PA mode here: {}", r.iova_mode_reason());
        return skip(Capability::Hugepages, &why);
    }
    let page = r.page_size().bytes();
    let base = r.as_ptr();
    for k in 0..r.len() / page {
        let start = base.wrapping_add(k * page);
        let iova = r.iova(start).unwrap().0;
        assert_eq!(
            iova % page as u64,
            0,
            "a hugepage starts on a hugepage boundary"
        );
        // Two addresses in one hugepage differ by exactly their offset.
        for off in [1, 4096, 12345, page - 1] {
            let iova_off = r.iova(start.wrapping_add(off)).unwrap().0;
            assert_eq!(iova_off - iova, off as u64);
        }
        // Cross-check a 4 KiB sub-page with pagemap directly.
        assert_eq!(
            physical_address(start.wrapping_add(5 * 4096)),
            iova + 5 * 4096
        );
        assert!(r.is_iova_contiguous(start, page));
    }
    let two_pages = r.is_iova_contiguous(base, 2 * page);
    let (a, b) = (
        r.iova(base).unwrap().0,
        r.iova(base.wrapping_add(page)).unwrap().0,
    );
    assert_eq!(two_pages, b == a + page as u64);
}

#[test]
#[cfg_attr(miri, ignore)] // mmap
fn pa_required_without_hugepages_is_an_error() {
    // 1 GiB pages are absent here: the fallback cannot honour PA.
    match Region::builder(MIB)
        .page_size(PageSize::Size1G)
        .iova_mode(IovaMode::Pa)
        .build()
    {
        Err(Error::IovaUnavailable { reason }) => assert!(reason.contains("4 KiB"), "{reason}"),
        Ok(r) if r.is_hugepage_backed() => println!("note: 1 GiB pages exist here: PA is honoured"),
        other => panic!("expected IovaUnavailable, got {other:?}"),
    }
}

/// The NUMA node of each page, by `move_pages(2)` in query mode.
fn nodes_of(pages: &[*mut u8]) -> std::io::Result<Vec<i32>> {
    let mut status = vec![i32::MIN; pages.len()];
    // SAFETY: nodes == NULL asks only where the pages are: the kernel reads
    // `pages` and writes `status`, both `pages.len()` long.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_pages,
            0 as libc::c_int,
            pages.len() as libc::c_ulong,
            pages.as_ptr(),
            std::ptr::null::<libc::c_int>(),
            status.as_mut_ptr(),
            0 as libc::c_int,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(status)
}

fn check_on_node0(r: &Region) {
    let pages: Vec<*mut u8> = (0..r.len())
        .step_by(r.page_size().bytes())
        .map(|off| r.as_ptr().wrapping_add(off))
        .collect();
    match nodes_of(&pages) {
        Ok(nodes) => assert!(nodes.iter().all(|&n| n == 0), "pages on nodes {nodes:?}"),
        Err(e) => println!("skip: move_pages(2) unavailable: {e}"),
    }
}

#[test]
#[cfg_attr(miri, ignore)] // mmap, mbind
fn numa_bind_to_node0() {
    let node = NumaNode(0);
    if let Some(r) = hugepage_region(Region::builder(4 * MIB).numa_node(node)) {
        assert_eq!(r.numa_node(), Some(node));
        assert!(
            matches!(
                r.numa_policy(),
                NumaPolicy::Bind(_) | NumaPolicy::Skipped { .. }
            ),
            "{:?}",
            r.numa_policy()
        );
        exercise(&r);
        check_on_node0(&r);
    }
    let r = Region::builder(MIB)
        .page_size(PageSize::Size4K)
        .numa_node(node)
        .build()
        .unwrap();
    assert!(
        matches!(
            r.numa_policy(),
            NumaPolicy::Preferred(_) | NumaPolicy::Skipped { .. }
        ),
        "{:?}",
        r.numa_policy()
    );
    check_on_node0(&r);
}

#[test]
#[cfg_attr(miri, ignore)] // mmap, mbind, sysfs
fn numa_absent_node_is_an_error() {
    let e = Region::builder(MIB)
        .numa_node(NumaNode(5000))
        .build()
        .unwrap_err();
    assert!(matches!(e, Error::Numa { .. }), "{e}");
    let online = crate::system::online_nodes();
    let absent = (0..64).map(NumaNode).find(|n| !online.contains(n)).unwrap();
    for page in [PageSize::Size2M, PageSize::Size4K] {
        let e = Region::builder(MIB)
            .page_size(page)
            .numa_node(absent)
            .build()
            .unwrap_err();
        assert!(
            matches!(e, Error::Numa { node, .. } if node == absent),
            "{e}"
        );
    }
}

/// Mounts a fresh hugetlbfs under /tmp for the test, unmounted on drop.
struct TmpHugetlbfs(std::path::PathBuf);

impl TmpHugetlbfs {
    fn mount() -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!("dataplane-hugetlbfs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let out = std::process::Command::new("mount")
            .args(["-t", "hugetlbfs", "-o", "pagesize=2M", "none"])
            .arg(&dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            let _ = std::fs::remove_dir(&dir);
            return Err(format!(
                "mount -t hugetlbfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Self(dir))
    }
}

impl Drop for TmpHugetlbfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
#[cfg_attr(miri, ignore)] // mount, mmap
fn hugetlbfs_file_mapping() {
    let mount = match TmpHugetlbfs::mount() {
        Ok(m) => m,
        Err(why) => return println!("skip: {why}"),
    };
    let Some(r) = hugepage_region(Region::builder(3 * MIB).hugetlbfs(mount.0.clone())) else {
        return;
    };
    assert_eq!(
        r.backing(),
        &Backing::Hugepages {
            page_size: PageSize::Size2M,
            source: HugepageSource::Hugetlbfs(mount.0.clone())
        }
    );
    assert_eq!(r.len(), 4 * MIB);
    exercise(&r);
    // The file was unlinked right after mapping: nothing left behind.
    let left: Vec<_> = std::fs::read_dir(&mount.0).unwrap().collect();
    assert!(left.is_empty(), "files left in the mount: {left:?}");
    drop(r);
}

#[test]
#[cfg_attr(miri, ignore)] // statfs, mmap
fn hugetlbfs_that_is_not_a_mount_falls_back() {
    let dir = std::env::temp_dir();
    let e = Region::builder(MIB)
        .hugetlbfs(dir.clone())
        .allow_fallback(false)
        .build()
        .unwrap_err();
    match e {
        Error::HugepagesUnavailable { reason, .. } => {
            assert!(reason.contains("not a hugetlbfs mount"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    let r = Region::builder(MIB).hugetlbfs(dir).build().unwrap();
    assert!(
        matches!(r.backing(), Backing::Normal { reason } if reason.contains("not a hugetlbfs mount")),
        "{:?}",
        r.backing()
    );
}

#[test]
#[cfg_attr(miri, ignore)] // sysfs
fn no_hugepages_reserved_means_fallback_with_reason() {
    // Only meaningful when the 2 MiB pool is empty (the `echo 0` run).
    let free = crate::system::hugepage_pools()
        .into_iter()
        .find(|p| p.page_size == 2 * MIB)
        .map_or(0, |p| p.free);
    if free > 0 {
        // The fallback's reason is checked with 1 GiB pages, which a
        // machine without them cannot give, by the tests above.
        return println!("note: {free} free 2 MiB hugepages: the fallback is not forced here");
    }
    if crate::test_support::required(Capability::Hugepages) {
        return skip(Capability::Hugepages, "no free 2 MiB hugepages");
    }
    let r = Region::builder(MIB).build().unwrap();
    match r.backing() {
        Backing::Normal { reason } => {
            assert!(
                reason.contains("2 MiB") && reason.contains("reserved"),
                "{reason}"
            )
        }
        // Surplus pages (nr_overcommit_hugepages) can serve it.
        b => println!("note: got {b:?} from the overcommit pool"),
    }
}

#[test]
fn page_sizes() {
    for p in [PageSize::Size4K, PageSize::Size2M, PageSize::Size1G] {
        assert_eq!(PageSize::from_bytes(p.bytes()), Some(p));
        assert_eq!(1usize << p.shift(), p.bytes());
    }
    assert_eq!(PageSize::from_bytes(8192), None);
    assert_eq!(PageSize::Size2M.to_string(), "2 MiB");
    assert_eq!(Iova(0x1000).to_string(), "0x1000");
}
