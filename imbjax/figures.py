"""The paper's figures (3-8), from store rows alone (the tables: `imbjax.tables`).

Every function here takes the row dicts of :meth:`imbjax.store.ResultsStore.rows` and
writes files; nothing reads a model or a dataset. Drawing uses matplotlib's object API
with the Agg canvas (no pyplot, no global figure state), so it runs headless and in
threads.

How rows become points:

1. **One model per slot.** Rows that differ only in the learning-rate search
   (``base_lr``, ``lr_repeat``, ``weight_decay``, ``seed``) compete for one slot
   (dataset, model, case, method, resampling level, repetition, data seed);
   :func:`select_best` keeps the best by
   ``val_auc`` when every candidate has one, else by test ``auc`` (the paper's CIFAR-10
   protocol: best of eight runs on the test set).
2. **Mean and spread over repetitions.** A point is the mean of the slot winners of
   one case; the band and the table's ``±`` are the sample standard deviation
   (``ddof=1``); a single repetition has no band. Rows with ``status != 'ok'`` or a
   non-finite value are left out of the mean and counted as diverged.
3. **Thresholded methods** (``thresholding``, ``*_thresholding``) only appear for
   accuracy. Dividing the outputs by the class priors is a monotone map of each class's
   score, so their one-vs-rest AUC equals their base model's; drawing them in AUC
   figures would only duplicate lines. Their accuracy is the row's
   ``thresholded_accuracy``. They are drawn only when the store has rows for them (the
   driver writes them as methods of their own); nothing is derived from the
   ``thresholded_accuracy`` column of other methods.
4. **Partial resampling** rows are those of a resampling method with
   ``resample_ratio != 1`` (the imbalance ratio left after resampling). They appear only
   in Figure 7 and as their own table rows.

Styles are fixed per paper method (:data:`METHOD_ORDER`); other methods get the next
colours of a fixed palette in name order, so a method keeps its colour across figures.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import re
import textwrap
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from imbjax.selection import (  # noqa: F401  (re-exported: figures.select_best, ...)
    METHOD_ORDER, METRICS, NO_RESAMPLING, RANKING_METRICS, Row, Stat, _aggregate,
    _by_dataset_model, _check_metric, _finite, _rows_for, _selected_by, _slot,
    is_partial, is_thresholded, method_sort_key, metric_value, num_minority,
    select_best, selection_note, summarize)
from imbjax.tables import (  # noqa: F401  (re-exported: figures.summary_table, ...)
    METRIC_LABELS, PROFILE_ORDER, _case_label, _case_sort_key, format_cell,
    summary_table, write_tables)

# Figure 8's case in the paper: CIFAR-10, step imbalance, 5 of 10 classes minority, ρ=50.
PAPER_CURVE_CASE = {"profile": "step", "rho": 50.0, "minority_fraction": 0.5}


@dataclasses.dataclass(frozen=True)
class Style:
  """How one method is drawn."""
  color: str
  marker: str
  linestyle: str = "-"


_FIXED_STYLES = {
    "baseline": Style("black", "o"),
    "oversampling": Style("tab:blue", "s"),
    "undersampling": Style("tab:red", "^"),
    "two_phase_oversampling": Style("tab:cyan", "D"),
    "two_phase_undersampling": Style("tab:orange", "v"),
    # Thresholded models are their base models read differently: same colour, dashed.
    "thresholding": Style("black", "o", "--"),
    "oversampling_thresholding": Style("tab:blue", "s", "--"),
    "undersampling_thresholding": Style("tab:red", "^", "--"),
}
_EXTRA_COLORS = ("tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive",
                 "tab:gray", "gold", "navy", "lime", "teal")
_EXTRA_MARKERS = ("P", "X", "*", "h", "<", ">", "p", "d")


# ---- row helpers ----------------------------------------------------------------------

def method_styles(methods: Iterable[str]) -> dict[str, Style]:
  """Fixed styles for the paper's methods, the next palette entries for the others.

  Args:
    methods: method names (any order, repeats allowed).

  Returns:
    method -> :class:`Style`; unknown methods are styled in sorted name order.
  """
  methods = set(methods)
  styles = dict(_FIXED_STYLES)
  extras = sorted(methods - set(styles))
  for i, m in enumerate(extras):
    styles[m] = Style(_EXTRA_COLORS[i % len(_EXTRA_COLORS)],
                      _EXTRA_MARKERS[i % len(_EXTRA_MARKERS)],
                      "--" if is_thresholded(m) else "-")
  return {m: styles[m] for m in methods | set(_FIXED_STYLES)}



# ---- drawing --------------------------------------------------------------------------

def _slug(*parts: Any) -> str:
  return "_".join(re.sub(r"[^A-Za-z0-9._-]+", "-", f"{p:g}" if isinstance(p, float)
                         else str(p)) for p in parts)


def _new_figure(n_panels: int) -> tuple[Figure, list[Any]]:
  ncols = min(n_panels, 3)
  nrows = math.ceil(n_panels / ncols)
  fig = Figure(figsize=(4.2 * ncols, 3.4 * nrows + 0.8), layout="constrained")
  FigureCanvasAgg(fig)
  axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
  for ax in axes[n_panels:]:
    ax.set_visible(False)
  return fig, axes[:n_panels]


def _line(ax, points: Mapping[float, Stat], style: Style, label: str) -> bool:
  xs = sorted(x for x, s in points.items() if s.n)
  if not xs:
    return False
  mean = np.array([points[x].mean for x in xs]) * 100
  std = np.array([points[x].std for x in xs]) * 100
  ax.plot(xs, mean, color=style.color, marker=style.marker, linestyle=style.linestyle,
          markersize=4, label=label)
  if any(points[x].n > 1 for x in xs):
    ax.fill_between(xs, mean - std, mean + std, color=style.color, alpha=0.12,
                    linewidth=0)
  return True


def _finish(fig: Figure, axes: Sequence[Any], title: str, path: pathlib.Path
            ) -> pathlib.Path:
  handles: dict[str, Any] = {}
  for ax in axes:
    for h, lab in zip(*ax.get_legend_handles_labels()):
      handles.setdefault(lab, h)
  # Wrapped to the figure's width (~8.5 title characters per inch), never clipped.
  fig.suptitle(textwrap.fill(title, width=max(30, int(fig.get_figwidth() * 8.5))))
  fig.legend(list(handles.values()), list(handles), loc="outside lower center",
             ncol=min(4, max(1, len(handles))), fontsize="small")
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=90, bbox_inches="tight")  # nothing clipped at the edges
  return path


def _method_panels(rows: Sequence[Row], metric: str, panel_of: Callable[[Row], Any],
                   x_of: Callable[[Row], float], styles: Mapping[str, Style],
                   panel_title: Callable[[Any], str], xlabel: str, logx: bool,
                   reference: Stat | None, title: str, path: pathlib.Path
                   ) -> pathlib.Path | None:
  """One panel per ``panel_of`` value, one line per method, x = ``x_of``."""
  stats = _aggregate(rows, metric, lambda r: (panel_of(r), r["method"], x_of(r)))
  panels = sorted({p for p, _, _ in stats})
  if not any(s.n for s in stats.values()):
    return None
  fig, axes = _new_figure(len(panels))
  for ax, panel in zip(axes, panels):
    methods = sorted({m for p, m, _ in stats if p == panel}, key=method_sort_key)
    for m in methods:
      _line(ax, {x: s for (p, mm, x), s in stats.items() if p == panel and mm == m},
            styles[m], m)
    if reference is not None and reference.n:
      ax.axhline(reference.mean * 100, color="gray", linestyle=":",
                 label="balanced training set")
    if logx:
      ax.set_xscale("log")
    ax.set_title(panel_title(panel), fontsize="medium")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(METRIC_LABELS[metric])
    ax.grid(True, alpha=0.3)
  return _finish(fig, axes, title, path)


def _balanced_reference(rows: Sequence[Row], metric: str) -> Stat | None:
  values = [metric_value(r, metric) for r in rows
            if r["profile"] == "balanced" and r["method"] == "baseline"]
  return summarize(values) if values else None


def _method_figures(rows: Sequence[Row], out_dir: str | os.PathLike, metric: str,
                    profile: str, panel_of: Callable[[Row], Any],
                    x_of: Callable[[Row], float], panel_title: Callable[[Any], str],
                    xlabel: str, logx: bool, title: str, stem: str) -> list[pathlib.Path]:
  """One `_method_panels` PNG per dataset/model, from its `profile` rows (partial
  resampling levels left out) against its balanced baseline.

  `title` is formatted with ``ds`` and ``model``; the file is ``{stem}_{slug}.png``.
  """
  styles = method_styles(r["method"] for r in rows)
  rows = _rows_for(rows, metric)
  paths = []
  for (ds, model), sub in _by_dataset_model(rows).items():
    chosen = [r for r in sub if r["profile"] == profile and not is_partial(r)]
    path = _method_panels(
        chosen, metric, panel_of, x_of, styles, panel_title, xlabel, logx,
        _balanced_reference(sub, metric), title.format(ds=ds, model=model),
        pathlib.Path(out_dir) / f"{stem}_{_slug(ds, model)}.png")
    if path:
      paths.append(path)
  return paths


def _step_vs_rho(rows, out_dir, metric, number, what) -> list[pathlib.Path]:
  return _method_figures(
      rows, out_dir, metric, "step", num_minority, lambda r: float(r["rho"]),
      lambda k: f"{k} minority classes", "imbalance ratio ρ", True,
      f"Figure {number} ({{ds}} / {{model}}): step imbalance, {what}",
      f"fig{number}_step_{metric}")


# ---- the figures ----------------------------------------------------------------------

def figure3(rows: Sequence[Row], out_dir: str | os.PathLike) -> list[pathlib.Path]:
  """Step imbalance: AUC vs ρ (log x), one panel per number of minority classes.

  Args:
    rows: store rows (any mix; the relevant ones are picked).
    out_dir: directory for the PNGs (created).

  Returns:
    One PNG per dataset/model with step rows; empty if none.
  """
  return _step_vs_rho(rows, out_dir, "auc", 3, "multi-class ROC AUC")


def figure4(rows: Sequence[Row], out_dir: str | os.PathLike) -> list[pathlib.Path]:
  """Step imbalance: AUC vs number of minority classes, one panel per ρ."""
  return _method_figures(
      rows, out_dir, "auc", "step", lambda r: float(r["rho"]),
      lambda r: float(num_minority(r)), lambda rho: f"ρ = {rho:g}",
      "number of minority classes", False,
      "Figure 4 ({ds} / {model}): step imbalance, fixed ρ", "fig4_step_auc_by_minority")


def figure5(rows: Sequence[Row], out_dir: str | os.PathLike) -> list[pathlib.Path]:
  """Linear imbalance: AUC vs ρ (log x), one line per method."""
  return _method_figures(
      rows, out_dir, "auc", "linear", lambda r: "linear", lambda r: float(r["rho"]),
      lambda _: "linear imbalance", "imbalance ratio ρ", True,
      "Figure 5 ({ds} / {model}): linear imbalance, multi-class ROC AUC", "fig5_linear_auc")


def figure6(rows: Sequence[Row], out_dir: str | os.PathLike) -> list[pathlib.Path]:
  """Step imbalance: accuracy vs ρ, thresholded methods included (dashed)."""
  return _step_vs_rho(rows, out_dir, "accuracy", 6, "accuracy")


def figure7(rows: Sequence[Row], out_dir: str | os.PathLike) -> list[pathlib.Path]:
  """Partial resampling: AUC vs the imbalance ratio left after resampling.

  One file per dataset/model/ρ that has partial rows, one panel per number of
  minority classes, one line each for oversampling and undersampling. The x axis is
  log and reversed: the baseline (no resampling, ratio left = ρ) is the leftmost point
  of both lines and full resampling (ratio 1) the rightmost, so more resampling is to
  the right.
  """
  rows = _rows_for(rows, "auc")
  styles = method_styles(["baseline", "oversampling", "undersampling"])
  paths = []
  for (ds, model), sub in _by_dataset_model(rows).items():
    step = [r for r in sub if r["profile"] == "step"]
    rhos = sorted({float(r["rho"]) for r in step if is_partial(r)
                   and r["method"] in ("oversampling", "undersampling")})
    for rho in rhos:
      here = [r for r in step if float(r["rho"]) == rho]
      base = _aggregate([r for r in here if r["method"] == "baseline"], "auc",
                        num_minority)
      stats = _aggregate(
          [r for r in here if r["method"] in ("oversampling", "undersampling")],
          "auc", lambda r: (num_minority(r), r["method"], float(r["resample_ratio"])))
      if not any(s.n for s in stats.values()):
        continue  # every partial run diverged: nothing to draw
      panels = sorted({k for k, _, _ in stats} | set(base))
      fig, axes = _new_figure(len(panels))
      for ax, k in zip(axes, panels):
        for m in ("oversampling", "undersampling"):
          points = {x: s for (kk, mm, x), s in stats.items() if kk == k and mm == m}
          if k in base:
            points[rho] = base[k]  # no resampling: the ratio left is ρ
          _line(ax, points, styles[m], m)
        if k in base and base[k].n:
          ax.plot([rho], [base[k].mean * 100], color="black", marker="o",
                  linestyle="none", label="baseline")
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_title(f"{k} minority classes", fontsize="medium")
        ax.set_xlabel("imbalance ratio left after resampling (more resampling →)")
        ax.set_ylabel(METRIC_LABELS["auc"])
        ax.grid(True, alpha=0.3)
      paths.append(_finish(
          fig, axes, f"Figure 7 ({ds} / {model}): partial resampling from ρ = {rho:g}",
          pathlib.Path(out_dir) / f"fig7_partial_{_slug(ds, model)}_rho{_slug(rho)}.png"))
  return paths


def _has_curves(row: Row) -> bool:
  extra = row.get("extra") or {}
  steps = extra.get("curve_steps")
  return (isinstance(steps, list) and bool(steps)
          and isinstance(extra.get("train_acc"), list)
          and len(extra["train_acc"]) == len(steps))


def curve_case(rows: Sequence[Row]) -> tuple[str, float, int] | None:
  """The case Figure 8 draws: the one nearest the paper's (step, ρ=50, half minority).

  Step cases come first; among them the distance is ``|log(ρ/50)|`` plus the distance
  of the minority fraction from 0.5. Without step cases the first case in table order
  is taken.

  Args:
    rows: rows of one dataset/model that carry curves.

  Returns:
    ``(profile, rho, num_minority)``, or None when ``rows`` is empty.
  """
  cases = {(r["profile"], float(r["rho"]), num_minority(r), len(r["class_counts"]))
           for r in rows}
  if not cases:
    return None
  target = PAPER_CURVE_CASE

  def distance(case):
    profile, rho, k, n_classes = case
    if profile != target["profile"]:
      return (1, _case_sort_key(case[:3]))
    gap = abs(math.log(rho / target["rho"])) + abs(
        k / max(n_classes, 1) - target["minority_fraction"])
    return (0, (gap,) + _case_sort_key(case[:3]))

  return min(cases, key=distance)[:3]


def figure8(rows: Sequence[Row], out_dir: str | os.PathLike) -> list[pathlib.Path]:
  """Convergence: accuracy vs iteration, one panel per method, for one case.

  Uses rows whose ``extra`` holds ``curve_steps`` and ``train_acc`` (and, when
  present, ``test_acc``). Thresholded methods are left out (their curves are their base
  model's) and so is partial resampling. One file per dataset/model, for the case
  :func:`curve_case` picks. Curves with the same steps are averaged over repetitions;
  others are drawn one by one.
  """
  styles = method_styles(r["method"] for r in rows)
  rows = [r for r in select_best(rows) if _has_curves(r) and r["status"] == "ok"
          and not is_thresholded(r["method"]) and not is_partial(r)]
  paths = []
  for (ds, model), sub in _by_dataset_model(rows).items():
    case = curve_case(sub)
    here = [r for r in sub
            if (r["profile"], float(r["rho"]), num_minority(r)) == case]
    by_method: dict[str, list[Row]] = defaultdict(list)
    for r in here:
      by_method[r["method"]].append(r)
    methods = sorted(by_method, key=method_sort_key)
    fig, axes = _new_figure(len(methods))
    for ax, m in zip(axes, methods):
      _curves(ax, by_method[m], styles[m])
      ax.set_title(m, fontsize="medium")
      ax.set_xlabel("iteration")
      ax.set_ylabel("accuracy (%)")
      ax.grid(True, alpha=0.3)
    profile, rho, k = case
    name = _slug("fig8_curves", ds, model, profile, f"rho{rho:g}", f"m{k}")
    paths.append(_finish(fig, axes, f"Figure 8 ({ds} / {model}): {_case_label(case)}",
                         pathlib.Path(out_dir) / f"{name}.png"))
  return paths


def _curves(ax, rows: Sequence[Row], style: Style) -> None:
  steps = [tuple(r["extra"]["curve_steps"]) for r in rows]
  groups = [rows] if len(set(steps)) == 1 else [[r] for r in rows]
  for i, group in enumerate(groups):
    x = np.asarray(group[0]["extra"]["curve_steps"], dtype=float)
    for key, ls, label in (("train_acc", "--", "train"), ("test_acc", "-", "test")):
      ys = [np.asarray(r["extra"][key], dtype=float) for r in group
            if len(r["extra"].get(key) or []) == len(x)]
      if not ys:
        continue
      with warnings.catch_warnings():  # an all-NaN step stays NaN, unplotted
        warnings.simplefilter("ignore", RuntimeWarning)
        y = np.nanmean(ys, axis=0) if len(ys) > 1 else ys[0]
      ax.plot(x, y * 100, color=style.color, linestyle=ls,
              alpha=1.0 if len(groups) == 1 else 0.5,
              label=label if i == 0 else None)


# Metrics of the methods comparison (beyond the paper): row field or `extra` key.
COMPARISON_METRICS: tuple[tuple[str, str], ...] = (
    ("auc", "ROC AUC (%)"), ("accuracy", "accuracy (%)"),
    ("balanced_accuracy", "balanced accuracy (%)"), ("few", "few-shot accuracy (%)"),
    ("ece", "expected calibration error (%)"))


def _comparison_value(row: Row, metric: str) -> float:
  """The row's `metric` in percent (a store column, or a key of `extra`)."""
  if metric in METRICS:
    return 100.0 * metric_value(row, metric)
  value = (row.get("extra") or {}).get(metric)
  return float("nan") if value is None else 100.0 * float(value)


def figure_methods(rows: Sequence[Row], out_dir: str | os.PathLike) -> list[pathlib.Path]:
  """Beyond the paper: every method of a case side by side, one panel per metric.

  Drawn for each (dataset, model, case) whose rows include a method outside the
  paper's eight (the modern long-tail methods): horizontal bars of the mean over
  repetitions with the sample std as error bars, for AUC, accuracy, balanced accuracy,
  few-shot accuracy and ECE. Thresholded methods show their thresholded accuracy; the
  paper's methods and the others share one ordering (paper first).

  Returns:
    The paths written.
  """
  out_dir = pathlib.Path(out_dir)
  paths = []
  for (dataset, model), group in _by_dataset_model(select_best(rows)).items():
    if all(r["method"] in METHOD_ORDER for r in group):
      continue
    cases: dict[tuple, list[Row]] = defaultdict(list)
    for r in group:
      if not is_partial(r):
        cases[(r["profile"], r["rho"], r.get("mu"))].append(r)
    for (profile, rho, mu), case_rows in sorted(cases.items(), key=str):
      methods = sorted({r["method"] for r in case_rows}, key=method_sort_key)
      if all(m in METHOD_ORDER for m in methods):
        continue
      styles = method_styles(methods)
      fig, axes = _new_figure(len(COMPARISON_METRICS))
      fig.set_size_inches(4.2 * 3, 0.28 * len(methods) * 2 + 2.5)
      for ax, (metric, label) in zip(axes, COMPARISON_METRICS):
        stats = [summarize([_comparison_value(r, metric) for r in case_rows
                            if r["method"] == m and r.get("status") == "ok"])
                 for m in methods]
        ys = np.arange(len(methods))
        ax.barh(ys, [st.mean for st in stats], xerr=[st.std for st in stats],
                color=[styles[m].color for m in methods], alpha=0.85)
        ax.set_yticks(ys, methods if ax is axes[0] or ax is axes[3] else [],
                      fontsize="x-small")
        ax.invert_yaxis()
        ax.set_xlabel(label)
        finite = [st.mean for st in stats if math.isfinite(st.mean)]
        if finite and metric != "ece":
          lo = min(finite)
          ax.set_xlim(max(0.0, lo - (100 - lo) * 0.15), 100.0)
        ax.grid(axis="x", alpha=0.3)
      case = f"{profile} ρ={rho:g}" + ("" if mu is None else f" μ={mu:g}")
      fig.suptitle(f"Methods compared ({dataset} / {model}): {case}")
      path = out_dir / f"fig9_methods_{_slug(dataset, model, profile, rho, mu)}.png"
      path.parent.mkdir(parents=True, exist_ok=True)
      fig.savefig(path, dpi=90, bbox_inches="tight")  # nothing clipped at the edges
      paths.append(path)
  return paths

def figure_per_class(rows: Sequence[Row], out_dir: str | os.PathLike) -> list[pathlib.Path]:
  """Natural imbalance: per-class test recall against the class's training count.

  For studies of a dataset as it comes (profile 'original'), where no class was made
  minority by construction: one line per method (mean over repetitions), classes on
  the x axis by training count (log scale), so a user sees which methods lift the rare
  classes and what it costs the frequent ones. One file per dataset/model.
  """
  styles = method_styles(r["method"] for r in rows)
  rows = [r for r in select_best(rows) if r["profile"] == "original" and r["status"] == "ok"]
  paths = []
  for (ds, model), sub in _by_dataset_model(rows).items():
    by_method: dict[str, list[Row]] = defaultdict(list)
    for r in sub:
      by_method[r["method"]].append(r)
    fig, axes = _new_figure(1)
    ax = axes[0]
    drawn = False
    for m in sorted(by_method, key=method_sort_key):
      group = by_method[m]
      counts = np.asarray(group[0]["class_counts"], np.float64)
      recall = np.nanmean([np.asarray(r["per_class_recall"], np.float64) for r in group],
                          axis=0) * 100
      order = np.argsort(counts)
      st = styles[m]
      ax.plot(counts[order], recall[order], color=st.color, linestyle=st.linestyle,
              marker=st.marker, label=m)
      drawn = True
    if not drawn:
      continue
    ax.set_xscale("log")
    ax.set_xlabel("training examples of the class")
    ax.set_ylabel("test recall (%)")
    ax.grid(True, alpha=0.3)
    counts = np.asarray(sub[0]["class_counts"], np.float64)
    title = (f"Per-class recall ({ds} / {model}): natural imbalance, "
             f"rho={counts.max() / counts.min():.3g}")
    paths.append(_finish(fig, axes, title, pathlib.Path(out_dir) /
                         f"{_slug('per_class_recall', ds, model)}.png"))
  return paths


FIGURES: dict[str, Callable[[Sequence[Row], str | os.PathLike], list[pathlib.Path]]] = {
    "figure3": figure3, "figure4": figure4, "figure5": figure5, "figure6": figure6,
    "figure7": figure7, "figure8": figure8, "figure_methods": figure_methods,
    "figure_per_class": figure_per_class,
}


def make_all(workdir: str | os.PathLike, rows: Sequence[Row] | None = None
             ) -> list[pathlib.Path]:
  """Reads ``workdir``'s store and writes ``figures/*.png`` and ``figures/tables.md``.

  Figures without data are skipped; ``tables.md`` is always written.

  Args:
    workdir: a study workdir holding ``results.sqlite``.
    rows: its rows when the caller has read them already (None: read the store).

  Returns:
    The paths written, figures first, ``tables.md`` last.

  Raises:
    ValueError: if ``workdir`` holds no results store.
  """
  from imbjax import store as store_lib  # figures stay importable without the store

  workdir = pathlib.Path(workdir)
  if rows is None:
    rows = store_lib.read_rows(workdir)
  out_dir = workdir / "figures"
  paths = []
  for fn in FIGURES.values():
    paths += fn(rows, out_dir)
  by_rep = False
  study_config = workdir / "study_config.json"
  if study_config.exists():  # the layout the study asked for (`table_by_repetition`)
    by_rep = bool(json.loads(study_config.read_text()).get("table_by_repetition"))
  return paths + write_tables(rows, out_dir, by_repetition=by_rep)
