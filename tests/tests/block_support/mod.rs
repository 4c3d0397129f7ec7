//! Shared by the `block_*` tests: targets (a file under the build
//! directory, a loop device over one, a RAM disk), patterned blocks with a
//! checksum, and a driver that runs operations to completion.
#![allow(dead_code)] // each test file uses a different part

use dataplane::block::{
    self, BackendKind, Completion, Completions, Device, DeviceConfig, Op, Queue, op,
};
use dataplane::require::Capability;
use dataplane_tests::available_or_skip;
use hugepages::mempool::Mempool;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A directory under the build directory (O_DIRECT works there, unlike in
/// /tmp when that is tmpfs).
pub fn scratch_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("block");
    std::fs::create_dir_all(&d).expect("creating the scratch directory");
    d
}

/// A scratch file path unique to this process and `name`.
pub fn scratch_file(name: &str) -> PathBuf {
    scratch_dir().join(format!("{name}-{}", std::process::id()))
}

/// Removes the file on drop.
pub struct TempFile(pub PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A loop device over a file, detached (and the file removed) on drop, on
/// every path out of a test, panics included.
pub struct LoopDev {
    pub dev: String,
    pub file: TempFile,
}

impl LoopDev {
    /// [`LoopDev::create`], or `None` after [`available_or_skip`] for the
    /// `loop_device` capability (a failure when `DATAPLANE_REQUIRE` names
    /// it).
    pub fn create_or_skip(name: &str, bytes: u64) -> Option<LoopDev> {
        let probe = dataplane::topology::loop_device_probe();
        if !available_or_skip(Capability::LoopDevice, probe.available, &probe.reason) {
            return None;
        }
        match LoopDev::create(name, bytes) {
            Ok(l) => Some(l),
            Err(why) => {
                available_or_skip(Capability::LoopDevice, false, &why);
                None
            }
        }
    }

    /// `losetup --find --show --direct-io=on` over a new file of `bytes`;
    /// `Err` with the reason when this process may not (not root, no
    /// losetup, no loop driver).
    pub fn create(name: &str, bytes: u64) -> Result<LoopDev, String> {
        if !nix_is_root() {
            return Err("creating a loop device needs root".into());
        }
        let file = TempFile(scratch_file(name));
        let f =
            std::fs::File::create(&file.0).map_err(|e| format!("creating {:?}: {e}", file.0))?;
        f.set_len(bytes)
            .map_err(|e| format!("sizing {:?}: {e}", file.0))?;
        drop(f);
        let out = Command::new("losetup")
            .args(["--find", "--show", "--direct-io=on"])
            .arg(&file.0)
            .output()
            .map_err(|e| format!("running losetup: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "losetup failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !dev.starts_with("/dev/loop") {
            return Err(format!("losetup printed {dev:?}"));
        }
        Ok(LoopDev { dev, file })
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

fn nix_is_root() -> bool {
    // The effective uid from procfs: the tests crate has no libc.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// A block backend by name.
pub fn kind(name: &str) -> BackendKind {
    name.parse().expect("a block backend of that name")
}

/// The probe of a block backend.
pub fn probe(name: &str) -> dataplane::backend::Probe {
    let name = kind(name).name();
    block::probes()
        .into_iter()
        .find(|p| p.backend == name)
        .map(|p| p.probe)
        .expect("a block backend of that name")
}

/// Whether a test over `backend` should run, through [`available_or_skip`]
/// for the backend's capability (a failure under `DATAPLANE_REQUIRE`); a
/// backend with no capability (psync, the RAM disk) runs wherever its
/// probe passes, and a failed probe of one is a failure.
pub fn backend_or_skip(backend: &str) -> bool {
    let p = probe(backend);
    match dataplane::backend::Kind::capability(kind(backend)) {
        Some(cap) => available_or_skip(cap, p.available, &p.reason),
        None => {
            assert!(p.available, "{backend} cannot run: {}", p.reason);
            true
        }
    }
}

/// The devices every end-to-end test runs on: (description, device). A
/// file under the build directory for io_uring and psync, a loop device
/// over one when we may create it, and a RAM disk.
pub struct Targets {
    pub devices: Vec<(String, Arc<dyn Device>)>,
    _loop: Option<LoopDev>,
    _files: Vec<TempFile>,
}

pub fn targets(name: &str, bytes: u64) -> Targets {
    let mut devices = Vec::new();
    let mut files = Vec::new();
    let file = TempFile(scratch_file(name));
    let lo = LoopDev::create_or_skip(&format!("{name}-loop"), bytes);
    for backend in ["io_uring", "psync"] {
        if !backend_or_skip(backend) {
            continue;
        }
        let cfg = DeviceConfig::new(file.0.to_string_lossy())
            .backend(kind(backend))
            .create_size(bytes);
        let dev = block::open(&cfg)
            .unwrap_or_else(|e| panic!("{backend} on {:?}: {e}", file.0))
            .value;
        devices.push((format!("{backend} on a file"), dev));
        if let Some(l) = &lo {
            let dev = block::open(&DeviceConfig::new(&l.dev).backend(kind(backend)))
                .unwrap_or_else(|e| panic!("{backend} on {}: {e}", l.dev))
                .value;
            devices.push((format!("{backend} on {}", l.dev), dev));
        }
    }
    let ram = block::open(&DeviceConfig::new(format!("ram:{bytes}")))
        .expect("a RAM disk")
        .value;
    devices.push(("RAM disk".into(), ram));
    files.push(file);
    Targets {
        devices,
        _loop: lo,
        _files: files,
    }
}

/// A 64-bit FNV-1a hash: the checksum of patterned blocks.
pub fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Fills one block with a pattern that names it: `[magic, lba, generation,
/// checksum of the rest]` then bytes from a generator seeded by all three.
pub fn fill_block(block: &mut [u8], lba: u64, generation: u64) {
    const MAGIC: u64 = 0x6470_626c_6b00_0001;
    let mut x = lba.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ generation.rotate_left(17) ^ MAGIC;
    for chunk in block[32..].chunks_mut(8) {
        // xorshift64
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    let sum = fnv1a(&block[32..]);
    block[0..8].copy_from_slice(&MAGIC.to_le_bytes());
    block[8..16].copy_from_slice(&lba.to_le_bytes());
    block[16..24].copy_from_slice(&generation.to_le_bytes());
    block[24..32].copy_from_slice(&sum.to_le_bytes());
}

/// The generation of a patterned block, if it is one, intact, for `lba`.
pub fn check_block(block: &[u8], lba: u64) -> Result<u64, String> {
    const MAGIC: u64 = 0x6470_626c_6b00_0001;
    let word = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&block[i * 8..i * 8 + 8]);
        u64::from_le_bytes(b)
    };
    if word(0) != MAGIC {
        return Err(format!("block {lba}: no pattern (magic {:#x})", word(0)));
    }
    if word(1) != lba {
        return Err(format!("block {lba}: holds block {}", word(1)));
    }
    if word(3) != fnv1a(&block[32..]) {
        return Err(format!("block {lba}: checksum mismatch (torn or corrupt)"));
    }
    let generation = word(2);
    let mut expect = vec![0u8; block.len()];
    fill_block(&mut expect, lba, generation);
    if expect != block {
        return Err(format!(
            "block {lba}: content differs from generation {generation}"
        ));
    }
    Ok(generation)
}

/// Submits `op`, polling while the queue is full; panics on a refusal.
pub fn submit(q: &mut dyn Queue, mut op: Op, done: &mut Vec<Completion>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match q.submit(op) {
            Ok(()) => return,
            Err(block::SubmitError::Full(back)) => {
                op = back;
                reap(q, done);
                assert!(Instant::now() < deadline, "queue stayed full for 30 s");
            }
            Err(e) => panic!("submit refused: {e}"),
        }
    }
}

/// Polls once, moving completions into `done`.
pub fn reap(q: &mut dyn Queue, done: &mut Vec<Completion>) -> usize {
    let mut c = Completions::new();
    let n = q.poll(&mut c);
    done.extend(c.drain());
    n
}

/// Polls until nothing is in flight (30 s at most).
pub fn drain(q: &mut dyn Queue, done: &mut Vec<Completion>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while q.in_flight() > 0 {
        if reap(q, done) == 0 {
            std::hint::spin_loop();
        }
        assert!(
            Instant::now() < deadline,
            "{} operations still in flight after 30 s",
            q.in_flight()
        );
    }
}

/// Writes `n` blocks of `generation`'s pattern at `lba` from one buffer of
/// `pool` (blocks of `bs` bytes), tagged with the LBA.
pub fn write_patterned(
    q: &mut dyn Queue,
    pool: &Mempool,
    bs: usize,
    (lba, n): (u64, u32),
    generation: u64,
    done: &mut Vec<Completion>,
) {
    let mut buf = pool.alloc_buf().expect("a buffer");
    for i in 0..n as usize {
        fill_block(&mut buf[i * bs..(i + 1) * bs], lba + i as u64, generation);
    }
    submit(q, op::Write::new(buf, lba, n).tag(lba).build(), done);
}

/// Waits for everything in flight, flushes, and checks that every
/// completion (the flush's included) succeeded.
pub fn drain_and_flush(q: &mut dyn Queue, done: &mut Vec<Completion>) {
    drain(q, done);
    submit(q, op::Flush::new().build(), done);
    drain(q, done);
    for c in done.drain(..) {
        assert!(c.status.is_ok(), "{}: {}", c.kind, c.status);
    }
}
