//! Builds `libattnsketch.so` and compiles every C program in `c-examples/`
//! and `tests/c/` with `cc -Wall -Wextra -Werror` against the checked-in
//! header, links it to the shared library and runs it: each program exits
//! non-zero when one of its checks fails.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `target/release` after building the cdylib (cargo test does not build it).
fn lib_dir() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo)
        .args(["build", "--release", "--lib", "--quiet"])
        .current_dir(root())
        .status()
        .expect("run cargo build");
    assert!(st.success(), "cargo build --release --lib failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let dir = target.join("release");
    assert!(dir.join("libattnsketch.so").exists());
    dir
}

fn compile_and_run(src: &Path, lib: &Path, out_dir: &Path, cxx: bool) {
    let stem = src.file_stem().unwrap().to_str().unwrap();
    let exe = out_dir.join(stem);
    let compiler = if cxx { "c++" } else { "cc" };
    let std_flag = if cxx { "-std=c++17" } else { "-std=c11" };
    let out = Command::new(compiler)
        .args([
            std_flag,
            "-O1",
            "-g",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
        ])
        .arg("-I")
        .arg(root().join("include"))
        .arg(src)
        .arg("-o")
        .arg(&exe)
        .arg("-L")
        .arg(lib)
        .args(["-lattnsketch", "-lm", "-lpthread"])
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .output()
        .expect("run the C compiler");
    assert!(
        out.status.success(),
        "compiling {}:\n{}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(&exe)
        .current_dir(root())
        .output()
        .expect("run C program");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    println!("== {stem}\n{text}");
    assert!(run.status.success(), "{stem} failed:\n{text}");
}

#[test]
fn c_programs_compile_and_pass() {
    let lib = lib_dir();
    let out_dir = std::env::temp_dir().join(format!("attnsketch-c-{}", std::process::id()));
    std::fs::create_dir_all(&out_dir).unwrap();
    let mut n = 0;
    for dir in ["c-examples", "tests/c"] {
        let mut files: Vec<_> = std::fs::read_dir(root().join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files {
            match f.extension().and_then(|e| e.to_str()) {
                Some("c") => compile_and_run(&f, &lib, &out_dir, false),
                Some("cpp") => compile_and_run(&f, &lib, &out_dir, true),
                _ => continue,
            }
            n += 1;
        }
    }
    assert!(n >= 2, "expected the C example and the C contract test");
}
