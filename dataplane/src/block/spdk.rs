//! The SPDK NVMe backend: `spdk_nvme_probe` over PCIe (vfio-pci) or
//! NVMe-oF TCP, one I/O qpair per lcore, reads and writes straight from
//! hugepage buffers, completions reaped by
//! `spdk_nvme_qpair_process_completions` in the lcore's poll loop: no
//! locks, no interrupts, no system calls on PCIe. Without SPDK in the
//! build (see `spdk-sys`) it only says why.

use super::{Backend, Device, DeviceConfig, Target};
use crate::backend::Probe;
use crate::{Error, Result};
use std::sync::Arc;

/// The SPDK NVMe backend.
#[derive(Debug)]
pub(crate) struct Spdk;

impl Backend for Spdk {
    fn probe(&self) -> Probe {
        if spdk_sys::AVAILABLE {
            Probe::ok(format!(
                "SPDK {} compiled in: {}",
                spdk_sys::VERSION,
                spdk_sys::REASON
            ))
        } else {
            Probe::unavailable(format!("SPDK not compiled in: {}", spdk_sys::REASON))
        }
    }

    fn handles(&self, target: &Target) -> bool {
        matches!(target, Target::Nvme(_))
    }

    fn open(&self, cfg: &DeviceConfig) -> Result<Arc<dyn Device>> {
        #[cfg(spdk)]
        {
            driver::open(cfg)
        }
        #[cfg(not(spdk))]
        {
            Err(Error::Config(format!(
                "cannot open {}: {}",
                cfg.target,
                self.probe().reason
            )))
        }
    }
}

/// A transport ID in SPDK's syntax and the namespace asked for: a PCI
/// address becomes `trtype:PCIe traddr:...`; an `ns:N` word is ours.
#[cfg_attr(not(spdk), allow(dead_code))]
fn split_target(target: &str) -> Result<(String, Option<u32>)> {
    let mut nsid = None;
    let mut words = Vec::new();
    for w in target.split_whitespace() {
        match w.strip_prefix("ns:").or_else(|| w.strip_prefix("ns=")) {
            Some(n) => {
                nsid = Some(n.parse::<u32>().map_err(|_| {
                    Error::Config(format!("{target}: namespace {n:?} is not a number"))
                })?);
            }
            None => words.push(w),
        }
    }
    let trid = words.join(" ");
    if !trid.contains("trtype") {
        return Ok((format!("trtype:PCIe traddr:{trid}"), nsid));
    }
    Ok((trid, nsid))
}

#[cfg(spdk)]
mod driver {
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

    /// The callback argument of one slot: where to report, and which slot.
    struct SlotCtx {
        reaped: *mut VecDeque<(u32, Status)>,
        id: u32,
    }

    unsafe extern "C" fn complete(arg: *mut c_void, cpl: *const sys::spdk_nvme_cpl) {
        // SAFETY: `arg` is a `SlotCtx` of the queue that submitted the
        // command; the queue frees them only after its qpair, so they
        // outlive every callback.
        let ctx = unsafe { &*arg.cast::<SlotCtx>() };
        // SAFETY: `cpl` is the completion SPDK passes, valid for the call.
        let error = unsafe { sys::dp_spdk_cpl_is_error(cpl) };
        let status = if error {
            // SAFETY: as above.
            let sct = unsafe { sys::dp_spdk_cpl_sct(cpl) };
            // SAFETY: as above.
            let sc = unsafe { sys::dp_spdk_cpl_sc(cpl) };
            Status::Nvme { sct, sc }
        } else {
            Status::Success
        };
        // The list has room for `depth` entries and holds at most the ones
        // in flight, so this never allocates (nothing can unwind into C).
        // SAFETY: the queue's list, touched only by its thread: here (inside
        // process_completions, no other reference held) and in `poll` after.
        unsafe { (*ctx.reaped).push_back((ctx.id, status)) };
    }

    /// One lcore's I/O qpair.
    struct SpdkQueue {
        shared: Arc<Ctrlr>,
        qpair: NonNull<sys::spdk_nvme_qpair>,
        geometry: Geometry,
        inflight: InFlight,
        /// One callback argument per slot (a leaked box, freed in Drop
        /// after the qpair).
        ctxs: NonNull<[SlotCtx]>,
        /// Completions the callbacks reported (a leaked box, as above).
        reaped: NonNull<VecDeque<(u32, Status)>>,
        /// Completions of submissions SPDK refused after accepting them into
        /// our table (a transport that failed meanwhile).
        refused: VecDeque<Completion>,
        /// Memory registered for this queue (PCIe).
        registered: Vec<(usize, usize)>,
        admin_duty: bool,
        next_admin: u64,
        admin_every: u64,
        stats: QueueStats,
        _pools: Vec<Mempool>,
    }

    // SAFETY: a qpair may be used by one thread at a time, and the queue is
    // not Sync; the raw pointers are the queue's own allocations and
    // SPDK objects that are not tied to a thread.
    unsafe impl Send for SpdkQueue {}

    impl std::fmt::Debug for SpdkQueue {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("SpdkQueue")
                .field("depth", &self.inflight.depth())
                .field("in_flight", &self.inflight.len())
                .field("stats", &self.stats)
                .finish()
        }
    }

    impl SpdkQueue {
        fn new(dev: &SpdkDevice, cfg: &QueueConfig) -> Result<SpdkQueue> {
            let registered = if dev.shared.pcie {
                register(&cfg.buffers)?
            } else {
                Vec::new()
            };
            let depth = u32::try_from(cfg.depth)
                .map_err(|_| Error::Config(format!("queue depth {} too large", cfg.depth)))?;
            // SAFETY: an attached controller; SPDK locks it while
            // allocating.
            let qpair = unsafe { sys::dp_spdk_alloc_io_qpair(dev.shared.ctrlr.as_ptr(), depth) };
            let Some(qpair) = NonNull::new(qpair) else {
                unregister(&registered);
                return Err(Error::Config(format!(
                    "{}: spdk_nvme_ctrlr_alloc_io_qpair failed (out of I/O queues?)",
                    dev.target
                )));
            };
            let reaped = NonNull::from(Box::leak(Box::new(VecDeque::with_capacity(cfg.depth))));
            let ctxs: Box<[SlotCtx]> = (0..depth)
                .map(|id| SlotCtx {
                    reaped: reaped.as_ptr(),
                    id,
                })
                .collect();
            let ctxs = NonNull::from(Box::leak(ctxs));
            let admin_duty = dev
                .shared
                .admin_taken
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok();
            Ok(SpdkQueue {
                shared: dev.shared.clone(),
                qpair,
                geometry: dev.geometry.clone(),
                inflight: InFlight::new(cfg.depth),
                ctxs,
                reaped,
                refused: VecDeque::with_capacity(cfg.depth),
                registered,
                admin_duty,
                next_admin: 0,
                admin_every: crate::time::tsc_hz() / 1000 * ADMIN_POLL_MS,
                stats: QueueStats::default(),
                _pools: cfg.buffers.clone(),
            })
        }

        fn ctx(&self, id: u32) -> *mut c_void {
            self.ctxs
                .as_ptr()
                .cast::<SlotCtx>()
                .wrapping_add(id as usize)
                .cast()
        }

        fn registered(&self, addr: usize, len: usize) -> bool {
            self.registered
                .iter()
                .any(|&(s, e)| addr >= s && addr + len <= e)
        }

        /// Issues the command for slot `id`; SPDK's return code.
        fn issue(&self, kind: OpKind, buf: *mut c_void, lba: u64, blocks: u32, id: u32) -> i32 {
            let (ns, qp, arg) = (self.shared.ns.as_ptr(), self.qpair.as_ptr(), self.ctx(id));
            let cb = Some(complete as unsafe extern "C" fn(*mut c_void, *const sys::spdk_nvme_cpl));
            match kind {
                // `arg` lives until the qpair is freed; `buf` is owned by the
                // in-flight table until the callback ran and `poll` took it.
                // SAFETY: this thread owns the qpair; `arg`, `buf` as above;
                // the geometry check bounded the range and the transfer.
                OpKind::Read => unsafe {
                    sys::spdk_nvme_ns_cmd_read(ns, qp, buf, lba, blocks, cb, arg, 0)
                },
                // SAFETY: as above.
                OpKind::Write => unsafe {
                    sys::spdk_nvme_ns_cmd_write(ns, qp, buf, lba, blocks, cb, arg, 0)
                },
                // SAFETY: as above, without a buffer.
                OpKind::Flush => unsafe { sys::spdk_nvme_ns_cmd_flush(ns, qp, cb, arg) },
                // SAFETY: as above, without a buffer.
                OpKind::WriteZeroes => unsafe {
                    sys::spdk_nvme_ns_cmd_write_zeroes(ns, qp, lba, blocks, cb, arg, 0)
                },
                // SAFETY: as above, without a buffer (SPDK copies the range).
                OpKind::Deallocate => unsafe {
                    sys::dp_spdk_ns_cmd_deallocate(ns, qp, lba, blocks, cb, arg)
                },
            }
        }

        /// Moves reported completions into `out`, up to its room.
        fn collect(&mut self, out: &mut Completions) -> usize {
            let mut n = 0;
            while out.spare() > 0 {
                // SAFETY: no callback runs outside process_completions, so
                // nothing else touches the list now.
                let next = unsafe { (*self.reaped.as_ptr()).pop_front() };
                let Some((id, status)) = next else { break };
                let Some(slot) = self.inflight.take(u64::from(id)) else {
                    self.stats.errors += 1;
                    continue;
                };
                if !status.is_ok() {
                    self.stats.errors += 1;
                }
                let _ = out.push(slot.complete(status));
                n += 1;
            }
            n
        }

        fn admin(&mut self) {
            let now = crate::time::rdtsc();
            if now < self.next_admin {
                return;
            }
            self.next_admin = now + self.admin_every;
            // SAFETY: the attached controller; SPDK locks it for the admin
            // queue.
            let rc = unsafe {
                sys::spdk_nvme_ctrlr_process_admin_completions(self.shared.ctrlr.as_ptr())
            };
            if rc < 0 {
                self.stats.errors += 1;
            }
        }
    }

    impl Queue for SpdkQueue {
        fn submit(&mut self, op: Op) -> std::result::Result<(), SubmitError> {
            if let Err(why) = self.geometry.check(&op) {
                return Err(SubmitError::Invalid { op, why });
            }
            if self.inflight.is_full() {
                return Err(SubmitError::Full(op));
            }
            let bytes = if op.kind.has_data() {
                self.geometry.len(op.blocks) as usize
            } else {
                0
            };
            let buf = op.buf.as_ref().map_or(std::ptr::null_mut(), |b| {
                b.as_ptr().cast_mut().cast::<c_void>()
            });
            if self.shared.pcie && op.kind.has_data() && !self.registered(buf.addr(), bytes) {
                let why = super::super::Invalid::UnregisteredBuffer { addr: buf.addr() };
                return Err(SubmitError::Invalid { op, why });
            }
            let (kind, lba, blocks) = (op.kind, op.lba, op.blocks);
            let id = match self.inflight.insert(Slot::from_op(op, bytes as u32)) {
                Ok(id) => id,
                Err(slot) => return Err(SubmitError::Full(slot.into_op(lba, blocks))),
            };
            let rc = self.issue(kind, buf, lba, blocks, id);
            if rc == 0 {
                self.stats.submitted += 1;
                return Ok(());
            }
            let Some(slot) = self.inflight.take(u64::from(id)) else {
                return Ok(());
            };
            if rc == -libc::ENOMEM {
                // No free request in SPDK's pool: the queue is full.
                return Err(SubmitError::Full(slot.into_op(lba, blocks)));
            }
            // The qpair failed (ENXIO) or refused the command: nothing was
            // sent; the completion says why.
            self.stats.submitted += 1;
            let status = if rc == -libc::ENXIO {
                Status::Transport
            } else {
                Status::Os(-rc)
            };
            self.refused.push_back(slot.complete(status));
            Ok(())
        }

        fn poll(&mut self, out: &mut Completions) -> usize {
            if self.admin_duty {
                self.admin();
            }
            let mut n = 0;
            while out.spare() > 0 {
                let Some(c) = self.refused.pop_front() else {
                    break;
                };
                self.stats.errors += 1;
                let _ = out.push(c);
                n += 1;
            }
            if self.inflight.len() > 0 && out.spare() > 0 {
                let max = u32::try_from(out.spare()).unwrap_or(u32::MAX);
                // SAFETY: this thread owns the qpair; the callbacks touch
                // only the reaped list, to which no reference is live.
                let rc =
                    unsafe { sys::spdk_nvme_qpair_process_completions(self.qpair.as_ptr(), max) };
                if rc < 0 {
                    self.stats.errors += 1;
                }
                n += self.collect(out);
            }
            self.stats.completed += n as u64;
            n
        }

        fn depth(&self) -> usize {
            self.inflight.depth()
        }

        fn in_flight(&self) -> usize {
            self.inflight.len() + self.refused.len()
        }

        fn geometry(&self) -> &Geometry {
            &self.geometry
        }

        fn backend(&self) -> &'static str {
            "spdk"
        }

        fn stats(&self) -> QueueStats {
            self.stats
        }
    }

    impl Drop for SpdkQueue {
        fn drop(&mut self) {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            let mut out = Completions::new();
            while self.inflight.len() > 0 && std::time::Instant::now() < deadline {
                // SAFETY: as in `poll`.
                let rc =
                    unsafe { sys::spdk_nvme_qpair_process_completions(self.qpair.as_ptr(), 0) };
                self.collect(&mut out);
                out.clear();
                if rc < 0 {
                    break;
                }
            }
            // SAFETY: this queue's qpair, freed once; SPDK aborts what is
            // still outstanding, calling back into `reaped` (still live).
            unsafe { sys::spdk_nvme_ctrlr_free_io_qpair(self.qpair.as_ptr()) };
            self.collect(&mut out);
            out.clear();
            if self.inflight.len() > 0 {
                tracing::error!(
                    stuck = self.inflight.len(),
                    "SPDK qpair freed with operations that never completed: leaking their buffers"
                );
                self.inflight.leak_all();
            }
            // SAFETY: leaked in `new`, freed once, after the qpair (no
            // callback can run any more).
            drop(unsafe { Box::from_raw(self.ctxs.as_ptr()) });
            // SAFETY: as above.
            drop(unsafe { Box::from_raw(self.reaped.as_ptr()) });
            unregister(&self.registered);
            if self.admin_duty {
                self.shared.admin_taken.store(false, Ordering::Release);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split_target;

    #[test]
    fn targets_split() {
        let (t, ns) = split_target("0000:03:00.0").expect("a PCI address");
        assert_eq!(t, "trtype:PCIe traddr:0000:03:00.0");
        assert_eq!(ns, None);
        let (t, ns) = split_target("trtype:TCP traddr:127.0.0.1 trsvcid:4420 ns:2").expect("ok");
        assert_eq!(t, "trtype:TCP traddr:127.0.0.1 trsvcid:4420");
        assert_eq!(ns, Some(2));
        assert!(split_target("trtype:TCP ns:x").is_err());
    }
}
