"""Defaults every study config starts from (MNIST / LeNet-5, paper Section 3.3.1).

Variants import `get_config()` from here and override fields. Fields every study has:
`dataset`, `data_dir`, `profile` ('step' | 'linear' | 'exponential' | 'balanced' | 'original'),
`rhos`, `mus`, `methods`, `repetitions`, `iterations`, `batch_size`, `seed`.
Tuple fields take Python tuple syntax on the command line:
``--config.rhos='(100, 1000)' --config.mus='(0.5,)'``.
"""

import ml_collections

PAPER_METHODS = (
    "baseline", "oversampling", "undersampling", "two_phase_oversampling",
    "two_phase_undersampling", "thresholding", "oversampling_thresholding",
    "undersampling_thresholding")


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # Data.
  c.dataset = "mnist"
  c.data_dir = ""               # local copy (IDX dir, CIFAR batches, image folder) or tfds dir
  c.input = "device"            # 'device': the training split lives on the device once;
  #                               'stream': tf.data streams each model's plan (ImageNet)
  c.augment_resize = 0          # streamed ImageNet-style input: shorter side -> resize,
  c.augment_crop = 0            # random crop + mirror (train) / centre crop (test); 0 = off
  c.max_count = 5000            # cap per class before imbalancing (paper: 5000 for MNIST);
  #                               0 = the smallest class of the training split
  c.validation_fraction = 0.0   # held-out share of each training class (tau choice, LR choice)
  # Imbalance grid.
  c.profile = "step"
  c.rhos = (10, 100, 1000)
  c.mus = (0.5,)
  c.case_list = ()              # explicit ((rho, mu), ...) instead of the rhos x mus grid
  c.minority = "random"         # 'random' (MNIST protocol), 'lowest' (CIFAR-10 protocol) or
  #                               'short_first' (ImageNet: classes under max_count minority)
  c.repetitions = 1
  c.data_seed = None            # seed of the subset draws and the validation split; None:
  #                               `seed` (which always seeds init, shuffles and dropout)
  c.methods = PAPER_METHODS
  c.resample_ratios = (1.0,)    # Section 4.5 partial levels: imbalance left after resampling
  # Model and optimisation (paper's MNIST settings).
  c.model = "lenet5"
  c.iterations = 10_000
  c.batch_size = 64
  c.base_lrs = (0.01,)
  c.lr_repeats = 1              # CIFAR-10 protocol: 2 repeats per LR, best of all
  c.selection = "test"          # how figures pick the best LR run: 'test' (paper) or 'validation'
  c.schedule = "inv"
  c.schedule_kwargs = ml_collections.ConfigDict({"gamma": 1e-4, "power": 0.75})
  c.momentum = 0.9
  c.weight_decay = 5e-4
  c.weight_decays = ()          # grid axis beside base_lrs (per model, one population);
  #                               empty: every model uses weight_decay
  c.output_layers = None        # top-level parameter names of the output layers (two-phase,
  #                               cRT, tau-norm); None: the registered model's
  # Execution.
  c.population_size = 64        # phase-1 models per population group
  c.chunk_steps = 500           # steps per compiled lax.scan call
  c.curve_points = 10           # log points of the curves (Figure 8; 0 = none): at each,
  #                               eval-mode accuracy on a class-balanced training sample
  #                               and on the test split
  c.curve_train_per_class = 100 # training sample per class (all of a smaller class)
  c.curve_test_examples = 0     # 0: the whole test split; n: a class-stratified sample
  c.test_per_class = 0          # 0: the whole test split; n: a balanced test subset of n
  #                               per class (Table 1: 1,000; MNIST's test split allows 892)
  c.eval_batch_size = 1000      # test examples per model per evaluation step (fixed, so a
  #                               row does not depend on its population); models go through
  #                               in blocks (1 on CPU, 32 elsewhere: engine.eval_block)
  c.conv_impl = "auto"          # 'auto' | 'xla' | 'im2col' | 'banded' | 'winograd'
  c.model_block = None          # models per device per step; None: 1 on CPU, all elsewhere
  c.compute_dtype = "auto"      # activations + matmul inputs: "float32" | "bfloat16" |
  #                               "auto" (float32 on CPU, bfloat16 on accelerators)
  c.checkpoint_every = 0        # steps between Orbax checkpoints (0 = off; groups are the unit)
  c.make_figures = True
  c.table_by_repetition = False # tables: one column per repetition of a case (Table 4)
  c.verbose = True
  c.seed = 0
  return c
