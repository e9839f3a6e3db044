"""The paper's studies on this machine, extrapolated from two measured JSON lines.

Reads the last JSON line of `study_throughput.py` (one population group of the MNIST
study through the real driver) and of `population_throughput.py --model allcnn`, and
prints the wall time of:

* the paper's MNIST study, 22,500 LeNet-5s x 10,000 iterations x batch 64, as
  ceil(22,500 / P) groups like the measured one (its wall minus start-up and data,
  which a sweep pays once), plus start-up and data once; beside it the hours at the
  group's training-phase rate alone and at the step benchmark's rate;
* the paper's CIFAR-10 study, 480 All-CNNs x 70,000 iterations x batch 256, at the
  All-CNN population rate (training only), and that times the MNIST group's
  end-to-end overhead (wall / training phase) as the estimate of a whole run.

  python -m benchmarks.paper_forecast --study study.json --allcnn allcnn.json

The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib

MNIST_NETWORKS, MNIST_ITERATIONS, MNIST_BATCH = 22_500, 10_000, 64
CIFAR_NETWORKS, CIFAR_ITERATIONS, CIFAR_BATCH = 480, 70_000, 256


def last_json(path: str) -> dict:
  """The last line of `path` that parses as a JSON object."""
  for line in reversed(pathlib.Path(path).read_text().splitlines()):
    line = line.strip()
    if line.startswith("{"):
      try:
        return json.loads(line)
      except json.JSONDecodeError:
        continue
  raise ValueError(f"{path}: no JSON line")


def forecast(study: dict | None, allcnn: dict | None) -> dict:
  """Hours of the paper's studies from the measured JSONs (either may be None)."""
  out: dict = {}
  overhead = None
  if study is not None:
    if (study["iterations"], study["batch_size"]) != (MNIST_ITERATIONS, MNIST_BATCH):
      out["mnist_note"] = (f"the group ran {study['iterations']} iterations x batch "
                           f"{study['batch_size']}, not the paper's 10,000 x 64: scaled "
                           f"by images")
    phases = study["phases"]
    once = phases.get("startup", 0.0) + phases.get("data", 0.0)
    per_group = study["wall_s"] - once
    scale = MNIST_ITERATIONS * MNIST_BATCH / (study["iterations"] * study["batch_size"])
    p = max(study["models"], 1)
    groups = math.ceil(MNIST_NETWORKS / p)
    out["mnist_groups"] = groups
    out["mnist_hours"] = (once + groups * per_group * scale) / 3600
    images = MNIST_NETWORKS * MNIST_ITERATIONS * MNIST_BATCH
    if study.get("training_images_per_s"):
      out["mnist_training_only_hours"] = images / study["training_images_per_s"] / 3600
      overhead = study["wall_s"] / (study["training_images"] / study["training_images_per_s"])
      out["end_to_end_overhead"] = overhead
    if study.get("step_images_per_s"):
      out["mnist_step_only_hours"] = images / study["step_images_per_s"] / 3600
  if allcnn is not None:
    images = CIFAR_NETWORKS * CIFAR_ITERATIONS * CIFAR_BATCH
    out["cifar10_allcnn_images_per_s"] = allcnn["images_per_s"]
    out["cifar10_allcnn_P"] = allcnn["P"]
    out["cifar10_allcnn_impl"] = allcnn.get("best_impl", allcnn.get("conv_impl"))
    if allcnn.get("batch") not in (None, CIFAR_BATCH):
      out["cifar10_note"] = f"measured at batch {allcnn['batch']}, not 256"
    out["cifar10_training_only_hours"] = images / allcnn["images_per_s"] / 3600
    if overhead is not None:
      out["cifar10_hours"] = out["cifar10_training_only_hours"] * overhead
  return out


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--study", default=None, help="study_throughput.py output (a log)")
  ap.add_argument("--allcnn", default=None, help="population_throughput.py output")
  a = ap.parse_args(argv)
  study = last_json(a.study) if a.study else None
  allcnn = last_json(a.allcnn) if a.allcnn else None
  out = forecast(study, allcnn)
  for k, v in out.items():
    print(f"# {k}: {v:,.3f}" if isinstance(v, float) else f"# {k}: {v}")
  print(json.dumps(out), flush=True)
  return out


if __name__ == "__main__":
  main()
