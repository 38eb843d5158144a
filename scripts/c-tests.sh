#!/usr/bin/env bash
# Builds and runs every C (and C++) program in c-examples/ and tests/c/ against
# include/ and target/release/libattnsketch.so:
#   1. plain build with -Wall -Wextra -Werror, run;
#   2. ASan+UBSan build (gcc -fsanitize=address,undefined), run;
#   3. valgrind --error-exitcode=1 --leak-check=full on the plain build;
#   4. tests/c/threads.c under ThreadSanitizer and valgrind's helgrind.
# Proves each sanitizer runtime is linked (ldd/nm) and live: a canary with a
# deliberate bug must FAIL under the same flags. Installs valgrind if missing.
# A line "// c-tests-args: ..." in a source gives its arguments (all runs);
# each program must record NEEDED libattnsketch.so.<abi> (the SONAME, build.rs).
# Exits non-zero on any warning, failure or finding.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/target/c-tests
mkdir -p "$OUT"
CC_C=${CC:-gcc}
CC=$CC_C

if ! command -v valgrind >/dev/null; then
    echo "== installing valgrind"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq valgrind >/dev/null
fi
command -v "$CC" >/dev/null || { apt-get update -qq && apt-get install -y -qq gcc >/dev/null; }

echo "== cargo build --release"
cargo build --release -q
LIB=$ROOT/target/release
test -f "$LIB/libattnsketch.so"
# The library's SONAME is libattnsketch.so.<abi> (build.rs): the loader looks
# for that name in the rpath, so give it one next to the build output.
SONAME=$(bash "$ROOT/scripts/soname-link.sh" "$LIB")
echo "   SONAME $SONAME"

CXX=${CXX:-g++}
WARN=(-Wall -Wextra -Werror -pedantic -g -I"$ROOT/include" -I"$ROOT/tests/c")
LINK=(-L"$LIB" -lattnsketch -lpthread -lm -Wl,-rpath,"$LIB")
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1:detect_stack_use_after_return=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1

fail=0
results=()
note() { results+=("$1"); echo "   $1"; }

# --- canaries: the sanitizer must be linked and must fire -------------------
canary() { # name flags... ; expects a non-zero exit and the sanitizer's report
    local name=$1 tool=$2; shift 2
    "$CC" -std=c11 -g -O0 "$@" "$ROOT/tests/c/canary/$name.c" -o "$OUT/canary-$name" -lpthread
    if "$OUT/canary-$name" 2>"$OUT/canary-$name.log"; then
        note "FAIL canary $name: the deliberate bug was not caught"; fail=1
    elif grep -q "$tool" "$OUT/canary-$name.log"; then
        note "ok   canary $name caught by $tool"
    else
        note "FAIL canary $name: no $tool report"; fail=1
    fi
}
echo "== sanitizer canaries"
canary asan_overflow AddressSanitizer -fsanitize=address,undefined
canary ubsan_overflow "runtime error" -fsanitize=address,undefined -fno-sanitize-recover=all
canary tsan_race ThreadSanitizer -fsanitize=thread

linked() { # binary runtime-lib symbol
    local libs syms
    libs=$(ldd "$1"); syms=$(nm "$1")
    if grep -q "$2" <<<"$libs" && grep -q "$3" <<<"$syms"; then
        note "ok   $(basename "$1") links $2 ($3)"; return 0
    fi
    note "FAIL $1: $2 / $3 not linked"; fail=1; return 1
}

shopt -s nullglob
SOURCES=("$ROOT"/c-examples/*.c "$ROOT"/c-examples/*.cpp "$ROOT"/tests/c/*.c "$ROOT"/tests/c/*.cpp)
for src in "${SOURCES[@]}"; do
    name=$(basename "$src"); name=${name%.*}
    dir=$(basename "$(dirname "$src")")
    echo "== $dir/$(basename "$src")"
    if [[ $src == *.cpp ]]; then
        CC=$CXX; COMMON=(-std=c++17 "${WARN[@]}")
    else
        CC=${CC_C:-gcc}; COMMON=(-std=c11 "${WARN[@]}")
    fi
    # Arguments for the runs: a line "// c-tests-args: ..." in the source
    # (programs whose defaults are sized for a real run take smaller ones).
    read -r -a ARGS <<<"$(sed -n 's|^// c-tests-args:||p' "$src" | head -1)"
    # 1. plain
    if ! "$CC" "${COMMON[@]}" -O1 "$src" "${LINK[@]}" -o "$OUT/$name"; then
        note "FAIL $name: build"; fail=1; continue
    fi
    if "$OUT/$name" "${ARGS[@]}" >"$OUT/$name.log" 2>&1; then note "ok   $name plain"; else
        note "FAIL $name plain"; cat "$OUT/$name.log"; fail=1; fi
    if [ "$(readelf -d "$OUT/$name" | sed -n 's/.*(NEEDED).*\[\(libattnsketch[^]]*\)\].*/\1/p')" != "$SONAME" ]; then
        note "FAIL $name does not record NEEDED $SONAME"; fail=1; fi
    # 2. ASan + UBSan
    "$CC" "${COMMON[@]}" -O1 -fno-omit-frame-pointer -fsanitize=address,undefined \
        -fno-sanitize-recover=all "$src" "${LINK[@]}" -o "$OUT/$name-asan"
    linked "$OUT/$name-asan" libasan __asan_init || true
    linked "$OUT/$name-asan" libubsan __ubsan_handle || true
    if "$OUT/$name-asan" "${ARGS[@]}" >"$OUT/$name-asan.log" 2>&1; then note "ok   $name asan+ubsan"; else
        note "FAIL $name asan+ubsan"; cat "$OUT/$name-asan.log"; fail=1; fi
    # 3. valgrind memcheck
    if valgrind -q --error-exitcode=1 --leak-check=full --show-leak-kinds=definite,indirect,possible \
        --errors-for-leak-kinds=definite,indirect,possible --suppressions="$ROOT/tests/c/support/rust-std.supp" \
        "$OUT/$name" "${ARGS[@]}" >"$OUT/$name-vg.log" 2>&1; then note "ok   $name valgrind"; else
        note "FAIL $name valgrind"; cat "$OUT/$name-vg.log"; fail=1; fi
    # 4. threads: TSan and helgrind
    if grep -q "pthread_create" "$src"; then
        "$CC" "${COMMON[@]}" -O1 -fsanitize=thread "$src" "${LINK[@]}" -o "$OUT/$name-tsan"
        linked "$OUT/$name-tsan" libtsan __tsan_init || true
        if "$OUT/$name-tsan" >"$OUT/$name-tsan.log" 2>&1; then note "ok   $name tsan"; else
            note "FAIL $name tsan"; cat "$OUT/$name-tsan.log"; fail=1; fi
        # helgrind models pthread locks only, not the futex/atomic
        # synchronisation of Rust std (Mutex, scoped-thread join), so the
        # bank's worker threads (part 4) run under TSan above and below only.
        if ATTNSKETCH_TEST_NO_WORKERS=1 valgrind -q --tool=helgrind --error-exitcode=1 "$OUT/$name" >"$OUT/$name-hg.log" 2>&1; then
            note "ok   $name helgrind"; else
            note "FAIL $name helgrind"; head -80 "$OUT/$name-hg.log"; fail=1; fi
    fi
done

# 5. threads.c under TSan with the library itself instrumented (rustc
#    -Zsanitizer=thread on the stable toolchain via RUSTC_BOOTSTRAP; std stays
#    uninstrumented). gcc's libtsan lacks LLVM's __tsan_mem* entry points:
#    tests/c/support/tsan_shim.c forwards them to the intercepted libc calls.
echo "== threads.c against a TSan-instrumented libattnsketch"
CC=$CC_C; COMMON=(-std=c11 "${WARN[@]}")
TLIB=$ROOT/target/tsan/x86_64-unknown-linux-gnu/release
if RUSTC_BOOTSTRAP=1 RUSTFLAGS="-Zsanitizer=thread -Cunsafe-allow-abi-mismatch=sanitizer" \
    cargo build -q --release --lib --target x86_64-unknown-linux-gnu --target-dir "$ROOT/target/tsan"; then
    bash "$ROOT/scripts/soname-link.sh" "$TLIB" >/dev/null
    "$CC" "${COMMON[@]}" -O1 -fsanitize=thread "$ROOT/tests/c/threads.c" "$ROOT/tests/c/support/tsan_shim.c" \
        -L"$TLIB" -lattnsketch -lpthread -lm -Wl,-rpath,"$TLIB" -o "$OUT/threads-tsan-rust"
    if [ "$(nm -D "$TLIB/libattnsketch.so" | grep -c __tsan_)" -gt 0 ]; then
        note "ok   libattnsketch.so (tsan build) calls the TSan runtime"
    else
        note "FAIL libattnsketch.so (tsan build) is not instrumented"; fail=1
    fi
    if "$OUT/threads-tsan-rust" >"$OUT/threads-tsan-rust.log" 2>&1; then
        note "ok   threads tsan (library instrumented)"; else
        note "FAIL threads tsan (library instrumented)"; cat "$OUT/threads-tsan-rust.log"; fail=1; fi
else
    note "FAIL building the TSan-instrumented library"; fail=1
fi

echo "== summary"
printf '%s\n' "${results[@]}"
n_ok=$(printf '%s\n' "${results[@]}" | grep -c '^ok' || true)
n_fail=$(printf '%s\n' "${results[@]}" | grep -c '^FAIL' || true)
echo "c-tests: $n_ok passed, $n_fail failed"
exit $fail
