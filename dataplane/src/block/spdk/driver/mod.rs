//! The SPDK NVMe driver behind the backend (built only with SPDK): the
//! environment, attaching controllers, namespaces as devices, and memory
//! registration for PCIe.

use super::super::completion::{Completion, Completions, Status, SubmitError};
use super::super::inflight::{InFlight, Slot};
use super::super::op::{Op, OpKind};
use super::super::{Device, DeviceConfig, Geometry, Queue, QueueConfig, QueueStats};
use super::split_target;
use crate::{Error, Result};
use hugepages::mempool::Mempool;
use spdk_sys as sys;
use std::collections::{HashMap, VecDeque};
use std::ffi::{CString, c_void};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

mod queue;

use queue::SpdkQueue;

/// How often the queue on admin duty reaps the admin queue (keep-alive
/// for NVMe-oF, asynchronous events): every 100 ms, well inside the
/// 10 s keep-alive timeout SPDK's host asks for by default.
const ADMIN_POLL_MS: u64 = 100;

/// SPDK's `spdk_mem_register` granularity: 2 MiB (`VALUE_2MB`,
/// lib/env_dpdk/memory.c).
const MEM_REGISTER_ALIGN: usize = 2 << 20;

/// The environment (DPDK's EAL underneath): once per process.
static ENV: OnceLock<std::result::Result<String, String>> = OnceLock::new();

fn hugepages_ready() -> bool {
    let free = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("HugePages_Free:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let mounted = std::fs::read_to_string("/proc/mounts").is_ok_and(|m| {
        m.lines()
            .any(|l| l.split_whitespace().nth(2) == Some("hugetlbfs"))
    });
    free > 0 && mounted
}

/// Starts SPDK's environment for the first target: with PCI access
/// only for a PCIe one, on hugepages when a hugetlbfs is mounted with
/// free pages (else, for TCP, without). DPDK pins the calling thread to
/// its main lcore; the thread's affinity is put back afterwards.
fn env(pcie: bool) -> Result<&'static str> {
    let r = ENV.get_or_init(|| {
        let huge = hugepages_ready();
        if pcie && !huge {
            return Err("a PCIe controller needs hugepages in a mounted hugetlbfs \
                        (scripts/setup-hugepages.sh; mount -t hugetlbfs nodev /dev/hugepages)"
                .into());
        }
        let mem_mb: i32 = std::env::var("DATAPLANE_SPDK_MEM_MB")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(if huge { -1 } else { 256 });
        let me = nix::unistd::Pid::from_raw(0);
        let affinity = nix::sched::sched_getaffinity(me).ok();
        let core = crate::lcore::current_cpu().map_or(0, |c| c.0 as i32);
        let name = c"dataplane".as_ptr();
        // SAFETY: a NUL-terminated name that lives for the process (SPDK
        // keeps it); called once (OnceLock), before any other SPDK call.
        let rc = unsafe { sys::dp_spdk_env_init(name, core, mem_mb, !pcie, !huge) };
        if let Some(set) = affinity {
            let _ = nix::sched::sched_setaffinity(me, &set);
        }
        if rc != 0 {
            return Err(format!(
                "spdk_env_init failed ({}); see SPDK's log above",
                std::io::Error::from_raw_os_error(-rc)
            ));
        }
        Ok(format!(
            "SPDK env on {}{}",
            if huge {
                "hugepages"
            } else {
                "4 KiB pages (no hugepages: TCP only)"
            },
            if pcie { ", PCI enabled" } else { ", no PCI" }
        ))
    });
    match r {
        Ok(s) => Ok(s),
        Err(e) => Err(Error::Config(e.clone())),
    }
}

/// What the probe callbacks fill in.
#[derive(Default)]
struct ProbeCtx {
    ctrlrs: Vec<*mut sys::spdk_nvme_ctrlr>,
}

unsafe extern "C" fn probe_cb(
    _ctx: *mut c_void,
    _trid: *const sys::spdk_nvme_transport_id,
    _opts: *mut sys::spdk_nvme_ctrlr_opts,
) -> bool {
    // Attach whatever the transport ID names, with SPDK's defaults.
    true
}

unsafe extern "C" fn attach_cb(
    ctx: *mut c_void,
    _trid: *const sys::spdk_nvme_transport_id,
    ctrlr: *mut sys::spdk_nvme_ctrlr,
    _opts: *const sys::spdk_nvme_ctrlr_opts,
) {
    // SAFETY: `ctx` is the `ProbeCtx` `open` passed to spdk_nvme_probe,
    // alive and otherwise unused for the length of that call.
    let ctx = unsafe { &mut *ctx.cast::<ProbeCtx>() };
    ctx.ctrlrs.push(ctrlr);
}

/// An attached controller and the namespace used; detached when the
/// device and its last queue are gone.
struct Ctrlr {
    ctrlr: NonNull<sys::spdk_nvme_ctrlr>,
    ns: NonNull<sys::spdk_nvme_ns>,
    pcie: bool,
    /// Whether a queue is polling the admin queue.
    admin_taken: AtomicBool,
}

// SAFETY: SPDK's controller functions used across threads here
// (allocating and freeing I/O qpairs, admin completions, detach) lock
// the controller; the namespace is read-only after attach.
unsafe impl Send for Ctrlr {}
// SAFETY: as above.
unsafe impl Sync for Ctrlr {}

impl Drop for Ctrlr {
    fn drop(&mut self) {
        // SAFETY: the controller was attached by spdk_nvme_probe and is
        // detached once, after every qpair (each holds an Arc) is freed.
        let rc = unsafe { sys::spdk_nvme_detach(self.ctrlr.as_ptr()) };
        if rc != 0 {
            tracing::warn!("spdk_nvme_detach failed: {rc}");
        }
    }
}

pub(super) fn open(cfg: &DeviceConfig) -> Result<Arc<dyn Device>> {
    let (trid_str, nsid) = split_target(&cfg.target)?;
    let mut trid = sys::spdk_nvme_transport_id::default();
    let c = CString::new(trid_str.clone())
        .map_err(|_| Error::Config(format!("{}: a NUL in the target", cfg.target)))?;
    // SAFETY: `trid` is a valid, writable transport ID and `c` a
    // NUL-terminated string, both live for the call.
    let rc = unsafe { sys::spdk_nvme_transport_id_parse(&raw mut trid, c.as_ptr()) };
    if rc != 0 {
        return Err(Error::Config(format!(
            "{trid_str:?} is not an SPDK transport ID (spdk_nvme_transport_id_parse: {rc})"
        )));
    }
    let pcie = trid.trtype == sys::SPDK_NVME_TRANSPORT_PCIE;
    // SAFETY: a pure function of its argument (static inline in SPDK).
    let fabrics = unsafe { sys::dp_spdk_trtype_is_fabrics(trid.trtype) };
    let env_note = env(pcie)?;
    let mut ctx = ProbeCtx::default();
    // SAFETY: `trid` is parsed; `ctx` outlives the call, which runs the
    // callbacks synchronously on this thread.
    let rc = unsafe {
        sys::spdk_nvme_probe(
            &raw const trid,
            (&raw mut ctx).cast(),
            Some(probe_cb),
            Some(attach_cb),
            None,
        )
    };
    let mut ctrlrs = ctx.ctrlrs.into_iter();
    let first = ctrlrs.next();
    for extra in ctrlrs {
        // SAFETY: attached by the probe above and not used anywhere.
        unsafe { sys::spdk_nvme_detach(extra) };
    }
    let Some(ctrlr) = first.and_then(NonNull::new) else {
        return Err(Error::Config(format!(
            "spdk_nvme_probe({trid_str}) attached no controller (rc {rc}): {}",
            if pcie {
                "is the device bound to vfio-pci (docs/backends.md)?"
            } else {
                "is the target listening, and the subsystem NQN right?"
            }
        )));
    };
    let nsid = match nsid {
        Some(n) => n,
        // SAFETY: an attached controller.
        None => unsafe { sys::spdk_nvme_ctrlr_get_first_active_ns(ctrlr.as_ptr()) },
    };
    // SAFETY: an attached controller; any nsid is allowed (0 or an
    // unknown one gives NULL).
    let ns = unsafe { sys::spdk_nvme_ctrlr_get_ns(ctrlr.as_ptr(), nsid) };
    let active = match NonNull::new(ns) {
        // SAFETY: a namespace of the attached controller.
        Some(ns) => unsafe { sys::spdk_nvme_ns_is_active(ns.as_ptr()) }.then_some(ns),
        None => None,
    };
    let Some(ns) = active else {
        // SAFETY: attached above, unused.
        unsafe { sys::spdk_nvme_detach(ctrlr.as_ptr()) };
        return Err(Error::Config(format!(
            "{}: no active namespace {nsid}",
            cfg.target
        )));
    };
    let shared = Arc::new(Ctrlr {
        ctrlr,
        ns,
        pcie,
        admin_taken: AtomicBool::new(false),
    });
    let geometry = geometry(&shared);
    let notes = vec![
        env_note.to_owned(),
        format!(
            "{} controller {trid_str}, namespace {nsid}: {} x {} B, max transfer {} KiB, \
             atomic write {} B{}",
            if fabrics { "NVMe-oF" } else { "PCIe" },
            geometry.blocks,
            geometry.block_size,
            geometry.max_transfer / 1024,
            geometry.atomic_write_unit,
            if geometry.volatile_cache {
                ", volatile write cache"
            } else {
                ""
            }
        ),
    ];
    Ok(Arc::new(SpdkDevice {
        target: cfg.target.clone(),
        shared,
        geometry,
        notes,
    }))
}

fn geometry(c: &Ctrlr) -> Geometry {
    let ns = c.ns.as_ptr();
    // SAFETY: each getter reads the attached namespace's identify data.
    let block_size = unsafe { sys::spdk_nvme_ns_get_sector_size(ns) };
    // SAFETY: as above.
    let blocks = unsafe { sys::spdk_nvme_ns_get_num_sectors(ns) };
    // SAFETY: as above.
    let max_transfer = unsafe { sys::spdk_nvme_ns_get_max_io_xfer_size(ns) };
    // SAFETY: as above.
    let flags = unsafe { sys::spdk_nvme_ns_get_flags(ns) };
    // SAFETY: as above (and the controller's).
    let atomic = unsafe { sys::dp_spdk_ns_atomic_blocks(ns) };
    // SAFETY: the attached controller's identify data.
    let volatile_cache = unsafe { sys::dp_spdk_ctrlr_volatile_cache(c.ctrlr.as_ptr()) };
    Geometry {
        block_size,
        blocks,
        max_transfer: max_transfer.max(block_size),
        atomic_write_unit: atomic.saturating_mul(block_size),
        // PRPs need dword-aligned data (NVMe base spec 4.1.1); TCP
        // copies from any address.
        buf_align: if c.pcie { 4 } else { 1 },
        write_zeroes: flags & sys::SPDK_NVME_NS_WRITE_ZEROES_SUPPORTED != 0,
        deallocate: flags & sys::SPDK_NVME_NS_DEALLOCATE_SUPPORTED != 0,
        volatile_cache,
    }
}

/// An NVMe namespace behind an SPDK-attached controller.
struct SpdkDevice {
    target: String,
    shared: Arc<Ctrlr>,
    geometry: Geometry,
    notes: Vec<String>,
}

impl std::fmt::Debug for SpdkDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpdkDevice")
            .field("target", &self.target)
            .field("geometry", &self.geometry)
            .finish()
    }
}

impl Device for SpdkDevice {
    fn backend(&self) -> &'static str {
        "spdk"
    }

    fn target(&self) -> &str {
        &self.target
    }

    fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }

    fn queue(&self, cfg: &QueueConfig) -> Result<Box<dyn Queue>> {
        cfg.validate()?;
        Ok(Box::new(SpdkQueue::new(self, cfg)?))
    }
}

/// Memory registered with SPDK's address translation (PCIe only): by
/// start address, its length and how many queues registered it.
static REGISTERED: Mutex<Option<HashMap<usize, (usize, usize)>>> = Mutex::new(None);

/// Registers every region of `pools` (2 MiB-aligned hugepage memory) so
/// that the driver can translate buffers to bus addresses.
fn register(pools: &[Mempool]) -> Result<Vec<(usize, usize)>> {
    let mut map = REGISTERED
        .lock()
        .map_err(|_| Error::Config("poisoned".into()))?;
    let map = map.get_or_insert_with(HashMap::new);
    let mut spans = Vec::new();
    for r in pools.iter().flat_map(Mempool::regions) {
        // Exposed: `unregister` turns the address back into a pointer.
        let start = r.as_ptr().expose_provenance();
        let len = r.len().next_multiple_of(MEM_REGISTER_ALIGN);
        if !start.is_multiple_of(MEM_REGISTER_ALIGN) || !r.is_hugepage_backed() {
            return Err(Error::Config(format!(
                "a PCIe controller needs buffers in 2 MiB hugepages; region at {start:#x} is \
                 not (reserve hugepages: scripts/setup-hugepages.sh)"
            )));
        }
        let entry = map.entry(start).or_insert((len, 0));
        if entry.1 == 0 {
            // SAFETY: the region is mapped, 2 MiB-aligned and padded to
            // 2 MiB (hugepage mappings are whole pages); it stays mapped
            // while registered, since the queue keeps its pool.
            let rc = unsafe { sys::spdk_mem_register(r.as_ptr().cast(), len) };
            if rc != 0 {
                return Err(Error::Config(format!(
                    "spdk_mem_register({start:#x}, {len}) failed: {rc}"
                )));
            }
        }
        entry.1 += 1;
        spans.push((start, start + len));
    }
    Ok(spans)
}

fn unregister(spans: &[(usize, usize)]) {
    let Ok(mut map) = REGISTERED.lock() else {
        return;
    };
    let Some(map) = map.as_mut() else { return };
    for &(start, _) in spans {
        if let Some(entry) = map.get_mut(&start) {
            entry.1 -= 1;
            if entry.1 == 0 {
                let len = entry.0;
                map.remove(&start);
                // SAFETY: registered above with this start and length,
                // and no queue uses it any more.
                unsafe {
                    sys::spdk_mem_unregister(std::ptr::with_exposed_provenance_mut(start), len)
                };
            }
        }
    }
}
