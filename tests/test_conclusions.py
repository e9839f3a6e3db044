"""Each of the paper's conclusions on a synthetic store where it holds, where it does
not, and where the cases it needs are missing."""

import math

import numpy as np
import pytest

from imbjax import conclusions
from tests.test_stats import row

N_BOOT = 500


def _auc(method, ratio, rho, mu):
  """A study where the paper is right: imbalance hurts, oversampling best."""
  hurt = 0.03 * math.log10(rho) + 0.05 * mu
  gain = {"baseline": 0.0, "oversampling": 0.06, "undersampling": 0.03,
          "thresholding": 0.0}[method]
  if method == "oversampling" and ratio != 1:
    gain -= 0.01 * math.log10(ratio)            # partial oversampling is worse
  if method == "undersampling" and ratio != 1:
    gain += 0.01                                # some partial undersampling is better
  return 0.97 - hurt + gain


def _curve(method, flat=True):
  test = [0.5, 0.7, 0.8, 0.82] if flat else [0.5, 0.85, 0.75, 0.65]
  gap = 0.05 if method == "oversampling" else 0.10
  return {"curve_steps": [25, 50, 75, 100], "test_acc": test,
          "train_acc": [t + gap for t in test]}


def study(auc=_auc, *, rhos=(10, 100), mus=(0.2, 0.5), reps=4, ratios=(1.0, 10.0),
          methods=("baseline", "oversampling", "undersampling", "thresholding"),
          thresholding_gain=0.08, curves=True, flat=True, balanced=True, seed=0):
  rng = np.random.default_rng(seed)
  rows = []
  for rho in rhos:
    for mu in mus:
      for rep in range(reps):
        base = {}
        for m in methods:
          levels = ratios if m in ("oversampling", "undersampling") else (1.0,)
          for r in levels:
            a = auc(m, r, rho, mu) + rng.normal(0, 0.002)
            acc = a - 0.25 + rng.normal(0, 0.002)
            if m == "thresholding" and base:  # the baseline's model, read differently
              a, acc = base["auc"], base["accuracy"]
            thr = acc + thresholding_gain if m == "thresholding" else acc
            if m == "baseline":
              base = {"auc": a, "accuracy": acc}
            extra = (_curve(m, flat) if curves and m in ("oversampling", "undersampling")
                     else {})
            rows.append(row(m, rep, auc=a, accuracy=acc, thresholded_accuracy=thr,
                            rho=rho, mu=mu, ratio=r, extra=extra))
  if balanced:
    rows += [row("baseline", rep, auc=0.99, profile="balanced", rho=1.0, mu=None)
             for rep in range(reps)]
  return rows


def _check(cid, rows):
  out = conclusions.CHECKS[cid](rows, seed=0) if cid == "i" else conclusions.CHECKS[cid](
      rows, seed=0, n_boot=N_BOOT)
  assert out["id"] == cid and out["status"] in conclusions.STATUSES
  assert out["rule"] and out["claim"]
  return out


def test_i_imbalance_hurts():
  held = _check("i", study())
  assert held["status"] == "held"
  assert held["evidence"]["rho"]["series"] == 2 and held["evidence"]["mu"]["agree"] == 2
  helps = lambda m, r, rho, mu: 0.8 + 0.03 * math.log10(rho) + 0.05 * mu
  assert _check("i", study(helps, balanced=False))["status"] == "not_held"
  one = _check("i", study(rhos=(10,), mus=(0.5,), balanced=False))
  assert one["status"] == "not_enough_data"
  # With only one μ the ρ direction is judged but μ lacks data.
  assert _check("i", study(mus=(0.5,)))["status"] == "not_enough_data"
  assert _check("i", study(helps, mus=(0.5,), balanced=False))["status"] == "not_held"


def test_ii_oversampling_dominates():
  assert _check("ii", study())["status"] == "held"
  under_best = lambda m, r, rho, mu: _auc(m, r, rho, mu) + (0.05 if m == "undersampling"
                                                            else 0.0)
  out = _check("ii", study(under_best))
  assert out["status"] == "not_held"
  assert out["evidence"]["details"][0]["beaten_by"] == ["undersampling"]
  no_over = study(methods=("baseline", "undersampling"))
  assert _check("ii", no_over)["status"] == "not_enough_data"
  assert _check("ii", study(reps=1))["status"] == "not_enough_data"  # one pair per case


def test_iii_resampling_levels():
  assert _check("iii", study())["status"] == "held"
  partial_over_better = lambda m, r, rho, mu: _auc(m, r, rho, mu) + (
      0.05 if (m, r) == ("oversampling", 10.0) else 0.0)
  out = _check("iii", study(partial_over_better))
  assert out["status"] == "not_held"
  assert out["evidence"]["oversampling"]["full_not_beaten"] == 0
  no_partial_under_gain = lambda m, r, rho, mu: _auc(m, r, rho, mu) - (
      0.02 if (m, r) == ("undersampling", 10.0) else 0.0)
  assert _check("iii", study(no_partial_under_gain))["status"] == "not_held"
  assert _check("iii", study(ratios=(1.0,)))["status"] == "not_enough_data"


def test_iv_no_overfitting():
  out = _check("iv", study())
  assert out["status"] == "held"
  assert out["evidence"]["gap"]["mean_diff"] == pytest.approx(-0.05)
  falls = _check("iv", study(flat=False))
  assert falls["status"] == "not_held"
  assert falls["evidence"]["fall"]["median_fall"] == pytest.approx(0.2)
  wider = study()
  for r in wider:  # oversampling's gap now larger than undersampling's
    if r["method"] == "oversampling" and r["extra"]:
      r["extra"]["train_acc"] = [t + 0.2 for t in r["extra"]["test_acc"]]
  assert _check("iv", wider)["status"] == "not_held"
  assert _check("iv", study(curves=False))["status"] == "not_enough_data"


def test_v_thresholding_helps():
  out = _check("v", study())
  assert out["status"] == "held"
  assert out["evidence"]["mean_diff"] == pytest.approx(0.08)
  assert out["evidence"]["cases"] == {"win": 4, "tie": 0, "loss": 0}
  assert _check("v", study(thresholding_gain=-0.03))["status"] == "not_held"
  assert _check("v", study(thresholding_gain=0.0))["status"] == "not_held"
  no_thr = study(methods=("baseline", "oversampling"))
  assert _check("v", no_thr)["status"] == "not_enough_data"


def test_check_all_returns_five_in_order():
  out = conclusions.check_all(study(reps=2))
  assert [c["id"] for c in out] == ["i", "ii", "iii", "iv", "v"]
