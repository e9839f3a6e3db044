"""The study driver, `train_and_evaluate(config, workdir)`, and its parts.

`grid` (cases, models, rows, run keys, groups, fingerprint), `data` (loading and the
validation split), `group` (one population group trained and evaluated), `scoring` (a
row's metrics) and `driver` (the resumable study).
"""

from imbjax.study.data import StudyData, load_data
from imbjax.study.driver import train_and_evaluate, validate_config
from imbjax.study.grid import (FINGERPRINT_FIELDS, PROFILES, Case, Group, ModelSpec,
                               RowSpec, case_counts, case_subset, cases, fingerprint,
                               groups, largest_population, model_specs)
from imbjax.study.group import TAU_NORM_GRID, Progress, train_group
from imbjax.study.scoring import score
