"""Your own Flax model in a study: a population of methods, two-phase included, a store.

    python examples/own_model.py                        # digits (offline), ~100 s, 2 CPUs
    python examples/own_model.py --data_dir=../shared/data/mnist --iterations=2000

A small CNN that is not in the library, with a Dense head the user names ('head'),
trains on MNIST-format data (scikit-learn's digits by default, or a directory of the
four MNIST IDX files) as ONE population: baseline, oversampling, undersampling, focal
loss and two-phase training from oversampling, plus thresholding by the prior (free: an
extra evaluation). Rows go to WORKDIR/results.sqlite (and results.csv), figures to
WORKDIR/figures. On the engine alone (no store), see README's API tour.
"""

from __future__ import annotations

import argparse

import flax.linen as nn

from experiments.configs import default
from imbjax import study


class SmallCNN(nn.Module):
  """Any Linen classifier works: `__call__(x, train)` -> logits [N, num_classes]."""
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.max_pool(nn.relu(nn.Conv(16, (5, 5), name="conv1")(x)), (2, 2), (2, 2))
    x = nn.max_pool(nn.relu(nn.Conv(32, (5, 5), name="conv2")(x)), (2, 2), (2, 2))
    x = nn.Dropout(0.25, deterministic=not train)(x.reshape(x.shape[0], -1))
    x = nn.relu(nn.Dense(128, name="hidden")(x))
    return nn.Dense(self.num_classes, name="head")(x)


def get_config(data_dir: str = "", iterations: int = 200):
  c = default.get_config()
  c.dataset, c.data_dir = ("idx", data_dir) if data_dir else ("digits", "")
  c.max_count = 0                       # the smallest class caps every class
  c.model = "SmallCNN"                  # names the model in the rows
  c.output_layers = ("head",)           # what two-phase training fine-tunes
  c.rhos, c.mus, c.repetitions = (10,), (0.5,), 1
  c.methods = ("baseline", "oversampling", "undersampling", "focal",
               "two_phase_oversampling", "thresholding")
  c.iterations, c.batch_size, c.chunk_steps = iterations, 32, 100
  c.curve_points = 0
  return c


def main(argv=None, *, log=print):
  parser = argparse.ArgumentParser()
  parser.add_argument("--data_dir", default="", help="MNIST IDX files (default: digits)")
  parser.add_argument("--iterations", type=int, default=200)
  parser.add_argument("--workdir", default="runs/own_model")
  args = parser.parse_args(argv)
  config = get_config(args.data_dir, args.iterations)
  result = study.train_and_evaluate(config, args.workdir, model=SmallCNN(num_classes=10),
                                    log=log)
  log(f"{result['rows']} rows in {result.get('store')}")
  return result


if __name__ == "__main__":
  main()
