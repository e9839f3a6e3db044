"""Tests for imbjax.metrics against scikit-learn and plain NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import metrics as skm

from imbjax import metrics


def _softmax_case(n, c, seed, decimals=None):
  rng = np.random.default_rng(seed)
  y = np.concatenate([np.arange(c), rng.integers(0, c, n - c)])  # every class present
  logits = rng.normal(size=(n, c)) + 1.5 * np.eye(c)[y]
  p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  if decimals is not None:  # many ties; keep rows summing to 1 for sklearn
    p = np.round(p, decimals) + 1e-3
    p = p / p.sum(1, keepdims=True)
  return p.astype(np.float32), y


def _sk_auc(p, y):
  return skm.roc_auc_score(y, p.astype(np.float64), multi_class="ovr", average="macro")


# --- ROC AUC --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, c, seed, decimals",
    # Few distinct shapes (each compiles once): random, heavily tied, one example per class.
    [(400, 5, 0, None), (400, 5, 1, 1), (400, 5, 2, 0), (10, 10, 3, None)],
)
def test_auc_matches_sklearn(n, c, seed, decimals):
  p, y = _softmax_case(n, c, seed, decimals)
  want = _sk_auc(p, y)
  assert abs(float(metrics.multiclass_roc_auc(p, y)) - want) < 1e-6
  assert abs(float(jax.jit(metrics.multiclass_roc_auc)(p, y)) - want) < 1e-6
  per = [skm.roc_auc_score(y == k, p[:, k].astype(np.float64)) for k in range(c)]
  np.testing.assert_allclose(metrics.per_class_roc_auc(p, y), per, atol=1e-6)


def test_auc_degenerate_cases():
  y = np.array([0, 0, 1, 1, 2, 2])
  const = np.full((6, 3), 1 / 3, np.float32)  # all tied: 0.5
  assert float(metrics.multiclass_roc_auc(const, y)) == pytest.approx(_sk_auc(const, y), abs=1e-6)
  assert float(metrics.multiclass_roc_auc(const, y)) == 0.5
  perfect = np.eye(3, dtype=np.float32)[y]
  assert float(metrics.multiclass_roc_auc(perfect, y)) == 1.0
  reverse = (1.0 - perfect) / 2
  assert float(metrics.multiclass_roc_auc(reverse, y)) == 0.0 == _sk_auc(reverse, y)
  # A class with one example; infinite logits are ordered like any other value.
  y1 = np.array([0, 1, 1, 1, 2])
  s = np.array([[np.inf, 0, 0], [1, 2, 0], [-np.inf, 1, 3], [0, 5, 1], [0, 0, 9]], np.float32)
  finite = np.clip(s, -1e30, 1e30)  # sklearn refuses inf; clipping keeps the order
  per = [skm.roc_auc_score(y1 == k, finite[:, k]) for k in range(3)]
  np.testing.assert_allclose(metrics.per_class_roc_auc(s, y1), per, atol=1e-6)


def test_auc_vmapped_over_models():
  p0, y = _softmax_case(400, 5, 5)
  models = np.stack([_softmax_case(400, 5, s)[0] for s in (6, 7, 8)] + [p0])
  f = jax.jit(jax.vmap(metrics.multiclass_roc_auc, in_axes=(0, None)))
  got = np.asarray(f(models, y))
  want = [_sk_auc(m, y) for m in models]
  np.testing.assert_allclose(got, want, atol=1e-6)


def test_auc_float_branch_for_large_sets():
  # Sets above _EXACT_AUC_MAX_N examples sum in float32; check that branch on a small set.
  p, y = _softmax_case(400, 5, 9, decimals=2)
  inexact = jax.jit(jax.vmap(lambda s, pos: metrics._auc_one_vs_rest(s, pos, exact=False)))
  got = inexact(jnp.asarray(p).T, jnp.asarray(y)[None, :] == jnp.arange(5)[:, None])
  per = [skm.roc_auc_score(y == k, p[:, k].astype(np.float64)) for k in range(5)]
  np.testing.assert_allclose(got, per, atol=1e-6)


def test_auc_refusals_and_traced_nan():
  p, y = _softmax_case(50, 3, 0)
  bad = p.copy()
  bad[3, 1] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    metrics.multiclass_roc_auc(bad, y)
  with pytest.raises(ValueError, match=r"\[0, 3\), got label 3"):
    metrics.multiclass_roc_auc(p, np.where(y == 0, 3, y))
  missing = np.where(y == 2, 1, y)
  with pytest.raises(ValueError, match="class 2 has 0 of 50"):
    metrics.multiclass_roc_auc(p, missing)
  with pytest.raises(ValueError, match="49 entries"):
    metrics.multiclass_roc_auc(p, y[:49])
  with pytest.raises(ValueError, match="2-D"):
    metrics.multiclass_roc_auc(p[0], y[:1])
  # Under jit no check can raise: a class without positives gives NaN.
  assert np.isnan(float(jax.jit(metrics.multiclass_roc_auc)(p, missing)))


# --- accuracy, recall, confusion ------------------------------------------------------


def test_accuracy_family_matches_sklearn():
  p, y = _softmax_case(300, 6, 11)
  pred = p.argmax(1)
  assert float(metrics.accuracy(p, y)) == pytest.approx(skm.accuracy_score(y, pred), abs=1e-7)
  assert float(metrics.accuracy(pred, y)) == pytest.approx(skm.accuracy_score(y, pred))
  np.testing.assert_array_equal(metrics.confusion_matrix(y, pred, 6),
                                skm.confusion_matrix(y, pred, labels=range(6)))
  np.testing.assert_allclose(metrics.per_class_recall(pred, y, 6),
                             skm.recall_score(y, pred, average=None), atol=1e-7)
  assert float(metrics.balanced_accuracy(p, y)) == pytest.approx(
      skm.balanced_accuracy_score(y, pred), abs=1e-7)


def test_recall_with_absent_class_and_vmap():
  y = np.array([0, 0, 1, 1, 1, 3])  # class 2 absent from the test labels
  pred = np.array([0, 1, 1, 1, 2, 3])
  r = np.asarray(metrics.per_class_recall(pred, y, 4))
  np.testing.assert_allclose(r[[0, 1, 3]], [0.5, 2 / 3, 1.0])
  assert np.isnan(r[2])
  with pytest.warns(UserWarning):  # sklearn warns about the predicted-only class
    want = skm.balanced_accuracy_score(y, pred)
  assert float(metrics.balanced_accuracy(pred, y, 4)) == pytest.approx(want)
  preds = jnp.stack([pred, y, np.zeros(6, int)])
  f = jax.jit(jax.vmap(metrics.confusion_matrix, in_axes=(None, 0, None)), static_argnums=2)
  got = np.asarray(f(y, preds, 4))
  for i in range(3):
    np.testing.assert_array_equal(got[i], skm.confusion_matrix(y, preds[i], labels=range(4)))


def test_accuracy_family_refusals():
  y = np.array([0, 1, 2])
  with pytest.raises(ValueError, match="num_classes is required"):
    metrics.per_class_recall(np.array([0, 1, 2]), y)
  with pytest.raises(ValueError, match=r"\[0, 3\), got 5"):
    metrics.confusion_matrix(y, np.array([0, 1, 5]), 3)
  with pytest.raises(ValueError, match=r"\[0, 2\), got label 2"):
    metrics.confusion_matrix(y, np.array([0, 1, 1]), 2)
  with pytest.raises(ValueError, match="NaN"):
    metrics.accuracy(np.array([[0.5, np.nan]] * 3), y)


# --- calibration ----------------------------------------------------------------------


def _ece_reference(p, y, m):
  """Plain top-label ECE: loop over bins (lo, hi], confidence 0 in the first bin."""
  p = np.asarray(p, np.float64)
  conf, pred = p.max(1), p.argmax(1)
  correct = (pred == y).astype(np.float64)
  edges = np.linspace(0.0, 1.0, m + 1)
  ece = 0.0
  for b in range(m):
    in_bin = (conf > edges[b]) & (conf <= edges[b + 1])
    if b == 0:
      in_bin |= conf == 0.0
    if in_bin.any():
      ece += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
  return ece


@pytest.mark.parametrize("m", [1, 4, 15])
def test_ece_matches_reference(m):
  p, y = _softmax_case(500, 5, 12)
  assert float(metrics.expected_calibration_error(p, y, m)) == pytest.approx(
      _ece_reference(p, y, m), abs=1e-6)


def test_ece_bin_edges_and_hand_value():
  # Confidences exactly on edges (0.5, 0.75, 1.0 are exact in float32) go to the lower bin.
  p = np.array([[0.5, 0.5], [0.25, 0.75], [1.0, 0.0], [0.4, 0.6]], np.float32)
  y = np.array([0, 0, 0, 1])
  # Bins of width 1/4: 0.5 -> (0.25, 0.5]; 0.75 and 0.6 -> (0.5, 0.75]; 1.0 -> (0.75, 1].
  # |1 - 0.5| * 1/4 + |0.5 - 0.675| * 2/4 + |1 - 1| * 1/4 = 0.2125
  assert float(metrics.expected_calibration_error(p, y, 4)) == pytest.approx(0.2125)
  assert _ece_reference(p, y, 4) == pytest.approx(0.2125)
  with pytest.raises(ValueError, match="num_bins"):
    metrics.expected_calibration_error(p, y, 0)


# --- many / medium / few shot ---------------------------------------------------------


def test_shot_accuracy_hand_computed():
  train = np.array([500, 101, 100, 20, 19, 3])  # many: 0, 1; medium: 2, 3; few: 4, 5
  y = np.array([0, 0, 1, 2, 2, 2, 3, 4, 4, 5])
  pred = np.array([0, 1, 1, 2, 0, 0, 3, 4, 0, 0])
  out = jax.jit(metrics.shot_accuracy)(pred, y, train)
  assert float(out["many"]) == pytest.approx((0.5 + 1.0) / 2)
  assert float(out["medium"]) == pytest.approx((1 / 3 + 1.0) / 2)
  assert float(out["few"]) == pytest.approx((0.5 + 0.0) / 2)
  # Small-dataset thresholds; an empty group is NaN.
  out = metrics.shot_accuracy(pred, y, train, many=1000, few=1)
  assert np.isnan(float(out["many"])) and np.isnan(float(out["few"]))
  assert float(out["medium"]) == pytest.approx(np.nanmean(
      np.asarray(metrics.per_class_recall(pred, y, 6))))
  with pytest.raises(ValueError, match="few=50"):
    metrics.shot_accuracy(pred, y, train, many=10, few=50)
