#!/usr/bin/env bash
# The prepared device check for a short GPU lease (one call, ~7 minutes on an H200).
#
#   OUT=/tmp/out bash benchmarks/gpu_lease.sh
#
# Writes $OUT/gpu.md (dated sections for benchmarks/README.md) and $OUT/log (raw output).
# Each invocation appends its own section, and gpu_population records a configuration
# that fails (out of memory, a compiler refusal) as a row and goes on, so one failure
# loses nothing else. Measured with it: benchmarks/README.md, "GPU (H200)".
set -u
OUT=${OUT:?set OUT to a folder for the results}
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
run() { "$PY" -m benchmarks.gpu_population --markdown="$OUT/gpu.md" "$@" 2>&1 | tee -a "$OUT/log"; }
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; } 2>&1 | tee -a "$OUT/log"
# 1. lowering x dtype at a mid and a large population
run --sizes=256,2048 --impls=im2col,banded --dtypes=float32,bfloat16 --steps=50 --repeats=3
# 2. the band tile rule (tuned on CPU: >= 192 band columns) against one-column tiles
#    and untiled bands
for cols in 1 10000; do
  run --sizes=2048 --impls=banded --dtypes=bfloat16 --steps=50 --repeats=3 --min-band-cols=$cols
done
# 3. Winograd for conv2 (CPU's choice since session 4; unmeasured on a GPU; it computes
#    in float32 even under bfloat16)
run --sizes=2048 --impls=winograd --dtypes=float32,bfloat16 --steps=50 --repeats=3
# 4. does a larger population still gain (memory permitting)?
run --sizes=4096 --impls=banded --dtypes=bfloat16 --steps=50 --repeats=3
date -u | tee -a "$OUT/log"
