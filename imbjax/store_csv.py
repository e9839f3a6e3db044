"""The results store as CSV: ``results.csv`` and the column guide beside it.

`ResultsStore.export_csv` calls `write_csv` with the stored rows; this module owns the
text format (exact floats, NaN and NULL) and ``results.columns.md``.
"""

from __future__ import annotations

import csv
import pathlib
from typing import Any, Iterable, Sequence

from imbjax.store import (COLUMN_DOCS, COLUMNS, JSON_COLUMNS, NULLABLE_COLUMNS, SCHEMA,
                          SQL_TYPES, _atomic_write_text)


def columns_markdown() -> str:
  """The Markdown of results.columns.md: one line per column of :data:`SCHEMA`."""
  lines = [
      "# Columns of results.csv and of table `runs` in results.sqlite", "",
      "One row per trained-and-evaluated model. JSON columns hold JSON text; in the CSV "
      "an empty field is NULL and `nan` is NaN. Load them with",
      "",
      "```python",
      "import pandas as pd, sqlite3",
      "df = pd.read_csv('WORKDIR/results.csv')",
      "df = pd.read_sql('SELECT * FROM runs', sqlite3.connect('WORKDIR/results.sqlite'))",
      "curves = pd.read_json('WORKDIR/metrics.jsonl', lines=True)  # one row per log point",
      "```",
      "",
      "| column | type | meaning |", "|---|---|---|"]
  lines += [f"| `{name}` | {sqltype}{' (JSON)' if name in JSON_COLUMNS else ''}"
            f"{', nullable' if name in NULLABLE_COLUMNS else ''} | "
            f"{COLUMN_DOCS[name]} |" for name, sqltype in SCHEMA]
  return "\n".join(lines) + "\n"


class _CsvLines:
  """A write()-able list of strings for csv.writer."""

  def __init__(self):
    self.parts: list[str] = []

  def write(self, s: str) -> None:
    self.parts.append(s)


def _csv_field(name: str, value: Any) -> str:
  if value is None:
    is_nan = SQL_TYPES[name] == "REAL" and name not in NULLABLE_COLUMNS
    return "nan" if is_nan else ""
  if isinstance(value, float):
    return repr(value)
  return str(value)


def write_csv(rows: Iterable[Sequence[Any]], path: pathlib.Path) -> pathlib.Path:
  """Writes stored rows (values in :data:`COLUMNS` order) to `path` as CSV, and
  ``<stem>.columns.md`` beside it, each replaced atomically; returns `path`."""
  path.parent.mkdir(parents=True, exist_ok=True)
  lines = _CsvLines()
  writer = csv.writer(lines, lineterminator="\n")
  writer.writerow(COLUMNS)
  for values in rows:
    writer.writerow([_csv_field(n, v) for n, v in zip(COLUMNS, values)])
  _atomic_write_text(path, "".join(lines.parts))
  _atomic_write_text(path.with_name(path.stem + ".columns.md"), columns_markdown())
  return path
