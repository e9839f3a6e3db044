"""A study's data: loading, the validation split, `max_count`, the input shape."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from imbjax import datasets
from imbjax import imbalance
from imbjax.study.grid import _hash32, data_seed


# ----------------------------------------------------------------------------------------
# Data.


@dataclasses.dataclass
class StudyData:
  """The splits of a study: in memory (`Dataset`) or, for streamed input, sources.

  For ``config.input == 'stream'``, `train`/`test` are `datasets.streaming.Source`s (their
  `labels` are known up front, so the imbalanced subsets and plans are built the same way)
  and `val` is None.
  """
  train: Any
  test: Any
  val: datasets.Dataset | None
  max_count: int


def _stream_sources(config):
  from imbjax.datasets import image_folder
  from imbjax.datasets import streaming
  data_dir = config.data_dir or None
  if config.validation_fraction > 0:
    raise ValueError("validation_fraction > 0 is not supported with input='stream'")
  if config.dataset == "imagenet2012":
    return (streaming.tfds_source("imagenet2012", "train", data_dir=data_dir),
            streaming.tfds_source("imagenet2012", "test", data_dir=data_dir))
  if config.dataset in ("image_folder", "cifar10_jpeg"):
    root = image_folder.resolve_root(data_dir, dataset=config.dataset)
    train = streaming.folder_source(root, "train")
    return train, streaming.folder_source(root, "test", class_names=train.class_names)
  splits = datasets.load_splits(config.dataset, data_dir=data_dir)
  return (streaming.memory_source(splits["train"]), streaming.memory_source(splits["test"]))


def _check_user_data(data) -> tuple[datasets.Dataset, datasets.Dataset]:
  if (not isinstance(data, (tuple, list)) or len(data) != 2
      or not all(isinstance(d, datasets.Dataset) for d in data)):
    raise ValueError("data must be a (train, test) pair of imbjax.datasets.Dataset, got "
                     f"{type(data).__name__}")
  train, test = data
  if train.num_classes != test.num_classes or train.images.shape[1:] != test.images.shape[1:]:
    raise ValueError(f"train and test differ: {train.num_classes} vs {test.num_classes} "
                     f"classes, images {train.images.shape[1:]} vs {test.images.shape[1:]}")
  counts = np.bincount(train.labels, minlength=train.num_classes)
  if np.any(counts == 0):
    empty = [train.class_names[i] if train.class_names else i
             for i in np.flatnonzero(counts == 0)]
    raise ValueError(f"the training data has no example of class(es) {empty}")
  return train, test


def load_data(config, data=None) -> StudyData:
  """Loads the dataset, carves a validation split if asked, resolves max_count.

  Args:
    config: the study config (`dataset`, `data_dir`, `input`, `validation_fraction`,
      `max_count`).
    data: optional in-memory (train, test) pair of `imbjax.datasets.Dataset`, used as
      given (no preprocessing) instead of loading `config.dataset`.
  """
  if data is not None:
    if config.input != "device":
      raise ValueError("in-memory data trains with input='device', got "
                       f"input={config.input!r}")
    train, test = _check_user_data(data)
    return _finish(config, train, test, preprocess=None)
  if config.input == "stream":
    if config.get("test_per_class"):
      raise ValueError("test_per_class > 0 needs input='device' (streamed test splits are "
                       "scored whole)")
    train, test = _stream_sources(config)
    min_count = int(np.bincount(train.labels, minlength=train.num_classes).min())
    return StudyData(train, test, None, int(config.max_count or min_count))
  if config.input != "device":
    raise ValueError(f"input must be 'device' or 'stream', got {config.input!r}")
  # Raw first: a validation split is held out before fitting split-dependent
  # preprocessing (CIFAR-10's ZCA), so its images do not leak into the statistics.
  raw = datasets.load_splits(config.dataset, data_dir=config.data_dir or None,
                             preprocess=False)
  return _finish(config, raw["train"], raw["test"], preprocess=config.dataset)


def _finish(config, train, test, *, preprocess: str | None) -> StudyData:
  """Holds out the validation split, then fits and applies `preprocess`'s preprocessing."""
  val = None
  if config.validation_fraction > 0:
    key = jax.random.fold_in(jax.random.key(data_seed(config)), _hash32("validation"))
    counts = np.bincount(train.labels, minlength=train.num_classes)
    n_val = np.maximum(1, np.round(counts * config.validation_fraction)).astype(int)
    val_idx = np.asarray(imbalance.subsample(train.labels, n_val, key))
    keep = np.setdiff1d(np.arange(len(train.labels)), val_idx)
    val = dataclasses.replace(train, images=train.images[val_idx],
                              labels=train.labels[val_idx])
    train = dataclasses.replace(train, images=train.images[keep],
                                labels=train.labels[keep])
  test = balanced_test(config, test)
  splits = {"train": train, "test": test} | ({"val": val} if val is not None else {})
  if preprocess is not None:
    splits = datasets.preprocess_splits(preprocess, splits, fit_on=train)
  train, test, val = splits["train"], splits["test"], splits.get("val")
  min_count = int(np.bincount(train.labels, minlength=train.num_classes).min())
  # Whether every class can hold what each case asks is checked per case, naming the
  # classes short of it (`study.grid.case_counts` with `available`), before training.
  return StudyData(train, test, val, int(config.max_count or min_count))



def balanced_test(config, test):
  """The test split, or with ``config.test_per_class = n > 0`` a class-balanced subset of
  n examples per class (Table 1's balanced test sets), drawn with the data seed.

  Raises:
    ValueError: a class of the test split has fewer than n examples (naming it and the
      largest n the split allows).
  """
  n = int(config.get("test_per_class") or 0)
  if n <= 0:
    return test
  counts = np.bincount(test.labels, minlength=test.num_classes)
  short = np.flatnonzero(counts < n)
  if short.size:
    names = test.class_names or tuple(str(i) for i in range(test.num_classes))
    detail = ", ".join(f"{names[i]!r} has {counts[i]}" for i in short)
    raise ValueError(f"test_per_class={n}: the test split has fewer examples in {detail}; "
                     f"use test_per_class <= {int(counts.min())} (or 0 for the whole "
                     f"split)")
  key = jax.random.fold_in(jax.random.key(data_seed(config)), _hash32("test_per_class"))
  idx = np.asarray(imbalance.subsample(test.labels, np.full(test.num_classes, n), key))
  return dataclasses.replace(test, images=test.images[idx], labels=test.labels[idx])


def _input_shape(config, data: StudyData) -> tuple:
  if config.input != "stream":
    return tuple(data.train.images.shape[1:])
  if config.augment_crop:
    channels = 3 if data.train.kind != "memory" else data.train.data.shape[-1]
    return (config.augment_crop, config.augment_crop, channels)
  if data.train.kind == "memory":
    return tuple(data.train.data.shape[1:])
  raise ValueError("streamed image files need --config.augment_crop (and augment_resize) "
                   "to give every example one size")


