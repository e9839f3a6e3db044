"""The paper's three networks and a registry of them by name.

`get(name, num_classes=...)` returns a Flax Linen module whose
`apply(variables, x, train, rngs={'dropout': key})` gives LOGITS (N, num_classes).
Variables are {'params': ...}, plus {'batch_stats': ...} for ResNet-10 (train it with
`mutable=['batch_stats']`).

| name       | paper               | input (HWC)    | params (10 / 1000 classes) |
|------------|---------------------|----------------|----------------------------|
| 'lenet5'   | Table 2 (MNIST)     | (28, 28, 1)    | 431,080                    |
| 'allcnn'   | Table 3 (CIFAR-10)  | (32, 32, 3)    | 1,369,738                  |
| 'resnet10' | Sec. 3.3.3 (ILSVRC) | (224, 224, 3)  | 5,418,792 (+5,760 BN stats)|

Convolutions are lowered per backend and model (`conv_impl`; see
`imbjax.ops`): 'im2col' (patches x one matmul), 'banded' (image rows x a
banded kernel matrix; for narrow images), 'winograd' (a 1-D Winograd transform along
the width; fewer multiply-adds than a direct convolution) or 'xla'
(`lax.conv_general_dilated`). 'auto' picks, from measurements: LeNet-5 winograd on CPU
and banded elsewhere; All-CNN im2col on every backend; ResNet-10 im2col on CPU and xla
elsewhere. Any of them can be forced.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from imbjax import models
  >>> net = models.get('lenet5', num_classes=10)
  >>> x = jnp.zeros((2, *models.input_shape('lenet5')))
  >>> variables = net.init(jax.random.key(0), x, train=False)
  >>> net.apply(variables, x, train=False).shape
  (2, 10)
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from flax import linen as nn

from imbjax.models.allcnn import OUTPUT_LAYERS as _ALLCNN_OUTPUT_LAYERS
from imbjax.models.allcnn import AllCNN
from imbjax.models.layers import Conv
from imbjax.models.lenet import LeNet5
from imbjax.models.resnet import ResNet10
from imbjax.ops import CONV_IMPLS, max_pool, resolve_conv_impl

__all__ = ['names', 'get', 'output_layers', 'input_shape', 'has_batch_stats',
           'LeNet5', 'AllCNN', 'ResNet10', 'Conv', 'max_pool', 'resolve_conv_impl',
           'CONV_IMPLS']

# name -> (module class, default input HWC, output layer keys, has batch stats)
_REGISTRY: dict[str, tuple[type[nn.Module], tuple[int, int, int], tuple[str, ...], bool]] = {
    'lenet5': (LeNet5, (28, 28, 1), ('fc2',), False),
    'allcnn': (AllCNN, (32, 32, 3), _ALLCNN_OUTPUT_LAYERS, False),
    'resnet10': (ResNet10, (224, 224, 3), ('fc',), True),
}


# What 'auto' means, per model: (on CPU, elsewhere). From measurements
# (benchmarks/README.md, 2026-11-28):
# - LeNet-5 'banded' off CPU: on an H200 (P=2048, batch 64) it trained 1.7x as fast as
#   im2col in float32 (2.45M vs 1.43M images/s) and 2.2x in bfloat16 (4.06M vs 1.79M).
#   On CPU: banded beat im2col ~1.3-1.4x in the population step (2 AMD EPYC cores), band
#   tiles added ~1.25x (2 Intel Xeon cores), and 'winograd' (conv2 by a 1-D Winograd
#   transform, conv1 banded) another 1.21x at P=1 and 1.16x at P=32 (in-process A/B,
#   2 Intel Xeon cores, 2026-11-28). Winograd is unmeasured on a GPU.
# - All-CNN 'im2col': on the H200 im2col beat XLA's grouped convolution under `vmap`
#   ~5x; banded (tiles of 1-2 columns) trained 0.9x as fast as im2col on CPU (61.6 vs
#   67.9 img/s, 2 models, batch 64, 2 Intel Xeon cores). Banded is unmeasured on a GPU.
# - ResNet-10 keeps 'xla' off CPU: XLA:GPU aborts compiling its vmapped im2col graph (a
#   Triton GEMM tiling check).
_AUTO_IMPL = {
    'lenet5': ('winograd', 'banded'),
    'allcnn': ('im2col', 'im2col'),
    'resnet10': ('im2col', 'xla'),
}


def names() -> tuple[str, ...]:
  """Returns the registered model names: ('lenet5', 'allcnn', 'resnet10')."""
  return tuple(_REGISTRY)


def _entry(name: str):
  if name not in _REGISTRY:
    raise ValueError(f'unknown model {name!r}; expected one of {names()}')
  return _REGISTRY[name]


def get(name: str, *, num_classes: int, conv_impl: str = 'auto',
        dtype: Any = jnp.float32) -> nn.Module:
  """Builds a registered network.

  Args:
    name: one of `names()`.
    num_classes: number of output logits (>= 2).
    conv_impl: 'auto', 'xla', 'im2col' or 'banded'; 'auto' is resolved now from the
      model and `jax.default_backend()`: LeNet-5 'winograd' on CPU, else 'banded';
      All-CNN 'im2col'; ResNet-10 'im2col' on CPU, else 'xla'.
    dtype: computation dtype (parameters stay float32).

  Returns:
    An unbound Flax Linen module; `apply(variables, x, train, rngs=...)` gives logits.

  Raises:
    ValueError: for an unknown name or conv_impl, or num_classes < 2.
  """
  cls = _entry(name)[0]
  if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
    raise ValueError(f'num_classes must be an int >= 2, got {num_classes!r}')
  return cls(num_classes=num_classes,
             conv_impl=resolve_conv_impl(conv_impl, auto=_AUTO_IMPL[name]), dtype=dtype)


def output_layers(name: str) -> tuple[str, ...]:
  """Top-level 'params' keys of the output layers that two-phase training fine-tunes.

  lenet5 -> ('fc2',), allcnn -> ('conv8', 'conv9') (the two last 1x1 convolutions,
  paper Sec. 3.3.2), resnet10 -> ('fc',).

  Raises:
    ValueError: for an unknown name.
  """
  return _entry(name)[2]


def input_shape(name: str) -> tuple[int, int, int]:
  """Default input (H, W, C) of the network as used in the paper.

  Raises:
    ValueError: for an unknown name.
  """
  return _entry(name)[1]


def has_batch_stats(name: str) -> bool:
  """Whether the network carries a 'batch_stats' collection (True for resnet10).

  Raises:
    ValueError: for an unknown name.
  """
  return _entry(name)[3]
