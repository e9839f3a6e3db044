"""Per-model training curves as JSON lines: ``WORKDIR/metrics.jsonl``.

A population trains many models in one vmapped program; their curves are kept apart by
run key. One JSON object per line and per (run key, log point), in the style of
big_vision's metrics file::

  {"run_key": "3f2a...", "group_id": "9c1b...", "method": "baseline", "phase": 1,
   "step": 10, "train_acc": 0.41, "test_acc": 0.38}

``train_acc`` is the eval-mode accuracy on the model's fixed class-balanced training
sample at ``step`` (docs/choices.md); ``test_acc`` the test accuracy there;
``batch_acc`` and ``loss`` the means over the training minibatches of the chunk ending
at ``step``. ``phase`` is 2 for the fine-tuning phase of two-phase
methods (steps count from the start of that phase). The values are the row's
``extra`` curves (``curve_steps``, ``train_acc``, ``test_acc``), so the file is derived
from the store and can be rebuilt from it (:func:`sync`).

The driver appends a group's lines after its rows are committed. A crash between the
two leaves the group's lines missing; :func:`sync` at the start of the next run writes
the lines of stored rows the file lacks, so every stored row has its lines and none has
them twice. :func:`read_metrics` also drops repeated (run key, phase, step) lines and a
torn last line.

Example::

    import pandas as pd
    curves = pd.DataFrame(metrics_log.read_metrics("runs/quickstart"))
"""

from __future__ import annotations

import json
import math
import os
import pathlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from imbjax import methods as methods_lib

METRICS_NAME = "metrics.jsonl"
# Row `extra` curve key -> JSONL field (each a list with one value per curve step).
CURVES: tuple[str, ...] = ("train_acc", "test_acc", "batch_acc", "loss")


def _phase(method: str) -> int:
  try:
    m = methods_lib.get(method)
    trained = methods_lib.get(m.evaluates) if m.evaluates else m
  except ValueError:  # a method this version does not know
    return 1
  return 2 if trained.is_phase2 else 1


def _number(value: Any) -> Any:
  # Strict JSON: a diverged model's NaN accuracy is written as null.
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def lines_of(row: Mapping[str, Any]) -> list[dict[str, Any]]:
  """The metric records of one store row: one per log point of its curves."""
  extra = row.get("extra") or {}
  steps = extra.get("curve_steps") or []
  phase = _phase(row["method"])
  out = []
  for i, step in enumerate(steps):
    rec = {"run_key": row["run_key"], "group_id": row["group_id"],
           "method": row["method"], "phase": phase, "step": int(step)}
    for name in CURVES:
      values = extra.get(name)
      if values is not None and i < len(values):
        rec[name] = _number(values[i])
    out.append(rec)
  return out


def append(workdir: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> int:
  """Appends the lines of `rows` to ``WORKDIR/metrics.jsonl``; returns lines written.

  Call it after the rows are committed to the store (see the module docstring).
  """
  text = "".join(json.dumps(rec, allow_nan=False) + "\n"
                 for row in rows for rec in lines_of(row))
  if not text:
    return 0
  path = pathlib.Path(workdir) / METRICS_NAME
  with open(path, "a", encoding="utf-8") as f:
    if f.tell() and not _ends_with_newline(path):
      f.write("\n")  # a torn last line stays alone on its line
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  return text.count("\n")


def _ends_with_newline(path: pathlib.Path) -> bool:
  with open(path, "rb") as f:
    f.seek(-1, os.SEEK_END)
    return f.read(1) == b"\n"


def _records(path: pathlib.Path) -> Iterable[dict[str, Any]]:
  if not path.exists():
    return
  with open(path, encoding="utf-8") as f:
    for line in f:
      try:
        rec = json.loads(line)
      except json.JSONDecodeError:  # a line torn by a crash
        continue
      if isinstance(rec, dict) and "run_key" in rec and "step" in rec:
        yield rec


def read_metrics(workdir: str | os.PathLike) -> list[dict[str, Any]]:
  """Every record of ``WORKDIR/metrics.jsonl``, once per (run key, phase, step).

  Returns:
    Dicts in file order (a repeated record keeps its first place and its last value);
    ``[]`` when the file does not exist.
  """
  out: dict[tuple, dict[str, Any]] = {}
  for rec in _records(pathlib.Path(workdir) / METRICS_NAME):
    out[(rec["run_key"], rec.get("phase", 1), rec["step"])] = rec
  return list(out.values())


def sync(workdir: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> int:
  """Appends the lines of stored `rows` whose run key the file lacks; returns lines written."""
  have = {rec["run_key"] for rec in _records(pathlib.Path(workdir) / METRICS_NAME)}
  return append(workdir, [r for r in rows if r["run_key"] not in have])
