"""One study's report: which fix works, with what confidence.

:func:`write_report` reads a workdir's results store and writes three files beside it:

* ``report.html``: self-contained (figures embedded as base64 PNG data URIs), for a
  browser or an e-mail;
* ``report.md``: the same content, figures linked from ``figures/``;
* ``report.json``: the numbers, strict JSON (NaN written as ``null``), with
  ``comparisons``, ``win_tie_loss``, ``ranks``, ``friedman``, ``conclusions``,
  ``lr_sensitivity``, ``wd_sensitivity`` (when several weight decays were searched),
  ``selection``, ``selection_in_study`` (k and the rule, :func:`imbjax.figures.
  selection_note`), ``config`` and ``versions``.

Contents: the paper's conclusions checked (:mod:`imbjax.conclusions`), the Table-4-style
tables and figures (:mod:`imbjax.figures`, written to ``WORKDIR/figures``), paired
comparisons of every method with the baseline and with oversampling, win/tie/loss
counts, average ranks with the Friedman test and a critical-difference diagram
(:mod:`imbjax.stats`), each method's sensitivity to the learning rate, the study's
config and the software versions.

Example::

    paths = report.write_report("runs/quickstart")   # [report.html, report.md, report.json]
"""

from __future__ import annotations

import base64
import datetime
import html
import importlib.metadata
import json
import math
import os
import pathlib
import platform
from collections.abc import Mapping, Sequence
from typing import Any

from imbjax import conclusions as conclusions_lib
from imbjax import figures
from imbjax import stats

HTML_NAME, MD_NAME, JSON_NAME = "report.html", "report.md", "report.json"
REFERENCES: tuple[str, ...] = ("baseline", "oversampling")
PACKAGES: tuple[str, ...] = ("imbjax", "jax", "jaxlib", "flax", "optax", "numpy", "scipy",
                             "matplotlib", "scikit-learn")
SELECTION_RULE = (
    "Runs that differ only in the learning-rate search (base_lr, lr_repeat, "
    "weight_decay) compete for one slot (dataset, model, case, method, resampling "
    "level, repetition, data seed); "
    "imbjax.figures.select_best keeps the best of them by validation AUC when every "
    "finished candidate has one, else by test AUC (the paper's CIFAR-10 protocol: best of "
    "k runs on the test set, which favours methods given more runs). Tables, figures, "
    "ranks and check (i) use these winners. Paired comparisons and checks (ii)-(v) do not "
    "select: every (base_lr, lr_repeat, weight_decay) is its own pair, so a method is "
    "compared with its reference at the same learning rate.")

Block = tuple  # ("h2"|"h3"|"p"|"pre", text) | ("table", header, rows) | ("img", path, caption)


# ---- data -----------------------------------------------------------------------------

def versions() -> dict[str, str]:
  """Python's and the installed packages' versions (``'not installed'`` if absent)."""
  out = {"python": platform.python_version()}
  for name in PACKAGES:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = "not installed"
  return out


def _read_json(path: pathlib.Path) -> Any:
  if not path.exists():
    return None
  try:
    return json.loads(path.read_text())
  except json.JSONDecodeError:
    return {"unreadable": path.read_text()[:2000]}


def _clean(value: Any) -> Any:
  """JSON-ready: NaN/inf -> None, tuples -> lists, numpy scalars -> Python."""
  if isinstance(value, Mapping):
    return {str(k): _clean(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_clean(v) for v in value]
  if hasattr(value, "item") and not isinstance(value, (str, bytes)):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def analyse(rows: Sequence[Mapping[str, Any]], *, seed: int = 0,
            n_boot: int = stats.N_BOOTSTRAP,
            references: Sequence[str] = REFERENCES) -> dict[str, Any]:
  """Every number of the report, from store rows alone.

  Args:
    rows: store rows.
    seed: bootstrap seed.
    n_boot: bootstrap resamples.
    references: variants every other variant is compared with, per case.

  Returns:
    A dict with ``comparisons`` (list of :class:`imbjax.stats.Comparison`),
    ``win_tie_loss``, ``rank_summaries`` ({metric: RankSummary}), ``conclusions``,
    ``lr_sensitivity`` ({metric: {variant: {base_lr: Stat}}}), ``wd_sensitivity``
    (the same by weight decay; ``{}`` unless several were searched) and
    ``selection_note`` (None when nothing was collapsed).
  """
  comps = [c for ref in references
           for c in stats.compare(rows, ref, seed=seed, n_boot=n_boot)]
  return {
      "comparisons": comps,
      "win_tie_loss": stats.win_tie_loss(comps, stats.BASELINE),
      "rank_summaries": {m: stats.rank_summary(rows, m) for m in stats.METRICS},
      "conclusions": conclusions_lib.check_all(rows, seed=seed),
      "lr_sensitivity": {m: stats.lr_sensitivity(rows, m) for m in stats.METRICS},
      "wd_sensitivity": wd_sensitivity(rows),
      "selection_note": figures.selection_note(rows),
  }


def wd_sensitivity(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict]:
  """``{metric: {variant: {weight_decay: Stat}}}`` when a study searched several weight
  decays (:func:`imbjax.stats.lr_sensitivity` by ``weight_decay``), else ``{}``."""
  if len({r.get("weight_decay") for r in rows} - {None}) < 2:
    return {}
  return {m: stats.lr_sensitivity(rows, m, column="weight_decay") for m in stats.METRICS}


def _sensitivity_json(sens: Mapping[str, Mapping[str, Mapping[float, Any]]]) -> dict:
  return {m: {v: {f"{x:g}": {"mean": s.mean, "std": s.std, "n": s.n,
                             "diverged": s.diverged}
                  for x, s in by_x.items()}
              for v, by_x in per_metric.items()}
          for m, per_metric in sens.items()}


def to_json(result: Mapping[str, Any], *, config: Any = None, study_config: Any = None,
            n_rows: int = 0) -> dict[str, Any]:
  """The ``report.json`` object of an :func:`analyse` result (strict-JSON ready)."""
  ranks = result["rank_summaries"]
  out = {
      "generated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="seconds"),
      "rows": n_rows,
      "selection": SELECTION_RULE,
      "comparisons": [c.to_dict() for c in result["comparisons"]],
      "win_tie_loss": result["win_tie_loss"],
      "ranks": {m: r.ranks for m, r in ranks.items()},
      "friedman": {m: {"statistic": r.statistic, "p_value": r.p_value,
                       "k": len(r.methods), "n_cases": len(r.cases),
                       "critical_difference": r.cd,
                       "cases": [stats.case_label(c) for c in r.cases],
                       "dropped_cases": [stats.case_label(c) for c in r.dropped_cases]}
                   for m, r in ranks.items()},
      "conclusions": result["conclusions"],
      "lr_sensitivity": _sensitivity_json(result["lr_sensitivity"]),
      "wd_sensitivity": _sensitivity_json(result.get("wd_sensitivity", {})),
      "selection_in_study": result.get("selection_note"),
      "config": config,
      "study_config": study_config,
      "versions": versions(),
  }
  return _clean(out)


# ---- document -------------------------------------------------------------------------

def _pct(x: float, digits: int = 2) -> str:
  return "–" if x is None or not math.isfinite(x) else f"{100 * x:.{digits}f}"


def _p(x: float) -> str:
  return "–" if x is None or not math.isfinite(x) else f"{x:.3g}"


def _md_blocks(text: str) -> list[Block]:
  """Blocks of the Markdown that :func:`imbjax.figures.summary_table` writes."""
  blocks: list[Block] = []
  table: list[list[str]] = []

  def flush():
    if table:
      blocks.append(("table", table[0], table[2:]))
      table.clear()

  for line in text.splitlines():
    line = line.strip()
    if line.startswith("|"):
      table.append([cell.strip() for cell in line.strip("|").split("|")])
      continue
    flush()
    if line.startswith("### "):
      blocks.append(("h3", line[4:]))
    elif line:
      blocks.append(("p", line.strip("_")))
  flush()
  return blocks


def _status_mark(status: str) -> str:
  return {"held": "✔ held", "not_held": "✘ not held",
          "not_enough_data": "… not enough data"}[status]


def _evidence_summary(check: Mapping[str, Any]) -> str:
  ev = check["evidence"]
  cid = check["id"]
  if cid == "i":
    return "; ".join(f"{d}: {ev[d]['agree']} of {ev[d]['series']} series fall"
                     for d in ("rho", "mu"))
  if cid == "ii":
    return f"best or tied-best in {ev['best_or_tied']} of {ev['cases']} cases"
  if cid == "iii":
    o, u = ev["oversampling"], ev["undersampling"]
    return (f"full oversampling not beaten in {o['full_not_beaten']} of {o['cases']} "
            f"cases; partial undersampling beats full in {u['partial_beats_full']} of "
            f"{u['cases']}")
  if cid == "iv":
    f, g = ev["fall"], ev["gap"]
    text = (f"median fall of test accuracy {_pct(f.get('median_fall', float('nan')))} pp "
            f"over {f['runs']} runs")
    if "mean_diff" in g:
      text += (f"; gap(over) − gap(under) = {_pct(g['mean_diff'])} pp "
               f"[{_pct(g['ci_low'])}, {_pct(g['ci_high'])}], n={g['n']}")
    return text
  if cid == "v":
    if "mean_diff" not in ev:
      return f"{ev['n']} pairs"
    return (f"accuracy +{_pct(ev['mean_diff'])} pp [{_pct(ev['ci_low'])}, "
            f"{_pct(ev['ci_high'])}], n={ev['n']}, Wilcoxon p={_p(ev['p_value'])}")
  return ""


def _blocks(workdir: pathlib.Path, rows, result, images: Mapping[str, pathlib.Path],
            config: Any, study_config: Any) -> list[Block]:
  ok = sum(r["status"] == "ok" for r in rows)
  b: list[Block] = [
      ("h1", f"Class-imbalance study report: {workdir.name}"),
      ("p", (f"Workdir {workdir}; {len(rows)} runs ({ok} finished, {len(rows) - ok} "
             f"diverged); generated "
             f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC.")),
      ("h2", "The paper's conclusions, checked"),
      ("table", ["id", "claim", "status", "evidence"],
       [[c["id"], c["claim"], _status_mark(c["status"]), _evidence_summary(c)]
        for c in result["conclusions"]]),
      ("p", "Rules:"),
  ]
  b += [("p", f"({c['id']}) {c['rule']}") for c in result["conclusions"]]
  b += [("p", ("A pair is two runs on the same training subset (repetition) with the same "
               "learning rate; intervals are 95% percentile bootstraps of the mean "
               "difference. With few pairs (fewer than about 6) bootstrap intervals are "
               "too narrow and Wilcoxon cannot reach p < 0.05: read ‘win’ as ‘every pair "
               "agreed’."))]
  b += [("h2", "How learning-rate searches are collapsed"), ("p", SELECTION_RULE),
        ("p", "In this study: " + (result.get("selection_note")
                                   or "one run per slot; nothing was collapsed."))]
  chosen = (study_config or {}).get("selection") if isinstance(study_config, dict) else None
  if chosen == "test" and "on validation" in (result.get("selection_note") or ""):
    b.append(("p", "Note: the config says selection='test', but the rows carry a "
                   "validation AUC, so the winners were chosen on validation."))
  b += [("h2", "Results (mean ± std over repetitions, ×100; n = finished runs)")]
  b += _md_blocks(figures.summary_table(rows, "auc"))
  b += [("p", ("Accuracy of thresholded methods: after dividing the outputs by the "
               "class priors."))]
  b += _md_blocks(figures.summary_table(rows, "accuracy"))
  for ref in REFERENCES:
    comps = [c for c in result["comparisons"] if c.reference == ref]
    if not comps:
      continue
    b.append(("h2", f"Paired comparisons against {ref} (differences ×100)"))
    b.append(("table", ["metric", "case", "method", "n", "mean diff", "95% CI",
                        "Wilcoxon p", "outcome"],
              [[c.metric, c.case, c.method, str(c.n), _pct(c.mean_diff),
                f"[{_pct(c.ci_low)}, {_pct(c.ci_high)}]", _p(c.p_value), c.outcome]
               for c in comps]))
  b.append(("h2", "Win / tie / loss against the baseline (imbalanced cases)"))
  b.append(("p", ("win: the interval of (method − baseline) lies above 0; loss: below 0; "
                  "tie: it contains 0.")))
  for metric, by_method in result["win_tie_loss"].items():
    b.append(("table", [metric, "win", "tie", "loss"],
              [[m, str(c["win"]), str(c["tie"]), str(c["loss"])]
               for m, c in by_method.items()]))
  b.append(("h2", "Ranks across cases"))
  b.append(("p", ("Per imbalanced case, the mean over repetitions of the selected runs; "
                  "rank 1 = best, ties averaged. Friedman test over cases (needs 3+ "
                  "methods and 2+ cases); Nemenyi critical difference at α = 0.05 "
                  "(Demšar 2006). Methods joined by a bar in the diagram are not "
                  "significantly different.")))
  for metric, r in result["rank_summaries"].items():
    b.append(("h3", f"{metric}: {len(r.methods)} methods over {len(r.cases)} cases"))
    b.append(("table", ["method", "average rank"],
              [[m, f"{x:.2f}"] for m, x in sorted(r.ranks.items(), key=lambda kv: kv[1])]))
    b.append(("p", f"Friedman χ² = {_p(r.statistic)}, p = {_p(r.p_value)}; "
                   f"critical difference = {_p(r.cd)}"
                   + (f"; cases left out (a method missing): "
                      f"{', '.join(stats.case_label(c) for c in r.dropped_cases)}"
                      if r.dropped_cases else "")))
    if f"cd_{metric}" in images:
      b.append(("img", images[f"cd_{metric}"], f"Critical-difference diagram, {metric}"))
  b.append(("h2", "Sensitivity to the learning rate"))
  b.append(("p", ("Every run, before selection, pooled over imbalanced cases and "
                  "repetitions: mean ± std ×100 (n, diverged).")))
  for metric, sens in result["lr_sensitivity"].items():
    lrs = sorted({lr for by_lr in sens.values() for lr in by_lr})
    b.append(("table", [metric] + [f"base_lr {lr:g}" for lr in lrs],
              [[v] + [figures.format_cell(by_lr[lr]) if lr in by_lr else ""
                      for lr in lrs] for v, by_lr in sens.items()]))
  if result.get("wd_sensitivity"):
    b.append(("h2", "Sensitivity to the weight decay"))
    b.append(("p", "Every run, before selection, pooled over imbalanced cases, "
                   "repetitions and learning rates: mean ± std ×100 (n, diverged)."))
  for metric, sens in result.get("wd_sensitivity", {}).items():
    wds = sorted({wd for by_wd in sens.values() for wd in by_wd})
    b.append(("table", [metric] + [f"weight_decay {wd:g}" for wd in wds],
              [[v] + [figures.format_cell(by_wd[wd]) if wd in by_wd else ""
                      for wd in wds] for v, by_wd in sens.items()]))
  b.append(("h2", "Figures"))
  b += [("img", p, p.stem) for name, p in images.items() if not name.startswith("cd_")]
  b.append(("h2", "Configuration"))
  for name, value in (("config.json", config), ("study_config.json", study_config)):
    if value is not None:
      b += [("h3", name), ("pre", json.dumps(value, indent=2, sort_keys=True))]
  b += [("h2", "Software"),
        ("table", ["package", "version"], [[k, v] for k, v in versions().items()])]
  return b


def _cell_md(text: str) -> str:
  return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: Sequence[Block], base: pathlib.Path) -> str:
  """Markdown of the blocks; images link to paths relative to ``base``."""
  out = []
  for blk in blocks:
    kind = blk[0]
    if kind in ("h1", "h2", "h3"):
      out.append("#" * int(kind[1]) + " " + blk[1])
    elif kind == "p":
      out.append(blk[1])
    elif kind == "pre":
      out.append("```json\n" + blk[1] + "\n```")
    elif kind == "table":
      header, rows = blk[1], blk[2]
      lines = ["| " + " | ".join(map(_cell_md, header)) + " |",
               "|" + "---|" * len(header)]
      lines += ["| " + " | ".join(map(_cell_md, r)) + " |" for r in rows]
      out.append("\n".join(lines))
    elif kind == "img":
      path = pathlib.Path(blk[1])
      rel = os.path.relpath(path, base)
      out.append(f"![{blk[2]}]({rel})")
  return "\n\n".join(out) + "\n"


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:0.6em 0;font-size:0.85em}
th,td{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}
th{background:#f0f0f0} img{max-width:100%;display:block;margin:0.5em 0}
pre{background:#f7f7f7;padding:0.6em;overflow-x:auto;font-size:0.8em}
figure{margin:1em 0} figcaption{font-size:0.85em;color:#555}
"""


def render_html(blocks: Sequence[Block]) -> str:
  """A self-contained HTML page of the blocks (images inlined as data URIs)."""
  esc = html.escape
  title = next((blk[1] for blk in blocks if blk[0] == "h1"), "report")
  out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
         f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>"]
  for blk in blocks:
    kind = blk[0]
    if kind in ("h1", "h2", "h3", "p"):
      out.append(f"<{kind}>{esc(blk[1])}</{kind}>")
    elif kind == "pre":
      out.append(f"<pre>{esc(blk[1])}</pre>")
    elif kind == "table":
      header, rows = blk[1], blk[2]
      out.append("<table><thead><tr>" + "".join(f"<th>{esc(str(h))}</th>" for h in header)
                 + "</tr></thead><tbody>")
      out += ["<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in r) + "</tr>"
              for r in rows]
      out.append("</tbody></table>")
    elif kind == "img":
      data = base64.b64encode(pathlib.Path(blk[1]).read_bytes()).decode("ascii")
      out.append(f'<figure><img alt="{esc(blk[2])}" src="data:image/png;base64,{data}">'
                 f"<figcaption>{esc(blk[2])}</figcaption></figure>")
  out.append("</body></html>")
  return "\n".join(out) + "\n"


def write_report(workdir: str | os.PathLike, *, seed: int = 0,
                 n_boot: int = stats.N_BOOTSTRAP) -> list[pathlib.Path]:
  """Writes ``report.html``, ``report.md`` and ``report.json`` into ``workdir``.

  Also (re)writes the figures and tables of :func:`imbjax.figures.make_all` and the
  critical-difference diagrams ``figures/cd_{metric}.png``.

  Args:
    workdir: a study workdir holding ``results.sqlite``.
    seed: bootstrap seed (the report is a function of the rows and this seed).
    n_boot: bootstrap resamples.

  Returns:
    ``[report.html, report.md, report.json]``.

  Raises:
    ValueError: if ``workdir`` holds no results store.
  """
  from imbjax import store as store_lib

  workdir = pathlib.Path(workdir)
  rows = store_lib.read_rows(workdir)
  paths = figures.make_all(workdir, rows)
  result = analyse(rows, seed=seed, n_boot=n_boot)
  images: dict[str, pathlib.Path] = {}
  for metric, r in result["rank_summaries"].items():
    if r.ranks:
      images[f"cd_{metric}"] = stats.cd_diagram(
          r.ranks, r.cd, workdir / "figures" / f"cd_{metric}.png",
          f"{metric}: average ranks over {len(r.cases)} cases")
  images.update({p.name: p for p in paths if p.suffix == ".png"})
  config = _read_json(workdir / store_lib.CONFIG_NAME)
  study_config = _read_json(workdir / "study_config.json")
  blocks = _blocks(workdir, rows, result, images, config, study_config)
  out = [workdir / HTML_NAME, workdir / MD_NAME, workdir / JSON_NAME]
  out[0].write_text(render_html(blocks))
  out[1].write_text(render_markdown(blocks, workdir))
  data = to_json(result, config=config, study_config=study_config, n_rows=len(rows))
  out[2].write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
  return out
