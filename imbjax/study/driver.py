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

import logging
import os
import pathlib

import jax
import ml_collections
import numpy as np

import imbjax
from imbjax import engine
from imbjax import store as store_lib
from imbjax.study.config import fingerprint, validate_config
from imbjax.study.data import load_data
from imbjax.study.grid import cases, groups, model_specs
from imbjax.study.group import Progress, _trainer, train_group


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
  # Everything that can refuse the config runs before the workdir is touched, so a
  # refused run leaves no config.json behind.
  data = load_data(config)
  trainer = _trainer(config, data)
  all_cases = cases(config)
  all_groups = groups(config, all_cases)

  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  is_main = jax.process_index() == 0
  store = store_lib.ResultsStore(workdir) if is_main else None
  if store is not None:
    store.check_config(fingerprint(config), version=imbjax.__version__)
    (workdir / "study_config.json").write_text(config.to_json(indent=2))
  done = store.done_keys() if store is not None else set()
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
  mesh = engine.model_mesh() if n_dev > 1 else None
  data_dev = None
  if config.input != "stream":
    data_dev = engine.place(
        engine.TrainData(images=data.train.images.astype(np.float32),
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
