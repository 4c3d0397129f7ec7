//! Durability: a child process writes patterned blocks and flushes,
//! reporting each generation whose writes and flush completed; it is
//! killed with SIGKILL mid-run; the device is reopened and every block
//! reported durable must read back intact (its checksum holds) with that
//! generation or a later one.
//!
//! Over io_uring and psync, on a file under the build directory and on a
//! loop device (root). The RAM disk lives in the writer's memory and dies
//! with it, so it has nothing to verify here.

mod block_support;

use block_support::*;
use dataplane::block::{self, BackendKind, DeviceConfig, QueueConfig, op};
use rand::Rng;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Blocks per generation: one write each, then a flush.
const BATCH: u64 = 64;

/// The target: 4 MiB, so that generations wrap and overwrite older ones.
const TARGET_BYTES: u64 = 4 << 20;

/// The writer: run only by the test below, in a child process it kills.
#[test]
#[ignore = "run by sigkill_mid_run_loses_no_flushed_block in a child process"]
fn child_writer() {
    let (Ok(target), Ok(backend)) = (
        std::env::var("BLOCK_DURABILITY_TARGET"),
        std::env::var("BLOCK_DURABILITY_BACKEND"),
    ) else {
        panic!("child_writer runs in a child process that names its target and backend");
    };
    let dev = block::open(&DeviceConfig::new(&target).backend(kind(&backend)))
        .expect("the writer opens the target")
        .value;
    let g = dev.geometry().clone();
    let bs = g.block_size as usize;
    let pool = g.buffer_pool("writer", 32, bs).expect("a pool");
    let mut q = dev
        .queue(&QueueConfig::new(8).buffers(&pool))
        .expect("a queue");
    let mut done = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    for generation in 1u64.. {
        assert!(Instant::now() < deadline, "the writer was never killed");
        let first = (generation * BATCH) % g.blocks;
        for k in 0..BATCH {
            let lba = (first + k) % g.blocks;
            let mut buf = pool.alloc_buf().expect("a buffer");
            fill_block(&mut buf[..bs], lba, generation);
            submit(
                q.as_mut(),
                op::Write::new(buf, lba, 1).tag(lba).build(),
                &mut done,
            );
            for c in done.drain(..) {
                assert!(c.status.is_ok(), "write: {}", c.status);
            }
        }
        drain_and_flush(q.as_mut(), &mut done);
        // Writes and flush completed: these blocks must survive.
        println!("durable {generation} {first} {BATCH}");
    }
}

fn run_and_kill(target: &str, backend: &str, blocks: u64) -> HashMap<u64, u64> {
    let mut child = Command::new(dataplane_tests::this_test_binary())
        .args(dataplane_tests::child_test_args("child_writer"))
        .env("BLOCK_DURABILITY_TARGET", target)
        .env("BLOCK_DURABILITY_BACKEND", backend)
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the writer");
    let stdout = child.stdout.take().expect("the writer's stdout");
    let kill_after = rand::rng().random_range(10..300);
    let mut durable = HashMap::new();
    let mut seen = 0;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("reading the writer");
        let f: Vec<u64> = match line.strip_prefix("durable ") {
            Some(rest) => rest.split(' ').filter_map(|x| x.parse().ok()).collect(),
            None => continue,
        };
        let [generation, first, n] = f[..] else {
            panic!("malformed line {line:?}");
        };
        for k in 0..n {
            durable.insert((first + k) % blocks, generation);
        }
        seen += 1;
        if seen == kill_after {
            // std's kill is SIGKILL on Unix: no handler, no flush, no exit
            // path runs in the writer.
            child.kill().expect("SIGKILL");
            break;
        }
    }
    let status = child.wait().expect("reaping the writer");
    assert_eq!(seen, kill_after, "the writer stopped on its own: {status}");
    println!("{backend} on {target}: killed after {seen} durable generations ({status})");
    durable
}

fn verify(target: &str, durable: &HashMap<u64, u64>) {
    let dev = block::open(&DeviceConfig::new(target).backend(BackendKind::Psync))
        .expect("reopening")
        .value;
    let g = dev.geometry().clone();
    let bs = g.block_size as usize;
    let pool = g.buffer_pool("verify", 8, bs).expect("a pool");
    let mut q = dev
        .queue(&QueueConfig::new(8).buffers(&pool))
        .expect("a queue");
    let mut done = Vec::new();
    for (&lba, &generation) in durable {
        let buf = pool.alloc_buf().expect("a buffer");
        submit(
            q.as_mut(),
            op::Read::new(buf, lba, 1).tag(lba).build(),
            &mut done,
        );
        drain(q.as_mut(), &mut done);
        for c in done.drain(..) {
            assert!(c.status.is_ok(), "read back: {}", c.status);
            let buf = c.buf.as_ref().expect("the buffer");
            match check_block(&buf[..bs], lba) {
                Ok(got) => assert!(
                    got >= generation,
                    "{target}: block {lba} holds generation {got}, older than durable {generation}"
                ),
                Err(e) => panic!("{target}: a durable block did not survive: {e}"),
            }
        }
    }
    drop(q);
    assert_eq!(pool.in_use(), 0);
    println!("{target}: {} durable blocks intact", durable.len());
}

#[test]
fn sigkill_mid_run_loses_no_flushed_block() {
    let file = TempFile(scratch_file("durable"));
    let lo = LoopDev::create_or_skip("durable-loop", TARGET_BYTES);
    for backend in ["io_uring", "psync"] {
        if !backend_or_skip(backend) {
            continue;
        }
        let _ = std::fs::remove_file(&file.0);
        let path = file.0.to_string_lossy().into_owned();
        // Create the file at full size before the writer starts.
        let blocks = block::open(
            &DeviceConfig::new(&path)
                .backend(BackendKind::Psync)
                .create_size(TARGET_BYTES),
        )
        .expect("creating the file")
        .value
        .geometry()
        .blocks;
        let durable = run_and_kill(&path, backend, blocks);
        verify(&path, &durable);
        if let Some(l) = &lo {
            let blocks = block::open(&DeviceConfig::new(&l.dev).backend(BackendKind::Psync))
                .expect("opening the loop device")
                .value
                .geometry()
                .blocks;
            let durable = run_and_kill(&l.dev, backend, blocks);
            verify(&l.dev, &durable);
        }
    }
}
