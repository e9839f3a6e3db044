"""Tests for imbjax.losses against hand-computed numbers, optax and scikit-learn."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from imbjax import losses
from imbjax.losses import (
    LossCoefficients,
    balanced_softmax_offsets,
    drw_weights,
    effective_number_weights,
    imbalance_loss,
    inverse_frequency_weights,
    ldam_margins,
    logit_adjustment_offsets,
    neutral_coefficients,
    posthoc_logit_adjust,
    select_tau,
    tau_normalize,
)

# Two examples, three classes: small enough to write every term out.
LOGITS = np.array([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]], np.float32)
LABELS = np.array([1, 2], np.int32)
CE0 = -2.0 + math.log(math.e ** 1 + math.e ** 2 + 1.0)
CE1 = -3.0 + math.log(2.0 + math.e ** 3)


def _reference_loss(logits, labels, w, offset, margin, gamma, scale, mask):
  """Plain-Python loop of the documented formula, independent of the implementation."""
  num = den = 0.0
  for row, y, m in zip(np.asarray(logits, float).tolist(), labels, mask):
    z = [scale * (row[k] + offset[k] - (margin[k] if k == y else 0.0))
         for k in range(len(row))]
    ce = math.log(sum(math.exp(v) for v in z)) - z[y]
    p = math.exp(-ce)
    num += w[y] * m * (1.0 - p) ** gamma * ce
    den += w[y] * m
  return num / den


@jax.jit
def _optax_ce(logits, labels):
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def _random_problem(seed, n=16, c=5):
  # Test data from a seeded local Generator (no global state): host arrays are cheap,
  # where eager jax.random calls would each compile on the test's clock.
  rng = np.random.default_rng(seed)
  logits = jnp.asarray(3.0 * rng.standard_normal((n, c)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, c, size=n), jnp.int32)
  return logits, labels


# ----------------------------------------------------------------- hand-computed values


def test_plain_cross_entropy_hand_value():
  np.testing.assert_allclose(imbalance_loss(LOGITS, LABELS), (CE0 + CE1) / 2, rtol=1e-6)


def test_class_weighted_hand_value():
  w = np.array([1.0, 2.0, 3.0], np.float32)
  np.testing.assert_allclose(imbalance_loss(LOGITS, LABELS, class_weights=w),
                             (2 * CE0 + 3 * CE1) / 5, rtol=1e-6)


def test_focal_hand_value():
  f0 = (1 - math.exp(-CE0)) ** 2 * CE0
  f1 = (1 - math.exp(-CE1)) ** 2 * CE1
  np.testing.assert_allclose(imbalance_loss(LOGITS, LABELS, focal_gamma=2.0),
                             (f0 + f1) / 2, rtol=1e-6)


def test_ldam_hand_value():
  # Margin on the true class only, then scale s = 2:
  # example 0 (y=1): z = 2 * [1, 2 - 0.2, 0] = [2, 3.6, 0]
  # example 1 (y=2): z = 2 * [0, 0, 3 - 0.3] = [0, 0, 5.4]
  ce0 = math.log(math.exp(2) + math.exp(3.6) + 1) - 3.6
  ce1 = math.log(2 + math.exp(5.4)) - 5.4
  margin = np.array([0.1, 0.2, 0.3], np.float32)
  np.testing.assert_allclose(
      imbalance_loss(LOGITS, LABELS, margin=margin, logit_scale=2.0),
      (ce0 + ce1) / 2, rtol=1e-6)


def test_logit_offset_hand_value():
  # Offsets log([0.5, 0.25, 0.25]) added to every row.
  off = np.log(np.array([0.5, 0.25, 0.25]))
  z0 = [1 + math.log(0.5), 2 + math.log(0.25), math.log(0.25)]
  z1 = [math.log(0.5), math.log(0.25), 3 + math.log(0.25)]
  ce0 = math.log(sum(math.exp(v) for v in z0)) - z0[1]
  ce1 = math.log(sum(math.exp(v) for v in z1)) - z1[2]
  np.testing.assert_allclose(
      imbalance_loss(LOGITS, LABELS, logit_offset=off.astype(np.float32)),
      (ce0 + ce1) / 2, rtol=1e-6)


def test_all_coefficients_together_match_reference():
  logits, labels = _random_problem(0, n=12, c=4)
  w = np.array([0.5, 1.0, 2.0, 4.0])
  off = np.array([0.3, -0.2, 0.0, 0.7])
  margin = np.array([0.1, 0.0, 0.4, 0.2])
  mask = np.array([1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 1, 0], np.float32)
  got = imbalance_loss(logits, labels, class_weights=w.astype(np.float32),
                       logit_offset=off.astype(np.float32),
                       margin=margin.astype(np.float32), focal_gamma=1.5,
                       logit_scale=1.7, example_mask=mask)
  want = _reference_loss(logits, np.asarray(labels).tolist(), w, off, margin, 1.5, 1.7,
                         mask)
  np.testing.assert_allclose(got, want, rtol=1e-5)


# --------------------------------------------------------------------------- limits


def test_focal_gamma_zero_is_cross_entropy_value_and_grad():
  logits, labels = _random_problem(1)
  ce = imbalance_loss(logits, labels, focal_gamma=0.0)
  np.testing.assert_allclose(ce, _optax_ce(logits, labels), rtol=1e-6)
  g = jax.jit(jax.grad(lambda l: imbalance_loss(l, labels, focal_gamma=0.0)))(logits)
  g_ref = jax.jit(jax.grad(lambda l: _optax_ce(l, labels)))(logits)
  np.testing.assert_allclose(g, g_ref, rtol=1e-5, atol=1e-7)


def test_logit_adjusted_tau_zero_is_cross_entropy():
  logits, labels = _random_problem(2)
  off = logit_adjustment_offsets(np.array([0.7, 0.1, 0.1, 0.05, 0.05]), tau=0.0)
  np.testing.assert_array_equal(off, np.zeros(5))
  np.testing.assert_allclose(imbalance_loss(logits, labels, logit_offset=off),
                             _optax_ce(logits, labels), rtol=1e-6)


def test_balanced_softmax_equals_logit_adjustment_tau_one():
  logits, labels = _random_problem(3)
  counts = np.array([500, 120, 40, 9, 3])
  bs = imbalance_loss(logits, labels, logit_offset=balanced_softmax_offsets(counts))
  la = imbalance_loss(logits, labels,
                      logit_offset=logit_adjustment_offsets(counts / counts.sum(), 1.0))
  np.testing.assert_allclose(bs, la, rtol=1e-5)
  # ...and the offsets really change the loss (otherwise the equality would be vacuous).
  assert abs(float(bs) - float(_optax_ce(logits, labels))) > 1e-2


@pytest.mark.parametrize("value", [1.0, 3.0])
def test_uniform_weights_are_cross_entropy(value):
  logits, labels = _random_problem(4)
  w = np.full((5,), value, np.float32)
  np.testing.assert_allclose(imbalance_loss(logits, labels, class_weights=w),
                             _optax_ce(logits, labels), rtol=1e-6)


def test_zero_margin_unit_scale_is_cross_entropy():
  logits, labels = _random_problem(5)
  got = imbalance_loss(logits, labels, margin=np.zeros(5, np.float32), logit_scale=1.0)
  np.testing.assert_allclose(got, _optax_ce(logits, labels), rtol=1e-6)


def test_neutral_coefficients_are_cross_entropy():
  logits, labels = _random_problem(6)
  coeffs = neutral_coefficients(5)
  np.testing.assert_allclose(imbalance_loss(logits, labels, **coeffs._asdict()),
                             _optax_ce(logits, labels), rtol=1e-6)


def test_example_mask_drops_examples_exactly():
  logits, labels = map(np.asarray, _random_problem(7, n=10))
  mask = np.array([1, 0, 1, 1, 0, 0, 1, 1, 1, 0], np.float32)
  keep = mask.astype(bool)
  w = np.array([1.0, 2.0, 0.5, 3.0, 1.5], np.float32)
  kw = dict(class_weights=w, focal_gamma=2.0, margin=np.full(5, 0.2, np.float32))
  masked = imbalance_loss(logits, labels, example_mask=mask, **kw)
  subset = imbalance_loss(logits[keep], labels[keep], **kw)
  np.testing.assert_allclose(masked, subset, rtol=1e-6)
  # Garbage in masked rows (huge logits) must not leak into the value or the gradient.
  poisoned = logits.copy()
  poisoned[~keep] = 1e30
  bad_labels = labels.copy()
  bad_labels[~keep] = [-1, 99, 5, -7]  # padding may carry any label
  val, grad = jax.jit(jax.value_and_grad(
      lambda l: imbalance_loss(l, bad_labels, example_mask=mask, **kw)))(poisoned)
  np.testing.assert_allclose(val, subset, rtol=1e-6)
  assert np.all(np.isfinite(grad)) and np.all(np.asarray(grad)[~keep] == 0)


def test_minus_inf_logit_of_another_class_is_fine():
  # Some callers mask classes with -inf; only the true class's log-probability is read.
  logits = np.array([[0.0, -np.inf, 1.0]], np.float32)
  want = math.log(1 + math.e) - 1.0
  np.testing.assert_allclose(imbalance_loss(logits, np.array([2])), want, rtol=1e-6)


def test_traced_out_of_range_label_is_loud_nan():
  # Concrete labels raise (see the refusals below); under jit the loss turns NaN rather
  # than silently scoring a clamped class.
  for bad in ([1, 3], [-1, 2]):
    assert np.isnan(jax.jit(imbalance_loss)(LOGITS, jnp.array(bad)))


def test_fully_masked_batch_is_zero_with_zero_grad():
  logits, labels = _random_problem(8, n=4)
  f = lambda l: imbalance_loss(l, labels, example_mask=jnp.zeros(4))  # noqa: E731
  val, grad = jax.jit(jax.value_and_grad(f))(logits)
  assert val == 0 and np.all(np.asarray(grad) == 0)


# ------------------------------------------------------------------ jit, vmap, grads


def test_vmap_over_models_equals_python_loop_and_jit():
  logits, labels = _random_problem(9, n=8, c=3)
  counts = np.array([100, 10, 2])
  models = [
      neutral_coefficients(3),
      neutral_coefficients(3)._replace(
          class_weights=effective_number_weights(counts, 0.999),
          focal_gamma=np.float32(2.0)),
      neutral_coefficients(3)._replace(margin=ldam_margins(counts),
                                       logit_scale=np.float32(5.0)),
      neutral_coefficients(3)._replace(
          logit_offset=np.asarray(logit_adjustment_offsets(counts / counts.sum()))),
  ]
  masks = np.ones((4, 8), np.float32)
  masks[2, 5:] = 0  # models may also differ in padding
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *models)
  assert isinstance(stacked, LossCoefficients)

  def one(coeffs, mask):
    return imbalance_loss(logits, labels, example_mask=mask, **coeffs._asdict())

  batched = jax.jit(jax.vmap(one))(stacked, jnp.asarray(masks))
  looped = [imbalance_loss(logits, labels, example_mask=m, **c._asdict())
            for c, m in zip(models, masks)]
  np.testing.assert_allclose(batched, looped, rtol=1e-5)
  assert len(set(np.round(np.asarray(batched), 5).tolist())) == 4  # genuinely different


@jax.jit
@functools.partial(jax.grad, argnums=(0, 1))
def _focal_grads(logits, gamma):
  return imbalance_loss(logits, jnp.array([0, 1, 2]), focal_gamma=gamma)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_gradients_finite_when_p_y_is_one(gamma):
  # Rows 0 and 1 have p_y == 1 in float32 (ce == 0 exactly); row 2 is a hard example.
  logits = jnp.array([[100.0, 0.0, 0.0], [0.0, 30.0, 0.0], [1.0, 2.0, 3.0]])
  g_logits, g_gamma = _focal_grads(logits, jnp.float32(gamma))
  assert np.all(np.isfinite(g_logits)) and np.isfinite(g_gamma)
  assert np.all(np.abs(np.asarray(g_logits)[2]) > 0)  # the hard example still learns


def test_naive_focal_factor_is_the_trap():
  # Documents why the guard exists: (1 - p) ** 0 has a NaN gradient at p == 1.
  def naive(l):
    ce = -jax.nn.log_softmax(l)[0]
    return (1 - jnp.exp(-ce)) ** 0.0 * ce
  assert np.all(np.isnan(jax.jit(jax.grad(naive))(jnp.array([100.0, 0.0, 0.0]))))


# ----------------------------------------------------------------------- builders


def test_inverse_frequency_weights_hand_values():
  np.testing.assert_allclose(inverse_frequency_weights([1, 2, 4]),
                             [12 / 7, 6 / 7, 3 / 7], rtol=1e-6)
  np.testing.assert_allclose(inverse_frequency_weights([1, 2, 4], normalize=False),
                             [1.0, 0.5, 0.25])
  np.testing.assert_allclose(inverse_frequency_weights([7, 7, 7, 7]), np.ones(4))


def test_effective_number_weights_hand_values():
  # beta = 0.5: E = (1 - 0.5**n) / 0.5 = [1, 1.5] -> w ∝ [1, 2/3] -> sum 2: [1.2, 0.8]
  np.testing.assert_allclose(effective_number_weights([1, 2], 0.5), [1.2, 0.8], rtol=1e-6)
  np.testing.assert_allclose(effective_number_weights([5000, 50, 1], 0.0), np.ones(3))
  counts = [5000, 500, 50, 5]
  raw = [(1 - 0.9999) / (1 - 0.9999 ** n) for n in counts]
  want = [4 * r / sum(raw) for r in raw]
  np.testing.assert_allclose(effective_number_weights(counts, 0.9999), want, rtol=1e-5)
  # beta -> 1 approaches inverse frequency.
  np.testing.assert_allclose(effective_number_weights(counts, 1 - 1e-9),
                             inverse_frequency_weights(counts), rtol=1e-3)


def test_ldam_margins_hand_values():
  # n ** -1/4 = [1, 1/2, 1/3]; largest scaled to 0.5.
  np.testing.assert_allclose(ldam_margins([1, 16, 81]), [0.5, 0.25, 1 / 6], rtol=1e-6)
  np.testing.assert_allclose(ldam_margins([81, 16], max_margin=1.0), [2 / 3, 1.0],
                             rtol=1e-6)


def test_drw_weights_switch_under_jit_and_vmap():
  counts = np.array([1000, 100, 10])
  late = effective_number_weights(counts, 0.999)
  f = jax.jit(lambda step, start: drw_weights(counts, step, start, beta=0.999))
  np.testing.assert_array_equal(f(jnp.int32(159), jnp.int32(160)), np.ones(3))
  np.testing.assert_allclose(f(jnp.int32(160), jnp.int32(160)), late, rtol=1e-6)
  per_model = jax.vmap(f, in_axes=(None, 0))(jnp.int32(50), jnp.array([10, 50, 51]))
  np.testing.assert_allclose(per_model, np.stack([late, late, np.ones(3)]), rtol=1e-6)


def test_logit_adjustment_and_balanced_softmax_offsets_hand_values():
  np.testing.assert_allclose(logit_adjustment_offsets([0.5, 0.25, 0.25], tau=2.0),
                             [2 * math.log(0.5), 2 * math.log(0.25), 2 * math.log(0.25)],
                             rtol=1e-6)
  np.testing.assert_allclose(balanced_softmax_offsets([1, 10, 100]),
                             [0.0, math.log(10), math.log(100)], rtol=1e-6)


# ------------------------------------------------------------------------ post-hoc


def test_posthoc_sweep_shape_identity_and_values():
  logits, _ = _random_problem(10, n=6, c=3)
  prior = np.array([0.6, 0.3, 0.1])
  taus = jnp.array([0.0, 0.5, 1.0, 2.0])
  out = jax.jit(posthoc_logit_adjust)(logits, prior, taus)
  assert out.shape == (4, 6, 3)
  np.testing.assert_array_equal(out[0], logits)
  np.testing.assert_array_equal(posthoc_logit_adjust(logits, prior, 0.0), logits)
  for k, t in enumerate([0.0, 0.5, 1.0, 2.0]):
    np.testing.assert_allclose(out[k], np.asarray(logits) - t * np.log(prior),
                               rtol=1e-6, atol=1e-6)


def _constructed_validation_set():
  # prior [0.9, 0.1]: adjusting by tau adds 0.105 tau to class 0, 2.303 tau to class 1.
  # 8 class-0 rows [3, 0] stay right until tau > 1.37; one class-0 row [1, 0] flips at
  # tau > 0.455; one class-1 row [0.5, 0] becomes right at tau > 0.228.
  logits = np.array([[3.0, 0.0]] * 8 + [[1.0, 0.0], [0.5, 0.0]], np.float32)
  labels = np.array([0] * 9 + [1])
  return logits, labels, np.array([0.9, 0.1])


def test_select_tau_picks_the_best_tau():
  logits, labels, prior = _constructed_validation_set()
  # tau 0.3 classifies everything right; 0 and 1 each miss one.
  assert float(select_tau(logits, labels, prior, jnp.array([0.0, 0.3, 1.0]))) == \
      pytest.approx(0.3)
  # Between 0 and 1 only: accuracy ties at 0.9 (earliest wins), balanced accuracy
  # prefers 1 (0.944 vs 0.5). Confirm the construction with scikit-learn first.
  taus = [0.0, 1.0]
  preds = [np.argmax(logits - t * np.log(prior), axis=1) for t in taus]
  assert [accuracy_score(labels, p) for p in preds] == [0.9, 0.9]
  bal = [balanced_accuracy_score(labels, p) for p in preds]
  assert bal[1] > bal[0]
  sel = jax.jit(select_tau, static_argnames="metric")
  assert float(sel(logits, labels, prior, jnp.array(taus))) == 0.0
  assert float(sel(logits, labels, prior, jnp.array(taus),
                   metric="balanced_accuracy")) == 1.0


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_balanced_accuracy_helper_matches_sklearn():
  rng = np.random.default_rng(0)  # test data only; library code uses jax keys
  labels = rng.choice([0, 1, 3], size=40)  # class 2 absent, as sklearn then drops it
  pred = rng.integers(0, 4, size=40)
  got = losses._balanced_accuracy(jnp.asarray(pred), jnp.asarray(labels), 4)
  np.testing.assert_allclose(got, balanced_accuracy_score(labels, pred), rtol=1e-6)


def test_tau_normalize():
  kernel = np.array([[3.0, 0.0, 0.0], [4.0, 2.0, 0.0]], np.float32)  # [features, C]
  # Column norms [5, 2, 0]; the zero column stays zero.
  np.testing.assert_allclose(tau_normalize(kernel, 0.5),
                             [[3 / 5 ** 0.5, 0, 0], [4 / 5 ** 0.5, 2 / 2 ** 0.5, 0]],
                             rtol=1e-6)
  np.testing.assert_array_equal(tau_normalize(kernel, 0.0), kernel)
  k = np.random.default_rng(11).standard_normal((7, 4)) * np.array([0.1, 1.0, 5.0, 30.0])
  np.testing.assert_allclose(jnp.linalg.norm(tau_normalize(k, 1.0), axis=0), np.ones(4),
                             rtol=1e-5)
  np.testing.assert_allclose(jnp.linalg.norm(tau_normalize(k.T, 1.0, axis=0), axis=1),
                             np.ones(4), rtol=1e-5)
  g = jax.jit(jax.grad(lambda w: tau_normalize(w, 1.0).sum()))(jnp.asarray(kernel))
  assert np.all(np.isfinite(g))


# ---------------------------------------------------------------------- refusals


@pytest.mark.parametrize("call, match", [
    (lambda: inverse_frequency_weights([3, 0, 2]), r"\[3.0, 0.0, 2.0\]"),
    (lambda: effective_number_weights([3, 2], 1.0), "beta.*1.0"),
    (lambda: effective_number_weights([3, 2], -0.1), "beta.*-0.1"),
    (lambda: ldam_margins([3, 2], max_margin=-1), "max_margin.*-1"),
    (lambda: balanced_softmax_offsets([[1, 2]]), r"\(1, 2\)"),
    (lambda: logit_adjustment_offsets([0.5, 0.0]), "prior"),
    (lambda: imbalance_loss(LOGITS, LABELS, focal_gamma=-1.0), "focal_gamma.*-1.0"),
    (lambda: imbalance_loss(LOGITS, LABELS, logit_scale=0.0), "logit_scale.*0.0"),
    (lambda: imbalance_loss(LOGITS, np.array([1, 3])), r"\[0, 3\)"),
    (lambda: imbalance_loss(LOGITS, LABELS, class_weights=np.ones(2)), r"\(2,\)"),
    (lambda: imbalance_loss(LOGITS, LABELS, example_mask=np.ones(3)), r"\(3,\)"),
    (lambda: select_tau(LOGITS, LABELS, np.ones(3), [0.0, 1.0], metric="f1"),
     "'f1'.*accuracy.*balanced_accuracy"),
    (lambda: posthoc_logit_adjust(LOGITS, np.ones(4), 1.0), r"\(4,\)"),
    (lambda: tau_normalize(np.ones((2, 3)), 1.0, axis=2), "axis 2"),
    (lambda: neutral_coefficients(0), "0"),
])
def test_bad_input_raises_value_error_naming_it(call, match):
  with pytest.raises(ValueError, match=match):
    call()
