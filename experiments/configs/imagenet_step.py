"""ILSVRC-2012, step imbalance (paper Section 3.3.3, Table 4).

ResNet-10, 320,000 iterations, batch 256, base rate 0.1 decaying linearly to 0, weight
decay 1e-4, MSRA initialisation; majority classes capped at 1,000 examples. "Classes with
less than 1 000 cases were always chosen as minority ones": `minority='short_first'`
(`imbjax.imbalance.step`) makes every class with fewer than `max_count` training images
minority (ILSVRC-2012's smallest has 732) and draws the remaining minority classes at
random per case and repetition; a case whose minority slots cannot hold all short classes,
or a class below the minority count, is refused before training. The three
cases of Table 4 (mu 0.1 rho 10; mu 0.8 rho 50; mu 0.9 rho 100), baseline / oversampling /
undersampling; the paper repeats the largest imbalance three times:

  python -m experiments.sweep --config=experiments/configs/imagenet_step.py \
    --config.data_dir=/path/to/tfds --workdir=runs/imagenet
  python -m experiments.sweep --config=experiments/configs/imagenet_step.py \
    --config.data_dir=/path/to/tfds --config.case_list='((100, 0.9),)' \
    --config.repetitions=3 --workdir=runs/imagenet

ImageNet needs the user's manual download (tensorflow-datasets' manual_dir) and does not
fit in device memory: `input='stream'` feeds each model's index plan through tf.data
(`imbjax.datasets.streaming`) with the paper's augmentation.
"""

from experiments.configs import default


def get_config():
  c = default.get_config()
  c.dataset = "imagenet2012"
  c.input = "stream"
  c.augment_resize = 256
  c.augment_crop = 224
  c.eval_batch_size = 250
  c.model = "resnet10"
  c.max_count = 1000
  c.minority = "short_first"   # classes under max_count always minority (Section 3.3.3)
  c.case_list = ((10, 0.1), (50, 0.8), (100, 0.9))
  c.rhos = ()
  c.mus = ()
  c.repetitions = 1
  c.methods = ("baseline", "oversampling", "undersampling")
  c.iterations = 320_000
  c.batch_size = 256
  c.base_lrs = (0.1,)
  c.schedule = "linear"
  c.schedule_kwargs = {}
  c.weight_decay = 1e-4
  c.population_size = 3
  c.chunk_steps = 1000
  c.checkpoint_every = 5000
  c.table_by_repetition = True  # Table 4 reports the runs of a case side by side
  return c
