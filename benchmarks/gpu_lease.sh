#!/usr/bin/env bash
# The prepared device check for a short GPU lease: ONE call, under 10 minutes on an H200.
#
#   OUT=/tmp/out bash benchmarks/gpu_lease.sh
#   DRY_RUN=1 OUT=/tmp/out bash benchmarks/gpu_lease.sh    # tiny sizes, CPU, ~minutes
#
# 1. All-CNN-C population throughput at the paper's batch 256 (im2col and xla, P=8 and
#    32), against the sequential JAX loop in the same run (no torch on the device).
# 2. One full-budget population group of the MNIST study through the real driver
#    (study_throughput.py): MNIST_P LeNet-5s (default 1,024; 2,048 needs ~2.5 more
#    minutes of training) x 10,000 iterations x batch 64, step imbalance, rows stored,
#    figures made; wall time by phase, compiles, and the step benchmark for the same P.
#    Real MNIST from $MNIST_DIR (default ../shared/data/mnist) if present, else random
#    MNIST-shaped data (the cost is the same).
# 3. The paper's studies on one such GPU, extrapolated (paper_forecast.py): MNIST's
#    22,500 LeNet-5s and CIFAR-10's 480 All-CNNs x 70,000 iterations x batch 256.
#
# Each step runs under `timeout` from what is left of BUDGET_S (default 570 s), so the
# call ends in time and whatever finished comes back. Writes $OUT/log (raw output),
# $OUT/allcnn.log, $OUT/study.log, $OUT/forecast.log (the last line of each is JSON).
# Earlier checks (lowerings x dtypes for LeNet-5, band tiles, Winograd, P=4096) are
# `benchmarks/gpu_population.py` commands in benchmarks/README.md, "GPU (H200)".
set -u
OUT=${OUT:?set OUT to a folder for the results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
BUDGET_S=${BUDGET_S:-570}
MNIST_P=${MNIST_P:-1024}
MNIST_DIR=${MNIST_DIR:-../shared/data/mnist}
left() { echo $(( BUDGET_S - SECONDS )); }
step() {  # step NAME SECONDS_TO_KEEP_FOR_LATER CMD...: runs CMD with what is left
  local name=$1 keep=$2; shift 2
  local t=$(( $(left) - keep ))
  if (( t < 20 )); then echo "# $name: skipped, ${t}s left" | tee -a "$OUT/log"; return; fi
  echo "# $name: up to ${t}s: $*" | tee -a "$OUT/log"
  timeout --signal=TERM --kill-after=10 "$t" "$@" 2>&1 | tee "$OUT/$name.log" | tee -a "$OUT/log"
  echo "# $name: exit ${PIPESTATUS[0]} after $SECONDS s" | tee -a "$OUT/log"
}
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; } 2>&1 | tee -a "$OUT/log"

if [[ -n "${DRY_RUN:-}" ]]; then   # CPU, tiny: checks the wiring, not the speed
  ALLCNN=(--populations=1,2 --impls=im2col --batch=8 --steps=2 --repeats=1 --warmup=0
          --train-size=256 --cpu-devices=1)
  GRID=(--set "rhos=(10,)" --set "mus=(0.5,)" --repetitions=2 --iterations=6
        --chunk-steps=3 --set curve_test_examples=100 --step-repeats=1)
  MNIST_P=2
else
  ALLCNN=(--populations=8,32 --impls=im2col,xla --steps=10 --repeats=2 --warmup=0)
  # MNIST_P cases (8 ratios x 8 minority fractions x MNIST_P/64 repetitions), one trained
  # method each: one population of MNIST_P models at the paper's full budget.
  GRID=(--set "rhos=(10, 25, 50, 100, 250, 500, 1000, 2500)"
        --set "mus=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)"
        --repetitions=$(( MNIST_P / 64 )) --iterations=10000 --chunk-steps=500
        --step-repeats=1)
fi
if [[ -d "$MNIST_DIR" ]]; then DATA=(--set "data_dir=$MNIST_DIR"); else DATA=(--synthetic=60000,10000); fi

# 1. All-CNN first: bounded and short; the study gets the rest.
step allcnn 380 "$PY" -m benchmarks.population_throughput --model=allcnn --reference=jax \
  "${ALLCNN[@]}"
# 2. The MNIST group (keep ~20 s for the forecast).
step study 20 "$PY" -m benchmarks.study_throughput --config=experiments/configs/mnist_step.py \
  --set "methods=('baseline',)" --population-size="$MNIST_P" --torch-samples=0 --quiet \
  "${GRID[@]}" "${DATA[@]}"
# 3. The paper's studies, extrapolated from 1 and 2.
args=()
[[ -s "$OUT/study.log" ]] && args+=(--study "$OUT/study.log")
[[ -s "$OUT/allcnn.log" ]] && args+=(--allcnn "$OUT/allcnn.log")
"$PY" -m benchmarks.paper_forecast "${args[@]}" 2>&1 | tee "$OUT/forecast.log" | tee -a "$OUT/log"
date -u | tee -a "$OUT/log"
