"""All-CNN-C as in Buda et al. (2018), Table 3 (the CIFAR-10 network).

dropout 0.2 on the input; 2 x (conv3x3 96 pad 1 + ReLU); conv3x3 96 stride 2 pad 1 + ReLU;
dropout 0.5; 2 x (conv3x3 192 pad 1 + ReLU); conv3x3 192 stride 2 pad 1 + ReLU;
dropout 0.5; conv3x3 192 pad 0 + ReLU (32x32 -> 6x6); conv1x1 192 + ReLU;
conv1x1 num_classes + ReLU; global average pool -> logits.

The last convolution keeps its ReLU because Table 3 lists it as "Convolution + ReLU"
(as in Springenberg et al.'s Caffe definition), so logits are non-negative averages
of ReLU maps. 1,369,738 parameters for 10 classes. Caffe "xavier" init, zero biases.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from imbjax.models.layers import Conv

# (name, features, kernel, stride, pad, dropout applied BEFORE this conv)
_LAYERS = (
    ('conv1', 96, 3, 1, 1, 0.2),
    ('conv2', 96, 3, 1, 1, None),
    ('conv3', 96, 3, 2, 1, None),
    ('conv4', 192, 3, 1, 1, 0.5),
    ('conv5', 192, 3, 1, 1, None),
    ('conv6', 192, 3, 2, 1, None),
    ('conv7', 192, 3, 1, 0, 0.5),
    ('conv8', 192, 1, 1, 0, None),
    ('conv9', None, 1, 1, 0, None),  # None: num_classes
)
OUTPUT_LAYERS = ('conv8', 'conv9')  # "two last convolutional layers with kernels of size 1"


class AllCNN(nn.Module):
  """All-CNN-C of Table 3; returns logits (N, num_classes).

  Attributes:
    num_classes: output classes.
    conv: the convolution op, called like `Conv` (e.g. `functools.partial(Conv,
      impl='im2col')`; `imbjax.models.get` makes it).
    dtype: computation dtype.

  Parameter tree: 'conv1' ... 'conv9' (output layers 'conv8', 'conv9'). With
  `train=True`, dropout needs `rngs={'dropout': key}`.
  """
  num_classes: int = 10
  conv: Any = Conv
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Args: x (N, H, W, C), e.g. (N, 32, 32, 3); train enables dropout."""
    for name, feats, k, s, p, drop in _LAYERS:
      if drop is not None:
        x = nn.Dropout(drop, deterministic=not train)(x)
      x = self.conv(self.num_classes if feats is None else feats, k, strides=s, padding=p,
                    dtype=self.dtype, name=name)(x)
      x = nn.relu(x)
    return x.mean(axis=(1, 2))
