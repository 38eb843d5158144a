#!/usr/bin/env bash
# Builds the `levels` bench binary once per x86-64 micro-architecture level
# (RUSTFLAGS="-C target-cpu=..."), each into its own target dir, runs every
# build this CPU can execute (interleaved rounds inside each run; medians),
# and prints the us/call of each case side by side.
#
#   benches/levels.sh [quick]      # extra args go to the binary
#
# The runtime-dispatched levels (portable/avx2/avx512) run inside every
# build; target-cpu changes what the portable kernels and the rest of the
# crate are compiled for.
set -euo pipefail
cd "$(dirname "$0")/.."
flags=$(grep -m1 '^flags' /proc/cpuinfo || true)
has() { for f in "$@"; do [[ " $flags " == *" $f "* ]] || return 1; done; }
cpus=()
for cpu in x86-64 x86-64-v2 x86-64-v3 x86-64-v4; do
  case $cpu in
    x86-64) ok=1 ;;
    x86-64-v2) has sse4_2 ssse3 popcnt && ok=1 || ok=0 ;;
    x86-64-v3) has sse4_2 avx2 fma f16c bmi2 movbe && ok=1 || ok=0 ;;
    x86-64-v4) has avx2 avx512f avx512bw avx512vl avx512dq avx512cd && ok=1 || ok=0 ;;
  esac
  if [[ $ok == 1 ]]; then cpus+=("$cpu"); else echo "# $cpu: this CPU cannot run it: skipped"; fi
done
out=$(mktemp -d)
for cpu in "${cpus[@]}"; do
  exe=$(CARGO_TARGET_DIR="target/levels-$cpu" RUSTFLAGS="-C target-cpu=$cpu" \
    cargo bench --bench levels --no-run --message-format=json 2>/dev/null |
    grep -o '"executable":"[^"]*levels-[^"]*"' | tail -1 | cut -d'"' -f4)
  echo "# built $cpu: $exe"
  "$exe" --bench "$@" | tee "$out/$cpu.txt"
done
echo
echo "# side by side: us/call per build (rows: case; columns: -C target-cpu)"
printf '%-28s' case; for cpu in "${cpus[@]}"; do printf ' %12s' "$cpu"; done; echo
files=()
for cpu in "${cpus[@]}"; do files+=("$out/$cpu.txt"); done
# Case names fill the first 28 columns; the median us/call follows.
awk -v nf="${#files[@]}" '
  FNR == 1 { f++ }
  /^(push|memcpy|exact)/ {
    key = substr($0, 1, 28); split(substr($0, 29), a, " ")
    if (!(key in seen)) { seen[key] = 1; order[++n] = key }
    val[key, f] = a[1]
  }
  END {
    for (i = 1; i <= n; i++) {
      line = order[i]
      for (j = 1; j <= nf; j++) line = line sprintf(" %12s", ((order[i], j) in val) ? val[order[i], j] : "-")
      print line
    }
  }' "${files[@]}"
rm -rf "$out"
