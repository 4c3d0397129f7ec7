//! Opening a file or block device for the kernel backends (io_uring and
//! psync), and reading its geometry: the size from the file, the direct-I/O
//! alignments from `statx`, the queue limits from sysfs.

use super::{DeviceConfig, Geometry};
use crate::{Error, Result};
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The largest transfer on a file whose filesystem's device has no queue
/// in sysfs (tmpfs, overlay): 1 MiB, the `max_sectors_kb` of common NVMe
/// and virtio disks.
const MAX_TRANSFER_FALLBACK: u32 = 1 << 20;

/// An open file or block device with what the kernel says about it.
#[derive(Debug)]
pub(crate) struct OpenFile {
    pub(crate) file: File,
    pub(crate) geometry: Geometry,
    pub(crate) direct: bool,
    /// The block layer can poll this device's completions (`io_poll` is 1).
    pub(crate) pollable: bool,
    /// What was found and decided, for the device's notes.
    pub(crate) notes: Vec<String>,
}

/// The queue limits of the device under `path`, from sysfs.
#[derive(Debug, Default)]
struct QueueLimits {
    dir: Option<PathBuf>,
}

impl QueueLimits {
    /// The queue of device `major:minor`: its own, or its disk's for a
    /// partition.
    fn of(major: u64, minor: u64) -> QueueLimits {
        let dev = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
        let Ok(real) = dev.canonicalize() else {
            return QueueLimits::default();
        };
        let dir = if real.join("partition").exists() {
            real.parent().map(|p| p.join("queue"))
        } else {
            Some(real.join("queue"))
        };
        QueueLimits {
            dir: dir.filter(|d| d.is_dir()),
        }
    }

    fn read(&self, name: &str) -> Option<String> {
        let s = std::fs::read_to_string(self.dir.as_ref()?.join(name)).ok()?;
        Some(s.trim().to_owned())
    }

    fn num(&self, name: &str) -> Option<u64> {
        self.read(name)?.parse().ok()
    }
}

/// The direct-I/O alignments `statx` reports: (memory, offset), 0 when the
/// kernel or filesystem says nothing (before Linux 6.1, or without
/// O_DIRECT support).
fn dio_align(file: &File) -> (u32, u32) {
    let mut stx = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: the path is an empty C string with AT_EMPTY_PATH, so statx
    // reads the open descriptor; `stx` is a valid, writable statx buffer.
    let rc = unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            stx.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return (0, 0);
    }
    // SAFETY: statx succeeded and filled the buffer (which started zeroed,
    // so every field is initialised either way).
    let stx = unsafe { stx.assume_init() };
    if stx.stx_mask & libc::STATX_DIOALIGN == 0 {
        return (0, 0);
    }
    (stx.stx_dio_mem_align, stx.stx_dio_offset_align)
}

/// Opens `path` as `cfg` says (O_DIRECT unless `cfg.direct` is false,
/// created or extended to `cfg.create_size` for regular files).
pub(crate) fn open(path: &Path, cfg: &DeviceConfig) -> Result<OpenFile> {
    let mut notes = Vec::new();
    let mut opts = OpenOptions::new();
    opts.read(true).write(!cfg.read_only);
    if cfg.create_size.is_some() && !cfg.read_only {
        opts.create(true);
    }
    if cfg.direct {
        opts.custom_flags(libc::O_DIRECT);
    }
    let file = opts.open(path).map_err(|e| {
        let hint = if cfg.direct && e.raw_os_error() == Some(libc::EINVAL) {
            " (the filesystem refuses O_DIRECT: tmpfs does; use a loop device over the file, \
             or turn direct I/O off)"
        } else {
            ""
        };
        Error::io(format!("opening {}{hint}", path.display()), e)
    })?;
    let meta = file
        .metadata()
        .map_err(|e| Error::io(format!("stat {}", path.display()), e))?;
    let block_device = meta.file_type().is_block_device();
    if !block_device && !meta.file_type().is_file() {
        return Err(Error::Config(format!(
            "{} is neither a regular file nor a block device",
            path.display()
        )));
    }
    let mut bytes = if block_device {
        (&file)
            .seek(SeekFrom::End(0))
            .map_err(|e| Error::io(format!("sizing {}", path.display()), e))?
    } else {
        meta.len()
    };
    if let Some(want) = cfg.create_size
        && !block_device
        && bytes < want
    {
        if cfg.read_only {
            return Err(Error::Config(format!(
                "{} has {bytes} bytes, fewer than the {want} asked for, and is opened read-only",
                path.display()
            )));
        }
        file.set_len(want)
            .map_err(|e| Error::io(format!("extending {} to {want} bytes", path.display()), e))?;
        notes.push(format!("extended to {want} bytes"));
        bytes = want;
    }

    let dev = if block_device {
        meta.rdev()
    } else {
        meta.dev()
    };
    let limits = QueueLimits::of(
        u64::from(nix::sys::stat::major(dev) as u32),
        u64::from(nix::sys::stat::minor(dev) as u32),
    );
    let logical = limits.num("logical_block_size").unwrap_or(512) as u32;
    let (mem_align, offset_align) = if cfg.direct { dio_align(&file) } else { (1, 1) };
    // Without statx's answer, O_DIRECT on Linux wants the logical block
    // size for both (the rule before 6.1 relaxed the memory side).
    let offset_align = if offset_align == 0 {
        logical
    } else {
        offset_align
    };
    let mem_align = if mem_align == 0 { logical } else { mem_align };
    let block_size = match cfg.block_size {
        Some(bs) => {
            if bs == 0 || !bs.is_power_of_two() || !bs.is_multiple_of(offset_align.max(1)) {
                return Err(Error::Config(format!(
                    "block size {bs} for {}: must be a power of two and a multiple of the \
                     direct-I/O alignment {offset_align}",
                    path.display()
                )));
            }
            bs
        }
        None if block_device => logical.max(offset_align),
        None => offset_align.max(512),
    };
    let blocks = bytes / u64::from(block_size);
    if blocks == 0 {
        return Err(Error::Config(format!(
            "{} has {bytes} bytes: not one block of {block_size} (give a size to create it)",
            path.display()
        )));
    }
    if !bytes.is_multiple_of(u64::from(block_size)) {
        notes.push(format!(
            "the last {} bytes are not a whole block and are not used",
            bytes % u64::from(block_size)
        ));
    }
    let max_transfer = limits
        .num("max_sectors_kb")
        .and_then(|kb| u32::try_from(kb * 1024).ok())
        .unwrap_or(MAX_TRANSFER_FALLBACK)
        .max(block_size);
    let atomic_write_unit = limits
        .num("atomic_write_unit_max_bytes")
        .and_then(|b| u32::try_from(b).ok())
        .filter(|&b| b >= block_size)
        .unwrap_or(block_size);
    let write_zeroes_hw = limits.num("write_zeroes_max_bytes").unwrap_or(0) > 0;
    let volatile_cache = limits
        .read("write_cache")
        .is_none_or(|s| s.starts_with("write back"));
    let pollable = cfg.direct && limits.num("io_poll") == Some(1);
    let geometry = Geometry {
        block_size,
        blocks,
        max_transfer,
        atomic_write_unit,
        buf_align: if cfg.direct { mem_align.max(1) } else { 1 },
        // A block device zeroes through the block layer (falling back to
        // writing zero pages); a file through fallocate(ZERO_RANGE).
        write_zeroes: !cfg.read_only,
        // fallocate(PUNCH_HOLE) on a block device is a write-zeroes that
        // must not fall back (Linux block/fops.c), so it needs the device's.
        deallocate: !cfg.read_only && (!block_device || write_zeroes_hw),
        volatile_cache,
    };
    notes.push(format!(
        "{} {}: {blocks} x {block_size} B, {} direct I/O (memory alignment {}), max transfer {} KiB",
        if block_device {
            "block device"
        } else {
            "regular file"
        },
        path.display(),
        if cfg.direct { "with" } else { "without" },
        geometry.buf_align,
        max_transfer / 1024
    ));
    Ok(OpenFile {
        file,
        geometry,

        direct: cfg.direct,
        pollable,
        notes,
    })
}
