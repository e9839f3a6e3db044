"""The two examples a user copies from, run on tiny sizes."""

import sqlite3

from examples import own_data
from examples import own_model


def test_own_model_example(tmp_path):
  result = own_model.main(["--iterations=20", f"--workdir={tmp_path}"], log=lambda *_: None)
  assert result["rows"] == 6
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
