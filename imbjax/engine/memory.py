"""Memory planned before it is spent: will a population's training and evaluation fit?

A study that runs out of device memory in its first group has wasted its start-up; one
that runs out after hours has wasted hours. `plan` measures, before any training, what
ONE model needs and scales it to the population each device holds. The working memory
of one model's training step and evaluation step is first bounded from the traced
programs (every intermediate value, no reuse, times two: no compile); only a plan
that does not fit under that bound is measured exactly (XLA's `memory_analysis` of
the compiled one-model programs) before it is refused:

* training, per device: the resident training split, every model's state (parameters,
  batch statistics, optimiser state) and recipe (`Member`), plus the step's working
  memory for the models trained at once (`block_size`: 1 on CPU, all elsewhere);
* evaluation, per device: the test images, every model's state, the working memory of
  one evaluation block (`eval_block` models on `eval_batch_size` examples each) and the
  logits of every model on every evaluated example (float32 [P, N, C]).

The budget is the device's allocator limit (`Device.memory_stats()['bytes_limit']`),
else (CPU) the host's physical memory shared by its local devices; the environment
variable ``IMBJAX_MEMORY_BUDGET`` (bytes, or with a K/M/G/T suffix) overrides it. Batch
sizes are never changed here, since that would change the numbers; a plan that does not
fit raises `MemoryPlanError`, naming the fields that would make it fit.

Example::

    report = plan(trainer, members, data, eval_examples=10_000, eval_batch_size=1000)
    report.check()   # MemoryPlanError naming population_size, batch_size, ... or None
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from imbjax.engine.loop import _predict_local, _run_steps, block_size, eval_block
from imbjax.engine.state import Member, TrainData, population_size
from imbjax.engine.step import init_state
from imbjax.engine.trainer import Trainer

BUDGET_ENV = "IMBJAX_MEMORY_BUDGET"
_SUFFIX = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


class MemoryPlanError(ValueError):
  """A population that would not fit in memory; the message says what would.

  Attributes:
    plan: the `MemoryPlan` refused.
  """

  def __init__(self, message: str, plan: "MemoryPlan | None" = None):
    super().__init__(message)
    self.plan = plan


def parse_bytes(text: str) -> int:
  """'512M' -> 536870912; a plain integer is bytes.

  Raises:
    ValueError: for anything else.
  """
  s = str(text).strip().upper().removesuffix("B").removesuffix("I")
  unit = s[-1:] if s[-1:] in _SUFFIX and s[-1:] else ""
  try:
    value = float(s[:-1] if unit else s)
  except ValueError:
    value = -1.0
  if not math.isfinite(value) or value <= 0:
    raise ValueError(f"{BUDGET_ENV} must be a positive number of bytes, optionally with "
                     f"a K, M, G or T suffix, got {text!r}")
  return int(value * _SUFFIX[unit])


def device_budget(device=None) -> tuple[int, str]:
  """Bytes one device may use, and where the number comes from."""
  if os.environ.get(BUDGET_ENV):
    return parse_bytes(os.environ[BUDGET_ENV]), f"${BUDGET_ENV}"
  device = device or jax.local_devices()[0]
  stats = None
  try:
    stats = device.memory_stats()
  except Exception:  # pylint: disable=broad-except  # a backend without statistics
    pass
  if stats and stats.get("bytes_limit"):
    return int(stats["bytes_limit"]), f"{device.platform} allocator limit"
  phys = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  n = max(1, jax.local_device_count())
  return phys // n, f"host memory / {n} local device(s)"


def _itemsize(dtype) -> int:
  try:
    return jnp.dtype(dtype).itemsize
  except TypeError:  # a typed PRNG key: two uint32 words for the default key
    return 8


def _nbytes(tree) -> int:
  return sum(int(np.prod(x.shape)) * _itemsize(x.dtype) for x in jax.tree.leaves(tree))


def resident_bytes(tree) -> int:
  """Bytes that `tree`'s arrays hold on the local device holding the most of them; a host
  array counts whole (as if placed replicated)."""
  per_device = collections.Counter()
  host = 0
  for leaf in jax.tree.leaves(tree):
    if isinstance(leaf, jax.Array):
      for shard in leaf.addressable_shards:
        per_device[shard.device] += int(np.prod(shard.data.shape)) * _itemsize(leaf.dtype)
    else:
      host += _nbytes(np.asarray(leaf))
  return host + max(per_device.values(), default=0)


def _one(tree):
  """The first model of a stacked tree, as a population of one (abstract)."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct((1,) + tuple(x.shape[1:]), x.dtype),
                      tree)


def _jaxpr_bytes(jaxpr) -> int:
  """Bytes of every intermediate value of a jaxpr (sub-jaxprs once): no buffer reuse,
  so at least what the compiled program's working memory holds."""
  total = 0
  for eqn in jaxpr.eqns:
    total += sum(_nbytes([v.aval]) for v in eqn.outvars if hasattr(v.aval, "shape"))
    for param in eqn.params.values():
      for sub in (param if isinstance(param, (tuple, list)) else (param,)):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          total += _jaxpr_bytes(inner)
  return total


def _programs(trainer, member_shapes, data_shapes, eval_batch):
  members = jax.tree.unflatten(member_shapes[0], member_shapes[1])
  data = jax.tree.unflatten(data_shapes[0], data_shapes[1])
  state = jax.eval_shape(jax.vmap(lambda m: init_state(trainer, m)), members)
  images = jax.ShapeDtypeStruct((eval_batch,) + tuple(data.images.shape[1:]), jnp.float32)
  train = (jax.jit(functools.partial(_run_steps, trainer, num_steps=1)),
           (state, members, data))
  evaluate = (jax.jit(functools.partial(_predict_local, trainer, batch_size=eval_batch)),
              (state.params, state.batch_stats, images))
  return train, evaluate, _nbytes(state)


# XLA may add buffers a jaxpr does not show (layout copies, convolution workspaces):
# the traced bound counts twice the jaxpr's intermediates.
_BOUND_MARGIN = 2


@functools.lru_cache(maxsize=16)
def _measure(trainer: Trainer, member_shapes, data_shapes, eval_batch: int,
             compile_: bool):
  """Working memory of one model's training step and evaluation step, and one model's
  state bytes: a traced upper bound (cheap), or XLA's `memory_analysis` of the compiled
  programs (`compile_`; exact, one compile each)."""
  programs = _programs(trainer, member_shapes, data_shapes, eval_batch)
  temps = []
  for fn, args in programs[:2]:
    if compile_:
      temps.append(int(fn.lower(*args).compile().memory_analysis().temp_size_in_bytes))
    else:
      temps.append(_BOUND_MARGIN * _jaxpr_bytes(jax.make_jaxpr(fn)(*args).jaxpr))
  return temps[0], temps[1], programs[2]


def _shapes(tree):
  leaves, treedef = jax.tree.flatten(tree)
  return treedef, tuple(jax.ShapeDtypeStruct(x.shape, x.dtype) for x in leaves)


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
  """Bytes per device of a population's training and evaluation, against a budget."""
  models: int               # population size (all devices)
  devices: int
  models_per_device: int
  block: int                # models trained at once per device
  eval_block: int
  batch_size: int
  eval_batch_size: int
  eval_examples: int
  num_classes: int
  data_bytes: int           # the resident training split
  eval_data_bytes: int      # the evaluated images, resident
  state_bytes: int          # one model's state + recipe
  train_temp: int           # working memory of one model's training step
  eval_temp: int            # working memory of one model's evaluation batch
  budget: int
  budget_source: str
  measured: bool = True     # step memory from the compiled programs, not the traced bound

  def train_bytes(self, models_per_device=None, block=None, batch_size=None) -> int:
    m = self.models_per_device if models_per_device is None else models_per_device
    b = min(self.block if block is None else block, m)
    scale = 1.0 if batch_size is None else batch_size / self.batch_size
    return int(self.data_bytes + m * self.state_bytes + b * self.train_temp * scale)

  def eval_bytes(self, models_per_device=None, eval_batch_size=None) -> int:
    m = self.models_per_device if models_per_device is None else models_per_device
    scale = 1.0 if eval_batch_size is None else eval_batch_size / self.eval_batch_size
    logits = m * self.eval_examples * self.num_classes * 4
    return int(self.eval_data_bytes + m * self.state_bytes
               + min(self.eval_block, m) * self.eval_temp * scale + logits)

  @property
  def fits(self) -> bool:
    return max(self.train_bytes(), self.eval_bytes()) <= self.budget

  def advice(self) -> list[str]:
    """Changes of one config field each that would make the plan fit."""
    out = []
    per_device = [m for m in range(self.models_per_device, 0, -1)
                  if max(self.train_bytes(m), self.eval_bytes(m)) <= self.budget]
    if per_device:
      out.append(f"population_size={per_device[0] * self.devices} (models trained "
                 f"together; {self.models} now)")
    if self.block > 1 and self.train_bytes() > self.budget:
      fit = [b for b in range(self.block - 1, 0, -1) if self.train_bytes(block=b)
             <= self.budget and self.eval_bytes() <= self.budget]
      if fit:
        out.append(f"model_block={fit[0]} (models stepped at once per device; "
                   f"{self.block} now)")
    if self.train_bytes() > self.budget and self.eval_bytes() <= self.budget:
      fit = [b for b in _halvings(self.batch_size) if self.train_bytes(batch_size=b)
             <= self.budget]
      if fit:
        out.append(f"batch_size={fit[0]} (about; it changes the study's numbers)")
    if self.eval_bytes() > self.budget and self.train_bytes() <= self.budget:
      fit = [b for b in _halvings(self.eval_batch_size)
             if self.eval_bytes(eval_batch_size=b) <= self.budget]
      if fit:
        out.append(f"eval_batch_size={fit[0]} (test examples per model per evaluation "
                   f"step; {self.eval_batch_size} now)")
    return out

  def describe(self) -> str:
    mb = lambda n: f"{n / 2**20:,.1f} MiB"
    return (f"{self.models} models on {self.devices} device(s) ({self.models_per_device} "
            f"each): training needs {mb(self.train_bytes())} per device (data "
            f"{mb(self.data_bytes)}, {mb(self.state_bytes)} state per model, "
            f"{mb(self.train_temp)} step memory{'' if self.measured else ' (bound)'} per model x {min(self.block, self.models_per_device)} "
            f"at once), evaluation {mb(self.eval_bytes())} (logits of {self.eval_examples} "
            f"examples per model included); budget {mb(self.budget)} "
            f"({self.budget_source})")

  def check(self) -> None:
    """Raises `MemoryPlanError` (naming what to change) if the plan does not fit."""
    if self.fits:
      return
    advice = self.advice()
    fix = ("; set one of: config." + ", config.".join(advice) if advice else
           "; no single field change fits it: use a device with more memory")
    raise MemoryPlanError(f"not enough memory: {self.describe()}{fix}. Override the "
                          f"budget with ${BUDGET_ENV} (bytes, or K/M/G/T).", self)


def _halvings(n: int) -> list[int]:
  out = []
  while n > 1:
    n //= 2
    out.append(n)
  return out


def plan(trainer: Trainer, members: Member, data: TrainData, *, eval_examples: int,
         eval_batch_size: int, devices: int | None = None,
         budget: int | None = None) -> MemoryPlan:
  """Measures one model's training and evaluation memory and scales it to `members`.

  Args:
    trainer: the population's trainer.
    members: the stacked population (host numpy or arrays; only shapes are read).
    data: the training split as trained on (only shapes are read).
    eval_examples: examples evaluated per model at once (the largest split scored).
    eval_batch_size: evaluation examples per model per step.
    devices: devices the model axis is sharded over (default: all).
    budget: bytes per device (default: `device_budget`).

  Returns:
    A `MemoryPlan`; call `check()` to refuse a population that does not fit.
  """
  devices = devices or len(jax.devices())
  p = population_size(members)
  per_device = -(-p // devices)
  eval_batch = min(eval_batch_size, eval_examples)
  source = "argument"
  if budget is None:
    budget, source = device_budget()
  member_bytes = _nbytes(_one(members))
  image_bytes = int(np.prod(data.images.shape[1:])) * 4
  shapes = (trainer, _shapes(_one(members)), _shapes(data), eval_batch)
  for compile_ in (False, True):
    # The traced bound settles most studies without a compile; one near (or over) the
    # budget is measured exactly before it is refused.
    train_temp, eval_temp, state_bytes = _measure(*shapes, compile_)
    out = MemoryPlan(
        models=p, devices=devices, models_per_device=per_device,
        block=block_size(trainer, per_device), eval_block=eval_block(trainer),
        batch_size=trainer.batch_size, eval_batch_size=eval_batch,
        eval_examples=eval_examples, num_classes=trainer.num_classes,
        data_bytes=_nbytes(data), eval_data_bytes=eval_examples * image_bytes,
        state_bytes=state_bytes + member_bytes, train_temp=train_temp,
        eval_temp=eval_temp, budget=int(budget), budget_source=source,
        measured=compile_)
    if out.fits:
      break
  return out
