//! One lcore's I/O qpair: submissions, completions by callback, and the
//! admin-queue duty of one queue per controller.

use super::*;

/// The callback argument of one slot: where to report, and which slot.
struct SlotCtx {
    reaped: *mut VecDeque<(u32, Status)>,
    id: u32,
}

/// `SPDK_NVME_IO_FLAGS_FORCE_UNIT_ACCESS` (include/spdk/nvme.h): the
/// write's FUA bit, CDW12 bit 30.
const IO_FLAGS_FORCE_UNIT_ACCESS: u32 = 1 << 30;

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
pub(super) struct SpdkQueue {
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
    pub(super) fn new(dev: &SpdkDevice, cfg: &QueueConfig) -> Result<SpdkQueue> {
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
    fn issue(&self, op: (OpKind, bool), buf: *mut c_void, lba: u64, blocks: u32, id: u32) -> i32 {
        let (ns, qp, arg) = (self.shared.ns.as_ptr(), self.qpair.as_ptr(), self.ctx(id));
        let (kind, fua) = op;
        let io_flags = if fua { IO_FLAGS_FORCE_UNIT_ACCESS } else { 0 };
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
                sys::spdk_nvme_ns_cmd_write(ns, qp, buf, lba, blocks, cb, arg, io_flags)
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
        let rc =
            unsafe { sys::spdk_nvme_ctrlr_process_admin_completions(self.shared.ctrlr.as_ptr()) };
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
        let (kind, lba, blocks) = ((op.kind, op.fua), op.lba, op.blocks);
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
            let rc = unsafe { sys::spdk_nvme_qpair_process_completions(self.qpair.as_ptr(), max) };
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
            let rc = unsafe { sys::spdk_nvme_qpair_process_completions(self.qpair.as_ptr(), 0) };
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
