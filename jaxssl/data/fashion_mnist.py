"""Fashion-MNIST without tfds or TensorFlow: IDX files -> checked uint8 arrays -> .npy cache.

The four IDX files (`FMNIST_FILES`) are found in, in this order:

  1. `idx_dir` (config.data.idx_dir), if given: only there;
  2. else $JAXSSL_FMNIST_DIR, if set: only there;
  3. else the data dir itself (config.data.data_dir, else $JAXSSL_DATA_DIR, ... see
     `resolve_data_dir`) if it holds all four, so on a machine without Debian's package
     the ~30 MB of files can simply be copied there;
  4. else /usr/share/datasets/fashion-mnist (Debian's package `dataset-fashion-mnist`).

`prepare_fashion_mnist` reads and checks them (magic numbers, sizes, 60 000 / 10 000
examples, 6 000 / 1 000 per class) once and writes plain arrays to
`<data_dir>/fashion_mnist_npy/` (`{split}_images.npy`: uint8 [N, 28, 28, 1],
`{split}_labels.npy`: int32 [N], and `meta.json` with their sha256, written last). Every
file is written to a temporary name and renamed (os.replace), under an inter-process
lock, so concurrent runs prepare once and a crash never leaves a half-written array
behind. Later loads (`load_fashion_mnist`) only `np.load` the arrays and check their
shapes, counts and sha256; a corrupt cache is a DataError that says to delete it.

The examples are stored in the order in which jaxssl's earlier, tfds-based versions read
them (`tfds_record_order`), so training runs and published numbers are reproducible bit
for bit.
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import struct
import sys
import tempfile
import zlib
from typing import Callable, Iterator

import numpy as np

from jaxssl.data.info import resolve_data_dir
from jaxssl.errors import DataError

DEFAULT_FMNIST_DIR = "/usr/share/datasets/fashion-mnist"
FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FMNIST_COUNTS = {"train": 60_000, "test": 10_000}
FMNIST_VERSION = "3.0.1"        # the tfds dataset version whose record order is kept
IDX_IMAGES_MAGIC = 0x00000803   # 2051: unsigned byte, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801   # 2049: unsigned byte, 1 dimension

CACHE_DIRNAME = "fashion_mnist_npy"
CACHE_FORMAT = 1
_META = "meta.json"
_ORDER_NAME = f"tfds fashion_mnist/{FMNIST_VERSION} record order (md5(split name + str(index)))"


# ----------------------------------------------------------------------------- directories

def _idx_candidates(idx_dir: str | None, data_dir: str | None) -> list[tuple[str, str]]:
  """The directories searched for the IDX files, in order, with how each was chosen."""
  if idx_dir:
    return [(os.path.abspath(os.path.expanduser(str(idx_dir))), "idx_dir")]
  env = os.environ.get("JAXSSL_FMNIST_DIR")
  if env:
    return [(os.path.abspath(os.path.expanduser(env)), "$JAXSSL_FMNIST_DIR")]
  return [(resolve_data_dir(data_dir), "the data dir"), (DEFAULT_FMNIST_DIR, "the default directory")]


def _find_idx_file(idx_dir: str, name: str) -> str:
  """The path of IDX file `name` in idx_dir, accepting it gzip-compressed or not."""
  for cand in (name, name[:-3] if name.endswith(".gz") else name + ".gz"):
    p = os.path.join(idx_dir, cand)
    if os.path.isfile(p):
      return p
  return os.path.join(idx_dir, name)


def _missing_idx_files(idx_dir: str) -> list[str]:
  return [n for files in FMNIST_FILES.values() for n in files if not os.path.isfile(_find_idx_file(idx_dir, n))]


def resolve_idx_dir(idx_dir: str | None = None, data_dir: str | None = None) -> str:
  """Where the Fashion-MNIST IDX files are read from: idx_dir, else $JAXSSL_FMNIST_DIR,
  else the data dir if it holds all four files, else /usr/share/datasets/fashion-mnist."""
  cands = _idx_candidates(idx_dir, data_dir)
  return next((d for d, _ in cands if not _missing_idx_files(d)), cands[-1][0])


@contextlib.contextmanager
def _file_lock(path: str) -> Iterator[None]:
  """Inter-process lock (POSIX flock), so concurrent runs prepare a dataset once."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  try:
    import fcntl
  except ImportError:   # pragma: no cover (Windows)
    yield
    return
  with open(path, "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


# ----------------------------------------------------------------------------- IDX files

def read_idx(path: str, *, kind: str, expected_count: int | None = None) -> np.ndarray:
  """Reads one IDX file (gzip-compressed if it ends in .gz) with full checks.

  kind="images": magic 2051, returns uint8 [N, rows, cols]; kind="labels": magic 2049,
  returns uint8 [N]. Raises DataError for a missing, unreadable, truncated or
  mis-sized file, or a count other than `expected_count`.
  """
  if kind not in ("images", "labels"):
    raise ValueError(f"kind must be 'images' or 'labels', got {kind!r}")
  fix = ("Re-install the files (sudo apt-get install --reinstall dataset-fashion-mnist) or download "
         "them again from https://github.com/zalandoresearch/fashion-mnist, then point idx_dir / "
         "$JAXSSL_FMNIST_DIR at their directory.")
  if not os.path.isfile(path):
    raise DataError(f"IDX file not found: {path}. {fix}")
  try:
    if path.endswith(".gz"):
      with gzip.open(path, "rb") as f:
        raw = f.read()
    else:
      with open(path, "rb") as f:
        raw = f.read()
  except (OSError, EOFError, zlib.error) as e:
    raise DataError(f"cannot read {path}: {e} (the gzip stream is corrupt or truncated). {fix}") from None
  ndim = 3 if kind == "images" else 1
  magic_expected = IDX_IMAGES_MAGIC if kind == "images" else IDX_LABELS_MAGIC
  header = 4 + 4 * ndim
  if len(raw) < header:
    raise DataError(f"{path} is truncated: {len(raw)} bytes, shorter than the {header}-byte IDX "
                    f"header of an {kind} file. {fix}")
  magic = struct.unpack(">I", raw[:4])[0]
  if magic != magic_expected:
    other = {IDX_IMAGES_MAGIC: "an images file", IDX_LABELS_MAGIC: "a labels file"}.get(magic)
    what = f"it is {other}" if other else "not an IDX file of unsigned bytes"
    raise DataError(f"{path} has magic number {magic:#010x}, expected {magic_expected:#010x} for IDX "
                    f"{kind} ({what}; are the files swapped or corrupt?). {fix}")
  dims = struct.unpack(">" + "I" * ndim, raw[4:header])
  expected_bytes = header + int(np.prod(dims))
  if len(raw) != expected_bytes:
    state = "truncated" if len(raw) < expected_bytes else "longer than its header says"
    raise DataError(f"{path} is {state}: the header declares {dims[0]} {kind} of shape {tuple(dims[1:])} "
                    f"= {expected_bytes} bytes, the file has {len(raw)}. {fix}")
  if expected_count is not None and dims[0] != expected_count:
    raise DataError(f"{path} holds {dims[0]} {kind}, expected {expected_count}: not the Fashion-MNIST "
                    f"file it is named after. {fix}")
  return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def read_fashion_mnist_idx(idx_dir: str | None = None,
                           data_dir: str | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{"train": (uint8 [60000, 28, 28, 1], uint8 [60000]), "test": ...} in IDX order, from
  the IDX files (found as `resolve_idx_dir` says), checked: format, counts, labels in 0..9
  and equal class counts (6 000 / 1 000). DataError naming every place looked in when
  the files are missing."""
  cands = _idx_candidates(idx_dir, data_dir)
  d = next((c for c, _ in cands if not _missing_idx_files(c)), None)
  if d is None:
    all_files = [n for f in FMNIST_FILES.values() for n in f]
    looked = "; ".join(f"{c} ({how}): missing {', '.join(_missing_idx_files(c))}" for c, how in cands)
    raise DataError(
        f"Fashion-MNIST IDX files missing. Looked in {looked}. Install them with "
        "`sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or put the four files "
        f"({', '.join(all_files)}) in a directory and pass idx_dir=... (config.data.idx_dir) or set "
        "JAXSSL_FMNIST_DIR, or copy them into the data dir (config.data.data_dir / $JAXSSL_DATA_DIR).")
  out = {}
  for split, (img_name, lab_name) in FMNIST_FILES.items():
    n = FMNIST_COUNTS[split]
    images = read_idx(_find_idx_file(d, img_name), kind="images", expected_count=n)
    labels = read_idx(_find_idx_file(d, lab_name), kind="labels", expected_count=n)
    if images.shape[1:] != (28, 28):
      raise DataError(f"{img_name} in {d} holds {images.shape[1]}x{images.shape[2]} images; Fashion-MNIST "
                      "images are 28x28.")
    if labels.max(initial=0) > 9:
      raise DataError(f"{lab_name} in {d} has label {int(labels.max())}; Fashion-MNIST labels are 0..9.")
    counts = np.bincount(labels, minlength=10)
    if not np.all(counts == n // 10):
      raise DataError(f"{lab_name} in {d} has class counts {counts.tolist()}; Fashion-MNIST has exactly "
                      f"{n // 10} examples of each of its 10 classes in {split}. The file is corrupt or "
                      "not Fashion-MNIST.")
    out[split] = (images[..., None], labels)
  return out


# ----------------------------------------------------------------------------- example order

def tfds_record_order(num_examples: int, split: str) -> np.ndarray:
  """The IDX indices of a Fashion-MNIST split in the order earlier jaxssl versions read it.

  Why: up to now jaxssl read Fashion-MNIST through a tfds dataset that it wrote from the
  IDX files, and tfds does not store examples in the order they are generated. Keeping
  that order (rather than the IDX order) keeps every epoch permutation, batch and
  evaluation split of earlier versions, so runs and published numbers are reproducible
  bit for bit -- without importing tfds.

  How tfds (4.x, `tensorflow_datasets/core`) orders records: the builder yielded example
  `i` of the IDX file under the key `i`. The split writer (`writer.py`, via
  `split_builder.py` with `hash_salt=split_name`) passes every example through a
  `shuffle.Shuffler`, which hashes its key with `hashing.Hasher(salt)`:
  md5(salt.encode() + str(key).encode()) read as a 128-bit big-endian integer, and yields
  the records sorted by that hash (in memory, or bucketed by the hash's leading bits and
  sorted within each bucket: the same total order). The sorted records are written to the
  shards in sequence and read back in sequence (shuffle_files=False). So record j is IDX
  example order[j], with `order` the indices sorted by their salted md5.

  Args:
    num_examples: examples in the split (60 000 for train, 10 000 for test).
    split: the split name, the hash salt ("train" or "test").

  Returns:
    int64 [num_examples], a permutation of range(num_examples).
  """
  salted = hashlib.md5(str(split).encode("utf-8"))

  def key(i: int) -> bytes:
    h = salted.copy()
    h.update(str(i).encode("utf-8"))
    return h.digest()   # 16 bytes, big-endian: compares as the 128-bit integer does

  return np.asarray(sorted(range(int(num_examples)), key=key), dtype=np.int64)


# ----------------------------------------------------------------------------- .npy cache

def fashion_mnist_cache_dir(data_dir: str | None = None) -> str:
  """The directory holding the prepared arrays: <data dir>/fashion_mnist_npy."""
  return os.path.join(resolve_data_dir(data_dir), CACHE_DIRNAME)


def _paths(cache: str, split: str) -> tuple[str, str]:
  return os.path.join(cache, f"{split}_images.npy"), os.path.join(cache, f"{split}_labels.npy")


def _sha256(a: np.ndarray) -> str:
  return hashlib.sha256(np.ascontiguousarray(a).data).hexdigest()


def write_atomic(path: str, write: Callable[[object], None]) -> None:
  """Writes `path` through a temporary file in the same directory and os.replace."""
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=f".{os.path.basename(path)}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.unlink(tmp)
    raise


def _corrupt(cache: str, what: str) -> DataError:
  return DataError(f"the prepared Fashion-MNIST in {cache} is corrupt: {what}. Delete {cache} and run "
                   "again to prepare it afresh from the IDX files.")


def _read_meta(cache: str) -> dict:
  """meta.json of a prepared cache, checked against the current format and counts."""
  path = os.path.join(cache, _META)
  try:
    with open(path) as f:
      meta = json.load(f)
    splits = meta["splits"]
    fmt = meta["format"]
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise _corrupt(cache, f"cannot read {path} ({type(e).__name__}: {e})") from None
  if fmt != CACHE_FORMAT:
    raise DataError(f"the prepared Fashion-MNIST in {cache} has format {fmt!r}, this jaxssl writes "
                    f"{CACHE_FORMAT}. Delete {cache} and run again to prepare it from the IDX files.")
  for split, n in FMNIST_COUNTS.items():
    got = splits.get(split, {}).get("num_examples", 0) if isinstance(splits, dict) else 0
    if got != n:
      raise DataError(f"the prepared Fashion-MNIST in {cache} has {got} {split} examples, expected {n}. "
                      f"Delete {cache} and run again to prepare it from the IDX files.")
  return meta


def prepare_fashion_mnist(idx_dir: str | None = None, data_dir: str | None = None) -> str:
  """Makes sure the data dir holds the prepared Fashion-MNIST arrays; returns their directory.

  Idempotent and safe to call concurrently: a prepared cache (`meta.json` present) is
  checked and reused without reading the IDX files; otherwise the IDX files (see
  `resolve_idx_dir`) are read, checked, put in `tfds_record_order` and written to
  <data_dir>/fashion_mnist_npy under a lock, each file atomically and meta.json last.
  No network, no tfds.
  """
  cache = fashion_mnist_cache_dir(data_dir)
  if os.path.isfile(os.path.join(cache, _META)):   # complete: meta.json is written last
    _read_meta(cache)
    return cache
  dd = os.path.dirname(cache)
  with _file_lock(os.path.join(dd, ".fashion_mnist.lock")):
    if os.path.isfile(os.path.join(cache, _META)):   # another process prepared it meanwhile
      _read_meta(cache)
      return cache
    arrays = read_fashion_mnist_idx(idx_dir, data_dir)
    if not os.environ.get("JAXSSL_QUIET"):
      print(f"jaxssl: preparing Fashion-MNIST from {resolve_idx_dir(idx_dir, data_dir)} into {cache} "
            "(once) ...", file=sys.stderr, flush=True)
    os.makedirs(cache, exist_ok=True)
    meta = {"format": CACHE_FORMAT, "order": _ORDER_NAME, "source": resolve_idx_dir(idx_dir, data_dir),
            "splits": {}}
    for split, (images, labels) in arrays.items():
      order = tfds_record_order(len(labels), split)
      x = np.ascontiguousarray(images[order])
      y = labels[order].astype(np.int32)
      ipath, lpath = _paths(cache, split)
      write_atomic(ipath, lambda f, a=x: np.save(f, a, allow_pickle=False))
      write_atomic(lpath, lambda f, a=y: np.save(f, a, allow_pickle=False))
      meta["splits"][split] = {"num_examples": int(len(y)), "images_sha256": _sha256(x),
                               "labels_sha256": _sha256(y)}
    text = json.dumps(meta, indent=2).encode()
    write_atomic(os.path.join(cache, _META), lambda f: f.write(text))
  return cache


def load_fashion_mnist(split: str, *, data_dir: str | None = None,
                       idx_dir: str | None = None) -> tuple[np.ndarray, np.ndarray]:
  """A whole base split ("train" or "test"): (uint8 [N, 28, 28, 1], int32 [N]) in
  `tfds_record_order`, prepared first if needed, then read from the .npy cache and
  checked (shapes, dtypes, sha256, labels in 0..9, equal class counts)."""
  if split not in FMNIST_COUNTS:
    raise DataError(f"Fashion-MNIST has no split {split!r}; its splits are {', '.join(FMNIST_COUNTS)}.")
  cache = prepare_fashion_mnist(idx_dir, data_dir)
  entry = _read_meta(cache)["splits"][split]
  n = FMNIST_COUNTS[split]
  out = []
  for path, dtype, shape, key in zip(_paths(cache, split), (np.uint8, np.int32), ((n, 28, 28, 1), (n,)),
                                     ("images_sha256", "labels_sha256")):
    try:
      a = np.load(path, mmap_mode=None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
      raise _corrupt(cache, f"cannot load {path} ({type(e).__name__}: {e})") from None
    if a.dtype != dtype or a.shape != shape:
      raise _corrupt(cache, f"{path} holds {a.dtype} {a.shape}, expected {np.dtype(dtype)} {shape}")
    if _sha256(a) != entry.get(key):
      raise _corrupt(cache, f"{path} does not match the sha256 recorded in {_META}")
    out.append(a)
  images, labels = out
  counts = np.bincount(np.clip(labels, 0, 10), minlength=11)
  if counts[10] or labels.min(initial=0) < 0 or not np.all(counts[:10] == n // 10):
    raise _corrupt(cache, f"its {split} labels have class counts {counts[:10].tolist()} (or labels outside "
                          f"0..9), expected {n // 10} per class")
  return images, labels


__all__ = ["DEFAULT_FMNIST_DIR", "FMNIST_FILES", "FMNIST_COUNTS", "FMNIST_VERSION", "IDX_IMAGES_MAGIC",
           "IDX_LABELS_MAGIC", "CACHE_DIRNAME", "resolve_idx_dir", "read_idx", "read_fashion_mnist_idx",
           "tfds_record_order", "fashion_mnist_cache_dir", "prepare_fashion_mnist", "load_fashion_mnist",
           "write_atomic"]
