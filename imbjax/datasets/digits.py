"""scikit-learn's bundled handwritten digits, shaped like MNIST: the offline default.

`sklearn.datasets.load_digits()` ships 1797 real 8x8 digits (values 0..16) inside the
scikit-learn package, so this source needs no download. We split it once with a fixed
seed (stratified, 25% test) and upsample to 28x28x1 uint8 so that MNIST models
(LeNet-5) and code paths run on it unchanged.
"""

from __future__ import annotations

import numpy as np

from imbjax.datasets.core import Dataset, check_split

__all__ = ["TEST_SIZE", "RANDOM_STATE", "SIZE", "bilinear_matrix", "upsample", "split_indices",
           "load_split"]

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
  """The fixed stratified train/test split, as sorted index arrays."""
  from sklearn.model_selection import train_test_split

  idx = np.arange(len(labels))
  train, test = train_test_split(idx, test_size=test_size, stratify=labels,
                                 random_state=random_state)
  return {"train": np.sort(train), "test": np.sort(test)}


def load_split(split: str) -> Dataset:
  """Loads one split of the digits as a raw uint8 `Dataset` of (N, 28, 28, 1) images.

  Pixels 0..16 become 0..255 (x * 255 / 16, then bilinear upsampling, rounded).

  Args:
    split: "train" (1347 examples) or "test" (450).

  Raises:
    ValueError: unknown split.
  """
  check_split("digits", split)
  from sklearn.datasets import load_digits

  bunch = load_digits()
  labels = bunch.target.astype(np.int32)
  idx = split_indices(labels)[split]
  up = upsample(bunch.images[idx] * (255.0 / 16.0))
  images = np.clip(np.rint(up), 0, 255).astype(np.uint8)[..., None]
  return Dataset(images=images, labels=labels[idx], num_classes=10,
                 class_names=tuple(str(i) for i in range(10)))
