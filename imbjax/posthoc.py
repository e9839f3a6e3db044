"""Post-hoc methods: decisions adjusted after training, as a name -> `PostHoc` table.

A post-hoc method trains nothing: it changes how a trained model's outputs become a
decision. Each entry says what it acts on and, where it has a strength tau, the grid that
tau is chosen from (on the validation split when the study has one, else its default):

| name           | acts on      | what it does                                          |
|----------------|--------------|-------------------------------------------------------|
| 'none'         | -            | argmax of the softmax                                 |
| 'prior'        | probabilities| the paper's thresholding: argmax of p(c|x) / p(c)     |
| 'logit_adjust' | logits       | logits - tau log p(c) (Menon et al. 2021)             |
| 'tau_norm'     | classifier   | class weight vectors w_c / ||w_c||^tau (Kang 2020)    |

The study's scoring (`imbjax.study.scoring.score`) reads this table instead of branching
on method names; `register` adds an entry.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from imbjax import losses
from imbjax import thresholding

ON = ("none", "probs", "logits", "classifier")


@dataclasses.dataclass(frozen=True)
class PostHoc:
  """One post-hoc method.

  Attributes:
    name: the name methods refer to (`imbjax.methods.Method.posthoc`).
    on: 'none' (outputs as they are), 'probs' (``fn(probs, prior) -> decision scores``),
      'logits' (``fn(logits, prior, tau) -> logits``) or 'classifier'
      (``fn(kernel, tau) -> kernel`` on the last output layer's Dense kernel [F, C]).
    fn: the adjustment, as `on` says.
    taus: the grid tau is chosen from; empty for methods without a strength.
    default_tau: tau without a validation split.
    select: 'accuracy' (the validation accuracy of each tau, ties to the first) or
      'select_tau' (`imbjax.losses.select_tau`, vectorised over the grid).
  """
  name: str
  on: str
  fn: Callable | None = None
  taus: tuple[float, ...] = ()
  default_tau: float = 1.0
  select: str = "accuracy"

  def __post_init__(self):
    if self.on not in ON:
      raise ValueError(f"PostHoc {self.name!r}: on must be one of {ON}, got {self.on!r}")


TAU_NORM_GRID = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0)
LOGIT_ADJUST_GRID = tuple(float(t) for t in np.linspace(0.0, 2.0, 9))

_REGISTRY: dict[str, PostHoc] = {}


def register(entry: PostHoc, *, overwrite: bool = False) -> PostHoc:
  """Adds a post-hoc method to the table.

  Raises:
    ValueError: the name is taken (pass ``overwrite=True`` to replace it).
  """
  if entry.name in _REGISTRY and not overwrite:
    raise ValueError(f"post-hoc method {entry.name!r} is already registered; pass "
                     f"overwrite=True to replace it")
  _REGISTRY[entry.name] = entry
  return entry


def names() -> tuple[str, ...]:
  return tuple(_REGISTRY)


def get(name: str) -> PostHoc:
  """The post-hoc method `name`.

  Raises:
    ValueError: an unknown name (the message lists the known ones).
  """
  if name not in _REGISTRY:
    raise ValueError(f"unknown post-hoc method {name!r}; known: {list(_REGISTRY)}")
  return _REGISTRY[name]


register(PostHoc("none", "none"))
register(PostHoc("prior", "probs", lambda probs, prior: thresholding.apply_prior(probs,
                                                                                 prior)))
register(PostHoc("logit_adjust", "logits", losses.posthoc_logit_adjust,
                 taus=LOGIT_ADJUST_GRID, select="select_tau"))
register(PostHoc("tau_norm", "classifier", losses.tau_normalize, taus=TAU_NORM_GRID))


def classifier_kernel_shape(param_shapes, layer: str, num_classes: int) -> tuple:
  """Checks that `layer` is a Dense classifier and returns its kernel's shape.

  Args:
    param_shapes: the model's 'params' tree (arrays or shape structs, one model).
    layer: the classifier's top-level parameter name.
    num_classes: C.

  Raises:
    ValueError: the layer has no 2-D kernel [features, C] (e.g. a convolutional head).
  """
  kernel = param_shapes.get(layer, {}).get("kernel") if hasattr(param_shapes, "get") else None
  shape = tuple(getattr(kernel, "shape", ()))
  if len(shape) != 2 or shape[-1] != num_classes:
    raise ValueError(f"classifier post-hoc methods (tau_norm, cRT) need a Dense output "
                     f"layer with a kernel [features, {num_classes}]; layer {layer!r} has "
                     f"{'no kernel' if kernel is None else f'a kernel of shape {shape}'}")
  return shape


def adjust_classifier(params, layer: str, entry: PostHoc, tau: float):
  """`params` (leading model axis) with `layer`'s kernel adjusted by `entry` at `tau`."""
  params = dict(params)
  weights = dict(params[layer])
  weights["kernel"] = jax.vmap(lambda k: entry.fn(k, tau))(weights["kernel"])
  params[layer] = weights
  return params


def choose_tau(entry: PostHoc, val_logits_by_tau, val_labels, prior) -> float:
  """The tau of `entry` chosen on a validation split.

  Args:
    entry: a post-hoc method with a tau grid.
    val_logits_by_tau: for 'classifier' methods, {tau: validation logits}; for 'logits'
      methods, the validation logits of the unadjusted model.
    val_labels: validation labels.
    prior: training class prior.
  """
  if entry.select == "select_tau":
    return float(losses.select_tau(val_logits_by_tau, val_labels, prior,
                                   np.asarray(entry.taus)))
  labels = jnp.asarray(val_labels)
  taus = sorted(val_logits_by_tau)
  accs = [float(jnp.mean(jnp.argmax(jnp.asarray(val_logits_by_tau[t]), -1) == labels))
          for t in taus]
  return float(taus[int(np.argmax(accs))])
