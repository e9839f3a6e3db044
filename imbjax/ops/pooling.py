"""Max pooling lowered to match the convolution lowering (reshape + max, or reduce_window)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax import lax

from imbjax.ops.choice import CONCRETE_IMPLS as _CONCRETE_IMPLS


@jax.custom_vjp
def _tiled_max(x: jax.Array) -> jax.Array:
  """Max over axes (2, 4) of (N, HO, KH, WO, KW, C); the gradient goes to the FIRST max.

  Why a custom gradient: `jnp.max`'s own one finds every tied maximum, counts them and
  divides (eq, convert, reduce_sum, divide, multiply over the whole input), and it
  splits the gradient among ties. Ties are common here: LeNet-5 has no nonlinearity
  before pooling, so conv1 over MNIST's zero background gives equal values in a whole
  window. Routing the gradient to the first maximum in window order (row-major) is what
  `reduce_window`'s select-and-scatter (the 'xla' lowering) and Caffe do, so the two
  lowerings agree even with ties, and the backward pass is one select.
  """
  return x.max(axis=(2, 4))


def _tiled_max_fwd(x):
  n, ho, kh, wo, kw, c = x.shape
  y = x.max(axis=(2, 4))
  # Window position (row-major over (KH, KW)) of the first maximum; int8 (a quarter of
  # float32's traffic) whenever it fits, as for every usual pooling window.
  w = x.transpose(0, 1, 3, 2, 4, 5).reshape(n, ho, wo, kh * kw, c)
  first = jnp.argmax(w, axis=3).astype(jnp.int8 if kh * kw <= 127 else jnp.int32)
  return y, (first, (kh, kw))


def _tiled_max_bwd(res, g):
  first, (kh, kw) = res
  pos = jnp.arange(kh * kw, dtype=first.dtype).reshape(kh, kw)
  # (N, HO, 1, WO, 1, C) window index vs (KH, 1, KW, 1) positions -> (N, HO, KH, WO, KW, C)
  hit = first[:, :, None, :, None, :] == pos[None, None, :, None, :, None]
  return (jnp.where(hit, g[:, :, None, :, None, :], 0).astype(g.dtype),)


_tiled_max.defvjp(_tiled_max_fwd, _tiled_max_bwd)


def max_pool(x: jax.Array, window: int, stride: int, impl: str, padding: int = 0) -> jax.Array:
  """Max pooling over NHWC with a lowering matched to the convolution lowering.

  Non-overlapping windows (window == stride, no padding) under 'im2col', 'banded' and
  'winograd' are a reshape + max, which stays cheap under vmap and scan on CPU; any
  remainder rows/cols are dropped (floor, as 'VALID'). Under 'banded' and 'winograd'
  the gradient goes to the first maximum of each window, as with 'xla' (`_tiled_max`);
  under 'im2col' it is split among tied maxima (`jnp.max`). Overlapping windows are a
  max over strided slices, the gradient to the first maximum (`_strided_max`). 'xla'
  uses `reduce_window` (`nn.max_pool`). Padding is with -inf.

  Args:
    x: (N, H, W, C).
    window: square window size.
    stride: square stride.
    impl: one of `_CONCRETE_IMPLS`.
    padding: symmetric padding in pixels (padded values never win).

  Returns:
    The pooled (N, HO, WO, C) array.

  Raises:
    ValueError: for an unknown `impl` or non-positive sizes.
  """
  if impl not in _CONCRETE_IMPLS:
    raise ValueError(f'max_pool impl must be one of {_CONCRETE_IMPLS}, got {impl!r}')
  if window < 1 or stride < 1 or padding < 0:
    raise ValueError(f'bad pooling window={window}, stride={stride}, padding={padding}')
  pads = ((padding, padding), (padding, padding))
  if impl == 'xla':
    return nn.max_pool(x, (window, window), (stride, stride), pads)
  if window == stride and padding == 0:
    n, h, w, c = x.shape
    ho, wo = h // window, w // window
    x = x[:, :ho * window, :wo * window, :]
    x = x.reshape(n, ho, window, wo, window, c)
    # 'im2col' keeps jnp.max's gradient: on XLA:CPU the custom one fused into im2col's
    # 25-way patch-gradient sum and conv1's transpose and made that fusion many times
    # slower (measured: benchmarks/README.md, "Second session").
    return _tiled_max(x) if impl in ('banded', 'winograd') else x.max(axis=(2, 4))
  if padding:
    x = jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=-jnp.inf)
  return _strided_max(x, window, stride)


def _window_slices(x, window, stride):
  """The window's `window`**2 strided slices of `x`, in row-major window order."""
  n, h, w, c = x.shape
  ho, wo = (h - window) // stride + 1, (w - window) // stride + 1
  for i in range(window):
    for j in range(window):
      yield i, j, lax.slice(x, (0, i, j, 0),
                            (n, i + stride * (ho - 1) + 1, j + stride * (wo - 1) + 1, c),
                            (1, stride, stride, 1))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _strided_max(x, window, stride):
  """Max over overlapping windows as strided slices; the gradient goes to the FIRST
  maximum in window order, as `reduce_window`'s select-and-scatter (the 'xla'
  lowering) and Caffe do.

  Why a custom gradient: `jnp.maximum`'s own one, chained over the window, built one
  slice-select fusion over the whole input per window position; on XLA:CPU that
  fusion took a fifth of a ResNet-10 training step (its stem pool, 3x3/2: 22 of 106 ms
  at 64x64, batch 16). Here the forward keeps the winning position (int8) and the
  backward sums each position's share at the output's resolution.
  """
  return _strided_max_fwd(x, window, stride)[0]  # the winning positions are dropped


def _strided_max_fwd(x, window, stride):
  out, first = None, None
  index = jnp.int8 if window * window <= 127 else jnp.int32
  for i, j, s in _window_slices(x, window, stride):
    if out is None:
      out, first = s, jnp.zeros(s.shape, index)
    else:
      better = s > out  # strictly: a tie keeps the earlier position
      out = jnp.where(better, s, out)
      first = jnp.where(better, index(i * window + j), first)
  # Kept as computed: otherwise XLA:CPU fuses this whole chain (and the layers before
  # it) into the backward pass's fusion, recomputing it for every input position.
  out, first = lax.optimization_barrier((out, first))
  return out, (first, x.shape)


def _strided_max_bwd(window, stride, res, g):
  first, shape = res
  n, h, w, c = shape
  ho, wo = g.shape[1], g.shape[2]
  hq, wq = -(-h // stride), -(-w // stride)
  zero = jnp.zeros((), g.dtype)
  # Window position (i, j) of output (r, q) is input row i + stride * r: in the input's
  # stride phase (i % stride) at phase row r + i // stride. So every position's gradient
  # is summed at the output's resolution, one grid per phase (no full-size strided pad
  # per position), and the phases are interleaved once at the end.
  phase = {}
  for i in range(window):
    for j in range(window):
      gk = jnp.where(first == i * window + j, g, zero)
      (qi, a), (qj, b) = divmod(i, stride), divmod(j, stride)
      gk = lax.pad(gk, zero, ((0, 0, 0), (qi, hq - ho - qi, 0), (qj, wq - wo - qj, 0),
                              (0, 0, 0)))
      phase[a, b] = gk + phase[a, b] if (a, b) in phase else gk
  empty = jnp.zeros((n, hq, wq, c), g.dtype)
  grid = jnp.stack([jnp.stack([phase.get((a, b), empty) for b in range(stride)], axis=3)
                    for a in range(stride)], axis=2)  # (n, hq, stride, wq, stride, c)
  return (grid.reshape(n, hq * stride, wq * stride, c)[:, :h, :w, :],)


_strided_max.defvjp(_strided_max_fwd, _strided_max_bwd)
