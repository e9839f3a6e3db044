"""The results store: one SQLite row per trained-and-evaluated model.

A study trains populations of models for hours. This module owns what survives it:
``WORKDIR/results.sqlite`` (table ``runs``, schema :data:`SCHEMA`), the run keys a rerun
skips, the study's fingerprint (the config fields a rerun must match; kept in the
store's own ``meta`` table and in ``WORKDIR/config.json`` beside it), the CSV export
and :meth:`ResultsStore.backup`. Nothing here knows how a run is trained; the driver computes ``run_key`` and
hands whole groups of finished rows to :meth:`ResultsStore.write_group`.

Guarantees:

* **Atomic groups.** A group is written in one transaction, so a crash (even SIGKILL)
  loses at most the group in flight and never leaves a partial row or a partial group.
  The database runs in WAL mode with ``synchronous=FULL``, so a committed group also
  survives a power cut.
* **No orphans.** A store with rows but no ``config.json``, an empty or missing
  ``results.sqlite`` beside a ``config.json``, and a ``config.json`` that disagrees
  with the ``meta`` table are refused, each with what to do.
* **Resume.** :meth:`ResultsStore.done_keys` lists the finished run keys, diverged
  runs included (rerunning a seeded run cannot change its outcome).
* **Duplicates.** A row whose ``run_key`` is already stored is skipped silently when it
  carries the same values (the provenance columns ``group_id``, ``wall_time_s`` and
  ``created_at``, and the timing keys of ``extra`` (:data:`PROVENANCE_EXTRA_KEYS`), are
  not compared); any other difference rejects the whole group with a
  ``ValueError`` and writes nothing. The stored row is never overwritten.

Missing values and NaN (SQLite stores a float NaN as NULL, so NaN needs a rule):

* A non-nullable ``REAL`` column (``auc``, ``accuracy``, ...) stores NaN as NULL and reads
  NULL back as ``float('nan')``, so NaN round-trips.
* The nullable columns (:data:`NULLABLE_COLUMNS`: ``mu``, ``num_minority``, ``val_auc``)
  may be omitted or ``None``; NULL reads back as ``None``. A NaN written to ``mu`` or
  ``val_auc`` is stored as NULL too and therefore reads back as ``None`` ("no usable
  value"); check ``status`` to tell a diverged run from a study without a validation
  split.
* JSON columns (:data:`JSON_COLUMNS`) are encoded with Python's ``json`` module, which
  writes NaN and infinities as the tokens ``NaN``/``Infinity``; they round-trip through
  Python (and pandas) but are not strict JSON.

Example::

    with ResultsStore(workdir) as store:
        store.check_config({'dataset': 'mnist', 'iterations': 10_000}, version='0.1.0')
        todo = [key for key in grid_keys if key not in store.done_keys()]
        ...
        store.write_group(rows)          # one transaction per trained population
        store.export_csv()               # WORKDIR/results.csv
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pathlib
import sqlite3
import sys
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

from imbjax.store_schema import (  # noqa: F401  (re-exported: store.COLUMNS, ...)
    SCHEMA, ADDED_COLUMNS, COLUMNS, SQL_TYPES, JSON_COLUMNS, NULLABLE_COLUMNS,
    DEFAULTED_COLUMNS, REQUIRED_COLUMNS, PROVENANCE_COLUMNS, STATUSES, COLUMN_DOCS,
    PROVENANCE_EXTRA_KEYS, result_of_row, _now, _json_default, _is_int,
    _encode_value, encode_row, decode_row, _same_stored, _result_of)

DB_NAME = "results.sqlite"
CONFIG_NAME = "config.json"
CSV_NAME = "results.csv"
TABLE = "runs"
# key -> JSON value: 'fingerprint', 'version', 'created_at', written with the first
# check_config, so the fingerprint travels with the rows it describes.
META_TABLE = "meta"
_log = logging.getLogger(__name__)


def _atomic_write_text(path: pathlib.Path, text: str) -> None:
  # A temporary file in the same directory, then os.replace: readers see the old file
  # or the new one, never a torn one.
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "w", newline="") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(tmp)
    raise


def _json_normal(obj: Any) -> Any:
  """The value as JSON would give it back (tuples become lists, numpy becomes plain)."""
  return json.loads(json.dumps(obj, default=_json_default, sort_keys=True))


class ResultsStore:
  """SQLite-backed results of one study workdir.

  Args:
    workdir: the study directory; created if missing. The database is
      ``workdir/results.sqlite``.

  Each process should open its own store; several processes may write one workdir
  (writers queue on SQLite's lock for up to ``timeout_s``).
  """

  def __init__(self, workdir: str | os.PathLike, *, timeout_s: float = 60.0):
    self.workdir = pathlib.Path(workdir)
    self.workdir.mkdir(parents=True, exist_ok=True)
    self.path = self.workdir / DB_NAME
    # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a group is exactly
    # one transaction whatever the sqlite3 module's implicit-transaction rules are.
    self._conn = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None)
    self._conn.execute("PRAGMA journal_mode=WAL")
    self._conn.execute("PRAGMA synchronous=FULL")
    had_runs = self._conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (TABLE,)).fetchone()
    config_path = self.workdir / CONFIG_NAME
    if had_runs is None and config_path.exists():
      # The config says results were started here, but the store is empty or gone
      # (a 0-byte file, a deleted one, or a copy without its -wal file): retraining
      # silently would hide the loss.
      self.close()
      raise ValueError(
          f"{self.path} is empty or missing, but {config_path} says a study was started "
          f"in {self.workdir}. Restore results.sqlite (copy it together with its "
          f"{DB_NAME}-wal file, or make a copy with `python -m imbjax.store --backup`), "
          f"or delete {config_path} to start the study afresh.")
    cols = ", ".join(
        f"{name} {sqltype}" + (" PRIMARY KEY" if name == "run_key" else "")
        for name, sqltype in SCHEMA)
    self._conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} ({cols})")
    self._conn.execute(
        f"CREATE TABLE IF NOT EXISTS {META_TABLE} (key TEXT PRIMARY KEY, value TEXT)")
    stored = self._add_new_columns()
    if stored != list(COLUMNS):
      self.close()
      raise ValueError(
          f"{self.path} holds table {TABLE!r} with columns {stored}, not this "
          f"version's {list(COLUMNS)}; use a new --workdir")

  def _add_new_columns(self) -> list[str]:
    """Appends `ADDED_COLUMNS` missing from a store written before they existed (rows
    there read NULL); returns the table's columns."""
    stored = [r[1] for r in self._conn.execute(f"PRAGMA table_info({TABLE})")]
    missing = list(COLUMNS[len(stored):])
    if stored == list(COLUMNS[:len(stored)]) and set(missing) <= set(ADDED_COLUMNS):
      for name in missing:
        self._conn.execute(f"ALTER TABLE {TABLE} ADD COLUMN {name} {SQL_TYPES[name]}")
      stored += missing
    return stored

  # -- config -------------------------------------------------------------------------

  def check_config(self, fingerprint: Mapping[str, Any], *, version: str) -> None:
    """Records the study's fingerprint on the first call; refuses a different one later.

    The fingerprint is kept twice: in the store's own ``meta`` table (so it cannot
    drift from the rows) and in ``config.json`` beside it (for people and tools).

    Args:
      fingerprint: the fields that define the results (dataset, model, iterations,
        seed, ...), JSON-serializable. Grid lists belong elsewhere so that a rerun may
        extend the grid in the same workdir.
      version: the package version, recorded in ``config.json``. A different version
        on a rerun is logged, not refused.

    Raises:
      ValueError: if the stored fingerprint differs in any field (each differing field
        is named with its stored and new values); if ``config.json`` is missing beside
        stored rows; if ``config.json`` and the ``meta`` table disagree; if the
        fingerprint is not JSON-serializable or ``config.json`` is unreadable.
    """
    if not isinstance(fingerprint, Mapping):
      raise ValueError(f"fingerprint must be a mapping, got {type(fingerprint).__name__}")
    try:
      new = _json_normal(dict(fingerprint))
    except (TypeError, ValueError) as e:
      raise ValueError(f"fingerprint {fingerprint!r} is not JSON serializable: {e}") from None
    path = self.workdir / CONFIG_NAME
    meta = self._meta()
    record = None
    if path.exists():
      try:
        record = json.loads(path.read_text())
      except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not a config written by this store: {e!r}") from None
      if not isinstance(record, dict) or "fingerprint" not in record:
        raise ValueError(f"{path} is not a config written by this store: it has no "
                         f"'fingerprint'")
    elif len(self):
      raise ValueError(
          f"{path} is missing beside {self.path}, which holds {len(self)} rows, so "
          f"nothing says which configuration they belong to. Copy config.json from "
          f"where the store came from (the store records: {meta and meta['fingerprint']}),"
          f" or use a new --workdir.")
    if meta is not None and record is not None and meta["fingerprint"] != record[
        "fingerprint"]:
      raise ValueError(
          f"{path} and the fingerprint recorded inside {self.path} disagree ("
          + _diff(meta["fingerprint"], record["fingerprint"], "store", "config.json")
          + "); one of them was edited or copied from elsewhere. Restore the matching "
          "pair, or use a new --workdir.")
    old = (meta or record or {}).get("fingerprint")
    if old is not None and old != new:
      raise ValueError(
          f"workdir {self.workdir} holds results of a different configuration ("
          + _diff(old, new, "stored", "now") + "). Use a new --workdir, or rerun with "
          "the stored configuration to resume.")
    if meta is None:
      meta = {"fingerprint": new, "version": version,
              "created_at": (record or {}).get("created_at", _now())}
      self._conn.execute("BEGIN IMMEDIATE")
      try:
        raced = self._meta()
        if raced is None:
          self._conn.executemany(
              f"INSERT INTO {META_TABLE} (key, value) VALUES (?, ?)",
              [(k, json.dumps(v, sort_keys=True)) for k, v in meta.items()])
        self._conn.execute("COMMIT")
      except BaseException:
        if self._conn.in_transaction:
          self._conn.execute("ROLLBACK")
        raise
      if raced is not None and raced["fingerprint"] != new:
        raise ValueError(f"workdir {self.workdir} was just started by another process "
                         f"with a different configuration ("
                         + _diff(raced["fingerprint"], new, "stored", "now") + ")")
    if record is None:
      record = {"fingerprint": new, "version": version, "created_at": meta["created_at"]}
      _atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True) + "\n")
    elif record.get("version") != version:
      _log.warning("workdir %s was written by version %s; this is version %s",
                   self.workdir, record.get("version"), version)

  def fingerprint(self) -> dict | None:
    """The fingerprint recorded in the store (None before the first `check_config`)."""
    meta = self._meta()
    return None if meta is None else meta["fingerprint"]

  def _meta(self) -> dict | None:
    rows = self._conn.execute(f"SELECT key, value FROM {META_TABLE}").fetchall()
    meta = {k: json.loads(v) for k, v in rows}
    return meta if "fingerprint" in meta else None

  # -- writing ------------------------------------------------------------------------

  def done_keys(self) -> set[str]:
    """Returns the run keys already stored (diverged runs included)."""
    return {k for (k,) in self._conn.execute(f"SELECT run_key FROM {TABLE}")}

  def write_group(self, rows: Sequence[Mapping[str, Any]]) -> int:
    """Writes a group of rows in one transaction: all of them or none.

    A row whose ``run_key`` is already stored is skipped if its values equal the
    stored ones outside :data:`PROVENANCE_COLUMNS`; otherwise the group is refused.

    Args:
      rows: the finished rows of one population group.

    Returns:
      The number of rows inserted (the group size less identical duplicates).

    Raises:
      ValueError: on a malformed row (see :func:`encode_row`), a run key repeated
        within the group, or a stored run key with different values. Nothing of the
        group is written then.
    """
    if isinstance(rows, Mapping):
      raise ValueError("write_group takes a sequence of rows, got a single mapping")
    encoded = [encode_row(r) for r in rows]  # validate everything before the lock
    keys = [e[0] for e in encoded]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
      raise ValueError(f"run keys {repeated} appear more than once in the group")
    placeholders = ", ".join("?" * len(COLUMNS))
    select = f"SELECT {', '.join(COLUMNS)} FROM {TABLE} WHERE run_key = ?"
    insert = f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES ({placeholders})"
    inserted = 0
    # IMMEDIATE takes the write lock up front, so the duplicate check and the
    # inserts see the same database even with another writer on the workdir.
    self._conn.execute("BEGIN IMMEDIATE")
    try:
      for values in encoded:
        old = self._conn.execute(select, (values[0],)).fetchone()
        if old is not None:
          differ = _same_stored(old, values)
          if differ:
            raise ValueError(
                f"run_key {values[0]!r} is already stored with different "
                f"values in {differ}; the group was not written")
          continue
        self._conn.execute(insert, values)
        inserted += 1
      self._conn.execute("COMMIT")
    except BaseException:
      if self._conn.in_transaction:
        self._conn.execute("ROLLBACK")
      raise
    return inserted

  # -- reading ------------------------------------------------------------------------

  def rows(self, **equal_filters: Any) -> list[dict[str, Any]]:
    """Returns stored rows, JSON columns decoded, in insertion order.

    Args:
      **equal_filters: column=value keeps rows where the column equals the value
        (``None`` matches NULL, NaN matches a stored NaN); a list, tuple or set value
        on a non-JSON column keeps rows equal to any of its members. JSON columns
        compare their encoded text, e.g. ``minority_classes=[0, 3]``.

    Returns:
      A list of row dicts with every column of :data:`SCHEMA`.

    Raises:
      ValueError: if a filter names an unknown column or has a value of the wrong type.
    """
    unknown = sorted(set(equal_filters) - set(COLUMNS))
    if unknown:
      raise ValueError(f"unknown filter columns {unknown}; the columns are "
                       f"{list(COLUMNS)}")
    where, params = [], []
    for name, value in equal_filters.items():
      many = (name not in JSON_COLUMNS
              and isinstance(value, (list, tuple, set, frozenset)))
      values = list(value) if many else [value]
      terms = []
      for v in values:
        stored = _encode_value(name, v)
        if stored is None:
          terms.append(f"{name} IS NULL")
        else:
          terms.append(f"{name} = ?")
          params.append(stored)
      where.append("(" + " OR ".join(terms or ["0"]) + ")")
    sql = f"SELECT {', '.join(COLUMNS)} FROM {TABLE}"
    if where:
      sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY rowid"
    return [decode_row(r) for r in self._conn.execute(sql, params)]

  def __len__(self) -> int:
    return self._conn.execute(f"SELECT COUNT(*) FROM {TABLE}").fetchone()[0]

  def export_csv(self, path: str | os.PathLike | None = None) -> pathlib.Path:
    """Writes every row as CSV (header = :data:`COLUMNS`), replacing the file atomically.

    Beside it, ``<stem>.columns.md`` says what each column means (:data:`COLUMN_DOCS`).

    Floats are written with ``repr`` (exact round trip), NaN as ``nan``, NULL as an
    empty field, JSON columns as their JSON text.

    Args:
      path: where to write; default ``workdir/results.csv``.

    Returns:
      The path written.
    """
    from imbjax import store_csv  # pylint: disable=g-import-not-at-top (it imports this)
    path = pathlib.Path(path) if path is not None else self.workdir / CSV_NAME
    sql = f"SELECT {', '.join(COLUMNS)} FROM {TABLE} ORDER BY rowid"
    return store_csv.write_csv(self._conn.execute(sql), path)

  # -- copying ------------------------------------------------------------------------

  def backup(self, dest: str | os.PathLike) -> pathlib.Path:
    """Copies the store and its config.json into the directory `dest`, consistently.

    A plain copy of ``results.sqlite`` may miss committed groups: in WAL mode they sit
    in ``results.sqlite-wal`` until a checkpoint. This copies through SQLite's online
    backup (safe while a sweep writes), as one self-contained file, so `dest` is a
    workdir that a rerun with the same config resumes.

    Args:
      dest: a directory without a store of its own (created if missing).

    Returns:
      The path of the copied database, ``dest/results.sqlite``.

    Raises:
      ValueError: if `dest` already holds a results.sqlite or a config.json.
    """
    dest = pathlib.Path(dest)
    target = dest / DB_NAME
    if target.exists() or (dest / CONFIG_NAME).exists():
      raise ValueError(f"{dest} already holds a store; back up into a new directory")
    dest.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{DB_NAME}.", suffix=".tmp")
    os.close(fd)
    try:
      copy = sqlite3.connect(tmp, isolation_level=None)
      try:
        self._conn.backup(copy)
        copy.execute("PRAGMA journal_mode=DELETE")  # one file, no -wal beside it
      finally:
        copy.close()
      config = self.workdir / CONFIG_NAME
      if config.exists():
        _atomic_write_text(dest / CONFIG_NAME, config.read_text())
      os.replace(tmp, target)
    except BaseException:
      with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
      raise
    return target

  # -- lifetime -----------------------------------------------------------------------

  def close(self) -> None:
    """Closes the database connection (idempotent)."""
    if self._conn is not None:
      self._conn.close()
      self._conn = None  # type: ignore[assignment]

  def __enter__(self) -> "ResultsStore":
    return self

  def __exit__(self, *exc: Any) -> None:
    self.close()


def _diff(a: Mapping[str, Any], b: Mapping[str, Any], a_name: str, b_name: str) -> str:
  absent = "<absent>"
  return "; ".join(f"{k}: {a_name} {a.get(k, absent)!r}, {b_name} {b.get(k, absent)!r}"
                   for k in sorted(set(a) | set(b)) if a.get(k, absent) != b.get(k, absent))


def read_rows(workdir: str | os.PathLike) -> list[dict[str, Any]]:
  """Every row of ``workdir``'s store (what figures and reports read).

  Raises:
    ValueError: if ``workdir`` holds no results store.
  """
  workdir = pathlib.Path(workdir)
  if not (workdir / DB_NAME).exists():
    raise ValueError(f"workdir {str(workdir)!r} holds no {DB_NAME}")
  with ResultsStore(workdir) as st:
    return st.rows()


def main(argv: Sequence[str] | None = None) -> int:
  """`python -m imbjax.store WORKDIR --backup DEST` (and ``--csv PATH``)."""
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(
      prog="python -m imbjax.store",
      description="Copy or export a study's results store (safe while a sweep runs).")
  parser.add_argument("workdir", help="the study directory holding results.sqlite")
  parser.add_argument("--backup", metavar="DEST",
                      help="copy the store and config.json into the new directory DEST")
  parser.add_argument("--csv", metavar="PATH", help="export every row as CSV to PATH")
  args = parser.parse_args(argv)
  if not (pathlib.Path(args.workdir) / DB_NAME).exists():
    parser.error(f"{args.workdir} holds no {DB_NAME}")
  if not (args.backup or args.csv):
    parser.error("nothing to do: give --backup DEST and/or --csv PATH")
  with ResultsStore(args.workdir) as store:
    if args.backup:
      print(f"{len(store)} rows copied to {store.backup(args.backup)}")
    if args.csv:
      print(f"{len(store)} rows written to {store.export_csv(args.csv)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
