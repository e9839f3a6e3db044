"""Phase 2's log points on the output layers alone: `engine.predict(...,
with_head_inputs=True)`, `engine.predict_heads` and `study.inputs.FrozenPrefix`,
against the whole network."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from imbjax import engine
from imbjax.engine import memory as engine_memory
from imbjax.study import inputs as inputs_lib


class Skip(nn.Module):
  """The output layer's result is added to something computed before it: the logits
  depend on the frozen layers through more than the output layer's input."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    h = nn.relu(nn.Dense(16, name="hidden")(x.reshape(x.shape[0], -1)))
    return nn.Dense(4, name="head")(h) + h[:, :4]


class _Projection(nn.Module):
  @nn.compact
  def project(self, x):
    return nn.Dense(4)(x)


class NoHeadCall(nn.Module):
  """Its output layer runs through another method than `__call__`: no head input."""

  def setup(self):
    self.head = _Projection()

  def __call__(self, x, train: bool = False):
    return self.head.project(x.reshape(x.shape[0], -1))


def _population(trainer, n=3, output_only=True):
  labels = np.arange(40) % trainer.num_classes
  members = engine.stack_members([
      engine.make_member(jax.random.key(i), np.arange(40), trainer.num_classes,
                         plan_labels=labels, base_lr=0.01, output_only=output_only)
      for i in range(n)])
  return members, engine.init_population(trainer, members)


def _images(n, shape=(28, 28, 1), seed=0):
  return jnp.asarray(np.random.default_rng(seed).random((n, *shape), np.float32))


def test_output_layers_on_cached_inputs_equal_the_whole_lenet5_bit_for_bit():
  trainer = engine.Trainer(batch_size=8, total_steps=10)
  _, state = _population(trainer)
  x = _images(50)
  want = engine.predict(trainer, state, x, batch_size=20)
  logits, heads = engine.predict(trainer, state, x, batch_size=20, with_head_inputs=True)
  assert heads.shape == (3, 50, 500)  # fc2's input: fc1's 500 ReLU outputs
  np.testing.assert_array_equal(logits, want)
  np.testing.assert_array_equal(engine.predict_heads(trainer, state, heads, batch_size=20),
                                want)
  # Each model on its own examples (the curves' training samples).
  idx = jnp.asarray(np.random.default_rng(1).integers(0, 50, (3, 30)), jnp.int32)
  _, heads = engine.predict(trainer, state, x, indices=idx, batch_size=20,
                            with_head_inputs=True)
  np.testing.assert_array_equal(engine.predict_heads(trainer, state, heads, batch_size=20),
                                engine.predict(trainer, state, x, indices=idx,
                                               batch_size=20))


def test_a_model_that_calls_no_output_layer_is_refused_by_name():
  trainer = engine.Trainer(model=NoHeadCall(), num_classes=4, batch_size=8,
                           total_steps=10, input_shape=(4, 4, 1), output_layers=("head",))
  _, state = _population(trainer, output_only=False)
  with pytest.raises(ValueError, match=r"never called an output layer \['head'\]"):
    engine.predict(trainer, state, _images(6, (4, 4, 1)), batch_size=6,
                   with_head_inputs=True)


class _Inputs:
  """The parts of `DeviceInputs` that `FrozenPrefix` reads, over real predictions."""

  def __init__(self, trainer, images):
    self.config = types.SimpleNamespace(eval_batch_size=16)
    self.images = {"curve": images}
    self.train_images = images
    self.full_calls = 0

  def logits(self, trainer, state, split, size):
    self.full_calls += 1
    return np.asarray(engine.predict(trainer, state, self.images[split],
                                     batch_size=16))[:size]

  def logits_of(self, trainer, state, indices, size):
    self.full_calls += 1
    return np.asarray(engine.predict(trainer, state, self.train_images, indices=indices,
                                     batch_size=16))[:size]


def _frozen(trainer, images):
  """A phase-2 population, its fake inputs over `images`, and its `FrozenPrefix`."""
  members, state = _population(trainer)
  fake = _Inputs(trainer, images)
  return state, fake, inputs_lib.DeviceInputs.frozen_prefix(fake, trainer, members)


def _move_output_layer(state, name):
  params = dict(state.params)
  params[name] = jax.tree.map(lambda a: a * 1.5 + 0.01, params[name])
  return state.replace(params=params)


def test_frozen_prefix_checks_its_first_and_last_points_and_evaluates_heads_between():
  trainer = engine.Trainer(batch_size=8, total_steps=10)
  state, fake, frozen = _frozen(trainer, _images(40))
  idx = jnp.asarray(np.random.default_rng(2).integers(0, 40, (3, 24)), jnp.int32)
  for point in range(4):
    state = _move_output_layer(state, "fc2")  # the output layer trains; fc1 is frozen
    last = point == 3
    for split, indices in (("curve", None), ("curve_train", idx)):
      got = frozen.logits(state, split, 2, indices=indices, last=last)
      want = (fake.logits(trainer, state, "curve", 2) if indices is None
              else fake.logits_of(trainer, state, indices, 2))
      np.testing.assert_array_equal(got, want)
      fake.full_calls -= 1  # the reference call above
  assert not frozen.off
  assert fake.full_calls == 0  # whole-network logits came with the head inputs


def test_frozen_prefix_turns_itself_off_where_the_heads_do_not_give_the_logits():
  trainer = engine.Trainer(model=Skip(), num_classes=4, batch_size=8, total_steps=10,
                           input_shape=(4, 4, 1), output_layers=("head",))
  state, fake, frozen = _frozen(trainer, _images(20, (4, 4, 1)))
  first = frozen.logits(state, "curve", 3, last=False)
  assert frozen.off  # the check at the first point failed
  np.testing.assert_array_equal(first, fake.logits(trainer, state, "curve", 3))
  state = _move_output_layer(state, "head")
  np.testing.assert_array_equal(frozen.logits(state, "curve", 3, last=False),
                                fake.logits(trainer, state, "curve", 3))


def test_frozen_prefix_raises_when_the_frozen_layers_moved_by_the_last_point():
  trainer = engine.Trainer(batch_size=8, total_steps=10)
  state, _, frozen = _frozen(trainer, _images(30))
  frozen.logits(state, "curve", 3, last=False)
  with pytest.raises(RuntimeError, match="other logits on 'curve' at the last log point"):
    frozen.logits(_move_output_layer(state, "fc1"), "curve", 3, last=True)


def test_frozen_prefix_only_for_output_only_phases_without_batch_statistics():
  lenet = engine.Trainer(batch_size=8, total_steps=10)
  members, _ = _population(lenet, output_only=False)
  assert inputs_lib.DeviceInputs.frozen_prefix(None, lenet, members) is None
  resnet = engine.Trainer(model="resnet10", num_classes=4, batch_size=2, total_steps=10,
                          input_shape=(32, 32, 3))
  labels = np.arange(8) % 4
  members = engine.stack_members([engine.make_member(
      jax.random.key(0), np.arange(8), 4, plan_labels=labels, base_lr=0.01,
      output_only=True)])
  assert inputs_lib.DeviceInputs.frozen_prefix(None, resnet, members) is None


class DropoutInHead(nn.Module):
  """Two output layers with dropout between them: the frozen layers stay fixed."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    h = nn.relu(nn.Conv(6, (3, 3), name="conv")(x))
    h = nn.relu(nn.Dense(32, name="fc")(h.reshape(h.shape[0], -1)))
    h = nn.Dropout(0.5, deterministic=not train)(h)
    return nn.Dense(4, name="head")(h)


class DropoutBeforeHead(nn.Module):
  """Dropout before the output layer: what it receives changes every step."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    h = nn.relu(nn.Dense(32, name="hidden")(x.reshape(x.shape[0], -1)))
    h = nn.Dropout(0.5, deterministic=not train)(h)
    return nn.Dense(4, name="head")(h)


def _phase2(trainer, n=3, seed=0):
  """Output-only members on a class-balanced plan, one of them drawn class-wise, and
  states moved away from their init by a few full steps (a phase 1 stand-in)."""
  c = trainer.num_classes
  labels = np.arange(60) % c
  even = np.arange(0, 60, 2)
  plans = [np.arange(60), even[np.argsort(labels[even], kind="stable")], np.arange(45)]
  members = engine.stack_members([
      engine.make_member(jax.random.key(seed + i), plans[i % 3], c,
                         plan_labels=labels[plans[i % 3]], base_lr=0.05,
                         output_only=True, classwise=(i == 1))
      for i in range(n)])
  data = engine.TrainData(_images(60, trainer.input_shape, seed),
                          jnp.asarray(labels, jnp.int32))
  full = members.replace(output_only=np.zeros(n, bool))
  state, _ = engine.train_chunk(trainer, engine.init_population(trainer, full), full,
                                data, 5)
  return members, engine.restart(trainer, state, members), data


@pytest.mark.parametrize("model", ["lenet5", DropoutInHead])
def test_output_only_phase_from_cached_head_inputs_equals_the_full_step_bit_for_bit(
    model, monkeypatch):
  """`fit` trains an output-only phase from `head_inputs` (the frozen layers run once):
  the same parameters, optimiser state and chunk metrics as the full step, bit for bit,
  for LeNet-5 and for a network with dropout after the output layer's input."""
  if isinstance(model, str):
    trainer = engine.Trainer(model=model, batch_size=32, total_steps=40)
  else:
    trainer = engine.Trainer(model=model(), input_shape=(6, 6, 1), num_classes=4,
                             batch_size=8, total_steps=40, output_layers=("fc", "head"))
  assert engine.frozen_prefix_is_fixed(trainer)
  members, start, data = _phase2(trainer)
  runs = {}
  for cache in (False, None):
    calls, metrics = [], []
    real = engine.loop.head_inputs
    monkeypatch.setattr(engine.loop, "head_inputs",
                        lambda *a, real=real, calls=calls: calls.append(1) or real(*a))
    state = engine.fit(trainer, jax.tree.map(jnp.copy, start), members, data,
                       num_steps=24, chunk_steps=12, cache_heads=cache,
                       on_chunk=lambda step, m, s, metrics=metrics: metrics.append(m))
    runs[cache] = (state, metrics, len(calls))
  assert runs[False][2] == 0 and runs[None][2] == 1  # computed once for the phase
  (full, full_m, _), (cached, cached_m, _) = runs[False], runs[None]
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(full)[0],
                          jax.tree.leaves(cached), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b),
                                  err_msg=jax.tree_util.keystr(path))
  for a, b in zip(full_m, cached_m, strict=True):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  # The frozen layers did not move; the output layer did.
  moved = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
                       start.params, cached.params)
  outs = trainer.output_layers
  assert all(v for k in outs for v in jax.tree.leaves(moved[k]))
  assert not any(v for k, sub in moved.items() if k not in outs
                 for v in jax.tree.leaves(sub))


def test_head_cache_only_where_the_frozen_layers_are_fixed():
  """Dropout before the output layers (or batch statistics) changes what they receive
  in every step: `fit` then trains the full way, and asking for the cache is refused
  by name."""
  trainer = engine.Trainer(model=DropoutBeforeHead(), input_shape=(6, 6, 1),
                           num_classes=4, batch_size=8, total_steps=40,
                           output_layers=("head",))
  assert not engine.frozen_prefix_is_fixed(trainer)
  assert not engine.frozen_prefix_is_fixed(engine.Trainer(
      model="resnet10", input_shape=(32, 32, 3), num_classes=4, batch_size=8))
  members, start, data = _phase2(trainer)
  state = engine.fit(trainer, start, members, data, num_steps=4, chunk_steps=4)
  assert np.all(np.isfinite(np.asarray(state.params["head"]["kernel"])))
  with pytest.raises(ValueError, match=r"cache_heads=True.*DropoutBeforeHead|"
                     r"cache_heads=True.*random draw"):
    engine.fit(trainer, state, members, data, num_steps=8, chunk_steps=4,
               cache_heads=True)
  # Members that also train the frozen layers never use it.
  full = members.replace(output_only=np.zeros(3, bool))
  assert not engine.loop.use_head_cache(trainer, full, data, None)
  with pytest.raises(ValueError, match="heads need outputs_only|output layers"):
    engine.train_chunk(trainer, engine.init_population(trainer, full), full, data, 2,
                       heads=jnp.zeros((3, 60, 32)))


def test_default_head_cache_fits_beside_what_the_phase_keeps_on_the_device(monkeypatch):
  """By default the cache takes at most an eighth of a device's budget, and only memory
  that the phase's state, members and data leave free (the study's memory plan checked
  those without the cache)."""
  trainer = engine.Trainer(model=DropoutInHead(), input_shape=(6, 6, 1), num_classes=4,
                           batch_size=8, total_steps=40, output_layers=("fc", "head"))
  members, state, data = _phase2(trainer)
  cache = engine.loop.head_cache_bytes(trainer, members)
  assert cache == 3 * 60 * 216 * 4  # 3 models x the plans' length x fc's 6x6x6 inputs

  def allowed(budget, data):
    monkeypatch.setenv("IMBJAX_MEMORY_BUDGET", str(budget))
    return engine.loop.use_head_cache(trainer, members, data, None, state=state)

  resident = engine_memory.resident_bytes((state, members, data))
  # Exact on one device, where every array is whole.
  assert resident == sum(np.asarray(a).nbytes
                         for a in jax.tree.leaves((state, members, data)))
  assert allowed(8 * cache + resident, data)
  assert not allowed(8 * cache - 8, data)  # more than an eighth
  # Within an eighth of the budget, but not beside a large training split.
  big = data.replace(images=jnp.zeros((8 * cache // 144, 6, 6, 1)))
  resident = engine_memory.resident_bytes((state, members, big))
  assert 8 * cache <= resident + cache - 1
  assert not allowed(resident + cache - 1, big)
  assert allowed(resident + cache, big)
