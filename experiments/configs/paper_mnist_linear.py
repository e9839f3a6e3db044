"""MNIST at the paper's budget, linear imbalance (Figure 5a).

rho in {10, 100, 1000} x 2 repetitions (a random class order each time); baseline,
oversampling, undersampling (+ thresholding): 18 networks of 10,000 iterations (about
20 minutes on 2 idle CPU cores).

  python -m experiments.sweep --config=experiments/configs/paper_mnist_linear.py \
    --workdir=docs/runs/paper_mnist_linear

Expected: see docs/paper_mnist.md.
"""

from experiments.configs import paper_mnist_step


def get_config():
  c = paper_mnist_step.get_config()
  c.profile = "linear"
  c.mus = ()
  return c
