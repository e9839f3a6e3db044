"""The main job: a small step-imbalance study with every paper method, offline, on CPU.

Data: scikit-learn's bundled handwritten digits (1,797 real 8x8 scans, upsampled to
28x28), so it runs with no download. Step imbalance at two ratios x two minority
fractions x 3 seeds, all eight methods of the paper, trained as populations of LeNet-5s.

Run (about 3-5 minutes on 2 CPU cores):

  python -m experiments.sweep --workdir=runs/quickstart

Expected: a method-by-case table where oversampling keeps AUC close to the balanced level
while the baseline and undersampling drop as rho grows, and thresholding raises the
baseline's accuracy (see docs/results.md for a recorded run).
"""

from experiments.configs import default


def get_config():
  c = default.get_config()
  c.dataset = "digits"
  c.max_count = 0               # digits' smallest training class (~130 examples)
  c.rhos = (10, 40)
  c.mus = (0.2, 0.6)
  c.repetitions = 3
  c.iterations = 300
  c.batch_size = 32
  c.chunk_steps = 150
  c.population_size = 64
  return c
