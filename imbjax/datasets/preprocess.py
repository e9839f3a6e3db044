"""The paper's input preprocessing, as pure NumPy functions.

* MNIST-like data and image folders: `to_unit_float`, pixels / 255 in [0, 1].
* CIFAR-10: "standard preprocessing comprising global contrast normalization and ZCA
  whitening" (Buda et al. 2018, Sec. 3.2.2, citing Goodfellow et al.'s maxout
  networks). We follow the pylearn2 code that maxout used
  (`scripts/datasets/make_cifar10_gcn_whitened.py`):
  `CIFAR10(gcn=55.)` = per image, subtract the mean over all pixels and channels and
  divide by the L2 norm / 55 (`global_contrast_normalize` with `use_std=False`,
  `sqrt_bias=0`, `min_divisor=1e-8`), then `preprocessing.ZCA()` fitted on the
  training split, whose default `filter_bias=0.1` is added to the covariance
  eigenvalues: W = V diag(1 / sqrt(lambda + 0.1)) V^T. Our `ZCA_EPS` is that 0.1.
  The scale 55 makes every image's L2 norm 55, i.e. about unit variance per feature
  over 3072 features, so the 0.1 bias damps only directions with less than ~10% of
  unit variance (pixel noise).

Arrays are (N, ...) with the example axis first; features are everything else
flattened (so ZCA on NHWC images mixes pixels and channels, as pylearn2's design
matrices did). Large inputs are processed in chunks to bound temporary memory.
"""

from __future__ import annotations

import numpy as np

__all__ = ["GCN_SCALE", "ZCA_EPS", "to_unit_float", "global_contrast_normalize", "fit_zca",
           "apply_zca", "fit_gcn_zca", "apply_gcn_zca"]

GCN_SCALE = 55.0
ZCA_EPS = 0.1
_CHUNK = 4096


def _flat(x: np.ndarray, what: str) -> np.ndarray:
  x = np.asarray(x)
  if x.ndim < 2 or x.shape[0] == 0:
    raise ValueError(f"{what} needs an array (N, ...) with N >= 1 and features, got shape "
                     f"{x.shape}")
  return x.reshape(x.shape[0], -1)


def to_unit_float(images: np.ndarray) -> np.ndarray:
  """uint8 pixels -> float32 in [0, 1].

  Raises:
    ValueError: `images` is not uint8.
  """
  images = np.asarray(images)
  if images.dtype != np.uint8:
    raise ValueError(f"to_unit_float expects uint8 pixels, got dtype {images.dtype}")
  return images.astype(np.float32) * np.float32(1.0 / 255.0)


def global_contrast_normalize(x: np.ndarray, scale: float = GCN_SCALE,
                              eps: float = 1e-8) -> np.ndarray:
  """Per example: subtract the mean over all features, scale the L2 norm to `scale`.

  Same as pylearn2 `global_contrast_normalize(X, scale)`: an example whose norm /
  scale is below `eps` (a constant image) is only centred, not divided.

  Args:
    x: array (N, ...), any real dtype.
    scale: the L2 norm every non-constant example gets.
    eps: minimum divisor.

  Returns:
    float32 array of x's shape.

  Raises:
    ValueError: empty input or scale <= 0.
  """
  if not scale > 0:
    raise ValueError(f"global_contrast_normalize scale must be > 0, got {scale}")
  flat = _flat(x, "global_contrast_normalize")
  out = np.empty(flat.shape, np.float32)
  for s in range(0, flat.shape[0], _CHUNK):
    c = flat[s:s + _CHUNK].astype(np.float64)
    c -= c.mean(axis=1, keepdims=True)
    div = np.sqrt((c * c).sum(axis=1, keepdims=True)) / scale
    div[div < eps] = 1.0
    out[s:s + _CHUNK] = c / div
  return out.reshape(np.shape(x))


def fit_zca(x: np.ndarray, eps: float = ZCA_EPS) -> tuple[np.ndarray, np.ndarray]:
  """Fits ZCA whitening: mean and W = V diag(1/sqrt(lambda + eps)) V^T.

  The covariance is the biased one, Xc^T Xc / N, as in pylearn2.

  Args:
    x: training data (N, ...).
    eps: added to the covariance eigenvalues (pylearn2's `filter_bias`); 0 gives
      exact whitening when the covariance has full rank.

  Returns:
    (mean float32 (D,), W float32 (D, D), symmetric), D = prod(x.shape[1:]).

  Raises:
    ValueError: empty input, eps < 0, or eps == 0 with a singular covariance.
  """
  if eps < 0:
    raise ValueError(f"fit_zca eps must be >= 0, got {eps}")
  flat = _flat(x, "fit_zca")
  n, d = flat.shape
  mean = np.zeros(d, np.float64)
  for s in range(0, n, _CHUNK):
    mean += flat[s:s + _CHUNK].astype(np.float64).sum(axis=0)
  mean /= n
  cov = np.zeros((d, d), np.float64)
  for s in range(0, n, _CHUNK):
    c = flat[s:s + _CHUNK].astype(np.float64) - mean
    cov += c.T @ c
  cov /= n
  lam, vec = np.linalg.eigh(cov)
  lam = np.clip(lam, 0.0, None)  # round-off can make tiny eigenvalues negative
  if eps == 0 and lam.min() <= 0:
    raise ValueError("fit_zca with eps=0 needs a full-rank covariance; the data's "
                     f"smallest eigenvalue is {lam.min():.3g}: use eps > 0")
  w = (vec * (1.0 / np.sqrt(lam + eps))) @ vec.T
  return mean.astype(np.float32), w.astype(np.float32)


def apply_zca(x: np.ndarray, mean: np.ndarray, w: np.ndarray) -> np.ndarray:
  """Whitens x with a fitted (mean, W): (x - mean) @ W, keeping x's shape.

  Args:
    x: data (N, ...) with prod(x.shape[1:]) == len(mean).
    mean, w: from `fit_zca`.

  Returns:
    float32 array of x's shape.

  Raises:
    ValueError: the feature sizes disagree.
  """
  flat = _flat(x, "apply_zca")
  mean = np.asarray(mean, np.float32)
  w = np.asarray(w, np.float32)
  if w.shape != (mean.shape[0], mean.shape[0]) or flat.shape[1] != mean.shape[0]:
    raise ValueError(f"apply_zca: data has {flat.shape[1]} features per example but the "
                     f"fitted mean has shape {mean.shape} and W {w.shape}")
  out = np.empty(flat.shape, np.float32)
  for s in range(0, flat.shape[0], _CHUNK):
    out[s:s + _CHUNK] = (flat[s:s + _CHUNK].astype(np.float32) - mean) @ w
  return out.reshape(np.shape(x))


def fit_gcn_zca(train_images: np.ndarray, scale: float = GCN_SCALE,
                eps: float = ZCA_EPS) -> tuple[np.ndarray, np.ndarray]:
  """CIFAR-10's preprocessing, fitted: GCN each training image, then `fit_zca`.

  Returns:
    (mean, W) for `apply_gcn_zca`.
  """
  return fit_zca(global_contrast_normalize(train_images, scale), eps)


def apply_gcn_zca(images: np.ndarray, mean: np.ndarray, w: np.ndarray,
                  scale: float = GCN_SCALE) -> np.ndarray:
  """CIFAR-10's preprocessing, applied: GCN each image, then whiten with (mean, W).

  Returns:
    float32 images of the input's shape.
  """
  return apply_zca(global_contrast_normalize(images, scale), mean, w)
