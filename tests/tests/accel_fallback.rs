//! The fallback to the CPU, in child processes whose Vulkan is hidden: no
//! driver (the loader finds no ICD), or no loader at all. Each says why, and
//! `DATAPLANE_REQUIRE=vulkan` turns the fallback into an error.

use dataplane::Error;
use dataplane::accel::{BackendKind, Buffers, Kernel, Queue, QueueConfig};
use std::process::Command;

/// Set in the child: which case to run.
const CHILD: &str = "ACCEL_FALLBACK_CHILD";

/// The child: opens an `Auto` queue and prints what it got.
#[test]
#[ignore = "run by the other tests in a child process of their own"]
fn child() {
    let Ok(case) = std::env::var(CHILD) else {
        panic!("the child runs in a child process that names its case in {CHILD}");
    };
    let mut cfg = QueueConfig::default();
    if std::env::var_os("DATAPLANE_REQUIRE").is_none() {
        // The fallback cases: built with the `require-vulkan` feature (as
        // CI builds), the default would refuse; without it, this is the
        // default.
        cfg.require_vulkan = Some(false);
    }
    match Queue::<Vec<Vec<u8>>>::open(cfg) {
        Ok(mut q) => {
            assert_eq!(q.info().backend, BackendKind::Cpu, "{case}");
            let reason = q.info().fallback.clone().expect("a fallback says why");
            println!("fallback: {reason}");
            // And the CPU runs the kernels.
            q.submit(
                Kernel::Crc32c,
                Buffers::new(vec![b"123456789".to_vec()]),
                1,
                1,
            )
            .map_err(|r| r.reason)
            .expect("room");
            let mut done = Vec::new();
            assert_eq!(q.poll(&mut done), 1);
            assert_eq!(done[0].buffers.results, [0xe306_9283]);
        }
        Err(Error::Required { capability, reason }) => {
            println!("refused: {capability}: {reason}");
        }
        Err(e) => panic!("{case}: unexpected error {e}"),
    }
}

fn run_child(case: &str, env: &[(&str, &str)], require: bool) -> String {
    let mut cmd = Command::new(dataplane_tests::this_test_binary());
    cmd.args(dataplane_tests::child_test_args("child"))
        .env(CHILD, case)
        .env_remove("DATAPLANE_REQUIRE")
        .env_remove("VK_INSTANCE_LAYERS");
    if require {
        cmd.env("DATAPLANE_REQUIRE", "vulkan");
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("spawning the child");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{case}: child failed:\n{text}");
    text
}

/// The text after `marker` on the line that has it (libtest may print the
/// test's name first on the same line).
fn after<'a>(out: &'a str, marker: &str) -> Option<&'a str> {
    out.lines()
        .find_map(|l| l.find(marker).map(|i| &l[i + marker.len()..]))
}

const NO_DRIVER: [(&str, &str); 2] = [
    ("VK_ICD_FILENAMES", "/nonexistent/icd.json"),
    ("VK_DRIVER_FILES", "/nonexistent/icd.json"),
];
const NO_LOADER: [(&str, &str); 1] = [("DATAPLANE_VULKAN_LOADER", "/nonexistent/libvulkan.so.1")];

#[test]
fn no_driver_falls_back_and_says_why() {
    let out = run_child("no driver", &NO_DRIVER, false);
    println!("{out}");
    let line = after(&out, "fallback: ").expect("the child fell back");
    // Without the system loader the reason is the loader; with it, the
    // missing driver.
    assert!(
        line.contains("no driver")
            || line.contains("not loadable")
            || line.contains("no physical devices")
            || line.contains("no usable Vulkan device"),
        "{line}"
    );
}

#[test]
fn no_loader_falls_back_and_says_why() {
    let out = run_child("no loader", &NO_LOADER, false);
    let line = after(&out, "fallback: ").expect("the child fell back");
    assert!(
        line.contains("/nonexistent/libvulkan.so.1") && line.contains("not loadable"),
        "{line}"
    );
}

#[test]
fn required_vulkan_refuses_to_fall_back() {
    for (case, env) in [("no driver", &NO_DRIVER[..]), ("no loader", &NO_LOADER[..])] {
        let out = run_child(case, env, true);
        let line = after(&out, "refused: ").unwrap_or_else(|| {
            panic!("{case}: the child fell back although vulkan is required:\n{out}")
        });
        assert!(line.starts_with("vulkan: "), "{line}");
    }
}
