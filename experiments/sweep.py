r"""Runs an imbalance study: `python -m experiments.sweep [--config=...] [--workdir=...]`.

With no flags it runs the main job, the quickstart study on the offline `digits` data.
Examples:

  python -m experiments.sweep                     # CPU: one single-threaded device per core
  python -m experiments.sweep --cpu_devices=1     # CPU: one multi-threaded device
                                                  # (the default for one-model studies)
  python -m experiments.sweep --config=experiments/configs/mnist_step.py \
      --config.data_dir=../shared/data/mnist --config.rhos='(100, 1000)' \
      --config.mus='(0.5,)' --config.repetitions=2 --config.iterations=2000 \
      --workdir=runs/mnist_demo

Rerunning the same command resumes: finished population groups are skipped.
"""

import os

import jax
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from imbjax import figures
from imbjax import engine
from imbjax import store as store_lib
from imbjax import study

_QUICKSTART = os.path.join(os.path.dirname(__file__), "configs", "quickstart.py")
_CONFIG = config_flags.DEFINE_config_file(
    "config", _QUICKSTART, "Study config file (ml_collections).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for results, figures and "
                               "checkpoints (default: runs/<config file name>).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, to shard populations over "
    "several hosts with jax.distributed (every process runs the same command).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the job.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_CPU_DEVICES = flags.DEFINE_string(
    "cpu_devices", "auto", "On a CPU host: split it into this many single-threaded "
    "devices and shard each population's models over them; 0: one per core; 1: one "
    "multi-threaded device; auto (default): one per core when the study's largest "
    "population has at least as many models as there are cores, else 1. On 2 cores one "
    "per core trained 32 LeNet-5s 1.6x as fast as one device (benchmarks/README.md) and "
    "ran the main job in 1:57 against 2:27 min; one model alone ran 1.4x faster on one "
    "two-threaded device. How many single-threaded devices there are does not change a "
    "model's results.")


def cpu_devices(flag: str, config) -> int:
  """The CPU device count for `--cpu_devices` (see its help); touches no JAX backend.

  Raises:
    app.UsageError: for a value that is neither 'auto' nor an int >= 0.
  """
  if flag != "auto":
    try:
      n = int(flag)
    except ValueError:
      n = -1
    if n < 0:
      raise app.UsageError(f"--cpu_devices must be 'auto' or an int >= 0 (0: one per "
                           f"core), got {flag!r}")
    return n
  cores = os.cpu_count() or 1
  return cores if study.largest_population(config) >= cores else 1


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  n = cpu_devices(_CPU_DEVICES.value, _CONFIG.value)
  if n != 1:
    engine.use_cpu_devices(n)
  if _COORDINATOR.value:
    # Every process builds the same deterministic grid; the model axis of each
    # population is sharded over all devices of all processes; process 0 writes the store.
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value,
                               process_id=_PROCESS_ID.value)
  config = _CONFIG.value
  workdir = _WORKDIR.value or os.path.join(
      "runs", os.path.splitext(os.path.basename(flags.FLAGS["config"].config_filename))[0])
  logging.set_verbosity(logging.INFO)
  result = study.train_and_evaluate(config, workdir, log=print)
  if "store" not in result:  # not process 0: nothing to print
    return
  with store_lib.ResultsStore(workdir) as store:
    rows = store.rows()
  print(f"\n{result['rows']} new rows; {len(rows)} in {result['store']}\n")
  print("Multi-class ROC AUC (x100), mean ± std over repetitions:")
  print(figures.summary_table(rows, "auc"))
  print("\nAccuracy (x100):")
  print(figures.summary_table(rows, "accuracy"))
  if config.make_figures:
    paths = figures.make_all(workdir)
    print("\nfigures:", *[str(p) for p in paths], sep="\n  ")


if __name__ == "__main__":
  app.run(main)
