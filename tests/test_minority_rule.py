"""Tests for the paper's ImageNet minority rule (Section 3.3.3) and the availability check.

"Classes with less than 1 000 cases were always chosen as minority ones": `imbalance.step`
and `imbalance.linear` with the ``short_first`` rule, `imbalance.check_available` and
`imbalance.case_counts`, against synthetic label arrays and a tiny image folder.
"""

import doctest

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.configs import imagenet_step
from imbjax import datasets, imbalance
from imbjax.datasets import streaming


# --- check_available ------------------------------------------------------------------


def test_check_available_names_every_short_class():
  names = ("n01440764", "n01443537", "n01484850", "n01491361")
  imbalance.check_available([1000, 100, 0, 1300], [1300, 732, 0, 1300], names)  # fits
  with pytest.raises(ValueError) as err:
    imbalance.check_available([1000, 1000, 10, 1000], [1300, 732, 5, 1300], names,
                              case="step_rho10_mu0.1")
  msg = str(err.value)
  assert msg.startswith("case step_rho10_mu0.1: 2 classes have fewer")
  assert ("class 'n01443537' (index 1) has 732 training examples; the case asks for 1000"
          in msg)
  assert "class 'n01484850' (index 2) has 5 training examples; the case asks for 10" in msg
  assert "n01440764" not in msg and "n01491361" not in msg
  with pytest.raises(ValueError, match=r"^1 class has .*: class 1 has 732 training"):
    imbalance.check_available([1000, 1000], [1300, 732])


def test_check_available_refusals():
  with pytest.raises(ValueError, match=r"available must hold one count per class \(3\)"):
    imbalance.check_available([1, 2, 3], [1, 2])
  with pytest.raises(ValueError, match="counts_wanted must be >= 0"):
    imbalance.check_available([1, -2], [1, 2])
  with pytest.raises(ValueError, match="available must be integers"):
    imbalance.check_available([1, 2], [1.5, 2])
  with pytest.raises(ValueError, match="class_names has 1 names for 2 classes"):
    imbalance.check_available([1, 2], [1, 2], ("a",))


def test_module_doctests():
  result = doctest.testmod(imbalance, optionflags=doctest.ELLIPSIS)
  assert result.failed == 0 and result.attempted >= 4


# --- step, minority='short_first' -----------------------------------------------------


def _available(seed=0, n=20, short=(3, 11, 17)):
  """ILSVRC-like class sizes: 1,000-1,200 examples, a few short classes of 600-999."""
  rng = np.random.default_rng(seed)
  have = rng.integers(1000, 1201, n)
  have[list(short)] = rng.integers(600, 1000, len(short))
  have[short[0]] = 732  # ILSVRC-2012's smallest class
  return have


def _labels_of(available, seed=0):
  labels = np.repeat(np.arange(len(available)), available)
  return np.random.default_rng(seed).permutation(labels)


def test_short_first_makes_short_classes_minority():
  have = _available()
  c = imbalance.step(20, 1000, 10, 0.25, minority="short_first", key=jax.random.key(0),
                     available=have)
  minority = set(np.nonzero(c == 100)[0].tolist())
  assert len(minority) == 5 and {3, 11, 17} <= minority
  assert set(c.tolist()) == {100, 1000} and (c <= have).all()
  # Exactly as many short classes as slots: the minority set is the short classes.
  c = imbalance.step(20, 1000, 10, 0.15, minority="short_first", key=jax.random.key(0),
                     available=have)
  assert np.nonzero(c == 100)[0].tolist() == [3, 11, 17]


def test_short_first_nested_in_mu_keyed_and_random_without_short_classes():
  have = _available()
  key = jax.random.key(4)
  sets = [set(np.nonzero(imbalance.step(20, 1000, 50, mu, minority="short_first", key=key,
                                        available=have) == 20)[0].tolist())
          for mu in np.arange(0.15, 0.96, 0.05)]
  assert [len(s) for s in sets] == list(range(3, 20))
  assert all(a <= b for a, b in zip(sets, sets[1:]))
  draws = {tuple(imbalance.step(20, 1000, 50, 0.5, minority="short_first",
                                key=jax.random.key(s), available=have)) for s in range(8)}
  assert len(draws) > 1
  # No short class: the same draw as minority='random' for the same key.
  full = np.full(20, 1300)
  for mu in (0.1, 0.5, 0.9):
    assert imbalance.step(20, 1000, 50, mu, minority="short_first", key=key,
                          available=full).tolist() == imbalance.step(
                              20, 1000, 50, mu, key=key).tolist()


def test_short_first_refusals():
  have = _available()
  names = tuple(f"n0{i:07d}" for i in range(20))
  key = jax.random.key(0)
  with pytest.raises(ValueError, match=r"needs available="):
    imbalance.step(20, 1000, 10, 0.5, minority="short_first", key=key)
  with pytest.raises(ValueError, match=r"needs a jax.random key"):
    imbalance.step(20, 1000, 10, 0.5, minority="short_first", available=have)
  with pytest.raises(ValueError, match=r"available must hold one count per class \(20\)"):
    imbalance.step(20, 1000, 10, 0.5, minority="short_first", key=key, available=have[:5])
  # More short classes than minority slots: names them, their counts, cap and the mu.
  with pytest.raises(ValueError) as err:
    imbalance.step(20, 1000, 10, 0.1, minority="short_first", key=key, available=have,
                   class_names=names)
  msg = str(err.value)
  assert "3 of 20 classes have fewer than max_count=1000" in msg
  assert "class 'n00000003' (index 3): 732" in msg
  assert f"class 'n00000011' (index 11): {have[11]}" in msg
  assert "mu=0.1 gives only 2 minority classes" in msg
  assert "mu >= 0.15 (3 minority classes)" in msg and "max_count <= 732" in msg
  # A short class below even the minority count (1000 / 1.25 = 800 > 732): named.
  with pytest.raises(ValueError, match=r"class 'n00000003' \(index 3\) \(732 examples\) "
                                       r"cannot hold even the minority count 800"):
    imbalance.step(20, 1000, 1.25, 0.5, minority="short_first", key=key, available=have,
                   class_names=names)
  # Every class short: no mu leaves a majority class.
  with pytest.raises(ValueError, match="a majority class, which no mu gives"):
    imbalance.step(4, 1000, 10, 0.5, minority="short_first", key=key,
                   available=[900, 900, 900, 900])


def test_other_rules_checked_against_available():
  have = _available()
  # Labels 0..17 minority: the short classes 3, 11, 17 among them.
  c = imbalance.step(20, 1000, 10, 0.9, minority="lowest", available=have)
  assert c.tolist() == imbalance.step(20, 1000, 10, 0.9, minority="lowest").tolist()
  with pytest.raises(ValueError, match=r"2 classes .*class 11 has \d+ training examples; "
                                       r"the case asks for 1000; class 17 has"):
    imbalance.step(20, 1000, 10, 0.5, minority="lowest", available=have)


@st.composite
def _cap_and_sizes(draw):
  """A cap and class sizes, each class long (>= cap) or short (< cap) with equal odds."""
  max_count = draw(st.integers(1, 1200))
  short = draw(st.lists(st.booleans(), min_size=2, max_size=25))
  have = [draw(st.integers(0, max_count - 1)) if s and max_count > 1 else
          draw(st.integers(max_count, max_count + 300)) for s in short]
  return max_count, np.array(have)


@settings(max_examples=100, deadline=None)
@given(
    cap_sizes=_cap_and_sizes(),
    rho=st.floats(1.0, 2000.0),
    mu=st.floats(0.01, 0.99),
    seed=st.integers(0, 2**31 - 1),
)
def test_short_first_property(cap_sizes, rho, mu, seed):
  max_count, have = cap_sizes
  n = len(have)
  k = int(np.floor(mu * n + 0.5))
  low = max(1, int(np.floor(max_count / rho + 0.5)))
  short = np.nonzero(have < max_count)[0]
  args = (n, max_count, rho, mu)
  kwargs = dict(minority="short_first", key=jax.random.key(seed), available=have)
  if not 1 <= k <= n - 1:
    with pytest.raises(ValueError, match="minority classes; step imbalance needs"):
      imbalance.step(*args, **kwargs)
  elif (have[short] < low).any():
    c = int(short[have[short] < low][0])
    with pytest.raises(ValueError, match=rf"class {c} \(\d+ examples\).* cannot hold even "
                                         rf"the minority count {low}"):
      imbalance.step(*args, **kwargs)
  elif short.size > k:
    with pytest.raises(ValueError, match=rf"{short.size} of {n} classes .* must be minority"
                                         rf".* gives only {k} minority classes"):
      imbalance.step(*args, **kwargs)
  else:
    c = imbalance.step(*args, **kwargs)
    minority = np.zeros(n, bool)
    minority[np.argsort(c, kind="stable")[:k]] = True  # the k classes holding `low`
    assert (c[minority] == low).all() and (c[~minority] == max_count).all()
    assert minority[short].all()  # every short class is minority ...
    assert (c <= have).all()  # ... and every count fits


# --- linear, order='short_first' ------------------------------------------------------


def test_linear_short_first():
  have = _available()
  key = jax.random.key(2)
  c = imbalance.linear(20, 1000, 10, order="short_first", key=key, available=have)
  ascending = imbalance.linear(20, 1000, 10, order="ascending")
  assert sorted(c.tolist()) == ascending.tolist()
  # The shortest class takes the lowest count, the next the next: 3 (732), then 11, 17.
  by_size = sorted((3, 11, 17), key=lambda i: have[i])
  assert c[by_size].tolist() == ascending[:3].tolist()
  assert (c <= have).all()
  # No short class: the same draw as order='random'.
  full = np.full(20, 1300)
  assert imbalance.linear(20, 1000, 10, order="short_first", key=key,
                          available=full).tolist() == imbalance.linear(
                              20, 1000, 10, key=key).tolist()
  with pytest.raises(ValueError, match="needs available="):
    imbalance.linear(20, 1000, 10, order="short_first", key=key)
  # Rho 1.25: the lowest count is 800 > 732, so the smallest class cannot be held.
  with pytest.raises(ValueError, match=r"class 3 has 732 training examples; the case asks "
                                       r"for 800"):
    imbalance.linear(20, 1000, 1.25, order="short_first", key=key, available=have)


# --- case_counts: what the study driver calls -----------------------------------------


def test_case_counts_matches_profiles_and_prefixes_errors():
  have = _available()
  key = jax.random.key(9)
  for minority in ("random", "lowest", "short_first"):
    got = imbalance.case_counts("step", 20, 1000, 10, 0.9, minority=minority, key=key,
                                available=have)
    assert got.tolist() == imbalance.step(20, 1000, 10, 0.9, minority=minority,
                                          key=key, available=have).tolist()
  orders = {"random": "random", "lowest": "ascending", "short_first": "short_first"}
  for minority, order in orders.items():
    avail = have if minority == "short_first" else None  # others give 17 more than 868
    got = imbalance.case_counts("linear", 20, 1000, 10, minority=minority, key=key,
                                available=avail)
    assert got.tolist() == imbalance.linear(20, 1000, 10, order=order, key=key,
                                            available=avail).tolist()
  assert imbalance.case_counts("exponential", 20, 600, 10).tolist() == (
      imbalance.exponential(20, 600, 10).tolist())
  assert imbalance.case_counts("balanced", 3, 7).tolist() == [7, 7, 7]
  with pytest.raises(ValueError, match=r"^case balanced_rep0: 3 classes have fewer .*"
                                       r"class 3 has 732 training examples; the case asks "
                                       r"for 1000"):
    imbalance.case_counts("balanced", 20, 1000, available=have, case="balanced_rep0")
  with pytest.raises(ValueError, match=r"^case c: minority='short_first': 3 of 20"):
    imbalance.case_counts("step", 20, 1000, 10, 0.1, minority="short_first", key=key,
                          available=have, case="c")
  with pytest.raises(ValueError, match="unknown profile 'zipf'"):
    imbalance.case_counts("zipf", 20, 1000)
  with pytest.raises(ValueError, match="unknown minority='first'"):
    imbalance.case_counts("linear", 20, 1000, minority="first")


# --- the ImageNet config's grid -------------------------------------------------------


def _grid_counts(config, available, class_names=None):
  """{(rho, mu): counts} over mu 0.1 .. 0.9 and the config's rhos, as a driver makes them."""
  rhos = sorted({float(rho) for rho, _ in config.case_list})
  out = {}
  for rho in rhos:
    for mu in np.round(np.arange(0.1, 0.91, 0.1), 1):
      key = jax.random.fold_in(jax.random.key(config.seed), int(rho * 10 + mu * 100))
      out[rho, mu] = imbalance.case_counts(
          config.profile, len(available), config.max_count, rho, mu,
          minority=config.minority, key=key, available=available,
          class_names=class_names, case=f"rho{rho:g}_mu{mu:g}")
  return out


def test_imagenet_config_uses_the_rule():
  config = imagenet_step.get_config()
  assert config.minority == "short_first" and config.max_count == 1000
  assert "short_first" in imagenet_step.__doc__
  assert {rho for rho, _ in config.case_list} == {10, 50, 100}


def test_imagenet_config_grid_subsamples_with_short_classes_minority():
  config = imagenet_step.get_config()
  rng = np.random.default_rng(1)
  have = rng.integers(1000, 1201, 20)  # 20 classes of 600 .. 1,200 examples, 2 short
  short = [4, 13]
  have[short] = [732, 600]
  labels = _labels_of(have, seed=1)
  grid = _grid_counts(config, np.bincount(labels, minlength=20))
  assert len(grid) == 27
  for (rho, mu), counts in grid.items():
    low = max(1, int(np.floor(config.max_count / rho + 0.5)))
    k = int(np.floor(mu * 20 + 0.5))
    assert sorted(counts.tolist()) == [low] * k + [config.max_count] * (20 - k)
    assert (counts[short] == low).all(), (rho, mu)  # short classes always minority
    idx = imbalance.subsample(labels, counts, jax.random.key(int(rho * mu * 10)))
    np.testing.assert_array_equal(np.bincount(labels[idx], minlength=20), counts)
  # The config's own three cases, on the same labels.
  for rho, mu in config.case_list:
    counts = grid[float(rho), mu]
    idx = imbalance.subsample(labels, counts, jax.random.key(0))
    np.testing.assert_array_equal(np.bincount(labels[idx], minlength=20), counts)
  # Without the rule, a random draw puts a short class in the majority and fails.
  with pytest.raises(ValueError, match=r"class 13 has 600 training examples; the case "
                                       r"asks for 1000"):
    for seed in range(50):
      imbalance.case_counts("step", 20, 1000, 10, 0.1, minority="random",
                            key=jax.random.key(seed), available=have)


def _write_png(path, value):
  from PIL import Image
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)


def test_image_folder_labels_feed_the_rule(tmp_path):
  # Five classes, cap 6: 'crane' (3 images) and 'ant' (2) are short.
  sizes = {"ant": 2, "bee": 7, "crane": 3, "dog": 6, "eel": 9}
  for name, size in sizes.items():
    for i in range(size):
      _write_png(tmp_path / "train" / name / f"{i:03d}.png", 10 * i)
  train = datasets.load("image_folder", "train", data_dir=tmp_path, preprocess=False)
  assert train.class_names == tuple(sorted(sizes)) and train.images.shape[1:] == (8, 8, 3)
  have = np.bincount(train.labels, minlength=train.num_classes)
  assert have.tolist() == [2, 7, 3, 6, 9]
  # The streaming source (the driver's input='stream' path) lists the same labels.
  src = streaming.folder_source(tmp_path, "train")
  np.testing.assert_array_equal(np.bincount(src.labels, minlength=5), have)
  for mu in (0.4, 0.6, 0.8):
    for seed in range(3):
      counts = imbalance.case_counts("step", 5, 6, 3, mu, minority="short_first",
                                     key=jax.random.key(seed), available=have,
                                     class_names=train.class_names)
      assert counts[[0, 2]].tolist() == [2, 2]  # 'ant' and 'crane' minority
      idx = imbalance.subsample(train.labels, counts, jax.random.key(seed))
      np.testing.assert_array_equal(np.bincount(train.labels[idx], minlength=5), counts)
  with pytest.raises(ValueError, match=r"class 'ant' \(index 0\): 2, class 'crane' "
                                       r"\(index 2\): 3\), but mu=0.2 gives only 1"):
    imbalance.case_counts("step", 5, 6, 3, 0.2, minority="short_first",
                          key=jax.random.key(0), available=have,
                          class_names=train.class_names)
  # A config asking 'ant' for more than it has (rho 2: minority count 3) is refused.
  with pytest.raises(ValueError, match=r"class 'ant' \(index 0\) \(2 examples\) cannot "
                                       r"hold even the minority count 3"):
    imbalance.case_counts("step", 5, 6, 2, 0.4, minority="short_first",
                          key=jax.random.key(0), available=have,
                          class_names=train.class_names)
  with pytest.raises(ValueError, match=r"class 'ant' \(index 0\) has 2 training examples; "
                                       r"the case asks for 6"):
    imbalance.check_available(np.full(5, 6), have, train.class_names)
