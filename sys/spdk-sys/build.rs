//! Finds an installed SPDK through pkg-config (`spdk_nvme`,
//! `spdk_env_dpdk`, `spdk_syslibs`), generates the bindings, compiles the
//! C shim and tells cargo how to link.
//!
//! The crate compiles either way: with `spdk` set when SPDK was
//! found (and the bindings, the shim and the link flags), and without it,
//! plus the reason in `SPDK_SYS_REASON`, when not. SPDK has no Debian
//! package: point `PKG_CONFIG_PATH` at an install's `lib/pkgconfig` (for
//! example `/opt/spdk/lib/pkgconfig` after `./configure --prefix=/opt/spdk
//! && make install`). The `require` feature turns the miss into a build
//! error.
//!
//! Linking: SPDK's own libraries (`libspdk_*.a`) are linked statically and
//! whole (`+whole-archive`), as SPDK requires: its transports, socket
//! implementations and log components register themselves from
//! constructors that nothing references, which a plain static link would
//! drop (NVMe/TCP would then find no TCP transport). Everything else
//! pkg-config lists (DPDK, isa-l, OpenSSL, libuuid, ...) links as it says.

#[path = "../build_common.rs"]
mod common;

use common::{first_line, pkg_config_words};
use std::path::{Path, PathBuf};

/// The pkg-config packages the NVMe driver needs.
const PACKAGES: [&str; 3] = ["spdk_nvme", "spdk_env_dpdk", "spdk_syslibs"];

/// The oldest SPDK release the bindings are written against (the first
/// with `opts_size` in `spdk_env_opts`).
const MIN_VERSION: (u32, u32) = (24, 9);

fn main() {
    for var in [
        "PKG_CONFIG_PATH",
        "PKG_CONFIG_LIBDIR",
        "PKG_CONFIG_SYSROOT_DIR",
        "SPDK_SYS_DISABLE",
        "LIBCLANG_PATH",
    ] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    println!("cargo::rerun-if-changed=csrc/shim.h");
    println!("cargo::rerun-if-changed=csrc/shim.c");
    println!("cargo::rustc-check-cfg=cfg(spdk)");

    match build() {
        Ok(version) => {
            let reason = format!(
                "found SPDK {version} through pkg-config ({}), linked static whole-archive",
                PACKAGES.join(", ")
            );
            println!("cargo::rustc-cfg=spdk");
            println!("cargo::rustc-env=SPDK_SYS_VERSION={version}");
            println!("cargo::rustc-env=SPDK_SYS_REASON={reason}");
            println!("cargo::metadata=available=1");
            println!("cargo::metadata=version={version}");
            println!("cargo::metadata=reason={reason}");
        }
        Err(reason) => {
            if std::env::var_os("CARGO_FEATURE_REQUIRE").is_some() {
                panic!("spdk-sys: feature `require` is set but SPDK is unavailable: {reason}");
            }
            println!("cargo::rustc-env=SPDK_SYS_VERSION=");
            println!("cargo::rustc-env=SPDK_SYS_REASON={reason}");
            println!("cargo::metadata=available=0");
            println!("cargo::metadata=version=");
            println!("cargo::metadata=reason={reason}");
        }
    }
}

fn build() -> Result<String, String> {
    if std::env::var_os("SPDK_SYS_DISABLE").is_some() {
        return Err("disabled by SPDK_SYS_DISABLE at build time".into());
    }
    for p in PACKAGES {
        pkg_config::Config::new()
            .cargo_metadata(false)
            .env_metadata(false)
            .probe(p)
            .map_err(|e| {
                format!(
                    "pkg-config found no {p} (SPDK has no distribution package: set \
                     PKG_CONFIG_PATH to an SPDK install's lib/pkgconfig): {}",
                    first_line(&e.to_string())
                )
            })?;
    }
    let includes: Vec<String> = pkg_config_words(&["--cflags-only-I", "spdk_nvme"])?
        .into_iter()
        .filter_map(|w| w.strip_prefix("-I").map(String::from))
        .collect();
    let version = version(&includes)?;
    let out = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    let manifest = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").ok_or("CARGO_MANIFEST_DIR is not set")?,
    );
    let csrc = manifest.join("csrc");
    bindings(&csrc, &includes, &out)?;
    shim(&csrc, &includes)?;
    let mut args = vec!["--libs", "--static"];
    args.extend(PACKAGES);
    emit_links(&pkg_config_words(&args)?);
    Ok(version)
}

/// "26.09-pre" from `spdk/version.h`, refused when older than
/// [`MIN_VERSION`].
fn version(includes: &[String]) -> Result<String, String> {
    let header = includes
        .iter()
        .map(|d| Path::new(d).join("spdk/version.h"))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("spdk/version.h not found under {includes:?}"))?;
    println!("cargo::rerun-if-changed={}", header.display());
    let text = std::fs::read_to_string(&header)
        .map_err(|e| format!("reading {}: {e}", header.display()))?;
    let define = |name: &str| -> Option<String> {
        text.lines().find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("#define") && w.next() == Some(name))
                .then(|| w.collect::<Vec<_>>().join(" "))
        })
    };
    let num = |name: &str| -> Result<u32, String> {
        define(name)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{name} not found in {}", header.display()))
    };
    let (major, minor, patch) = (
        num("SPDK_VERSION_MAJOR")?,
        num("SPDK_VERSION_MINOR")?,
        num("SPDK_VERSION_PATCH")?,
    );
    if (major, minor) < MIN_VERSION {
        return Err(format!(
            "SPDK {major}.{minor:02} is older than the {}.{:02} the bindings need",
            MIN_VERSION.0, MIN_VERSION.1
        ));
    }
    let suffix = define("SPDK_VERSION_SUFFIX")
        .map(|s| s.trim_matches('"').to_owned())
        .unwrap_or_default();
    let patch = if patch == 0 {
        String::new()
    } else {
        format!(".{patch}")
    };
    Ok(format!("{major}.{minor:02}{patch}{suffix}"))
}

/// Runs bindgen over `csrc/shim.h` (which includes SPDK's headers) with an
/// allow-list of what the NVMe backend uses.
fn bindings(csrc: &Path, includes: &[String], out: &Path) -> Result<(), String> {
    let header = csrc.join("shim.h");
    let mut b = common::bindgen_builder(csrc).clang_args(includes.iter().map(|d| format!("-I{d}")));
    for f in [
        // Memory.
        "spdk_mem_register",
        "spdk_mem_unregister",
        "spdk_vtophys",
        // Probing and controllers.
        "spdk_nvme_transport_id_parse",
        "spdk_nvme_probe",
        "spdk_nvme_detach",
        "spdk_nvme_ctrlr_process_admin_completions",
        "spdk_nvme_ctrlr_get_first_active_ns",
        "spdk_nvme_ctrlr_get_next_active_ns",
        "spdk_nvme_ctrlr_get_ns",
        "spdk_nvme_ctrlr_free_io_qpair",
        // Namespaces.
        "spdk_nvme_ns_is_active",
        "spdk_nvme_ns_get_id",
        "spdk_nvme_ns_get_sector_size",
        "spdk_nvme_ns_get_num_sectors",
        "spdk_nvme_ns_get_max_io_xfer_size",
        "spdk_nvme_ns_get_flags",
        // I/O.
        "spdk_nvme_ns_cmd_read",
        "spdk_nvme_ns_cmd_write",
        "spdk_nvme_ns_cmd_flush",
        "spdk_nvme_ns_cmd_write_zeroes",
        "spdk_nvme_qpair_process_completions",
    ] {
        b = b.allowlist_function(f);
    }
    b = b
        .allowlist_function("dp_spdk_.*")
        .allowlist_type("spdk_nvme_transport_id")
        .allowlist_type("spdk_nvme_transport_type")
        .allowlist_type("spdk_nvme_ns_flags")
        .allowlist_var("SPDK_NVME_TRANSPORT_.*")
        .allowlist_var("SPDK_NVME_NS_.*_SUPPORTED")
        .allowlist_var("SPDK_VERSION_.*")
        // Only ever behind pointers on the Rust side.
        .opaque_type("spdk_nvme_ctrlr")
        .opaque_type("spdk_nvme_ns")
        .opaque_type("spdk_nvme_qpair")
        .opaque_type("spdk_nvme_cpl")
        .opaque_type("spdk_nvme_ctrlr_opts");
    common::write_bindings(b, &header, out)
}

fn shim(csrc: &Path, includes: &[String]) -> Result<(), String> {
    let mut cc = cc::Build::new();
    cc.file(csrc.join("shim.c"))
        .include(csrc)
        .opt_level(2)
        .warnings(true)
        .extra_warnings(true)
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-missing-field-initializers");
    for d in includes {
        cc.include(d);
    }
    cc.try_compile("spdk_shim")
        .map_err(|e| format!("compiling csrc/shim.c: {e}"))
}

/// pkg-config's static link words as cargo directives: SPDK's libraries
/// static and whole; other archives in SPDK's own library directory (the
/// isa-l it was built with, newer than a distribution's, with the same
/// soname) static, so that the loader cannot pick the system's shared one
/// at run time; the rest as pkg-config names them.
fn emit_links(words: &[String]) {
    let dirs: Vec<&str> = words.iter().filter_map(|w| w.strip_prefix("-L")).collect();
    let archive_in_dirs = |name: &str| {
        dirs.iter()
            .any(|d| Path::new(d).join(format!("lib{name}.a")).is_file())
    };
    let mut seen = std::collections::HashSet::new();
    for w in words {
        if !seen.insert(w.as_str()) {
            continue;
        }
        if let Some(dir) = w.strip_prefix("-L") {
            println!("cargo::rustc-link-search=native={dir}");
        } else if let Some(name) = w.strip_prefix("-l") {
            if name.starts_with("spdk_") {
                println!("cargo::rustc-link-lib=static:-bundle,+whole-archive={name}");
            } else if archive_in_dirs(name) {
                println!("cargo::rustc-link-lib=static:-bundle={name}");
            } else {
                println!("cargo::rustc-link-lib={name}");
            }
        } else if w == "-pthread" {
            println!("cargo::rustc-link-lib=pthread");
        } else if w.starts_with("-Wl,") {
            // --no-as-needed and friends: rustc's own defaults serve.
        } else {
            println!("cargo::warning=spdk-sys: ignoring link word {w}");
        }
    }
}
