"""LeNet-5 as in Buda et al. (2018), Table 2 (the MNIST network).

conv 5x5 20 (valid) -> maxpool 2x2/2 -> conv 5x5 50 (valid) -> maxpool 2x2/2
-> dense 500 -> ReLU -> dense num_classes. There is no nonlinearity after the
convolutions: the table (like Caffe's `lenet_train_test.prototxt`) has none.
431,080 parameters for 10 classes. Caffe "xavier" init (uniform, fan-in), zero biases.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from imbjax.models.layers import Conv, caffe_xavier


class LeNet5(nn.Module):
  """LeNet-5 of Table 2; returns logits (N, num_classes).

  Attributes:
    num_classes: output classes.
    conv: the convolution op, called like `Conv` (e.g. `functools.partial(Conv,
      impl='banded')`); conv2 and, unless `conv1` is given, conv1.
    conv1: conv1's op if it differs from `conv` (see `make_lenet5`).
    dtype: computation dtype.

  Parameter tree: 'conv1', 'conv2', 'fc1', 'fc2' (output layer 'fc2').
  """
  num_classes: int = 10
  conv: Any = Conv
  conv1: Any = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Args: x (N, H, W, C), e.g. (N, 28, 28, 1); train is unused (no dropout/BN)."""
    del train
    conv1 = self.conv if self.conv1 is None else self.conv1
    # The input is data (never differentiated), so conv1 can take XLA's patch op, which
    # is much faster forward on CPU for one channel; see `Conv.patches`.
    # Table 2's max-pools run inside `Conv` (`pool=2`): the bias comes after the pool
    # (exact: max(y + b) = max(y) + b), and on CPU conv1 and its pool are one fused op,
    # the step's fastest form (benchmarks/README.md, "Session 5").
    x = conv1(20, 5, patches='xla', pool=2, dtype=self.dtype, name='conv1')(x)
    x = self.conv(50, 5, pool=2, dtype=self.dtype, name='conv2')(x)
    # Flattened in HWC order (Caffe flattens CHW); only matters for weight import.
    x = x.reshape(x.shape[0], -1)
    x = nn.Dense(500, kernel_init=caffe_xavier, dtype=self.dtype, name='fc1')(x)
    x = nn.relu(x)
    return nn.Dense(self.num_classes, kernel_init=caffe_xavier, dtype=self.dtype,
                    name='fc2')(x)


def make_lenet5(*, num_classes: int, conv: Any, conv_impl: str, dtype: Any) -> LeNet5:
  """The registry's factory for 'lenet5': conv1 runs 'banded' where conv2 is 'winograd'.

  'winograd' pays where its batched matmul has a deep K = KH*C_in (conv2: 100); on a
  one-channel input K is 5, and Winograd in both layers measured no faster than banded
  while Winograd in conv2 alone with a banded conv1 was (benchmarks/README.md,
  "Session 4", Winograd for conv2). So conv1 stays banded under 'winograd'.

  Args:
    num_classes: output classes.
    conv: the convolution op with the lowering bound (`models.get` makes it).
    conv_impl: the lowering bound into `conv`.
    dtype: computation dtype.
  """
  conv1 = functools.partial(conv, impl='banded') if conv_impl == 'winograd' else None
  return LeNet5(num_classes=num_classes, conv=conv, conv1=conv1, dtype=dtype)
