"""Which stored rows a figure, table or report shows, and their summaries.

The selection layer under `imbjax.figures`, `imbjax.report` and `imbjax.conclusions`:
metric values of a row, the learning-rate selection (`select_best`, the paper's best of
k runs by test or validation AUC) and its note, and mean/std summaries (`summarize`).
Moved out of `figures.py` (no behaviour change); `figures` re-exports every name.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

Row = Mapping[str, Any]

METHOD_ORDER: tuple[str, ...] = (
    "baseline", "oversampling", "undersampling", "two_phase_oversampling",
    "two_phase_undersampling", "thresholding", "oversampling_thresholding",
    "undersampling_thresholding")
METRICS: tuple[str, ...] = (
    "auc", "accuracy", "thresholded_accuracy", "balanced_accuracy", "val_auc")
# Metrics that thresholding cannot change: thresholded methods are left out of them.
RANKING_METRICS = frozenset({"auc", "val_auc"})
NO_RESAMPLING = frozenset({"baseline", "thresholding"})


def is_thresholded(method: str) -> bool:
  """Whether a method is a prior-corrected reading of another method's model."""
  return method == "thresholding" or method.endswith("_thresholding")




def method_sort_key(method: str) -> tuple[int, str]:
  """Paper methods in :data:`METHOD_ORDER`, then the others by name."""
  if method in METHOD_ORDER:
    return (METHOD_ORDER.index(method), "")
  return (len(METHOD_ORDER), method)


def _check_metric(metric: str) -> None:
  if metric not in METRICS:
    raise ValueError(f"unknown metric {metric!r}; known metrics are {list(METRICS)}")


def metric_value(row: Row, metric: str) -> float:
  """The row's value of ``metric`` as a float; NaN when diverged or missing.

  For ``metric='accuracy'`` a thresholded method reads ``thresholded_accuracy``.

  Raises:
    ValueError: for a metric not in :data:`METRICS`.
  """
  _check_metric(metric)
  if row.get("status", "ok") != "ok":
    return float("nan")
  column = ("thresholded_accuracy"
            if metric == "accuracy" and is_thresholded(row["method"]) else metric)
  value = row.get(column)
  return float("nan") if value is None else float(value)


def num_minority(row: Row) -> int:
  """Number of minority classes: the column, else the length of ``minority_classes``."""
  if row.get("num_minority") is not None:
    return int(row["num_minority"])
  return len(row.get("minority_classes") or [])


def is_partial(row: Row) -> bool:
  """A resampling method run to an intermediate imbalance ratio (Section 4.5)."""
  return (row["method"] not in NO_RESAMPLING
          and not math.isclose(float(row["resample_ratio"]), 1.0))


def _slot(row: Row) -> tuple:
  # data_seed: another subset draw is another repetition, not a search candidate.
  return (row["dataset"], row["model"], row["profile"], float(row["rho"]),
          num_minority(row), json.dumps(row.get("minority_classes")), row["method"],
          float(row["resample_ratio"]), int(row["repetition"]),
          int(row["iterations"]), int(row["batch_size"]), row.get("data_seed"))


def _selected_by(candidates: Sequence[Row]) -> str:
  """The column :func:`select_best` ranks a slot's candidates by."""
  ok = [r for r in candidates if r["status"] == "ok"]
  return "val_auc" if ok and all(_finite(r.get("val_auc")) for r in ok) else "auc"


def select_best(rows: Sequence[Row]) -> list[Row]:
  """Keeps one row per slot: the best of a learning-rate search.

  A slot is everything that defines a trained model except :data:`SEARCH_AXES`
  (``base_lr``, ``lr_repeat``, ``weight_decay``, ``seed``). The winner has the highest
  ``val_auc`` when every finished candidate has a finite one, else the highest test
  ``auc``; ties go to the earlier row. A slot whose candidates all diverged keeps one
  of them, so it is counted as diverged. ``config.selection`` is not read: a study
  with a validation split selects on it.

  Args:
    rows: store rows.

  Returns:
    The selected rows, in first-seen slot order.
  """
  slots: dict[tuple, list[Row]] = defaultdict(list)
  for row in rows:
    slots[_slot(row)].append(row)
  chosen = []
  for candidates in slots.values():
    by = _selected_by(candidates)
    scored = [r for r in candidates if r["status"] == "ok" and _finite(r.get(by))]
    chosen.append(max(scored, key=lambda r: r[by]) if scored else candidates[0])
  return chosen


# Columns whose values compete for one slot (everything else defines the slot).
SEARCH_AXES: tuple[str, ...] = ("base_lr", "lr_repeat", "weight_decay", "seed")


def selection_note(rows: Sequence[Row]) -> str | None:
  """What :func:`select_best` collapses in `rows`, in one sentence (None if nothing).

  Names k (the runs per slot), the axes that vary within a slot and how the winner was
  chosen: by AUC on validation when every finished candidate has a ``val_auc``, else on
  test (counting the slots of each when both occur).
  """
  slots: dict[tuple, list[Row]] = defaultdict(list)
  for row in rows:
    slots[_slot(row)].append(row)
  searched = [c for c in slots.values() if len(c) > 1]
  if not searched:
    return None
  ks = sorted({len(c) for c in searched})
  k = str(ks[0]) if len(ks) == 1 else f"{ks[0]}-{ks[-1]}"
  axes = [(a, max(len({r.get(a) for r in c}) for c in searched)) for a in SEARCH_AXES]
  axes = [(a, n) for a, n in axes if n > 1]
  by = defaultdict(int)
  for c in searched:
    by[_selected_by(c)] += 1
  if len(by) == 1:
    rule = "on validation" if "val_auc" in by else "on test"
  else:
    rule = (f"on validation in {by['val_auc']} slots and on test in {by['auc']} "
            f"(a finished run without a validation AUC)")
  over = " × ".join(f"{n} {a}" for a, n in axes)
  return (f"Each entry: per slot (case, method, level, repetition), the best of "
          f"k = {k} runs ({over}) by AUC {rule}; {len(searched)} slots searched.")


def _finite(value: Any) -> bool:
  return value is not None and math.isfinite(float(value))


@dataclasses.dataclass(frozen=True)
class Stat:
  """Mean and spread of one metric over the repetitions of one case."""
  mean: float
  std: float
  n: int
  diverged: int


def summarize(values: Sequence[float]) -> Stat:
  """Mean and sample std (ddof=1; 0 for one value) of the finite values."""
  arr = np.asarray(values, dtype=float)
  good = arr[np.isfinite(arr)]
  n = int(good.size)
  mean = float(good.mean()) if n else float("nan")
  std = float(good.std(ddof=1)) if n > 1 else 0.0
  return Stat(mean, std, n, int(arr.size) - n)


def _aggregate(rows: Iterable[Row], metric: str,
               key: Callable[[Row], Any]) -> dict[Any, Stat]:
  groups: dict[Any, list[float]] = defaultdict(list)
  for r in rows:
    groups[key(r)].append(metric_value(r, metric))
  return {k: summarize(v) for k, v in groups.items()}


def _by_dataset_model(rows: Iterable[Row]) -> dict[tuple[str, str], list[Row]]:
  out: dict[tuple[str, str], list[Row]] = defaultdict(list)
  for r in rows:
    out[(r["dataset"], r["model"])].append(r)
  return dict(sorted(out.items()))


def _rows_for(rows: Sequence[Row], metric: str) -> list[Row]:
  """Selected rows, thresholded methods dropped for AUC."""
  rows = select_best(rows)
  if metric in RANKING_METRICS:
    return [r for r in rows if not is_thresholded(r["method"])]
  return rows

