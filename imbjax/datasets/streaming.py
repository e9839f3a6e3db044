"""Streaming input for data that does not fit on the device: index plans through tf.data.

The trainer describes an epoch as an *index plan*: int indices into a source split,
with repeats (oversampling) or omissions (undersampling), as made by
`imbjax.sampling`. This module turns a plan into numpy batches:

    plan --epoch_order(seed, epoch)--> order --fetch--> example --augment--> batch

* `epoch_order` reshuffles the plan each epoch with a key derived from an explicit
  integer seed: `fold_in(key(seed), epoch)` (jax.random, on the CPU), so epoch e is
  the same permutation on every run and every machine.
* Sources: `memory_source` (a `Dataset` in host memory, fetched with `tf.gather`),
  `folder_source` (an image folder, read and decoded per example), and `tfds_source`
  (a prepared tfds split, e.g. ImageNet). tfds splits are read front to back, so a
  plan there is applied as per-example repeat counts followed by a seeded shuffle
  buffer: the epoch holds exactly the plan's examples, in a buffer-shuffled order.
* `ImageNetAugment` is the paper's ImageNet input: resize the shorter side to 256
  (aspect kept), then a random 224 crop and random mirror for training, the centre
  224 crop for testing. Per-example randomness uses stateless TF ops seeded by
  `fold_in(epoch seed, position in epoch)`, so results do not depend on thread
  scheduling.

Batches are dicts `{"images": float32 or uint8 (B, H, W, C), "labels": int32 (B,)}`;
augmented uint8 images come out as float32 in [0, 1]. TensorFlow is imported lazily
with its GPUs hidden.
"""

from __future__ import annotations

import dataclasses
import os
import weakref
from typing import Iterator, Sequence

import numpy as np

from imbjax.datasets import image_folder as _folder
from imbjax.datasets import tfds_source as _tfds
from imbjax.datasets.core import Dataset

__all__ = ["Source", "ImageNetAugment", "memory_source", "folder_source", "tfds_source",
           "epoch_seed", "epoch_order", "resize_shorter_side", "center_crop", "augment_image",
           "epoch_dataset", "iterate"]

_AUTOTUNE = -1  # tf.data.AUTOTUNE, without importing TensorFlow here


@dataclasses.dataclass(frozen=True, eq=False)
class Source:
  """A split that examples are fetched from by index.

  Attributes:
    kind: "memory", "files" or "tfds".
    num_examples: size of the split; plan indices must be below it.
    num_classes, class_names: as in `Dataset`.
    labels: int32 (num_examples,) when known up front (needed to build plans).
    data: the images array ("memory"), the file paths ("files"), or
      (name, tfds split, data_dir) ("tfds").
  """

  kind: str
  num_examples: int
  num_classes: int
  class_names: tuple[str, ...]
  labels: np.ndarray | None
  data: object


@dataclasses.dataclass(frozen=True)
class ImageNetAugment:
  """Paper Sec. 3.2.3: shorter side -> `resize`; `crop` square, random + mirror in training.

  Attributes:
    resize: length of the shorter side after resizing (aspect ratio kept).
    crop: side of the square crop; must not exceed `resize`.
  """

  resize: int = 256
  crop: int = 224

  def __post_init__(self):
    if not 1 <= self.crop <= self.resize:
      raise ValueError(f"ImageNetAugment needs 1 <= crop <= resize, got crop={self.crop}, "
                       f"resize={self.resize}")


def memory_source(dataset: Dataset) -> Source:
  """A source over an in-memory `Dataset` (raw or preprocessed)."""
  dataset.validate()
  return Source("memory", len(dataset), dataset.num_classes, dataset.class_names,
                dataset.labels, dataset.images)


def folder_source(root: str | os.PathLike, split: str, *,
                  class_names: tuple[str, ...] | None = None) -> Source:
  """A source over `root/split/<class>/*.jpg|jpeg|png`, decoded lazily.

  Images may differ in size if an `ImageNetAugment` is used (it crops to one size).

  Raises:
    DataNotFoundError, DataFormatError: see `image_folder.list_files`.
  """
  paths, labels, names = _folder.list_files(root, split, class_names=class_names)
  return Source("files", len(paths), len(names), names, labels, tuple(paths))


def tfds_source(name: str, split: str, *, data_dir: str | os.PathLike | None = None,
                with_labels: bool = True) -> Source:
  """A source over a prepared tfds split (ImageNet: 'test' means 'validation').

  Args:
    name: a tfds name, e.g. "imagenet2012".
    split: "train" or "test" (or "validation").
    data_dir: tfds data_dir.
    with_labels: read all labels now (one pass that skips image decoding, but still
      reads every record: minutes for ImageNet's train split) so that plans can be
      built; False leaves `labels` None and counts examples from the metadata.

  Raises:
    DataUnavailableError: see `tfds_source.ensure_prepared`.
    ValueError: unknown split.
  """
  tf = _tfds.tensorflow()
  import tensorflow_datasets as tfds

  tsplit = _tfds.tfds_split(name, split)
  b = _tfds.ensure_prepared(name, data_dir)
  names = _tfds.builder_class_names(b)
  labels = None
  if with_labels:
    ds = b.as_dataset(split=tsplit, shuffle_files=False,
                      decoders={"image": tfds.decode.SkipDecoding()})
    ds = ds.map(lambda ex: tf.cast(ex["label"], tf.int32)).batch(65536)
    labels = np.concatenate(list(ds.as_numpy_iterator())).astype(np.int32)
    n = len(labels)
  else:
    n = int(b.info.splits[tsplit].num_examples)
  return Source("tfds", n, len(names), names, labels,
                (name, tsplit, None if data_dir is None else os.fspath(data_dir)))


def epoch_seed(seed: int, epoch: int) -> np.ndarray:
  """The two uint32 words of `fold_in(jax.random.key(seed), epoch)` (threefry)."""
  import jax

  if not isinstance(seed, (int, np.integer)) or not isinstance(epoch, (int, np.integer)):
    raise ValueError(f"seed and epoch must be ints, got seed={seed!r}, epoch={epoch!r}")
  with jax.default_device(jax.devices("cpu")[0]):
    key = jax.random.fold_in(jax.random.key(int(seed)), int(epoch))
    return np.asarray(jax.random.key_data(key), np.uint32).reshape(-1)[:2]


def epoch_order(plan: np.ndarray, *, seed: int, epoch: int) -> np.ndarray:
  """The plan permuted for one epoch, deterministically from (seed, epoch).

  Args:
    plan: int indices (any length, repeats allowed).
    seed: the run's integer seed.
    epoch: epoch number; each gives a fresh permutation.

  Returns:
    int64 array, a permutation of `plan`.
  """
  import jax

  plan = _check_plan(plan, None)
  with jax.default_device(jax.devices("cpu")[0]):
    key = jax.random.fold_in(jax.random.key(int(seed)), int(epoch))
    perm = np.asarray(jax.random.permutation(key, len(plan)))
  return plan[perm]


def _check_plan(plan, num_examples: int | None) -> np.ndarray:
  plan = np.asarray(plan)
  if plan.ndim != 1 or (plan.size and plan.dtype.kind not in "iu"):
    raise ValueError(f"index plan must be a 1-D integer array, got {plan.dtype} of shape "
                     f"{plan.shape}")
  plan = plan.astype(np.int64)
  if num_examples is not None and plan.size and (plan.min() < 0 or plan.max() >= num_examples):
    raise ValueError(f"index plan values must lie in [0, {num_examples}), found "
                     f"[{plan.min()}, {plan.max()}]")
  return plan


def resize_shorter_side(image, size: int):
  """Resizes an (H, W, C) image so that min(H, W) == size, keeping the aspect ratio.

  Bilinear with antialiasing (so downscaling averages, like PIL). Returns float32 in
  the input's value range.
  """
  tf = _tfds.tensorflow()
  shape = tf.shape(image)
  h, w = tf.cast(shape[0], tf.float64), tf.cast(shape[1], tf.float64)
  scale = tf.cast(size, tf.float64) / tf.minimum(h, w)
  new_h = tf.maximum(tf.cast(tf.round(h * scale), tf.int32), size)
  new_w = tf.maximum(tf.cast(tf.round(w * scale), tf.int32), size)
  return tf.image.resize(image, tf.stack([new_h, new_w]), method="bilinear", antialias=True)


def center_crop(image, size: int):
  """The central size x size window of an (H, W, C) image (H, W >= size)."""
  tf = _tfds.tensorflow()
  shape = tf.shape(image)
  top = (shape[0] - size) // 2
  left = (shape[1] - size) // 2
  return image[top:top + size, left:left + size, :]


def augment_image(image, *, augment: ImageNetAugment, train: bool, seed):
  """Resize the shorter side, then random crop + mirror (train) or centre crop (test).

  Args:
    image: (H, W, C) tensor, uint8 or float.
    augment: the sizes.
    train: random crop and flip when True; centre crop when False.
    seed: int32/int64 tensor of shape (2,), the stateless seed of this example.

  Returns:
    float32 (crop, crop, C); uint8 input is scaled to [0, 1].
  """
  tf = _tfds.tensorflow()
  scale = 1.0 / 255.0 if image.dtype == tf.uint8 else 1.0
  channels = image.shape[-1] if image.shape[-1] is not None else tf.shape(image)[-1]
  x = resize_shorter_side(image, augment.resize)
  if train:
    seeds = tf.random.experimental.stateless_split(seed, 2)
    x = tf.image.stateless_random_crop(x, [augment.crop, augment.crop, channels],
                                       seed=seeds[0])
    x = tf.image.stateless_random_flip_left_right(x, seed=seeds[1])
  else:
    x = center_crop(x, augment.crop)
  return tf.cast(x, tf.float32) * scale


_FETCH = weakref.WeakKeyDictionary()  # Source -> fetch fn, so arrays go to TF once


def _fetch_fn(source: Source):
  if source not in _FETCH:
    _FETCH[source] = _make_fetch_fn(source)
  return _FETCH[source]


def _make_fetch_fn(source: Source):
  tf = _tfds.tensorflow()
  if source.kind == "memory":
    images = tf.constant(source.data)
    labels = tf.constant(source.labels, tf.int32)
    return lambda i: (tf.gather(images, i), tf.gather(labels, i))
  if source.kind == "files":
    paths = tf.constant(list(source.data))
    labels = tf.constant(source.labels, tf.int32)

    def fetch(i):
      raw = tf.io.read_file(tf.gather(paths, i))
      # INTEGER_ACCURATE is libjpeg's ISLOW IDCT, the one PIL uses: streamed pixels
      # then equal the in-memory reader's (`image_folder.decode`) exactly.
      img = tf.cond(
          tf.io.is_jpeg(raw),
          lambda: tf.io.decode_jpeg(raw, channels=3, dct_method="INTEGER_ACCURATE"),
          lambda: tf.io.decode_png(raw, channels=3))
      img.set_shape([None, None, 3])
      return img, tf.gather(labels, i)
    return fetch
  raise ValueError(f"source kind {source.kind!r} has no random access")


def _tfds_stream(source: Source, plan: np.ndarray, seed_words: np.ndarray,
                 shuffle_buffer: int):
  tf = _tfds.tensorflow()
  name, tsplit, data_dir = source.data
  b = _tfds.ensure_prepared(name, data_dir)
  counts = tf.constant(np.bincount(plan, minlength=source.num_examples), tf.int64)
  ds = b.as_dataset(split=tsplit, as_supervised=True, shuffle_files=False)
  ds = ds.enumerate().flat_map(
      lambda i, ex: tf.data.Dataset.from_tensors(ex).repeat(tf.gather(counts, i)))
  if shuffle_buffer > 1:
    # tf.data seeds are int64; take the two key words as one.
    s = int(seed_words[0]) << 31 ^ int(seed_words[1])
    ds = ds.shuffle(shuffle_buffer, seed=s, reshuffle_each_iteration=False)
  return ds.map(lambda x, y: (x, tf.cast(y, tf.int32)))


def epoch_dataset(source: Source, plan: np.ndarray, *, seed: int, epoch: int,
                  batch_size: int, train: bool, augment: ImageNetAugment | None = None,
                  drop_remainder: bool = False, shuffle_buffer: int = 10_000):
  """The tf.data pipeline of one epoch.

  Args:
    source: where examples come from.
    plan: int indices into the source split (repeats allowed).
    seed: the run's integer seed.
    epoch: the epoch number (reshuffles and reseeds augmentation).
    batch_size: examples per batch.
    train: shuffle the plan and use training augmentation; False keeps the plan
      order (for a tfds source: file order) and uses the test transform.
    augment: an `ImageNetAugment`, or None to pass images through unchanged (they
      must then share one size).
    drop_remainder: drop a final partial batch.
    shuffle_buffer: buffer size for tfds sources (others shuffle exactly).

  Returns:
    A `tf.data.Dataset` of ({"images", "labels"}) batches.

  Raises:
    ValueError: bad plan (not 1-D ints, or out of range), batch_size < 1, or a source
      without labels.
  """
  tf = _tfds.tensorflow()
  if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
    raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
  plan = _check_plan(plan, source.num_examples)
  words = epoch_seed(seed, epoch)
  if source.kind == "tfds":
    ds = _tfds_stream(source, plan, words, shuffle_buffer if train else 0)
  else:
    if source.labels is None:
      raise ValueError(f"source of kind {source.kind!r} has no labels")
    order = epoch_order(plan, seed=seed, epoch=epoch) if train else plan
    ds = tf.data.Dataset.from_tensor_slices(order).map(
        _fetch_fn(source), num_parallel_calls=_AUTOTUNE, deterministic=True)
  base = tf.constant(words.astype(np.int64))
  if augment is not None:
    def aug(pos, example):
      x, y = example
      s = tf.random.experimental.stateless_fold_in(base, pos)
      return augment_image(x, augment=augment, train=train, seed=s), y
    ds = ds.enumerate().map(aug, num_parallel_calls=_AUTOTUNE, deterministic=True)
  ds = ds.map(lambda x, y: {"images": x, "labels": y})
  ds = ds.batch(batch_size, drop_remainder=drop_remainder)
  options = tf.data.Options()
  options.deterministic = True
  return ds.with_options(options).prefetch(_AUTOTUNE)


def iterate(source: Source, plan: np.ndarray, *, seed: int, batch_size: int, train: bool,
            num_epochs: int = 1, start_epoch: int = 0, augment: ImageNetAugment | None = None,
            drop_remainder: bool = False,
            shuffle_buffer: int = 10_000) -> Iterator[dict[str, np.ndarray]]:
  """Yields numpy batches for epochs start_epoch .. start_epoch + num_epochs - 1.

  Deterministic for a given (seed, epoch): resuming at `start_epoch` reproduces the
  batches an uninterrupted run would have seen. Arguments as in `epoch_dataset`.

  Yields:
    {"images": (B, H, W, C), "labels": int32 (B,)} numpy arrays.
  """
  for epoch in range(start_epoch, start_epoch + num_epochs):
    ds = epoch_dataset(source, plan, seed=seed, epoch=epoch, batch_size=batch_size,
                       train=train, augment=augment, drop_remainder=drop_remainder,
                       shuffle_buffer=shuffle_buffer)
    yield from ds.as_numpy_iterator()


class PopulationBatches:
  """Host batches for a population from per-model streams (`imbjax.datasets.streaming`).

  Model i reads its own index plan, reshuffled every epoch with its own seed; each epoch
  yields floor(len(plan) / B) full batches, so step t is batch t mod n of epoch t // n and
  a restart at any step reproduces the uninterrupted stream.

  Calling it as ``batches(first_step, num_steps)`` gives the host arrays
  (images[S, P, B, ...], labels[S, P, B]) that `imbjax.engine.fit` takes for streamed
  input.
  """

  def __init__(self, source: Source, plans: Sequence[np.ndarray], seeds: Sequence[int], *,
               batch_size: int, augment: ImageNetAugment | None = None):
    self.source = source
    self.plans = plans
    self.seeds = seeds
    self.batch_size = b = batch_size
    for plan in plans:
      if len(plan) < b:
        raise ValueError(f"a streamed plan of {len(plan)} examples is shorter than one "
                         f"batch of {b}")
    self.augment = augment
    self._iters = [None] * len(plans)
    self._next_step = None

  def _open(self, i, step):
    per_epoch = len(self.plans[i]) // self.batch_size
    epoch, skip = divmod(step, per_epoch)
    it = iterate(
        self.source, self.plans[i], seed=self.seeds[i], batch_size=self.batch_size,
        train=True, num_epochs=1 << 30, start_epoch=epoch, augment=self.augment,
        drop_remainder=True)
    for _ in range(skip):
      next(it)
    return it

  def __call__(self, first_step: int, num_steps: int):
    if self._next_step != first_step:
      self._iters = [self._open(i, first_step) for i in range(len(self.plans))]
    images, labels = [], []
    for _ in range(num_steps):
      batches = [next(it) for it in self._iters]
      images.append(np.stack([b["images"] for b in batches]))
      labels.append(np.stack([b["labels"] for b in batches]))
    self._next_step = first_step + num_steps
    return (np.stack(images).astype(np.float32), np.stack(labels).astype(np.int32))
