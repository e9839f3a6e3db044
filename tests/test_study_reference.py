"""The quickstart's numbers do not move when the study gets faster (issue #18).

A small quickstart (digits, 2 cases, all eight methods: 6 phase-1 and 4 phase-2
models, post-hoc thresholding, curves at every log point) was stored with the code from
before the speed work of 2026-12-02 (main at 2fb4a62) into
``tests/data/quickstart_reference.json``, once per machine kind it was recorded on (CPU
model and flags, jax, jaxlib, XLA_FLAGS). This test runs the same study through
today's driver and compares every stored number (auc, accuracies, per-class recall, the
curves in ``extra``) bit for bit with the reference of this machine kind.

On a machine kind with no reference, floats are not comparable with another kind's:
another instruction set rounds differently, and training amplifies that (between the two
recorded kinds, 24 iterations moved AUCs by up to 8.5e-4 and per-class recalls by one
example). There the test runs the study a second time with every switchable speed
change turned off (`benchmarks.study_ab.CHANGES`: the unoptimised path) and compares
the two bit for bit instead.

A machine kind is what XLA:CPU's generated code depends on: the CPU's name, family and
vector and floating-point instruction sets (`_isa`: the SSE, AVX, AVX-512, FMA, F16C and
AMX flags), the architecture, jax, jaxlib and XLA_FLAGS; not the rest of /proc/cpuinfo's
flags (hypervisor, security and crypto features differ between VMs of one kind). Evidence:
an AVX2 EPYC whose full flag list differed from the second reference's
(``cpu_flags`` 716e95dd638d against 1b7e2ea9477d) gave its rows bit for bit
(2026-12-07). A reference matches on its full ``cpu_flags`` (as every entry did before
`_isa` existed), or on its ``isa`` where it records one.

Record this machine kind's reference (only with code whose numbers are the reference's,
or when a change is meant to move the numbers, and say so in the commit):
``python -m tests.test_study_reference --write`` (with the test suite's XLA_FLAGS, see
conftest.py); it replaces this kind's entry and keeps the others.
"""

import contextlib
import datetime
import hashlib
import json
import os
import pathlib
import platform
import sys

import jax

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


_ISA_PREFIXES = ("sse", "ssse", "avx", "fma", "f16c", "amx")


def _isa(cpu: str, family: str, flags: list[str]) -> str:
  """The CPU's name and family (LLVM tunes its code per CPU generation) and the
  instruction-set flags XLA:CPU's float code depends on, sorted, as one string."""
  wanted = sorted(f for f in flags if f.startswith(_ISA_PREFIXES))
  return f"{cpu}, family {family}: {' '.join(wanted)}"


def _machine() -> dict:
  cpu, family, words = platform.processor(), "?", None
  try:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
      elif line.startswith("cpu family") and family == "?":
        family = line.split(":", 1)[1].strip()
      elif line.startswith("flags") and words is None:
        words = line.split(":", 1)[1].split()
  except OSError:
    pass
  flags = isa = ""
  if words is not None:
    flags = hashlib.sha1(" ".join(sorted(words)).encode()).hexdigest()[:12]
    isa = _isa(cpu, family, words)
  import jaxlib
  return {"cpu": cpu, "cpu_flags": flags, "isa": isa, "machine": platform.machine(),
          "jax": jax.__version__,
          "jaxlib": jaxlib.__version__, "xla_flags": os.environ.get("XLA_FLAGS", "")}


_SAME_KIND = ("machine", "jax", "jaxlib", "xla_flags")


def _same_kind(recorded: dict, mine: dict) -> bool:
  """Whether a reference's machine is this machine's kind (module docstring)."""
  if any(recorded.get(k) != mine[k] for k in _SAME_KIND):
    return False
  return (recorded.get("cpu_flags") == mine["cpu_flags"]
          or bool(recorded.get("isa")) and recorded["isa"] == mine["isa"])


def _rows(workdir) -> dict:
  with store_lib.ResultsStore(workdir) as s:
    return {r["run_key"]: store_lib.result_of_row(r) for r in s.rows()}


def _run(workdir) -> dict:
  study.train_and_evaluate(_config(), workdir, log=lambda *_: None)
  return json.loads(json.dumps(_rows(workdir), default=str))  # as stored in the JSON


def _references() -> list[dict]:
  """The recorded references: [{'machine', 'recorded', 'rows'}], one per machine kind."""
  return json.loads(REFERENCE.read_text())["references"]


def _assert_bitwise(got, want):
  for key in want:
    differ = [f for f in want[key] if got[key][f] != want[key][f]]
    assert not differ, (key, want[key]["method"], differ)


def test_quickstart_rows_equal_the_reference(tmp_path, monkeypatch):
  refs = _references()
  from imbjax.engine import loop  # pylint: disable=g-import-not-at-top
  cached = []  # phase 2 trained from cached head inputs (CPU), as a user's study is
  monkeypatch.setattr(loop, "head_inputs",
                      lambda *a, real=loop.head_inputs: cached.append(1) or real(*a))
  got = _run(tmp_path / "study")
  assert cached
  for ref in refs:
    want = ref["rows"]
    assert set(got) == set(want)  # the same run keys: the same study
    assert len(want) == 16 and {r["method"] for r in want.values()} >= {
        "two_phase_oversampling", "undersampling_thresholding"}
  mine = [ref for ref in refs if _same_kind(ref["machine"], _machine())]
  if mine:
    _assert_bitwise(got, mine[0]["rows"])
    return
  from benchmarks import study_ab  # pylint: disable=g-import-not-at-top
  with contextlib.ExitStack() as stack:
    for change in study_ab.CHANGES:
      stack.enter_context(study_ab.without(change))
    unoptimised = _run(tmp_path / "unoptimised")
  _assert_bitwise(got, unoptimised)


def test_a_machine_kind_is_its_instruction_sets_not_its_whole_flag_list():
  mine = {"cpu": "x", "cpu_flags": "aaaa", "isa": "avx avx2 fma sse", "machine": "x86_64",
          "jax": "1", "jaxlib": "1", "xla_flags": "-O0"}
  assert _isa("EPYC", "25", "fpu hypervisor avx2 sse4_2 vaes avx512f fma sha_ni".split()
              ) == "EPYC, family 25: avx2 avx512f fma sse4_2"
  assert _same_kind({**mine, "cpu_flags": "bbbb"}, mine)      # other VM, same ISA
  assert _same_kind({**mine, "isa": None}, mine)              # an old entry, same flags
  assert not _same_kind({**mine, "cpu_flags": "bbbb", "isa": None}, mine)
  assert not _same_kind({**mine, "cpu_flags": "bbbb", "isa": "avx avx2 sse"}, mine)
  assert not _same_kind({**mine, "xla_flags": ""}, mine)
  assert not _same_kind({**mine, "jaxlib": "2"}, mine)


if __name__ == "__main__":
  if sys.argv[1:] != ["--write"]:
    sys.exit("usage: python -m tests.test_study_reference --write")
  import subprocess  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  from tests import conftest  # noqa: F401  (the suite's XLA_FLAGS)
  with tempfile.TemporaryDirectory() as d:
    rows = _run(d)
  head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                        text=True, cwd=REFERENCE.parent, check=False).stdout.strip()
  refs = [r for r in (_references() if REFERENCE.exists() else [])
          if not _same_kind(r["machine"], _machine())]
  refs.append({"machine": _machine(), "rows": rows,
               "recorded": f"{datetime.date.today()}, main at {head or '?'}"})
  REFERENCE.parent.mkdir(exist_ok=True)
  REFERENCE.write_text(json.dumps({"references": refs}, indent=1, sort_keys=True) + "\n")
  print(f"wrote {REFERENCE}: {len(rows)} rows for this machine kind, "
        f"{len(refs)} kind(s) in all")
