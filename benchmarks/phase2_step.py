"""Two-phase training's phase 2 step: the output layers' backward pass alone, A/B.

Times, in the same rounds (alternating), the engine's `train_chunk` on one population of
freshly initialised models under three settings:

* ``phase1``: ordinary members (every layer trains): the full backward pass;
* ``phase2``: output-only members (`make_member(..., output_only=True)`, as two-phase
  training's phase 2 builds them), with `train_chunk`'s default ``outputs_only``: the
  loss is differentiated with respect to the output layers alone;
* ``phase2_masked``: the same members with ``outputs_only=False``: the full backward
  pass, the frozen layers' updates masked (the reference: what phase 2 ran until
  2026-12-02, when a misplaced `stop_gradient` cut nothing).

It prints milliseconds per model-step (wall and process CPU, best round) and
``masked / phase2`` (above 1: phase 2 is faster than the full backward pass), and checks
that ``phase2`` and ``phase2_masked`` end with the same parameters, bit for bit.

  python -m benchmarks.phase2_step [--model lenet5] [--population 4] [--steps 24]

Last line: JSON.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from imbjax import engine

SIZES = {"lenet5": ((28, 28, 1), 32), "allcnn": ((32, 32, 3), 32),
         "resnet10": ((32, 32, 3), 16)}


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--model", default="lenet5", choices=sorted(SIZES))
  ap.add_argument("--population", type=int, default=4)
  ap.add_argument("--steps", type=int, default=24)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--examples", type=int, default=1000)
  a = ap.parse_args(argv)
  if min(a.population, a.steps, a.repeats, a.examples) < 1:
    raise SystemExit(f"--population, --steps, --repeats and --examples must be >= 1; got "
                     f"{a.population}, {a.steps}, {a.repeats}, {a.examples}")
  shape, batch = SIZES[a.model]
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 10, a.examples).astype(np.int32)
  data = engine.TrainData(jnp.asarray(rng.random((a.examples,) + shape, dtype=np.float32)),
                          jnp.asarray(labels))
  trainer = engine.Trainer(model=a.model, input_shape=shape, batch_size=batch,
                           total_steps=10 * a.steps)

  def members(output_only: bool):
    return engine.stack_members([engine.make_member(
        jax.random.key(i), np.arange(a.examples), 10, plan_labels=labels, base_lr=0.01,
        output_only=output_only) for i in range(a.population)])

  phase1, phase2 = members(False), members(True)
  start = engine.init_population(trainer, phase1)
  variants = {"phase1": (phase1, None), "phase2": (phase2, None),
              "phase2_masked": (phase2, False)}

  def run(name):
    m, outputs_only = variants[name]
    state = jax.tree.map(jnp.copy, start)  # train_chunk donates its input
    jax.block_until_ready(state)
    t, c = time.perf_counter(), time.process_time()
    state, _ = engine.train_chunk(trainer, state, m, data, a.steps,
                                  outputs_only=outputs_only)
    jax.block_until_ready(state)
    return state, time.perf_counter() - t, time.process_time() - c

  final = {name: run(name)[0] for name in variants}  # compile, and the parameters
  times = {name: [] for name in variants}
  for r in range(a.repeats):
    order = list(variants)[r % 3:] + list(variants)[:r % 3]
    for name in order:
      times[name].append(run(name)[1:])
  per = a.population * a.steps
  out = {"model": a.model, "population": a.population, "steps": a.steps, "batch": batch,
         "backend": jax.default_backend(), "devices": jax.device_count(), "variants": {}}
  print(f"# {a.model}, P={a.population}, {a.steps} steps x batch {batch}, "
        f"{jax.default_backend()}; best of {a.repeats} rounds")
  print(f"{'variant':14s} {'wall ms/model-step':>19s} {'cpu ms/model-step':>18s}")
  for name in variants:
    wall = min(t[0] for t in times[name]) * 1e3 / per
    cpu = min(t[1] for t in times[name]) * 1e3 / per
    out["variants"][name] = {"wall_ms": round(wall, 3), "cpu_ms": round(cpu, 3)}
    print(f"{name:14s} {wall:19.2f} {cpu:18.2f}")
  ratios = [m[0] / p[0] for m, p in zip(times["phase2_masked"], times["phase2"])]
  out["masked_over_phase2"] = round(float(np.median(ratios)), 3)
  out["params_equal"] = all(
      np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(
          jax.tree.leaves(final["phase2"].params),
          jax.tree.leaves(final["phase2_masked"].params)))
  print(f"# phase2_masked / phase2 (median over rounds): {out['masked_over_phase2']:.2f}; "
        f"same parameters bit for bit: {out['params_equal']}")
  print(json.dumps(out))
  return out


if __name__ == "__main__":
  main()
