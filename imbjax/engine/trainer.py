"""`Trainer`: the static description of a population's training program.

The model is a registered name (`imbjax.models`) or any Flax Linen module whose
``apply(variables, x, train=..., rngs=...)`` gives logits. A `Trainer` checks the model
when it is built (one abstract trace, no FLOPs): the output shape, the `train` argument,
the output layers it names, and whether it carries batch statistics.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect

import jax
import jax.numpy as jnp
from flax import linen as nn

from imbjax import models
from imbjax import optim
from imbjax.engine.devices import resolve_compute_dtype


@dataclasses.dataclass(frozen=True)
class Trainer:
  """Static description of a population's training program (hashable: a jit static arg).

  Everything here is shared by all models of a population; everything that may differ per
  model lives in `Member`.

  Attributes:
    model: a registry name in `imbjax.models` ('lenet5', 'allcnn', 'resnet10', or one
      added with `models.register`), or a `flax.linen.Module` instance whose
      ``__call__(x, train)`` returns logits [N, num_classes]. A module is used as given:
      `conv_impl` and `compute_dtype` apply only to named models.
    num_classes: number of classes.
    batch_size: examples per step per model.
    total_steps: iterations of one training phase (progressive sampling and the linear
      schedule need it).
    schedule: name of the learning-rate multiplier in `imbjax.optim`.
    schedule_kwargs: its arguments, as a tuple of (name, value) pairs.
    momentum, weight_decay: Caffe SGD settings.
    conv_impl: convolution lowering ('auto', 'xla', 'im2col', 'banded', 'winograd'); see
      `imbjax.models`.
    input_shape: HWC of one example.
    model_block: how many models (per device) one step processes at once; `train_chunk`
      loops over blocks of that size, each running the whole chunk of steps. None
      (default) picks per backend: 1 on CPU, where one model's working set then stays
      in cache for all its steps (measured 15% more images/s for 32 and 128 LeNet-5s
      on 2 AMD EPYC cores, benchmarks/README.md), and the whole population elsewhere
      (an accelerator wants the widest batched matmuls). A block that does not divide
      the per-device population is lowered to the largest one that does. Results do not
      depend on it: models are independent.
    compute_dtype: dtype of activations and of the convolution/matmul inputs,
      "float32", "bfloat16" (mixed precision: parameters, gradients, optimiser state and
      the loss stay float32; logits are cast to float32 before the loss) or "auto"
      (default; resolved at construction by `resolve_compute_dtype`: float32 on CPU,
      bfloat16 elsewhere).
    output_layers: top-level 'params' keys of the output layers that two-phase training
      (phase 2), cRT and tau-norm act on; the last one is the classifier. None: the
      registry's for a named model, none for a module (phase-2 members are then
      refused).
  """
  model: str | nn.Module = "lenet5"
  num_classes: int = 10
  batch_size: int = 64
  total_steps: int = 10_000
  schedule: str = "inv"
  schedule_kwargs: tuple = ()
  momentum: float = 0.9
  weight_decay: float = 5e-4
  conv_impl: str = "auto"
  input_shape: tuple = (28, 28, 1)
  model_block: int | None = None
  compute_dtype: str = "auto"
  output_layers: tuple[str, ...] | None = None
  # Derived from the model in __post_init__ (see `inspect_model`).
  has_batch_stats: bool = dataclasses.field(default=False, init=False, compare=False)

  def __post_init__(self):
    if self.model_block is not None and (isinstance(self.model_block, bool)
                                         or not isinstance(self.model_block, int)
                                         or self.model_block < 1):
      raise ValueError(f"model_block must be None (per backend) or an int >= 1, got "
                       f"{self.model_block!r}")
    # Frozen: resolve 'auto' once, so that hashing, equality and the compiled program
    # all see the concrete dtype.
    object.__setattr__(self, "compute_dtype", resolve_compute_dtype(self.compute_dtype))
    if isinstance(self.model, str):
      models.input_shape(self.model)  # an unknown name is refused here, listing the known
      layers = models.output_layers(self.model) if self.output_layers is None else None
    elif isinstance(self.model, nn.Module):
      layers = () if self.output_layers is None else None
    else:
      raise ValueError(f"model must be a registered name ({', '.join(models.names())}) "
                       f"or a flax.linen.Module, got {self.model!r}")
    if layers is not None:
      object.__setattr__(self, "output_layers", tuple(layers))
    elif isinstance(self.output_layers, str) or not all(
        isinstance(n, str) for n in self.output_layers):
      raise ValueError(f"output_layers must be a tuple of parameter names, got "
                       f"{self.output_layers!r}")
    else:
      object.__setattr__(self, "output_layers", tuple(self.output_layers))
    object.__setattr__(self, "has_batch_stats", inspect_model(self)["has_batch_stats"])

  def module(self) -> nn.Module:
    """The Flax module every model of the population runs."""
    if not isinstance(self.model, str):
      return self.model
    return models.get(self.model, num_classes=self.num_classes, conv_impl=self.conv_impl,
                      dtype=jnp.dtype(self.compute_dtype))

  @property
  def model_name(self) -> str:
    """The model's name for rows and logs: the registry name or the module's class."""
    return self.model if isinstance(self.model, str) else type(self.model).__name__

  def lr_schedule(self) -> optim.Schedule:
    kwargs = dict(self.schedule_kwargs)
    if self.schedule == "linear":
      kwargs.setdefault("total_steps", self.total_steps)
    return optim.schedule(self.schedule, **kwargs)

  def optimizer(self, base_lr, weight_decay=None):
    """Caffe SGD at `base_lr` (and `weight_decay`; None: the trainer's), both per model."""
    wd = self.weight_decay if weight_decay is None else weight_decay
    return optim.caffe_sgd(base_lr, self.lr_schedule(), momentum=self.momentum,
                           weight_decay=wd)


@functools.lru_cache(maxsize=64)
def inspect_model(trainer: Trainer) -> dict:
  """Checks a trainer's model by one abstract trace (`jax.eval_shape`, no FLOPs).

  Returns:
    {'has_batch_stats': bool, 'params': top-level parameter names, 'param_shapes': the
    'params' tree of `jax.ShapeDtypeStruct`s (one model)}.

  Raises:
    ValueError: the model's ``__call__`` takes no `train` argument, its output is not
      [N, num_classes], a named output layer is not a top-level parameter, or it has
      variable collections other than 'params' and 'batch_stats'.
  """
  module = trainer.module()
  name = trainer.model_name
  call = inspect.signature(type(module).__call__)
  if "train" not in call.parameters and not any(
      p.kind == p.VAR_KEYWORD for p in call.parameters.values()):
    raise ValueError(f"model {name}: __call__ must take a `train` argument (True while "
                     f"training: dropout on, batch statistics updated); its signature is "
                     f"{call}")
  x = jax.ShapeDtypeStruct((2,) + tuple(trainer.input_shape), jnp.float32)
  key = jax.random.key(0)
  try:
    variables = jax.eval_shape(
        lambda k, x: module.init({"params": k, "dropout": k}, x, train=False), key, x)
  except Exception as e:  # the user's module failed on this input: say which
    raise ValueError(f"model {name} could not be initialised on inputs of shape "
                     f"{(2,) + tuple(trainer.input_shape)} (input_shape="
                     f"{tuple(trainer.input_shape)}): {type(e).__name__}: {e}") from e
  extra = sorted(set(variables) - {"params", "batch_stats"})
  if extra:
    raise ValueError(f"model {name} has variable collections {extra}; a population "
                     f"trains 'params' and carries 'batch_stats' only")
  has_stats = "batch_stats" in variables
  out = jax.eval_shape(
      lambda v, x: module.apply(v, x, train=False), variables, x)
  want = (2, trainer.num_classes)
  if getattr(out, "shape", None) != want:
    raise ValueError(f"model {name} must return logits of shape [N, num_classes] = "
                     f"{list(want)} for 2 examples, got "
                     f"{getattr(out, 'shape', type(out).__name__)}")
  params = tuple(variables["params"])
  missing = [n for n in trainer.output_layers if n not in params]
  if missing:
    raise ValueError(f"model {name}: output layer(s) {missing} are not top-level "
                     f"parameters; its parameters are {list(params)}")
  return {"has_batch_stats": has_stats, "params": params,
          "param_shapes": variables["params"]}


