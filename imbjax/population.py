"""Population training: many networks, one compiled program.

This module owns the vmapped train step and everything that makes a *population* of
models train as one program: the per-model recipe (`Member`), the per-model state
(`TrainState`), chunked `lax.scan` over steps, sharding of the model axis over devices
and hosts, divergence handling, and vmapped evaluation.

A method is data, not code. The step below never branches on a method name; each model's
`Member` row carries arrays that select its behaviour:

* ``plan``/``plan_len``: indices into the device-resident training set (baseline subset,
  oversampled or undersampled plan, partial ratios), consumed epoch by epoch with a fresh
  keyed permutation each epoch (`sampling.epoch_order`), or, when ``classwise`` is set,
  drawn class-wise with per-class probabilities interpolated from ``probs_start`` to
  ``probs_end`` (class-aware, square-root and progressively balanced sampling);
* ``base_lr``: the base learning rate (also held in the optimiser state);
* ``output_only``: two-phase phase 2 (update only the model's output layers);
* loss coefficients (``class_weights`` from ``reweight_start`` on, ``logit_offset``,
  ``margin``, ``logit_scale``, ``focal_gamma``): all neutral for plain cross-entropy.

One model and many models are the same code: `train_step` is written for one model and
`train_chunk` lifts it with `jax.vmap` over the leading model axis of `TrainState` and
`Member`, then runs ``num_steps`` of it under `lax.scan`. Metrics leave the device only
between chunks.

Typical use (see `train.py` for the study driver)::

    trainer = Trainer(model='lenet5', num_classes=10, batch_size=64, total_steps=10_000)
    members = stack_members([make_member(...), ...])     # host numpy, leading axis P
    state = init_population(trainer, members)
    for _ in range(n_chunks):
      state, metrics = train_chunk(trainer, state, members, data, num_steps=500)
    logits = predict(trainer, state, test_images)
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable, Mapping, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from imbjax import losses
from imbjax import models
from imbjax import optim
from imbjax import sampling

MODEL_AXIS = "models"

# Incremented each time `train_chunk`'s body is traced; tests use it to show that a
# population shape compiles once, not once per chunk.
TRACE_COUNT = {"train_chunk": 0, "predict": 0}


COMPUTE_DTYPES = ("auto", "float32", "bfloat16")


def resolve_compute_dtype(compute_dtype: str) -> str:
  """'auto' -> "float32" on CPU, "bfloat16" elsewhere; a concrete name is returned as is.

  Why bfloat16 off CPU: on an H200 it trained LeNet-5 populations 1.65x faster under the
  banded lowering (4.06M vs 2.45M images/s at P=2048, benchmarks/README.md), and on real
  MNIST it left the results within seed noise: 12 LeNet-5s (step imbalance rho 1, 100,
  1000 x 4 seeds, 1,500 iterations), paired bfloat16 - float32 test AUC differences of at
  most 0.00076 against a seed standard deviation of 0.011 at rho=1000 (docs/reproduction.md).
  On CPU bfloat16 is emulated and ~2x slower, so float32 stays.

  Raises:
    ValueError: for a name not in `COMPUTE_DTYPES`.
  """
  if compute_dtype not in COMPUTE_DTYPES:
    raise ValueError(f"compute_dtype must be one of {COMPUTE_DTYPES}, got {compute_dtype!r}")
  if compute_dtype == "auto":
    return "float32" if jax.default_backend() == "cpu" else "bfloat16"
  return compute_dtype


@dataclasses.dataclass(frozen=True)
class Trainer:
  """Static description of a population's training program (hashable: a jit static arg).

  Everything here is shared by all models of a population; everything that may differ per
  model lives in `Member`.

  Attributes:
    model: registry name in `imbjax.models` ('lenet5', 'allcnn', 'resnet10').
    num_classes: number of classes.
    batch_size: examples per step per model.
    total_steps: iterations of one training phase (progressive sampling and the linear
      schedule need it).
    schedule: name of the learning-rate multiplier in `imbjax.optim`.
    schedule_kwargs: its arguments, as a tuple of (name, value) pairs.
    momentum, weight_decay: Caffe SGD settings.
    conv_impl: convolution lowering ('auto', 'xla', 'im2col', 'banded', 'winograd'); see
      `imbjax.models`.
    input_shape: HWC of one example.
    model_block: how many models (per device) one step processes at once; `train_chunk`
      loops over blocks of that size, each running the whole chunk of steps. None
      (default) picks per backend: 1 on CPU, where one model's working set then stays
      in cache for all its steps (measured 15% more images/s for 32 and 128 LeNet-5s
      on 2 AMD EPYC cores, benchmarks/README.md), and the whole population elsewhere
      (an accelerator wants the widest batched matmuls). A block that does not divide
      the per-device population is lowered to the largest one that does. Results do not
      depend on it: models are independent.
    compute_dtype: dtype of activations and of the convolution/matmul inputs,
      "float32", "bfloat16" (mixed precision: parameters, gradients, optimiser state and
      the loss stay float32; logits are cast to float32 before the loss) or "auto"
      (default; resolved at construction by `resolve_compute_dtype`: float32 on CPU,
      bfloat16 elsewhere).
  """
  model: str = "lenet5"
  num_classes: int = 10
  batch_size: int = 64
  total_steps: int = 10_000
  schedule: str = "inv"
  schedule_kwargs: tuple = ()
  momentum: float = 0.9
  weight_decay: float = 5e-4
  conv_impl: str = "auto"
  input_shape: tuple = (28, 28, 1)
  model_block: int | None = None
  compute_dtype: str = "auto"

  def __post_init__(self):
    if self.model_block is not None and (isinstance(self.model_block, bool)
                                         or not isinstance(self.model_block, int)
                                         or self.model_block < 1):
      raise ValueError(f"model_block must be None (per backend) or an int >= 1, got "
                       f"{self.model_block!r}")
    # Frozen: resolve 'auto' once, so that hashing, equality and the compiled program
    # all see the concrete dtype.
    object.__setattr__(self, "compute_dtype", resolve_compute_dtype(self.compute_dtype))

  def module(self):
    return models.get(self.model, num_classes=self.num_classes, conv_impl=self.conv_impl,
                      dtype=jnp.dtype(self.compute_dtype))

  def lr_schedule(self) -> optim.Schedule:
    kwargs = dict(self.schedule_kwargs)
    if self.schedule == "linear":
      kwargs.setdefault("total_steps", self.total_steps)
    return optim.schedule(self.schedule, **kwargs)

  def optimizer(self, base_lr):
    return optim.caffe_sgd(base_lr, self.lr_schedule(), momentum=self.momentum,
                           weight_decay=self.weight_decay)

  @property
  def has_batch_stats(self) -> bool:
    return models.has_batch_stats(self.model)

  @property
  def output_layers(self) -> tuple[str, ...]:
    return models.output_layers(self.model)


@struct.dataclass
class Member:
  """One model's recipe as arrays; stacked along a leading model axis in a population."""
  key: jax.Array            # uint32[2]: raw PRNG key data (jax.random.key_data)
  plan: jax.Array           # int32[L]: indices into the training set, padded
  plan_len: jax.Array       # int32[]: true length of the plan
  class_starts: jax.Array   # int32[C]: offsets of each class in a class-sorted plan
  class_counts: jax.Array   # int32[C]: examples of each class in the plan
  probs_start: jax.Array    # float32[C]: class-wise sampling probabilities at step 0
  probs_end: jax.Array      # float32[C]: ... at the last step (progressive sampling)
  classwise: jax.Array      # bool[]: draw class-wise instead of epoch order over the plan
  base_lr: jax.Array        # float32[]
  output_only: jax.Array    # bool[]: update only the output layers (two-phase phase 2)
  class_weights: jax.Array  # float32[C]
  reweight_start: jax.Array  # int32[]: class_weights apply from this step on (DRW)
  logit_offset: jax.Array   # float32[C]
  margin: jax.Array         # float32[C]
  logit_scale: jax.Array    # float32[]
  focal_gamma: jax.Array    # float32[]


def make_member(key: jax.Array, plan: np.ndarray, num_classes: int, *, base_lr: float,
                plan_labels: np.ndarray | None = None, output_only: bool = False,
                classwise: bool = False, probs_start=None, probs_end=None,
                class_weights=None, reweight_start: int = 0, logit_offset=None,
                margin=None, logit_scale: float = 1.0, focal_gamma: float = 0.0,
                pad_to: int | None = None) -> Member:
  """Builds one `Member` (host numpy arrays) with neutral defaults.

  Args:
    key: the model's PRNG key (typed or raw); it seeds init, shuffling and dropout.
    plan: 1-D indices into the training set. For class-wise sampling it must be sorted
      by class and `plan_labels` given.
    num_classes: C.
    base_lr: base learning rate.
    plan_labels: labels of the plan's examples (needed for class-wise sampling).
    output_only: two-phase phase 2.
    classwise, probs_start, probs_end: class-wise sampling (see module docstring).
    class_weights, reweight_start, logit_offset, margin, logit_scale, focal_gamma: loss
      coefficients (see `imbjax.losses.imbalance_loss`).
    pad_to: pad the plan to this length (defaults to its own length).

  Raises:
    ValueError: an empty plan, a plan longer than `pad_to`, or class-wise sampling
      without labels.
  """
  plan = np.asarray(plan)
  if plan.ndim != 1 or plan.size == 0:
    raise ValueError(f"plan must be a non-empty 1-D index array, got shape {plan.shape}")
  length = plan.size if pad_to is None else int(pad_to)
  if plan.size > length:
    raise ValueError(f"plan of length {plan.size} does not fit pad_to={length}")
  c = num_classes
  if plan_labels is not None:
    plan_labels = np.asarray(plan_labels)
    counts = np.bincount(plan_labels, minlength=c).astype(np.int32)
    starts = (np.cumsum(counts) - counts).astype(np.int32)
    if classwise and np.any(np.diff(plan_labels) < 0):
      raise ValueError("class-wise sampling needs a plan sorted by class")
  elif classwise:
    raise ValueError("class-wise sampling needs plan_labels")
  else:
    counts = np.zeros(c, np.int32)
    starts = np.zeros(c, np.int32)
  neutral = losses.neutral_coefficients(c)  # plain cross-entropy
  if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  padded = np.zeros(length, np.int32)
  padded[:plan.size] = plan
  f32 = lambda x, d: np.asarray(d if x is None else x, np.float32)
  uniform = np.full(c, 1.0 / c, np.float32)
  return Member(
      key=np.asarray(key, np.uint32), plan=padded, plan_len=np.int32(plan.size),
      class_starts=starts, class_counts=counts,
      probs_start=f32(probs_start, uniform), probs_end=f32(
          probs_end, uniform if probs_start is None else probs_start),
      classwise=np.bool_(classwise), base_lr=np.float32(base_lr),
      output_only=np.bool_(output_only),
      class_weights=f32(class_weights, neutral.class_weights),
      reweight_start=np.int32(reweight_start),
      logit_offset=f32(logit_offset, neutral.logit_offset),
      margin=f32(margin, neutral.margin), logit_scale=np.float32(logit_scale),
      focal_gamma=np.float32(focal_gamma))


def stack_members(members: Sequence[Member]) -> Member:
  """Stacks members along a new leading axis, padding plans to a common length."""
  if not members:
    raise ValueError("a population needs at least one member")
  length = max(int(m.plan.shape[0]) for m in members)

  def pad(m):
    extra = length - m.plan.shape[0]
    return m.replace(plan=np.pad(np.asarray(m.plan), (0, extra)))

  members = [pad(m) for m in members]
  return jax.tree.map(lambda *xs: np.stack(xs), *members)


def population_size(tree) -> int:
  return int(jax.tree.leaves(tree)[0].shape[0])


@struct.dataclass
class TrainState:
  """Per-model training state (leading model axis in a population)."""
  params: Any
  batch_stats: Any
  opt_state: Any
  step: jax.Array       # int32[]: iterations done in this phase
  diverged: jax.Array   # bool[]: loss or parameters became non-finite; frozen since


@struct.dataclass
class TrainData:
  """The training split, resident on the device once for the whole population."""
  images: jax.Array     # [N, H, W, C] float32
  labels: jax.Array     # [N] int32


def _keys(member: Member):
  key = jax.random.wrap_key_data(member.key)
  return (jax.random.fold_in(key, 0), jax.random.fold_in(key, 1),
          jax.random.fold_in(key, 2))


def init_state(trainer: Trainer, member: Member) -> TrainState:
  """Initial state of one model (its init key is derived from ``member.key``)."""
  init_key, _, _ = _keys(member)
  module = trainer.module()
  dummy = jnp.zeros((1,) + tuple(trainer.input_shape), jnp.float32)
  variables = module.init({"params": init_key, "dropout": init_key}, dummy, train=False)
  params = variables["params"]
  batch_stats = variables.get("batch_stats", {})
  opt_state = trainer.optimizer(member.base_lr).init(params)
  return TrainState(params=params, batch_stats=batch_stats, opt_state=opt_state,
                    step=jnp.zeros((), jnp.int32), diverged=jnp.zeros((), bool))


@functools.partial(jax.jit, static_argnums=0)
def _init_population(trainer, members):
  return jax.vmap(lambda m: init_state(trainer, m))(members)


def init_population(trainer: Trainer, members: Member) -> TrainState:
  """Initial states of a stacked population (one jitted, vmapped init)."""
  return _init_population(trainer, members)


def restart(trainer: Trainer, state: TrainState, members: Member) -> TrainState:
  """Starts a new phase from trained parameters: fresh optimiser, step 0.

  Used for two-phase training: phase 2 keeps the phase-1 parameters (and batch-norm
  statistics), starts a new solver (momentum zero, schedule from iteration 0) with the
  members' base rates (the caller sets them to 0.1x), as fine-tuning in Caffe does.
  """
  opt_state = jax.vmap(lambda p, lr: trainer.optimizer(lr).init(p))(
      state.params, jnp.asarray(members.base_lr))
  return state.replace(opt_state=opt_state, step=jnp.zeros_like(state.step))


def _output_mask(trainer: Trainer, params) -> Any:
  """Static pytree of bools: True for leaves of the model's output layers."""
  outputs = set(trainer.output_layers)
  return flax.traverse_util.path_aware_map(lambda path, _: path[0] in outputs, params)


def batch_indices(trainer: Trainer, member: Member, step) -> jax.Array:
  """Indices into the training set of the examples of one model's batch at `step`."""
  _, shuffle_key, step_key = _keys(member)
  b = trainer.batch_size
  pos_epoch = sampling.epoch_order(shuffle_key, step, b, member.plan_len)
  frac = jnp.clip(step.astype(jnp.float32) / max(trainer.total_steps, 1), 0.0, 1.0)
  probs = (1.0 - frac) * member.probs_start + frac * member.probs_end
  pos_class = sampling.draw_classwise(
      jax.random.fold_in(step_key, 1), step, b, probs, member.plan,
      member.class_starts, member.class_counts)
  return member.plan[jnp.where(member.classwise, pos_class, pos_epoch)]


def loss_fn(trainer: Trainer, params, batch_stats, member: Member, images, labels, step,
            dropout_key):
  """Training loss of one model on one batch; returns (loss, (logits, new_batch_stats))."""
  module = trainer.module()
  variables = {"params": params}
  if trainer.has_batch_stats:
    variables["batch_stats"] = batch_stats
    logits, updates = module.apply(variables, images, train=True,
                                   rngs={"dropout": dropout_key}, mutable=["batch_stats"])
    new_stats = updates["batch_stats"]
  else:
    logits = module.apply(variables, images, train=True, rngs={"dropout": dropout_key})
    new_stats = batch_stats
  logits = logits.astype(jnp.float32)  # the loss in float32 under a bfloat16 compute_dtype
  weights = jnp.where(step >= member.reweight_start, member.class_weights,
                      jnp.ones_like(member.class_weights))
  loss = losses.imbalance_loss(
      logits, labels, class_weights=weights, logit_offset=member.logit_offset,
      margin=member.margin, focal_gamma=member.focal_gamma,
      logit_scale=member.logit_scale)
  return loss, (logits, new_stats)


def _all_finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
  return jnp.all(jnp.stack(leaves))


def train_step(trainer: Trainer, state: TrainState, member: Member,
               data: TrainData) -> tuple[TrainState, dict]:
  """One SGD step of ONE model (vmapped by `train_chunk`).

  A model whose loss or new parameters are non-finite is marked ``diverged`` and keeps its
  last finite parameters from then on; its neighbours in the population are unaffected
  (each model's arithmetic is independent under vmap).
  """
  step = state.step
  _, _, step_key = _keys(member)
  idx = batch_indices(trainer, member, step)
  images = data.images[idx]
  labels = data.labels[idx]
  dropout_key = jax.random.fold_in(jax.random.fold_in(step_key, 0), step)
  grad_fn = jax.value_and_grad(loss_fn, argnums=1, has_aux=True)
  (loss, (logits, new_stats)), grads = grad_fn(
      trainer, state.params, state.batch_stats, member, images, labels, step, dropout_key)
  tx = trainer.optimizer(member.base_lr)
  updates, new_opt = tx.update(grads, state.opt_state, state.params)

  finite = jnp.isfinite(loss) & _all_finite(updates)
  diverged = state.diverged | ~finite
  is_output = _output_mask(trainer, state.params)
  # jnp.where, not p + mask * u: a frozen parameter must not change by a single bit
  # (0 * u + p turns -0.0 into +0.0 and NaN updates would leak).
  params = jax.tree.map(
      lambda p, u, is_out: jnp.where(diverged | (member.output_only & ~is_out), p, p + u),
      state.params, updates, is_output)
  keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(diverged, o, n), new, old)
  new_state = TrainState(
      params=params, batch_stats=keep(new_stats, state.batch_stats),
      opt_state=keep(new_opt, state.opt_state), step=step + 1, diverged=diverged)
  acc = jnp.mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32))
  return new_state, {"loss": loss, "accuracy": acc}


def _run_steps(trainer, state, members, data, num_steps):
  """`num_steps` scanned steps of `train_step` vmapped over all models given."""
  step_fn = jax.vmap(lambda s, m: train_step(trainer, s, m, data))

  def body(carry, _):
    carry, metrics = step_fn(carry, members)
    return carry, metrics

  state, metrics = jax.lax.scan(body, state, None, length=num_steps)
  # Means over the chunk, per model; `last_loss` shows the state at the chunk's end.
  summary = {k: jnp.mean(v, axis=0) for k, v in metrics.items()}
  summary["last_loss"] = metrics["loss"][-1]
  return state, summary


def block_size(trainer: Trainer, models_per_shard: int) -> int:
  """Models per block for `train_chunk` (see `Trainer.model_block`)."""
  want = trainer.model_block
  if want is None:
    want = 1 if jax.default_backend() == "cpu" else models_per_shard
  want = max(1, min(want, models_per_shard))
  while models_per_shard % want:
    want -= 1
  return want


def _train_local(trainer, state, members, data, num_steps):
  """One device's models: blocks of `block_size` models looped, each block vmapped."""
  p = population_size(members)
  block = block_size(trainer, p)
  if block == p:
    return _run_steps(trainer, state, members, data, num_steps)
  n = p // block
  blocks = jax.tree.map(lambda a: a.reshape(n, block, *a.shape[1:]), (state, members))
  out = jax.lax.map(lambda sm: _run_steps(trainer, sm[0], sm[1], data, num_steps), blocks)
  return jax.tree.map(lambda a: a.reshape(p, *a.shape[2:]), out)


def _train_chunk(trainer, state, members, data, num_steps, mesh):
  TRACE_COUNT["train_chunk"] += 1
  if mesh is None:
    return _train_local(trainer, state, members, data, num_steps)
  # Each device trains its slice of the model axis as its own program (shard_map): the
  # models are independent, so no device ever waits for another. Left to the SPMD
  # partitioner instead, the vmapped while-loop of `sampling.epoch_order` (cycle walking)
  # got an all-reduce of its condition in every iteration, a barrier between the devices
  # several times per step: two single-threaded CPU devices then trained 1.5-1.75x one
  # (LeNet-5, P=32 vs 16), against 2x for two processes (2 Intel Xeon cores, 2026-11-29).
  model = PartitionSpec(MODEL_AXIS)
  local = functools.partial(_train_local, trainer, num_steps=num_steps)
  return jax.shard_map(local, mesh=mesh, in_specs=(model, model, PartitionSpec()),
                       out_specs=model, check_vma=False)(state, members, data)


_train_chunk_jit = jax.jit(_train_chunk, static_argnums=(0, 4, 5), donate_argnums=(1,))


def model_shards(tree) -> int:
  """Into how many pieces the leading (model) axis of `tree`'s arrays is sharded."""
  leaf = jax.tree.leaves(tree)[0]
  sharding = getattr(leaf, "sharding", None)
  if sharding is None or not getattr(leaf, "shape", ()):
    return 1
  return max(1, leaf.shape[0] // sharding.shard_shape(leaf.shape)[0])


def chunk_mesh(tree) -> Mesh | None:
  """The mesh `train_chunk` splits the models over: that of `tree`'s model-axis
  sharding (`place`) when it spans several devices, else None (one program)."""
  leaf = jax.tree.leaves(tree)[0]
  sharding = getattr(leaf, "sharding", None)
  if (model_shards(tree) > 1 and isinstance(sharding, NamedSharding)
      and tuple(sharding.spec)[:1] == (MODEL_AXIS,)):
    return sharding.mesh
  return None


def train_chunk(trainer: Trainer, state: TrainState, members: Member, data: TrainData,
                num_steps: int) -> tuple[TrainState, dict]:
  """Runs `num_steps` population steps under `lax.scan` (one compiled program).

  The models are processed in blocks of `block_size` models per device (see
  `Trainer.model_block`), each block running all `num_steps` steps before the next; the
  result is the same for any block size. The input state is donated (its buffers are
  reused); use the returned one.

  Returns:
    (state, metrics): metrics are per-model arrays [P]: mean 'loss' and 'accuracy' over
    the chunk's batches and the 'last_loss'.
  """
  return _train_chunk_jit(trainer, state, members, data, num_steps, chunk_mesh(members))


def _predict(trainer, params, batch_stats, images, batch_size):
  TRACE_COUNT["predict"] += 1
  module = trainer.module()
  n = images.shape[0]
  pad = (-n) % batch_size
  x = jnp.pad(images, ((0, pad),) + ((0, 0),) * (images.ndim - 1))
  x = x.reshape((-1, batch_size) + images.shape[1:])

  def one_model(p, bs):
    variables = {"params": p}
    if trainer.has_batch_stats:
      variables["batch_stats"] = bs

    def body(_, xb):
      return None, module.apply(variables, xb, train=False).astype(jnp.float32)

    _, out = jax.lax.scan(body, None, x)
    return out.reshape((-1, out.shape[-1]))[:n]

  return jax.vmap(one_model)(params, batch_stats)


_predict_jit = jax.jit(_predict, static_argnums=(0, 4))


def predict(trainer: Trainer, state: TrainState, images, *, batch_size: int = 500):
  """Logits of every model on `images`: [P, N, C] (one vmapped, batched pass)."""
  return _predict_jit(trainer, state.params, state.batch_stats, images,
                      min(batch_size, images.shape[0]))


# ----------------------------------------------------------------------------------------
# Placement: the model axis over every device (and every host).


def use_cpu_devices(n: int) -> int:
  """Splits the host CPU into `n` single-threaded XLA devices; call before JAX starts.

  Why: on XLA:CPU a small CNN's step is a chain of small ops, and splitting each op over
  threads buys little; `n` devices, each training its share of the (sharded) population
  on one thread as its own program (`train_chunk` uses `jax.shard_map`), is the
  in-process form of "one process per core". Measured on 2 Intel Xeon cores with
  LeNet-5 (benchmarks/README.md, 2026-11-29), two devices vs one two-threaded device:
  10,448 vs 6,876 images/s for 32 models, 9,522 vs 7,239 for 8; one model 5,005 vs
  7,766. With one model per block (the CPU default) a model's parameters come out the
  same, bit for bit, whatever the number of such devices (one multi-threaded device
  sums some products in another order, ~1e-6 relative). Populations smaller than `n` are
  padded with duplicates. It must run before the first JAX computation, and it sets
  `--xla_cpu_multi_thread_eigen=false` in XLA_FLAGS (both only affect the CPU backend,
  so calling it on a GPU host changes nothing there).

  Args:
    n: devices; 0 means one per core (`os.cpu_count()`).

  Returns:
    The number of devices requested.

  Raises:
    ValueError: if `n` is negative.
  """
  if isinstance(n, bool) or not isinstance(n, int) or n < 0:
    raise ValueError(f"cpu devices must be an int >= 0 (0: one per core), got {n!r}")
  n = n or os.cpu_count() or 1
  jax.config.update("jax_num_cpu_devices", n)
  flags = os.environ.get("XLA_FLAGS", "")
  if n > 1 and "xla_cpu_multi_thread_eigen" not in flags:
    os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false").strip()
  return n


def model_mesh(devices=None) -> Mesh:
  """A 1-D mesh named 'models' over `devices` (default: every device of every host)."""
  devices = np.asarray(jax.devices() if devices is None else devices)
  return Mesh(devices.reshape(-1), (MODEL_AXIS,))


def pad_population(tree, multiple: int):
  """Pads the leading axis to a multiple of `multiple` by repeating the last model.

  Returns:
    (padded_tree, true_size). Padded models are real computations whose results the
    caller drops; repeating a member keeps them numerically harmless.
  """
  size = population_size(tree)
  extra = (-size) % multiple
  if extra == 0:
    return tree, size
  return jax.tree.map(
      lambda x: np.concatenate([np.asarray(x)] + [np.asarray(x)[-1:]] * extra), tree), size


def place(tree, mesh: Mesh | None, *, replicated: bool = False):
  """Puts host arrays on the mesh: model axis sharded, or fully replicated.

  Works on one host and on several (`jax.distributed`): each process holds the whole
  host array (every host builds the same deterministic population) and contributes the
  shards of its own devices.
  """
  if mesh is None:
    return jax.tree.map(jnp.asarray, tree)

  def put(x):
    x = np.asarray(x)
    spec = PartitionSpec() if replicated or x.ndim == 0 else PartitionSpec(MODEL_AXIS)
    sharding = NamedSharding(mesh, spec)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

  return jax.tree.map(put, tree)


def fetch(tree):
  """Brings (possibly sharded, possibly multi-host) arrays to host numpy."""
  def get(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      from jax.experimental import multihost_utils
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)
  return jax.tree.map(get, tree)


def _train_chunk_streamed(trainer, state, members, images, labels):
  TRACE_COUNT["train_chunk"] += 1
  b = images.shape[2]
  p = images.shape[1]
  # Each model's batch arrives from the host: make it the model's whole "dataset" for the
  # step, with a plan covering it once. The step is then the very same `train_step`.
  members = members.replace(
      plan=jnp.broadcast_to(jnp.arange(b, dtype=jnp.int32), (p, b)),
      plan_len=jnp.full((p,), b, jnp.int32), classwise=jnp.zeros((p,), bool))
  step_fn = jax.vmap(lambda s, m, x, y: train_step(trainer, s, m, TrainData(x, y)))

  def body(carry, batch):
    return step_fn(carry, members, *batch)

  state, metrics = jax.lax.scan(body, state, (images, labels))
  summary = {k: jnp.mean(v, axis=0) for k, v in metrics.items()}
  summary["last_loss"] = metrics["loss"][-1]
  return state, summary


_train_chunk_streamed_jit = jax.jit(_train_chunk_streamed, static_argnums=0,
                                    donate_argnums=(1,))


def train_chunk_streamed(trainer: Trainer, state: TrainState, members: Member,
                         images, labels) -> tuple[TrainState, dict]:
  """Like `train_chunk`, for data that does not fit on the device.

  Args:
    images: [S, P, B, H, W, C]: S steps of one batch per model, streamed from the host
      (`imbjax.datasets.streaming` applies each model's index plan and augmentation).
    labels: [S, P, B].

  Each step is `train_step` with the model's batch as its data: same update, loss
  coefficients, phase-2 masking and divergence handling as the device-resident path.
  Plans and class-wise sampling in `members` are ignored (the stream already applied them).
  """
  return _train_chunk_streamed_jit(trainer, state, members, images, labels)


# ----------------------------------------------------------------------------------------
# The loop: chunks of scanned steps, metrics between chunks, Orbax checkpoints.


def fit(trainer: Trainer, state: TrainState, members: Member, data, *,
        num_steps: int, chunk_steps: int = 500, checkpoint_dir=None,
        checkpoint_every: int = 0,
        on_chunk: Callable[[int, dict, TrainState], None] | None = None) -> TrainState:
  """Trains a population for `num_steps` iterations, `chunk_steps` per compiled call.

  Args:
    trainer, state, members: as for `train_chunk` (state is donated).
    data: the device-resident `TrainData`, or, for streamed input, a function
      ``data(first_step, num_steps) -> (images[S, P, B, ...], labels[S, P, B])``
      giving the host batches of those steps (see `train_chunk_streamed`).
    num_steps: iterations to reach (counted from the state's current step, so a state
      restored from a checkpoint continues where it stopped).
    chunk_steps: steps per `lax.scan` call; metrics come to the host only between chunks.
      Chunks of equal length share one compiled program; the last chunk may compile a
      second, shorter one.
    checkpoint_dir: if given, an Orbax checkpoint of the population is saved there every
      `checkpoint_every` steps (and at the end), and `fit` restores the newest one first:
      a killed long run resumes from its last checkpoint.
    on_chunk: called as ``on_chunk(step_done, host_metrics, state)`` after each chunk
      (e.g. to evaluate the population at log points for convergence curves).

  Returns:
    The trained state.
  """
  manager = None
  if checkpoint_dir is not None and checkpoint_every > 0:
    import orbax.checkpoint as ocp
    manager = ocp.CheckpointManager(
        checkpoint_dir, options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True))
    latest = manager.latest_step()
    if latest is not None:
      abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
      state = manager.restore(latest, args=ocp.args.StandardRestore(abstract))
  done = int(fetch(state.step).reshape(-1)[0])
  last_saved = done
  while done < num_steps:
    n = min(chunk_steps, num_steps - done)
    if callable(data):
      state, metrics = train_chunk_streamed(trainer, state, members, *data(done, n))
    else:
      state, metrics = train_chunk(trainer, state, members, data, n)
    done += n
    if on_chunk is not None:
      on_chunk(done, fetch(metrics), state)
    if manager is not None and (done - last_saved >= checkpoint_every or done == num_steps):
      manager.save(done, args=ocp.args.StandardSave(state))
      manager.wait_until_finished()
      last_saved = done
  if manager is not None:
    manager.close()
  return state
