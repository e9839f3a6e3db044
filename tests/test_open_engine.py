"""A researcher's own Flax model and data in a population and in a study.

The model below is not in the library: a small CNN with a Dense head named 'head', no
`conv_impl`/`dtype` fields. Populations of it must equal the same members trained one by
one (two-phase and a post-hoc method included), and the study driver must take it with
in-memory data.
"""

from __future__ import annotations

import json
import pathlib
import sqlite3

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import test as test_config
from imbjax import datasets
from imbjax import engine
from imbjax import methods
from imbjax import study
from imbjax.study import group as group_lib


class SmallCNN(nn.Module):
  """A user's network: conv -> pool -> dense 'hidden' -> dense 'head'."""
  num_classes: int = 4

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(6, (3, 3), name="conv")(x)
    x = nn.max_pool(nn.relu(x), (2, 2), (2, 2))
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(16, name="hidden")(x))
    return nn.Dense(self.num_classes, name="head")(x)


class ConvHead(nn.Module):
  """A fully convolutional classifier (no Dense output)."""
  num_classes: int = 4

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(self.num_classes, (3, 3), name="head")(x)
    return x.mean(axis=(1, 2))


class NoTrainArg(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(4)(x.reshape(x.shape[0], -1))


class WrongOutput(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool = False):
    return nn.Dense(3)(x.reshape(x.shape[0], -1))


def _data(n_per_class=(40, 24, 12, 6), n_test=12, seed=0, shape=(8, 8, 1)):
  """Naturally imbalanced in-memory data whose classes differ in mean brightness."""
  rng = np.random.default_rng(seed)

  def split(counts):
    labels = np.concatenate([np.full(n, c, np.int32) for c, n in enumerate(counts)])
    images = rng.normal(0.0, 0.3, (len(labels),) + shape).astype(np.float32)
    images += labels[:, None, None, None] * 0.4
    return datasets.Dataset(images, labels, num_classes=len(counts),
                            class_names=tuple("abcd"[:len(counts)]))

  return split(n_per_class), split((n_test,) * len(n_per_class))


def _trainer(**kw):
  kw.setdefault("model", SmallCNN(num_classes=4))
  kw.setdefault("output_layers", ("head",))
  return engine.Trainer(num_classes=4, batch_size=8, total_steps=12, schedule="inv",
                        input_shape=(8, 8, 1), **kw)


def _member(name, train, key, phase=1, weight_decay=None):
  subset = np.arange(len(train.labels))
  return methods.make_member(methods.get(name), subset=subset, labels=train.labels,
                             num_classes=4, key=jax.random.key(key), base_lr=0.05,
                             total_steps=12, phase=phase, weight_decay=weight_decay)


def test_user_module_population_equals_one_by_one_two_phase_and_posthoc():
  train, test = _data()
  trainer = _trainer()
  assert trainer.has_batch_stats is False and trainer.output_layers == ("head",)
  names = ["baseline", "oversampling", "undersampling", "focal"]
  phase1 = [_member(n, train, i) for i, n in enumerate(names)]
  data = engine.TrainData(jnp.asarray(train.images), jnp.asarray(train.labels))
  members = engine.stack_members(phase1)
  state = engine.fit(trainer, engine.init_population(trainer, members), members, data,
                     num_steps=12, chunk_steps=6)
  # Two-phase from oversampling (index 1): one call.
  p2 = engine.stack_members([_member("two_phase_oversampling", train, 1, phase=2)])
  tuned = engine.fine_tune(trainer, state, p2, data, num_steps=12, chunk_steps=6,
                           source=[1])
  logits = engine.predict(trainer, state, jnp.asarray(test.images))
  tuned_logits = engine.predict(trainer, tuned, jnp.asarray(test.images))

  for i, m in enumerate(phase1):
    one = engine.stack_members([m])
    s1 = engine.fit(trainer, engine.init_population(trainer, one), one, data,
                    num_steps=12, chunk_steps=6)
    for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(state.params)):
      np.testing.assert_allclose(np.asarray(a[0]), np.asarray(b[i]), rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(np.asarray(engine.predict(trainer, s1, test.images)[0]),
                               np.asarray(logits[i]), rtol=2e-5, atol=2e-5)
    if i == 1:  # the same fine-tuning by hand from the separately trained model
      t1 = engine.fine_tune(trainer, s1, p2, data, num_steps=12, chunk_steps=6)
      np.testing.assert_allclose(np.asarray(engine.predict(trainer, t1, test.images)[0]),
                                 np.asarray(tuned_logits[0]), rtol=2e-5, atol=2e-5)
  # Phase 2 touched only the head.
  for name in ("conv", "hidden"):
    for a, b in zip(jax.tree.leaves(state.params[name]), jax.tree.leaves(tuned.params[name])):
      np.testing.assert_array_equal(np.asarray(a[1]), np.asarray(b[0]))
  assert not np.allclose(np.asarray(state.params["head"]["kernel"][1]),
                         np.asarray(tuned.params["head"]["kernel"][0]))
  # A post-hoc method (thresholding by the prior) on the population's logits.
  counts = np.bincount(train.labels, minlength=4)
  row = study.score(np.asarray(logits[0]), test.labels, counts, 4, posthoc="prior")
  plain = study.score(np.asarray(logits[0]), test.labels, counts, 4)
  assert row["auc"] == plain["auc"] and np.isfinite(row["accuracy"])


def test_bad_models_are_refused_when_the_trainer_is_built():
  with pytest.raises(ValueError, match="train"):
    _trainer(model=NoTrainArg(), output_layers=None)
  with pytest.raises(ValueError, match=r"\[2, 4\].*\(2, 3\)"):
    _trainer(model=WrongOutput(), output_layers=None)
  with pytest.raises(ValueError, match="'nope'.*'conv', 'head', 'hidden'"):
    _trainer(output_layers=("nope",))
  with pytest.raises(ValueError, match="flax.linen.Module"):
    _trainer(model=42)
  # No output layers named: phase-2 members are refused with what to pass.
  trainer = _trainer(output_layers=None)
  train, _ = _data()
  state = engine.init_population(trainer, engine.stack_members([_member("baseline", train, 0)]))
  p2 = engine.stack_members([_member("two_phase_oversampling", train, 1, phase=2)])
  with pytest.raises(ValueError, match="output_layers"):
    engine.restart(trainer, state, p2)


def test_per_model_weight_decay_equals_separate_runs():
  train, _ = _data()
  trainer = _trainer()
  data = engine.TrainData(jnp.asarray(train.images), jnp.asarray(train.labels))
  wds = [0.0, 5e-4, 5e-2]
  members = [_member("baseline", train, 0, weight_decay=wd) for wd in wds]
  stacked = engine.stack_members(members)
  state = engine.fit(trainer, engine.init_population(trainer, stacked), stacked, data,
                     num_steps=12, chunk_steps=12)
  for i, wd in enumerate(wds):
    alone = _trainer(weight_decay=wd)  # the trainer-wide setting, one model
    one = engine.stack_members([_member("baseline", train, 0)])
    s = engine.fit(alone, engine.init_population(alone, one), one, data, num_steps=12,
                   chunk_steps=12)
    for a, b in zip(jax.tree.leaves(s.params), jax.tree.leaves(state.params)):
      np.testing.assert_allclose(np.asarray(a[0]), np.asarray(b[i]), rtol=2e-5, atol=2e-6)
  # Same key, other decay: other parameters.
  k = np.asarray(state.params["head"]["kernel"])
  assert not np.allclose(k[0], k[2])


def _config(**kw):
  c = test_config.get_config()
  c.dataset = "my_cells"
  c.model = "SmallCNN"
  c.output_layers = ("head",)
  c.profile = "original"
  c.methods = ("baseline", "oversampling", "two_phase_oversampling", "thresholding",
               "tau_norm")
  c.iterations = 12
  c.batch_size = 8
  c.chunk_steps = 6
  c.curve_points = 0
  c.max_count = 0
  c.population_size = 8
  c.repetitions = 1
  c.verbose = False
  for k, v in kw.items():
    setattr(c, k, v)
  return c


def test_train_and_evaluate_with_a_user_model_and_in_memory_data(tmp_path):
  train, test = _data()
  config = _config()
  result = study.train_and_evaluate(config, tmp_path, model=SmallCNN(num_classes=4),
                                    data=(train, test), log=lambda *_: None)
  assert result["rows"] == 5
  with sqlite3.connect(tmp_path / "results.sqlite") as db:
    db.row_factory = sqlite3.Row
    rows = [dict(r) for r in db.execute("SELECT * FROM runs")]
  assert {r["method"] for r in rows} == set(config.methods)
  for r in rows:
    assert r["model"] == "SmallCNN" and r["dataset"] == "my_cells"
    # The real imbalance of the data, not rho=1.
    assert r["rho"] == pytest.approx(40 / 6)
    assert json.loads(r["class_counts"]) == [40, 24, 12, 6]
    assert json.loads(r["minority_classes"]) == [2, 3]   # below the mean count (20.5)
    assert r["status"] == "ok" and 0.0 <= r["auc"] <= 1.0
  assert (tmp_path / "results.csv").exists()
  from imbjax import figures
  paths = figures.make_all(tmp_path)
  assert any("per_class" in p.name for p in map(pathlib.Path, paths))


def test_tau_norm_refuses_a_convolutional_head(tmp_path):
  train, test = _data()
  with pytest.raises(ValueError, match="Dense output layer"):
    study.train_and_evaluate(_config(methods=("baseline", "tau_norm")), tmp_path,
                             model=ConvHead(num_classes=4), data=(train, test),
                             log=lambda *_: None)


def test_registered_dataset_and_module_path_model(tmp_path, monkeypatch):
  train, test = _data()
  datasets.register("my_cells_test", lambda split, data_dir: {"train": train,
                                                               "test": test}[split],
                    overwrite=True)
  with pytest.raises(ValueError, match="already registered"):
    datasets.register("my_cells_test", lambda s, d: train)
  monkeypatch.syspath_prepend(str(pathlib.Path(__file__).parent))
  config = _config(dataset="my_cells_test", model="test_open_engine:SmallCNN",
                   methods=("baseline", "oversampling"))
  result = study.train_and_evaluate(config, tmp_path, log=lambda *_: None)
  assert result["rows"] == 2


def _subsets(config, train):
  data = study.StudyData(train, train, None, int(config.max_count))
  return group_lib.case_data(config, study.cases(config), data)


def test_data_seed_and_training_seed_are_independent():
  train, _ = _data((40, 40, 40, 40))
  base = _config(profile="step", rhos=(4,), mus=(0.5,), max_count=32, minority="random")
  a = _subsets(base, train)
  b = _subsets(_config(profile="step", rhos=(4,), mus=(0.5,), max_count=32,
                       minority="random", data_seed=7), train)
  c = _subsets(_config(profile="step", rhos=(4,), mus=(0.5,), max_count=32,
                       minority="random", seed=7, data_seed=0), train)
  (case,) = a
  assert not np.array_equal(a[case].subset, b[case].subset)   # other data seed: other draw
  np.testing.assert_array_equal(a[case].subset, c[case].subset)  # same data seed: same draw
  spec = study.model_specs(base, case)[0][0]
  # The model key (init, shuffles, dropout) follows the training seed only.
  same_init = spec.key(base.seed)
  assert np.array_equal(jax.random.key_data(same_init),
                        jax.random.key_data(spec.key(_config(data_seed=7).seed)))
  assert not np.array_equal(jax.random.key_data(same_init),
                            jax.random.key_data(spec.key(7)))
  trainer = _trainer()
  init = lambda seed: engine.init_population(trainer, engine.stack_members([
      methods.make_member(methods.get("baseline"), subset=a[case].subset,
                          labels=train.labels, num_classes=4, key=spec.key(seed),
                          base_lr=0.01, total_steps=12)])).params
  np.testing.assert_array_equal(init(0)["head"]["kernel"], init(0)["head"]["kernel"])
  assert not np.allclose(init(0)["head"]["kernel"], init(7)["head"]["kernel"])


def test_exported_subset_reproduces_the_rows_class_counts(tmp_path):
  train, test = _data((40, 40, 40, 40))
  config = _config(profile="step", rhos=(4,), mus=(0.5,), max_count=32, minority="random",
                   methods=("baseline", "oversampling"), repetitions=2)
  study.train_and_evaluate(config, tmp_path, model=SmallCNN(num_classes=4),
                           data=(train, test), log=lambda *_: None)
  with sqlite3.connect(tmp_path / "results.sqlite") as db:
    db.row_factory = sqlite3.Row
    rows = [dict(r) for r in db.execute("SELECT * FROM runs")]
  assert len(rows) == 4
  for r in rows:
    r["extra"] = json.loads(r["extra"])
    subset = group_lib.load_subset(tmp_path, r)
    np.testing.assert_array_equal(np.bincount(train.labels[subset], minlength=4),
                                  json.loads(r["class_counts"]))
  keys = {r["extra"]["subset_key"] for r in rows}
  assert len(keys) == 2  # one subset per repetition, shared by its methods
