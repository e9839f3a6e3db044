"""The study driver with streamed input (data that does not fit on the device)."""

import os
import pathlib
import shutil

import numpy as np
import pytest

from experiments.configs import test as test_config
from imbjax import store as store_lib
from imbjax import study
from imbjax.datasets import image_folder

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
CIFAR_JPEG_TAR = SHARED / "cifar10-jpeg" / "cifar10-jpeg.tar.gz"
CLASSES = ("airplane", "automobile", "bird")


def _config(**overrides):
  c = test_config.get_config()
  c.input = "stream"
  c.methods = ("baseline", "oversampling", "two_phase_oversampling", "thresholding")
  c.repetitions = 1
  c.iterations = 6
  c.chunk_steps = 3
  c.batch_size = 4
  for k, v in overrides.items():
    c[k] = v
  return c


def _rows(workdir):
  with store_lib.ResultsStore(workdir) as s:
    return s.rows()


def test_streamed_memory_source_end_to_end(tmp_path):
  config = _config()
  result = study.train_and_evaluate(config, tmp_path, log=lambda *_: None)
  rows = _rows(tmp_path)
  assert result["rows"] == len(rows) == len(config.methods)
  assert all(r["status"] == "ok" and 0 <= r["auc"] <= 1 for r in rows)
  # Same seed, same numbers: a second run in a fresh workdir reproduces every row.
  again = tmp_path / "again"
  study.train_and_evaluate(config, again, log=lambda *_: None)
  first = {r["run_key"]: r["auc"] for r in rows}
  second = {r["run_key"]: r["auc"] for r in _rows(again)}
  assert first == pytest.approx(second, abs=1e-6)


@pytest.fixture(scope="module")
def jpeg_folder(tmp_path_factory):
  """20 real JPEGs for each of 3 classes: 14 train, 6 test per class."""
  if not CIFAR_JPEG_TAR.is_file():
    pytest.skip("../shared/data/cifar10-jpeg absent")
  raw = tmp_path_factory.mktemp("raw")
  keep = {f"test/{c}/{i:04d}.jpg" for c in CLASSES for i in range(20)}
  assert image_folder.safe_extract(CIFAR_JPEG_TAR, raw, select=keep.__contains__,
                                   limit=len(keep)) == len(keep)
  root = tmp_path_factory.mktemp("folder")
  for c in CLASSES:
    for split, idx in (("train", range(14)), ("test", range(14, 20))):
      os.makedirs(root / split / c, exist_ok=True)
      for i in idx:
        shutil.copy(raw / "test" / c / f"{i:04d}.jpg", root / split / c / f"{i:04d}.jpg")
  return root


@pytest.mark.realdata
def test_streamed_image_folder_with_crops(jpeg_folder, tmp_path):
  config = _config(dataset="image_folder", data_dir=str(jpeg_folder), augment_resize=32,
                   augment_crop=28, max_count=14, rhos=(4,), mus=(0.4,),
                   eval_batch_size=9)
  study.train_and_evaluate(config, tmp_path, log=lambda *_: None)
  rows = _rows(tmp_path)
  assert {r["method"] for r in rows} == set(config.methods)
  for r in rows:
    assert sorted(r["class_counts"]) == [4, 14, 14]
    assert len(r["per_class_recall"]) == 3
    assert np.isfinite(r["auc"])


def test_streaming_refuses_classwise_sampling(tmp_path):
  config = _config(methods=("class_balanced_sampling",))
  with pytest.raises(ValueError, match="class-wise"):
    study.train_and_evaluate(config, tmp_path, log=lambda *_: None)
