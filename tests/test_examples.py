"""The two examples a user copies from, run on tiny sizes."""

import os
import pathlib
import sqlite3
import subprocess
import sys

from examples import own_data
from examples import own_model

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_own_model_example(tmp_path):
  # As a user runs it: its own process, the example's own command line. Under the
  # suite's `-O0` (conftest) the user model's plain XLA convolutions run as unoptimised
  # loops (106 s on an idle AVX2 EPYC, 2026-12-07); XLA's default -O2 took 36 s (55 s
  # of CPU), -O1 28 s (39 s of CPU): the same program with fewer LLVM passes.
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env["XLA_FLAGS"] = "--xla_backend_optimization_level=1"
  env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
  out = subprocess.run([sys.executable, str(ROOT / "examples" / "own_model.py"),
                        "--iterations=20", f"--workdir={tmp_path}"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  assert f"6 rows in {tmp_path / 'results.sqlite'}" in out.stdout
  with sqlite3.connect(tmp_path / "results.sqlite") as db:
    rows = dict(db.execute("SELECT method, model FROM runs"))
  assert set(rows) == set(own_model.get_config().methods)
  assert set(rows.values()) == {"SmallCNN"}


def test_own_data_example(tmp_path):
  result, paths = own_data.main(["--iterations=20", f"--workdir={tmp_path}"],
                                log=lambda *_: None, counts=(50, 20, 5, 2))
  assert result["rows"] == 6
  with sqlite3.connect(tmp_path / "results.sqlite") as db:
    (rho,) = set(r for (r,) in db.execute("SELECT rho FROM runs"))
  assert rho == 25.0
  assert any(p.name.startswith("per_class_recall") for p in paths)
