#!/usr/bin/env bash
# Builds llama.cpp with attnsketch and prints where the binaries are.
#
# 1. the pinned llama.cpp: the PyPI sdist llama-cpp-python==0.3.36 vendors it
#    (upstream commit 0c1e570) in vendor/llama.cpp; downloaded with pip, sha256 checked;
# 2. applies attnsketch.patch (hooks) and copies src/llama-attnsketch.{h,cpp} into it;
# 3. builds libattnsketch.a (cargo build --release --lib) and the patched CPU build (CMake,
#    only the targets asked for).
#
# Usage: integrations/llama.cpp/build.sh [options]
#   --cache DIR     downloads, source and build dirs (default: $ATTNSKETCH_LLAMA_CACHE or
#                   integrations/llama.cpp/.cache)
#   --sdist FILE    an already downloaded llama_cpp_python-0.3.36.tar.gz (sha256 still checked)
#   --pristine DIR  an already extracted vendor/llama.cpp of that sdist (no download, no check)
#   --src DIR       the patched source tree (default CACHE/llama.cpp); kept across runs and
#                   re-patched only when the patch changed, so rebuilds are incremental
#   --build DIR     the CMake build dir (default CACHE/build), reused
#   --targets LIST  CMake targets (default "llama-perplexity llama-completion llama-bench")
#   --jobs N        parallel jobs (default 2)
# The binaries read ATTNSKETCH_* environment variables (README.md); unset, they behave as upstream.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
version=0.3.36
sha256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
cache=${ATTNSKETCH_LLAMA_CACHE:-$here/.cache}
sdist= pristine= src= build=
targets="llama-perplexity llama-completion llama-bench"
jobs=2
while [ $# -gt 0 ]; do
    case $1 in
        --cache) cache=$2; shift 2 ;;
        --sdist) sdist=$2; shift 2 ;;
        --pristine) pristine=$2; shift 2 ;;
        --src) src=$2; shift 2 ;;
        --build) build=$2; shift 2 ;;
        --targets) targets=$2; shift 2 ;;
        --jobs) jobs=$2; shift 2 ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) echo "build.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
src=${src:-$cache/llama.cpp}
build=${build:-$cache/build}
log() { echo "build.sh: $*" >&2; }

# Tools: cmake (system, else pip-installed into CACHE/venv with what pip download needs)
venv=$cache/venv
need_venv() {
    if [ ! -x "$venv/bin/python" ]; then
        log "creating $venv (cmake, scikit-build-core)"
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q --upgrade pip
    fi
    "$venv/bin/python" -c 'import scikit_build_core, cmake' 2>/dev/null ||
        "$venv/bin/pip" install -q scikit-build-core cmake
    export PATH="$venv/bin:$PATH"
}
# a build dir remembers its cmake; another one would reconfigure and rebuild everything
cmake_bin=$(sed -n 's/^CMAKE_COMMAND:INTERNAL=//p' "$build/CMakeCache.txt" 2>/dev/null || true)
if [ -n "$cmake_bin" ] && [ -x "$cmake_bin" ]; then
    export PATH="$(dirname "$cmake_bin"):$PATH"
fi
command -v cmake >/dev/null || need_venv

# 1. The pinned source
if [ -z "$pristine" ]; then
    if [ -z "$sdist" ]; then
        sdist=$cache/dl/llama_cpp_python-$version.tar.gz
        if [ ! -f "$sdist" ]; then
            need_venv
            log "downloading llama-cpp-python==$version (sdist) from PyPI"
            python -m pip download -q --no-deps --no-binary :all: --no-build-isolation \
                -d "$cache/dl" "llama-cpp-python==$version"
        fi
    fi
    got=$(sha256sum "$sdist" | cut -d' ' -f1)
    if [ "$got" != "$sha256" ]; then
        log "sha256 mismatch for $sdist: $got, expected $sha256"
        exit 1
    fi
    pristine=$cache/pristine
    if [ "$(cat "$pristine/.attnsketch-sdist" 2>/dev/null)" != "$sha256" ]; then
        log "extracting vendor/llama.cpp"
        rm -rf "$pristine" && mkdir -p "$pristine"
        tar -xzf "$sdist" -C "$pristine" --strip-components=3 "llama_cpp_python-$version/vendor/llama.cpp"
        echo "$sha256" > "$pristine/.attnsketch-sdist"
    fi
    stamp=$sha256
else
    pristine=$(cd "$pristine" && pwd)
    test -f "$pristine/src/llama-graph.cpp" || { log "$pristine is not a llama.cpp source tree"; exit 1; }
    stamp="pristine:$pristine"
fi

# 2. The patched tree: a copy of the pristine one, re-patched only when the patch changed
patch_file=$here/attnsketch.patch
meta=$src/.attnsketch
if [ "$(cat "$meta/source" 2>/dev/null)" != "$stamp" ]; then
    log "copying the source to $src"
    rm -rf "$src" && mkdir -p "$(dirname "$src")"
    cp -a "$pristine" "$src"
    rm -f "$src/.git" "$src/.attnsketch-sdist"   # .git points to a parent repository that is not there
    mkdir -p "$meta" && echo "$stamp" > "$meta/source"
fi
if ! cmp -s "$patch_file" "$meta/applied.patch"; then
    if [ -f "$meta/applied.patch" ] && ! patch -R -p1 -s -f --no-backup-if-mismatch -d "$src" < "$meta/applied.patch"; then
        log "could not revert the previous patch; start again with: rm -rf $src"
        exit 1
    fi
    rm -f "$meta/applied.patch"
    log "applying attnsketch.patch"
    patch -p1 -s -f --no-backup-if-mismatch -d "$src" < "$patch_file"
    cp "$patch_file" "$meta/applied.patch"
fi
for f in llama-attnsketch.h llama-attnsketch.cpp; do
    cmp -s "$here/src/$f" "$src/src/$f" || cp "$here/src/$f" "$src/src/$f"
done

# 3. libattnsketch, then llama.cpp
log "cargo build --release --lib"
(cd "$root" && cargo build -q --release --lib)
lib=${CARGO_TARGET_DIR:-$root/target}/release/libattnsketch.a
test -f "$lib" || { log "$lib missing"; exit 1; }

log "cmake ($build)"
cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=ON \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
    -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF \
    -DATTNSKETCH_INCLUDE_DIR="$root/include" -DATTNSKETCH_LIBRARY="$lib" > "$build.cmake.log" 2>&1 ||
    { tail -30 "$build.cmake.log" >&2; exit 1; }
# shellcheck disable=SC2086
cmake --build "$build" -j "$jobs" --target $targets > "$build.build.log" 2>&1 ||
    { grep -E "error|Error" "$build.build.log" | head -30 >&2; tail -5 "$build.build.log" >&2; exit 1; }

echo "bin: $build/bin"
for t in $targets; do
    echo "$t: $build/bin/$t"
done
