//! A [`Region`]: one mapped span of memory, hugepage-backed when the machine
//! allows it, with the IOVA of every byte.
//!
//! ```
//! use hugepages::region::{Backing, PageSize, Region};
//!
//! let region = Region::builder(3 << 20)
//!     .page_size(PageSize::Size2M)
//!     .allow_fallback(true)
//!     .build()?;
//! // 3 MiB rounds up to two 2 MiB pages, or to 3 MiB of 4 KiB pages when
//! // no hugepages are reserved; the backing says which, and why.
//! assert!(region.len() >= 3 << 20);
//! if let Backing::Normal { reason } = region.backing() {
//!     println!("no hugepages: {reason}");
//! }
//! // Every byte of the region has an IOVA; nothing outside it has one.
//! assert!(region.iova(region.as_ptr()).is_some());
//! assert!(region.iova(region.as_ptr().wrapping_add(region.len())).is_none());
//! # Ok::<(), hugepages::Error>(())
//! ```
//!
//! Real builds map memory with `mmap(2)`. Under Miri and loom the region is a
//! plain zeroed heap allocation (`Backing::Normal { reason: "miri" }`), so
//! that the mempool and mbuf logic above it can run under those checkers.

#[cfg(not(any(miri, loom)))]
mod map;
#[cfg(not(any(miri, loom)))]
mod pagemap;

use crate::{Error, NumaNode};
use serde::Serialize;
use std::fmt;
use std::path::PathBuf;
use std::ptr::NonNull;

/// The size of the pages backing a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum PageSize {
    /// 4 KiB, the base page size of x86-64 and most arm64 kernels.
    Size4K,
    /// 2 MiB, the x86-64 PMD-level hugepage (the default hugepage size).
    Size2M,
    /// 1 GiB, the x86-64 PUD-level hugepage (needs `pdpe1gb`, reserved at boot).
    Size1G,
}

impl PageSize {
    /// The page size in bytes.
    pub const fn bytes(self) -> usize {
        1 << self.shift()
    }

    /// log2 of the page size.
    pub const fn shift(self) -> u32 {
        match self {
            PageSize::Size4K => 12,
            PageSize::Size2M => 21,
            PageSize::Size1G => 30,
        }
    }

    /// The page size for `bytes`, if it is one of the three.
    pub const fn from_bytes(bytes: usize) -> Option<PageSize> {
        match bytes {
            0x1000 => Some(PageSize::Size4K),
            0x20_0000 => Some(PageSize::Size2M),
            0x4000_0000 => Some(PageSize::Size1G),
            _ => None,
        }
    }

    /// Whether this is a hugepage size.
    pub const fn is_huge(self) -> bool {
        !matches!(self, PageSize::Size4K)
    }
}

impl fmt::Display for PageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PageSize::Size4K => "4 KiB",
            PageSize::Size2M => "2 MiB",
            PageSize::Size1G => "1 GiB",
        })
    }
}

/// How IOVAs (the addresses a device uses for DMA) are formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum IovaMode {
    /// IOVA = physical address, read from `/proc/self/pagemap`. Needs
    /// hugepages (never swapped, and migrated only by memory offlining or
    /// contiguous-range allocation, a risk DPDK takes too) and
    /// `CAP_SYS_ADMIN` (without it the kernel reports every PFN as 0).
    Pa,
    /// IOVA = virtual address: for an IOMMU mapped 1:1 (VFIO), for kernel
    /// I/O paths (io_uring, sockets) where the kernel translates, and
    /// whenever physical addresses cannot be had.
    Va,
}

/// An I/O virtual address: what a device is given to reach a byte by DMA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
pub struct Iova(pub u64);

impl fmt::Display for Iova {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// Where the hugepages of a region come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum HugepageSource {
    /// An anonymous `MAP_HUGETLB` mapping.
    Anonymous,
    /// A file created (and immediately unlinked) in this hugetlbfs mount.
    Hugetlbfs(PathBuf),
}

/// What a region is backed by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum Backing {
    /// Hugepages of one size.
    Hugepages {
        /// The page size.
        page_size: PageSize,
        /// Anonymous or a hugetlbfs file.
        source: HugepageSource,
    },
    /// Normal 4 KiB pages, with transparent-hugepage advice where a
    /// fallback; `reason` says why hugepages were not used.
    Normal {
        /// Why: requested, none reserved, not enough free, no permission, a
        /// checker's build (Miri, loom).
        reason: String,
    },
}

/// The NUMA memory policy a region was given.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum NumaPolicy {
    /// No node was asked for: the kernel's default (local) policy.
    Default,
    /// `MPOL_BIND`: pages come only from this node (hugepages: a node
    /// without free hugepages is an error, not remote memory).
    Bind(NumaNode),
    /// `MPOL_PREFERRED`: this node first, others when it is full (4 KiB
    /// fallback regions, which should not fail for want of local memory).
    Preferred(NumaNode),
    /// `mbind(2)` is not allowed here (seccomp in a container, or a kernel
    /// without NUMA) and the machine has a single node, so every page is on
    /// it anyway.
    Skipped {
        /// The node asked for.
        node: NumaNode,
        /// Why the call was skipped.
        reason: String,
    },
}

impl NumaPolicy {
    /// The node asked for, if any.
    pub fn node(&self) -> Option<NumaNode> {
        match self {
            NumaPolicy::Default => None,
            NumaPolicy::Bind(n) | NumaPolicy::Preferred(n) => Some(*n),
            NumaPolicy::Skipped { node, .. } => Some(*node),
        }
    }
}

/// Types whose values a region's bytes may be read as: every bit pattern,
/// all zeroes included, is a valid value, and there is no padding, pointer
/// or drop glue. The integers and the atomic integers.
///
/// # Safety
///
/// Implement it only for types where every bit pattern of their size is a
/// valid value.
pub unsafe trait Plain: Sized {}

macro_rules! plain {
    ($($t:ty),*) => {$(
        // SAFETY: an integer (or atomic integer) of this width is valid
        // for every bit pattern and has no padding.
        unsafe impl Plain for $t {}
    )*};
}
plain!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize
);
plain!(
    std::sync::atomic::AtomicU8,
    std::sync::atomic::AtomicU16,
    std::sync::atomic::AtomicU32,
    std::sync::atomic::AtomicU64,
    std::sync::atomic::AtomicUsize
);

/// Builds a [`Region`]; see [`Region::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until .build() is called"]
pub struct RegionBuilder {
    len: usize,
    page_size: PageSize,
    numa_node: Option<NumaNode>,
    hugetlbfs: Option<PathBuf>,
    allow_fallback: bool,
    iova_mode: Option<IovaMode>,
}

impl RegionBuilder {
    /// The page size to ask for (default 2 MiB). [`PageSize::Size4K`] asks
    /// for normal pages outright.
    pub fn page_size(mut self, page_size: PageSize) -> Self {
        self.page_size = page_size;
        self
    }

    /// The NUMA node the memory must be on (default: none, the kernel's
    /// local policy).
    pub fn numa_node(mut self, node: impl Into<Option<NumaNode>>) -> Self {
        self.numa_node = node.into();
        self
    }

    /// Map a file in this hugetlbfs mount instead of anonymous
    /// `MAP_HUGETLB` memory (default: anonymous). The mount's page size must
    /// be the one asked for.
    pub fn hugetlbfs(mut self, mount: impl Into<Option<PathBuf>>) -> Self {
        self.hugetlbfs = mount.into();
        self
    }

    /// Whether to fall back to 4 KiB pages when no hugepages can be had
    /// (default: true). The fallback is logged once per process and always
    /// reported by [`Region::backing`].
    pub fn allow_fallback(mut self, allow: bool) -> Self {
        self.allow_fallback = allow;
        self
    }

    /// The IOVA mode: `None` (default) picks PA where possible, else VA;
    /// `Some(IovaMode::Pa)` makes PA a requirement; `Some(IovaMode::Va)`
    /// never reads physical addresses.
    pub fn iova_mode(mut self, mode: impl Into<Option<IovaMode>>) -> Self {
        self.iova_mode = mode.into();
        self
    }

    /// Maps the region.
    ///
    /// # Errors
    ///
    /// - [`Error::Config`]: a zero length, or one that overflows when
    ///   rounded up to the page size.
    /// - [`Error::HugepagesUnavailable`]: hugepages could not be had and
    ///   fallback is disallowed.
    /// - [`Error::Numa`]: the node does not exist or the binding was refused
    ///   (other than the single-node case described at [`NumaPolicy::Skipped`]).
    /// - [`Error::IovaUnavailable`]: PA mode was required and cannot be had.
    /// - [`Error::Os`]: even normal pages could not be mapped.
    pub fn build(self) -> Result<Region, Error> {
        if self.len == 0 {
            return Err(Error::Config("a region cannot be empty".into()));
        }
        if self.iova_mode == Some(IovaMode::Pa) && !self.page_size.is_huge() {
            return Err(Error::IovaUnavailable {
                reason: "4 KiB pages were requested, and their physical addresses are not stable"
                    .into(),
            });
        }
        let region = self.map()?;
        region.check_iova_request(self.iova_mode)?;
        Ok(region)
    }

    #[cfg(any(miri, loom))]
    fn map(&self) -> Result<Region, Error> {
        let len = round_up(self.len, PageSize::Size4K.bytes())?;
        let layout = std::alloc::Layout::from_size_align(len, PageSize::Size4K.bytes())
            .map_err(|e| Error::Config(format!("region of {len} bytes: {e}")))?;
        // SAFETY: `layout` has a non-zero size (len > 0 was checked above).
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            return Err(Error::os(
                format!("allocating {len} bytes"),
                std::io::Error::from(std::io::ErrorKind::OutOfMemory),
            ));
        };
        let checker = if cfg!(miri) { "miri" } else { "loom" };
        Ok(Region {
            ptr,
            len,
            page_size: PageSize::Size4K,
            backing: Backing::Normal {
                reason: checker.into(),
            },
            numa: match self.numa_node {
                None => NumaPolicy::Default,
                Some(node) => NumaPolicy::Skipped {
                    node,
                    reason: format!("{checker} build: heap memory, no mbind"),
                },
            },
            iova_mode: IovaMode::Va,
            iova_reason: format!("{checker} build: heap memory has no physical address"),
            page_iova: Box::new([]),
            release: Release::Heap(layout),
        })
    }

    #[cfg(not(any(miri, loom)))]
    fn map(&self) -> Result<Region, Error> {
        use map::HugeError;
        let normal_reason = if self.page_size.is_huge() {
            let len = round_up(self.len, self.page_size.bytes())?;
            match map::map_hugepages(
                len,
                self.page_size,
                self.hugetlbfs.as_deref(),
                self.numa_node,
            ) {
                Ok(m) => {
                    let source = match &self.hugetlbfs {
                        None => HugepageSource::Anonymous,
                        Some(p) => HugepageSource::Hugetlbfs(p.clone()),
                    };
                    let backing = Backing::Hugepages {
                        page_size: self.page_size,
                        source,
                    };
                    return Ok(Region::from_mapping(
                        m,
                        self.page_size,
                        backing,
                        self.iova_mode,
                    ));
                }
                Err(HugeError::Fatal(e)) => return Err(e),
                Err(HugeError::Unavailable(reason)) if !self.allow_fallback => {
                    return Err(Error::HugepagesUnavailable {
                        page_size: self.page_size,
                        reason,
                    });
                }
                Err(HugeError::Unavailable(reason)) => {
                    warn_fallback_once(self.page_size, &reason);
                    reason
                }
            }
        } else {
            "4 KiB pages were requested".to_string()
        };
        let len = round_up(self.len, PageSize::Size4K.bytes())?;
        let m = map::map_normal(len, self.numa_node)?;
        let backing = Backing::Normal {
            reason: normal_reason,
        };
        Ok(Region::from_mapping(
            m,
            PageSize::Size4K,
            backing,
            self.iova_mode,
        ))
    }
}

/// Logs the first fallback of the process; later ones are only reported as
/// data (`Backing::Normal`), so a program that makes many pools does not
/// flood its log.
#[cfg(not(any(miri, loom)))]
fn warn_fallback_once(page_size: PageSize, reason: &str) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        tracing::warn!(
            %page_size,
            reason,
            "no hugepages: falling back to 4 KiB pages with transparent-hugepage advice \
             (logged once per process; see Region::backing for each region)"
        );
    });
}

fn round_up(len: usize, page: usize) -> Result<usize, Error> {
    len.checked_next_multiple_of(page).ok_or_else(|| {
        Error::Config(format!(
            "a region of {len} bytes overflows when rounded to {page}-byte pages"
        ))
    })
}

/// How the memory is given back.
#[derive(Debug)]
enum Release {
    #[cfg(not(any(miri, loom)))]
    Munmap,
    #[cfg(any(miri, loom))]
    Heap(std::alloc::Layout),
}

/// A mapped span of memory: hugepages when they can be had, else 4 KiB
/// pages, and the reason. Unmapped on drop.
///
/// A region is only memory: it is `Send` and `Sync`, and what is stored in
/// it (and who may touch which byte) is the business of the layer above
/// (the [`Mempool`](crate::mempool::Mempool)).
pub struct Region {
    ptr: NonNull<u8>,
    len: usize,
    page_size: PageSize,
    backing: Backing,
    numa: NumaPolicy,
    iova_mode: IovaMode,
    iova_reason: String,
    /// The IOVA of the first byte of each page, in PA mode; empty in VA
    /// mode. Filled once at build time, so that `iova()` is arithmetic.
    page_iova: Box<[u64]>,
    release: Release,
}

// SAFETY: a Region owns its mapping outright; the raw pointer is only an
// address of memory that lives until Drop. Nothing in it is tied to a thread.
unsafe impl Send for Region {}
// SAFETY: every `&self` method only reads immutable fields; the bytes of the
// mapping are reached through raw pointers whose users synchronise
// themselves (see the mempool).
unsafe impl Sync for Region {}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Region")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .field("page_size", &self.page_size)
            .field("backing", &self.backing)
            .field("numa", &self.numa)
            .field("iova_mode", &self.iova_mode)
            .field("iova_reason", &self.iova_reason)
            .finish_non_exhaustive()
    }
}

impl Region {
    /// A builder for a region of at least `len` bytes (rounded up to the
    /// page size): 2 MiB pages, no NUMA binding, anonymous, fallback
    /// allowed, IOVA mode chosen automatically.
    pub fn builder(len: usize) -> RegionBuilder {
        RegionBuilder {
            len,
            page_size: PageSize::Size2M,
            numa_node: None,
            hugetlbfs: None,
            allow_fallback: true,
            iova_mode: None,
        }
    }

    #[cfg(not(any(miri, loom)))]
    fn from_mapping(
        m: map::Mapping,
        page_size: PageSize,
        backing: Backing,
        requested: Option<IovaMode>,
    ) -> Region {
        let huge = matches!(backing, Backing::Hugepages { .. });
        let mut region = Region {
            ptr: m.ptr,
            len: m.len,
            page_size,
            backing,
            numa: m.numa,
            iova_mode: IovaMode::Va,
            iova_reason: String::new(),
            page_iova: Box::new([]),
            release: Release::Munmap,
        };
        match (requested, huge) {
            (Some(IovaMode::Va), _) => {
                region.iova_reason = "IOVA mode VA was requested".into();
            }
            (_, false) => {
                region.iova_reason = "4 KiB pages can be migrated or swapped by the kernel, so \
                                      their physical addresses are not stable (DPDK likewise \
                                      forces VA with --no-huge)"
                    .into();
            }
            (_, true) => match pagemap::page_addresses(region.ptr, region.len, page_size) {
                Ok(table) => {
                    region.iova_mode = IovaMode::Pa;
                    region.iova_reason = "physical addresses from /proc/self/pagemap".into();
                    region.page_iova = table;
                }
                Err(why) => region.iova_reason = why,
            },
        }
        region
    }

    fn check_iova_request(&self, requested: Option<IovaMode>) -> Result<(), Error> {
        if requested == Some(IovaMode::Pa) && self.iova_mode != IovaMode::Pa {
            return Err(Error::IovaUnavailable {
                reason: self.iova_reason.clone(),
            });
        }
        Ok(())
    }

    /// The first byte of the region.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// `len` items of `T` starting at byte `offset`, read in place; `None`
    /// when they would run past the end or `offset` is not aligned for `T`.
    /// A fresh region is zeroed, which every [`Plain`] type reads as a
    /// value.
    ///
    /// ```
    /// use hugepages::region::Region;
    /// use std::sync::atomic::{AtomicU64, Ordering};
    ///
    /// let mut r = Region::builder(4096).build()?;
    /// r.slice_mut::<u32>(0, 4).expect("in bounds")[1] = 7;
    /// assert_eq!(r.slice::<u32>(0, 4), Some(&[0, 7, 0, 0][..]));
    /// assert!(r.slice::<u32>(2, 1).is_none()); // misaligned
    /// assert!(r.slice::<u64>(0, r.len()).is_none()); // past the end
    /// // Atomics may be shared and written through `&self`.
    /// r.slice::<AtomicU64>(8, 1).expect("in bounds")[0].store(1, Ordering::Relaxed);
    /// # Ok::<(), hugepages::Error>(())
    /// ```
    pub fn slice<T: Plain>(&self, offset: usize, len: usize) -> Option<&[T]> {
        let p = self.typed_ptr::<T>(offset, len)?;
        // SAFETY: `typed_ptr` checked that `len` items of `T` from `offset`
        // lie inside the mapping (kept by `&self`) and are aligned; the
        // mapping is initialised (zeroed when mapped, then written only
        // with values of some `Plain` type), every bit pattern is a valid
        // `T` (the `Plain` contract), and through safe code the bytes are
        // only written via `slice_mut`, which needs `&mut self`, or via
        // atomics, which tolerate sharing.
        Some(unsafe { std::slice::from_raw_parts(p, len) })
    }

    /// As [`Region::slice`], writable.
    pub fn slice_mut<T: Plain>(&mut self, offset: usize, len: usize) -> Option<&mut [T]> {
        let p = self.typed_ptr::<T>(offset, len)?;
        // SAFETY: as in `slice`; `&mut self` makes the borrow exclusive.
        Some(unsafe { std::slice::from_raw_parts_mut(p, len) })
    }

    /// The address of `len` items of `T` at `offset`, if in bounds and
    /// aligned.
    fn typed_ptr<T>(&self, offset: usize, len: usize) -> Option<*mut T> {
        let bytes = len.checked_mul(std::mem::size_of::<T>())?;
        if offset.checked_add(bytes)? > self.len {
            return None;
        }
        let p = self.ptr.as_ptr().wrapping_add(offset);
        p.cast::<T>().is_aligned().then(|| p.cast::<T>())
    }

    /// The length in bytes: the requested length rounded up to the page size.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: an empty region cannot be built. Here for the
    /// `len`/`is_empty` pair.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The size of the pages backing the region (4 KiB when it fell back).
    pub fn page_size(&self) -> PageSize {
        self.page_size
    }

    /// The NUMA node asked for, if any; [`Region::numa_policy`] says how it
    /// was applied.
    pub fn numa_node(&self) -> Option<NumaNode> {
        self.numa.node()
    }

    /// The NUMA policy the region was given.
    pub fn numa_policy(&self) -> &NumaPolicy {
        &self.numa
    }

    /// What backs the region, and why when it is not hugepages.
    pub fn backing(&self) -> &Backing {
        &self.backing
    }

    /// Whether the region is backed by hugepages.
    pub fn is_hugepage_backed(&self) -> bool {
        matches!(self.backing, Backing::Hugepages { .. })
    }

    /// How IOVAs of this region are formed.
    pub fn iova_mode(&self) -> IovaMode {
        self.iova_mode
    }

    /// Why the region has the IOVA mode it has.
    pub fn iova_mode_reason(&self) -> &str {
        &self.iova_reason
    }

    /// Whether `ptr` points into the region.
    pub fn contains(&self, ptr: *const u8) -> bool {
        self.offset_of(ptr).is_some()
    }

    fn offset_of(&self, ptr: *const u8) -> Option<usize> {
        let off = ptr.addr().wrapping_sub(self.ptr.as_ptr().addr());
        (off < self.len).then_some(off)
    }

    /// The IOVA of the byte at `ptr`, or `None` when `ptr` is outside the
    /// region. O(1): a table lookup per hugepage in PA mode, the address
    /// itself in VA mode.
    pub fn iova(&self, ptr: *const u8) -> Option<Iova> {
        let off = self.offset_of(ptr)?;
        match self.iova_mode {
            IovaMode::Va => Some(Iova(ptr.addr() as u64)),
            IovaMode::Pa => {
                let page = *self.page_iova.get(off >> self.page_size.shift())?;
                let in_page = off & (self.page_size.bytes() - 1);
                Some(Iova(page + in_page as u64))
            }
        }
    }

    /// Whether `[addr, addr + len)` lies in the region and its IOVAs are one
    /// contiguous range, so that a device can reach it with one descriptor.
    /// Always true for a range inside the region in VA mode; in PA mode,
    /// true when the range stays in one page or its pages are physically
    /// consecutive.
    pub fn is_iova_contiguous(&self, addr: *const u8, len: usize) -> bool {
        let Some(start) = self.offset_of(addr) else {
            return false;
        };
        let Some(end) = start.checked_add(len) else {
            return false;
        };
        if end > self.len {
            return false;
        }
        if self.iova_mode == IovaMode::Va || len == 0 {
            return true;
        }
        let shift = self.page_size.shift();
        let (first, last) = (start >> shift, (end - 1) >> shift);
        let page = self.page_size.bytes() as u64;
        self.page_iova[first..=last]
            .windows(2)
            .all(|w| w[1] == w[0].wrapping_add(page))
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        match self.release {
            #[cfg(not(any(miri, loom)))]
            Release::Munmap => map::unmap(self.ptr, self.len),
            #[cfg(any(miri, loom))]
            Release::Heap(layout) => {
                // SAFETY: `ptr` came from `alloc_zeroed(layout)` in `map` and
                // is freed only here, once.
                unsafe { std::alloc::dealloc(self.ptr.as_ptr(), layout) }
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
