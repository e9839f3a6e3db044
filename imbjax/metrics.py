"""Scores of a trained model on a test set, written in JAX so they jit and vmap over models.

The paper's main metric is the multi-class ROC AUC: the mean over classes of the
one-vs-rest ROC AUC (Buda et al. 2018, Section 3.4). `multiclass_roc_auc` computes it with
the Mann-Whitney statistic in O(n log n) (one sort per class), ties counted as halves, so it
equals ``sklearn.metrics.roc_auc_score(labels, probs, multi_class='ovr', average='macro')``.
Accuracy-type scores (`accuracy`, `per_class_recall`, `balanced_accuracy`,
`confusion_matrix`), calibration (`expected_calibration_error`) and the long-tail
many/medium/few-shot split (`shot_accuracy`) complete the set.

Checks and tracing: every public function validates *concrete* inputs and raises
``ValueError`` (NaN scores, labels outside ``[0, C)``, a class without examples where the
metric needs one). Inside ``jit``/``vmap`` the inputs are tracers and cannot be inspected,
so the checks are skipped and the jittable core runs as is: a class with no positives or no
negatives then yields a NaN AUC (and a NaN mean), never an exception.

Example::

    >>> auc = jax.jit(jax.vmap(multiclass_roc_auc, in_axes=(0, None)))(probs_PNC, labels_N)
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = [
    "per_class_roc_auc",
    "multiclass_roc_auc",
    "accuracy",
    "per_class_recall",
    "balanced_accuracy",
    "confusion_matrix",
    "expected_calibration_error",
    "shot_accuracy",
]

# Above this many examples the doubled Mann-Whitney sum may exceed uint32 (it is at most
# n_pos * n_neg * 2 <= n**2 / 2); below it the sum is exact integer arithmetic.
_EXACT_AUC_MAX_N = 92681


def _is_tracer(*xs: Any) -> bool:
  return any(isinstance(x, jax.core.Tracer) for x in xs)


def _check_labels(labels: Any, num_classes: int, n: int | None = None) -> np.ndarray:
  lab = np.asarray(labels)
  if lab.ndim != 1:
    raise ValueError(f"labels must be 1-D, got shape {lab.shape}")
  if n is not None and lab.shape[0] != n:
    raise ValueError(f"labels has {lab.shape[0]} entries but the scores have {n} rows")
  if lab.size and not np.issubdtype(lab.dtype, np.integer):
    raise ValueError(f"labels must be integers, got dtype {lab.dtype}")
  if lab.size and (lab.min() < 0 or lab.max() >= num_classes):
    bad = int(lab.min()) if lab.min() < 0 else int(lab.max())
    raise ValueError(f"labels must lie in [0, {num_classes}), got label {bad}")
  return lab


def _check_scores(scores: Any, labels: Any) -> None:
  s = np.asarray(scores)
  if s.ndim != 2:
    raise ValueError(f"scores must be 2-D (examples, classes), got shape {s.shape}")
  if s.shape[1] < 2:
    raise ValueError(f"scores need at least 2 classes, got {s.shape[1]}")
  if np.any(np.isnan(s)):
    raise ValueError(f"scores contain NaN ({int(np.isnan(s).sum())} entries)")
  _check_labels(labels, s.shape[1], s.shape[0])


# ---------------------------------------------------------------------------------------
# ROC AUC
# ---------------------------------------------------------------------------------------


def _auc_one_vs_rest(score: jax.Array, positive: jax.Array, exact: bool | None = None
                     ) -> jax.Array:
  """Mann-Whitney AUC of one class: P(s_pos > s_neg) + P(s_pos == s_neg) / 2.

  One sort of the scores; for each example, the number of negatives strictly below and
  equal to it follows from a cumulative count of negatives along the sorted order and the
  bounds of its tie group (cummax / reverse cummin of group boundaries), all O(n).
  ``exact`` (static) picks the integer sum; by default when n <= _EXACT_AUC_MAX_N.
  """
  n = score.shape[0]
  is_neg = jnp.logical_not(positive).astype(jnp.int32)
  s_sorted, neg_sorted = lax.sort((score, is_neg), num_keys=1)
  neg_incl = jnp.cumsum(neg_sorted)  # negatives at sorted positions <= k
  neg_excl = neg_incl - neg_sorted  # negatives at sorted positions < k
  idx = jnp.arange(n, dtype=jnp.int32)
  differs = s_sorted[1:] != s_sorted[:-1]
  first = jnp.concatenate([jnp.array([True]), differs])
  last = jnp.concatenate([differs, jnp.array([True])])
  group_start = lax.cummax(jnp.where(first, idx, 0))
  group_end = lax.cummin(jnp.where(last, idx, n - 1), reverse=True)
  below = neg_excl[group_start]  # negatives strictly below this score
  equal = neg_incl[group_end] - below  # negatives tied with this score
  pos_sorted = 1 - neg_sorted
  # Doubled Mann-Whitney U as an exact integer: sum over positives of 2*below + equal.
  if exact is None:
    exact = n <= _EXACT_AUC_MAX_N
  if exact:
    u2 = jnp.sum((pos_sorted * (2 * below + equal)).astype(jnp.uint32))
    u2 = u2.astype(jnp.float32)
  else:  # very large sets: float32 sum (relative error ~1e-7 per term)
    u2 = jnp.sum((pos_sorted * (2 * below + equal)).astype(jnp.float32))
  n_pos = jnp.sum(pos_sorted).astype(jnp.float32)
  n_neg = jnp.float32(n) - n_pos
  return u2 / (2.0 * n_pos * n_neg)  # 0/0 = NaN for a class without positives/negatives


def per_class_roc_auc(scores: Any, labels: Any) -> jax.Array:
  """One-vs-rest ROC AUC of each class, ties counted as in the Mann-Whitney statistic.

  Args:
    scores: ``(n, C)`` real scores (probabilities or logits; any monotone transform of a
      column leaves its AUC unchanged).
    labels: ``(n,)`` integer labels in ``[0, C)``.

  Returns:
    float32 ``(C,)``; NaN for a class with no positives or no negatives (traced inputs).

  Raises:
    ValueError: (concrete inputs) bad shapes, NaN scores, labels outside ``[0, C)``, or a
      class with no examples (or all examples) in ``labels``.
  """
  if not _is_tracer(scores, labels):
    _check_scores(scores, labels)
    s = np.asarray(scores)
    have = np.bincount(np.asarray(labels), minlength=s.shape[1])
    missing = np.nonzero((have == 0) | (have == s.shape[0]))[0]
    if missing.size:
      raise ValueError(
          f"class {int(missing[0])} has {int(have[missing[0]])} of {s.shape[0]} examples "
          "in labels; its one-vs-rest ROC AUC needs positives and negatives"
      )
  return _per_class_auc_core(jnp.asarray(scores), jnp.asarray(labels))


@jax.jit
def _per_class_auc_core(scores: jax.Array, labels: jax.Array) -> jax.Array:
  # jit here too: called eagerly, one compiled program beats dispatching each op.
  classes = jnp.arange(scores.shape[1])
  positive = labels[None, :] == classes[:, None]  # (C, n)
  return jax.vmap(_auc_one_vs_rest)(scores.T, positive)


def multiclass_roc_auc(scores: Any, labels: Any) -> jax.Array:
  """Multi-class ROC AUC: the mean over classes of the one-vs-rest AUC (the paper's metric).

  Equals ``sklearn.metrics.roc_auc_score(labels, softmax_probs, multi_class='ovr',
  average='macro')``. O(n log n) per class. Jittable and vmappable over a leading model
  axis (``jax.vmap(multiclass_roc_auc, in_axes=(0, None))``); see the module docstring for
  checks under tracing.

  Args:
    scores: ``(n, C)`` real scores.
    labels: ``(n,)`` integer labels in ``[0, C)``.

  Returns:
    float32 scalar.

  Raises:
    ValueError: as `per_class_roc_auc`.
  """
  return jnp.mean(per_class_roc_auc(scores, labels))


# ---------------------------------------------------------------------------------------
# Accuracy and friends
# ---------------------------------------------------------------------------------------


def _check_num_classes(num_classes: Any) -> int:
  if num_classes is None:
    raise ValueError("num_classes is required when passing predictions instead of scores")
  if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
          or num_classes < 1:
    raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
  return int(num_classes)


def _resolve(preds_or_scores: Any, labels: Any, num_classes: int | None,
             need_classes: bool = True) -> int | None:
  """Check predictions/scores against labels; return the class count.

  Scores have one more axis than labels (their argmax is the prediction, and their last
  axis gives the class count); predictions have the labels' shape. Value checks run on
  concrete inputs only; shape checks always (shapes are static under tracing).
  """
  x_shape, y_shape = jnp.shape(preds_or_scores), jnp.shape(labels)
  is_scores = len(x_shape) == len(y_shape) + 1
  if is_scores:
    if x_shape[:-1] != y_shape:
      raise ValueError(f"scores shape {x_shape} does not fit labels shape {y_shape}")
    c = x_shape[-1]
    if num_classes is not None and num_classes != c:
      raise ValueError(f"num_classes={num_classes} but the scores have {c} classes")
  elif x_shape != y_shape:
    raise ValueError(f"predictions shape {x_shape} does not fit labels shape {y_shape}")
  else:
    c = num_classes
  if need_classes:
    c = _check_num_classes(c)
  if not _is_tracer(preds_or_scores):
    x = np.asarray(preds_or_scores)
    if is_scores:
      if np.any(np.isnan(x)):
        raise ValueError(f"scores contain NaN ({int(np.isnan(x).sum())} entries)")
    elif x.size:
      if not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"predictions must be integers (or pass scores), got {x.dtype}")
      if x.min() < 0 or (c is not None and x.max() >= c):
        bad = int(x.min()) if x.min() < 0 else int(x.max())
        raise ValueError(f"predictions must lie in [0, {c}), got {bad}")
  if not _is_tracer(labels):
    y = np.asarray(labels)
    if y.size and not np.issubdtype(y.dtype, np.integer):
      raise ValueError(f"labels must be integers, got dtype {y.dtype}")
    if y.size and (y.min() < 0 or (c is not None and y.max() >= c)):
      bad = int(y.min()) if y.min() < 0 else int(y.max())
      raise ValueError(f"labels must lie in [0, {c}), got label {bad}")
  return c


def _as_preds(preds_or_scores: jax.Array, labels: jax.Array) -> jax.Array:
  if preds_or_scores.ndim == labels.ndim + 1:
    return jnp.argmax(preds_or_scores, axis=-1).astype(jnp.int32)
  return preds_or_scores.astype(jnp.int32)


@jax.jit
def _accuracy_core(x: jax.Array, y: jax.Array) -> jax.Array:
  return jnp.mean((_as_preds(x, y) == y).astype(jnp.float32))


def accuracy(preds_or_scores: Any, labels: Any) -> jax.Array:
  """Fraction of examples whose prediction equals the label.

  Args:
    preds_or_scores: ``(n,)`` integer predictions or ``(n, C)`` scores (argmax taken).
    labels: ``(n,)`` integer labels.

  Returns:
    float32 scalar (NaN for n = 0).

  Raises:
    ValueError: shape mismatch; (concrete inputs) NaN scores, negative values.
  """
  _resolve(preds_or_scores, labels, None, need_classes=False)
  return _accuracy_core(jnp.asarray(preds_or_scores), jnp.asarray(labels))


@jax.jit(static_argnums=2)
def _confusion_core(y: jax.Array, x: jax.Array, c: int) -> jax.Array:
  p = _as_preds(x, y)
  return jnp.zeros((c, c), jnp.int32).at[y.astype(jnp.int32), p].add(1, mode="drop")


def confusion_matrix(labels: Any, preds: Any, num_classes: int) -> jax.Array:
  """Counts ``M[i, j]`` of examples with label i predicted as j (sklearn's layout).

  Args:
    labels: ``(n,)`` integer labels in ``[0, num_classes)``.
    preds: ``(n,)`` integer predictions in ``[0, num_classes)`` (or ``(n, C)`` scores).
    num_classes: C, static.

  Returns:
    int32 ``(C, C)``. Under tracing, out-of-range entries are dropped.

  Raises:
    ValueError: shape mismatch; (concrete inputs) values outside ``[0, num_classes)``.
  """
  c = _resolve(preds, labels, _check_num_classes(num_classes))
  return _confusion_core(jnp.asarray(labels), jnp.asarray(preds), c)


@jax.jit(static_argnums=2)
def _recall_core(x: jax.Array, y: jax.Array, c: int) -> jax.Array:
  y = y.astype(jnp.int32)
  hit = (_as_preds(x, y) == y).astype(jnp.float32)
  correct = jnp.zeros(c, jnp.float32).at[y].add(hit, mode="drop")
  total = jnp.zeros(c, jnp.float32).at[y].add(1.0, mode="drop")
  return jnp.where(total > 0, correct / jnp.where(total > 0, total, 1.0), jnp.nan)


def per_class_recall(preds_or_scores: Any, labels: Any, num_classes: int | None = None
                     ) -> jax.Array:
  """Recall (per-class accuracy) of each class: correct / examples of that class.

  Args:
    preds_or_scores: ``(n,)`` predictions or ``(n, C)`` scores.
    labels: ``(n,)`` integer labels.
    num_classes: C, static; inferred from scores, required with predictions.

  Returns:
    float32 ``(C,)``; NaN for a class without examples in ``labels``.

  Raises:
    ValueError: as `confusion_matrix`; num_classes missing with predictions.
  """
  c = _resolve(preds_or_scores, labels, num_classes)
  return _recall_core(jnp.asarray(preds_or_scores), jnp.asarray(labels), c)


def balanced_accuracy(preds_or_scores: Any, labels: Any, num_classes: int | None = None
                      ) -> jax.Array:
  """Mean recall over the classes present in ``labels`` (sklearn's balanced_accuracy_score).

  Args:
    preds_or_scores: ``(n,)`` predictions or ``(n, C)`` scores.
    labels: ``(n,)`` integer labels.
    num_classes: C, static; inferred from scores, required with predictions.

  Returns:
    float32 scalar.

  Raises:
    ValueError: as `per_class_recall`.
  """
  return jnp.nanmean(per_class_recall(preds_or_scores, labels, num_classes))


@jax.jit(static_argnums=2)
def _ece_core(p: jax.Array, y: jax.Array, num_bins: int) -> jax.Array:
  conf = jnp.max(p, axis=-1)
  correct = (jnp.argmax(p, axis=-1) == y).astype(p.dtype)
  inner = jnp.linspace(0.0, 1.0, num_bins + 1, dtype=p.dtype)[1:-1]
  # Number of inner edges strictly below conf: bin b covers (edge_b, edge_{b+1}].
  b = jnp.searchsorted(inner, conf, side="left")
  gap = jnp.zeros(num_bins, p.dtype).at[b].add(correct - conf)
  return jnp.sum(jnp.abs(gap)) / conf.shape[0]


def expected_calibration_error(probs: Any, labels: Any, num_bins: int = 15) -> jax.Array:
  """Top-label expected calibration error with equal-width bins (Guo et al. 2017).

  ``ECE = sum_b |B_b|/n * |acc(B_b) - conf(B_b)|`` where the confidence is the largest
  probability, the prediction its argmax, and bin b holds confidences in
  ``(b/M, (b+1)/M]`` (a confidence of exactly 0 goes to the first bin). Computed as
  ``sum_b |sum_{B_b}(correct - conf)| / n``.

  Args:
    probs: ``(n, C)`` probabilities.
    labels: ``(n,)`` integer labels.
    num_bins: M, static, >= 1.

  Returns:
    float32 scalar.

  Raises:
    ValueError: bad num_bins; (concrete inputs) NaN, shape mismatch, labels out of range.
  """
  if isinstance(num_bins, bool) or not isinstance(num_bins, (int, np.integer)) \
          or num_bins < 1:
    raise ValueError(f"num_bins must be a positive int, got {num_bins!r}")
  if not _is_tracer(probs, labels):
    _check_scores(probs, labels)
  p = jnp.asarray(probs)
  if not jnp.issubdtype(p.dtype, jnp.floating):
    p = p.astype(jnp.float32)
  return _ece_core(p, jnp.asarray(labels), int(num_bins))


@jax.jit
def _shot_core(recall: jax.Array, counts: jax.Array, many: Any, few: Any) -> dict[str, Any]:
  groups = {
      "many": counts > many,
      "medium": (counts >= few) & (counts <= many),
      "few": counts < few,
  }
  out = {}
  for name, mask in groups.items():
    use = mask & ~jnp.isnan(recall)
    k = jnp.sum(use)
    total = jnp.sum(jnp.where(use, recall, 0.0))
    out[name] = jnp.where(k > 0, total / jnp.maximum(k, 1), jnp.nan)
  return out


def shot_accuracy(preds: Any, labels: Any, train_counts: Any, many: int = 100,
                  few: int = 20) -> dict[str, jax.Array]:
  """Many/medium/few-shot accuracy of the long-tail literature (Liu et al. 2019, OLTR).

  Classes are grouped by their number of *training* examples: many-shot ``> many``,
  medium-shot ``few <= n <= many``, few-shot ``< few`` (defaults 100/20 are for
  ImageNet-LT-sized sets; scale them for small datasets, e.g. CIFAR-10-LT). Each group's
  score is the mean per-class accuracy (recall) over its classes that appear in
  ``labels``, as in the OLTR code; NaN for a group with no such class.

  Args:
    preds: ``(n,)`` predictions or ``(n, C)`` scores.
    labels: ``(n,)`` test labels.
    train_counts: ``(C,)`` training examples per class (may be traced).
    many: many-shot threshold (may be traced).
    few: few-shot threshold, ``few <= many`` (may be traced).

  Returns:
    ``{'many': , 'medium': , 'few': }`` float32 scalars.

  Raises:
    ValueError: few > many; (concrete inputs) as `per_class_recall`.
  """
  if not _is_tracer(many, few) and few > many:
    raise ValueError(f"few={few} must not exceed many={many}")
  counts = jnp.asarray(train_counts)
  recall = per_class_recall(preds, labels, counts.shape[0])
  return _shot_core(recall, counts, many, few)
