"""Scoring one model's test logits as a row's metrics."""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np

from imbjax import metrics
from imbjax import posthoc as posthoc_lib
from imbjax import thresholding


# ----------------------------------------------------------------------------------------
# Scoring.


def _softmax(logits):
  return jax.nn.softmax(jnp.asarray(logits, jnp.float32), axis=-1)


def score(logits: np.ndarray, labels: np.ndarray, counts: np.ndarray,
          num_classes: int, *, posthoc: str = "none", val=None) -> dict:
  """Scores one model's test logits as a row's metrics.

  Args:
    logits: [N, C] test logits.
    labels: [N] test labels.
    counts: training class counts of the model's imbalanced subset (the prior is
      estimated on the imbalanced set before sampling, Section 2.2).
    num_classes: C.
    posthoc: a name in `imbjax.posthoc` ('none'; 'prior', the paper's thresholding;
      'logit_adjust'; 'tau_norm'). For a method that acts on the classifier
      (``on='classifier'``), `logits` is a dict tau -> (test_logits, val_logits) of the
      adjusted classifier; a tau is chosen on `val` (else the method's default).
    val: optional (val_logits, val_labels) for choosing tau; for 'tau_norm' only the
      validation labels are used.

  Returns:
    The row's metric fields. A model whose outputs are not finite (its weights overflowed
    without a non-finite loss, or it diverged before its first step) gets NaN metrics
    and ``extra['non_finite_outputs'] = True``; the caller marks it diverged.
  """
  entry = posthoc_lib.get(posthoc)
  prior = thresholding.class_prior(counts)
  extra = {}
  outputs = list(logits.values()) if isinstance(logits, dict) else [(logits, None)]
  if val is not None:
    outputs.append((val[0], None))
  if not all(np.all(np.isfinite(np.asarray(x))) for pair in outputs for x in pair
             if x is not None):
    nan = float("nan")
    return {"auc": nan, "accuracy": nan, "thresholded_accuracy": nan,
            "balanced_accuracy": nan, "per_class_recall": [nan] * num_classes,
            "extra": {"non_finite_outputs": True}}
  if entry.on == "classifier":  # logits: {tau: (test, val)} of the adjusted classifier
    tau = entry.default_tau
    if val is not None and all(logits[t][1] is not None for t in logits):
      tau = posthoc_lib.choose_tau(entry, {t: lv for t, (_, lv) in logits.items()},
                                   val[1], prior)
    logits = logits[tau][0]
    extra["tau"] = float(tau)
  elif entry.on == "logits":
    tau = entry.default_tau
    if val is not None:
      tau = posthoc_lib.choose_tau(entry, val[0], val[1], prior)
    logits = entry.fn(logits, prior, tau)
    extra["tau"] = float(tau)
  probs = _softmax(logits)
  thresholded = thresholding.apply_prior(probs, prior)
  decision = entry.fn(probs, prior) if entry.on == "probs" else probs
  preds = jnp.argmax(decision, -1)
  labels_j = jnp.asarray(labels)
  row = {
      "auc": float(metrics.multiclass_roc_auc(probs, labels_j)),
      "accuracy": float(metrics.accuracy(decision, labels_j)),
      "thresholded_accuracy": float(metrics.accuracy(thresholded, labels_j)),
      "balanced_accuracy": float(metrics.balanced_accuracy(preds, labels_j, num_classes)),
      "per_class_recall": [float(x) for x in metrics.per_class_recall(
          preds, labels_j, num_classes)],
  }
  extra["ece"] = float(metrics.expected_calibration_error(probs, labels_j))
  shots = metrics.shot_accuracy(preds, labels_j, jnp.asarray(counts))
  extra.update({k: float(v) for k, v in dict(shots).items()})
  row["extra"] = extra
  return row


