"""Optimisation as in the paper: Caffe's SGD with momentum and weight decay, its schedules.

This module owns the optimiser and the learning-rate policies of Buda et al. (2018):

* MNIST / LeNet-5: Caffe ``inv`` policy, ``lr_t = base_lr * (1 + gamma t)^(-power)``
  with gamma 1e-4, power 0.75 (Section 3.3.1);
* CIFAR-10 / All-CNN: ``step`` policy, x0.1 after 40k, 50k and 60k iterations;
* ImageNet / ResNet-10: linear decay to 0 at the last iteration (Caffe ``poly``, power 1).

Caffe's SGD is not optax's ``sgd``: Caffe keeps the learning rate *inside* the momentum
history, ``v = m v + lr_t (g + wd w); w -= v``, while ``optax.sgd`` computes
``v = m v + g; w -= lr_t v``. The two agree for a constant learning rate and differ once the
rate decays, so `caffe_sgd` chains optax transformations in Caffe's order.

The base learning rate is a *hyperparameter held in the optimiser state*
(`optax.inject_hyperparams`), so when the state is stacked along a model axis each model
of a population carries its own base rate (the paper's CIFAR-10 learning-rate search) and
one compiled program serves them all.

Example::

    tx = caffe_sgd(base_lr=0.01, schedule=schedule('inv'), weight_decay=5e-4)
    state = tx.init(params)
    updates, state = tx.update(grads, state, params)
"""

from __future__ import annotations

import inspect
from typing import Callable

import jax.numpy as jnp
import optax

Schedule = Callable[[jnp.ndarray], jnp.ndarray]
"""A learning-rate multiplier: iteration (int array) -> factor applied to the base rate."""


def inv(gamma: float = 1e-4, power: float = 0.75) -> Schedule:
  """Caffe ``inv`` policy multiplier ``(1 + gamma t)^(-power)`` (paper's MNIST schedule)."""
  return lambda t: (1.0 + gamma * jnp.asarray(t, jnp.float32)) ** (-power)


def step(boundaries=(40_000, 50_000, 60_000), factor: float = 0.1) -> Schedule:
  """Caffe ``multistep`` multiplier: ``factor**k`` after the k-th boundary (CIFAR-10)."""
  bounds = jnp.asarray(boundaries, jnp.int32)

  def fn(t):
    k = jnp.sum(jnp.asarray(t, jnp.int32) >= bounds)
    return jnp.asarray(factor, jnp.float32) ** k

  return fn


def linear(total_steps: int) -> Schedule:
  """Linear decay from 1 to 0 at ``total_steps`` (Caffe ``poly`` power 1; ImageNet)."""
  if total_steps <= 0:
    raise ValueError(f"linear schedule needs total_steps > 0, got {total_steps!r}")
  return lambda t: jnp.maximum(0.0, 1.0 - jnp.asarray(t, jnp.float32) / total_steps)


def constant() -> Schedule:
  """Multiplier 1 at every step."""
  return lambda t: jnp.ones((), jnp.float32)


_SCHEDULES = {"inv": inv, "step": step, "linear": linear, "constant": constant}


def schedule(name: str, **kwargs) -> Schedule:
  """Looks up a schedule by name ('inv', 'step', 'linear', 'constant').

  Raises:
    ValueError: for an unknown name (the message lists the known ones).
  """
  check_schedule(name, kwargs)
  return _SCHEDULES[name](**kwargs)


def schedule_names() -> tuple[str, ...]:
  """The registered schedule names."""
  return tuple(sorted(_SCHEDULES))


def check_schedule(name: str, kwargs) -> None:
  """Refuses an unknown schedule or arguments it does not take, building nothing.

  Args:
    name: a schedule name (see `schedule_names`).
    kwargs: the keyword arguments `schedule` would pass it.

  Raises:
    ValueError: naming the schedule and the arguments it accepts.
  """
  if name not in _SCHEDULES:
    raise ValueError(f"unknown schedule {name!r}; known: {sorted(_SCHEDULES)}")
  params = inspect.signature(_SCHEDULES[name]).parameters
  try:
    inspect.signature(_SCHEDULES[name]).bind(**dict(kwargs))
  except TypeError as e:
    raise ValueError(f"schedule {name!r} takes arguments {list(params)}, got "
                     f"{sorted(dict(kwargs))}: {e}") from None


def _caffe_sgd(base_lr, momentum, weight_decay, *, multiplier: Schedule):
  return optax.chain(
      # Caffe adds wd * w to the gradient of every parameter (decay_mult 1).
      optax.add_decayed_weights(weight_decay),
      # lr inside the history, as in Caffe's SGDSolver::ComputeUpdateValue.
      optax.scale_by_schedule(lambda t: -base_lr * multiplier(t)),
      optax.trace(decay=momentum, nesterov=False),
  )


def caffe_sgd(base_lr, schedule: Schedule, *, momentum: float = 0.9,
              weight_decay: float = 5e-4) -> optax.GradientTransformation:
  """Caffe's SGD: ``v = m v + lr_t (g + wd w)``, ``w <- w - v``.

  Args:
    base_lr: base learning rate (float, or an array: it is stored in the optimiser state,
      so a state stacked over models may carry one rate per model).
    schedule: multiplier of the base rate as a function of the iteration, e.g. `inv()`.
    momentum: momentum coefficient (0.9 throughout the paper).
    weight_decay: L2 coefficient added to the gradient (paper: 5e-4 MNIST, 1e-3 CIFAR-10,
      1e-4 ImageNet).

  Returns:
    An optax transformation whose state holds ``hyperparams['base_lr']``.
  """
  return optax.inject_hyperparams(_caffe_sgd, static_args=("multiplier",))(
      base_lr=base_lr, momentum=momentum, weight_decay=weight_decay, multiplier=schedule)


def current_lr(opt_state, schedule: Schedule):
  """The learning rate in effect at the state's iteration (for logging)."""
  hp = opt_state.hyperparams
  return hp["base_lr"] * schedule(opt_state.count)
