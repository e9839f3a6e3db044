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
import math
import os
import pickle

import numpy as np

from imbjax.datasets.core import DataFormatError, DataNotFoundError, Dataset, check_split

__all__ = ["CLASS_NAMES", "BATCH_RECORDS", "UnsafePickleError", "safe_unpickle",
           "read_bin_batch", "read_py_batch", "find_batches", "has_cifar_files", "load_split"]

CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
               "ship", "truck")
_RECORD = 1 + 32 * 32 * 3
# Every CIFAR-10 batch file (data_batch_1..5, test_batch) holds 10,000 records.
BATCH_RECORDS = 10_000
_PIXELS = _RECORD - 1
# A python batch is ~30.7 MB of pixels plus labels and file names; protocol-0
# pickles escape bytes, hence the slack. Larger files are refused before reading.
_MAX_PY_FILE = 1 << 27
_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_TEST = ("test_batch",)


class UnsafePickleError(pickle.UnpicklingError, DataFormatError):
  """A batch file's pickle was refused; both an `UnpicklingError` and a `ValueError`."""


# The dtypes an untrusted pickle may name: fixed-size numbers only (no objects,
# strings, records or subarrays, whose pickled states carry more than bytes).
_DTYPE_NAMES = frozenset(["b1", "u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "f2", "f4",
                          "f8"])
_MAX_DEPTH = 32


class _NdarrayType:
  """Stands for `numpy.ndarray` in a pickle: an argument of `_reconstruct`, not callable.

  Calling `numpy.ndarray(shape, dtype)` directly would return uninitialised memory
  of any size a 60-byte pickle names, so the real class is never handed out.
  """

  def __repr__(self) -> str:
    return "numpy.ndarray"

  def __call__(self, *args):
    raise pickle.UnpicklingError(
        f"refusing numpy.ndarray{args!r} in an untrusted pickle: it would allocate "
        f"uninitialised memory; arrays are built only from their pickled bytes")


_NDARRAY = _NdarrayType()


class _DtypeSpec:
  """A dtype named by a pickle (`numpy.dtype(name, align, copy)` + its BUILD state)."""

  def __init__(self, name, align=False, copy=False):
    if isinstance(name, bytes):  # Python 2 pickles read with encoding="bytes"
      name = name.decode("latin1")
    if not isinstance(name, str) or name not in _DTYPE_NAMES:
      raise pickle.UnpicklingError(
          f"refusing dtype {name!r} in an untrusted pickle; accepted: "
          f"{', '.join(sorted(_DTYPE_NAMES))}")
    self.name, self.byteorder = name, "|"

  def __setstate__(self, state) -> None:
    # numpy's dtype state: (version, byteorder, subarray, names, fields, elsize,
    # alignment, flags[, metadata]); a plain number has no subarray, names or fields.
    if not isinstance(state, tuple) or len(state) < 5 or any(v is not None for v in state[2:5]):
      raise pickle.UnpicklingError(f"refusing dtype state {state!r} for {self.name} in an "
                                   f"untrusted pickle (only plain numbers are accepted)")
    order = state[1].decode("latin1") if isinstance(state[1], bytes) else state[1]
    if order not in ("<", ">", "|", "="):
      raise pickle.UnpicklingError(f"refusing byte order {state[1]!r} in an untrusted pickle")
    self.byteorder = order

  def resolve(self) -> np.dtype:
    dt = np.dtype(self.name)
    return dt.newbyteorder(self.byteorder) if self.byteorder in "<>" else dt


class _ArrayState:
  """An ndarray being unpickled; it holds no array until its data bytes arrive.

  numpy's `_reconstruct` allocates the final shape first and fills it in BUILD, so a
  pickle that names a shape and skips (or lies in) BUILD yields uninitialised memory.
  Here `_reconstruct` allocates nothing; BUILD must bring a bytes payload whose
  length is exactly shape x itemsize, and the array is a view of those bytes.
  """

  def __init__(self, array: np.ndarray | None = None):
    self.array = array

  def __setstate__(self, state) -> None:
    if self.array is not None:
      raise pickle.UnpicklingError("refusing a second state for an array in an untrusted "
                                   "pickle")
    if not isinstance(state, tuple) or len(state) not in (4, 5):
      raise pickle.UnpicklingError(f"refusing ndarray state of type {type(state).__name__} "
                                   f"in an untrusted pickle")
    shape, dtype, fortran, raw = state[-4:]
    self.array = _from_payload(raw, dtype, shape, "F" if fortran else "C")


def _from_payload(raw, dtype, shape, order) -> np.ndarray:
  """Builds an array only from `raw` bytes whose length the shape and dtype fix."""
  if not isinstance(dtype, _DtypeSpec):
    raise pickle.UnpicklingError(f"refusing ndarray dtype {dtype!r} in an untrusted pickle")
  dt = dtype.resolve()
  if not isinstance(raw, (bytes, bytearray)):
    raise pickle.UnpicklingError(f"refusing ndarray data of type {type(raw).__name__} in an "
                                 f"untrusted pickle (only a bytes payload is accepted)")
  if (not isinstance(shape, tuple) or not all(
          type(d) is int and d >= 0 for d in shape)):  # noqa: E721 (bools are ints)
    raise pickle.UnpicklingError(f"refusing ndarray shape {shape!r} in an untrusted pickle")
  if isinstance(order, bytes):
    order = order.decode("latin1")
  if order not in ("C", "F"):
    raise pickle.UnpicklingError(f"refusing ndarray order {order!r} in an untrusted pickle")
  need = math.prod(shape) * dt.itemsize  # Python ints: no overflow
  if need != len(raw):
    raise pickle.UnpicklingError(
        f"ndarray of shape {shape} and dtype {dt.str} needs {need} bytes of data, the "
        f"pickle holds {len(raw)}; refusing (arrays are built only from their full "
        f"payload, never from uninitialised memory)")
  return np.frombuffer(raw, dtype=dt).reshape(shape, order=order)


def _reconstruct(subtype, shape, dtype) -> _ArrayState:
  """`numpy.core.multiarray._reconstruct` that allocates nothing (see `_ArrayState`)."""
  if subtype is not _NDARRAY:
    raise pickle.UnpicklingError(f"refusing to reconstruct {subtype!r} in an untrusted "
                                 f"pickle (only numpy.ndarray)")
  return _ArrayState()


def _frombuffer(buf, dtype, shape, order) -> _ArrayState:
  """`numpy.core.numeric._frombuffer` (protocol-5 pickles) with an exact size check."""
  return _ArrayState(_from_payload(buf, dtype, shape, order))


def _allowed_globals() -> dict[tuple[str, str], object]:
  # Pickles name these callables by module paths that moved in NumPy 2
  # (numpy.core -> numpy._core); each maps to a stand-in that builds arrays only from
  # their pickled bytes.
  allowed = {}
  for core in ("numpy.core", "numpy._core"):
    allowed[(f"{core}.multiarray", "_reconstruct")] = _reconstruct
    allowed[(f"{core}.numeric", "_frombuffer")] = _frombuffer
  allowed[("numpy", "ndarray")] = _NDARRAY
  allowed[("numpy", "dtype")] = _DtypeSpec
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


def _resolve(obj, memo: dict, depth: int = 0):
  """Replaces the stand-ins in the unpickled tree by arrays and dtypes."""
  if isinstance(obj, (str, bytes, int, float, bool, complex, type(None))):
    return obj
  if id(obj) in memo:
    return memo[id(obj)]
  if depth > _MAX_DEPTH:
    raise pickle.UnpicklingError(f"refusing a pickle nested deeper than {_MAX_DEPTH} levels "
                                 f"(or holding a cycle)")
  if isinstance(obj, _ArrayState):
    if obj.array is None:
      raise pickle.UnpicklingError("refusing an ndarray that the pickle never gave data to "
                                   "(it would be uninitialised memory)")
    out = obj.array
  elif isinstance(obj, _DtypeSpec):
    out = obj.resolve()
  elif isinstance(obj, dict):
    out = {}
    for k, v in obj.items():
      if not isinstance(k, (str, bytes, int, float, bool, type(None))):
        raise pickle.UnpicklingError(f"refusing a dict key of type {type(k).__name__} in an "
                                     f"untrusted pickle")
      out[k] = _resolve(v, memo, depth + 1)
  elif isinstance(obj, (list, tuple)):
    out = type(obj)(_resolve(v, memo, depth + 1) for v in obj)
  elif isinstance(obj, bytearray):
    out = obj
  else:
    raise pickle.UnpicklingError(f"refusing an object of type {type(obj).__name__} in an "
                                 f"untrusted pickle")
  memo[id(obj)] = out
  return out


def safe_unpickle(data: bytes) -> object:
  """Unpickles `data` allowing no globals but ndarray reconstruction from bytes.

  Arrays are views of the bytes payload the pickle carries, whose length must equal
  shape x itemsize exactly (so they are read-only); numpy's own reconstruction
  would allocate the shape a pickle names before any data arrives. Dtypes are plain
  numbers only.

  Args:
    data: the pickle bytes (protocols 0-5; Python 2 pickles are read with
      encoding="bytes", as CIFAR's are).

  Returns:
    The rebuilt object: dicts, lists, tuples, str, bytes, numbers, ndarrays.

  Raises:
    pickle.UnpicklingError: the pickle names any other global (the message names it),
      an array whose data is missing or of the wrong size, a non-numeric dtype, or is
      malformed.
  """
  try:
    obj = _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    return _resolve(obj, {})
  except pickle.UnpicklingError:
    raise
  except Exception as e:  # malformed streams raise many types; report one.
    raise pickle.UnpicklingError(f"malformed pickle: {type(e).__name__}: {e}") from e


def read_bin_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
  """Reads a CIFAR-10 binary batch.

  Args:
    path: the batch file; its size is checked before it is read.

  Returns:
    (images uint8 (N, 32, 32, 3), labels int32 (N,)), N <= `BATCH_RECORDS`.

  Raises:
    DataFormatError: the size is not a positive multiple of 3073 bytes, or holds
      more than `BATCH_RECORDS` records, or a label is >= 10.
  """
  path = os.fspath(path)
  with open(path, "rb") as f:
    size = os.fstat(f.fileno()).st_size
    if size == 0 or size % _RECORD or size > BATCH_RECORDS * _RECORD:
      raise DataFormatError(f"CIFAR-10 binary batch {path}: size {size} bytes is not a "
                            f"positive multiple of the {_RECORD}-byte record "
                            f"(1 label byte + 3072 pixel bytes) of at most "
                            f"{BATCH_RECORDS} records ({BATCH_RECORDS * _RECORD} bytes)")
    raw = f.read(size + 1)
  if len(raw) != size:
    raise DataFormatError(f"CIFAR-10 binary batch {path}: changed while read ({size} bytes "
                          f"expected, {len(raw)} read)")
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

  The format fixes what a batch holds: a dict whose `data` is a uint8 array of
  (N, 3072) and whose `labels` are N integers in [0, 10), with N at most
  `BATCH_RECORDS` (10,000 in every real batch). Anything else is refused, and the
  arrays are built only from the bytes the file carries (see `safe_unpickle`).

  Args:
    path: the batch file; files over 128 MiB are refused before reading.

  Returns:
    (images uint8 (N, 32, 32, 3), labels int32 (N,)).

  Raises:
    UnsafePickleError (an UnpicklingError and a DataFormatError): the pickle asks
      for a forbidden global, or an array without its full data; the message names
      the file.
    DataFormatError: the file is too large, or is not a dict with uint8 `data`
      (N, 3072) and N integer `labels` in [0, 10), N <= `BATCH_RECORDS`; the message
      names the file, what was found and what is accepted.
  """
  path = os.fspath(path)
  with open(path, "rb") as f:
    size = os.fstat(f.fileno()).st_size
    if size > _MAX_PY_FILE:
      raise DataFormatError(f"CIFAR-10 python batch {path}: {size} bytes, more than the "
                            f"{_MAX_PY_FILE} accepted for a batch of {BATCH_RECORDS} "
                            f"records")
    raw = f.read(_MAX_PY_FILE + 1)
  try:
    obj = safe_unpickle(raw)
  except pickle.UnpicklingError as e:
    raise UnsafePickleError(f"CIFAR-10 python batch {path}: {e}") from e
  del raw
  if not isinstance(obj, dict):
    raise DataFormatError(f"CIFAR-10 python batch {path}: expected a dict, got "
                          f"{type(obj).__name__}")
  data, labels = _get(obj, "data", path), _get(obj, "labels", path)
  if (not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2
          or data.shape[1] != _PIXELS or not 0 < data.shape[0] <= BATCH_RECORDS):
    raise DataFormatError(f"CIFAR-10 python batch {path}: 'data' must be a uint8 array of "
                          f"shape (N, {_PIXELS}) with 0 < N <= {BATCH_RECORDS}, got "
                          f"{type(data).__name__} {getattr(data, 'dtype', '')} "
                          f"{getattr(data, 'shape', '')}")
  n = data.shape[0]
  if isinstance(labels, np.ndarray):
    if labels.dtype.kind not in "iu" or labels.shape != (n,):
      raise DataFormatError(f"CIFAR-10 python batch {path}: 'labels' must be {n} integers "
                            f"(one per image), got a {labels.dtype} array of shape "
                            f"{labels.shape}")
  elif not isinstance(labels, (list, tuple)) or len(labels) != n or not all(
          isinstance(v, int) and not isinstance(v, bool) for v in labels):
    raise DataFormatError(f"CIFAR-10 python batch {path}: 'labels' must be a list of {n} "
                          f"ints (one per image), got {type(labels).__name__} of length "
                          f"{len(labels) if hasattr(labels, '__len__') else '?'}")
  if not isinstance(labels, np.ndarray) and any(not -2**63 <= v < 2**63 for v in labels):
    raise DataFormatError(f"CIFAR-10 python batch {path}: a label is out of range "
                          f"[0, {len(CLASS_NAMES)})")
  labels = np.asarray(labels, dtype=np.int64)
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
