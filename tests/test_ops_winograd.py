"""Tests for imbjax.ops.winograd: the transforms against numpy, the convolution against
`flax.linen.Conv` for every tile, its tile rule, bfloat16 error and precision."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from imbjax.models import layers
from imbjax.ops import banded, winograd
from tests.conv_checks import KEY, check_every_tile_against_flax


@pytest.mark.parametrize('m,r', [(1, 1), (1, 5), (2, 3), (4, 5), (6, 3), (8, 5), (9, 4)])
def test_winograd_matrices_compute_the_correlation(m, r):
  # y[k] = sum_j d[k + j] g[j] for k < m, against numpy, in float64.
  at, g, bt = winograd.winograd_matrices(m, r)
  assert at.shape == (m, m + r - 1) and g.shape == (m + r - 1, r)
  rng = np.random.default_rng(m * 10 + r)
  for _ in range(3):
    d, f = rng.normal(size=m + r - 1), rng.normal(size=r)
    want = np.array([d[k:k + r] @ f for k in range(m)])
    np.testing.assert_allclose(at @ ((g @ f) * (bt @ d)), want, rtol=1e-9, atol=1e-9)
  with pytest.raises(ValueError, match='interpolation points'):
    winograd.winograd_matrices(9, 5)


@pytest.mark.parametrize('k,s,p,hw', [(5, 1, 'VALID', 12), (3, 2, 1, 8), (5, 1, 2, 10)])
def test_winograd_conv_equals_flax_conv_for_every_tile_width(k, s, p, hw):
  # Every tile the transforms allow (at most 12 points), vertical strides and padding
  # (JAX differentiates through the linear transforms).
  x = jax.random.normal(jax.random.key(4), (2, hw, hw + 2, 3))
  check_every_tile_against_flax(winograd.winograd_conv, x, k, (s, 1), p,
                                 lambda d: d + k - 1 <= 12, 1e-4, 2e-4)


def test_winograd_tile_rule_and_refusals():
  # LeNet-5: conv1 (24 columns out) and conv2 (8 out), 5-wide kernels -> 8 (12 points).
  assert winograd.pick_winograd_tile(24, 5) == 8
  assert winograd.pick_winograd_tile(8, 5) == 8
  assert winograd.pick_winograd_tile(11, 3) == 1  # a prime width: one column per transform
  assert winograd.pick_winograd_tile(8, 5, 4) == 4
  for bad in (3, 0, -4, 2.0, True):
    with pytest.raises(ValueError, match=r'divisor of the output width 8 \(one of \[1, 2, 4, 8\]\)'):
      winograd.pick_winograd_tile(8, 5, bad)
  with pytest.raises(ValueError, match='needs 16 points, more than 12.*at most 8 columns'):
    winograd.pick_winograd_tile(24, 5, 12)
  with pytest.raises(ValueError, match="up to 12 columns wide, got 13"):
    winograd.pick_winograd_tile(4, 13)
  x = jnp.zeros((1, 12, 12, 2))
  with pytest.raises(ValueError, match="horizontal stride of 1, got 2; use 'banded'"):
    layers.Conv(4, 3, strides=2, impl='winograd').init(KEY, x)
  with pytest.raises(ValueError, match='got 3'):
    layers.Conv(4, 5, impl='winograd', winograd_tile=3).init(KEY, x)


def test_winograd_in_bfloat16_is_as_close_to_float32_as_banded():
  # Winograd computes in float32 under a bfloat16 compute dtype (its output transform
  # cancels terms up to 3^7 times larger; bfloat16 matmul inputs gave a 17% error), so
  # its bfloat16 error is that of its rounded inputs and output, like banded's.
  x = jax.random.normal(jax.random.key(6), (4, 12, 12, 20))
  k = jax.random.normal(jax.random.key(7), (5, 5, 20, 50)) * 0.05
  pads = ((0, 0), (0, 0))
  want = banded.banded_conv(x, k, (1, 1), pads)
  scale = float(jnp.abs(want).max())
  err = {}
  for name, f in (('banded', banded.banded_conv), ('winograd', winograd.winograd_conv)):
    y = f(x.astype(jnp.bfloat16), k.astype(jnp.bfloat16), (1, 1), pads)
    assert y.dtype == jnp.bfloat16
    err[name] = float(jnp.abs(y.astype(jnp.float32) - want).max()) / scale
  assert 1e-4 < err['banded'] < 3e-2 and err['winograd'] < 1.5 * err['banded'], err


def test_winograd_asks_for_full_float32_precision_in_every_product():
  # On GPU/TPU a float32 matmul may run on TF32/bfloat16 inputs by default, which the
  # transforms' cancellation would not survive; CPU cannot show that, the jaxpr can.
  # The backward pass too: two of its maps are written by hand (`_input_transform`,
  # `_stack_rows`).
  x, k = jnp.zeros((1, 12, 12, 3)), jnp.zeros((5, 5, 3, 4))
  conv = lambda x, k: winograd.winograd_conv(x, k, (1, 1), ((0, 0), (0, 0)))

  def dots(jaxpr):  # einsum and custom_vjp wrap their dots in nested jaxprs
    for e in jaxpr.eqns:
      if e.primitive.name == 'dot_general':
        yield e
      for v in e.params.values():
        v = getattr(v, 'jaxpr', v)  # a ClosedJaxpr holds its Jaxpr
        if hasattr(v, 'eqns'):
          yield from dots(v)

  forward = list(dots(jax.make_jaxpr(conv)(x, k).jaxpr))
  assert len(forward) == 4  # input, kernel and output transforms, and the batched matmul
  both = list(dots(jax.make_jaxpr(jax.grad(lambda x, k: conv(x, k).sum(), (0, 1)))(x, k).jaxpr))
  # forward 4, backward: the input transform's and the batched matmul's two transposes
  # and the output and kernel transforms' transposes
  assert len(both) >= 9
  for e in forward + both:
    assert e.params['precision'] == (lax.Precision.HIGHEST, lax.Precision.HIGHEST)
