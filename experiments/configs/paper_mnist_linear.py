"""MNIST at the paper's budget, linear imbalance (Figure 5a).

rho in {10, 100, 1000} x 2 repetitions (a random class order each time); baseline,
oversampling, undersampling (+ thresholding): 18 networks of 10,000 iterations (about
20 minutes on 2 idle CPU cores).

  python -m experiments.sweep --config=experiments/configs/paper_mnist_linear.py \
    --workdir=docs/runs/paper_mnist_linear

Expected (the 2026-12-02 run in docs/runs/paper_mnist_linear; mean of 2 repetitions):
AUC at rho 1000 baseline 99.91, oversampling 99.92, undersampling 95.78; thresholding
lifts the baseline's accuracy from 91.75% to 97.38% there (docs/paper_mnist.md).
"""

from experiments.configs import paper_mnist_step


def get_config():
  c = paper_mnist_step.get_config()
  c.profile = "linear"
  c.mus = ()
  return c
