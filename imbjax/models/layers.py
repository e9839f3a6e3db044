"""`Conv` (parameters as `flax.linen.Conv`, lowering chosen by `impl`) and Caffe fillers.

The lowerings themselves are pure functions in `imbjax.ops`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax import lax

from imbjax.ops import banded, im2col, pooling, winograd
from imbjax.ops.choice import CONCRETE_IMPLS

Initializer = Callable[..., jax.Array]

# Caffe's "xavier" filler (variance_norm FAN_IN): uniform(-a, a), a = sqrt(3 / fan_in).
caffe_xavier = nn.initializers.variance_scaling(1.0, 'fan_in', 'uniform')
# Caffe's "msra" filler: untruncated gaussian, std sqrt(2 / fan_in). jax's 'normal'
# distribution is untruncated ('truncated_normal' is the truncated one).
caffe_msra = nn.initializers.variance_scaling(2.0, 'fan_in', 'normal')


def _pair(v: int | Sequence[int], what: str) -> tuple[int, int]:
  if isinstance(v, int):
    v = (v, v)
  v = tuple(int(a) for a in v)
  if len(v) != 2 or min(v) < 1:
    raise ValueError(f'{what} must be a positive int or a pair of them, got {v!r}')
  return v


def _padding_pairs(padding: int | str, kernel: tuple[int, int]) -> tuple[tuple[int, int], ...]:
  """Explicit (low, high) padding per spatial axis; only symmetric Caffe-style pads."""
  if padding == 'VALID':
    return ((0, 0), (0, 0))
  if isinstance(padding, int) and padding >= 0:
    return ((padding, padding), (padding, padding))
  raise ValueError(f"padding must be 'VALID' or a non-negative int, got {padding!r}")


class Conv(nn.Module):
  """2-D convolution over NHWC inputs with a choice of lowering.

  Parameters are exactly those of `flax.linen.Conv`: 'kernel' (KH, KW, C_in, C_out) and
  'bias' (C_out,).

  Attributes:
    features: output channels.
    kernel_size: int or (KH, KW).
    strides: int or (SH, SW).
    padding: 'VALID' or a symmetric zero pad in pixels (Caffe's `pad`).
    use_bias: whether to add a bias.
    impl: 'xla', 'im2col', 'banded' or 'winograd' (resolve 'auto' with
      `resolve_conv_impl` first).
    patches: how 'im2col' builds its patches: 'slices' (`im2col_slices`; cheap to
      differentiate) or 'xla' (`im2col_xla_patches`). 'xla' is faster forward on
      XLA:CPU for a one-channel input but its transpose is slower than the slices' one
      (measured: benchmarks/README.md, "Convolution lowering micro-benchmark"), so use
      it only where no gradient flows into the input: the first layer, whose input is
      data.
    band_tile: output columns per band tile under 'banded' (a divisor of the output
      width); None picks by `ops.pick_band_tile`'s rule.
    min_band_cols: that rule's minimum band width (tile * features), under 'banded';
      the default is tuned on CPU (`ops.MIN_BAND_COLS`).
    winograd_tile: output columns per transform under 'winograd' (a divisor of the
      output width); None picks by `ops.pick_winograd_tile`'s rule.
    pool: 0, or a non-overlapping max-pooling window (stride = window) applied to the
      convolution's output BEFORE the bias is added: max(y + b) = max(y) + b exactly
      (float rounding is monotonic), and the bias then touches window**2 times fewer
      values. Pooling is `max_pool(y, pool, pool, impl)`; under 'banded' on CPU with a
      one-channel input and stride 1 (LeNet-5's conv1) convolution and pooling are one
      fused op (`ops.banded._banded_pool_one_channel`).
    kernel_init, bias_init: initialisers.
    dtype: computation dtype; parameters are kept in `param_dtype`.
    param_dtype: parameter dtype.
  """
  features: int
  kernel_size: int | Sequence[int] = 3
  strides: int | Sequence[int] = 1
  padding: int | str = 'VALID'
  use_bias: bool = True
  impl: str = 'xla'
  patches: str = 'slices'
  band_tile: int | None = None
  min_band_cols: int = banded.MIN_BAND_COLS
  winograd_tile: int | None = None
  pool: int = 0
  kernel_init: Initializer = caffe_xavier
  bias_init: Initializer = nn.initializers.zeros_init()
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Applies the convolution to `x` of shape (N, H, W, C_in)."""
    if self.impl not in CONCRETE_IMPLS:
      raise ValueError(f'Conv.impl must be one of {CONCRETE_IMPLS}, got {self.impl!r}')
    if self.patches not in im2col._PATCHES:
      raise ValueError(f'Conv.patches must be one of {im2col._PATCHES}, got {self.patches!r}')
    if x.ndim != 4:
      raise ValueError(f'Conv expects NHWC input with 4 dims, got shape {x.shape}')
    if isinstance(self.pool, bool) or not isinstance(self.pool, int) or self.pool < 0:
      raise ValueError(f'Conv.pool must be 0 (no pooling) or a window >= 1, got '
                       f'{self.pool!r}')
    ks = _pair(self.kernel_size, 'kernel_size')
    st = _pair(self.strides, 'strides')
    pads = _padding_pairs(self.padding, ks)
    c_in = x.shape[-1]
    kernel = self.param('kernel', self.kernel_init, (*ks, c_in, self.features),
                        self.param_dtype)
    bias = (self.param('bias', self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)

    padded = (x.shape[0], x.shape[1] + sum(pads[0]), x.shape[2] + sum(pads[1]), c_in)
    plan = (banded._pool_plan(padded, kernel.shape, self.pool, self.band_tile,
                              self.min_band_cols)
            if (self.pool and self.impl == 'banded' and st == (1, 1)
                and jax.default_backend() == 'cpu') else None)
    fused = plan is not None
    if fused:
      if any(p for pair in pads for p in pair):
        x = jnp.pad(x, ((0, 0), *pads, (0, 0)))
      y = banded._banded_pool_one_channel(x, kernel, self.pool, plan[4])  # tile resolved
    elif self.impl == 'xla':
      y = lax.conv_general_dilated(x, kernel, st, pads,
                                   dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    elif self.impl == 'banded':
      y = banded.banded_conv(x, kernel, st, pads, self.band_tile, self.min_band_cols)
    elif self.impl == 'winograd':
      y = winograd.winograd_conv(x, kernel, st, pads, self.winograd_tile)
    else:
      if ks == (1, 1) and pads == ((0, 0), (0, 0)):
        cols = x[:, ::st[0], ::st[1], :]  # a 1x1 conv is a matmul already
      else:
        # Looked up at call time so benchmarks can swap the builders.
        build = (im2col.im2col_slices if self.patches == 'slices'
                 else im2col.im2col_xla_patches)
        cols = build(x, ks, st, pads)
      w = kernel.reshape(-1, self.features)  # HWIO -> (KH*KW*C, O), matches (KH, KW, C)
      y = lax.dot_general(cols, w, (((3,), (0,)), ((), ())))
    if self.pool and not fused:
      y = pooling.max_pool(y, self.pool, self.pool, self.impl)
    if bias is not None:
      y = y + bias
    return y
