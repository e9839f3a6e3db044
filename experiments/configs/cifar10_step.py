"""CIFAR-10, step imbalance (paper Section 3.3.2, Figures 3d-f, 4d-f, 6d-f).

All-CNN, 70,000 iterations, batch 256, weight decay 1e-3, base rate x0.1 after 40k, 50k
and 60k iterations; rho in {2, 10, 20, 50} x mu in {0.2, 0.5, 0.8} with the lowest labels
as minority (nested). Each case and method is trained with every base rate in
{0.05, 0.005, 0.0005, 0.00005} twice, and the figures keep the best of the 8 by test AUC
(the paper's protocol) or, with `--config.selection=validation
--config.validation_fraction=0.1`, by validation AUC. Long groups checkpoint with Orbax.

  python -m experiments.sweep --config=experiments/configs/cifar10_step.py \
    --config.data_dir=/path/to/cifar-10-batches-bin --workdir=runs/cifar10_step

A shrunk CPU smoke run: --config.rhos='(10,)' --config.mus='(0.5,)'
  --config.iterations=200 --config.base_lrs='(0.005,)' --config.lr_repeats=1
"""

from experiments.configs import default


def get_config():
  c = default.get_config()
  c.dataset = "cifar10"
  c.model = "allcnn"
  c.max_count = 5000
  c.rhos = (2, 10, 20, 50)
  c.mus = (0.2, 0.5, 0.8)
  c.minority = "lowest"
  c.repetitions = 1
  c.iterations = 70_000
  c.batch_size = 256
  c.base_lrs = (0.05, 0.005, 0.0005, 0.00005)
  c.lr_repeats = 2
  c.schedule = "step"
  c.schedule_kwargs = {"boundaries": (40_000, 50_000, 60_000), "factor": 0.1}
  c.weight_decay = 1e-3
  c.population_size = 40
  c.chunk_steps = 1000
  c.checkpoint_every = 5000
  # All-CNN keeps 32x32x96 maps (x9 as im2col patches): 200 examples per model per
  # evaluation step is ~0.7 GB per model in flight (32 in flight on an accelerator).
  c.eval_batch_size = 200
  return c
