"""Dataset sources by name: raw pixels in, the paper's preprocessed arrays out.

    >>> from imbjax import datasets
    >>> splits = datasets.load_splits("digits")        # offline, bundled with sklearn
    >>> splits["train"].images.shape, splits["train"].num_classes
    ((1347, 28, 28, 1), 10)

Names (`names()`):

| name | source | preprocessing (preprocess=True) |
|---|---|---|
| mnist, fashion_mnist | tfds; or local IDX files when data_dir holds them | [0, 1] float32 |
| cifar10 | tfds; or local CIFAR batches (bin/py) when data_dir holds them | GCN + ZCA |
| imagenet2012 | tfds (manual download); too big for memory: see `streaming` | - |
| idx | any local IDX directory (data_dir required) | [0, 1] float32 |
| cifar10_local | local CIFAR-10 binary or python batches (data_dir required) | GCN + ZCA |
| image_folder | data_dir/<split>/<class>/*.jpg|jpeg|png, or a tarball of it | [0, 1] float32 |
| cifar10_jpeg | the image_folder preset for the lossy JPEG CIFAR-10 copy | GCN + ZCA |
| digits | scikit-learn's 8x8 digits, upsampled to 28x28 (offline default) | [0, 1] float32 |

CIFAR's ZCA is fitted on the train split and applied to every split (`preprocess`).
Readers treat files as untrusted (`idx`, `cifar`, `image_folder`). The streaming
tf.data path for data that does not fit in memory is `imbjax.datasets.streaming`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

from imbjax.datasets import cifar, digits, idx, image_folder, tfds_source
from imbjax.datasets import preprocess as _pp
from imbjax.datasets.core import (SPLITS, DataFormatError, DataNotFoundError,
                                  DataUnavailableError, Dataset, check_split)

__all__ = ["Dataset", "register", "DataFormatError", "DataNotFoundError", "DataUnavailableError", "names",
           "load", "load_splits", "preprocessing_of", "MNIST_CLASS_NAMES",
           "FASHION_MNIST_CLASS_NAMES"]

MNIST_CLASS_NAMES = tuple(str(i) for i in range(10))
FASHION_MNIST_CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                             "Shirt", "Sneaker", "Bag", "Ankle boot")
_FOLDER_SPLITS = ("train", "test", "val", "validation")


@dataclasses.dataclass(frozen=True)
class _Source:
  loader: Callable[[str, str | None], Dataset]  # (split, data_dir) -> raw Dataset
  preprocessing: str  # "unit" ([0, 1]) or "gcn_zca"
  splits: tuple[str, ...] = SPLITS


def _need_dir(name: str, data_dir, what: str) -> str:
  if data_dir is None:
    raise DataNotFoundError(f"dataset {name!r} needs data_dir: {what}")
  return os.fspath(data_dir)


def _mnist_like(name: str, class_names: tuple[str, ...]):
  def load_raw(split: str, data_dir) -> Dataset:
    if idx.has_idx_files(data_dir):
      return idx.load_split(data_dir, split, num_classes=10, class_names=class_names)
    return tfds_source.load_split(name, split, data_dir=data_dir, class_names=class_names)
  return load_raw


def _cifar10(split: str, data_dir) -> Dataset:
  if cifar.has_cifar_files(data_dir):
    return cifar.load_split(data_dir, split)
  return tfds_source.load_split("cifar10", split, data_dir=data_dir,
                                class_names=cifar.CLASS_NAMES)


def _imagenet(split: str, data_dir) -> Dataset:
  tfds_source.ensure_prepared("imagenet2012", data_dir)
  raise ValueError(
      "imagenet2012 does not fit in memory, so load() refuses it; stream it with "
      "imbjax.datasets.streaming.tfds_source('imagenet2012', split, data_dir=...) and "
      "streaming.iterate(..., augment=streaming.ImageNetAugment())")


def _idx(split: str, data_dir) -> Dataset:
  d = _need_dir("idx", data_dir, "a directory holding train-images-idx3-ubyte[.gz], "
                "train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], "
                "t10k-labels-idx1-ubyte[.gz]")
  return idx.load_split(d, split)


def _cifar10_local(split: str, data_dir) -> Dataset:
  d = _need_dir("cifar10_local", data_dir, "a directory holding cifar-10-batches-bin/ or "
                "cifar-10-batches-py/ (data_batch_1..5, test_batch), or those files")
  return cifar.load_split(d, split)


def _image_folder(split: str, data_dir) -> Dataset:
  root = image_folder.resolve_root(data_dir, dataset="image_folder")
  return image_folder.read_split(root, split)


def _cifar10_jpeg(split: str, data_dir) -> Dataset:
  root = image_folder.resolve_root(data_dir, dataset="cifar10_jpeg")
  ds = image_folder.read_split(root, split)
  if ds.class_names != cifar.CLASS_NAMES or ds.images.shape[1:] != (32, 32, 3):
    raise DataFormatError(f"cifar10_jpeg at {root}: expected CIFAR-10's classes "
                          f"{cifar.CLASS_NAMES} and 32x32x3 images, found "
                          f"{ds.class_names} and {ds.images.shape[1:]}")
  return ds


_REGISTRY: dict[str, _Source] = {
    "mnist": _Source(_mnist_like("mnist", MNIST_CLASS_NAMES), "unit"),
    "fashion_mnist": _Source(_mnist_like("fashion_mnist", FASHION_MNIST_CLASS_NAMES), "unit"),
    "cifar10": _Source(_cifar10, "gcn_zca"),
    "imagenet2012": _Source(_imagenet, "none", ("train", "validation", "test")),
    "idx": _Source(_idx, "unit"),
    "cifar10_local": _Source(_cifar10_local, "gcn_zca"),
    "image_folder": _Source(_image_folder, "unit", _FOLDER_SPLITS),
    "cifar10_jpeg": _Source(_cifar10_jpeg, "gcn_zca"),
    "digits": _Source(lambda split, data_dir: digits.load_split(split), "unit"),
}


def register(name: str, loader, *, preprocessing: str = "none",
             splits: tuple[str, ...] = ("train", "test"), overwrite: bool = False) -> None:
  """Lets configs name a user's dataset: ``--config.dataset=<name>``.

  Example::

      def my_loader(split, data_dir):     # -> imbjax.datasets.Dataset
        images, labels = ...              # NHWC float32 in [0, 1] (or uint8), int labels
        return Dataset(images, labels, num_classes=4, class_names=("a", "b", "c", "d"))

      datasets.register("my_cells", my_loader, preprocessing="none")

  Args:
    name: the dataset's name; it must not shadow a registered one.
    loader: ``loader(split, data_dir) -> Dataset`` for each split in `splits`.
    preprocessing: applied by `load_splits`: "none" (as the loader returns it), "unit"
      (uint8 -> float32 in [0, 1]) or "gcn_zca" (CIFAR-10's, fitted on the train split).
    splits: the splits the loader serves.
    overwrite: replace an existing registration of `name`.

  Raises:
    ValueError: a name already registered (without `overwrite`), a loader that is not
      callable, an unknown preprocessing, or splits without "train".
  """
  if not isinstance(name, str) or not name:
    raise ValueError(f"dataset name must be a non-empty string, got {name!r}")
  if name in _REGISTRY and not overwrite:
    raise ValueError(f"dataset {name!r} is already registered; pass overwrite=True to "
                     f"replace it")
  if not callable(loader):
    raise ValueError(f"loader for {name!r} must be callable as loader(split, data_dir), "
                     f"got {loader!r}")
  if preprocessing not in ("none", "unit", "gcn_zca"):
    raise ValueError(f"preprocessing must be 'none', 'unit' or 'gcn_zca', got "
                     f"{preprocessing!r}")
  if "train" not in splits:
    raise ValueError(f"splits must include 'train', got {splits!r}")
  _REGISTRY[name] = _Source(loader, preprocessing, tuple(splits))


def names() -> tuple[str, ...]:
  """The registered dataset names, sorted."""
  return tuple(sorted(_REGISTRY))


def _source(name: str) -> _Source:
  try:
    return _REGISTRY[name]
  except (KeyError, TypeError):
    raise ValueError(f"Unknown dataset {name!r}; accepted: {', '.join(names())}") from None


def preprocessing_of(name: str) -> str:
  """The preprocessing `load` applies to `name`: "unit", "gcn_zca" or "none".

  Raises:
    ValueError: unknown name.
  """
  return _source(name).preprocessing


def _unit(ds: Dataset) -> Dataset:
  return dataclasses.replace(ds, images=_pp.to_unit_float(ds.images))


def load_splits(name: str, *, data_dir: str | os.PathLike | None = None,
                preprocess: bool = True,
                splits: tuple[str, ...] = ("train", "test")) -> dict[str, Dataset]:
  """Loads several splits of a dataset, with split-dependent preprocessing fitted once.

  For CIFAR-10 sources, GCN is applied per image and ZCA is fitted on the *train*
  split (loaded even when not requested) and applied to every requested split.

  Args:
    name: one of `names()`.
    data_dir: where the data lives (see the module table); None for tfds's default
      directory, or for `digits`.
    preprocess: False returns raw uint8 pixels.
    splits: which splits to return.

  Returns:
    {split: Dataset}, in the order of `splits`.

  Raises:
    ValueError: unknown name or split (listing the accepted ones); readers'
      DataNotFoundError / DataFormatError / DataUnavailableError (all ValueErrors or
      FileNotFoundErrors) for missing or malformed data.
  """
  src = _source(name)
  if isinstance(splits, str):
    splits = (splits,)
  for s in splits:
    check_split(name, s, src.splits)
  raw = {s: src.loader(s, data_dir) for s in dict.fromkeys(splits)}
  if not preprocess:
    return raw
  fit_on = raw["train"] if "train" in raw else None
  if fit_on is None and src.preprocessing == "gcn_zca":
    fit_on = src.loader("train", data_dir)
  return preprocess_splits(name, raw, fit_on=fit_on)


def preprocess_splits(name: str, raw: dict[str, Dataset], *,
                      fit_on: Dataset | None) -> dict[str, Dataset]:
  """Applies `name`'s preprocessing to raw splits, fitting it on `fit_on` only.

  Use it to hold out a validation split *before* fitting split-dependent statistics
  (CIFAR-10's ZCA), so the held-out images do not leak into them.

  Args:
    name: one of `names()`.
    raw: {split: raw Dataset}.
    fit_on: the raw training data the statistics are fitted on (needed for "gcn_zca").

  Returns:
    {split: preprocessed Dataset}.
  """
  src = _source(name)
  if src.preprocessing == "unit":
    return {s: _unit(ds) for s, ds in raw.items()}
  if src.preprocessing == "gcn_zca":
    if fit_on is None:
      raise ValueError(f"{name!r} fits ZCA on training data: pass fit_on")
    mean, w = _pp.fit_gcn_zca(fit_on.images)
    return {s: dataclasses.replace(ds, images=_pp.apply_gcn_zca(ds.images, mean, w))
            for s, ds in raw.items()}
  return raw


def load(name: str, split: str, *, data_dir: str | os.PathLike | None = None,
         preprocess: bool = True) -> Dataset:
  """Loads one split of a dataset (see `load_splits`).

  CIFAR-10's ZCA is still fitted on the train split when `split` is "test".

  Args:
    name: one of `names()`.
    split: "train" or "test" (image folders also accept "val"/"validation").
    data_dir: where the data lives; see the module table.
    preprocess: False returns raw uint8 pixels.

  Returns:
    The `Dataset`.

  Raises:
    ValueError: unknown name or split; see `load_splits` for data errors.
  """
  return load_splits(name, data_dir=data_dir, preprocess=preprocess, splits=(split,))[split]
