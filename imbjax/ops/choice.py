"""The names of the convolution lowerings and how 'auto' resolves against a model's table.

The tables themselves belong to the models (`imbjax.models.register(auto_impl=...)`).
"""

from __future__ import annotations

import jax

CONV_IMPLS = ('auto', 'xla', 'im2col', 'banded', 'winograd')
CONCRETE_IMPLS = ('xla', 'im2col', 'banded', 'winograd')


def resolve_conv_impl(conv_impl: str, auto: tuple[str, str] | None = None) -> str:
  """Maps a requested convolution lowering to a concrete one.

  Args:
    conv_impl: one of `CONV_IMPLS`.
    auto: what 'auto' means, as (on CPU, on any other backend), chosen by
      `jax.default_backend()`: a model's measured table (`imbjax.models.auto_impl`).
      None, for a model nobody has measured: plain XLA convolutions, 'xla'.

  Returns:
    One of `CONCRETE_IMPLS`: 'xla', 'im2col', 'banded' or 'winograd'.

  Raises:
    ValueError: if `conv_impl` is not one of `CONV_IMPLS`.
  """
  if conv_impl not in CONV_IMPLS:
    raise ValueError(f'unknown conv_impl {conv_impl!r}; expected one of {CONV_IMPLS}')
  if conv_impl == 'auto':
    if auto is None:
      return 'xla'
    return auto[0] if jax.default_backend() == 'cpu' else auto[1]
  return conv_impl
