//! One lcore's queue: submissions into the ring, completions out, and a
//! drop that waits for what is in flight.

use super::ring::Ring;
use super::*;

/// One lcore's io_uring queue.
pub(crate) struct UringQueue {
    /// The ring for reads and writes (IOPOLL when the device has it).
    main: Ring,
    /// With IOPOLL: the interrupt-driven ring for flush, write-zeroes and
    /// deallocate.
    aux: Option<Ring>,
    geometry: Geometry,
    inflight: InFlight,
    /// Registered buffers: (start, end) address of each, by index.
    fixed: Vec<(usize, usize)>,
    iopoll: bool,
    sqpoll: bool,
    /// The kernel takes a timeout on `io_uring_enter` (`wait` can sleep).
    ext_arg: bool,
    enabled: bool,
    failed: Option<std::io::Error>,
    stats: QueueStats,
    // Dropped after the rings: the registered memory and the registered file.
    _pools: Vec<Mempool>,
    _file: Arc<OpenFile>,
}

impl std::fmt::Debug for UringQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringQueue")
            .field("depth", &self.inflight.depth())
            .field("in_flight", &self.inflight.len())
            .field("iopoll", &self.iopoll)
            .field("sqpoll", &self.sqpoll)
            .field("fixed_buffers", &self.fixed.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl UringQueue {
    pub(super) fn new(dev: &UringDevice, cfg: &QueueConfig) -> Result<UringQueue> {
        let depth = cfg.depth;
        let entries = u32::try_from(depth.next_power_of_two())
            .map_err(|_| Error::Config(format!("queue depth {depth} is too large")))?;
        let iovecs = fixed_buffers(
            cfg.buffers.iter().flat_map(|p| p.regions()),
            MAX_FIXED_BUFFER,
        );
        let mut fixed: Vec<(usize, usize)> = iovecs
            .iter()
            .map(|v| (v.iov_base.addr(), v.iov_base.addr() + v.iov_len))
            .collect();
        let (main, mode, registered) =
            Ring::new(entries, dev.iopoll, dev.sqpoll, &dev.file, &iovecs)?;
        if !registered {
            fixed.clear();
        }
        let ext_arg = main.ring.params().is_feature_ext_arg();
        let aux = if dev.iopoll {
            Some(Ring::new(entries, false, None, &dev.file, &[])?.0)
        } else {
            None
        };
        tracing::debug!(
            target = %dev.target,
            depth,
            fixed_buffers = fixed.len(),
            "io_uring queue: {}",
            mode.describe()
        );
        Ok(UringQueue {
            main,
            aux,
            geometry: dev.file.geometry.clone(),
            inflight: InFlight::new(depth),
            fixed,
            iopoll: dev.iopoll,
            sqpoll: dev.sqpoll.is_some(),
            ext_arg,
            enabled: false,
            failed: None,
            stats: QueueStats::default(),
            _pools: cfg.buffers.clone(),
            _file: dev.file.clone(),
        })
    }

    /// Enables the rings on the first use, from the lcore that uses them.
    #[cold]
    pub(super) fn enable(&mut self) {
        self.enabled = true;
        let sqpoll = self.sqpoll;
        let r = self
            .main
            .enable(sqpoll)
            .and_then(|()| self.aux.as_mut().map_or(Ok(()), |a| a.enable(false)));
        if let Err(e) = r {
            tracing::error!("io_uring: cannot enable the queue's ring: {e}");
            self.failed = Some(e);
        }
    }

    /// The fixed buffer holding `addr`.
    #[inline]
    pub(super) fn fixed_index(&self, addr: usize) -> Option<u16> {
        self.fixed
            .iter()
            .position(|&(start, end)| addr >= start && addr < end)
            .and_then(|i| u16::try_from(i).ok())
    }

    pub(super) fn entry(&self, op: &Op) -> squeue::Entry {
        let offset = self.geometry.offset(op.lba);
        let len = self.geometry.len(op.blocks);
        match op.kind {
            OpKind::Read | OpKind::Write => {
                // The check made sure of the buffer and that `len` fits.
                let ptr = op
                    .buf
                    .as_ref()
                    .map_or(std::ptr::null_mut(), |b| b.as_ptr().cast_mut());
                let len = len as u32;
                let read = op.kind == OpKind::Read;
                match (self.fixed_index(ptr.addr()), read) {
                    (Some(i), true) => opcode::ReadFixed::new(FILE, ptr, len, i)
                        .offset(offset)
                        .build(),
                    (Some(i), false) => opcode::WriteFixed::new(FILE, ptr, len, i)
                        .offset(offset)
                        .rw_flags(rw_flags(op))
                        .build(),
                    (None, true) => opcode::Read::new(FILE, ptr, len).offset(offset).build(),
                    (None, false) => opcode::Write::new(FILE, ptr, len)
                        .offset(offset)
                        .rw_flags(rw_flags(op))
                        .build(),
                }
            }
            OpKind::Flush => opcode::Fsync::new(FILE)
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
            OpKind::WriteZeroes => opcode::Fallocate::new(FILE, len)
                .offset(offset)
                .mode(libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE)
                .build(),
            OpKind::Deallocate => opcode::Fallocate::new(FILE, len)
                .offset(offset)
                .mode(libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE)
                .build(),
        }
    }

    /// Reaps up to `out`'s room from one ring.
    #[inline]
    pub(super) fn reap(
        ring: &mut Ring,
        inflight: &mut InFlight,
        stats: &mut QueueStats,
        out: &mut Completions,
    ) -> usize {
        let mut n = 0;
        let room = out.spare();
        if room == 0 {
            return 0;
        }
        let mut cq = ring.ring.completion();
        for cqe in cq.by_ref().take(room) {
            let Some(slot) = inflight.take(cqe.user_data()) else {
                stats.errors += 1;
                continue;
            };
            let c = slot.complete_os(cqe.result());
            if !c.status.is_ok() {
                stats.errors += 1;
            }
            // Room was checked: `take(room)` never overfills.
            let _ = out.push(c);
            n += 1;
        }
        stats.completed += n as u64;
        n
    }

    pub(super) fn kick(&mut self) {
        let in_flight = self.inflight.len() > 0;
        let must_poll = self.iopoll && in_flight;
        match self.main.kick(must_poll, self.sqpoll) {
            Ok(entered) => self.stats.syscalls += u64::from(entered),
            Err(e) => self.enter_failed(e),
        }
        if let Some(aux) = self.aux.as_mut() {
            match aux.kick(false, false) {
                Ok(entered) => self.stats.syscalls += u64::from(entered),
                Err(e) => self.enter_failed(e),
            }
        }
    }

    #[cold]
    pub(super) fn enter_failed(&mut self, e: std::io::Error) {
        // EAGAIN/EBUSY: the kernel is short of room for completions; the
        // next pass retries. Anything else leaves the entries unconsumed.
        if matches!(
            e.raw_os_error(),
            Some(libc::EAGAIN | libc::EBUSY | libc::EINTR)
        ) {
            return;
        }
        self.stats.errors += 1;
        if self.failed.is_none() {
            tracing::error!(
                "io_uring_enter failed: {e}; the queue's pending operations cannot complete"
            );
            self.failed = Some(e);
        }
    }
}

impl Queue for UringQueue {
    #[inline]
    fn submit(&mut self, op: Op) -> Result<(), SubmitError> {
        if let Err(why) = self.geometry.check(&op) {
            return Err(SubmitError::Invalid { op, why });
        }
        if self.inflight.is_full() {
            return Err(SubmitError::Full(op));
        }
        if !self.enabled {
            self.enable();
        }
        let entry = self.entry(&op);
        let aux = self.aux.is_some() && !op.kind.has_data();
        let bytes = if op.kind.has_data() {
            self.geometry.len(op.blocks) as u32
        } else {
            0
        };
        let (lba, blocks) = (op.lba, op.blocks);
        let id = match self.inflight.insert(Slot::from_op(op, bytes)) {
            Ok(id) => id,
            Err(slot) => return Err(SubmitError::Full(slot.into_op(lba, blocks))),
        };
        let entry = entry.user_data(u64::from(id));
        let ring = match (&mut self.aux, aux) {
            (Some(r), true) => r,
            _ => &mut self.main,
        };
        // `Drop` reaps every completion, or leaks the buffer, before the
        // in-flight table goes.
        // SAFETY: slot `id`'s buffer is the table's until the completion for
        // `id` is reaped; fixed file 0 stays open as long as the ring.
        let pushed = unsafe { ring.ring.submission().push(&entry) };
        if pushed.is_err() {
            // The SQ holds at least `depth` entries and at most `depth` are
            // in flight, so this is never hit; hand the operation back.
            return match self.inflight.take(u64::from(id)) {
                Some(slot) => Err(SubmitError::Full(slot.into_op(lba, blocks))),
                None => Ok(()),
            };
        }
        ring.unsubmitted += 1;
        self.stats.submitted += 1;
        Ok(())
    }

    #[inline]
    fn poll(&mut self, out: &mut Completions) -> usize {
        if !self.enabled {
            self.enable();
        }
        if self.inflight.len() == 0 {
            return 0;
        }
        self.kick();
        let mut n = Self::reap(&mut self.main, &mut self.inflight, &mut self.stats, out);
        if let Some(aux) = self.aux.as_mut() {
            n += Self::reap(aux, &mut self.inflight, &mut self.stats, out);
        }
        n
    }

    fn wait(&mut self, out: &mut Completions, timeout: Duration) -> usize {
        if !self.enabled {
            self.enable();
        }
        // IOPOLL and SQPOLL rings poll already; an old kernel cannot bound
        // the sleep.
        if self.inflight.len() == 0
            || self.aux.is_some()
            || self.sqpoll
            || (!self.ext_arg && timeout != Duration::MAX)
            || self.failed.is_some()
            || !self.main.ring.completion().is_empty()
        {
            return self.poll(out);
        }
        match self.main.wait(timeout) {
            Ok(enters) => self.stats.syscalls += enters,
            Err(e) => self.enter_failed(e),
        }
        Self::reap(&mut self.main, &mut self.inflight, &mut self.stats, out)
    }

    fn depth(&self) -> usize {
        self.inflight.depth()
    }

    fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    fn backend(&self) -> &'static str {
        "io_uring"
    }

    fn stats(&self) -> QueueStats {
        self.stats
    }
}

impl Drop for UringQueue {
    fn drop(&mut self) {
        if self.inflight.len() == 0 || !self.enabled {
            // Nothing in flight, or a ring that was never enabled and so
            // never handed anything to the kernel.
            return;
        }
        let deadline = Instant::now() + DROP_WAIT;
        let mut out = Completions::new();
        while self.inflight.len() > 0 && self.failed.is_none() && Instant::now() < deadline {
            self.kick();
            // Wait for one completion on the ring that has work, without
            // spinning: this is the control path.
            if self.aux.is_none() {
                if let Err(e) = self.main.ring.submitter().submit_and_wait(1) {
                    self.enter_failed(e);
                }
            } else {
                std::thread::sleep(Duration::from_micros(50));
            }
            Self::reap(
                &mut self.main,
                &mut self.inflight,
                &mut self.stats,
                &mut out,
            );
            if let Some(aux) = self.aux.as_mut() {
                Self::reap(aux, &mut self.inflight, &mut self.stats, &mut out);
            }
            out.clear();
        }
        let stuck = self.inflight.len();
        if stuck > 0 {
            // The kernel may still write into these buffers: never return
            // them to their pool.
            tracing::error!(
                stuck,
                "io_uring queue dropped with operations that did not complete: leaking their buffers"
            );
            self.inflight.leak_all();
        }
    }
}

/// A write's `RWF_*` flags: `RWF_DSYNC` for one durable on completion
/// (the kernel sets FUA on the device's write, or flushes after it).
fn rw_flags(op: &Op) -> i32 {
    if op.fua { libc::RWF_DSYNC } else { 0 }
}
