"""Shared by the ops tests: an unoptimised jit and the every-tile check against flax."""

import functools

import jax
import numpy as np
from flax import linen as nn

from imbjax.models import layers

KEY = jax.random.key(0)
# These tests check numbers, not speed: skipping LLVM's optimisation passes makes the
# XLA:CPU compiles (which dominate the run time) ~4x faster. CPU-only option.
jit = functools.partial(
    jax.jit, compiler_options=({'xla_backend_optimization_level': 0}
                               if jax.default_backend() == 'cpu' else None))


def check_every_tile_against_flax(conv, x, k, strides, p, allowed, ytol, gtol):
  """`conv(x, kernel, strides, pads, tile)` for every tile width the output allows (the
  divisors of its width that pass `allowed`): values and the kernel and input gradients
  equal `flax.linen.Conv`'s."""
  ref = nn.Conv(6, (k, k), strides=strides,
                padding='VALID' if p == 'VALID' else [(p, p)] * 2)
  v = ref.init(KEY, x)
  wo = ref.apply(v, x).shape[2]
  pads = layers._padding_pairs(p, (k, k))
  loss = lambda f: (lambda kern, x: (f(kern, x) ** 2).sum())
  want = jax.grad(loss(lambda kern, x: ref.apply({'params': {**v['params'], 'kernel': kern}},
                                                 x) - v['params']['bias']), (0, 1))
  want_y = ref.apply(v, x) - v['params']['bias']
  want_g = want(v['params']['kernel'], x)
  tiles = [d for d in range(1, wo + 1) if wo % d == 0 and allowed(d)]
  assert len(tiles) > 1
  for tile in tiles:
    f = lambda kern, x, tile=tile: conv(x, kern, strides, pads, tile)
    np.testing.assert_allclose(jit(f)(v['params']['kernel'], x), want_y, rtol=ytol,
                               atol=ytol)
    for g, w in zip(jit(jax.grad(loss(f), (0, 1)))(v['params']['kernel'], x), want_g):
      np.testing.assert_allclose(g, w, rtol=gtol, atol=gtol)
