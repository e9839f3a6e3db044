"""Index plans: which training examples a model sees, and in what order.

This module owns the data-level methods of Buda et al. (2018, Sections 2.1, 3.2, 4.5) and
the beyond-the-paper class-aware samplers, all expressed as data for the population engine:

* host-side plans (``np.ndarray`` of int64 indices into the imbalanced set, sorted by class
  then index so that a plan depends on its key only through *which* examples it holds;
  drawn with a NumPy generator seeded from the jax key, so no per-length XLA compiles):
  `oversample` (random minority oversampling, optionally to a partial ratio),
  `undersample` (random majority undersampling, likewise), stacked by `pad_plans`;
* the device-side epoch stream `epoch_order`: a plan is consumed epoch by epoch, each epoch
  a fresh keyed pseudo-random permutation, for a fixed number of iterations (so the number
  of epochs differs between methods, as in the paper). It is jittable and vmappable over
  (key, step, plan_len) and costs O(batch_size) per step, never a sort of the plan;
* class-aware sampling (Kang et al. 2020): `class_sampling_probs`, `progressive_probs`,
  `class_index_table` and the jittable `draw_classwise`.

Example (engine side)::

    plans, lens = pad_plans([oversample(y, k1), undersample(y, k2)])
    pos = jax.vmap(epoch_order, (0, None, None, 0))(keys, step, 64, lens)   # (2, 64)
    batch_idx = jnp.take_along_axis(plans, pos, axis=1)                     # into y
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from imbjax.imbalance import _as_labels, _check_ratio, _host_rng

__all__ = [
    "class_counts",
    "oversample",
    "undersample",
    "epoch_order",
    "pad_plans",
    "SAMPLING_KINDS",
    "class_sampling_probs",
    "progressive_probs",
    "class_index_table",
    "draw_classwise",
]


# ---------------------------------------------------------------------------------------
# Host-side plans
# ---------------------------------------------------------------------------------------


def _round_half_up(x: float) -> int:
  return int(math.floor(x + 0.5))


def _is_tracer(x: Any) -> bool:
  return isinstance(x, jax.core.Tracer)


def _check_labels(labels: Any, num_classes: int | None) -> tuple[np.ndarray, int]:
  arr = np.asarray(labels)
  if arr.ndim != 1 or arr.size == 0:
    raise ValueError(f"labels must be a non-empty 1-D array, got shape {arr.shape}")
  arr = _as_labels(arr)  # integer-valued, >= 0 (the check `imbalance.subsample` uses)
  if num_classes is None:
    num_classes = int(arr.max()) + 1
  elif isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
          or num_classes < 1:
    raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
  if arr.max() >= num_classes:
    raise ValueError(f"labels must lie in [0, {num_classes}), got label {int(arr.max())}")
  return arr, int(num_classes)


def class_counts(labels: Any, num_classes: int | None = None) -> np.ndarray:
  """Per-class example counts of ``labels``.

  Args:
    labels: integer labels, shape ``(n,)``.
    num_classes: number of classes; defaults to ``max(labels) + 1``.

  Returns:
    ``np.ndarray`` of int64, shape ``(num_classes,)``.

  Raises:
    ValueError: labels empty, not 1-D, negative or ``>= num_classes``.
  """
  arr, c = _check_labels(labels, num_classes)
  return np.bincount(arr, minlength=c).astype(np.int64)


def _nonempty_counts(labels: Any, num_classes: int | None) -> tuple[np.ndarray, np.ndarray]:
  arr, c = _check_labels(labels, num_classes)
  counts = np.bincount(arr, minlength=c).astype(np.int64)
  empty = np.nonzero(counts == 0)[0]
  if empty.size:
    raise ValueError(
        f"class {int(empty[0])} has no examples (empty classes: {empty.tolist()}); "
        "pass num_classes only for classes that are present"
    )
  return arr, counts


def _sorted_plan(labels: np.ndarray, plan: np.ndarray) -> np.ndarray:
  return plan[np.lexsort((plan, labels[plan]))].astype(np.int64)


def oversample(
    labels: Any, key: jax.Array, *, ratio: float = 1.0, num_classes: int | None = None
) -> np.ndarray:
  """Random minority oversampling (Buda et al. 2018, Section 2.1; partial levels, 4.5).

  Class c is raised to ``target_c = max(n_c, floor(max_count / ratio + 0.5))`` examples:
  ``ratio=1`` balances every class to the largest one; a larger ratio leaves that residual
  max/min imbalance (the paper's Figure 7). The counts equal those of imbalanced-learn's
  ``RandomOverSampler`` (``sampling_strategy={c: target_c}``; ``'auto'`` when ratio is 1).

  Replicates: every original example is kept exactly once, then the ``target_c - n_c``
  extra copies are stratified: ``q = (target_c - n_c) // n_c`` full extra copies of the
  class plus ``(target_c - n_c) % n_c`` examples drawn uniformly *without* replacement.
  So each example of a class appears ``1 + q`` or ``2 + q`` times (imbalanced-learn draws
  the extras with replacement; its counts per class are the same, its spread is larger).

  Args:
    labels: integer labels of the imbalanced training set, shape ``(n,)``.
    key: a `jax.random` key.
    ratio: residual imbalance ratio after oversampling, a finite number >= 1.
    num_classes: number of classes; defaults to ``max(labels) + 1``. Every class must have
      at least one example.

  Returns:
    ``np.ndarray`` of int64 indices into ``labels`` (with repeats), sorted by class then
    index; its length is ``sum(target_c)``.

  Raises:
    ValueError: bad labels, an empty class, or ratio < 1 / not finite.
  """
  r = _check_ratio(ratio, "ratio")
  arr, counts = _nonempty_counts(labels, num_classes)
  target_all = _round_half_up(int(counts.max()) / r)
  by_class = np.argsort(arr, kind="stable")
  starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
  parts = [np.arange(arr.size, dtype=np.int64)]
  for c, (s, n_c) in enumerate(zip(starts, counts)):
    extra = max(int(n_c), target_all) - int(n_c)
    if extra == 0:
      continue
    members = by_class[s : s + n_c]
    q, rem = divmod(extra, int(n_c))
    if q:
      parts.append(np.tile(members, q))
    if rem:
      # Salted by class: each class's draw is independent of the other classes.
      pick = _host_rng(key, c).choice(int(n_c), size=rem, replace=False)
      parts.append(members[np.sort(pick)])
  return _sorted_plan(arr, np.concatenate(parts))


def undersample(
    labels: Any, key: jax.Array, *, ratio: float = 1.0, num_classes: int | None = None
) -> np.ndarray:
  """Random majority undersampling (Buda et al. 2018, Section 2.1; partial levels, 4.5).

  Class c keeps ``target_c = min(n_c, floor(min_count * ratio + 0.5))`` examples drawn
  uniformly without replacement: ``ratio=1`` balances every class down to the smallest;
  a larger ratio leaves that residual max/min imbalance. The counts equal those of
  imbalanced-learn's ``RandomUnderSampler`` (``sampling_strategy={c: target_c}``;
  ``'auto'`` when ratio is 1).

  Args:
    labels: integer labels of the imbalanced training set, shape ``(n,)``.
    key: a `jax.random` key.
    ratio: residual imbalance ratio after undersampling, a finite number >= 1.
    num_classes: number of classes; defaults to ``max(labels) + 1``. Every class must have
      at least one example.

  Returns:
    ``np.ndarray`` of int64 indices into ``labels`` (no repeats), sorted by class then
    index.

  Raises:
    ValueError: bad labels, an empty class, or ratio < 1 / not finite.
  """
  r = _check_ratio(ratio, "ratio")
  arr, counts = _nonempty_counts(labels, num_classes)
  target_all = _round_half_up(int(counts.min()) * r)
  by_class = np.argsort(arr, kind="stable")
  starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
  parts = []
  for c, (s, n_c) in enumerate(zip(starts, counts)):
    members = by_class[s : s + n_c]
    keep = min(int(n_c), target_all)
    if keep == n_c:
      parts.append(members)
    else:
      pick = _host_rng(key, c).choice(int(n_c), size=keep, replace=False)
      parts.append(members[np.sort(pick)])
  return _sorted_plan(arr, np.concatenate(parts))


def pad_plans(
    plans: Sequence[Any], length: int | None = None, fill: int = 0
) -> tuple[np.ndarray, np.ndarray]:
  """Stack variable-length index plans into one padded array for a population.

  Args:
    plans: a non-empty sequence of 1-D integer index plans (e.g. from `oversample`).
    length: padded length L; defaults to the longest plan. Must be >= every plan's length.
    fill: value written past each plan's end (never read by `epoch_order`, which only
      returns positions below the true length; 0 keeps it a valid index).

  Returns:
    ``(padded, lengths)``: ``int32[P, L]`` and ``int32[P]``.

  Raises:
    ValueError: no plans, a plan that is empty, not 1-D or not integer, indices that do not
      fit int32, or ``length`` shorter than a plan.
  """
  if len(plans) == 0:
    raise ValueError("pad_plans needs at least one plan, got none")
  arrs = []
  for i, p in enumerate(plans):
    a = np.asarray(p)
    if a.ndim != 1:
      raise ValueError(f"plan {i} must be 1-D, got shape {a.shape}")
    if a.size == 0:
      raise ValueError(f"plan {i} is empty")
    if not np.issubdtype(a.dtype, np.integer):
      raise ValueError(f"plan {i} must hold integer indices, got dtype {a.dtype}")
    if a.min() < np.iinfo(np.int32).min or a.max() > np.iinfo(np.int32).max:
      raise ValueError(f"plan {i} has indices that do not fit int32")
    arrs.append(a)
  longest = max(a.size for a in arrs)
  if length is None:
    length = longest
  elif isinstance(length, bool) or not isinstance(length, (int, np.integer)) \
          or length < longest:
    raise ValueError(f"length={length!r} is shorter than the longest plan ({longest})")
  out = np.full((len(arrs), int(length)), fill, dtype=np.int32)
  for i, a in enumerate(arrs):
    out[i, : a.size] = a
  lengths = np.array([a.size for a in arrs], dtype=np.int32)
  return out, lengths


# ---------------------------------------------------------------------------------------
# Device-side epoch stream: a keyed bijection on [0, plan_len), no sort
# ---------------------------------------------------------------------------------------

# With 8 rounds the whole-epoch permutations of tiny plans were measurably non-uniform
# (plan_len 5, 20k keys: chi-square 1700 on 119 dof); 16 rounds gave 136, i.e. uniform.
_FEISTEL_ROUNDS = 16


def _fmix32(h: jax.Array) -> jax.Array:
  # murmur3's 32-bit finaliser: a bijection on uint32 with full avalanche, so a round
  # function built on it mixes every input bit into every output bit.
  h = h ^ (h >> 16)
  h = h * jnp.uint32(0x85EBCA6B)
  h = h ^ (h >> 13)
  h = h * jnp.uint32(0xC2B2AE35)
  h = h ^ (h >> 16)
  return h


def _feistel(x: jax.Array, round_keys: jax.Array, left_bits: jax.Array,
             right_bits: jax.Array) -> jax.Array:
  """A keyed bijection on [0, 2**(left_bits + right_bits)) for uint32 ``x``.

  Alternating (unbalanced) Feistel: even rounds xor the left part with a keyed hash of the
  right part, odd rounds the reverse. Each round is invertible for any split, including
  empty halves, so the bit width may be traced (it differs per model under vmap).
  """
  one = jnp.uint32(1)
  right_mask = (one << right_bits) - one  # shifts by 32 never occur: width <= 31
  left_mask = (one << left_bits) - one
  left = (x >> right_bits) & left_mask
  right = x & right_mask
  for r in range(_FEISTEL_ROUNDS):
    k = round_keys[r]
    if r % 2 == 0:
      left = left ^ (_fmix32(right ^ k) & left_mask)
    else:
      right = right ^ (_fmix32(left ^ k) & right_mask)
  return (left << right_bits) | right


def _epoch_round_keys(base: jax.Array, epoch: jax.Array) -> jax.Array:
  """Round keys of each epoch: ``fmix32(fmix32(epoch ^ base[0, r]) + base[1, r])``.

  For a fixed key, each round key is a bijection of the epoch (fmix32 is invertible), so
  two epochs never share a round key, and every key bit reaches every round-key bit.
  """
  e = epoch[:, None]
  return _fmix32(_fmix32(e ^ base[0][None, :]) + base[1][None, :])


def _permute_position(i: jax.Array, round_keys: jax.Array, plan_len: jax.Array) -> jax.Array:
  """Image of position ``i < plan_len`` under the keyed permutation of [0, plan_len)."""
  n = plan_len.astype(jnp.uint32)
  # Smallest power of two >= plan_len: bits = 32 - clz(plan_len - 1) (0 for plan_len 1).
  bits = jnp.uint32(32) - lax.clz(n - jnp.uint32(1))
  left_bits = bits // jnp.uint32(2)
  right_bits = bits - left_bits
  domain = jnp.uint32(1) << bits

  # Cycle walking: apply the power-of-two permutation until the value lands in range. The
  # cycle through i < plan_len meets range again within domain - plan_len + 1 steps, so the
  # loop always ends; as the domain is < 2 * plan_len the expected walk is < 2 steps. The
  # counter bound is a guard that can never bind.
  def cond(state):
    y, it = state
    return (y >= n) & (it < domain)

  def body(state):
    y, it = state
    return _feistel(y, round_keys, left_bits, right_bits), it + jnp.uint32(1)

  y0 = _feistel(i.astype(jnp.uint32), round_keys, left_bits, right_bits)
  y, _ = lax.while_loop(cond, body, (y0, jnp.uint32(0)))
  return y.astype(jnp.int32)


def epoch_order(
    key: jax.Array, step: Any, batch_size: int, plan_len: Any
) -> jax.Array:
  """Positions in a plan of the examples of training step ``step``.

  The stream of positions ``t = step * batch_size + j`` is consumed epoch by epoch: epoch
  ``e = t // plan_len`` visits ``perm_e(t % plan_len)``, where ``perm_e`` is a keyed
  pseudo-random permutation of ``range(plan_len)`` drawn from ``(key, e)``. A batch may
  straddle an epoch boundary; every epoch is a fresh shuffle and visits each position once.

  ``perm_e`` is a 16-round alternating Feistel network on the smallest power of two
  ``>= plan_len`` (round function: murmur3's finaliser of ``value ^ round_key``; the round
  keys of epoch e hash e with 32 words ``jax.random.bits(key, (2, 16), uint32)``, see
  `_epoch_round_keys`), restricted to
  ``[0, plan_len)`` by cycle walking in a `lax.while_loop` (always finite, < 2 walks
  expected). Cost per step is O(batch_size), independent of the plan length.

  Jittable and vmappable in ``key``, ``step`` and ``plan_len`` (``batch_size`` is static).
  Value checks run only on concrete (non-traced) arguments. All arithmetic is int32 and
  avoids the product ``step * batch_size``: it needs ``plan_len * batch_size < 2**31``
  (e.g. 50k x 4096) and fewer than 2**31 epochs.

  Args:
    key: a `jax.random` key (typed or raw uint32[2]).
    step: training step, an integer >= 0 (may be traced).
    batch_size: examples per step, a static Python int >= 1.
    plan_len: true length of the plan, an integer in ``[1, 2**31)`` (may be traced).

  Returns:
    ``int32[batch_size]`` positions in ``[0, plan_len)``; use as
    ``plan[epoch_order(key, step, B, plan_len)]``.

  Raises:
    ValueError: batch_size not a positive int; concrete step < 0 or plan_len < 1.
  """
  if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
          or batch_size < 1:
    raise ValueError(f"batch_size must be a positive Python int, got {batch_size!r}")
  if not _is_tracer(step) and int(np.asarray(step)) < 0:
    raise ValueError(f"step must be >= 0, got {step!r}")
  if not _is_tracer(plan_len) and int(np.asarray(plan_len)) < 1:
    raise ValueError(f"plan_len must be >= 1, got {plan_len!r}")

  step = jnp.asarray(step, jnp.int32)
  plan_len = jnp.asarray(plan_len, jnp.int32)
  j = jnp.arange(batch_size, dtype=jnp.int32)
  # t = step * B + j with step = q * L + r:  t // L = q * B + (r * B + j) // L.
  q, r = step // plan_len, step % plan_len
  local = r * batch_size + j  # < plan_len * batch_size, which must stay below 2**31
  epoch = q * batch_size + local // plan_len
  pos = local % plan_len

  # One threefry draw per call (not per example): per-epoch round keys are then derived by
  # hashing. Deriving them per example with fold_in(key, epoch) cost ~4x the permutation.
  base = jax.random.bits(key, (2, _FEISTEL_ROUNDS), jnp.uint32)
  round_keys = _epoch_round_keys(base, epoch.astype(jnp.uint32))  # (B, rounds)
  return jax.vmap(_permute_position, (0, 0, None))(pos, round_keys, plan_len)


# ---------------------------------------------------------------------------------------
# Class-aware sampling (beyond the paper: Kang et al. 2020)
# ---------------------------------------------------------------------------------------

# Each kind is p_c proportional to n_c ** exponent ('power' takes its exponent as argument).
SAMPLING_KINDS: dict[str, float | None] = {
    "instance": 1.0,
    "class_balanced": 0.0,
    "sqrt": 0.5,
    "power": None,
}


def class_sampling_probs(counts: Any, kind: str, *, power: float | None = None) -> jax.Array:
  """Per-class sampling probabilities ``p_c ∝ n_c ** q`` (Kang et al. 2020, Eq. 1).

  ``'instance'`` (q = 1) reproduces plain shuffling, ``'class_balanced'`` (q = 0) draws
  every non-empty class equally often, ``'sqrt'`` is q = 1/2 and ``'power'`` takes q from
  ``power``. Empty classes always get probability 0 (so `draw_classwise` never picks them).

  Args:
    counts: per-class training counts, shape ``(C,)`` (may be traced).
    kind: one of ``SAMPLING_KINDS``.
    power: the exponent q for ``kind='power'`` (>= 0); must be None for the other kinds.

  Returns:
    float32 ``(C,)`` probabilities summing to 1.

  Raises:
    ValueError: unknown kind, a missing/extra/negative power, or concrete counts that are
      negative, not 1-D or all zero.
  """
  if kind not in SAMPLING_KINDS:
    raise ValueError(f"unknown sampling kind {kind!r}; accepted: {sorted(SAMPLING_KINDS)}")
  if kind == "power":
    if power is None:
      raise ValueError("kind='power' needs power=q, got power=None")
    if not _is_tracer(power) and not float(power) >= 0.0:
      raise ValueError(f"power must be >= 0, got {power!r}")
    q = power
  else:
    if power is not None:
      raise ValueError(f"power={power!r} is only accepted with kind='power', not {kind!r}")
    q = SAMPLING_KINDS[kind]
  if not _is_tracer(counts):
    c = np.asarray(counts)
    if c.ndim != 1 or c.size == 0:
      raise ValueError(f"counts must be a non-empty 1-D array, got shape {c.shape}")
    if np.any(c < 0) or not np.any(c > 0):
      raise ValueError(f"counts must be >= 0 with a positive total, got {c.tolist()}")
  n = jnp.asarray(counts, jnp.float32)
  present = n > 0
  w = jnp.where(present, jnp.where(present, n, 1.0) ** q, 0.0)
  return w / jnp.sum(w)


def progressive_probs(counts: Any, step: Any, total_steps: Any) -> jax.Array:
  """Progressively-balanced sampling (Kang et al. 2020, Eq. 2). Jittable.

  ``p(t) = (1 - t/T) * p_instance + t/T * p_class_balanced`` with ``t/T`` clipped to
  [0, 1]; empty classes get probability 0 throughout.

  Args:
    counts: per-class training counts, shape ``(C,)`` (may be traced).
    step: current step t (may be traced).
    total_steps: T > 0 (may be traced).

  Returns:
    float32 ``(C,)`` probabilities summing to 1.

  Raises:
    ValueError: on concrete total_steps <= 0 (other checks as `class_sampling_probs`).
  """
  if not _is_tracer(total_steps) and not float(np.asarray(total_steps)) > 0:
    raise ValueError(f"total_steps must be > 0, got {total_steps!r}")
  p_inst = class_sampling_probs(counts, "instance")
  p_bal = class_sampling_probs(counts, "class_balanced")
  frac = jnp.clip(jnp.asarray(step, jnp.float32) / jnp.asarray(total_steps, jnp.float32),
                  0.0, 1.0)
  return (1.0 - frac) * p_inst + frac * p_bal


def class_index_table(labels: Any, num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Examples grouped by class, for `draw_classwise`.

  Args:
    labels: integer labels, shape ``(n,)``, values in ``[0, num_classes)``.
    num_classes: number of classes C (empty classes are allowed and get count 0).

  Returns:
    ``(order, starts, counts)``: ``order`` int64[n] example indices sorted by class then
    index; ``starts`` int32[C] offset of each class in ``order``; ``counts`` int32[C].

  Raises:
    ValueError: labels empty, not 1-D or outside ``[0, num_classes)``.
  """
  arr, c = _check_labels(labels, num_classes)
  order = np.argsort(arr, kind="stable").astype(np.int64)
  counts = np.bincount(arr, minlength=c)
  starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
  return order, starts.astype(np.int32), counts.astype(np.int32)


def draw_classwise(
    key: jax.Array,
    step: Any,
    batch_size: int,
    probs: jax.Array,
    order: jax.Array,
    starts: jax.Array,
    counts: jax.Array,
) -> jax.Array:
  """Class-aware draw of one batch: a class from ``probs``, then an example within it.

  Sampling is with replacement, i.i.d. per example, keyed by ``fold_in(key, step)``.
  Classes with zero probability are never drawn (their log-probability is -inf), so empty
  classes are safe as long as their probability is 0 (as `class_sampling_probs` gives).
  Jittable and vmappable (``batch_size`` static); no value checks inside.

  Args:
    key: a `jax.random` key.
    step: training step (may be traced).
    batch_size: static Python int >= 1.
    probs: ``(C,)`` class probabilities (need not be normalised; must not be all zero).
    order: ``(n,)`` from `class_index_table` (only its length is used here).
    starts: ``int32[C]`` from `class_index_table`.
    counts: ``int32[C]`` from `class_index_table`.

  Returns:
    ``int32[batch_size]`` positions into ``order``; the examples are ``order[positions]``.

  Raises:
    ValueError: batch_size not a positive int.
  """
  del order  # positions index into it; the caller gathers
  if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
          or batch_size < 1:
    raise ValueError(f"batch_size must be a positive Python int, got {batch_size!r}")
  k_class, k_item = jax.random.split(jax.random.fold_in(key, step))
  probs = jnp.asarray(probs, jnp.float32)
  logits = jnp.where(probs > 0, jnp.log(jnp.where(probs > 0, probs, 1.0)), -jnp.inf)
  cls = jax.random.categorical(k_class, logits, shape=(batch_size,))
  # max(., 1) only matters for classes that cannot be drawn; it keeps randint's range valid.
  n_c = jnp.maximum(jnp.asarray(counts, jnp.int32)[cls], 1)
  within = jax.random.randint(k_item, (batch_size,), 0, n_c, dtype=jnp.int32)
  return (jnp.asarray(starts, jnp.int32)[cls] + within).astype(jnp.int32)
