//! Finds the system's DPDK through pkg-config, generates the bindings,
//! compiles the C shim and tells cargo how to link.
//!
//! The crate compiles either way: with `dpdk` set when the
//! library was found (and the bindings, the shim and the link flags), and
//! without it, plus the reason in `DPDK_SYS_REASON`, when not. The
//! `require` feature turns the miss into a build error.
//!
//! Linking follows what `pkg-config --libs libdpdk` says: shared by
//! default, the way Debian, Ubuntu and Fedora package DPDK (the drivers
//! are plugins that EAL loads from its driver directory at start-up), or
//! static with every driver archive inside `--whole-archive` (drivers
//! register themselves from constructors that nothing references, so a
//! plain static link would drop them) when `DPDK_SYS_STATIC=1`.
//!
//! What dependents see (the `links = "dpdk"` metadata, as
//! `DEP_DPDK_<KEY>` in their build scripts): `AVAILABLE` (`1` or `0`),
//! `VERSION`, `LINK` (`shared` or `static`), `REASON`.

#[path = "../build_common.rs"]
mod common;

use common::{first_line, pkg_config_words};
use std::path::{Path, PathBuf};

/// The oldest DPDK whose `rte_mbuf` layout and APIs the bindings are
/// checked against (the LTS of 2022).
const MIN_VERSION: &str = "22.11";

fn main() {
    for var in [
        "PKG_CONFIG_PATH",
        "PKG_CONFIG_LIBDIR",
        "PKG_CONFIG_SYSROOT_DIR",
        "DPDK_SYS_DISABLE",
        "DPDK_SYS_STATIC",
        "LIBCLANG_PATH",
    ] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    println!("cargo::rerun-if-changed=csrc/shim.h");
    println!("cargo::rerun-if-changed=csrc/shim.c");
    println!("cargo::rustc-check-cfg=cfg(dpdk)");

    match build() {
        Ok(found) => {
            println!("cargo::rustc-cfg=dpdk");
            println!("cargo::rustc-env=DPDK_SYS_VERSION={}", found.version);
            println!("cargo::rustc-env=DPDK_SYS_LINK={}", found.link.name());
            let reason = format!(
                "found libdpdk {} through pkg-config, linked {}",
                found.version,
                found.link.name()
            );
            println!("cargo::rustc-env=DPDK_SYS_REASON={reason}");
            println!("cargo::metadata=available=1");
            println!("cargo::metadata=version={}", found.version);
            println!("cargo::metadata=link={}", found.link.name());
            println!("cargo::metadata=reason={reason}");
        }
        Err(reason) => {
            if std::env::var_os("CARGO_FEATURE_REQUIRE").is_some() {
                panic!("dpdk-sys: feature `require` is set but DPDK is unavailable: {reason}");
            }
            println!("cargo::warning=dpdk-sys: building without DPDK: {reason}");
            println!("cargo::rustc-env=DPDK_SYS_VERSION=");
            println!("cargo::rustc-env=DPDK_SYS_LINK=");
            println!("cargo::rustc-env=DPDK_SYS_REASON={reason}");
            println!("cargo::metadata=available=0");
            println!("cargo::metadata=version=");
            println!("cargo::metadata=link=");
            println!("cargo::metadata=reason={reason}");
        }
    }
}

/// How the libraries are linked.
#[derive(Clone, Copy)]
enum Link {
    Shared,
    Static,
}

impl Link {
    fn name(self) -> &'static str {
        match self {
            Link::Shared => "shared",
            Link::Static => "static",
        }
    }
}

struct Found {
    version: String,
    link: Link,
}

fn build() -> Result<Found, String> {
    if std::env::var_os("DPDK_SYS_DISABLE").is_some() {
        return Err("disabled by DPDK_SYS_DISABLE at build time".into());
    }
    let lib = pkg_config::Config::new()
        .atleast_version(MIN_VERSION)
        // The link flags are read below, with whole-archive kept intact.
        .cargo_metadata(false)
        .env_metadata(false)
        .probe("libdpdk")
        .map_err(|e| {
            format!(
                "pkg-config found no usable libdpdk (>= {MIN_VERSION}): {}",
                first_line(&e.to_string())
            )
        })?;
    let link = if std::env::var("DPDK_SYS_STATIC").is_ok_and(|v| v == "1") {
        Link::Static
    } else {
        Link::Shared
    };
    let cflags = pkg_config_words(&["--cflags", "libdpdk"])?;
    let out = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    let manifest = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").ok_or("CARGO_MANIFEST_DIR is not set")?,
    );
    let csrc = manifest.join("csrc");

    bindings(&csrc, &cflags, &out)?;
    shim(&csrc, &cflags)?;
    match link {
        Link::Shared => emit_links(&pkg_config_words(&["--libs", "libdpdk"])?),
        Link::Static => emit_links(&pkg_config_words(&["--libs", "--static", "libdpdk"])?),
    }?;
    Ok(Found {
        version: lib.version,
        link,
    })
}

/// Runs bindgen over `csrc/shim.h` (which includes the DPDK headers) with
/// an allow-list of what the framework uses.
fn bindings(csrc: &Path, cflags: &[String], out: &Path) -> Result<(), String> {
    let header = csrc.join("shim.h");
    let mut b = common::bindgen_builder(csrc)
        .clang_args(cflags)
        // Macros such as RTE_ETH_RSS_IP are expressions of other macros
        // (RTE_BIT64); clang evaluates them.
        .clang_macro_fallback()
        // Its scratch files (.macro_eval.c, a precompiled header) go to
        // OUT_DIR; by default they land in the crate's source directory.
        .clang_macro_fallback_build_dir(out);
    for f in [
        // EAL, lcores, errors.
        "rte_eal_init",
        "rte_eal_cleanup",
        "rte_eal_iova_mode",
        "rte_eal_has_hugepages",
        "rte_eal_get_runtime_dir",
        "rte_strerror",
        "rte_thread_register",
        "rte_thread_unregister",
        "rte_socket_id",
        "rte_lcore_count",
        "rte_version",
        // Interrupt sources (callbacks on EAL's interrupt thread).
        "rte_intr_instance_alloc",
        "rte_intr_instance_free",
        "rte_intr_type_set",
        "rte_intr_fd_set",
        "rte_intr_callback_register",
        "rte_intr_callback_unregister",
        // Devices.
        "rte_dev_probe",
        "rte_dev_remove",
        // Ethdev control path.
        "rte_eth_dev_get_port_by_name",
        "rte_eth_dev_get_name_by_port",
        "rte_eth_dev_is_valid_port",
        "rte_eth_dev_info_get",
        "rte_eth_dev_configure",
        "rte_eth_dev_adjust_nb_rx_tx_desc",
        "rte_eth_rx_queue_setup",
        "rte_eth_tx_queue_setup",
        "rte_eth_dev_start",
        "rte_eth_dev_stop",
        "rte_eth_dev_close",
        "rte_eth_dev_socket_id",
        "rte_eth_dev_get_mtu",
        "rte_eth_promiscuous_enable",
        "rte_eth_link_get_nowait",
        "rte_eth_stats_get",
        "rte_eth_stats_reset",
        "rte_eth_macaddr_get",
        "rte_eth_dev_rss_hash_conf_get",
        "rte_eth_dev_rss_hash_update",
        "rte_eth_dev_rss_reta_query",
        "rte_eth_dev_rss_reta_update",
        // Mempools and mbufs (the non-inline ones).
        "rte_pktmbuf_pool_create",
        "rte_mempool_free",
        "rte_mempool_avail_count",
        "rte_mempool_in_use_count",
        "rte_mempool_mem_iter",
        "rte_mem_virt2memseg_list",
        "rte_pktmbuf_free_bulk",
        // What the inline burst functions call when a queue has callbacks
        // (see `eth_rx_burst` in lib.rs).
        "rte_eth_call_rx_callbacks",
        "rte_eth_call_tx_callbacks",
        "rte_eth_add_rx_callback",
        "rte_eth_add_tx_callback",
    ] {
        b = b.allowlist_function(f);
    }
    b = b
        // The shim: DPDK's static inline fast path as real functions.
        .allowlist_function("dp_.*")
        .allowlist_type("rte_mbuf")
        .allowlist_type("rte_mempool")
        .allowlist_type("rte_eth_.*")
        .allowlist_type("rte_ether_addr")
        .allowlist_type("rte_iova_mode")
        // The per-port fast-path table that DPDK's inline rx/tx burst
        // functions read (public ABI since 21.11).
        .allowlist_var("rte_eth_fp_ops")
        .allowlist_var("RTE_ETH_RSS_.*")
        .allowlist_var("RTE_ETH_RX_OFFLOAD_.*")
        .allowlist_var("RTE_ETH_TX_OFFLOAD_.*")
        .allowlist_var("RTE_ETH_LINK_.*")
        .allowlist_var("RTE_ETH_SPEED_NUM_UNKNOWN")
        .allowlist_var("RTE_ETH_MQ_RX_.*")
        .allowlist_var("RTE_ETH_MQ_TX_.*")
        .allowlist_var("RTE_ETH_RETA_GROUP_SIZE")
        .allowlist_var("RTE_MBUF_F_RX_(IP|L4)_CKSUM_.*")
        .allowlist_var("RTE_MBUF_F_TX_(TCP|UDP|IP)_CKSUM")
        .allowlist_var("RTE_MBUF_F_TX_IPV4")
        .allowlist_var("RTE_INTR_INSTANCE_F_PRIVATE")
        .allowlist_type("rte_intr_handle_type")
        .allowlist_var("RTE_MAX_LCORE")
        .allowlist_var("RTE_MAX_ETHPORTS")
        .allowlist_var("RTE_MEMPOOL_CACHE_MAX_SIZE")
        .allowlist_var("RTE_MBUF_DEFAULT_BUF_SIZE")
        .allowlist_var("RTE_PKTMBUF_HEADROOM")
        .allowlist_var("RTE_MBUF_PRIV_ALIGN")
        .allowlist_var("RTE_ETHDEV_QUEUE_STAT_CNTRS")
        .allowlist_var("RTE_ETH_NAME_MAX_LEN")
        .allowlist_var("RTE_MEMPOOL_NAMESIZE")
        .allowlist_var("LCORE_ID_ANY")
        .allowlist_var("SOCKET_ID_ANY")
        .allowlist_var("RTE_VER_.*")
        // Opaque where the framework only passes pointers through.
        .opaque_type("rte_mempool")
        .opaque_type("rte_device")
        .opaque_type("rte_mbuf_ext_shared_info");
    common::write_bindings(b, &header, out)
}

/// Compiles the shim with DPDK's own flags (its headers need the `-march`
/// and `-include rte_config.h` that pkg-config gives).
fn shim(csrc: &Path, cflags: &[String]) -> Result<(), String> {
    let mut cc = cc::Build::new();
    cc.file(csrc.join("shim.c"))
        .include(csrc)
        .opt_level(3)
        .warnings(true)
        .extra_warnings(true)
        // DPDK's headers trip these; the shim itself is small enough to read.
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-sign-compare")
        .flag_if_supported("-Wno-missing-field-initializers");
    // `-include rte_config.h` is two words; keep pairs together.
    let mut words = cflags.iter();
    while let Some(w) = words.next() {
        if w == "-include" {
            if let Some(file) = words.next() {
                cc.flag("-include").flag(file);
            }
        } else {
            cc.flag(w);
        }
    }
    cc.try_compile("dpdk_shim")
        .map_err(|e| format!("compiling csrc/shim.c: {e}"))
}

/// Translates pkg-config's link words into cargo directives, keeping
/// `--whole-archive` regions (static drivers) as `+whole-archive` libraries.
fn emit_links(words: &[String]) -> Result<(), String> {
    let mut whole = false;
    for w in words {
        if let Some(flags) = w.strip_prefix("-Wl,") {
            for f in flags.split(',') {
                match f {
                    "--whole-archive" => whole = true,
                    "--no-whole-archive" => whole = false,
                    // rustc already links with --as-needed; --export-dynamic
                    // only serves `-d` plugins of a static binary, which
                    // the framework does not load.
                    "--as-needed" | "--no-as-needed" | "--export-dynamic" => {}
                    other => println!("cargo::warning=dpdk-sys: ignoring link flag -Wl,{other}"),
                }
            }
        } else if let Some(dir) = w.strip_prefix("-L") {
            println!("cargo::rustc-link-search=native={dir}");
        } else if let Some(file) = w.strip_prefix("-l:") {
            // An archive named exactly (`-l:librte_eal.a`): static, not
            // bundled into this rlib (the final link finds it on the search
            // path), whole when inside --whole-archive.
            let modifiers = if whole {
                "-bundle,+whole-archive,+verbatim"
            } else {
                "-bundle,+verbatim"
            };
            println!("cargo::rustc-link-lib=static:{modifiers}={file}");
        } else if let Some(name) = w.strip_prefix("-l") {
            println!("cargo::rustc-link-lib={name}");
        } else if w == "-pthread" {
            println!("cargo::rustc-link-lib=pthread");
        } else {
            println!("cargo::warning=dpdk-sys: ignoring link word {w}");
        }
    }
    Ok(())
}
