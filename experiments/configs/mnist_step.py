"""MNIST, step imbalance (paper Section 3.3.1, Figures 3, 4, 6).

rho in {10, ..., 5000} x mu in {0.1, ..., 0.9} x 50 repetitions with a new random set of
minority classes each time; LeNet-5, 10,000 iterations, batch 64, Caffe `inv` schedule.
The full grid is 4,050 subsets x 5 trained methods = 20,250 networks (+ 3 thresholded
evaluations each). Shrink it for a CPU, e.g.:

  python -m experiments.sweep --config=experiments/configs/mnist_step.py \
    --config.data_dir=../shared/data/mnist --config.rhos='(100, 1000)' \
    --config.mus='(0.5,)' --config.repetitions=2 --config.iterations=2000 \
    --workdir=runs/mnist_demo

`data_dir` empty -> tensorflow-datasets (needs network or a prepared tfds data_dir).
"""

from experiments.configs import default


def get_config():
  c = default.get_config()
  c.dataset = "mnist"
  c.rhos = (10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
  c.mus = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
  c.repetitions = 50
  c.minority = "random"
  return c
