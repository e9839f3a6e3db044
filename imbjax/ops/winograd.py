"""Winograd lowering: a 1-D Winograd transform F(m, KW) along the width, rows stacked.

Also the transforms themselves (`winograd_matrices`), exact in rationals.
"""

from __future__ import annotations

import fractions
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


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
# minor: `_input_transform` (the next layer's gradient, conv1's fused pool gradient, had
# read conv2's input gradient transposed) and `_stack_rows` (the overlap-add had been a
# 5-way pad-and-add fusion). Both measured faster in the engine's LeNet-5 step
# (benchmarks/README.md, "Session 5", Winograd's backward pass).
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
  # LeNet-5's conv2) becomes its vectorised N, not O = 50 (measured faster:
  # benchmarks/README.md, "Session 5", conv2's matmul as (O, N*HO*T)).
  prod = lax.dot_general(v.reshape(pts, kh * c, o), u.reshape(pts, n * ho * t, kh * c),
                         (((1,), (2,)), ((0,), (0,))), precision=hi)
  y = jnp.einsum('mx,xonht->nhtmo', at, prod.reshape(pts, o, n, ho, t), precision=hi)
  return y.reshape(n, ho, wo, o).astype(x.dtype)
