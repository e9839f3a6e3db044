"""Tests for imbjax.models: the paper's networks, their registry and the `Conv` module.

Truths used: parameter counts from the paper's tables (and per-layer formulas),
a NumPy float64 LeNet-5, `flax.linen.Conv` / `nn.max_pool`, the Caffe filler
definitions, and the two lowerings checked against each other (logits and gradients,
one model and a vmapped population of three).
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from imbjax import models, ops
from imbjax.models import layers
from imbjax.ops import banded, pooling, winograd

KEY = jax.random.key(0)
# These tests check numbers, not speed: skipping LLVM's optimisation passes makes the
# XLA:CPU compiles (which dominate this module's run time) ~4x faster. CPU-only option.
_jit = functools.partial(
    jax.jit, compiler_options=({'xla_backend_optimization_level': 0}
                               if jax.default_backend() == 'cpu' else None))


def _init(name, impl, shape, num_classes=10, key=KEY):
  # jit: eager init dispatches (and compiles) every small op one by one.
  net = models.get(name, num_classes=num_classes, conv_impl=impl)
  return net, _jit(lambda k: net.init(k, jnp.zeros(shape), train=False))(key)


# name -> (input batch shape, classes, rtol). Small inputs keep the test CPU-cheap
# (All-CNN works from 16x16: 16 -> 8 -> 4 -> 2x2 after the valid conv).
# ResNet-10 in train mode normalises its 1x1 last stage over only 4 values per channel,
# which amplifies float32 reordering differences to ~1e-4 of a leaf's scale.
_CASES = {
    'lenet5': ((2, 28, 28, 1), 10, 1e-5),
    'allcnn': ((2, 16, 16, 3), 10, 1e-5),
    'resnet10': ((4, 32, 32, 3), 12, 2e-4),
}


P = 3  # population size for the vmapped checks


@functools.lru_cache(maxsize=None)
def _population(name):
  """P differently initialised models of `_CASES[name]` stacked on a leading axis.

  Cached: an init compile costs seconds and several tests share it.
  """
  shape, nc, _ = _CASES[name]
  net = models.get(name, num_classes=nc, conv_impl='xla')
  return _jit(jax.vmap(lambda k: net.init(k, jnp.zeros(shape), train=False)))(
      jax.random.split(jax.random.key(11), P))


def _shapes(name, impl, shape, num_classes=10):
  net = models.get(name, num_classes=num_classes, conv_impl=impl)
  return net, jax.eval_shape(lambda x: net.init(KEY, x, train=False), jnp.zeros(shape))


def _count(tree):
  return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))


def _assert_trees_close(a, b, rtol=1e-5):
  """Leafwise allclose with atol scaled to the leaf's magnitude (float32 reorderings)."""
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(la, lb):
    y = np.asarray(y)
    scale = max(float(np.abs(y).max()), 1e-12)
    np.testing.assert_allclose(np.asarray(x), y, rtol=rtol, atol=rtol * scale)


# ----------------------------------------------------------------------------- registry

def test_registry_names_and_metadata():
  assert models.names() == ('lenet5', 'allcnn', 'resnet10')
  assert models.input_shape('lenet5') == (28, 28, 1)
  assert models.input_shape('allcnn') == (32, 32, 3)
  assert models.input_shape('resnet10') == (224, 224, 3)
  assert [models.has_batch_stats(n) for n in models.names()] == [False, False, True]


@pytest.mark.parametrize('fn', [models.output_layers, models.input_shape,
                                models.has_batch_stats,
                                lambda n: models.get(n, num_classes=10)])
def test_unknown_model_name_is_refused_with_the_list(fn):
  with pytest.raises(ValueError, match=r"'vgg16'.*lenet5.*allcnn.*resnet10"):
    fn('vgg16')


def test_bad_arguments_are_refused():
  with pytest.raises(ValueError, match=r"'fft'.*auto.*xla.*im2col.*banded.*winograd"):
    models.get('lenet5', num_classes=10, conv_impl='fft')
  for bad in (1, 0, 2.5, True):
    with pytest.raises(ValueError, match='num_classes'):
      models.get('lenet5', num_classes=bad)
  with pytest.raises(ValueError, match='padding'):
    layers.Conv(4, 3, padding='SAME').init(KEY, jnp.zeros((1, 5, 5, 1)))
  with pytest.raises(ValueError, match='impl'):
    pooling.max_pool(jnp.zeros((1, 4, 4, 1)), 2, 2, 'fft')


@pytest.mark.parametrize('backend', ['cpu', 'gpu', 'tpu'])
def test_auto_resolves_by_backend_and_model(backend, monkeypatch):
  monkeypatch.setattr(jax, 'default_backend', lambda: backend)
  cpu = backend == 'cpu'
  # The lowering `get` resolved is the one bound into the model's conv op.
  impl = lambda net: net.conv.keywords['impl']
  assert models.resolve_impl('lenet5') == ('winograd' if cpu else 'banded')
  assert impl(models.get('lenet5', num_classes=10)) == ('winograd' if cpu else 'banded')
  assert impl(models.get('allcnn', num_classes=10)) == 'im2col'
  assert impl(models.get('resnet10', num_classes=10)) == ('im2col' if cpu else 'xla')
  # No table (a model nobody measured): plain XLA convolutions.
  assert ops.resolve_conv_impl('auto') == 'xla'
  for impl_ in ('xla', 'im2col', 'banded', 'winograd'):
    assert ops.resolve_conv_impl(impl_) == impl_
    assert impl(models.get('allcnn', num_classes=10, conv_impl=impl_)) == impl_


class _TinyCNN(nn.Module):
  """A user's network: no conv_impl, dtype or conv field."""
  num_classes: int

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.relu(nn.Conv(4, (3, 3))(x))
    return nn.Dense(self.num_classes, name='head')(x.reshape(x.shape[0], -1))


class _TinyOnConv(nn.Module):
  """A user's network built on the op `get` passes, with batch norm."""
  num_classes: int
  conv: object = layers.Conv

  @nn.compact
  def __call__(self, x, train=False):
    x = self.conv(4, 3, name='conv')(x)
    x = nn.BatchNorm(use_running_average=not train, name='bn')(x)
    return nn.Dense(self.num_classes, name='head')(x.mean(axis=(1, 2)))


@pytest.fixture
def user_models():
  added = []

  def register(name, *args, **kwargs):
    models.register(name, *args, **kwargs)
    added.append(name)

  yield register
  for name in added:  # leave the registry as the other tests expect it
    models.registry._REGISTRY.pop(name, None)


def test_register_a_user_model_and_build_it(user_models, monkeypatch):
  user_models('tiny', _TinyCNN, input_shape=(8, 8, 1), output_layers=['head'])
  assert models.names()[-1] == 'tiny' and models.names()[:3] == ('lenet5', 'allcnn', 'resnet10')
  net = models.get('tiny', num_classes=3, conv_impl='im2col', dtype=jnp.bfloat16)
  assert isinstance(net, _TinyCNN) and net.num_classes == 3
  x = jnp.ones((2, *models.input_shape('tiny')))
  v = net.init(KEY, x)
  assert net.apply(v, x).shape == (2, 3)
  assert models.output_layers('tiny') == ('head',)
  assert models.has_batch_stats('tiny') is False  # found out from an abstract init
  # 'auto' for a model without a table is 'xla' on every backend.
  assert models.auto_impl('tiny') is None
  for backend in ('cpu', 'gpu'):
    monkeypatch.setattr(jax, 'default_backend', lambda b=backend: b)
    assert models.resolve_impl('tiny') == 'xla'
  monkeypatch.undo()
  with pytest.raises(ValueError, match="takes no conv op"):
    models.get('tiny', num_classes=3, conv_options={'min_band_cols': 1})
  # A model on `Conv` receives the op with the lowering, dtype and options bound.
  user_models('tiny_conv', _TinyOnConv, input_shape=(8, 8, 1), output_layers=('head',),
              auto_impl=('banded', 'im2col'))
  net = models.get('tiny_conv', num_classes=2, conv_options={'band_tile': 2})
  assert net.conv.keywords == {'impl': models.resolve_impl('tiny_conv'),
                               'dtype': jnp.float32, 'band_tile': 2}
  assert models.has_batch_stats('tiny_conv') is True
  x = jnp.ones((2, 8, 8, 1))
  for impl in ('xla', 'banded'):
    net = models.get('tiny_conv', num_classes=2, conv_impl=impl)
    assert net.apply(net.init(KEY, x), x).shape == (2, 2)


def test_register_refuses_bad_entries(user_models):
  user_models('tiny', _TinyCNN, input_shape=(8, 8, 1), output_layers=('head',))
  ok = dict(input_shape=(8, 8, 1), output_layers=('head',))
  with pytest.raises(ValueError, match="'tiny' is already registered; pass overwrite=True"):
    models.register('tiny', _TinyCNN, **ok)
  with pytest.raises(ValueError, match="'lenet5' is already registered"):
    models.register('lenet5', _TinyCNN, **ok)
  user_models('tiny', _TinyCNN, input_shape=(9, 9, 2), output_layers=('head',),
              overwrite=True)
  assert models.input_shape('tiny') == (9, 9, 2)
  for bad in ((8, 8), (8, 8, 0), (8, 8, 1.0), 8, '881'):
    with pytest.raises(ValueError, match='input_shape must be'):
      models.register('other', _TinyCNN, input_shape=bad, output_layers=('head',))
  for bad in ((), 'head', ('head', '')):
    with pytest.raises(ValueError, match='output_layers must be'):
      models.register('other', _TinyCNN, input_shape=(8, 8, 1), output_layers=bad)
  with pytest.raises(ValueError, match="auto_impl must be None or.*got \\('fft', 'xla'\\)"):
    models.register('other', _TinyCNN, auto_impl=('fft', 'xla'), **ok)
  with pytest.raises(ValueError, match='has_batch_stats must be'):
    models.register('other', _TinyCNN, has_batch_stats=1, **ok)
  with pytest.raises(ValueError, match='num_classes'):
    models.register('other', lambda classes: _TinyCNN(classes), **ok)
  for bad in ('', None):
    with pytest.raises(ValueError, match='non-empty string'):
      models.register(bad, _TinyCNN, **ok)
  assert 'other' not in models.names()


# ------------------------------------------------------------------ counts and shapes

def test_lenet5_parameter_count_and_shape():
  net, v = _shapes('lenet5', 'im2col', (2, 28, 28, 1))
  assert list(v) == ['params']
  assert list(v['params']) == ['conv1', 'conv2', 'fc1', 'fc2']
  expected = (5 * 5 * 1 * 20 + 20) + (5 * 5 * 20 * 50 + 50) + (4 * 4 * 50 * 500 + 500) \
      + (500 * 10 + 10)
  assert expected == 431_080 == _count(v['params'])
  out = jax.eval_shape(lambda v, x: net.apply(v, x, train=False), v, jnp.zeros((3, 28, 28, 1)))
  assert out.shape == (3, 10)


def test_allcnn_parameter_count_and_shape():
  net, v = _shapes('allcnn', 'im2col', (1, 32, 32, 3))
  conv = lambda k, i, o: k * k * i * o + o
  expected = (conv(3, 3, 96) + 2 * conv(3, 96, 96) + conv(3, 96, 192) + 2 * conv(3, 192, 192)
              + conv(3, 192, 192) + conv(1, 192, 192) + conv(1, 192, 10))
  assert expected == 1_369_738 == _count(v['params'])
  assert list(v['params']) == [f'conv{i}' for i in range(1, 10)]
  # Table 3 feature-map sizes, read off the intermediates.
  _, inter = jax.eval_shape(lambda v, x: net.apply(
      v, x, train=False, capture_intermediates=True, mutable=['intermediates']),
      v, jnp.zeros((1, 32, 32, 3)))
  sizes = {k: inter['intermediates'][k]['__call__'][0].shape[1:]
           for k in inter['intermediates'] if k.startswith('conv')}
  assert sizes == {'conv1': (32, 32, 96), 'conv2': (32, 32, 96), 'conv3': (16, 16, 96),
                   'conv4': (16, 16, 192), 'conv5': (16, 16, 192), 'conv6': (8, 8, 192),
                   'conv7': (6, 6, 192), 'conv8': (6, 6, 192), 'conv9': (6, 6, 10)}


def _resnet10_count(num_classes):
  """ResNet-10 parameters from per-layer formulas (convs without bias, BN scale+shift)."""
  conv = lambda k, i, o: k * k * i * o
  bn = lambda c: 2 * c
  total = conv(7, 3, 64) + bn(64)
  c_in = 64
  for c in (64, 128, 256, 512):
    total += conv(3, c_in, c) + bn(c) + conv(3, c, c) + bn(c)
    if c != c_in:
      total += conv(1, c_in, c) + bn(c)
    c_in = c
  return total + 512 * num_classes + num_classes


def test_resnet10_parameter_count_shapes_and_structure():
  assert _resnet10_count(1000) == 5_418_792  # the number in the docstrings
  net = models.get('resnet10', num_classes=1000, conv_impl='im2col')
  # Full-size shapes are free with eval_shape: 224 -> 112 (stem) -> 56 -> 56/28/14/7.
  _, v = jax.eval_shape(
      lambda x: net.init_with_output(KEY, x, train=False, capture_intermediates=True),
      jnp.zeros((1, 224, 224, 3)))
  assert _count(v['params']) == 5_418_792
  assert _count(v['batch_stats']) == 5_760  # mean + var for each BN channel
  inter = v['intermediates']
  assert inter['conv1']['__call__'][0].shape == (1, 112, 112, 64)
  assert [inter[f'stage{i}']['__call__'][0].shape for i in range(1, 5)] == [
      (1, 56, 56, 64), (1, 28, 28, 128), (1, 14, 14, 256), (1, 7, 7, 512)]
  assert inter['__call__'][0].shape == (1, 1000)
  # "nine convolutional layers and one fully connected" (+ 3 projection shortcuts).
  paths = ['/'.join(str(k.key) for k in p)
           for p, _ in jax.tree_util.tree_leaves_with_path(v['params'])]
  kernels = [p for p in paths if p.endswith('kernel')]
  assert len([p for p in kernels if 'proj' not in p and not p.startswith('fc')]) == 9
  assert sorted(p for p in kernels if 'proj' in p) == [
      f'stage{i}/proj_conv/kernel' for i in (2, 3, 4)]
  assert not any(p.endswith('bias') and 'conv' in p for p in paths)
  # Small inputs: any side >= 32 works, below is refused.
  for hw in ((32, 32), (64, 48), (33, 57)):
    out = jax.eval_shape(lambda x: net.init_with_output(KEY, x, train=False)[0],
                         jnp.zeros((2, *hw, 3)))
    assert out.shape == (2, 1000)
  with pytest.raises(ValueError, match='32'):
    jax.eval_shape(lambda x: net.init(KEY, x, train=False), jnp.zeros((1, 31, 64, 3)))


def test_output_layers_exist_and_are_the_paper_output_layers():
  shapes = {'lenet5': (1, 28, 28, 1), 'allcnn': (1, 32, 32, 3), 'resnet10': (1, 32, 32, 3)}
  nc = 7
  for name, shape in shapes.items():
    net = models.get(name, num_classes=nc)
    params = jax.eval_shape(lambda x: net.init(KEY, x, train=False), jnp.zeros(shape))['params']
    out = models.output_layers(name)
    assert set(out) <= set(params), (name, out)
    # The layer producing the logits (the only one with nc outputs) is among them.
    producing = [k for k in params if 'kernel' in params[k]
                 and params[k]['kernel'].shape[-1] == nc]
    assert len(producing) == 1 and producing[0] in out, (name, producing)
  assert models.output_layers('lenet5') == ('fc2',)
  assert models.output_layers('resnet10') == ('fc',)
  assert models.output_layers('allcnn') == ('conv8', 'conv9')
  params = jax.eval_shape(lambda x: models.get('allcnn', num_classes=nc).init(
      KEY, x, train=False), jnp.zeros((1, 32, 32, 3)))['params']
  # "two last convolutional layers with kernels of size 1"
  assert [k for k in params if params[k]['kernel'].shape[:2] == (1, 1)] == ['conv8', 'conv9']


# --------------------------------------------------------------------- initialisation

def _kernel_leaves(params):
  return [(p, np.asarray(a)) for p, a in jax.tree_util.tree_leaves_with_path(params)
          if p[-1].key == 'kernel']


@pytest.mark.parametrize('name,shape', [('lenet5', (1, 28, 28, 1)), ('allcnn', (1, 32, 32, 3))])
def test_caffe_xavier_init(name, shape):
  _, v = _init(name, 'im2col', shape, key=jax.random.key(3))
  for path, w in _kernel_leaves(v['params']):
    fan_in = int(np.prod(w.shape[:-1]))
    limit = math.sqrt(3.0 / fan_in)  # Caffe xavier, variance_norm FAN_IN
    n = w.size
    assert np.abs(w).max() <= limit, path
    assert np.abs(w).max() >= limit * (1 - 10.0 / n), path
    # sample std of uniform(-a, a): a / sqrt(3), standard error ~ std * sqrt(0.2 / n)
    std = limit / math.sqrt(3)
    assert abs(w.std() - std) <= 5 * std * math.sqrt(0.2 / n), path
    assert abs(w.mean()) <= 5 * std / math.sqrt(n), path
  biases = [a for p, a in jax.tree_util.tree_leaves_with_path(v['params']) if p[-1].key == 'bias']
  assert biases and all(np.all(np.asarray(b) == 0) for b in biases)


def test_msra_init_resnet10():
  v = jax.tree.map(lambda a: a[0], _population('resnet10'))
  kernels = _kernel_leaves(v['params'])
  assert len(kernels) == 13  # 9 layer convs + 3 projections + fc
  for path, w in kernels:
    fan_in = int(np.prod(w.shape[:-1]))
    std = math.sqrt(2.0 / fan_in)  # Caffe msra
    n = w.size
    assert abs(w.std() - std) <= 5 * std * math.sqrt(0.5 / n), path
    assert abs(w.mean()) <= 5 * std / math.sqrt(n), path
    if n > 10_000:  # untruncated: a truncated normal would stop at ~2.3 std
      assert np.abs(w).max() > 3.5 * std, path
  flat = {'/'.join(k.key for k in p): np.asarray(a)
          for p, a in jax.tree_util.tree_leaves_with_path(v)}
  scales = [a for k, a in flat.items() if k.endswith('scale')]
  shifts = [a for k, a in flat.items() if 'bn' in k and k.endswith('bias')]
  assert len(scales) == len(shifts) == 12
  assert all(np.all(a == 1) for a in scales) and all(np.all(a == 0) for a in shifts)
  assert np.all(flat['params/fc/bias'] == 0)
  assert all(np.all(a == (k.endswith('var'))) for k, a in flat.items()
             if k.startswith('batch_stats'))


# ------------------------------------------------------------ numerics vs truths

def _np_lenet(params, x):
  """Float64 NumPy LeNet-5 of Table 2 (no ReLU after the convolutions)."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)

  def conv(x, k, b):
    kh, kw = k.shape[:2]
    ho, wo = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    out = np.zeros((x.shape[0], ho, wo, k.shape[-1]))
    for i in range(kh):
      for j in range(kw):
        out += x[:, i:i + ho, j:j + wo, :] @ k[i, j]
    return out + b

  def pool(x):
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))

  x = pool(conv(np.asarray(x, np.float64), p['conv1']['kernel'], p['conv1']['bias']))
  x = pool(conv(x, p['conv2']['kernel'], p['conv2']['bias']))
  x = np.maximum(x.reshape(x.shape[0], -1) @ p['fc1']['kernel'] + p['fc1']['bias'], 0)
  return x @ p['fc2']['kernel'] + p['fc2']['bias']


@pytest.mark.parametrize('impl', ['xla', 'im2col', 'banded', 'winograd'])
def test_lenet5_matches_numpy_reference(impl):
  net, v = _init('lenet5', impl, (1, 28, 28, 1))
  # Non-zero biases so their placement is checked too.
  v = jax.tree.map(lambda a: a + 0.01 if a.ndim == 1 else a, v)
  x = jax.random.normal(jax.random.key(1), (4, 28, 28, 1))
  np.testing.assert_allclose(_jit(functools.partial(net.apply, train=False))(v, x),
                             _np_lenet(v['params'], x),
                             rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('k,s,p,hw', [(5, 1, 'VALID', 12), (3, 2, 1, 9), (7, 2, 3, 10),
                                      (1, 2, 0, 7)])
def test_conv_lowerings_match_flax_conv(k, s, p, hw):
  x = jax.random.normal(jax.random.key(2), (2, hw, hw + 1, 3))
  ref = nn.Conv(4, (k, k), strides=s, padding='VALID' if p == 'VALID' else [(p, p)] * 2)

  @_jit
  def run(x):
    v = jax.tree.map(lambda a: a + 0.1 if a.ndim == 1 else a, ref.init(KEY, x))
    got = [layers.Conv(4, k, strides=s, padding=p, impl=impl).apply(v, x)
           for impl in ('xla', 'im2col', 'banded') + (('winograd',) if s == 1 else ())]
    return ref.apply(v, x), got

  want, got = run(x)
  for g in got:
    np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-5)


def test_lenet5_fuses_conv1_with_its_pool_on_cpu_only(monkeypatch):
  calls = []
  real = banded._banded_pool_one_channel
  monkeypatch.setattr(banded, '_banded_pool_one_channel',
                      lambda *a: calls.append(a[0].shape) or real(*a))
  x = jnp.zeros((2, 28, 28, 1))
  for impl in ('banded', 'winograd'):
    models.get('lenet5', num_classes=10, conv_impl=impl).init(KEY, x)
  assert calls == [(2, 28, 28, 1)] * 2
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  models.get('lenet5', num_classes=10, conv_impl='banded').init(KEY, x)
  assert len(calls) == 2
  # A pool that does not fit the output falls back (here: 24 columns, window 5).
  layers.Conv(4, 5, impl='banded', pool=5).init(KEY, x)
  assert len(calls) == 2


def test_conv_pool_rejects_bad_windows():
  for bad in (-1, 2.0, True):
    with pytest.raises(ValueError, match=f'Conv.pool must be 0 .* got {bad!r}'):
      layers.Conv(4, 3, pool=bad).init(KEY, jnp.zeros((1, 8, 8, 1)))


# ------------------------------------------------------- im2col == xla, grads, vmap

def _loss_and_grads(name, impl, variables, x, y, key):
  """Train-mode cross-entropy, its grads w.r.t. params and input, logits, new BN stats."""
  net = models.get(name, num_classes=_CASES[name][1], conv_impl=impl)
  mutable = ['batch_stats'] if models.has_batch_stats(name) else False

  def loss_fn(params, x):
    out = net.apply({**variables, 'params': params}, x, train=True,
                    rngs={'dropout': key}, mutable=mutable)
    logits, new_state = out if mutable else (out, {})
    logp = jax.nn.log_softmax(logits)
    return -jnp.take_along_axis(logp, y[:, None], axis=1).mean(), (logits, new_state)

  (loss, aux), grads = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
      variables['params'], x)
  return loss, aux, grads


@pytest.mark.parametrize('name', ['lenet5', 'allcnn',
                                  pytest.param('resnet10', marks=pytest.mark.slow)])
def test_im2col_equals_xla_single_and_vmapped(name):
  """Train mode: dropout (same key in both lowerings) and batch statistics in play."""
  shape, nc, rtol = _CASES[name]
  kx, ky, kd = jax.random.split(jax.random.key(7), 3)
  p = P  # a population of differently initialised models, each with its own batch
  vs = _population(name)
  xs = jax.random.normal(kx, (p, *shape))
  ys = jax.random.randint(ky, (p, shape[0]), 0, nc)
  kds = jax.random.split(kd, p)

  @_jit
  def run(vs, xs, ys, kds):
    one = _loss_and_grads(name, 'im2col', jax.tree.map(lambda a: a[0], vs), xs[0], ys[0],
                          kds[0])
    pop = {impl: jax.vmap(lambda v, x, y, k, impl=impl: _loss_and_grads(name, impl, v, x, y, k))(
        vs, xs, ys, kds) for impl in impls}
    return one, pop

  # 'banded' for the narrow-image model it is chosen for; it is exact for any model
  # (test_conv_lowerings_match_flax_conv) but costs W/KW times the multiply-adds.
  impls = (('xla', 'im2col', 'banded', 'winograd') if name == 'lenet5'
           else ('xla', 'im2col'))
  one, pop = run(vs, xs, ys, kds)
  _assert_trees_close(pop['im2col'], pop['xla'], rtol)
  for impl in ('banded', 'winograd'):
    if impl in pop:
      _assert_trees_close(pop[impl], pop['xla'], rtol)
  # One model alone (no vmap) is the population's first model under either lowering.
  _assert_trees_close(one, jax.tree.map(lambda a: a[0], pop['xla']), rtol)
  _assert_trees_close(one, jax.tree.map(lambda a: a[0], pop['im2col']), rtol)
  grads = pop['xla'][2][0]
  assert float(jnp.abs(grads['conv1']['kernel']).max()) > 0
  assert not np.allclose(grads['conv1']['kernel'][0], grads['conv1']['kernel'][1])


def test_resnet10_eval_mode_equal_and_batch_stats_update():
  shape, nc, _ = _CASES['resnet10']
  nets = {impl: models.get('resnet10', num_classes=nc, conv_impl=impl)
          for impl in ('xla', 'im2col')}
  v = jax.tree.map(lambda a: a[1], _population('resnet10'))
  x = jax.random.normal(jax.random.key(8), shape) * 2 + 1

  @_jit
  def run(v, x):
    ev = {k: m.apply(v, x, train=False) for k, m in nets.items()}
    _, state = nets['im2col'].apply(v, x, train=True, mutable=['batch_stats'])
    stem = jax.lax.conv_general_dilated(x, v['params']['conv1']['kernel'], (2, 2),
                                        [(3, 3)] * 2, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return ev, state, stem

  ev, state, stem = run(v, x)
  _assert_trees_close(ev['im2col'], ev['xla'])
  # Stem BN running mean moves 10% of the way (momentum 0.9) from 0 to the batch mean.
  np.testing.assert_allclose(state['batch_stats']['bn1']['mean'],
                             0.1 * stem.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------- dropout

def test_allcnn_dropout_train_vs_eval():
  shape = (2, 16, 16, 3)
  net, v = _init('allcnn', 'im2col', shape)
  x = jax.random.normal(jax.random.key(9), shape)

  @_jit
  def run(v, x):
    tr = lambda k: net.apply(v, x, train=True, rngs={'dropout': jax.random.key(k)})
    ev = lambda k: net.apply(v, x, train=False, rngs={'dropout': jax.random.key(k)})
    return tr(1), tr(2), ev(1), net.apply(v, x, train=False)

  a, b, e1, e0 = run(v, x)
  assert not np.allclose(a, b)
  np.testing.assert_array_equal(e1, e0)  # eval ignores the dropout key
  assert not np.allclose(a, e1)
  assert np.all(np.asarray(e1) >= 0)  # Table 3 keeps a ReLU on the last convolution
  with pytest.raises(Exception, match='dropout'):
    jax.eval_shape(lambda v, x: net.apply(v, x, train=True), v, x)


def test_lenet5_under_winograd_runs_conv1_banded_and_conv2_winograd(monkeypatch):
  # A one-channel conv1 gives Winograd's matmul K = 5; LeNet-5 keeps it banded.
  # (On CPU conv1 goes through its fused conv+pool, which is banded too; off CPU through
  # `banded_conv`.)
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  seen = {'banded': [], 'winograd': []}
  for name in seen:
    module = {'banded': banded, 'winograd': winograd}[name]
    real = getattr(module, f'{name}_conv')
    monkeypatch.setattr(module, f'{name}_conv',
                        lambda x, *a, real=real, name=name: seen[name].append(x.shape[-1])
                        or real(x, *a))
  net = models.get('lenet5', num_classes=10, conv_impl='winograd')
  net.init(KEY, jnp.zeros((2, 28, 28, 1)))
  assert seen == {'banded': [1], 'winograd': [20]}
