//! Physical addresses from `/proc/self/pagemap`
//! (Documentation/admin-guide/mm/pagemap.rst).
//!
//! One 64-bit entry per 4 KiB virtual page, at offset `vaddr / 4096 * 8`:
//! bits 0-54 hold the page frame number, bit 63 says the page is present.
//! Since Linux 4.2 the PFN reads as 0 without `CAP_SYS_ADMIN`.

use super::PageSize;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::ptr::NonNull;

/// The granule of pagemap entries: the base page size.
const PAGEMAP_PAGE: usize = 4096;
/// Bytes per pagemap entry.
const PAGEMAP_ENTRY: u64 = 8;
/// Bit 63: page present in RAM.
const PM_PRESENT: u64 = 1 << 63;
/// Bits 0-54: the page frame number.
const PM_PFN_MASK: u64 = (1 << 55) - 1;

/// The physical address of the first byte of each `page`-sized page of
/// `[ptr, ptr + len)`, which must be populated.
///
/// # Errors
///
/// A sentence saying why physical addresses cannot be had, ending with what
/// the region does instead (VA mode).
pub(super) fn page_addresses(
    ptr: NonNull<u8>,
    len: usize,
    page: PageSize,
) -> Result<Box<[u64]>, String> {
    let file = File::open("/proc/self/pagemap")
        .map_err(|e| format!("cannot open /proc/self/pagemap ({e}): VA mode"))?;
    let base = ptr.as_ptr().addr();
    (0..len)
        .step_by(page.bytes())
        .map(|off| {
            let vaddr = base + off;
            let mut entry = [0u8; 8];
            let at = (vaddr / PAGEMAP_PAGE) as u64 * PAGEMAP_ENTRY;
            file.read_exact_at(&mut entry, at)
                .map_err(|e| format!("cannot read /proc/self/pagemap ({e}): VA mode"))?;
            let entry = u64::from_ne_bytes(entry);
            if entry & PM_PRESENT == 0 {
                return Err(format!(
                    "page at {vaddr:#x} is not present in /proc/self/pagemap: VA mode"
                ));
            }
            let pfn = entry & PM_PFN_MASK;
            if pfn == 0 {
                return Err(
                    "/proc/self/pagemap hides physical addresses without CAP_SYS_ADMIN: VA mode"
                        .to_string(),
                );
            }
            Ok(pfn * PAGEMAP_PAGE as u64)
        })
        .collect()
}
