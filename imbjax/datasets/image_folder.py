"""ImageNet-style image folders, and safe extraction of the tarballs that carry them.

Layout: `root/<split>/<class_name>/*.jpg|jpeg|png`. Class names are the sorted
subdirectory names of the *train* split and label = index in that order; every other
split must hold exactly the same classes, so a label means the same class everywhere.

`read_split` decodes a whole split into memory (all images must share one size unless
`image_size` asks for a resize); `list_files` gives paths and labels for the streaming
pipeline (`imbjax.datasets.streaming`), which decodes lazily and may crop.

`safe_extract` unpacks a tarball member by member, writing only regular files and
directories whose names stay inside the destination: absolute names, `..` components,
links and device files are refused, so a hostile archive cannot write elsewhere; and
member sizes, the total and the file count are capped, so it cannot fill the disk.
`read_split` reads every image's size from its header before decoding it.
`resolve_root` turns a directory or tarball into an extracted root, caching the
extraction next to the tarball (or in the user cache if that place is read-only),
never inside this repository. The cache is keyed by the tarball's size, mtime and
SHA-256, so replacing the tarball at the same path gets it extracted again.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import shutil
import tarfile
import tempfile

import numpy as np

from imbjax.datasets.core import DataFormatError, DataNotFoundError, Dataset, memory_cap

__all__ = ["IMAGE_EXTENSIONS", "MAX_PIXELS", "MAX_MEMBER_BYTES", "MAX_EXTRACT_BYTES",
           "MAX_EXTRACT_FILES", "list_classes", "list_files", "header_size",
           "decode", "read_split",
           "safe_extract", "resolve_root", "cache_root"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
# Pixels one image may declare (8192 x 8192; 192 MiB decoded as RGB). Below PIL's own
# limit (89M pixels, an error only at twice that), which decodes before we could say no.
MAX_PIXELS = 1 << 26
_MAX_SPLIT_BYTES = 1 << 40
# Extraction caps (ImageNet's train tarball, the largest we expect, is 138 GiB of
# 1.28M files; its largest JPEG is a few MB).
MAX_MEMBER_BYTES = 1 << 30
MAX_EXTRACT_BYTES = 1 << 38
MAX_EXTRACT_FILES = 1 << 22
_COMPLETE = ".imbjax-extracted"
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _split_dir(root: str, split: str) -> str:
  d = os.path.join(root, split)
  if not os.path.isdir(d):
    present = sorted(e for e in os.listdir(root)
                     if os.path.isdir(os.path.join(root, e))) if os.path.isdir(root) else []
    raise DataNotFoundError(f"image folder split directory not found: {d} (expected "
                            f"{root}/<split>/<class_name>/*.jpg|jpeg|png; subdirectories "
                            f"present: {present})")
  return d


def list_classes(root: str | os.PathLike, split: str = "train") -> tuple[str, ...]:
  """Sorted class subdirectory names of `root/split`.

  Raises:
    DataNotFoundError: the split directory is missing or has no subdirectories.
  """
  d = _split_dir(os.fspath(root), split)
  names = tuple(sorted(e for e in os.listdir(d) if os.path.isdir(os.path.join(d, e))))
  if not names:
    raise DataNotFoundError(f"image folder {d} has no class subdirectories")
  return names


def list_files(root: str | os.PathLike, split: str, *,
               class_names: tuple[str, ...] | None = None) -> tuple[list[str], np.ndarray,
                                                                     tuple[str, ...]]:
  """Lists the images of a split in a fixed order (by class, then file name).

  Args:
    root: the folder holding `<split>/<class_name>/` directories.
    split: which split directory to read.
    class_names: the classes to expect; None: those of the train split.

  Returns:
    (paths, labels int32, class_names).

  Raises:
    DataNotFoundError: missing directories, or a split without any image.
    DataFormatError: the split's classes differ from `class_names`.
  """
  root = os.fspath(root)
  if class_names is None:
    class_names = list_classes(root, "train")
  d = _split_dir(root, split)
  here = tuple(sorted(e for e in os.listdir(d) if os.path.isdir(os.path.join(d, e))))
  if here != tuple(class_names):
    missing = sorted(set(class_names) - set(here))
    extra = sorted(set(here) - set(class_names))
    raise DataFormatError(f"image folder split {d} has different classes from the train "
                          f"split: missing {missing}, unexpected {extra}")
  paths, labels = [], []
  for label, name in enumerate(class_names):
    cd = os.path.join(d, name)
    files = sorted(f for f in os.listdir(cd)
                   if f.lower().endswith(IMAGE_EXTENSIONS)
                   and os.path.isfile(os.path.join(cd, f)))
    paths += [os.path.join(cd, f) for f in files]
    labels += [label] * len(files)
  if not paths:
    raise DataNotFoundError(f"image folder split {d} holds no "
                            f"{'/'.join(IMAGE_EXTENSIONS)} files")
  return paths, np.asarray(labels, np.int32), tuple(class_names)


def _check_pixels(path: str, width: int, height: int, max_pixels: int | None) -> None:
  cap = MAX_PIXELS if max_pixels is None else max_pixels
  if width * height > cap:
    raise DataFormatError(f"image {path}: header says {width}x{height} = {width * height} "
                          f"pixels, more than the {cap} accepted (max_pixels); refusing to "
                          f"decode it")


def header_size(path: str, max_pixels: int | None = None) -> tuple[int, int]:
  """(width, height) from an image file's header, without decoding the pixels.

  Raises:
    DataFormatError: unreadable header, or more than `max_pixels` pixels (None:
      `MAX_PIXELS`); the message names the file, the size found and the cap.
  """
  from PIL import Image

  try:
    with Image.open(path) as img:
      w, h = img.size
  except (OSError, ValueError, Image.DecompressionBombError) as e:
    raise DataFormatError(f"cannot read image header of {path}: {e}") from e
  _check_pixels(path, w, h, max_pixels)
  return w, h


def decode(path: str, image_size: tuple[int, int] | None = None, *,
           max_pixels: int | None = None) -> np.ndarray:
  """Decodes one image file to uint8 RGB (H, W, 3), optionally resized (bilinear).

  The size in the header is checked before any pixel is decoded, so a small file
  that claims a huge image (a decompression bomb) costs no memory.

  Args:
    path: a JPEG or PNG file.
    image_size: (height, width) to resize to, or None.
    max_pixels: the most pixels (width x height) an image may declare; None:
      `MAX_PIXELS`.

  Raises:
    DataFormatError: the file cannot be decoded, or its header declares more than
      `max_pixels` pixels (the message names the file, the size and the cap).
  """
  return _decode(path, image_size, max_pixels, None)


def _decode(path: str, image_size, max_pixels, expect) -> np.ndarray:
  """`decode`; with `expect=((w, h), first_path)`, refuses another size before decoding."""
  from PIL import Image

  try:
    with Image.open(path) as img:
      w, h = img.size
      _check_pixels(path, w, h, max_pixels)
      if expect is not None and (w, h) != expect[0]:
        (w0, h0), first = expect
        raise DataFormatError(
            f"{path} is {w}x{h} but {first} is {w0}x{h0}; all images of an in-memory "
            f"dataset need one size: pass image_size=(H, W) to resize, or use "
            f"imbjax.datasets.streaming for crops")
      img = img.convert("RGB")
      if image_size is not None and img.size != (image_size[1], image_size[0]):
        img = img.resize((image_size[1], image_size[0]), Image.BILINEAR)
      return np.asarray(img, dtype=np.uint8)
  except DataFormatError:
    raise
  except (OSError, ValueError, Image.DecompressionBombError) as e:
    raise DataFormatError(f"cannot decode image {path}: {e}") from e


def read_split(root: str | os.PathLike, split: str, *,
               class_names: tuple[str, ...] | None = None,
               image_size: tuple[int, int] | None = None,
               num_workers: int | None = None,
               max_pixels: int | None = None) -> Dataset:
  """Decodes a whole split of an image folder into a raw uint8 `Dataset`.

  Sizes are checked from file headers before pixels are decoded: each image against
  `max_pixels`, every image against the first (unless `image_size` resizes), and
  the whole split against `core.memory_cap` (half of physical memory).

  Args:
    root: the folder holding `<split>/<class_name>/` directories.
    split: the split directory name.
    class_names: expected classes; None: the train split's sorted subdirectories.
    image_size: (height, width) to resize every image to; None: all images must
      already share one size.
    num_workers: decoding threads (PIL releases the GIL while decoding); None: the
      CPU count.
    max_pixels: the most pixels one image may declare; None: `MAX_PIXELS`.

  Returns:
    A `Dataset` of uint8 (N, H, W, 3) images.

  Raises:
    DataNotFoundError, DataFormatError: see `list_files` and `decode`; also a
      DataFormatError naming the first image whose size differs from the first one,
      or the split when its decoded size would exceed the memory cap.
  """
  if image_size is not None and (len(image_size) != 2 or min(image_size) < 1):
    raise ValueError(f"image_size must be (height, width) >= 1, got {image_size!r}")
  paths, labels, class_names = list_files(root, split, class_names=class_names)
  first = header_size(paths[0], max_pixels)
  h, w = image_size if image_size is not None else (first[1], first[0])
  need, cap = len(paths) * h * w * 3, memory_cap(_MAX_SPLIT_BYTES, 0.5)
  if need > cap:
    raise DataFormatError(f"image folder {os.fspath(root)}/{split}: {len(paths)} images of "
                          f"{w}x{h} RGB need {need} bytes, more than the {cap} accepted "
                          f"(half of physical memory); pass image_size=(H, W) to shrink "
                          f"them, or use imbjax.datasets.streaming")
  expect = None if image_size is not None else (first, paths[0])
  images = np.empty((len(paths), h, w, 3), np.uint8)

  def put(i: int) -> None:
    images[i] = _decode(paths[i], image_size, max_pixels, expect)

  workers = num_workers or os.cpu_count() or 1
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    try:
      for _ in pool.map(put, range(len(paths)), chunksize=64):
        pass
    except BaseException:
      pool.shutdown(wait=True, cancel_futures=True)  # stop decoding after a refusal
      raise
  return Dataset(images=images, labels=labels, num_classes=len(class_names),
                 class_names=class_names)


def _check_member(m: tarfile.TarInfo, tar_path: str) -> str | None:
  """Returns the safe relative path of a member, None to skip it, or raises."""
  name = m.name.replace("\\", "/")
  parts = [p for p in name.split("/") if p not in ("", ".")]
  if name.startswith("/") or (len(name) > 1 and name[1] == ":") or ".." in parts:
    raise DataFormatError(f"tarball {tar_path}: refusing member {m.name!r} (absolute path "
                          f"or '..' would write outside the destination)")
  if not (m.isfile() or m.isdir()):
    raise DataFormatError(f"tarball {tar_path}: refusing member {m.name!r} (only regular "
                          f"files and directories are extracted; links and devices are not)")
  return "/".join(parts) if parts else None


def _copy_capped(src, out, cap: int, what: str) -> int:
  """Copies src to out in 1 MiB chunks, refusing once more than cap bytes came."""
  n = 0
  while True:
    chunk = src.read(1 << 20)
    if not chunk:
      return n
    n += len(chunk)
    if n > cap:
      raise DataFormatError(f"{what}: more than the {cap} bytes accepted")
    out.write(chunk)


def safe_extract(tar_path: str | os.PathLike, dest: str | os.PathLike, *,
                 select=None, limit: int | None = None,
                 max_member_bytes: int | None = None,
                 max_total_bytes: int | None = None,
                 max_files: int | None = None) -> int:
  """Extracts regular files and directories of a tarball into `dest`, safely.

  Sizes are capped from the member headers before anything is written, and the
  bytes actually written are counted too, so a small compressed archive cannot fill
  the disk.

  Args:
    tar_path: a .tar, .tar.gz, .tgz ... file (compression detected).
    dest: destination directory (created).
    select: optional `callable(relative_name) -> bool`; only files it accepts are
      written (every member read is still checked).
    limit: stop after writing this many files (reads only the front of the archive).
    max_member_bytes: the largest file written; None: `MAX_MEMBER_BYTES`.
    max_total_bytes: the most bytes written in all; None: the smaller of
      `MAX_EXTRACT_BYTES` and the free space on `dest`'s disk.
    max_files: the most files written; None: `MAX_EXTRACT_FILES`.

  Returns:
    The number of files written.

  Raises:
    DataFormatError: a member is absolute, has `..`, or is a link or device; a
      member or the total is over its cap (the message names the tarball, the
      member, the size and the cap); or the archive is corrupt.
    DataNotFoundError: the tarball does not exist.
  """
  tar_path, dest = os.fspath(tar_path), os.path.abspath(os.fspath(dest))
  if not os.path.isfile(tar_path):
    raise DataNotFoundError(f"tarball not found: {tar_path}")
  os.makedirs(dest, exist_ok=True)
  member_cap = MAX_MEMBER_BYTES if max_member_bytes is None else max_member_bytes
  total_cap = (min(MAX_EXTRACT_BYTES, shutil.disk_usage(dest).free)
               if max_total_bytes is None else max_total_bytes)
  files_cap = MAX_EXTRACT_FILES if max_files is None else max_files
  written = total = 0
  try:
    # Streaming mode reads the archive once, front to back, without an index.
    with tarfile.open(tar_path, "r|*") as tar:
      for m in tar:
        rel = _check_member(m, tar_path)
        if rel is None or m.isdir():
          continue
        if select is not None and not select(rel):
          continue
        if m.size > member_cap:
          raise DataFormatError(f"tarball {tar_path}: member {m.name!r} is {m.size} bytes, "
                                f"more than the {member_cap} accepted per file "
                                f"(max_member_bytes)")
        if total + m.size > total_cap:
          raise DataFormatError(f"tarball {tar_path}: member {m.name!r} brings the "
                                f"extracted total to {total + m.size} bytes, more than the "
                                f"{total_cap} accepted (max_total_bytes, at most the free "
                                f"disk space)")
        if written >= files_cap:
          raise DataFormatError(f"tarball {tar_path}: member {m.name!r} would be file "
                                f"{written + 1}, more than the {files_cap} accepted "
                                f"(max_files)")
        target = os.path.join(dest, *rel.split("/"))
        if os.path.commonpath([dest, os.path.abspath(target)]) != dest:
          raise DataFormatError(f"tarball {tar_path}: member {m.name!r} escapes {dest}")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        src = tar.extractfile(m)
        with open(target, "wb") as out:
          total += _copy_capped(src, out, min(member_cap, total_cap - total),
                                f"tarball {tar_path}: member {m.name!r}")
        written += 1
        if limit is not None and written >= limit:
          break
  except (tarfile.TarError, EOFError, OSError) as e:
    if isinstance(e, FileNotFoundError) and not os.path.exists(tar_path):
      raise DataNotFoundError(f"tarball not found: {tar_path}") from e
    raise DataFormatError(f"tarball {tar_path} is corrupt or unreadable: {e}") from e
  return written


def cache_root() -> str:
  """Where extractions go when the tarball's own directory is read-only.

  `$IMBJAX_CACHE_DIR`, else `$XDG_CACHE_HOME/imbjax`, else `~/.cache/imbjax`.
  """
  env = os.environ.get("IMBJAX_CACHE_DIR")
  if env:
    return env
  xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(xdg, "imbjax")


def _inside(path: str, parent: str) -> bool:
  path, parent = os.path.realpath(path), os.path.realpath(parent)
  return os.path.commonpath([path, parent]) == parent


def _find_root(d: str) -> str | None:
  if os.path.isdir(os.path.join(d, "train")):
    return d
  subs = [os.path.join(d, e) for e in os.listdir(d) if os.path.isdir(os.path.join(d, e))]
  if len(subs) == 1 and os.path.isdir(os.path.join(subs[0], "train")):
    return subs[0]
  return None


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def _fingerprint(tar_path: str) -> dict:
  """What identifies a tarball's contents: size, mtime and SHA-256 (plus stat fields
  that let an untouched file skip re-hashing)."""
  st = os.stat(tar_path)
  return {"tarball": os.path.realpath(tar_path), "size": st.st_size,
          "mtime_ns": st.st_mtime_ns, "sha256": _sha256(tar_path), "dev": st.st_dev,
          "ino": st.st_ino, "ctime_ns": st.st_ctime_ns}


def _cache_matches(final: str, tar_path: str) -> bool:
  """Whether `final` holds a complete extraction of the tarball now at `tar_path`.

  Size and mtime must match the marker, and so must the content hash: it is
  recomputed unless the file's inode and ctime are unchanged since it was hashed
  (ctime changes on every write, rename-over or utime, and cannot be set back).
  """
  try:
    with open(os.path.join(final, _COMPLETE)) as f:
      mark = json.load(f)
  except (OSError, ValueError):
    return False
  if not isinstance(mark, dict):
    return False
  st = os.stat(tar_path)
  if (mark.get("size"), mark.get("mtime_ns")) != (st.st_size, st.st_mtime_ns):
    return False
  if (mark.get("dev"), mark.get("ino"), mark.get("ctime_ns")) == (
      st.st_dev, st.st_ino, st.st_ctime_ns):
    return True
  return mark.get("sha256") == _sha256(tar_path)


def _extract_cached(tar_path: str) -> str:
  """Extracts `tar_path` once; reuses the extraction while the tarball is unchanged.

  The cache is keyed by the tarball's size, mtime and content hash (written in the
  completion marker), so a tarball replaced at the same path is extracted afresh.
  """
  stem = os.path.basename(tar_path)
  for ext in (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar"):
    if stem.endswith(ext):
      stem = stem[: -len(ext)]
      break
  key = hashlib.sha256(os.path.realpath(tar_path).encode()).hexdigest()[:12]
  beside = os.path.dirname(os.path.abspath(tar_path))
  candidates = []
  if os.access(beside, os.W_OK) and not _inside(beside, _REPO_ROOT):
    candidates.append(os.path.join(beside, f"{stem}-extracted"))
  candidates.append(os.path.join(cache_root(), f"{stem}-{key}"))
  for final in candidates:
    if _cache_matches(final, tar_path):
      return final
  for final in candidates:
    if _inside(final, _REPO_ROOT):
      continue
    parent = os.path.dirname(final)
    try:
      os.makedirs(parent, exist_ok=True)
      tmp = tempfile.mkdtemp(prefix=f".{stem}-", dir=parent)
    except OSError:
      continue
    stale = None
    try:
      mark = _fingerprint(tar_path)
      safe_extract(tar_path, tmp)
      with open(os.path.join(tmp, _COMPLETE), "w") as f:
        json.dump(mark, f)
      if os.path.lexists(final):  # a stale (or unfinished) extraction: move it aside
        stale = tempfile.mkdtemp(prefix=f".{stem}-stale-", dir=parent)
        os.rename(final, os.path.join(stale, "old"))
      try:
        os.rename(tmp, final)  # atomic: concurrent extractors race harmlessly
      except OSError:
        if not _cache_matches(final, tar_path):
          raise
    finally:
      shutil.rmtree(tmp, ignore_errors=True)
      if stale is not None:
        shutil.rmtree(stale, ignore_errors=True)
    return final
  raise DataNotFoundError(f"nowhere writable to extract {tar_path}; tried "
                          f"{candidates}; set IMBJAX_CACHE_DIR")


def resolve_root(data_dir: str | os.PathLike | None, *, dataset: str = "image_folder") -> str:
  """Turns `data_dir` into an extracted image-folder root.

  Accepts a root (with `train/`), a directory with one subdirectory that is a root,
  a tarball, or a directory holding exactly one tarball (extracted once, cached).

  Raises:
    DataNotFoundError: `data_dir` is None, missing, or holds neither layout.
  """
  if data_dir is None:
    raise DataNotFoundError(
        f"dataset {dataset!r} needs data_dir: an extracted image folder "
        f"(<dir>/train/<class>/*.jpg) or its .tar.gz, e.g. "
        f"--config.data_dir=../shared/data/cifar10-jpeg")
  data_dir = os.fspath(data_dir)
  if os.path.isfile(data_dir):
    root = _find_root(_extract_cached(data_dir))
  elif os.path.isdir(data_dir):
    root = _find_root(data_dir)
    if root is None:
      tars = sorted(e for e in os.listdir(data_dir)
                    if e.endswith((".tar.gz", ".tgz", ".tar")))
      if len(tars) == 1:
        root = _find_root(_extract_cached(os.path.join(data_dir, tars[0])))
  else:
    raise DataNotFoundError(f"dataset {dataset!r}: data_dir not found: {data_dir}")
  if root is None:
    raise DataNotFoundError(
        f"dataset {dataset!r}: {data_dir} is neither an image folder "
        f"(<dir>/train/<class>/*.jpg, <dir>/test/<class>/*.jpg) nor holds exactly one "
        f".tar.gz of one")
  return root
