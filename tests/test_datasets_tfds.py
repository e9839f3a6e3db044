"""Tests for the tfds path of imbjax.datasets: mock data, offline detection, ImageNet."""

import socket
import time

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from imbjax import datasets  # noqa: E402
from imbjax.datasets import tfds_source  # noqa: E402
from imbjax.datasets.core import DataUnavailableError  # noqa: E402


def _no_probe():
  raise AssertionError("the network probe must not run when the data is prepared")


@pytest.fixture
def prepared(monkeypatch):
  """mock_data builders have no files, so say they are prepared; forbid the probe."""
  monkeypatch.setattr(tfds.core.DatasetBuilder, "is_prepared", lambda self: True)
  monkeypatch.setattr(tfds_source, "network_reachable", _no_probe)


def _tfds_truth(name, split):
  xs, ys = [], []
  for x, y in tfds.as_numpy(tfds.load(name, split=split, as_supervised=True)):
    xs.append(x)
    ys.append(y)
  return np.stack(xs), np.array(ys)


def test_mnist_through_tfds_mock(prepared, tmp_path):
  with tfds.testing.mock_data(num_examples=9):
    ds = datasets.load("mnist", "train", data_dir=tmp_path, preprocess=False)
    x, y = _tfds_truth("mnist", "train")
    f = datasets.load("mnist", "test", data_dir=tmp_path)
  assert ds.images.shape == (9, 28, 28, 1) and ds.images.dtype == np.uint8
  np.testing.assert_array_equal(ds.images, x)
  np.testing.assert_array_equal(ds.labels, y)
  assert ds.labels.dtype == np.int32 and ds.class_names == tuple("0123456789")
  assert f.images.dtype == np.float32 and f.images.max() <= 1.0
  np.testing.assert_allclose(f.images, x / 255.0, rtol=1e-6)


def test_cifar10_and_fashion_through_tfds_mock(prepared, tmp_path):
  with tfds.testing.mock_data(num_examples=4):
    c = datasets.load("cifar10", "test", data_dir=tmp_path, preprocess=False)
    fm = datasets.load("fashion_mnist", "train", data_dir=tmp_path, preprocess=False)
  assert c.images.shape == (4, 32, 32, 3) and c.class_names[0] == "airplane"
  assert fm.images.shape == (4, 28, 28, 1) and fm.class_names[-1] == "Ankle boot"


def test_unprepared_with_network_downloads(monkeypatch, tmp_path):
  """Not prepared + network up: download_and_prepare runs (mocked to a no-op)."""
  calls = []
  monkeypatch.setattr(tfds_source, "network_reachable", lambda *a, **k: calls.append(1) or True)
  with tfds.testing.mock_data(num_examples=3):
    ds = datasets.load("mnist", "test", data_dir=tmp_path)
  assert calls == [1] and len(ds) == 3


def test_offline_detector_fails_fast_with_directions(monkeypatch, tmp_path):
  def refuse(*args, **kwargs):
    raise OSError("Name or service not known")

  monkeypatch.setattr(socket, "create_connection", refuse)
  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare",
                      lambda self, **kw: pytest.fail("must not try to download"))
  t0 = time.monotonic()
  with pytest.raises(DataUnavailableError) as e:
    datasets.load("mnist", "train", data_dir=tmp_path)
  assert time.monotonic() - t0 < 10.0
  msg = str(e.value)
  assert "no network" in msg and str(tmp_path / "mnist") in msg
  assert "--config.data_dir=" in msg and "dataset='idx'" in msg
  with pytest.raises(DataUnavailableError, match="cifar10_local"):
    datasets.load("cifar10", "test", data_dir=tmp_path)


def test_network_reachable_on_unresolvable_host_is_quick():
  t0 = time.monotonic()
  assert tfds_source.network_reachable(("nonexistent.invalid", 443), timeout=0.5) is False
  assert time.monotonic() - t0 < 2.0


def test_imagenet_needs_manual_download_then_points_to_streaming(monkeypatch, tmp_path):
  monkeypatch.setattr(tfds_source, "network_reachable", _no_probe)
  manual = tmp_path / "downloads" / "manual"
  with pytest.raises(DataUnavailableError) as e:
    datasets.load("imagenet2012", "train", data_dir=tmp_path)
  msg = str(e.value)
  assert str(manual) in msg and "ILSVRC2012_img_train.tar" in msg
  assert "ILSVRC2012_img_val.tar" in msg and f"--config.data_dir={tmp_path}" in msg
  monkeypatch.setattr(tfds.core.DatasetBuilder, "is_prepared", lambda self: True)
  with pytest.raises(ValueError, match=r"does not fit in memory.*streaming"):
    datasets.load("imagenet2012", "test", data_dir=tmp_path)
  assert tfds_source.tfds_split("imagenet2012", "test") == "validation"
  with pytest.raises(ValueError, match="Unknown split"):
    tfds_source.tfds_split("mnist", "validation")
