"""The quickstart's numbers do not move when the study gets faster (issue #18).

A small quickstart (digits, 2 cases, all eight methods: 6 phase-1 and 4 phase-2
models, post-hoc thresholding, curves at every log point) was stored before the
speed work of 2026-12-02 (main at 2fb4a62) into ``tests/data/quickstart_reference.json``.
This test runs the same study through today's driver and compares every stored number
(auc, accuracies, per-class recall, the curves in ``extra``): bit for bit on the
machine kind that recorded the reference (same CPU model, jax and jaxlib), and to
float tolerance elsewhere, where another instruction set may reassociate sums.

Regenerate (only when a change is meant to move the numbers, and say so in the
commit): ``python -m tests.test_study_reference --write`` (with the test suite's
XLA_FLAGS, see conftest.py).
"""

import hashlib
import json
import math
import os
import pathlib
import platform
import sys

import jax
import numpy as np

from experiments.configs import quickstart
from imbjax import store as store_lib
from imbjax import study

REFERENCE = pathlib.Path(__file__).parent / "data" / "quickstart_reference.json"


def _config():
  c = quickstart.get_config()
  c.iterations = 24
  c.rhos = (10,)
  c.repetitions = 1
  c.make_figures = False
  c.verbose = False
  return c


def _machine() -> dict:
  cpu, flags = platform.processor(), ""
  try:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
      elif line.startswith("flags") and not flags:
        flags = hashlib.sha1(" ".join(sorted(line.split(":", 1)[1].split())).encode()
                             ).hexdigest()[:12]
  except OSError:
    pass
  import jaxlib
  return {"cpu": cpu, "cpu_flags": flags, "machine": platform.machine(),
          "jax": jax.__version__,
          "jaxlib": jaxlib.__version__, "xla_flags": os.environ.get("XLA_FLAGS", "")}


def _rows(workdir) -> dict:
  with store_lib.ResultsStore(workdir) as s:
    return {r["run_key"]: store_lib.result_of_row(r) for r in s.rows()}


def _run(workdir) -> dict:
  study.train_and_evaluate(_config(), workdir, log=lambda *_: None)
  return json.loads(json.dumps(_rows(workdir), default=str))  # as stored in the JSON


def _close(got, want, path=""):
  """Equal, with floats to 1e-5 relative (1e-6 absolute); NaN equals NaN."""
  if isinstance(want, dict):
    assert set(got) == set(want), path
    for k in want:
      _close(got[k], want[k], f"{path}.{k}")
  elif isinstance(want, list):
    assert len(got) == len(want), path
    for i, (g, w) in enumerate(zip(got, want)):
      _close(g, w, f"{path}[{i}]")
  elif isinstance(want, float) and not isinstance(want, bool):
    if math.isnan(want):
      assert math.isnan(got), path
    else:
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=path)
  else:
    assert got == want, path


def test_quickstart_rows_equal_the_reference(tmp_path):
  ref = json.loads(REFERENCE.read_text())
  got = _run(tmp_path)
  want = ref["rows"]
  assert set(got) == set(want)  # the same run keys: the same study
  assert len(want) == 16 and {r["method"] for r in want.values()} >= {
      "two_phase_oversampling", "undersampling_thresholding"}
  if _machine() == ref["machine"]:
    for key in want:  # bit for bit
      differ = [f for f in want[key] if got[key][f] != want[key][f]]
      assert not differ, (key, want[key]["method"], differ)
  else:
    _close(got, want)


if __name__ == "__main__":
  if sys.argv[1:] != ["--write"]:
    sys.exit("usage: python -m tests.test_study_reference --write")
  import tempfile
  from tests import conftest  # noqa: F401  (the suite's XLA_FLAGS)
  with tempfile.TemporaryDirectory() as d:
    rows = _run(d)
  REFERENCE.parent.mkdir(exist_ok=True)
  REFERENCE.write_text(json.dumps({"machine": _machine(), "rows": rows}, indent=1,
                                  sort_keys=True) + "\n")
  print(f"wrote {REFERENCE}: {len(rows)} rows")
