#!/usr/bin/env bash
# Runs the whole test suite once per CPU level this machine supports, with
# the process cap ATTNSKETCH_CPU=<level> (handles created without an explicit
# level then use that level's kernels). Levels the CPU lacks are reported and
# skipped. Exit status: non-zero if any run fails.
set -euo pipefail
cd "$(dirname "$0")/.."
levels=(portable)
if grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo && grep -qw f16c /proc/cpuinfo; then
  levels+=(avx2)
  if grep -qw avx512f /proc/cpuinfo && grep -qw avx512vl /proc/cpuinfo && grep -qw avx512bw /proc/cpuinfo; then
    levels+=(avx512)
  else
    echo "test-levels: avx512 not supported by this CPU: skipped"
  fi
else
  echo "test-levels: avx2 not supported by this CPU: skipped (and avx512)"
fi
for l in "${levels[@]}"; do
  echo "=== ATTNSKETCH_CPU=$l cargo test --release ==="
  ATTNSKETCH_CPU="$l" cargo test --release "$@"
done
echo "test-levels: passed for: ${levels[*]}"
