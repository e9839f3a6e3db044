"""The study driver: `train_and_evaluate(config, workdir)`.

This module owns the wiring of a study: it expands a config into a grid of imbalance
cases x methods x learning rates x repeats, splits the grid into population *groups*,
trains each group as one population (`imbjax.population`), evaluates every model in one
vmapped pass, scores it (`imbjax.metrics`, `imbjax.thresholding`) and writes the group's
rows to the results store in one transaction (`imbjax.store`).

Resume: every row has a stable `run_key` (a hash of what defines it) and is a function
of it alone: bit for bit the same whatever population, device count or process count
it trained in. A stored row is never recomputed: a group whose rows are all stored is
skipped, and one with some stored (the grid extended by a learning rate or a method,
or regrouped by another `population_size`) trains only the models of its missing rows.
A killed run loses at most the group in flight (plus, for long groups with
``checkpoint_every``, only the steps since its last Orbax checkpoint). Each stored
group's per-model curves are appended to ``WORKDIR/metrics.jsonl``
(`imbjax.metrics_log`).

Memory: before the workdir is touched, the largest population is planned against the
device's memory (`imbjax.engine.memory`); a study that cannot fit is refused, naming
a config value that would.

Randomness: every draw derives from ``config.seed`` by `jax.random.fold_in` with stable
hashes of names (case, method, learning rate, repeat), never from a counter over the
grid, so adding cases to a study leaves existing rows' numbers unchanged.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import logging
import os
import pathlib
import shutil

import jax
import ml_collections
import numpy as np

import imbjax
from imbjax import engine
from imbjax.engine import memory as engine_memory
from imbjax import methods as methods_lib
from imbjax import metrics_log
from imbjax import posthoc as posthoc_lib
from imbjax import store as store_lib
from imbjax.study.config import fingerprint, validate_config
from imbjax.study.data import _input_shape, load_data
from imbjax.study.grid import case_counts, cases, group_specs, groups
from imbjax.study.group import (Progress, build_members, case_data, checkpoint_key,
                                train_group)
from imbjax.study.inputs import make_inputs


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike,
                       *, model=None, data=None, log=logging.info,
                       stop_after_groups: int | None = None) -> dict:
  """Runs a whole study; resumable.

  Args:
    config: a study config (see `experiments/configs/`).
    workdir: where the results store, config, figures, checkpoints, exported subsets and
      TensorBoard scalars go. Rerunning with the same workdir resumes.
    model: optional `flax.linen.Module` whose ``apply(variables, x, train=...,
      rngs=...)`` gives logits [N, num_classes]; its output layers are
      ``config.output_layers`` (top-level parameter names; needed for two-phase
      training, cRT and tau-norm). `config.model` then only names it in the rows. Without
      it, `config.model` is a registered name (`imbjax.models.register`) or
      'package.module:Name' (imported; called with ``num_classes=`` if it takes it).
    data: optional (train, test) pair of `imbjax.datasets.Dataset` in memory, used as
      given instead of loading `config.dataset` (which then only names it in the rows).
    log: where progress lines go.
    stop_after_groups: stop after training this many groups (tests use it to simulate a
      crash between groups).

  Returns:
    {'rows': rows written now, 'skipped_groups': n, 'trained_groups': n,
     'total_groups': n, 'store': path}.
  """
  validate_config(config, model=model)
  # Everything that can refuse the config runs before the workdir is touched, so a
  # refused run leaves no config.json behind.
  data = load_data(config, data)
  trainer = make_trainer(config, data, model)
  all_cases = cases(config)
  check_cases(config, all_cases, data)
  check_posthoc(config, trainer)
  all_groups = groups(config, all_cases)
  plan = check_memory(config, data, trainer, all_groups)
  if plan is not None:
    log(f"memory: {plan.describe()}")

  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  is_main = jax.process_index() == 0
  store = store_lib.ResultsStore(workdir) if is_main else None
  if store is not None:
    store.check_config(fingerprint(config), version=imbjax.__version__)
    (workdir / "study_config.json").write_text(config.to_json(indent=2))
  done = store.done_keys() if store is not None else set()
  if store is not None and done:
    # Lines of groups stored by a run that stopped before writing them.
    metrics_log.sync(workdir, store.rows())
  todo = pending_groups(config, all_groups, done)
  n_models = sum(len(group_specs(config, g)[0]) for g in todo)
  log(f"study: {len(all_groups)} groups, {len(all_groups) - len(todo)} already done, "
      f"{n_models} models to train on {len(jax.devices())} device(s)")

  mesh = engine.model_mesh() if len(jax.devices()) > 1 else None
  inputs = make_inputs(config, data, mesh)
  progress = Progress(n_models, workdir if is_main else None, enabled=is_main)
  written = 0
  trained = 0
  for g in todo:
    if stop_after_groups is not None and trained >= stop_after_groups:
      break
    rows = train_group(config, g, data, trainer, inputs, progress, workdir, log=log)
    trained += 1
    if store is not None:
      written += store.write_group(rows)
      # After the commit: per-model curves, never twice for a stored run key.
      metrics_log.append(workdir, [r for r in rows if r["run_key"] not in done])
      # Committed: the group's checkpoints are never needed again.
      shutil.rmtree(workdir / "checkpoints" / checkpoint_key(config, g), ignore_errors=True)
      log(f"group {g.group_id} ({len(g.cases)} cases) stored; " +
          progress.line(0, 0.0))
  progress.close()
  if store is not None:
    store.export_csv()
    store.close()
  result = {"rows": written, "skipped_groups": len(all_groups) - len(todo),
            "trained_groups": trained, "total_groups": len(all_groups)}
  if store is not None:
    result["store"] = str(workdir / store_lib.DB_NAME)
  return result


def pending_groups(config, all_groups, done: set[str]) -> list:
  """The groups with rows still to store, each narrowed to those rows (`Group.run_keys`).

  A row is stored once and never recomputed: a rerun that extends the grid (another
  learning rate, method or case) or regroups it (another `population_size`) trains only
  the models of the missing rows. With several processes, only process 0 reads the
  store; its answer is broadcast, since every process must train the same populations
  (the sharded programs would otherwise wait on each other forever).
  """
  keys = [[r.run_key(config) for r in group_specs(config, g)[1]] for g in all_groups]
  pending = np.array([k not in done for ks in keys for k in ks], np.int32)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    pending = np.asarray(multihost_utils.broadcast_one_to_all(pending))
  todo, at = [], 0
  for g, ks in zip(all_groups, keys):
    mask = pending[at:at + len(ks)].astype(bool)
    at += len(ks)
    if mask.all():
      todo.append(g)
    elif mask.any():
      todo.append(dataclasses.replace(
          g, run_keys=tuple(k for k, p in zip(ks, mask) if p)))
  return todo


def check_memory(config, data, trainer, todo) -> engine_memory.MemoryPlan | None:
  """Refuses, before training (and before the workdir is touched), a study whose largest
  population in `todo` would not fit in device memory (`imbjax.engine.memory`), naming
  the config fields that would make it fit.

  Planned for device-resident input only (streamed input holds one chunk of batches).
  """
  if not todo or config.input != "device":
    return None
  phase1 = lambda g: [s for s in group_specs(config, g)[0] if not s.method.is_phase2]
  largest = max(todo, key=lambda g: len(phase1(g)))
  specs = phase1(largest)
  members = engine.stack_members(build_members(
      config, specs, case_data(config, largest.cases, data), data, phase=1))
  train = engine.TrainData(
      images=jax.ShapeDtypeStruct(data.train.images.shape, np.float32),
      labels=jax.ShapeDtypeStruct(data.train.labels.shape, np.int32))
  evaluated = max(len(data.test.labels), 0 if data.val is None else len(data.val.labels))
  plan = engine_memory.plan(trainer, members, train, eval_examples=evaluated,
                            eval_batch_size=config.eval_batch_size)
  plan.check()
  return plan


def make_trainer(config, data, model=None) -> engine.Trainer:
  """The study's `engine.Trainer`: for `model` if given, else `config.model`."""
  if model is None and ":" in config.model:
    model = import_model(config.model, data.train.num_classes)
  output_layers = config.get("output_layers")
  return engine.Trainer(
      model=config.model if model is None else model,
      num_classes=data.train.num_classes,
      batch_size=config.batch_size, total_steps=config.iterations,
      schedule=config.schedule,
      schedule_kwargs=tuple(sorted(dict(config.schedule_kwargs).items())),
      momentum=config.momentum, weight_decay=config.weight_decay,
      conv_impl=config.conv_impl, input_shape=_input_shape(config, data),
      model_block=config.get("model_block"),
      compute_dtype=config.get("compute_dtype", "auto"),
      output_layers=None if output_layers is None else tuple(output_layers))


def import_model(path: str, num_classes: int):
  """Builds the module named by 'package.module:Name' (a class or a factory), passing
  ``num_classes=`` when it takes it (as big_vision finds models by module path)."""
  module_name, _, attr = path.partition(":")
  try:
    obj = getattr(importlib.import_module(module_name), attr)
  except (ImportError, AttributeError) as e:
    raise ValueError(f"model {path!r}: cannot import {attr!r} from {module_name!r} "
                     f"({e}); is the package on PYTHONPATH?") from e
  try:
    takes = "num_classes" in inspect.signature(obj).parameters
  except (TypeError, ValueError):
    takes = False
  return obj(num_classes=num_classes) if takes else obj()


def check_cases(config, all_cases, data) -> None:
  """Refuses, before any training, a case that asks a class for more than it holds."""
  available = np.bincount(data.train.labels, minlength=data.train.num_classes)
  for case in all_cases:
    try:
      case_counts(config, case, data.train.num_classes, data.max_count,
                  available=available, class_names=getattr(data.train, "class_names", None))
    except ValueError as e:
      advice = (f"max_count={data.max_count} caps each class before imbalancing; the "
                f"smallest class has {int(available.min())} (max_count <= "
                f"{int(available.min())}, or 0 for the smallest class")
      if config.minority != "short_first":
        advice += ", or minority='short_first' to make the short classes minority"
      raise ValueError(f"{e}. {advice})") from None


def check_posthoc(config, trainer) -> None:
  """Refuses classifier post-hoc methods (tau-norm) for a model without a Dense head."""
  needs = [m for m in config.methods
           if posthoc_lib.get(methods_lib.get(m).posthoc).on == "classifier"]
  if not needs:
    return
  if not trainer.output_layers:
    raise ValueError(f"methods {needs} adjust the classifier, but the model names no "
                     f"output layers: set config.output_layers")
  try:
    posthoc_lib.classifier_kernel_shape(engine.inspect_model(trainer)["param_shapes"],
                                        trainer.output_layers[-1],
                                        trainer.num_classes)
  except ValueError as e:
    raise ValueError(f"methods {needs}: {e}") from None
