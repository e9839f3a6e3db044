"""The main job: a small step-imbalance study with every paper method, offline, on CPU.

Data: scikit-learn's bundled handwritten digits (1,797 real 8x8 scans, upsampled to
28x28), so it runs with no download. Step imbalance at two ratios x two minority
fractions x 3 seeds, all eight methods of the paper, trained as populations of LeNet-5s.

Run (92-109 s on 2 idle cores of an AVX-512 EPYC, 2026-12-02, compiles included; 77-87 s
when the compilation cache has its programs, as on a rerun in a fresh workdir; 114 s on
an AVX2-only EPYC, 2026-12-07, no cache):

  python -m experiments.sweep --workdir=runs/quickstart

Expected (the 2026-12-02 runs; mean over 3 seeds): at rho=40 with 6 of 10 classes
minority the baseline's AUC drops to 96.9 while oversampling keeps 98.2 and
undersampling has 96.6; thresholding lifts the baseline's accuracy from 76.0% to 84.4%,
and oversampling + thresholding gives the best accuracy (86.5%).
"""

from experiments.configs import default


def get_config():
  c = default.get_config()
  c.dataset = "digits"
  c.max_count = 0               # digits' smallest training class (~130 examples)
  c.rhos = (10, 40)
  c.mus = (0.2, 0.6)
  c.repetitions = 3
  c.iterations = 240
  c.batch_size = 32
  c.chunk_steps = 120
  c.population_size = 64
  return c
