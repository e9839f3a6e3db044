"""The paper's choices made visible: curves that can show overfitting (Figure 8), the
layers two-phase training fine-tunes, and Table 1's balanced test sets."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from experiments.configs import test as test_config
from imbjax import study
from imbjax.study import driver
from imbjax.study import group as group_lib
from imbjax.study import inputs as inputs_lib


def _config(**kw):
  c = test_config.get_config()
  c.rhos, c.mus, c.repetitions = (10,), (0.5,), 1
  c.methods = ("baseline", "oversampling", "two_phase_oversampling")
  c.iterations, c.chunk_steps = 20, 7
  c.curve_points = 4
  c.curve_train_per_class = 6
  for k, v in kw.items():
    setattr(c, k, v)
  return c


class _Progress:
  images = done = 0

  def scalars(self, _):
    pass

  def line(self, *_):
    return ""


def _phase1(config):
  data = study.load_data(config)
  trainer = driver.make_trainer(config, data)
  (case,) = study.cases(config)
  cases = group_lib.case_data(config, [case], data)
  specs = [s for s in study.model_specs(config, case)[0] if not s.method.is_phase2]
  members = group_lib.build_members(config, specs, cases, data, phase=1)
  inputs = inputs_lib.make_inputs(config, data, None)
  result = group_lib.train_phase(config, trainer, inputs, specs, members, phase=1,
                                 mesh=None, progress=_Progress(), log=print, cases=cases,
                                 train_labels=np.asarray(data.train.labels))
  return data, trainer, cases[case], result


def test_curves_are_eval_mode_accuracy_on_a_balanced_training_sample_and_the_test_split():
  config = _config()
  data, trainer, cd, result = _phase1(config)
  # 4 evenly spaced log points whatever chunk_steps is (7 does not divide 5).
  assert result.curve["steps"] == [5, 10, 15, 20]
  # The sample: up to 6 per class of the case's own subset, every class present.
  real = cd.curve[cd.curve_mask]
  assert set(real) <= set(cd.subset.tolist())
  per_class = np.bincount(data.train.labels[real], minlength=10)
  np.testing.assert_array_equal(per_class, np.minimum(cd.counts, 6))
  # The last point equals a separate evaluation of the final parameters (plain flax).
  module = trainer.module()
  for i in range(2):
    params = jax.tree.map(lambda a: a[i], result.state.params)
    logits = np.asarray(module.apply({"params": params}, data.train.images[real],
                                     train=False))
    labels = data.train.labels[real]
    recall = [np.mean(np.argmax(logits[labels == c], -1) == c) for c in np.unique(labels)]
    assert result.curve["train_acc"][-1][i] == pytest.approx(np.mean(recall), abs=1e-12)
    test_logits = np.asarray(module.apply({"params": params}, data.test.images, train=False))
    test_acc = np.mean(np.argmax(test_logits, -1) == data.test.labels)
    assert result.curve["test_acc"][-1][i] == pytest.approx(test_acc, abs=1e-12)


def test_curve_test_sample_is_class_stratified():
  config = _config(curve_test_examples=100)
  data = study.load_data(config)
  idx = inputs_lib.curve_test_sample(config, data.test)
  counts = np.bincount(data.test.labels[idx], minlength=10)
  full = np.bincount(data.test.labels, minlength=10)
  np.testing.assert_allclose(counts, np.round(full * 100 / len(data.test.labels)), atol=0)
  assert inputs_lib.curve_test_sample(_config(curve_test_examples=0), data.test) is None


@pytest.mark.parametrize("layers, moved", [(None, {"fc2"}), (("fc1", "fc2"), {"fc1", "fc2"})])
def test_two_phase_fine_tunes_the_configured_layers(layers, moved):
  # A few steps in one chunk a phase (one program each): which layers move shows at once.
  config = _config(output_layers=layers, curve_points=0, iterations=6, chunk_steps=6)
  data = study.load_data(config)
  trainer = driver.make_trainer(config, data)
  assert trainer.output_layers == (tuple(layers) if layers else ("fc2",))
  (case,) = study.cases(config)
  cases = group_lib.case_data(config, [case], data)
  specs = study.model_specs(config, case)[0]
  phase1 = [s for s in specs if not s.method.is_phase2]
  phase2 = [s for s in specs if s.method.is_phase2]
  inputs = inputs_lib.make_inputs(config, data, None)
  common = dict(mesh=None, progress=_Progress(), log=print, cases=cases,
                train_labels=np.asarray(data.train.labels))
  r1 = group_lib.train_phase(config, trainer, inputs, phase1,
                             group_lib.build_members(config, phase1, cases, data, phase=1),
                             phase=1, **common)
  src = np.array([phase1.index(s.source) for s in phase2])
  r2 = group_lib.train_phase(config, trainer, inputs, phase2,
                             group_lib.build_members(config, phase2, cases, data, phase=2),
                             phase=2, init=r1, source=src, **common)
  for name in ("conv1", "conv2", "fc1", "fc2"):
    before = np.asarray(r1.state.params[name]["kernel"][src[0]])
    after = np.asarray(r2.state.params[name]["kernel"][0])
    assert (not np.array_equal(before, after)) == (name in moved), name


def test_balanced_test_subset_and_its_refusal():
  config = _config(test_per_class=30)
  data = study.load_data(config)
  np.testing.assert_array_equal(np.bincount(data.test.labels, minlength=10), [30] * 10)
  again = study.load_data(config)
  np.testing.assert_array_equal(data.test.images, again.test.images)  # seeded
  smallest = int(np.bincount(study.load_data(_config()).test.labels).min())
  with pytest.raises(ValueError, match=rf"test_per_class <= {smallest}"):
    study.load_data(_config(test_per_class=smallest + 1))
  assert "test_per_class" in study.fingerprint(config)
  assert "output_layers" in study.fingerprint(_config(output_layers=("fc1", "fc2")))
