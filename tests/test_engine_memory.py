"""Memory planned before it is spent (`imbjax.engine.memory`)."""

import dataclasses
import re

import pytest

from experiments.configs import test as test_config
from imbjax import store as store_lib
from imbjax import study
from imbjax.engine import memory


def _plan(**overrides):
  fields = dict(models=8, devices=1, models_per_device=8, block=8, eval_block=8,
                batch_size=64, eval_batch_size=1000, eval_examples=100,
                num_classes=10, data_bytes=100, eval_data_bytes=100, state_bytes=1000,
                train_temp=10_000, eval_temp=1_000, budget=10**9, budget_source="test")
  fields.update(overrides)
  return memory.MemoryPlan(**fields)


def test_parse_bytes_takes_suffixes_and_refuses_nonsense():
  assert memory.parse_bytes("512") == 512
  assert memory.parse_bytes("64M") == 64 * 2**20
  assert memory.parse_bytes("1.5GiB") == int(1.5 * 2**30)
  for bad in ("", "-1", "lots", "0"):
    with pytest.raises(ValueError, match=memory.BUDGET_ENV):
      memory.parse_bytes(bad)


def test_budget_override_from_the_environment(monkeypatch):
  monkeypatch.setenv(memory.BUDGET_ENV, "3M")
  assert memory.device_budget() == (3 * 2**20, f"${memory.BUDGET_ENV}")
  monkeypatch.delenv(memory.BUDGET_ENV)
  budget, source = memory.device_budget()
  assert budget > 2**20 and source


def test_advice_names_each_field_that_would_fit():
  plan = _plan()
  need = plan.train_bytes()
  # The step's working memory of 8 models at once dominates: fewer models, a smaller
  # block or a smaller batch fit; the evaluation already fits.
  tight = dataclasses.replace(plan, budget=need - 30_000)
  advice = " ".join(tight.advice())
  assert "population_size=5" in advice and "model_block=5" in advice
  assert "batch_size=32" in advice and "eval_batch_size" not in advice
  with pytest.raises(memory.MemoryPlanError, match="config.population_size=5"):
    tight.check()
  # Logits of every model on the test set dominate evaluation: eval_batch_size cannot
  # help there, population_size can.
  big = dataclasses.replace(plan, eval_examples=10_000, train_temp=1)
  logits = dataclasses.replace(big, budget=big.eval_bytes() - 100_000)
  assert logits.train_bytes() <= logits.budget
  advice = logits.advice()
  assert advice[0].startswith("population_size=7") and len(advice) == 1
  _plan().check()  # fits: no error


def test_study_that_cannot_fit_is_refused_before_training_naming_a_value_that_fits(
    tmp_path, monkeypatch):
  config = test_config.get_config()  # one population of 6 models
  quiet = lambda *_: None
  monkeypatch.setenv(memory.BUDGET_ENV, "1")  # nothing fits: the plan is measured
  with pytest.raises(memory.MemoryPlanError) as e:
    study.train_and_evaluate(config, tmp_path, log=quiet)
  plan = e.value.plan
  assert plan.measured and plan.models == 6 and plan.train_temp > 0
  # A budget that holds 3 models but not 6.
  three = max(plan.train_bytes(models_per_device=3), plan.eval_bytes(models_per_device=3))
  monkeypatch.setenv(memory.BUDGET_ENV, str(three))
  with pytest.raises(memory.MemoryPlanError, match="config.population_size=3") as e:
    study.train_and_evaluate(config, tmp_path, log=quiet)
  assert re.search(r"6 models on 1 device\(s\).*budget", str(e.value))
  assert not (tmp_path / store_lib.DB_NAME).exists()  # refused before anything ran
  config.population_size = 3  # the advice, taken: it trains (one repetition: one group)
  config.repetitions = 1
  result = study.train_and_evaluate(config, tmp_path, log=quiet)
  assert result["rows"] == 8 and result["trained_groups"] == 1
