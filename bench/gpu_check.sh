#!/usr/bin/env bash
# One call on a lent GPU machine (no registry access, tokbench not installed): the GPU-only tests,
# then a suite, with the result JSON and logs under $OUT. Usage, from the repository root:
#   bash bench/gpu_check.sh [tokbench run options…]     (default: --suite standard)
# A short table of the run is printed last.
set -uo pipefail
export PYTHONPATH=.
OUT=${OUT:-results}
mkdir -p "$OUT"
python3 -m bench info 2>&1 | tee "$OUT/info.txt"
python3 -m pytest -q -m gpu -p no:cacheprovider tests 2>&1 | tail -n 40 | tee "$OUT/gpu-tests.txt"
args=("$@")
[ ${#args[@]} -eq 0 ] && args=(--suite standard)
python3 -m bench run "${args[@]}" --out "$OUT/run.json" 2>&1 | tee "$OUT/run.txt" | tail -n 120
