#!/usr/bin/env bash
# The one prepared call for a lent GPU machine (no registry access, tokbench not installed: it
# runs from the checkout). Three phases, each under its own time cap, each writing under $OUT
# as it goes: a result file is rewritten after every case, so a cap or a kill keeps what ran.
#
#   bash bench/gpu_check.sh             on the GPU machine (device tool: timeout_s 600)
#   bash bench/gpu_check.sh --dry-run   on any machine first: each phase's cases and the
#                                       configs its Triton kernels would autotune over
#
# Phases and caps (seconds; 570 in all, under the device tool's 600 per call):
#   a  tokbench info, the GPU-only tests (pytest -m gpu)                                  150
#   b  ceilings, then a reference slice of the standard suite: matmul bf16 and fp8 at
#      1024³, 4096³, 8192³ and M = 1, 64, 1024, 8192 on N×K = 14336×4096 (150); prefill
#      attention, d128, causal and not, at 2k and 16k tokens (60); decode at batch 1, 64,
#      256 with 4k and 32k context (45); MLA decode (DeepSeek-V3's latent, 128 and 16 heads)
#      at batch 1, 64 with 4k context (15)                                                270
#   c  the llama-3.1-8b model suite at 1000 input + 1000 output tokens (fp8 GEMMs, fp8 KV
#      cache, TP 1; the torch and SDPA baselines) (120), and its estimate with --validate
#      (a real decoder layer timed against the op sum) (30)                                150
# Files under $OUT (at most 8 come back): info.txt, gpu-tests.txt, reference.json,
# reference.txt, llama-3.1-8b.json, llama-3.1-8b.txt.
set -uo pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT=${OUT:-results}
DRY=${1:-}
mkdir -p "$OUT"

# cap SECONDS LOG COMMAND...: run, appending to LOG; SIGINT at the cap, so tokbench stops like
# an interrupted run and keeps every case it measured.
cap() {
    local seconds=$1 log=$2
    shift 2
    echo "\$ $* (cap ${seconds}s)" >>"$log"
    timeout --signal=INT --kill-after=20 "$seconds" "$@" >>"$log" 2>&1
    local rc=$?
    [ $rc -eq 124 ] && echo "phase cap of ${seconds}s reached" >>"$log"
    return $rc
}

tokbench() { python3 -m bench "$@"; }

M_SHAPES=()
for n in 1024 4096 8192; do M_SHAPES+=(--shape "M=$n,N=$n,K=$n"); done
for m in 1 64 1024 8192; do M_SHAPES+=(--shape "M=$m,N=14336,K=4096"); done
A_SHAPES=()
for causal in true false; do
    A_SHAPES+=(--shape "B=8,H=32,Hkv=8,Sq=2048,Skv=2048,D=128,causal=$causal")
    A_SHAPES+=(--shape "B=1,H=32,Hkv=8,Sq=16384,Skv=16384,D=128,causal=$causal")
done
D_SHAPES=()
for b in 1 64 256; do
    for l in 4096 32768; do D_SHAPES+=(--shape "B=$b,H=32,Hkv=8,D=128,L=$l,page=16"); done
done
ATTN_IMPLS=(--impl triton --impl sdpa-flash --impl sdpa-efficient --impl sdpa-cudnn --impl sdpa-math)
REF="$OUT/reference.json"
MATMUL=(run --op matmul --dtype bf16 --dtype fp8 "${M_SHAPES[@]}")
ATTENTION=(run --op attention --dtype bf16 "${A_SHAPES[@]}" "${ATTN_IMPLS[@]}")
DECODE=(run --op decode --dtype bf16 "${D_SHAPES[@]}" "${ATTN_IMPLS[@]}" --impl gather+sdpa)
MLA=(run --op mla --dtype bf16)
for h in 128 16; do for b in 1 64; do MLA+=(--shape "B=$b,H=$h,L=4096"); done; done
MODEL=(--model llama-3.1-8b --precision fp8 --kv-precision fp8 --isl 1000 --osl 1000)
# The baselines alone at the model's shapes: Triton would autotune over some 400 configs there,
# beyond the phase's cap; phase b measures the Triton kernels.
BASELINES=(--impl torch --impl sdpa-flash --impl sdpa-cudnn --impl gather+sdpa)

if [ "$DRY" = "--dry-run" ]; then
    echo "phase a: $(python3 -m pytest -q -m gpu --collect-only -p no:cacheprovider tests | tail -n 1)"
    for args in "MATMUL[@]" "ATTENTION[@]" "DECODE[@]" "MLA[@]"; do
        tokbench "${!args}" --dry-run | tail -n 4
    done
    tokbench run "${MODEL[@]}" "${BASELINES[@]}" --dry-run | tail -n 4
    exit 0
fi

# a: what the machine is, and the GPU-only tests.
tokbench info >"$OUT/info.txt" 2>&1
cap 150 "$OUT/gpu-tests.txt" python3 -m pytest -q -m gpu -p no:cacheprovider tests

# b: the reference slice, one file; the first call measures the ceilings.
log="$OUT/reference.txt"
cap 150 "$log" tokbench "${MATMUL[@]}" --out "$REF"
cap 60 "$log" tokbench "${ATTENTION[@]}" --out "$REF" --append --no-ceilings
cap 45 "$log" tokbench "${DECODE[@]}" --out "$REF" --append --no-ceilings
cap 15 "$log" tokbench "${MLA[@]}" --out "$REF" --append --no-ceilings

# c: one model's shapes, then its estimate checked against a real decoder layer.
log="$OUT/llama-3.1-8b.txt"
cap 120 "$log" tokbench run "${MODEL[@]}" "${BASELINES[@]}" --out "$OUT/llama-3.1-8b.json"
cap 30 "$log" tokbench estimate "${MODEL[@]}" --results "$OUT/llama-3.1-8b.json" --validate
tail -n 60 "$OUT/reference.txt" "$log"
