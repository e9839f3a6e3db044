"""The device check for a GPU: LeNet-5 population throughput and the paper-scale forecast.

One prepared script for a short accelerator lease. For each (conv lowering, P) it times
`imbjax.population.train_chunk` (the engine's real step: per-model index plans, Caffe SGD,
divergence masks) after compilation, and reports images/s, networks per hour at the
paper's MNIST budget (10,000 iterations x batch 64) and the hours the paper's whole MNIST
study (22,500 LeNet-5s) would take at that rate. Last line: one JSON object.

  python -m benchmarks.gpu_population --sizes=256,2048 --impls=im2col,banded \
      --dtypes=float32,bfloat16 --steps=50 --repeats=3
  python -m benchmarks.gpu_population --sizes=2048 --impls=banded --model-block=256
  python -m benchmarks.gpu_population --sizes=2048 --impls=banded --min-band-cols=1
  # on a lease, add --markdown=$OUT/gpu.md to bring back a section for benchmarks/README.md;
  # benchmarks/gpu_lease.sh is the whole prepared check (one call, ~6 minutes).
  # Not yet measured on a GPU: 'winograd' (the CPU's choice for LeNet-5 since session 4).

On CPU it runs too (use small sizes); figures from a GPU lease are recorded in
benchmarks/README.md: `--markdown FILE` appends a dated section (the command and a table)
ready to paste there.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import sys
import time

import jax
import numpy as np

from benchmarks import population_throughput
from imbjax import engine
from imbjax import models
from imbjax.ops import banded

PAPER_NETWORKS = 22_500
PAPER_ITERATIONS = 10_000
BATCH = 64


def _members(p: int, labels: np.ndarray):
  rng = np.random.default_rng(0)
  plans = []
  for i in range(p):
    n = int(rng.integers(1_000, 50_000))  # plans of different lengths, padded and masked
    plans.append(np.sort(rng.choice(labels.size, n, replace=n > labels.size)))
  return engine.stack_members([
      engine.make_member(jax.random.key(i), plan, 10, base_lr=0.01) for i, plan in
      enumerate(plans)])


def lenet5_with_min_band_cols(min_band_cols: int) -> str:
  """Registers LeNet-5 with `Conv.min_band_cols` bound; returns its registry name.

  The engine builds its model by name (`Trainer.model`), so a variant of LeNet-5 with
  another band tile rule is a registered model of its own.
  """
  name = f"lenet5_min_band_cols_{min_band_cols}"
  models.register(name, functools.partial(models.get, "lenet5",
                                          conv_options={"min_band_cols": min_band_cols}),
                  input_shape=models.input_shape("lenet5"),
                  output_layers=models.output_layers("lenet5"), has_batch_stats=False,
                  auto_impl=models.auto_impl("lenet5"), overwrite=True)
  return name


def measure(impl: str, p: int, steps: int, data, labels, model_block=None,
            dtype: str = "float32", repeats: int = 1, min_band_cols: int | None = None) -> dict:
  model = "lenet5" if min_band_cols is None else lenet5_with_min_band_cols(min_band_cols)
  trainer = engine.Trainer(model=model, batch_size=BATCH, total_steps=PAPER_ITERATIONS,
                           conv_impl=impl, model_block=model_block, compute_dtype=dtype)
  members = jax.device_put(_members(p, labels))
  state = engine.init_population(trainer, members)
  t0 = time.perf_counter()
  # XLA's own account of this configuration's memory (arguments + outputs + temporaries
  # - donated aliases); the device's peak_bytes_in_use is a process-wide high-water mark,
  # so in a run of several configurations it repeats the largest one seen so far.
  xla_bytes = population_throughput.compiled_bytes(trainer, state, members, data, steps)
  state, m = engine.train_chunk(trainer, state, members, data, steps)
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    state, m = engine.train_chunk(trainer, state, members, data, steps)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t0)
  dt = float(np.median(times))
  images_per_s = p * steps * BATCH / dt
  nets_per_hour = images_per_s * 3600 / (PAPER_ITERATIONS * BATCH)
  stats = jax.devices()[0].memory_stats() or {}
  return {"impl": impl, "P": p, "model_block": model_block, "dtype": dtype, "steps": steps,
          "min_band_cols": banded.MIN_BAND_COLS if min_band_cols is None else min_band_cols,
          "seconds": dt, "all_seconds": times, "compile_s": compile_s,
          "images_per_s": images_per_s, "networks_per_hour": nets_per_hour,
          "paper_mnist_study_hours": PAPER_NETWORKS / nets_per_hour,
          "xla_bytes": xla_bytes, "peak_bytes_in_use": stats.get("peak_bytes_in_use")}


def markdown(out: dict, command: str) -> str:
  """A dated section for benchmarks/README.md: the command and one table row per run."""
  when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
  lines = [f"### {out['device']}, measured {when} (jax {jax.__version__})", "",
           "```bash", command, "```", "",
           "| conv lowering | dtype | P | model_block | images/s | LeNet-5s per hour "
           "(10k it. x 64) | paper's MNIST study (22,500 nets) | memory (XLA, per model) |",
           "|---|---|---|---|---|---|---|---|"]
  for r in out["results"]:
    if "error" in r:
      lines.append(f"| {r['impl']} | {r['dtype']} | {r['P']:,} | {r['model_block']} | "
                   f"failed: {r['error']} | | | |")
      continue
    mem = r["xla_bytes"]
    mem = "-" if mem < 0 else f"{mem / 1e9:.1f} GB ({mem / r['P'] / 2 ** 20:.1f} MiB)"
    lines.append(f"| {r['impl']} | {r['dtype']} | {r['P']:,} | {r['model_block']} | "
                 f"{r['images_per_s']:,.0f} | {r['networks_per_hour']:,.0f} | "
                 f"{r['paper_mnist_study_hours']:.2f} h | "
                 f"{mem} |")
  return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser()
  ap.add_argument("--sizes", default="1,256,2048")
  ap.add_argument("--impls", default="im2col,xla")
  ap.add_argument("--steps", type=int, default=100)
  ap.add_argument("--model-block", type=int, default=None,
                  help="Trainer.model_block (default: per backend; all models on a GPU)")
  ap.add_argument("--train-size", type=int, default=60_000, help="examples on the device")
  ap.add_argument("--dtypes", default="float32",
                  help="Trainer.compute_dtype values to run, e.g. float32,bfloat16")
  ap.add_argument("--repeats", type=int, default=1,
                  help="timed chunks per configuration; the median is reported")
  ap.add_argument("--min-band-cols", type=int, default=None,
                  help="'banded' tile rule: narrowest tile whose band has at least this "
                  "many columns (Conv.min_band_cols; default imbjax.ops.MIN_BAND_COLS, tuned on "
                  "CPU); "
                  "1 gives one-column tiles, a large value untiled bands")
  ap.add_argument("--markdown", default=None,
                  help="also append a dated markdown section (command + table) to this "
                  "file, for benchmarks/README.md (e.g. $OUT/gpu.md on a device lease)")
  args = ap.parse_args(argv)
  if args.steps < 1 or args.repeats < 1:
    raise ValueError(f"--steps and --repeats must be >= 1, got {args.steps} and "
                     f"{args.repeats}")
  if args.min_band_cols is not None and args.min_band_cols < 1:
    raise ValueError(f"--min-band-cols must be >= 1, got {args.min_band_cols}")
  rng = np.random.default_rng(0)
  n = args.train_size
  labels = rng.integers(0, 10, n).astype(np.int32)
  data = jax.device_put(engine.TrainData(rng.random((n, 28, 28, 1), dtype=np.float32), labels))
  print(f"device: {jax.devices()[0].device_kind}, jax {jax.__version__}", flush=True)
  results = []
  for dtype in args.dtypes.split(","):
    for impl in args.impls.split(","):
      for p in (int(s) for s in args.sizes.split(",")):
        try:
          r = measure(impl, p, args.steps, data, labels, args.model_block, dtype,
                      args.repeats, args.min_band_cols)
        except Exception as e:  # pylint: disable=broad-except
          # A short lease must not lose the other rows to one failing configuration (an
          # out-of-memory P, a lowering this compiler refuses): record it and go on.
          r = {"impl": impl, "P": p, "model_block": args.model_block, "dtype": dtype,
               "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
          results.append(r)
          print(f"{impl:7s} {dtype:8s} P={p:5d}: FAILED {r['error']}", flush=True)
          continue
        results.append(r)
        print(f"{impl:7s} {dtype:8s} P={p:5d}: {r['images_per_s']:12,.0f} img/s "
              f"{r['networks_per_hour']:9,.0f} nets/h  paper study "
              f"{r['paper_mnist_study_hours']:8.2f} h  (compile {r['compile_s']:.1f}s, "
              f"XLA memory {r['xla_bytes']})", flush=True)
  done = [r for r in results if "error" not in r]
  best = max(done, key=lambda r: r["images_per_s"]) if done else None
  out = {"device": jax.devices()[0].device_kind, "results": results, "best": best}
  if args.markdown:
    given, shown = list(argv if argv is not None else sys.argv[1:]), []
    while given:  # the command as run, less --markdown and its value
      a = given.pop(0)
      if a == "--markdown":
        given = given[1:]
      elif not a.startswith("--markdown="):
        shown.append(a)
    with open(args.markdown, "a") as f:
      f.write(markdown(out, " ".join(["python -m benchmarks.gpu_population", *shown])) + "\n")
  print(json.dumps(out))
  return out


if __name__ == "__main__":
  main()
