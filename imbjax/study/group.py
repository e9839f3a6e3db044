"""One population group: build members, train phase 1 (and phase 2), evaluate, rows."""

from __future__ import annotations

import logging
import pathlib
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from imbjax import engine
from imbjax import losses
from imbjax import methods as methods_lib
from imbjax import metrics
from imbjax.study.data import StudyData, _input_shape
from imbjax.study.grid import (Group, ModelSpec, _hash32, case_counts, case_subset,
                               model_specs)
from imbjax.study.scoring import _softmax, score

# ----------------------------------------------------------------------------------------
# One group.

TAU_NORM_GRID = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0)


def _logits(config, trainer, state, images, size: int) -> np.ndarray:
  """Host logits [size, N, C] of the population's first `size` models (drops padding)."""
  return engine.fetch(engine.predict(
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


def _trainer(config, data: StudyData) -> engine.Trainer:
  return engine.Trainer(
      model=config.model, num_classes=data.train.num_classes,
      batch_size=config.batch_size, total_steps=config.iterations,
      schedule=config.schedule,
      schedule_kwargs=tuple(sorted(dict(config.schedule_kwargs).items())),
      momentum=config.momentum, weight_decay=config.weight_decay,
      conv_impl=config.conv_impl, input_shape=_input_shape(config, data),
      model_block=config.get("model_block"),
      compute_dtype=config.get("compute_dtype", "auto"))


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
    out.append(engine.fetch(engine.predict(
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


def train_group(config, group: Group, data: StudyData, trainer: engine.Trainer,
                data_dev: engine.TrainData, progress: Progress, workdir,
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
  mesh = engine.model_mesh() if n_dev > 1 else None
  streamed = config.input == "stream"
  test_labels = data.test.labels
  test_images = val_images = curve_images = curve_labels = None
  if not streamed:
    test_images = engine.place(data.test.images, mesh, replicated=True)
    if config.curve_test_examples > 0:
      n_curve = min(config.curve_test_examples, len(test_labels))
      curve_images = test_images[:n_curve]
      curve_labels = np.asarray(test_labels[:n_curve])
    val_images = (engine.place(data.val.images, mesh, replicated=True)
                  if data.val is not None else None)

  def member(spec: ModelSpec, phase: int):
    counts, subset = per_case[spec.case]
    return methods_lib.make_member(
        spec.method, subset=subset, labels=labels, num_classes=num_classes,
        key=spec.key(config.seed), base_lr=spec.base_lr, ratio=spec.ratio,
        total_steps=config.iterations, phase=phase)

  def run(spec_list, phase, init_state=None):
    member_list = [member(s, phase) for s in spec_list]
    members = engine.stack_members(member_list)
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
    members, size = engine.pad_population(members, n_dev)
    members_dev = engine.place(members, mesh)
    if init_state is None:
      state = engine.init_population(trainer, members_dev)
    else:
      state = engine.restart(trainer, init_state, members_dev)
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

    state = engine.fit(trainer, state, members_dev, train_input,
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
    diverged = engine.fetch(state.diverged)[:size]
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


