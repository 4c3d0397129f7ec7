//! The system calls behind a region: `mmap(2)`, `mbind(2)`, `madvise(2)`,
//! and files in a hugetlbfs mount.
//!
//! Order of operations, for hugepages and 4 KiB pages alike: map without
//! populating, bind to the NUMA node, then populate with
//! `MADV_POPULATE_WRITE`. Binding must come before the first fault (a page
//! already faulted in stays where it is), and `MADV_POPULATE_WRITE` turns
//! "this node has no free hugepage" into an error return where touching the
//! page would raise SIGBUS.
//!
//! These are `libc` calls rather than `memmap2` (which the framework uses
//! for the rings it shares with the kernel): a region needs the hugepage
//! size in `MAP_HUGETLB`'s flag bits, `mbind` between mapping and first
//! touch, `MADV_POPULATE_WRITE` instead of `MAP_POPULATE` (whose failure
//! is a silent partial populate, not an error), and its own fallback and
//! IOVA bookkeeping around each step; `memmap2` would wrap only the
//! `mmap`/`munmap` pair, and the pointer it hands back is all a region
//! keeps anyway.

use super::{NumaPolicy, PageSize};
use crate::{Error, NumaNode, system};
use std::fs::{self, OpenOptions};
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

/// The kernel's node masks hold at most this many nodes (`MAX_NUMNODES` is
/// `1 << CONFIG_NODES_SHIFT`, and `NODES_SHIFT` is at most 10 on x86-64).
const MAX_NUMA_NODES: u32 = 1024;

/// A mapping handed to the region.
pub(super) struct Mapping {
    pub(super) ptr: NonNull<u8>,
    pub(super) len: usize,
    pub(super) numa: NumaPolicy,
}

/// Why hugepages could not be had.
pub(super) enum HugeError {
    /// None to be had: the caller may fall back to 4 KiB pages.
    Unavailable(String),
    /// Something that a fallback would not cure (a bad NUMA node).
    Fatal(Error),
}

/// An mmap'd span that is unmapped on drop until [`Mapped::keep`], so that
/// every early return below gives the memory back.
struct Mapped {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapped {
    fn keep(self, numa: NumaPolicy) -> Mapping {
        let m = ManuallyDrop::new(self);
        Mapping {
            ptr: m.ptr,
            len: m.len,
            numa,
        }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        unmap(self.ptr, self.len);
    }
}

/// Unmaps what [`mmap`] mapped.
pub(super) fn unmap(ptr: NonNull<u8>, len: usize) {
    // SAFETY: `ptr`/`len` are exactly one mapping made by `mmap` below and
    // owned by the caller, who unmaps it once and never touches it again.
    let rc = unsafe { libc::munmap(ptr.as_ptr().cast(), len) };
    debug_assert_eq!(rc, 0, "munmap: {}", io::Error::last_os_error());
}

fn mmap(len: usize, flags: libc::c_int, fd: libc::c_int) -> io::Result<Mapped> {
    // SAFETY: no MAP_FIXED, so the kernel picks a fresh range that no Rust
    // object can alias; `fd` is -1 or a file the caller holds open.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(p.cast::<u8>())
        .map(|ptr| Mapped { ptr, len })
        .ok_or_else(|| io::Error::other("mmap returned NULL"))
}

/// The `MAP_HUGE_*` flag selecting the hugepage pool (log2 of the size in
/// bits 26..31, include/uapi/asm-generic/hugetlb_encode.h).
fn map_huge_flag(page: PageSize) -> libc::c_int {
    match page {
        PageSize::Size4K => 0,
        PageSize::Size2M => libc::MAP_HUGE_2MB,
        PageSize::Size1G => libc::MAP_HUGE_1GB,
    }
}

/// Maps `len` bytes (a multiple of `page`) of hugepages, bound to `node`
/// when one is given, and populated.
///
/// # Errors
///
/// [`HugeError::Unavailable`] with a precise reason when the hugepages are
/// not there; [`HugeError::Fatal`] when the NUMA binding is refused.
pub(super) fn map_hugepages(
    len: usize,
    page: PageSize,
    hugetlbfs: Option<&Path>,
    node: Option<NumaNode>,
) -> Result<Mapping, HugeError> {
    let pages = len / page.bytes();
    let kb = page.bytes() / 1024;
    let Some(pool) = system::hugepage_pools()
        .into_iter()
        .find(|p| p.page_size == page.bytes())
    else {
        return Err(HugeError::Unavailable(format!(
            "this kernel has no {page} hugepage pool (no /sys/kernel/mm/hugepages/hugepages-{kb}kB)"
        )));
    };
    // Said with every failure: the pool's state is what an operator acts on.
    let pool_state = format!(
        "{} free of {} reserved {page} pages, {pages} needed (reserve more in \
         /sys/kernel/mm/hugepages/hugepages-{kb}kB/nr_hugepages)",
        pool.free, pool.total
    );

    let mapped = match hugetlbfs {
        // MAP_PRIVATE like DPDK's --in-memory mode: the memory is ours
        // alone; hugetlb reserves the pages at mmap time, so a shortage is
        // an ENOMEM here rather than a SIGBUS later (without a NUMA binding).
        None => mmap(
            len,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_HUGETLB | map_huge_flag(page),
            -1,
        )
        .map_err(|e| {
            HugeError::Unavailable(format!(
                "mmap(MAP_HUGETLB) of {pages} x {page} failed: {e}; {pool_state}"
            ))
        })?,
        Some(dir) => map_hugetlbfs_file(dir, len, page)
            .map_err(|why| HugeError::Unavailable(format!("{why}; {pool_state}")))?,
    };

    let numa = match node {
        None => NumaPolicy::Default,
        // MPOL_BIND, not PREFERRED: a hugepage on another node would
        // silently put DMA buffers a socket away from their NIC; better to
        // fail here and let the caller decide (fall back or refuse).
        Some(node) => bind(&mapped, node, libc::MPOL_BIND).map_err(HugeError::Fatal)?,
    };

    populate(&mapped, page).map_err(|e| match e.raw_os_error() {
        // EFAULT is "a SIGBUS would have been raised": no free hugepage on
        // the bound node. ENOMEM: not enough memory.
        Some(libc::EFAULT | libc::ENOMEM) => HugeError::Unavailable(match node {
            Some(node) => format!(
                "{node} has not enough free {page} hugepages for {pages} pages \
                 (MADV_POPULATE_WRITE: {e}); {pool_state}"
            ),
            None => format!("populating {pages} x {page} failed: {e}; {pool_state}"),
        }),
        _ => HugeError::Fatal(Error::os(format!("populating {pages} x {page}"), e)),
    })?;
    Ok(mapped.keep(numa))
}

/// Creates a file in the hugetlbfs mount `dir`, sizes it, maps it shared
/// and unlinks it: the mapping holds the pages, and nothing is left in the
/// mount if the process dies.
fn map_hugetlbfs_file(dir: &Path, len: usize, page: PageSize) -> Result<Mapped, String> {
    let fs = nix::sys::statfs::statfs(dir)
        .map_err(|e| format!("cannot statfs hugetlbfs mount {}: {e}", dir.display()))?;
    if fs.filesystem_type() != nix::sys::statfs::HUGETLBFS_MAGIC {
        return Err(format!("{} is not a hugetlbfs mount", dir.display()));
    }
    // hugetlbfs reports its page size as the block size.
    let mount_page = usize::try_from(fs.block_size()).unwrap_or(0);
    if mount_page != page.bytes() {
        return Err(format!(
            "hugetlbfs mount {} has {mount_page}-byte pages, not {page}",
            dir.display()
        ));
    }

    static SEQ: AtomicU64 = AtomicU64::new(0);
    let name = dir.join(format!(
        "dataplane-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&name)
        .map_err(|e| format!("cannot create {}: {e}", name.display()))?;
    // From here on the name is removed on every path: the mapping (if any)
    // keeps the pages alive, and a failure leaves nothing behind.
    let mapped = file
        .set_len(len as u64)
        .map_err(|e| format!("ftruncate {} to {len}: {e}", name.display()))
        .and_then(|()| {
            mmap(len, libc::MAP_SHARED, file.as_raw_fd())
                .map_err(|e| format!("mmap of {}: {e}", name.display()))
        });
    if let Err(e) = fs::remove_file(&name) {
        tracing::warn!(file = %name.display(), error = %e, "cannot unlink hugetlbfs file");
    }
    mapped
}

/// Sets the NUMA policy of the mapping with `mbind(2)`.
fn bind(m: &Mapped, node: NumaNode, mode: libc::c_int) -> Result<NumaPolicy, Error> {
    if node.0 >= MAX_NUMA_NODES {
        return Err(Error::Numa {
            node,
            reason: format!("node numbers stop below {MAX_NUMA_NODES}"),
        });
    }
    let bit = node.0 as usize;
    let mut mask = vec![0u64; bit / 64 + 1];
    mask[bit / 64] |= 1 << (bit % 64);
    // The kernel reads `maxnode - 1` bits (mm/mempolicy.c, get_nodes), so
    // pass one more than the bits the mask holds, as libnuma does.
    let maxnode = (mask.len() * 64 + 1) as libc::c_ulong;
    // SAFETY: mbind only reads `mask` (mask.len() * 64 = maxnode - 1 bits)
    // and changes the policy of our own, not yet faulted, mapping.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mbind,
            m.ptr.as_ptr(),
            m.len,
            mode,
            mask.as_ptr(),
            maxnode,
            0 as libc::c_uint,
        )
    };
    if rc == 0 {
        return Ok(if mode == libc::MPOL_BIND {
            NumaPolicy::Bind(node)
        } else {
            NumaPolicy::Preferred(node)
        });
    }
    let err = io::Error::last_os_error();
    let online = system::online_nodes();
    match err.raw_os_error() {
        // Seccomp profiles of container runtimes refuse mbind with EPERM;
        // kernels without CONFIG_NUMA answer ENOSYS. On a one-node machine
        // the memory is on that node whatever the policy, so go on and say so.
        Some(libc::ENOSYS | libc::EPERM) if online == [node] => Ok(NumaPolicy::Skipped {
            node,
            reason: format!("mbind(2) failed ({err}) on a single-node machine"),
        }),
        _ => {
            let nodes: Vec<String> = online.iter().map(ToString::to_string).collect();
            Err(Error::Numa {
                node,
                reason: format!("mbind(2): {err} (online nodes: {})", nodes.join(", ")),
            })
        }
    }
}

/// Faults every page of the mapping in.
fn populate(m: &Mapped, page: PageSize) -> io::Result<()> {
    // SAFETY: advice on our own mapping; MADV_POPULATE_WRITE (Linux 5.14)
    // faults the pages in as a write would, without changing their contents.
    let rc = unsafe { libc::madvise(m.ptr.as_ptr().cast(), m.len, libc::MADV_POPULATE_WRITE) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EINVAL) {
        return Err(err);
    }
    // EINVAL on a valid mapping: the advice is unknown (Linux < 5.14).
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        tracing::warn!(
            "MADV_POPULATE_WRITE unsupported (Linux < 5.14): touching each page instead; \
             a NUMA node without free hugepages then raises SIGBUS instead of an error"
        );
    });
    for off in (0..m.len).step_by(page.bytes()) {
        let p = m.ptr.as_ptr().wrapping_add(off);
        // SAFETY: `off < len`, so `p` is inside our writable mapping, to
        // which no Rust reference exists yet; the memory is zero and stays zero.
        unsafe { p.write_volatile(0) };
    }
    Ok(())
}

/// Maps `len` bytes (a multiple of 4 KiB) of normal pages with
/// transparent-hugepage advice, on `node` by preference.
///
/// # Errors
///
/// [`Error::Os`] when even that fails; [`Error::Numa`] for a bad node.
pub(super) fn map_normal(len: usize, node: Option<NumaNode>) -> Result<Mapping, Error> {
    // Not MAP_POPULATE: it would fault the pages in before MADV_HUGEPAGE can
    // take effect (so THP would only come later, from khugepaged) and
    // before mbind, and it swallows failures (a short populate is silent).
    let m = mmap(len, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1)
        .map_err(|e| Error::os(format!("mmap of {len} bytes of 4 KiB pages"), e))?;
    // SAFETY: advice on our own mapping; MADV_HUGEPAGE changes no contents.
    let rc = unsafe { libc::madvise(m.ptr.as_ptr().cast(), len, libc::MADV_HUGEPAGE) };
    if rc != 0 {
        // THP compiled out or disabled: the advice is lost, nothing else.
        tracing::debug!(error = %io::Error::last_os_error(), "madvise(MADV_HUGEPAGE) refused");
    }
    let numa = match node {
        None => NumaPolicy::Default,
        // PREFERRED: a fallback region should not fail because one node is
        // short of memory; the pages are still local whenever they can be.
        Some(node) => bind(&m, node, libc::MPOL_PREFERRED)?,
    };
    populate(&m, PageSize::Size4K)
        .map_err(|e| Error::os(format!("populating {len} bytes of 4 KiB pages"), e))?;
    Ok(m.keep(numa))
}
