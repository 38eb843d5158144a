//! Generates the C header from `src/ffi` into `$OUT_DIR/attnsketch.h`.
//! The checked-in copy `include/attnsketch.h` is compared with it by
//! `tests/header.rs` (and refreshed by `scripts/regen-header.sh`); this
//! script never writes into the source tree.

use std::env;
use std::path::PathBuf;

fn main() {
    let crate_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("attnsketch.h");
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=src/lib.rs");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed=build.rs");

    let v = |k: &str| env::var(k).unwrap().parse::<u32>().unwrap();
    let (major, minor, patch) = (
        v("CARGO_PKG_VERSION_MAJOR"),
        v("CARGO_PKG_VERSION_MINOR"),
        v("CARGO_PKG_VERSION_PATCH"),
    );
    let version = format!(
        "/* Version of this header; as_version_string() / as_version_number() give the library's. */\n\
         #define ATTNSKETCH_VERSION_MAJOR {major}\n\
         #define ATTNSKETCH_VERSION_MINOR {minor}\n\
         #define ATTNSKETCH_VERSION_PATCH {patch}\n\
         #define ATTNSKETCH_VERSION_NUMBER (ATTNSKETCH_VERSION_MAJOR * 10000 + ATTNSKETCH_VERSION_MINOR * 100 + ATTNSKETCH_VERSION_PATCH)\n\
         #define ATTNSKETCH_VERSION_STRING \"{major}.{minor}.{patch}\"\n"
    );
    soname(major, minor);
    let mut config =
        cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml");
    config.after_includes = Some(version);
    match cbindgen::Builder::new()
        .with_src(crate_dir.join("src/ffi/mod.rs"))
        .with_config(config)
        .generate()
    {
        Ok(b) => {
            b.write_to_file(&out);
        }
        Err(e) => {
            // A parse failure must not hide a compile error: rustc reports the real one.
            println!("cargo:warning=cbindgen failed: {e}");
        }
    }
}

/// ABI key of the shared library: `MAJOR` from 1.0 on, `0.MINOR` before.
///
/// Below 1.0 a minor bump may change the "Experimental:" functions (and, by
/// Cargo's semver, anything), so 0.1 and 0.2 must not satisfy each other's
/// `DT_NEEDED`; from 1.0 on the stable tier is frozen and the major alone
/// decides (docs/packaging.md). `scripts/install.sh` and the test harnesses
/// read the same rule from the built library (`readelf -d`).
fn abi_key(major: u32, minor: u32) -> String {
    if major == 0 {
        format!("0.{minor}")
    } else {
        major.to_string()
    }
}

/// Sets the ELF SONAME `libattnsketch.so.<abi_key>` of the cdylib (ELF targets only).
fn soname(major: u32, minor: u32) {
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let family = env::var("CARGO_CFG_TARGET_FAMILY").unwrap_or_default();
    let elf = family == "unix" && !matches!(os.as_str(), "macos" | "ios" | "tvos" | "watchos");
    if elf {
        let key = abi_key(major, minor);
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libattnsketch.so.{key}");
    }
}
