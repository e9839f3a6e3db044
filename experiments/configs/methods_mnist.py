"""The paper's methods beside the modern long-tail methods, on MNIST (beyond the paper).

Same protocol for all: LeNet-5, the paper's schedule, step and exponential (long-tail)
imbalance, every method trained in the same populations; scored with AUC, accuracy,
balanced accuracy, many/medium/few-shot accuracy and ECE. A 5% validation split of each
class chooses tau for post-hoc logit adjustment and tau-normalisation.

  python -m experiments.sweep --config=experiments/configs/methods_mnist.py \
    --config.data_dir=../shared/data/mnist --workdir=runs/methods_mnist

A shrunk CPU run (docs/methods_mnist.md):
  ... --config.rhos='(100,)' --config.mus='(0.5,)' --config.repetitions=2 \
      --config.iterations=1000
"""

from experiments.configs import default

MODERN_METHODS = (
    "weighted_ce", "effective_number", "focal", "ldam_drw", "logit_adjusted",
    "balanced_softmax", "class_balanced_sampling", "sqrt_sampling",
    "progressive_sampling", "posthoc_logit_adjustment", "tau_norm", "crt")


def get_config():
  c = default.get_config()
  c.dataset = "mnist"
  c.rhos = (10, 100, 1000)
  c.mus = (0.2, 0.5, 0.8)
  c.repetitions = 5
  c.methods = default.PAPER_METHODS + MODERN_METHODS
  c.validation_fraction = 0.05
  c.population_size = 128
  return c
