"""The study driver, `train_and_evaluate(config, workdir)`, and its parts.

`config` (validation and the fingerprint), `grid` (cases, models, rows, run keys,
groups), `data` (loading and the validation split), `group` (one population group
trained and evaluated), `scoring` (a row's metrics) and `driver` (the resumable study).
"""

from imbjax.study.config import (EXECUTION_FIELDS, GRID_FIELDS, fingerprint,
                                 validate_config)
from imbjax.study.data import StudyData, load_data
from imbjax.study.driver import train_and_evaluate
from imbjax.study.grid import (PROFILES, Case, Group, ModelSpec, RowSpec, case_counts,
                               case_subset, cases, groups, largest_population,
                               model_specs)
from imbjax.study.group import TAU_NORM_GRID, Progress, train_group
from imbjax.study.scoring import score
