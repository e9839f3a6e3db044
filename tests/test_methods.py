"""Methods as data: the registry, the arrays a method becomes, and mixed populations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imbjax import imbalance
from imbjax import methods
from imbjax import engine

C = 10
STEPS = 8


@pytest.fixture(scope="module")
def problem():
  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(C), 30).astype(np.int32)
  images = rng.random((labels.size, 28, 28, 1), dtype=np.float32)
  counts = imbalance.step(C, 30, rho=10, mu=0.5, minority="lowest")
  subset = imbalance.subsample(labels, counts, jax.random.key(0))
  return labels, engine.TrainData(jnp.asarray(images), jnp.asarray(labels)), subset, counts


def test_registry_refuses_unknown_names_listing_known():
  with pytest.raises(ValueError, match="baseline"):
    methods.get("smote")
  assert set(methods.names()) >= {
      "baseline", "oversampling", "undersampling", "two_phase_oversampling",
      "two_phase_undersampling", "thresholding", "oversampling_thresholding",
      "undersampling_thresholding", "focal", "ldam_drw", "logit_adjusted",
      "balanced_softmax", "class_balanced_sampling", "crt", "tau_norm"}


def test_member_arrays_follow_the_paper(problem):
  labels, _, subset, counts = problem
  key = jax.random.key(1)
  over = methods.make_member(methods.get("oversampling"), subset=subset, labels=labels,
                             num_classes=C, key=key, base_lr=0.01, total_steps=STEPS)
  plan = np.asarray(over.plan)[:int(over.plan_len)]
  np.testing.assert_array_equal(np.bincount(labels[plan], minlength=C),
                                np.full(C, counts.max()))
  assert set(subset) <= set(plan)  # every original example survives oversampling
  under = methods.make_member(methods.get("undersampling"), subset=subset, labels=labels,
                              num_classes=C, key=key, base_lr=0.01, total_steps=STEPS)
  plan = np.asarray(under.plan)[:int(under.plan_len)]
  np.testing.assert_array_equal(np.bincount(labels[plan], minlength=C),
                                np.full(C, counts.min()))
  two = methods.make_member(methods.get("two_phase_oversampling"), subset=subset,
                            labels=labels, num_classes=C, key=key, base_lr=0.01,
                            total_steps=STEPS, phase=2)
  assert bool(two.output_only) and float(two.base_lr) == pytest.approx(0.001)
  np.testing.assert_array_equal(np.sort(np.asarray(two.plan)[:int(two.plan_len)]),
                                np.sort(subset))
  partial = methods.make_member(methods.get("oversampling"), subset=subset, labels=labels,
                                num_classes=C, key=key, base_lr=0.01, ratio=2.0,
                                total_steps=STEPS)
  plan = np.asarray(partial.plan)[:int(partial.plan_len)]
  assert np.bincount(labels[plan], minlength=C).min() == counts.max() // 2
  with pytest.raises(ValueError, match="thresholding"):
    methods.make_member(methods.get("thresholding"), subset=subset, labels=labels,
                        num_classes=C, key=key, base_lr=0.01, total_steps=STEPS)


MIXED = ("baseline", "oversampling", "undersampling", "weighted_ce", "effective_number",
         "focal", "ldam_drw", "logit_adjusted", "balanced_softmax",
         "class_balanced_sampling", "progressive_sampling")


# Population vs one model at a time sums some products in another order; Winograd's
# transforms (entries up to 3^7) amplify that ~30x (measured: 3.6e-5 absolute on
# parameters of ~0.01-0.04 after the chunk), so its bound is looser. Differences of
# ~3e-6 in conv2's output can also flip a near-tie of a 2x2 max-pool, which moves the
# gradient to another pixel: measured 2.5e-4 on one conv1 bias of 0.017 (2026-11-29,
# after layout changes reordered some sums). A wrong member or method is off by the
# parameters' own scale.
@pytest.mark.parametrize("impl,tol", [("banded", dict(rtol=2e-5, atol=2e-6)),
                                      ("winograd", dict(rtol=1e-3, atol=5e-4))])
def test_population_of_mixed_methods_equals_separate_runs(problem, impl, tol):
  labels, data, subset, _ = problem
  trainer = engine.Trainer(batch_size=8, total_steps=STEPS, conv_impl=impl)
  members = [methods.make_member(methods.get(name), subset=subset, labels=labels,
                                 num_classes=C, key=jax.random.key(i), base_lr=0.01,
                                 total_steps=STEPS)
             for i, name in enumerate(MIXED)]
  stacked = engine.stack_members(members)
  state = engine.init_population(trainer, stacked)
  state, _ = engine.train_chunk(trainer, state, stacked, data, STEPS)
  init = jax.jit(engine.init_state, static_argnums=0)
  step = jax.jit(engine.train_step, static_argnums=0)
  for i, name in enumerate(MIXED):
    m = jax.tree.map(lambda x: x[i], stacked)  # same padding as in the population
    s = init(trainer, m)
    for _ in range(STEPS):
      s, _ = step(trainer, s, m, data)
    for a, b in zip(jax.tree.leaves(jax.tree.map(lambda x: x[i], state.params)),
                    jax.tree.leaves(s.params)):
      np.testing.assert_allclose(a, b, **tol, err_msg=name)
  # The methods really differ: no two members end with the same parameters.
  finals = [np.asarray(jax.tree.leaves(state.params)[-1][i]) for i in range(len(MIXED))]
  for i in range(len(MIXED)):
    for j in range(i):
      assert not np.allclose(finals[i], finals[j]), (MIXED[i], MIXED[j])
