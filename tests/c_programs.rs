//! Builds `libattnsketch.so` and compiles every C program in `c-examples/`
//! and `tests/c/` with `cc -Wall -Wextra -Werror` against the checked-in
//! header, links it to the shared library and runs it: each program exits
//! non-zero when one of its checks fails. A line `// c-tests-args: ...` in
//! a source gives the program's arguments (shared with scripts/c-tests.sh).
//!
//! The library carries the SONAME `libattnsketch.so.<abi>` (build.rs), which
//! is what a linked program asks the loader for: [`soname_link`] puts that
//! name next to the build output, and each program is checked to record it.

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

/// The SONAME build.rs sets: `MAJOR` from 1.0 on, `0.MINOR` before.
fn expected_soname() -> String {
    let major: u32 = env!("CARGO_PKG_VERSION_MAJOR").parse().unwrap();
    let minor = env!("CARGO_PKG_VERSION_MINOR");
    if major == 0 {
        format!("libattnsketch.so.0.{minor}")
    } else {
        format!("libattnsketch.so.{major}")
    }
}

/// The `[name]` entries of `tag` (`SONAME`, `NEEDED`) in `readelf -d` of `file`.
fn dynamic_entries(file: &Path, tag: &str) -> Vec<String> {
    let out = Command::new("readelf")
        .arg("-d")
        .arg(file)
        .output()
        .expect("run readelf (binutils)");
    assert!(out.status.success(), "readelf -d {}", file.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&format!("({tag})")))
        .filter_map(|l| Some(l[l.find('[')? + 1..l.rfind(']')?].to_string()))
        .collect()
}

/// Checks the library's SONAME and links `dir/<soname>` -> `libattnsketch.so`.
fn soname_link(dir: &Path) -> String {
    let name = expected_soname();
    let so = dir.join("libattnsketch.so");
    assert_eq!(dynamic_entries(&so, "SONAME"), vec![name.clone()]);
    let link = dir.join(&name);
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink("libattnsketch.so", &link).expect("create the SONAME link");
    name
}

fn compile_and_run(src: &Path, lib: &Path, out_dir: &Path, cxx: bool, soname: &str) {
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
    let needed = dynamic_entries(&exe, "NEEDED");
    assert!(
        needed.iter().any(|n| n == soname),
        "{stem} should need {soname}: {needed:?}"
    );
    let text = std::fs::read_to_string(src).unwrap();
    let args: Vec<&str> = text
        .lines()
        .find_map(|l| l.strip_prefix("// c-tests-args:"))
        .map(|a| a.split_whitespace().collect())
        .unwrap_or_default();
    let run = Command::new(&exe)
        .args(&args)
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
    let soname = soname_link(&lib);
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
                Some("c") => compile_and_run(&f, &lib, &out_dir, false, &soname),
                Some("cpp") => compile_and_run(&f, &lib, &out_dir, true, &soname),
                _ => continue,
            }
            n += 1;
        }
    }
    assert!(n >= 2, "expected the C example and the C contract test");
}
