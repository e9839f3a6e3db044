#!/usr/bin/env bash
# The paper's balanced All-CNN-C run on CIFAR-10 (#17), one device-lease call at a time.
#
#   OUT=/tmp/out bash benchmarks/gpu_cifar10_balanced.sh
#   OUT=/tmp/out LRS="(0.05, 0.005)" bash benchmarks/gpu_cifar10_balanced.sh   # next lease
#   DRY_RUN=1 OUT=/tmp/out CIFAR_DIR=<image folder> bash benchmarks/gpu_cifar10_balanced.sh
#
# Trains experiments/configs/paper_cifar10_balanced.py (All-CNN-C, 70,000 iterations x
# batch 256, two runs per base rate) for the base rates in LRS (a Python tuple, default
# the first rate; a later lease passes the rates so far plus the next: the store's rows
# are kept and only the new rate's networks train) in WORKDIR (default
# docs/runs/paper_cifar10_balanced), for what is left of BUDGET_S (default 570 s), then
# stops the sweep with SIGTERM. A finished group's rows are in the store; a group cut
# short leaves its Orbax checkpoint (every CKPT steps, default 5,000; ~11 MB a network),
# and the next call resumes from it when WORKDIR/checkpoints is carried back.
#
# Writes to $OUT: log (the sweep's output, with images/s and ETA), run/ (the store,
# metrics.jsonl, study_config.json, config.json, report files when the group finished,
# checkpoints/). Put run/ back as WORKDIR and commit the store (not the checkpoints).
#
# Data: CIFAR_DIR, default ../shared/data/cifar10-jpeg, else .device/cifar10-jpeg.tar.gz
# (copy the tarball there, git-ignored, and name it in the run's carry).
set -u
OUT=${OUT:?set OUT to a folder for the results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
BUDGET_S=${BUDGET_S:-570}
CKPT=${CKPT:-5000}
LRS=${LRS:-"(0.05,)"}
WORKDIR=${WORKDIR:-docs/runs/paper_cifar10_balanced}
if [[ -z "${CIFAR_DIR:-}" ]]; then
  if [[ -d ../shared/data/cifar10-jpeg ]]; then CIFAR_DIR=../shared/data/cifar10-jpeg
  else CIFAR_DIR=.device/cifar10-jpeg.tar.gz; fi
fi
ARGS=(--config=experiments/configs/paper_cifar10_balanced.py "--workdir=$WORKDIR"
      "--config.base_lrs=$LRS" "--config.data_dir=$CIFAR_DIR" "--config.checkpoint_every=$CKPT")
if [[ -n "${DRY_RUN:-}" ]]; then   # CPU, tiny: checks the wiring, not the speed
  ARGS+=(--config.iterations=4 --config.batch_size=8 --config.chunk_steps=2
         --config.checkpoint_every=2 --config.curve_points=2 --config.curve_train_per_class=1
         --config.curve_test_examples=10 --config.eval_batch_size=10 --cpu_devices=1
         "--config.schedule_kwargs.boundaries=(2, 3)")
fi
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; } 2>&1 |
  tee -a "$OUT/log"
t=$(( BUDGET_S - SECONDS - 40 ))   # 40 s to stop (the sweep ends within 10 s) and copy
echo "# sweep: up to ${t}s: $PY -m experiments.sweep ${ARGS[*]}" | tee -a "$OUT/log"
timeout --signal=TERM --kill-after=15 "$t" "$PY" -m experiments.sweep "${ARGS[@]}" 2>&1 |
  grep --line-buffered -v "^[IW][0-9]\{4\} " | tee -a "$OUT/log"
echo "# sweep: exit ${PIPESTATUS[0]} after $SECONDS s (124: stopped at the budget)" |
  tee -a "$OUT/log"
mkdir -p "$OUT/run"
for f in results.sqlite metrics.jsonl study_config.json config.json report.md report.json \
         results.csv; do
  [[ -f "$WORKDIR/$f" ]] && cp "$WORKDIR/$f" "$OUT/run/"
done
[[ -d "$WORKDIR/checkpoints" ]] && cp -r "$WORKDIR/checkpoints" "$OUT/run/"
du -sh "$OUT/run" 2>&1 | tee -a "$OUT/log"
date -u | tee -a "$OUT/log"
