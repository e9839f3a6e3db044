"""The study driver end to end: the quickstart shrunk to seconds, the store, resume."""

import json
import pathlib
import sqlite3

import jax
import numpy as np
import pytest

from experiments.configs import test as test_config
from imbjax import figures
from imbjax import methods as methods_lib
from imbjax import engine
from imbjax import store as store_lib
from imbjax import study


def _config(**overrides):
  c = test_config.get_config()
  for k, v in overrides.items():
    c[k] = v
  return c


def _rows(workdir):
  with store_lib.ResultsStore(workdir) as s:
    return {r["run_key"]: r for r in s.rows()}


_NUMBERS = ("auc", "accuracy", "thresholded_accuracy", "balanced_accuracy")


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
  """One uninterrupted run of the shrunk quickstart, in two population groups."""
  workdir = tmp_path_factory.mktemp("full")
  config = _config(population_size=3)
  result = study.train_and_evaluate(config, workdir, log=lambda *_: None)
  return config, workdir, result


def test_quickstart_end_to_end(full_run):
  config, workdir, result = full_run
  rows = _rows(workdir)
  cases = study.cases(config)
  assert result["total_groups"] == 2 and result["trained_groups"] == 2
  # One row per (case, method): 2 repetitions x the 8 paper methods.
  assert len(rows) == len(cases) * len(config.methods) == result["rows"]
  by_method = {}
  for r in rows.values():
    by_method.setdefault(r["method"], []).append(r)
    assert r["status"] == "ok"
    assert 0.0 <= r["auc"] <= 1.0 and 0.0 <= r["accuracy"] <= 1.0
    counts = r["class_counts"]
    assert max(counts) / min(counts) == pytest.approx(config.rhos[0], rel=0.1)
    assert len(r["minority_classes"]) == round(config.mus[0] * 10)
  assert set(by_method) == set(config.methods)
  # Thresholding is an evaluation of the baseline model: same AUC, its own accuracy.
  for base, thr in [("baseline", "thresholding"), ("oversampling",
                                                   "oversampling_thresholding")]:
    for rep in range(config.repetitions):
      b = next(r for r in by_method[base] if r["repetition"] == rep)
      t = next(r for r in by_method[thr] if r["repetition"] == rep)
      assert t["auc"] == pytest.approx(b["auc"], abs=1e-6)
      assert t["accuracy"] == pytest.approx(b["thresholded_accuracy"], abs=1e-9)
  # The CSV, the saved config and the figures come from the store alone.
  csv_text = (pathlib.Path(workdir) / "results.csv").read_text()
  assert csv_text.count("\n") == len(rows) + 1
  assert json.loads((pathlib.Path(workdir) / "config.json").read_text())
  table = figures.summary_table(list(rows.values()), "auc")
  for m in ("baseline", "oversampling", "undersampling"):
    assert m in table
  paths = figures.make_all(workdir)
  assert any(p.suffix == ".png" for p in paths)


def test_rerun_skips_finished_groups(full_run):
  config, workdir, _ = full_run
  before = _rows(workdir)
  result = study.train_and_evaluate(config, workdir, log=lambda *_: None)
  assert result["trained_groups"] == 0 and result["rows"] == 0
  assert _rows(workdir) == before


def test_crash_mid_sweep_then_resume_matches_uninterrupted(full_run, tmp_path,
                                                           monkeypatch):
  config, full_dir, _ = full_run
  real_fit = engine.fit
  calls = {"n": 0}

  def crashing_fit(*args, **kwargs):
    calls["n"] += 1
    if calls["n"] == 3:  # group 1 has phases 1 and 2; crash inside group 2's phase 1
      raise RuntimeError("injected crash")
    return real_fit(*args, **kwargs)

  monkeypatch.setattr(engine, "fit", crashing_fit)
  monkeypatch.setattr(engine.loop, "fit", crashing_fit)  # phase 2 (engine.fine_tune)
  with pytest.raises(RuntimeError, match="injected crash"):
    study.train_and_evaluate(config, tmp_path, log=lambda *_: None)
  partial = _rows(tmp_path)
  assert 0 < len(partial) < len(_rows(full_dir))
  # Whole groups only: every stored group is complete.
  with sqlite3.connect(tmp_path / store_lib.DB_NAME) as db:
    sizes = [n for (n,) in db.execute("SELECT COUNT(*) FROM runs GROUP BY group_id")]
  assert sizes == [len(partial)]

  monkeypatch.setattr(engine, "fit", real_fit)
  monkeypatch.setattr(engine.loop, "fit", real_fit)
  result = study.train_and_evaluate(config, tmp_path, log=lambda *_: None)
  assert result["trained_groups"] == 1
  resumed, full = _rows(tmp_path), _rows(full_dir)
  assert resumed.keys() == full.keys()
  for key, row in full.items():
    for field in _NUMBERS:
      assert resumed[key][field] == pytest.approx(row[field], abs=1e-6), (key, field)


def test_incompatible_config_is_refused(full_run):
  config, workdir, _ = full_run
  changed = _config(population_size=3, iterations=config.iterations + 1)
  with pytest.raises(ValueError, match="iterations"):
    study.train_and_evaluate(changed, workdir, log=lambda *_: None)
  # Mixed precision gives other numbers: it may not continue a float32 workdir.
  with pytest.raises(ValueError, match="compute_dtype"):
    study.train_and_evaluate(_config(population_size=3, compute_dtype="bfloat16"), workdir,
                             log=lambda *_: None)


def test_fingerprint_takes_compute_dtype_auto_as_what_it_resolves_to(monkeypatch):
  config = _config(population_size=3)
  config.compute_dtype = "auto"
  assert "compute_dtype" not in study.fingerprint(config)  # CPU: float32, left out
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert study.fingerprint(config)["compute_dtype"] == "bfloat16"
  config.compute_dtype = "float32"
  assert "compute_dtype" not in study.fingerprint(config)


def test_bad_config_names_the_value(tmp_path):
  with pytest.raises(ValueError, match="no_such_method"):
    study.train_and_evaluate(_config(methods=("baseline", "no_such_method")), tmp_path)
  with pytest.raises(ValueError, match="wedge"):
    study.train_and_evaluate(_config(profile="wedge"), tmp_path)


def test_method_closure_trains_what_evaluations_need():
  trained = [m.name for m in methods_lib.closure(["thresholding",
                                                  "two_phase_undersampling"])]
  assert trained == ["baseline", "undersampling", "two_phase_undersampling"]


def test_modern_methods_and_posthoc_tau_on_a_validation_split(tmp_path):
  config = _config(methods=("baseline", "posthoc_logit_adjustment", "tau_norm", "crt",
                            "balanced_softmax"), validation_fraction=0.2,
                   repetitions=1, population_size=8)
  study.train_and_evaluate(config, tmp_path, log=lambda *_: None)
  rows = {r["method"]: r for r in _rows(tmp_path).values()}
  assert set(rows) == set(config.methods)
  for r in rows.values():
    assert r["val_auc"] is not None and 0 <= r["val_auc"] <= 1
  assert rows["posthoc_logit_adjustment"]["extra"]["tau"] in np.linspace(0, 2, 9)
  assert rows["tau_norm"]["extra"]["tau"] in study.TAU_NORM_GRID
  # Post-hoc logit adjustment with tau = 0 would be the baseline itself.
  if rows["posthoc_logit_adjustment"]["extra"]["tau"] == 0:
    assert rows["posthoc_logit_adjustment"]["accuracy"] == rows["baseline"]["accuracy"]
  # The validation images are held out of training: class counts shrink by ~20%.
  data = study.load_data(config)
  assert len(data.val.labels) + len(data.train.labels) == 1347
  assert not set(map(bytes, data.val.images[:20])) & set(map(bytes, data.train.images))


def test_non_finite_outputs_are_scored_as_diverged_not_crashing():
  logits = np.zeros((6, 3), np.float32)
  logits[2, 1] = np.nan
  labels = np.array([0, 1, 2, 0, 1, 2])
  row = study.score(logits, labels, np.array([5, 5, 1]), 3)
  assert row["extra"]["non_finite_outputs"] and np.isnan(row["auc"])
  fine = study.score(np.eye(3)[labels] * 5, labels, np.array([5, 5, 1]), 3)
  assert fine["auc"] == 1.0 and fine["accuracy"] == 1.0


def test_sweep_picks_cpu_devices_from_the_study_without_starting_jax(monkeypatch):
  from absl import app
  from experiments import sweep
  monkeypatch.setattr("os.cpu_count", lambda: 2)
  many = _config(population_size=64)  # several models per population
  assert study.largest_population(many) >= 2
  assert sweep.cpu_devices("auto", many) == 2
  one = _config(profile="original", methods=("baseline",), repetitions=1, base_lrs=(0.01,))
  assert study.largest_population(one) == 1
  assert sweep.cpu_devices("auto", one) == 1  # a lone model: one two-threaded device
  assert sweep.cpu_devices("0", one) == 0 and sweep.cpu_devices("3", one) == 3
  for bad in ("-1", "two", ""):
    with pytest.raises(app.UsageError, match=f"'auto' or an int >= 0.*got {bad!r}"):
      sweep.cpu_devices(bad, one)
