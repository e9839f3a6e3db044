"""Throughput of population training, with a reference measured in the same run.

Times THE ENGINE'S OWN TRAIN STEP (`imbjax.population.train_chunk`, members built by
`population.make_member` with per-model index plans, batch 64) after compilation, for
populations of P models, and in the same process:

* the float32 matmul peak (2048x2048 `jnp.matmul`), to express throughput as a fraction
  of what the machine can do;
* a reference: the PyTorch one-model loop (SGD momentum, batch 64, batches gathered by
  random indices) when `torch` is importable (the `bench` extra), else a sequential
  one-model JAX loop (a jitted `population.train_step` called from Python).

Timing runs in rounds: each round times the reference once and then every P once, so
each ratio compares runs taken seconds apart (this machine's speed drifts by a third
over minutes). A P's images/s is its best round; its ratio (`x ref`) is the median over
rounds of its images/s over the reference's in the same round.

It prints a table (P, images/s, GFLOP/s, fraction of the matmul peak, ratio to the
reference, bytes per model) and, as its LAST line, one JSON object with at least
`images_per_s` (at P=32, or the largest P run), `reference_images_per_s` (best round),
`ratio` (median paired ratio), `peak_gflops`, and every round's figures (`rounds`).

  python -m benchmarks.population_throughput                      # P in 1,8,32,128
  python -m benchmarks.population_throughput --cpu-devices 1      # one multi-threaded device
  python -m benchmarks.population_throughput --quick              # seconds, for tests
  python -m benchmarks.population_throughput --model allcnn --batch 32 \
    --impls xla,im2col --populations 1,4                          # All-CNN, per lowering
  python -m benchmarks.population_throughput --model resnet10 --image-size 64 \
    --batch 16 --impls xla,im2col --populations 1,4               # ResNet-10, reduced

`--model` picks the network (LeNet-5 by default; All-CNN-C at batch 256 as in the paper
and ResNet-10, whose PyTorch references are `torch_models.py`'s mirrors of the same
layers). `--impls` times every listed convolution lowering in the same rounds and
reports each, plus `best_impl`: the lowering to pick for that model on this machine.
  LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 \
    python -m benchmarks.population_throughput                    # see README.md

On CPU the populations are sharded over one single-threaded XLA device per core by
default (`population.use_cpu_devices`): on 2 Intel Xeon cores that trained 32 LeNet-5s
at 2.6x the PyTorch loop against 1.6x on one two-threaded device (README.md).

Memory per model comes from XLA's own accounting of the compiled chunk
(`Compiled.memory_analysis()`: arguments + outputs + temporaries - aliased donations),
fitted as ``bytes(P) = shared + per_model * P`` over the populations run, which gives the
largest population that fits a memory budget (``--memory-gib``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from imbjax import engine

# Forward multiply-adds of LeNet-5 (Table 2) on one 28x28x1 image, times 2 (FLOP per
# MAC), times 3 (forward + input gradient + weight gradient), the usual training count:
# conv1 24*24*20*25, conv2 8*8*50*500, fc1 800*500, fc2 500*10.
_FWD_MACS = 24 * 24 * 20 * 25 + 8 * 8 * 50 * 500 + 800 * 500 + 500 * 10
FLOP_PER_IMAGE = 3 * 2 * _FWD_MACS  # 13.76 MFLOP
NUM_CLASSES = 10
BATCH = 64

# Per network: the paper's input (ResNet-10: ImageNet's 224, reduced by --image-size),
# batch (ResNet-10's is ours: the paper gives none), classes, and the default size of
# the synthetic training set on the device.
MODELS = {
    "lenet5": dict(input_shape=(28, 28, 1), batch=64, num_classes=10, train_size=10_000),
    "allcnn": dict(input_shape=(32, 32, 3), batch=256, num_classes=10, train_size=2_048),
    "resnet10": dict(input_shape=(224, 224, 3), batch=256, num_classes=1000,
                     train_size=2_048),
}


def flop_per_image(model: str, input_shape, num_classes: int) -> float | None:
  """Training FLOP per image (3 x 2 x forward MACs); None if it cannot be counted."""
  if model == "lenet5" and tuple(input_shape) == (28, 28, 1):
    return float(FLOP_PER_IMAGE)
  try:
    from benchmarks import torch_models
  except ImportError:
    return None
  net = torch_models.make(model, num_classes, tuple(input_shape))
  return 6.0 * torch_models.forward_macs(net, tuple(input_shape))


def matmul_peak_gflops(n: int = 2048, repeats: int = 5, mesh=None) -> float:
  """Best float32 GFLOP/s of n x n `jnp.matmul`s, one per device of `mesh` at once."""
  d = 1 if mesh is None else mesh.devices.size
  key_a, key_b = jax.random.split(jax.random.key(0))
  a = jax.random.normal(key_a, (d, n, n), jnp.float32)
  b = jax.random.normal(key_b, (d, n, n), jnp.float32)
  if mesh is not None:
    a, b = engine.place(np.asarray(a), mesh), engine.place(np.asarray(b), mesh)
  f = jax.jit(jax.vmap(jnp.matmul))
  jax.block_until_ready(f(a, b))
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(f(a, b))
    best = min(best, time.perf_counter() - t0)
  return d * 2 * n ** 3 / best / 1e9


def synthetic_data(n: int, seed: int = 0, input_shape=(28, 28, 1),
                   num_classes: int = NUM_CLASSES) -> engine.TrainData:
  """A random training set (MNIST-shaped by default; a step's cost ignores the pixels)."""
  k_img, k_lab = jax.random.split(jax.random.key(seed))
  images = jax.random.uniform(k_img, (n, *input_shape), jnp.float32)
  labels = jax.random.randint(k_lab, (n,), 0, num_classes, jnp.int32)
  return engine.TrainData(images, labels)


def make_population(p: int, labels: np.ndarray, seed: int = 0,
                    num_classes: int = NUM_CLASSES) -> engine.Member:
  """P members with their own key and own class-sorted plan (a random subset, 50-100%)."""
  n = labels.shape[0]
  keys = jax.random.split(jax.random.key(seed + 1), p)
  members = []
  for i in range(p):
    k_len, k_perm = jax.random.split(jax.random.fold_in(jax.random.key(seed + 2), i))
    size = int(jax.random.randint(k_len, (), n // 2, n + 1))
    plan = np.sort(np.asarray(jax.random.permutation(k_perm, n))[:size])
    plan = plan[np.argsort(labels[plan], kind="stable")]
    members.append(engine.make_member(keys[i], plan, num_classes, base_lr=0.01,
                                   plan_labels=labels[plan]))
  return engine.stack_members(members)


def compiled_bytes(trainer, state, members, data, steps) -> int:
  """Bytes XLA needs for one chunk call: arguments + outputs + temporaries - aliases."""
  compiled = engine.loop._train_chunk_jit.lower(trainer, state, members, data, steps,
                                       engine.chunk_mesh(members)).compile()
  m = compiled.memory_analysis()
  if m is None:
    return -1
  return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
             - m.alias_size_in_bytes)


class PopulationRun:
  """One population of P models, compiled; `run()` times one chunk of `steps` steps.

  With a `mesh`, the model axis is sharded over its devices (P is padded to a multiple
  of the device count by `population.pad_population`; only the P real models count).
  """

  def __init__(self, trainer: engine.Trainer, p: int, data: engine.TrainData, steps: int,
               mesh=None):
    self.trainer, self.p, self.steps = trainer, p, steps
    members = make_population(p, np.asarray(data.labels), num_classes=trainer.num_classes)
    if mesh is not None:
      members, _ = engine.pad_population(members, mesh.devices.size)
      data = engine.place(data, mesh, replicated=True)
    self.members, self.data = engine.place(members, mesh), data
    self.state = engine.init_population(trainer, self.members)
    nbytes = compiled_bytes(trainer, self.state, self.members, data, steps)
    if mesh is not None and nbytes > 0:
      nbytes *= mesh.devices.size  # XLA reports one device's program; data is replicated
    self.bytes_total = nbytes
    self.first_call_s = self.run()
    self.images_per_s: list[float] = []  # one per timed round

  def run(self) -> float:
    """Seconds for one chunk (the state carries over, as in training)."""
    t0 = time.perf_counter()
    self.state, metrics = engine.train_chunk(self.trainer, self.state, self.members, self.data,
                                          self.steps)
    jax.block_until_ready(metrics)
    seconds = time.perf_counter() - t0
    if not np.all(np.isfinite(np.asarray(metrics["loss"]))):
      raise RuntimeError(f"P={self.p}: non-finite loss in the benchmark run")
    return seconds

  def time_round(self) -> float:
    ips = self.p * self.steps * self.trainer.batch_size / self.run()
    self.images_per_s.append(ips)
    return ips


def torch_reference(data: engine.TrainData, steps: int, *, model: str = "lenet5",
                    batch: int = BATCH, num_classes: int = NUM_CLASSES,
                    threads: int | None = None) -> Callable[[], float] | None:
  """A PyTorch one-model SGD loop of `model` (None if torch is not installed).

  The network is `torch_models.make(model, ...)`, the same layers as imbjax's.

  Returns a function that runs `steps` steps and gives their images/s.
  """
  try:
    import torch
    from benchmarks import torch_models
  except ImportError:
    return None
  torch.manual_seed(0)  # torch's own generator, used only by the reference
  torch.set_num_threads(threads or os.cpu_count() or 1)
  net = torch_models.make(model, num_classes, tuple(data.images.shape[1:]))
  net.train()
  opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
  images = torch.from_numpy(np.asarray(data.images).transpose(0, 3, 1, 2).copy())
  labels = torch.from_numpy(np.asarray(data.labels).astype(np.int64))
  n = images.shape[0]
  gen = torch.Generator().manual_seed(0)

  def run(k):
    for _ in range(k):
      idx = torch.randint(0, n, (batch,), generator=gen)
      loss = torch.nn.functional.cross_entropy(net(images[idx]), labels[idx])
      opt.zero_grad(set_to_none=True)
      loss.backward()
      opt.step()
    return loss.item()

  run(5)

  def timed() -> float:
    t0 = time.perf_counter()
    run(steps)
    return steps * batch / (time.perf_counter() - t0)

  return timed


def jax_loop_reference(trainer: engine.Trainer, data: engine.TrainData,
                       steps: int) -> Callable[[], float]:
  """One model stepped from Python by a jitted `population.train_step`.

  Returns a function that runs `steps` steps and gives their images/s.
  """
  members = make_population(1, np.asarray(data.labels), num_classes=trainer.num_classes)
  member = jax.tree.map(lambda x: jnp.asarray(x[0]), members)
  state = jax.jit(engine.init_state, static_argnums=0)(trainer, member)
  step = jax.jit(engine.train_step, static_argnums=0, donate_argnums=1)
  state, m = step(trainer, state, member, data)
  jax.block_until_ready(m)

  def timed() -> float:
    nonlocal state
    t0 = time.perf_counter()
    for _ in range(steps):
      state, m = step(trainer, state, member, data)
    jax.block_until_ready(m)
    return steps * trainer.batch_size / (time.perf_counter() - t0)

  return timed


def _fit_memory(rows: list[dict], budget_bytes: float) -> dict:
  """Least-squares ``bytes = shared + per_model * P`` and the largest P in the budget."""
  pts = [(r["P"], r["bytes_total"]) for r in rows if r["bytes_total"] > 0]
  if not pts:
    return {}
  ps = np.array([p for p, _ in pts], float)
  bs = np.array([b for _, b in pts], float)
  if len(pts) == 1:
    per, shared = bs[0] / ps[0], 0.0
  else:
    per, shared = np.polyfit(ps, bs, 1)
  return {"bytes_per_model": float(per), "bytes_shared": float(shared),
          "memory_budget_gib": budget_bytes / 2 ** 30,
          "max_population_in_budget": int(max(0, np.floor((budget_bytes - shared) / per + 1e-6)))}


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--model", default="lenet5", choices=sorted(MODELS),
                  help="the network (PyTorch reference: torch_models.py's mirror)")
  ap.add_argument("--populations", default=None,
                  help="comma-separated population sizes P (default 1,8,32,128)")
  ap.add_argument("--steps", type=int, default=None,
                  help="steps per timed chunk (default 50)")
  ap.add_argument("--repeats", type=int, default=None,
                  help="timed rounds (reference, then each P, per round; default 3)")
  ap.add_argument("--warmup", type=int, default=None,
                  help="untimed rounds before the timed ones (default 1)")
  ap.add_argument("--conv-impl", default="auto",
                  help="'auto', 'xla', 'im2col', 'banded' or 'winograd'")
  ap.add_argument("--impls", default=None,
                  help="comma-separated lowerings to time in the same rounds (default: "
                  "--conv-impl); the JSON reports each and the fastest as best_impl")
  ap.add_argument("--batch", type=int, default=None,
                  help="examples per step per model (default: the model's; LeNet-5 64, "
                  "All-CNN 256 as in the paper, ResNet-10 256)")
  ap.add_argument("--image-size", type=int, default=None,
                  help="ResNet-10's input side (default 224; e.g. 64 on CPU)")
  ap.add_argument("--num-classes", type=int, default=None,
                  help="classes (default: the model's dataset: 10, or 1000 for ResNet-10)")
  ap.add_argument("--reference", default="auto", choices=("auto", "torch", "jax"),
                  help="torch if importable (auto), or the sequential JAX loop")
  ap.add_argument("--torch-threads", type=int, default=None,
                  help="PyTorch's intra-op threads (default: one per core; on a loaded "
                  "machine 2 threads ran ResNet-10 14x slower than 1)")
  ap.add_argument("--train-size", type=int, default=None,
                  help="examples on the device (default: 10,000 for LeNet-5, else 2,048)")
  ap.add_argument("--memory-gib", type=float, default=None,
                  help="budget for the largest-population estimate (default: host RAM)")
  ap.add_argument("--cpu-devices", type=int, default=None,
                  help="split the CPU into this many one-thread devices and shard the "
                  "model axis over them; 0: one per core (the default: fastest for "
                  "populations, README.md), 1: one multi-threaded device (the default "
                  "of --quick, which may run in a process where JAX already started); "
                  "ignored off CPU")
  ap.add_argument("--model-block", type=int, default=None,
                  help="models per device per step (Trainer.model_block); default: per "
                  "backend (1 on CPU, all elsewhere)")
  ap.add_argument("--quick", action="store_true",
                  help="P in 1,4, 3 steps, 2 rounds, small data and batches, where not "
                  "given (a smoke test)")
  a = ap.parse_args(argv)
  spec = MODELS[a.model]
  batch = a.batch or spec["batch"]
  num_classes = a.num_classes or spec["num_classes"]
  input_shape = spec["input_shape"]
  if a.model == "resnet10":
    side = a.image_size or (32 if a.quick else input_shape[0])
    input_shape = (side, side, input_shape[2])
  train_size = a.train_size or spec["train_size"]
  defaults = (("1,4", 3, 2, 0) if a.quick else ("1,8,32,128", 50, 3, 1))
  for name, default in zip(("populations", "steps", "repeats", "warmup"), defaults):
    if getattr(a, name) is None:
      setattr(a, name, default)
  if a.quick:
    train_size = a.train_size or 512
    if a.model != "lenet5":
      batch = a.batch or 8
      num_classes = a.num_classes or 10
  if a.cpu_devices is None:
    a.cpu_devices = 1 if a.quick else 0
  populations = [int(p) for p in a.populations.split(",")]
  impls = (a.impls or a.conv_impl).split(",")
  if not populations or min(populations) < 1:
    raise ValueError(f"--populations must be positive ints, got {a.populations!r}")
  if a.repeats < 1 or a.steps < 1 or a.warmup < 0:
    raise ValueError(f"--repeats and --steps must be >= 1 and --warmup >= 0, got "
                     f"{a.repeats}, {a.steps} and {a.warmup}")
  if a.memory_gib is None:
    budget = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  else:
    budget = a.memory_gib * 2 ** 30

  if a.cpu_devices != 1:
    engine.use_cpu_devices(a.cpu_devices)
  mesh = engine.model_mesh() if jax.device_count() > 1 else None
  trainers = {impl: engine.Trainer(model=a.model, num_classes=num_classes,
                                   batch_size=batch, total_steps=10_000, conv_impl=impl,
                                   input_shape=input_shape, model_block=a.model_block)
              for impl in impls}
  data = synthetic_data(train_size, input_shape=input_shape, num_classes=num_classes)
  flop = flop_per_image(a.model, input_shape, num_classes)
  print(f"# model={a.model} input={input_shape} batch={batch} classes={num_classes} "
        f"backend={jax.default_backend()} devices={jax.device_count()} "
        f"cpu={platform.processor() or platform.machine()} cores={os.cpu_count()} "
        f"impls={','.join(impls)} model_block={a.model_block} steps={a.steps} "
        f"repeats={a.repeats} "
        f"LD_PRELOAD={os.environ.get('LD_PRELOAD', '')!r} "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}", flush=True)
  peak = matmul_peak_gflops(512 if a.quick else 2048, mesh=mesh)
  ref_kind = a.reference
  if ref_kind in ("auto", "torch"):
    import importlib.util
    has_torch = importlib.util.find_spec("torch") is not None
    if not has_torch and ref_kind == "torch":
      raise ValueError("--reference torch but torch is not importable")
    ref_kind = "torch" if has_torch else "jax"

  if ref_kind == "torch":
    reference = torch_reference(data, a.steps * 2, model=a.model, batch=batch,
                                num_classes=num_classes, threads=a.torch_threads)
  else:
    reference = jax_loop_reference(trainers[impls[0]], data, a.steps)

  # Rounds: each times the reference and then every (lowering, P) back to back, so
  # that a ratio is taken between runs seconds apart. This machine's speed drifts by
  # 30% or more over minutes (the matmul peak alone has measured 185-277 GFLOP/s in one
  # hour), which would swamp a ratio of two figures taken minutes apart. A P's images/s
  # is its best round; its ratio is the MEDIAN over rounds of the paired ratio.
  runs, failed = [], {}
  for impl in impls:
    for p in populations:
      try:
        run = PopulationRun(trainers[impl], p, data, a.steps, mesh)
      except Exception as e:  # pylint: disable=broad-except
        # Out of memory or a compiler refusal on a lease: record it, time the others.
        failed[f"{impl} P={p}"] = f"{type(e).__name__}: {str(e)[:300]}"
        print(f"# {impl} P={p}: failed, {failed[f'{impl} P={p}']}", flush=True)
        continue
      run.impl = impl
      runs.append(run)
      print(f"# {impl} P={p}: compiled, first call {run.first_call_s:.1f} s", flush=True)
  impls = [i for i in impls if any(r.impl == i for r in runs)]
  if not impls:
    raise RuntimeError(f"every configuration failed: {failed}")
  # One untimed round first: the first timed round after compilation ran up to 7x slow
  # (P=1: 538 against 3,091-3,647 img/s in the rounds after it, 2026-11-28).
  for _ in range(a.warmup):
    reference()
    for run in runs:
      run.run()
  refs = []
  for i in range(a.repeats):
    refs.append(reference())
    line = [f"reference {refs[-1]:.0f}"]
    for run in runs:
      line.append(f"{run.impl} P={run.p} {run.time_round():.0f}")
    print(f"# round {i + 1}/{a.repeats} (img/s): " + ", ".join(line), flush=True)
  ref = max(refs)
  print(f"# matmul peak {peak:.1f} GFLOP/s; reference ({ref_kind} one-model loop) best "
        f"{ref:.0f} img/s", flush=True)
  print(f"{'P':>5} {'img/s':>9} {'median':>9} {'GFLOP/s':>8} {'of peak':>8} "
        f"{'x ref':>6} {'MiB/model':>10} {'1st call s':>10} {'impl':>9}", flush=True)
  per_impl = {}
  for impl in impls:
    rows = []
    for run in (r for r in runs if r.impl == impl):
      ips = np.array(run.images_per_s)
      r = {"P": run.p, "images_per_s": float(ips.max()),
           "median_images_per_s": float(np.median(ips)),
           "ratio": float(np.median(ips / np.array(refs))),
           "first_call_s": run.first_call_s, "bytes_total": run.bytes_total,
           "rounds": [round(x, 1) for x in ips.tolist()]}
      r["gflops"] = None if flop is None else r["images_per_s"] * flop / 1e9
      r["fraction_of_peak"] = None if flop is None else r["gflops"] / peak
      rows.append(r)
      gf = "" if flop is None else f"{r['gflops']:8.1f} {r['fraction_of_peak']:8.2f}"
      print(f"{run.p:5d} {r['images_per_s']:9.0f} {r['median_images_per_s']:9.0f} "
            f"{gf or '       -        -'} {r['ratio']:6.2f} "
            f"{r['bytes_total'] / run.p / 2 ** 20:10.2f} {r['first_call_s']:10.1f} "
            f"{impl:>9}", flush=True)
    per_impl[impl] = _summary(rows, budget)
  print("# x ref: median over rounds of (P's images/s / the reference's in that round)",
        flush=True)
  best = max(impls, key=lambda i: per_impl[i]["images_per_s"])
  top = per_impl[best]
  if top.get("bytes_per_model") is not None:
    print(f"# memory ({best}): {top['bytes_per_model'] / 2 ** 20:.2f} MiB per model + "
          f"{top['bytes_shared'] / 2 ** 20:.1f} MiB shared; largest P in "
          f"{top['memory_budget_gib']:.1f} GiB: {top['max_population_in_budget']}",
          flush=True)
  if len(impls) > 1:
    print(f"# best lowering for {a.model} at P={top['P']}: {best} "
          + ", ".join(f"{i} {per_impl[i]['images_per_s']:.0f}" for i in impls), flush=True)
  result = {
      **{k: v for k, v in top.items() if k not in ("rounds", "per_p")},
      "reference": ref_kind, "reference_images_per_s": round(ref, 1),
      "rounds": {"reference": [round(x, 1) for x in refs], **top["rounds"]},
      "peak_gflops": round(peak, 1),
      "model": a.model, "batch": batch, "input_shape": list(input_shape),
      "num_classes": num_classes, "flop_per_image": flop,
      "conv_impl": best, "best_impl": best, "model_block": a.model_block,
      "backend": jax.default_backend(),
      "devices": jax.device_count(), "steps": a.steps,
      "per_p": top["per_p"],
      "per_impl": per_impl,
      "failed": failed,
  }
  print(json.dumps(result), flush=True)
  return result


def _summary(rows: list[dict], budget: float) -> dict:
  """One lowering's JSON: its P=32 (or largest) row, P=1's ratio, the memory fit."""
  main_row = next((r for r in rows if r["P"] == 32), rows[-1])
  one = next((r for r in rows if r["P"] == 1), None)
  mem = _fit_memory(rows, budget)
  rnd = lambda v: None if v is None else round(v, 3)
  return {
      "images_per_s": round(main_row["images_per_s"], 1), "P": main_row["P"],
      "ratio": round(main_row["ratio"], 3),
      "ratio_p1": None if one is None else round(one["ratio"], 3),
      "fraction_of_peak": rnd(main_row["fraction_of_peak"]),
      "rounds": {str(r["P"]): r["rounds"] for r in rows},
      "per_p": {str(r["P"]): round(r["images_per_s"], 1) for r in rows},
      "ratio_per_p": {str(r["P"]): round(r["ratio"], 3) for r in rows},
      **{k: (round(v, 1) if isinstance(v, float) else v) for k, v in mem.items()},
  }


if __name__ == "__main__":
  main()
