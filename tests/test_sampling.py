"""Tests for imbjax.sampling: plans vs imbalanced-learn, the epoch stream, class-aware draws."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from imblearn.over_sampling import RandomOverSampler
from imblearn.under_sampling import RandomUnderSampler

from imbjax import imbalance, sampling


def _step_labels(counts):
  """Labels with exactly ``counts[c]`` examples of class c, interleaved (not sorted)."""
  labels = np.repeat(np.arange(len(counts)), counts)
  return labels[np.random.default_rng(123).permutation(labels.size)]


COUNT_CASES = [
    [50, 50, 5, 5, 5],  # step, rho 10, mu 0.6
    [40, 35, 30, 25, 20, 15, 10, 5],  # linear
    [60, 1, 7, 3],  # extreme: a class of one
    [9, 9],  # already balanced
]


def _imblearn_counts(sampler_cls, labels, strategy):
  x = np.zeros((labels.size, 1))
  _, y = sampler_cls(sampling_strategy=strategy, random_state=0).fit_resample(x, labels)
  return np.bincount(y, minlength=labels.max() + 1)


# --- oversample / undersample ---------------------------------------------------------


@pytest.mark.parametrize("counts", COUNT_CASES)
def test_full_resampling_counts_match_imblearn(counts):
  labels = _step_labels(counts)
  over = sampling.oversample(labels, jax.random.key(0))
  under = sampling.undersample(labels, jax.random.key(0))
  assert np.bincount(labels[over]).tolist() == \
      _imblearn_counts(RandomOverSampler, labels, "auto").tolist()
  assert np.bincount(labels[under]).tolist() == \
      _imblearn_counts(RandomUnderSampler, labels, "auto").tolist()


@pytest.mark.parametrize("counts", COUNT_CASES[:3])
@pytest.mark.parametrize("ratio", [1.0, 2.0, 3.3, 10.0, 1000.0])
def test_partial_resampling_counts_match_imblearn(counts, ratio):
  labels = _step_labels(counts)
  n = np.asarray(counts)
  t_over = {c: max(int(k), int(np.floor(n.max() / ratio + 0.5))) for c, k in enumerate(n)}
  t_under = {c: min(int(k), int(np.floor(n.min() * ratio + 0.5))) for c, k in enumerate(n)}
  over = sampling.oversample(labels, jax.random.key(1), ratio=ratio)
  under = sampling.undersample(labels, jax.random.key(1), ratio=ratio)
  assert np.bincount(labels[over]).tolist() == \
      _imblearn_counts(RandomOverSampler, labels, t_over).tolist()
  assert np.bincount(labels[under]).tolist() == \
      _imblearn_counts(RandomUnderSampler, labels, t_under).tolist()
  # The residual imbalance is the requested ratio (up to rounding).
  assert np.bincount(labels[over]).max() / np.bincount(labels[over]).min() <= ratio + 1


def test_oversample_keeps_every_original_and_spreads_copies():
  counts = [50, 50, 7, 3]
  labels = _step_labels(counts)
  plan = sampling.oversample(labels, jax.random.key(2))
  assert plan.dtype == np.int64
  times = np.bincount(plan, minlength=labels.size)
  assert times.min() >= 1  # every original example survives
  # Majority classes are untouched; minority copies differ by at most one per example.
  for c, n_c in enumerate(counts):
    t = times[labels == c]
    q = 50 // n_c
    assert set(t.tolist()) <= {q, q + 1}, (c, sorted(set(t.tolist())))
  # Sorted by class, then index.
  assert np.all(np.diff(labels[plan]) >= 0)
  for c in range(4):
    assert np.all(np.diff(plan[labels[plan] == c]) >= 0)


def test_undersample_subset_without_repeats_sorted():
  labels = _step_labels([50, 20, 5])
  plan = sampling.undersample(labels, jax.random.key(3))
  assert len(set(plan.tolist())) == plan.size == 15
  assert np.all(np.diff(labels[plan]) >= 0)
  for c in range(3):
    assert np.all(np.diff(plan[labels[plan] == c]) > 0)


def test_plans_keyed():
  labels = _step_labels([50, 20, 5])
  for fn in (sampling.oversample, sampling.undersample):
    a = fn(labels, jax.random.key(7))
    assert a.tolist() == fn(labels, jax.random.key(7)).tolist()
    assert a.tolist() != fn(labels, jax.random.key(8)).tolist()


def test_plan_refusals():
  labels = _step_labels([5, 3])
  for fn in (sampling.oversample, sampling.undersample):
    with pytest.raises(ValueError, match="ratio"):
      fn(labels, jax.random.key(0), ratio=0.5)
    with pytest.raises(ValueError, match="class 2 has no examples"):
      fn(labels, jax.random.key(0), num_classes=3)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
      fn(labels, jax.random.key(0), num_classes=1)
    with pytest.raises(ValueError, match="-2"):
      fn(np.array([0, -2]), jax.random.key(0))
    with pytest.raises(ValueError, match="class 1 has no examples"):
      fn(np.array([0, 2, 2]), jax.random.key(0))


def test_plan_on_subsampled_mnist_like_set():
  # The paper's pipeline: cap, make a step profile, subsample, then resample.
  full = _step_labels([300] * 10)
  counts = imbalance.step(10, 200, rho=20, mu=0.3, minority="lowest")
  sub = imbalance.subsample(full, counts, jax.random.key(0))
  plan = sampling.oversample(full[sub], jax.random.key(1))
  assert np.bincount(full[sub][plan]).tolist() == [200] * 10


# --- pad_plans ------------------------------------------------------------------------


def test_pad_plans():
  padded, lens = sampling.pad_plans([np.array([3, 1, 2]), np.array([7]), np.arange(5)])
  assert padded.dtype == np.int32 and lens.dtype == np.int32
  assert padded.tolist() == [[3, 1, 2, 0, 0], [7, 0, 0, 0, 0], [0, 1, 2, 3, 4]]
  assert lens.tolist() == [3, 1, 5]
  padded, _ = sampling.pad_plans([np.array([1])], length=3, fill=-1)
  assert padded.tolist() == [[1, -1, -1]]
  with pytest.raises(ValueError, match="plan 1 is empty"):
    sampling.pad_plans([np.array([1]), np.array([], dtype=np.int64)])
  with pytest.raises(ValueError, match="length=2"):
    sampling.pad_plans([np.arange(3)], length=2)
  with pytest.raises(ValueError, match="none"):
    sampling.pad_plans([])
  with pytest.raises(ValueError, match="int32"):
    sampling.pad_plans([np.array([2**40])])


# --- epoch_order ----------------------------------------------------------------------
# Few compiled shapes keep this module fast: every check goes through 64 rows of 256.

_B, _ROWS = 256, 64
_rows = jax.jit(jax.vmap(sampling.epoch_order, (0, 0, None, 0)), static_argnums=2)


def _stream(key, plan_len):
  """Positions of steps 0..63 for one (key, plan_len), flattened: 16384 positions."""
  keys = jnp.stack([key] * _ROWS)
  out = _rows(keys, jnp.arange(_ROWS), _B, jnp.full(_ROWS, plan_len, jnp.int32))
  return np.asarray(out).ravel()


@pytest.mark.parametrize("plan_len", [1, 2, 3, 7, 64, 1000, 5001])
def test_epoch_order_each_epoch_is_a_permutation(plan_len):
  s = _stream(jax.random.key(0), plan_len)  # >= 3 epochs for every plan_len here
  assert s.dtype == np.int32
  epochs = [s[e * plan_len:(e + 1) * plan_len] for e in range(s.size // plan_len)]
  assert len(epochs) >= 3
  for e in epochs:
    assert np.sort(e).tolist() == list(range(plan_len))
  if plan_len >= 7:
    assert epochs[0].tolist() != epochs[1].tolist() != epochs[2].tolist()
  if plan_len >= 64:
    assert epochs[0].tolist() != sorted(epochs[0].tolist())  # actually shuffled


def test_epoch_order_keyed_and_batch_cut_independent():
  key = jax.random.key(4)
  a = _stream(key, 1000)
  assert a.tolist() == _stream(key, 1000).tolist()
  assert a.tolist() != _stream(jax.random.key(5), 1000).tolist()
  # The stream does not depend on how it is cut into batches (96 does not divide 1000).
  cut = jax.jit(jax.vmap(sampling.epoch_order, (None, 0, None, None)), static_argnums=2)
  b = np.asarray(cut(key, jnp.arange(40), 96, 1000)).ravel()
  assert b.tolist() == a[: b.size].tolist()
  # Raw uint32 keys work too.
  raw = _stream(jax.random.PRNGKey(4), 10)
  assert np.sort(raw[:10]).tolist() == list(range(10))


def test_epoch_order_vmap_equals_loop():
  keys = jax.random.split(jax.random.key(9), _ROWS)
  lens = jnp.asarray(np.resize([1, 2, 3, 7, 64, 5001, 50000], _ROWS), jnp.int32)
  steps = jnp.asarray(np.arange(_ROWS) * 37 % 500, jnp.int32)
  got = np.asarray(_rows(keys, steps, _B, lens))
  single = jax.jit(sampling.epoch_order, static_argnums=2)
  for i in range(0, _ROWS, 7):
    want = np.asarray(single(keys[i], steps[i], _B, lens[i]))
    assert got[i].tolist() == want.tolist()
    assert 0 <= want.min() and want.max() < int(lens[i])


def test_epoch_order_first_position_roughly_uniform():
  keys = jax.random.split(jax.random.key(11), _ROWS)
  out = np.asarray(_rows(keys, jnp.zeros(_ROWS, jnp.int32), _B, jnp.full(_ROWS, 10)))
  first = out[:, 0:250:10].ravel()  # the first position of 25 epochs x 64 keys
  freq = np.bincount(first, minlength=10)
  # 1600 draws over 10 values, 160 expected each; chi-square (9 dof) > 40 has p < 1e-5.
  chi2 = ((freq - 160.0) ** 2 / 160.0).sum()
  assert chi2 < 40, freq


def test_epoch_order_refusals():
  with pytest.raises(ValueError, match="batch_size"):
    sampling.epoch_order(jax.random.key(0), 0, 0, 10)
  with pytest.raises(ValueError, match="plan_len"):
    sampling.epoch_order(jax.random.key(0), 0, 4, 0)
  with pytest.raises(ValueError, match="step"):
    sampling.epoch_order(jax.random.key(0), -1, 4, 10)


# --- class-aware sampling -------------------------------------------------------------


def test_class_sampling_probs_hand_computed():
  counts = np.array([100, 25, 0, 4])
  np.testing.assert_allclose(sampling.class_sampling_probs(counts, "instance"),
                             [100 / 129, 25 / 129, 0, 4 / 129], rtol=1e-6)
  np.testing.assert_allclose(sampling.class_sampling_probs(counts, "class_balanced"),
                             [1 / 3, 1 / 3, 0, 1 / 3], rtol=1e-6)
  np.testing.assert_allclose(sampling.class_sampling_probs(counts, "sqrt"),
                             [10 / 17, 5 / 17, 0, 2 / 17], rtol=1e-6)
  np.testing.assert_allclose(sampling.class_sampling_probs(counts, "power", power=0.5),
                             [10 / 17, 5 / 17, 0, 2 / 17], rtol=1e-6)
  with pytest.raises(ValueError, match="'uniform'.*class_balanced"):
    sampling.class_sampling_probs(counts, "uniform")
  with pytest.raises(ValueError, match="power"):
    sampling.class_sampling_probs(counts, "power")
  with pytest.raises(ValueError, match="power"):
    sampling.class_sampling_probs(counts, "sqrt", power=2.0)
  with pytest.raises(ValueError, match="counts"):
    sampling.class_sampling_probs([0, 0], "instance")


def test_progressive_probs_endpoints_and_jit():
  counts = jnp.array([90.0, 10.0])
  f = jax.jit(sampling.progressive_probs)
  np.testing.assert_allclose(f(counts, 0, 100), [0.9, 0.1], rtol=1e-6)
  np.testing.assert_allclose(f(counts, 50, 100), [0.7, 0.3], rtol=1e-6)
  np.testing.assert_allclose(f(counts, 100, 100), [0.5, 0.5], rtol=1e-6)
  np.testing.assert_allclose(f(counts, 500, 100), [0.5, 0.5], rtol=1e-6)
  with pytest.raises(ValueError, match="total_steps"):
    sampling.progressive_probs(counts, 0, 0)


def test_class_index_table_and_draw_classwise():
  labels = np.array([2, 0, 2, 3, 0, 2, 3, 3, 3])  # class 1 empty
  order, starts, counts = sampling.class_index_table(labels, 4)
  assert order.tolist() == [1, 4, 0, 2, 5, 3, 6, 7, 8]
  assert starts.tolist() == [0, 2, 2, 5] and counts.tolist() == [2, 0, 3, 4]
  probs = sampling.class_sampling_probs(counts, "class_balanced")
  draw = jax.jit(jax.vmap(sampling.draw_classwise, (None, 0, None, None, None, None, None)),
                 static_argnums=2)
  pos = np.asarray(draw(jax.random.key(0), jnp.arange(300), 20, probs, order, starts,
                        counts)).ravel()
  drawn = labels[order[pos]]
  freq = np.bincount(drawn, minlength=4)
  assert freq[1] == 0  # the empty class is never drawn
  # 6000 draws, p = 1/3 each: sd ~ 37.
  assert np.all(np.abs(freq[[0, 2, 3]] - 2000) < 200), freq
  # Uniform within a class: class 3's four members each ~500.
  members = np.bincount(order[pos][drawn == 3], minlength=9)[[3, 6, 7, 8]]
  assert np.all(np.abs(members - freq[3] / 4) < 120), members
  again = np.asarray(draw(jax.random.key(0), jnp.arange(300), 20, probs, order, starts,
                          counts)).ravel()
  other = np.asarray(draw(jax.random.key(1), jnp.arange(300), 20, probs, order, starts,
                          counts)).ravel()
  assert again.tolist() == pos.tolist() and other.tolist() != pos.tolist()
