//! What the sys crates' build scripts do alike: asking pkg-config, and
//! writing bindgen's output. Included by each `build.rs` as a module.

use std::path::Path;
use std::process::Command;

/// `pkg-config <args>` (or `$PKG_CONFIG`), split into words.
pub fn pkg_config_words(args: &[&str]) -> Result<Vec<String>, String> {
    let exe = std::env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".into());
    let out = Command::new(&exe)
        .args(args)
        .output()
        .map_err(|e| format!("running {exe}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{exe} {} failed: {}",
            args.join(" "),
            first_line(&String::from_utf8_lossy(&out.stderr))
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(String::from)
        .collect())
}

/// The first non-empty line of `s`, trimmed: an error message in one line.
pub fn first_line(s: &str) -> &str {
    s.lines().find(|l| !l.trim().is_empty()).unwrap_or(s).trim()
}

/// bindgen over `csrc/shim.h` with the settings both sys crates use: core
/// types, enums as constants, Default and Debug derived, layout tests, no
/// comments, and cargo told to rerun when a header changes. The caller
/// adds its include paths and allow-list.
pub fn bindgen_builder(csrc: &Path) -> bindgen::Builder {
    bindgen::Builder::default()
        .header(csrc.join("shim.h").to_string_lossy())
        .clang_arg(format!("-I{}", csrc.display()))
        .use_core()
        .ctypes_prefix("::core::ffi")
        .default_enum_style(bindgen::EnumVariation::Consts)
        .prepend_enum_name(false)
        .derive_default(true)
        .derive_debug(true)
        .impl_debug(false)
        .layout_tests(true)
        .generate_comments(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
}

/// Runs `builder` over `header` and writes `out/bindings.rs`.
pub fn write_bindings(builder: bindgen::Builder, header: &Path, out: &Path) -> Result<(), String> {
    let generated = builder
        .generate()
        .map_err(|e| format!("bindgen over {} failed: {e}", header.display()))?;
    let path = out.join("bindings.rs");
    generated
        .write_to_file(&path)
        .map_err(|e| format!("writing {}: {e}", path.display()))
}
