"""Convolution and pooling lowered four ways, as pure functions (`imbjax.ops`).

The population engine `jax.vmap`s a whole train step over a leading model axis, so
every model brings its own kernels. On XLA:CPU a vmapped `lax.conv_general_dilated`
with per-model kernels becomes a grouped convolution (4-8x slower), and inside
`lax.scan` its weight-gradient convolutions land in slow layouts
(/work/shared/PERF-NOTES.md). This package therefore offers (one module per
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

from imbjax.ops.banded import banded_conv, banded_kernel, pick_band_tile
from imbjax.ops.choice import CONCRETE_IMPLS, CONV_IMPLS, resolve_conv_impl
from imbjax.ops.im2col import im2col_slices, im2col_xla_patches
from imbjax.ops.pooling import max_pool
from imbjax.ops.winograd import pick_winograd_tile, winograd_conv, winograd_matrices

__all__ = ['CONV_IMPLS', 'CONCRETE_IMPLS', 'resolve_conv_impl', 'im2col_slices',
           'im2col_xla_patches', 'banded_kernel', 'pick_band_tile', 'banded_conv',
           'winograd_matrices', 'pick_winograd_tile', 'winograd_conv', 'max_pool']
