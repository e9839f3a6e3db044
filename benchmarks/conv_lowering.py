"""Micro-benchmark: convolution lowering for a vmapped population under `lax.scan`.

Times P LeNet-5 models (own parameters, own batches) taking SGD steps as
`lax.scan(vmap(value_and_grad(loss)))`, for each lowering: 'xla' (lax.conv, grouped
under vmap), 'im2col' with slicing patches, 'im2col' with
`lax.conv_general_dilated_patches`, 'banded' (rows x banded kernel) and 'winograd'
(a 1-D Winograd transform along the width); the patch setting (`Conv.patches`, passed
as a conv option) applies to 'im2col' only. Prints images/s (all models together) and
the ratio to the first variant measured in the same run; figures in benchmarks/README.md.

  python benchmarks/conv_lowering.py --models 8 --steps 20 --batch 64 [--model allcnn]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import optax

from imbjax import models

# variant name -> `Conv.patches`
_PATCHES = {'slices': 'slices', 'xla_patches': 'xla'}


def _make_runner(name: str, impl: str, patches: str, p: int, steps: int, batch: int):
  net = models.get(name, num_classes=10, conv_impl=impl,
                   conv_options={'patches': _PATCHES[patches]})
  shape = models.input_shape(name)

  def loss_fn(params, x, y, key):
    logits = net.apply({'params': params}, x, train=True, rngs={'dropout': key})
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  def step(params, inp):
    x, y, key = inp
    loss, g = jax.value_and_grad(loss_fn)(params, x, y, key)
    return jax.tree.map(lambda a, b: a - 0.01 * b, params, g), loss

  def run(params, xs, ys, keys):
    return jax.lax.scan(jax.vmap(step), params, (xs, ys, keys))

  k = jax.random.key(0)
  params = jax.vmap(lambda kk: net.init(kk, jnp.zeros((1, *shape)), train=False)['params'])(
      jax.random.split(k, p))
  xs = jax.random.normal(k, (steps, p, batch, *shape))
  ys = jax.random.randint(k, (steps, p, batch), 0, 10)
  keys = jax.random.split(k, (steps, p))
  return jax.jit(run), (params, xs, ys, keys)


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument('--model', default='lenet5', choices=models.names()[:2])
  ap.add_argument('--models', type=int, default=8)
  ap.add_argument('--steps', type=int, default=20)
  ap.add_argument('--batch', type=int, default=64)
  ap.add_argument('--repeats', type=int, default=3)
  ap.add_argument('--variants',
                  default='xla:slices,im2col:slices,im2col:xla_patches,banded:slices',
                  help='comma-separated impl:patches pairs; the first is the reference')
  a = ap.parse_args()
  print(f'backend={jax.default_backend()} model={a.model} P={a.models} '
        f'steps={a.steps} batch={a.batch}', flush=True)
  results = {}
  variants = [tuple(v.split(':')) for v in a.variants.split(',')]
  for impl, patches in variants:
    fn, args = _make_runner(a.model, impl, patches, a.models, a.steps, a.batch)
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    compile_s = time.perf_counter() - t0
    best = float('inf')
    for _ in range(a.repeats):
      t0 = time.perf_counter()
      jax.block_until_ready(fn(*args))
      best = min(best, time.perf_counter() - t0)
    ips = a.models * a.steps * a.batch / best
    results[(impl, patches)] = ips
    print(f'{impl:7s} {patches:12s} first call {compile_s:6.1f}s  best {best:7.3f}s  '
          f'{ips:8.0f} img/s  x{ips / results[variants[0]]:.2f} vs {variants[0]}', flush=True)


if __name__ == '__main__':
  main()
