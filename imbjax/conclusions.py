"""The paper's five conclusions as checks on a study's rows.

Buda et al. (2018) conclude that (i) class imbalance hurts, (ii) oversampling is the
dominant method on ROC AUC, (iii) oversampling should remove the imbalance entirely while
undersampling can do better when it removes only part of it, (iv) oversampling does not
overfit CNNs and (v) thresholding should be applied when accuracy matters. Each check
here turns one of them into a rule over store rows and returns::

    {"id": "i".."v", "claim": str, "rule": str,
     "status": "held" | "not_held" | "not_enough_data", "evidence": {...numbers...}}

Shared rules:

* Only imbalanced cases count (``profile != 'balanced'``), except that (i) uses the
  balanced baseline as the point ρ = 1 of each ρ series.
* "Beats" means a paired comparison (:mod:`imbjax.stats`: same subset draw and learning
  rate) whose 95% bootstrap interval lies above 0; "tied" means it contains 0. A
  per-case judgement needs at least :data:`MIN_PAIRS` pairs, since the interval of one
  pair is a point.
* "Most cases" means more than half (:data:`MOST`).
* A check with several parts is ``not_held`` when any part that has data fails, else
  ``not_enough_data`` when any part lacks data, else ``held``.

Example::

    for check in conclusions.check_all(store.rows()):
      print(check["id"], check["status"], check["evidence"])
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats as sps

from imbjax import figures
from imbjax import stats

Row = Mapping[str, Any]

HELD, NOT_HELD, NOT_ENOUGH = "held", "not_held", "not_enough_data"
STATUSES = (HELD, NOT_HELD, NOT_ENOUGH)
MIN_PAIRS = 2
MOST = 0.5
# (iv): test accuracy "does not fall" when its last value is within this much of its peak.
FALL_TOLERANCE = 0.02


def _result(cid: str, claim: str, rule: str, status: str, evidence: dict) -> dict:
  assert status in STATUSES
  return {"id": cid, "claim": claim, "rule": rule, "status": status,
          "evidence": evidence}


def _combine(parts: Sequence[str | None]) -> str:
  """Parts are HELD, NOT_HELD or None (no data)."""
  if NOT_HELD in parts:
    return NOT_HELD
  if None in parts:
    return NOT_ENOUGH
  return HELD


def _most(k: int, n: int) -> str | None:
  if n == 0:
    return None
  return HELD if k / n > MOST else NOT_HELD


def _full(variant: str) -> bool:
  return " (to ratio " not in variant


def _seed(seed: int, *parts: Any) -> int:
  return stats.comparison_seed(seed, "conclusions", *parts)


# ---- (i) ------------------------------------------------------------------------------

def imbalance_hurts(rows: Sequence[Row], *, seed: int = 0) -> dict:
  """(i) The baseline's AUC falls as ρ grows and as μ grows (step imbalance)."""
  del seed  # no resampling here
  rule = ("Baseline AUC, mean over repetitions of the LR-search winners, per step case. "
          "A ρ series fixes dataset, model and μ (the balanced baseline, if any, is its "
          "point ρ=1); a μ series fixes dataset, model and ρ; a series needs 2+ points "
          "and agrees when Spearman's correlation of AUC with ρ (or μ) is negative. "
          "Each direction holds when more than half of its series agree; both must.")
  means = stats.case_means(rows, "auc")
  step: dict[tuple, dict[tuple, float]] = defaultdict(dict)
  balanced: dict[tuple, float] = {}
  for case, by_variant in means.items():
    if "baseline" not in by_variant:
      continue
    dataset, model, profile, rho, mu, _ = case
    if profile == "step" and mu is not None:
      step[(dataset, model)][(rho, mu)] = by_variant["baseline"]
    elif profile == "balanced":
      balanced[(dataset, model)] = by_variant["baseline"]
  series = {"rho": [], "mu": []}
  for dm, points in sorted(step.items()):
    for mu in sorted({m for _, m in points}):
      xy = {r: a for (r, m), a in points.items() if m == mu}
      if dm in balanced:
        xy.setdefault(1.0, balanced[dm])
      series["rho"].append((f"{dm[0]}/{dm[1]} μ={mu:g}", xy))
    for rho in sorted({r for r, _ in points}):
      xy = {m: a for (r, m), a in points.items() if r == rho}
      series["mu"].append((f"{dm[0]}/{dm[1]} ρ={rho:g}", xy))
  evidence, parts = {}, []
  for direction, found in series.items():
    found = [(name, xy) for name, xy in found if len(xy) >= 2]
    details = []
    for name, xy in found:
      xs = sorted(xy)
      corr = float(sps.spearmanr(xs, [xy[x] for x in xs]).statistic)
      details.append({"series": name, "points": {f"{x:g}": xy[x] for x in xs},
                      "spearman": corr, "agrees": bool(corr < 0)})
    agree = sum(d["agrees"] for d in details)
    part = _most(agree, len(details))
    parts.append(part)
    evidence[direction] = {"series": len(details), "agree": agree,
                           "status": part or NOT_ENOUGH, "details": details}
  return _result("i", "Class imbalance hurts: the baseline's AUC falls as ρ and μ grow.",
                 rule, _combine(parts), evidence)


# ---- (ii) -----------------------------------------------------------------------------

def oversampling_dominates(rows: Sequence[Row], *, seed: int = 0,
                           n_boot: int = stats.N_BOOTSTRAP) -> dict:
  """(ii) Oversampling is best or tied-best on AUC in most imbalanced cases."""
  rule = (f"Per imbalanced case, each other full-level method (thresholded ones excluded:"
          f" same AUC as their base) is compared with oversampling on paired AUC "
          f"differences; oversampling is best or tied-best when no method beats it (CI "
          f"above 0). A case counts when at least one comparison has {MIN_PAIRS}+ pairs."
          f" Holds when oversampling is best or tied-best in more than half the cases.")
  index = stats.index_rows(rows, "auc")
  details = []
  for case in sorted(index, key=stats.case_sort_key):
    variants = index[case]
    if not stats.is_imbalanced(case) or "oversampling" not in variants:
      continue
    comps = [stats.paired_comparison(
        variants["oversampling"], variants[v], case=case, method=v,
        reference="oversampling", metric="auc", seed=_seed(seed, "ii"), n_boot=n_boot)
             for v in sorted(variants, key=stats.variant_sort_key)
             if v != "oversampling" and _full(v) and stats.is_comparable(v, "auc")]
    comps = [c for c in comps if c.n >= MIN_PAIRS]
    if not comps:
      continue
    beaten_by = [c.method for c in comps if c.outcome == "win"]
    details.append({"case": stats.case_label(case), "competitors": len(comps),
                    "beaten_by": beaten_by, "best_or_tied": not beaten_by})
  k = sum(d["best_or_tied"] for d in details)
  status = _most(k, len(details)) or NOT_ENOUGH
  return _result("ii", "Oversampling is the dominant method on multi-class ROC AUC.", rule,
                 status, {"cases": len(details), "best_or_tied": k, "details": details})


# ---- (iii) ----------------------------------------------------------------------------

def _level_comparisons(index, method: str, seed: int, n_boot: int) -> list[dict]:
  """Per imbalanced case: each partial level of `method` against its full level."""
  out = []
  for case in sorted(index, key=stats.case_sort_key):
    variants = index[case]
    if not stats.is_imbalanced(case) or method not in variants:
      continue
    prefix = f"{method} (to ratio "
    comps = [stats.paired_comparison(
        variants[method], variants[v], case=case, method=v, reference=method,
        metric="auc", seed=_seed(seed, "iii"), n_boot=n_boot)
             for v in sorted(variants, key=stats.variant_sort_key) if v.startswith(prefix)]
    comps = [c for c in comps if c.n >= MIN_PAIRS]
    if comps:
      out.append({"case": stats.case_label(case),
                  "partial_minus_full": {c.method: {
                      "n": c.n, "mean_diff": c.mean_diff, "ci_low": c.ci_low,
                      "ci_high": c.ci_high} for c in comps},
                  "partial_beats_full": [c.method for c in comps if c.outcome == "win"]})
  return out


def resampling_levels(rows: Sequence[Row], *, seed: int = 0,
                      n_boot: int = stats.N_BOOTSTRAP) -> dict:
  """(iii) Full oversampling beats its partial levels; some partial undersampling beats
  full undersampling."""
  rule = (f"AUC of each partial level (resample_ratio != 1, the imbalance ratio left) "
          f"paired with the full level (ratio 1) of the same method, case, draw and LR, "
          f"{MIN_PAIRS}+ pairs. Oversampling part: in more than half the cases no partial"
          f" level beats full oversampling (CI above 0). Undersampling part: in at least "
          f"one case some partial level beats full undersampling.")
  index = stats.index_rows(rows, "auc")
  over = _level_comparisons(index, "oversampling", seed, n_boot)
  under = _level_comparisons(index, "undersampling", seed, n_boot)
  over_ok = sum(not d["partial_beats_full"] for d in over)
  under_found = sum(bool(d["partial_beats_full"]) for d in under)
  part_over = _most(over_ok, len(over))
  part_under = (None if not under else HELD if under_found else NOT_HELD)
  evidence = {
      "oversampling": {"cases": len(over), "full_not_beaten": over_ok,
                       "status": part_over or NOT_ENOUGH, "details": over},
      "undersampling": {"cases": len(under), "partial_beats_full": under_found,
                        "status": part_under or NOT_ENOUGH, "details": under}}
  return _result("iii", "Oversample fully; undersampling can do better when it removes "
                 "only part of the imbalance.", rule, _combine([part_over, part_under]),
                 evidence)


# ---- (iv) -----------------------------------------------------------------------------

def _curve(row: Row) -> tuple[np.ndarray, np.ndarray] | None:
  extra = row.get("extra") or {}
  train, test = extra.get("train_acc"), extra.get("test_acc")
  if (row.get("status") != "ok" or not isinstance(train, list)
      or not isinstance(test, list) or len(test) < 2 or len(train) != len(test)):
    return None
  train, test = np.asarray(train, float), np.asarray(test, float)
  if not (np.all(np.isfinite(train)) and np.all(np.isfinite(test))):
    return None
  return train, test


def no_overfitting(rows: Sequence[Row], *, seed: int = 0,
                   n_boot: int = stats.N_BOOTSTRAP) -> dict:
  """(iv) Oversampling's test accuracy does not fall over training, and its train/test
  gap is not larger than undersampling's."""
  rule = (f"From the accuracy curves in `extra` (train_acc: eval-mode accuracy on a "
          f"class-balanced training sample, test_acc: test accuracy at each log point; "
          f"2+ points), full-level runs of "
          f"imbalanced cases. Fall of a run = peak test accuracy - last test accuracy; "
          f"it does not fall when the median fall of the oversampling runs is <= "
          f"{FALL_TOLERANCE:g}. Gap = last train - last test accuracy; oversampling's gap"
          f" is paired with undersampling's (same case, draw and LR, pooled over cases, "
          f"{MIN_PAIRS}+ pairs) and is not larger when the 95% bootstrap interval of "
          f"gap(over) - gap(under) does not lie above 0.")
  falls, gaps = [], {"oversampling": {}, "undersampling": {}}
  for r in rows:
    if r["method"] not in gaps or figures.is_partial(r):
      continue
    case = stats.case_of(r)
    curve = _curve(r)
    if curve is None or not stats.is_imbalanced(case):
      continue
    train, test = curve
    if r["method"] == "oversampling":
      falls.append(float(test.max() - test[-1]))
    gaps[r["method"]][(case, stats.pair_key(r))] = float(train[-1] - test[-1])
  evidence: dict[str, Any] = {}
  if falls:
    median = float(np.median(falls))
    part_fall = HELD if median <= FALL_TOLERANCE else NOT_HELD
    evidence["fall"] = {"runs": len(falls), "median_fall": median,
                        "max_fall": float(max(falls)), "tolerance": FALL_TOLERANCE,
                        "status": part_fall}
  else:
    part_fall = None
    evidence["fall"] = {"runs": 0, "status": NOT_ENOUGH}
  keys = sorted(set(gaps["oversampling"]) & set(gaps["undersampling"]), key=str)
  diffs = [gaps["oversampling"][k] - gaps["undersampling"][k] for k in keys]
  if len(diffs) >= MIN_PAIRS:
    low, high = stats.bootstrap_ci(diffs, seed=_seed(seed, "iv"), n_boot=n_boot)
    part_gap = NOT_HELD if low > 0 else HELD
    evidence["gap"] = {
        "n": len(diffs), "mean_gap_oversampling": float(np.mean(
            [gaps["oversampling"][k] for k in keys])),
        "mean_gap_undersampling": float(np.mean([gaps["undersampling"][k] for k in keys])),
        "mean_diff": float(np.mean(diffs)), "ci_low": low, "ci_high": high,
        "p_value": stats.wilcoxon_p(diffs), "status": part_gap}
  else:
    part_gap = None
    evidence["gap"] = {"n": len(diffs), "status": NOT_ENOUGH}
  return _result("iv", "Oversampling does not necessarily overfit CNNs.", rule,
                 _combine([part_fall, part_gap]), evidence)


# ---- (v) ------------------------------------------------------------------------------

def thresholding_helps(rows: Sequence[Row], *, seed: int = 0,
                       n_boot: int = stats.N_BOOTSTRAP) -> dict:
  """(v) Thresholding raises the baseline's accuracy."""
  rule = (f"Accuracy of 'thresholding' (the baseline's outputs divided by the class "
          f"priors) paired with 'baseline' (same model: case, draw and LR), pooled over "
          f"imbalanced cases, {MIN_PAIRS}+ pairs. Holds when the 95% bootstrap interval "
          f"of the mean difference lies above 0.")
  index = stats.index_rows(rows, "accuracy")
  pooled: dict[str, dict] = {"baseline": {}, "thresholding": {}}
  per_case = {"win": 0, "tie": 0, "loss": 0}
  for case in sorted(index, key=stats.case_sort_key):
    variants = index[case]
    if not stats.is_imbalanced(case) or not {"baseline", "thresholding"} <= set(variants):
      continue
    for m, values in pooled.items():
      values.update({(case, k): v for k, v in variants[m].items()})
    c = stats.paired_comparison(variants["baseline"], variants["thresholding"], case=case,
                                method="thresholding", reference="baseline",
                                metric="accuracy", seed=_seed(seed, "v"), n_boot=n_boot)
    if c.n >= MIN_PAIRS:
      per_case[c.outcome] += 1
  keys = sorted(set(pooled["baseline"]) & set(pooled["thresholding"]), key=str)
  diffs = [pooled["thresholding"][k] - pooled["baseline"][k] for k in keys]
  if len(diffs) < MIN_PAIRS:
    return _result("v", "Thresholding raises accuracy.", rule, NOT_ENOUGH,
                   {"n": len(diffs)})
  low, high = stats.bootstrap_ci(diffs, seed=_seed(seed, "v", "pooled"), n_boot=n_boot)
  evidence = {"n": len(diffs), "mean_diff": float(np.mean(diffs)), "ci_low": low,
              "ci_high": high, "p_value": stats.wilcoxon_p(diffs),
              "cases": per_case}
  return _result("v", "Thresholding raises accuracy.", rule,
                 HELD if low > 0 else NOT_HELD, evidence)


CHECKS: dict[str, Callable[..., dict]] = {
    "i": imbalance_hurts, "ii": oversampling_dominates, "iii": resampling_levels,
    "iv": no_overfitting, "v": thresholding_helps,
}


def check_all(rows: Sequence[Row], *, seed: int = 0) -> list[dict]:
  """Runs the five checks in order (i..v).

  Args:
    rows: store rows.
    seed: bootstrap seed.

  Returns:
    One result dict per conclusion (see the module docstring).
  """
  return [fn(rows, seed=seed) for fn in CHECKS.values()]

