//! Probes pkg-config for SPDK and records the result as a cfg and two env vars.
//!
//! The crate compiles either way: with `spdk_available` set when the library
//! was found, and without it (plus the reason in `SPDK_SYS_REASON`) when not.
//! The `require` feature turns the miss into a build error.

fn main() {
    println!("cargo::rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo::rerun-if-env-changed=SPDK_SYS_DISABLE");
    println!("cargo::rustc-check-cfg=cfg(spdk_available)");

    let found = if std::env::var_os("SPDK_SYS_DISABLE").is_some() {
        Err("disabled by SPDK_SYS_DISABLE at build time".to_string())
    } else {
        pkg_config::Config::new()
            .atleast_version("22.01")
            // Linking is decided with the bindings, not by the probe.
            .cargo_metadata(false)
            .env_metadata(false)
            .probe("spdk_nvme")
            .map_err(|e| {
                format!(
                    "pkg-config found no usable spdk_nvme (>= 22.01): {}",
                    first_line(&e.to_string())
                )
            })
    };

    match found {
        Ok(lib) => {
            println!("cargo::rustc-cfg=spdk_available");
            println!("cargo::rustc-env=SPDK_SYS_VERSION={}", lib.version);
            println!(
                "cargo::rustc-env=SPDK_SYS_REASON=found spdk_nvme {} through pkg-config",
                lib.version
            );
        }
        Err(reason) => {
            if std::env::var_os("CARGO_FEATURE_REQUIRE").is_some() {
                panic!("spdk-sys: feature `require` is set but SPDK is unavailable: {reason}");
            }
            println!("cargo::rustc-env=SPDK_SYS_VERSION=");
            println!("cargo::rustc-env=SPDK_SYS_REASON={reason}");
        }
    }
}

fn first_line(s: &str) -> &str {
    s.lines().find(|l| !l.trim().is_empty()).unwrap_or(s).trim()
}
