"""The results store's row: its columns (`SCHEMA`, `COLUMN_DOCS`), which of them are
JSON, nullable, defaulted or provenance, and how a row is encoded for SQLite and read
back (`encode_row`, `decode_row`, `result_of_row`). `imbjax.store` keeps the rows;
this module says what one is.
"""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


# The single source of truth for the row layout: the driver and the CSV export read it.
SCHEMA: list[tuple[str, str]] = [
    ("run_key", "TEXT"),
    ("group_id", "TEXT"),
    ("dataset", "TEXT"),
    ("model", "TEXT"),
    ("profile", "TEXT"),
    ("rho", "REAL"),
    ("mu", "REAL"),
    ("num_minority", "INTEGER"),
    ("minority_classes", "TEXT"),
    ("class_counts", "TEXT"),
    ("repetition", "INTEGER"),
    ("seed", "INTEGER"),
    ("method", "TEXT"),
    ("resample_ratio", "REAL"),
    ("base_lr", "REAL"),
    ("lr_repeat", "INTEGER"),
    ("iterations", "INTEGER"),
    ("batch_size", "INTEGER"),
    ("auc", "REAL"),
    ("accuracy", "REAL"),
    ("thresholded_accuracy", "REAL"),
    ("balanced_accuracy", "REAL"),
    ("per_class_recall", "TEXT"),
    ("val_auc", "REAL"),
    ("status", "TEXT"),
    ("wall_time_s", "REAL"),
    ("extra", "TEXT"),
    ("created_at", "TEXT"),
    # Added later (nullable): `_add_new_columns` appends them to older stores.
    ("data_seed", "INTEGER"),
    ("weight_decay", "REAL"),
]
ADDED_COLUMNS = ("data_seed", "weight_decay")
COLUMNS: tuple[str, ...] = tuple(name for name, _ in SCHEMA)
SQL_TYPES: dict[str, str] = dict(SCHEMA)
JSON_COLUMNS = frozenset({"minority_classes", "class_counts", "per_class_recall", "extra"})
# data_seed and weight_decay came later: stores written before them hold NULL there.
NULLABLE_COLUMNS = frozenset({"mu", "num_minority", "val_auc", "data_seed", "weight_decay"})
# Columns the store fills when a row omits them: nullable ones get None, these get a value.
DEFAULTED_COLUMNS = frozenset({"extra", "created_at"})
REQUIRED_COLUMNS = frozenset(COLUMNS) - NULLABLE_COLUMNS - DEFAULTED_COLUMNS
# Where a run was trained and how long it took, not what it produced: a duplicate row
# may differ here and still count as the same result.
PROVENANCE_COLUMNS = frozenset({"group_id", "wall_time_s", "created_at"})
STATUSES = ("ok", "diverged")

# What each column means (`store_csv.columns_markdown` writes it beside the CSV as
# results.columns.md). Metrics are fractions in [0, 1] on the test split.
COLUMN_DOCS: dict[str, str] = {
    "run_key": "stable hash of everything that defines the row (dataset, model, case, "
               "method, resampling level, learning rate and repeat, iterations, batch "
               "size, seed, and data_seed / weight_decay when they are grid axes); "
               "primary key, what a rerun skips",
    "group_id": "the population group that trained the row's model (provenance)",
    "dataset": "dataset name (config.dataset)",
    "model": "network name (config.model)",
    "profile": "imbalance profile: step, linear, exponential, balanced or original",
    "rho": "imbalance ratio: largest class count over smallest (measured for 'original')",
    "mu": "step imbalance: fraction of minority classes (NULL for other profiles; "
          "measured for 'original')",
    "num_minority": "number of minority classes (NULL where the profile has none)",
    "minority_classes": "JSON list of the minority class indices",
    "class_counts": "JSON list: training examples per class in the row's subset",
    "repetition": "index of the subset draw; with data_seed it names the training subset",
    "seed": "the training seed (config.seed): model initialisation, batch order, "
            "augmentation. Not the subset draw (data_seed)",
    "method": "the method scored (imbjax.methods); evaluation-only methods score "
              "another method's model",
    "resample_ratio": "imbalance ratio left after resampling (1 = fully balanced; "
                      "partial resampling above 1); 1 for methods that do not resample",
    "base_lr": "peak learning rate of the run",
    "lr_repeat": "index of the run among repeats of one learning rate (lr_repeats)",
    "iterations": "training steps (per phase for two-phase methods)",
    "batch_size": "examples per step",
    "auc": "multi-class one-vs-rest ROC AUC on the test split (NaN if diverged)",
    "accuracy": "top-1 test accuracy of the method's decision",
    "thresholded_accuracy": "test accuracy after dividing the outputs by the training "
                            "class priors",
    "balanced_accuracy": "mean per-class recall on the test split",
    "per_class_recall": "JSON list: test recall of each class",
    "val_auc": "ROC AUC on the held-out validation split (NULL without one)",
    "status": "'ok' or 'diverged' (non-finite loss or outputs); diverged rows keep "
              "NaN metrics",
    "wall_time_s": "amortised wall time of the row's model in seconds: its share of "
                   "its population group's phase 1, plus its share of phase 2 for "
                   "two-phase methods; evaluation-only methods report the model they "
                   "score (imbjax.study.walltime). Compilation included. Group totals: "
                   "extra.group_wall_s, extra.group_models",
    "extra": "JSON object: curve_steps, train_acc, test_acc (accuracy at each log "
             "point, also in metrics.jsonl), ece, many/medium/few (shot accuracy), tau "
             "(post-hoc methods), subset_key, data_seed, group_wall_s, group_models, "
             "phase_wall_s, phase_models, wall_share_s (the row's share of its group's "
             "wall time; they sum to the study's training time)",
    "created_at": "UTC time the row was written (ISO 8601)",
    "data_seed": "seed of the subset draws and the validation split (config.data_seed, "
                 "or seed when unset); NULL in stores older than the column",
    "weight_decay": "the run's weight decay; NULL in stores older than the column",
}
# Keys of `extra` that, like PROVENANCE_COLUMNS, say how long a run took, not what it
# produced: a duplicate row may differ there.
PROVENANCE_EXTRA_KEYS = frozenset({"group_wall_s", "group_models", "phase_wall_s",
                                   "phase_models", "wall_share_s"})


def result_of_row(row: dict) -> dict:
  """A row as `ResultsStore.rows` reads it, less its provenance: without the
  :data:`PROVENANCE_COLUMNS` and without the :data:`PROVENANCE_EXTRA_KEYS` of ``extra``.

  What the duplicate rule compares, and what a run key alone must determine (whatever
  population, device count or process count the run trained in).
  """
  out = {k: v for k, v in row.items() if k not in PROVENANCE_COLUMNS}
  if isinstance(out.get("extra"), dict):
    out["extra"] = {k: v for k, v in out["extra"].items()
                    if k not in PROVENANCE_EXTRA_KEYS}
  return out




def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _json_default(obj: Any) -> Any:
  # numpy values reach rows straight from jax.device_get; make them plain Python.
  if isinstance(obj, np.ndarray):
    return obj.tolist()
  if isinstance(obj, np.generic):
    return obj.item()
  raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _is_int(value: Any) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _encode_value(name: str, value: Any) -> Any:
  """Turns one Python value into what SQLite stores for column ``name``."""
  if name in JSON_COLUMNS:
    if isinstance(value, (str, bytes)):
      # A pre-encoded string would be stored as a JSON string and come back as
      # one, so a double encoding would slip through silently.
      raise ValueError(
          f"column {name!r} takes a JSON-serializable object (list/dict), got the "
          f"string {value!r}; pass the decoded object")
    try:
      return json.dumps(value, default=_json_default, sort_keys=True)
    except TypeError as e:
      raise ValueError(f"column {name!r}: value {value!r} is not JSON serializable: "
                       f"{e}") from None
  if value is None:
    if name in NULLABLE_COLUMNS:
      return None
    raise ValueError(f"column {name!r} may not be None; nullable columns are "
                     f"{sorted(NULLABLE_COLUMNS)}")
  sqltype = SQL_TYPES[name]
  if sqltype == "TEXT":
    if not isinstance(value, str):
      raise ValueError(f"column {name!r} takes a str, got {value!r} "
                       f"({type(value).__name__})")
    if name == "status" and value not in STATUSES:
      raise ValueError(f"status {value!r} is not one of {list(STATUSES)}")
    return value
  if sqltype == "INTEGER":
    if not _is_int(value):
      raise ValueError(f"column {name!r} takes an int, got {value!r} "
                       f"({type(value).__name__})")
    return int(value)
  # REAL
  if not (_is_int(value) or isinstance(value, (float, np.floating))):
    raise ValueError(f"column {name!r} takes a float, got {value!r} "
                     f"({type(value).__name__})")
  value = float(value)
  return None if math.isnan(value) else value


def encode_row(row: Mapping[str, Any]) -> tuple[Any, ...]:
  """Checks one row and returns its stored values in :data:`COLUMNS` order.

  Args:
    row: column name -> Python value. Nullable columns, ``extra`` (default ``{}``) and
      ``created_at`` (default: now, UTC ISO) may be omitted.

  Returns:
    A tuple of SQLite values, one per column of :data:`SCHEMA`.

  Raises:
    ValueError: on unknown keys, missing required keys, or a value of the wrong type.
  """
  if not isinstance(row, Mapping):
    raise ValueError(f"a row must be a mapping, got {type(row).__name__}")
  unknown = sorted(set(row) - set(COLUMNS))
  if unknown:
    raise ValueError(f"unknown row keys {unknown}; the columns are {list(COLUMNS)}")
  missing = sorted(REQUIRED_COLUMNS - set(row))
  if missing:
    key = row.get("run_key", "<no run_key>")
    raise ValueError(f"row {key!r} is missing required keys {missing}")
  full = {"extra": {}, "created_at": _now(), **row}
  return tuple(_encode_value(name, full.get(name)) for name in COLUMNS)


def decode_row(values: Sequence[Any]) -> dict[str, Any]:
  """Inverse of :func:`encode_row`: SQLite values (COLUMNS order) -> a row dict."""
  row = {}
  for name, value in zip(COLUMNS, values):
    if name in JSON_COLUMNS:
      value = json.loads(value)
    elif value is None and SQL_TYPES[name] == "REAL" and name not in NULLABLE_COLUMNS:
      value = float("nan")
    row[name] = value
  return row


def _same_stored(a: Sequence[Any], b: Sequence[Any]) -> list[str]:
  """Columns (provenance excluded) where two encoded rows differ."""
  return [name for name, x, y in zip(COLUMNS, a, b)
          if name not in PROVENANCE_COLUMNS and _result_of(name, x) != _result_of(name, y)]


def _result_of(name: str, value: Any) -> Any:
  """An encoded value less its provenance (`PROVENANCE_EXTRA_KEYS` of ``extra``)."""
  if name != "extra" or value is None:
    return value
  extra = json.loads(value)
  if not isinstance(extra, dict):
    return value
  # Compared as text: NaN equals NaN there, as in the stored column.
  return json.dumps({k: v for k, v in extra.items() if k not in PROVENANCE_EXTRA_KEYS},
                    sort_keys=True)
