"""Banded lowering: whole image rows times a banded (block-Toeplitz) kernel matrix.

Also the one-channel input's own kernel gradient and LeNet-5's conv1 fused with its
max-pool (both on CPU).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax


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


# `pick_band_tile`'s default: the narrowest tile whose band has at least this many matmul
# columns (tile width * output channels). Narrower bands waste fewer multiply-adds, wider
# ones make larger matmuls; 192 was the best trade for LeNet-5's conv2 (tiles of 4) on
# CPU (measured: benchmarks/README.md, "Session 3", band tiles). Untuned on a GPU: pass
# `min_band_cols` (`Conv.min_band_cols`) to try another.
MIN_BAND_COLS = 192


def pick_band_tile(wo: int, features: int, tile: int | None = None,
                   min_band_cols: int = MIN_BAND_COLS) -> int:
  """Output columns per band in `banded_conv`: `tile`, or the auto rule if None.

  The auto rule takes the narrowest tile that divides `wo` and gives the band at least
  `min_band_cols` columns (all `wo` columns when none does).

  Args:
    wo: output width.
    features: output channels.
    tile: a divisor of `wo`, or None for the auto rule.
    min_band_cols: the auto rule's minimum band width (tile * features); 1 gives
      one-column tiles, a large value one untiled band.

  Raises:
    ValueError: if `tile` is given and is not a positive divisor of `wo`, or
      `min_band_cols` is not a positive int.
  """
  if (isinstance(min_band_cols, bool) or not isinstance(min_band_cols, int)
      or min_band_cols < 1):
    raise ValueError(f'min_band_cols must be a positive int, got {min_band_cols!r}')
  if tile is not None:
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < 1 or wo % tile:
      divisors = [d for d in range(1, wo + 1) if wo % d == 0]
      raise ValueError(f'band tile must be a divisor of the output width {wo} '
                       f'(one of {divisors}), got {tile!r}')
    return tile
  for d in range(1, wo + 1):
    if wo % d == 0 and d * features >= min_band_cols:
      return d
  return wo


def banded_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
                pads: tuple[tuple[int, int], ...], tile: int | None = None,
                min_band_cols: int = MIN_BAND_COLS) -> jax.Array:
  """Convolution as ONE matmul of stacked image rows with `banded_kernel`.

  Output row r needs input rows ``s*r + i`` for i < KH; those KH rows, each flattened
  to W*C values, are concatenated (KH contiguous chunks, not KH*KW small ones as in
  im2col) and multiplied by the (KH*W*C, WO*O) banded kernel, which computes the
  whole output row at once. Untiled it does W/KW times the multiply-adds of a direct
  convolution (2.4x for LeNet-5's conv2, 5.6x for conv1) but replaces im2col's KH*KW-fold
  patch copies, which dominate a small CNN's step on XLA:CPU, by a KH-fold row copy, and
  its matmuls have large K and N (e.g. 512x1200 @ 1200x400 instead of 4096x500 @ 500x50),
  which run several times faster on XLA:CPU. Worth it only when W/KW is small, as in
  LeNet-5 (measured: benchmarks/README.md, "Second session").

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
    min_band_cols: `pick_band_tile`'s minimum band width when `tile` is None.

  Returns:
    (N, HO, WO, O).

  Raises:
    ValueError: if the padded input is smaller than the kernel, or for a bad `tile` or
      `min_band_cols`.
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
  tile = pick_band_tile(wo, o, tile, min_band_cols)
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
# output gradient (f32[240,3072] for LeNet-5). Faster on one single-threaded core, level
# on two threads (measured: benchmarks/README.md, "Session 4", conv1's kernel gradient).
# Not used off CPU, where it is unmeasured.
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


# LeNet-5's conv1 and its 2x2 max-pool fused, on CPU (`Conv.pool`): faster than the
# separate layers in the engine's step (measured: benchmarks/README.md, "Session 5",
# conv1 and its pool fused). Three things the separate layers cannot do:
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
def _pool_plan(x_shape, kernel_shape, window, tile, min_band_cols=MIN_BAND_COLS):
  """(HO, WO, PH, PW, tile) of a fused conv+pool, or None when it does not apply."""
  _, h, w, c = x_shape
  kh, kw, _, o = kernel_shape
  ho, wo = h - kh + 1, w - kw + 1
  if c != 1 or ho < window or wo < window or ho % window or wo % window:
    return None
  tile = pick_band_tile(wo, o, tile, min_band_cols)
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
