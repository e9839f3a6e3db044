"""The names of the convolution lowerings and what 'auto' resolves to."""

from __future__ import annotations

import jax

CONV_IMPLS = ('auto', 'xla', 'im2col', 'banded', 'winograd')
CONCRETE_IMPLS = ('xla', 'im2col', 'banded', 'winograd')


def resolve_conv_impl(conv_impl: str,
                      auto: tuple[str, str] = ('im2col', 'xla')) -> str:
  """Maps a requested convolution lowering to a concrete one.

  Args:
    conv_impl: one of 'auto', 'xla', 'im2col', 'banded'.
    auto: what 'auto' means, as (on CPU, on any other backend), chosen by
      `jax.default_backend()`. The default suits a model nobody has measured; the
      registered networks pass their own measured pair (`models.get`).

  Returns:
    'xla', 'im2col' or 'banded'.

  Raises:
    ValueError: if `conv_impl` is not one of `CONV_IMPLS`.
  """
  if conv_impl not in CONV_IMPLS:
    raise ValueError(f'unknown conv_impl {conv_impl!r}; expected one of {CONV_IMPLS}')
  if conv_impl == 'auto':
    return auto[0] if jax.default_backend() == 'cpu' else auto[1]
  return conv_impl
