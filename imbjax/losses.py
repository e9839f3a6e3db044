"""The loss family beyond the paper: one array-driven loss and its coefficient builders.

Buda et al. (2018) train with plain softmax cross-entropy and correct imbalance with
sampling and thresholding. This module owns the loss-side methods that later work added,
expressed so that a *method is data*: every model in a vmapped population calls the same
:func:`imbalance_loss`, and what makes it class-weighted, focal, LDAM or logit-adjusted is
only the values of its coefficient arrays. One compiled program therefore trains any mix.

Training-time coefficients (built on the host from training class counts ``n_c``):

=========================================  =========================================
method                                     coefficients
=========================================  =========================================
plain cross-entropy                        :func:`neutral_coefficients`
inverse-frequency weighting                ``class_weights=inverse_frequency_weights``
class-balanced (Cui et al. 2019)           ``class_weights=effective_number_weights``
focal (Lin et al. 2017)                    ``focal_gamma=2.0``
LDAM (Cao et al. 2019)                     ``margin=ldam_margins``, ``logit_scale``
LDAM-DRW (Cao et al. 2019)                 the above plus ``class_weights=drw_weights``
logit-adjusted loss (Menon et al. 2021)    ``logit_offset=logit_adjustment_offsets``
Balanced Softmax (Ren et al. 2020)         ``logit_offset=balanced_softmax_offsets``
=========================================  =========================================

Evaluation-time corrections of trained models: :func:`posthoc_logit_adjust` with a tau
chosen by :func:`select_tau` (Menon et al. 2021), and :func:`tau_normalize` of the
classifier weights (Kang et al. 2020).

Example::

    counts = np.array([500, 50, 5])
    coeffs = neutral_coefficients(3)._replace(
        margin=ldam_margins(counts), logit_scale=np.float32(30.0))
    loss = imbalance_loss(logits, labels, **coeffs._asdict())
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

SELECT_TAU_METRICS = ("accuracy", "balanced_accuracy")


class LossCoefficients(NamedTuple):
  """The per-model data that selects a loss; a pytree, so it stacks along a model axis.

  Fields are the keyword arguments of :func:`imbalance_loss` of the same names;
  ``imbalance_loss(logits, labels, **coeffs._asdict())`` applies them. Every model of a
  population must carry every field (neutral values where unused) so that the stacked
  arrays share one shape.
  """

  class_weights: ArrayLike  # [C]
  logit_offset: ArrayLike  # [C]
  margin: ArrayLike  # [C]
  focal_gamma: ArrayLike  # []
  logit_scale: ArrayLike  # []


def neutral_coefficients(num_classes: int) -> LossCoefficients:
  """Coefficients under which :func:`imbalance_loss` is plain mean cross-entropy.

  Args:
    num_classes: number of classes C (>= 1).

  Returns:
    A :class:`LossCoefficients` of float32 NumPy arrays: unit weights, zero offsets,
    zero margins, ``focal_gamma=0`` and ``logit_scale=1``.

  Raises:
    ValueError: if ``num_classes`` is not a positive integer.
  """
  if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
          or num_classes < 1:
    raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
  c = int(num_classes)
  return LossCoefficients(
      class_weights=np.ones((c,), np.float32),
      logit_offset=np.zeros((c,), np.float32),
      margin=np.zeros((c,), np.float32),
      focal_gamma=np.float32(0.0),
      logit_scale=np.float32(1.0),
  )


# --------------------------------------------------------------------------- the loss


def _is_concrete(x) -> bool:
  """True for host values we may inspect; traced values are checked only by shape."""
  return isinstance(x, (int, float, list, tuple, np.ndarray, np.generic))


def _check_class_vector(name: str, value, num_classes: int) -> None:
  shape = np.shape(value)
  if shape != (num_classes,):
    raise ValueError(
        f"{name} must have shape ({num_classes},) to match the logits' class axis, "
        f"got shape {shape}")


def _check_scalar(name: str, value, minimum: float, strict: bool) -> None:
  if np.ndim(value) != 0:
    raise ValueError(f"{name} must be a scalar, got shape {np.shape(value)}")
  if _is_concrete(value):
    v = float(value)
    bad = not np.isfinite(v) or (v <= minimum if strict else v < minimum)
    if bad:
      op = ">" if strict else ">="
      raise ValueError(f"{name} must be finite and {op} {minimum}, got {v!r}")


def imbalance_loss(logits: ArrayLike,
                   labels: ArrayLike,
                   *,
                   class_weights: ArrayLike | None = None,
                   logit_offset: ArrayLike | None = None,
                   margin: ArrayLike | None = None,
                   focal_gamma: ArrayLike = 0.0,
                   logit_scale: ArrayLike = 1.0,
                   example_mask: ArrayLike | None = None) -> Array:
  """Weighted, focal, margin- and offset-adjusted softmax cross-entropy.

  For example ``i`` with label ``y``::

      z_i     = logit_scale * (logits_i + logit_offset - margin * onehot(y))
      ce_i    = -log_softmax(z_i)[y]
      focal_i = (1 - p_y) ** focal_gamma * ce_i,        p_y = exp(-ce_i)
      loss    = sum_i w_{y_i} m_i focal_i / sum_i w_{y_i} m_i

  with ``w = class_weights`` and ``m = example_mask``: the weighted mean of PyTorch's
  ``cross_entropy(weight=...)``. ``focal_gamma == 0`` gives the cross-entropy exactly
  (the focal factor is the constant 1, not ``0 ** 0``), and gradients stay finite when
  ``p_y == 1`` for any ``focal_gamma >= 0``.

  Notes on the originals. The focal factor is the softmax focal loss as written in Cao
  et al.'s LDAM code, but their weighted variant multiplies the weight *inside* ``p_y``
  and then takes a plain mean; here ``p_y`` is unweighted and weights enter only the
  weighted mean, so that weights and focusing are independent knobs. LDAM scales
  L2-normalised features by ``s = 30``; we scale the raw logits by ``logit_scale``
  (a documented simplification), so ``logit_scale`` defaults to 1 and the method
  registry chooses ``s``.

  Everything is jittable and vmappable; every coefficient may be a traced per-model
  value. Shapes are checked here; values can only be checked when they are concrete.

  Args:
    logits: [N, C] raw model outputs (computed in at least float32).
    labels: [N] integer class labels in ``[0, C)``. Concrete out-of-range labels
      raise; traced ones make the loss NaN unless their example is masked out.
    class_weights: [C] per-class weight ``w_c`` (None: all ones).
    logit_offset: [C] added to every example's logits during training (None: zeros).
    margin: [C] subtracted from the true-class logit only (None: zeros).
    focal_gamma: scalar focal exponent >= 0 (0: cross-entropy).
    logit_scale: scalar ``s`` > 0 multiplying the adjusted logits (1: none).
    example_mask: [N] 0/1 weights; 0 drops a padded example exactly, whatever its
      label (None: ones).

  Returns:
    The scalar loss. When the total weight ``sum_i w_{y_i} m_i`` is 0 (e.g. a fully
    padded batch) the loss is 0 with zero gradients rather than NaN.

  Raises:
    ValueError: on a shape mismatch, a concrete negative ``focal_gamma``, a concrete
      non-positive ``logit_scale`` or concrete labels outside ``[0, C)``.
  """
  if np.ndim(logits) != 2:
    raise ValueError(f"logits must have shape [N, C], got shape {np.shape(logits)}")
  n, c = np.shape(logits)
  if np.shape(labels) != (n,):
    raise ValueError(f"labels must have shape ({n},) to match logits, "
                     f"got shape {np.shape(labels)}")
  if example_mask is not None and np.shape(example_mask) != (n,):
    raise ValueError(f"example_mask must have shape ({n},), "
                     f"got shape {np.shape(example_mask)}")
  if _is_concrete(labels):
    lab = np.asarray(labels)
    if not np.issubdtype(lab.dtype, np.integer):
      raise ValueError(f"labels must be integers, got dtype {lab.dtype}")
    # Padded (masked-out) rows may carry any label; with a traced mask we cannot tell
    # which rows are padding, so the NaN of _loss_core is the only guard then.
    if example_mask is None or _is_concrete(example_mask):
      if example_mask is not None:
        lab = lab[np.asarray(example_mask) != 0]
      if lab.size and (lab.min() < 0 or lab.max() >= c):
        raise ValueError(f"labels must lie in [0, {c}), got values in "
                         f"[{lab.min()}, {lab.max()}]")
  for name, value in (("class_weights", class_weights), ("logit_offset", logit_offset),
                      ("margin", margin)):
    if value is not None:
      _check_class_vector(name, value, c)
  _check_scalar("focal_gamma", focal_gamma, 0.0, strict=False)
  _check_scalar("logit_scale", logit_scale, 0.0, strict=True)

  dtype = jnp.promote_types(jnp.result_type(logits), jnp.float32)
  # Absent coefficients become their neutral values (exact no-ops in floating point),
  # so every call has the same signature and reuses one compiled kernel.
  return _loss_core(
      jnp.asarray(logits, dtype),
      jnp.asarray(labels),
      jnp.ones((c,), dtype) if class_weights is None else jnp.asarray(class_weights, dtype),
      jnp.zeros((c,), dtype) if logit_offset is None else jnp.asarray(logit_offset, dtype),
      jnp.zeros((c,), dtype) if margin is None else jnp.asarray(margin, dtype),
      jnp.asarray(focal_gamma, dtype),
      jnp.asarray(logit_scale, dtype),
      jnp.ones((n,), dtype) if example_mask is None else jnp.asarray(example_mask, dtype),
  )


@jax.jit
def _loss_core(logits: Array, labels: Array, class_weights: Array, logit_offset: Array,
               margin: Array, gamma: Array, scale: Array, mask: Array) -> Array:
  """The math of :func:`imbalance_loss` on validated, neutral-filled arrays."""
  dtype = logits.dtype
  onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=dtype)
  z = scale * (logits + logit_offset - margin * onehot)
  # A gather, not sum(log_softmax * onehot): a -inf logit of another class must not
  # turn into -inf * 0 = NaN.
  num_classes = logits.shape[-1]
  ce = -jnp.take_along_axis(jax.nn.log_softmax(z, axis=-1),
                            jnp.clip(labels, 0, num_classes - 1)[:, None], axis=-1)[:, 0]
  # An out-of-range label (negative ones included, which indexing would wrap) is NaN,
  # loud, rather than a silently wrapped or clamped class.
  ce = jnp.where((labels >= 0) & (labels < num_classes), ce, jnp.nan)

  # 1 - p_y via expm1 keeps precision when p_y is near 1. Clamping the base away from 0
  # keeps d/dbase base**gamma = gamma * base**(gamma - 1) finite (0 * inf would be NaN),
  # and the outer where makes gamma == 0 the constant 1 so CE is reproduced bit-exactly.
  # The clamp changes nothing else: base < tiny only when ce == 0, where focal_i is 0.
  one_minus_p = -jnp.expm1(-ce)
  safe_base = jnp.maximum(one_minus_p, jnp.finfo(dtype).tiny)
  factor = jnp.where(gamma == 0, jnp.ones_like(ce), jnp.power(safe_base, gamma))

  w = class_weights.at[labels].get(mode="clip") * mask
  # where, not a product: a padded row (w == 0) with a NaN term must not poison the sum.
  per_example = jnp.where(w != 0, w * factor * ce, 0.0)
  total = jnp.sum(w)
  # Double where: a zero denominator must not leak NaN into the gradient either.
  safe_total = jnp.where(total > 0, total, 1.0)
  return jnp.where(total > 0, jnp.sum(per_example) / safe_total, 0.0)


# --------------------------------------------------------------- coefficient builders


def _positive_counts(counts, name: str = "counts") -> np.ndarray:
  """Validate host-side class counts: 1-D, non-empty, finite and strictly positive."""
  arr = np.asarray(counts, dtype=np.float64)
  if arr.ndim != 1 or arr.size == 0:
    raise ValueError(f"{name} must be a non-empty 1-D array of per-class counts, "
                     f"got shape {arr.shape}")
  if not np.all(np.isfinite(arr)):
    raise ValueError(f"{name} must be finite, got {arr.tolist()}")
  if np.any(arr <= 0):
    bad = np.flatnonzero(arr <= 0).tolist()
    raise ValueError(f"{name} must be > 0 for every class (a class absent from training "
                     f"has no defined weight), got {arr.tolist()} (classes {bad})")
  return arr


def _normalise_to_num_classes(w: np.ndarray) -> np.ndarray:
  return w * (w.size / w.sum())


def inverse_frequency_weights(counts: ArrayLike, normalize: bool = True) -> np.ndarray:
  """Class weights ``w_c ∝ 1 / n_c`` (inverse class frequency).

  The normalisation ``sum_c w_c = C`` follows the class-balanced-loss code of Cui et al.
  (2019) and the LDAM-DRW code of Cao et al. (2019), so balanced counts give all ones.

  Args:
    counts: [C] training examples per class, all > 0 (host values).
    normalize: if True scale so the weights sum to C; if False return ``1 / n_c``.

  Returns:
    [C] float32 NumPy weights.

  Raises:
    ValueError: if ``counts`` is not a non-empty 1-D array of finite positive values
      (a zero-count class has no inverse frequency).
  """
  w = 1.0 / _positive_counts(counts)
  if normalize:
    w = _normalise_to_num_classes(w)
  return w.astype(np.float32)


def _check_beta(beta) -> float:
  b = float(beta)
  if not (0.0 <= b < 1.0):
    raise ValueError(f"beta must lie in [0, 1), got {beta!r}")
  return b


def effective_number_weights(counts: ArrayLike, beta: float) -> np.ndarray:
  """Class-balanced weights from the effective number of samples (Cui et al., CVPR 2019).

  ``E_c = (1 - beta**n_c) / (1 - beta)`` and ``w_c ∝ 1 / E_c``, normalised so that
  ``sum_c w_c = C``. ``beta = 0`` gives uniform weights; ``beta -> 1`` approaches
  inverse frequency. Computed in float64 so that ``beta = 0.9999`` stays accurate.

  Args:
    counts: [C] training examples per class, all > 0 (host values).
    beta: hyperparameter in ``[0, 1)``; Cui et al. use 0.9, 0.99, 0.999, 0.9999.

  Returns:
    [C] float32 NumPy weights summing to C.

  Raises:
    ValueError: if ``beta`` is outside ``[0, 1)`` or ``counts`` is invalid.
  """
  b = _check_beta(beta)
  n = _positive_counts(counts)
  # -expm1(n log beta) = 1 - beta**n, accurate for beta near 1; beta == 0 -> 1.
  effective = -np.expm1(n * np.log(b)) if b > 0 else np.ones_like(n)
  w = (1.0 - b) / effective
  return _normalise_to_num_classes(w).astype(np.float32)


def ldam_margins(counts: ArrayLike, max_margin: float = 0.5) -> np.ndarray:
  """Label-distribution-aware margins (Cao et al., NeurIPS 2019): ``m_c ∝ n_c ** -1/4``.

  Scaled so the largest margin (the rarest class) equals ``max_margin``, as in the
  authors' code. The original LDAM applies the margins to cosine logits of
  L2-normalised features times ``s = 30``; :func:`imbalance_loss` applies them to raw
  logits and ``logit_scale`` multiplies raw logits (a documented simplification), so
  pair these margins with a ``logit_scale`` chosen by the method registry.

  Args:
    counts: [C] training examples per class, all > 0 (host values).
    max_margin: the largest margin, >= 0 (Cao et al. use 0.5).

  Returns:
    [C] float32 NumPy margins.

  Raises:
    ValueError: if ``max_margin`` is negative or not finite, or ``counts`` is invalid.
  """
  mm = float(max_margin)
  if not np.isfinite(mm) or mm < 0:
    raise ValueError(f"max_margin must be finite and >= 0, got {max_margin!r}")
  m = _positive_counts(counts) ** -0.25
  return (m * (mm / m.max())).astype(np.float32)


def drw_weights(counts: ArrayLike, step: ArrayLike, drw_start: ArrayLike,
                beta: float = 0.9999) -> Array:
  """Deferred re-weighting (DRW) of Cao et al. (NeurIPS 2019).

  Uniform weights (plain ERM) while ``step < drw_start``, then the class-balanced
  :func:`effective_number_weights` with ``beta``. Cao et al. switch at epoch 160 of 200
  on CIFAR; the unit of ``step`` (epoch or iteration) is the caller's.

  Args:
    counts: [C] training examples per class, all > 0 (host values).
    step: current step; may be traced (inside ``lax.scan``).
    drw_start: first step with re-weighting; may be traced (a per-model value).
    beta: effective-number hyperparameter in ``[0, 1)`` (host value).

  Returns:
    [C] float32 weights as a JAX array.

  Raises:
    ValueError: if ``beta`` or ``counts`` is invalid, or ``step``/``drw_start`` is not
      a scalar.
  """
  for name, value in (("step", step), ("drw_start", drw_start)):
    if np.ndim(value) != 0:
      raise ValueError(f"{name} must be a scalar, got shape {np.shape(value)}")
  late = jnp.asarray(effective_number_weights(counts, beta))
  return jnp.where(jnp.asarray(step) >= jnp.asarray(drw_start), late,
                   jnp.ones_like(late))


def _positive_prior(prior, name: str = "prior") -> None:
  """Check a concrete prior: 1-D, finite, > 0. Traced priors are checked by rank only."""
  if np.ndim(prior) != 1:
    raise ValueError(f"{name} must be a 1-D array over classes, "
                     f"got shape {np.shape(prior)}")
  if _is_concrete(prior):
    _positive_counts(prior, name)


def logit_adjustment_offsets(prior: ArrayLike, tau: ArrayLike = 1.0) -> Array:
  """Logit-adjusted loss offsets (Menon et al., ICLR 2021): ``tau * log(prior_c)``.

  The offsets are *added* to the logits during training (``logit_offset`` of
  :func:`imbalance_loss`), so a rare class must win by a larger raw margin; at test
  time the raw logits are used. ``prior`` need not sum to 1: a constant shift of all
  offsets leaves the softmax unchanged.

  Args:
    prior: [C] class priors (or counts), all > 0.
    tau: scalar temperature (Menon et al. use 1); 0 gives plain cross-entropy. May be
      traced.

  Returns:
    [C] float32 offsets as a JAX array.

  Raises:
    ValueError: if a concrete ``prior`` is not 1-D, finite and positive, or ``tau`` is
      not a scalar.
  """
  _positive_prior(prior)
  if np.ndim(tau) != 0:
    raise ValueError(f"tau must be a scalar, got shape {np.shape(tau)}")
  return jnp.asarray(tau, jnp.float32) * jnp.log(jnp.asarray(prior, jnp.float32))


def balanced_softmax_offsets(counts: ArrayLike) -> np.ndarray:
  """Balanced Softmax offsets (Ren et al., NeurIPS 2020): ``log(n_c)``, added to logits.

  Equal to :func:`logit_adjustment_offsets` with ``tau = 1`` on the empirical prior
  ``n_c / sum(n)`` up to the constant ``log(sum(n))``, which the softmax ignores.

  Args:
    counts: [C] training examples per class, all > 0 (host values).

  Returns:
    [C] float32 NumPy offsets.

  Raises:
    ValueError: if ``counts`` is not a non-empty 1-D array of finite positive values.
  """
  return np.log(_positive_counts(counts)).astype(np.float32)


# ------------------------------------------------------------------ post-hoc methods


def posthoc_logit_adjust(logits: ArrayLike, prior: ArrayLike, tau: ArrayLike) -> Array:
  """Post-hoc logit adjustment (Menon et al., ICLR 2021): ``logits - tau * log(prior)``.

  Applied at evaluation to a model trained with plain cross-entropy; ``argmax`` of the
  result estimates the balanced-error-optimal class. A 1-D ``tau`` sweeps all values
  at once (``vmap``), which is how :func:`select_tau` scores a grid. Jittable.

  Args:
    logits: [..., C] trained logits (typically [N, C]).
    prior: [C] class priors (or counts), all > 0.
    tau: scalar, or [K] values to sweep; 0 is the identity.

  Returns:
    ``logits.shape`` for a scalar ``tau``; ``[K, *logits.shape]`` for a [K] ``tau``.

  Raises:
    ValueError: if ``prior`` does not match the class axis, a concrete ``prior`` is not
      positive, or ``tau`` has more than one dimension.
  """
  _positive_prior(prior)
  if np.ndim(logits) < 1 or np.shape(logits)[-1] != np.shape(prior)[0]:
    raise ValueError(f"logits' last axis must match prior of shape {np.shape(prior)}, "
                     f"got logits of shape {np.shape(logits)}")
  if np.ndim(tau) > 1:
    raise ValueError(f"tau must be a scalar or a 1-D sweep, got shape {np.shape(tau)}")
  dtype = jnp.promote_types(jnp.result_type(logits), jnp.float32)
  logits = jnp.asarray(logits, dtype)
  log_prior = jnp.log(jnp.asarray(prior, dtype))

  def adjust(t):
    return logits - t * log_prior

  tau = jnp.asarray(tau, dtype)
  return adjust(tau) if tau.ndim == 0 else jax.vmap(adjust)(tau)


def _accuracy(pred: Array, labels: Array) -> Array:
  return jnp.mean((pred == labels).astype(jnp.float32))


def _balanced_accuracy(pred: Array, labels: Array, num_classes: int) -> Array:
  # Mean recall over the classes present in `labels`, as scikit-learn's
  # balanced_accuracy_score (absent classes are dropped, not scored 0).
  true_oh = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  support = jnp.sum(true_oh, axis=0)
  hits = jnp.sum(true_oh * (pred == labels)[:, None], axis=0)
  present = support > 0
  recall = jnp.where(present, hits / jnp.where(present, support, 1.0), 0.0)
  return jnp.sum(recall) / jnp.maximum(jnp.sum(present), 1)


def select_tau(val_logits: ArrayLike, val_labels: ArrayLike, prior: ArrayLike,
               taus: ArrayLike, metric: str = "accuracy") -> Array:
  """The post-hoc adjustment strength that scores best on a validation split.

  Every tau in ``taus`` is applied with :func:`posthoc_logit_adjust` and scored by
  ``metric`` in one vectorised pass; ties go to the earliest tau in ``taus``. Jittable
  with ``metric`` static.

  Args:
    val_logits: [N, C] validation logits of a trained model.
    val_labels: [N] integer validation labels in ``[0, C)``.
    prior: [C] training class priors (or counts), all > 0.
    taus: [K] candidate values (e.g. ``jnp.linspace(0, 2, 21)``).
    metric: ``'accuracy'`` or ``'balanced_accuracy'`` (mean per-class recall over the
      classes present in ``val_labels``).

  Returns:
    The selected tau, a scalar JAX array.

  Raises:
    ValueError: for an unknown ``metric``, empty or non-1-D ``taus``, or shapes that
      do not match.
  """
  if metric not in SELECT_TAU_METRICS:
    raise ValueError(f"unknown metric {metric!r}; accepted: {list(SELECT_TAU_METRICS)}")
  if np.ndim(taus) != 1 or np.shape(taus)[0] == 0:
    raise ValueError(f"taus must be a non-empty 1-D array, got shape {np.shape(taus)}")
  if np.ndim(val_logits) != 2:
    raise ValueError(f"val_logits must have shape [N, C], "
                     f"got shape {np.shape(val_logits)}")
  n, c = np.shape(val_logits)
  if np.shape(val_labels) != (n,):
    raise ValueError(f"val_labels must have shape ({n},), "
                     f"got shape {np.shape(val_labels)}")
  taus = jnp.asarray(taus, jnp.promote_types(jnp.result_type(taus), jnp.float32))
  preds = jnp.argmax(posthoc_logit_adjust(val_logits, prior, taus), axis=-1)  # [K, N]
  labels = jnp.asarray(val_labels)
  if metric == "accuracy":
    scores = jax.vmap(_accuracy, in_axes=(0, None))(preds, labels)
  else:
    scores = jax.vmap(_balanced_accuracy, in_axes=(0, None, None))(preds, labels, c)
  return taus[jnp.argmax(scores)]


def tau_normalize(kernel: ArrayLike, tau: ArrayLike, axis: int = -1) -> Array:
  """Tau-normalisation of classifier weights (Kang et al., ICLR 2020).

  Each class's weight vector ``w_c`` becomes ``w_c / ||w_c|| ** tau``: tau = 0 is the
  identity, tau = 1 gives unit-norm class vectors. Norms are taken over every axis
  except ``axis``. The bias is not touched (Kang et al. use a bias-free classifier;
  pass the kernel only). A class vector of norm 0 is returned unchanged (still 0).

  Args:
    kernel: classifier weights. A Flax ``nn.Dense`` kernel has shape ``[features, C]``,
      so the class axis is the last one (the default); a PyTorch-style ``[C, features]``
      matrix needs ``axis=0``.
    tau: scalar exponent, typically in ``[0, 1]``; may be traced.
    axis: the class axis of ``kernel``.

  Returns:
    The normalised kernel, same shape, at least float32.

  Raises:
    ValueError: if ``kernel`` is a scalar, ``axis`` is out of range or ``tau`` is not
      a scalar.
  """
  ndim = np.ndim(kernel)
  if ndim == 0:
    raise ValueError("kernel must have at least one axis, got a scalar")
  if not -ndim <= axis < ndim:
    raise ValueError(f"axis {axis} is out of range for a kernel of shape "
                     f"{np.shape(kernel)}")
  if np.ndim(tau) != 0:
    raise ValueError(f"tau must be a scalar, got shape {np.shape(tau)}")
  dtype = jnp.promote_types(jnp.result_type(kernel), jnp.float32)
  return _tau_normalize_core(jnp.asarray(kernel, dtype), jnp.asarray(tau, dtype),
                             axis % ndim)


@functools.partial(jax.jit, static_argnums=2)
def _tau_normalize_core(kernel: Array, tau: Array, axis: int) -> Array:
  reduce_axes = tuple(a for a in range(kernel.ndim) if a != axis)
  sq_norm = jnp.sum(kernel * kernel, axis=reduce_axes, keepdims=True)
  # A zero class vector is left as is; guarding before the sqrt keeps the gradient
  # finite too (d sqrt(x)/dx is infinite at 0).
  safe_norm = jnp.sqrt(jnp.where(sq_norm > 0, sq_norm, 1.0))
  return kernel / jnp.power(safe_norm, tau)
