"""Tests for imbjax.ops.banded: the band, its tiles, the one-channel kernel gradient and the
fused conv+pool, against `flax.linen.Conv` (+ `nn.max_pool`)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from imbjax.models import layers
from imbjax.ops import banded, pooling
from tests.conv_checks import KEY, check_every_tile_against_flax, jit as _jit


@pytest.mark.parametrize('k,s,p,hw,c', [(5, 1, 'VALID', 12, 3), (3, 2, 1, 9, 3),
                                        (2, 3, 0, 11, 3), (5, 1, 'VALID', 12, 1),
                                        (3, 2, 1, 9, 1)])
def test_banded_conv_equals_flax_conv_for_every_tile_width(k, s, p, hw, c):
  # Every divisor of the output width is a valid tiling; each must give the convolution
  # and its kernel/input gradients (tiles share one band, so the band's gradient sums
  # over tiles). One channel on CPU takes its own kernel gradient (`_banded_one_channel`).
  x = jax.random.normal(jax.random.key(3), (2, hw, hw + 2, c))
  check_every_tile_against_flax(banded.banded_conv, x, k, (s, s), p, lambda d: True,
                                 1e-5, 1e-4)


def _conv_pool_against_flax(x, k, p, pool, band_tile=None, impl='banded'):
  """`Conv(pool=...)` (bias after the pool) against flax Conv + `nn.max_pool`: pooled
  values, and the kernel, bias and input gradients."""
  ref = nn.Conv(6, (k, k), padding='VALID' if p == 'VALID' else [(p, p)] * 2)
  v = ref.init(KEY, x)
  v = {'params': {**v['params'], 'bias': jax.random.normal(jax.random.key(8), (6,))}}
  mine = layers.Conv(6, k, padding=p, impl=impl, pool=pool, band_tile=band_tile)
  want_f = lambda v, x: nn.max_pool(ref.apply(v, x), (pool, pool), (pool, pool))
  loss = lambda f: (lambda v, x: (f(v, x) ** 3).sum())
  np.testing.assert_allclose(_jit(mine.apply)(v, x), want_f(v, x), rtol=1e-5, atol=1e-5)
  got = _jit(jax.grad(loss(mine.apply), (0, 1)))(v, x)
  want = jax.grad(loss(want_f), (0, 1))(v, x)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('k,p,hw,pool,tile', [(5, 'VALID', 28, 2, None), (5, 'VALID', 28, 2, 6),
                                              (3, 1, 12, 2, 12), (3, 'VALID', 11, 3, None),
                                              (5, 'VALID', 13, 3, 9), (5, 'VALID', 28, 2, 3)])
def test_conv_with_pool_equals_flax_conv_then_max_pool(k, p, hw, pool, tile):
  # One channel, stride 1 on CPU: conv and pool fused (`_banded_pool_one_channel`), for
  # several band tiles (a tile of 3 does not hold whole windows of 2: unfused); the bias
  # after the pool changes no value. Ties (a zero
  # background, as in MNIST) route the gradient to the first maximum, as reduce_window.
  smooth = jax.random.normal(jax.random.key(3), (2, hw, hw, 1))
  x = smooth.at[0, :hw // 2].set(0.0)
  _conv_pool_against_flax(x, k, p, pool, tile)
  # Unfused: three channels (and under 'im2col', which splits a tie's gradient, on an
  # input without ties) pool after the conv.
  _conv_pool_against_flax(jnp.concatenate([x] * 3, -1), k, p, pool)
  _conv_pool_against_flax(smooth, k, p, pool, impl='im2col')


def test_fused_conv_pool_propagates_nan_like_max():
  # As the unfused banded conv + pool (the band's zeros spread a NaN along its row).
  x = jnp.ones((1, 8, 8, 1)).at[0, 2, 3, 0].set(jnp.nan)
  mine = layers.Conv(4, 3, impl='banded', pool=2, band_tile=2)
  y = mine.apply(mine.init(KEY, x), x)
  conv = layers.Conv(4, 3, impl='banded', band_tile=2).apply(mine.init(KEY, x), x)
  ref = pooling.max_pool(conv, 2, 2, 'banded')
  np.testing.assert_array_equal(np.isnan(y), np.isnan(ref))
  assert np.isnan(y).any()


def test_band_tile_rule_and_bad_tiles():
  # LeNet-5: conv1 (24 columns out, 20 channels) -> 12; conv2 (8 out, 50) -> 4.
  assert banded.pick_band_tile(24, 20) == 12
  assert banded.pick_band_tile(8, 50) == 4
  assert banded.pick_band_tile(7, 10) == 7  # no divisor reaches the minimum: one band
  assert banded.pick_band_tile(8, 50, 2) == 2
  for bad in (3, 0, -4, 2.0, True):
    with pytest.raises(ValueError, match=r'divisor of the output width 8 \(one of \[1, 2, 4, 8\]\)'):
      banded.pick_band_tile(8, 50, bad)
  x = jnp.zeros((1, 12, 12, 2))
  with pytest.raises(ValueError, match='got 3'):
    layers.Conv(4, 5, impl='banded', band_tile=3).init(KEY, x)


@pytest.mark.parametrize('width,stride', [(12, 1), (9, 2), (5, 1)])
def test_banded_kernel_places_each_tap_on_its_diagonal(width, stride):
  kh, kw, c, o = 2, 3, 2, 4
  k = jax.random.normal(jax.random.key(9), (kh, kw, c, o))
  band = np.asarray(banded.banded_kernel(k, width, stride))
  wo = (width - kw) // stride + 1
  assert band.shape == (kh * width * c, wo * o)
  band = band.reshape(kh, width, c, wo, o)
  for v in range(wo):
    for x in range(width):
      j = x - stride * v
      want = np.asarray(k[:, j]) if 0 <= j < kw else np.zeros((kh, c, o))
      np.testing.assert_array_equal(band[:, x, :, v, :], want)


def test_one_channel_banded_conv_has_its_own_kernel_gradient_on_cpu(monkeypatch):
  x, k = jnp.zeros((2, 12, 12, 1)), jnp.zeros((5, 5, 1, 4))
  f = lambda x, k: banded.banded_conv(x, k, (1, 1), ((0, 0), (0, 0)))
  # a fresh function each time: make_jaxpr would reuse a trace of the same one
  names = lambda: {e.primitive.name for e in jax.make_jaxpr(lambda *a: f(*a))(x, k).eqns}
  assert 'custom_vjp_call' in names()
  assert 'custom_vjp_call' not in {e.primitive.name for e in
                                   jax.make_jaxpr(f)(jnp.zeros((2, 12, 12, 2)),
                                                     jnp.zeros((5, 5, 2, 4))).eqns}
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  assert 'custom_vjp_call' not in names()  # unmeasured off CPU: the plain band gradient


def test_min_band_cols_is_an_argument_of_the_tile_rule_and_of_conv(monkeypatch):
  assert banded.MIN_BAND_COLS == 192
  assert banded.pick_band_tile(8, 50, min_band_cols=100) == 2
  assert banded.pick_band_tile(8, 50, min_band_cols=1) == 1
  assert banded.pick_band_tile(8, 50, min_band_cols=10_000) == 8  # one untiled band
  assert banded.pick_band_tile(8, 50, 4, min_band_cols=1) == 4  # a given tile wins
  for bad in (0, -1, 2.0, True):
    with pytest.raises(ValueError, match=f'min_band_cols must be a positive int, got {bad!r}'):
      banded.pick_band_tile(8, 50, min_band_cols=bad)
  # Conv passes it through: the tiles it picks change, the values do not.
  tiles = []
  real = banded._banded_rows
  monkeypatch.setattr(banded, '_banded_rows', lambda x, k, s, tile: tiles.append(tile)
                      or real(x, k, s, tile))
  x = jax.random.normal(jax.random.key(1), (2, 12, 12, 3))
  conv = layers.Conv(50, 5, impl='banded')
  v = conv.init(KEY, x)
  ys = [layers.Conv(50, 5, impl='banded', min_band_cols=m).apply(v, x) for m in (192, 1)]
  assert tiles[-2:] == [4, 1]
  np.testing.assert_allclose(ys[0], ys[1], rtol=1e-5, atol=1e-5)
