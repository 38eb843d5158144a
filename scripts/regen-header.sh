#!/usr/bin/env bash
# Regenerates include/attnsketch.h from src/ffi (via build.rs into OUT_DIR)
# and copies it into the source tree. CI's `tests/header.rs` fails when the
# checked-in header differs from the generated one.
set -euo pipefail
cd "$(dirname "$0")/.."
ATTNSKETCH_BLESS=1 cargo test --release --test header -q
git --no-pager diff --stat -- include/attnsketch.h || true
