"""Tests for imbjax.thresholding: priors, prior correction, AUC invariance, accuracy shift."""

import jax
import numpy as np
import pytest
from sklearn import metrics as skm

from imbjax import imbalance, metrics, thresholding


def test_class_prior_from_counts_and_labels():
  counts = imbalance.step(4, 300, rho=3, mu=0.5, minority="lowest")  # 100, 100, 300, 300
  np.testing.assert_allclose(thresholding.class_prior(counts), [0.125, 0.125, 0.375, 0.375])
  labels = np.repeat(np.arange(4), counts)
  np.testing.assert_allclose(thresholding.class_prior(labels, num_classes=4),
                             thresholding.class_prior(counts))


def test_class_prior_refusals():
  with pytest.raises(ValueError, match="class 1 is empty"):
    thresholding.class_prior(np.array([3, 0, 2]))
  with pytest.raises(ValueError, match="class 2 is empty"):
    thresholding.class_prior(np.array([0, 1, 1, 0]), num_classes=3)
  with pytest.raises(ValueError, match=r"\[0, 2\), got label 2"):
    thresholding.class_prior(np.array([0, 1, 2]), num_classes=2)
  with pytest.raises(ValueError, match=">= 0"):
    thresholding.class_prior(np.array([3, -1]))
  with pytest.raises(ValueError, match="1-D"):
    thresholding.class_prior(np.ones((2, 2)))


def test_apply_prior_hand_computed_and_accuracy_moves():
  probs = np.array([[0.8, 0.2], [0.7, 0.3], [0.6, 0.4], [0.95, 0.05]], np.float32)
  labels = np.array([0, 1, 1, 0])
  prior = np.array([0.75, 0.25], np.float32)
  np.testing.assert_allclose(thresholding.apply_prior(probs, prior),
                             probs / prior, rtol=1e-6)
  # Before: everything is class 0 (accuracy 0.5). After dividing by the prior the two
  # class-1 examples win: 0.3/0.25 = 1.2 > 0.7/0.75, 0.4/0.25 = 1.6 > 0.6/0.75.
  assert float(metrics.accuracy(probs, labels)) == 0.5
  preds = thresholding.thresholded_predictions(probs, prior)
  assert preds.tolist() == [0, 1, 1, 0]
  assert float(metrics.accuracy(thresholding.apply_prior(probs, prior), labels)) == 1.0
  renorm = thresholding.apply_prior(probs, prior, renormalize=True)
  np.testing.assert_allclose(np.sum(renorm, 1), 1.0, rtol=1e-6)


def test_thresholding_leaves_auc_unchanged():
  rng = np.random.default_rng(0)
  c = 5
  y = np.concatenate([np.arange(c), rng.integers(0, c, 395)])
  logits = rng.normal(size=(400, c)) + np.eye(c)[y]
  p = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
  prior = thresholding.class_prior(np.array([1000, 500, 100, 20, 5]))
  q = np.asarray(thresholding.apply_prior(p, prior))
  assert float(metrics.multiclass_roc_auc(q, y)) == float(metrics.multiclass_roc_auc(p, y))
  for k in range(c):  # independently: sklearn's binary AUC of every column
    assert skm.roc_auc_score(y == k, q[:, k]) == pytest.approx(
        skm.roc_auc_score(y == k, p[:, k]), abs=1e-12)
  # ... while accuracy on this balanced-ish test set changes.
  assert float(metrics.accuracy(q, y)) != float(metrics.accuracy(p, y))


def test_log_prior_matches_and_jit_vmap():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(3, 20, 4)).astype(np.float32)  # 3 models
  priors = rng.dirichlet(np.ones(4), size=3).astype(np.float32)
  f = jax.jit(jax.vmap(thresholding.apply_prior, in_axes=(0, 0)))
  g = jax.jit(jax.vmap(thresholding.apply_log_prior, in_axes=(0, 0)))
  h = jax.jit(jax.vmap(thresholding.thresholded_predictions, in_axes=(0, 0)))
  probs = jax.nn.softmax(logits)
  got = np.asarray(f(probs, priors))
  np.testing.assert_allclose(got, np.asarray(probs) / priors[:, None, :], rtol=1e-6)
  np.testing.assert_allclose(jax.nn.softmax(g(logits, priors)),
                             got / got.sum(-1, keepdims=True), rtol=1e-5)
  np.testing.assert_array_equal(h(probs, priors), got.argmax(-1))


def test_apply_prior_refusals():
  p = np.full((2, 3), 1 / 3, np.float32)
  with pytest.raises(ValueError, match="3 classes|must match"):
    thresholding.apply_prior(p, np.array([0.5, 0.5]))
  with pytest.raises(ValueError, match="> 0"):
    thresholding.apply_prior(p, np.array([0.5, 0.5, 0.0]))
  bad = p.copy()
  bad[0, 0] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    thresholding.apply_prior(bad, np.array([0.2, 0.3, 0.5]))
