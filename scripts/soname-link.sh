#!/usr/bin/env bash
# Usage: scripts/soname-link.sh DIR
# Makes DIR/libattnsketch.so usable at run time after `cargo build`: the
# library carries the SONAME libattnsketch.so.<abi> (build.rs), so a program
# linked against it looks for that name; this creates DIR/<soname> ->
# libattnsketch.so and prints the SONAME. Idempotent.
set -euo pipefail
dir=${1:?usage: soname-link.sh DIR}
so=$dir/libattnsketch.so
test -f "$so" || { echo "soname-link: $so missing (cargo build --release first)" >&2; exit 1; }
name=$(readelf -d "$so" | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')
test -n "$name" || { echo "soname-link: $so has no SONAME" >&2; exit 1; }
ln -sfn libattnsketch.so "$dir/$name"
echo "$name"
