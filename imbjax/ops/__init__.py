"""Convolution and pooling lowered four ways, as pure functions (`imbjax.ops`).

The population engine `jax.vmap`s a whole train step over a leading model axis, so
every model brings its own kernels. On XLA:CPU a vmapped `lax.conv_general_dilated`
with per-model kernels becomes a grouped convolution (several times slower), and
inside `lax.scan` its weight-gradient convolutions land in slow layouts
(benchmarks/README.md). This package therefore offers (one module per
lowering; `imbjax.models.layers.Conv` picks among them with `impl=`):

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

Which lowering wins, per model and backend, is measured, not derived: the figures are in
benchmarks/README.md ("Convolution lowering micro-benchmark" for this package's pieces,
"Results on this CPU" and "GPU (H200)" for the engine's step), and each model's choice
is its 'auto' table (`imbjax.models.auto_impl`).
"""

from imbjax.ops.banded import MIN_BAND_COLS, banded_conv, banded_kernel, pick_band_tile
from imbjax.ops.choice import CONCRETE_IMPLS, CONV_IMPLS, resolve_conv_impl
from imbjax.ops.im2col import im2col_slices, im2col_xla_patches
from imbjax.ops.pooling import max_pool
from imbjax.ops.winograd import pick_winograd_tile, winograd_conv, winograd_matrices

__all__ = ['CONV_IMPLS', 'CONCRETE_IMPLS', 'resolve_conv_impl', 'im2col_slices',
           'im2col_xla_patches', 'banded_kernel', 'MIN_BAND_COLS', 'pick_band_tile',
           'banded_conv',
           'winograd_matrices', 'pick_winograd_tile', 'winograd_conv', 'max_pool']
