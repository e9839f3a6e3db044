"""Hostile files against the readers: memory bombs and stale data from tiny files.

Each test builds its hostile file in tmp_path with independent writers (pickle
opcodes, gzip members, PNG chunks, tar headers), never with the readers. The bomb
tests also load the file in a child process and compare its peak resident memory
with a child that only imports the reader: a refusal must come from the header,
before the claimed size is allocated.
"""

import gzip
import io
import os
import pickle
import struct
import subprocess
import sys
import tarfile
import textwrap
import zlib

import numpy as np
import pytest

from imbjax import datasets
from imbjax.datasets import cifar, idx, image_folder
from imbjax.datasets.core import DataFormatError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 1 << 20
RNG = np.random.default_rng(1)


# ---------------------------------------------------------------- peak memory

# Runs the code in argv[1] as its only child, then prints the child's peak RSS (KiB):
# RUSAGE_CHILDREN of this wrapper covers that one child and nothing else the test
# process may have started.
_MEASURE = textwrap.dedent("""
    import resource, subprocess, sys
    subprocess.run([sys.executable, "-c", sys.argv[1]], check=True)
    print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
""")


def _peak_kib(code: str) -> tuple[int, str]:
  env = dict(os.environ, PYTHONPATH=ROOT)
  out = subprocess.run([sys.executable, "-c", _MEASURE, textwrap.dedent(code)], env=env,
                       capture_output=True, text=True, timeout=300, check=True)
  lines = out.stdout.strip().splitlines()
  return int(lines[-1]), "\n".join(lines[:-1])


def _load_in_child(setup: str, call: str) -> str:
  """Runs `call` after `setup` in a child; checks the memory delta; returns its message.

  The baseline child runs `setup` only (the imports), so the cost of NumPy and PIL
  is not counted against the reader.
  """
  base, _ = _peak_kib(setup)
  code = setup + textwrap.dedent(f"""
      try:
        {call}
      except ValueError as e:
        print("REFUSED:", e)
      else:
        print("ACCEPTED")
  """)
  peak, out = _peak_kib(code)
  assert out.startswith("REFUSED:"), out
  assert (peak - base) * 1024 < 100 * MIB, (
      f"peak RSS grew by {(peak - base) / 1024:.0f} MiB over the import-only baseline")
  return out


# ---------------------------------------------------------------- CIFAR pickles

class _Reduce:
  """Pickles as `fn(*args)`, then BUILD with `state` if given: a hand-made pickle."""

  def __init__(self, fn, args, state=None):
    self.fn, self.args, self.state = fn, args, state

  def __reduce__(self):
    return (self.fn, self.args) if self.state is None else (self.fn, self.args, self.state)


_RECONSTRUCT = np.arange(1).__reduce__()[0]  # numpy's own _reconstruct
_U1 = np.dtype("u1")


def _write(path, obj, protocol=2):
  path.write_bytes(pickle.dumps(obj, protocol=protocol))
  return path


def _hostile_batches(n):
  """Pickled batches of n records (a few hundred bytes) whose pixels the pickle never
  holds. The labels are n zeros seen through a zero stride over 8 bytes."""
  labels = _Reduce(np.ndarray, ((n,), np.dtype("i8"), bytes(8), 0, (0,)))
  return {
      "ndarray_call": {b"data": _Reduce(np.ndarray, ((n, 3072), _U1)), b"labels": labels},
      "reconstruct_without_data": {
          b"data": _Reduce(_RECONSTRUCT, (np.ndarray, (n, 3072), _U1)), b"labels": labels},
      # One byte of data seen through zero strides as n images.
      "zero_strides": {b"data": _Reduce(np.ndarray, ((n, 3072), _U1, b"\x00", 0, (0, 0))),
                       b"labels": labels},
  }


@pytest.mark.parametrize("kind", ["ndarray_call", "reconstruct_without_data", "zero_strides"])
def test_cifar_pickle_claiming_100k_images_refused(tmp_path, kind):
  p = _write(tmp_path / "test_batch", _hostile_batches(100_000)[kind])
  assert p.stat().st_size < 400
  with pytest.raises(DataFormatError, match="test_batch") as e:
    datasets.load("cifar10_local", "test", data_dir=tmp_path, preprocess=False)
  assert isinstance(e.value, pickle.UnpicklingError)  # still what it was before
  assert "100000" in str(e.value) or "numpy.ndarray" in str(e.value)


def test_cifar_pickle_claiming_100k_images_peak_memory(tmp_path):
  p = _write(tmp_path / "test_batch", _hostile_batches(100_000)["ndarray_call"])
  out = _load_in_child("from imbjax.datasets import cifar\n", f"cifar.read_py_batch({str(p)!r})")
  assert str(p) in out and "uninitialised" in out


@pytest.mark.parametrize("kind", ["ndarray_call", "reconstruct_without_data"])
def test_cifar_pickle_uninitialised_memory_refused(tmp_path, kind):
  obj = _hostile_batches(2)[kind]
  obj[b"labels"] = [3, 4]
  p = _write(tmp_path / "data_batch_1", obj)
  with pytest.raises(DataFormatError, match=r"data_batch_1.*(uninitialised|never gave data)"):
    cifar.read_py_batch(p)


def test_cifar_pickle_payload_size_must_match_shape(tmp_path):
  short = np.zeros(2 * 3072 - 1, np.uint8).tobytes()
  state = (1, (2, 3072), _U1, False, short)
  p = _write(tmp_path / "test_batch",
             {b"data": _Reduce(_RECONSTRUCT, (np.ndarray, (0,), b"b"), state),
              b"labels": [0, 1]})
  with pytest.raises(DataFormatError, match=r"test_batch.*\(2, 3072\).*needs 6144 bytes.*"
                                            r"holds 6143"):
    cifar.read_py_batch(p)


def test_cifar_batch_over_10000_records_refused(tmp_path):
  p = _write(tmp_path / "test_batch",
             {b"data": np.zeros((10_001, 3072), np.uint8), b"labels": [0] * 10_001})
  with pytest.raises(DataFormatError, match=r"test_batch.*N <= 10000.*\(10001, 3072\)"):
    cifar.read_py_batch(p)
  b = tmp_path / "bin" / "test_batch.bin"
  b.parent.mkdir()
  with open(b, "wb") as f:
    f.truncate(10_001 * 3073)  # sparse: no disk used
  with pytest.raises(DataFormatError, match=r"test_batch\.bin.*30733073 bytes.*10000 records"):
    cifar.read_bin_batch(b)


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_cifar_pickle_of_real_layout_still_loads(tmp_path, protocol):
  x = RNG.integers(0, 256, (4, 3072), dtype=np.uint8)
  p = _write(tmp_path / "test_batch", {b"batch_label": b"b", b"labels": [1, 2, 3, 9],
                                       b"data": x, b"filenames": [b"a"] * 4}, protocol)
  images, labels = cifar.read_py_batch(p)
  np.testing.assert_array_equal(images.transpose(0, 3, 1, 2).reshape(4, -1), x)
  assert labels.tolist() == [1, 2, 3, 9]


def test_safe_unpickle_refuses_non_numeric_dtypes():
  with pytest.raises(pickle.UnpicklingError, match="refusing dtype 'O8'"):
    cifar.safe_unpickle(pickle.dumps(np.array([None, 1], dtype=object), protocol=2))
  with pytest.raises(pickle.UnpicklingError, match="cycle"):
    a = []
    a.append(a)
    cifar.safe_unpickle(pickle.dumps(a))


# ---------------------------------------------------------------- IDX

def _idx_bomb(path, dims, *, member_bytes=64 * MIB):
  """An IDX gzip whose header claims dims (uint8) and whose stream really holds
  that many zero bytes: gzip members of compressed zeros, concatenated."""
  total = int(np.prod(dims, dtype=object))
  zeros = gzip.compress(bytes(member_bytes), compresslevel=9, mtime=0)
  with open(path, "wb") as f:
    f.write(gzip.compress(bytes([0, 0, 0x08, len(dims)]) + struct.pack(
        ">" + "I" * len(dims), *dims), mtime=0))
    for _ in range(total // member_bytes):
      f.write(zeros)
    f.write(gzip.compress(bytes(total % member_bytes), mtime=0))
  return path


def test_idx_header_claiming_6gib_refused(tmp_path):
  dims = (6 * 1024, 1024, 1024)  # 6 GiB of uint8, really in the stream
  p = _idx_bomb(tmp_path / "train-images-idx3-ubyte.gz", dims)
  assert p.stat().st_size < 8 * MIB
  with pytest.raises(DataFormatError, match=r"train-images-idx3-ubyte\.gz.*claim 6442450944 "
                                            r"bytes, more than the \d+ accepted"):
    idx.read_idx(p)
  assert idx.max_payload_bytes() < 6 * 1024 * MIB
  out = _load_in_child("from imbjax.datasets import idx\n", f"idx.read_idx({str(p)!r})")
  assert str(p) in out and "6442450944" in out and "accepted" in out


def test_idx_short_payload_read_in_bounded_chunks(tmp_path):
  """A header claiming 1 GiB (under the cap) with 1 KiB of data: refused as
  truncated, having allocated only what was read."""
  p = tmp_path / "x.gz"
  p.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + struct.pack(">I", 1 << 30) + bytes(1024)))
  with pytest.raises(DataFormatError, match=r"x\.gz.*truncated.*1073741824 bytes, found 1024"):
    idx.read_idx(p, max_bytes=2 << 30)
  out = _load_in_child("from imbjax.datasets import idx\n",
                       f"idx.read_idx({str(p)!r}, max_bytes=2 << 30)")
  assert "truncated" in out


@pytest.mark.parametrize("dims", [(65536,) * 4, (1 << 31, 1 << 31, 3), (0xFFFFFFFF,) * 5])
def test_idx_dimension_overflow_refused(tmp_path, dims):
  """int64 products of these wrap to 0, negative and small values."""
  p = tmp_path / "o"
  p.write_bytes(bytes([0, 0, 0x08, len(dims)]) + struct.pack(">" + "I" * len(dims), *dims))
  claim = 1
  for d in dims:
    claim *= d
  with pytest.raises(DataFormatError, match=rf"{p}: header dims .* claim {claim} bytes, more "
                                            rf"than the \d+ accepted"):
    idx.read_idx(p)


def test_idx_max_bytes_argument(tmp_path):
  p = tmp_path / "a"
  p.write_bytes(b"\x00\x00\x08\x01" + struct.pack(">I", 10) + bytes(10))
  assert idx.read_idx(p, max_bytes=10).shape == (10,)
  with pytest.raises(DataFormatError, match=r"claim 10 bytes, more than the 9 accepted"):
    idx.read_idx(p, max_bytes=9)


# ---------------------------------------------------------------- image folders

def _png_bomb(path, width, height):
  """A grayscale PNG of zeros written chunk by chunk (never held decoded)."""
  def chunk(tag, data):
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

  comp = zlib.compressobj(9)
  row = bytes(1 + width)  # filter byte 0, then the pixels
  idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0,
                                                                 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
  return path


def _write_png(path, arr):
  from PIL import Image

  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(arr).save(path)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_image_folder_decompression_bomb_refused(tmp_path):
  # 12000 x 12000 = 144M pixels: under PIL's own hard limit (2 x 89M), so PIL alone
  # decodes it (432 MB as RGB, twice that with the array copy).
  bomb = _png_bomb(str(tmp_path / "train" / "a" / "bomb.png"), 12000, 12000)
  _write_png(str(tmp_path / "train" / "b" / "ok.png"), np.zeros((4, 4, 3), np.uint8))
  assert os.path.getsize(bomb) < 200_000
  with pytest.raises(DataFormatError, match=r"bomb\.png: header says 12000x12000 = 144000000 "
                                            r"pixels, more than the 67108864 accepted"):
    datasets.load("image_folder", "train", data_dir=tmp_path, preprocess=False)
  setup = ("from imbjax.datasets import image_folder\nfrom PIL import Image\n"
           "Image.preinit()\n")
  out = _load_in_child(setup, f"image_folder.read_split({str(tmp_path)!r}, 'train')")
  assert bomb in out and "12000x12000" in out and "67108864" in out
  out = _load_in_child(setup, f"image_folder.decode({bomb!r})")
  assert bomb in out


def test_image_folder_size_mismatch_refused_before_decoding(tmp_path):
  _write_png(str(tmp_path / "train" / "a" / "1.png"), np.zeros((4, 4, 3), np.uint8))
  big = _png_bomb(str(tmp_path / "train" / "b" / "2.png"), 6000, 6000)
  with pytest.raises(DataFormatError, match=r"2\.png is 6000x6000 but .*1\.png is 4x4"):
    image_folder.read_split(tmp_path, "train")
  out = _load_in_child("from imbjax.datasets import image_folder\nfrom PIL import Image\n"
                       "Image.preinit()\n",
                       f"image_folder.read_split({str(tmp_path)!r}, 'train')")
  assert big in out
  with pytest.raises(DataFormatError, match=r"2\.png: header says 6000x6000 .* more than "
                                            r"the 1000 accepted"):
    image_folder.read_split(tmp_path, "train", image_size=(4, 4), max_pixels=1000)


# ---------------------------------------------------------------- tarballs

def _tar_with(path, members, mode="w:gz"):
  """members: (name, bytes or a claimed size int with no data following)."""
  with open(path, "wb") as raw:
    with tarfile.open(fileobj=raw, mode=mode) as tar:
      for name, data in members:
        info = tarfile.TarInfo(name)
        if isinstance(data, int):  # a header claiming `data` bytes, then nothing
          info.size = data
          tar.fileobj.write(info.tobuf(tar.format, tar.encoding, tar.errors))
          break
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
  return path


def _bytes_under(d):
  return sum(f.stat().st_size for f in d.rglob("*") if f.is_file())


def test_tar_member_size_capped(tmp_path):
  # Default per-member cap, from the header, before reading: a 2 GiB claim.
  p = _tar_with(tmp_path / "claim.tar", [("train/a/0.jpg", b"x"), ("train/a/1.jpg", 2 << 30)],
                mode="w")
  with pytest.raises(DataFormatError, match=r"claim\.tar: member 'train/a/1\.jpg' is "
                                            r"2147483648 bytes, more than the 1073741824 "
                                            r"accepted per file"):
    image_folder.safe_extract(p, tmp_path / "out0")
  # Explicit caps: per member, in total, and in files; nothing over them is written.
  blob = bytes(600_000)
  p = _tar_with(tmp_path / "t.tar.gz", [("train/a/0.jpg", blob), ("train/a/1.jpg", blob),
                                        ("train/a/2.jpg", b"x" * 10)])
  with pytest.raises(DataFormatError, match=r"t\.tar\.gz: member 'train/a/0\.jpg' is 600000 "
                                            r"bytes, more than the 500000 accepted per file"):
    image_folder.safe_extract(p, tmp_path / "out1", max_member_bytes=500_000)
  assert _bytes_under(tmp_path / "out1") == 0
  with pytest.raises(DataFormatError, match=r"'train/a/1\.jpg' brings the extracted total to "
                                            r"1200000 bytes, more than the 1000000 accepted"):
    image_folder.safe_extract(p, tmp_path / "out2", max_total_bytes=1_000_000)
  assert _bytes_under(tmp_path / "out2") <= 1_000_000
  with pytest.raises(DataFormatError, match=r"'train/a/2\.jpg' would be file 3, more than the "
                                            r"2 accepted"):
    image_folder.safe_extract(p, tmp_path / "out3", max_files=2)
  assert image_folder.safe_extract(p, tmp_path / "out4") == 3


def test_stale_tarball_cache_refreshed(tmp_path):
  """A tarball replaced at the same path, with the same size and mtime, is extracted
  again: the cache is keyed by content too."""
  def build(src, pixels):
    for split in ("train", "test"):
      for c, v in (("a", pixels), ("b", 255 - pixels)):
        _write_png(str(src / split / c / "0.png"), np.full((2, 2, 3), v, np.uint8))
    tmp = tmp_path / "staging.tar"
    with tarfile.open(tmp, "w") as tar:
      tar.add(src / "train", arcname="train")
      tar.add(src / "test", arcname="test")
    return tmp

  data = tmp_path / "data"
  data.mkdir()
  tar_path = data / "set.tar"
  os.replace(build(tmp_path / "one", 10), tar_path)
  first = datasets.load("image_folder", "train", data_dir=tar_path, preprocess=False)
  assert first.images[0, 0, 0, 0] == 10
  st = tar_path.stat()
  os.replace(build(tmp_path / "two", 99), tar_path)
  os.utime(tar_path, ns=(st.st_atime_ns, st.st_mtime_ns))
  assert (tar_path.stat().st_size, tar_path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
  second = datasets.load("image_folder", "train", data_dir=tar_path, preprocess=False)
  assert second.images[0, 0, 0, 0] == 99
  assert second.images[1, 0, 0, 0] == 255 - 99
  # Unchanged: the extraction is reused, not redone.
  cache = data / "set-extracted"
  mark = os.stat(cache / ".imbjax-extracted").st_mtime_ns
  third = datasets.load("image_folder", "train", data_dir=data, preprocess=False)
  np.testing.assert_array_equal(third.images, second.images)
  assert os.stat(cache / ".imbjax-extracted").st_mtime_ns == mark


def test_cifar_python2_pickle_layout_loads(tmp_path):
  """CIFAR's own batches were pickled by Python 2: byte strings (BINSTRING), the
  numpy.core module path and dtype states with b'|'. Hand-assembled opcodes."""
  x = RNG.integers(0, 256, (2, 3072), dtype=np.uint8)
  ops = (b"\x80\x02}(U\x04data"
         b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R"
         b"(K\x01K\x02M\x00\x0c\x86cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R"
         b"(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89"
         + b"T" + struct.pack("<I", x.nbytes) + x.tobytes() + b"tb"
         b"U\x06labels](K\x07K\x00eu.")
  p = tmp_path / "data_batch_1"
  p.write_bytes(ops)
  images, labels = cifar.read_py_batch(p)
  np.testing.assert_array_equal(images.transpose(0, 3, 1, 2).reshape(2, -1), x)
  assert labels.tolist() == [7, 0]
  p.write_bytes(ops.replace(b"U\x02u1", b"U\x02O8"))
  with pytest.raises(DataFormatError, match=r"data_batch_1.*refusing dtype 'O8'"):
    cifar.read_py_batch(p)
