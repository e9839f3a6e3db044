"""im2col: patches by strided slicing (or XLA's patch op), then ONE matmul.

Under `vmap` the matmul becomes a batched matmul instead of XLA's grouped convolution.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


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
