"""Where a real study's wall time goes, and how it compares with the step and PyTorch.

Runs a study config (default `experiments/configs/quickstart.py`) through the real
driver, `imbjax.study.train_and_evaluate`, then, as `experiments.sweep` does,
`imbjax.report.write_report` (which draws the figures with `imbjax.figures.make_all`),
in this one process, and splits the wall time into phases by wrapping the library's
functions from here (nothing in `imbjax/` changes):

* ``startup`` (interpreter start to the end of the imports; only when run as a program),
  ``config``, ``data`` (`load_data`), ``placement`` (`engine.place`: host to device),
  ``init`` (`engine.init_population`), ``training`` (`train_chunk` calls, waited for,
  and an output-only phase's `engine.head_inputs`), ``curves`` (Figure 8's accuracies
  at every log point; phase 2's on the output layers, `FrozenPrefix`, counted in
  ``other`` before 2026-12-07, session 14), ``evaluation`` (test and
  validation logits), ``scoring`` (rows: metrics, thresholding), ``store`` (results store
  and exported subsets), ``tensorboard``, ``figures`` (`figures.make_all`), ``report``
  (the rest of `report.write_report`: its import, the statistics, critical-difference
  diagrams; before 2026-12-07 the benchmark ran `make_all` alone), and ``other`` (the
  rest of the driver: grid, members, checks);
* ``compile``: every span JAX reports as tracing, lowering or XLA compilation
  (`jax.monitoring` time spans), taken out of the phase it happened in
  (``compile_by_phase``), with each compiled function's count and seconds.

Phases are exclusive and cover the wall time exactly (``other`` is the remainder).

Then, outside the timed wall, in the same process:

* the step benchmark (`population_throughput.PopulationRun`: the engine's `train_chunk`
  alone) for the study's largest population, batch and trainer, on the study's own
  training split: ``step_images_per_s``; ``ratio_end_to_end_vs_step`` is the study's
  end-to-end training images/s (all trained images / wall) over it; for studies of
  1,000+ iterations (``--step-before``) the step is also timed before the study
  (``step_before_images_per_s``; ``step_drift`` = after / before) and the ratios are
  over the mean of both sides, since a shared VM's speed drifts over a long study;
* the PyTorch one-model loop a user would otherwise write (`torch_models.py`'s mirror of
  the network; train, then score the test split with scikit-learn), timed on a sample of
  the study's models (at most ``--torch-steps`` steps each, scaled to the study's
  iterations) and extrapolated to all its models: ``torch_study_s``;
  ``ratio_vs_torch`` = torch_study_s / wall_s.

The last line of output is one JSON object (as `population_throughput.py`).

  python -m benchmarks.study_throughput                           # the quickstart study
  python -m benchmarks.study_throughput --quick                   # seconds (tests)
  python -m benchmarks.study_throughput --config experiments/configs/mnist_step.py \\
      --set data_dir=../shared/data/mnist --set "rhos=(100,)" --iterations 500
"""

from __future__ import annotations

import time

_T_MODULE = time.time()

import argparse  # pylint: disable=g-import-not-at-top,wrong-import-position
import ast
import contextlib
import functools
import importlib.util
import json
import os
import pathlib
import shutil
import sys
import tempfile

import jax
import numpy as np

import imbjax.study.driver as driver
import imbjax.study.group as group_lib
import imbjax.study.inputs as inputs_lib
from imbjax import engine
from imbjax import figures
from imbjax import store as store_lib
from imbjax.engine import loop as loop_lib
from imbjax.study.grid import cases, largest_population, model_specs

_T_IMPORTED = time.time()

QUICKSTART = pathlib.Path(__file__).resolve().parents[1] / "experiments/configs/quickstart.py"
COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                  "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")
BACKEND_COMPILE = COMPILE_EVENTS[2]


def process_start_time() -> float | None:
  """The epoch time this process started (Linux /proc), or None."""
  try:
    with open("/proc/self/stat") as f:
      ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/stat") as f:
      btime = next(int(line.split()[1]) for line in f if line.startswith("btime"))
    return btime + ticks / os.sysconf("SC_CLK_TCK")
  except (OSError, ValueError, StopIteration):
    return None


def _sig(x: float, digits: int = 5) -> float:
  """`x` to `digits` significant digits (ratios of very different sizes stay exact)."""
  return float(f"{x:.{digits}g}")


def _merge(intervals):
  out = []
  for s, e in sorted(intervals):
    if out and s <= out[-1][1]:
      out[-1][1] = max(out[-1][1], e)
    else:
      out.append([s, e])
  return out


def _overlap(a, b, merged) -> float:
  return sum(max(0.0, min(b, e) - max(a, s)) for s, e in merged)


class PhaseClock:
  """Exclusive wall time per phase (innermost wins), with compile spans taken out.

  `phase(name)` is a context manager; time not inside any phase goes to the bottom of
  the stack (``other``). JAX's compile spans (epoch times, as `time.time()`) arrive
  through `jax.monitoring`; `totals` subtracts their union from the phases they fell in.
  """

  def __init__(self, t0: float):
    self.t0 = self.mark = t0
    self.stack = ["other"]
    self.segments: list[tuple[float, float, str]] = []
    self.spans: list[tuple[float, float, str, str]] = []

  def _close(self, now: float) -> None:
    if now > self.mark:
      self.segments.append((self.mark, now, self.stack[-1]))
    self.mark = max(self.mark, now)

  @contextlib.contextmanager
  def phase(self, name: str):
    self._close(time.time())
    self.stack.append(name)
    try:
      yield
    finally:
      self._close(time.time())
      self.stack.pop()

  def on_span(self, event: str, start: float, end: float, **kwargs) -> None:
    if event in COMPILE_EVENTS:
      self.spans.append((start, end, event, str(kwargs.get("fun_name", "?"))))

  def on_duration(self, event: str, duration: float, **kwargs) -> None:
    """For a JAX without time-span events: the span ends now."""
    end = time.time()
    self.on_span(event, end - duration, end, **kwargs)

  def listen(self):
    """Registers with `jax.monitoring`; returns the function that unregisters."""
    mon = jax.monitoring
    if hasattr(mon, "register_event_time_span_listener"):
      mon.register_event_time_span_listener(self.on_span)
      return lambda: mon.unregister_event_time_span_listener(self.on_span)
    mon.register_event_duration_secs_listener(self.on_duration)
    return lambda: mon.unregister_event_duration_listener(self.on_duration)

  def totals(self, t_end: float) -> tuple[dict, dict, dict]:
    """(phases, compile seconds by phase, compiles by function) up to `t_end`."""
    self._close(t_end)
    merged = _merge([(max(s, self.t0), min(e, t_end)) for s, e, _, _ in self.spans
                     if e > self.t0 and s < t_end])
    phases: dict[str, float] = {}
    by_phase: dict[str, float] = {}
    for a, b, name in self.segments:
      c = _overlap(a, b, merged)
      phases[name] = phases.get(name, 0.0) + (b - a - c)
      if c > 0:
        by_phase[name] = by_phase.get(name, 0.0) + c
    phases["compile"] = sum(by_phase.values())
    funcs: dict[str, list] = {}
    for s, e, event, fun in self.spans:
      if event == BACKEND_COMPILE:
        f = funcs.setdefault(fun, [0, 0.0])
        f[0] += 1
        f[1] += e - s
    return phases, by_phase, funcs


class Instrumented:
  """Wraps the library's functions with phases for the length of a `with` block."""

  def __init__(self, clock: PhaseClock):
    self.clock = clock
    self.saved: list[tuple[object, str, object]] = []
    self.populations: list[int] = []
    self.captured: dict = {}

  def _wrap(self, owner, name: str, phase, block: bool = False, capture: str = ""):
    fn = getattr(owner, name, None)
    if fn is None:  # the library moved it: that phase falls into 'other'
      print(f"# study_throughput: {getattr(owner, '__name__', owner)}.{name} not found; "
            f"its time counts as 'other'", file=sys.stderr)
      return
    clock = self.clock

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
      name_ = phase(*args, **kwargs) if callable(phase) else phase
      with clock.phase(name_):
        out = fn(*args, **kwargs)
        if block:
          jax.block_until_ready(out)
      if capture:
        self.captured[capture] = out
      return out

    self.saved.append((owner, name, fn))
    setattr(owner, name, wrapped)

  def _train_phase(self, trainer, state, members, *args, **kwargs):
    del trainer, state, args, kwargs
    self.populations.append(engine.population_size(members))
    return "training"

  def __enter__(self):
    w = self._wrap
    w(driver, "load_data", "data", capture="data")
    w(driver, "make_trainer", "other", capture="trainer")
    w(engine, "place", "placement", block=True)
    w(engine, "init_population", "init", block=True)
    w(loop_lib, "train_chunk", self._train_phase, block=True)
    w(loop_lib, "train_chunk_streamed", self._train_phase, block=True)
    def split_phase(*args, **kwargs):  # logits(self, trainer, state, split, size)
      split = kwargs.get("split", args[3] if len(args) > 3 else None)
      return "curves" if split == "curve" else "evaluation"

    w(inputs_lib.DeviceInputs, "logits", split_phase)
    w(inputs_lib.StreamInputs, "logits", split_phase)
    # The curves' balanced training sample (until 2026-12-02 unwrapped: it fell in 'other').
    w(inputs_lib.DeviceInputs, "logits_of", "curves")
    # Phase 2's log points on the output layers (until 2026-12-07 unwrapped: 'other'),
    # and its frozen layers' output, computed once for the phase's training.
    w(inputs_lib.FrozenPrefix, "logits", "curves")
    w(loop_lib, "head_inputs", "training", block=True)
    w(group_lib, "rows", "scoring")
    w(group_lib, "export_subsets", "store")
    w(group_lib.Progress, "scalars", "tensorboard")
    for name in ("check_config", "done_keys", "write_group", "export_csv", "close"):
      w(store_lib.ResultsStore, name, "store")
    w(figures, "make_all", "figures")
    return self

  def __exit__(self, *exc):
    for owner, name, fn in reversed(self.saved):
      setattr(owner, name, fn)
    self.saved.clear()


def load_config(path: str, overrides: list[str], a):
  """The config of file `path` with `--set key=value` and the named flags applied."""
  spec = importlib.util.spec_from_file_location("study_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  for item in overrides:
    key, _, text = item.partition("=")
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    config[key] = value
  for key in ("iterations", "repetitions", "population_size", "chunk_steps"):
    if getattr(a, key) is not None:
      config[key] = getattr(a, key)
  return config


def synthetic_data(config, n_train: int, n_test: int, shape, num_classes: int = 10):
  """(train, test) random float images with balanced labels, for `data=`."""
  from imbjax import datasets
  rng = np.random.default_rng(0)

  def split(n):
    labels = (np.arange(n) % num_classes).astype(np.int32)
    images = rng.random((n, *shape), dtype=np.float32)
    return datasets.Dataset(images, labels, num_classes,
                            tuple(str(c) for c in range(num_classes)))

  del config
  return split(n_train), split(n_test)


def step_benchmark(trainer, data, p: int, steps: int, repeats: int, mesh) -> dict:
  """`population_throughput`'s measurement of `train_chunk` alone for P models."""
  from benchmarks import population_throughput as pt
  train = engine.TrainData(np.asarray(data.train.images, np.float32),
                           np.asarray(data.train.labels, np.int32))
  run = pt.PopulationRun(trainer, p, train, steps, mesh)
  run.run()  # the untimed round (see population_throughput)
  rounds = [run.time_round() for _ in range(repeats)]
  return {"step_images_per_s": round(max(rounds), 1), "step_rounds": [round(r, 1)
                                                                     for r in rounds],
          "step_P": p, "step_steps": steps, "step_first_call_s": round(run.first_call_s, 3)}


def study_step(trainer, config, data, repeats: int) -> dict:
  """`step_benchmark` for the study's largest population (at least a model per device),
  batch and chunk length, sharded as the study shards it."""
  mesh = engine.model_mesh() if jax.device_count() > 1 else None
  p = largest_population(config)
  if mesh is not None:
    p = max(p, jax.device_count())
  return step_benchmark(trainer, data, p, min(config.chunk_steps, config.iterations),
                        repeats, mesh)


def _output_params(net, model: str):
  import torch
  if model == "lenet5":
    return list(net[-1].parameters())
  if model == "allcnn":
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    return [p for m in convs[-2:] for p in m.parameters()]
  return list(net.fc.parameters())


def torch_reference(config, data, samples: int, max_steps: int,
                    threads: int | None = None) -> dict:
  """A PyTorch one-model loop over a sample of the study's models, extrapolated.

  Each sampled model: `torch_models.make`'s network, SGD with momentum and weight decay
  at its base rate, `min(iterations, max_steps)` steps on batches drawn from its case's
  subset (phase-2 models: only the output layers train), timed and scaled to the study's
  iterations; then its test logits in eval mode and scikit-learn's accuracy and
  one-vs-rest ROC AUC. The study's cost is each kind's mean per model times its count.
  """
  t0 = time.time()
  try:
    import torch
    from sklearn import metrics as skm
    from benchmarks import torch_models
  except ImportError as e:
    return {"torch_error": f"{type(e).__name__}: {e}"}
  import_s = time.time() - t0
  torch.set_num_threads(threads or os.cpu_count() or 1)
  if config.model not in ("lenet5", "allcnn", "resnet10"):
    return {"torch_error": f"no PyTorch mirror of {config.model!r}"}
  specs = [s for c in cases(config) for s in model_specs(config, c)[0]]
  n_rows = sum(len(model_specs(config, c)[1]) for c in cases(config))
  kinds = {1: [s for s in specs if not s.method.is_phase2],
           2: [s for s in specs if s.method.is_phase2]}
  train_x = torch.from_numpy(np.ascontiguousarray(
      np.asarray(data.train.images, np.float32).transpose(0, 3, 1, 2)))
  train_y = torch.from_numpy(np.asarray(data.train.labels).astype(np.int64))
  test_x = torch.from_numpy(np.ascontiguousarray(
      np.asarray(data.test.images, np.float32).transpose(0, 3, 1, 2)))
  test_y = np.asarray(data.test.labels)
  shape = tuple(np.asarray(data.train.images).shape[1:])
  num_classes = data.train.num_classes
  steps = min(config.iterations, max_steps)
  gen = torch.Generator().manual_seed(0)
  per_model = {}
  for phase, kind in kinds.items():
    if not kind:
      continue
    pick = [kind[i] for i in np.linspace(0, len(kind) - 1, min(samples, len(kind))
                                         ).round().astype(int)]
    times = []
    for spec in pick:
      try:
        subset = np.asarray(group_lib.case_data(config, [spec.case], data)[spec.case].subset)
      except Exception:  # pylint: disable=broad-except
        subset = np.arange(len(data.train.labels))  # a step costs the same on any subset
      subset = torch.from_numpy(subset.astype(np.int64))
      net = torch_models.make(config.model, num_classes, shape)
      params = list(net.parameters())
      if phase == 2:
        for p in params:
          p.requires_grad_(False)
        params = _output_params(net, config.model)
        for p in params:
          p.requires_grad_(True)
      opt = torch.optim.SGD(params, lr=spec.base_lr, momentum=config.momentum,
                            weight_decay=config.weight_decay)

      def run(k):
        net.train()
        for _ in range(k):
          idx = subset[torch.randint(0, len(subset), (config.batch_size,), generator=gen)]
          loss = torch.nn.functional.cross_entropy(net(train_x[idx]), train_y[idx])
          opt.zero_grad(set_to_none=True)
          loss.backward()
          opt.step()

      t = time.time()
      run(steps)
      train_s = (time.time() - t) * config.iterations / steps
      t = time.time()
      net.eval()
      with torch.no_grad():
        logits = torch.cat([net(test_x[i:i + config.eval_batch_size])
                            for i in range(0, len(test_x), config.eval_batch_size)])
      prob = torch.softmax(logits, -1).numpy().astype(np.float64)
      acc = float((prob.argmax(-1) == test_y).mean())
      prob = np.nan_to_num(prob, nan=1.0 / num_classes)
      prob /= prob.sum(-1, keepdims=True)
      auc = float(skm.roc_auc_score(test_y, prob, multi_class="ovr"))
      score_s = time.time() - t
      times.append(train_s + score_s)
      del acc, auc
    per_model[phase] = {"models": len(kind), "sampled": len(pick),
                        "mean_model_s": round(float(np.mean(times)), 4)}
  study_s = import_s + sum(v["models"] * v["mean_model_s"] for v in per_model.values())
  return {"torch_study_s": round(study_s, 3), "torch_import_s": round(import_s, 3),
          "torch_steps_timed": steps, "torch_per_phase": {str(k): v for k, v in
                                                          per_model.items()},
          "torch_rows": n_rows}


def main(argv=None, t_start: float | None = None) -> dict:
  """Runs the benchmark; returns (and prints last) its JSON."""
  t_main = time.time()
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--config", default=str(QUICKSTART), help="a study config file")
  ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                  help="config override (Python literal or a string); repeatable")
  ap.add_argument("--iterations", type=int, default=None)
  ap.add_argument("--repetitions", type=int, default=None)
  ap.add_argument("--population-size", dest="population_size", type=int, default=None)
  ap.add_argument("--chunk-steps", dest="chunk_steps", type=int, default=None)
  ap.add_argument("--workdir", default=None,
                  help="where the study writes (must hold no results; default: a "
                  "temporary folder, removed afterwards)")
  ap.add_argument("--synthetic", default=None, metavar="N_TRAIN,N_TEST",
                  help="random data of the config's dataset shape (28x28x1 unless "
                  "--synthetic-shape) instead of loading it, e.g. where MNIST is absent")
  ap.add_argument("--synthetic-shape", default="28,28,1")
  ap.add_argument("--cpu-devices", default="auto",
                  help="as experiments.sweep's --cpu_devices: 'auto' (one per core when "
                  "the largest population has a model per core), or N (0: one per core)")
  ap.add_argument("--step-repeats", type=int, default=3,
                  help="timed rounds of the step benchmark (0: skip it)")
  ap.add_argument("--step-before", type=int, default=None,
                  help="step rounds also timed before the study (outside its wall; "
                  "JAX's caches cleared after), so a long study is compared with the "
                  "step speed on both sides of it; default: --step-repeats for studies "
                  "of 1,000+ iterations, else 0")
  ap.add_argument("--torch-samples", type=int, default=2,
                  help="models per phase timed in the PyTorch loop (0: skip it)")
  ap.add_argument("--torch-steps", type=int, default=300,
                  help="at most this many steps per sampled PyTorch model (scaled up)")
  ap.add_argument("--torch-threads", type=int, default=None,
                  help="PyTorch's intra-op threads (default: one per core)")
  ap.add_argument("--quiet", action="store_true", help="no driver progress lines")
  ap.add_argument("--compilation-cache", dest="compilation_cache", default=None,
                  help="as experiments.sweep's --compilation_cache; default: JAX's own "
                  "setting (no cache unless JAX_COMPILATION_CACHE_DIR is set), so the "
                  "study pays its compiles as a first run does")
  ap.add_argument("--quick", action="store_true",
                  help="one case and model, 6 iterations in chunks of 3, one step round, "
                  "one torch model (a smoke test; JAX may already be running)")
  a = ap.parse_args(argv)
  if a.quick:
    # One case, one trained model (thresholding scores it again): one train program.
    a.set = ["rhos=(10,)", "mus=(0.6,)", "methods=('baseline', 'thresholding')",
             "verbose=False"] + a.set
    a.iterations = a.iterations or 6
    a.chunk_steps = a.chunk_steps or 3
    a.repetitions = a.repetitions or 1
    a.step_repeats, a.torch_samples = min(a.step_repeats, 1), min(a.torch_samples, 1)
    if a.cpu_devices == "auto":
      a.cpu_devices = "1"
  cache = (jax.config.jax_compilation_cache_dir if a.compilation_cache is None
           else engine.use_compilation_cache(a.compilation_cache))

  def cpu_devices(config) -> int:
    cores = os.cpu_count() or 1
    return (int(a.cpu_devices) if a.cpu_devices != "auto"
            else cores if largest_population(config) >= cores else 1)

  def synthetic(config):
    n_train, n_test = (int(x) for x in a.synthetic.split(","))
    shape = tuple(int(x) for x in a.synthetic_shape.split(","))
    return synthetic_data(config, n_train, n_test, shape)

  # Outside the wall: the step speed before the study. A long study runs for many
  # minutes, over which a shared VM's speed drifts (seen here: the same step at 12,000
  # and 18,000 images/s within half an hour), so rounds on both sides of it bound the
  # drift instead of comparing with one side only.
  before, devices_set, pre_s = None, False, 0.0
  first = load_config(a.config, a.set, a)
  if a.step_before is None:
    a.step_before = a.step_repeats if first.iterations >= 1000 else 0
  if a.step_before > 0 and a.step_repeats > 0 and first.input == "device":
    if cpu_devices(first) != 1:
      engine.use_cpu_devices(cpu_devices(first))
    devices_set = True
    sd = driver.load_data(first, data=synthetic(first) if a.synthetic else None)
    before = study_step(driver.make_trainer(first, sd), first, sd, a.step_before)
    del sd
    jax.clear_caches()  # the study compiles its own programs, as a fresh process would
    pre_s = time.time() - t_main
    t_main = time.time()
  clock = PhaseClock(t_main)
  unlisten = clock.listen()
  try:
    with clock.phase("config"):
      config = load_config(a.config, a.set, a)
      n_dev = cpu_devices(config)
      if n_dev != 1 and not devices_set:  # before JAX starts; changes nothing off CPU
        engine.use_cpu_devices(n_dev)
    data = None
    if a.synthetic:
      with clock.phase("data"):
        data = synthetic(config)
    workdir = a.workdir or tempfile.mkdtemp(prefix="study_throughput_")
    if (pathlib.Path(workdir) / store_lib.DB_NAME).exists():
      raise ValueError(f"--workdir {workdir} already holds results: a rerun would skip "
                       f"its stored groups; give an empty folder")
    log = (lambda *_: None) if a.quiet else functools.partial(print, flush=True)
    with Instrumented(clock) as inst:
      result = driver.train_and_evaluate(config, workdir, data=data, log=log)
      if config.make_figures:  # what experiments.sweep runs after the study
        with clock.phase("report"):
          from imbjax import report  # pylint: disable=g-import-not-at-top
          report.write_report(workdir)
    t_end = time.time()
  finally:
    unlisten()

  phases, compile_by_phase, funcs = clock.totals(t_end)
  wall = t_end - t_main
  if t_start is not None and t_start < t_main:
    phases["startup"] = t_main - t_start - pre_s
    wall = t_end - t_start - pre_s
  phases["other"] = max(0.0, wall - sum(v for k, v in phases.items() if k != "other"))
  study_data = inst.captured["data"]
  specs = [s for c in cases(config) for s in model_specs(config, c)[0]]
  images = len(specs) * config.iterations * config.batch_size
  e2e = images / wall
  train_ips = images / phases["training"] if phases.get("training") else None
  out = {
      "compilation_cache": cache,
      "config": os.path.relpath(a.config), "dataset": config.dataset, "model": config.model,
      "backend": jax.default_backend(), "devices": jax.device_count(),
      "iterations": config.iterations, "batch_size": config.batch_size,
      "models": len(specs), "rows": result["rows"], "groups": result["trained_groups"],
      "populations": sorted(set(inst.populations)),
      "wall_s": round(wall, 4),
      "phases": {k: round(v, 4) for k, v in sorted(phases.items(), key=lambda kv: -kv[1])},
      "compile_by_phase": {k: round(v, 3) for k, v in compile_by_phase.items()},
      "compiles": sum(n for n, _ in funcs.values()),
      "compiled_functions": {k: [n, round(s, 3)] for k, (n, s) in
                             sorted(funcs.items(), key=lambda kv: -kv[1][1])},
      "trace_count": dict(loop_lib.TRACE_COUNT),
      "training_images": images, "end_to_end_images_per_s": _sig(e2e, 6),
      "training_images_per_s": None if train_ips is None else _sig(train_ips, 6),
  }
  out["phase_sum_s"] = round(sum(out["phases"].values()), 4)
  # Outside the wall: the step alone, and the PyTorch loop (both read the training split
  # from memory: not for streamed input).
  if config.input != "device":
    a.step_repeats = a.torch_samples = 0
    out["note"] = "input='stream': no step benchmark or PyTorch loop"
  if a.step_repeats > 0:
    out.update(study_step(inst.captured["trainer"], config, study_data, a.step_repeats))
    step = out["step_images_per_s"]
    if before is not None:  # the step on both sides of the study: their mean
      out["step_before_images_per_s"] = before["step_images_per_s"]
      out["step_before_rounds"] = before["step_rounds"]
      out["step_drift"] = _sig(step / before["step_images_per_s"])
      step = (step + before["step_images_per_s"]) / 2
      out["step_reference_images_per_s"] = _sig(step, 6)
    out["ratio_end_to_end_vs_step"] = _sig(e2e / step)
    if train_ips is not None:
      out["ratio_training_vs_step"] = _sig(train_ips / step)
  if a.torch_samples > 0:
    out.update(torch_reference(config, study_data, a.torch_samples, a.torch_steps,
                               a.torch_threads))
    if "torch_study_s" in out:
      out["ratio_vs_torch"] = _sig(out["torch_study_s"] / out["wall_s"])
  if a.workdir is None:
    shutil.rmtree(workdir, ignore_errors=True)
  print(f"# {out['models']} models x {out['iterations']} iterations x batch "
        f"{out['batch_size']}: wall {wall:.1f} s, end-to-end {e2e:,.0f} training images/s")
  for k, v in out["phases"].items():
    print(f"#   {k:12s} {v:9.2f} s  {100 * v / wall:5.1f}%")
  print(f"# compiles: {out['compiles']} ({', '.join(f'{k} x{n} {s:.1f}s' for k, (n, s) in list(out['compiled_functions'].items())[:6])})")
  if "step_before_images_per_s" in out:
    print(f"# step benchmark P={out['step_P']} before the study: "
          f"{out['step_before_images_per_s']:,.0f} images/s, after: "
          f"{out['step_images_per_s']:,.0f} (drift x{out['step_drift']:.2f}); "
          f"end-to-end / their mean = {out['ratio_end_to_end_vs_step']:.3f}, training "
          f"phase / their mean = {out.get('ratio_training_vs_step', float('nan')):.3f}")
  elif "step_images_per_s" in out:
    print(f"# step benchmark P={out['step_P']}: {out['step_images_per_s']:,.0f} images/s; "
          f"end-to-end / step = {out['ratio_end_to_end_vs_step']:.3f}")
  if "torch_study_s" in out:
    print(f"# PyTorch one-model loop, extrapolated: {out['torch_study_s']:.1f} s "
          f"({out['ratio_vs_torch']:.2f}x this run's wall)")
  print(json.dumps(out), flush=True)
  return out


if __name__ == "__main__":
  main(t_start=process_start_time() or _T_MODULE)
