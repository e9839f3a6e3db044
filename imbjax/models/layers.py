"""Convolution and pooling lowered four ways, chosen per backend and model.

The population engine `jax.vmap`s a whole train step over a leading model axis, so
every model brings its own kernels. On XLA:CPU a vmapped `lax.conv_general_dilated`
with per-model kernels becomes a grouped convolution (4-8x slower), and inside
`lax.scan` its weight-gradient convolutions land in slow layouts
(/work/shared/PERF-NOTES.md). This module therefore offers:

- ``impl='xla'``: `lax.conv_general_dilated`, numerically the same as `flax.linen.Conv`;
  pooling by `reduce_window` (`nn.max_pool`). ResNet-10's choice off CPU.
- ``impl='im2col'``: patches by strided slicing + concat, then ONE `dot_general`, so that
  under `vmap` it becomes a batched matmul; max-pooling 2x2/2 as reshape + max. The
  choice for All-CNN on every backend and for ResNet-10 on CPU.
- ``impl='banded'``: whole image rows times a banded (block-Toeplitz) kernel matrix, ONE
  matmul per layer with large K and N (`banded_conv`), the output columns cut into tiles
  that share one band. More multiply-adds than im2col ((tile+KW-1)/KW times a direct
  convolution) but far less data movement; LeNet-5's choice off CPU (and for its conv1
  on CPU), whose images are narrow (28 and 12 columns for 5-wide kernels). On CPU a
  one-channel input's kernel gradient is one matmul over stacked input taps
  (`_banded_one_channel`), and a one-channel conv followed by its max-pool (`Conv.pool`,
  LeNet-5's conv1) is one fused op (`_banded_pool_one_channel`).
- ``impl='winograd'``: the 1-D Winograd transform F(m, KW) along the width, and image
  rows stacked along the height (`winograd_conv`): one batched matmul over the
  transform's points with K = KH*C, N = O. Fewer multiply-adds than a direct
  convolution (LeNet-5's conv2: 0.48x) at a float32 rounding cost of ~1e-6-2e-5
  relative; horizontal stride 1 only. LeNet-5's choice on CPU (conv2; conv1 stays
  banded).

All have the same parameters ('kernel' HWIO, 'bias'), so a checkpoint or a parameter
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
- XLA:CPU, 2 idle AMD EPYC cores, 2026-11-28, the engine's own step (32 LeNet-5s,
  images/s): banded 3,664 vs im2col 2,894 with all models in one vmap; 3,728-3,853 with
  one model per block (`Trainer.model_block`) vs 2,769 for the old im2col engine
  (benchmarks/README.md). The profile of one im2col step: 38% of the time went to
  building conv2's 25-fold patches and summing their gradients, and its conv2 matmuls
  (4096x500 @ 500x50) ran at ~80 GFLOP/s against ~200 for the banded ones.
- XLA:CPU, 2 idle Intel Xeon cores, 2026-11-28: conv2 in band tiles of 4 columns
  (1024x800 @ 800x200) instead of one band (512x1200 @ 1200x400): +25-30% for the whole
  step at P=1 and P=32; 5,430 / 5,500 img/s at P=1 / 32, 1.22x / 1.19x a PyTorch loop
  timed in the same rounds (benchmarks/README.md).
"""

from __future__ import annotations

import fractions
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax import lax

CONV_IMPLS = ('auto', 'xla', 'im2col', 'banded', 'winograd')
_CONCRETE_IMPLS = ('xla', 'im2col', 'banded', 'winograd')

Initializer = Callable[..., jax.Array]

# Caffe's "xavier" filler (variance_norm FAN_IN): uniform(-a, a), a = sqrt(3 / fan_in).
caffe_xavier = nn.initializers.variance_scaling(1.0, 'fan_in', 'uniform')
# Caffe's "msra" filler: untruncated gaussian, std sqrt(2 / fan_in). jax's 'normal'
# distribution is untruncated ('truncated_normal' is the truncated one).
caffe_msra = nn.initializers.variance_scaling(2.0, 'fan_in', 'normal')


def resolve_conv_impl(conv_impl: str,
                      auto: tuple[str, str] = ('im2col', 'xla')) -> str:
  """Maps a requested convolution lowering to a concrete one.

  Args:
    conv_impl: one of 'auto', 'xla', 'im2col', 'banded'.
    auto: what 'auto' means, as (on CPU, on any other backend), chosen by
      `jax.default_backend()`. The default suits a model nobody has measured; the
      registered networks pass their own measured pair (`models.get`).

  Returns:
    'xla', 'im2col' or 'banded'.

  Raises:
    ValueError: if `conv_impl` is not one of `CONV_IMPLS`.
  """
  if conv_impl not in CONV_IMPLS:
    raise ValueError(f'unknown conv_impl {conv_impl!r}; expected one of {CONV_IMPLS}')
  if conv_impl == 'auto':
    return auto[0] if jax.default_backend() == 'cpu' else auto[1]
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


def banded_kernel(kernel: jax.Array, width: int, strides_w: int = 1) -> jax.Array:
  """An HWIO kernel as one banded (block-Toeplitz) matrix over whole image rows.

  Row `(i, x, c)` (kernel row i, input column x, input channel c) and column `(v, o)`
  (output column v, output channel o) hold ``kernel[i, x - s*v, c, o]`` where
  ``0 <= x - s*v < KW``, else 0. Built by zero-padding the kernel into each output
  column's place and stacking: pure data movement, so the entries are the kernel's
  values exactly on every backend, and the transpose (the kernel gradient) sums the
  band's diagonals. (An einsum with a 0/1 selector computes the same but is a K=KW
  matmul plus two transposes: ~3x slower here.)

  Args:
    kernel: (KH, KW, C, O).
    width: input width W (after padding).
    strides_w: horizontal stride.

  Returns:
    (KH * W * C, WO * O), WO = (W - KW) // strides_w + 1.
  """
  kh, kw, c, o = kernel.shape
  wo = (width - kw) // strides_w + 1
  cols = [jnp.pad(kernel, ((0, 0), (strides_w * v, width - kw - strides_w * v), (0, 0),
                           (0, 0)))
          for v in range(wo)]
  return jnp.stack(cols, axis=3).reshape(kh * width * c, wo * o)  # (KH, W, C, WO, O)


# `banded_conv` tiles the output columns so that each band has at least this many
# matmul columns (tile width * output channels). Measured on 2 Intel Xeon cores,
# 2026-11-28, the engine's LeNet-5 step, interleaved A/B in one process: conv2
# (12 columns in, 8 out, 50 channels) in tiles of 4 (band 800x200, 1.6x the
# multiply-adds of a direct convolution) made the whole step 25-30% faster than one band
# of 8 (1200x400, 2.4x) at P=1 and P=32; tiles of 2 (600x100) were slower than 4. For
# conv1 (28 in, 24 out, 20 channels) tiles of 12 (80x240) and of 24 (140x480) measured
# the same.
_MIN_BAND_COLS = 192


def pick_band_tile(wo: int, features: int, tile: int | None = None) -> int:
  """Output columns per band in `banded_conv`: `tile`, or the auto rule if None.

  The auto rule takes the narrowest tile that divides `wo` and gives the band at least
  `_MIN_BAND_COLS` columns (all `wo` columns when none does).

  Raises:
    ValueError: if `tile` is given and is not a positive divisor of `wo`.
  """
  if tile is not None:
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < 1 or wo % tile:
      divisors = [d for d in range(1, wo + 1) if wo % d == 0]
      raise ValueError(f'band tile must be a divisor of the output width {wo} '
                       f'(one of {divisors}), got {tile!r}')
    return tile
  for d in range(1, wo + 1):
    if wo % d == 0 and d * features >= _MIN_BAND_COLS:
      return d
  return wo


def banded_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
                pads: tuple[tuple[int, int], ...], tile: int | None = None) -> jax.Array:
  """Convolution as ONE matmul of stacked image rows with `banded_kernel`.

  Output row r needs input rows ``s*r + i`` for i < KH; those KH rows, each flattened
  to W*C values, are concatenated (KH contiguous chunks, not KH*KW small ones as in
  im2col) and multiplied by the (KH*W*C, WO*O) banded kernel, which computes the
  whole output row at once. Untiled it does W/KW times the multiply-adds of a direct
  convolution (2.4x for LeNet-5's conv2, 5.6x for conv1) but replaces im2col's KH*KW-fold
  patch copies, which dominate a small CNN's step on XLA:CPU, by a KH-fold row copy, and
  its matmuls have large K and N (e.g. 512x1200 @ 1200x400 instead of 4096x500 @ 500x50:
  ~200 vs ~80 GFLOP/s on 2 AMD EPYC cores). Worth it only when W/KW is small, as in
  LeNet-5; see `benchmarks/README.md`.

  Tiles: the WO output columns can be cut into tiles of `tile` columns. Each tile reads
  its own window of ``Wt = s*(tile-1) + KW`` input columns, and since convolution is
  translation invariant every tile shares ONE band, (KH*Wt*C, tile*O): the tiles only
  add rows to the same single matmul. Narrower tiles do fewer wasted multiply-adds
  (Wt/KW times a direct convolution) with a smaller band; `pick_band_tile` picks the width.

  Args:
    x: (N, H, W, C).
    kernel: (KH, KW, C, O).
    strides: (SH, SW).
    pads: ((top, bottom), (left, right)).
    tile: output columns per tile (a divisor of WO); None: `pick_band_tile`'s rule.

  Returns:
    (N, HO, WO, O).

  Raises:
    ValueError: if the padded input is smaller than the kernel, or for a bad `tile`.
  """
  if any(p for pair in pads for p in pair):
    x = jnp.pad(x, ((0, 0), *pads, (0, 0)))
  n, h, w, c = x.shape
  kh, kw, _, o = kernel.shape
  sh, sw = strides
  ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
  if ho < 1 or wo < 1:
    raise ValueError(f'input spatial size {(h, w)} (after padding) is smaller than the '
                     f'kernel {(kh, kw)}')
  tile = pick_band_tile(wo, o, tile)
  if c == 1 and jax.default_backend() == 'cpu':
    return _banded_one_channel(x, kernel, (sh, sw), tile)
  return _banded_rows(x, kernel, (sh, sw), tile)


def _banded_rows(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
                 tile: int) -> jax.Array:
  """`banded_conv`'s computation on an already padded and checked input."""
  n, h, _, c = x.shape
  kh, kw, _, o = kernel.shape
  sh, sw = strides
  ho = (h - kh) // sh + 1
  wo = (x.shape[2] - kw) // sw + 1
  t = wo // tile
  wt = sw * (tile - 1) + kw  # input columns one tile reads
  if t == 1:
    xt = x[:, :, :wt, :]
  else:
    xt = jnp.stack([x[:, :, sw * tile * j:sw * tile * j + wt, :] for j in range(t)], axis=2)
  xt = xt.reshape(n, h, t, wt * c)
  rows = [lax.slice(xt, (0, i, 0, 0), (n, i + sh * (ho - 1) + 1, t, wt * c), (1, sh, 1, 1))
          for i in range(kh)]
  xx = rows[0] if kh == 1 else jnp.concatenate(rows, axis=-1)  # (N, HO, T, KH*Wt*C)
  y = lax.dot_general(xx, banded_kernel(kernel, wt, sw), (((3,), (0,)), ((), ())))
  return y.reshape(n, ho, wo, o)  # (N, HO, T, tile*O): T and tile are WO's two factors


# A one-channel input (a grayscale image: LeNet-5's conv1) on CPU: the same forward, but
# the kernel gradient as (KH*KW, M) @ (M, O), M = N*HO*WO, from KH*KW strided slices of
# the input stacked on a LEADING axis. Both operands are then in the layout a matmul
# wants, whereas the band's own gradient, xx^T @ dy, made XLA:CPU transpose the whole
# output gradient (f32[240,3072] for LeNet-5, ~11% of a one-core step at ~1.6 GB/s).
# Measured in the engine's step (2 Intel Xeon cores, 2026-11-28, in-process A/B): +11%
# on one single-threaded core (5,241 vs 4,734 img/s, P=4), level on two threads (5,658
# vs 5,705, P=1). Not used off CPU, where it is unmeasured.
@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _banded_one_channel(x, kernel, strides, tile):
  return _banded_rows(x, kernel, strides, tile)


def _banded_one_channel_fwd(x, kernel, strides, tile):
  return _banded_rows(x, kernel, strides, tile), (x, kernel)


def _banded_one_channel_bwd(strides, tile, res, dy):
  x, kernel = res
  _, input_vjp = jax.vjp(lambda x: _banded_rows(x, kernel, strides, tile), x)
  n = x.shape[0]
  kh, kw, _, o = kernel.shape
  sh, sw = strides
  ho, wo = dy.shape[1], dy.shape[2]
  taps = [lax.slice(x, (0, i, j, 0), (n, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, 1),
                    (1, sh, sw, 1)) for i in range(kh) for j in range(kw)]
  taps = jnp.stack(taps).reshape(kh * kw, n * ho * wo)
  dk = lax.dot_general(taps, dy.reshape(n * ho * wo, o), (((1,), (0,)), ((), ())))
  return input_vjp(dy)[0], dk.reshape(kh, kw, 1, o).astype(kernel.dtype)


_banded_one_channel.defvjp(_banded_one_channel_fwd, _banded_one_channel_bwd)


# LeNet-5's conv1 and its 2x2 max-pool fused, on CPU (`Conv.pool`). Measured in the
# engine's step (one single-threaded Intel Xeon core, P=4, in-process A/B against the
# previous engine, 2026-11-29): +8%. Three things the separate layers cannot do:
# - the banded matmul's rows come in (window row a, pooled row i) order and its band's
#   columns in (window column b, pooled column j, channel) order, so that the pool's
#   p*p candidates are p*p contiguous blocks of the matmul output and the max and the
#   first-max index are one pass (`_first_max`; no strided reduce);
# - the kernel gradient needs only the pooled gradient g, routed per window position:
#   with S[u, v] the input sampled at stride p from offset (u, v) (u < p + KH - 1), and
#   G_k = g where the window's first max is at position k (else 0),
#   dk[i, j] = sum_(a, b) S[a + i, b + j] @ G_(a, b): ONE matmul (U*V, M) @ (M, p*p*O),
#   M = N*PH*PW, then a (U, V)-window sum. For LeNet-5 that is (36, 9216) @ (9216, 80)
#   from 36 slices of 144 pixels per image, where the unpooled form stacks 25 slices of
#   576 and needs the unpooled gradient (a p*p-times larger scatter) first;
# - the unpooled output gradient is never built unless the input's gradient is asked
#   for (the input is data in LeNet-5, so XLA drops it).
def _pool_plan(x_shape, kernel_shape, window, tile):
  """(HO, WO, PH, PW, tile) of a fused conv+pool, or None when it does not apply."""
  _, h, w, c = x_shape
  kh, kw, _, o = kernel_shape
  ho, wo = h - kh + 1, w - kw + 1
  if c != 1 or ho < window or wo < window or ho % window or wo % window:
    return None
  tile = pick_band_tile(wo, o, tile)
  if tile % window:
    return None
  return ho, wo, ho // window, wo // window, tile


def _pooled_rows_matmul(x, kernel, window, tile):
  """The banded conv's matmul output (N, p_a, PH, T, p_b, tile/p, O), pool-ordered."""
  n, h, _, c = x.shape
  kh, kw, _, o = kernel.shape
  p = window
  ho, wo, ph, _, tile = _pool_plan(x.shape, kernel.shape, window, tile)
  t = wo // tile
  wt = tile - 1 + kw
  if t == 1:
    xt = x[:, :, :wt, :]
  else:
    xt = jnp.stack([x[:, :, tile * j:tile * j + wt, :] for j in range(t)], axis=2)
  xt = xt.reshape(n, h, t, wt * c)
  # Output row p*i + a needs input rows p*i + a + r, r < KH.
  blocks = []
  for a in range(p):
    rows = [lax.slice(xt, (0, a + r, 0, 0), (n, a + r + p * (ph - 1) + 1, t, wt * c),
                      (1, p, 1, 1)) for r in range(kh)]
    blocks.append(jnp.concatenate(rows, axis=-1))  # (N, PH, T, KH*Wt*C)
  xx = jnp.stack(blocks, axis=1)  # (N, p_a, PH, T, KH*Wt*C)
  band = banded_kernel(kernel, wt, 1)  # columns (tile column = p*jj + b, O)
  band = band.reshape(-1, tile // p, p, o).transpose(0, 2, 1, 3).reshape(-1, tile * o)
  y = lax.dot_general(xx, band, (((4,), (0,)), ((), ())))
  return y.reshape(n, p, ph, t, p, tile // p, o)


def _first_max(y):
  """Max over axes 1 and 4 of `_pooled_rows_matmul`'s output and the first max's index.

  Returns pooled (N, PH, PW, O) and the row-major window index (a*p + b) of the first
  maximum as int8 (int32 beyond 127 positions). One variadic reduction computes both:
  as elementwise ops the index would be fused into (and recomputed by) its consumer.
  """
  n, p, ph, t, _, tj, o = y.shape
  parts = jnp.stack([y[:, a, :, :, b] for a in range(p) for b in range(p)], axis=-2)
  dtype = jnp.int8 if p * p <= 127 else jnp.int32
  index = lax.broadcasted_iota(dtype, parts.shape, parts.ndim - 2)

  def pick(left, right):  # the larger, the earlier on ties; NaN wins as in jnp.max
    (lv, li), (rv, ri) = left, right
    take_left = (lv > rv) | ((lv == rv) & (li < ri)) | jnp.isnan(lv)
    return jnp.where(take_left, lv, rv), jnp.where(take_left, li, ri)

  m, first = lax.reduce((parts, index), (jnp.asarray(-jnp.inf, y.dtype),
                                          jnp.asarray(p * p, dtype)),
                        pick, (parts.ndim - 2,))
  return m.reshape(n, ph, t * tj, o), first.reshape(n, ph, t * tj, o)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _banded_pool_one_channel(x, kernel, window, tile):
  return _first_max(_pooled_rows_matmul(x, kernel, window, tile))[0]


def _banded_pool_one_channel_fwd(x, kernel, window, tile):
  pooled, first = _first_max(_pooled_rows_matmul(x, kernel, window, tile))
  return pooled, (x, kernel, first)


def _banded_pool_one_channel_bwd(window, tile, res, g):
  x, kernel, first = res
  n = x.shape[0]
  kh, kw, _, o = kernel.shape
  p = window
  ho, wo, ph, pw, tile = _pool_plan(x.shape, kernel.shape, window, tile)
  # G: (N, PH, PW, p*p, O), the pooled gradient at its window's first max.
  pos = jnp.arange(p * p, dtype=first.dtype)
  gk = jnp.where(first[..., None, :] == pos[:, None], g[..., None, :], 0).astype(g.dtype)
  u, v = p + kh - 1, p + kw - 1
  s = jnp.stack([lax.slice(x, (0, i, j, 0), (n, i + p * (ph - 1) + 1, j + p * (pw - 1) + 1, 1),
                           (1, p, p, 1)) for i in range(u) for j in range(v)])
  r = lax.dot_general(s.reshape(u * v, n * ph * pw), gk.reshape(n * ph * pw, p * p * o),
                      (((1,), (0,)), ((), ())))
  r = r.reshape(u, v, p, p, o)
  dk = sum(r[a:a + kh, b:b + kw, a, b] for a in range(p) for b in range(p))
  # The input's gradient through the unpooled banded conv (dropped by XLA when unused).
  dy = gk.reshape(n, ph, pw, p, p, o).transpose(0, 1, 3, 2, 4, 5).reshape(n, ho, wo, o)
  _, input_vjp = jax.vjp(lambda x: _banded_rows(x, kernel, (1, 1), tile), x)
  return input_vjp(dy)[0], dk.reshape(kh, kw, 1, o).astype(kernel.dtype)


_banded_pool_one_channel.defvjp(_banded_pool_one_channel_fwd, _banded_pool_one_channel_bwd)


# Interpolation points of `winograd_matrices`, in the order they are taken (plus the
# point at infinity): small integers and their reciprocals keep the transforms' entries
# small, which is what bounds the float error (Lavin & Gray 2016, "Fast algorithms for
# convolutional neural networks"). Their number caps a transform at 12 points (tile +
# KW - 1): the float32 error grows fast with the points (LeNet-5's conv2, max error
# relative to the largest output: 1.7e-6 with 8 points, 2.2e-5 with 12, and a 5x5
# kernel in tiles of 10 on 14 points, adding +-4: 4e-4).
_WINOGRAD_POINTS = tuple(fractions.Fraction(p) for p in (
    0, 1, -1, 2, -2, '1/2', '-1/2', 3, -3, '1/3', '-1/3'))
_MAX_WINOGRAD_POINTS = len(_WINOGRAD_POINTS) + 1


def _exact_inverse(rows: list[list[fractions.Fraction]]) -> list[list[fractions.Fraction]]:
  """Gauss-Jordan inverse in exact rational arithmetic (the matrices are <= 16x16)."""
  n = len(rows)
  a = [list(r) + [fractions.Fraction(int(i == j)) for j in range(n)]
       for i, r in enumerate(rows)]
  for col in range(n):
    piv = next(r for r in range(col, n) if a[r][col] != 0)
    a[col], a[piv] = a[piv], a[col]
    inv = 1 / a[col][col]
    a[col] = [v * inv for v in a[col]]
    for r in range(n):
      if r != col and a[r][col] != 0:
        f = a[r][col]
        a[r] = [v - f * w for v, w in zip(a[r], a[col])]
  return [r[n:] for r in a]


@functools.lru_cache(maxsize=None)
def winograd_matrices(m: int, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The 1-D Winograd (Toom-Cook) correlation F(m, r) as (A^T, G, B^T).

  For a window `d` of n = m + r - 1 inputs and a filter `g` of r taps, the m outputs
  ``y[k] = sum_j d[k + j] g[j]`` are ``A^T ((G g) * (B^T d))``: n multiplications
  instead of m * r. Built from the transposed Toom-Cook algorithm on n - 1 points of
  `_WINOGRAD_POINTS` and the point at infinity: with V_k the (n, k) evaluation matrix of
  polynomials of degree < k, G = V_r, A^T = V_m^T and B^T = V_n^-T. Computed exactly in
  rationals, then rounded once to float64.

  Args:
    m: outputs per transform (>= 1).
    r: filter taps (>= 1).

  Returns:
    A^T (m, n), G (n, r), B^T (n, n) as float64 arrays.

  Raises:
    ValueError: if m or r < 1, or n - 1 exceeds the points available.
  """
  n = m + r - 1
  if m < 1 or r < 1 or n > _MAX_WINOGRAD_POINTS:
    raise ValueError(f'Winograd F(m={m}, r={r}) needs m, r >= 1 and m + r - 1 <= '
                     f'{_MAX_WINOGRAD_POINTS} interpolation points')
  pts = _WINOGRAD_POINTS[:n - 1]

  def vander(k):
    one, zero = fractions.Fraction(1), fractions.Fraction(0)
    return [[p ** j for j in range(k)] for p in pts] + [
        [zero] * (k - 1) + [one]]  # the point at infinity: the leading coefficient

  def as_array(rows):  # read-only: the arrays are cached and shared
    a = np.array([[float(v) for v in row] for row in rows])
    a.setflags(write=False)
    return a

  at, g, bt = as_array(vander(m)).T, as_array(vander(r)), as_array(_exact_inverse(vander(n))).T
  return at, g, bt


def pick_winograd_tile(wo: int, kw: int, tile: int | None = None) -> int:
  """Outputs per Winograd transform in `winograd_conv`: `tile`, or the auto rule.

  The auto rule takes the widest divisor of `wo` whose transform has at most
  `_MAX_WINOGRAD_POINTS` points (tile + kw - 1): wider tiles save more multiplies.

  Raises:
    ValueError: if `tile` is given and is not a positive divisor of `wo`, or needs more
      than `_MAX_WINOGRAD_POINTS` points, or the kernel alone is wider than that.
  """
  divisors = [d for d in range(1, wo + 1) if wo % d == 0]
  if kw > _MAX_WINOGRAD_POINTS:
    raise ValueError(f"'winograd' takes kernels up to {_MAX_WINOGRAD_POINTS} columns wide, "
                     f"got {kw}; use 'banded' or 'im2col'")
  if tile is not None:
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < 1 or wo % tile:
      raise ValueError(f'Winograd tile must be a divisor of the output width {wo} '
                       f'(one of {divisors}), got {tile!r}')
    if tile + kw - 1 > _MAX_WINOGRAD_POINTS:
      raise ValueError(f'Winograd tile {tile} with a {kw}-wide kernel needs '
                       f'{tile + kw - 1} points, more than {_MAX_WINOGRAD_POINTS} (float32 '
                       f'error grows with them); at most {_MAX_WINOGRAD_POINTS + 1 - kw} '
                       'columns per tile')
    return tile
  return max(d for d in divisors if d + kw - 1 <= _MAX_WINOGRAD_POINTS)


# Layouts in `winograd_conv`'s backward pass. XLA:CPU runs an elementwise fusion fast
# while the minor (contiguous) axis of its operands and output stays the same, and several
# times slower when it must move the minor axis (a transpose inside the fusion: scalar
# code). The two helpers below state two transposed maps so that the channel axis stays
# minor. Measured in the engine's LeNet-5 step (one single-threaded Intel Xeon core,
# P=4, in-process A/B, 2026-11-29): `_input_transform` +8% (the next layer's gradient,
# conv1's fused pool gradient, read conv2's input gradient transposed: 9% of the step),
# `_stack_rows` +3% (a 5-way pad-and-add fusion at ~4 ns per element).
@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _stack_rows(d: jax.Array, kh: int, ho: int) -> jax.Array:
  """Rows i .. i+HO-1 of `d` (axis 2) for each i < KH, concatenated on the last axis."""
  return jnp.concatenate([lax.slice_in_dim(d, i, i + ho, axis=2) for i in range(kh)], -1)


def _stack_rows_fwd(d, kh, ho):
  return _stack_rows(d, kh, ho), d.shape


def _stack_rows_bwd(kh, ho, shape, du):
  # The overlap-add of the KH row windows as in-place slice updates (each a contiguous
  # copy-add) instead of a sum of KH padded arrays.
  c = shape[-1]
  dd = jnp.zeros(shape, du.dtype)
  for i in range(kh):
    part = lax.slice_in_dim(du, i * c, (i + 1) * c, axis=du.ndim - 1)
    dd = lax.dynamic_update_slice_in_dim(
        dd, lax.dynamic_slice_in_dim(dd, i, ho, axis=2) + part, i, axis=2)
  return (dd,)


_stack_rows.defvjp(_stack_rows_fwd, _stack_rows_bwd)


def _input_transform(bt: jax.Array, win: jax.Array) -> jax.Array:
  """einsum('xp,nhtpc->xnhtc', bt, win) (B^T over each window's columns). JAX's own
  transpose computes the input gradient as (N*H*T*C, P), columns minor; this one as
  (P, N*H*T*C), moved into place with the channel axis still minor."""
  hi = lax.Precision.HIGHEST

  @jax.custom_vjp
  def f(win):
    return jnp.einsum('xp,nhtpc->xnhtc', bt, win, precision=hi)

  def bwd(_, ct):
    return (jnp.moveaxis(jnp.einsum('xp,xnhtc->pnhtc', bt, ct, precision=hi), 0, 3),)

  f.defvjp(lambda win: (f(win), None), bwd)
  return f(win)


def winograd_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
                  pads: tuple[tuple[int, int], ...], tile: int | None = None) -> jax.Array:
  """Convolution with a 1-D Winograd transform along the width and stacked rows.

  The output width is cut into tiles of m = `tile` columns; each reads a window of
  n = m + KW - 1 input columns. Along the width, F(m, KW) (`winograd_matrices`) turns
  the window into n transformed columns (B^T), and every kernel row into n transformed
  taps (G). Transformed column xi of output row r then only needs transformed column
  xi of input rows r*SH .. r*SH + KH - 1 with transformed tap xi of every kernel row:
  ONE batched matmul over the n values of xi, with K = KH*C and N = O, whose results
  A^T maps back to the m output columns. That is KH*C*O*n/m multiply-adds per output
  column against KH*KW*C*O for a direct convolution (LeNet-5's conv2 in tiles of 8:
  0.48x; the banded lowering's 1.6x), for the price of three small transforms.

  Exact in real arithmetic; in float32 the transforms add rounding that grows with n
  (`_MAX_WINOGRAD_POINTS`). It computes in float32 even under a bfloat16 compute dtype
  (then only its inputs and result are bfloat16): its output transform cancels large
  terms, which bfloat16 matmul inputs would not survive. Gradients are JAX's own (the
  transforms are linear maps) except two transposed maps written for XLA:CPU's layouts
  (`_input_transform`, `_stack_rows`).

  Args:
    x: (N, H, W, C).
    kernel: (KH, KW, C, O).
    strides: (SH, SW); SW must be 1.
    pads: ((top, bottom), (left, right)).
    tile: output columns per transform (a divisor of WO); None: `pick_winograd_tile`.

  Returns:
    (N, HO, WO, O).

  Raises:
    ValueError: for a horizontal stride other than 1, an input smaller than the kernel,
      or a bad `tile`.
  """
  sh, sw = strides
  if sw != 1:
    raise ValueError(f"'winograd' needs a horizontal stride of 1, got {sw}; use 'banded' "
                     "or 'im2col' for strided convolutions")
  if any(p for pair in pads for p in pair):
    x = jnp.pad(x, ((0, 0), *pads, (0, 0)))
  n, h, w, c = x.shape
  kh, kw, _, o = kernel.shape
  ho, wo = (h - kh) // sh + 1, w - kw + 1
  if ho < 1 or wo < 1:
    raise ValueError(f'input spatial size {(h, w)} (after padding) is smaller than the '
                     f'kernel {(kh, kw)}')
  m = pick_winograd_tile(wo, kw, tile)
  t, pts = wo // m, m + kw - 1
  # All of it runs in at least float32 whatever the compute dtype: A^T's entries reach
  # 3^7 for 12 points, and the output transform cancels large terms, so bfloat16 matmul
  # inputs gave a 17% error (LeNet-5's conv2 shape, tiles of 8) against banded's 0.4%.
  # The result is cast back to the compute dtype. For the same reason every product asks
  # for full float32 precision: accelerators' default for float32 matmuls may round the
  # inputs to TF32 (GPU) or bfloat16 (TPU). On CPU this changes nothing.
  ft = jnp.promote_types(x.dtype, jnp.float32)
  hi = lax.Precision.HIGHEST
  at, g, bt = (jnp.asarray(a, ft) for a in winograd_matrices(m, kw))
  if t == 1:
    win = x[:, :, None, :pts, :]
  else:
    win = jnp.stack([x[:, :, m * j:m * j + pts, :] for j in range(t)], axis=2)
  d = _input_transform(bt, win.astype(ft))  # (pts, N, H, T, C)
  if sh == 1 and kh > 1:
    u = _stack_rows(d, kh, ho)  # (pts, N, HO, T, KH*C)
  else:
    rows = [lax.slice_in_dim(d, i, i + sh * (ho - 1) + 1, sh, axis=2) for i in range(kh)]
    u = rows[0] if kh == 1 else jnp.concatenate(rows, axis=-1)  # (pts, N, HO, T, KH*C)
  v = jnp.einsum('xj,ijco->xico', g, kernel.astype(ft), precision=hi)
  # (pts, O, N*HO*T) rather than (pts, N*HO*T, O): the matmul's long side (512 for
  # LeNet-5's conv2) becomes its vectorised N, not O = 50 (+3% for the step, measured as
  # above; conv2's three matmuls 78 against 95 ms in a one-core profile).
  prod = lax.dot_general(v.reshape(pts, kh * c, o), u.reshape(pts, n * ho * t, kh * c),
                         (((1,), (2,)), ((0,), (0,))), precision=hi)
  y = jnp.einsum('mx,xonht->nhtmo', at, prod.reshape(pts, o, n, ho, t), precision=hi)
  return y.reshape(n, ho, wo, o).astype(x.dtype)


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
      differentiate) or 'xla' (`im2col_xla_patches`). 'xla' is ~5x faster forward on
      XLA:CPU for a one-channel input (1.6 vs 8.9 ms per LeNet conv1 batch of 64) but its
      transpose is ~5x slower than the slices' one, so use it only where no gradient
      flows into the input: the first layer, whose input is data.
    band_tile: output columns per band tile under 'banded' (a divisor of the output
      width); None picks by `pick_band_tile`'s rule.
    winograd_tile: output columns per transform under 'winograd' (a divisor of the
      output width); None picks by `pick_winograd_tile`'s rule.
    pool: 0, or a non-overlapping max-pooling window (stride = window) applied to the
      convolution's output BEFORE the bias is added: max(y + b) = max(y) + b exactly
      (float rounding is monotonic), and the bias then touches window**2 times fewer
      values. Pooling is `max_pool(y, pool, pool, impl)`; under 'banded' on CPU with a
      one-channel input and stride 1 (LeNet-5's conv1) convolution and pooling are one
      fused op (`_banded_pool_one_channel`).
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
  winograd_tile: int | None = None
  pool: int = 0
  kernel_init: Initializer = caffe_xavier
  bias_init: Initializer = nn.initializers.zeros_init()
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Applies the convolution to `x` of shape (N, H, W, C_in)."""
    if self.impl not in _CONCRETE_IMPLS:
      raise ValueError(f'Conv.impl must be one of {_CONCRETE_IMPLS}, got {self.impl!r}')
    if self.patches not in _PATCHES:
      raise ValueError(f'Conv.patches must be one of {_PATCHES}, got {self.patches!r}')
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
    fused = (self.pool and self.impl == 'banded' and st == (1, 1)
             and jax.default_backend() == 'cpu'
             and _pool_plan(padded, kernel.shape, self.pool, self.band_tile) is not None)
    if fused:
      if any(p for pair in pads for p in pair):
        x = jnp.pad(x, ((0, 0), *pads, (0, 0)))
      y = _banded_pool_one_channel(x, kernel, self.pool, self.band_tile)
    elif self.impl == 'xla':
      y = lax.conv_general_dilated(x, kernel, st, pads,
                                   dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    elif self.impl == 'banded':
      y = banded_conv(x, kernel, st, pads, self.band_tile)
    elif self.impl == 'winograd':
      y = winograd_conv(x, kernel, st, pads, self.winograd_tile)
    else:
      if ks == (1, 1) and pads == ((0, 0), (0, 0)):
        cols = x[:, ::st[0], ::st[1], :]  # a 1x1 conv is a matmul already
      else:
        # Looked up at call time so benchmarks can swap the builders.
        build = im2col_slices if self.patches == 'slices' else im2col_xla_patches
        cols = build(x, ks, st, pads)
      w = kernel.reshape(-1, self.features)  # HWIO -> (KH*KW*C, O), matches (KH, KW, C)
      y = lax.dot_general(cols, w, (((3,), (0,)), ((), ())))
    if self.pool and not fused:
      y = max_pool(y, self.pool, self.pool, self.impl)
    if bias is not None:
      y = y + bias
    return y


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
  max over strided slices. 'xla' uses `reduce_window` (`nn.max_pool`). Padding is with
  -inf.

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
    # 25-way patch-gradient sum and conv1's transpose and made that fusion 17x slower
    # (584 vs 35 ms per 64 model-steps); the H200 figures were measured with jnp.max.
    return _tiled_max(x) if impl in ('banded', 'winograd') else x.max(axis=(2, 4))
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

