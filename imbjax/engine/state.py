"""Per-model recipes and state: `Member`, `TrainState`, `TrainData`, stacking and padding."""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from imbjax import losses


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
  weight_decay: jax.Array   # float32[]: L2 coefficient; NaN: the Trainer's weight_decay
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
                pad_to: int | None = None, weight_decay: float | None = None) -> Member:
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
    weight_decay: this model's L2 coefficient; None: the `Trainer`'s `weight_decay`.

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
      weight_decay=np.float32(np.nan if weight_decay is None else weight_decay),
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


