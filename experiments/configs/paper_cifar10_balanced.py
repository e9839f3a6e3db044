"""The paper's balanced All-CNN-C run on CIFAR-10 (Section 3.3.2): toward 9.75% test error.

All-CNN-C, GCN + ZCA whitening, SGD with momentum 0.9, weight decay 1e-3, batch 256,
70,000 iterations, base rate x0.1 after 40k, 50k and 60k iterations, every base rate in
{0.05, 0.005, 0.0005, 0.00005} twice (8 networks), on the whole balanced training set
(5,000 images per class). The paper reports 9.75% test error for the best of them.

This needs an accelerator (~1.8e7 training images per network; All-CNN trains at ~35
images/s on the project's 2 CPU cores). A device lease runs it a few networks at a time
through `benchmarks/gpu_cifar10_balanced.sh`, which stops the sweep before the lease
ends and brings back the store; each finished group of `population_size` networks is
stored, and the next lease resumes at the next group:

  OUT=/tmp/out bash benchmarks/gpu_cifar10_balanced.sh          # on the device
  python -m experiments.sweep --config=experiments/configs/paper_cifar10_balanced.py \
    --workdir=docs/runs/paper_cifar10_balanced                  # anywhere, resumable

The machines here hold only the lossy JPEG copy (`cifar10_jpeg`, the default below);
with the original batches: --config.dataset=cifar10_local
--config.data_dir=/path/to/cifar-10-batches-bin.

Expected: not yet run (no device lent in sessions 5-8); docs/paper_cifar10.md.
"""

from experiments.configs import cifar10_step


def get_config():
  c = cifar10_step.get_config()
  c.dataset = "cifar10_jpeg"
  c.data_dir = "../shared/data/cifar10-jpeg"
  c.profile = "original"        # the training set as it comes: 5,000 per class
  c.rhos = ()
  c.mus = ()
  c.methods = ("baseline",)
  c.population_size = 2         # a group: one base rate's two runs (~minutes on an H200)
  c.checkpoint_every = 5000
  c.curve_points = 10
  c.curve_train_per_class = 100
  c.curve_test_examples = 2000  # stratified; the row scores the whole test split
  c.make_figures = False
  return c
