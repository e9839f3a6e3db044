"""What a row's ``wall_time_s`` means: the amortised wall time of the model it scores.

A group trains its models as one population, so no model has a wall time of its own.
:func:`charge` splits the group's measured wall time (everything `train_group` does:
building subsets, compiling, training, evaluating and scoring) by phase:

* phase 1 (from `train_group`'s start to the end of phase 1, plus the scoring of every
  row at the end) is shared equally by the phase-1 models;
* phase 2 (the fine-tuning of two-phase methods) is shared equally by the phase-2
  models.

``wall_time_s`` of a row is the cost of the model it scores: a phase-1 model's share of
phase 1; a phase-2 model's share of phase 1 (its source model had to be trained) plus
its share of phase 2. Evaluation-only methods (``thresholding``, tau-norm, ...) report
the cost of the model they evaluate. So ``wall_time_s`` compares methods: what one more
model of this method costs inside a population of this size. It includes compilation:
the first group of a shape pays it.

``extra`` keeps what recovers the totals (none of it is compared when a duplicate row is
written; :data:`imbjax.store.PROVENANCE_EXTRA_KEYS`):

* ``group_wall_s``: the group's wall time; ``group_models``: models it trained;
* ``phase_wall_s`` / ``phase_models``: per phase (one entry without phase 2);
* ``wall_share_s``: the row's share of ``group_wall_s``. Each model's share of its own
  phase is split equally among the rows that score it (a phase-1 model no row scores,
  e.g. the source of a two-phase method asked for alone, is charged to the rows of the
  models that continue it), so the ``wall_share_s`` of a group's rows sum to
  ``group_wall_s`` and those of a study's rows to its training wall time
  (:func:`study_wall_s`).
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
from typing import Any

EXTRA_KEYS = ("group_wall_s", "group_models", "phase_wall_s", "phase_models",
              "wall_share_s")


def charge(rows: Sequence[dict], row_specs: Sequence[Any], phase1: Sequence[Any],
           phase2: Sequence[Any], phase_wall: tuple[float, float]) -> None:
  """Sets ``wall_time_s`` and the `EXTRA_KEYS` of a group's rows, in place.

  Args:
    rows: the group's rows, one per row spec, in the order of `row_specs`.
    row_specs: `imbjax.study.grid.RowSpec`s (``.model`` is the trained `ModelSpec`).
    phase1: the phase-1 `ModelSpec`s the group trained.
    phase2: the phase-2 `ModelSpec`s (may be empty).
    phase_wall: seconds charged to phase 1 and to phase 2.
  """
  t1, t2 = (float(t) for t in phase_wall)
  n1, n2 = len(phase1), len(phase2)
  c1 = t1 / max(n1, 1)
  c2 = t2 / n2 if n2 else 0.0
  scorers: dict[Any, list[int]] = collections.defaultdict(list)
  for i, spec in enumerate(row_specs):
    scorers[spec.model].append(i)
  share = [0.0] * len(rows)
  orphan = 0.0
  for model, cost in [(m, c1) for m in phase1] + [(m, c2) for m in phase2]:
    idx = scorers.get(model) or [
        i for i, spec in enumerate(row_specs)
        if spec.model.method.is_phase2 and spec.model.source == model]
    if not idx:
      orphan += cost
      continue
    for i in idx:
      share[i] += cost / len(idx)
  if orphan and rows:  # a trained model nothing scores: charged to the whole group
    share = [s + orphan / len(rows) for s in share]
  phases = ([t1, t2], [n1, n2]) if n2 else ([t1], [n1])
  for row, spec, s in zip(rows, row_specs, share):
    row["wall_time_s"] = c1 + (c2 if spec.model.method.is_phase2 else 0.0)
    row["extra"].update(group_wall_s=t1 + t2, group_models=n1 + n2,
                        phase_wall_s=phases[0], phase_models=phases[1], wall_share_s=s)


def study_wall_s(rows: Sequence[Mapping[str, Any]]) -> float:
  """The training wall time of a study's stored rows: the sum of their groups' walls.

  Equals the sum of the rows' ``extra['wall_share_s']`` (up to float rounding); rows
  written before these fields existed count nothing.
  """
  walls = {}
  for r in rows:
    extra = r.get("extra") or {}
    if "group_wall_s" in extra:
      walls[r["group_id"]] = float(extra["group_wall_s"])
  return sum(walls.values())
