#!/usr/bin/env bash
# The whole test suite (README's second command; .ci/run calls it).
# Rust unit + integration tests (incl. the generated-header check, the C and
# C++ programs compiled with -Wall -Wextra -Werror against the .so, and the
# real heads of ../shared/data), then formatting.
set -euo pipefail
cd "$(dirname "$0")/.."
export ATTNSKETCH_REQUIRE_DATA=${ATTNSKETCH_REQUIRE_DATA:-1}
cargo test --release --all-targets 2>&1
cargo fmt --all -- --check
echo "scripts/test.sh: all passed"
