r"""Draws the paper's figures and tables from a study workdir's results store.

Usage:
  python -m experiments.figures --workdir=runs/mnist_step

Writes WORKDIR/figures/*.png and WORKDIR/figures/tables.md, then prints the paths
written and the tables.
"""

from absl import app, flags

from imbjax import figures

_WORKDIR = flags.DEFINE_string("workdir", None, "Study directory holding results.sqlite.")
flags.mark_flag_as_required("workdir")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  paths = figures.make_all(_WORKDIR.value)
  for path in paths:
    print(path)
  print()
  print(paths[-1].read_text())  # tables.md is always last


if __name__ == "__main__":
  app.run(main)
