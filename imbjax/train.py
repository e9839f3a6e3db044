"""The study driver: `train_and_evaluate(config, workdir)`.

This module owns the wiring of a study: it expands a config into a grid of imbalance
cases x methods x learning rates x repeats, splits the grid into population *groups*,
trains each group as one population (`imbjax.population`), evaluates every model in one
vmapped pass, scores it (`imbjax.metrics`, `imbjax.thresholding`) and writes the group's
rows to the results store in one transaction (`imbjax.store`).

Resume: every row has a stable `run_key` (a hash of what defines it); a group whose rows
are all stored is skipped, so rerunning the same command after a crash finishes only the
rest. A killed run loses at most the group in flight (plus, for long groups with
``checkpoint_every``, only the steps since its last Orbax checkpoint).

Randomness: every draw derives from ``config.seed`` by `jax.random.fold_in` with stable
hashes of names (case, method, learning rate, repeat), never from a counter over the
grid, so adding cases to a study leaves existing rows' numbers unchanged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import time
import zlib
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import imbjax
from imbjax import datasets
from imbjax import imbalance
from imbjax import losses
from imbjax import methods as methods_lib
from imbjax import metrics
from imbjax import models
from imbjax import population
from imbjax import store as store_lib
from imbjax import thresholding

PROFILES = ("step", "linear", "exponential", "balanced", "original")

# Config fields whose change would make old and new rows incomparable; a rerun in the same
# workdir must match them (the grid lists may grow: new rows simply add up).
FINGERPRINT_FIELDS = ("dataset", "model", "max_count", "minority", "iterations",
                      "batch_size", "seed", "schedule", "weight_decay", "momentum",
                      "validation_fraction")


def _hash32(*parts) -> int:
  return zlib.crc32("|".join(str(p) for p in parts).encode()) & 0x7FFFFFFF


@dataclasses.dataclass(frozen=True)
class Case:
  """One imbalanced training subset: a profile, its parameters and a repetition."""
  profile: str
  rho: float
  mu: float | None
  repetition: int

  @property
  def name(self) -> str:
    mu = "" if self.mu is None else f"_mu{self.mu:g}"
    return f"{self.profile}_rho{self.rho:g}{mu}_rep{self.repetition}"


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """One trained network: a case, a training method, its resampling ratio and LR."""
  case: Case
  method: methods_lib.Method
  ratio: float
  base_lr: float
  lr_repeat: int

  @property
  def source(self) -> "ModelSpec":
    """The phase-1 model a phase-2 model continues."""
    return dataclasses.replace(self, method=methods_lib.get(self.method.starts_from))

  def key(self, seed: int) -> jax.Array:
    base = jax.random.key(seed)
    return jax.random.fold_in(base, _hash32(
        self.case.name, self.method.name, f"{self.ratio:g}", f"{self.base_lr:g}",
        self.lr_repeat))


@dataclasses.dataclass(frozen=True)
class RowSpec:
  """One results-store row: a (possibly evaluation-only) method on a trained model."""
  method: methods_lib.Method
  model: ModelSpec            # the trained model it scores

  def run_key(self, config) -> str:
    m = self.model
    text = json.dumps([
        config.dataset, config.model, m.case.profile, m.case.rho, m.case.mu,
        m.case.repetition, self.method.name, m.ratio, m.base_lr, m.lr_repeat,
        config.iterations, config.batch_size, config.seed], sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:20]


# ----------------------------------------------------------------------------------------
# The grid.


def cases(config) -> list[Case]:
  """The imbalance cases of a config, in a stable order."""
  if config.profile not in PROFILES:
    raise ValueError(f"unknown profile {config.profile!r}; known: {PROFILES}")
  out = []
  for rep in range(config.repetitions):
    if config.profile in ("balanced", "original"):
      out.append(Case(config.profile, 1.0, None, rep))
      continue
    if config.get("case_list"):
      if config.profile != "step":
        raise ValueError("case_list holds (rho, mu) pairs of step imbalance; "
                         f"profile is {config.profile!r}")
      out.extend(Case("step", float(rho), float(mu), rep) for rho, mu in config.case_list)
      continue
    for rho in config.rhos:
      if config.profile == "step":
        for mu in config.mus:
          out.append(Case("step", float(rho), float(mu), rep))
      else:
        out.append(Case(config.profile, float(rho), None, rep))
  return out


def case_counts(config, case: Case, num_classes: int, max_count: int) -> np.ndarray:
  """Per-class training counts of a case (the imbalance profile, paper eq. 1-2)."""
  key = jax.random.fold_in(jax.random.key(config.seed), _hash32("counts", case.name))
  if case.profile == "balanced":
    return np.full(num_classes, max_count, np.int64)
  if case.profile == "original":
    return None
  if case.profile == "step":
    return imbalance.step(num_classes, max_count, case.rho, case.mu,
                          minority=config.minority, key=key)
  if case.profile == "linear":
    order = "ascending" if config.minority == "lowest" else "random"
    return imbalance.linear(num_classes, max_count, case.rho, order=order, key=key)
  return imbalance.exponential(num_classes, max_count, case.rho)


def case_subset(config, case: Case, labels: np.ndarray, counts: np.ndarray) -> np.ndarray:
  if case.profile == "original":
    return np.arange(len(labels))
  key = jax.random.fold_in(jax.random.key(config.seed), _hash32("subset", case.name))
  return np.asarray(imbalance.subsample(labels, counts, key))


def model_specs(config, case: Case) -> tuple[list[ModelSpec], list[RowSpec]]:
  """Trained models and stored rows of one case."""
  requested = [methods_lib.get(n) for n in config.methods]
  trained = methods_lib.closure(config.methods)
  ratios = tuple(float(r) for r in config.resample_ratios)
  specs, rows = [], []

  def ratios_of(m):
    # Partial levels apply to the resampling methods and everything built on them.
    root = m
    while root.starts_from or root.evaluates:
      root = methods_lib.get(root.starts_from or root.evaluates)
    return ratios if root.resamples else (1.0,)

  for lr in config.base_lrs:
    for rep in range(config.lr_repeats):
      for m in trained:
        for r in ratios_of(m):
          specs.append(ModelSpec(case, m, r, float(lr), rep))
      for m in requested:
        trained_name = m.evaluates or m.name
        for r in ratios_of(m):
          rows.append(RowSpec(m, ModelSpec(case, methods_lib.get(trained_name), r,
                                           float(lr), rep)))
  return specs, rows


@dataclasses.dataclass
class Group:
  """Cases trained together as one population."""
  cases: list[Case]
  group_id: str


def _phase1_models(config, case: Case) -> int:
  """Phase-1 models trained for a case (every case of a config has the same number)."""
  return len([s for s in model_specs(config, case)[0] if not s.method.is_phase2])


def groups(config, all_cases: Sequence[Case]) -> list[Group]:
  """Splits the cases into groups of at most `population_size` phase-1 models."""
  per_case = _phase1_models(config, all_cases[0]) if all_cases else 1
  cases_per_group = max(1, config.population_size // max(per_case, 1))
  out = []
  for i in range(0, len(all_cases), cases_per_group):
    chunk = list(all_cases[i:i + cases_per_group])
    gid = hashlib.sha1("|".join(c.name for c in chunk).encode()).hexdigest()[:12]
    out.append(Group(chunk, gid))
  return out


def largest_population(config) -> int:
  """Phase-1 models in the study's largest population (pure Python: no JAX backend)."""
  all_cases = cases(config)
  if not all_cases:
    return 0
  return max(len(g.cases) for g in groups(config, all_cases)) * _phase1_models(
      config, all_cases[0])


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


def load_data(config) -> StudyData:
  """Loads the dataset, carves a validation split if asked, resolves max_count."""
  if config.input == "stream":
    train, test = _stream_sources(config)
    min_count = int(np.bincount(train.labels, minlength=train.num_classes).min())
    return StudyData(train, test, None, int(config.max_count or min_count))
  if config.input != "device":
    raise ValueError(f"input must be 'device' or 'stream', got {config.input!r}")
  # Raw first: a validation split is held out before fitting split-dependent
  # preprocessing (CIFAR-10's ZCA), so its images do not leak into the statistics.
  raw = datasets.load_splits(config.dataset, data_dir=config.data_dir or None,
                             preprocess=False)
  train, test = raw["train"], raw["test"]
  val = None
  if config.validation_fraction > 0:
    key = jax.random.fold_in(jax.random.key(config.seed), _hash32("validation"))
    counts = np.bincount(train.labels, minlength=train.num_classes)
    n_val = np.maximum(1, np.round(counts * config.validation_fraction)).astype(int)
    val_idx = np.asarray(imbalance.subsample(train.labels, n_val, key))
    keep = np.setdiff1d(np.arange(len(train.labels)), val_idx)
    val = dataclasses.replace(train, images=train.images[val_idx],
                              labels=train.labels[val_idx])
    train = dataclasses.replace(train, images=train.images[keep],
                                labels=train.labels[keep])
  splits = {"train": train, "test": test} | ({"val": val} if val is not None else {})
  splits = datasets.preprocess_splits(config.dataset, splits, fit_on=train)
  train, test, val = splits["train"], splits["test"], splits.get("val")
  min_count = int(np.bincount(train.labels, minlength=train.num_classes).min())
  max_count = config.max_count or min_count
  if max_count > min_count and config.profile != "original":
    raise ValueError(
        f"max_count={max_count} exceeds the smallest class of {config.dataset!r} "
        f"({min_count} examples); use max_count <= {min_count}")
  return StudyData(train, test, val, int(max_count))


# ----------------------------------------------------------------------------------------
# Scoring.


def _softmax(logits):
  return jax.nn.softmax(jnp.asarray(logits, jnp.float32), axis=-1)


def score(logits: np.ndarray, labels: np.ndarray, counts: np.ndarray,
          num_classes: int, *, posthoc: str = "none", val=None) -> dict:
  """Scores one model's test logits as a row's metrics.

  Args:
    logits: [N, C] test logits.
    labels: [N] test labels.
    counts: training class counts of the model's imbalanced subset (the prior is
      estimated on the imbalanced set before sampling, Section 2.2).
    num_classes: C.
    posthoc: 'none', 'prior' (thresholding: the decision is argmax of p / prior),
      'logit_adjust' (logits - tau log prior, tau chosen on `val`, default 1),
      'tau_norm' (`logits` is then a dict tau -> (test_logits, val_logits) of the
      tau-normalised classifier; tau chosen on `val` by accuracy, default 1).
    val: optional (val_logits, val_labels) for choosing tau; for 'tau_norm' only the
      validation labels are used.

  Returns:
    The row's metric fields. A model whose outputs are not finite (its weights overflowed
    without a non-finite loss, or it diverged before its first step) gets NaN metrics
    and ``extra['non_finite_outputs'] = True``; the caller marks it diverged.
  """
  prior = thresholding.class_prior(counts)
  extra = {}
  outputs = list(logits.values()) if isinstance(logits, dict) else [(logits, None)]
  if val is not None:
    outputs.append((val[0], None))
  if not all(np.all(np.isfinite(np.asarray(x))) for pair in outputs for x in pair
             if x is not None):
    nan = float("nan")
    return {"auc": nan, "accuracy": nan, "thresholded_accuracy": nan,
            "balanced_accuracy": nan, "per_class_recall": [nan] * num_classes,
            "extra": {"non_finite_outputs": True}}
  if posthoc == "tau_norm":
    taus = sorted(logits)
    tau = 1.0
    if val is not None and all(logits[t][1] is not None for t in taus):
      accs = [float(metrics.accuracy(logits[t][1], jnp.asarray(val[1]))) for t in taus]
      tau = taus[int(np.argmax(accs))]
    logits = logits[tau][0]
    extra["tau"] = float(tau)
  elif posthoc == "logit_adjust":
    tau = 1.0
    if val is not None:
      taus = np.linspace(0.0, 2.0, 9)
      tau = float(losses.select_tau(val[0], val[1], prior, taus))
    logits = losses.posthoc_logit_adjust(logits, prior, tau)
    extra["tau"] = tau
  probs = _softmax(logits)
  thresholded = thresholding.apply_prior(probs, prior)
  decision = thresholded if posthoc == "prior" else probs
  preds = jnp.argmax(decision, -1)
  labels_j = jnp.asarray(labels)
  row = {
      "auc": float(metrics.multiclass_roc_auc(probs, labels_j)),
      "accuracy": float(metrics.accuracy(decision, labels_j)),
      "thresholded_accuracy": float(metrics.accuracy(thresholded, labels_j)),
      "balanced_accuracy": float(metrics.balanced_accuracy(preds, labels_j, num_classes)),
      "per_class_recall": [float(x) for x in metrics.per_class_recall(
          preds, labels_j, num_classes)],
  }
  extra["ece"] = float(metrics.expected_calibration_error(probs, labels_j))
  shots = metrics.shot_accuracy(preds, labels_j, jnp.asarray(counts))
  extra.update({k: float(v) for k, v in dict(shots).items()})
  row["extra"] = extra
  return row


# ----------------------------------------------------------------------------------------
# One group.

TAU_NORM_GRID = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0)


def _logits(config, trainer, state, images, size: int) -> np.ndarray:
  """Host logits [size, N, C] of the population's first `size` models (drops padding)."""
  return population.fetch(population.predict(
      trainer, state, images, batch_size=_eval_batch(config, size)))[:size]


def _eval_batch(config, population_size: int) -> int:
  """Per-model evaluation batch: `eval_batch_size` examples in flight for the population.

  Activations (and im2col patches) of an evaluation step scale with models x batch, so
  a large population evaluates each model on smaller batches.
  """
  return max(8, config.eval_batch_size // max(population_size, 1))


def _tau_norm_logits(config, trainer, state, test_images, val_images, size):
  """Logits of every phase-1 model with its classifier tau-normalised, for a tau grid.

  Kang et al. (2020): each class's weight vector of the last output layer becomes
  w_c / ||w_c||^tau (bias kept). Returns {tau: (test_logits[P], val_logits[P] | None)}.
  """
  last = trainer.output_layers[-1]
  out = {}
  for tau in TAU_NORM_GRID:
    params = dict(state.params)
    layer = dict(params[last])
    layer["kernel"] = jax.vmap(lambda k: losses.tau_normalize(k, tau))(layer["kernel"])
    params[last] = layer
    st = state.replace(params=params)
    test = _logits(config, trainer, st, test_images, size)
    val = None
    if val_images is not None:
      val = _logits(config, trainer, st, val_images, size)
    out[tau] = (test, val)
  return out


def _trainer(config, data: StudyData) -> population.Trainer:
  return population.Trainer(
      model=config.model, num_classes=data.train.num_classes,
      batch_size=config.batch_size, total_steps=config.iterations,
      schedule=config.schedule,
      schedule_kwargs=tuple(sorted(dict(config.schedule_kwargs).items())),
      momentum=config.momentum, weight_decay=config.weight_decay,
      conv_impl=config.conv_impl, input_shape=_input_shape(config, data),
      model_block=config.get("model_block"),
      compute_dtype=config.get("compute_dtype", "auto"))


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


class _Streams:
  """Host batches for a population from per-model streams (`imbjax.datasets.streaming`).

  Model i reads its own index plan, reshuffled every epoch with its own seed; each epoch
  yields floor(len(plan) / B) full batches, so step t is batch t mod n of epoch t // n and
  a restart at any step reproduces the uninterrupted stream.
  """

  def __init__(self, config, source, plans: Sequence[np.ndarray], seeds: Sequence[int]):
    from imbjax.datasets import streaming
    self._streaming = streaming
    self.config = config
    self.source = source
    self.plans = plans
    self.seeds = seeds
    b = config.batch_size
    for plan in plans:
      if len(plan) < b:
        raise ValueError(f"a streamed plan of {len(plan)} examples is shorter than one "
                         f"batch of {b}")
    self.augment = (streaming.ImageNetAugment(config.augment_resize, config.augment_crop)
                    if config.augment_crop else None)
    self._iters = [None] * len(plans)
    self._next_step = None

  def _open(self, i, step):
    per_epoch = len(self.plans[i]) // self.config.batch_size
    epoch, skip = divmod(step, per_epoch)
    it = self._streaming.iterate(
        self.source, self.plans[i], seed=self.seeds[i], batch_size=self.config.batch_size,
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


def _predict_stream(config, trainer, state, source, size):
  """Logits [P, N, C] of every model on a streamed split (centre crops, in order)."""
  from imbjax.datasets import streaming
  augment = (streaming.ImageNetAugment(config.augment_resize, config.augment_crop)
             if config.augment_crop else None)
  plan = np.arange(source.num_examples)
  out = []
  for batch in streaming.iterate(source, plan, seed=0, batch_size=config.eval_batch_size,
                                 train=False, augment=augment):
    images = jnp.asarray(batch["images"], jnp.float32)
    out.append(population.fetch(population.predict(
        trainer, state, images, batch_size=images.shape[0]))[:size])
  return np.concatenate(out, axis=1)


class Progress:
  """Prints done/total models, images per second and an ETA; writes TensorBoard scalars."""

  def __init__(self, total_models: int, workdir: pathlib.Path | None, enabled=True):
    self.total = total_models
    self.done = 0
    self.images = 0
    self.start = time.time()
    self.enabled = enabled
    self._writer = None
    self._workdir = workdir
    self._step = 0

  def scalars(self, values: dict):
    self._step += 1
    if self._workdir is None or not self.enabled:
      return
    try:
      import tensorflow as tf
      if self._writer is None:
        tf.config.set_visible_devices([], "GPU")
        self._writer = tf.summary.create_file_writer(str(self._workdir / "tensorboard"))
      with self._writer.as_default(step=self._step):
        for k, v in values.items():
          tf.summary.scalar(k, float(v))
      self._writer.flush()
    except ImportError:  # TensorBoard scalars are optional.
      pass

  def line(self, models_in_flight: int, steps_frac: float) -> str:
    elapsed = time.time() - self.start
    rate = self.images / max(elapsed, 1e-9)
    done = self.done + models_in_flight * steps_frac
    eta = elapsed / max(done, 1e-9) * (self.total - done) if done else float("nan")
    return (f"[{done:7.1f}/{self.total} models] {rate:,.0f} images/s, "
            f"elapsed {elapsed:,.0f}s, ETA {eta:,.0f}s")


def train_group(config, group: Group, data: StudyData, trainer: population.Trainer,
                data_dev: population.TrainData, progress: Progress, workdir,
                log=logging.info) -> list[dict]:
  """Trains and evaluates one group; returns its rows (not yet written)."""
  t0 = time.time()
  num_classes = data.train.num_classes
  labels = data.train.labels
  per_case = {}
  for case in group.cases:
    counts = case_counts(config, case, num_classes, data.max_count)
    subset = case_subset(config, case, labels, counts)
    if counts is None:  # the original training set, as it comes
      counts = np.bincount(labels[subset], minlength=num_classes)
    per_case[case] = (counts, subset)

  specs, rows = [], []
  for case in group.cases:
    s, r = model_specs(config, case)
    specs += s
    rows += r
  phase1 = [s for s in specs if not s.method.is_phase2]
  phase2 = [s for s in specs if s.method.is_phase2]

  n_dev = len(jax.devices())
  mesh = population.model_mesh() if n_dev > 1 else None
  streamed = config.input == "stream"
  test_labels = data.test.labels
  test_images = val_images = curve_images = curve_labels = None
  if not streamed:
    test_images = population.place(data.test.images, mesh, replicated=True)
    if config.curve_test_examples > 0:
      n_curve = min(config.curve_test_examples, len(test_labels))
      curve_images = test_images[:n_curve]
      curve_labels = np.asarray(test_labels[:n_curve])
    val_images = (population.place(data.val.images, mesh, replicated=True)
                  if data.val is not None else None)

  def member(spec: ModelSpec, phase: int):
    counts, subset = per_case[spec.case]
    return methods_lib.make_member(
        spec.method, subset=subset, labels=labels, num_classes=num_classes,
        key=spec.key(config.seed), base_lr=spec.base_lr, ratio=spec.ratio,
        total_steps=config.iterations, phase=phase)

  def run(spec_list, phase, init_state=None):
    member_list = [member(s, phase) for s in spec_list]
    members = population.stack_members(member_list)
    train_input = data_dev
    if streamed:
      if any(bool(m.classwise) for m in member_list):
        raise ValueError("class-wise sampling methods need input='device'")
      plans = [np.asarray(m.plan)[:int(m.plan_len)] for m in member_list]
      plans += [plans[-1]] * ((-len(plans)) % n_dev)
      seeds = [_hash32(s.case.name, s.method.name, s.base_lr, s.lr_repeat, s.ratio, phase,
                       config.seed) for s in spec_list]
      seeds += [seeds[-1]] * ((-len(seeds)) % n_dev)
      train_input = _Streams(config, data.train, plans, seeds)
    members, size = population.pad_population(members, n_dev)
    members_dev = population.place(members, mesh)
    if init_state is None:
      state = population.init_population(trainer, members_dev)
    else:
      state = population.restart(trainer, init_state, members_dev)
    ckpt = None
    if config.checkpoint_every > 0:
      ckpt = str(pathlib.Path(workdir).resolve() / "checkpoints" /
                 f"{group.group_id}_phase{phase}")
    curve = {"steps": [], "train_acc": [], "test_acc": [], "loss": []}
    last = [0]

    def on_chunk(step_done, m, state):
      progress.images += trainer.batch_size * size * (step_done - last[0])
      last[0] = step_done
      curve["steps"].append(step_done)
      curve["train_acc"].append(np.asarray(m["accuracy"])[:size].tolist())
      if curve_images is not None:  # test accuracy at log points (paper Figure 8)
        logits = _logits(config, trainer, state, curve_images, size)
        acc = (np.argmax(logits, -1) == curve_labels[None]).mean(-1)
        curve["test_acc"].append(acc.tolist())
      curve["loss"].append(np.asarray(m["loss"])[:size].tolist())
      progress.scalars({"loss_mean": float(np.nanmean(m["loss"][:size])),
                        "train_accuracy_mean": float(np.nanmean(m["accuracy"][:size]))})
      if config.verbose:
        log(progress.line(size, step_done / config.iterations))

    state = population.fit(trainer, state, members_dev, train_input,
                           num_steps=config.iterations, chunk_steps=config.chunk_steps,
                           checkpoint_dir=ckpt, checkpoint_every=config.checkpoint_every,
                           on_chunk=on_chunk)
    if streamed:
      logits = _predict_stream(config, trainer, state, data.test, size)
    else:
      logits = _logits(config, trainer, state, test_images, size)
    val_logits = None
    if val_images is not None:
      val_logits = _logits(config, trainer, state, val_images, size)
    diverged = population.fetch(state.diverged)[:size]
    progress.done += size
    return state, logits, val_logits, diverged, curve

  outputs = {}
  state1, logits1, val1, div1, curve1 = run(phase1, 1)
  column = lambda curve, key, i: [c[i] for c in curve[key]]  # model i's values per log point
  tau_logits = {}
  if any(r.method.posthoc == "tau_norm" for r in rows) and not streamed:
    tau_logits = _tau_norm_logits(config, trainer, state1, test_images, val_images,
                                  len(phase1))
  for i, s in enumerate(phase1):
    outputs[s] = (logits1[i], None if val1 is None else val1[i], div1[i],
                  column(curve1, "train_acc", i), curve1["steps"],
                  column(curve1, "test_acc", i))
  if phase2:
    index = {s: i for i, s in enumerate(phase1)}
    src = np.array([index[s.source] for s in phase2])
    src = np.concatenate([src, np.repeat(src[-1:], (-len(src)) % n_dev)])
    init = jax.tree.map(lambda x: x[src], state1)
    state2, logits2, val2, div2, curve2 = run(phase2, 2, init_state=init)
    for i, s in enumerate(phase2):
      outputs[s] = (logits2[i], None if val2 is None else val2[i],
                    div2[i] | outputs[s.source][2],
                    column(curve2, "train_acc", i), curve2["steps"],
                    column(curve2, "test_acc", i))

  wall = (time.time() - t0) / max(len(specs), 1)
  out_rows = []
  for r in rows:
    logits, val_logits, diverged, train_curve, steps, test_acc = outputs[r.model]
    counts, _ = per_case[r.model.case]
    case = r.model.case
    val = None
    if val_logits is not None:
      val = (val_logits, data.val.labels)
    scored = logits
    if r.method.posthoc == "tau_norm":
      i = phase1.index(r.model)
      scored = {t: (lt[i], None if lv is None else lv[i]) for t, (lt, lv) in
                tau_logits.items()}
    row = score(scored, test_labels, counts, num_classes, posthoc=r.method.posthoc,
                val=val)
    if val is not None and not row["extra"].get("non_finite_outputs"):
      row["val_auc"] = float(metrics.multiclass_roc_auc(_softmax(val_logits),
                                                        jnp.asarray(data.val.labels)))
    diverged = diverged or bool(row["extra"].get("non_finite_outputs"))
    row["extra"].update({"curve_steps": steps, "train_acc": train_curve})
    if test_acc:
      row["extra"]["test_acc"] = test_acc
    num_minority = None if case.mu is None else int(round(case.mu * num_classes))
    minority = [int(c) for c in np.flatnonzero(counts < counts.max())]
    row.update(
        run_key=r.run_key(config), group_id=group.group_id, dataset=config.dataset,
        model=config.model, profile=case.profile, rho=case.rho, mu=case.mu,
        num_minority=num_minority, minority_classes=minority,
        class_counts=[int(c) for c in counts], repetition=case.repetition,
        seed=config.seed, method=r.method.name, resample_ratio=r.model.ratio,
        base_lr=r.model.base_lr, lr_repeat=r.model.lr_repeat,
        iterations=config.iterations, batch_size=config.batch_size,
        status="diverged" if diverged else "ok", wall_time_s=wall)
    out_rows.append(row)
  return out_rows


# ----------------------------------------------------------------------------------------
# The study.


def fingerprint(config) -> dict:
  out = {k: (list(v) if isinstance(v, tuple) else v)
         for k, v in ((f, config.get(f)) for f in FINGERPRINT_FIELDS)}
  # bfloat16 computes other numbers than float32, so a workdir must not mix them ('auto'
  # enters as what it resolves to here). float32 is left out so that workdirs written
  # before the field existed resume.
  dtype = population.resolve_compute_dtype(config.get("compute_dtype", "auto"))
  if dtype != "float32":
    out["compute_dtype"] = dtype
  return out


def validate_config(config) -> None:
  """Refuses a config that cannot run, naming the field and what is accepted."""
  for name in config.methods:
    methods_lib.get(name)
  if config.model not in models.names():
    raise ValueError(f"unknown model {config.model!r}; known: {models.names()}")
  if config.iterations <= 0 or config.batch_size <= 0:
    raise ValueError(f"iterations and batch_size must be > 0, got {config.iterations}, "
                     f"{config.batch_size}")
  if config.repetitions <= 0 or config.lr_repeats <= 0:
    raise ValueError("repetitions and lr_repeats must be >= 1")
  if not config.base_lrs:
    raise ValueError("base_lrs must list at least one learning rate")
  if config.profile not in PROFILES:
    raise ValueError(f"unknown profile {config.profile!r}; known: {PROFILES}")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike,
                       *, log=logging.info, stop_after_groups: int | None = None) -> dict:
  """Runs a whole study; resumable.

  Args:
    config: a study config (see `experiments/configs/`).
    workdir: where the results store, config, figures, checkpoints and TensorBoard
      scalars go. Rerunning with the same workdir resumes.
    log: where progress lines go.
    stop_after_groups: stop after training this many groups (tests use it to simulate a
      crash between groups).

  Returns:
    {'rows': rows written now, 'skipped_groups': n, 'trained_groups': n,
     'total_groups': n, 'store': path}.
  """
  validate_config(config)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  is_main = jax.process_index() == 0
  store = store_lib.ResultsStore(workdir) if is_main else None
  if store is not None:
    store.check_config(fingerprint(config), version=imbjax.__version__)
    (workdir / "study_config.json").write_text(config.to_json(indent=2))
  done = store.done_keys() if store is not None else set()

  data = load_data(config)
  trainer = _trainer(config, data)
  all_cases = cases(config)
  all_groups = groups(config, all_cases)
  pending = np.array([
      not all(r.run_key(config) in done for c in g.cases for r in model_specs(config, c)[1])
      for g in all_groups], np.int32)
  if jax.process_count() > 1:
    # Only process 0 reads the store: every process must train the same groups, or the
    # sharded population programs would wait on each other forever.
    from jax.experimental import multihost_utils
    pending = np.asarray(multihost_utils.broadcast_one_to_all(pending))
  todo = [g for g, p in zip(all_groups, pending) if p]
  n_models = sum(len(model_specs(config, c)[0]) for g in todo for c in g.cases)
  log(f"study: {len(all_groups)} groups, {len(all_groups) - len(todo)} already done, "
      f"{n_models} models to train on {len(jax.devices())} device(s)")

  n_dev = len(jax.devices())
  mesh = population.model_mesh() if n_dev > 1 else None
  data_dev = None
  if config.input != "stream":
    data_dev = population.place(
        population.TrainData(images=data.train.images.astype(np.float32),
                             labels=data.train.labels.astype(np.int32)), mesh,
        replicated=True)
  progress = Progress(n_models, workdir if is_main else None, enabled=is_main)
  written = 0
  trained = 0
  for g in todo:
    if stop_after_groups is not None and trained >= stop_after_groups:
      break
    rows = train_group(config, g, data, trainer, data_dev, progress, workdir, log=log)
    trained += 1
    if store is not None:
      written += store.write_group(rows)
      log(f"group {g.group_id} ({len(g.cases)} cases) stored; " +
          progress.line(0, 0.0))
  if store is not None:
    store.export_csv()
    store.close()
  result = {"rows": written, "skipped_groups": len(all_groups) - len(todo),
            "trained_groups": trained, "total_groups": len(all_groups)}
  if store is not None:
    result["store"] = str(workdir / store_lib.DB_NAME)
  return result
