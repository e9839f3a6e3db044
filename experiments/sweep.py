r"""Runs an imbalance study: `python -m experiments.sweep [--config=...] [--workdir=...]`.

With no flags it runs the main job, the quickstart study on the offline `digits` data.
Examples:

  python -m experiments.sweep
  python -m experiments.sweep --config=experiments/configs/mnist_step.py \
      --config.data_dir=../shared/data/mnist --config.rhos='(100, 1000)' \
      --config.mus='(0.5,)' --config.repetitions=2 --config.iterations=2000 \
      --workdir=runs/mnist_demo

Rerunning the same command resumes: finished population groups are skipped.
"""

import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from imbjax import figures
from imbjax import store as store_lib
from imbjax import train

_QUICKSTART = os.path.join(os.path.dirname(__file__), "configs", "quickstart.py")
_CONFIG = config_flags.DEFINE_config_file(
    "config", _QUICKSTART, "Study config file (ml_collections).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for results, figures and "
                               "checkpoints (default: runs/<config file name>).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  workdir = _WORKDIR.value or os.path.join(
      "runs", os.path.splitext(os.path.basename(flags.FLAGS["config"].config_filename))[0])
  logging.set_verbosity(logging.INFO)
  result = train.train_and_evaluate(config, workdir, log=print)
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
