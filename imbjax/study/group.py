"""One population group as plain functions: members -> a trained phase -> rows.

`train_group` reads straight through: the group's cases get their counts and subsets
(`case_data`), phase 1 trains every phase-1 model as one population (`train_phase`),
phase 2 fine-tunes the output layers of the models that continue them (two-phase
training), and `rows` scores every stored row, post-hoc methods included
(`imbjax.posthoc`). Where the data lives (on the device or streamed) is the `inputs`
object's business (`imbjax.study.inputs`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from imbjax import engine
from imbjax import methods as methods_lib
from imbjax import metrics
from imbjax import posthoc as posthoc_lib
from imbjax import summary_writer
from imbjax.study import walltime
from imbjax.study.config import fingerprint
from imbjax.study.data import StudyData
from imbjax.study.grid import (Case, Group, RowSpec, _hash32, case_counts,
                               case_subset, data_seed, group_specs, subset_key)
from imbjax.study.scoring import _softmax, score

TAU_NORM_GRID = posthoc_lib.TAU_NORM_GRID


@dataclasses.dataclass(frozen=True)
class CaseData:
  """A case's training subset: per-class counts and indices into the training split."""
  counts: np.ndarray
  subset: np.ndarray
  key: str   # `grid.subset_key`: names the subset in rows and in subsets/
  curve: np.ndarray | None = None       # `curve_sample`: indices [k * C] ...
  curve_mask: np.ndarray | None = None  # ... and which of them are real (not padding)


def curve_sample(config, case: Case, subset: np.ndarray, labels: np.ndarray,
                 num_classes: int) -> tuple[np.ndarray | None, np.ndarray | None]:
  """A fixed, class-balanced sample of a case's training subset for the curves.

  Up to ``config.curve_train_per_class`` examples of each class (every example of a
  class that has fewer), drawn once with the data seed, padded to k * C entries with a
  mask. The models are scored on it in eval mode (no dropout) at each log point, so the
  training curve is the subset's accuracy, not the resampled, dropout-on minibatches.

  Returns:
    (indices into the training split [k * C], mask [k * C]), or (None, None) when off.
  """
  k = int(config.get("curve_train_per_class") or 0)
  if k <= 0 or not config.get("curve_points"):
    return None, None
  rng = np.random.default_rng([data_seed(config), _hash32("curve_train", case.name)])
  picked = []
  for c in range(num_classes):
    members = subset[labels[subset] == c]
    picked.append(rng.permutation(members)[:k])
  real = np.concatenate(picked).astype(np.int64)
  idx = np.zeros(k * num_classes, np.int64)
  mask = np.zeros(k * num_classes, bool)
  idx[:real.size], mask[:real.size] = real, True
  idx[real.size:] = real[0]
  return idx, mask


def balanced_accuracy(logits: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> float:
  """Mean per-class recall over the real entries of one model's curve sample."""
  preds = np.argmax(logits, -1)
  recalls = [np.mean(preds[mask & (labels == c)] == c)
             for c in np.unique(labels[mask])]
  return float(np.mean(recalls))


def case_data(config, cases, data: StudyData) -> dict[Case, CaseData]:
  """Counts and subsets of `cases`, each class checked against what the split holds."""
  labels = data.train.labels
  num_classes = data.train.num_classes
  available = np.bincount(labels, minlength=num_classes)
  out = {}
  for case in cases:
    counts = case_counts(config, case, num_classes, data.max_count, available=available,
                         class_names=getattr(data.train, "class_names", None))
    subset = case_subset(config, case, labels, counts)
    if counts is None:  # the original training set, as it comes
      counts = np.bincount(labels[subset], minlength=num_classes)
    curve, mask = curve_sample(config, case, subset, labels, num_classes)
    out[case] = CaseData(np.asarray(counts), subset, subset_key(config, case), curve, mask)
  return out


def build_members(config, specs, cases: dict[Case, CaseData], data: StudyData,
                  phase: int) -> list[engine.Member]:
  """The engine's per-model recipes of `specs` (`methods.make_member`)."""
  return [methods_lib.make_member(
      s.method, subset=cases[s.case].subset, labels=data.train.labels,
      num_classes=data.train.num_classes, key=s.key(config.seed), base_lr=s.base_lr,
      ratio=s.ratio, total_steps=config.iterations, phase=phase,
      weight_decay=config.weight_decay if s.weight_decay is None else s.weight_decay)
      for s in specs]


def stream_seeds(config, specs, phase: int) -> list[int]:
  """Per-model seeds of the host streams (epoch shuffles of streamed input)."""
  return [_hash32(s.case.name, s.method.name, s.base_lr, s.lr_repeat, s.ratio, phase,
                  config.seed) for s in specs]


def checkpoint_key(config, group: Group) -> str:
  """Names a group's checkpoints by everything that determines its models: the study's
  fingerprint and the run keys of its rows. A changed study never finds them."""
  keys = sorted(r.run_key(config) for r in group_specs(config, group)[1])
  text = json.dumps([fingerprint(config), keys], sort_keys=True, default=str)
  return hashlib.sha1(text.encode()).hexdigest()[:16]


@dataclasses.dataclass
class PhaseResult:
  """A trained phase: its state and, per model (rows of the arrays), what rows need."""
  state: engine.TrainState
  test: np.ndarray               # [P, N, C] test logits
  val: np.ndarray | None         # [P, Nv, C] validation logits
  diverged: np.ndarray           # [P] bool
  curve: dict                    # 'steps', and per log point lists over models


def log_every(config) -> int:
  """Steps between log points: ``config.curve_points`` evenly spaced points (>= 1)."""
  points = int(config.get("curve_points") or 0)
  if points <= 0:
    return config.iterations
  return max(1, -(-config.iterations // points))


def train_phase(config, trainer, inputs, specs, members, *, phase: int, mesh, progress,
                log, cases: dict[Case, CaseData], train_labels: np.ndarray,
                checkpoint_dir=None, init: PhaseResult | None = None,
                source=None) -> PhaseResult:
  """Trains `members` (phase 1 from scratch, phase 2 from `init`'s models at `source`).

  At each log point (`log_every`) it records, per model: `train_acc`, the mean per-class
  accuracy in eval mode on its case's fixed class-balanced training sample
  (`curve_sample`); `test_acc`, the accuracy on the test split (or on its stratified
  sample of ``curve_test_examples``); `batch_acc` and `loss`, the means over the last
  chunk's training minibatches (resampled, dropout on).
  """
  n_dev = len(jax.devices())
  size = len(members)
  pad = (-size) % n_dev
  seeds = stream_seeds(config, specs, phase)
  stacked, _ = engine.pad_population(engine.stack_members(members), n_dev)
  placed = engine.place(stacked, mesh)
  train_data = inputs.train_data(members + [members[-1]] * pad, seeds + [seeds[-1]] * pad)
  every = log_every(config)
  # Phase 2 (only the output layers train): log points evaluate the output layers alone.
  frozen = None if init is None else inputs.frozen_prefix(trainer, placed)
  curve_idx = None
  if cases[specs[0].case].curve is not None:
    curve_idx = np.stack([cases[s.case].curve for s in specs + [specs[-1]] * pad])
    curve_mask = np.stack([cases[s.case].curve_mask for s in specs])
    curve_labels = train_labels[curve_idx[:size]]
    curve_idx = engine.place(curve_idx.astype(np.int32), mesh)
  # step -> per-model values, kept beside the checkpoint: a phase resumed from step S has
  # the points before S (the row must not depend on whether its group was killed), and
  # points after S are recomputed, identically.
  points = {}
  curve_file = checkpoint_dir and pathlib.Path(f"{checkpoint_dir}.curve.json")
  if curve_file and curve_file.exists():
    points = {int(k): v for k, v in json.loads(curve_file.read_text()).items()}
  last = [0]
  final_test = []

  def on_chunk(step_done, m, state):
    progress.images += trainer.batch_size * size * (step_done - last[0])
    last[0] = step_done
    progress.scalars({"loss_mean": float(np.nanmean(m["loss"][:size])),
                      "train_accuracy_mean": float(np.nanmean(m["accuracy"][:size]))})
    if config.verbose:
      log(progress.line(size, step_done / config.iterations))
    if not config.get("curve_points") or (step_done % every and
                                          step_done != config.iterations):
      return
    point = {"batch_acc": np.asarray(m["accuracy"])[:size].tolist(),
             "loss": np.asarray(m["loss"])[:size].tolist()}
    final = step_done == config.iterations
    logits = (inputs.logits(trainer, state, "curve", size) if frozen is None else
              frozen.logits(state, "curve", size, last=final))
    if final and inputs.same_examples("curve", "test"):
      final_test.append(logits)  # the row's test logits: not evaluated twice
    if logits is not None:  # test accuracy at log points (paper Figure 8)
      point["test_acc"] = (np.argmax(logits, -1) ==
                           inputs.labels["curve"][None]).mean(-1).tolist()
    if curve_idx is not None:
      train_logits = (
          inputs.logits_of(trainer, state, curve_idx, size) if frozen is None else
          frozen.logits(state, "curve_train", size, indices=curve_idx, last=final))
      if train_logits is not None:
        point["train_acc"] = [balanced_accuracy(train_logits[i], curve_labels[i],
                                                curve_mask[i]) for i in range(size)]
    points[step_done] = point
    if curve_file and jax.process_index() == 0:
      curve_file.parent.mkdir(parents=True, exist_ok=True)
      tmp = curve_file.with_suffix(".tmp")
      tmp.write_text(json.dumps(points))
      tmp.replace(curve_file)

  fit_kwargs = dict(num_steps=config.iterations, chunk_steps=config.chunk_steps,
                    checkpoint_dir=checkpoint_dir, log_every=every,
                    checkpoint_every=config.checkpoint_every, on_chunk=on_chunk)
  if init is None:
    state = engine.fit(trainer, engine.init_population(trainer, placed), placed,
                       train_data, **fit_kwargs)
  else:
    source = np.concatenate([source, np.repeat(source[-1:], pad)])
    state = engine.fine_tune(trainer, init.state, placed, train_data, source=source,
                             **fit_kwargs)
  progress.done += size
  steps = sorted(points)
  curve = {"steps": steps}
  for name in ("train_acc", "test_acc", "batch_acc", "loss"):
    if steps and all(name in points[t] for t in steps):
      curve[name] = [points[t][name] for t in steps]
  test = final_test[-1] if final_test else inputs.logits(trainer, state, "test", size)
  return PhaseResult(state, test,
                     inputs.logits(trainer, state, "val", size),
                     engine.fetch(state.diverged)[:size], curve)


def classifier_logits(config, trainer, inputs, result: PhaseResult, entry, size):
  """{tau: (test, val)} logits of `result`'s models with the classifier adjusted."""
  layer = trainer.output_layers[-1]
  out = {}
  for tau in entry.taus:
    state = result.state.replace(params=posthoc_lib.adjust_classifier(
        result.state.params, layer, entry, tau))
    out[tau] = (inputs.logits(trainer, state, "test", size),
                inputs.logits(trainer, state, "val", size))
  return out


def natural_imbalance(counts: np.ndarray) -> dict:
  """How imbalanced a class-count vector is, for rows of the 'original' profile.

  rho is the largest count over the smallest; a class is minority when it has fewer
  examples than the mean count (the stated rule for natural data, where no class was
  made minority by construction).
  """
  counts = np.asarray(counts, np.float64)
  minority = np.flatnonzero(counts < counts.mean())
  return {"rho": float(counts.max() / counts.min()), "minority": minority,
          "mu": float(len(minority) / len(counts))}


def rows(config, group: Group, row_specs: list[RowSpec], outputs: dict, classifier: dict,
         cases: dict[Case, CaseData], data: StudyData, inputs, wall: float) -> list[dict]:
  """The store rows of a trained group, one per row spec (in their order).

  `wall` fills ``wall_time_s``; `train_group` then sets it per model (`walltime.charge`).
  """
  num_classes = data.train.num_classes
  val_labels = inputs.labels.get("val")
  out_rows = []
  for r in row_specs:
    result, i = outputs[r.model]
    diverged = bool(result.diverged[i])
    if r.model.method.is_phase2:
      diverged |= bool(outputs[r.model.source][0].diverged[outputs[r.model.source][1]])
    case = r.model.case
    cd = cases[case]
    entry = posthoc_lib.get(r.method.posthoc)
    val = None if result.val is None else (result.val[i], val_labels)
    scored = result.test[i]
    if entry.on == "classifier":
      if r.model.method.is_phase2:
        raise ValueError(f"{r.method.name}: classifier post-hoc methods evaluate phase-1 "
                         f"models, not {r.model.method.name}")
      scored = {t: (lt[i], None if lv is None else lv[i])
                for t, (lt, lv) in classifier[r.method.posthoc].items()}
    row = score(scored, inputs.labels["test"], cd.counts, num_classes,
                posthoc=r.method.posthoc, val=val)
    if val is not None and not row["extra"].get("non_finite_outputs"):
      row["val_auc"] = float(metrics.multiclass_roc_auc(_softmax(val[0]),
                                                        jnp.asarray(val_labels)))
    diverged = diverged or bool(row["extra"].get("non_finite_outputs"))
    curve = result.curve
    row["extra"].update({"curve_steps": curve["steps"], "subset_key": cd.key,
                         "data_seed": data_seed(config)})
    for name in ("train_acc", "test_acc", "batch_acc", "loss"):
      if name in curve:
        row["extra"][name] = [c[i] for c in curve[name]]
    rho, mu = case.rho, case.mu
    num_minority = None if mu is None else int(round(mu * num_classes))
    minority = [int(c) for c in np.flatnonzero(cd.counts < cd.counts.max())]
    if case.profile == "original":
      natural = natural_imbalance(cd.counts)
      rho, mu = natural["rho"], natural["mu"]
      minority = [int(c) for c in natural["minority"]]
      num_minority = len(minority)
      row["extra"]["minority_rule"] = "count < mean count"
    row.update(
        run_key=r.run_key(config), group_id=group.group_id, dataset=config.dataset,
        model=config.model, profile=case.profile, rho=rho, mu=mu,
        num_minority=num_minority, minority_classes=minority,
        class_counts=[int(c) for c in cd.counts], repetition=case.repetition,
        seed=config.seed, method=r.method.name, resample_ratio=r.model.ratio,
        base_lr=r.model.base_lr, lr_repeat=r.model.lr_repeat,
        iterations=config.iterations, batch_size=config.batch_size,
        weight_decay=(config.weight_decay if r.model.weight_decay is None
                      else r.model.weight_decay),
        data_seed=data_seed(config),
        status="diverged" if diverged else "ok", wall_time_s=wall)
    out_rows.append(row)
  return out_rows


def train_group(config, group: Group, data: StudyData, trainer: engine.Trainer,
                inputs, progress: Progress, workdir, log=logging.info) -> list[dict]:
  """Trains and evaluates one group; returns its rows (not yet written)."""
  t0 = time.time()
  mesh = engine.model_mesh() if len(jax.devices()) > 1 else None
  cases = case_data(config, group.cases, data)
  if jax.process_index() == 0:  # one writer: the processes may share the workdir
    export_subsets(workdir, group, cases)
  specs, row_specs = group_specs(config, group)
  phase1 = [s for s in specs if not s.method.is_phase2]
  phase2 = [s for s in specs if s.method.is_phase2]
  ckpt = None
  if config.checkpoint_every > 0:
    ckpt = pathlib.Path(workdir).resolve() / "checkpoints" / checkpoint_key(config, group)
  common = dict(mesh=mesh, progress=progress, log=log, cases=cases,
                train_labels=np.asarray(data.train.labels))
  result1 = train_phase(config, trainer, inputs, phase1,
                        build_members(config, phase1, cases, data, phase=1), phase=1,
                        checkpoint_dir=ckpt and str(ckpt / "phase1"), **common)
  outputs = {s: (result1, i) for i, s in enumerate(phase1)}
  classifier = {}  # post-hoc name -> {tau: (test, val)} of every phase-1 model
  for name in dict.fromkeys(r.method.posthoc for r in row_specs):
    entry = posthoc_lib.get(name)
    if entry.on == "classifier":
      classifier[name] = classifier_logits(config, trainer, inputs, result1, entry,
                                           len(phase1))
  t2 = 0.0
  if phase2:
    t_phase2 = time.time()
    source = np.array([phase1.index(s.source) for s in phase2])
    result2 = train_phase(config, trainer, inputs, phase2,
                          build_members(config, phase2, cases, data, phase=2), phase=2,
                          checkpoint_dir=ckpt and str(ckpt / "phase2"), init=result1,
                          source=source, **common)
    outputs.update({s: (result2, i) for i, s in enumerate(phase2)})
    t2 = time.time() - t_phase2
  out = rows(config, group, row_specs, outputs, classifier, cases, data, inputs,
             wall=float("nan"))
  # wall_time_s: the amortised wall time of the row's model (`walltime` says how).
  walltime.charge(out, row_specs, phase1, phase2, (time.time() - t0 - t2, t2))
  return out


def export_subsets(workdir, group: Group, cases: dict[Case, CaseData]) -> pathlib.Path:
  """Writes the group's training subsets to ``WORKDIR/subsets/<group_id>.npz``.

  One compressed int array per case, named by its `subset_key` (every row records its
  key in ``extra['subset_key']``): the indices into the study's training split (after
  the validation split is held out) of exactly the examples its models were drawn from.
  """
  out = pathlib.Path(workdir) / "subsets"
  out.mkdir(parents=True, exist_ok=True)
  path = out / f"{group.group_id}.npz"
  tmp = out / f".{group.group_id}.tmp.npz"
  np.savez_compressed(tmp, **{cd.key: np.asarray(cd.subset, np.int64)
                              for cd in cases.values()})
  tmp.replace(path)
  return path


def load_subset(workdir, row) -> np.ndarray:
  """The training-split indices a stored row's model was drawn from (`export_subsets`).

  Raises:
    FileNotFoundError: the workdir has no exported subset for this row.
  """
  key = row["extra"]["subset_key"]
  for path in sorted((pathlib.Path(workdir) / "subsets").glob("*.npz")):
    with np.load(path) as f:
      if key in f.files:
        return f[key]
  raise FileNotFoundError(f"no subset {key!r} under {pathlib.Path(workdir) / 'subsets'}")


class Progress:
  """Prints done/total models, images per second and an ETA; writes TensorBoard scalars
  (`imbjax.summary_writer`, a CLU-style metric writer that needs no TensorFlow)."""

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
    if self._writer is None:
      self._writer = summary_writer.SummaryWriter(self._workdir / "tensorboard")
    self._writer.write_scalars(self._step, values)
    self._writer.flush()

  def close(self):
    if self._writer is not None:
      self._writer.close()

  def line(self, models_in_flight: int, steps_frac: float) -> str:
    elapsed = time.time() - self.start
    rate = self.images / max(elapsed, 1e-9)
    done = self.done + models_in_flight * steps_frac
    eta = elapsed / max(done, 1e-9) * (self.total - done) if done else float("nan")
    return (f"[{done:7.1f}/{self.total} models] {rate:,.0f} images/s, "
            f"elapsed {elapsed:,.0f}s, ETA {eta:,.0f}s")


