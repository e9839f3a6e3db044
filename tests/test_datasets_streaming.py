"""Tests for imbjax.datasets.streaming: index plans through tf.data, deterministically."""

import os

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from imbjax.datasets import image_folder, streaming, tfds_source  # noqa: E402
from imbjax.datasets.core import Dataset  # noqa: E402

SHARED = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
CIFAR_JPEG_TAR = os.path.join(SHARED, "cifar10-jpeg", "cifar10-jpeg.tar.gz")


def indexed_dataset(n=30, hw=(4, 4)):
  """Each image is filled with its own index, so batches reveal which examples came."""
  images = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None],
                           (n,) + hw + (1,)).copy()
  return Dataset(images, (np.arange(n) % 3).astype(np.int32), 3, ("a", "b", "c"))


def collect(batches):
  batches = list(batches)
  return (np.concatenate([b["images"] for b in batches]),
          np.concatenate([b["labels"] for b in batches]), [len(b["labels"]) for b in batches])


def test_epoch_order_is_a_seeded_permutation():
  import jax

  plan = np.array([0, 0, 0, 4, 5, 5, 9, 1, 2, 2, 7])
  o = streaming.epoch_order(plan, seed=3, epoch=2)
  np.testing.assert_array_equal(np.sort(o), np.sort(plan))
  np.testing.assert_array_equal(o, streaming.epoch_order(plan, seed=3, epoch=2))
  want = plan[np.asarray(jax.random.permutation(
      jax.random.fold_in(jax.random.key(3), 2), len(plan)))]
  np.testing.assert_array_equal(o, want)
  others = [streaming.epoch_order(plan, seed=3, epoch=e) for e in range(3, 7)]
  assert any(not np.array_equal(o, x) for x in others)
  with pytest.raises(ValueError, match="1-D integer"):
    streaming.epoch_order(np.zeros((2, 2), int), seed=0, epoch=0)


def test_memory_source_follows_the_plan_each_epoch():
  ds = indexed_dataset()
  src = streaming.memory_source(ds)
  plan = np.array([0, 1, 1, 1, 2, 5, 5, 29, 17, 17, 3])  # oversampled, undersampled
  run = list(streaming.iterate(src, plan, seed=7, batch_size=4, train=True, num_epochs=2))
  assert [len(b["labels"]) for b in run] == [4, 4, 3, 4, 4, 3]
  for epoch, part in enumerate((run[:3], run[3:])):
    imgs, labels, _ = collect(part)
    got = imgs[:, 0, 0, 0].astype(int)
    np.testing.assert_array_equal(got, streaming.epoch_order(plan, seed=7, epoch=epoch))
    np.testing.assert_array_equal(labels, ds.labels[got])
    assert labels.dtype == np.int32
  again = list(streaming.iterate(src, plan, seed=7, batch_size=4, train=True, num_epochs=2))
  for a, b in zip(run, again):
    np.testing.assert_array_equal(a["images"], b["images"])
  resumed = list(streaming.iterate(src, plan, seed=7, batch_size=4, train=True, start_epoch=1))
  np.testing.assert_array_equal(collect(resumed)[0], collect(run[3:])[0])
  # Evaluation keeps the plan order; drop_remainder drops the partial batch.
  imgs, _, sizes = collect(streaming.iterate(src, plan, seed=7, batch_size=4, train=False,
                                             drop_remainder=True))
  np.testing.assert_array_equal(imgs[:, 0, 0, 0], plan[:8])
  assert sizes == [4, 4]
  with pytest.raises(ValueError, match=r"\[0, 30\)"):
    list(streaming.iterate(src, np.array([30]), seed=0, batch_size=2, train=True))


def test_resize_shorter_side_and_center_crop():
  tf = tfds_source.tensorflow()
  img = tf.zeros((30, 50, 3), tf.uint8)
  assert tuple(streaming.resize_shorter_side(img, 40).shape) == (40, 67, 3)
  assert tuple(streaming.resize_shorter_side(tf.zeros((90, 45, 1)), 40).shape) == (80, 40, 1)
  x = np.arange(7 * 9).reshape(7, 9, 1)
  np.testing.assert_array_equal(streaming.center_crop(tf.constant(x), 5).numpy(),
                                x[1:6, 2:7])
  with pytest.raises(ValueError, match="crop"):
    streaming.ImageNetAugment(resize=32, crop=40)


def _windows(img, crop):
  h, w = img.shape[:2]
  return [img[t:t + crop, s:s + crop] for t in range(h - crop + 1) for s in range(w - crop + 1)]


def test_train_crops_are_windows_of_the_image_or_its_mirror():
  n = 6
  base = np.arange(12 * 12 * 3, dtype=np.float32).reshape(12, 12, 3) / 1000.0
  images = np.stack([base + i for i in range(n)])
  ds = Dataset(images.astype(np.float32), np.zeros(n, np.int32), 1, ("x",))
  aug = streaming.ImageNetAugment(resize=12, crop=8)  # resize is then the identity
  plan = np.arange(n)
  out = collect(streaming.iterate(streaming.memory_source(ds), plan, seed=1, batch_size=n,
                                  train=True, augment=aug))[0]
  order = streaming.epoch_order(plan, seed=1, epoch=0)
  seen = set()
  for crop, i in zip(out, order):
    cands = _windows(images[i], 8) + _windows(images[i][:, ::-1], 8)
    hits = [k for k, c in enumerate(cands) if np.allclose(crop, c, atol=1e-4)]
    assert hits, "a training crop must be a window of the (mirrored) image"
    seen.add(hits[0])
  assert len(seen) > 1  # positions vary between examples
  again = collect(streaming.iterate(streaming.memory_source(ds), plan, seed=1, batch_size=n,
                                    train=True, augment=aug))[0]
  np.testing.assert_array_equal(out, again)
  test = collect(streaming.iterate(streaming.memory_source(ds), plan, seed=1, batch_size=n,
                                   train=False, augment=aug))[0]
  np.testing.assert_allclose(test, images[:, 2:10, 2:10], atol=1e-4)


@pytest.fixture(scope="module")
def jpeg_root(tmp_path_factory):
  """3 real JPEGs for each of 3 classes (from the front of the shared tarball)."""
  if not os.path.isfile(CIFAR_JPEG_TAR):
    pytest.skip("../shared/data/cifar10-jpeg absent")
  root = tmp_path_factory.mktemp("jpegs")
  keep = {f"test/{c}/{i:04d}.jpg" for c in ("airplane", "automobile", "bird") for i in range(3)}
  n = image_folder.safe_extract(CIFAR_JPEG_TAR, root, select=keep.__contains__, limit=9)
  assert n == 9
  os.rename(root / "test", root / "train")
  return root


@pytest.mark.realdata
def test_folder_source_decodes_real_jpegs(jpeg_root):
  from PIL import Image

  src = streaming.folder_source(jpeg_root, "train")
  assert src.class_names == ("airplane", "automobile", "bird") and src.num_examples == 9
  plan = np.arange(9)
  imgs, labels, _ = collect(streaming.iterate(src, plan, seed=0, batch_size=4, train=False))
  assert imgs.dtype == np.uint8 and imgs.shape == (9, 32, 32, 3)
  np.testing.assert_array_equal(labels, np.repeat([0, 1, 2], 3))
  want = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in src.data])
  np.testing.assert_array_equal(imgs, want)  # same IDCT as PIL's
  aug = streaming.ImageNetAugment(resize=40, crop=32)
  plan = np.array([0, 0, 4, 8, 8, 8])
  a, la, _ = collect(streaming.iterate(src, plan, seed=5, batch_size=4, train=True,
                                       augment=aug))
  assert a.shape == (6, 32, 32, 3) and a.dtype == np.float32
  assert 0.0 <= a.min() and a.max() <= 1.0
  np.testing.assert_array_equal(np.sort(la), [0, 0, 1, 2, 2, 2])
  b, _, _ = collect(streaming.iterate(src, plan, seed=5, batch_size=4, train=True,
                                      augment=aug))
  np.testing.assert_array_equal(a, b)


def test_tfds_source_applies_plan_counts(monkeypatch):
  monkeypatch.setattr(tfds.core.DatasetBuilder, "is_prepared", lambda self: True)
  with tfds.testing.mock_data(num_examples=12):
    src = streaming.tfds_source("mnist", "train")
    truth = [(x, y) for x, y in tfds.as_numpy(tfds.load("mnist", split="train",
                                                         as_supervised=True))]
    plan = np.array([0, 0, 0, 3, 7, 7, 11, 11, 11, 11])
    run = collect(streaming.iterate(src, plan, seed=2, batch_size=4, train=True,
                                    shuffle_buffer=64))
    again = collect(streaming.iterate(src, plan, seed=2, batch_size=4, train=True,
                                      shuffle_buffer=64))
    evals = collect(streaming.iterate(src, plan, seed=2, batch_size=4, train=False))
    aug = collect(streaming.iterate(src, np.arange(12), seed=2, batch_size=5, train=True,
                                    augment=streaming.ImageNetAugment(resize=32, crop=24)))
  labels = np.array([y for _, y in truth])
  np.testing.assert_array_equal(src.labels, labels)
  assert src.num_examples == 12
  np.testing.assert_array_equal(np.sort(run[1]), np.sort(labels[plan]))
  np.testing.assert_array_equal(run[0], again[0])
  # Evaluation reads in file order, each example as often as the plan says.
  np.testing.assert_array_equal(evals[0], np.stack([truth[i][0] for i in np.sort(plan)]))
  assert aug[0].shape == (12, 24, 24, 1) and aug[0].dtype == np.float32


def test_folder_source_pngs_match_pil(tmp_path):
  from PIL import Image

  rng = np.random.default_rng(0)
  rgb = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
  gray = rng.integers(0, 256, (5, 6), dtype=np.uint8)
  for c, arr in (("a", rgb), ("b", gray)):
    os.makedirs(tmp_path / "train" / c)
    Image.fromarray(arr).save(tmp_path / "train" / c / "0.png")
  src = streaming.folder_source(tmp_path, "train")
  imgs, labels, _ = collect(streaming.iterate(src, np.array([1, 0]), seed=0, batch_size=2,
                                              train=False))
  np.testing.assert_array_equal(labels, [1, 0])
  np.testing.assert_array_equal(imgs[1], rgb)
  np.testing.assert_array_equal(imgs[0], np.repeat(gray[..., None], 3, axis=-1))
