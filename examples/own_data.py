"""Your own data in a study: in-memory arrays with a natural imbalance, figures out.

    python examples/own_data.py                         # ~20 s on 2 CPUs

Four classes of 500 / 200 / 50 / 20 training images (here drawn from scikit-learn's
digits 0-3 to stay offline; put your own arrays in their place) go into the study
driver as `imbjax.datasets.Dataset`s with ``profile='original'``: the data as it comes.
Every method runs with priors from the data's own counts; rows record the real
imbalance (rho = largest / smallest class, minority = classes below the mean count);
figures include per-class recall against training count for each method.
"""

from __future__ import annotations

import argparse

import numpy as np

from experiments.configs import default
from imbjax import datasets, figures, study

COUNTS = (500, 200, 50, 20)


def my_arrays(counts=COUNTS, seed=0):
  """(train, test) as a user would build them: NHWC float32 images, int labels."""
  digits = datasets.load_splits("digits")
  rng = np.random.default_rng(seed)

  def take(ds, per_class, replace):
    idx = np.concatenate([rng.choice(np.flatnonzero(ds.labels == c), n, replace=replace)
                          for c, n in enumerate(per_class)])
    return datasets.Dataset(ds.images[idx].astype(np.float32), ds.labels[idx].astype(np.int32),
                            num_classes=len(per_class), class_names=("zero", "one", "two",
                                                                     "three")[:len(per_class)])

  # Digits has ~145 training images per class: the large classes repeat some (with
  # small shifts), which is enough to show the method.
  train = take(digits["train"], counts, replace=True)
  shift = rng.integers(-1, 2, size=(len(train.labels), 2))
  images = np.stack([np.roll(im, tuple(s), axis=(0, 1)) for im, s in zip(train.images, shift)])
  train = datasets.Dataset(images, train.labels, train.num_classes, train.class_names)
  test = take(digits["test"], (30,) * len(counts), replace=False)
  return train, test


def get_config(iterations: int = 300):
  c = default.get_config()
  c.dataset = "my_digits"               # names the data in the rows
  c.profile = "original"                # the data as it comes: its own imbalance
  c.repetitions = 1
  c.max_count = 0
  c.methods = ("baseline", "oversampling", "undersampling", "thresholding", "focal",
               "logit_adjusted")
  c.iterations, c.batch_size, c.chunk_steps = iterations, 32, 100
  c.curve_points = 0
  return c


def main(argv=None, *, log=print, counts=COUNTS):
  parser = argparse.ArgumentParser()
  parser.add_argument("--iterations", type=int, default=300)
  parser.add_argument("--workdir", default="runs/own_data")
  args = parser.parse_args(argv)
  result = study.train_and_evaluate(get_config(args.iterations), args.workdir,
                                    data=my_arrays(counts), log=log)
  paths = figures.make_all(args.workdir)
  log("\n".join(str(p) for p in paths))
  return result, paths


if __name__ == "__main__":
  main()
