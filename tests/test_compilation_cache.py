"""`engine.use_compilation_cache`: where compiled programs are kept, that a second
process reuses them with the same results bit for bit, and what is refused."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from imbjax import engine
from imbjax.engine import devices

_ROOT = pathlib.Path(__file__).resolve().parents[1]

# A second process compiling the same program finds it in the cache (JAX's own
# monitoring event) and computes the same bits.
_WORKER = r"""
import json, sys
import jax, jax.numpy as jnp, numpy as np
from imbjax import engine
hits = []
jax.monitoring.register_event_listener(
    lambda name, **kw: hits.append(name) if name.endswith("/cache_hits") else None)
where = engine.use_compilation_cache(sys.argv[1])
@jax.jit
def f(x):
  return jnp.tanh(x @ x.T).sum(0) * 1.7
y = f(jnp.asarray(np.random.default_rng(0).standard_normal((64, 48), np.float32)))
print(json.dumps({"where": where, "hits": len(hits), "y": np.asarray(y).view(np.uint32).tolist()}))
"""


def _worker(arg, env):
  proc = subprocess.run([sys.executable, "-c", _WORKER, arg], env=env, cwd=_ROOT,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _env(tmp_path):
  env = {k: v for k, v in os.environ.items()
         if not k.startswith("JAX_") and k != devices.COMPILATION_CACHE_ENV}
  env.update(HOME=str(tmp_path / "home"), PYTHONPATH=str(_ROOT))
  env.pop("XDG_CACHE_HOME", None)
  return env


def test_auto_keeps_programs_under_the_users_cache_and_a_rerun_reuses_them(tmp_path):
  env = _env(tmp_path)
  first = _worker("auto", env)
  where = pathlib.Path(first["where"])
  assert where.parent == tmp_path / "home" / ".cache" / "imbjax" / "xla"
  assert where.stat().st_mode & 0o777 == 0o700 and any(where.iterdir())
  second = _worker("auto", env)
  assert first["hits"] == 0 and second["hits"] >= 1
  assert second["y"] == first["y"]  # bit for bit
  # "none" compiles afresh: no hit, same bits.
  off = _worker("none", env)
  assert off["where"] is None and off["hits"] == 0 and off["y"] == first["y"]


def test_env_and_jax_settings_choose_the_directory(tmp_path):
  env = _env(tmp_path)
  env[devices.COMPILATION_CACHE_ENV] = str(tmp_path / "mine")
  assert pathlib.Path(_worker("auto", env)["where"]).parent == tmp_path / "mine" / "xla"
  env["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path / "jax_own")
  assert _worker("auto", env)["where"] == str(tmp_path / "jax_own")
  assert _worker(str(tmp_path / "given"), env)["where"] == str(tmp_path / "given")


def test_a_directory_others_can_write_is_refused(tmp_path, caplog):
  shared = tmp_path / "shared"
  shared.mkdir()
  shared.chmod(0o777)
  with caplog.at_level("WARNING"):
    assert engine.use_compilation_cache(str(shared)) is None
  assert "writable by others (mode 777)" in caplog.text and "chmod 700" in caplog.text


@pytest.mark.parametrize("bad", ["", None, 3])
def test_bad_values_name_what_is_accepted(bad):
  with pytest.raises(ValueError, match=r"'auto', 'none' or a directory, got"):
    engine.use_compilation_cache(bad)


def test_the_sweep_binary_refuses_an_empty_cache_flag_by_name(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.sweep", "--compilation_cache=",
       f"--workdir={tmp_path / 'w'}"], cwd=_ROOT, env=_env(tmp_path), capture_output=True,
      text=True, timeout=300)
  assert proc.returncode != 0
  assert ("--compilation_cache: compilation cache must be 'auto', 'none' or a directory, "
          "got ''") in proc.stderr + proc.stdout


def test_add_xla_flag_keeps_a_setting_the_user_made(monkeypatch):
  """The one way imbjax, its benchmarks and this suite add an XLA flag: appended once,
  never over a value the user's XLA_FLAGS give for the same flag."""
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")
  assert not devices.add_xla_flag("--xla_cpu_multi_thread_eigen=false")
  assert devices.add_xla_flag("--xla_backend_optimization_level=1")
  assert not devices.add_xla_flag("--xla_backend_optimization_level=1")
  assert os.environ["XLA_FLAGS"] == ("--xla_cpu_multi_thread_eigen=true "
                                     "--xla_backend_optimization_level=1")
  monkeypatch.delenv("XLA_FLAGS")
  assert devices.add_xla_flag("--xla_cpu_multi_thread_eigen=false")
  assert os.environ["XLA_FLAGS"] == "--xla_cpu_multi_thread_eigen=false"
  with pytest.raises(ValueError, match=r"'--xla_name=value', got 'multi_thread'"):
    devices.add_xla_flag("multi_thread")
