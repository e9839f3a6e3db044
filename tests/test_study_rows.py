"""A store that never holds a wrong row: a row is a function of its run key alone.

Whatever population, device count, process count, grid extension, regrouping or stale
checkpoint it was trained beside, a stored row holds the same numbers, bit for bit.
"""

import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import pytest

from experiments.configs import test as test_config
from imbjax import engine
from imbjax import store as store_lib
from imbjax import study
from tests import helpers

ROOT = pathlib.Path(__file__).resolve().parents[1]
TEST_CONFIG = ROOT / "experiments" / "configs" / "test.py"
def _config(**overrides):
  c = test_config.get_config()
  for k, v in overrides.items():
    c[k] = v
  return c


def _rows(workdir):
  """Each stored row's numbers (without how and when it was made), by run key."""
  with store_lib.ResultsStore(workdir) as s:
    return {r["run_key"]: store_lib.result_of_row(r) for r in s.rows()}


def _assert_same_rows(got, want, keys=None):
  """Every stored number (auc, accuracy, per_class_recall, the curves in extra, ...)
  equal, bit for bit."""
  keys = want.keys() if keys is None else keys
  assert keys <= got.keys()
  for key in keys:
    differ = [f for f in want[key] if got[key][f] != want[key][f]]
    assert not differ, (key, want[key]["method"], differ)


def _quiet(*_):
  pass


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
  """The test config at 3 repetitions, in one process on one device, groups of one case
  (3 phase-1 models, then 2 phase-2 models); trained once per session, shared by the
  xdist workers."""
  config = _config(repetitions=3, population_size=3)

  def train():
    workdir = tmp_path_factory.mktemp("reference")
    study.train_and_evaluate(config, workdir, log=_quiet)
    return _rows(workdir)

  return config, helpers.once_per_session(tmp_path_factory, "study_rows_reference", train)


def _sweep(workdir, *flags, **kwargs):
  cmd = [sys.executable, "-m", "experiments.sweep", f"--config={TEST_CONFIG}",
         "--config.repetitions=3", "--config.make_figures=False",
         f"--workdir={workdir}", *flags]
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "")  # conftest's compile setting only
  return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, **kwargs)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


# ----------------------------------------------------------------------------------------
# 1. A row does not depend on its population, device count or process count.


def test_population_size_does_not_change_a_row(reference, tmp_path):
  """The same run keys trained alone and in a population of 8 (baseline, plus
  thresholding scored on it): the same rows, and those of the reference's groups (a
  population of 3: baseline beside oversampling and undersampling)."""
  _, ref = reference
  stores = {}
  for size in (1, 8):
    config = _config(methods=("baseline", "thresholding"), repetitions=size,
                     population_size=size)
    result = study.train_and_evaluate(config, tmp_path / f"p{size}", log=_quiet)
    assert result["total_groups"] == 1  # one population of `size` models
    stores[size] = _rows(tmp_path / f"p{size}")
  _assert_same_rows(stores[8], stores[1])
  _assert_same_rows(stores[8], ref, keys=stores[8].keys() & ref.keys())
  assert len(stores[8].keys() & ref.keys()) == 6  # 3 repetitions x 2 methods


def test_two_devices_and_a_larger_population_do_not_change_a_row(reference, tmp_path):
  """`--cpu_devices=2`, all 3 cases in one population of 9 (padded to 10, 5 a device)."""
  _, ref = reference
  proc = _sweep(tmp_path, "--cpu_devices=2", "--config.population_size=9")
  out, _ = proc.communicate(timeout=600)
  assert proc.returncode == 0, out[-3000:]
  assert "1 groups, 0 already done, 15 models to train on 2 device(s)" in out
  _assert_same_rows(_rows(tmp_path), ref)
  assert _rows(tmp_path).keys() == ref.keys()


def test_two_process_sweep_fails_fast_when_a_process_dies_and_resumes_to_the_same_rows(
    reference, tmp_path):
  """Two local processes (jax.distributed, gloo), one device each: killing one after
  the first stored group ends the other within a minute; rerunning both resumes, and
  the store equals the one-process reference."""
  _, ref = reference

  def start():
    port = _free_port()
    return [_sweep(tmp_path, "--cpu_devices=1", "--config.population_size=3",
                   f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                   f"--process_id={i}", "--heartbeat_timeout_s=10")
            for i in range(2)]

  procs = start()
  deadline = time.time() + 400
  db = tmp_path / store_lib.DB_NAME
  while time.time() < deadline and procs[0].poll() is None:
    if db.exists() and len(_rows(tmp_path)) > 0:
      break
    time.sleep(0.2)
  stored = len(_rows(tmp_path))
  assert 0 < stored < len(ref), procs[0].communicate()[0][-3000:]
  procs[1].send_signal(signal.SIGKILL)
  killed = time.time()
  out, _ = procs[0].communicate(timeout=120)
  waited = time.time() - killed
  assert procs[0].returncode != 0, out[-3000:]
  assert waited < 60, (waited, out[-3000:])
  assert "rerun every process to resume" in out, out[-3000:]
  procs[1].communicate()

  procs = start()
  outs = [p.communicate(timeout=600)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  assert f"3 groups, {stored // 8} already done" in outs[0]
  _assert_same_rows(_rows(tmp_path), ref)
  assert _rows(tmp_path).keys() == ref.keys()


# ----------------------------------------------------------------------------------------
# 2. A rerun that extends or regroups the grid trains only the missing rows.


def test_extending_base_lrs_trains_only_new_rows_instead_of_refusing_them_as_stored(tmp_path):
  one = _config(repetitions=1, population_size=6, base_lrs=(0.01,))
  study.train_and_evaluate(one, tmp_path, log=_quiet)
  with store_lib.ResultsStore(tmp_path) as s:
    before = {r["run_key"]: r for r in s.rows()}
  lines = []
  both = _config(repetitions=1, population_size=6, base_lrs=(0.01, 0.02))
  result = study.train_and_evaluate(both, tmp_path, log=lines.append)
  # One group (6 phase-1 models of the case); only the 0.02 models train: 3 + 2.
  assert result["rows"] == 8 and result["trained_groups"] == 1
  assert "1 groups, 0 already done, 5 models to train" in "\n".join(lines)
  with store_lib.ResultsStore(tmp_path) as s:
    after = {r["run_key"]: r for r in s.rows()}
  assert all(after[k] == row for k, row in before.items())  # not rewritten
  clean = tmp_path / "clean"
  study.train_and_evaluate(_config(repetitions=1, population_size=6, base_lrs=(0.02,)),
                           clean, log=_quiet)
  new = {k: v for k, v in _rows(tmp_path).items() if k not in before}
  assert new.keys() == _rows(clean).keys()
  _assert_same_rows(new, _rows(clean))


def test_population_shrink_on_resume_gives_the_uninterrupted_rows(reference, tmp_path):
  """Half the study in groups of 6 (2 cases), resumed in groups of 2 (1 case)."""
  _, ref = reference
  first = study.train_and_evaluate(_config(repetitions=3, population_size=6), tmp_path,
                                   log=_quiet, stop_after_groups=1)
  assert first["trained_groups"] == 1 and first["rows"] == 16
  lines = []
  rest = study.train_and_evaluate(_config(repetitions=3, population_size=2), tmp_path,
                                  log=lines.append)
  assert rest["trained_groups"] == 1 and rest["rows"] == 8
  assert "3 groups, 2 already done, 5 models to train" in "\n".join(lines)
  _assert_same_rows(_rows(tmp_path), ref)
  assert _rows(tmp_path).keys() == ref.keys()


def test_regrouped_rerun_trains_only_the_missing_models_of_a_partly_stored_group(reference, tmp_path):
  """Stored in groups of 1 case (cases 0, 1), resumed in groups of 3 cases: the one
  group is partly stored and trains only case 2's models."""
  _, ref = reference
  study.train_and_evaluate(_config(repetitions=3, population_size=3), tmp_path,
                           log=_quiet, stop_after_groups=2)
  lines = []
  rest = study.train_and_evaluate(_config(repetitions=3, population_size=9), tmp_path,
                                  log=lines.append)
  assert rest["rows"] == 8
  assert "1 groups, 0 already done, 5 models to train" in "\n".join(lines)
  _assert_same_rows(_rows(tmp_path), ref)


# ----------------------------------------------------------------------------------------
# 3. A checkpoint is restored only into the models it was saved from.


def test_stale_checkpoint_of_another_base_lr_is_not_restored(tmp_path, monkeypatch):
  base = dict(methods=("baseline",), repetitions=1, population_size=1,
              checkpoint_every=10, curve_points=2)  # 20 iterations, log (and chunk)
  #                                            every 10 steps: a save at step 10
  real_chunk = engine.loop.train_chunk
  calls = {"n": 0}

  def killed_in_chunk_two(*args, **kwargs):
    calls["n"] += 1
    if calls["n"] == 2:
      raise RuntimeError("killed")
    return real_chunk(*args, **kwargs)

  monkeypatch.setattr(engine.loop, "train_chunk", killed_in_chunk_two)
  with pytest.raises(RuntimeError, match="killed"):
    study.train_and_evaluate(_config(base_lrs=(0.01,), **base), tmp_path, log=_quiet)
  monkeypatch.setattr(engine.loop, "train_chunk", real_chunk)
  saved = list((tmp_path / "checkpoints").glob("*/phase1/10"))
  assert len(saved) == 1  # the killed lr-0.01 group left its step-10 checkpoint

  study.train_and_evaluate(_config(base_lrs=(0.02,), **base), tmp_path, log=_quiet)
  clean = {}
  for lr in (0.01, 0.02):
    study.train_and_evaluate(_config(base_lrs=(lr,), **base), tmp_path / f"clean{lr}",
                             log=_quiet)
    clean[lr] = _rows(tmp_path / f"clean{lr}")
  rows = _rows(tmp_path)
  _assert_same_rows(rows, clean[0.02])
  (lr01,) = clean[0.01].values()
  (lr02,) = clean[0.02].values()
  assert lr01["auc"] != lr02["auc"] and lr01["extra"] != lr02["extra"]
  # The stored group's checkpoint is gone; the killed group's waits for its rerun.
  assert [p.parent for p in (tmp_path / "checkpoints").glob("*/phase1")] == [
      saved[0].parent.parent]
  # Rerun at 0.01: it resumes from step 10 and equals the clean run, then removes it.
  study.train_and_evaluate(_config(base_lrs=(0.01, 0.02), **base), tmp_path, log=_quiet)
  _assert_same_rows(_rows(tmp_path), clean[0.01])
  assert not list((tmp_path / "checkpoints").iterdir())
