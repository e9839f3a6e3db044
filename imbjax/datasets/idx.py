"""IDX files (the MNIST / Fashion-MNIST format), read as untrusted input.

An IDX file is a big-endian header followed by a dense array:

    bytes 0-1  zero
    byte  2    element type (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
               0x0D float32, 0x0E float64)
    byte  3    number of dimensions d
    4*d bytes  the dimensions, big-endian uint32
    payload    prod(dims) elements, big-endian, C order

Files may be gzip-compressed (recognised by their magic bytes, not by the name). The
header's size claim is computed in Python integers (no int64 overflow) and refused
above `max_payload_bytes()` (4 GiB or a quarter of physical memory, whichever is
less) before anything is read. The payload is then read in 1 MiB chunks, at most one
byte past the claim (to detect trailing data), so memory grows only with bytes that
are really there: a truncated file or a gzip bomb cannot make us allocate more.
"""

from __future__ import annotations

import gzip
import math
import os

import numpy as np

from imbjax.datasets.core import (DataFormatError, DataNotFoundError, Dataset, check_split,
                                  memory_cap)

__all__ = ["read_idx", "max_payload_bytes", "split_files", "find_split_files", "has_idx_files",
           "load_split"]

_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20
# A header may claim any size; refuse absurd ones before reading. MNIST train is
# 47 MB, EMNIST ByClass (the largest IDX set we know) 0.55 GB.
_MAX_PAYLOAD = 1 << 32

_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _open(path: str):
  with open(path, "rb") as f:
    magic = f.read(2)
  return gzip.open(path, "rb") if magic == _GZIP_MAGIC else open(path, "rb")


def max_payload_bytes() -> int:
  """The largest IDX payload `read_idx` accepts by default: min(4 GiB, RAM / 4)."""
  return memory_cap(_MAX_PAYLOAD)


def _read_exact(f, n: int, path: str, what: str) -> bytearray:
  """Reads up to n bytes in chunks; the caller compares the length.

  The buffer grows with the bytes actually read, never to n up front.
  """
  buf = bytearray()
  while len(buf) < n:
    try:
      chunk = f.read(min(_CHUNK, n - len(buf)))
    except (EOFError, OSError, gzip.BadGzipFile) as e:
      raise DataFormatError(f"IDX file {path}: corrupt or truncated while reading "
                            f"{what}: {e}") from e
    if not chunk:
      break
    buf += chunk
  return buf


def read_idx(path: str | os.PathLike, *, max_bytes: int | None = None) -> np.ndarray:
  """Reads one IDX file (plain or gzip) into a native-endian numpy array.

  Args:
    path: the file.
    max_bytes: the largest payload the header may claim; None: `max_payload_bytes()`.

  Returns:
    The array with the header's shape and element type (native byte order).

  Raises:
    DataNotFoundError: the file does not exist.
    DataFormatError (a ValueError): bad magic, unknown type code, a size claim over
      `max_bytes`, truncated header or payload, trailing bytes, or a corrupt gzip
      stream; the message names the file and, for size and length errors, the bytes
      claimed or expected and those found or accepted.
  """
  path = os.fspath(path)
  cap = max_payload_bytes() if max_bytes is None else int(max_bytes)
  if not os.path.isfile(path):
    raise DataNotFoundError(f"IDX file not found: {path}")
  with _open(path) as f:
    head = _read_exact(f, 4, path, "the magic number")
    if len(head) < 4:
      raise DataFormatError(f"IDX file {path}: truncated header ({len(head)} of 4 "
                            f"magic bytes)")
    if head[0] != 0 or head[1] != 0:
      raise DataFormatError(f"IDX file {path}: bad magic 0x{head.hex()} (the first two "
                            f"bytes must be zero; is this an IDX file?)")
    code, ndim = head[2], head[3]
    if code not in _DTYPES:
      raise DataFormatError(
          f"IDX file {path}: unknown element type code 0x{code:02x} in magic "
          f"0x{head.hex()}; accepted: {', '.join(f'0x{c:02x}' for c in _DTYPES)}")
    if ndim == 0:
      raise DataFormatError(f"IDX file {path}: magic 0x{head.hex()} declares 0 dimensions")
    raw_dims = _read_exact(f, 4 * ndim, path, "the dimensions")
    if len(raw_dims) < 4 * ndim:
      raise DataFormatError(f"IDX file {path}: truncated header, expected {4 * ndim} "
                            f"bytes of dimensions, got {len(raw_dims)}")
    dims = tuple(int.from_bytes(raw_dims[i:i + 4], "big") for i in range(0, 4 * ndim, 4))
    dtype = _DTYPES[code]
    expected = math.prod(dims) * dtype.itemsize  # Python ints: no int64 overflow
    if expected > cap:
      raise DataFormatError(f"IDX file {path}: header dims {dims} of {dtype.name} claim "
                            f"{expected} bytes, more than the {cap} accepted "
                            f"(min(4 GiB, a quarter of physical memory); pass max_bytes "
                            f"to raise it)")
    # One byte more than promised tells trailing garbage from an exact fit.
    payload = _read_exact(f, expected + 1, path, "the payload")
  if len(payload) != expected:
    kind = "truncated" if len(payload) < expected else "trailing bytes after the data"
    actual = f"{len(payload)}" if len(payload) < expected else f"more than {expected}"
    raise DataFormatError(f"IDX file {path}: {kind}: dims {dims} of {dtype.name} need "
                          f"payload of {expected} bytes, found {actual}")
  arr = np.frombuffer(payload, dtype=dtype).reshape(dims)
  return arr if dtype.isnative else arr.astype(dtype.newbyteorder("="))


def split_files(split: str) -> tuple[str, str]:
  """Returns the (images, labels) file names of a split, without `.gz`."""
  check_split("idx", split, tuple(_STEMS))
  return _STEMS[split]


def _find(data_dir: str, stem: str) -> str | None:
  for name in (stem + ".gz", stem):
    p = os.path.join(data_dir, name)
    if os.path.isfile(p):
      return p
  return None


def has_idx_files(data_dir: str | os.PathLike | None) -> bool:
  """Whether `data_dir` holds at least one of the four standard IDX files."""
  if data_dir is None or not os.path.isdir(data_dir):
    return False
  stems = [s for pair in _STEMS.values() for s in pair]
  return any(_find(os.fspath(data_dir), s) for s in stems)


def find_split_files(data_dir: str | os.PathLike, split: str) -> tuple[str, str]:
  """Finds the images and labels files of `split` in `data_dir` (gzip or plain).

  Raises:
    DataNotFoundError: naming the directory and the exact files expected.
    ValueError: unknown split.
  """
  stems = split_files(split)
  data_dir = os.fspath(data_dir)
  if not os.path.isdir(data_dir):
    raise DataNotFoundError(
        f"IDX directory not found: {data_dir}; expected a directory holding "
        f"{', '.join(s + '[.gz]' for pair in _STEMS.values() for s in pair)}")
  found = [_find(data_dir, s) for s in stems]
  missing = [s + "[.gz]" for s, p in zip(stems, found) if p is None]
  if missing:
    raise DataNotFoundError(f"IDX directory {data_dir} lacks {', '.join(missing)} for "
                            f"split {split!r} (expected files: "
                            f"{', '.join(s + '[.gz]' for s in stems)})")
  return found[0], found[1]


def read_labels(data_dir: str | os.PathLike, split: str, *,
                max_bytes: int | None = None) -> np.ndarray:
  """Reads and checks the labels file of a split; returns int32 (N,).

  `max_bytes` is passed to `read_idx`.

  Raises:
    DataFormatError: not a 1-D integer IDX file.
  """
  _, labels_path = find_split_files(data_dir, split)
  labels = read_idx(labels_path, max_bytes=max_bytes)
  if labels.ndim != 1 or labels.dtype.kind not in "iu":
    raise DataFormatError(f"IDX labels file {labels_path}: expected a 1-D integer array "
                          f"(magic 0x00000801), got {labels.dtype.name} of shape "
                          f"{labels.shape}")
  if labels.size and labels.min() < 0:
    raise DataFormatError(f"IDX labels file {labels_path}: negative label {labels.min()}")
  return labels.astype(np.int32)


def load_split(data_dir: str | os.PathLike, split: str, *,
               num_classes: int | None = None,
               class_names: tuple[str, ...] | None = None,
               max_bytes: int | None = None) -> Dataset:
  """Loads one split of an IDX directory as a raw uint8 `Dataset`.

  Args:
    data_dir: directory holding `train-images-idx3-ubyte[.gz]`,
      `train-labels-idx1-ubyte[.gz]`, `t10k-images-idx3-ubyte[.gz]`,
      `t10k-labels-idx1-ubyte[.gz]`.
    split: "train" or "test".
    num_classes: the number of classes; labels must be below it. None: one more
      than the largest *train* label (so train and test agree).
    class_names: names per class; None: "0", "1", ...
    max_bytes: the largest payload a file's header may claim; None:
      `max_payload_bytes()`.

  Returns:
    A `Dataset` with uint8 images (N, H, W, 1) (or (N, H, W, C) for 4-D files).

  Raises:
    DataNotFoundError: missing directory or files (the message lists them).
    DataFormatError: malformed files, images/labels count mismatch, labels out of
      range.
    ValueError: unknown split.
  """
  images_path, labels_path = find_split_files(data_dir, split)
  images = read_idx(images_path, max_bytes=max_bytes)
  if images.dtype != np.uint8 or images.ndim not in (3, 4):
    raise DataFormatError(f"IDX images file {images_path}: expected uint8 images with 3 "
                          f"dims (magic 0x00000803) or 4, got {images.dtype.name} of "
                          f"shape {images.shape}")
  if images.ndim == 3:
    images = images[..., None]
  labels = read_labels(data_dir, split, max_bytes=max_bytes)
  if labels.shape[0] != images.shape[0]:
    raise DataFormatError(f"IDX split {split!r} in {os.fspath(data_dir)}: {images.shape[0]} "
                          f"images ({images_path}) but {labels.shape[0]} labels "
                          f"({labels_path})")
  if num_classes is None:
    train = labels if split == "train" else read_labels(data_dir, "train", max_bytes=max_bytes)
    num_classes = int(train.max()) + 1 if train.size else 1
  if labels.size and labels.max() >= num_classes:
    raise DataFormatError(f"IDX labels file {labels_path}: label {int(labels.max())} out of "
                          f"range [0, {num_classes})")
  if class_names is None:
    class_names = tuple(str(i) for i in range(num_classes))
  return Dataset(images=np.ascontiguousarray(images), labels=labels,
                 num_classes=num_classes, class_names=tuple(class_names))
