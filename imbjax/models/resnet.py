"""ResNet-10 as in Buda et al. (2018), Section 3.3.3 (the ImageNet network).

Simon et al. (2016) ResNet-10 with batch normalisation, built from He et al. (2016)
basic blocks (post-activation): stem conv 7x7/2 64 + BN + ReLU + maxpool 3x3/2 (pad 1),
then four stages of ONE basic block each (conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut,
then ReLU), widths 64, 128, 256, 512, strides 1, 2, 2, 2. The shortcut is the identity, or
a 1x1 strided projection conv + BN when the shape changes (stages 2-4). Nine "layer"
convolutions (stem + 4 x 2; projections are not counted, as usual) and one dense layer
after global average pooling.

Convolutions followed by BN have no bias (BN's shift replaces it). Parameters for 1000
classes: 5,418,792 trainable ('params') plus 5,760 running statistics ('batch_stats').
MSRA init (Caffe "msra": untruncated gaussian, std sqrt(2 / fan_in)) for every conv and
the dense layer, zero dense bias, BN scale 1 and shift 0. BN uses eps 1e-5 and
running-average momentum 0.9. Accepts any input of at least 32x32.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from imbjax.models.layers import Conv, caffe_msra
from imbjax import ops

STAGE_WIDTHS = (64, 128, 256, 512)
STAGE_STRIDES = (1, 2, 2, 2)
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5
MIN_INPUT = 32


class BasicBlock(nn.Module):
  """He et al. basic residual block (post-activation) with BN.

  Attributes:
    features: output channels.
    strides: stride of the first conv and of the projection.
    conv: the convolution op, called like `Conv`.
    dtype: computation dtype.
  """
  features: int
  strides: int = 1
  conv: Any = Conv
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """Applies the block to NHWC `x`; `train` selects batch vs running statistics."""
    bn = lambda name: nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM,
                                   epsilon=BN_EPSILON, dtype=self.dtype, name=name)
    conv = lambda f, k, s, p, name: self.conv(f, k, strides=s, padding=p, use_bias=False,
                                              kernel_init=caffe_msra, dtype=self.dtype,
                                              name=name)
    y = conv(self.features, 3, self.strides, 1, 'conv1')(x)
    y = nn.relu(bn('bn1')(y))
    y = conv(self.features, 3, 1, 1, 'conv2')(y)
    y = bn('bn2')(y)
    if self.strides != 1 or x.shape[-1] != self.features:
      x = bn('proj_bn')(conv(self.features, 1, self.strides, 0, 'proj_conv')(x))
    return nn.relu(x + y)


class ResNet10(nn.Module):
  """ResNet-10 (BN); returns logits (N, num_classes).

  Attributes:
    num_classes: output classes.
    conv: the convolution op, called like `Conv` (e.g. `functools.partial(Conv,
      impl='im2col')`; `imbjax.models.get` makes it).
    max_pool: the stem's pooling op, called like `ops.max_pool` without `impl` (the
      lowering matched to the convolution's).
    dtype: computation dtype.

  Parameter tree: 'conv1', 'bn1', 'stage1' ... 'stage4' (each with 'conv1', 'bn1',
  'conv2', 'bn2' and, in stages 2-4, 'proj_conv', 'proj_bn'), 'fc' (the output layer).
  Train with `mutable=['batch_stats']`.
  """
  num_classes: int = 1000
  conv: Any = Conv
  max_pool: Callable[..., jax.Array] = functools.partial(ops.max_pool, impl='xla')
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Args: x (N, H, W, C) with H, W >= 32, e.g. (N, 224, 224, 3); train uses batch stats.

    Raises:
      ValueError: if the input is smaller than 32x32.
    """
    if x.ndim != 4 or min(x.shape[1:3]) < MIN_INPUT:
      raise ValueError(f'ResNet10 needs NHWC input with H, W >= {MIN_INPUT}, '
                       f'got shape {x.shape}')
    x = self.conv(64, 7, strides=2, padding=3, use_bias=False, kernel_init=caffe_msra,
                  dtype=self.dtype, name='conv1')(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM,
                     epsilon=BN_EPSILON, dtype=self.dtype, name='bn1')(x)
    x = nn.relu(x)
    x = self.max_pool(x, 3, 2, padding=1)
    for i, (width, stride) in enumerate(zip(STAGE_WIDTHS, STAGE_STRIDES), start=1):
      x = BasicBlock(width, stride, self.conv, self.dtype, name=f'stage{i}')(x, train)
    x = x.mean(axis=(1, 2))
    return nn.Dense(self.num_classes, kernel_init=caffe_msra, dtype=self.dtype,
                    name='fc')(x)
