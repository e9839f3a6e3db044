"""A study config's checks and its fingerprint: what must hold before anything runs.

This module owns two decisions about a `ml_collections.ConfigDict` study config
(`experiments/configs/default.py` lists every field):

* `validate_config` refuses a config that cannot run, before any data loads, any JAX
  computation or any file is written, naming the field and the accepted values.
* `fingerprint` is the part of the config that a workdir's stored rows depend on. A
  rerun in the same workdir must have the same fingerprint. It is the whole config
  *minus* an explicit list of fields that cannot change a stored number
  (:data:`EXECUTION_FIELDS`) or that enter each row's run key instead
  (:data:`GRID_FIELDS`), so a field added to the config later is covered by default.

Example::

    validate_config(config)          # ValueError naming the field, or nothing
    store.check_config(fingerprint(config), version=imbjax.__version__)
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

from imbjax import engine
from imbjax import imbalance
from imbjax import methods as methods_lib
from imbjax import models
from imbjax import optim
from imbjax.study.grid import PROFILES

# Fields that choose how a study is executed or reported, never what a stored row holds
# ("a row is a function of its key"). Each entry says why.
EXECUTION_FIELDS: dict[str, str] = {
    "population_size": "how many models train together; a model's plan, key and "
                       "numbers do not depend on its neighbours (only group_id, a "
                       "provenance column, changes)",
    "chunk_steps": "steps per compiled call; the loop is exact across chunk boundaries. "
                   "It only spaces the log points of the curves in `extra` (each point "
                   "is the same number at its step)",
    "eval_batch_size": "evaluation examples per model per step; the same function "
                       "(eval-mode BatchNorm), float reassociation only: XLA:CPU's "
                       "matmuls sum in another order for another batch (LeNet-5 "
                       "logits ~4e-6 apart between batches of 1,000 and 125)",
    "conv_impl": "the lowering of the convolutions; same function, float "
                 "reassociation only",
    "model_block": "models per device per step; same function, scheduling only",
    "checkpoint_every": "Orbax checkpoint spacing; a resumed group equals an "
                        "uninterrupted one",
    "make_figures": "whether the binary draws figures from the store",
    "verbose": "progress lines",
    "table_by_repetition": "only the layout of the printed tables",
    "selection": "how figures pick the best learning-rate run; read from the store by "
                 "the figures, never used in training",
}

# Grid lists that a rerun may extend: each value of theirs enters the run key of the
# rows it produces, so new values add rows and old rows keep their keys.
GRID_FIELDS: dict[str, str] = {
    "rhos": "the case's rho is in the run key",
    "mus": "the case's mu is in the run key",
    "case_list": "(rho, mu) pairs, in the run key",
    "repetitions": "the case's repetition is in the run key",
    "methods": "the row's method is in the run key",
    "resample_ratios": "the model's ratio is in the run key",
    "base_lrs": "the model's base learning rate is in the run key",
    "lr_repeats": "the model's learning-rate repeat is in the run key",
    "weight_decays": "the model's weight decay is in the run key",
    "data_seed": "the subset draw's seed is in the run key (when set), so one store may "
                 "hold several draws of the same study",
}

# compute_dtype is special-cased: bfloat16 computes other numbers than float32, so a
# workdir must not mix them; 'auto' enters as what it resolves to on this machine, and
# float32 is left out so that workdirs written before the field existed resume.
_SPECIAL_FIELDS = ("compute_dtype",)


def _plain(value: Any) -> Any:
  """JSON-ready value: ConfigDicts and mappings become dicts, tuples become lists."""
  if hasattr(value, "to_dict"):
    value = value.to_dict()
  if isinstance(value, Mapping):
    return {str(k): _plain(v) for k, v in sorted(value.items())}
  if isinstance(value, (tuple, list)):
    return [_plain(v) for v in value]
  return value


def fingerprint(config) -> dict:
  """The config fields a workdir's rows depend on (see the module docstring).

  Args:
    config: a study config.

  Returns:
    A JSON-ready dict: every field of the config except :data:`EXECUTION_FIELDS` and
    :data:`GRID_FIELDS`, with ``compute_dtype`` resolved ('auto' becomes what it means
    on this machine) and left out when it is float32.
  """
  skip = set(EXECUTION_FIELDS) | set(GRID_FIELDS) | set(_SPECIAL_FIELDS)
  out = {k: _plain(config[k]) for k in sorted(config.keys()) if k not in skip}
  dtype = engine.resolve_compute_dtype(config.get("compute_dtype", "auto"))
  if dtype != "float32":
    out["compute_dtype"] = dtype
  return out


# ----------------------------------------------------------------------------------------
# Validation.


def _finite(value) -> bool:
  try:
    return (not isinstance(value, bool)) and math.isfinite(float(value))
  except (TypeError, ValueError):
    return False


def _check_int(config, name: str, minimum: int | None) -> None:
  if name not in config:
    return
  value = config[name]
  if (isinstance(value, bool) or not isinstance(value, int)
      or (minimum is not None and value < minimum)):
    at_least = "" if minimum is None else f" >= {minimum}"
    raise ValueError(f"config.{name} must be an integer{at_least}, got {value!r}")


def _check_list(config, name: str, *, ok, accepted: str, empty_ok: bool = False,
                normal=float) -> None:
  """A grid list: non-empty, every entry accepted, no entry twice."""
  values = config.get(name)
  if values is None or isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
    raise ValueError(f"config.{name} must be a tuple of {accepted}, got {values!r}")
  if not values and not empty_ok:
    raise ValueError(f"config.{name} is empty; it must list at least one of {accepted}")
  seen = set()
  for v in values:
    if not ok(v):
      raise ValueError(f"config.{name} holds {v!r}; accepted: {accepted}")
    key = normal(v)
    if key in seen:
      raise ValueError(f"config.{name} lists {v!r} twice ({tuple(values)!r}); each "
                       f"entry must be distinct")
    seen.add(key)


def _check_choice(config, name: str, accepted) -> None:
  if name not in config:
    return
  value = config[name]
  if value not in accepted:
    raise ValueError(f"config.{name} must be one of {list(accepted)}, got {value!r}")


def _check_numbers(where: str, value) -> None:
  """Every number inside a (nested) value is finite."""
  if isinstance(value, Mapping) or hasattr(value, "to_dict"):
    for k, v in _plain(value).items():
      _check_numbers(f"{where}.{k}", v)
  elif isinstance(value, (tuple, list)):
    for v in value:
      _check_numbers(where, v)
  elif isinstance(value, (int, float)) and not isinstance(value, bool):
    if not math.isfinite(value):
      raise ValueError(f"{where} must be finite, got {value!r}")


def validate_config(config, *, check_paths: bool = True, model=None) -> None:
  """Refuses a config that cannot run, before any data loads or JAX computation.

  Args:
    config: a study config.
    check_paths: whether a non-empty ``data_dir`` must exist on this machine.
    model: the user's module when `train_and_evaluate` got one (`config.model` then only
      names it).

  Raises:
    ValueError: naming the first bad field, its value and the accepted values.
  """
  # What is trained.
  _check_list(config, "methods", ok=lambda m: isinstance(m, str),
              accepted=f"method names {list(methods_lib.names())}", normal=str)
  for name in config.methods:
    methods_lib.get(name)  # lists the known methods
  if model is None and ":" not in config.model and config.model not in models.names():
    raise ValueError(f"config.model {config.model!r} is unknown; known: "
                     f"{list(models.names())}, or 'package.module:Name' of a "
                     f"flax.linen.Module")
  _check_choice(config, "profile", PROFILES)
  _check_choice(config, "minority", imbalance.MINORITY_CHOICES)
  _check_choice(config, "input", ("device", "stream"))
  _check_choice(config, "compute_dtype", engine.COMPUTE_DTYPES)
  _check_choice(config, "selection", ("test", "validation"))

  # The imbalance grid.
  case_list = config.get("case_list")
  if case_list:
    if config.profile != "step":
      raise ValueError(f"config.case_list holds (rho, mu) pairs of step imbalance; "
                       f"config.profile is {config.profile!r}")
    _check_list(config, "case_list", normal=lambda p: (float(p[0]), float(p[1])),
                ok=lambda p: (len(p) == 2 and _finite(p[0]) and float(p[0]) >= 1
                              and _finite(p[1]) and 0 < float(p[1]) < 1),
                accepted="(rho, mu) pairs with rho >= 1 and 0 < mu < 1")
  elif config.profile in ("step", "linear", "exponential"):
    _check_list(config, "rhos", ok=lambda r: _finite(r) and float(r) >= 1,
                accepted="finite imbalance ratios rho >= 1")
    if config.profile == "step":
      _check_list(config, "mus", ok=lambda m: _finite(m) and 0 < float(m) < 1,
                  accepted="minority fractions mu with 0 < mu < 1")
  _check_int(config, "repetitions", 1)
  _check_list(config, "resample_ratios", ok=lambda r: _finite(r) and float(r) >= 1,
              accepted="finite residual imbalance ratios >= 1 (1 = balanced)")
  if not isinstance(config.max_count, int) or config.max_count < 0:
    raise ValueError(f"config.max_count must be an integer >= 0 (0 = the smallest "
                     f"class), got {config.max_count!r}")
  fraction = config.get("validation_fraction", 0.0)
  if not _finite(fraction) or not 0 <= float(fraction) < 1:
    raise ValueError(f"config.validation_fraction must be a number in [0, 1), got "
                     f"{fraction!r}")

  # Optimisation.
  _check_int(config, "iterations", 1)
  _check_int(config, "batch_size", 1)
  _check_list(config, "base_lrs", ok=lambda v: _finite(v) and float(v) > 0,
              accepted="finite learning rates > 0")
  _check_int(config, "lr_repeats", 1)
  if not _finite(config.weight_decay) or float(config.weight_decay) < 0:
    raise ValueError(f"config.weight_decay must be a finite number >= 0, got "
                     f"{config.weight_decay!r}")
  if config.get("weight_decays"):
    _check_list(config, "weight_decays", ok=lambda v: _finite(v) and float(v) >= 0,
                accepted="finite weight decays >= 0")
  if not _finite(config.momentum) or not 0 <= float(config.momentum) < 1:
    raise ValueError(f"config.momentum must be a number in [0, 1), got "
                     f"{config.momentum!r}")
  kwargs = _plain(config.get("schedule_kwargs") or {})
  _check_numbers("config.schedule_kwargs", kwargs)
  if config.schedule == "linear":
    kwargs.setdefault("total_steps", config.iterations)  # as engine.Trainer does
  try:
    optim.check_schedule(config.schedule, kwargs)
  except ValueError as e:
    raise ValueError(f"config.schedule / config.schedule_kwargs: {e}") from None

  # Execution.
  _check_int(config, "population_size", 1)
  _check_int(config, "chunk_steps", 1)
  _check_int(config, "eval_batch_size", 1)
  _check_int(config, "checkpoint_every", 0)
  _check_int(config, "curve_test_examples", 0)
  _check_int(config, "seed", None)

  if check_paths and config.get("data_dir"):
    if not os.path.isdir(os.path.expanduser(config.data_dir)):
      raise ValueError(f"config.data_dir {config.data_dir!r} does not exist or is not a "
                       f"directory (relative to {os.getcwd()}); give the directory that "
                       f"holds the {config.dataset!r} files, or '' for the default "
                       f"location")
