"""MNIST, linear imbalance (paper Section 3.3.1, Figure 5a).

rho in {10, ..., 5000} x 50 repetitions (a random class order each time); 450 subsets.
With max_count 5000 and rho 5000 the smallest class holds a single example.

  python -m experiments.sweep --config=experiments/configs/mnist_linear.py \
    --config.data_dir=../shared/data/mnist --config.repetitions=2 \
    --config.iterations=2000 --workdir=runs/mnist_linear
"""

from experiments.configs import mnist_step


def get_config():
  c = mnist_step.get_config()
  c.profile = "linear"
  c.mus = ()
  return c
