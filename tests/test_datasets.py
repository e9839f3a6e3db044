"""Tests for imbjax.datasets: readers of untrusted files, preprocessing, registry, digits.

Fixture files are written by the tests into tmp_path with independent writers (the
format specs, not the readers). Real data under ../shared/data is used when present.
"""

import gzip
import os
import pathlib
import pickle
import struct
import tarfile

import numpy as np
import pytest

from imbjax import datasets
from imbjax.datasets import cifar, digits, idx, image_folder, preprocess
from imbjax.datasets.core import DataFormatError, DataNotFoundError, Dataset

SHARED = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
MNIST_DIR = os.path.join(SHARED, "mnist")
CIFAR_JPEG_TAR = os.path.join(SHARED, "cifar10-jpeg", "cifar10-jpeg.tar.gz")
RNG = np.random.default_rng(0)


# ---------------------------------------------------------------- fixture writers

def write_idx(path, arr, *, code=0x08, gz=True, magic=None, extra=b"", cut=0):
  arr = np.asarray(arr)
  dt = {0x08: ">u1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4"}[code]
  head = magic if magic is not None else bytes([0, 0, code, arr.ndim])
  data = head + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.astype(dt).tobytes()
  data = data[:len(data) - cut] + extra
  with (gzip.open if gz else open)(path, "wb") as f:
    f.write(data)
  return path


def write_idx_dir(d, n_train=12, n_test=5, classes=10, gz=True, hw=(6, 5)):
  os.makedirs(d, exist_ok=True)
  out = {}
  for split, n in (("train", n_train), ("test", n_test)):
    x = RNG.integers(0, 256, size=(n,) + hw, dtype=np.uint8)
    y = (np.arange(n) % classes).astype(np.uint8)
    im, lb = idx.split_files(split)
    sfx = ".gz" if gz else ""
    write_idx(os.path.join(d, im + sfx), x, gz=gz)
    write_idx(os.path.join(d, lb + sfx), y, gz=gz)
    out[split] = (x, y)
  return out


def cifar_record_bytes(images, labels):
  """One record per image: label byte, then the R, G, B planes row-major."""
  out = bytearray()
  for img, lab in zip(images, labels):
    out.append(int(lab))
    for c in range(3):
      out += img[:, :, c].tobytes()
  return bytes(out)


def make_cifar(n_per_batch=3):
  batches = {}
  for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
    x = RNG.integers(0, 256, size=(n_per_batch, 32, 32, 3), dtype=np.uint8)
    y = RNG.integers(0, 10, size=n_per_batch)
    batches[name] = (x, y)
  return batches


def write_cifar_bin(d, batches):
  os.makedirs(d, exist_ok=True)
  for name, (x, y) in batches.items():
    with open(os.path.join(d, name + ".bin"), "wb") as f:
      f.write(cifar_record_bytes(x, y))


def py_batch_dict(x, y):
  # CIFAR's python batches: rows of 3072 = R plane, G plane, B plane.
  data = np.stack([np.concatenate([img[:, :, c].ravel() for c in range(3)]) for img in x])
  return {b"batch_label": b"testing", b"labels": [int(v) for v in y], b"data": data,
          b"filenames": [b"f%d.png" % i for i in range(len(y))]}


def write_cifar_py(d, batches, protocol=2):
  os.makedirs(d, exist_ok=True)
  for name, (x, y) in batches.items():
    with open(os.path.join(d, name), "wb") as f:
      pickle.dump(py_batch_dict(x, y), f, protocol=protocol)


def cat(batches, split):
  names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
  return (np.concatenate([batches[n][0] for n in names]),
          np.concatenate([batches[n][1] for n in names]))


# ---------------------------------------------------------------- Dataset / registry

def test_dataset_validate_rejects_bad_fields():
  x = np.zeros((3, 2, 2, 1), np.uint8)
  ok = Dataset(x, np.array([0, 1, 2], np.int32), 3, ("a", "b", "c"))
  assert len(ok) == 3 and ok.class_counts().tolist() == [1, 1, 1]
  with pytest.raises(ValueError, match=r"\[0, 3\).*\[0, 3\]"):
    Dataset(x, np.array([0, 1, 3], np.int32), 3, ("a", "b", "c"))
  with pytest.raises(ValueError, match="int32"):
    Dataset(x, np.array([0, 1, 2], np.int64), 3, ("a", "b", "c"))
  with pytest.raises(ValueError, match="3 images but 2 labels"):
    Dataset(x, np.array([0, 1], np.int32), 3, ("a", "b", "c"))
  with pytest.raises(ValueError, match="NHWC"):
    Dataset(x[..., 0], np.array([0, 1, 2], np.int32), 3, ("a", "b", "c"))
  with pytest.raises(ValueError, match="class_names"):
    Dataset(x, np.array([0, 1, 2], np.int32), 3, ("a", "b"))


def test_registry_names_and_refusals(tmp_path):
  assert set(datasets.names()) == {"mnist", "fashion_mnist", "cifar10", "imagenet2012", "idx",
                                   "cifar10_local", "image_folder", "cifar10_jpeg", "digits"}
  with pytest.raises(ValueError, match=r"'nope'.*cifar10.*digits.*mnist"):
    datasets.load("nope", "train")
  with pytest.raises(ValueError, match=r"Unknown split 'valid'.*train, test"):
    datasets.load("digits", "valid")
  for name in ("idx", "cifar10_local", "image_folder", "cifar10_jpeg"):
    with pytest.raises(DataNotFoundError, match="needs data_dir"):
      datasets.load(name, "train")
  assert datasets.preprocessing_of("cifar10_jpeg") == "gcn_zca"
  assert datasets.preprocessing_of("mnist") == "unit"


# ---------------------------------------------------------------- IDX

@pytest.mark.parametrize("gz", [True, False])
def test_idx_roundtrip_and_registry(tmp_path, gz):
  truth = write_idx_dir(tmp_path, n_train=13, n_test=4, classes=7, gz=gz)
  ds = datasets.load("idx", "test", data_dir=tmp_path, preprocess=False)
  np.testing.assert_array_equal(ds.images[..., 0], truth["test"][0])
  np.testing.assert_array_equal(ds.labels, truth["test"][1])
  assert ds.images.dtype == np.uint8 and ds.images.shape == (4, 6, 5, 1)
  assert ds.num_classes == 7  # max train label + 1, even for the test split
  f = datasets.load("idx", "train", data_dir=tmp_path)
  assert f.images.dtype == np.float32
  np.testing.assert_allclose(f.images[..., 0], truth["train"][0] / 255.0, rtol=1e-6)


def test_mnist_name_uses_local_idx_files(tmp_path):
  truth = write_idx_dir(tmp_path, classes=10)
  ds = datasets.load("mnist", "train", data_dir=tmp_path, preprocess=False)
  np.testing.assert_array_equal(ds.labels, truth["train"][1])
  assert ds.num_classes == 10 and ds.class_names == tuple("0123456789")
  fm = datasets.load("fashion_mnist", "test", data_dir=tmp_path, preprocess=False)
  assert fm.class_names[0] == "T-shirt/top" and fm.class_names[9] == "Ankle boot"


@pytest.mark.parametrize("code,dtype", [(0x0B, np.int16), (0x0C, np.int32), (0x0D, np.float32)])
def test_read_idx_big_endian_types(tmp_path, code, dtype):
  arr = (np.arange(24).reshape(2, 3, 4) * 1000 - 7000).astype(dtype)
  got = idx.read_idx(write_idx(tmp_path / "a", arr, code=code, gz=False))
  assert got.dtype == np.dtype(dtype) and got.dtype.isnative
  np.testing.assert_array_equal(got, arr)


def test_idx_truncated_payload_names_file_and_lengths(tmp_path):
  p = write_idx(tmp_path / "x.gz", np.zeros((3, 4, 4), np.uint8), cut=5)
  with pytest.raises(DataFormatError, match=r"x\.gz.*truncated.*48 bytes, found 43"):
    idx.read_idx(p)


def test_idx_trailing_garbage(tmp_path):
  p = write_idx(tmp_path / "x", np.zeros((3, 4, 4), np.uint8), gz=False, extra=b"junk")
  with pytest.raises(DataFormatError, match=r"trailing bytes.*48 bytes"):
    idx.read_idx(p)


def test_idx_bad_magic_and_type(tmp_path):
  p = write_idx(tmp_path / "m", np.zeros((2, 2), np.uint8), magic=b"\x01\x02\x08\x02")
  with pytest.raises(DataFormatError, match="bad magic 0x01020802"):
    idx.read_idx(p)
  p = write_idx(tmp_path / "t", np.zeros((2, 2), np.uint8), magic=b"\x00\x00\x07\x02")
  with pytest.raises(DataFormatError, match="unknown element type code 0x07"):
    idx.read_idx(p)
  (tmp_path / "short").write_bytes(b"\x00\x00\x08\x03\x00\x00")
  with pytest.raises(DataFormatError, match="truncated header"):
    idx.read_idx(tmp_path / "short")


def test_idx_corrupt_gzip(tmp_path):
  p = write_idx(tmp_path / "g.gz", np.zeros((50, 8, 8), np.uint8))
  raw = p.read_bytes()
  p.write_bytes(raw[: len(raw) // 2])
  with pytest.raises(DataFormatError, match="g.gz"):
    idx.read_idx(p)


def test_idx_label_checks(tmp_path):
  write_idx_dir(tmp_path)
  lb = tmp_path / "t10k-labels-idx1-ubyte.gz"
  write_idx(lb, np.array([0, 1, 2, 12, 3], np.uint8))
  with pytest.raises(DataFormatError, match=r"label 12 out of range \[0, 10\)"):
    datasets.load("mnist", "test", data_dir=tmp_path)
  write_idx(lb, np.array([0, 1, 2], np.uint8))
  with pytest.raises(DataFormatError, match="5 images.*but 3 labels"):
    datasets.load("mnist", "test", data_dir=tmp_path)
  write_idx(lb, np.zeros((5, 2), np.uint8))
  with pytest.raises(DataFormatError, match="1-D integer"):
    datasets.load("mnist", "test", data_dir=tmp_path)


def test_idx_missing_files_listed(tmp_path):
  write_idx_dir(tmp_path)
  os.remove(tmp_path / "t10k-images-idx3-ubyte.gz")
  with pytest.raises(DataNotFoundError, match=r"lacks t10k-images-idx3-ubyte\[\.gz\]") as e:
    datasets.load("idx", "test", data_dir=tmp_path)
  assert str(tmp_path) in str(e.value) and isinstance(e.value, ValueError)
  with pytest.raises(DataNotFoundError, match="not found.*train-images-idx3-ubyte"):
    datasets.load("idx", "train", data_dir=tmp_path / "nowhere")


# ---------------------------------------------------------------- CIFAR

@pytest.mark.parametrize("layout", ["bin_subdir", "bin_flat", "py_subdir", "py_flat_p5"])
def test_cifar_layouts_roundtrip(tmp_path, layout):
  b = make_cifar()
  if layout == "bin_subdir":
    write_cifar_bin(tmp_path / "cifar-10-batches-bin", b)
  elif layout == "bin_flat":
    write_cifar_bin(tmp_path, b)
  elif layout == "py_subdir":
    write_cifar_py(tmp_path / "cifar-10-batches-py", b)
  else:
    write_cifar_py(tmp_path, b, protocol=5)
  for split in ("train", "test"):
    ds = datasets.load("cifar10_local", split, data_dir=tmp_path, preprocess=False)
    x, y = cat(b, split)
    np.testing.assert_array_equal(ds.images, x)
    np.testing.assert_array_equal(ds.labels, y)
    assert ds.class_names[0] == "airplane" and ds.num_classes == 10
  # The tfds name reads local batches too.
  ds = datasets.load("cifar10", "test", data_dir=tmp_path, preprocess=False)
  np.testing.assert_array_equal(ds.images, b["test_batch"][0])


def test_cifar_bin_wrong_size_and_label(tmp_path):
  b = make_cifar(2)
  write_cifar_bin(tmp_path, b)
  p = tmp_path / "test_batch.bin"
  p.write_bytes(p.read_bytes()[:-1])
  with pytest.raises(DataFormatError, match=r"test_batch\.bin: size 6145 .*3073"):
    datasets.load("cifar10_local", "test", data_dir=tmp_path)
  x, _ = b["test_batch"]
  p.write_bytes(cifar_record_bytes(x, [3, 10]))
  with pytest.raises(DataFormatError, match=r"label 10 out of range"):
    datasets.load("cifar10_local", "test", data_dir=tmp_path)


def test_cifar_py_bad_contents(tmp_path):
  b = make_cifar(2)
  write_cifar_py(tmp_path, b)
  d = py_batch_dict(*b["test_batch"])
  d[b"data"] = d[b"data"][:, :100]
  (tmp_path / "test_batch").write_bytes(pickle.dumps(d, protocol=2))
  with pytest.raises(DataFormatError, match=r"\(N, 3072\)"):
    datasets.load("cifar10_local", "test", data_dir=tmp_path)
  d = py_batch_dict(*b["test_batch"])
  d[b"labels"] = [1, 11]
  (tmp_path / "test_batch").write_bytes(pickle.dumps(d, protocol=2))
  with pytest.raises(DataFormatError, match="label 11"):
    datasets.load("cifar10_local", "test", data_dir=tmp_path)


class _Evil:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


class _EvalEvil:
  def __reduce__(self):
    return (eval, ("__import__('os').getcwd()",))


def test_malicious_pickle_refused_without_running(tmp_path):
  marker = tmp_path / "pwned"
  evil = pickle.dumps({b"data": _Evil(marker), b"labels": [0]}, protocol=2)
  (tmp_path / "test_batch").write_bytes(evil)
  with pytest.raises(pickle.UnpicklingError, match=r"refusing to load global (posix|nt)\.system"):
    datasets.load("cifar10_local", "test", data_dir=tmp_path)
  assert not marker.exists()
  with pytest.raises(pickle.UnpicklingError, match=r"builtins\.eval"):
    cifar.safe_unpickle(pickle.dumps(_EvalEvil()))
  # _codecs.encode is allowed only as the latin-1 bytes constructor pickles use.
  crafted = b"\x80\x02c_codecs\nencode\nq\x00X\x01\x00\x00\x00aX\x06\x00\x00\x00base64\x86R."
  with pytest.raises(pickle.UnpicklingError, match="base64"):
    cifar.safe_unpickle(crafted)
  # Plain containers and arrays still load.
  obj = cifar.safe_unpickle(pickle.dumps({"a": [1, 2.5, b"x"], "n": np.arange(3)}, protocol=2))
  assert obj["a"] == [1, 2.5, b"x"] and obj["n"].tolist() == [0, 1, 2]


def test_cifar_missing_names_expected_files(tmp_path):
  with pytest.raises(DataNotFoundError, match=r"cifar-10-batches-bin/data_batch_1\.bin.*"
                                              r"data_batch_5.*cifar-10-batches-py/data_batch_1"):
    datasets.load("cifar10_local", "train", data_dir=tmp_path)


def test_cifar_preprocessing_fits_on_train(tmp_path, monkeypatch):
  """load('test') GCN+ZCA must be fitted on train. A spy replaces the (slow, D=3072)
  fit; fit and apply themselves are checked on small data below."""
  b = make_cifar(2)
  write_cifar_bin(tmp_path, b)
  seen = []
  mean = np.full(3072, 0.25, np.float32)

  def spy_fit(images):
    seen.append(images.copy())
    return mean, np.eye(3072, dtype=np.float32)

  monkeypatch.setattr(preprocess, "fit_gcn_zca", spy_fit)
  ds = datasets.load("cifar10_local", "test", data_dir=tmp_path)
  assert len(seen) == 1
  np.testing.assert_array_equal(seen[0], cat(b, "train")[0])
  x = b["test_batch"][0].reshape(2, -1).astype(np.float64)
  x -= x.mean(axis=1, keepdims=True)
  gcn = 55.0 * x / np.linalg.norm(x, axis=1, keepdims=True)
  np.testing.assert_allclose(ds.images.reshape(2, -1), gcn - 0.25, rtol=1e-5, atol=1e-4)
  assert ds.images.dtype == np.float32 and ds.images.shape == (2, 32, 32, 3)
  both = datasets.load_splits("cifar10_local", data_dir=tmp_path)
  assert len(seen) == 2
  np.testing.assert_array_equal(both["test"].images, ds.images)


# ---------------------------------------------------------------- preprocessing

def test_gcn_hand_computed():
  x = np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0]])
  got = preprocess.global_contrast_normalize(x, scale=55.0)
  want = np.array([-1.5, -0.5, 0.5, 1.5]) * 55.0 / np.sqrt(5.0)
  np.testing.assert_allclose(got[0], want, rtol=1e-6)
  np.testing.assert_array_equal(got[1], np.zeros(4))  # constant image: centred only
  imgs = RNG.integers(0, 256, (5, 4, 4, 3)).astype(np.uint8)
  g = preprocess.global_contrast_normalize(imgs).reshape(5, -1)
  np.testing.assert_allclose(np.linalg.norm(g, axis=1), 55.0, rtol=1e-5)
  np.testing.assert_allclose(g.mean(axis=1), 0.0, atol=1e-4)
  with pytest.raises(ValueError, match="scale"):
    preprocess.global_contrast_normalize(x, scale=0.0)


def _correlated(n, d):
  mix = RNG.normal(size=(d, d)) * np.linspace(0.1, 3.0, d)
  return (RNG.normal(size=(n, d)) @ mix + 7.0).astype(np.float32)


def test_zca_whitens_train_to_identity_covariance():
  x = _correlated(6000, 12).reshape(6000, 2, 2, 3)
  mean, w = preprocess.fit_zca(x, eps=1e-6)
  z = preprocess.apply_zca(x, mean, w)
  assert z.shape == x.shape and z.dtype == np.float32
  flat = z.reshape(6000, -1).astype(np.float64)
  np.testing.assert_allclose(flat.mean(axis=0), 0.0, atol=1e-3)
  np.testing.assert_allclose(np.cov(flat.T, bias=True), np.eye(12), atol=2e-3)
  np.testing.assert_allclose(w, w.T, atol=1e-5)  # ZCA (not PCA): symmetric


def test_zca_eps_shrinks_eigenvalues_to_lambda_over_lambda_plus_eps():
  x = _correlated(3000, 10)
  lam = np.linalg.eigvalsh(np.cov(x.astype(np.float64).T, bias=True))
  eps = 0.1 * np.median(lam)
  mean, w = preprocess.fit_zca(x, eps=eps)
  z = preprocess.apply_zca(x, mean, w).astype(np.float64)
  got = np.linalg.eigvalsh(np.cov(z.T, bias=True))
  np.testing.assert_allclose(np.sort(got), np.sort(lam / (lam + eps)), rtol=2e-3, atol=1e-4)
  # Test data is whitened with the *train* mean and W.
  t = _correlated(5, 10)
  np.testing.assert_allclose(preprocess.apply_zca(t, mean, w), (t - mean) @ w, rtol=1e-5,
                             atol=1e-4)
  with pytest.raises(ValueError, match="10 features|features per example"):
    preprocess.apply_zca(t[:, :9], mean, w)
  with pytest.raises(ValueError, match="eps"):
    preprocess.fit_zca(x, eps=-1.0)


def test_to_unit_float():
  got = preprocess.to_unit_float(np.array([0, 51, 255], np.uint8))
  np.testing.assert_allclose(got, [0.0, 0.2, 1.0], rtol=1e-6)
  with pytest.raises(ValueError, match="uint8"):
    preprocess.to_unit_float(np.zeros(3, np.float32))


# ---------------------------------------------------------------- digits

def test_bilinear_upsample_matches_jax_image_resize():
  import jax

  x = RNG.uniform(0, 16, size=(3, 8, 8))
  want = np.asarray(jax.image.resize(x, (3, 28, 28), method="bilinear"))
  np.testing.assert_allclose(digits.upsample(x), want, rtol=1e-5, atol=1e-5)


def test_digits_offline_split():
  from sklearn.datasets import load_digits
  from sklearn.model_selection import train_test_split

  tr = datasets.load("digits", "train", preprocess=False)
  te = datasets.load("digits", "test", preprocess=False)
  assert tr.images.shape == (1347, 28, 28, 1) and te.images.shape == (450, 28, 28, 1)
  assert tr.images.dtype == np.uint8 and tr.num_classes == 10
  assert tr.images.max() == 255
  bunch = load_digits()
  total = np.bincount(bunch.target, minlength=10)
  np.testing.assert_array_equal(tr.class_counts() + te.class_counts(), total)
  assert np.all(np.abs(te.class_counts() - 0.25 * total) <= 1)  # stratified
  # Deterministic: a second load is identical, and the split is sklearn's seeded one.
  again = datasets.load("digits", "test", preprocess=False)
  np.testing.assert_array_equal(again.images, te.images)
  _, test_idx = train_test_split(np.arange(len(bunch.target)),
                                 test_size=0.25, stratify=bunch.target, random_state=0)
  test_idx = np.sort(test_idx)
  np.testing.assert_array_equal(te.labels, bunch.target[test_idx])
  # The shipped split is that split, and the data read without scikit-learn its data.
  np.testing.assert_array_equal(np.flatnonzero(digits.in_test_split()), test_idx)
  np.testing.assert_array_equal(digits.split_indices(bunch.target)["test"], test_idx)
  images, labels = digits.load_raw()
  np.testing.assert_array_equal(images, bunch.images)
  np.testing.assert_array_equal(labels, bunch.target)
  import jax

  up = np.asarray(jax.image.resize(bunch.images[test_idx] * 255.0 / 16.0, (450, 28, 28),
                                   "bilinear"))
  assert np.abs(te.images[..., 0].astype(float) - up).max() <= 0.51
  f = datasets.load("digits", "train")
  assert f.images.dtype == np.float32 and 0.0 <= f.images.min() and f.images.max() == 1.0


def test_digits_load_without_importing_sklearn_and_refuse_other_data(tmp_path):
  import subprocess
  import sys
  code = ("import sys; from imbjax import datasets; datasets.load('digits', 'test'); "
          "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sklearn'))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True, cwd=pathlib.Path(__file__).resolve().parents[1])
  assert out.stdout.strip() == "[]", out.stdout
  raw = np.loadtxt(digits.data_file(), delimiter=",")
  raw[7, 3] = (raw[7, 3] + 1) % 17  # one pixel of one digit, still in 0..16
  changed = tmp_path / "digits.csv"
  np.savetxt(changed, raw, delimiter=",", fmt="%d")
  with pytest.raises(ValueError, match=r"digits\.csv does not hold the 1797 scikit-learn "
                     r"digits .* SHA-256 68aea062d35a"):
    digits.load_raw(changed)
  np.savetxt(changed, raw[:100], delimiter=",", fmt="%d")
  with pytest.raises(ValueError, match=r"shape \(100, 65\); want \(1797, 65\)"):
    digits.load_raw(changed)


# ---------------------------------------------------------------- image folders

def _evil_tar(path, kind):
  with tarfile.open(path, "w:gz") as tar:
    if kind == "symlink":
      info = tarfile.TarInfo("train/a/link.jpg")
      info.type = tarfile.SYMTYPE
      info.linkname = "/etc/passwd"
      tar.addfile(info)
    else:
      data = b"evil"
      info = tarfile.TarInfo({"dotdot": "train/../../evil.jpg",
                              "absolute": "/tmp/imbjax-evil.jpg"}[kind])
      info.size = len(data)
      import io

      tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_safe_extract_refuses_escapes(tmp_path, kind):
  _evil_tar(tmp_path / "e.tar.gz", kind)
  dest = tmp_path / "out" / "inner"
  with pytest.raises(DataFormatError, match="refusing member"):
    image_folder.safe_extract(tmp_path / "e.tar.gz", dest)
  assert not (tmp_path / "out" / "evil.jpg").exists()
  assert not (tmp_path / "evil.jpg").exists()
  assert not list(dest.rglob("*.jpg"))


def _write_png(path, arr):
  from PIL import Image

  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(arr).save(path)


def test_image_folder_pngs_classes_and_sizes(tmp_path):
  a = RNG.integers(0, 256, (4, 5, 3), dtype=np.uint8)
  b = RNG.integers(0, 256, (4, 5, 3), dtype=np.uint8)
  _write_png(tmp_path / "train" / "zebra" / "1.png", a)
  _write_png(tmp_path / "train" / "ant" / "x.PNG", b)
  _write_png(tmp_path / "test" / "zebra" / "1.png", a)
  _write_png(tmp_path / "test" / "ant" / "2.png", b)
  (tmp_path / "train" / "ant" / "notes.txt").write_text("ignored")
  ds = datasets.load("image_folder", "train", data_dir=tmp_path, preprocess=False)
  assert ds.class_names == ("ant", "zebra")
  np.testing.assert_array_equal(ds.labels, [0, 1])
  np.testing.assert_array_equal(ds.images, np.stack([b, a]))  # PNG is lossless
  f = datasets.load("image_folder", "test", data_dir=tmp_path)
  np.testing.assert_allclose(f.images, np.stack([b, a]) / 255.0, rtol=1e-6)
  _write_png(tmp_path / "test" / "ant" / "3.png", np.zeros((6, 5, 3), np.uint8))
  with pytest.raises(DataFormatError, match=r"3\.png is 5x6 .* 5x4.*image_size"):
    datasets.load("image_folder", "test", data_dir=tmp_path)
  resized = image_folder.read_split(tmp_path, "test", image_size=(8, 8))
  assert resized.images.shape == (3, 8, 8, 3)
  _write_png(tmp_path / "test" / "bee" / "1.png", a)
  with pytest.raises(DataFormatError, match=r"unexpected \['bee'\]"):
    datasets.load("image_folder", "test", data_dir=tmp_path)


@pytest.fixture(scope="module")
def jpeg_members(tmp_path_factory):
  """2 real JPEGs per class, all 10 classes, from the front of the shared tarball."""
  if not os.path.isfile(CIFAR_JPEG_TAR):
    pytest.skip("../shared/data/cifar10-jpeg absent")
  raw = tmp_path_factory.mktemp("raw")
  n = image_folder.safe_extract(
      CIFAR_JPEG_TAR, raw, limit=20,
      select=lambda name: name.startswith("test/") and name.endswith(("/0000.jpg", "/0001.jpg")))
  assert n == 20
  return raw


@pytest.mark.realdata
def test_image_folder_real_jpegs_and_cifar10_jpeg_tarball(jpeg_members, tmp_path):
  from PIL import Image

  root = tmp_path / "folder"
  classes = sorted(os.listdir(jpeg_members / "test"))
  assert tuple(classes) == cifar.CLASS_NAMES
  for split, fname in (("train", "0000.jpg"), ("test", "0001.jpg")):
    for c in classes:
      os.makedirs(root / split / c)
      os.link(jpeg_members / "test" / c / fname, root / split / c / fname)
  ds = datasets.load("image_folder", "train", data_dir=root, preprocess=False)
  assert ds.images.shape == (10, 32, 32, 3) and ds.labels.tolist() == list(range(10))
  want = np.asarray(Image.open(root / "train" / "cat" / "0000.jpg").convert("RGB"))
  np.testing.assert_array_equal(ds.images[3], want)
  # cifar10_jpeg from a tarball: extracted (safely) into a cache beside it, then reused.
  tar_path = tmp_path / "mini.tar.gz"
  with tarfile.open(tar_path, "w:gz") as tar:
    tar.add(root / "train", arcname="train")
    tar.add(root / "test", arcname="test")
  te = datasets.load("cifar10_jpeg", "test", data_dir=tar_path, preprocess=False)
  assert te.class_names == cifar.CLASS_NAMES and te.images.shape == (10, 32, 32, 3)
  cache = tmp_path / "mini-extracted"
  assert (cache / ".imbjax-extracted").is_file()
  np.testing.assert_array_equal(
      te.images[0], np.asarray(Image.open(cache / "test" / "airplane" / "0001.jpg")))
  mtime = os.stat(cache).st_mtime_ns
  te2 = datasets.load("cifar10_jpeg", "test", data_dir=tmp_path, preprocess=False)
  np.testing.assert_array_equal(te2.images, te.images)
  assert os.stat(cache).st_mtime_ns == mtime


# ---------------------------------------------------------------- real MNIST

@pytest.mark.realdata
def test_real_mnist_counts():
  if not os.path.isdir(MNIST_DIR):
    pytest.skip("../shared/data/mnist absent")
  s = datasets.load_splits("mnist", data_dir=MNIST_DIR, preprocess=False)
  assert len(s["train"]) == 60000 and len(s["test"]) == 10000
  assert s["train"].images.shape == (60000, 28, 28, 1)
  np.testing.assert_array_equal(
      s["train"].class_counts(), [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])
  np.testing.assert_array_equal(
      s["test"].class_counts(), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
