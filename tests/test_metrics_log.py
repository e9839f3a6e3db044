"""metrics.jsonl of a real tiny study, and what wall_time_s adds up to."""

import json
import math
import time

import pytest

from experiments.configs import test as test_config
from imbjax import metrics_log
from imbjax import store as store_lib
from imbjax import study as study_lib
from imbjax.study import walltime


def _config():
  c = test_config.get_config()
  c.population_size = 3  # two groups: one case (8 rows, 5 models) each
  return c


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
  """The study stopped after its first group, then resumed to the end."""
  workdir = tmp_path_factory.mktemp("study")
  quiet = dict(log=lambda *_: None)
  t0 = time.time()
  first = study_lib.train_and_evaluate(_config(), workdir, stop_after_groups=1, **quiet)
  lines_after_first = len((workdir / metrics_log.METRICS_NAME).read_text().splitlines())
  second = study_lib.train_and_evaluate(_config(), workdir, **quiet)
  elapsed = time.time() - t0
  with store_lib.ResultsStore(workdir) as st:
    rows = st.rows()
  assert first["trained_groups"] == 1 and second["trained_groups"] == 1
  return workdir, rows, lines_after_first, elapsed


def test_one_line_per_run_key_and_log_point_equal_to_the_row_curves(resumed):
  workdir, rows, _, _ = resumed
  records = metrics_log.read_metrics(workdir)
  by_key = {}
  for rec in records:
    by_key.setdefault(rec["run_key"], []).append(rec)
  assert set(by_key) == {r["run_key"] for r in rows}
  for row in rows:
    extra = row["extra"]
    recs = by_key[row["run_key"]]
    assert [r["step"] for r in recs] == extra["curve_steps"]
    assert [r["train_acc"] for r in recs] == extra["train_acc"]
    assert [r["test_acc"] for r in recs] == extra["test_acc"]
    assert {r["group_id"] for r in recs} == {row["group_id"]}
    assert {r["phase"] for r in recs} == {2 if row["method"].startswith("two_phase") else 1}


def test_a_resume_does_not_duplicate_lines(resumed):
  workdir, rows, lines_after_first, _ = resumed
  raw = (workdir / metrics_log.METRICS_NAME).read_text().splitlines()
  assert len(raw) == len(metrics_log.read_metrics(workdir))
  assert len(raw) == sum(len(r["extra"]["curve_steps"]) for r in rows)
  assert 0 < lines_after_first < len(raw)
  for line in raw:
    json.loads(line, parse_constant=lambda t: pytest.fail(f"non-strict JSON {t}"))
  # A rerun of the finished study trains nothing and writes nothing.
  study_lib.train_and_evaluate(_config(), workdir, log=lambda *_: None)
  assert (workdir / metrics_log.METRICS_NAME).read_text().splitlines() == raw


def test_lines_lost_between_commit_and_append_are_written_on_the_next_run(
    resumed, tmp_path):
  workdir, rows, _, _ = resumed
  raw = (workdir / metrics_log.METRICS_NAME).read_text().splitlines()
  copy = tmp_path / "copy"
  with store_lib.ResultsStore(workdir) as st:
    st.backup(copy)
  # The second group's lines never made it (a crash after its commit), the last one torn.
  second = rows[-1]["group_id"]
  kept = [l for l in raw if json.loads(l)["group_id"] != second]
  (copy / metrics_log.METRICS_NAME).write_text("\n".join(kept) + "\n" + raw[-1][:20])
  result = study_lib.train_and_evaluate(_config(), copy, log=lambda *_: None)
  assert result["trained_groups"] == 0
  got = sorted(json.dumps(r, sort_keys=True) for r in metrics_log.read_metrics(copy))
  want = sorted(json.dumps(r, sort_keys=True) for r in metrics_log.read_metrics(workdir))
  assert got == want


def test_read_metrics_keeps_one_record_per_key_phase_step(tmp_path):
  rec = {"run_key": "a", "group_id": "g", "method": "baseline", "phase": 1, "step": 10,
         "train_acc": 0.5}
  text = json.dumps(rec) + "\n" + json.dumps({**rec, "train_acc": 0.75}) + "\n"
  text += json.dumps({**rec, "step": 20}) + "\n{torn"
  (tmp_path / metrics_log.METRICS_NAME).write_text(text)
  got = metrics_log.read_metrics(tmp_path)
  assert [(r["step"], r["train_acc"]) for r in got] == [(10, 0.75), (20, 0.5)]
  assert metrics_log.read_metrics(tmp_path / "none") == []


def test_lines_of_writes_nan_as_null():
  row = {"run_key": "k", "group_id": "g", "method": "two_phase_oversampling",
         "extra": {"curve_steps": [5, 10], "train_acc": [0.5, float("nan")]}}
  lines = metrics_log.lines_of(row)
  assert lines == [
      {"run_key": "k", "group_id": "g", "method": "two_phase_oversampling", "phase": 2,
       "step": 5, "train_acc": 0.5},
      {"run_key": "k", "group_id": "g", "method": "two_phase_oversampling", "phase": 2,
       "step": 10, "train_acc": None}]


# ---- wall time ---------------------------------------------------------------------

def test_wall_shares_sum_to_the_group_and_the_study_wall_time(resumed):
  _, rows, _, elapsed = resumed
  groups = {}
  for r in rows:
    groups.setdefault(r["group_id"], []).append(r)
  assert len(groups) == 2
  for members in groups.values():
    extra = members[0]["extra"]
    assert all(m["extra"]["group_wall_s"] == extra["group_wall_s"] for m in members)
    assert math.isclose(sum(m["extra"]["wall_share_s"] for m in members),
                        extra["group_wall_s"], rel_tol=1e-9)
    assert math.isclose(sum(extra["phase_wall_s"]), extra["group_wall_s"])
    assert extra["phase_models"] == [3, 2]  # baseline, over-, undersampling; 2 two-phase
    assert extra["group_models"] == 5
  total = walltime.study_wall_s(rows)
  assert math.isclose(total, sum(r["extra"]["wall_share_s"] for r in rows), rel_tol=1e-9)
  # The groups are most of the two runs (the rest: loading data, building the grid).
  assert 0.5 * elapsed < total <= elapsed


def test_wall_time_is_the_cost_of_the_rows_model(resumed):
  _, rows, _, _ = resumed
  for r in rows:
    (t1, t2), (n1, n2) = r["extra"]["phase_wall_s"], r["extra"]["phase_models"]
    want = t1 / n1 + (t2 / n2 if r["method"].startswith("two_phase") else 0.0)
    assert math.isclose(r["wall_time_s"], want, rel_tol=1e-9), r["method"]
  by_method = {(r["group_id"], r["method"]): r["wall_time_s"] for r in rows}
  g = rows[0]["group_id"]
  # Thresholding scores the baseline's model: the same cost.
  assert by_method[(g, "thresholding")] == by_method[(g, "baseline")]
  assert by_method[(g, "two_phase_oversampling")] > by_method[(g, "oversampling")]


class _Method:
  def __init__(self, name, starts_from=None):
    self.name, self.starts_from = name, starts_from

  @property
  def is_phase2(self):
    return self.starts_from is not None


class _Model:
  def __init__(self, method, source=None):
    self.method, self.source = method, source


class _Row:
  def __init__(self, model):
    self.model = model


def test_a_trained_model_no_row_scores_is_charged_to_the_models_that_continue_it():
  src = _Model(_Method("oversampling"))
  two = _Model(_Method("two_phase", "oversampling"), source=src)
  specs = [_Row(two)]
  rows = [{"extra": {}}]
  walltime.charge(rows, specs, [src], [two], (6.0, 4.0))
  assert rows[0]["wall_time_s"] == 10.0
  assert rows[0]["extra"]["wall_share_s"] == 10.0
  assert rows[0]["extra"]["group_wall_s"] == 10.0
