"""Each study speed change of issue #18, measured A/B in one process.

Runs a study config (default the quickstart) through `study_throughput` (the real driver,
phases timed the same way) with every change on ("all"), and with each change turned
off in turn ("without <change>"), in one process: the variants alternate in rounds, in
a rotated order, and `jax.clear_caches()` runs before each study so every variant pays
its own compiles, as a fresh process would. Each variant's stored rows are compared,
bit for bit, with those of "all" (the changes are meant not to change a number).

The changes, and how a variant turns one off (patching the library from here):

* ``shard_like``: `engine.fit` no longer puts a fresh state in the layout of the
  population it trains (its first chunk then compiles a second program; since session
  10 this is phase 1's init only: `fine_tune` lays out phase 2's state in its own
  start-up program);
* ``outputs_only``: phase 2 runs the full backward pass, masked, as before;
* ``reuse_test_logits``: the test split is evaluated again for the row after the last
  log point's curve evaluation of the same examples;
* ``frozen_prefix``: phase 2's log points evaluate the whole network, not the output
  layers on the frozen layers' cached output (`study.inputs.FrozenPrefix`);
* ``init_o1``: `engine.init_population` compiles at XLA:CPU's default LLVM -O2, not -O1
  (`step.CPU_INIT_OPTIONS`; only where XLA_FLAGS leave the level open);
* ``signed_rank``: the report's Wilcoxon p-values for few pairs with zeros or ties come
  from `scipy.stats.wilcoxon`'s own permutation test (a Python call per sign flip), not
  `stats.wilcoxon_p`'s vectorized one (the report's numbers are the same either way;
  only its time, in the ``report`` phase, differs);
* ``head_cache``: phase 2 runs the frozen layers' forward pass in every step, not once
  for the phase (`engine.fit`'s ``cache_heads``: the output layers trained on
  `engine.head_inputs`);
* ``frozen_updates``: phase 2's step computes the frozen layers' optimiser updates (and
  their momentum) and discards them (`step._SKIP_FROZEN_UPDATES`); the parameters, and so
  the rows, are the same.

(TensorBoard without TensorFlow, the fourth change, is an import and cannot be undone in
one process: `study_throughput` times TensorBoard's phase and start-up.)

  python -m benchmarks.study_ab                          # the quickstart, 2 rounds
  python -m benchmarks.study_ab --repetitions 1 --rounds 1 --changes shard_like

Last line: JSON with each variant's per-round walls and phases and its median wall
against "all" (``x_all`` above 1: slower without the change).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import statistics
import sys
import tempfile

import jax

from benchmarks import study_throughput as st
from imbjax import engine
from imbjax import stats as stats_lib
from imbjax import store as store_lib
from imbjax.engine import loop as loop_lib
from imbjax.engine import step as step_lib
from imbjax.study import inputs as inputs_lib

CHANGES = ("shard_like", "outputs_only", "reuse_test_logits", "frozen_prefix", "init_o1",
           "signed_rank", "head_cache", "frozen_updates")
PHASES = ("compile", "training", "curves", "evaluation", "report")


@contextlib.contextmanager
def without(change: str | None):
  """The library with `change` turned off for the length of the block."""
  if change is None:
    yield
    return
  owner, name, replacement = {
      "shard_like": (loop_lib, "shard_like", lambda tree, like: tree),
      "outputs_only": (loop_lib, "all_output_only", lambda members: False),
      "reuse_test_logits": (inputs_lib.DeviceInputs, "same_examples",
                            lambda self, a, b: False),
      "frozen_prefix": (inputs_lib.DeviceInputs, "frozen_prefix",
                        lambda self, trainer, members: None),
      "init_o1": (step_lib, "_init_population_cpu_jit", step_lib._init_population_jit),
      "signed_rank": (stats_lib, "_EXACT_PERMUTATION_MAX", 0),
      "head_cache": (loop_lib, "use_head_cache", lambda trainer, members, data, want, **_: False),
      "frozen_updates": (step_lib, "_SKIP_FROZEN_UPDATES", False),
  }[change]
  saved = getattr(owner, name)
  setattr(owner, name, replacement)
  try:
    yield
  finally:
    setattr(owner, name, saved)


def stored_numbers(workdir) -> dict:
  """Every stored row by run key, without its provenance (group, times), as canonical
  JSON text (so NaN equals NaN)."""
  with store_lib.ResultsStore(workdir) as s:
    return {r["run_key"]: json.dumps(store_lib.result_of_row(r), sort_keys=True)
            for r in s.rows()}


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--config", default=str(st.QUICKSTART))
  ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
  ap.add_argument("--iterations", type=int, default=None)
  ap.add_argument("--repetitions", type=int, default=None)
  ap.add_argument("--rounds", type=int, default=2)
  ap.add_argument("--changes", default=",".join(CHANGES),
                  help=f"comma-separated, of {', '.join(CHANGES)}")
  ap.add_argument("--cpu-devices", default="auto")
  ap.add_argument("--quick", action="store_true",
                  help="study_throughput's --quick study (one model, 6 iterations)")
  a = ap.parse_args(argv)
  changes = [c for c in a.changes.split(",") if c]
  bad = sorted(set(changes) - set(CHANGES))
  if bad:
    raise ValueError(f"--changes: unknown {bad}; known: {', '.join(CHANGES)}")
  if a.quick and a.cpu_devices == "auto":
    a.cpu_devices = "1"  # as study_throughput's --quick: JAX may already be running
  if a.rounds < 1:
    raise ValueError(f"--rounds must be >= 1, got {a.rounds}")
  config = st.load_config(a.config, a.set, argparse.Namespace(
      iterations=a.iterations, repetitions=a.repetitions, population_size=None,
      chunk_steps=None))
  cores = os.cpu_count() or 1
  n_dev = (int(a.cpu_devices) if a.cpu_devices != "auto"
           else cores if st.largest_population(config) >= cores else 1)
  if n_dev != 1:
    engine.use_cpu_devices(n_dev)  # once, before JAX starts (study_throughput then
    #                                is told 1, which leaves the devices as they are)
  args = ["--config", a.config, "--step-repeats", "0", "--torch-samples", "0",
          "--quiet", "--cpu-devices", "1"]
  if a.quick:
    args.append("--quick")
  for item in a.set:
    args += ["--set", item]
  for key in ("iterations", "repetitions"):
    if getattr(a, key) is not None:
      args += [f"--{key}", str(getattr(a, key))]

  variants = [None, *changes]
  runs = {v: [] for v in variants}
  reference = None
  differ = {}
  for r in range(a.rounds):
    order = variants[r % len(variants):] + variants[:r % len(variants)]
    for change in order:
      name = "all" if change is None else f"without {change}"
      jax.clear_caches()
      with tempfile.TemporaryDirectory(prefix="study_ab_") as workdir:
        with without(change):
          out = st.main(args + ["--workdir", workdir])
        rows = stored_numbers(workdir)
      if reference is None:
        reference = rows
      else:
        differ[name] = differ.get(name, 0) + sum(
            rows.get(k) != v for k, v in reference.items()) + len(rows.keys() - reference)
      phases = out["phases"]
      runs[change].append({"wall_s": out["wall_s"], "compiles": out["compiles"],
                           **{p: phases.get(p, 0.0) for p in PHASES}})
      print(f"# round {r + 1}: {name:28s} wall {out['wall_s']:7.1f} s  " + "  ".join(
          f"{p} {phases.get(p, 0.0):6.1f}" for p in PHASES), flush=True)

  base = statistics.median(x["wall_s"] for x in runs[None])
  result = {"config": os.path.relpath(a.config), "rounds": a.rounds,
            "devices": jax.device_count(), "models": out["models"],
            "iterations": out["iterations"], "variants": {}}
  print(f"# {'variant':28s} {'median wall s':>13s} {'x all':>6s}  "
        f"{'compiles':>8s}  rows differing from 'all'")
  for change in variants:
    name = "all" if change is None else f"without {change}"
    wall = statistics.median(x["wall_s"] for x in runs[change])
    result["variants"][name] = {
        "runs": runs[change], "median_wall_s": round(wall, 3),
        "x_all": round(wall / base, 4),
        "median_phases": {p: round(statistics.median(x[p] for x in runs[change]), 3)
                          for p in PHASES},
        "rows_differing": differ.get(name, 0)}
    print(f"# {name:28s} {wall:13.1f} {wall / base:6.3f}  "
          f"{runs[change][-1]['compiles']:8d}  {differ.get(name, 0)}")
  print(json.dumps(result), flush=True)
  if any(differ.values()):
    print("# A change altered stored numbers: see rows_differing", file=sys.stderr)
  return result


if __name__ == "__main__":
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
  main()
