"""MNIST at the paper's budget, partial resampling (Section 4.5, Figure 7): conclusion (iii).

Step imbalance rho 1000, mu 0.5, 2 repetitions; oversampling and undersampling to the
intermediate ratios 1 (full), 10 and 100, beside the baseline: 14 networks of 10,000
iterations (about 15 minutes on 2 idle CPU cores).

  python -m experiments.sweep --config=experiments/configs/paper_mnist_partial.py \
    --workdir=docs/runs/paper_mnist_partial

Expected: see docs/paper_mnist.md.
"""

from experiments.configs import paper_mnist_step


def get_config():
  c = paper_mnist_step.get_config()
  c.rhos = (1000,)
  c.mus = (0.5,)
  c.methods = ("baseline", "oversampling", "undersampling")
  c.resample_ratios = (1.0, 10.0, 100.0)
  c.population_size = 14
  return c
