"""ResNet-10 layer by layer: each convolution (+ BN + ReLU) per lowering, against PyTorch.

For every convolution of ResNet-10 at the given input size and batch, the time of one
training step's forward and backward pass (gradients of the parameters, and of the
input except at the stem, whose input is data) of `Conv(impl) -> BatchNorm -> ReLU`:
  * 'plain': one jitted call;
  * 'scan': the engine's form, SGD steps in a `lax.scan` carrying the parameters (ms per
    step; the input stays fixed, the parameters change, so nothing is hoisted);
  * 'torch': the same layer in PyTorch (Conv2d -> BatchNorm2d -> ReLU, one thread).
Everything on one thread (`--xla_cpu_multi_thread_eigen=false`, torch.set_num_threads(1));
run it pinned to one core for a clean comparison. Medians of `--repeats` calls, ms.

  taskset -c 0 python -m benchmarks.resnet_layers [--image-size 64] [--batch 16] \
      [--impls im2col,xla] [--repeats 10]

Last line: JSON {layer: {impl: {'plain': ms, 'scan': ms}, 'torch': ms}}.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from imbjax.engine.devices import add_xla_flag
from imbjax.models.layers import Conv
from imbjax.models.resnet import STAGE_STRIDES, STAGE_WIDTHS


def layers(image_size: int) -> list[tuple[str, int, int, int, int, int, int]]:
  """(name, input side, C_in, C_out, kernel, stride, pad) of ResNet-10's convolutions."""
  side = -(-image_size // 2)  # the stem's output
  out = [("stem 7x7/2", image_size, 3, 64, 7, 2, 3)]
  side = -(-side // 2)  # the stem's max-pool
  c_in = 64
  for i, (width, stride) in enumerate(zip(STAGE_WIDTHS, STAGE_STRIDES), start=1):
    out.append((f"stage{i} conv1 3x3/{stride}", side, c_in, width, 3, stride, 1))
    o = -(-side // stride)
    out.append((f"stage{i} conv2 3x3/1", o, width, width, 3, 1, 1))
    if stride != 1 or c_in != width:
      out.append((f"stage{i} proj 1x1/{stride}", side, c_in, width, 1, stride, 0))
    side, c_in = o, width
  return out


class _Layer(nn.Module):
  impl: str
  features: int
  kernel: int
  stride: int
  pad: int

  @nn.compact
  def __call__(self, x):
    y = Conv(self.features, self.kernel, strides=self.stride, padding=self.pad,
             use_bias=False, impl=self.impl)(x)
    return nn.relu(nn.BatchNorm(use_running_average=False)(y))


def _median_ms(f, *args, repeats: int, per_call: int = 1) -> float:
  jax.block_until_ready(f(*args))
  ts = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(f(*args))
    ts.append(time.perf_counter() - t)
  return float(np.median(ts)) * 1e3 / per_call


def time_jax(impl, spec, batch, repeats, scan_steps=4):
  name, side, c_in, c_out, k, s, p = spec
  x = jnp.asarray(np.random.default_rng(0).standard_normal((batch, side, side, c_in),
                                                           np.float32))
  layer = _Layer(impl, c_out, k, s, p)
  v = layer.init(jax.random.key(0), x)
  stats = v["batch_stats"]
  with_dx = not name.startswith("stem")

  def loss(params, x):
    y, _ = layer.apply({"params": params, "batch_stats": stats}, x,
                       mutable=["batch_stats"])
    return (y * y).mean()

  grad = jax.grad(loss, argnums=(0, 1) if with_dx else 0)

  def sgd(params, _):
    g = grad(params, x)
    g = g[0] if with_dx else g
    return jax.tree.map(lambda a, b: a - 1e-3 * b, params, g), None

  plain = _median_ms(jax.jit(grad), v["params"], x, repeats=repeats)
  scanned = _median_ms(jax.jit(lambda p: jax.lax.scan(sgd, p, None, length=scan_steps)[0]),
                       v["params"], repeats=repeats, per_call=scan_steps)
  return plain, scanned


def time_torch(spec, batch, repeats):
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(1)
  name, side, c_in, c_out, k, s, p = spec
  conv = torch.nn.Conv2d(c_in, c_out, k, s, p, bias=False)
  bn = torch.nn.BatchNorm2d(c_out)
  x = torch.randn(batch, c_in, side, side, requires_grad=not name.startswith("stem"))

  def step():
    y = torch.relu(bn(conv(x)))
    (y * y).mean().backward()

  for _ in range(3):
    step()
  ts = []
  for _ in range(repeats):
    t = time.perf_counter()
    step()
    ts.append(time.perf_counter() - t)
  return float(np.median(ts)) * 1e3


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--image-size", type=int, default=64)
  ap.add_argument("--batch", type=int, default=16)
  ap.add_argument("--impls", default="im2col,xla")
  ap.add_argument("--repeats", type=int, default=10)
  ap.add_argument("--no-torch", action="store_true")
  a = ap.parse_args(argv)
  impls = a.impls.split(",")
  print(f"# ResNet-10 layers, {a.image_size}x{a.image_size} input, batch {a.batch}, "
        f"one thread; ms per training step (forward + backward): plain jit / in a scan",
        flush=True)
  out = {}
  for spec in layers(a.image_size):
    row = {}
    for impl in impls:
      plain, scanned = time_jax(impl, spec, a.batch, a.repeats)
      row[impl] = {"plain": round(plain, 2), "scan": round(scanned, 2)}
    if not a.no_torch:
      row["torch"] = round(time_torch(spec, a.batch, a.repeats), 2)
    out[spec[0]] = row
    cells = [f"{i} {row[i]['plain']:7.2f} / {row[i]['scan']:7.2f}" for i in impls]
    cells += [f"torch {row['torch']:7.2f}"] if "torch" in row else []
    print(f"{spec[0]:22s} | " + " | ".join(cells), flush=True)
  total = {i: round(sum(r[i]["scan"] for r in out.values()), 1) for i in impls}
  if not a.no_torch:
    total["torch"] = round(sum(r["torch"] for r in out.values()), 1)
  print("# sum over the layers (scan; torch):", total)
  print(json.dumps(out))
  return out


if __name__ == "__main__":
  # One-threaded XLA:CPU, set before JAX starts its backend (the imports above do not).
  # Here and not at import: importing this module (tests do, for `layers`) must leave the
  # importing process's XLA_FLAGS as they were.
  add_xla_flag("--xla_cpu_multi_thread_eigen=false")
  main()
