"""imbjax.study.config: the fingerprint covers every result-changing field; bad configs
are refused before anything loads, computes or is written."""

import ml_collections
import pytest

from experiments.configs import default
from experiments.configs import test as test_config
from imbjax import store as store_lib
from imbjax import study
from imbjax.study import config as config_lib
from imbjax.study import driver


def _config(**overrides):
  c = test_config.get_config()
  for k, v in overrides.items():
    c[k] = v
  return c


# ----------------------------------------------------------------------------------------
# The fingerprint.


def test_rerun_with_another_schedule_gamma_is_refused_not_answered_already_done(tmp_path):
  # Old fingerprint: a fixed field list without schedule_kwargs, so a rerun with another
  # inv gamma matched and answered "already done".
  with store_lib.ResultsStore(tmp_path) as store:
    store.check_config(study.fingerprint(_config()), version="t")
    other = _config()
    other.schedule_kwargs.gamma = 1e-3
    with pytest.raises(ValueError, match="schedule_kwargs"):
      store.check_config(study.fingerprint(other), version="t")


def test_rerun_with_another_data_dir_is_refused(tmp_path):
  with store_lib.ResultsStore(tmp_path) as store:
    store.check_config(study.fingerprint(_config()), version="t")
    with pytest.raises(ValueError, match="data_dir"):
      store.check_config(study.fingerprint(_config(data_dir=str(tmp_path))), version="t")


@pytest.mark.parametrize("field,value", [
    ("augment_crop", 24), ("augment_resize", 32), ("curve_test_examples", 7),
    ("input", "stream"), ("profile", "linear"), ("minority", "lowest"),
    ("momentum", 0.5), ("weight_decay", 0.0), ("max_count", 100)])
def test_fingerprint_covers_result_changing_field(field, value):
  assert study.fingerprint(_config(**{field: value})) != study.fingerprint(_config())


def test_fingerprint_covers_a_field_added_later_by_default():
  c = _config()
  c.label_smoothing = 0.1  # a field nobody listed
  assert study.fingerprint(c)["label_smoothing"] == 0.1


@pytest.mark.parametrize("field,value", [
    ("population_size", 1), ("chunk_steps", 5), ("eval_batch_size", 100),
    ("conv_impl", "xla"), ("model_block", 2), ("checkpoint_every", 10),
    ("make_figures", False), ("verbose", True), ("selection", "validation"),
    ("rhos", (10, 40)), ("mus", (0.2, 0.5)), ("methods", ("baseline",)),
    ("base_lrs", (0.01, 0.02)), ("resample_ratios", (1.0, 2.0)), ("repetitions", 5),
    ("lr_repeats", 2)])
def test_fingerprint_leaves_out_execution_and_grid_field(field, value):
  assert study.fingerprint(_config(**{field: value})) == study.fingerprint(_config())


def test_every_default_field_is_fingerprinted_or_documented_as_not():
  c = default.get_config()
  left_out = set(config_lib.EXECUTION_FIELDS) | set(config_lib.GRID_FIELDS)
  fp = study.fingerprint(c)
  for field in c.keys():
    assert (field in fp) != (field in left_out) or field == "compute_dtype", field
  for reason in {**config_lib.EXECUTION_FIELDS, **config_lib.GRID_FIELDS}.values():
    assert len(reason) > 10


# ----------------------------------------------------------------------------------------
# Validation.


@pytest.mark.parametrize("overrides,message", [
    ({"base_lrs": (0.01, float("nan"))}, r"base_lrs holds nan; accepted: finite"),
    ({"base_lrs": (-0.1,)}, r"base_lrs holds -0.1"),
    ({"base_lrs": (0.0,)}, r"base_lrs holds 0.0"),
    ({"base_lrs": ()}, r"base_lrs is empty"),
    ({"base_lrs": (0.01, 0.01)}, r"base_lrs lists 0.01 twice"),
    ({"weight_decay": -1e-4}, r"weight_decay must be a finite number >= 0"),
    ({"weight_decay": float("inf")}, r"weight_decay must be a finite number >= 0"),
    ({"chunk_steps": 0}, r"chunk_steps must be an integer >= 1"),
    ({"population_size": 0}, r"population_size must be an integer >= 1"),
    ({"eval_batch_size": -4}, r"eval_batch_size must be an integer >= 1"),
    ({"methods": ()}, r"methods is empty"),
    ({"methods": ("baseline", "baseline")}, r"methods lists 'baseline' twice"),
    ({"rhos": ()}, r"rhos is empty"),
    ({"rhos": (100, 100)}, r"rhos lists 100 twice"),
    ({"rhos": (0.5,)}, r"rhos holds 0.5; accepted: finite imbalance ratios rho >= 1"),
    ({"mus": ()}, r"mus is empty"),
    ({"mus": (0.5, 1.5)}, r"mus holds 1.5"),
    ({"profile": "linear", "rhos": ()}, r"rhos is empty"),
    ({"validation_fraction": 1.0}, r"validation_fraction must be a number in \[0, 1\)"),
    ({"validation_fraction": -0.1}, r"validation_fraction must be a number in \[0, 1\)"),
    ({"schedule": "cosine"}, r"unknown schedule 'cosine'; known: \['constant'"),
    ({"schedule_kwargs": ml_collections.ConfigDict({"gamma": 1e-4, "pow": 1})},
     r"schedule 'inv' takes arguments \['gamma', 'power'\]"),
    ({"schedule_kwargs": ml_collections.ConfigDict({"gamma": float("nan")})},
     r"schedule_kwargs.gamma must be finite"),
    ({"resample_ratios": (1.0, 1.0)}, r"resample_ratios lists 1.0 twice"),
    ({"momentum": 1.0}, r"momentum must be a number in \[0, 1\)"),
    ({"input": "disk"}, r"input must be one of \['device', 'stream'\]"),
    ({"compute_dtype": "float16"}, r"compute_dtype must be one of"),
    ({"iterations": 0}, r"iterations must be an integer >= 1"),
])
def test_bad_config_is_refused_naming_field_and_accepted_values(overrides, message):
  with pytest.raises(ValueError, match=message):
    study.validate_config(_config(**overrides))


def test_bad_weight_decays_grid_is_refused():
  c = _config()
  c.weight_decays = (5e-4, -1.0)
  with pytest.raises(ValueError, match=r"weight_decays holds -1.0"):
    study.validate_config(c)
  c.weight_decays = (5e-4, 5e-4)
  with pytest.raises(ValueError, match=r"weight_decays lists 0.0005 twice"):
    study.validate_config(c)
  c.weight_decays = (5e-4, 0.0)
  study.validate_config(c)


def test_missing_data_dir_is_named_as_missing_not_as_no_network(tmp_path):
  with pytest.raises(ValueError, match=r"data_dir '.*nowhere' does not exist"):
    study.validate_config(_config(data_dir=str(tmp_path / "nowhere")))


def test_refused_config_loads_nothing_and_writes_nothing(tmp_path, monkeypatch):
  def no_load(config):
    raise AssertionError("data loaded before validation")

  monkeypatch.setattr(driver, "load_data", no_load)
  with pytest.raises(ValueError, match="rhos lists 100 twice"):
    study.train_and_evaluate(_config(rhos=(100, 100)), tmp_path / "w")
  assert not (tmp_path / "w").exists()


def test_config_refused_while_loading_data_leaves_no_config_json(tmp_path, monkeypatch):
  # Old order: the store and config.json were written before the data loaded, so a
  # refusal there (max_count above the smallest class) left a workdir behind.
  with pytest.raises(ValueError, match="max_count"):
    study.train_and_evaluate(_config(max_count=10_000), tmp_path / "w")
  assert not (tmp_path / "w" / store_lib.CONFIG_NAME).exists()
  assert not (tmp_path / "w" / store_lib.DB_NAME).exists()


def test_shipped_configs_validate():
  import importlib
  import pkgutil
  from experiments import configs
  for info in pkgutil.iter_modules(configs.__path__):
    c = importlib.import_module(f"experiments.configs.{info.name}").get_config()
    study.validate_config(c, check_paths=False)
    assert study.fingerprint(c)["dataset"] == c.dataset
