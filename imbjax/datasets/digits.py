"""scikit-learn's bundled handwritten digits, shaped like MNIST: the offline default.

`sklearn.datasets.load_digits()` ships 1797 real 8x8 digits (values 0..16) inside the
scikit-learn package, so this source needs no download. We split it once with a fixed
seed (stratified, 25% test) and upsample to 28x28x1 uint8 so that MNIST models
(LeNet-5) and code paths run on it unchanged.

Loading reads scikit-learn's data file without importing scikit-learn (1.7 s of every
offline study's start-up), checks it is the 1797 digits the split was made on (a
SHA-256 of its values), and takes the split from `_TEST_MASK`: the test membership that
`split_indices` (scikit-learn's seeded, stratified `train_test_split`) gives, shipped so
that no scikit-learn version can move it; `tests/test_datasets.py` checks the two agree.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import pathlib

import numpy as np

from imbjax.datasets.core import Dataset, check_split

__all__ = ["TEST_SIZE", "RANDOM_STATE", "SIZE", "bilinear_matrix", "upsample", "split_indices",
           "data_file", "load_raw", "in_test_split", "load_split"]

TEST_SIZE = 0.25
RANDOM_STATE = 0
SIZE = 28


def bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
  """The (n_out, n_in) matrix of 1-D bilinear resampling with half-pixel centres.

  Output pixel i samples input coordinate (i + 0.5) * n_in / n_out - 0.5, clamped to
  the edges: the convention of `jax.image.resize(..., "bilinear")` and of PIL /
  OpenCV for upsampling.
  """
  if n_in < 1 or n_out < 1:
    raise ValueError(f"bilinear_matrix sizes must be >= 1, got n_in={n_in}, n_out={n_out}")
  pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0, n_in - 1)
  lo = np.floor(pos).astype(int)
  hi = np.minimum(lo + 1, n_in - 1)
  frac = pos - lo
  m = np.zeros((n_out, n_in))
  m[np.arange(n_out), lo] += 1.0 - frac
  m[np.arange(n_out), hi] += frac
  return m


def upsample(images: np.ndarray, size: int = SIZE) -> np.ndarray:
  """Bilinearly resizes (N, h, w) images to (N, size, size), float64, separably."""
  images = np.asarray(images, np.float64)
  if images.ndim != 3:
    raise ValueError(f"upsample expects (N, h, w) images, got shape {images.shape}")
  rows = bilinear_matrix(images.shape[1], size)
  cols = bilinear_matrix(images.shape[2], size)
  return np.einsum("ih,nhw,jw->nij", rows, images, cols)


def split_indices(labels: np.ndarray, test_size: float = TEST_SIZE,
                  random_state: int = RANDOM_STATE) -> dict[str, np.ndarray]:
  """scikit-learn's seeded, stratified train/test split, as sorted index arrays: how
  `_TEST_MASK` was made (loading uses the mask; tests check the two agree)."""
  from sklearn.model_selection import train_test_split

  idx = np.arange(len(labels))
  train, test = train_test_split(idx, test_size=test_size, stratify=labels,
                                 random_state=random_state)
  return {"train": np.sort(train), "test": np.sort(test)}


# Test membership of the 1797 digits, one bit each (np.packbits order): split_indices'
# test indices (scikit-learn 1.9.1's train_test_split, test_size 0.25, stratified,
# random_state 0).
_TEST_MASK = bytes.fromhex(
    "000004883526104000164101934205001a00080102240028062c1e081108960a009019120420f8a0"
    "028110e040080a9a304415244942c0a00a2030804004d821408b8020004885c400104008a0900005"
    "486800301000020ec409001224840083b8013c21a69c0a0204000f48400804a4184902124061e500"
    "8024604e94376a819216015480004842a0a4180a5000a40b8561e688108049124c80c02205068e00"
    "0109f202c141398813c009190000148e01008410a0e10033282900c144c8c0680a01029302920309"
    "22a6402c26042108a8608198c8a01412861202128138a41500")
_NUM_DIGITS = 1797
# SHA-256 of the digits' 1797 x 65 values (64 pixels, then the label) as uint8.
_DATA_SHA256 = "68aea062d35a127749050fa0e52dca09d6569ac08092c925610e0954e172dde2"


def data_file() -> pathlib.Path:
  """Where scikit-learn keeps the digits (found without importing scikit-learn)."""
  spec = importlib.util.find_spec("sklearn")
  if spec is None or not spec.submodule_search_locations:
    raise ImportError("the offline 'digits' dataset is scikit-learn's: pip install "
                      "scikit-learn")
  return pathlib.Path(spec.submodule_search_locations[0]) / "datasets" / "data" / \
      "digits.csv.gz"


def load_raw(path: str | pathlib.Path | None = None) -> tuple[np.ndarray, np.ndarray]:
  """The 1797 digits as (images [N, 8, 8] float64 in 0..16, labels [N] int32).

  Raises:
    ValueError: the file does not hold the digits the split was made on.
  """
  path = pathlib.Path(path) if path is not None else data_file()
  if not path.is_file():  # another layout of scikit-learn's package: its own loader
    from sklearn.datasets import load_digits
    bunch = load_digits()
    raw = np.concatenate([bunch.data, bunch.target[:, None]], axis=1)
  else:
    raw = np.loadtxt(path, delimiter=",", ndmin=2)
  ok = (raw.shape == (_NUM_DIGITS, 65) and np.all(raw == np.rint(raw))
        and raw.min() >= 0 and raw[:, :64].max() <= 16 and raw[:, 64].max() <= 9)
  if not ok or hashlib.sha256(raw.astype(np.uint8).tobytes()).hexdigest() != _DATA_SHA256:
    raise ValueError(
        f"{path} does not hold the {_NUM_DIGITS} scikit-learn digits imbjax's split was "
        f"made on (shape {raw.shape}; want ({_NUM_DIGITS}, 65) with SHA-256 "
        f"{_DATA_SHA256[:12]}...); use another dataset (config.dataset='idx' with the "
        f"MNIST files, or 'mnist' through tfds)")
  return raw[:, :64].reshape(-1, 8, 8), raw[:, 64].astype(np.int32)


@functools.lru_cache(maxsize=1)
def _installed() -> tuple[np.ndarray, np.ndarray]:
  """`load_raw()` of scikit-learn's file, read once a process (both splits use it);
  read-only, as it is shared."""
  images, labels = load_raw()
  images.flags.writeable = labels.flags.writeable = False
  return images, labels


def in_test_split() -> np.ndarray:
  """Whether each of the 1797 digits is in the test split (the shipped split)."""
  return np.unpackbits(np.frombuffer(_TEST_MASK, np.uint8))[:_NUM_DIGITS].astype(bool)


def load_split(split: str) -> Dataset:
  """Loads one split of the digits as a raw uint8 `Dataset` of (N, 28, 28, 1) images.

  Pixels 0..16 become 0..255 (x * 255 / 16, then bilinear upsampling, rounded).

  Args:
    split: "train" (1347 examples) or "test" (450).

  Raises:
    ValueError: unknown split, or scikit-learn's data file is not these digits.
  """
  check_split("digits", split)
  images, labels = _installed()
  in_test = in_test_split()
  idx = np.flatnonzero(in_test if split == "test" else ~in_test)
  up = upsample(images[idx] * (255.0 / 16.0))
  images = np.clip(np.rint(up), 0, 255).astype(np.uint8)[..., None]
  return Dataset(images=images, labels=labels[idx], num_classes=10,
                 class_names=tuple(str(i) for i in range(10)))
