"""Table-4-style Markdown tables from store rows: methods by imbalance case, cells
``mean ± std (n)`` x100 (`summary_table`, `write_tables`).

How rows become cells (one model per slot, mean and spread over repetitions,
thresholded and partial-resampling rows) is as for the figures: `imbjax.figures`.
"""

from __future__ import annotations

import math
import os
import pathlib
from collections.abc import Sequence

from imbjax.selection import (Row, Stat, _aggregate, _by_dataset_model, _check_metric,
                              _rows_for, is_partial, method_sort_key, num_minority,
                              selection_note)

PROFILE_ORDER: tuple[str, ...] = ("balanced", "step", "linear", "exponential")
METRIC_LABELS = {
    "auc": "multi-class ROC AUC (%)", "val_auc": "validation ROC AUC (%)",
    "accuracy": "accuracy (%)", "thresholded_accuracy": "thresholded accuracy (%)",
    "balanced_accuracy": "balanced accuracy (%)"}


def _case_sort_key(case: tuple) -> tuple:
  profile, rest = case[0], case[1:]
  rank = PROFILE_ORDER.index(profile) if profile in PROFILE_ORDER else len(PROFILE_ORDER)
  # None (no μ for linear, say) sorts first instead of failing to compare with floats.
  return (rank, profile) + tuple(-1.0 if v is None else v for v in rest)


def _case_of(row: Row) -> tuple:
  k = num_minority(row) if row["profile"] == "step" else None
  return (row["profile"], float(row["rho"]), k,
          None if row.get("mu") is None else float(row["mu"]))


def _case_label(case: tuple) -> str:
  profile, rho = case[0], case[1]
  if profile == "balanced":
    return "balanced"
  label = f"{profile} ρ={rho:g}"
  if profile == "step":
    mu = case[3] if len(case) > 3 and case[3] is not None else None
    label += f" μ={mu:g}" if mu is not None else f" {case[2]} minority"
  return label


def _method_label(method: str, ratio: float) -> str:
  return method if math.isclose(ratio, 1.0) else f"{method} (to ratio {ratio:g})"


def format_cell(stat: Stat) -> str:
  """``'mean ± std (n)'`` of a metric ×100; diverged runs counted inside the brackets."""
  div = f", {stat.diverged} diverged" if stat.diverged else ""
  if not stat.n:
    return f"– (0{div})"
  spread = f" ± {stat.std * 100:.2f}" if stat.n > 1 else ""
  return f"{stat.mean * 100:.2f}{spread} ({stat.n}{div})"


def summary_table(rows: Sequence[Row], metric: str = "auc", *,
                  by_repetition: bool = False) -> str:
  """Markdown table(s): rows = methods, columns = imbalance cases, cells ×100.

  With ``by_repetition`` each repetition of a case is its own column (the paper's
  Table 4 reports the three ImageNet runs of one case side by side).

  One table per dataset/model, each under a ``###`` heading. Cells read
  ``mean ± std (n)`` (see :func:`format_cell`); learning-rate searches are reduced
  first with :func:`select_best`, and a line under the table says how
  (:func:`selection_note`: k runs per slot, the axes searched, by AUC on validation or
  on test).

  Args:
    rows: store rows.
    metric: one of :data:`METRICS`.
    by_repetition: one column per (case, repetition) instead of per case.

  Returns:
    Markdown text; ``'_no results_'`` when there are no rows.

  Raises:
    ValueError: for an unknown metric.
  """
  _check_metric(metric)
  all_rows = rows
  rows = _rows_for(rows, metric)
  if not rows:
    return "_no results_\n"
  notes = {dm: selection_note(sub) for dm, sub in _by_dataset_model(all_rows).items()}
  out = []
  for (ds, model), sub in _by_dataset_model(rows).items():
    stats = _aggregate(sub, metric, lambda r: (
        (r["method"], float(r["resample_ratio"]) if is_partial(r) else 1.0),
        _case_of(r) + ((int(r["repetition"]),) if by_repetition else ())))
    methods = sorted({m for m, _ in stats},
                     key=lambda mr: (method_sort_key(mr[0]), mr[1] != 1.0, -mr[1]))
    cases = sorted({c for _, c in stats}, key=_case_sort_key)
    out.append(f"### {ds} / {model}: {METRIC_LABELS[metric]}\n")
    label = (lambda c: f"{_case_label(c[:-1])}, run {c[-1] + 1}") if by_repetition \
        else _case_label
    out.append("| method | " + " | ".join(label(c) for c in cases) + " |")
    out.append("|---|" + "---|" * len(cases))
    for m in methods:
      cells = [format_cell(stats[(m, c)]) if (m, c) in stats else "" for c in cases]
      out.append(f"| {_method_label(*m)} | " + " | ".join(cells) + " |")
    out.append("")
    if notes.get((ds, model)):
      out += [f"_{notes[(ds, model)]}_", ""]
  return "\n".join(out) + "\n"


def write_tables(rows: Sequence[Row], out_dir: str | os.PathLike, *,
                 by_repetition: bool = False) -> list[pathlib.Path]:
  """Writes ``tables.md``: the AUC table and the accuracy table (Table 4 style; with
  `by_repetition`, one column per repetition of a case)."""
  path = pathlib.Path(out_dir) / "tables.md"
  path.parent.mkdir(parents=True, exist_ok=True)
  text = ("# Results (mean ± std over repetitions, ×100; n = finished runs)\n\n"
          "## Multi-class ROC AUC\n\n" + summary_table(rows, "auc",
                                                         by_repetition=by_repetition)
          + "\n## Accuracy (thresholded methods: after dividing by the prior)\n\n"
          + summary_table(rows, "accuracy", by_repetition=by_repetition))
  path.write_text(text)
  return [path]
