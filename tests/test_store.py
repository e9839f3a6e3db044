"""Tests for imbjax.store: round trips, refusals, resume keys, CSV, config, kill-safety."""

import csv
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from imbjax import store as store_lib
from imbjax import workdir_lock
from imbjax.store import ResultsStore

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_row(key, group="g0", **overrides):
  row = dict(
      run_key=key, group_id=group, dataset="mnist", model="lenet5", profile="step",
      rho=100.0, mu=0.2, num_minority=2, minority_classes=[3, 7],
      class_counts=[5000, 5000, 5000, 50, 5000, 5000, 5000, 50, 5000, 5000],
      repetition=1, seed=11, method="oversampling", resample_ratio=1.0, base_lr=0.01,
      lr_repeat=0, iterations=10_000, batch_size=64, auc=0.987654321, accuracy=0.93,
      thresholded_accuracy=0.95, balanced_accuracy=0.92,
      per_class_recall=[0.9] * 10, val_auc=None, status="ok", wall_time_s=1.25,
      extra={"ece": 0.01, "curve_steps": [0, 100], "train_acc": [0.1, 0.9],
             "test_acc": [0.1, 0.85]},
      created_at="2026-01-01T00:00:00+00:00", data_seed=11, weight_decay=5e-4)
  row.update(overrides)
  return row


def same(a, b):
  """Equality that treats NaN as equal to NaN, recursively."""
  if isinstance(a, float) and isinstance(b, float):
    return (math.isnan(a) and math.isnan(b)) or a == b
  if isinstance(a, dict) and isinstance(b, dict):
    return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
  if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
    return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
  return type(a) is type(b) and a == b


def test_store_from_before_data_seed_and_weight_decay_gets_them_appended(tmp_path):
  old = [(n, t) for n, t in store_lib.SCHEMA if n not in store_lib.ADDED_COLUMNS]
  (tmp_path / "w").mkdir()
  conn = sqlite3.connect(tmp_path / "w" / "results.sqlite")
  cols = ", ".join(f"{n} {t}" + (" PRIMARY KEY" if n == "run_key" else "") for n, t in old)
  conn.execute(f"CREATE TABLE runs ({cols})")
  conn.commit()
  conn.close()
  with ResultsStore(tmp_path / "w") as st:
    assert st.rows() == []
  conn = sqlite3.connect(tmp_path / "w" / "results.sqlite")
  info = conn.execute("PRAGMA table_info(runs)").fetchall()
  assert [(r[1], r[2]) for r in info] == store_lib.SCHEMA


def test_schema_matches_database(tmp_path):
  assert all(isinstance(n, str) and t in ("TEXT", "REAL", "INTEGER")
             for n, t in store_lib.SCHEMA)
  assert len(store_lib.COLUMNS) == len(set(store_lib.COLUMNS)) == 30
  with ResultsStore(tmp_path / "w"):
    pass
  conn = sqlite3.connect(tmp_path / "w" / "results.sqlite")
  info = conn.execute("PRAGMA table_info(runs)").fetchall()
  assert [(r[1], r[2]) for r in info] == store_lib.SCHEMA
  assert [r[1] for r in info if r[5]] == ["run_key"]  # the primary key
  assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_round_trip_with_nan_numpy_and_json(tmp_path):
  nan_row = make_row(
      "k-nan", auc=float("nan"), accuracy=np.float32(0.5), seed=np.int64(3),
      per_class_recall=np.array([0.5, float("nan")]), status="diverged",
      extra={"curve_steps": [0, 10], "train_acc": [0.1, float("nan")]})
  linear_row = make_row("k-lin", profile="linear", mu=None, num_minority=None,
                        minority_classes=[], val_auc=0.75)
  with ResultsStore(tmp_path) as st:
    assert st.write_group([nan_row, linear_row]) == 2
  with ResultsStore(tmp_path) as st:  # a fresh connection reads what was committed
    got = {r["run_key"]: r for r in st.rows()}
  want_nan = dict(nan_row, accuracy=0.5, seed=3, per_class_recall=[0.5, float("nan")])
  assert same(got["k-nan"], want_nan)
  assert same(got["k-lin"], linear_row)
  assert math.isnan(got["k-nan"]["auc"]) and got["k-lin"]["mu"] is None
  # SQLite itself holds NULL for the NaN (documented), not some sentinel.
  raw = sqlite3.connect(tmp_path / "results.sqlite").execute(
      "SELECT auc, typeof(auc) FROM runs WHERE run_key='k-nan'").fetchone()
  assert raw == (None, "null")


def test_defaults_fill_extra_and_created_at(tmp_path):
  row = make_row("k")
  del row["extra"], row["created_at"], row["val_auc"], row["mu"]
  with ResultsStore(tmp_path) as st:
    st.write_group([row])
    (got,) = st.rows()
  assert got["extra"] == {} and got["val_auc"] is None and got["mu"] is None
  assert got["created_at"].startswith("20")  # an ISO time


@pytest.mark.parametrize("bad, match", [
    (dict(colour="red"), "colour"),
    (dict(auc="high"), "auc"),
    (dict(repetition=1.0), "repetition"),
    (dict(status="crashed"), "crashed"),
    (dict(rho=None), "rho"),
    (dict(class_counts="[1, 2]"), "class_counts"),
    (dict(extra={"f": object()}), "extra"),
])
def test_bad_values_refused(tmp_path, bad, match):
  with ResultsStore(tmp_path) as st:
    with pytest.raises(ValueError, match=match):
      st.write_group([make_row("ok-row"), make_row("bad", **bad)])
    assert len(st) == 0  # the good row of the group is not written either


def test_missing_keys_refused_by_name(tmp_path):
  row = make_row("k")
  del row["auc"], row["method"]
  with ResultsStore(tmp_path) as st, pytest.raises(ValueError, match="'auc', 'method'"):
    st.write_group([row])


def test_done_keys(tmp_path):
  with ResultsStore(tmp_path) as st:
    assert st.done_keys() == set()
    st.write_group([make_row("a"), make_row("b", status="diverged")])
    st.write_group([make_row("c", group="g1")])
    assert st.done_keys() == {"a", "b", "c"}


def test_duplicates(tmp_path):
  with ResultsStore(tmp_path) as st:
    st.write_group([make_row("a"), make_row("b")])
    # Same values, other provenance: skipped silently, the new key is written.
    again = make_row("a", group="g9", wall_time_s=99.0, created_at="2030-01-01")
    assert st.write_group([again, make_row("c")]) == 1
    assert st.rows(run_key="a")[0]["group_id"] == "g0"  # never overwritten
    # Same key, different result: the whole group is refused.
    with pytest.raises(ValueError, match=r"'a'.*\['auc'\]"):
      st.write_group([make_row("d"), make_row("a", auc=0.5)])
    assert st.done_keys() == {"a", "b", "c"}
    # NaN equals a stored NaN for this purpose.
    st.write_group([make_row("n", auc=float("nan"))])
    assert st.write_group([make_row("n", auc=float("nan"))]) == 0
    with pytest.raises(ValueError, match="more than once"):
      st.write_group([make_row("e"), make_row("e")])
    assert "e" not in st.done_keys()


def test_duplicates_may_differ_in_the_timing_keys_of_extra(tmp_path):
  timing = {"group_wall_s": 9.0, "group_models": 5, "phase_wall_s": [6.0, 3.0],
            "phase_models": [3, 2], "wall_share_s": 1.5}
  assert set(timing) == store_lib.PROVENANCE_EXTRA_KEYS
  with ResultsStore(tmp_path) as st:
    row = make_row("a")
    row["extra"] = {**row["extra"], **timing, "ece": float("nan")}
    st.write_group([row])
    again = make_row("a", wall_time_s=7.0)
    again["extra"] = {**row["extra"], "group_wall_s": 20.0, "wall_share_s": 4.0}
    assert st.write_group([again]) == 0
    assert st.rows()[0]["extra"]["group_wall_s"] == 9.0
    other = make_row("a")
    other["extra"] = {**again["extra"], "ece": 0.5}
    with pytest.raises(ValueError, match=r"\['extra'\]"):
      st.write_group([other])


def test_every_column_is_documented_and_the_csv_has_its_columns_file(tmp_path):
  assert list(store_lib.COLUMN_DOCS) == list(store_lib.COLUMNS)
  with ResultsStore(tmp_path) as st:
    st.write_group([make_row("a")])
    st.export_csv()
  text = (tmp_path / "results.columns.md").read_text()
  for name in store_lib.COLUMNS:
    assert f"| `{name}` |" in text
  assert "pd.read_csv" in text and "metrics.jsonl" in text


def test_row_filters(tmp_path):
  with ResultsStore(tmp_path) as st:
    st.write_group([
        make_row("a", method="baseline"),
        make_row("b", method="undersampling", auc=float("nan")),
        make_row("c", profile="linear", mu=None, num_minority=None),
        make_row("d", minority_classes=[1, 2])])
    keys = lambda rows: [r["run_key"] for r in rows]  # noqa: E731
    assert keys(st.rows(method="baseline")) == ["a"]
    assert keys(st.rows(method=["baseline", "undersampling"])) == ["a", "b"]
    assert keys(st.rows(mu=None)) == ["c"]
    assert keys(st.rows(auc=float("nan"))) == ["b"]
    assert keys(st.rows(minority_classes=[1, 2])) == ["d"]
    assert keys(st.rows(profile="step", method="oversampling")) == ["d"]
    with pytest.raises(ValueError, match="colour"):
      st.rows(colour="red")


def test_csv_export_round_trips(tmp_path):
  written = [make_row("a"), make_row("b", auc=float("nan"), mu=None, val_auc=0.5,
                                    extra={"note": 'quote " and, comma'})]
  with ResultsStore(tmp_path) as st:
    st.write_group(written)
    path = st.export_csv()
    expected = st.rows()
  assert path == tmp_path / "results.csv"
  with open(path, newline="") as f:
    reader = csv.DictReader(f)
    assert tuple(reader.fieldnames) == store_lib.COLUMNS
    parsed = list(reader)
  assert len(parsed) == 2
  for want, got in zip(expected, parsed):
    for name, sqltype in store_lib.SCHEMA:
      text = got[name]
      if name in store_lib.JSON_COLUMNS:
        value = json.loads(text)
      elif text == "":
        value = None
      elif sqltype == "REAL":
        value = float(text)
      elif sqltype == "INTEGER":
        value = int(text)
      else:
        value = text
      assert same(value, want[name]), name
  assert not list(tmp_path.glob(".results.csv*"))  # no temporary left behind


def test_check_config(tmp_path):
  fp = {"dataset": "mnist", "model": "lenet5", "iterations": 10_000, "shape": (28, 28)}
  with ResultsStore(tmp_path) as st:
    st.check_config(fp, version="0.1.0")
    record = json.loads((tmp_path / "config.json").read_text())
    assert record["fingerprint"]["iterations"] == 10_000
    assert record["version"] == "0.1.0" and "created_at" in record
    st.check_config(dict(fp), version="0.1.0")  # identical: fine (tuple == list)
  with ResultsStore(tmp_path) as st:  # a rerun in a new process-like store
    st.check_config(fp, version="0.2.0")  # another version is logged only
    with pytest.raises(ValueError) as info:
      st.check_config(dict(fp, iterations=500, seed=3), version="0.1.0")
  msg = str(info.value)
  assert "iterations: stored 10000, now 500" in msg
  assert "seed: stored '<absent>', now 3" in msg
  assert "dataset" not in msg and "--workdir" in msg
  with pytest.raises(ValueError, match="not JSON serializable"):
    ResultsStore(tmp_path / "x").check_config({"f": object()}, version="0")


_FP = {"dataset": "mnist", "model": "lenet5", "iterations": 10_000}


def _started(workdir, rows=1):
  """A workdir with a fingerprint and `rows` stored rows, its store closed."""
  with ResultsStore(workdir) as st:
    st.check_config(_FP, version="0.1.0")
    if rows:
      st.write_group([make_row(f"k{i}") for i in range(rows)])


def test_store_records_its_fingerprint_in_its_own_schema(tmp_path):
  _started(tmp_path)
  with sqlite3.connect(tmp_path / store_lib.DB_NAME) as db:
    meta = dict(db.execute("SELECT key, value FROM meta"))
  assert json.loads(meta["fingerprint"]) == _FP and json.loads(meta["version"]) == "0.1.0"
  with ResultsStore(tmp_path) as st:
    assert st.fingerprint() == _FP


def test_store_without_config_json_beside_its_rows_is_refused(tmp_path):
  _started(tmp_path)
  (tmp_path / store_lib.CONFIG_NAME).unlink()
  with ResultsStore(tmp_path) as st:
    with pytest.raises(ValueError, match=r"config.json is missing .* holds 1 rows.*"
                       r"Copy config.json .*'iterations': 10000"):
      st.check_config(_FP, version="0.1.0")
  assert not (tmp_path / store_lib.CONFIG_NAME).exists()


def test_store_without_config_json_and_without_rows_starts(tmp_path):
  # A crash between the store's creation and config.json: nothing to lose, continue.
  _started(tmp_path, rows=0)
  (tmp_path / store_lib.CONFIG_NAME).unlink()
  with ResultsStore(tmp_path) as st:
    st.check_config(_FP, version="0.1.0")
  assert (tmp_path / store_lib.CONFIG_NAME).exists()


@pytest.mark.parametrize("how", ["zero_bytes", "deleted"])
def test_empty_store_beside_config_json_is_refused_not_retrained(tmp_path, how):
  _started(tmp_path)
  for suffix in ("", "-wal", "-shm"):
    (tmp_path / (store_lib.DB_NAME + suffix)).unlink(missing_ok=True)
  if how == "zero_bytes":
    (tmp_path / store_lib.DB_NAME).write_bytes(b"")
  with pytest.raises(ValueError, match=r"results.sqlite is empty or missing, but .*"
                     r"config.json says a study was started.*delete .*config.json"):
    ResultsStore(tmp_path)


def test_config_json_that_disagrees_with_the_store_meta_is_refused(tmp_path):
  _started(tmp_path)
  path = tmp_path / store_lib.CONFIG_NAME
  record = json.loads(path.read_text())
  record["fingerprint"]["iterations"] = 500  # edited by hand, or copied from elsewhere
  path.write_text(json.dumps(record))
  with ResultsStore(tmp_path) as st:
    with pytest.raises(ValueError, match=r"disagree \(iterations: store 10000, "
                       r"config.json 500\)"):
      st.check_config(dict(_FP, iterations=500), version="0.1.0")


def test_store_from_before_meta_adopts_its_config_json(tmp_path):
  _started(tmp_path)
  with sqlite3.connect(tmp_path / store_lib.DB_NAME) as db:
    db.execute("DROP TABLE meta")
  with ResultsStore(tmp_path) as st:
    assert st.fingerprint() is None
    with pytest.raises(ValueError, match="iterations: stored 10000, now 5"):
      st.check_config(dict(_FP, iterations=5), version="0.1.0")
    st.check_config(_FP, version="0.1.0")
    assert st.fingerprint() == _FP


# ---- kill-safety ----------------------------------------------------------------------

_CHILD = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {repo!r})
    from imbjax.store import ResultsStore
    sys.path.insert(0, {tests!r})
    from test_store import make_row
    workdir, group_size, kill_group = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    st = ResultsStore(workdir)
    curve = list(range(2000))  # big rows make each transaction take a while
    calls = 0
    def handler():
        # Runs inside SQLite's VM: with a transaction open and a few inserts done, die.
        global calls
        if kill_group >= 0 and st._conn.in_transaction:
            calls += 1
            if calls == 5:
                os.kill(os.getpid(), signal.SIGKILL)
        return 0
    for g in range(10_000):
        rows = [make_row(f"g{{g}}-r{{i}}", group=f"g{{g}}", extra={{"c": curve}})
                for i in range(group_size)]
        if rows[0]["run_key"] in st.done_keys():
            continue  # resume like the driver: finished groups are skipped
        if g == kill_group:
            st._conn.set_progress_handler(handler, 50)
        print("begin", g, flush=True)
        st.write_group(rows)
        print("end", g, flush=True)
""")


def _spawn(workdir, group_size, kill_group):
  code = _CHILD.format(repo=REPO, tests=os.path.join(REPO, "tests"))
  return subprocess.Popen(
      [sys.executable, "-c", code, str(workdir), str(group_size), str(kill_group)],
      stdout=subprocess.PIPE, text=True)


def _check_groups(workdir, group_size):
  """Opens the killed store; returns {group: row count}, each a full group."""
  conn = sqlite3.connect(workdir / "results.sqlite")
  assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
  conn.close()
  with ResultsStore(workdir) as st:
    counts = {}
    for r in st.rows():
      if r["group_id"] != "after":
        counts[r["group_id"]] = counts.get(r["group_id"], 0) + 1
    assert all(n == group_size for n in counts.values()), counts
    # The store still works after the crash: a rerun extends it.
    st.write_group([make_row("after-crash", group="after")])
    assert "after-crash" in st.done_keys()
  return counts


def test_sigkill_from_outside_leaves_whole_groups(tmp_path):
  group_size = 40
  ended = set()
  # A write of one group takes ~10-30 ms here (encoding, then the transaction); the
  # delays put the kill at different points of it. Each round resumes the same store.
  for delay_s in (0.0, 0.008, 0.02):
    proc = _spawn(tmp_path, group_size, kill_group=-1)
    try:
      finished_here = 0
      for line in proc.stdout:
        word, g = line.split()
        if word == "end":
          ended.add(f"g{g}")
          finished_here += 1
        elif finished_here >= 2:
          time.sleep(delay_s)
          os.kill(proc.pid, signal.SIGKILL)
          break
      # The child may have gone on during the delay: read what it printed.
      in_flight = None
      for line in [line] + proc.stdout.read().splitlines():
        word, g = line.split()
        if word == "end":
          ended.add(f"g{g}")
        in_flight = f"g{g}" if word == "begin" else None
    finally:
      proc.kill()
      proc.wait()
    assert proc.returncode == -signal.SIGKILL
    counts = _check_groups(tmp_path, group_size)  # every group full or absent
    assert ended <= set(counts) <= ended | {in_flight}
    ended |= set(counts)


def test_sigkill_inside_transaction_loses_only_that_group(tmp_path):
  group_size = 30
  proc = _spawn(tmp_path, group_size, kill_group=2)
  out, _ = proc.communicate(timeout=60)
  assert proc.returncode == -signal.SIGKILL
  assert out.split("\n")[-2] == "begin 2"  # died inside write_group of group 2
  counts = _check_groups(tmp_path, group_size)
  assert set(counts) == {"g0", "g1"}


# ---- the workdir lock -----------------------------------------------------------------

_HOLDER = textwrap.dedent("""
    import sys, time
    from imbjax.workdir_lock import WorkdirLock
    lock = WorkdirLock(sys.argv[1]).acquire()
    print("locked", flush=True)
    time.sleep(60)
""")


def test_second_process_is_told_who_holds_the_workdir_then_may_wait(tmp_path):
  import socket
  env = dict(os.environ, PYTHONPATH=REPO)
  holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path)], env=env,
                            stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(workdir_lock.WorkdirBusy,
                       match=rf"in use by pid {holder.pid} on {socket.gethostname()}, "
                             r"started 20\d\d-.*--wait") as info:
      workdir_lock.WorkdirLock(tmp_path).acquire()
    assert info.value.holder["pid"] == holder.pid
    messages = []
    waiting = workdir_lock.WorkdirLock(tmp_path, wait=True, poll_s=0.05,
                                    on_wait=messages.append)
    killer = subprocess.Popen([sys.executable, "-c",
                               f"import os, time; time.sleep(1); os.kill({holder.pid}, 9)"])
    with waiting:
      assert waiting.holder()["pid"] == os.getpid()
    killer.wait()
    assert len(messages) == 1 and f"pid {holder.pid}" in messages[0]
  finally:
    holder.kill()
    holder.wait()


def test_lock_held_for_a_dead_pid_on_this_host_is_taken_over(tmp_path):
  import fcntl
  import socket
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  path = tmp_path / workdir_lock.LOCK_NAME
  # A descriptor that outlived its process (a forked child kept it): flock still held.
  fd = os.open(path, os.O_RDWR | os.O_CREAT)
  fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  os.write(fd, json.dumps({"pid": dead.pid, "host": socket.gethostname(),
                           "started": "then"}).encode())
  try:
    with workdir_lock.WorkdirLock(tmp_path) as lock:
      assert lock.holder()["pid"] == os.getpid()
      with pytest.raises(workdir_lock.WorkdirBusy):  # and it is really held now
        workdir_lock.WorkdirLock(tmp_path).acquire()
  finally:
    os.close(fd)


# ---- copying --------------------------------------------------------------------------


def test_plain_copy_misses_groups_in_the_wal_but_backup_keeps_them(tmp_path):
  import shutil
  src = tmp_path / "src"
  with ResultsStore(src) as st:  # a sweep still running: its groups sit in the -wal
    st.check_config(_FP, version="0.1.0")
    st.write_group([make_row("a"), make_row("b")])
    shutil.copy(src / store_lib.DB_NAME, tmp_path / "plain.sqlite")
    with sqlite3.connect(tmp_path / "plain.sqlite") as db:  # the trap: no rows at all
      tables = db.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
      assert ("runs",) not in tables or not db.execute("SELECT * FROM runs").fetchall()
    copied = st.backup(tmp_path / "copy")
    with pytest.raises(ValueError, match="already holds a store"):
      st.backup(tmp_path / "copy")
  assert sorted(p.name for p in copied.parent.iterdir()) == ["config.json",
                                                             "results.sqlite"]
  with ResultsStore(copied.parent) as st:  # a workdir that resumes
    st.check_config(_FP, version="0.1.0")
    assert st.done_keys() == {"a", "b"}
    with ResultsStore(src) as original:
      assert same(st.rows(), original.rows())


def test_backup_from_the_command_line_while_a_writer_holds_the_store(tmp_path):
  src = tmp_path / "src"
  with ResultsStore(src) as st:
    st.check_config(_FP, version="0.1.0")
    st.write_group([make_row("a")])
    proc = subprocess.run(
        [sys.executable, "-m", "imbjax.store", str(src), "--backup",
         str(tmp_path / "copy"), "--csv", str(tmp_path / "rows.csv")],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True,
        timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert "1 rows copied to" in proc.stdout
  with ResultsStore(tmp_path / "copy") as st:
    assert st.done_keys() == {"a"} and st.fingerprint() == _FP
  assert (tmp_path / "rows.csv").read_text().count("\n") == 2
  bad = subprocess.run([sys.executable, "-m", "imbjax.store", str(tmp_path / "none"),
                        "--backup", str(tmp_path / "x")], cwd=REPO,
                       env=dict(os.environ, PYTHONPATH=REPO), capture_output=True,
                       text=True, timeout=120)
  assert bad.returncode == 2 and "holds no results.sqlite" in bad.stderr


def test_result_of_row_drops_only_how_and_when_a_row_was_made(tmp_path):
  a = make_row("k", group="g0", wall_time_s=1.0,
               extra={"ece": 0.01, "group_wall_s": 10.0, "phase_models": 3})
  b = make_row("k", group="g9", wall_time_s=7.5, created_at="2027-01-01T00:00:00+00:00",
               extra={"ece": 0.01, "group_wall_s": 99.0, "phase_models": 8})
  with ResultsStore(tmp_path / "a") as s:
    s.write_group([a])
    (got_a,) = s.rows()
  with ResultsStore(tmp_path / "b") as s:
    s.write_group([b])
    (got_b,) = s.rows()
  assert store_lib.result_of_row(got_a) == store_lib.result_of_row(got_b)
  assert store_lib.result_of_row(got_a)["extra"] == {"ece": 0.01}
  assert not store_lib.PROVENANCE_COLUMNS & store_lib.result_of_row(got_a).keys()
  c = make_row("k", extra={"ece": 0.02})  # a number differs: no longer equal
  with ResultsStore(tmp_path / "c") as s:
    s.write_group([c])
    (got_c,) = s.rows()
  assert store_lib.result_of_row(got_c) != store_lib.result_of_row(got_a)
