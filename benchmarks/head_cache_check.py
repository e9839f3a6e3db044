"""Phase 2 from cached head inputs against the full step, on this backend: bits and time.

`engine.fit(..., cache_heads=...)` trains an output-only phase (two-phase phase 2, cRT)
from the frozen layers' output computed once (`engine.head_inputs`). On CPU it is on by
default, shown equal to the full step bit for bit (tests/test_frozen_prefix.py); on an
accelerator it is off unless asked for, because nobody has compared the two there. This
check does, for one population on the default backend:

  python -m benchmarks.head_cache_check                  # 64 LeNet-5s, batch 64
  python -m benchmarks.head_cache_check --quick          # a smoke test (CPU, seconds)

A phase-1 stand-in (every layer trained a few steps) is fine-tuned the full way
(``cache_heads=False``) and from the cache (``cache_heads=True``), each fit run twice
(the first pays its compiles); the second runs are timed. Prints whether parameters,
optimiser states and the chunks' metrics are equal bit for bit (else the largest
difference), and the two times. Last line: JSON.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from imbjax import engine
from benchmarks import population_throughput as pt


def _fit(trainer, start, members, data, steps, chunk, cache):
  metrics = []
  t0 = time.perf_counter()
  state = engine.fit(trainer, jax.tree.map(jnp.copy, start), members, data,
                     num_steps=steps, chunk_steps=chunk, cache_heads=cache,
                     on_chunk=lambda _, m, __: metrics.append(m))
  jax.block_until_ready(state)
  return state, metrics, time.perf_counter() - t0


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--population", type=int, default=None, help="models (default 64)")
  ap.add_argument("--steps", type=int, default=None, help="phase-2 steps (default 200)")
  ap.add_argument("--batch", type=int, default=None, help="batch per model (default 64)")
  ap.add_argument("--train-size", type=int, default=None,
                  help="examples on the device (default 10,000)")
  ap.add_argument("--quick", action="store_true",
                  help="4 models, 6 steps, batch 16, 256 examples (a smoke test)")
  a = ap.parse_args(argv)
  quick = (4, 6, 16, 256) if a.quick else (64, 200, 64, 10_000)
  p, steps, batch, n = [getattr(a, k) or d for k, d in zip(
      ("population", "steps", "batch", "train_size"), quick)]
  mesh = engine.model_mesh() if jax.device_count() > 1 else None
  trainer = engine.Trainer(model="lenet5", batch_size=batch, total_steps=2 * steps)
  data = pt.synthetic_data(n)
  phase1 = pt.make_population(p, np.asarray(data.labels))
  members = phase1.replace(output_only=np.ones(p, bool))
  if mesh is not None:
    phase1, _ = engine.pad_population(phase1, mesh.devices.size)
    members, _ = engine.pad_population(members, mesh.devices.size)
    data = engine.place(data, mesh, replicated=True)
  phase1, members = engine.place(phase1, mesh), engine.place(members, mesh)
  state, _ = engine.train_chunk(trainer, engine.init_population(trainer, phase1), phase1,
                                data, max(2, steps // 10))
  start = engine.restart(trainer, state, members)
  chunk = max(1, steps // 2)
  out = {"backend": jax.default_backend(), "devices": jax.device_count(),
         "device_kind": jax.devices()[0].device_kind, "models": p, "steps": steps,
         "batch": batch, "train_size": n}
  runs = {}
  for name, cache in (("full", False), ("cached", True)):
    _, _, first = _fit(trainer, start, members, data, steps, chunk, cache)
    state, metrics, seconds = _fit(trainer, start, members, data, steps, chunk, cache)
    runs[name] = (state, metrics)
    out[f"{name}_first_s"] = round(first, 3)
    out[f"{name}_s"] = round(seconds, 3)
    print(f"# {name}: first fit (compiles) {first:.2f} s, second {seconds:.2f} s",
          flush=True)
  (full, full_m), (cached, cached_m) = runs["full"], runs["cached"]
  pairs = list(zip(jax.tree.leaves(full), jax.tree.leaves(cached)))
  pairs += [(x[k], y[k]) for x, y in zip(full_m, cached_m) for k in x]
  diffs = [float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
           if np.asarray(x).size else 0.0 for x, y in pairs]
  out["bit_equal"] = all(np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True)
                         for x, y in pairs)
  out["max_abs_diff"] = max(diffs)
  out["speedup"] = round(out["full_s"] / out["cached_s"], 3)
  print(f"# bit for bit: {out['bit_equal']} (largest difference {out['max_abs_diff']:.3g});"
        f" full {out['full_s']:.2f} s, cached {out['cached_s']:.2f} s "
        f"({out['speedup']:.2f}x)", flush=True)
  print(json.dumps(out), flush=True)
  return out


if __name__ == "__main__":
  main()
