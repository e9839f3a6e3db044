"""Tests for imbjax.ops.im2col: the two patch builders against each other."""

import jax
import numpy as np
import pytest

from imbjax.models import layers
from imbjax.ops import im2col
from tests.conv_checks import jit as _jit


@pytest.mark.parametrize('k,s,p,hw', [(5, 1, 'VALID', 12), (3, 2, 1, 9), (7, 2, 3, 10),
                                      (1, 2, 0, 7)])
def test_im2col_patch_builders_agree(k, s, p, hw):
  x = jax.random.normal(jax.random.key(2), (2, hw, hw + 1, 3))
  pads = layers._padding_pairs(p, (k, k))
  patches_xla, patches_slices = _jit(lambda x: (
      im2col.im2col_xla_patches(x, (k, k), (s, s), pads),
      im2col.im2col_slices(x, (k, k), (s, s), pads)))(x)
  np.testing.assert_array_equal(patches_xla, patches_slices)
