//! The checked-in header equals the one cbindgen generates from `src/ffi`,
//! and its version macros agree with Cargo.toml and the runtime calls.

use std::ffi::CStr;
use std::path::Path;

const GENERATED: &str = include_str!(concat!(env!("OUT_DIR"), "/attnsketch.h"));

#[test]
fn header_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/attnsketch.h");
    if std::env::var_os("ATTNSKETCH_BLESS").is_some() {
        std::fs::write(&path, GENERATED).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == GENERATED,
        "include/attnsketch.h is stale: run scripts/regen-header.sh and commit the result"
    );
}

#[test]
fn version_macros_agree() {
    let major = env!("CARGO_PKG_VERSION_MAJOR");
    let minor = env!("CARGO_PKG_VERSION_MINOR");
    let patch = env!("CARGO_PKG_VERSION_PATCH");
    assert!(GENERATED.contains(&format!("#define ATTNSKETCH_VERSION_MAJOR {major}\n")));
    assert!(GENERATED.contains(&format!("#define ATTNSKETCH_VERSION_MINOR {minor}\n")));
    assert!(GENERATED.contains(&format!("#define ATTNSKETCH_VERSION_PATCH {patch}\n")));
    let s = unsafe { CStr::from_ptr(attnsketch::ffi::as_version_string()) }
        .to_str()
        .unwrap();
    assert_eq!(s, env!("CARGO_PKG_VERSION"));
    let n: u32 = major.parse::<u32>().unwrap() * 10000
        + minor.parse::<u32>().unwrap() * 100
        + patch.parse::<u32>().unwrap();
    assert_eq!(attnsketch::ffi::as_version_number(), n);
}

#[test]
fn contract_names_present() {
    for name in [
        "as_config_init",
        "as_create",
        "as_free",
        "as_push_token",
        "as_push_tokens",
        "as_append_kv",
        "as_push_query",
        "as_query",
        "as_recover_column",
        "as_heavy_tokens",
        "as_push_token_f16",
        "as_push_token_bf16",
        "as_serialize",
        "as_deserialize",
        "as_merge",
        "as_bank_create",
        "as_bank_free",
        "as_bank_push_token",
        "as_bank_push_tokens",
        "as_bank_state_bytes",
        "as_token_count",
        "as_state_bytes",
        "as_status_string",
        "as_version_string",
        "AS_OK",
        "AS_ERR_NULL",
        "AS_ERR_INVALID_ARG",
        "AS_ERR_NON_FINITE",
        "AS_ERR_WRONG_MODE",
        "AS_ERR_CORRUPT",
        "AS_ERR_BUFFER_TOO_SMALL",
        "AS_ERR_ALLOC",
        "AS_ERR_UNSUPPORTED",
        "AS_ERR_INTERNAL",
        "AS_MODE_CAUSAL",
        "AS_MODE_NONCAUSAL",
        "struct_size",
        "recovery_eps",
        "heavy_tokens",
    ] {
        assert!(GENERATED.contains(name), "header lacks {name}");
    }
}
