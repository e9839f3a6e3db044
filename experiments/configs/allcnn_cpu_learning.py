"""All-CNN-C learns CIFAR-10 on a CPU: a short, balanced run on the JPEG copy (#17).

The paper's CIFAR-10 network and preprocessing (All-CNN-C, GCN + ZCA whitening,
Section 3.3.2), on the lossy JPEG copy of CIFAR-10 (`cifar10_jpeg`, never named
`cifar10`: its pixels differ from the original binaries) with its training set as it
comes (`profile='original'`: 5,000 images per class, balanced), one baseline model.
The paper's budget (70,000 iterations x batch 256, ~9.75% test error) needs an
accelerator; this run only shows that the network, its initialisation, the solver and
the preprocessing learn: test accuracy far above chance (10%) after a few minutes.

  python -m experiments.sweep --config=experiments/configs/allcnn_cpu_learning.py \
    --workdir=docs/runs/allcnn_cpu_learning

Expected: see docs/paper_cifar10.md (accuracy and wall time of the recorded run).
"""

from experiments.configs import cifar10_step


def get_config():
  c = cifar10_step.get_config()
  c.dataset = "cifar10_jpeg"
  c.data_dir = "../shared/data/cifar10-jpeg"
  c.profile = "original"
  c.rhos = ()
  c.mus = ()
  c.methods = ("baseline",)
  c.base_lrs = (0.01,)
  c.lr_repeats = 1
  c.iterations = 1_000
  c.batch_size = 32
  # The paper's step schedule, scaled to the short run: x0.1 after 4/7, 5/7, 6/7.
  c.schedule_kwargs = {"boundaries": (571, 714, 857), "factor": 0.1}
  c.population_size = 1
  c.chunk_steps = 100
  c.checkpoint_every = 200
  c.curve_points = 5
  c.curve_train_per_class = 20
  c.curve_test_examples = 1_000
  c.eval_batch_size = 200
  c.make_figures = False
  return c
