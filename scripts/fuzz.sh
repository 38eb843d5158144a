#!/usr/bin/env bash
# Runs every coverage-guided fuzz target (cargo-fuzz / libFuzzer, ASan) for a
# bounded time: FUZZ_SECONDS each (default 30, so ~1.5 min for the three).
# Starts from the seeds in fuzz/corpus/<target> (read-only here; new inputs go
# to target/fuzz-corpus) and installs cargo-fuzz if it is missing. The stable
# toolchain needs RUSTC_BOOTSTRAP=1 for cargo-fuzz's -Zsanitizer flag.
# Exits non-zero if any target finds a crash (the input is kept under
# fuzz/artifacts/<target>/); prints executions per target.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SECS=${FUZZ_SECONDS:-30}
TARGETS=${FUZZ_TARGETS:-"deserialize calls config"}
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked -q
fi
command -v g++ >/dev/null || { apt-get update -qq && apt-get install -y -qq g++ >/dev/null; }

cd fuzz
echo "== building fuzz targets"
cargo fuzz build -O
fail=0
summary=()
for t in $TARGETS; do
    work=$ROOT/target/fuzz-corpus/$t
    mkdir -p "$work" "corpus/$t"
    log=$ROOT/target/fuzz-$t.log
    echo "== fuzz $t for ${SECS}s"
    if cargo fuzz run -O "$t" "$work" "corpus/$t" -- \
        -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -max_len=4096 \
        -print_final_stats=1 >"$log" 2>&1; then
        status=ok
    else
        status=CRASH
        fail=1
        grep -v '^#' "$log" | tail -40
    fi
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
    summary+=("$t: $status, $execs executions in ${SECS}s, $cov")
done
echo "== summary"
printf '%s\n' "${summary[@]}"
n_fail=$(printf '%s\n' "${summary[@]}" | grep -c CRASH || true)
n_ok=$(printf '%s\n' "${summary[@]}" | grep -c ': ok' || true)
echo "fuzz: $n_ok passed, $n_fail failed"
exit $fail
