#!/usr/bin/env bash
# For maintainers: rewrites attnsketch.patch from an edited source tree.
# Usage: integrations/llama.cpp/make-patch.sh PRISTINE_DIR EDITED_DIR
# Diffs the files the integration touches (src/llama-attnsketch.{h,cpp} are not part of the
# patch: they live in src/ here and build.sh copies them).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
a=${1:?usage: make-patch.sh PRISTINE_DIR EDITED_DIR}
b=${2:?usage: make-patch.sh PRISTINE_DIR EDITED_DIR}
files="src/CMakeLists.txt src/llama-context.h src/llama-context.cpp src/llama-graph.h src/llama-graph.cpp
src/llama-kv-cache.h src/llama-kv-cache.cpp src/llama-memory.h src/llama-model.cpp"
out=$here/attnsketch.patch
: > "$out"
for f in $files; do
    diff -u --label "a/$f" --label "b/$f" "$a/$f" "$b/$f" >> "$out" || true
done
echo "$out: $(grep -c '^[+-][^+-]' "$out") changed lines"
