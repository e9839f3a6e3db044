"""Test-wide settings.

The tests check numbers, not speed, and their run time is dominated by XLA:CPU compiles:
skipping LLVM's optimisation passes (`--xla_backend_optimization_level=0`) makes those
several times faster. Set before JAX initialises its backend; subprocesses the tests
start inherit it. Benchmarks never run under this setting.

Many tests compile the same programs (the LeNet-5 population step, evaluation, init),
in both xdist workers and in every `experiments.sweep` subprocess a test starts. JAX's
persistent compilation cache shares them: one fresh, empty directory per pytest session
(made by the session's first process, the xdist controller, and inherited through the
environment by its workers and by their subprocesses; removed when the session ends),
never in the repository and never reused by a later session. An entry is keyed by the
program, the compile options, the XLA flags and the backend, so a hit is the executable
the same compile would have produced; a cache fault only warns and recompiles.
"""

import os
import shutil
import sys
import tempfile

import pytest

# The session's compilation cache: made here by the first process of a session (the
# xdist controller, or pytest alone); its workers find it in the environment.
_CACHE_ENV = "IMBJAX_TEST_JAX_CACHE_DIR"
_OWN_CACHE = None
if not (os.environ.get("PYTEST_XDIST_WORKER") and os.environ.get(_CACHE_ENV)):
  _OWN_CACHE = tempfile.mkdtemp(prefix="imbjax-tests-jax-cache-")
  os.environ[_CACHE_ENV] = _OWN_CACHE
_CACHE_SETTINGS = {
    "JAX_COMPILATION_CACHE_DIR": os.environ[_CACHE_ENV],
    # Every program, however fast its compile or small its executable: the tests'
    # programs compile in well under JAX's default 1 s threshold at -O0.
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1",
}
os.environ.update(_CACHE_SETTINGS)
if "jax" in sys.modules:  # a plugin imported JAX first: its config read the env already
  import jax
  for _name, _value in _CACHE_SETTINGS.items():
    _value = float(_value) if "SECS" in _name else int(_value) if "BYTES" in _name else _value
    jax.config.update(_name.lower(), _value)

# After the cache settings: this imports JAX (whose config reads them), without starting
# its backend (which reads XLA_FLAGS).
from imbjax.engine.devices import add_xla_flag  # pylint: disable=g-import-not-at-top

add_xla_flag("--xla_backend_optimization_level=0")


@pytest.fixture(autouse=True)
def _xla_flags_unchanged():
  """A test may not leave the worker's XLA_FLAGS changed: every later test in the worker
  would see them (the quickstart reference test keys its machine kind by them and, not
  matching, trains its study twice), and so would every subprocess it starts (other
  compilation-cache keys, other threading). Restored, and the test fails by name."""
  before = os.environ.get("XLA_FLAGS")
  yield
  after = os.environ.get("XLA_FLAGS")
  if after != before:
    if before is None:
      del os.environ["XLA_FLAGS"]
    else:
      os.environ["XLA_FLAGS"] = before
    pytest.fail(f"the test changed XLA_FLAGS from {before!r} to {after!r} (restored); "
                f"set them in a subprocess's env, or with monkeypatch.setenv")


@pytest.fixture(autouse=True)
def _jax_config_unchanged():
  """Nor JAX's process-wide settings (`jax.config`: the compilation cache, the CPU
  device count, x64, ...), which every later test in the worker would inherit. Restored,
  and the test fails by name."""
  import jax  # pylint: disable=g-import-not-at-top
  before = dict(jax.config.values)
  yield
  changed = {k: (before.get(k), v) for k, v in jax.config.values.items()
             if k in before and before[k] != v}
  for name, (old, _) in changed.items():
    jax.config.update(name, old)
  if changed:
    pytest.fail(f"the test changed jax.config (restored): {changed}")


def pytest_unconfigure(config):
  del config
  if _OWN_CACHE is not None:
    shutil.rmtree(_OWN_CACHE, ignore_errors=True)
