"""Scoring one model's test logits as a row's metrics."""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np

from imbjax import losses
from imbjax import metrics
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
    posthoc: 'none', 'prior' (thresholding: the decision is argmax of p / prior),
      'logit_adjust' (logits - tau log prior, tau chosen on `val`, default 1),
      'tau_norm' (`logits` is then a dict tau -> (test_logits, val_logits) of the
      tau-normalised classifier; tau chosen on `val` by accuracy, default 1).
    val: optional (val_logits, val_labels) for choosing tau; for 'tau_norm' only the
      validation labels are used.

  Returns:
    The row's metric fields. A model whose outputs are not finite (its weights overflowed
    without a non-finite loss, or it diverged before its first step) gets NaN metrics
    and ``extra['non_finite_outputs'] = True``; the caller marks it diverged.
  """
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
  if posthoc == "tau_norm":
    taus = sorted(logits)
    tau = 1.0
    if val is not None and all(logits[t][1] is not None for t in taus):
      accs = [float(metrics.accuracy(logits[t][1], jnp.asarray(val[1]))) for t in taus]
      tau = taus[int(np.argmax(accs))]
    logits = logits[tau][0]
    extra["tau"] = float(tau)
  elif posthoc == "logit_adjust":
    tau = 1.0
    if val is not None:
      taus = np.linspace(0.0, 2.0, 9)
      tau = float(losses.select_tau(val[0], val[1], prior, taus))
    logits = losses.posthoc_logit_adjust(logits, prior, tau)
    extra["tau"] = tau
  probs = _softmax(logits)
  thresholded = thresholding.apply_prior(probs, prior)
  decision = thresholded if posthoc == "prior" else probs
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


