"""Phase 2's step with and without the frozen layers' optimiser updates, A/B in one process.

An output-only step (two-phase phase 2, cRT; `train_step`'s ``outputs_only``) computes
no update for the frozen layers since 2026-12-07 (`step._SKIP_FROZEN_UPDATES`): they were
computed, their momentum kept, and then discarded. This times the quickstart's phase-2
chunk (24 LeNet-5s, 120 steps of batch 32, from cached head inputs, on the CPU split
into 2 devices) both ways in alternating rounds, each traced and compiled afresh,
and checks that the parameters are the same bit for bit.

  python -m benchmarks.phase2_updates_ab [--rounds 3] [--quick]

Last line: JSON.
"""

from __future__ import annotations

import argparse
import functools
import json
import time

import jax
import numpy as np

from imbjax import engine
from imbjax.engine import loop
from imbjax.engine import step as step_lib
from benchmarks.population_throughput import make_population, synthetic_data


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--rounds", type=int, default=3)
  ap.add_argument("--cpu-devices", type=int, default=2,
                  help="split the CPU into this many devices (1: leave JAX as it is)")
  ap.add_argument("--quick", action="store_true", help="4 models, 6 steps, 1 round")
  a = ap.parse_args(argv)
  p, steps, rounds = (4, 6, 1) if a.quick else (24, 120, a.rounds)
  if a.cpu_devices != 1:
    engine.use_cpu_devices(a.cpu_devices)
  mesh = engine.model_mesh() if jax.device_count() > 1 else None
  trainer = engine.Trainer(model="lenet5", batch_size=32, total_steps=2 * steps)
  data = synthetic_data(1347)
  members = make_population(p, np.asarray(data.labels))
  members = members.replace(output_only=np.ones(p, bool))
  if mesh is not None:
    members, _ = engine.pad_population(members, mesh.devices.size)
    data = engine.place(data, mesh, replicated=True)
  members = engine.place(members, mesh)
  heads = loop.head_inputs(trainer, engine.init_population(trainer, members), members,
                           data)
  saved = step_lib._SKIP_FROZEN_UPDATES
  res = {}
  try:
    for r in range(rounds):
      for skip in ((True, False) if r % 2 == 0 else (False, True)):
        step_lib._SKIP_FROZEN_UPDATES = skip
        state = engine.init_population(trainer, members)
        t0 = time.perf_counter()
        # A new function object: traced afresh (the flag is read when tracing), without
        # clearing every other compiled program of the process.
        fresh = jax.jit(functools.partial(loop._train_chunk), static_argnums=(0, 4, 5, 6))
        run = fresh.lower(trainer, state, members, data, steps,
                          engine.chunk_mesh(members), True, heads).compile()
        compile_s = time.perf_counter() - t0
        best = float("inf")
        for _ in range(3):
          state = engine.init_population(trainer, members)
          jax.block_until_ready(state)
          t0 = time.perf_counter()
          out = run(state, members, data, heads)
          jax.block_until_ready(out)
          best = min(best, time.perf_counter() - t0)
        name = "skip" if skip else "compute"
        v = res.setdefault(name, {"compile_s": [], "chunk_s": []})
        v["compile_s"].append(round(compile_s, 3))
        v["chunk_s"].append(round(best, 4))
        v["params"] = [np.asarray(x) for x in jax.tree.leaves(out[0].params)]
        print(f"# round {r + 1}: frozen updates {name:7s}: trace+compile {compile_s:.2f} "
              f"s, chunk {best:.3f} s (best of 3)", flush=True)
  finally:
    step_lib._SKIP_FROZEN_UPDATES = saved
  same = all(np.array_equal(x, y) for x, y in zip(res["skip"].pop("params"),
                                                   res["compute"].pop("params")))
  out = {"models": p, "steps": steps, "devices": jax.device_count(), **res,
         "params_equal": same}
  print(json.dumps(out), flush=True)
  return out


if __name__ == "__main__":
  main()
