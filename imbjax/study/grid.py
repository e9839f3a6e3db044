"""The grid of a study: cases, trained models, stored rows, run keys, groups."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zlib
from typing import Sequence

import jax
import numpy as np

from imbjax import imbalance
from imbjax import methods as methods_lib

PROFILES = ("step", "linear", "exponential", "balanced", "original")


def _hash32(*parts) -> int:
  return zlib.crc32("|".join(str(p) for p in parts).encode()) & 0x7FFFFFFF


@dataclasses.dataclass(frozen=True)
class Case:
  """One imbalanced training subset: a profile, its parameters and a repetition."""
  profile: str
  rho: float
  mu: float | None
  repetition: int

  @property
  def name(self) -> str:
    mu = "" if self.mu is None else f"_mu{self.mu:g}"
    return f"{self.profile}_rho{self.rho:g}{mu}_rep{self.repetition}"


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """One trained network: a case, a training method, its resampling ratio and LR."""
  case: Case
  method: methods_lib.Method
  ratio: float
  base_lr: float
  lr_repeat: int
  weight_decay: float | None = None   # None: the config's weight_decay (no grid axis)

  @property
  def source(self) -> "ModelSpec":
    """The phase-1 model a phase-2 model continues."""
    return dataclasses.replace(self, method=methods_lib.get(self.method.starts_from))

  def key(self, seed: int) -> jax.Array:
    """The model's key: from the training seed and what names the model, never from the
    data seed (so a new subset draw keeps the initialisation and the shuffles)."""
    base = jax.random.key(seed)
    wd = () if self.weight_decay is None else (f"wd{self.weight_decay:g}",)
    return jax.random.fold_in(base, _hash32(
        self.case.name, self.method.name, f"{self.ratio:g}", f"{self.base_lr:g}",
        self.lr_repeat, *wd))


@dataclasses.dataclass(frozen=True)
class RowSpec:
  """One results-store row: a (possibly evaluation-only) method on a trained model."""
  method: methods_lib.Method
  model: ModelSpec            # the trained model it scores

  def run_key(self, config) -> str:
    m = self.model
    text = json.dumps([
        config.dataset, config.model, m.case.profile, m.case.rho, m.case.mu,
        m.case.repetition, self.method.name, m.ratio, m.base_lr, m.lr_repeat,
        config.iterations, config.batch_size, config.seed] + _optional_key_parts(
            config, m), sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:20]


def _optional_key_parts(config, m: ModelSpec) -> list:
  """Run-key parts of the grid axes added later: present only when used, so the run
  keys of studies without them stay what they were."""
  parts = []
  if config.get("data_seed") is not None:
    parts.append(["data_seed", int(config.data_seed)])
  if m.weight_decay is not None:
    parts.append(["weight_decay", float(m.weight_decay)])
  return parts


def data_seed(config) -> int:
  """The seed of the subset draws (and the validation split): `config.data_seed`, or
  `config.seed` when it is None (one seed for everything, as before the field existed)."""
  value = config.get("data_seed")
  return int(config.seed if value is None else value)


def subset_key(config, case: Case) -> str:
  """Names a case's training subset: the same for every row trained on it."""
  text = json.dumps([config.dataset, case.name, data_seed(config), config.get("max_count"),
                     config.get("minority")], sort_keys=True)
  return hashlib.sha1(text.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------
# The grid.


def cases(config) -> list[Case]:
  """The imbalance cases of a config, in a stable order."""
  if config.profile not in PROFILES:
    raise ValueError(f"unknown profile {config.profile!r}; known: {PROFILES}")
  out = []
  for rep in range(config.repetitions):
    if config.profile in ("balanced", "original"):
      out.append(Case(config.profile, 1.0, None, rep))
      continue
    if config.get("case_list"):
      if config.profile != "step":
        raise ValueError("case_list holds (rho, mu) pairs of step imbalance; "
                         f"profile is {config.profile!r}")
      out.extend(Case("step", float(rho), float(mu), rep) for rho, mu in config.case_list)
      continue
    for rho in config.rhos:
      if config.profile == "step":
        for mu in config.mus:
          out.append(Case("step", float(rho), float(mu), rep))
      else:
        out.append(Case(config.profile, float(rho), None, rep))
  return out


def case_counts(config, case: Case, num_classes: int, max_count: int, *,
                available=None, class_names=None) -> np.ndarray | None:
  """Per-class training counts of a case (the imbalance profile, paper eq. 1-2).

  Args:
    available: per-class sizes of the training split; when given, a class that cannot
      hold its count is refused by name (and ``minority='short_first'`` needs them).
    class_names: for those messages.

  Returns:
    The counts, or None for the 'original' profile (the split as it comes).
  """
  if case.profile == "original":
    return None
  key = jax.random.fold_in(jax.random.key(data_seed(config)), _hash32("counts", case.name))
  return imbalance.case_counts(
      case.profile, num_classes, max_count, case.rho, case.mu, minority=config.minority,
      key=key, available=available, class_names=class_names, case=case.name)


def case_subset(config, case: Case, labels: np.ndarray, counts: np.ndarray) -> np.ndarray:
  if case.profile == "original":
    return np.arange(len(labels))
  key = jax.random.fold_in(jax.random.key(data_seed(config)), _hash32("subset", case.name))
  return np.asarray(imbalance.subsample(labels, counts, key))


def model_specs(config, case: Case) -> tuple[list[ModelSpec], list[RowSpec]]:
  """Trained models and stored rows of one case."""
  requested = [methods_lib.get(n) for n in config.methods]
  trained = methods_lib.closure(config.methods)
  ratios = tuple(float(r) for r in config.resample_ratios)
  specs, rows = [], []

  def ratios_of(m):
    # Partial levels apply to the resampling methods and everything built on them.
    root = m
    while root.starts_from or root.evaluates:
      root = methods_lib.get(root.starts_from or root.evaluates)
    return ratios if root.resamples else (1.0,)

  wds = [None if wd is None else float(wd) for wd in (config.get("weight_decays") or
                                                       (None,))]
  for lr in config.base_lrs:
    for wd in wds:
      for rep in range(config.lr_repeats):
        for m in trained:
          for r in ratios_of(m):
            specs.append(ModelSpec(case, m, r, float(lr), rep, wd))
        for m in requested:
          trained_name = m.evaluates or m.name
          for r in ratios_of(m):
            rows.append(RowSpec(m, ModelSpec(case, methods_lib.get(trained_name), r,
                                             float(lr), rep, wd)))
  return specs, rows


@dataclasses.dataclass
class Group:
  """Cases trained together as one population.

  Attributes:
    cases: the group's imbalance cases.
    group_id: a hash of the case names (a provenance column of the rows).
    run_keys: the run keys of the rows still to store, or None for all of the cases'
      rows. A rerun that extends the grid (a new learning rate, a new method) or
      regroups it (another `population_size`) sets it, so a group trains only the
      models its missing rows need and never recomputes a stored row.
  """
  cases: list[Case]
  group_id: str
  run_keys: tuple[str, ...] | None = None


def group_specs(config, group: Group) -> tuple[list[ModelSpec], list[RowSpec]]:
  """The models a group trains and the rows it stores.

  With ``group.run_keys`` set, only those rows, and only the models they need: each
  row's model and, for a phase-2 model, the phase-1 model it continues.
  """
  specs, rows = [], []
  for case in group.cases:
    s, r = model_specs(config, case)
    specs += s
    rows += r
  if group.run_keys is None:
    return specs, rows
  keep = set(group.run_keys)
  rows = [r for r in rows if r.run_key(config) in keep]
  needed = {r.model for r in rows} | {r.model.source for r in rows
                                       if r.model.method.is_phase2}
  return [s for s in specs if s in needed], rows


def _phase1_models(config, case: Case) -> int:
  """Phase-1 models trained for a case (every case of a config has the same number)."""
  return len([s for s in model_specs(config, case)[0] if not s.method.is_phase2])


def groups(config, all_cases: Sequence[Case]) -> list[Group]:
  """Splits the cases into groups of at most `population_size` phase-1 models."""
  per_case = _phase1_models(config, all_cases[0]) if all_cases else 1
  cases_per_group = max(1, config.population_size // max(per_case, 1))
  out = []
  for i in range(0, len(all_cases), cases_per_group):
    chunk = list(all_cases[i:i + cases_per_group])
    gid = hashlib.sha1("|".join(c.name for c in chunk).encode()).hexdigest()[:12]
    out.append(Group(chunk, gid))
  return out


def largest_population(config) -> int:
  """Phase-1 models in the study's largest population (pure Python: no JAX backend)."""
  all_cases = cases(config)
  if not all_cases:
    return 0
  return max(len(g.cases) for g in groups(config, all_cases)) * _phase1_models(
      config, all_cases[0])
