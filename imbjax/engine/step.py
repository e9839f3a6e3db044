"""The one-model training step: init, batch indices, loss, `train_step`.

Read this file first: a population is this step under `jax.vmap` (see `loop.py`).
"""

from __future__ import annotations

import functools
import os
from typing import Any

import flax
import jax
import optax
import numpy as np
import jax.numpy as jnp

from imbjax import losses
from imbjax import sampling
from imbjax.engine.state import Member, TrainData, TrainState
from imbjax.engine.trainer import Trainer


def _keys(member: Member):
  key = jax.random.wrap_key_data(member.key)
  return (jax.random.fold_in(key, 0), jax.random.fold_in(key, 1),
          jax.random.fold_in(key, 2))


def _weight_decay(trainer: Trainer, member: Member) -> jax.Array:
  """The member's weight decay (NaN in `Member.weight_decay` means the trainer's)."""
  wd = jnp.asarray(member.weight_decay, jnp.float32)
  return jnp.where(jnp.isnan(wd), jnp.float32(trainer.weight_decay), wd)


def init_state(trainer: Trainer, member: Member) -> TrainState:
  """Initial state of one model (its init key is derived from ``member.key``)."""
  init_key, _, _ = _keys(member)
  module = trainer.module()
  dummy = jnp.zeros((1,) + tuple(trainer.input_shape), jnp.float32)
  variables = module.init({"params": init_key, "dropout": init_key}, dummy, train=False)
  params = variables["params"]
  batch_stats = variables.get("batch_stats", {})
  opt_state = trainer.optimizer(member.base_lr, _weight_decay(trainer, member)).init(params)
  return TrainState(params=params, batch_stats=batch_stats, opt_state=opt_state,
                    step=jnp.zeros((), jnp.int32), diverged=jnp.zeros((), bool))


def _init_population(trainer, members):
  return jax.vmap(lambda m: init_state(trainer, m))(members)


_init_population_jit = jax.jit(_init_population, static_argnums=0)
# XLA:CPU at LLVM -O1. At its default -O2, LLVM spent seconds on the init's random draws
# (threefry over every weight; the time grows with the population): 5.7 s for 36
# LeNet-5s, 8.1 s for 8 All-CNNs, 15.0 s for 4 ResNet-10s, against 0.8, 1.6 and 2.8 s
# at -O1, with the same bits and run time (benchmarks/README.md, "Init compiles").
CPU_INIT_OPTIONS = {"xla_backend_optimization_level": 1}
_init_population_cpu_jit = jax.jit(_init_population, static_argnums=0,
                                   compiler_options=CPU_INIT_OPTIONS)


def _platform(tree) -> str:
  """The platform of the first placed array in `tree` (else the default backend)."""
  for leaf in jax.tree.leaves(tree):
    if isinstance(leaf, jax.Array):
      return next(iter(leaf.devices())).platform
  return jax.default_backend()


def init_population(trainer: Trainer, members: Member) -> TrainState:
  """Initial states of a stacked population (one jitted, vmapped init).

  On CPU it compiles at LLVM -O1 (`CPU_INIT_OPTIONS`) unless XLA_FLAGS sets
  ``--xla_backend_optimization_level`` itself: same states, bit for bit
  (tests/test_engine.py), several seconds less compile.
  """
  if (_platform(members) == "cpu"
      and "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", "")):
    return _init_population_cpu_jit(trainer, members)
  return _init_population_jit(trainer, members)


def restart(trainer: Trainer, state: TrainState, members: Member) -> TrainState:
  """Starts a new phase from trained parameters: fresh optimiser, step 0.

  Used for two-phase training: phase 2 keeps the phase-1 parameters (and batch-norm
  statistics), starts a new solver (momentum zero, schedule from iteration 0) with the
  members' base rates (the caller sets them to 0.1x), as fine-tuning in Caffe does.
  """
  check_output_only(trainer, members)
  return _restart(trainer, state, members)


@functools.partial(jax.jit, static_argnums=0)
def _restart(trainer, state, members):
  # One program (eagerly, the vmapped optimiser init compiled ~20 small ones).
  opt_state = jax.vmap(lambda p, m: trainer.optimizer(
      m.base_lr, _weight_decay(trainer, m)).init(p))(state.params, members)
  return state.replace(opt_state=opt_state, step=jnp.zeros_like(state.step))


def check_output_only(trainer: Trainer, members: Member) -> None:
  """Refuses output-only (phase-2) members when the trainer names no output layers."""
  if not trainer.output_layers and np.any(np.asarray(members.output_only)):
    raise ValueError(f"members train only the output layers (two-phase phase 2, cRT) but "
                     f"Trainer(model={trainer.model_name}) names none: pass "
                     f"output_layers=('<top-level param name>', ...)")


def _output_mask(trainer: Trainer, params) -> Any:
  """Static pytree of bools: True for leaves of the model's output layers."""
  outputs = set(trainer.output_layers)
  return flax.traverse_util.path_aware_map(lambda path, _: path[0] in outputs, params)


class _HeadReached(Exception):
  """Raised at the first output layer by `apply_with_head(..., head='stop')`."""


def apply_with_head(trainer: Trainer, variables, x, head, **apply_kwargs):
  """`module.apply` with the input of the model's first output layer exposed or replaced.

  ``head='both'``: (the model's output, that input); ``head='stop'``: that input alone,
  the output layers not run (so they need no rng); an array: the model's output with
  that array fed to the first output layer in place of what the layers before compute
  (those are then unused, and XLA drops them). The first output layer is the first
  top-level module named in `trainer.output_layers` to be called.
  """
  outputs, seen = set(trainer.output_layers), []

  def intercept(next_fun, args, kwargs, context):
    path = context.module.path
    if (not seen and len(path) == 1 and path[0] in outputs
        and context.method_name == "__call__"):
      if not isinstance(head, str):
        args = (head.astype(args[0].dtype),) + tuple(args[1:])
      seen.append(args[0])
      if isinstance(head, str) and head == "stop":
        raise _HeadReached
    return next_fun(*args, **kwargs)

  try:
    with flax.linen.intercept_methods(intercept):
      out = trainer.module().apply(variables, x, **apply_kwargs)
  except _HeadReached:
    return seen[0]
  if not seen:
    raise ValueError(f"the model never called an output layer {sorted(outputs)} at the "
                     f"top level, so its head inputs are undefined")
  return (out, seen[0]) if isinstance(head, str) else out


def batch_positions(trainer: Trainer, member: Member, step) -> jax.Array:
  """Positions in ``member.plan`` of the examples of one model's batch at `step`."""
  _, shuffle_key, step_key = _keys(member)
  b = trainer.batch_size
  pos_epoch = sampling.epoch_order(shuffle_key, step, b, member.plan_len)
  frac = jnp.clip(step.astype(jnp.float32) / max(trainer.total_steps, 1), 0.0, 1.0)
  probs = (1.0 - frac) * member.probs_start + frac * member.probs_end
  pos_class = sampling.draw_classwise(
      jax.random.fold_in(step_key, 1), step, b, probs, member.plan,
      member.class_starts, member.class_counts)
  return jnp.where(member.classwise, pos_class, pos_epoch)


def batch_indices(trainer: Trainer, member: Member, step) -> jax.Array:
  """Indices into the training set of the examples of one model's batch at `step`."""
  return member.plan[batch_positions(trainer, member, step)]


def loss_fn(trainer: Trainer, params, batch_stats, member: Member, images, labels, step,
            dropout_key, head=None):
  """Training loss of one model on one batch; returns (loss, (logits, new_batch_stats)).

  With `head` (the inputs of the first output layer for this batch; a model without
  batch statistics), the output layers run on it and `images` are not used."""
  module = trainer.module()
  variables = {"params": params}
  if head is not None:
    logits = apply_with_head(trainer, variables, images, head, train=True,
                             rngs={"dropout": dropout_key})
    new_stats = batch_stats
  elif trainer.has_batch_stats:
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


# An output-only step (`train_step`'s `outputs_only`) computes no update for the frozen
# layers (benchmarks/README.md, "Phase 2 trains from the frozen layers' output"); False
# computes and discards them as before 2026-12-07 (an A/B switch: `study_ab`).
_SKIP_FROZEN_UPDATES = True


def _all_finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
  return jnp.all(jnp.stack(leaves))


def train_step(trainer: Trainer, state: TrainState, member: Member,
               data: TrainData, *, outputs_only: bool = False, heads=None
               ) -> tuple[TrainState, dict]:
  """One SGD step of ONE model (vmapped by `train_chunk`).

  A model whose loss or new parameters are non-finite is marked ``diverged`` and keeps its
  last finite parameters from then on; its neighbours in the population are unaffected
  (each model's arithmetic is independent under vmap).

  `outputs_only` (static; `train_chunk` sets it when every member of the population is
  ``output_only``, as in two-phase training's phase 2) differentiates the loss with
  respect to the output layers only: the frozen layers get no backward pass, so phase
  2 costs about a forward pass. The output layers' gradients, and so the parameters,
  are the same. The frozen layers' updates, never applied, are not computed either:
  their optimiser state stays as it was (since 2026-12-07; before, their momentum
  moved with the weight decay) and the divergence check sees the output layers' alone.

  `heads` (with `outputs_only`; `loop.head_inputs`): this model's first-output-layer
  inputs for every position of its plan, [L, ...], computed once for the phase. The
  batch's are gathered from it and only the output layers run: the same step at the
  cost of the output layers (bit for bit on CPU: tests/test_frozen_prefix.py).
  """
  if heads is not None and not outputs_only:
    raise ValueError("train_step: heads (cached inputs of the output layers) need "
                     "outputs_only=True, the layers before them frozen")
  step = state.step
  _, _, step_key = _keys(member)
  pos = batch_positions(trainer, member, step)
  idx = member.plan[pos]
  labels = data.labels[idx]
  head = None
  if heads is None:
    images = data.images[idx]
  else:  # the layers before the output layers are not run: they see zeros and are dropped
    head = heads[pos]
    images = jnp.zeros((trainer.batch_size,) + tuple(trainer.input_shape), jnp.float32)
  dropout_key = jax.random.fold_in(jax.random.fold_in(step_key, 0), step)
  is_output = _output_mask(trainer, state.params)

  def loss_of(params):
    if outputs_only:  # inside the differentiated function, where it cuts the backward
      params = jax.tree.map(lambda p, is_out: p if is_out else jax.lax.stop_gradient(p),
                            params, is_output)
    return loss_fn(trainer, params, state.batch_stats, member, images, labels, step,
                   dropout_key, head)

  (loss, (logits, new_stats)), grads = jax.value_and_grad(loss_of, has_aux=True)(
      state.params)
  tx = trainer.optimizer(member.base_lr, _weight_decay(trainer, member))
  updates, new_opt = tx.update(grads, state.opt_state, state.params)

  skip_frozen = outputs_only and _SKIP_FROZEN_UPDATES
  if skip_frozen:
    # The frozen layers' updates are never applied: under the static `outputs_only`
    # their optimiser state stays as it was and they do not count as divergence, so
    # XLA drops their optimiser work.
    frozen_state = optax.tree_utils.tree_map_params(
        tx, lambda _, is_out: not is_out, state.opt_state, is_output,
        transform_non_params=lambda _: False)
    new_opt = jax.tree.map(lambda n, o, frozen: o if frozen else n, new_opt,
                           state.opt_state, frozen_state)
    applied = jax.tree.map(lambda u, is_out: u if is_out else None, updates, is_output)
  else:
    applied = updates
  finite = jnp.isfinite(loss) & _all_finite(applied)
  diverged = state.diverged | ~finite
  # jnp.where, not p + mask * u: a frozen parameter must not change by a single bit
  # (0 * u + p turns -0.0 into +0.0 and NaN updates would leak).
  params = jax.tree.map(
      lambda p, u, is_out: p if skip_frozen and not is_out else
      jnp.where(diverged | (member.output_only & ~is_out), p, p + u),
      state.params, updates, is_output)
  keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(diverged, o, n), new, old)
  new_state = TrainState(
      params=params, batch_stats=keep(new_stats, state.batch_stats),
      opt_state=keep(new_opt, state.opt_state), step=step + 1, diverged=diverged)
  acc = jnp.mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32))
  return new_state, {"loss": loss, "accuracy": acc}


