r"""Writes a study's report: which fix works, with what confidence.

Usage:
  python -m experiments.report --workdir=runs/quickstart

Writes WORKDIR/report.html (self-contained), WORKDIR/report.md, WORKDIR/report.json and
the figures under WORKDIR/figures, then prints the paths and the conclusions.
"""

import json

from absl import app, flags

from imbjax import report

_WORKDIR = flags.DEFINE_string("workdir", None, "Study directory holding results.sqlite.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the bootstrap intervals.")
flags.mark_flag_as_required("workdir")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  paths = report.write_report(_WORKDIR.value, seed=_SEED.value)
  for path in paths:
    print(path)
  data = json.loads(paths[-1].read_text())
  print()
  for check in data["conclusions"]:
    print(f"({check['id']}) {check['status']}: {check['claim']}")


if __name__ == "__main__":
  app.run(main)
