"""The paper's methods beside the modern long-tail methods, on CIFAR-10 (beyond the paper).

All-CNN with the paper's CIFAR-10 protocol (`cifar10_step.py`), on the long-tailed
(exponential) profile used by CIFAR-10-LT work (rho 10, 50, 100), so numbers can be set
beside published CIFAR-10-LT results; a 10% validation split chooses post-hoc tau and the
best learning rate (`selection='validation'`).

  python -m experiments.sweep --config=experiments/configs/methods_cifar10.py \
    --config.data_dir=/path/to/cifar-10-batches-bin --workdir=runs/methods_cifar10
"""

from experiments.configs import cifar10_step
from experiments.configs import default
from experiments.configs import methods_mnist


def get_config():
  c = cifar10_step.get_config()
  c.profile = "exponential"
  c.rhos = (10, 50, 100)
  c.mus = ()
  c.max_count = 4500
  c.methods = default.PAPER_METHODS + methods_mnist.MODERN_METHODS
  c.validation_fraction = 0.1
  c.selection = "validation"
  c.base_lrs = (0.05, 0.005)
  c.lr_repeats = 1
  return c
