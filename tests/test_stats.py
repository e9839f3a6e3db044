"""Tests for imbjax.stats against scipy, hand computations and a coverage experiment."""

import math
import warnings

import numpy as np
import pytest
from PIL import Image
from scipy import stats as sps

from imbjax import stats

N_CLASSES = 10


def row(method, rep, *, auc=0.9, accuracy=0.8, thresholded_accuracy=None, rho=10.0,
        mu=0.5, profile="step", ratio=1.0, base_lr=0.01, lr_repeat=0, status="ok",
        dataset="digits", extra=None):
  """A store row with only what stats reads filled in meaningfully."""
  k = round(mu * N_CLASSES) if profile == "step" else None
  return dict(
      run_key=f"{method}-{rep}-{rho}-{mu}-{ratio}-{base_lr}-{lr_repeat}", group_id="g",
      dataset=dataset, model="lenet5", profile=profile, rho=float(rho),
      mu=mu if profile == "step" else None, num_minority=k,
      minority_classes=list(range(k or 0)), class_counts=[100] * N_CLASSES,
      repetition=rep, seed=0, method=method, resample_ratio=float(ratio),
      base_lr=float(base_lr), lr_repeat=lr_repeat, iterations=100, batch_size=16,
      auc=auc, accuracy=accuracy,
      thresholded_accuracy=accuracy if thresholded_accuracy is None
      else thresholded_accuracy,
      balanced_accuracy=0.5, per_class_recall=[0.5] * N_CLASSES, val_auc=None,
      status=status, wall_time_s=1.0, extra=extra or {})


def _only(comps, method, metric="auc"):
  found = [c for c in comps if c.method == method and c.metric == metric]
  assert len(found) == 1, found
  return found[0]


def test_paired_statistics_equal_scipy_with_ties_and_a_zero():
  base = [0.80, 0.82, 0.85, 0.79, 0.90, 0.88, 0.81]
  diffs = [0.02, -0.01, 0.02, 0.00, 0.05, 0.02, 0.03]  # ties and one zero difference
  rows = [row("baseline", i, auc=b) for i, b in enumerate(base)]
  rows += [row("oversampling", i, auc=b + d) for i, (b, d) in enumerate(zip(base, diffs))]
  c = _only(stats.compare(rows, metrics=("auc",), n_boot=2000), "oversampling")
  truth = np.array([(b + d) - b for b, d in zip(base, diffs)])
  assert c.n == 7
  assert c.reference == "baseline" and c.metric == "auc"
  assert c.mean_diff == pytest.approx(truth.mean(), abs=1e-12)
  assert c.p_value == pytest.approx(sps.wilcoxon(truth).pvalue, abs=1e-12)
  assert c.ci_low <= c.mean_diff <= c.ci_high


def test_all_equal_differences():
  rows = [row("baseline", i, auc=0.8 + i / 100) for i in range(4)]
  rows += [row("oversampling", i, auc=0.8 + i / 100) for i in range(4)]
  rows += [row("undersampling", i, auc=0.8 + i / 100 + 0.25) for i in range(4)]
  comps = stats.compare(rows, metrics=("auc",), n_boot=500)
  same = _only(comps, "oversampling")
  assert (same.n, same.mean_diff, same.ci_low, same.ci_high, same.p_value) == (
      4, 0.0, 0.0, 0.0, 1.0)
  assert same.outcome == "tie"
  shifted = _only(comps, "undersampling")
  # Equal non-zero differences: the interval is a point and scipy's exact p applies.
  assert shifted.ci_low == pytest.approx(0.25) and shifted.ci_high == pytest.approx(0.25)
  assert shifted.p_value == pytest.approx(sps.wilcoxon([0.25] * 4).pvalue)
  assert shifted.outcome == "win"
  assert stats.wilcoxon_p([]) != stats.wilcoxon_p([])  # NaN: no pairs


def test_wilcoxon_p_equals_scipy_with_zeros_ties_and_without():
  """`wilcoxon_p` computes scipy's permutation test itself (vectorized) for up to 13
  differences with zeros or ties: the p-value must be scipy's, exactly, on those inputs
  and on the ones it leaves to scipy (no ties: exact; over 13 with ties: asymptotic)."""
  rng = np.random.default_rng(3)
  inputs = [[0.25, 0.25, -0.5, 0.0], [0.0, 0.0, 0.1], [0.1, -0.1, 0.2, 0.2, 0.3, -0.3],
            np.linspace(-1, 2, 12).round(0),                  # 12 with ties: 4,096 flips
            rng.normal(size=9), rng.normal(size=20),          # no ties: scipy's exact
            rng.integers(-3, 4, 16) / 4.0]                    # 16 with ties: asymptotic
  inputs += [rng.integers(-3, 4, int(n)) / 4.0 for n in rng.integers(1, 10, 20)]
  checked = 0
  for d in inputs:
    d = np.asarray(d, dtype=float)
    if not np.any(d != 0):
      continue
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      want = float(sps.wilcoxon(d).pvalue)
    assert stats.wilcoxon_p(d) == want, d
    checked += 1
  assert checked >= 20


def test_pairs_share_draw_and_learning_rate_and_skip_diverged_runs():
  rows = [row("baseline", 0, auc=0.80), row("oversampling", 0, auc=0.90),
          # another LR: its own pair
          row("baseline", 0, auc=0.70, base_lr=0.1), row("oversampling", 0, auc=0.72,
                                                          base_lr=0.1),
          # unpaired: only one side exists
          row("oversampling", 1, auc=0.99), row("baseline", 2, auc=0.5, lr_repeat=1),
          # diverged: dropped
          row("baseline", 3, auc=float("nan"), status="diverged"),
          row("oversampling", 3, auc=0.95),
          # another case: compared on its own
          row("baseline", 0, auc=0.6, rho=100.0), row("oversampling", 0, auc=0.9,
                                                      rho=100.0)]
  comps = [c for c in stats.compare(rows, metrics=("auc",), n_boot=200)
           if c.method == "oversampling"]
  assert [(c.case, c.n) for c in comps] == [
      ("digits/lenet5 step ρ=10 μ=0.5", 2), ("digits/lenet5 step ρ=100 μ=0.5", 1)]
  assert comps[0].mean_diff == pytest.approx(np.mean([0.10, 0.02]))


def test_thresholded_methods_use_their_accuracy_and_skip_auc():
  rows = [row("baseline", i, accuracy=0.6, thresholded_accuracy=0.7) for i in range(3)]
  rows += [row("thresholding", i, accuracy=0.6, thresholded_accuracy=0.75 + i / 100)
           for i in range(3)]
  rows += [row("oversampling", i, accuracy=0.7, auc=0.95) for i in range(3)]
  comps = stats.compare(rows, n_boot=200)
  assert not [c for c in comps if c.method == "thresholding" and c.metric == "auc"]
  t = _only(comps, "thresholding", "accuracy")
  assert t.mean_diff == pytest.approx(np.mean([0.15, 0.16, 0.17]))


def test_partial_levels_are_variants_of_their_own():
  rows = [row("baseline", i) for i in range(2)]
  rows += [row("oversampling", i, ratio=r, auc=0.9 + r / 1000) for i in range(2)
           for r in (1.0, 10.0)]
  methods = [c.method for c in stats.compare(rows, metrics=("auc",), n_boot=100)]
  assert methods == ["oversampling", "oversampling (to ratio 10)"]


def test_bootstrap_interval_covers_the_true_mean_at_its_nominal_rate():
  rng = np.random.default_rng(1234)
  true_mean, draws, n = 0.3, 400, 40
  covered = 0
  for i in range(draws):
    diffs = rng.normal(true_mean, 1.0, n)
    low, high = stats.bootstrap_ci(diffs, seed=i, n_boot=2000)
    covered += low <= true_mean <= high
  assert 0.91 <= covered / draws <= 0.98, covered / draws


def test_bootstrap_is_seeded():
  d = np.random.default_rng(0).normal(size=12)
  assert stats.bootstrap_ci(d, seed=3) == stats.bootstrap_ci(d, seed=3)
  assert stats.bootstrap_ci(d, seed=3) != stats.bootstrap_ci(d, seed=4)
  assert all(math.isnan(x) for x in stats.bootstrap_ci([], seed=0))


def test_average_ranks_and_friedman_equal_a_hand_computation():
  # 4 cases x 3 methods; higher is better. Hand ranks per row (ties averaged):
  values = np.array([[0.90, 0.80, 0.70],    # 1, 2, 3
                     [0.85, 0.95, 0.75],    # 2, 1, 3
                     [0.90, 0.90, 0.60],    # 1.5, 1.5, 3
                     [0.70, 0.80, 0.90]])   # 3, 2, 1
  ranks = np.array([[1, 2, 3], [2, 1, 3], [1.5, 1.5, 3], [3, 2, 1]])
  avg = ranks.mean(0)
  np.testing.assert_allclose(stats.average_ranks(values), avg)
  n, k = values.shape
  # Friedman's statistic with the tie correction (Demšar 2006 eq. and scipy's rule):
  chi2 = 12 * n / (k * (k + 1)) * (np.sum(avg ** 2) - k * (k + 1) ** 2 / 4)
  ties = sum(t ** 3 - t for t in (2,))  # one pair tied in row 3
  chi2 /= 1 - ties / (n * (k ** 3 - k))
  stat, p = stats.friedman(values)
  assert stat == pytest.approx(chi2)
  assert p == pytest.approx(sps.chi2.sf(chi2, k - 1))
  assert all(math.isnan(x) for x in stats.friedman(values[:, :2]))  # k < 3


def test_nemenyi_cd_matches_demsar_table():
  # Demšar (2006), Table 5(a): q_0.05 for k = 2..10.
  q = {2: 1.960, 3: 2.343, 4: 2.569, 5: 2.728, 6: 2.850, 7: 2.949, 8: 3.031, 9: 3.102,
       10: 3.164}
  for k, qk in q.items():
    assert stats.nemenyi_cd(k, 14) == pytest.approx(
        qk * math.sqrt(k * (k + 1) / (6 * 14)), abs=2e-3)


def test_rank_summary_over_cases():
  rows = []
  table = {10.0: (0.80, 0.90, 0.85), 100.0: (0.70, 0.85, 0.86), 1000.0: (0.60, 0.80, 0.70)}
  for rho, values in table.items():
    for m, v in zip(("baseline", "oversampling", "undersampling"), values):
      for rep in range(2):
        rows.append(row(m, rep, auc=v + (0.01 if rep else -0.01), rho=rho))
  rows.append(row("baseline", 0, auc=0.99, profile="balanced", rho=1.0, mu=None))
  rows.append(row("focal_loss", 0, auc=0.99, rho=10.0))  # only in one case
  s = stats.rank_summary(rows, "auc")
  # focal_loss is missing from two cases, so those are dropped: one block remains.
  assert len(s.cases) == 1 and len(s.dropped_cases) == 2
  rows = rows[:-1]
  s = stats.rank_summary(rows, "auc")
  assert s.methods == ("baseline", "oversampling", "undersampling")
  assert s.ranks == pytest.approx({"baseline": 3.0, "oversampling": 4 / 3,
                                   "undersampling": 5 / 3})
  ref = sps.friedmanchisquare([0.8, 0.7, 0.6], [0.9, 0.85, 0.8], [0.85, 0.86, 0.7])
  assert (s.statistic, s.p_value) == pytest.approx((ref.statistic, ref.pvalue))
  assert s.cd == pytest.approx(stats.nemenyi_cd(3, 3))


def test_win_tie_loss_counts_by_interval():
  rows = []
  for rho, shift in ((10.0, 0.05), (20.0, -0.05), (30.0, None)):
    for rep in range(3):
      rows.append(row("baseline", rep, auc=0.8, rho=rho))
      d = shift if shift is not None else (-0.01, 0.0, 0.01)[rep]
      rows.append(row("oversampling", rep, auc=0.8 + d, rho=rho))
  wtl = stats.win_tie_loss(stats.compare(rows, metrics=("auc",), n_boot=500))
  assert wtl == {"auc": {"oversampling": {"win": 1, "tie": 1, "loss": 1}}}


def test_lr_sensitivity_pools_every_run_per_learning_rate():
  rows = [row("baseline", rep, auc=a, base_lr=lr)
          for rep in range(2) for lr, a in ((0.01, 0.8), (0.1, 0.6))]
  rows.append(row("baseline", 2, auc=float("nan"), base_lr=0.1, status="diverged"))
  sens = stats.lr_sensitivity(rows, "auc")
  assert sens["baseline"][0.01].mean == pytest.approx(0.8)
  assert (sens["baseline"][0.1].n, sens["baseline"][0.1].diverged) == (2, 1)


def test_cd_diagram_is_a_drawn_png(tmp_path):
  path = stats.cd_diagram({"a": 1.2, "b": 2.0, "c": 2.8}, 1.1, tmp_path / "cd.png", "t")
  img = np.asarray(Image.open(path).convert("L"))
  assert img.shape[0] > 50 and img.shape[1] > 300
  assert (img < 128).mean() > 0.003  # lines and text, not blank
