"""Convolution and pooling lowered two ways, chosen per backend.

The population engine `jax.vmap`s a whole train step over a leading model axis, so
every model brings its own kernels. On XLA:CPU a vmapped `lax.conv_general_dilated`
with per-model kernels becomes a grouped convolution (4-8x slower), and inside
`lax.scan` its weight-gradient convolutions land in slow layouts
(/work/shared/PERF-NOTES.md). This module therefore offers:

- ``impl='xla'``: `lax.conv_general_dilated`, numerically the same as `flax.linen.Conv`;
  pooling by `reduce_window` (`nn.max_pool`). The right choice on GPU/TPU.
- ``impl='im2col'``: patches by strided slicing + concat, then ONE `dot_general`, so that
  under `vmap` it becomes a batched matmul; max-pooling 2x2/2 as reshape + max. The
  right choice on CPU.

Both have the same parameters ('kernel' HWIO, 'bias'), so a checkpoint or a parameter
tree is interchangeable between them; tests check equal logits and gradients.

Measured with benchmarks/conv_lowering.py (LeNet-5, P models vmapped, value_and_grad
+ SGD inside lax.scan, 20 steps, batch 64, images/s for all models together):
- XLA:CPU, 2 busy cores (load ~4), P=8: xla 71, im2col slices 688 (9.7x, same run);
  im2col slices 941 vs im2col `conv_general_dilated_patches` 310 (another run). So the
  patches are built by slicing by default.
- H200, jax 0.11.2, P=8: xla 474k, im2col slices 1.17M (2.5x), xla patches 375k;
  P=64: xla 487k, im2col 1.44M (2.9x); P=1: xla 274k, im2col 516k. All-CNN, P=8, batch
  256: xla 10.7k, im2col 52.5k (4.9x). im2col wins on the GPU too, but XLA:GPU 0.11.2
  aborted compiling the vmapped ResNet-10 im2col forward (triton_tiling_propagation.cc
  "Check failed: subdim_size_accumulator == dim_size"); XLA_FLAGS=
  --xla_gpu_enable_triton_gemm=false avoided it. 'auto' therefore stays 'xla' off CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax import lax

CONV_IMPLS = ('auto', 'xla', 'im2col')

Initializer = Callable[..., jax.Array]

# Caffe's "xavier" filler (variance_norm FAN_IN): uniform(-a, a), a = sqrt(3 / fan_in).
caffe_xavier = nn.initializers.variance_scaling(1.0, 'fan_in', 'uniform')
# Caffe's "msra" filler: untruncated gaussian, std sqrt(2 / fan_in). jax's 'normal'
# distribution is untruncated ('truncated_normal' is the truncated one).
caffe_msra = nn.initializers.variance_scaling(2.0, 'fan_in', 'normal')


def resolve_conv_impl(conv_impl: str) -> str:
  """Maps a requested convolution lowering to a concrete one.

  Args:
    conv_impl: one of 'auto', 'xla', 'im2col'. 'auto' picks 'im2col' when
      `jax.default_backend()` is 'cpu' and 'xla' otherwise (GPU/TPU).

  Returns:
    'xla' or 'im2col'.

  Raises:
    ValueError: if `conv_impl` is not one of `CONV_IMPLS`.
  """
  if conv_impl not in CONV_IMPLS:
    raise ValueError(f'unknown conv_impl {conv_impl!r}; expected one of {CONV_IMPLS}')
  if conv_impl == 'auto':
    return 'im2col' if jax.default_backend() == 'cpu' else 'xla'
  return conv_impl


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


def im2col_slices(x: jax.Array, kernel_size: tuple[int, int], strides: tuple[int, int],
                  pads: tuple[tuple[int, int], ...]) -> jax.Array:
  """Patches of an NHWC batch by strided slicing, features ordered (KH, KW, C).

  The (KH, KW, C) ordering equals a row-major reshape of an HWIO kernel to
  (KH*KW*C, O), so no kernel transpose is needed.

  Args:
    x: (N, H, W, C) input.
    kernel_size: (KH, KW).
    strides: (SH, SW).
    pads: ((top, bottom), (left, right)) zero padding.

  Returns:
    (N, HO, WO, KH*KW*C) patches.
  """
  if any(p for pair in pads for p in pair):
    x = jnp.pad(x, ((0, 0), *pads, (0, 0)))
  n, h, w, c = x.shape
  kh, kw = kernel_size
  sh, sw = strides
  ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
  if ho < 1 or wo < 1:
    raise ValueError(f'input spatial size {(h, w)} (after padding) is smaller than the '
                     f'kernel {kernel_size}')
  cols = [
      lax.slice(x, (0, i, j, 0), (n, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, c),
                (1, sh, sw, 1))
      for i in range(kh) for j in range(kw)
  ]
  return cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)


def im2col_xla_patches(x: jax.Array, kernel_size: tuple[int, int], strides: tuple[int, int],
                       pads: tuple[tuple[int, int], ...]) -> jax.Array:
  """Patches via `lax.conv_general_dilated_patches`, features reordered to (KH, KW, C).

  XLA returns the patch features ordered (C, KH, KW); they are transposed here so the
  result matches `im2col_slices` and a plain HWIO kernel reshape.
  """
  p = lax.conv_general_dilated_patches(
      x, kernel_size, strides, pads, dimension_numbers=('NHWC', 'OIHW', 'NHWC'),
      precision=lax.Precision.HIGHEST)  # an identity filter must not go through TF32
  n, ho, wo, _ = p.shape
  c = x.shape[-1]
  p = p.reshape(n, ho, wo, c, kernel_size[0] * kernel_size[1])
  return jnp.swapaxes(p, -1, -2).reshape(n, ho, wo, -1)


_PATCHES = ('slices', 'xla')


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
    impl: 'xla' or 'im2col' (resolve 'auto' with `resolve_conv_impl` first).
    patches: how 'im2col' builds its patches: 'slices' (`im2col_slices`; cheap to
      differentiate) or 'xla' (`im2col_xla_patches`). 'xla' is ~5x faster forward on
      XLA:CPU for a one-channel input (1.6 vs 8.9 ms per LeNet conv1 batch of 64) but its
      transpose is ~5x slower than the slices' one, so use it only where no gradient
      flows into the input: the first layer, whose input is data.
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
  kernel_init: Initializer = caffe_xavier
  bias_init: Initializer = nn.initializers.zeros_init()
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Applies the convolution to `x` of shape (N, H, W, C_in)."""
    if self.impl not in ('xla', 'im2col'):
      raise ValueError(f"Conv.impl must be 'xla' or 'im2col', got {self.impl!r}")
    if self.patches not in _PATCHES:
      raise ValueError(f'Conv.patches must be one of {tuple(_PATCHES)}, got {self.patches!r}')
    if x.ndim != 4:
      raise ValueError(f'Conv expects NHWC input with 4 dims, got shape {x.shape}')
    ks = _pair(self.kernel_size, 'kernel_size')
    st = _pair(self.strides, 'strides')
    pads = _padding_pairs(self.padding, ks)
    c_in = x.shape[-1]
    kernel = self.param('kernel', self.kernel_init, (*ks, c_in, self.features),
                        self.param_dtype)
    bias = (self.param('bias', self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)

    if self.impl == 'xla':
      y = lax.conv_general_dilated(x, kernel, st, pads,
                                   dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    else:
      if ks == (1, 1) and pads == ((0, 0), (0, 0)):
        cols = x[:, ::st[0], ::st[1], :]  # a 1x1 conv is a matmul already
      else:
        # Looked up at call time so benchmarks can swap the builders.
        build = im2col_slices if self.patches == 'slices' else im2col_xla_patches
        cols = build(x, ks, st, pads)
      w = kernel.reshape(-1, self.features)  # HWIO -> (KH*KW*C, O), matches (KH, KW, C)
      y = lax.dot_general(cols, w, (((3,), (0,)), ((), ())))
    if bias is not None:
      y = y + bias
    return y


def max_pool(x: jax.Array, window: int, stride: int, impl: str, padding: int = 0) -> jax.Array:
  """Max pooling over NHWC with a lowering matched to the convolution lowering.

  Non-overlapping windows (window == stride, no padding) under 'im2col' are a reshape +
  max, which stays cheap under vmap and scan on CPU; any remainder rows/cols are dropped
  (floor, as 'VALID'). Overlapping windows under 'im2col' are a max over strided slices.
  'xla' uses `reduce_window` (`nn.max_pool`). Padding is with -inf.

  Args:
    x: (N, H, W, C).
    window: square window size.
    stride: square stride.
    impl: 'xla' or 'im2col'.
    padding: symmetric padding in pixels (padded values never win).

  Returns:
    The pooled (N, HO, WO, C) array.

  Raises:
    ValueError: for an unknown `impl` or non-positive sizes.
  """
  if impl not in ('xla', 'im2col'):
    raise ValueError(f"max_pool impl must be 'xla' or 'im2col', got {impl!r}")
  if window < 1 or stride < 1 or padding < 0:
    raise ValueError(f'bad pooling window={window}, stride={stride}, padding={padding}')
  pads = ((padding, padding), (padding, padding))
  if impl == 'xla':
    return nn.max_pool(x, (window, window), (stride, stride), pads)
  if window == stride and padding == 0:
    n, h, w, c = x.shape
    ho, wo = h // window, w // window
    x = x[:, :ho * window, :wo * window, :]
    return x.reshape(n, ho, window, wo, window, c).max(axis=(2, 4))
  if padding:
    x = jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=-jnp.inf)
  n, h, w, c = x.shape
  ho, wo = (h - window) // stride + 1, (w - window) // stride + 1
  out = None
  for i in range(window):
    for j in range(window):
      s = lax.slice(x, (0, i, j, 0),
                    (n, i + stride * (ho - 1) + 1, j + stride * (wo - 1) + 1, c),
                    (1, stride, stride, 1))
      out = s if out is None else jnp.maximum(out, s)
  return out
