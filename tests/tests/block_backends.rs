//! End to end over every block backend but SPDK (see `block_spdk.rs`):
//! io_uring and psync on a file under the build directory (O_DIRECT) and
//! on a loop device over one (when root), and the RAM disk.
//!
//! - read after write, every block checksummed;
//! - random operation sequences (half the writes FUA) checked against an
//!   in-memory model;
//! - refusals (misaligned, out of range, too large, full) hand the
//!   operation back and submit nothing;
//! - selection, and `DATAPLANE_REQUIRE=io_uring` refusing a fallback;
//! - a queue polled by an lcore, stopped mid-run, losing nothing;
//! - every buffer back in its pool at the end of each.

mod block_support;

use block_support::*;
use dataplane::block::{
    self, BackendKind, Completion, DeviceConfig, Invalid, OpKind, PollMode, QueueConfig, Status,
    SubmitError, op,
};
use dataplane::lcore::{LcoreConfig, LcoreGroup, PollContext, Role};
use hugepages::mempool::{Mempool, MempoolConfig};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// 8 MiB per target: small enough to create and clear quickly, large
/// enough for random offsets to rarely collide.
const TARGET_BYTES: u64 = 8 << 20;

/// Bytes per buffer: 32 KiB, several blocks of any block size here.
const BUF_BYTES: usize = 32 << 10;

fn seed() -> u64 {
    std::env::var("BLOCK_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}

fn expect_ok(c: &Completion, what: &str) {
    assert!(
        c.status.is_ok(),
        "{what}: {} tag {} failed: {}",
        c.kind,
        c.tag,
        c.status
    );
}

#[test]
fn read_after_write_is_checksum_intact() {
    let t = targets("raw", TARGET_BYTES);
    for (name, dev) in &t.devices {
        let g = dev.geometry().clone();
        let bs = g.block_size as usize;
        let pool = g.buffer_pool("raw", 64, BUF_BYTES).expect("a buffer pool");
        let mut q = dev
            .queue(&QueueConfig::new(16).buffers(&pool))
            .expect("a queue");
        let mut done = Vec::new();
        let generation = seed();
        let per_buf = (BUF_BYTES / bs) as u32;
        // Write the first 2 MiB in transfers of 1..=per_buf blocks.
        let span = ((2u64 << 20) / bs as u64).min(g.blocks);
        let mut rng = SmallRng::seed_from_u64(generation);
        let mut lba = 0u64;
        while lba < span {
            let n = rng.random_range(1..=per_buf).min((span - lba) as u32);
            write_patterned(q.as_mut(), &pool, bs, (lba, n), generation, &mut done);
            lba += u64::from(n);
            // Completions return their buffers to the pool when dropped.
            for c in done.drain(..) {
                expect_ok(&c, name);
            }
        }
        drain(q.as_mut(), &mut done);
        submit(
            q.as_mut(),
            op::Flush::new().tag(u64::MAX).build(),
            &mut done,
        );
        drain(q.as_mut(), &mut done);
        for c in done.drain(..) {
            expect_ok(&c, name);
        }
        // Read it back in different transfer sizes; the tag carries the
        // read's blocks.
        let mut checked = 0u64;
        let mut verify = |done: &mut Vec<Completion>| {
            for c in done.drain(..) {
                expect_ok(&c, name);
                assert_eq!(c.kind, OpKind::Read);
                let buf = c.buf.as_ref().expect("a read's buffer comes back");
                let (lba, n) = (c.tag >> 16, c.tag & 0xffff);
                for i in 0..n {
                    let b = &buf[i as usize * bs..(i as usize + 1) * bs];
                    match check_block(b, lba + i) {
                        Ok(got) => assert_eq!(got, generation, "{name}: block {}", lba + i),
                        Err(e) => panic!("{name}: {e}"),
                    }
                    checked += 1;
                }
            }
        };
        let mut lba = 0u64;
        while lba < span {
            let n = rng.random_range(1..=per_buf).min((span - lba) as u32);
            let buf = pool.alloc_buf().expect("a buffer");
            let tag = (lba << 16) | u64::from(n);
            submit(
                q.as_mut(),
                op::Read::new(buf, lba, n).tag(tag).build(),
                &mut done,
            );
            lba += u64::from(n);
            verify(&mut done);
        }
        drain(q.as_mut(), &mut done);
        verify(&mut done);
        assert_eq!(checked, span, "{name}: {checked} of {span} blocks verified");
        drop(q);
        assert_eq!(pool.in_use(), 0, "{name}: buffers not back in the pool");
        println!("{name}: {span} blocks of {bs} B written, flushed and verified");
    }
}

/// What the model knows of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Model {
    Zero,
    Gen(u64),
}

#[test]
fn random_operations_match_the_model() {
    let t = targets("model", TARGET_BYTES);
    let seed = seed();
    println!("seed {seed} (BLOCK_TEST_SEED={seed} repeats it)");
    for (name, dev) in &t.devices {
        let g = dev.geometry().clone();
        let bs = g.block_size as usize;
        let pool = g
            .buffer_pool("model", 64, BUF_BYTES)
            .expect("a buffer pool");
        let depth = 16;
        let mut q = dev
            .queue(&QueueConfig::new(depth).buffers(&pool))
            .expect("a queue");
        let mut rng = SmallRng::seed_from_u64(seed);
        let blocks = g.blocks.min(4096);
        let per_buf = (BUF_BYTES / bs) as u32;
        let mut done = Vec::new();

        // Start from a known state: every block zero.
        submit(
            q.as_mut(),
            op::WriteZeroes::new(0, blocks as u32).tag(0).build(),
            &mut done,
        );
        drain(q.as_mut(), &mut done);
        for c in done.drain(..) {
            expect_ok(&c, name);
        }
        let mut model = vec![Model::Zero; blocks as usize];
        // In flight: (tag, kind, lba, n, generation or expected states).
        let mut flight: VecDeque<(u64, OpKind, u64, u32, Vec<Model>)> = VecDeque::new();
        let overlaps =
            |flight: &VecDeque<(u64, OpKind, u64, u32, Vec<Model>)>, lba: u64, n: u32| {
                flight.iter().any(|&(_, k, l, m, _)| {
                    k != OpKind::Flush && lba < l + u64::from(m) && l < lba + u64::from(n)
                })
            };
        let mut next_gen = 1u64;
        let mut counts = [0usize; 5];
        for tag in 1..=2_000u64 {
            // Pick an operation whose range no in-flight one overlaps (as
            // an application must: the device may order overlapping
            // operations either way).
            let (kind, lba, n) = loop {
                let kind = match rng.random_range(0..100) {
                    0..35 => OpKind::Write,
                    35..70 => OpKind::Read,
                    70..80 => OpKind::WriteZeroes,
                    80..90 => OpKind::Deallocate,
                    _ => OpKind::Flush,
                };
                let n = rng.random_range(1..=per_buf);
                let lba = rng.random_range(0..blocks - u64::from(n));
                if kind == OpKind::Flush || !overlaps(&flight, lba, n) {
                    break (kind, lba, n);
                }
            };
            let range = lba as usize..(lba + u64::from(n)) as usize;
            let op = match kind {
                OpKind::Write => {
                    let generation = next_gen;
                    next_gen += 1;
                    let mut buf = pool.alloc_buf().expect("a buffer");
                    for i in 0..n as usize {
                        fill_block(&mut buf[i * bs..(i + 1) * bs], lba + i as u64, generation);
                    }
                    for m in &mut model[range.clone()] {
                        *m = Model::Gen(generation);
                    }
                    // Half of them durable on completion (FUA).
                    let w = op::Write::new(buf, lba, n).tag(tag);
                    if rng.random_bool(0.5) { w.fua() } else { w }.build()
                }
                OpKind::Read => op::Read::new(pool.alloc_buf().expect("a buffer"), lba, n)
                    .tag(tag)
                    .build(),
                OpKind::WriteZeroes | OpKind::Deallocate => {
                    for m in &mut model[range.clone()] {
                        *m = Model::Zero;
                    }
                    if kind == OpKind::WriteZeroes {
                        op::WriteZeroes::new(lba, n).tag(tag).build()
                    } else if g.deallocate {
                        op::Deallocate::new(lba, n).tag(tag).build()
                    } else {
                        // Refused before submission, say so, and zero
                        // through write-zeroes instead.
                        let e = q
                            .submit(op::Deallocate::new(lba, n).tag(tag).build())
                            .expect_err("deallocate is unsupported here");
                        assert_eq!(e.invalid(), Some(Invalid::Unsupported(OpKind::Deallocate)));
                        op::WriteZeroes::new(lba, n).tag(tag).build()
                    }
                }
                OpKind::Flush => op::Flush::new().tag(tag).build(),
            };
            counts[OpKind::ALL.iter().position(|&k| k == kind).unwrap_or(0)] += 1;
            let expect = if kind == OpKind::Read {
                model[range].to_vec()
            } else {
                Vec::new()
            };
            flight.push_back((tag, kind, lba, n, expect));
            submit(q.as_mut(), op, &mut done);
            if rng.random_range(0..4) == 0 || q.in_flight() == depth {
                reap(q.as_mut(), &mut done);
            }
            for c in done.drain(..) {
                expect_ok(&c, name);
                let Some(at) = flight.iter().position(|f| f.0 == c.tag) else {
                    panic!(
                        "{name}: a completion for tag {} that is not in flight",
                        c.tag
                    );
                };
                let Some((_, kind, lba, n, expect)) = flight.remove(at) else {
                    unreachable!("position was found")
                };
                assert_eq!(
                    c.kind, kind,
                    "{name}: tag {} came back as another kind",
                    c.tag
                );
                if kind != OpKind::Read {
                    continue;
                }
                let buf = c.buf.as_ref().expect("a read's buffer comes back");
                for i in 0..n as usize {
                    let b = &buf[i * bs..(i + 1) * bs];
                    let at = lba + i as u64;
                    match expect[i] {
                        Model::Zero => assert!(
                            b.iter().all(|&x| x == 0),
                            "{name}: block {at} should read as zeroes (seed {seed})"
                        ),
                        Model::Gen(want) => match check_block(b, at) {
                            Ok(got) => {
                                assert_eq!(got, want, "{name}: block {at} generation (seed {seed})")
                            }
                            Err(e) => panic!("{name}: {e} (seed {seed})"),
                        },
                    }
                }
            }
        }
        drain(q.as_mut(), &mut done);
        for c in done.drain(..) {
            expect_ok(&c, name);
        }
        let stats = q.stats();
        assert_eq!(stats.submitted, stats.completed, "{name}: {stats:?}");
        drop(q);
        assert_eq!(pool.in_use(), 0, "{name}: buffers not back in the pool");
        println!("{name}: 2000 random operations match the model {counts:?} {stats:?}");
    }
}

#[test]
fn refusals_hand_the_operation_back() {
    let t = targets("refuse", TARGET_BYTES);
    for (name, dev) in &t.devices {
        let g = dev.geometry().clone();
        let bs = g.block_size as usize;
        let pool = g
            .buffer_pool("refuse", 8, BUF_BYTES)
            .expect("a buffer pool");
        // Objects 64 bytes past a block multiple: every other one is
        // misaligned for an O_DIRECT device.
        let odd = Mempool::new(MempoolConfig {
            align: 64,
            ..MempoolConfig::new("odd", 4, bs + 64)
        })
        .expect("a pool");
        let depth = 4;
        let mut q = dev
            .queue(&QueueConfig::new(depth).buffers(&pool))
            .expect("a queue");
        let refuse = |q: &mut dyn block::Queue, op: block::Op| -> Invalid {
            let before = q.stats().submitted;
            let (tag, fua) = (op.tag(), op.fua());
            let had_buf = op.buf().is_some();
            let e = q.submit(op).expect_err("refused");
            assert_eq!(q.in_flight(), 0, "{name}: something was submitted");
            assert_eq!(q.stats().submitted, before);
            println!("{name}: refused as it should be: {e}");
            let why = e.invalid().expect("an Invalid, not Full");
            let back = e.into_op();
            assert_eq!((back.tag(), back.fua()), (tag, fua));
            assert_eq!(back.into_buf().is_some(), had_buf, "the buffer comes back");
            why
        };
        let buf = || pool.alloc_buf().expect("a buffer");
        assert!(matches!(
            refuse(q.as_mut(), op::Read::new(buf(), g.blocks, 1).build()),
            Invalid::OutOfRange { .. }
        ));
        assert!(matches!(
            refuse(
                q.as_mut(),
                op::Write::new(buf(), g.blocks - 1, 2).fua().build()
            ),
            Invalid::OutOfRange { .. }
        ));
        assert!(matches!(
            refuse(q.as_mut(), op::WriteZeroes::new(u64::MAX, 1).build()),
            Invalid::OutOfRange { .. }
        ));
        // Over the maximum transfer (checked before the buffer's size).
        let too_many = g.max_transfer / g.block_size + 1;
        assert!(matches!(
            refuse(q.as_mut(), op::Read::new(buf(), 0, too_many).build()),
            Invalid::TooLarge { .. }
        ));
        assert!(matches!(
            refuse(q.as_mut(), op::Read::new(buf(), 0, 0).build()),
            Invalid::NoBlocks
        ));
        let small = odd.alloc_buf().expect("a buffer");
        assert!(matches!(
            refuse(q.as_mut(), op::Read::new(small, 0, 2).build()),
            Invalid::BufferTooSmall { .. }
        ));
        if g.needs_aligned_buffers() {
            let mut bufs: Vec<_> = (0..4).map(|_| odd.alloc_buf().expect("a buffer")).collect();
            let at = bufs
                .iter()
                .position(|b| !b.as_ptr().addr().is_multiple_of(g.buf_align as usize))
                .expect("one of four odd buffers is misaligned");
            let b = bufs.swap_remove(at);
            assert!(matches!(
                refuse(q.as_mut(), op::Write::new(b, 0, 1).build()),
                Invalid::Misaligned { .. }
            ));
        }
        // At depth: Full, with the buffer back.
        let mut done = Vec::new();
        for i in 0..depth as u64 {
            q.submit(op::Read::new(buf(), i, 1).tag(i).build())
                .expect("room");
        }
        match q.submit(op::Write::new(buf(), 0, 1).fua().tag(99).build()) {
            Err(SubmitError::Full(op)) => {
                assert_eq!((op.tag(), op.fua()), (99, true));
                assert!(op.into_buf().is_some());
            }
            other => panic!("{name}: expected Full, got {other:?}"),
        }
        drain(q.as_mut(), &mut done);
        assert_eq!(done.len(), depth);
        for c in done.drain(..) {
            expect_ok(&c, name);
        }
        drop(q);
        assert_eq!(pool.in_use(), 0, "{name}: buffers not back in the pool");
        assert_eq!(odd.in_use(), 0, "{name}: buffers not back in the pool");
    }
}

#[test]
fn automatic_selection_and_names() {
    let file = TempFile(scratch_file("select"));
    let cfg = DeviceConfig::new(file.0.to_string_lossy()).create_size(1 << 20);
    let opened = block::open(&cfg).expect("some backend opens a file");
    let uring = probe("io_uring");
    println!(
        "{}: {} (skipped {:?}); notes {:?}",
        cfg.target,
        opened.value.backend(),
        opened.skipped,
        opened.value.notes()
    );
    assert_eq!(opened.skipped[0].backend, "spdk");
    if backend_or_skip("io_uring") {
        assert_eq!(opened.value.backend(), "io_uring", "{}", uring.reason);
    } else {
        assert_eq!(opened.value.backend(), "psync");
    }
    let ram = block::open(&DeviceConfig::new("ram:64KiB")).expect("a RAM disk");
    assert_eq!(ram.value.backend(), "ram");
    assert_eq!(ram.value.geometry().blocks, 128);
    let names: Vec<_> = ram.skipped.iter().map(|s| s.backend).collect();
    assert_eq!(names, ["spdk", "io_uring", "psync"]);
    assert!(
        ram.skipped
            .iter()
            .all(|s| s.reason.contains("does not open"))
    );

    let named = block::open(&cfg.clone().backend(BackendKind::Psync)).expect("psync by name");
    assert_eq!(named.value.backend(), "psync");
    let err = "aio".parse::<BackendKind>().expect_err("no such backend");
    assert!(err.to_string().contains("io_uring, psync"), "{err}");
    let err = block::open(&DeviceConfig::new("ram:12 parsecs")).expect_err("a bad size");
    assert!(err.to_string().contains("unknown unit"), "{err}");
    let listed: Vec<_> = block::probes().into_iter().map(|p| p.backend).collect();
    assert_eq!(listed, ["spdk", "io_uring", "psync", "ram"]);
}

/// The child half of `require_io_uring_refuses_a_fallback`, run with
/// `DATAPLANE_REQUIRE=io_uring`: opens each target of
/// `BLOCK_TEST_REQUIRE_CHILD` (`PATH=iopoll`, separated by `;`) so that
/// io_uring cannot open it while psync could, and prints what happened.
#[test]
#[ignore = "run by require_io_uring_refuses_a_fallback in a child process"]
fn child_open_with_io_uring_required() {
    let Ok(paths) = std::env::var("BLOCK_TEST_REQUIRE_CHILD") else {
        panic!("the child runs in a child process that names its targets");
    };
    for path in paths.split(';') {
        let (path, how) = path.split_once('=').expect("PATH=HOW");
        let mut cfg = DeviceConfig::new(path).create_size(1 << 20);
        if how == "iopoll" {
            cfg.iopoll = PollMode::Required;
        }
        match block::open(&cfg) {
            Ok(o) => {
                // io_uring opened it after all: nothing fell back.
                assert_eq!(o.value.backend(), "io_uring");
                println!("child: {how}: io_uring opened {path}: no fallback to refuse");
            }
            Err(dataplane::Error::Required { capability, reason }) => {
                assert_eq!(capability, "io_uring");
                println!("child: {how}: refused as required: {reason}");
            }
            Err(e) => panic!("child: {how}: expected Error::Required, got {e}"),
        }
    }
}

#[test]
fn require_io_uring_refuses_a_fallback() {
    if !backend_or_skip("io_uring") {
        return;
    }
    // A target io_uring cannot open while psync could: a file on this
    // machine's disk with IOPOLL required (virtio and loop devices have no
    // poll queues). With DATAPLANE_REQUIRE=io_uring that fallback must be an
    // error; on a disk that polls there is none, and the test says so.
    let file = TempFile(scratch_file("require"));
    let out = std::process::Command::new(dataplane_tests::this_test_binary())
        .args(dataplane_tests::child_test_args(
            "child_open_with_io_uring_required",
        ))
        .env(
            "BLOCK_TEST_REQUIRE_CHILD",
            format!("{}=iopoll", file.0.display()),
        )
        .env("DATAPLANE_REQUIRE", "io_uring")
        .output()
        .expect("running the child");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(
        out.status.success(),
        "child failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("child: "), "the child did not run: {text}");
    if !text.contains("refused as required") {
        // This machine's disk polls, so no fallback happened to refuse: say
        // so where a CI log shows it.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "note: require_io_uring_refuses_a_fallback: io_uring polled {}; no refusal exercised",
            file.0.display()
        );
    }
}

#[test]
fn an_lcore_polls_its_queue_and_drains_on_stop() {
    let t = targets("lcore", TARGET_BYTES);
    for (name, dev) in &t.devices {
        let g = dev.geometry().clone();
        let bs = g.block_size;
        let pool = g.buffer_pool("lcore", 64, 4096).expect("a buffer pool");
        // Made here, used on the lcore: the io_uring ring is enabled by its
        // first use there.
        let mut q = dev
            .queue(&QueueConfig::new(32).buffers(&pool))
            .expect("a queue");
        let completed = Arc::new(AtomicU64::new(0));
        let seen = completed.clone();
        let blocks = 4096 / bs;
        let span = g.blocks / u64::from(blocks);
        let mut next = 0u64;
        let mut spare: Vec<_> = (0..32)
            .map(|_| pool.alloc_buf().expect("a buffer"))
            .collect();
        let mut out = block::Completions::new();
        let mut group = LcoreGroup::new().allow_shared_cpus(true);
        let lcore = group.add(LcoreConfig::new(Role::Io));
        group
            .poller(lcore, move |ctx: &PollContext| {
                let mut work = 0;
                // No new input once the group drains; keep reaping.
                while !ctx.stopping() {
                    let Some(buf) = spare.pop() else { break };
                    let lba = (next % span) * u64::from(blocks);
                    match q.submit(op::Write::new(buf, lba, blocks).tag(next).build()) {
                        Ok(()) => {
                            next += 1;
                            work += 1;
                        }
                        Err(e) => {
                            spare.extend(e.into_op().into_buf());
                            break;
                        }
                    }
                }
                q.poll(&mut out);
                for c in out.drain() {
                    assert!(c.status.is_ok(), "{}", c.status);
                    seen.fetch_add(1, Ordering::Relaxed);
                    spare.extend(c.buf);
                    work += 1;
                }
                // Still holding operations in flight: not done draining.
                work + q.in_flight()
            })
            .expect("a poller");
        let running = group.launch().expect("launch");
        std::thread::sleep(std::time::Duration::from_millis(100));
        running.stop().expect("an orderly stop");
        let n = completed.load(Ordering::Relaxed);
        assert!(n > 0, "{name}: nothing completed");
        assert_eq!(pool.in_use(), 0, "{name}: buffers not back in the pool");
        println!("{name}: {n} writes completed by the lcore, none lost at stop");
    }
}

#[test]
fn statuses_name_the_failure() {
    // A read past the end of a file that shrank after opening: the kernel
    // returns 0 bytes, which the queue reports as a short transfer.
    let file = TempFile(scratch_file("short"));
    for backend in ["io_uring", "psync"] {
        if !backend_or_skip(backend) {
            continue;
        }
        let dev = block::open(
            &DeviceConfig::new(file.0.to_string_lossy())
                .backend(kind(backend))
                .create_size(64 << 10),
        )
        .expect("open")
        .value;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&file.0)
            .and_then(|f| f.set_len(0))
            .expect("truncating");
        let g = dev.geometry();
        let pool = g.buffer_pool("short", 2, 4096).expect("a pool");
        let mut q = dev
            .queue(&QueueConfig::new(2).buffers(&pool))
            .expect("a queue");
        let mut done = Vec::new();
        submit(
            q.as_mut(),
            op::Read::new(pool.alloc_buf().expect("buf"), 0, 1).build(),
            &mut done,
        );
        drain(q.as_mut(), &mut done);
        assert_eq!(done[0].status, Status::Short { bytes: 0 }, "{backend}");
        assert!(done[0].status.to_string().contains("short"));
        assert_eq!(q.stats().errors, 1);
        done.clear();
        drop(q);
        assert_eq!(pool.in_use(), 0);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&file.0)
            .and_then(|f| f.set_len(64 << 10))
            .expect("restoring");
    }
}
