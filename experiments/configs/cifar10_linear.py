"""CIFAR-10, linear imbalance (paper Figure 5b): rho in {2, 10, 20, 50}, classes in label
order (class 0 smallest), the same learning-rate search as `cifar10_step.py`.

  python -m experiments.sweep --config=experiments/configs/cifar10_linear.py \
    --config.data_dir=/path/to/cifar-10-batches-bin --workdir=runs/cifar10_linear
"""

from experiments.configs import cifar10_step


def get_config():
  c = cifar10_step.get_config()
  c.profile = "linear"
  c.mus = ()
  return c
