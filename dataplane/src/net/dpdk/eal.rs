//! The process's one EAL: initialised once, on the first port open or an
//! explicit [`init`](super::init), from the configuration given to
//! [`configure`](super::configure) (or the defaults); torn down by
//! [`shutdown`](super::shutdown).
//!
//! DPDK cannot initialise its EAL twice in one process, nor again after
//! `rte_eal_cleanup`, so a failure is kept: every later call gets the same
//! error, and the selector falls back to the next backend with it.
//!
//! # Lcores
//!
//! The framework's lcores are threads it launches itself (`LcoreGroup`),
//! not EAL's. EAL is given one lcore, the main one (`--lcores 0@<cpu>`),
//! and every thread that touches a DPDK queue registers itself with
//! `rte_thread_register()` the first time it does (one thread-local check
//! per burst afterwards). Registration gives the thread an EAL lcore id of
//! its own, which is what `rte_mempool`'s per-lcore caches are indexed by:
//! without it `rte_lcore_id()` is `LCORE_ID_ANY` and every mbuf
//! allocation and free would go to the pool's shared ring. The id is given
//! back when the thread exits. Mapping the plan's lcores onto EAL lcores
//! with `--lcores` instead would make EAL start idle threads of its own
//! for each of them, and our threads still would not be those lcores.
//! `rte_thread_register` refuses when DPDK multi-process is in use; the EAL
//! always runs `--in-memory`, which has none.

use super::config::{EalConfig, Resolved};
use super::status::{EalInfo, EalState};
use crate::require::{self, Capability, Probe};
use crate::{Error, Result};
use dpdk_sys as sys;
use hugepages::mbuf::{ForeignMbufOps, MbufHeader};
use std::cell::Cell;
use std::ffi::{CStr, CString, c_char};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

struct Slot {
    config: Option<EalConfig>,
    state: EalState,
}

static EAL: Mutex<Slot> = Mutex::new(Slot {
    config: None,
    state: EalState::NotInitialised,
});

/// Set once the EAL is torn down: threads exiting later must not call
/// into it to give back their lcore.
static SHUT_DOWN: AtomicBool = AtomicBool::new(false);

fn lock() -> MutexGuard<'static, Slot> {
    // A panic while holding the lock cannot leave the slot half-written
    // (every write is one assignment), so a poisoned lock is still good.
    EAL.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// See [`super::configure`].
pub(super) fn configure(config: EalConfig) -> Result<()> {
    let mut slot = lock();
    match &slot.state {
        EalState::NotInitialised => {
            slot.config = Some(config);
            Ok(())
        }
        EalState::Ready(info) => {
            if slot.config.as_ref() == Some(&config) {
                Ok(())
            } else {
                Err(Error::Config(format!(
                    "the DPDK EAL is already running (started with {}); configure it before the first port opens",
                    info.args.join(" ")
                )))
            }
        }
        EalState::Failed(why) | EalState::Unavailable(why) => Err(failed(why)),
        EalState::ShutDown => Err(shut_down()),
    }
}

/// See [`super::state`].
pub(super) fn state() -> EalState {
    lock().state.clone()
}

/// The arguments the EAL would start with now, when it has not started.
pub(super) fn pending_args() -> Option<Vec<String>> {
    let slot = lock();
    match slot.state {
        EalState::NotInitialised => Some(slot.config.clone().unwrap_or_default().args()),
        _ => None,
    }
}

fn failed(why: &str) -> Error {
    Error::Config(format!("the DPDK EAL failed to start: {why}"))
}

fn shut_down() -> Error {
    Error::Stopped("the DPDK EAL (shut down; DPDK cannot start it again in this process)".into())
}

/// The vdevs the running EAL was started with (`--vdev` values): their
/// arguments are reused when such a port is opened again after a close.
pub(super) fn configured_vdevs() -> Vec<String> {
    match &lock().state {
        EalState::Ready(info) => info
            .args
            .windows(2)
            .filter(|w| w[0] == "--vdev")
            .map(|w| w[1].clone())
            .collect(),
        _ => Vec::new(),
    }
}

/// See [`super::init`].
pub(super) fn init() -> Result<Arc<EalInfo>> {
    let mut slot = lock();
    match &slot.state {
        EalState::Ready(info) => return Ok(info.clone()),
        EalState::Failed(why) | EalState::Unavailable(why) => return Err(failed(why)),
        EalState::ShutDown => return Err(shut_down()),
        EalState::NotInitialised => {}
    }
    let config = slot.config.clone().unwrap_or_default();
    let resolved = config.resolve();
    if resolved.fallback {
        // Memory::Auto found too few hugepages.
        require::check(
            Capability::Hugepages,
            &Probe::unavailable(format!("DPDK: {}", resolved.memory_note)),
        )?;
    }
    match start(&resolved) {
        Ok(info) => {
            let info = Arc::new(info);
            tracing::info!(
                args = %info.args.join(" "),
                iova = info.iova,
                hugepages = info.hugepages,
                "DPDK EAL started"
            );
            slot.state = EalState::Ready(info.clone());
            slot.config = Some(config);
            Ok(info)
        }
        Err(why) => {
            tracing::warn!("DPDK EAL failed to start: {why}");
            slot.state = EalState::Failed(why.clone());
            Err(failed(&why))
        }
    }
}

/// `rte_eal_init` with `resolved`'s arguments; the calling thread's CPU
/// affinity is restored afterwards (EAL pins the thread that initialises
/// it to the main lcore's CPU).
fn start(resolved: &Resolved) -> std::result::Result<EalInfo, String> {
    use nix::sched::{sched_getaffinity, sched_setaffinity};
    use nix::unistd::Pid;

    let args = &resolved.args;
    let _span = tracing::info_span!("eal_init", args = args.join(" ")).entered();
    let mut owned = Vec::with_capacity(args.len());
    for a in args {
        owned.push(CString::new(a.as_str()).map_err(|_| format!("argument {a:?} holds a NUL"))?);
    }
    // EAL keeps pointers into argv (getopt permutes it; some options are
    // kept as given), so the strings live as long as the process, as a C
    // program's argv does.
    let owned: &'static [CString] = Box::leak(owned.into_boxed_slice());
    let mut argv: Vec<*mut c_char> = owned.iter().map(|s| s.as_ptr().cast_mut()).collect();
    argv.push(std::ptr::null_mut());
    let argc = i32::try_from(args.len()).map_err(|_| "too many EAL arguments".to_owned())?;

    let affinity = sched_getaffinity(Pid::from_raw(0)).ok();
    // SAFETY: argv holds argc NUL-terminated strings that live forever,
    // then a null pointer, as rte_eal_init expects; the EAL lock
    // serialises calls.
    let rc = unsafe { sys::rte_eal_init(argc, argv.as_mut_ptr()) };
    if rc < 0 {
        let errno = rte_errno();
        remove_runtime_dir(runtime_dir());
        return Err(format!(
            "rte_eal_init({}): {} (rte_errno {errno}); EAL's log above says more",
            args[1..].join(" "),
            strerror(errno)
        ));
    }
    if let Some(set) = affinity
        && let Err(e) = sched_setaffinity(Pid::from_raw(0), &set)
    {
        tracing::warn!("could not restore the CPU affinity after rte_eal_init: {e}");
    }
    hugepages::mbuf::register_foreign_ops(&FOREIGN_OPS)
        .map_err(|e| format!("registering DPDK's mbuf free hooks: {e}"))?;

    // SAFETY: the EAL is initialised; these only read its configuration.
    let iova = unsafe { sys::rte_eal_iova_mode() };
    // SAFETY: as above.
    let has_huge = unsafe { sys::rte_eal_has_hugepages() } != 0;
    // SAFETY: takes no arguments, returns a static string.
    let version = unsafe { sys::rte_version() };
    // SAFETY: rte_version's string is static and NUL-terminated.
    let version = unsafe { CStr::from_ptr(version) };
    Ok(EalInfo {
        args: args.clone(),
        hugepages: has_huge,
        memory: resolved.memory_note.clone(),
        iova: if iova == sys::RTE_IOVA_PA { "PA" } else { "VA" },
        version: version.to_string_lossy().into_owned(),
        link: sys::LINK,
    })
}

/// Marks the EAL as torn down, after `rte_eal_cleanup`. The caller holds
/// nothing of DPDK's any more.
pub(super) fn cleanup() -> Result<()> {
    let mut slot = lock();
    match &slot.state {
        EalState::Ready(_) => {}
        EalState::NotInitialised | EalState::ShutDown => return Ok(()),
        EalState::Failed(why) | EalState::Unavailable(why) => return Err(failed(why)),
    }
    settle_interrupts();
    SHUT_DOWN.store(true, Ordering::Release);
    let runtime_dir = runtime_dir();
    // SAFETY: the EAL is running, and the caller has closed every port
    // and freed every pool it could (super::shutdown).
    let rc = unsafe { sys::rte_eal_cleanup() };
    slot.state = EalState::ShutDown;
    remove_runtime_dir(runtime_dir);
    if rc < 0 {
        let errno = rte_errno();
        return Err(Error::io(
            "rte_eal_cleanup",
            std::io::Error::other(format!("{} (rte_errno {errno})", strerror(errno))),
        ));
    }
    Ok(())
}

/// How long [`settle_interrupts`] waits for EAL's interrupt thread.
const SETTLE_LIMIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Waits until EAL's interrupt thread has run the callbacks of every event
/// that was ready when it was called, at most [`SETTLE_LIMIT`].
///
/// A driver's control channel is serviced on that thread: closing one end
/// of a memif pair makes the other's callback read a disconnect message,
/// and a port closed or an EAL cleaned up (its memory unmapped) while that
/// callback runs crashes inside DPDK (a SIGSEGV in `librte_net_memif`,
/// seen under load). The port close and the shutdown call this first.
///
/// The barrier is an interrupt source of our own, an eventfd made ready
/// here: the thread takes ready sources in the order they became ready
/// (and a registration change, which makes it re-read its source list,
/// before them), so its callback runs after those of the events ready
/// before it. The source stays registered for the life of the process:
/// unregistering would make the thread re-read its list later, perhaps
/// while `rte_eal_cleanup` unmaps the handles of other sources (seen:
/// a SIGSEGV in `rte_intr_fd_get`); its handle is private, in the process
/// heap, which the cleanup leaves alone.
pub(super) fn settle_interrupts() {
    static BARRIER: Mutex<Option<Option<&'static Barrier>>> = Mutex::new(None);
    let mut slot = BARRIER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(barrier) = *slot.get_or_insert_with(Barrier::register) {
        barrier.wait();
    }
}

/// [`settle_interrupts`]' eventfd and the count of its callback's runs.
struct Barrier {
    fd: i32,
    passes: std::sync::atomic::AtomicU64,
}

impl Barrier {
    /// Makes the eventfd and registers it as an interrupt source; `None`
    /// (logged) where EAL refuses.
    fn register() -> Option<&'static Barrier> {
        // SAFETY: eventfd takes no pointers.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            tracing::debug!("eventfd: {}", std::io::Error::last_os_error());
            return None;
        }
        let barrier: &'static Barrier = Box::leak(Box::new(Barrier {
            fd,
            passes: std::sync::atomic::AtomicU64::new(0),
        }));
        // SAFETY: a running EAL (the callers hold a port or the EAL); a
        // private handle lives in the process heap.
        let handle = unsafe { sys::rte_intr_instance_alloc(sys::RTE_INTR_INSTANCE_F_PRIVATE) };
        if handle.is_null() {
            tracing::debug!("rte_intr_instance_alloc: {}", strerror(rte_errno()));
            return None;
        }
        // SAFETY: a fresh handle of ours.
        let rc = unsafe { sys::rte_intr_type_set(handle, sys::RTE_INTR_HANDLE_EXT) };
        // SAFETY: as above; the eventfd is never closed.
        let rc = rc.min(unsafe { sys::rte_intr_fd_set(handle, fd) });
        let arg = std::ptr::from_ref(barrier).cast_mut().cast();
        if rc == 0 {
            // SAFETY: the handle has its fd and type; `arg` is 'static.
            let rc = unsafe { sys::rte_intr_callback_register(handle, Some(Self::ran), arg) };
            if rc == 0 {
                // The handle stays allocated with the source.
                return Some(barrier);
            }
            tracing::debug!("rte_intr_callback_register: {}", strerror(-rc));
        }
        // SAFETY: the handle allocated above, not a source.
        unsafe { sys::rte_intr_instance_free(handle) };
        None
    }

    /// Makes the eventfd ready and waits for the callback to have run
    /// once more. The caller holds the lock in [`settle_interrupts`].
    fn wait(&self) {
        let before = self.passes.load(Ordering::Acquire);
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes the 8 bytes of `one` to the eventfd.
        let _ = unsafe { libc::write(self.fd, one.as_ptr().cast(), 8) };
        let deadline = std::time::Instant::now() + SETTLE_LIMIT;
        while self.passes.load(Ordering::Acquire) == before {
            if std::time::Instant::now() >= deadline {
                tracing::warn!("EAL's interrupt thread did not answer in {SETTLE_LIMIT:?}");
                return;
            }
            std::thread::sleep(std::time::Duration::from_micros(50));
        }
    }

    /// The callback, on the interrupt thread.
    extern "C" fn ran(arg: *mut std::ffi::c_void) {
        // SAFETY: `arg` is the leaked, 'static Barrier.
        let barrier = unsafe { &*arg.cast::<Barrier>() };
        let mut count = [0u8; 8];
        // SAFETY: reads 8 bytes into `count` from the non-blocking eventfd,
        // so that the level-triggered source goes quiet.
        let _ = unsafe { libc::read(barrier.fd, count.as_mut_ptr().cast(), 8) };
        barrier.passes.fetch_add(1, Ordering::Release);
    }
}

/// EAL's runtime directory (`/var/run/dpdk/<prefix>` as root), where it
/// has made one.
fn runtime_dir() -> Option<std::path::PathBuf> {
    // SAFETY: takes no arguments; returns EAL's static path buffer.
    let dir = unsafe { sys::rte_eal_get_runtime_dir() };
    // SAFETY: the buffer is static and NUL-terminated (empty until EAL has
    // made the directory).
    let dir = unsafe { CStr::from_ptr(dir) };
    let dir = dir.to_str().ok()?;
    (!dir.is_empty()).then(|| std::path::PathBuf::from(dir))
}

/// Removes EAL's runtime directory if it is empty: with `--in-memory` or
/// `--no-shconf` EAL leaves nothing in it, but neither `rte_eal_cleanup`
/// nor a failed `rte_eal_init` removes it, and every process has its own.
fn remove_runtime_dir(dir: Option<std::path::PathBuf>) {
    if let Some(dir) = dir
        && let Err(e) = std::fs::remove_dir(&dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::debug!("left EAL's runtime directory {}: {e}", dir.display());
    }
}

/// `rte_errno` of the calling thread.
pub(super) fn rte_errno() -> i32 {
    // SAFETY: reads a thread-local integer.
    unsafe { sys::dp_errno() }
}

/// DPDK's text for an errno value (`rte_strerror`: its own codes too).
pub(super) fn strerror(errno: i32) -> String {
    // SAFETY: any errno value may be asked about.
    let text = unsafe { sys::rte_strerror(errno) };
    // SAFETY: rte_strerror's answer is a NUL-terminated string in static or
    // thread-local storage, valid until the next call on this thread; it
    // is copied at once.
    let text = unsafe { CStr::from_ptr(text) };
    text.to_string_lossy().into_owned()
}

/// A DPDK call that returned `rc < 0` (`-errno`), as an [`Error`].
pub(super) fn call_error(what: impl Into<String>, rc: i32) -> Error {
    let errno = -rc;
    Error::io(
        what,
        std::io::Error::other(format!("{} (errno {errno})", strerror(errno))),
    )
}

// ---- mbuf free hooks ---------------------------------------------------------

static FOREIGN_OPS: ForeignMbufOps = ForeignMbufOps {
    free: free_one,
    free_bulk,
};

/// # Safety
/// `m` is an `rte_mbuf` the caller owns and never touches again.
unsafe fn free_one(m: NonNull<MbufHeader>) {
    // SAFETY: the caller's contract; rte_pktmbuf_free is thread-safe (its
    // pool's per-lcore cache is the calling thread's own, or none).
    unsafe { sys::dp_pktmbuf_free(m.as_ptr().cast()) }
}

/// # Safety
/// Every element is an `rte_mbuf` the caller owns and never touches again.
unsafe fn free_bulk(ms: &[NonNull<MbufHeader>]) {
    // The slice is at most Mbuf::free_bulk's batch (64).
    let n = ms.len() as u32;
    // SAFETY: the caller's contract; NonNull<MbufHeader> has the layout of
    // `struct rte_mbuf *`, and rte_pktmbuf_free_bulk only reads the array
    // (its parameter is not const-qualified, nothing more).
    unsafe { sys::rte_pktmbuf_free_bulk(ms.as_ptr().cast_mut().cast(), n) }
}

// ---- thread registration -------------------------------------------------------

const UNKNOWN: u8 = 0;
/// An EAL thread (the one that initialised it): has its lcore id.
const EAL_THREAD: u8 = 1;
/// Registered by us; unregistered when the thread exits.
const REGISTERED: u8 = 2;
/// Registration refused (all RTE_MAX_LCORE ids taken): no mempool cache.
const UNREGISTERED: u8 = 3;

std::thread_local! {
    static LCORE: Cell<u8> = const { Cell::new(UNKNOWN) };
    static RELEASE: Release = const { Release };
}

/// Gives the thread's EAL lcore id back when the thread exits.
struct Release;

impl Drop for Release {
    fn drop(&mut self) {
        let registered = LCORE.try_with(Cell::get) == Ok(REGISTERED);
        // Acquire: pairs with the Release store in `cleanup`; after
        // rte_eal_cleanup the lcore table is not to be touched.
        if registered && !SHUT_DOWN.load(Ordering::Acquire) {
            // SAFETY: this thread registered itself and is exiting; it
            // holds no DPDK lcore state any more.
            unsafe { sys::rte_thread_unregister() };
        }
    }
}

/// Makes sure the calling thread has an EAL lcore id (see the module
/// docs); one thread-local load once it has.
#[inline(always)]
pub(super) fn ensure_lcore() {
    if LCORE.with(Cell::get) == UNKNOWN {
        register_thread();
    }
}

#[cold]
#[inline(never)]
fn register_thread() {
    // SAFETY: reads a thread-local integer.
    let id = unsafe { sys::dp_lcore_id() };
    if id != sys::LCORE_ID_ANY {
        LCORE.with(|l| l.set(EAL_THREAD));
        return;
    }
    // SAFETY: the EAL is initialised (a queue exists); the call sets this
    // thread's lcore id and cpuset.
    let rc = unsafe { sys::rte_thread_register() };
    if rc == 0 {
        LCORE.with(|l| l.set(REGISTERED));
        // Touching it registers its destructor for this thread.
        RELEASE.with(|_| {});
    } else {
        LCORE.with(|l| l.set(UNREGISTERED));
        static WARNED: AtomicBool = AtomicBool::new(false);
        // Relaxed: de-duplicates a log line.
        if !WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "a thread could not register as a DPDK lcore ({}): its mbuf allocations bypass the mempool cache",
                strerror(rte_errno())
            );
        }
    }
}

/// The calling thread's EAL lcore id, registering it first.
pub(super) fn lcore_id() -> Option<u32> {
    ensure_lcore();
    // SAFETY: reads a thread-local integer.
    let id = unsafe { sys::dp_lcore_id() };
    (id != sys::LCORE_ID_ANY).then_some(id)
}
