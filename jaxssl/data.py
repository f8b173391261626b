"""Datasets through tensorflow-datasets, offline Fashion-MNIST, and per-host sharded
batches.

    it = BatchIterator("cifar10", "train", global_batch_size=256, mesh=mesh, seed=0)
    batch = next(it)   # {"image": uint8 [256, 32, 32, 3], "label": int32 [256]}, global
                       # jax.Arrays sharded over the mesh axis "data"

Datasets (`KNOWN_DATASETS`): fashion_mnist, cifar10, cifar100, stl10 and imagenet2012,
all read with `tfds` from one data dir (`data_dir`, else $JAXSSL_DATA_DIR, else
$TFDS_DATA_DIR, else ~/tensorflow_datasets).

* Fashion-MNIST needs no internet: `prepare_fashion_mnist` reads the four IDX `.gz`
  files (Debian's package `dataset-fashion-mnist` installs them in
  /usr/share/datasets/fashion-mnist; elsewhere pass `idx_dir` or set
  $JAXSSL_FMNIST_DIR), checks them (magic numbers, sizes, 60 000 / 10 000 examples, 6 000
  per class in train) and writes them as the tfds dataset `fashion_mnist` (version 3.0.1,
  the features of tfds' own builder), so `tfds.load("fashion_mnist", data_dir=...)` reads
  it like a downloaded copy. It runs once; later calls find the prepared dataset.
* The others are prepared by tfds itself (download on first use; ImageNet needs the
  manually downloaded tar files, see the tfds catalogue).
* STL-10 splits: "train" (5 000 labelled), "test", "unlabelled" (100 000) and
  "train+unlabelled" (the default pre-training split). Unlabelled examples have label -1.
* ImageNet is streamed with tf.data (each process reads its own shard of the files) and
  decoded on the host to a fixed IMAGENET_IMAGE_SIZE square (centre square crop of the
  image, resized; = resize shorter side + centre crop), so batches are uniform uint8;
  random resized crops etc. are done on device (`jaxssl.augment`).

Order and resumption: epoch e visits the examples in a permutation that depends only on
(seed, e). `BatchIterator(..., start_step=k)` yields exactly the batches that an
iterator started at 0 yields from its k-th on, so a checkpoint only stores the step.
Each process puts only its contiguous slice of every global batch on its devices
(`jax.make_array_from_process_local_data`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import gzip
import os
import struct
import sys
import tempfile
import zlib
from collections import OrderedDict
from typing import Any, Iterator

import jax
import numpy as np

from jaxssl import parallel
from jaxssl.errors import ConfigError, DataError

KNOWN_DATASETS: tuple[str, ...] = ("fashion_mnist", "cifar10", "cifar100", "stl10", "imagenet2012")

IMAGENET_IMAGE_SIZE = 256
DEFAULT_FMNIST_DIR = "/usr/share/datasets/fashion-mnist"
FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FMNIST_COUNTS = {"train": 60_000, "test": 10_000}
FMNIST_VERSION = "3.0.1"
IDX_IMAGES_MAGIC = 0x00000803   # 2051: unsigned byte, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801   # 2049: unsigned byte, 1 dimension
UNLABELLED = -1                 # label of STL-10's unlabelled examples

# In-memory datasets larger than this are refused by load_arrays (stream them instead).
_MAX_IN_MEMORY_BYTES = 48 * 2**30


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """Static facts about a dataset, available without reading it."""
  name: str
  num_classes: int
  image_shape: tuple[int, int, int]      # (H, W, C) of the uint8 images that batches carry
  train_split: str                       # the split used for (self-supervised) training
  test_split: str
  num_train: int                         # examples in train_split
  num_test: int
  splits: tuple[str, ...] = ()           # the dataset's base splits
  streaming: bool = False                # True: read with tf.data, not held in memory
  split_sizes: tuple[tuple[str, int], ...] = ()


_INFOS = {
    "fashion_mnist": DatasetInfo("fashion_mnist", 10, (28, 28, 1), "train", "test", 60_000, 10_000,
                                 ("train", "test"), False, (("train", 60_000), ("test", 10_000))),
    "cifar10": DatasetInfo("cifar10", 10, (32, 32, 3), "train", "test", 50_000, 10_000,
                           ("train", "test"), False, (("train", 50_000), ("test", 10_000))),
    "cifar100": DatasetInfo("cifar100", 100, (32, 32, 3), "train", "test", 50_000, 10_000,
                            ("train", "test"), False, (("train", 50_000), ("test", 10_000))),
    "stl10": DatasetInfo("stl10", 10, (96, 96, 3), "train+unlabelled", "test", 105_000, 8_000,
                         ("train", "test", "unlabelled"), False,
                         (("train", 5_000), ("test", 8_000), ("unlabelled", 100_000))),
    "imagenet2012": DatasetInfo("imagenet2012", 1000, (IMAGENET_IMAGE_SIZE, IMAGENET_IMAGE_SIZE, 3),
                                "train", "validation", 1_281_167, 50_000, ("train", "validation"), True,
                                (("train", 1_281_167), ("validation", 50_000))),
}


def dataset_info(name: str) -> DatasetInfo:
  """The `DatasetInfo` of a known dataset; ConfigError listing the known ones otherwise."""
  info = _INFOS.get(str(name))
  if info is None:
    close = difflib.get_close_matches(str(name).lower().replace("-", "_"), KNOWN_DATASETS, n=1, cutoff=0.6)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"unknown dataset {name!r}.{hint} Known datasets: {', '.join(KNOWN_DATASETS)}.")
  return info


def _base_splits(info: DatasetInfo, split: str) -> list[str]:
  """Validates a split expression ("train", "train+unlabelled", "train[:10%]") and returns
  its parts; raises DataError naming the dataset's splits."""
  if not isinstance(split, str) or not split:
    raise DataError(f"split must be a non-empty string, got {split!r}")
  parts = [p.strip() for p in split.split("+")]
  for p in parts:
    base = p.split("[", 1)[0].strip()
    if base not in info.splits:
      raise DataError(f"dataset {info.name!r} has no split {base!r} (in {split!r}); its splits are "
                      f"{', '.join(info.splits)} (combine with '+', slice as 'train[:10%]').")
  return parts


def _split_size(info: DatasetInfo, split: str) -> int | None:
  sizes = dict(info.split_sizes)
  total = 0
  for p in _base_splits(info, split):
    if "[" in p:
      return None
    total += sizes[p]
  return total


# ----------------------------------------------------------------------------- directories

def resolve_data_dir(data_dir: str | None = None) -> str:
  """data_dir, else $JAXSSL_DATA_DIR, else $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
  d = data_dir or os.environ.get("JAXSSL_DATA_DIR") or os.environ.get("TFDS_DATA_DIR") \
      or os.path.join("~", "tensorflow_datasets")
  return os.path.abspath(os.path.expanduser(str(d)))


def resolve_idx_dir(idx_dir: str | None = None) -> str:
  """idx_dir, else $JAXSSL_FMNIST_DIR, else /usr/share/datasets/fashion-mnist."""
  d = idx_dir or os.environ.get("JAXSSL_FMNIST_DIR") or DEFAULT_FMNIST_DIR
  return os.path.abspath(os.path.expanduser(str(d)))


@contextlib.contextmanager
def _file_lock(path: str):
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


def _find_idx_file(idx_dir: str, name: str) -> str:
  for cand in (name, name[:-3] if name.endswith(".gz") else name + ".gz"):
    p = os.path.join(idx_dir, cand)
    if os.path.isfile(p):
      return p
  return os.path.join(idx_dir, name)


def read_fashion_mnist_idx(idx_dir: str | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{"train": (uint8 [60000, 28, 28, 1], uint8 [60000]), "test": ...} from the IDX files,
  checked: format, counts, labels in 0..9 and equal class counts (6 000 / 1 000)."""
  d = resolve_idx_dir(idx_dir)
  missing = [n for files in FMNIST_FILES.values() for n in files
             if not os.path.isfile(_find_idx_file(d, n))]
  if missing:
    where = "the default directory" if d == DEFAULT_FMNIST_DIR else "idx_dir"
    raise DataError(
        f"Fashion-MNIST IDX files missing in {d} ({where}): {', '.join(missing)}. Install them with "
        "`sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or put the four files "
        f"({', '.join(n for f in FMNIST_FILES.values() for n in f)}) in a directory and pass "
        "idx_dir=... (config.data.idx_dir) or set JAXSSL_FMNIST_DIR.")
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


# ----------------------------------------------------------------------------- tfds plumbing

def _tfds():
  """Imports tensorflow_datasets (and TensorFlow) lazily, keeping TF off any GPU."""
  try:
    import tensorflow as tf
    import tensorflow_datasets as tfds
  except ImportError as e:   # pragma: no cover
    raise DataError(f"reading datasets needs tensorflow-datasets and tensorflow-cpu ({e}); "
                    "install them with `pip install -r requirements.txt`.") from None
  try:
    tf.config.set_visible_devices([], "GPU")
  except (RuntimeError, ValueError):   # already initialised
    pass
  return tfds


def _tf():
  _tfds()
  import tensorflow as tf
  return tf


@contextlib.contextmanager
def _quiet_tfds():
  """tfds progress bars off (restored afterwards) unless JAXSSL_VERBOSE_DATA is set."""
  from tensorflow_datasets.core.utils import tqdm_utils
  prev = tqdm_utils._active  # pylint: disable=protected-access
  if not os.environ.get("JAXSSL_VERBOSE_DATA"):
    tqdm_utils.display_progress_bar(False)
  try:
    yield
  finally:
    tqdm_utils.display_progress_bar(prev)


def _png_bytes(img: np.ndarray, level: int = 1) -> bytes:
  """Minimal PNG encoder (8-bit gray or RGB, no filtering) for uint8 [H, W, C]."""
  h, w, c = img.shape
  color_type = {1: 0, 3: 2}[c]
  rows = np.concatenate([np.zeros((h, 1), np.uint8), img.reshape(h, w * c)], axis=1)

  def chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0))
          + chunk(b"IDAT", zlib.compress(rows.tobytes(), level)) + chunk(b"IEND", b""))


def _png_unfiltered(data: bytes, shape: tuple[int, int, int]) -> np.ndarray | None:
  """Decodes a non-interlaced 8-bit PNG whose rows all use filter 0 (as `_png_bytes`
  writes); None for anything else (the caller falls back to TensorFlow's decoder)."""
  if data[:8] != b"\x89PNG\r\n\x1a\n":
    return None
  h, w, c = shape
  pos, idat = 8, []
  try:
    while pos < len(data):
      n = struct.unpack(">I", data[pos:pos + 4])[0]
      tag = data[pos + 4:pos + 8]
      body = data[pos + 8:pos + 8 + n]
      if tag == b"IHDR":
        iw, ih, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
        if (ih, iw, depth, interlace) != (h, w, 8, 0) or ctype != {1: 0, 3: 2}.get(c):
          return None
      elif tag == b"IDAT":
        idat.append(body)
      elif tag == b"IEND":
        break
      pos += 12 + n
    rows = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8)
  except (struct.error, zlib.error, KeyError):
    return None
  if rows.size != h * (1 + w * c):
    return None
  rows = rows.reshape(h, 1 + w * c)
  if rows[:, 0].any():
    return None
  return rows[:, 1:].reshape(h, w, c)


def _decode_fixed(encoded: list[bytes], shape: tuple[int, int, int], what: str) -> np.ndarray:
  """Decodes same-shape PNG/JPEG images to uint8 [N, H, W, C]."""
  out = np.empty((len(encoded),) + tuple(shape), np.uint8)
  slow = []
  for i, b in enumerate(encoded):
    img = _png_unfiltered(b, shape)
    if img is None:
      slow.append(i)
    else:
      out[i] = img
  if slow:
    tf = _tf()
    h, w, c = shape

    def dec(x):
      img = tf.io.decode_image(x, channels=c, expand_animations=False)
      img.set_shape([None, None, c])
      return img

    ds = tf.data.Dataset.from_tensor_slices(np.asarray([encoded[i] for i in slow], dtype=object))
    ds = ds.map(dec, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(1)
    try:
      for j, img in enumerate(ds.as_numpy_iterator()):
        if img.shape[1:] != (h, w, c):
          raise DataError(f"{what}: image {slow[j]} has shape {img.shape[1:]}, expected {shape}.")
        out[slow[j]] = img[0]
    except tf.errors.OpError as e:
      raise DataError(f"{what}: an image could not be decoded ({e.message.splitlines()[0]}). The "
                      "prepared files are corrupt: delete the dataset directory and prepare it again.") from None
  return out


def _tf_center_square(tf, encoded_or_image, size: int):
  """tf: decode (if bytes) the centre square of an image and resize it to size x size uint8."""
  def crop_window(h, w):
    side = tf.minimum(h, w)
    return (h - side) // 2, (w - side) // 2, side

  if encoded_or_image.dtype == tf.string:
    def jpeg():
      shp = tf.image.extract_jpeg_shape(encoded_or_image)
      oy, ox, side = crop_window(shp[0], shp[1])
      return tf.image.decode_and_crop_jpeg(encoded_or_image, tf.stack([oy, ox, side, side]), channels=3)

    def other():
      img = tf.io.decode_image(encoded_or_image, channels=3, expand_animations=False)
      shp = tf.shape(img)
      oy, ox, side = crop_window(shp[0], shp[1])
      return img[oy:oy + side, ox:ox + side]

    img = tf.cond(tf.io.is_jpeg(encoded_or_image), jpeg, other)
  else:
    img = encoded_or_image
    shp = tf.shape(img)
    oy, ox, side = crop_window(shp[0], shp[1])
    img = img[oy:oy + side, ox:ox + side]
  img = tf.image.resize(img, [size, size], method="bilinear", antialias=True)
  return tf.cast(tf.clip_by_value(tf.round(img), 0.0, 255.0), tf.uint8)


def _prepare_builder(name: str, data_dir: str):
  """tfds builder of `name` in data_dir, prepared (downloaded) if needed; DataError with
  instructions when that is impossible (offline, ImageNet's manual download)."""
  tfds = _tfds()
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # noqa: BLE001 - tfds raises many types here
    raise DataError(f"tfds cannot build dataset {name!r} in {data_dir}: {type(e).__name__}: {e}") from None
  try:
    builder.download_and_prepare()
  except Exception as e:  # noqa: BLE001
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if name == "imagenet2012":
      fix = (f"ImageNet must be downloaded by hand: put ILSVRC2012_img_train.tar and "
             f"ILSVRC2012_img_val.tar in {os.path.join(data_dir, 'downloads', 'manual')} and run again "
             "(see https://www.tensorflow.org/datasets/catalog/imagenet2012).")
    else:
      fix = (f"tfds downloads {name} on first use, which needs internet. Prepare it where there is "
             f"internet (`tfds build {name} --data_dir DIR`) and copy DIR/{name} into {data_dir}, or "
             "point data_dir / $JAXSSL_DATA_DIR at a directory that has it.")
    raise DataError(f"dataset {name!r} is not prepared in {data_dir} and preparing it failed "
                    f"({type(e).__name__}: {msg}). {fix}") from None
  return builder


# ----------------------------------------------------------------------------- Fashion-MNIST

_FMNIST_BUILDER_CLS = None


def _fmnist_builder_cls():
  """A subclass of tfds' own FashionMNIST builder that reads local IDX files instead of
  downloading (same name, version and features, so tfds' builder reads the result)."""
  global _FMNIST_BUILDER_CLS
  if _FMNIST_BUILDER_CLS is None:
    tfds = _tfds()
    from tensorflow_datasets.image_classification import mnist

    with tfds.core.registered.skip_registration():
      class LocalFashionMNIST(mnist.FashionMNIST):
        name = "fashion_mnist"
        VERSION = tfds.core.Version(FMNIST_VERSION)
        _arrays: dict = {}

        def _split_generators(self, dl_manager):
          del dl_manager
          return [tfds.core.SplitGenerator(name=s, gen_kwargs={"split": s}) for s in ("train", "test")]

        def _generate_examples(self, split):
          images, labels = self._arrays[split]
          for i in range(len(labels)):
            # Images are passed PNG-encoded (Image feature accepts bytes): ~20x faster
            # than letting tfds encode each one with a TensorFlow op.
            yield i, {"image": _png_bytes(images[i]), "label": int(labels[i])}

    _FMNIST_BUILDER_CLS = LocalFashionMNIST
  return _FMNIST_BUILDER_CLS


def _check_fmnist_prepared(builder, data_dir: str) -> None:
  for split, n in FMNIST_COUNTS.items():
    got = builder.info.splits[split].num_examples if split in builder.info.splits else 0
    if got != n:
      raise DataError(f"the prepared Fashion-MNIST in {builder.data_dir} has {got} {split} examples, "
                      f"expected {n}. Delete {os.path.join(data_dir, 'fashion_mnist')} and run again to "
                      "prepare it from the IDX files.")


def prepare_fashion_mnist(idx_dir: str | None = None, data_dir: str | None = None) -> str:
  """Makes sure `data_dir` holds the tfds dataset fashion_mnist/3.0.1; returns data_dir.

  Idempotent and safe to call concurrently: an existing prepared copy (ours or one tfds
  downloaded) is checked and reused; otherwise it is built from the IDX files in
  `idx_dir` (default $JAXSSL_FMNIST_DIR or /usr/share/datasets/fashion-mnist). No network.
  """
  dd = resolve_data_dir(data_dir)
  tfds = _tfds()
  with _file_lock(os.path.join(dd, ".fashion_mnist.lock")):
    if os.path.isfile(os.path.join(dd, "fashion_mnist", FMNIST_VERSION, "dataset_info.json")):
      builder = tfds.builder("fashion_mnist", data_dir=dd)
      if builder.is_prepared():
        _check_fmnist_prepared(builder, dd)
        return dd
    arrays = read_fashion_mnist_idx(idx_dir)
    if not os.environ.get("JAXSSL_QUIET"):
      print(f"jaxssl: preparing Fashion-MNIST from {resolve_idx_dir(idx_dir)} into {dd} (once) ...",
            file=sys.stderr, flush=True)
    local = _fmnist_builder_cls()(data_dir=dd)
    local._arrays = arrays  # pylint: disable=protected-access
    with tempfile.TemporaryDirectory(prefix="jaxssl_fmnist_dl_") as tmp, _quiet_tfds():
      local.download_and_prepare(download_dir=tmp)
    builder = tfds.builder("fashion_mnist", data_dir=dd)
    if not builder.is_prepared():
      raise DataError(f"preparing Fashion-MNIST into {dd} did not produce a dataset tfds can read.")
    _check_fmnist_prepared(builder, dd)
  return dd


# ----------------------------------------------------------------------------- whole splits

_CACHE: "OrderedDict[tuple, tuple[np.ndarray, np.ndarray]]" = OrderedDict()
_CACHE_SIZE = 4


def clear_cache() -> None:
  """Forgets the splits that load_arrays keeps in memory."""
  _CACHE.clear()


def _read_split(name: str, split: str, data_dir: str, info: DatasetInfo) -> tuple[np.ndarray, np.ndarray]:
  tfds = _tfds()
  tf = _tf()
  builder = _prepare_builder(name, data_dir)
  what = f"{name}/{split} in {data_dir}"
  try:
    ds = builder.as_dataset(split=split, shuffle_files=False,
                            decoders={"image": tfds.decode.SkipDecoding()},
                            read_config=tfds.ReadConfig(try_autocache=False))
  except Exception as e:  # noqa: BLE001
    raise DataError(f"cannot open {what}: {type(e).__name__}: {e}") from None
  if info.streaming:
    size = info.image_shape[0]
    ds = ds.map(lambda ex: (_tf_center_square(tf, ex["image"], size), tf.cast(ex["label"], tf.int32)),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  else:
    ds = ds.map(lambda ex: (ex["image"], tf.cast(ex["label"], tf.int32)))
  images, labels = [], []
  try:
    for img, lab in ds.batch(4096).as_numpy_iterator():
      images.append(img)
      labels.append(lab)
  except tf.errors.OpError as e:
    raise DataError(f"reading {what} failed: {e.message.splitlines()[0]}. The prepared files are "
                    f"corrupt or incomplete: delete {os.path.join(data_dir, name)} and prepare the "
                    "dataset again.") from None
  if not labels:
    raise DataError(f"{what} is empty.")
  labels = np.concatenate(labels).astype(np.int32)
  if info.streaming:
    images = np.concatenate(images)
  else:
    images = _decode_fixed([b for chunk in images for b in chunk], info.image_shape, what)
  return images, labels


def check_labels(labels: np.ndarray, num_classes: int, what: str) -> None:
  """DataError unless every label is in [0, num_classes) (or UNLABELLED = -1)."""
  labels = np.asarray(labels)
  bad = (labels >= num_classes) | ((labels < 0) & (labels != UNLABELLED))
  if bad.any():
    i = int(np.argmax(bad))
    raise DataError(f"{what}: label {int(labels[i])} at index {i} is outside [0, {num_classes}) "
                    f"({int(bad.sum())} such labels); the dataset does not match its {num_classes}-class "
                    "definition. Check the data files or config.data.name.")


def load_arrays(name: str, split: str, *, data_dir: str | None = None,
                idx_dir: str | None = None) -> tuple[np.ndarray, np.ndarray]:
  """A whole split in host memory, read through tfds: (uint8 [N, H, W, C], int32 [N]).

  For the small datasets and for evaluation. Splits may be combined and sliced with tfds
  syntax ("train+unlabelled", "train[:10%]"). STL-10's unlabelled examples get label -1.
  ImageNet images are decoded to the centre square at IMAGENET_IMAGE_SIZE; whole ImageNet
  splits larger than ~48 GB are refused (slice them, or use BatchIterator).
  The result is cached in memory (a few splits) and must not be modified.
  """
  info = dataset_info(name)
  parts = _base_splits(info, split)
  size = _split_size(info, split)
  if size is not None and size * int(np.prod(info.image_shape)) > _MAX_IN_MEMORY_BYTES:
    raise DataError(f"{name}/{split} would take {size * np.prod(info.image_shape) / 2**30:.0f} GiB in memory; "
                    f"use BatchIterator (which streams {name}) or a slice such as '{parts[0]}[:5%]'.")
  if name == "fashion_mnist":
    dd = prepare_fashion_mnist(idx_dir, data_dir)
  else:
    dd = resolve_data_dir(data_dir)
  tfds = _tfds()
  # The key includes tfds' as_dataset, so data mocked by tfds.testing.mock_data is never
  # served outside its context (and vice versa).
  key = (name, split, dd, id(tfds.core.DatasetBuilder.as_dataset))
  if key in _CACHE:
    _CACHE.move_to_end(key)
    return _CACHE[key]
  images, labels = [], []
  for p in parts:
    x, y = _read_split(name, p, dd, info)
    if p.split("[", 1)[0] == "unlabelled":
      y = np.full_like(y, UNLABELLED)
    images.append(x)
    labels.append(y)
  images = images[0] if len(images) == 1 else np.concatenate(images)
  labels = labels[0] if len(labels) == 1 else np.concatenate(labels)
  check_labels(labels, info.num_classes, f"{name}/{split} in {dd}")
  if name == "fashion_mnist" and split in FMNIST_COUNTS:
    n = FMNIST_COUNTS[split]
    counts = np.bincount(labels, minlength=10)
    if len(labels) != n or not np.all(counts == n // 10):
      raise DataError(f"Fashion-MNIST {split} read from {dd} has {len(labels)} examples with class counts "
                      f"{counts.tolist()}, expected {n} with {n // 10} per class. Delete "
                      f"{os.path.join(dd, 'fashion_mnist')} and run again to prepare it afresh.")
  images.setflags(write=False)
  labels.setflags(write=False)
  _CACHE[key] = (images, labels)
  while len(_CACHE) > _CACHE_SIZE:
    _CACHE.popitem(last=False)
  return images, labels


# ----------------------------------------------------------------------------- batches

def epoch_seed(seed: int, epoch: int) -> int:
  """A 31-bit seed that depends only on (seed, epoch)."""
  return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch)]).generate_state(1)[0] & 0x7FFFFFFF)


def epoch_permutation(n: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
  """The order in which epoch `epoch` visits n examples: a function of (seed, epoch) only."""
  if not shuffle:
    return np.arange(n, dtype=np.int64)
  rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch)])))
  return rng.permutation(n)


def process_slice(global_batch_size: int, process_index: int, process_count: int) -> slice:
  """Rows of a global batch that process `process_index` feeds (contiguous, equal sizes)."""
  if global_batch_size % process_count:
    raise ConfigError(f"batch_size={global_batch_size} is not divisible by the {process_count} processes.")
  n = global_batch_size // process_count
  return slice(process_index * n, (process_index + 1) * n)


class BatchIterator:
  """Infinite iterator over epochs of global batches sharded over the mesh axis "data".

  Yields {"image": uint8 [B, H, W, C], "label": int32 [B]} (plus "mask": bool [B] when
  drop_remainder=False: the last batch of an epoch is filled up by wrapping around to the
  start of the epoch's order, and mask marks the real rows). Epoch e uses the
  permutation of (seed, e) (no shuffling with shuffle=False). `step` counts the batches
  yielded so far, from `start_step`: an iterator built with start_step=k continues exactly
  where one built with 0 was after k batches.

  fashion_mnist, cifar10/100 and stl10 are held in memory (`load_arrays`);
  imagenet2012 is streamed with tf.data: each process reads its own shard of the split
  (`tfds.split_for_jax_process`), shuffled with a buffer seeded by (seed, epoch), so its
  order depends on (seed, epoch, number of processes).
  """

  def __init__(self, name: str, split: str, *, global_batch_size: int, mesh: jax.sharding.Mesh,
               seed: int, start_step: int = 0, data_dir: str | None = None,
               idx_dir: str | None = None, drop_remainder: bool = True, shuffle: bool = True,
               axis: str = parallel.DATA_AXIS, shuffle_buffer: int = 16_384):
    self.info = dataset_info(name)
    self.name, self.split = name, split
    _base_splits(self.info, split)
    if not isinstance(global_batch_size, (int, np.integer)) or isinstance(global_batch_size, bool):
      raise ConfigError(f"global_batch_size must be an int, got {global_batch_size!r}")
    if int(start_step) < 0:
      raise ConfigError(f"start_step must be >= 0, got {start_step}")
    parallel.check_batch_divisible(int(global_batch_size), mesh, axis)
    self.global_batch_size = int(global_batch_size)
    self.mesh, self.axis = mesh, axis
    self.seed = int(seed)
    self.shuffle = bool(shuffle)
    self.drop_remainder = bool(drop_remainder)
    self.process_index, self.process_count = jax.process_index(), jax.process_count()
    self._rows = process_slice(self.global_batch_size, self.process_index, self.process_count)
    self.local_batch_size = self._rows.stop - self._rows.start
    self.step = int(start_step)
    self._perm_epoch, self._perm = None, None
    self._stream, self._stream_epoch = None, None
    if self.info.streaming:
      if not self.drop_remainder:
        raise ConfigError(f"{name} is streamed and needs drop_remainder=True; evaluate on a "
                          "load_arrays() slice instead.")
      self._source = _StreamSource(name, split, resolve_data_dir(data_dir), self.seed, self.local_batch_size,
                                   self.shuffle, self.process_index, self.process_count, shuffle_buffer)
      self.num_examples = self._source.num_examples * self.process_count
      self.steps_per_epoch = self._source.num_examples // self.local_batch_size
    else:
      self._images, self._labels = load_arrays(name, split, data_dir=data_dir, idx_dir=idx_dir)
      self.num_examples = len(self._labels)
      n, b = self.num_examples, self.global_batch_size
      self.steps_per_epoch = n // b if self.drop_remainder else -(-n // b)
    if self.steps_per_epoch < 1:
      raise DataError(f"batch_size={self.global_batch_size} is larger than {name}/{split} "
                      f"({self.num_examples} examples) with drop_remainder=True; use a smaller batch.")

  @property
  def epoch(self) -> int:
    """The epoch the next batch comes from."""
    return self.step // self.steps_per_epoch

  def __iter__(self) -> "BatchIterator":
    return self

  def _global_indices(self, epoch: int, pos: int) -> tuple[np.ndarray, np.ndarray]:
    if self._perm_epoch != epoch:
      self._perm = epoch_permutation(self.num_examples, self.seed, epoch, self.shuffle)
      self._perm_epoch = epoch
    b = self.global_batch_size
    idx = self._perm[pos * b:(pos + 1) * b]
    valid = np.ones(b, bool)
    if len(idx) < b:   # last batch of an epoch without drop_remainder: wrap around
      valid[len(idx):] = False
      idx = np.concatenate([idx, np.resize(self._perm, b - len(idx))])
    return idx, valid

  def next_local(self) -> dict[str, np.ndarray]:
    """This process's slice of the next global batch, as NumPy arrays (advances `step`)."""
    epoch, pos = divmod(self.step, self.steps_per_epoch)
    if self.info.streaming:
      if self._stream_epoch != epoch:
        self._stream = self._source.epoch_iterator(epoch, skip_batches=pos)
        self._stream_epoch = epoch
      try:
        batch = next(self._stream)
      except StopIteration:
        raise DataError(f"{self.name}/{self.split}: epoch {epoch} ended after fewer than "
                        f"{self.steps_per_epoch} batches; the prepared files may be incomplete.") from None
    else:
      idx, valid = self._global_indices(epoch, pos)
      rows = idx[self._rows]
      batch = {"image": self._images[rows], "label": self._labels[rows]}
      if not self.drop_remainder:
        batch["mask"] = valid[self._rows]
    self.step += 1
    return batch

  def __next__(self) -> dict[str, jax.Array]:
    return parallel.host_to_global(self.next_local(), self.mesh, self.axis)


def make_train_iterator(name: str, *, global_batch_size: int, mesh: jax.sharding.Mesh, seed: int,
                        start_step: int = 0, data_dir: str | None = None, idx_dir: str | None = None,
                        **kwargs: Any) -> BatchIterator:
  """BatchIterator over the dataset's training split (shuffled, drop_remainder)."""
  info = dataset_info(name)
  return BatchIterator(name, info.train_split, global_batch_size=global_batch_size, mesh=mesh, seed=seed,
                       start_step=start_step, data_dir=data_dir, idx_dir=idx_dir, **kwargs)


class _StreamSource:
  """tf.data reader of one process's shard of a (large) split, one pipeline per epoch."""

  def __init__(self, name: str, split: str, data_dir: str, seed: int, local_batch: int, shuffle: bool,
               process_index: int, process_count: int, shuffle_buffer: int):
    tfds = _tfds()
    self.name, self.split, self.data_dir = name, split, data_dir
    self.seed, self.local_batch, self.shuffle = seed, local_batch, shuffle
    self.shuffle_buffer = int(shuffle_buffer)
    self.image_size = dataset_info(name).image_shape[0]
    self.builder = _prepare_builder(name, data_dir)
    self.proc_split = tfds.split_for_jax_process(split, process_index=process_index,
                                                 process_count=process_count, drop_remainder=True)
    ds = self._dataset(0)
    n = int(ds.cardinality())
    if n < 0:   # unknown cardinality: count once
      n = sum(1 for _ in ds)
    self.num_examples = n

  def _dataset(self, epoch: int):
    tfds = _tfds()
    try:
      return self.builder.as_dataset(
          split=self.proc_split, shuffle_files=self.shuffle,
          decoders={"image": tfds.decode.SkipDecoding()},
          read_config=tfds.ReadConfig(shuffle_seed=epoch_seed(self.seed, epoch), try_autocache=False,
                                      shuffle_reshuffle_each_iteration=False))
    except Exception as e:  # noqa: BLE001
      raise DataError(f"cannot open {self.name}/{self.split} in {self.data_dir}: {type(e).__name__}: {e}") from None

  def epoch_iterator(self, epoch: int, skip_batches: int = 0) -> Iterator[dict[str, np.ndarray]]:
    tf = _tf()
    ds = self._dataset(epoch)
    if self.shuffle:
      ds = ds.shuffle(self.shuffle_buffer, seed=epoch_seed(self.seed, epoch), reshuffle_each_iteration=False)
    if skip_batches:
      ds = ds.skip(skip_batches * self.local_batch)   # before decoding: skipping is cheap
    size = self.image_size
    ds = ds.map(lambda ex: {"image": _tf_center_square(tf, ex["image"], size),
                            "label": tf.cast(ex["label"], tf.int32)},
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(self.local_batch, drop_remainder=True).prefetch(2)
    what = f"{self.name}/{self.split} in {self.data_dir}"
    op_error = tf.errors.OpError

    def gen():
      it = ds.as_numpy_iterator()
      while True:
        try:
          item = next(it)
        except StopIteration:
          return
        except op_error as e:
          raise DataError(f"reading {what} failed: {e.message.splitlines()[0]}. The prepared files are "
                          f"corrupt or incomplete: delete {os.path.join(self.data_dir, self.name)} and "
                          "prepare the dataset again.") from None
        yield item

    return gen()


__all__ = ["KNOWN_DATASETS", "DatasetInfo", "dataset_info", "prepare_fashion_mnist", "load_arrays",
           "BatchIterator", "make_train_iterator", "read_idx", "read_fashion_mnist_idx", "resolve_data_dir",
           "resolve_idx_dir", "epoch_permutation", "epoch_seed", "process_slice", "clear_cache",
           "IMAGENET_IMAGE_SIZE", "UNLABELLED"]

