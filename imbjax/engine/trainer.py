"""`Trainer`: the static description of a population's training program."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from imbjax import models
from imbjax import optim
from imbjax.engine.devices import resolve_compute_dtype


@dataclasses.dataclass(frozen=True)
class Trainer:
  """Static description of a population's training program (hashable: a jit static arg).

  Everything here is shared by all models of a population; everything that may differ per
  model lives in `Member`.

  Attributes:
    model: registry name in `imbjax.models` ('lenet5', 'allcnn', 'resnet10').
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
  """
  model: str = "lenet5"
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

  def __post_init__(self):
    if self.model_block is not None and (isinstance(self.model_block, bool)
                                         or not isinstance(self.model_block, int)
                                         or self.model_block < 1):
      raise ValueError(f"model_block must be None (per backend) or an int >= 1, got "
                       f"{self.model_block!r}")
    # Frozen: resolve 'auto' once, so that hashing, equality and the compiled program
    # all see the concrete dtype.
    object.__setattr__(self, "compute_dtype", resolve_compute_dtype(self.compute_dtype))

  def module(self):
    return models.get(self.model, num_classes=self.num_classes, conv_impl=self.conv_impl,
                      dtype=jnp.dtype(self.compute_dtype))

  def lr_schedule(self) -> optim.Schedule:
    kwargs = dict(self.schedule_kwargs)
    if self.schedule == "linear":
      kwargs.setdefault("total_steps", self.total_steps)
    return optim.schedule(self.schedule, **kwargs)

  def optimizer(self, base_lr):
    return optim.caffe_sgd(base_lr, self.lr_schedule(), momentum=self.momentum,
                           weight_decay=self.weight_decay)

  @property
  def has_batch_stats(self) -> bool:
    return models.has_batch_stats(self.model)

  @property
  def output_layers(self) -> tuple[str, ...]:
    return models.output_layers(self.model)


