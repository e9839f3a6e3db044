"""Test-wide settings.

The tests check numbers, not speed, and their run time is dominated by XLA:CPU compiles:
skipping LLVM's optimisation passes (`--xla_backend_optimization_level=0`) makes those
several times faster. Set before JAX initialises its backend; subprocesses the tests
start inherit it. Benchmarks never run under this setting.
"""

import os

_FLAG = "--xla_backend_optimization_level=0"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()
