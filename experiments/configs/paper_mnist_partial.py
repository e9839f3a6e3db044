"""MNIST at the paper's budget, partial resampling (Section 4.5, Figure 7): conclusion (iii).

Step imbalance rho 1000, mu 0.5, 2 repetitions; oversampling and undersampling to the
intermediate ratios 1 (full), 10 and 100, beside the baseline: 14 networks of 10,000
iterations (about 15 minutes on 2 idle CPU cores).

  python -m experiments.sweep --config=experiments/configs/paper_mnist_partial.py \
    --workdir=docs/runs/paper_mnist_partial

Expected (the 2026-12-02 run in docs/runs/paper_mnist_partial; repetitions 0 / 1): AUC
baseline 97.55 / 97.07; full oversampling the best, 99.19 / 98.59; undersampling to
ratio 100, 98.51 / 97.76, above full undersampling, 97.48 / 94.19 (docs/paper_mnist.md).
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
