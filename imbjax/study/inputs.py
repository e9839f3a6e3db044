"""Where a group's models read their data: on the device, or streamed from the host.

Both forms answer the same two questions, so a group never asks which one it has:
`train_data(members, seeds)` gives what `imbjax.engine.fit` trains on, and
`logits(trainer, state, split, size)` gives host logits [size, N, C] of the population's
first `size` models on 'test', 'val' or 'curve' (the test examples scored at log
points for Figure 8), or None when the input has no such split; `same_examples(a, b)`
says when two splits are one (the whole test split as the curve's), so a group scores
it once at the last log point; `frozen_prefix(trainer, members)` gives a phase whose
models train only their output layers a cheaper way to its log points, or None.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from imbjax import engine
from imbjax import imbalance
from imbjax.datasets import streaming
from imbjax.study.data import StudyData
from imbjax.study.grid import _hash32, data_seed


def _augment(config):
  if not config.augment_crop:
    return None
  return streaming.ImageNetAugment(config.augment_resize, config.augment_crop)


class DeviceInputs:
  """The training split resident on every device once; test, validation and curve
  examples placed once per study."""

  def __init__(self, config, data: StudyData, mesh):
    self.config = config
    self.labels = {"test": np.asarray(data.test.labels)}
    self.train = engine.place(
        engine.TrainData(images=data.train.images.astype(np.float32),
                         labels=data.train.labels.astype(np.int32)), mesh, replicated=True)
    self.images = {"test": engine.place(data.test.images, mesh, replicated=True)}
    self.train_images = self.train.images
    if config.get("curve_points", 0):
      idx = curve_test_sample(config, data.test)
      self.images["curve"] = (self.images["test"] if idx is None else
                              engine.place(data.test.images[idx], mesh, replicated=True))
      self.labels["curve"] = np.asarray(data.test.labels if idx is None else
                                        data.test.labels[idx])
    if data.val is not None:
      self.images["val"] = engine.place(data.val.images, mesh, replicated=True)
      self.labels["val"] = np.asarray(data.val.labels)

  def same_examples(self, a: str, b: str) -> bool:
    """Whether splits `a` and `b` are the same examples (so their logits are too)."""
    return a in self.images and self.images.get(a) is self.images.get(b)

  def train_data(self, members: Sequence[engine.Member], seeds: Sequence[int]):
    del members, seeds  # every model indexes the one resident split by its own plan
    return self.train

  def logits(self, trainer, state, split: str, size: int) -> np.ndarray | None:
    if split not in self.images:
      return None
    return engine.fetch(engine.predict(
        trainer, state, self.images[split],
        batch_size=self.config.eval_batch_size))[:size]

  def logits_of(self, trainer, state, indices, size: int) -> np.ndarray:
    """Logits [size, n, C]: model p on the training examples ``indices[p]``."""
    return engine.fetch(engine.predict(
        trainer, state, self.train_images, indices=indices,
        batch_size=self.config.eval_batch_size))[:size]


  def frozen_prefix(self, trainer, members) -> "FrozenPrefix | None":
    """A `FrozenPrefix` for a phase of `members`, or None where it does not apply."""
    if (trainer.output_layers and not trainer.has_batch_stats
        and engine.all_output_only(members)):
      return FrozenPrefix(self, trainer)
    return None


class FrozenPrefix:
  """Log points of a phase whose models train only their output layers, cheaply.

  When every model of a phase trains only its output layers (two-phase training's
  phase 2) and the network has no batch statistics, the layers before the output
  layers do not change during the phase. Their output on the curve examples is then
  kept from the first log point (`engine.predict(..., with_head_inputs=True)`), and a
  log point evaluates the output layers alone (`engine.predict_heads`: for 24 LeNet-5s
  on the quickstart's splits, 5-8 ms instead of 0.4-1.0 s per split). Each split is checked bit for bit against a full evaluation
  at the phase's first and last log points, and the full logits are the ones used there
  (a row's test logits come from the last): a mismatch at the first point turns the
  shortcut off for the phase; one at the last raises, since the points between were
  computed the short way.
  """

  def __init__(self, inputs: DeviceInputs, trainer):
    self.inputs, self.trainer = inputs, trainer
    self.heads = {}   # split -> head inputs on the device [P, n, ...]
    self.off = False

  def logits(self, state, split: str, size: int, *, indices=None, last: bool
             ) -> np.ndarray | None:
    """Host logits [size, n, C] on `split` (or, with `indices`, on the training
    examples ``indices[p]`` of model p; `split` then only names the cache entry)."""
    inputs, trainer = self.inputs, self.trainer
    if indices is None and split not in inputs.images:
      return None
    if self.off:
      return (inputs.logits(trainer, state, split, size) if indices is None
              else inputs.logits_of(trainer, state, indices, size))
    batch = inputs.config.eval_batch_size
    short = lambda: engine.fetch(engine.predict_heads(
        trainer, state, self.heads[split], batch_size=batch))[:size]
    if split not in self.heads or last:
      images = inputs.images[split] if indices is None else inputs.train_images
      want, heads = engine.predict(trainer, state, images, indices=indices,
                                   batch_size=batch, with_head_inputs=True)
      want = engine.fetch(want)[:size]
      if split not in self.heads:
        self.heads[split] = heads
        if not np.array_equal(short(), want):
          self.off = True
      elif not np.array_equal(short(), want):
        raise RuntimeError(
            f"the output layers alone gave other logits on {split!r} at the last log "
            f"point than the whole network, though they agreed at the first; the curve "
            f"points in between are not trustworthy (model {trainer.model_name})")
      return want
    return short()


class StreamInputs:
  """Per-model streams of the training split (tf.data, `datasets.streaming`); the test
  split streamed in order for evaluation. No validation split and no curves."""

  def __init__(self, config, data: StudyData):
    self.config = config
    self.data = data
    self.labels = {"test": np.asarray(data.test.labels)}

  def train_data(self, members: Sequence[engine.Member], seeds: Sequence[int]):
    if any(bool(m.classwise) for m in members):
      raise ValueError("class-wise sampling methods need input='device'")
    plans = [np.asarray(m.plan)[:int(m.plan_len)] for m in members]
    return streaming.PopulationBatches(self.data.train, plans, seeds,
                                       batch_size=self.config.batch_size,
                                       augment=_augment(self.config))

  def same_examples(self, a: str, b: str) -> bool:
    del a, b  # no curves on streamed input
    return False

  def logits_of(self, trainer, state, indices, size: int) -> None:
    del trainer, state, indices, size  # the training split is not in memory
    return None

  def frozen_prefix(self, trainer, members) -> None:
    del trainer, members  # no curves on streamed input
    return None

  def logits(self, trainer, state, split: str, size: int) -> np.ndarray | None:
    if split != "test":
      return None
    source = self.data.test
    out = []
    for batch in streaming.iterate(source, np.arange(source.num_examples), seed=0,
                                   batch_size=self.config.eval_batch_size, train=False,
                                   augment=_augment(self.config)):
      images = jnp.asarray(batch["images"], jnp.float32)
      out.append(engine.fetch(engine.predict(
          trainer, state, images, batch_size=self.config.eval_batch_size))[:size])
    return np.concatenate(out, axis=1)


def curve_test_sample(config, test) -> np.ndarray | None:
  """Indices of the test examples scored at log points: None for the whole split
  (``curve_test_examples == 0``), else a class-stratified sample of that size."""
  n = int(config.get("curve_test_examples") or 0)
  labels = np.asarray(test.labels)
  if n <= 0 or n >= len(labels):
    return None
  counts = np.bincount(labels, minlength=test.num_classes)
  want = np.minimum(counts, np.maximum(1, np.round(counts * n / len(labels)))).astype(int)
  key = jax.random.fold_in(jax.random.key(data_seed(config)), _hash32("curve_test"))
  return np.sort(np.asarray(imbalance.subsample(labels, want, key)))


def make_inputs(config, data: StudyData, mesh):
  """The study's inputs: `StreamInputs` for ``config.input == 'stream'``, else device."""
  if config.input == "stream":
    return StreamInputs(config, data)
  return DeviceInputs(config, data, mesh)
