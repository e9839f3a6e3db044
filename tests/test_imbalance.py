"""Tests for imbjax.imbalance: the paper's exact counts, properties, subsampling."""

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imbjax import imbalance


# --- the paper's examples -------------------------------------------------------------


def test_step_figure_1a_and_1b_same_total():
  # Figure 1a: rho 10, mu 0.5 -> five classes of 500, five of 5000.
  a = imbalance.step(10, 5000, rho=10, mu=0.5, minority="lowest")
  assert a.tolist() == [500] * 5 + [5000] * 5
  # Figure 1b: rho 2, mu 0.9 -> nine classes of 2500, one of 5000.
  b = imbalance.step(10, 5000, rho=2, mu=0.9, minority="lowest")
  assert b.tolist() == [2500] * 9 + [5000]
  # "A dataset with the same number of examples in total".
  assert a.sum() == b.sum() == 27500
  assert a.dtype == np.int64


def test_linear_rho_10_and_same_total_as_step_half():
  lin = imbalance.linear(10, 5000, rho=10, order="ascending")
  assert lin.tolist() == list(range(500, 5001, 500))
  # Section 4.3: for the same rho, linear and step with mu = 0.5 have equal totals.
  assert lin.sum() == imbalance.step(10, 5000, 10, 0.5, minority="lowest").sum()


def test_mnist_extreme_ratio_gives_one_example():
  assert imbalance.linear(10, 5000, 5000, order="ascending")[0] == 1
  assert imbalance.linear(10, 5000, 5000, order="ascending")[-1] == 5000
  assert imbalance.step(10, 5000, 5000, 0.1, minority="lowest").min() == 1
  # A ratio beyond max_count still keeps every class non-empty.
  assert imbalance.step(10, 10, 1000, 0.5, minority="lowest").min() == 1


def test_imagenet_step_counts():
  # Section 3.3: mu 0.9, rho 100 on 1000 classes -> 900 minority classes.
  c = imbalance.step(1000, 1000, 100, 0.9, key=jax.random.key(0))
  assert (c == 10).sum() == 900 and (c == 1000).sum() == 100


def test_exponential_matches_cifar_lt_sizes():
  # Cao et al. (2019) CIFAR-10-LT / CIFAR-100-LT training-set sizes.
  c = imbalance.exponential(10, 5000, 100)
  assert c.tolist() == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
  assert imbalance.exponential(10, 5000, 10).sum() == 20431
  assert imbalance.exponential(100, 500, 100).sum() == 10847


# --- properties -----------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(2, 30),
    max_count=st.integers(1, 6000),
    rho=st.floats(1.0, 1e4),
    mu=st.floats(0.01, 0.99),
)
def test_step_properties(n, max_count, rho, mu):
  k = int(np.floor(mu * n + 0.5))
  if not 1 <= k <= n - 1:
    with pytest.raises(ValueError, match="minority classes"):
      imbalance.step(n, max_count, rho, mu, minority="lowest")
    return
  c = imbalance.step(n, max_count, rho, mu, minority="lowest")
  lo = max(1, int(np.floor(max_count / rho + 0.5)))
  assert c.shape == (n,)
  assert c.max() == max_count and c.min() == lo
  assert c.sum() == k * lo + (n - k) * max_count
  # 'lowest': the minority classes are exactly labels 0..k-1, hence nested as mu grows.
  assert (c[:k] == lo).all() and (c[k:] == max_count).all()


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 30), max_count=st.integers(1, 6000), rho=st.floats(1.0, 1e4))
def test_linear_properties(n, max_count, rho):
  c = imbalance.linear(n, max_count, rho, order="ascending")
  lo = max(1, int(np.floor(max_count / rho + 0.5)))
  assert c[0] == lo and c[-1] == max_count
  d = np.diff(c)
  assert (d >= 0).all()  # monotone
  # Constant differences up to the final rounding.
  exact = (max_count - lo) / (n - 1)
  assert np.all(np.abs(d - exact) <= 1.0)
  # A random order is a permutation of the same counts.
  r = imbalance.linear(n, max_count, rho, order="random", key=jax.random.key(max_count))
  assert sorted(r.tolist()) == c.tolist()


def test_random_minority_nested_for_one_key_and_keyed():
  key = jax.random.key(3)
  sets = []
  for mu in (0.1, 0.2, 0.5, 0.9):
    c = imbalance.step(10, 5000, 10, mu, key=key)
    sets.append(set(np.nonzero(c == 500)[0].tolist()))
  assert [len(s) for s in sets] == [1, 2, 5, 9]
  assert all(a <= b for a, b in zip(sets, sets[1:]))
  same = imbalance.step(10, 5000, 10, 0.5, key=key)
  assert same.tolist() == imbalance.step(10, 5000, 10, 0.5, key=key).tolist()
  others = {tuple(imbalance.step(10, 5000, 10, 0.5, key=jax.random.key(s))) for s in range(8)}
  assert len(others) > 1


# --- refusals -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(rho=0.5, mu=0.5), "rho"),
        (dict(rho=float("nan"), mu=0.5), "rho"),
        (dict(rho=10, mu=0.0), "mu"),
        (dict(rho=10, mu=1.0), "mu"),
        (dict(rho=10, mu=0.01), "0 minority"),
        (dict(rho=10, mu=0.99), "10 minority"),
    ],
)
def test_step_refusals(kwargs, match):
  with pytest.raises(ValueError, match=match):
    imbalance.step(10, 5000, minority="lowest", **kwargs)


def test_other_refusals():
  with pytest.raises(ValueError, match="minority='first'"):
    imbalance.step(10, 5000, 10, 0.5, minority="first")
  with pytest.raises(ValueError, match="key"):
    imbalance.step(10, 5000, 10, 0.5)
  with pytest.raises(ValueError, match="order='descending'"):
    imbalance.linear(10, 5000, 10, order="descending")
  with pytest.raises(ValueError, match="key"):
    imbalance.linear(10, 5000, 10)
  with pytest.raises(ValueError, match="num_classes"):
    imbalance.linear(1, 5000, 10, order="ascending")
  with pytest.raises(ValueError, match="max_count"):
    imbalance.exponential(10, 0, 10)
  with pytest.raises(ValueError, match="'zipf'.*exponential"):
    imbalance.get_profile("zipf")
  assert imbalance.get_profile("step") is imbalance.step


# --- subsample ------------------------------------------------------------------------


def _labels(n=600, c=6, seed=0):
  return np.random.default_rng(seed).integers(0, c, n)


def test_subsample_exact_counts_sorted_unique():
  labels = _labels()
  have = np.bincount(labels, minlength=6)
  counts = np.array([have[0], 0, 1, 7, 20, have[5] // 2])
  idx = imbalance.subsample(labels, counts, jax.random.key(1))
  assert idx.dtype == np.int64
  assert np.bincount(labels[idx], minlength=6).tolist() == counts.tolist()
  assert len(set(idx.tolist())) == idx.size
  assert np.all(np.diff(labels[idx]) >= 0)  # sorted by class ...
  for c in range(6):  # ... then by index
    assert np.all(np.diff(idx[labels[idx] == c]) > 0)


def test_subsample_keyed_and_nested():
  labels = _labels()
  counts = np.full(6, 10)
  a = imbalance.subsample(labels, counts, jax.random.key(5))
  b = imbalance.subsample(labels, counts, jax.random.key(5))
  c = imbalance.subsample(labels, counts, jax.random.key(6))
  assert a.tolist() == b.tolist()
  assert a.tolist() != c.tolist()
  bigger = imbalance.subsample(labels, np.full(6, 30), jax.random.key(5))
  assert set(a.tolist()) <= set(bigger.tolist())


def test_subsample_refusals():
  labels = _labels()
  have = np.bincount(labels, minlength=6)
  with pytest.raises(ValueError, match=r"counts\[2\]"):
    imbalance.subsample(labels, [0, 0, have[2] + 1, 0, 0, 0], jax.random.key(0))
  with pytest.raises(ValueError, match=r"\[0, 5\)"):
    imbalance.subsample(labels, [1] * 5, jax.random.key(0))
  with pytest.raises(ValueError, match="-1"):
    imbalance.subsample(np.array([0, -1]), [1, 1], jax.random.key(0))
  with pytest.raises(ValueError, match=">= 0"):
    imbalance.subsample(labels, [1, -1, 1, 1, 1, 1], jax.random.key(0))


def test_random_and_lowest_pinned():
  # The draws of 'random' / 'lowest' as they were before 'short_first' existed: stored
  # runs' minority sets depend on them, so new rules must leave them bit-identical.
  key = jax.random.key(7)
  assert imbalance.step(10, 5000, 10, 0.3, key=key).tolist() == [
      5000, 500, 500, 5000, 5000, 500, 5000, 5000, 5000, 5000]
  assert np.nonzero(imbalance.step(20, 1000, 50, 0.45, key=jax.random.key(11)) == 20)[
      0].tolist() == [1, 3, 5, 8, 9, 14, 16, 18, 19]
  assert imbalance.linear(8, 1000, 10, key=key).tolist() == [
      871, 614, 229, 357, 486, 1000, 100, 743]
  assert imbalance.step(10, 5000, 10, 0.3, minority="lowest").tolist() == [500] * 3 + [
      5000] * 7
