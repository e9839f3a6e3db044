"""Tests for imbjax.ops.pooling: every lowering of max pooling against `reduce_window`,
values and (with ties) gradients."""

import jax
import numpy as np
import pytest
from flax import linen as nn

from imbjax.ops import pooling
from tests.conv_checks import jit as _jit


@pytest.mark.parametrize('window,stride,pad,hw', [(2, 2, 0, 8), (2, 2, 0, 9), (3, 2, 1, 8),
                                                  (3, 2, 1, 7), (3, 2, 0, 9)])
def test_max_pool_lowerings_match_reduce_window(window, stride, pad, hw):
  x = jax.random.normal(jax.random.key(5), (2, hw, hw, 3))
  want = nn.max_pool(x, (window, window), (stride, stride), [(pad, pad)] * 2)
  for impl in ('xla', 'im2col', 'banded', 'winograd'):
    np.testing.assert_array_equal(
        _jit(lambda x, impl=impl: pooling.max_pool(x, window, stride, impl, pad))(x), want)


def test_banded_max_pool_gradient_goes_to_the_first_maximum_like_reduce_window():
  # Ties are the normal case for LeNet-5's conv1 over MNIST's zero background.
  x = jax.random.normal(jax.random.key(6), (2, 9, 8, 3))
  x = x.at[0, :4, :4, :].set(0.5).at[1, 2:6, 2:4, 1].set(-0.25)
  loss = lambda impl: (lambda x: (pooling.max_pool(x, 2, 2, impl) ** 3).sum())
  want = jax.grad(lambda x: (nn.max_pool(x, (2, 2), (2, 2)) ** 3).sum())(x)
  got = _jit(jax.grad(loss('banded')))(x)
  np.testing.assert_array_equal(got, want)
  # Exactly one element per 2x2 window of the tied block gets the gradient: the first.
  np.testing.assert_array_equal(np.asarray(got[0, :4, :4, 0]) != 0,
                                np.tile([[True, False], [False, False]], (2, 2)))
  # Same under vmap (the population engine's view).
  np.testing.assert_array_equal(_jit(jax.vmap(jax.grad(loss('banded'))))(x[:, None])[:, 0],
                                want)
  # A window of 12x12 = 144 positions (beyond int8's range for the stored index).
  big = jax.random.normal(jax.random.key(7), (1, 24, 12, 2)).at[0, 12:, :, 0].set(1.0)
  got = jax.grad(lambda x: (pooling.max_pool(x, 12, 12, 'banded') ** 3).sum())(big)
  np.testing.assert_array_equal(
      got, jax.grad(lambda x: (nn.max_pool(x, (12, 12), (12, 12)) ** 3).sum())(big))


@pytest.mark.parametrize('window,stride,pad,hw', [(3, 2, 1, 8), (3, 2, 1, 32), (3, 2, 0, 9),
                                                  (2, 3, 0, 10), (4, 3, 1, 11), (3, 1, 1, 6),
                                                  (12, 6, 0, 24)])
def test_overlapping_max_pool_gradient_goes_to_the_first_maximum_like_reduce_window(
    window, stride, pad, hw):
  # ResNet-10's stem pool (3x3/2, pad 1) with ties: a whole tied block, and a window
  # whose tie straddles two overlapping windows. The gradient of a position is the sum
  # of its windows' shares, in another order than select-and-scatter's: equal to
  # float rounding, and exactly zero where reduce_window's is.
  x = jax.random.normal(jax.random.key(8), (2, hw, hw, 3))
  x = x.at[0, :5, :5, :].set(0.5).at[1, 2:4, 1:6, 1].set(2.0)
  want = jax.grad(lambda x: (nn.max_pool(x, (window, window), (stride, stride),
                                         [(pad, pad)] * 2) ** 3).sum())(x)
  for impl in ('im2col', 'banded', 'winograd'):
    loss = lambda x, impl=impl: (pooling.max_pool(x, window, stride, impl, pad) ** 3).sum()
    got = _jit(jax.grad(loss))(x)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(got) == 0, np.asarray(want) == 0)
    np.testing.assert_allclose(_jit(jax.vmap(jax.grad(loss)))(x[:, None])[:, 0], want,
                               rtol=1e-6, atol=1e-6)
