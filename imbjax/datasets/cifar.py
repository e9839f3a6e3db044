"""CIFAR-10 from the original batch files, binary or Python-pickle, read as untrusted.

Layouts accepted for `data_dir` (first match wins; binary first, so no pickle is
opened when binary batches are there):

    data_dir/cifar-10-batches-bin/{data_batch_1..5,test_batch}.bin
    data_dir/{data_batch_1..5,test_batch}.bin
    data_dir/cifar-10-batches-py/{data_batch_1..5,test_batch}     (pickles)
    data_dir/{data_batch_1..5,test_batch}                         (pickles)

Binary records are 1 label byte + 3072 pixel bytes (1024 R, then G, then B, each 32x32
row-major). The Python batches are pickled dicts; `pickle.load` would run whatever a
hostile file asks, so `safe_unpickle` allows only the few NumPy callables that rebuild
an ndarray and refuses every other global.
"""

from __future__ import annotations

import io
import os
import pickle

import numpy as np

from imbjax.datasets.core import DataFormatError, DataNotFoundError, Dataset, check_split

__all__ = ["CLASS_NAMES", "safe_unpickle", "read_bin_batch", "read_py_batch", "find_batches",
           "has_cifar_files", "load_split"]

CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
               "ship", "truck")
_RECORD = 1 + 32 * 32 * 3
_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_TEST = ("test_batch",)


def _allowed_globals() -> dict[tuple[str, str], object]:
  # Ask NumPy which callables its own pickles name, instead of hard-coding module
  # paths that moved in NumPy 2 (numpy.core -> numpy._core).
  arr = np.arange(2, dtype=np.uint8)
  reconstruct = arr.__reduce__()[0]
  frombuffer = arr.__reduce_ex__(5)[0]
  allowed = {}
  for fn in (reconstruct, frombuffer):
    mod, name = fn.__module__, fn.__name__
    for m in {mod, mod.replace("numpy._core", "numpy.core"),
              mod.replace("numpy.core", "numpy._core")}:
      allowed[(m, name)] = fn
  # Older pickles (CIFAR's own, written by Python 2 NumPy) name these modules.
  allowed[("numpy.core.multiarray", "_reconstruct")] = reconstruct
  allowed[("numpy._core.multiarray", "_reconstruct")] = reconstruct
  allowed[("numpy", "ndarray")] = np.ndarray
  allowed[("numpy", "dtype")] = np.dtype
  # Python 3 pickles with protocol < 3 store bytes as _codecs.encode(str, "latin1").
  allowed[("_codecs", "encode")] = _latin1_encode
  return allowed


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
  """`_codecs.encode` limited to the latin-1 text -> bytes that pickles use."""
  if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
    raise pickle.UnpicklingError(
        f"refusing _codecs.encode with encoding {encoding!r} in an untrusted pickle")
  return text.encode("latin1")


class _RestrictedUnpickler(pickle.Unpickler):
  """Unpickler that can build only plain containers, bytes, str, numbers, ndarrays."""

  _ALLOWED = None

  def find_class(self, module: str, name: str):
    allowed = type(self)._ALLOWED
    if allowed is None:
      allowed = type(self)._ALLOWED = _allowed_globals()
    try:
      return allowed[(module, name)]
    except KeyError:
      raise pickle.UnpicklingError(
          f"refusing to load global {module}.{name} from an untrusted pickle; allowed: "
          f"{', '.join(sorted(f'{m}.{n}' for m, n in allowed))}") from None


def safe_unpickle(data: bytes) -> object:
  """Unpickles `data` allowing no globals but ndarray reconstruction.

  Args:
    data: the pickle bytes (protocols 0-5; Python 2 pickles are read with
      encoding="bytes", as CIFAR's are).

  Returns:
    The rebuilt object.

  Raises:
    pickle.UnpicklingError: the pickle names any other global (the message names it),
      or is malformed.
  """
  try:
    return _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
  except pickle.UnpicklingError:
    raise
  except Exception as e:  # malformed streams raise many types; report one.
    raise pickle.UnpicklingError(f"malformed pickle: {type(e).__name__}: {e}") from e


def read_bin_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
  """Reads a CIFAR-10 binary batch.

  Returns:
    (images uint8 (N, 32, 32, 3), labels int32 (N,)).

  Raises:
    DataFormatError: the size is not a multiple of 3073 bytes, or a label is >= 10.
  """
  path = os.fspath(path)
  with open(path, "rb") as f:
    raw = f.read()
  if len(raw) == 0 or len(raw) % _RECORD:
    raise DataFormatError(f"CIFAR-10 binary batch {path}: size {len(raw)} bytes is not a "
                          f"positive multiple of the {_RECORD}-byte record "
                          f"(1 label byte + 3072 pixel bytes)")
  rec = np.frombuffer(raw, dtype=np.uint8).reshape(-1, _RECORD)
  labels = rec[:, 0].astype(np.int32)
  _check_labels(labels, path)
  images = rec[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return np.ascontiguousarray(images), labels


def _check_labels(labels: np.ndarray, path: str) -> None:
  if labels.size and (labels.min() < 0 or labels.max() >= len(CLASS_NAMES)):
    bad = labels[(labels < 0) | (labels >= len(CLASS_NAMES))][0]
    raise DataFormatError(f"CIFAR-10 batch {path}: label {int(bad)} out of range "
                          f"[0, {len(CLASS_NAMES)})")


def _get(d: dict, key: str, path: str):
  for k in (key.encode(), key):
    if k in d:
      return d[k]
  raise DataFormatError(f"CIFAR-10 python batch {path}: no {key!r} entry; found keys "
                        f"{sorted(map(repr, d))}")


def read_py_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
  """Reads a CIFAR-10 python (pickled) batch through `safe_unpickle`.

  Returns:
    (images uint8 (N, 32, 32, 3), labels int32 (N,)).

  Raises:
    pickle.UnpicklingError: the pickle asks for a forbidden global.
    DataFormatError: not a dict with uint8 `data` (N, 3072) and N integer `labels`
      in [0, 10).
  """
  path = os.fspath(path)
  with open(path, "rb") as f:
    obj = safe_unpickle(f.read())
  if not isinstance(obj, dict):
    raise DataFormatError(f"CIFAR-10 python batch {path}: expected a dict, got "
                          f"{type(obj).__name__}")
  data, labels = _get(obj, "data", path), _get(obj, "labels", path)
  if (not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2
          or data.shape[1] != _RECORD - 1):
    raise DataFormatError(f"CIFAR-10 python batch {path}: 'data' must be a uint8 array of "
                          f"shape (N, 3072), got {type(data).__name__} "
                          f"{getattr(data, 'dtype', '')} {getattr(data, 'shape', '')}")
  if not isinstance(labels, (list, tuple, np.ndarray)) or not all(
          isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in labels):
    raise DataFormatError(f"CIFAR-10 python batch {path}: 'labels' must be a list of ints")
  labels = np.asarray(labels, dtype=np.int64)
  if labels.shape != (data.shape[0],):
    raise DataFormatError(f"CIFAR-10 python batch {path}: {data.shape[0]} images but "
                          f"{labels.shape[0]} labels")
  _check_labels(labels, path)
  images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return np.ascontiguousarray(images), labels.astype(np.int32)


def _layouts(data_dir: str):
  return [
      (os.path.join(data_dir, "cifar-10-batches-bin"), ".bin", read_bin_batch),
      (data_dir, ".bin", read_bin_batch),
      (os.path.join(data_dir, "cifar-10-batches-py"), "", read_py_batch),
      (data_dir, "", read_py_batch),
  ]


def has_cifar_files(data_dir: str | os.PathLike | None) -> bool:
  """Whether `data_dir` looks like a local CIFAR-10 batch directory (any layout)."""
  if data_dir is None or not os.path.isdir(data_dir):
    return False
  return any(os.path.isfile(os.path.join(d, n + ext))
             for d, ext, _ in _layouts(os.fspath(data_dir)) for n in _TRAIN + _TEST)


def find_batches(data_dir: str | os.PathLike, split: str):
  """Finds the batch files of `split`.

  Returns:
    (paths, reader): the files in order and the function that reads one.

  Raises:
    DataNotFoundError: no complete layout; the message lists the exact files expected.
    ValueError: unknown split.
  """
  check_split("cifar10_local", split)
  data_dir = os.fspath(data_dir)
  stems = _TRAIN if split == "train" else _TEST
  expected = []
  if os.path.isdir(data_dir):
    for d, ext, reader in _layouts(data_dir):
      paths = [os.path.join(d, s + ext) for s in stems]
      if all(os.path.isfile(p) for p in paths):
        return paths, reader
      expected.append(", ".join(os.path.relpath(p, data_dir) for p in paths))
  else:
    expected = [", ".join(os.path.join(d, s + ext) for s in stems)
                for d, ext, _ in _layouts(".")]
  raise DataNotFoundError(
      f"CIFAR-10 batches for split {split!r} not found in {data_dir}; expected one of: "
      + " | ".join(f"[{e}]" for e in expected))


def load_split(data_dir: str | os.PathLike, split: str) -> Dataset:
  """Loads one split of local CIFAR-10 batches as a raw uint8 `Dataset`.

  Args:
    data_dir: a directory in one of the layouts of the module docstring.
    split: "train" (data_batch_1..5) or "test" (test_batch).

  Returns:
    A `Dataset` of uint8 (N, 32, 32, 3) images, 10 classes.

  Raises:
    DataNotFoundError, DataFormatError, pickle.UnpicklingError, ValueError: see
    `find_batches`, `read_bin_batch`, `read_py_batch`.
  """
  paths, reader = find_batches(data_dir, split)
  parts = [reader(p) for p in paths]
  images = np.concatenate([p[0] for p in parts])
  labels = np.concatenate([p[1] for p in parts])
  return Dataset(images=images, labels=labels, num_classes=len(CLASS_NAMES),
                 class_names=CLASS_NAMES)
