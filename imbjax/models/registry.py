"""The model registry: networks by name, their input shape, output layers and 'auto' table.

`get(name, ...)` is the one builder: it resolves the convolution lowering ('auto' from the
model's own table, `auto_impl`), makes the convolution op (`functools.partial(Conv,
impl=..., dtype=...)`) and passes the factory only the keyword arguments it accepts,
so a user's module needs no `conv_impl` or `dtype` field:

  >>> import flax.linen as nn
  >>> from imbjax import models
  >>> class Tiny(nn.Module):
  ...   num_classes: int
  ...   @nn.compact
  ...   def __call__(self, x, train=False):
  ...     return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))
  >>> models.register('tiny', Tiny, input_shape=(8, 8, 1), output_layers=('Dense_0',))
  >>> models.get('tiny', num_classes=3).num_classes
  3
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from imbjax import ops
from imbjax.models.layers import Conv

# The keyword arguments `get` offers a factory, each only if the factory names it:
# num_classes (required), conv (a `Conv` ModuleDef with the lowering and dtype bound),
# conv_impl (the resolved lowering's name), dtype, max_pool (`ops.max_pool` with the
# lowering bound).
_OFFERED = ('num_classes', 'conv', 'conv_impl', 'dtype', 'max_pool')


@dataclasses.dataclass(frozen=True)
class _Entry:
  factory: Callable[..., nn.Module]
  input_shape: tuple[int, int, int]
  output_layers: tuple[str, ...]
  has_batch_stats: bool | None
  auto_impl: tuple[str, str] | None
  accepts: frozenset[str]


_REGISTRY: dict[str, _Entry] = {}


def _accepted(factory: Callable[..., Any]) -> frozenset[str]:
  try:
    params = inspect.signature(factory).parameters
  except (TypeError, ValueError) as e:
    raise ValueError(f'cannot read the signature of model factory {factory!r}: {e}') from e
  named = {n for n, p in params.items()
           if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
  return frozenset(named & set(_OFFERED))


def register(name: str, factory: Callable[..., nn.Module], *,
             input_shape: Sequence[int], output_layers: Sequence[str],
             has_batch_stats: bool | None = None,
             auto_impl: tuple[str, str] | None = None,
             overwrite: bool = False) -> None:
  """Adds a network to the registry, so `get(name, ...)` and the trainers can build it.

  Args:
    name: the registry name.
    factory: a Flax module class or a function returning a module; called with
      `num_classes=` and, if it names them, `conv=` (a `Conv` ModuleDef with the
      lowering and dtype bound: call it like `Conv`), `conv_impl=` (the resolved
      lowering's name), `dtype=` and `max_pool=` (`ops.max_pool` with the lowering
      bound). The module's `apply(variables, x, train=..., rngs=...)` gives logits.
    input_shape: default input (H, W, C).
    output_layers: top-level 'params' keys of the output layers (two-phase training
      fine-tunes them).
    has_batch_stats: whether its variables hold 'batch_stats'; None: found out once,
      on first use, from an abstract `init` (no computation).
    auto_impl: what conv_impl='auto' means for it, as (on CPU, on any other backend),
      e.g. ('im2col', 'xla'); None (no measurements): plain XLA convolutions, 'xla'.
    overwrite: replace an existing entry of that name instead of refusing.

  Raises:
    ValueError: for a taken name (without `overwrite`), a factory that does not take
      `num_classes`, a bad input_shape, output_layers, has_batch_stats or auto_impl.
  """
  if not isinstance(name, str) or not name:
    raise ValueError(f'model name must be a non-empty string, got {name!r}')
  if name in _REGISTRY and not overwrite:
    raise ValueError(f'model {name!r} is already registered; pass overwrite=True to '
                     'replace it')
  if not callable(factory):
    raise ValueError(f'factory for {name!r} must be callable, got {factory!r}')
  accepts = _accepted(factory)
  if 'num_classes' not in accepts:
    raise ValueError(f'factory for {name!r} must take a num_classes keyword argument')
  shape = tuple(input_shape) if isinstance(input_shape, Sequence) else None
  if (shape is None or len(shape) != 3
      or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape)):
    raise ValueError(f'input_shape must be (H, W, C), three positive ints, got '
                     f'{input_shape!r}')
  layers = (tuple(output_layers)
            if isinstance(output_layers, Sequence) and not isinstance(output_layers, str)
            else None)
  if not layers or any(not isinstance(k, str) or not k for k in layers):
    raise ValueError(f'output_layers must be a non-empty sequence of parameter names, '
                     f'got {output_layers!r}')
  if has_batch_stats is not None and not isinstance(has_batch_stats, bool):
    raise ValueError(f'has_batch_stats must be None or a bool, got {has_batch_stats!r}')
  if auto_impl is not None:
    auto_impl = tuple(auto_impl)
    if len(auto_impl) != 2 or any(i not in ops.CONCRETE_IMPLS for i in auto_impl):
      raise ValueError(f'auto_impl must be None or (on CPU, elsewhere), each one of '
                       f'{ops.CONCRETE_IMPLS}, got {auto_impl!r}')
  _REGISTRY[name] = _Entry(factory, shape, layers, has_batch_stats, auto_impl, accepts)


def names() -> tuple[str, ...]:
  """Returns the registered model names, the paper's three first."""
  return tuple(_REGISTRY)


def _entry(name: str) -> _Entry:
  if name not in _REGISTRY:
    raise ValueError(f'unknown model {name!r}; expected one of {names()}')
  return _REGISTRY[name]


def resolve_impl(name: str, conv_impl: str = 'auto') -> str:
  """The concrete lowering `get(name, conv_impl=...)` builds with.

  'auto' is looked up in the model's table (`register(auto_impl=...)`) for
  `jax.default_backend()`; a model without one gets 'xla'.

  Raises:
    ValueError: for an unknown name or conv_impl.
  """
  return ops.resolve_conv_impl(conv_impl, auto=_entry(name).auto_impl)


def get(name: str, *, num_classes: int, conv_impl: str = 'auto', dtype: Any = jnp.float32,
        conv_options: Mapping[str, Any] | None = None) -> nn.Module:
  """Builds a registered network.

  Args:
    name: one of `names()`.
    num_classes: number of output logits (>= 2).
    conv_impl: 'auto', 'xla', 'im2col', 'banded' or 'winograd'; 'auto' is resolved now
      by `resolve_impl` (the model's table and `jax.default_backend()`).
    dtype: computation dtype (parameters stay float32).
    conv_options: further `Conv` fields bound into the convolution op, e.g.
      {'min_band_cols': 1} or {'patches': 'xla'}; only for a factory that takes `conv`.

  Returns:
    An unbound Flax Linen module; `apply(variables, x, train, rngs=...)` gives logits.

  Raises:
    ValueError: for an unknown name or conv_impl, num_classes < 2, or conv_options for
      a model that takes no `conv`.
  """
  entry = _entry(name)
  if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
    raise ValueError(f'num_classes must be an int >= 2, got {num_classes!r}')
  impl = resolve_impl(name, conv_impl)
  if conv_options and 'conv' not in entry.accepts:
    raise ValueError(f'model {name!r} takes no conv op, so conv_options '
                     f'{dict(conv_options)!r} cannot apply')
  offered = {'num_classes': num_classes, 'conv_impl': impl, 'dtype': dtype,
             'conv': functools.partial(Conv, impl=impl, dtype=dtype, **(conv_options or {})),
             'max_pool': functools.partial(ops.max_pool, impl=impl)}
  return entry.factory(**{k: v for k, v in offered.items() if k in entry.accepts})


def output_layers(name: str) -> tuple[str, ...]:
  """Top-level 'params' keys of the output layers that two-phase training fine-tunes.

  lenet5 -> ('fc2',), allcnn -> ('conv8', 'conv9') (the two last 1x1 convolutions,
  paper Sec. 3.3.2), resnet10 -> ('fc',).

  Raises:
    ValueError: for an unknown name.
  """
  return _entry(name).output_layers


def input_shape(name: str) -> tuple[int, int, int]:
  """Default input (H, W, C) of the network (as used in the paper for its three).

  Raises:
    ValueError: for an unknown name.
  """
  return _entry(name).input_shape


def auto_impl(name: str) -> tuple[str, str] | None:
  """The model's 'auto' table, (on CPU, elsewhere), or None (then 'auto' is 'xla').

  Raises:
    ValueError: for an unknown name.
  """
  return _entry(name).auto_impl


@functools.lru_cache(maxsize=None)
def _probe_batch_stats(name: str, entry: _Entry) -> bool:
  net = get(name, num_classes=2, conv_impl='xla')
  x = jnp.zeros((1, *entry.input_shape))
  shapes = jax.eval_shape(lambda x: net.init(jax.random.key(0), x, train=False), x)
  return 'batch_stats' in shapes


def has_batch_stats(name: str) -> bool:
  """Whether the network carries a 'batch_stats' collection (True for resnet10).

  Raises:
    ValueError: for an unknown name.
  """
  entry = _entry(name)
  if entry.has_batch_stats is not None:
    return entry.has_batch_stats
  return _probe_batch_stats(name, entry)
