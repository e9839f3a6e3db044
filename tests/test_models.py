"""Tests for imbjax.models: the paper's networks, their registry and conv lowerings.

Truths used: parameter counts from the paper's tables (and per-layer formulas),
a NumPy float64 LeNet-5, `flax.linen.Conv` / `nn.max_pool`, the Caffe filler
definitions, and the two lowerings checked against each other (logits and gradients,
one model and a vmapped population of three).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from imbjax import models
from imbjax.models import layers

KEY = jax.random.key(0)


def _init(name, impl, shape, num_classes=10, key=KEY):
  net = models.get(name, num_classes=num_classes, conv_impl=impl)
  return net, net.init(key, jnp.zeros(shape), train=False)


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
  with pytest.raises(ValueError, match=r"'fft'.*auto.*xla.*im2col"):
    models.get('lenet5', num_classes=10, conv_impl='fft')
  for bad in (1, 0, 2.5, True):
    with pytest.raises(ValueError, match='num_classes'):
      models.get('lenet5', num_classes=bad)
  with pytest.raises(ValueError, match='padding'):
    layers.Conv(4, 3, padding='SAME').init(KEY, jnp.zeros((1, 5, 5, 1)))
  with pytest.raises(ValueError, match='impl'):
    layers.max_pool(jnp.zeros((1, 4, 4, 1)), 2, 2, 'fft')


def test_auto_resolves_by_backend():
  assert jax.default_backend() == 'cpu'
  assert models.get('lenet5', num_classes=10).conv_impl == 'im2col'
  assert layers.resolve_conv_impl('xla') == 'xla'


# ------------------------------------------------------------------ counts and shapes

def test_lenet5_parameter_count_and_shape():
  net, v = _init('lenet5', 'im2col', (2, 28, 28, 1))
  assert list(v) == ['params']
  assert list(v['params']) == ['conv1', 'conv2', 'fc1', 'fc2']
  expected = (5 * 5 * 1 * 20 + 20) + (5 * 5 * 20 * 50 + 50) + (4 * 4 * 50 * 500 + 500) \
      + (500 * 10 + 10)
  assert expected == 431_080 == _count(v['params'])
  assert net.apply(v, jnp.zeros((3, 28, 28, 1)), train=False).shape == (3, 10)


def test_allcnn_parameter_count_and_shape():
  net, v = _init('allcnn', 'im2col', (1, 32, 32, 3))
  conv = lambda k, i, o: k * k * i * o + o
  expected = (conv(3, 3, 96) + 2 * conv(3, 96, 96) + conv(3, 96, 192) + 2 * conv(3, 192, 192)
              + conv(3, 192, 192) + conv(1, 192, 192) + conv(1, 192, 10))
  assert expected == 1_369_738 == _count(v['params'])
  assert list(v['params']) == [f'conv{i}' for i in range(1, 10)]
  # Table 3 feature-map sizes, read off the intermediates.
  _, inter = net.apply(v, jnp.zeros((1, 32, 32, 3)), train=False,
                       capture_intermediates=True, mutable=['intermediates'])
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
  v, inter = jax.eval_shape(
      lambda x: net.init_with_output(KEY, x, train=False, capture_intermediates=True)[::-1],
      jnp.zeros((1, 224, 224, 3)))
  assert _count(v['params']) == 5_418_792
  assert _count(v['batch_stats']) == 5_760  # mean + var for each BN channel
  inter = inter['intermediates']
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
  small, v_small = _init('resnet10', 'im2col', (1, 32, 32, 3), num_classes=1000)
  assert small.apply(v_small, jnp.zeros((2, 64, 48, 3)), train=False).shape == (2, 1000)
  with pytest.raises(ValueError, match='32'):
    small.apply(v_small, jnp.zeros((1, 31, 64, 3)), train=False)


def test_output_layers_exist_and_are_the_paper_output_layers():
  shapes = {'lenet5': (1, 28, 28, 1), 'allcnn': (1, 32, 32, 3), 'resnet10': (1, 32, 32, 3)}
  nc = 7
  for name, shape in shapes.items():
    net = models.get(name, num_classes=nc)
    params = jax.eval_shape(lambda x: net.init(KEY, x, train=False), jnp.zeros(shape))['params']
    out = models.output_layers(name)
    assert set(out) <= set(params), (name, out)
    # The layer producing the logits is always among them.
    assert list(params)[-1] in out
    assert params[list(params)[-1]]['kernel'].shape[-1] == nc
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
  _, v = _init('resnet10', 'im2col', (1, 32, 32, 3), num_classes=1000, key=jax.random.key(4))
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


@pytest.mark.parametrize('impl', ['xla', 'im2col'])
def test_lenet5_matches_numpy_reference(impl):
  net, v = _init('lenet5', impl, (1, 28, 28, 1))
  # Non-zero biases so their placement is checked too.
  v = jax.tree.map(lambda a: a + 0.01 if a.ndim == 1 else a, v)
  x = jax.random.normal(jax.random.key(1), (4, 28, 28, 1))
  np.testing.assert_allclose(net.apply(v, x, train=False), _np_lenet(v['params'], x),
                             rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('k,s,p,hw', [(5, 1, 'VALID', 12), (3, 1, 1, 9), (3, 2, 1, 9),
                                      (3, 2, 1, 8), (7, 2, 3, 11), (1, 2, 0, 7), (1, 1, 0, 5)])
def test_conv_lowerings_match_flax_conv(k, s, p, hw):
  x = jax.random.normal(jax.random.key(2), (2, hw, hw + 1, 3))
  ref = nn.Conv(4, (k, k), strides=s, padding='VALID' if p == 'VALID' else [(p, p)] * 2)
  v = ref.init(KEY, x)
  v = jax.tree.map(lambda a: a + 0.1 if a.ndim == 1 else a, v)
  want = ref.apply(v, x)
  for impl in ('xla', 'im2col'):
    got = layers.Conv(4, k, strides=s, padding=p, impl=impl).apply(v, x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  pads = layers._padding_pairs(p, (k, k))
  np.testing.assert_array_equal(layers.im2col_xla_patches(x, (k, k), (s, s), pads),
                                layers.im2col_slices(x, (k, k), (s, s), pads))


@pytest.mark.parametrize('window,stride,pad,hw', [(2, 2, 0, 8), (2, 2, 0, 9), (3, 2, 1, 8),
                                                  (3, 2, 1, 7), (3, 2, 0, 9)])
def test_max_pool_lowerings_match_reduce_window(window, stride, pad, hw):
  x = jax.random.normal(jax.random.key(5), (2, hw, hw, 3))
  want = nn.max_pool(x, (window, window), (stride, stride), [(pad, pad)] * 2)
  np.testing.assert_array_equal(layers.max_pool(x, window, stride, 'im2col', pad), want)
  np.testing.assert_array_equal(layers.max_pool(x, window, stride, 'xla', pad), want)


# ------------------------------------------------------- im2col == xla, grads, vmap

_CASES = {
    'lenet5': ((2, 28, 28, 1), 10),
    'allcnn': ((2, 32, 32, 3), 10),
    'resnet10': ((4, 32, 32, 3), 12),
}


def _loss_and_grads(name, impl, variables, x, y, key, train):
  net = models.get(name, num_classes=_CASES[name][1], conv_impl=impl)
  mutable = ['batch_stats'] if (train and models.has_batch_stats(name)) else False

  def loss_fn(params, x):
    out = net.apply({**variables, 'params': params}, x, train=train,
                    rngs={'dropout': key}, mutable=mutable)
    logits, new_state = out if mutable else (out, {})
    logp = jax.nn.log_softmax(logits)
    return -jnp.take_along_axis(logp, y[:, None], axis=1).mean(), (logits, new_state)

  (loss, aux), grads = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
      variables['params'], x)
  return loss, aux, grads


@pytest.mark.parametrize('name', list(_CASES))
def test_im2col_equals_xla_single_and_vmapped(name):
  shape, nc = _CASES[name]
  train = True  # dropout (same key in both lowerings) and batch statistics in play
  net = models.get(name, num_classes=nc, conv_impl='xla')
  kx, ky, kd = jax.random.split(jax.random.key(7), 3)

  # One model.
  variables = net.init(KEY, jnp.zeros(shape), train=False)
  x = jax.random.normal(kx, shape)
  y = jax.random.randint(ky, shape[:1], 0, nc)
  run = jax.jit(_loss_and_grads, static_argnums=(0, 1, 6))
  res = {impl: run(name, impl, variables, x, y, kd, train) for impl in ('xla', 'im2col')}
  _assert_trees_close(res['im2col'], res['xla'])
  assert float(jnp.abs(res['xla'][2][0]['conv1']['kernel']).max()) > 0

  # A population of three differently initialised models, each with its own batch.
  p = 3
  vs = jax.vmap(lambda k: net.init(k, jnp.zeros(shape), train=False))(jax.random.split(KEY, p))
  xs = jax.random.normal(kx, (p, *shape))
  ys = jax.random.randint(ky, (p, shape[0]), 0, nc)
  kds = jax.random.split(kd, p)
  pop = {impl: jax.jit(jax.vmap(lambda v, x, y, k, impl=impl: _loss_and_grads(
      name, impl, v, x, y, k, train)))(vs, xs, ys, kds) for impl in ('xla', 'im2col')}
  _assert_trees_close(pop['im2col'], pop['xla'])
  # ...and the population is the models taken one at a time.
  for i in (0, p - 1):
    one = run(name, 'im2col', jax.tree.map(lambda a: a[i], vs), xs[i], ys[i], kds[i], train)
    _assert_trees_close(jax.tree.map(lambda a: a[i], pop['im2col']), one)
  assert not np.allclose(pop['xla'][0][0], pop['xla'][0][1])  # models really differ


def test_resnet10_eval_mode_equal_and_batch_stats_update():
  shape, nc = _CASES['resnet10']
  net = {impl: models.get('resnet10', num_classes=nc, conv_impl=impl) for impl in ('xla', 'im2col')}
  v = net['xla'].init(KEY, jnp.zeros(shape), train=False)
  x = jax.random.normal(jax.random.key(8), shape) * 2 + 1
  ev = {k: m.apply(v, x, train=False) for k, m in net.items()}
  _assert_trees_close(ev['im2col'], ev['xla'])
  _, state = net['im2col'].apply(v, x, train=True, mutable=['batch_stats'])
  # Stem BN running mean moves 10% of the way (momentum 0.9) toward the batch mean.
  conv1 = jax.lax.conv_general_dilated(
      x, v['params']['conv1']['kernel'], (2, 2), [(3, 3)] * 2,
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  np.testing.assert_allclose(state['batch_stats']['bn1']['mean'],
                             0.1 * conv1.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------- dropout

def test_allcnn_dropout_train_vs_eval():
  net, v = _init('allcnn', 'im2col', (2, 32, 32, 3))
  x = jax.random.normal(jax.random.key(9), (2, 32, 32, 3))
  apply = jax.jit(net.apply, static_argnames='train')
  a = apply(v, x, train=True, rngs={'dropout': jax.random.key(1)})
  a2 = apply(v, x, train=True, rngs={'dropout': jax.random.key(1)})
  b = apply(v, x, train=True, rngs={'dropout': jax.random.key(2)})
  e1 = apply(v, x, train=False, rngs={'dropout': jax.random.key(1)})
  e2 = apply(v, x, train=False, rngs={'dropout': jax.random.key(2)})
  np.testing.assert_array_equal(a, a2)
  assert not np.allclose(a, b)
  np.testing.assert_array_equal(e1, e2)
  np.testing.assert_array_equal(e1, net.apply(v, x, train=False))
  assert not np.allclose(a, e1)
  assert np.all(np.asarray(e1) >= 0)  # Table 3 keeps a ReLU on the last convolution
  with pytest.raises(Exception, match='dropout'):
    net.apply(v, x, train=True)
