"""LeNet-5 evaluation speed on CPU against the per-model evaluation batch.

`engine.predict` of freshly initialised LeNet-5s on random 28x28 images, one XLA
device, for each evaluation batch size: examples/s (best of `--repeats` rounds, the
sizes alternating within each round) and whether the logits equal, bit for bit, those
of the first size (the studies' default `eval_batch_size`, 1,000), with the largest
difference. The ratio column is against the first size in the same rounds.

  python -m benchmarks.eval_batch [--batches 1000,500,250,125] [--models 4] \
      [--examples 1000] [--repeats 3]

Last line: JSON {batch: {'examples_per_s', 'ratio', 'equal', 'max_abs_diff'}}.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from imbjax import engine


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--batches", default="1000,500,250,125,100,50")
  ap.add_argument("--models", type=int, default=4)
  ap.add_argument("--examples", type=int, default=1000)
  ap.add_argument("--repeats", type=int, default=3)
  a = ap.parse_args(argv)
  batches = [int(b) for b in a.batches.split(",")]
  if not batches or min(batches) < 1 or a.models < 1 or a.examples < 1 or a.repeats < 1:
    raise SystemExit(f"--batches must be positive ints, --models, --examples and "
                     f"--repeats >= 1; got {a.batches!r}, {a.models}, {a.examples}, "
                     f"{a.repeats}")
  labels = np.arange(600) % 10
  trainer = engine.Trainer(batch_size=32, total_steps=240)
  members = engine.stack_members([
      engine.make_member(jax.random.key(i), np.arange(600), 10, plan_labels=labels,
                         base_lr=0.01) for i in range(a.models)])
  state = engine.init_population(trainer, members)
  images = jnp.asarray(np.random.default_rng(0).random((a.examples, 28, 28, 1),
                                                       dtype=np.float32))
  logits, times = {}, {b: [] for b in batches}
  for b in batches:  # compile, and the logits
    logits[b] = np.asarray(engine.predict(trainer, state, images, batch_size=b))
  for _ in range(a.repeats):
    for b in batches:
      t = time.perf_counter()
      engine.predict(trainer, state, images, batch_size=b).block_until_ready()
      times[b].append(time.perf_counter() - t)
  n = a.models * a.examples
  first = batches[0]
  out = {}
  print(f"# {a.models} LeNet-5s x {a.examples} examples, {jax.default_backend()}, "
        f"{len(jax.devices())} device(s); best of {a.repeats} rounds")
  print(f"{'batch':>6} {'examples/s':>11} {'ratio':>6} {'equal':>6} {'max |diff|':>11}")
  for b in batches:
    ratio = float(np.median([t0 / t for t0, t in zip(times[first], times[b])]))
    diff = float(np.abs(logits[b] - logits[first]).max())
    out[b] = {"examples_per_s": round(n / min(times[b])), "ratio": round(ratio, 3),
              "equal": bool(np.array_equal(logits[b], logits[first])),
              "max_abs_diff": diff}
    print(f"{b:6d} {out[b]['examples_per_s']:11,d} {ratio:6.2f} "
          f"{str(out[b]['equal']):>6} {diff:11.2e}")
  print(json.dumps(out))
  return out


if __name__ == "__main__":
  main()
