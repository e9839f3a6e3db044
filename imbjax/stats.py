"""Which fix works, with what confidence: paired comparisons, ranks and tests.

Pure functions over the row dicts of :meth:`imbjax.store.ResultsStore.rows` (no JAX).

Terms:

* A **case** is one imbalance setting of one dataset and model: ``(dataset, model,
  profile, rho, mu, num_minority)`` (:func:`case_of`). Its repetitions are independent
  subset draws.
* A **variant** is a method at a resampling level: the method's name at full resampling
  (``resample_ratio == 1``) and for methods that do not resample, else
  ``'oversampling (to ratio 10)'`` (:func:`variant_of`).
* A **pair** is two rows of one case that differ only in their variant: same
  ``repetition`` and ``data_seed`` (subset draw), ``base_lr``, ``lr_repeat``,
  ``weight_decay``, ``iterations``, ``batch_size`` and study ``seed`` (:func:`pair_key`), so both models saw the same
  training subset and the same learning rate. Learning-rate searches are *not* collapsed
  here: every (base_lr, lr_repeat) gives its own pair. A pair is dropped when either
  side diverged or has a non-finite metric.

Per case, a variant is compared with a reference (the baseline, or any variant) on the
paired differences ``variant - reference`` (higher is better for both metrics):

* ``mean_diff`` and a percentile-bootstrap interval (:func:`bootstrap_ci`,
  :data:`N_BOOTSTRAP` resamples, a numpy Generator seeded from ``seed`` and the
  comparison's identity, so a comparison does not depend on what else was computed);
* ``p_value`` of ``scipy.stats.wilcoxon`` with its defaults (two-sided, zero
  differences dropped, exact for few pairs). Rule for degenerate inputs: no pair gives
  NaN; all differences zero gives 1.0 (no evidence of a difference; older scipy raises
  there).

Thresholded methods are left out of AUC comparisons: dividing by the priors does not
change a class's ranking, so their AUC is their base model's. Their accuracy is the
row's ``thresholded_accuracy`` (:func:`imbjax.figures.metric_value`).

Across cases (:func:`rank_summary`): the slot winners of the learning-rate search
(:func:`imbjax.figures.select_best`) are averaged over repetitions per case and
variant; imbalanced cases are the blocks (``profile != 'balanced'``), full-level
variants the treatments. Ranks use ``scipy.stats.rankdata`` (1 = best, ties averaged);
the Friedman test is ``scipy.stats.friedmanchisquare`` and the Nemenyi critical
difference follows Demšar (2006): ``CD = q_alpha * sqrt(k (k + 1) / (6 N))`` with
``q_alpha = studentized_range.ppf(1 - alpha, k, inf) / sqrt(2)``.

Example::

    rows = store.rows()
    comps = stats.compare(rows)                 # every variant vs the baseline
    wtl = stats.win_tie_loss(comps)             # {metric: {variant: {win, tie, loss}}}
    ranks = stats.rank_summary(rows, "auc")     # average ranks, Friedman, CD
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import warnings
import zlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats as sps

from imbjax import figures

Row = Mapping[str, Any]

METRICS: tuple[str, ...] = ("auc", "accuracy")
BASELINE = "baseline"
N_BOOTSTRAP = 10_000
CONFIDENCE = 0.95
ALPHA = 0.05


# ---- keys -----------------------------------------------------------------------------

def case_of(row: Row) -> tuple:
  """``(dataset, model, profile, rho, mu, num_minority)`` of a row; mu may be None."""
  mu = row.get("mu")
  return (row["dataset"], row["model"], row["profile"], float(row["rho"]),
          None if mu is None else float(mu), figures.num_minority(row))


def case_label(case: Sequence[Any]) -> str:
  """A readable case name, e.g. ``'digits/lenet5 step ρ=10 μ=0.5'``."""
  dataset, model, profile, rho, mu, k = case
  label = f"{dataset}/{model} {profile}"
  if profile != "balanced":
    label += f" ρ={rho:g}"
  if mu is not None:
    label += f" μ={mu:g}"
  elif profile == "step":
    label += f" {k} minority"
  return label


def variant_of(row: Row) -> str:
  """The method's name, with its resampling level when that level is partial."""
  if figures.is_partial(row):
    return f"{row['method']} (to ratio {float(row['resample_ratio']):g})"
  return row["method"]


def pair_key(row: Row) -> tuple:
  """What two rows of one case must share to be a pair (same draw, seed, LR and weight
  decay)."""
  wd = row.get("weight_decay")
  return (int(row["repetition"]), float(row["base_lr"]), int(row["lr_repeat"]),
          int(row["iterations"]), int(row["batch_size"]), int(row["seed"]),
          None if wd is None else float(wd), row.get("data_seed"))


def is_imbalanced(case: Sequence[Any]) -> bool:
  """Whether a case is an imbalance setting (not the balanced reference)."""
  return case[2] != "balanced"


def case_sort_key(case: Sequence[Any]) -> tuple:
  """Cases by dataset, model, profile (figures' order), ρ, μ and minority count."""
  dataset, model, profile, rho, mu, k = case
  order = (figures.PROFILE_ORDER.index(profile) if profile in figures.PROFILE_ORDER
           else len(figures.PROFILE_ORDER))
  return (dataset, model, order, profile, rho, -1.0 if mu is None else mu, k)


def variant_sort_key(variant: str) -> tuple:
  """Paper methods first (figures' order), full level before its partial levels."""
  method, _, level = variant.partition(" (to ratio ")
  ratio = float(level.rstrip(")")) if level else 0.0
  return figures.method_sort_key(method) + (ratio,)


def is_comparable(variant: str, metric: str) -> bool:
  """False for thresholded methods on AUC (their AUC is their base model's)."""
  method = variant.partition(" (")[0]
  return not (metric in figures.RANKING_METRICS and figures.is_thresholded(method))


def index_rows(rows: Iterable[Row], metric: str) -> dict[tuple, dict[str, dict]]:
  """``{case: {variant: {pair_key: value}}}`` of finite metric values.

  Rows that diverged or have a non-finite value are left out. Two rows with the same
  case, variant and pair key (a store never holds them) would keep the later one.
  """
  out: dict[tuple, dict[str, dict]] = defaultdict(lambda: defaultdict(dict))
  for r in rows:
    value = figures.metric_value(r, metric)
    if math.isfinite(value):
      out[case_of(r)][variant_of(r)][pair_key(r)] = value
  return out


# ---- one paired comparison --------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Comparison:
  """A variant against a reference in one case, on one metric (differences x1)."""
  case: str
  method: str
  reference: str
  metric: str
  n: int
  mean_diff: float
  ci_low: float
  ci_high: float
  p_value: float
  case_key: tuple = dataclasses.field(compare=False, repr=False, default=())

  def to_dict(self) -> dict[str, Any]:
    """The JSON fields of ``report.json``'s ``comparisons``."""
    d = dataclasses.asdict(self)
    d.pop("case_key")
    return d

  @property
  def outcome(self) -> str:
    """``'win'`` (interval above 0), ``'loss'`` (below 0) or ``'tie'`` (contains 0)."""
    if not self.n or not math.isfinite(self.ci_low):
      return "tie"
    if self.ci_low > 0:
      return "win"
    if self.ci_high < 0:
      return "loss"
    return "tie"


def comparison_seed(seed: int, *parts: Any) -> int:
  """A stable 32-bit seed for one comparison, from ``seed`` and its identity."""
  return zlib.crc32("|".join(str(p) for p in (seed,) + parts).encode()) & 0x7FFFFFFF


def bootstrap_ci(diffs: Sequence[float], *, seed: int, n_boot: int = N_BOOTSTRAP,
                 confidence: float = CONFIDENCE) -> tuple[float, float]:
  """Percentile bootstrap interval of the mean of ``diffs``.

  Args:
    diffs: the paired differences.
    seed: seed of the ``numpy.random.Generator`` that draws the resamples.
    n_boot: resamples, each ``len(diffs)`` draws with replacement.
    confidence: the interval's nominal coverage.

  Returns:
    ``(low, high)``: the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2``
    quantiles of the resampled means; NaNs when ``diffs`` is empty; ``(d, d)`` for one
    difference.
  """
  d = np.asarray(diffs, dtype=float)
  if d.size == 0:
    return float("nan"), float("nan")
  rng = np.random.default_rng(seed)
  means = np.empty(n_boot)
  chunk = max(1, 2_000_000 // d.size)  # bounded memory for long difference lists
  for start in range(0, n_boot, chunk):
    stop = min(n_boot, start + chunk)
    means[start:stop] = d[rng.integers(0, d.size, (stop - start, d.size))].mean(1)
  tail = (1.0 - confidence) / 2
  low, high = np.quantile(means, [tail, 1.0 - tail])
  return float(low), float(high)


def wilcoxon_p(diffs: Sequence[float]) -> float:
  """Two-sided ``scipy.stats.wilcoxon`` p-value with scipy's defaults.

  Returns:
    NaN for no differences, 1.0 when every difference is zero, else scipy's p-value.
  """
  d = np.asarray(diffs, dtype=float)
  if d.size == 0:
    return float("nan")
  if not np.any(d != 0):
    return 1.0
  nonzero = d[d != 0]
  if d.size <= _EXACT_PERMUTATION_MAX and (
      nonzero.size < d.size or np.unique(np.abs(nonzero)).size < nonzero.size):
    return _signed_rank_permutation_p(d)
  with warnings.catch_warnings():  # scipy warns for very few non-zero pairs
    warnings.simplefilter("ignore")
    return float(sps.wilcoxon(d).pvalue)


# scipy's `wilcoxon` takes, for up to 13 differences with zeros or ties, the permutation
# test over all 2**n sign flips, calling its statistic once per flip from Python (4,096
# calls, ~1 s, for 12 pairs).
_EXACT_PERMUTATION_MAX = 13


def _signed_rank_permutation_p(d: np.ndarray) -> float:
  """What ``scipy.stats.wilcoxon(d).pvalue`` gives for few differences with zeros or
  ties (its permutation test over every sign flip), with the statistic vectorized.

  A sign flip keeps every |d|, so the ranks (zeros dropped, ties averaged) are fixed,
  and a flip's statistic, the rank sum of its positive entries, is one masked sum. The
  enumeration and the p-value are scipy's own (`permutation_test`); equal to scipy's
  result for every input tried (tests/test_stats.py).
  """
  nonzero = d != 0
  ranks = np.zeros(d.size)
  ranks[nonzero] = sps.rankdata(np.abs(d[nonzero]))

  def rank_sum_of_positives(x, axis=-1):
    return np.sum((x > 0) * ranks, axis=axis)

  return float(sps.permutation_test((d,), rank_sum_of_positives, vectorized=True,
                                    permutation_type="samples",
                                    alternative="two-sided").pvalue)


def paired_comparison(ref_values: Mapping[tuple, float], values: Mapping[tuple, float], *,
                      case: tuple, method: str, reference: str, metric: str,
                      seed: int = 0, n_boot: int = N_BOOTSTRAP) -> Comparison:
  """Compares two ``{pair_key: value}`` maps of one case on their shared keys.

  Args:
    ref_values: the reference's values.
    values: the compared variant's values.
    case: the case key (:func:`case_of`).
    method: the compared variant's name.
    reference: the reference's name.
    metric: the metric's name.
    seed: base seed of the bootstrap (mixed with case, method, reference, metric).
    n_boot: bootstrap resamples.

  Returns:
    A :class:`Comparison`; ``n == 0`` and NaNs when no key is shared.
  """
  keys = sorted(set(ref_values) & set(values))
  diffs = np.array([values[k] - ref_values[k] for k in keys], dtype=float)
  low, high = bootstrap_ci(diffs, seed=comparison_seed(seed, case, method, reference,
                                                         metric), n_boot=n_boot)
  return Comparison(
      case=case_label(case), method=method, reference=reference, metric=metric,
      n=int(diffs.size), mean_diff=float(diffs.mean()) if diffs.size else float("nan"),
      ci_low=low, ci_high=high, p_value=wilcoxon_p(diffs), case_key=tuple(case))


def compare(rows: Sequence[Row], reference: str = BASELINE,
            metrics: Sequence[str] = METRICS, *, seed: int = 0,
            n_boot: int = N_BOOTSTRAP) -> list[Comparison]:
  """Every variant against ``reference`` in every case that has both, per metric.

  Args:
    rows: store rows (all learning rates; see the module docstring for pairing).
    reference: a variant name (:func:`variant_of`), e.g. ``'baseline'``.
    metrics: store metric columns, from :data:`METRICS`.
    seed: bootstrap seed.
    n_boot: bootstrap resamples.

  Returns:
    Comparisons with at least one pair, ordered by metric, case and variant.

  Raises:
    ValueError: for an unknown metric.
  """
  out = []
  for metric in metrics:
    if metric not in METRICS:
      raise ValueError(f"unknown metric {metric!r}; known metrics are {list(METRICS)}")
    if not is_comparable(reference, metric):
      continue
    index = index_rows(rows, metric)
    for case in sorted(index, key=case_sort_key):
      variants = index[case]
      if reference not in variants:
        continue
      for v in sorted(variants, key=variant_sort_key):
        if v == reference or not is_comparable(v, metric):
          continue
        c = paired_comparison(variants[reference], variants[v], case=case, method=v,
                              reference=reference, metric=metric, seed=seed,
                              n_boot=n_boot)
        if c.n:
          out.append(c)
  return out


def win_tie_loss(comparisons: Iterable[Comparison], reference: str = BASELINE
                 ) -> dict[str, dict[str, dict[str, int]]]:
  """Counts of cases where each variant beats, ties or loses to ``reference``.

  A win is a bootstrap interval above 0, a loss one below 0, a tie one containing 0
  (:attr:`Comparison.outcome`). Only imbalanced cases count.

  Returns:
    ``{metric: {variant: {'win': w, 'tie': t, 'loss': l}}}``.
  """
  out: dict[str, dict[str, dict[str, int]]] = defaultdict(dict)
  for c in comparisons:
    if c.reference != reference or not is_imbalanced(c.case_key):
      continue
    counts = out[c.metric].setdefault(c.method, {"win": 0, "tie": 0, "loss": 0})
    counts[c.outcome] += 1
  return {m: dict(sorted(v.items(), key=lambda kv: variant_sort_key(kv[0])))
          for m, v in out.items()}


# ---- across cases -----------------------------------------------------------------------

def case_means(rows: Sequence[Row], metric: str) -> dict[tuple, dict[str, float]]:
  """``{case: {variant: mean}}`` over repetitions of the learning-rate search winners.

  The winner of each slot is :func:`imbjax.figures.select_best`'s (best ``val_auc``
  when every candidate has one, else best test ``auc``). Non-finite values (diverged
  runs) are left out of the mean; a cell with none is absent.
  """
  groups: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
  for r in figures.select_best(rows):
    value = figures.metric_value(r, metric)
    if math.isfinite(value) and is_comparable(variant_of(r), metric):
      groups[case_of(r)][variant_of(r)].append(value)
  return {c: {v: float(np.mean(x)) for v, x in g.items()} for c, g in groups.items()}


def average_ranks(values: np.ndarray) -> np.ndarray:
  """Average rank of each column over the rows of an ``(N blocks, k)`` matrix.

  Within a row the highest value gets rank 1; ties get the mean of their ranks.
  """
  values = np.asarray(values, dtype=float)
  ranks = np.apply_along_axis(lambda x: sps.rankdata(-x), 1, values)
  return ranks.mean(axis=0)


def friedman(values: np.ndarray) -> tuple[float, float]:
  """``scipy.stats.friedmanchisquare`` over the columns of ``(N, k)``; NaNs when
  ``k < 3`` or ``N < 2``."""
  values = np.asarray(values, dtype=float)
  if values.ndim != 2 or values.shape[1] < 3 or values.shape[0] < 2:
    return float("nan"), float("nan")
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    res = sps.friedmanchisquare(*values.T)
  return float(res.statistic), float(res.pvalue)


def nemenyi_cd(k: int, n: int, alpha: float = ALPHA) -> float:
  """Nemenyi critical difference of average ranks (Demšar 2006, eq. in Sec. 3.2.2).

  Args:
    k: number of methods (>= 2).
    n: number of blocks (cases, >= 1).
    alpha: significance level.

  Returns:
    ``q_alpha * sqrt(k (k + 1) / (6 n))``; NaN when ``k < 2`` or ``n < 1``.
  """
  if k < 2 or n < 1:
    return float("nan")
  q = sps.studentized_range.ppf(1.0 - alpha, k, np.inf) / math.sqrt(2.0)
  return float(q * math.sqrt(k * (k + 1) / (6.0 * n)))


@dataclasses.dataclass(frozen=True)
class RankSummary:
  """Average ranks of the full-level variants over imbalanced cases, for one metric."""
  metric: str
  methods: tuple[str, ...]
  cases: tuple[tuple, ...]
  ranks: dict[str, float]
  statistic: float
  p_value: float
  cd: float
  dropped_cases: tuple[tuple, ...]


def rank_summary(rows: Sequence[Row], metric: str, alpha: float = ALPHA) -> RankSummary:
  """Average ranks, Friedman test and Nemenyi CD over the imbalanced cases.

  Treatments are the full-level variants (partial resampling levels are left out,
  thresholded methods too for AUC). A case is a block only if every treatment has a
  finite mean there (:func:`case_means`); the others are listed in ``dropped_cases``.

  Args:
    rows: store rows.
    metric: one of :data:`METRICS`.
    alpha: level of the critical difference.

  Returns:
    A :class:`RankSummary` (empty ranks when no complete block exists).
  """
  means = {c: {v: x for v, x in m.items() if " (to ratio " not in v}
           for c, m in case_means(rows, metric).items() if is_imbalanced(c)}
  methods = tuple(sorted({v for m in means.values() for v in m}, key=variant_sort_key))
  cases = tuple(sorted(means, key=case_sort_key))
  kept = tuple(c for c in cases if all(v in means[c] for v in methods))
  dropped = tuple(c for c in cases if c not in kept)
  if not kept or not methods:
    return RankSummary(metric, methods, (), {}, float("nan"), float("nan"),
                       float("nan"), dropped)
  matrix = np.array([[means[c][v] for v in methods] for c in kept])
  ranks = dict(zip(methods, (float(x) for x in average_ranks(matrix))))
  stat, p = friedman(matrix)
  return RankSummary(metric, methods, kept, ranks, stat, p,
                     nemenyi_cd(len(methods), len(kept), alpha), dropped)


def cd_diagram(ranks: Mapping[str, float], cd: float, path: str | os.PathLike,
               title: str = "") -> pathlib.Path:
  """Draws a critical-difference diagram (Demšar 2006, Fig. 1) as a PNG.

  Methods sit at their average rank on an axis from 1 (best, left) to k; a bar shows
  the critical difference; thick lines join groups of methods whose ranks differ by
  less than it (not significantly different under Nemenyi).

  Args:
    ranks: method -> average rank.
    cd: the critical difference (NaN: no bar, no groups).
    path: the PNG to write.
    title: figure title.

  Returns:
    ``path``.
  """
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  items = sorted(ranks.items(), key=lambda kv: kv[1])
  k = max(len(items), 2)
  half = (len(items) + 1) // 2
  span = k - 1
  fig = Figure(figsize=(9.0, 1.6 + 0.32 * half))
  FigureCanvasAgg(fig)
  ax = fig.add_axes((0.0, 0.02, 1.0, 0.8 if title else 0.9))
  # The rank axis takes the middle 40% of the width; labels fill the sides.
  ax.set_xlim(1 - 0.75 * span, k + 0.75 * span)
  ax.set_ylim(-(half + 1.5), 2.2)
  ax.axis("off")
  ax.plot([1, k], [0, 0], color="black", lw=1)
  for t in range(1, k + 1):
    ax.plot([t, t], [0, 0.15], color="black", lw=1)
    ax.text(t, 0.3, str(t), ha="center", va="bottom", fontsize=8)
  for i, (name, r) in enumerate(items):
    left = i < half
    level = -(i + 1) if left else -(len(items) - i)
    x_text = 1 - 0.1 * span if left else k + 0.1 * span
    ax.plot([r, r, x_text], [0, level, level], color="black", lw=0.8)
    ax.text(x_text, level, f"{name} ({r:.2f})" if left else f"({r:.2f}) {name}",
            ha="right" if left else "left", va="center", fontsize=8)
  if math.isfinite(cd):
    ax.plot([1, 1 + cd], [1.4, 1.4], color="tab:red", lw=2)
    ax.text(1 + cd / 2, 1.55, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=8,
            color="tab:red")
    values = [r for _, r in items]
    groups = []
    for i in range(len(values)):
      j = max(j for j in range(i, len(values)) if values[j] - values[i] < cd)
      if j > i and not any(a <= i and j <= b for a, b in groups):
        groups.append((i, j))
    for g, (i, j) in enumerate(groups):
      y = -0.35 - 0.18 * g
      ax.plot([values[i] - 0.03, values[j] + 0.03], [y, y], color="tab:gray", lw=3)
  if title:
    fig.suptitle(title, fontsize=10)
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=100)
  return path


def lr_sensitivity(rows: Sequence[Row], metric: str, column: str = "base_lr"
                   ) -> dict[str, dict[float, figures.Stat]]:
  """Each full-level variant's metric per ``base_lr`` (or `column`), before selection.

  Every run counts (all imbalanced cases, repetitions and ``lr_repeat``s pooled), so
  the spread shows how much a method depends on its learning rate.

  Args:
    rows: store rows.
    metric: one of :data:`METRICS`.
    column: the searched column to split by: ``'base_lr'`` or ``'weight_decay'``
      (rows without a value are left out).

  Returns:
    ``{variant: {value: Stat}}`` (:func:`imbjax.figures.summarize`; diverged runs
    counted in ``Stat.diverged``).
  """
  groups: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
  for r in rows:
    v = variant_of(r)
    if (" (to ratio " in v or not is_comparable(v, metric)
        or not is_imbalanced(case_of(r)) or r.get(column) is None):
      continue
    groups[v][float(r[column])].append(figures.metric_value(r, metric))
  return {v: {lr: figures.summarize(x) for lr, x in sorted(g.items())}
          for v, g in sorted(groups.items(), key=lambda kv: variant_sort_key(kv[0]))}
