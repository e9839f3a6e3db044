"""Devices and backends: the model-axis mesh, placement, CPU devices, dtype defaults."""

from __future__ import annotations

import hashlib
import logging
import os
import pathlib
import platform

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


MODEL_AXIS = "models"


COMPUTE_DTYPES = ("auto", "float32", "bfloat16")


def resolve_compute_dtype(compute_dtype: str) -> str:
  """'auto' -> "float32" on CPU, "bfloat16" elsewhere; a concrete name is returned as is.

  Why bfloat16 off CPU: it trained LeNet-5 populations faster on an H200 (measured:
  benchmarks/README.md, "GPU (H200)", session 4) and left real-MNIST results within seed
  noise (docs/reproduction.md). On CPU bfloat16 is emulated and slower, so float32 stays.

  Raises:
    ValueError: for a name not in `COMPUTE_DTYPES`.
  """
  if compute_dtype not in COMPUTE_DTYPES:
    raise ValueError(f"compute_dtype must be one of {COMPUTE_DTYPES}, got {compute_dtype!r}")
  if compute_dtype == "auto":
    return "float32" if jax.default_backend() == "cpu" else "bfloat16"
  return compute_dtype



def model_shards(tree) -> int:
  """Into how many pieces the leading (model) axis of `tree`'s arrays is sharded."""
  leaf = jax.tree.leaves(tree)[0]
  sharding = getattr(leaf, "sharding", None)
  if sharding is None or not getattr(leaf, "shape", ()):
    return 1
  return max(1, leaf.shape[0] // sharding.shard_shape(leaf.shape)[0])


def chunk_mesh(tree) -> Mesh | None:
  """The mesh `train_chunk` splits the models over: that of `tree`'s model-axis
  sharding (`place`) when it spans several devices, else None (one program)."""
  leaf = jax.tree.leaves(tree)[0]
  sharding = getattr(leaf, "sharding", None)
  if (model_shards(tree) > 1 and isinstance(sharding, NamedSharding)
      and tuple(sharding.spec)[:1] == (MODEL_AXIS,)):
    return sharding.mesh
  return None


# ----------------------------------------------------------------------------------------
# Placement: the model axis over every device (and every host).


def use_cpu_devices(n: int) -> int:
  """Splits the host CPU into `n` single-threaded XLA devices; call before JAX starts.

  Why: on XLA:CPU a small CNN's step is a chain of small ops, and splitting each op over
  threads buys little; `n` devices, each training its share of the (sharded) population
  on one thread as its own program (`train_chunk` uses `jax.shard_map`), is the
  in-process form of "one process per core" (measured: benchmarks/README.md, "Session
  5"; faster for populations, slower for one model). With one model per block (the CPU default) a model's parameters come out the
  same, bit for bit, whatever the number of such devices (one multi-threaded device
  sums some products in another order, ~1e-6 relative). Populations smaller than `n` are
  padded with duplicates. It must run before the first JAX computation, and it sets
  `--xla_cpu_multi_thread_eigen=false` in XLA_FLAGS (both only affect the CPU backend,
  so calling it on a GPU host changes nothing there).

  Args:
    n: devices; 0 means one per core (`os.cpu_count()`).

  Returns:
    The number of devices requested.

  Raises:
    ValueError: if `n` is negative.
  """
  if isinstance(n, bool) or not isinstance(n, int) or n < 0:
    raise ValueError(f"cpu devices must be an int >= 0 (0: one per core), got {n!r}")
  n = n or os.cpu_count() or 1
  jax.config.update("jax_num_cpu_devices", n)
  if n > 1:
    add_xla_flag("--xla_cpu_multi_thread_eigen=false")
  return n


def add_xla_flag(flag: str) -> bool:
  """Appends `flag` (``--name=value``) to XLA_FLAGS unless they name ``name`` already
  (the user's own setting wins); XLA reads them when JAX starts its backend, so call
  this before the first computation. Returns whether it was added."""
  name = flag.split("=", 1)[0]
  if not name.startswith("--xla_"):
    raise ValueError(f"an XLA flag looks like '--xla_name=value', got {flag!r}")
  flags = os.environ.get("XLA_FLAGS", "")
  if name.removeprefix("--") in flags:
    return False
  os.environ["XLA_FLAGS"] = (flags + " " + flag).strip()
  return True


COMPILATION_CACHE_ENV = "IMBJAX_CACHE_DIR"


def _machine_key() -> str:
  """12 hex digits naming this host's instruction set (CPU model and flags): a cached
  executable is only reused on a host that can run it."""
  text = platform.machine() + platform.processor()
  try:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith(("model name", "flags")):
        text += line
        if line.startswith("flags"):
          break
  except OSError:
    pass
  return hashlib.sha1(text.encode()).hexdigest()[:12]


def default_compilation_cache() -> pathlib.Path:
  """Where `use_compilation_cache('auto')` keeps programs: ``$IMBJAX_CACHE_DIR`` or
  ``$XDG_CACHE_HOME/imbjax`` or ``~/.cache/imbjax``, then ``xla/<machine key>``."""
  base = os.environ.get(COMPILATION_CACHE_ENV)
  if not base:
    base = os.path.join(os.environ.get("XDG_CACHE_HOME") or
                        os.path.join(os.path.expanduser("~"), ".cache"), "imbjax")
  return pathlib.Path(base) / "xla" / _machine_key()


def use_compilation_cache(directory: str = "auto") -> str | None:
  """Keeps compiled XLA programs on disk, so a rerun skips its compiles; call before
  the first compile.

  A study compiles its programs afresh in every process: on 2 CPU cores the quickstart
  spends ~22 s of its ~95 s compiling 90 programs, and with the cache a second run
  spends 4 s (benchmarks/README.md, "Session 9"). This is JAX's persistent compilation
  cache, with every program kept (the study's programs are small: the quickstart's
  take 1.9 MB). An entry is keyed by the program, the compile options, XLA's flags,
  the jax/jaxlib versions and the device, so a hit is the executable the same compile
  would produce: results are the same bit for bit, cached or not. The directory is made
  private to the user (mode 0700): JAX treats the cache as trusted code, so one that
  others may write is refused (with a warning, and no cache).

  Args:
    directory: 'auto' (JAX's own setting if one is made, e.g. JAX_COMPILATION_CACHE_DIR;
      else `default_compilation_cache()`), 'none' (no cache, JAX's own setting
      included), or a directory.

  Returns:
    The directory in use, or None when there is no cache.

  Raises:
    ValueError: if `directory` is empty.
  """
  if not isinstance(directory, str) or not directory:
    raise ValueError(f"compilation cache must be 'auto', 'none' or a directory, got "
                     f"{directory!r}")
  if directory == "none":
    jax.config.update("jax_compilation_cache_dir", None)  # also JAX's own setting
    return None
  if directory == "auto":
    own = jax.config.jax_compilation_cache_dir
    if own:
      return own
    path = default_compilation_cache()
  else:
    path = pathlib.Path(directory).expanduser()
  try:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = path.stat().st_mode
  except OSError as e:
    logging.warning("no compilation cache: cannot make %s (%s)", path, e)
    return None
  if mode & 0o022:
    logging.warning("no compilation cache: %s is writable by others (mode %o), and "
                    "JAX runs what it finds there; make it private (chmod 700) to use "
                    "it", path, mode & 0o777)
    return None
  jax.config.update("jax_compilation_cache_dir", str(path))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
  return str(path)


def model_mesh(devices=None) -> Mesh:
  """A 1-D mesh named 'models' over `devices` (default: every device of every host)."""
  devices = np.asarray(jax.devices() if devices is None else devices)
  return Mesh(devices.reshape(-1), (MODEL_AXIS,))


def place(tree, mesh: Mesh | None, *, replicated: bool = False):
  """Puts host arrays on the mesh: model axis sharded, or fully replicated.

  Works on one host and on several (`jax.distributed`): each process holds the whole
  host array (every host builds the same deterministic population) and contributes the
  shards of its own devices.
  """
  if mesh is None:
    return jax.tree.map(jnp.asarray, tree)

  def put(x):
    x = np.asarray(x)
    spec = PartitionSpec() if replicated or x.ndim == 0 else PartitionSpec(MODEL_AXIS)
    sharding = NamedSharding(mesh, spec)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

  return jax.tree.map(put, tree)


def shard_like(tree, like):
  """`tree` (every leaf with the model axis first) sharded over the model axis as `like`
  is, when `like` is split over a mesh (`chunk_mesh`); else `tree` unchanged.

  Fresh states (`init_population`, `restart`, a phase-2 gather) come out of XLA with
  whatever sharding it chose for each leaf (constants often replicated); giving the
  first chunk the layout every later chunk has makes the population's program compile
  once instead of twice.
  """
  mesh = chunk_mesh(like)
  if mesh is None:
    return tree
  return jax.device_put(tree, NamedSharding(mesh, PartitionSpec(MODEL_AXIS)))


def fetch(tree):
  """Brings (possibly sharded, possibly multi-host) arrays to host numpy."""
  def get(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      from jax.experimental import multihost_utils
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)
  return jax.tree.map(get, tree)


