"""MNIST at the paper's budget, step imbalance: conclusions (i), (ii), (iv) and (v).

LeNet-5, 10,000 iterations, batch 64, `inv` schedule (Section 3.3.1), on the original
MNIST files, at rho in {10, 100, 1000} x mu in {0.2, 0.5, 0.8} x 2 repetitions (18
subsets); baseline, oversampling and undersampling trained (54 networks), each also
scored with thresholding; curves at 10 log points (eval-mode accuracy on a balanced
training sample and on the whole test split) for Figure 8. Groups of 6 subsets (18
networks, about 20 minutes each on 2 idle CPU cores) are the resumable unit:

  python -m experiments.sweep --config=experiments/configs/paper_mnist_step.py \
    --workdir=docs/runs/paper_mnist_step
  python -m experiments.report --workdir=docs/runs/paper_mnist_step

Expected (the 2026-12-02 run in docs/runs/paper_mnist_step; mean of 2 repetitions): the
baseline's AUC 99.99 at rho 10, mu 0.2 down to 91.46 at rho 1000, mu 0.8, where
oversampling keeps 97.18 and undersampling 94.62; thresholding lifts the baseline's
accuracy by 8.7 points on average (65.5% -> 91.3% at rho 1000, mu 0.5). Conclusions (i),
(ii) and (v) held; (iv) held on test accuracy, not on the train/test gap
(docs/paper_mnist.md).
"""

from experiments.configs import mnist_step


def get_config():
  c = mnist_step.get_config()
  c.data_dir = "../shared/data/mnist"
  c.rhos = (10, 100, 1000)
  c.mus = (0.2, 0.5, 0.8)
  c.repetitions = 2
  c.methods = ("baseline", "oversampling", "undersampling", "thresholding",
               "oversampling_thresholding", "undersampling_thresholding")
  c.population_size = 18
  c.chunk_steps = 500
  return c
