"""MNIST, over/undersampling to intermediate ratios (paper Section 4.5, Figure 7).

Step imbalance with rho 1000; oversampling and undersampling stop at the imbalance ratio
`resample_ratio` (1 = fully balanced), against the baseline.

  python -m experiments.sweep --config=experiments/configs/mnist_partial.py \
    --config.data_dir=../shared/data/mnist --config.mus='(0.5,)' \
    --config.repetitions=2 --config.iterations=2000 --workdir=runs/mnist_partial
"""

from experiments.configs import mnist_step


def get_config():
  c = mnist_step.get_config()
  c.rhos = (1000,)
  c.mus = (0.2, 0.5, 0.8)
  c.repetitions = 10
  c.methods = ("baseline", "oversampling", "undersampling")
  c.resample_ratios = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 250.0, 500.0)
  return c
