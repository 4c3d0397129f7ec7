//! Probes pkg-config for DPDK and records the result as a cfg and two env vars.
//!
//! The crate compiles either way: with `dpdk_available` set when the library
//! was found, and without it (plus the reason in `DPDK_SYS_REASON`) when not.
//! The `require` feature turns the miss into a build error.

fn main() {
    println!("cargo::rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo::rerun-if-env-changed=DPDK_SYS_DISABLE");
    println!("cargo::rustc-check-cfg=cfg(dpdk_available)");

    let found = if std::env::var_os("DPDK_SYS_DISABLE").is_some() {
        Err("disabled by DPDK_SYS_DISABLE at build time".to_string())
    } else {
        pkg_config::Config::new()
            .atleast_version("22.11")
            // Linking is decided with the bindings, not by the probe.
            .cargo_metadata(false)
            .env_metadata(false)
            .probe("libdpdk")
            .map_err(|e| {
                format!(
                    "pkg-config found no usable libdpdk (>= 22.11): {}",
                    first_line(&e.to_string())
                )
            })
    };

    match found {
        Ok(lib) => {
            println!("cargo::rustc-cfg=dpdk_available");
            println!("cargo::rustc-env=DPDK_SYS_VERSION={}", lib.version);
            println!(
                "cargo::rustc-env=DPDK_SYS_REASON=found libdpdk {} through pkg-config",
                lib.version
            );
        }
        Err(reason) => {
            if std::env::var_os("CARGO_FEATURE_REQUIRE").is_some() {
                panic!("dpdk-sys: feature `require` is set but DPDK is unavailable: {reason}");
            }
            println!("cargo::rustc-env=DPDK_SYS_VERSION=");
            println!("cargo::rustc-env=DPDK_SYS_REASON={reason}");
        }
    }
}

fn first_line(s: &str) -> &str {
    s.lines().find(|l| !l.trim().is_empty()).unwrap_or(s).trim()
}
