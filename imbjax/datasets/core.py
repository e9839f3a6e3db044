"""The in-memory `Dataset` record and the errors every dataset reader raises.

Readers (`idx`, `cifar`, `image_folder`, `digits`, `tfds_source`) all return a
`Dataset`; `imbjax.datasets` re-exports it. This module imports only NumPy so that
`import imbjax.datasets` stays fast.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

__all__ = [
    "Dataset",
    "DataFormatError",
    "DataNotFoundError",
    "DataUnavailableError",
    "SPLITS",
    "check_split",
    "physical_memory",
    "memory_cap",
]

# The splits an in-memory source offers. The paper evaluates on each dataset's test
# set (ImageNet's "validation" set; see `tfds_source`).
SPLITS = ("train", "test")


class DataFormatError(ValueError):
  """A data file is malformed: wrong magic, wrong length, labels out of range."""


class DataNotFoundError(FileNotFoundError, ValueError):
  """A directory or file that a reader needs is missing.

  Both a `FileNotFoundError` (what it is) and a `ValueError` (the data_dir argument
  was bad), so callers may catch either.
  """


class DataUnavailableError(DataNotFoundError):
  """The data is not on disk and cannot be fetched (offline, or manual download)."""


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """One split of an image classification dataset, held in host memory.

  Attributes:
    images: NHWC array; uint8 raw pixels, or float32 after preprocessing.
    labels: int32 array of shape (N,), values in [0, num_classes).
    num_classes: number of classes.
    class_names: one name per class, index = label.
  """

  images: np.ndarray
  labels: np.ndarray
  num_classes: int
  class_names: tuple[str, ...]

  def __post_init__(self) -> None:
    self.validate()

  def __len__(self) -> int:
    return int(self.labels.shape[0])

  def validate(self) -> "Dataset":
    """Checks shapes, dtypes and the label range.

    Returns:
      self, so that `Dataset(...).validate()` chains.

    Raises:
      ValueError: naming the offending attribute and its value.
    """
    images, labels = self.images, self.labels
    if not isinstance(images, np.ndarray) or images.ndim != 4:
      raise ValueError(
          f"Dataset.images must be an NHWC numpy array, got "
          f"{type(images).__name__} with shape {getattr(images, 'shape', None)}")
    if images.dtype not in (np.uint8, np.float32):
      raise ValueError(f"Dataset.images dtype must be uint8 or float32, got {images.dtype}")
    if not isinstance(labels, np.ndarray) or labels.ndim != 1:
      raise ValueError(f"Dataset.labels must be a 1-D numpy array, got shape "
                       f"{getattr(labels, 'shape', None)}")
    if labels.dtype != np.int32:
      raise ValueError(f"Dataset.labels dtype must be int32, got {labels.dtype}")
    if images.shape[0] != labels.shape[0]:
      raise ValueError(f"Dataset has {images.shape[0]} images but {labels.shape[0]} labels")
    if not isinstance(self.num_classes, (int, np.integer)) or self.num_classes < 1:
      raise ValueError(
          f"Dataset.num_classes must be a positive int, got {self.num_classes!r}")
    if len(self.class_names) != self.num_classes:
      raise ValueError(f"Dataset has num_classes={self.num_classes} but "
                       f"{len(self.class_names)} class_names: {self.class_names!r}")
    if labels.size:
      lo, hi = int(labels.min()), int(labels.max())
      if lo < 0 or hi >= self.num_classes:
        raise ValueError(f"Dataset.labels must lie in [0, {self.num_classes}), "
                         f"found values in [{lo}, {hi}]")
    return self

  def class_counts(self) -> np.ndarray:
    """Returns the number of examples per class, shape (num_classes,)."""
    return np.bincount(self.labels, minlength=self.num_classes)


def check_split(name: str, split: str, accepted: tuple[str, ...] = SPLITS) -> str:
  """Returns `split` if `accepted` holds it, else raises.

  Raises:
    ValueError: naming the dataset, the bad split and the accepted ones.
  """
  if split not in accepted:
    raise ValueError(f"Unknown split {split!r} for dataset {name!r}; "
                     f"accepted: {', '.join(accepted)}")
  return split


def physical_memory() -> int | None:
  """The machine's physical memory in bytes, or None where `os.sysconf` cannot tell."""
  try:
    pages, page = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
  except (AttributeError, OSError, ValueError):
    return None
  return pages * page if pages > 0 and page > 0 else None


def memory_cap(fixed: int, fraction: float = 0.25) -> int:
  """The most bytes a reader may allocate for one file: min(fixed, fraction * RAM).

  A header in an untrusted file may claim any size; readers compare the claim (in
  Python integers, which do not overflow) against this cap before allocating, so a
  small file cannot make them ask for more memory than the machine has.

  Args:
    fixed: the cap where physical memory is large or unknown.
    fraction: the share of physical memory one file may take.

  Returns:
    The cap in bytes.
  """
  ram = physical_memory()
  return fixed if ram is None else min(fixed, int(ram * fraction))
