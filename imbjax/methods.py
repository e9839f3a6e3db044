"""Methods for imbalance as data: the paper's seven (plus baseline) and the modern ones.

This module owns the registry of methods by name and turns a method into the per-model
arrays of a `engine.Member`. Nothing downstream branches on a method's name: a
method is a `Method` record whose fields say how its training plan is built, which loss
coefficients it trains with, whether it is a second phase starting from another
method's trained model, or whether it is only a different *evaluation* of another
method's model (the paper's thresholding costs no training).

Paper (Buda et al. 2018, Section 3.2), with the names the results store uses:

=============================  ====================================================
baseline                       train on the imbalanced subset
oversampling                   random minority oversampling (to `ratio`, 1 = balanced)
undersampling                  random majority undersampling (to `ratio`)
two_phase_oversampling         oversampling model, then output layers fine-tuned on
                               the imbalanced subset at 0.1x the base rate
two_phase_undersampling        same from the undersampling model
thresholding                   baseline outputs divided by the class prior
oversampling_thresholding      oversampling outputs divided by the prior
undersampling_thresholding     undersampling outputs divided by the prior
=============================  ====================================================

Beyond the paper (see `MODERN`): class-weighted cross-entropy (inverse frequency and
Cui et al.'s effective number), focal loss, LDAM-DRW, logit-adjusted loss, Balanced
Softmax, class-balanced / square-root / progressively balanced sampling, post-hoc logit
adjustment and tau-normalisation (tau chosen on a validation split), and classifier
re-training (cRT).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import jax
import numpy as np

from imbjax import losses
from imbjax import engine
from imbjax import sampling


@dataclasses.dataclass(frozen=True)
class Method:
  """A method of addressing imbalance, as data.

  Attributes:
    name: registry name (also the `method` column of the results store).
    sampling: how the phase-1 training stream is drawn: 'none' (the imbalanced subset,
      epoch by epoch), 'oversample', 'undersample' (index plans, Section 3.2),
      'class_balanced', 'sqrt', 'progressive' (class-wise draws per batch).
    loss: 'ce', 'inverse_frequency', 'effective_number', 'focal', 'ldam_drw',
      'logit_adjusted', 'balanced_softmax'.
    params: method parameters as (name, value) pairs (beta, gamma, tau, max_margin, ...).
    starts_from: for a second phase: the method whose trained model it continues.
    phase2_sampling: the phase-2 stream: 'none' (the imbalanced subset, as in the paper's
      two-phase training) or 'class_balanced' (cRT).
    phase2_lr_scale: base-rate factor of phase 2 (paper: 0.1).
    evaluates: for evaluation-only methods: the trained method whose model is scored.
    posthoc: evaluation-time correction: 'none', 'prior' (the paper's thresholding),
      'logit_adjust' or 'tau_norm' (tau chosen on a validation split).
  """
  name: str
  sampling: str = "none"
  loss: str = "ce"
  params: tuple = ()
  starts_from: str | None = None
  phase2_sampling: str = "none"
  phase2_lr_scale: float = 0.1
  evaluates: str | None = None
  posthoc: str = "none"

  @property
  def trains(self) -> bool:
    return self.evaluates is None

  @property
  def is_phase2(self) -> bool:
    return self.starts_from is not None

  @property
  def resamples(self) -> bool:
    """True where the paper's partial-resampling ratio applies."""
    return self.sampling in ("oversample", "undersample")

  def param(self, name, default=None):
    return dict(self.params).get(name, default)


PAPER = (
    Method("baseline"),
    Method("oversampling", sampling="oversample"),
    Method("undersampling", sampling="undersample"),
    Method("two_phase_oversampling", starts_from="oversampling"),
    Method("two_phase_undersampling", starts_from="undersampling"),
    Method("thresholding", evaluates="baseline", posthoc="prior"),
    Method("oversampling_thresholding", evaluates="oversampling", posthoc="prior"),
    Method("undersampling_thresholding", evaluates="undersampling", posthoc="prior"),
)

MODERN = (
    Method("weighted_ce", loss="inverse_frequency"),
    Method("effective_number", loss="effective_number", params=(("beta", 0.999),)),
    Method("focal", loss="focal", params=(("gamma", 1.0),)),
    # Cao et al. 2019: margins C/n^(1/4) with max 0.5; deferred re-weighting with
    # effective-number weights (beta 0.9999) over the last 20% of training.
    Method("ldam_drw", loss="ldam_drw",
           params=(("max_margin", 0.5), ("scale", 1.0), ("beta", 0.9999),
                   ("drw_fraction", 0.8))),
    Method("logit_adjusted", loss="logit_adjusted", params=(("tau", 1.0),)),
    Method("balanced_softmax", loss="balanced_softmax"),
    Method("class_balanced_sampling", sampling="class_balanced"),
    Method("sqrt_sampling", sampling="sqrt"),
    Method("progressive_sampling", sampling="progressive"),
    Method("posthoc_logit_adjustment", evaluates="baseline", posthoc="logit_adjust"),
    Method("tau_norm", evaluates="baseline", posthoc="tau_norm"),
    # Kang et al. 2020 classifier re-training: output layers retrained with class-balanced
    # sampling from the instance-balanced model, at the base rate.
    Method("crt", starts_from="baseline", phase2_sampling="class_balanced",
           phase2_lr_scale=1.0),
)

REGISTRY: Mapping[str, Method] = {m.name: m for m in PAPER + MODERN}


def names() -> tuple[str, ...]:
  return tuple(REGISTRY)


def get(name: str) -> Method:
  """The method registered under `name`.

  Raises:
    ValueError: unknown name (the message lists the known ones).
  """
  if name not in REGISTRY:
    raise ValueError(f"unknown method {name!r}; known methods: {', '.join(REGISTRY)}")
  return REGISTRY[name]


def closure(method_names) -> tuple[Method, ...]:
  """The methods to *train* for `method_names`: each named method plus what it needs.

  Thresholding needs the baseline model, two-phase oversampling needs the oversampling
  model, etc. Returns phase-1 trained methods first, then phase-2 ones, each once.
  """
  needed = {}

  def add(name):
    m = get(name)
    if name in needed:
      return
    if m.evaluates:
      add(m.evaluates)
      return
    if m.starts_from:
      add(m.starts_from)
    needed[name] = m

  for n in method_names:
    add(n)
  ms = list(needed.values())
  return tuple([m for m in ms if not m.is_phase2] + [m for m in ms if m.is_phase2])


def _sorted_by_class(indices: np.ndarray, labels: np.ndarray) -> np.ndarray:
  order = np.lexsort((indices, labels[indices]))
  return indices[order]


def training_plan(method: Method, subset: np.ndarray, labels: np.ndarray, key, *,
                  ratio: float = 1.0, phase: int = 1) -> np.ndarray:
  """Indices into the training set that a method's phase trains on.

  Args:
    method: the method.
    subset: indices of the imbalanced subset in the training set.
    labels: labels of the whole training set.
    key: PRNG key for the resampling draw.
    ratio: partial resampling level (Section 4.5); 1 = fully balanced.
    phase: 1 for the method's own training, 2 for its second phase.

  Returns:
    A 1-D int array of training-set indices, sorted by class (the on-device sampler
    reshuffles every epoch).
  """
  subset = _sorted_by_class(np.asarray(subset), labels)
  kind = method.phase2_sampling if phase == 2 else method.sampling
  if kind == "oversample":
    return _sorted_by_class(subset[sampling.oversample(labels[subset], key, ratio=ratio)],
                            labels)
  if kind == "undersample":
    return _sorted_by_class(subset[sampling.undersample(labels[subset], key, ratio=ratio)],
                            labels)
  return subset


def _probs(kind: str, counts: np.ndarray):
  """(start, end) class-wise sampling probabilities for a class-wise kind, else None."""
  if kind == "class_balanced":
    p = sampling.class_sampling_probs(counts, "class_balanced")
    return p, p
  if kind == "sqrt":
    p = sampling.class_sampling_probs(counts, "sqrt")
    return p, p
  if kind == "progressive":
    return (sampling.class_sampling_probs(counts, "instance"),
            sampling.class_sampling_probs(counts, "class_balanced"))
  return None


def _loss_coefficients(method: Method, counts: np.ndarray, total_steps: int) -> dict:
  counts = np.asarray(counts, np.float64)
  prior = counts / counts.sum()
  if method.loss == "ce":
    return {}
  if method.loss == "inverse_frequency":
    return {"class_weights": losses.inverse_frequency_weights(counts)}
  if method.loss == "effective_number":
    return {"class_weights": losses.effective_number_weights(counts, method.param("beta"))}
  if method.loss == "focal":
    return {"focal_gamma": method.param("gamma")}
  if method.loss == "ldam_drw":
    return {"margin": losses.ldam_margins(counts, method.param("max_margin")),
            "logit_scale": method.param("scale"),
            "class_weights": losses.effective_number_weights(counts, method.param("beta")),
            "reweight_start": int(method.param("drw_fraction") * total_steps)}
  if method.loss == "logit_adjusted":
    return {"logit_offset": losses.logit_adjustment_offsets(prior, method.param("tau"))}
  if method.loss == "balanced_softmax":
    return {"logit_offset": losses.balanced_softmax_offsets(counts)}
  raise ValueError(f"method {method.name!r} has unknown loss {method.loss!r}")


def make_member(method: Method, *, subset: np.ndarray, labels: np.ndarray,
                num_classes: int, key: jax.Array, base_lr: float, ratio: float = 1.0,
                total_steps: int, phase: int = 1,
                weight_decay: float | None = None) -> engine.Member:
  """The `engine.Member` that trains `method` (phase 1, or its phase 2).

  Args:
    method: a training method (not evaluation-only).
    subset: indices of the imbalanced training subset (before any resampling).
    labels: labels of the whole training set.
    num_classes: C.
    key: the model's key (init, shuffling, dropout; the resampling draw uses a key
      folded from it).
    base_lr: the phase-1 base learning rate (phase 2 multiplies it by
      `method.phase2_lr_scale`).
    ratio: partial resampling level for over/undersampling.
    total_steps: iterations of one phase.
    phase: 1 or 2.
    weight_decay: the model's L2 coefficient (both phases); None: the trainer's.
  """
  if not method.trains:
    raise ValueError(f"{method.name!r} evaluates {method.evaluates!r}; it is not trained")
  labels = np.asarray(labels)
  subset = np.asarray(subset)
  counts = np.bincount(labels[subset], minlength=num_classes)
  plan_key = jax.random.fold_in(key, 3)
  if phase == 2:
    plan = training_plan(method, subset, labels, plan_key, phase=2)
    probs = _probs(method.phase2_sampling, counts)
    coeffs = {}
    lr = base_lr * method.phase2_lr_scale
  else:
    plan = training_plan(method, subset, labels, plan_key, ratio=ratio)
    probs = _probs(method.sampling, counts)
    coeffs = _loss_coefficients(method, counts, total_steps)
    lr = base_lr
  kwargs = dict(coeffs)
  if probs is not None:
    kwargs.update(classwise=True, probs_start=probs[0], probs_end=probs[1])
  return engine.make_member(
      key, plan, num_classes, base_lr=lr, plan_labels=labels[plan],
      output_only=(phase == 2), weight_decay=weight_decay, **kwargs)
