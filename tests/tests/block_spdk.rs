//! The SPDK NVMe backend against a real controller: SPDK's own NVMe-oF TCP
//! target (`nvmf_tgt`) serving a malloc bdev on 127.0.0.1, which the SPDK
//! NVMe driver in this process probes and attaches. Exercised: probe,
//! qpair allocation, writes, flush, reads (checksummed), write-zeroes,
//! deallocate, refusals and completions, with every buffer back in its
//! pool.
//!
//! Runs whenever `spdk-sys` found SPDK at build time (`PKG_CONFIG_PATH`
//! naming an install) and `nvmf_tgt` is found (`SPDK_NVMF_TGT`, else the
//! install's `bin/`); prints `skip: <reason>` otherwise, and fails instead
//! under `DATAPLANE_REQUIRE=spdk`.

mod block_support;

use block_support::*;
use dataplane::block::{self, DeviceConfig, Invalid, QueueConfig, op};
use dataplane::require::Capability;
use dataplane_tests::available_or_skip;
use std::io::Read as _;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NQN: &str = "nqn.2016-06.io.spdk:dataplane-test";

/// `nvmf_tgt`, from `SPDK_NVMF_TGT` or the install pkg-config points at.
fn nvmf_tgt() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("SPDK_NVMF_TGT") {
        return Ok(PathBuf::from(p));
    }
    // The install's lib/ directory, from the same PKG_CONFIG_PATH the
    // build used; the apps are in ../bin.
    let out = Command::new("pkg-config")
        .args(["--libs-only-L", "spdk_nvme"])
        .output()
        .map_err(|e| format!("running pkg-config: {e}"))?;
    let libs = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let candidates: Vec<PathBuf> = libs
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("-L"))
        .filter_map(|lib| PathBuf::from(lib).parent().map(|p| p.join("bin/nvmf_tgt")))
        .collect();
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        format!("nvmf_tgt not found (set SPDK_NVMF_TGT, or install SPDK's apps beside {libs:?})")
    })
}

/// The target process, killed on every path out of the test.
struct Target {
    child: Child,
    _config: TempFile,
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hugepages_ready() -> bool {
    let free = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("HugePages_Free:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let mounted = std::fs::read_to_string("/proc/mounts")
        .is_ok_and(|m| m.lines().any(|l| l.contains(" hugetlbfs ")));
    free >= 256 && mounted
}

/// Starts `nvmf_tgt` with a 64 MiB malloc bdev of 4 KiB blocks, exported
/// over TCP on a free port of 127.0.0.1; returns it and the port.
fn start_target(bin: &PathBuf) -> (Target, u16) {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let config = TempFile(scratch_file("nvmf.json"));
    let json = format!(
        r#"{{"subsystems":[
 {{"subsystem":"bdev","config":[{{"method":"bdev_malloc_create","params":{{"name":"Malloc0","num_blocks":16384,"block_size":4096}}}}]}},
 {{"subsystem":"nvmf","config":[
   {{"method":"nvmf_create_transport","params":{{"trtype":"TCP"}}}},
   {{"method":"nvmf_create_subsystem","params":{{"nqn":"{NQN}","allow_any_host":true,"serial_number":"DP0001","model_number":"dataplane test"}}}},
   {{"method":"nvmf_subsystem_add_ns","params":{{"nqn":"{NQN}","namespace":{{"bdev_name":"Malloc0"}}}}}},
   {{"method":"nvmf_subsystem_add_listener","params":{{"nqn":"{NQN}","listen_address":{{"trtype":"TCP","adrfam":"IPv4","traddr":"127.0.0.1","trsvcid":"{port}"}}}}}}
 ]}}
]}}"#
    );
    std::fs::write(&config.0, json).expect("writing the target's config");
    let lib = bin
        .parent()
        .and_then(|b| b.parent())
        .map(|p| p.join("lib"))
        .unwrap_or_default();
    let mut cmd = Command::new(bin);
    cmd.arg("-m")
        .arg("0x1")
        .arg("--no-pci")
        .arg("-c")
        .arg(&config.0);
    if hugepages_ready() {
        cmd.args(["-s", "256"]);
    } else {
        cmd.args(["--no-huge", "-s", "512"]);
    }
    let child = cmd
        .env("LD_LIBRARY_PATH", lib)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting nvmf_tgt");
    let mut target = Target {
        child,
        _config: config,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = target.child.try_wait() {
            let mut err = String::new();
            if let Some(e) = target.child.stderr.as_mut() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("nvmf_tgt exited ({status}): {err}");
        }
        assert!(
            Instant::now() < deadline,
            "nvmf_tgt did not listen within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (target, port)
}

#[test]
fn spdk_nvme_over_tcp_against_nvmf_tgt() {
    if !backend_or_skip("spdk") {
        return;
    }
    let bin = match nvmf_tgt() {
        Ok(b) => b,
        Err(why) => {
            available_or_skip(Capability::Spdk, false, &why);
            return;
        }
    };
    let (_target, port) = start_target(&bin);
    let trid = format!("trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:{port} subnqn:{NQN}");
    let opened = block::open(&DeviceConfig::new(&trid)).expect("SPDK attaches the controller");
    let dev = opened.value;
    assert_eq!(dev.backend(), "spdk");
    println!("{trid}: {:?}", dev.notes());
    let g = dev.geometry().clone();
    assert_eq!(g.block_size, 4096);
    assert_eq!(g.blocks, 16384);
    let bs = g.block_size as usize;
    let pool = g.buffer_pool("spdk", 160, 8 * bs).expect("a pool");
    let mut q = dev
        .queue(&QueueConfig::new(32).buffers(&pool))
        .expect("an I/O qpair");
    let mut done = Vec::new();

    // Writes of 1..=8 blocks over the first 1024 blocks, then a flush.
    let generation = 7;
    let mut lba = 0;
    while lba < 1024 {
        let n = 1 + (lba % 8) as u32;
        write_patterned(q.as_mut(), &pool, bs, (lba, n), generation, &mut done);
        lba += u64::from(n);
        for c in done.drain(..) {
            assert!(c.status.is_ok(), "write: {}", c.status);
        }
    }
    drain_and_flush(q.as_mut(), &mut done);
    // Read back, checksum every block.
    for lba in (0..1024).step_by(8) {
        let buf = pool.alloc_buf().expect("a buffer");
        submit(
            q.as_mut(),
            op::Read::new(buf, lba, 8).tag(lba).build(),
            &mut done,
        );
    }
    drain(q.as_mut(), &mut done);
    assert_eq!(done.len(), 128);
    for c in done.drain(..) {
        assert!(c.status.is_ok(), "read: {}", c.status);
        let buf = c.buf.as_ref().expect("the buffer comes back");
        for i in 0..8 {
            let got = check_block(&buf[i * bs..(i + 1) * bs], c.tag + i as u64)
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(got, generation);
        }
    }
    // Write-zeroes and deallocate, then read zeroes (the malloc bdev zeroes
    // deallocated blocks).
    if g.write_zeroes {
        submit(q.as_mut(), op::WriteZeroes::new(0, 8).build(), &mut done);
    }
    if g.deallocate {
        submit(q.as_mut(), op::Deallocate::new(8, 8).build(), &mut done);
    }
    drain(q.as_mut(), &mut done);
    for c in done.drain(..) {
        assert!(c.status.is_ok(), "{}: {}", c.kind, c.status);
    }
    let buf = pool.alloc_buf().expect("a buffer");
    submit(q.as_mut(), op::Read::new(buf, 0, 8).build(), &mut done);
    drain(q.as_mut(), &mut done);
    let c = done.pop().expect("the read");
    assert!(c.status.is_ok());
    assert!(
        c.buf.as_ref().expect("buffer")[..8 * bs]
            .iter()
            .all(|&b| b == 0),
        "write-zeroes left data"
    );
    drop(c);
    // Refusals hand the operation back with nothing sent.
    let e = q
        .submit(op::Read::new(pool.alloc_buf().expect("buf"), g.blocks, 1).build())
        .expect_err("past the end");
    assert!(matches!(e.invalid(), Some(Invalid::OutOfRange { .. })));
    assert!(e.into_op().into_buf().is_some());
    assert_eq!(q.in_flight(), 0);
    let stats = q.stats();
    assert_eq!(stats.submitted, stats.completed);
    assert_eq!(stats.errors, 0);
    println!("{trid}: {stats:?}");
    drop(q);
    assert_eq!(pool.in_use(), 0, "buffers not back in the pool");
}
