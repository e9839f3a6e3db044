"""The paper's three networks and a public registry of networks by name.

`get(name, num_classes=...)` returns a Flax Linen module whose
`apply(variables, x, train, rngs={'dropout': key})` gives LOGITS (N, num_classes).
Variables are {'params': ...}, plus {'batch_stats': ...} for ResNet-10 (train it with
`mutable=['batch_stats']`). `register(name, factory, ...)` adds a network of your own
(`imbjax.models.registry`).

| name       | paper               | input (HWC)    | params (10 / 1000 classes) |
|------------|---------------------|----------------|----------------------------|
| 'lenet5'   | Table 2 (MNIST)     | (28, 28, 1)    | 431,080                    |
| 'allcnn'   | Table 3 (CIFAR-10)  | (32, 32, 3)    | 1,369,738                  |
| 'resnet10' | Sec. 3.3.3 (ILSVRC) | (224, 224, 3)  | 5,418,792 (+5,760 BN stats)|

Convolutions are lowered per backend and model (`conv_impl`; see `imbjax.ops`):
'im2col' (patches x one matmul), 'banded' (image rows x a banded kernel matrix; for
narrow images), 'winograd' (a 1-D Winograd transform along the width; fewer
multiply-adds than a direct convolution) or 'xla' (`lax.conv_general_dilated`). 'auto'
picks from the model's own table (`register(auto_impl=...)`, `auto_impl(name)`):
LeNet-5 winograd on CPU and banded elsewhere; All-CNN im2col on every backend;
ResNet-10 im2col on CPU and xla elsewhere; a model without a table gets 'xla'. Any of
them can be forced.

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

from imbjax.models.allcnn import OUTPUT_LAYERS as _ALLCNN_OUTPUT_LAYERS
from imbjax.models.allcnn import AllCNN
from imbjax.models.layers import Conv
from imbjax.models.lenet import LeNet5, make_lenet5
from imbjax.models.registry import (auto_impl, get, has_batch_stats, input_shape, names,
                                    output_layers, register, resolve_impl)
from imbjax.models.resnet import ResNet10
from imbjax.ops import CONV_IMPLS, max_pool, resolve_conv_impl

__all__ = ['names', 'get', 'register', 'resolve_impl', 'auto_impl', 'output_layers',
           'input_shape', 'has_batch_stats', 'LeNet5', 'AllCNN', 'ResNet10', 'Conv',
           'max_pool', 'resolve_conv_impl', 'CONV_IMPLS']

# The 'auto' tables, (on CPU, elsewhere), each the fastest lowering measured for that
# model on that backend (benchmarks/README.md: "Results on this CPU", "GPU (H200)"):
# LeNet-5 'banded' on the GPU (Winograd is unmeasured there); All-CNN 'im2col' (banded
# measured slower on CPU, unmeasured on a GPU); ResNet-10 'xla' off CPU because XLA:GPU
# aborted compiling its vmapped im2col graph (a Triton GEMM tiling check).
register('lenet5', make_lenet5, input_shape=(28, 28, 1), output_layers=('fc2',),
         has_batch_stats=False, auto_impl=('winograd', 'banded'))
register('allcnn', AllCNN, input_shape=(32, 32, 3), output_layers=_ALLCNN_OUTPUT_LAYERS,
         has_batch_stats=False, auto_impl=('im2col', 'im2col'))
register('resnet10', ResNet10, input_shape=(224, 224, 3), output_layers=('fc',),
         has_batch_stats=True, auto_impl=('im2col', 'xla'))
