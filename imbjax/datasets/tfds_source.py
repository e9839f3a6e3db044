"""TensorFlow Datasets sources (mnist, fashion_mnist, cifar10, imagenet2012).

Offline, `tfds.load` spends minutes retrying downloads. So before anything could
download we ask the builder whether its data is already prepared in `data_dir`
(`DatasetBuilder.is_prepared()`); only if not do we probe the network, with a
deadline of a few seconds, and fail at once with directions to a local copy.
ImageNet needs the user's manual download; we check for its tar files first and say
where tfds expects them.

TensorFlow and tensorflow_datasets are imported inside functions, so importing
imbjax stays fast, and TensorFlow is kept off the GPUs (JAX owns them).
"""

from __future__ import annotations

import os
import re
import socket
import sys
import tempfile
import threading

import numpy as np

from imbjax.datasets.core import DataUnavailableError, Dataset, check_split

__all__ = ["TFDS_NAMES", "tensorflow", "network_reachable", "builder", "ensure_prepared",
           "tfds_split", "load_split", "IMAGENET_MANUAL_FILES", "builder_class_names"]

TFDS_NAMES = ("mnist", "fashion_mnist", "cifar10", "imagenet2012")
IMAGENET_MANUAL_FILES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")
# Where tfds downloads from; if it does not answer, no tfds download can succeed.
PROBE_HOST = ("storage.googleapis.com", 443)
PROBE_TIMEOUT_S = 2.0
_BATCH = 8192

_LOCAL_HINTS = {
    "mnist": "dataset='idx' or --config.data_dir=/path/to/mnist-idx (a directory with "
             "train-images-idx3-ubyte.gz etc., e.g. ../shared/data/mnist), or the offline "
             "dataset='digits'",
    "fashion_mnist": "--config.data_dir=/path/to/fashion-mnist-idx (the four IDX files) or "
                     "dataset='idx'",
    "cifar10": "--config.data_dir=/path/to/cifar-10-batches-bin (or -py), dataset="
               "'cifar10_local', or the JPEG copy dataset='cifar10_jpeg' with "
               "--config.data_dir=../shared/data/cifar10-jpeg",
    "imagenet2012": "an extracted ImageNet folder with dataset='image_folder'",
}


# An absl C++ INFO line: "I0000 00:00:1796160792.266029   24772 port.cc:153] ..."
_ABSL_INFO = re.compile(r"^I\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] ")


def _import_quietly():
  """The first import of TensorFlow, without its C++ start-up INFO lines.

  Those notices ("oneDNN custom operations are on", "All log messages before
  absl::InitializeLog()") go straight to file descriptor 2, so the import runs with it
  captured and everything but those lines is written back.
  """
  with tempfile.TemporaryFile() as captured:
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(captured.fileno(), 2)
    try:
      import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
    finally:
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      for line in captured.read().decode(errors="replace").splitlines(keepends=True):
        if not (_ABSL_INFO.match(line) or "before absl::InitializeLog()" in line):
          sys.stderr.write(line)


def tensorflow():
  """Imports TensorFlow (quietly, the first time) with its GPUs hidden (JAX owns the
  accelerator) and returns it. Every TensorFlow and tensorflow-datasets user in imbjax
  comes through here first, so a study that reads neither never imports TensorFlow."""
  if "tensorflow" not in sys.modules:
    _import_quietly()
  import tensorflow as tf

  try:
    tf.config.set_visible_devices([], "GPU")
  except RuntimeError:  # already initialised; the first caller has hidden them
    pass
  return tf


def network_reachable(host: tuple[str, int] = PROBE_HOST,
                      timeout: float = PROBE_TIMEOUT_S) -> bool:
  """Whether a TCP connection to `host` opens within about `timeout` seconds.

  DNS lookups ignore socket timeouts and can hang, so the probe runs in a daemon
  thread and we stop waiting after the deadline.
  """
  result = []

  def probe():
    try:
      socket.create_connection(host, timeout=timeout).close()
      result.append(True)
    except OSError:
      result.append(False)

  t = threading.Thread(target=probe, daemon=True)
  t.start()
  t.join(timeout + 1.0)
  return bool(result and result[0])


def builder(name: str, data_dir: str | os.PathLike | None = None):
  """`tfds.builder(name, data_dir=data_dir)`; builds no data and downloads nothing."""
  tensorflow()
  import tensorflow_datasets as tfds

  return tfds.builder(name, data_dir=None if data_dir is None else os.fspath(data_dir))


def _manual_dir(b) -> str:
  # tfds's default DownloadConfig puts manual downloads in <data_dir>/downloads/manual.
  return os.path.join(os.fspath(b.data_dir_root), "downloads", "manual")


def ensure_prepared(name: str, data_dir: str | os.PathLike | None = None):
  """Returns a builder whose data is prepared, preparing it only when that can work.

  Args:
    name: a tfds name.
    data_dir: tfds data_dir (None: tfds's default, ~/tensorflow_datasets or
      $TFDS_DATA_DIR).

  Returns:
    The `tfds` builder.

  Raises:
    DataUnavailableError: not prepared and (imagenet2012) the manual tar files are
      missing, or (others) the network is unreachable; the message names the paths
      and how to use a local copy instead.
  """
  b = builder(name, data_dir)
  if b.is_prepared():
    return b
  if name == "imagenet2012":
    manual = _manual_dir(b)
    missing = [f for f in IMAGENET_MANUAL_FILES if not os.path.isfile(os.path.join(manual, f))]
    if missing:
      raise DataUnavailableError(
          f"imagenet2012 is not prepared in {b.data_path} and needs a manual download: "
          f"put {', '.join(IMAGENET_MANUAL_FILES)} (from https://image-net.org, after "
          f"registering) in {manual} (missing: {', '.join(missing)}), i.e. "
          f"<data_dir>/downloads/manual, and pass that data_dir "
          f"(--config.data_dir={b.data_dir_root}); the first load then builds the "
          f"dataset from them offline. Or use {_LOCAL_HINTS['imagenet2012']}.")
  elif not network_reachable():
    raise DataUnavailableError(
        f"no network ({PROBE_HOST[0]} unreachable) and tfds dataset {name!r} is not "
        f"prepared in data_dir {b.data_path}; tfds would retry for minutes. Use a local "
        f"copy: {_LOCAL_HINTS.get(name, 'a prepared tfds data_dir')}.")
  b.download_and_prepare()
  return b


def tfds_split(name: str, split: str) -> str:
  """Maps our split names to tfds's: ImageNet's 'test' is its 'validation' split.

  Raises:
    ValueError: unknown split.
  """
  if name == "imagenet2012":
    check_split(name, split, ("train", "validation", "test"))
    return "validation" if split == "test" else split
  return check_split(name, split)


def builder_class_names(b) -> tuple[str, ...]:
  """The label names of a builder's 'label' feature."""
  return tuple(b.info.features["label"].names)



def load_split(name: str, split: str, *, data_dir: str | os.PathLike | None = None,
               class_names: tuple[str, ...] | None = None) -> Dataset:
  """Loads a whole tfds split into memory as a raw uint8 `Dataset`.

  Args:
    name: a tfds name.
    split: "train" or "test".
    data_dir: tfds data_dir (None: tfds's default).
    class_names: names to use instead of the builder's (tfds's CIFAR-10 builder
      learns its names only when preparing, so unprepared metadata says "0".."9");
      must match the builder's class count.

  Reads `builder.as_dataset(split, as_supervised=True)` in batches of 8192 and
  concatenates them (rather than `batch_size=-1`, which batches by the split size
  from the metadata and crashes when that is unknown, e.g. under
  `tfds.testing.mock_data`).

  Raises:
    DataUnavailableError: see `ensure_prepared`.
    ValueError: unknown split.
  """
  split = tfds_split(name, split)
  tensorflow()
  import tensorflow_datasets as tfds

  b = ensure_prepared(name, data_dir)
  ds = b.as_dataset(split=split, as_supervised=True, shuffle_files=False).batch(_BATCH)
  images, labels = [], []
  for x, y in tfds.as_numpy(ds):
    images.append(x)
    labels.append(y)
  names = builder_class_names(b)
  if class_names is not None:
    if len(class_names) != len(names):
      raise ValueError(f"class_names has {len(class_names)} names but tfds {name!r} has "
                       f"{len(names)} classes")
    names = tuple(class_names)
  if not images:
    raise DataUnavailableError(f"tfds {name!r} split {split!r} in {b.data_path} is empty")
  return Dataset(images=np.concatenate(images).astype(np.uint8, copy=False),
                 labels=np.concatenate(labels).astype(np.int32), num_classes=len(names),
                 class_names=names)
