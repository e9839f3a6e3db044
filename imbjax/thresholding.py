"""Thresholding: prior correction of network outputs (Buda et al. 2018, Sections 2.1-2.2).

A network trained on an imbalanced set estimates posteriors ``p(i | x)`` that carry the
training prior ``p(i)``. Thresholding divides each output by the prior, estimated as the
class frequency of the imbalanced training set *before* any sampling, and takes the argmax
as the decision: ``y_i(x) / p(i)`` (proportional to ``p(x | i)``).

Dividing one class's scores by a positive constant does not reorder them, so the per-class
one-vs-rest ROC AUC (and hence `imbjax.metrics.multiclass_roc_auc`) is unchanged as long as
the outputs are not renormalised; only accuracy-type metrics move. That is why the paper's
thresholded methods cost no training: they are extra evaluations of trained models.

All functions are jit/vmap friendly; value checks run only on concrete (non-traced) inputs.

Example::

    >>> prior = class_prior(imbalance.step(10, 5000, 10, 0.5, minority='lowest'))
    >>> preds = thresholded_predictions(softmax_outputs, prior)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["class_prior", "apply_prior", "apply_log_prior", "thresholded_predictions"]


def _is_tracer(*xs: Any) -> bool:
  return any(isinstance(x, jax.core.Tracer) for x in xs)


def class_prior(labels_or_counts: Any, *, num_classes: int | None = None) -> jax.Array:
  """Class prior ``p(i)`` estimated on the imbalanced training set, before sampling.

  Two readings of the argument, chosen explicitly by ``num_classes`` (a 1-D array of labels
  and a 1-D array of counts cannot be told apart by looking at them):

  * ``num_classes=None``: the argument is per-class counts ``n_i`` (e.g. the output of
    `imbjax.imbalance.step`), and ``p(i) = n_i / sum(n)``;
  * ``num_classes=C``: the argument is the training labels, counted into C classes.

  Args:
    labels_or_counts: per-class counts ``(C,)``, or labels ``(n,)`` when ``num_classes``
      is given. Counts may be traced (no checks then).
    num_classes: number of classes when the argument holds labels.

  Returns:
    float32 ``(C,)`` prior summing to 1.

  Raises:
    ValueError: (concrete inputs) not 1-D, negative counts, labels outside
      ``[0, num_classes)``, or an empty class (its prior would be 0 and the correction
      would divide by it).
  """
  if num_classes is not None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
            or num_classes < 1:
      raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    lab = np.asarray(labels_or_counts)
    if lab.ndim != 1 or lab.size == 0:
      raise ValueError(f"labels must be a non-empty 1-D array, got shape {lab.shape}")
    if not np.issubdtype(lab.dtype, np.integer):
      raise ValueError(f"labels must be integers, got dtype {lab.dtype}")
    if lab.min() < 0 or lab.max() >= num_classes:
      bad = int(lab.min()) if lab.min() < 0 else int(lab.max())
      raise ValueError(f"labels must lie in [0, {num_classes}), got label {bad}")
    counts: Any = np.bincount(lab, minlength=num_classes)
  else:
    counts = labels_or_counts
  if not _is_tracer(counts):
    c = np.asarray(counts)
    if c.ndim != 1 or c.size == 0:
      raise ValueError(f"counts must be a non-empty 1-D array, got shape {c.shape}")
    if not np.all(np.isfinite(c)) or np.any(c < 0):
      raise ValueError(f"counts must be finite and >= 0, got {c.tolist()}")
    empty = np.nonzero(c == 0)[0]
    if empty.size:
      raise ValueError(
          f"class {int(empty[0])} is empty (empty classes: {empty.tolist()}); "
          "a zero prior cannot be divided out"
      )
  n = jnp.asarray(counts, jnp.float32)
  return n / jnp.sum(n)


def _check_outputs(outputs: Any, prior: Any, name: str) -> None:
  if _is_tracer(outputs, prior):
    return
  o = np.asarray(outputs)
  p = np.asarray(prior)
  if p.ndim != 1:
    raise ValueError(f"prior must be 1-D, got shape {p.shape}")
  if o.ndim < 1 or o.shape[-1] != p.shape[0]:
    raise ValueError(
        f"{name} last axis ({o.shape[-1] if o.ndim else 'scalar'}) must match the prior's "
        f"{p.shape[0]} classes"
    )
  if not np.all(np.isfinite(p)) or np.any(p <= 0):
    raise ValueError(f"prior must be finite and > 0, got {p.tolist()}")
  if np.any(np.isnan(o)):
    raise ValueError(f"{name} contain NaN")


def apply_prior(probs: Any, prior: Any, *, renormalize: bool = False) -> jax.Array:
  """Divide outputs by the class prior: ``probs[..., i] / prior[i]``.

  Without renormalisation each class's scores are only rescaled, so per-class ROC AUC is
  unchanged; with ``renormalize=True`` rows sum to 1 again (a proper posterior under a
  uniform prior), which can change AUC and is off by default.

  Args:
    probs: ``(..., C)`` network outputs (softmax probabilities).
    prior: ``(C,)`` positive prior, e.g. from `class_prior`.
    renormalize: rescale each row to sum to 1.

  Returns:
    ``(..., C)`` corrected outputs.

  Raises:
    ValueError: (concrete inputs) shape mismatch, non-positive prior, NaN outputs.
  """
  _check_outputs(probs, prior, "probs")
  out = jnp.asarray(probs) / jnp.asarray(prior, jnp.result_type(probs, jnp.float32))
  if renormalize:
    out = out / jnp.sum(out, axis=-1, keepdims=True)
  return out


def apply_log_prior(logits: Any, prior: Any) -> jax.Array:
  """Prior correction in log space: ``logits - log(prior)``.

  ``softmax(logits - log prior)`` equals `apply_prior` of the softmax renormalised, and its
  argmax is the same thresholded decision; use it on logits for numerical safety.

  Args:
    logits: ``(..., C)`` network logits.
    prior: ``(C,)`` positive prior.

  Returns:
    ``(..., C)`` corrected logits.

  Raises:
    ValueError: (concrete inputs) shape mismatch, non-positive prior, NaN logits.
  """
  _check_outputs(logits, prior, "logits")
  return jnp.asarray(logits) - jnp.log(jnp.asarray(prior, jnp.result_type(logits, jnp.float32)))


def thresholded_predictions(probs: Any, prior: Any) -> jax.Array:
  """The thresholded decision ``argmax_i probs[..., i] / prior[i]``.

  Args:
    probs: ``(..., C)`` softmax outputs.
    prior: ``(C,)`` positive prior.

  Returns:
    int32 ``(...)`` predicted labels.

  Raises:
    ValueError: as `apply_prior`.
  """
  return jnp.argmax(apply_prior(probs, prior), axis=-1).astype(jnp.int32)
