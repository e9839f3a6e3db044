"""A seconds-long config for tests: the quickstart shrunk (tiny grid, few steps)."""

from experiments.configs import quickstart


def get_config():
  c = quickstart.get_config()
  c.rhos = (10,)
  c.mus = (0.5,)
  c.repetitions = 2
  c.iterations = 20
  c.batch_size = 16
  c.chunk_steps = 10
  c.curve_points = 2            # a log point per chunk: curves stay exercised, while
  #                               the -O0 evaluation of 10 points would dominate tests
  c.curve_train_per_class = 10  # a 100-example curve sample, not 1,000 (at -O0 the
  #                               sample's evaluation was ~2/3 of a test sweep's curves)
  c.population_size = 6
  c.verbose = False
  return c
