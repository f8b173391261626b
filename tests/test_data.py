"""jaxssl.data: IDX checks, offline Fashion-MNIST as a .npy cache (no TensorFlow) in the
example order of earlier tfds-based versions, the real tfds code paths (mocked with
tfds.testing.mock_data) for CIFAR-10, STL-10 and ImageNet, and deterministic, resumable,
sharded batch iteration."""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import jax
import numpy as np
import pytest

from jaxssl.data import tfds_source
from jaxssl import data, parallel
from jaxssl.data import fashion_mnist as fm
from jaxssl.errors import ConfigError, DataError
from _tiny import tiny_fmnist, write_idx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL_FMNIST = data.DEFAULT_FMNIST_DIR
HAVE_REAL = all(os.path.isfile(os.path.join(REAL_FMNIST, f)) for fs in data.FMNIST_FILES.values() for f in fs)
SKIP_REAL = pytest.mark.skipif(
    not HAVE_REAL, reason=f"Debian's Fashion-MNIST IDX files are not in {REAL_FMNIST} "
                          "(sudo apt-get install dataset-fashion-mnist)")

# Recorded with jaxssl's earlier tfds-based reader (tfds 4.9.10, fashion_mnist/3.0.1 written
# from Debian's IDX files): the IDX index of each record, and sha256 of the arrays it returned.
TFDS_ORDER = {
    "train": ([16399, 1680, 47917, 17307, 27051, 54784, 50543, 48736, 26263, 1456, 19135, 31598, 56897,
               12970, 4223, 27152, 49635, 4093, 17537, 37139],
              "fda8ca9064f2101e62385c07c57d28728b5717870b3486d016fa612af88ac5f2"),
    "test": ([9933, 5669, 163, 6686, 4747, 131, 9167, 1579, 6174, 8443, 5209, 8055, 6316, 7799, 8932, 6737,
              6952, 4494, 3437, 3358],
             "c6b47c13d8c5cce5af5f90b3ff16ddcdc1a1f3372702a5428ea317f961b964f0"),
}
TFDS_ARRAYS_SHA256 = {
    "train": ("d6f7acb83157a75006f04dbae6822f88b1bb1651cef953707c39831d938776a3",
              "0f719277c94fd64b784df233338874360483009b12c9952b1be69bc7d463ae04"),
    "test": ("a84f70bc4eaa1b2c5e671e99525a60f9dbe89328fa62013e4aa30ba11800c4df",
             "85e2be1b62985fe36ef293a029e9559c3f6822643be932622c5042b8a1654a94"),
}


# ----------------------------------------------------------------------------- helpers

@pytest.fixture
def tfds():
  """tensorflow_datasets, for the tests of the tfds code paths (an optional dependency)."""
  return pytest.importorskip("tensorflow_datasets")


def md5_order(n, split):
  """Independent reference of tfds' record order: keys sorted by md5(split + str(key))."""
  return np.argsort([int(hashlib.md5((split + str(i)).encode()).hexdigest(), 16) for i in range(n)],
                    kind="stable")


def expected(arrays, split):
  """What load_arrays must return for tiny IDX arrays: IDX order permuted by tfds' order."""
  images, labels = arrays[split]
  order = md5_order(len(labels), split)
  return images[..., None][order], labels[order].astype(np.int32)


@pytest.fixture
def tiny_counts(monkeypatch):
  monkeypatch.setattr(fm, "FMNIST_COUNTS", {"train": 40, "test": 20})
  data.clear_cache()
  yield
  data.clear_cache()


@pytest.fixture
def no_env(monkeypatch):
  for k in ("JAXSSL_DATA_DIR", "TFDS_DATA_DIR", "JAXSSL_FMNIST_DIR"):
    monkeypatch.delenv(k, raising=False)


@pytest.fixture(scope="module")
def mesh():
  return parallel.make_mesh()


def as_set(images):
  return {img.tobytes() for img in np.asarray(images)}


# ----------------------------------------------------------------------------- info

def test_dataset_info_known_and_unknown():
  assert set(data.KNOWN_DATASETS) == {"fashion_mnist", "cifar10", "cifar100", "stl10", "imagenet2012"}
  fm_info = data.dataset_info("fashion_mnist")
  assert (fm_info.num_classes, fm_info.image_shape, fm_info.num_train, fm_info.num_test) == (10, (28, 28, 1),
                                                                                           60_000, 10_000)
  assert data.dataset_info("cifar100").num_classes == 100
  stl = data.dataset_info("stl10")
  assert stl.train_split == "train+unlabelled" and stl.num_train == 105_000
  assert data.dataset_info("imagenet2012").streaming
  # Evaluation trains on the labelled "train" split everywhere (STL-10: not train+unlabelled).
  assert {n: data.dataset_info(n).eval_train_split for n in data.KNOWN_DATASETS} == {
      n: "train" for n in data.KNOWN_DATASETS}
  with pytest.raises(ConfigError, match="Known datasets: fashion_mnist, cifar10") as e:
    data.dataset_info("fashion-mnist")
  assert "Did you mean 'fashion_mnist'" in str(e.value)
  with pytest.raises(ConfigError, match="unknown dataset 'svhn'"):
    data.dataset_info("svhn")


def test_public_api_is_reexported():
  for name in ["KNOWN_DATASETS", "DatasetInfo", "dataset_info", "prepare_fashion_mnist", "load_arrays",
               "BatchIterator", "make_train_iterator", "read_idx", "read_fashion_mnist_idx", "resolve_data_dir",
               "resolve_idx_dir", "epoch_permutation", "epoch_seed", "process_slice", "clear_cache",
               "IMAGENET_IMAGE_SIZE", "UNLABELLED", "check_labels", "FMNIST_FILES", "DEFAULT_FMNIST_DIR"]:
    assert name in data.__all__ and hasattr(data, name), name


def test_data_dir_resolution(monkeypatch, tmp_path, no_env):
  assert data.resolve_data_dir() == os.path.expanduser("~/tensorflow_datasets")
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "a"))
  assert data.resolve_data_dir() == str(tmp_path / "a")
  monkeypatch.setenv("JAXSSL_DATA_DIR", str(tmp_path / "b"))
  assert data.resolve_data_dir() == str(tmp_path / "b")
  assert data.resolve_data_dir(str(tmp_path / "c")) == str(tmp_path / "c")
  monkeypatch.setenv("JAXSSL_FMNIST_DIR", str(tmp_path / "idx"))
  assert data.resolve_idx_dir() == str(tmp_path / "idx")
  monkeypatch.delenv("JAXSSL_FMNIST_DIR")
  assert data.resolve_idx_dir() == data.DEFAULT_FMNIST_DIR      # the data dir b has no IDX files
  (tmp_path / "b").mkdir()
  tiny_fmnist(tmp_path / "b")
  assert data.resolve_idx_dir() == str(tmp_path / "b")          # now it has all four
  assert data.resolve_idx_dir(data_dir=str(tmp_path / "c")) == data.DEFAULT_FMNIST_DIR
  assert data.resolve_idx_dir(str(tmp_path / "x")) == str(tmp_path / "x")   # explicit idx_dir wins
  monkeypatch.setenv("JAXSSL_FMNIST_DIR", str(tmp_path / "idx"))
  assert data.resolve_idx_dir() == str(tmp_path / "idx")        # and so does $JAXSSL_FMNIST_DIR


# ----------------------------------------------------------------------------- IDX files

def test_read_idx_round_trip_gz_and_plain(tmp_path):
  img = np.random.RandomState(0).randint(0, 256, (7, 28, 28)).astype(np.uint8)
  lab = np.arange(7, dtype=np.uint8) % 10
  np.testing.assert_array_equal(data.read_idx(write_idx(tmp_path / "i.gz", img).as_posix(), kind="images"), img)
  np.testing.assert_array_equal(
      data.read_idx(write_idx(tmp_path / "l", lab, gz=False).as_posix(), kind="labels", expected_count=7), lab)


def test_read_idx_errors(tmp_path):
  img = np.zeros((5, 28, 28), np.uint8)
  with pytest.raises(DataError, match="not found.*apt-get install"):
    data.read_idx(str(tmp_path / "missing.gz"), kind="images")
  p = write_idx(tmp_path / "magic.gz", img, magic=0x00000801).as_posix()
  with pytest.raises(DataError, match="magic number 0x00000801, expected 0x00000803.*labels file"):
    data.read_idx(p, kind="images")
  p = write_idx(tmp_path / "bad.gz", img, magic=0x12345678).as_posix()
  with pytest.raises(DataError, match="not an IDX file"):
    data.read_idx(p, kind="images")
  p = write_idx(tmp_path / "trunc.gz", img, truncate=100).as_posix()
  with pytest.raises(DataError, match="truncated: the header declares 5 images"):
    data.read_idx(p, kind="images")
  p = write_idx(tmp_path / "long.gz", np.zeros((5, 28, 28), np.uint8), count=4).as_posix()
  with pytest.raises(DataError, match="longer than its header says"):
    data.read_idx(p, kind="images")
  p = write_idx(tmp_path / "count.gz", img).as_posix()
  with pytest.raises(DataError, match="holds 5 images, expected 60000"):
    data.read_idx(p, kind="images", expected_count=60000)
  p = tmp_path / "short.gz"
  with gzip.open(p, "wb") as f:
    f.write(b"\x00\x00")
  with pytest.raises(DataError, match="shorter than the 16-byte IDX header"):
    data.read_idx(str(p), kind="images")
  p = tmp_path / "corrupt.gz"
  good = gzip.compress(b"\x00" * 5000)
  p.write_bytes(good[:len(good) // 2])
  with pytest.raises(DataError, match="gzip stream is corrupt or truncated"):
    data.read_idx(str(p), kind="images")
  p = tmp_path / "notgz.gz"
  p.write_bytes(b"this is not gzip at all")
  with pytest.raises(DataError, match="cannot read"):
    data.read_idx(str(p), kind="images")


def test_missing_idx_files_message(tmp_path, monkeypatch, no_env):
  with pytest.raises(DataError) as e:
    data.read_fashion_mnist_idx(str(tmp_path))
  msg = str(e.value)
  assert "train-images-idx3-ubyte.gz" in msg and "apt-get install dataset-fashion-mnist" in msg
  assert "JAXSSL_FMNIST_DIR" in msg and "idx_dir" in msg and "JAXSSL_DATA_DIR" in msg
  assert f"{tmp_path} (idx_dir)" in msg
  # Nothing explicit: the error names every place looked in, the data dir and the default.
  (tmp_path / "dd").mkdir()
  write_idx(tmp_path / "dd" / data.FMNIST_FILES["train"][0], np.zeros((40, 28, 28), np.uint8))
  monkeypatch.setattr(fm, "DEFAULT_FMNIST_DIR", str(tmp_path / "nodefault"))
  monkeypatch.setenv("JAXSSL_DATA_DIR", str(tmp_path / "dd"))
  with pytest.raises(DataError) as e:
    data.read_fashion_mnist_idx()
  msg = str(e.value)
  assert f"{tmp_path / 'dd'} (the data dir): missing train-labels-idx1-ubyte.gz, t10k-images" in msg
  assert f"{tmp_path / 'nodefault'} (the default directory): missing train-images-idx3-ubyte.gz" in msg


def test_wrong_counts_and_unbalanced_classes(tmp_path, tiny_counts):
  tiny_fmnist(tmp_path)
  data.read_fashion_mnist_idx(str(tmp_path))     # the tiny set is valid for the patched counts
  labels = np.zeros(40, np.uint8)                 # 40 examples of class 0
  write_idx(tmp_path / data.FMNIST_FILES["train"][1], labels)
  with pytest.raises(DataError, match=r"class counts \[40, 0,.*exactly 4 examples of each"):
    data.read_fashion_mnist_idx(str(tmp_path))
  write_idx(tmp_path / data.FMNIST_FILES["train"][1], np.arange(30) % 10)
  with pytest.raises(DataError, match="holds 30 labels, expected 40"):
    data.read_fashion_mnist_idx(str(tmp_path))
  write_idx(tmp_path / data.FMNIST_FILES["train"][1], np.arange(40) % 10 + 1)
  with pytest.raises(DataError, match="has label 10; Fashion-MNIST labels are 0..9"):
    data.read_fashion_mnist_idx(str(tmp_path))


@SKIP_REAL
def test_real_fashion_mnist_idx_counts():
  arrays = data.read_fashion_mnist_idx(REAL_FMNIST)
  (xtr, ytr), (xte, yte) = arrays["train"], arrays["test"]
  assert xtr.shape == (60_000, 28, 28, 1) and xte.shape == (10_000, 28, 28, 1)
  assert np.all(np.bincount(ytr, minlength=10) == 6000)
  assert np.all(np.bincount(yte, minlength=10) == 1000)


# ----------------------------------------------------------------------------- example order

@pytest.mark.parametrize("split,n", [("train", 60_000), ("test", 10_000)])
def test_tfds_record_order_matches_recorded_order(split, n):
  order = data.tfds_record_order(n, split)
  first20, sha = TFDS_ORDER[split]
  assert order.dtype == np.int64 and order.shape == (n,)
  assert order[:20].tolist() == first20
  assert hashlib.sha256(order.astype("<i8").tobytes()).hexdigest() == sha
  np.testing.assert_array_equal(np.sort(order), np.arange(n))


def test_tfds_record_order_small_and_salted():
  for split in ("train", "test"):
    for n in (0, 1, 7, 40, 1000):
      np.testing.assert_array_equal(data.tfds_record_order(n, split), md5_order(n, split))
  assert not np.array_equal(data.tfds_record_order(1000, "train"), data.tfds_record_order(1000, "test"))


def test_tfds_record_order_is_tfds_shuffler_order(tfds, tmp_path):
  """tfds' own Shuffler (which its writer uses, salted with the split name) agrees."""
  from tensorflow_datasets.core import shuffle
  for split, n in (("train", 3000), ("test", 500)):
    s = shuffle.Shuffler(str(tmp_path), hash_salt=split)
    for i in range(n):
      s.add(i, str(i).encode())
    np.testing.assert_array_equal([int(d) for _, d in s], data.tfds_record_order(n, split))


@SKIP_REAL
def test_real_fashion_mnist_is_bit_for_bit_the_tfds_result(tmp_path, no_env):
  dd = str(tmp_path / "data")
  assert data.prepare_fashion_mnist(REAL_FMNIST, dd) == os.path.join(dd, "fashion_mnist_npy")
  data.clear_cache()
  idx = data.read_fashion_mnist_idx(REAL_FMNIST)
  for split in ("train", "test"):
    x, y = data.load_arrays("fashion_mnist", split, data_dir=dd)
    assert x.dtype == np.uint8 and y.dtype == np.int32
    assert (hashlib.sha256(x.tobytes()).hexdigest(), hashlib.sha256(y.tobytes()).hexdigest()) == \
        TFDS_ARRAYS_SHA256[split]
    order = data.tfds_record_order(len(y), split)
    np.testing.assert_array_equal(x, idx[split][0][order])
    np.testing.assert_array_equal(y, idx[split][1][order])
  data.clear_cache()


# ----------------------------------------------------------------------------- .npy cache

def test_prepare_tiny_fashion_mnist_writes_npy_cache(tmp_path, tiny_counts):
  idx, dd = tmp_path / "idx", tmp_path / "data"
  idx.mkdir()
  arrays = tiny_fmnist(idx)
  cache = dd / "fashion_mnist_npy"
  assert data.prepare_fashion_mnist(str(idx), str(dd)) == str(cache)
  assert sorted(os.listdir(cache)) == ["meta.json", "test_images.npy", "test_labels.npy", "train_images.npy",
                                       "train_labels.npy"]                    # no temporary files left
  for split in ("train", "test"):
    want_x, want_y = expected(arrays, split)
    x = np.load(cache / f"{split}_images.npy")
    y = np.load(cache / f"{split}_labels.npy")
    assert x.dtype == np.uint8 and y.dtype == np.int32
    np.testing.assert_array_equal(x, want_x)
    np.testing.assert_array_equal(y, want_y)
    lx, ly = data.load_arrays("fashion_mnist", split, data_dir=str(dd), idx_dir=str(idx))
    np.testing.assert_array_equal(lx, want_x)
    np.testing.assert_array_equal(ly, want_y)
    assert not lx.flags.writeable and not ly.flags.writeable
  meta = json.loads((cache / "meta.json").read_text())
  assert meta["splits"]["train"]["num_examples"] == 40
  assert meta["splits"]["test"]["images_sha256"] == hashlib.sha256(expected(arrays, "test")[0].tobytes()).hexdigest()


def test_cache_is_reused_without_reading_idx(tmp_path, tiny_counts, monkeypatch):
  idx, dd = tmp_path / "idx", tmp_path / "data"
  idx.mkdir()
  arrays = tiny_fmnist(idx)
  x1, y1 = data.load_arrays("fashion_mnist", "train", data_dir=str(dd), idx_dir=str(idx))
  stamps = {f: os.stat(dd / "fashion_mnist_npy" / f).st_mtime_ns for f in os.listdir(dd / "fashion_mnist_npy")}

  def boom(*a, **k):
    raise AssertionError("the IDX files were read again")
  monkeypatch.setattr(fm, "read_idx", boom)
  for f in idx.iterdir():
    f.unlink()
  data.clear_cache()
  assert data.prepare_fashion_mnist(str(idx), str(dd)) == str(dd / "fashion_mnist_npy")
  x2, y2 = data.load_arrays("fashion_mnist", "train", data_dir=str(dd), idx_dir=str(idx))
  assert x2 is not x1                                # really read again from the cache ...
  np.testing.assert_array_equal(x2, expected(arrays, "train")[0])     # ... and the same
  np.testing.assert_array_equal(y2, y1)
  assert {f: os.stat(dd / "fashion_mnist_npy" / f).st_mtime_ns for f in stamps} == stamps
  x3, _ = data.load_arrays("fashion_mnist", "train", data_dir=str(dd))
  assert x3 is x2                                    # cached in memory


def test_concurrent_prepare_reads_the_idx_files_once(tmp_path, tiny_counts, monkeypatch):
  idx, dd = tmp_path / "idx", tmp_path / "data"
  idx.mkdir()
  arrays = tiny_fmnist(idx)
  real, calls = fm.read_fashion_mnist_idx, []

  def slow(*a, **k):
    calls.append(1)
    time.sleep(0.3)      # both threads are waiting on the lock by now
    return real(*a, **k)
  monkeypatch.setattr(fm, "read_fashion_mnist_idx", slow)
  out, errors = [], []

  def run():
    try:
      out.append(data.prepare_fashion_mnist(str(idx), str(dd)))
    except Exception as e:  # noqa: BLE001
      errors.append(e)
  threads = [threading.Thread(target=run) for _ in range(3)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert not errors and len(calls) == 1 and out == [str(dd / "fashion_mnist_npy")] * 3
  np.testing.assert_array_equal(data.load_arrays("fashion_mnist", "test", data_dir=str(dd))[0],
                                expected(arrays, "test")[0])


def test_interrupted_preparation_is_redone(tmp_path, tiny_counts, monkeypatch):
  idx, dd = tmp_path / "idx", tmp_path / "data"
  idx.mkdir()
  arrays = tiny_fmnist(idx)
  cache = dd / "fashion_mnist_npy"
  real_save, n_saves = np.save, []

  def crash(f, a, **k):
    n_saves.append(1)
    if len(n_saves) == 3:
      raise KeyboardInterrupt("killed while writing")
    real_save(f, a, **k)
  monkeypatch.setattr(fm.np, "save", crash)
  with pytest.raises(KeyboardInterrupt):
    data.prepare_fashion_mnist(str(idx), str(dd))
  monkeypatch.setattr(fm.np, "save", real_save)
  assert sorted(os.listdir(cache)) == ["train_images.npy", "train_labels.npy"]   # no meta, no temp file
  (cache / "train_images.npy").write_bytes(b"garbage")      # whatever is there is replaced
  data.prepare_fashion_mnist(str(idx), str(dd))
  for split in ("train", "test"):
    np.testing.assert_array_equal(data.load_arrays("fashion_mnist", split, data_dir=str(dd))[0],
                                  expected(arrays, split)[0])


@pytest.mark.parametrize("damage", ["truncate", "flip", "meta", "delete", "dtype"])
def test_corrupt_cache_gives_a_clear_error(tmp_path, tiny_counts, damage):
  idx, dd = tmp_path / "idx", tmp_path / "data"
  idx.mkdir()
  tiny_fmnist(idx)
  cache = dd / "fashion_mnist_npy"
  data.prepare_fashion_mnist(str(idx), str(dd))
  img = cache / "train_images.npy"
  raw = img.read_bytes()
  if damage == "truncate":
    img.write_bytes(raw[:len(raw) - 500])
  elif damage == "flip":
    img.write_bytes(raw[:-10] + bytes([raw[-10] ^ 1]) + raw[-9:])
  elif damage == "meta":
    (cache / "meta.json").write_text("{not json")
  elif damage == "delete":
    img.unlink()
  else:
    np.save(img, np.zeros((40, 28, 28, 1), np.float32))
  data.clear_cache()
  with pytest.raises(DataError, match=f"Fashion-MNIST in {cache} is corrupt.*Delete {cache} and run again"):
    data.load_arrays("fashion_mnist", "train", data_dir=str(dd), idx_dir=str(idx))
  # Deleting it, as the message says, prepares it afresh.
  for f in cache.iterdir():
    f.unlink()
  cache.rmdir()
  assert data.load_arrays("fashion_mnist", "train", data_dir=str(dd), idx_dir=str(idx))[0].shape == (40, 28, 28, 1)


def test_prepared_cache_with_wrong_counts_is_rejected(tmp_path, tiny_counts, monkeypatch):
  idx, dd = tmp_path / "idx", tmp_path / "data"
  idx.mkdir()
  tiny_fmnist(idx)
  data.prepare_fashion_mnist(str(idx), str(dd))
  monkeypatch.setattr(fm, "FMNIST_COUNTS", {"train": 60_000, "test": 10_000})
  with pytest.raises(DataError, match="has 40 train examples, expected 60000.*Delete"):
    data.prepare_fashion_mnist(str(idx), str(dd))


def test_prepare_uses_env_dirs(tmp_path, tiny_counts, monkeypatch, no_env):
  idx, dd = tmp_path / "idx", tmp_path / "data"
  idx.mkdir()
  arrays = tiny_fmnist(idx)
  monkeypatch.setenv("JAXSSL_FMNIST_DIR", str(idx))
  monkeypatch.setenv("JAXSSL_DATA_DIR", str(dd))
  x, y = data.load_arrays("fashion_mnist", "train")
  np.testing.assert_array_equal(y, expected(arrays, "train")[1])
  assert (dd / "fashion_mnist_npy" / "meta.json").is_file()


def test_idx_files_in_the_data_dir(tmp_path, tiny_counts, monkeypatch, no_env):
  dd, other = tmp_path / "data", tmp_path / "other"
  dd.mkdir()
  other.mkdir()
  arrays = tiny_fmnist(dd, seed=1)                  # copied into $JAXSSL_DATA_DIR
  monkeypatch.setattr(fm, "DEFAULT_FMNIST_DIR", str(tmp_path / "nodefault"))
  monkeypatch.setenv("JAXSSL_DATA_DIR", str(dd))
  x, y = data.load_arrays("fashion_mnist", "test")
  np.testing.assert_array_equal(x, expected(arrays, "test")[0])
  assert (dd / "fashion_mnist_npy" / "meta.json").is_file()
  # config.data.data_dir instead of the environment, plain (not gzipped) files.
  monkeypatch.delenv("JAXSSL_DATA_DIR")
  for split in ("train", "test"):
    for name, a in zip(data.FMNIST_FILES[split], arrays[split]):
      write_idx(other / name[:-3], a, gz=False)
  x, y = data.load_arrays("fashion_mnist", "train", data_dir=str(other))
  np.testing.assert_array_equal(x, expected(arrays, "train")[0])
  # $JAXSSL_FMNIST_DIR is looked at before the data dir.
  fdir, ddir = tmp_path / "f", tmp_path / "d"
  fdir.mkdir()
  ddir.mkdir()
  from_env = tiny_fmnist(fdir, seed=2)
  tiny_fmnist(ddir, seed=3)
  monkeypatch.setenv("JAXSSL_FMNIST_DIR", str(fdir))
  x, _ = data.load_arrays("fashion_mnist", "train", data_dir=str(ddir))
  np.testing.assert_array_equal(x, expected(from_env, "train")[0])


def test_fashion_mnist_split_slices(tmp_path, tiny_counts):
  idx, dd = tmp_path / "idx", tmp_path / "data"
  idx.mkdir()
  arrays = tiny_fmnist(idx)
  kw = dict(data_dir=str(dd), idx_dir=str(idx))
  xtr, ytr = expected(arrays, "train")
  xte, yte = expected(arrays, "test")
  cases = {"train[:10]": (xtr[:10], ytr[:10]), "train[-5:]": (xtr[-5:], ytr[-5:]),
           "test[25%:]": (xte[5:], yte[5:]), "train[:12.4%]": (xtr[:5], ytr[:5]),     # 4.96 -> 5
           "train[10:20]+test[:-15]": (np.concatenate([xtr[10:20], xte[:5]]), np.concatenate([ytr[10:20], yte[:5]])),
           "train+test": (np.concatenate([xtr, xte]), np.concatenate([ytr, yte]))}
  for split, (wx, wy) in cases.items():
    x, y = data.load_arrays("fashion_mnist", split, **kw)
    np.testing.assert_array_equal(x, wx)
    np.testing.assert_array_equal(y, wy)
  for bad, match in (("train[:50]", "outside the 40 examples"), ("train[a:b]", "unrecognised"),
                     ("train[3]", "unrecognised"), ("validation", "no split 'validation'.*train, test")):
    with pytest.raises(DataError, match=match):
      data.load_arrays("fashion_mnist", bad, **kw)


def test_missing_idx_files_through_load_arrays(tmp_path):
  with pytest.raises(DataError, match="IDX files missing"):
    data.load_arrays("fashion_mnist", "train", data_dir=str(tmp_path / "data"), idx_dir=str(tmp_path))


# ----------------------------------------------------------------------------- without TensorFlow

NO_TF_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import jaxssl.data as data
    from jaxssl import parallel
    from jaxssl.data import fashion_mnist as fm
    tf_mods = lambda: [m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tensorflow_datasets")]
    assert not tf_mods(), tf_mods()
    fm.FMNIST_COUNTS = {"train": 40, "test": 20}
    x, y = data.load_arrays("fashion_mnist", "train", data_dir=sys.argv[1], idx_dir=sys.argv[2])
    it = data.make_train_iterator("fashion_mnist", global_batch_size=8, mesh=parallel.make_mesh(), seed=0,
                                  data_dir=sys.argv[1], idx_dir=sys.argv[2])
    b = next(it)
    assert x.shape == (40, 28, 28, 1) and np.asarray(b["image"]).shape == (8, 28, 28, 1)
    assert not tf_mods(), tf_mods()
    print("NO-TF-OK", x.sum())
    """)


def test_import_and_fashion_mnist_do_not_import_tensorflow(tmp_path):
  idx = tmp_path / "idx"
  idx.mkdir()
  arrays = tiny_fmnist(idx)
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAXSSL_QUIET": "1", "PYTHONPATH": ROOT}
  out = subprocess.run([sys.executable, "-c", NO_TF_SCRIPT, str(tmp_path / "data"), str(idx)], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.split() == ["NO-TF-OK", str(int(arrays["train"][0].astype(np.int64).sum()))]


def test_without_tfds_installed(tmp_path, tiny_counts, monkeypatch):
  """tensorflow / tensorflow_datasets unimportable: Fashion-MNIST works, the others say
  how to install the optional dependency."""
  for m in ("tensorflow", "tensorflow_datasets"):
    monkeypatch.setitem(sys.modules, m, None)    # `import m` raises ImportError
  idx = tmp_path / "idx"
  idx.mkdir()
  arrays = tiny_fmnist(idx)
  x, _ = data.load_arrays("fashion_mnist", "train", data_dir=str(tmp_path / "data"), idx_dir=str(idx))
  np.testing.assert_array_equal(x, expected(arrays, "train")[0])
  with pytest.raises(DataError, match=r"pip install 'jaxssl\[tfds\]'"):
    data.load_arrays("cifar10", "train", data_dir=str(tmp_path / "data"))
  with pytest.raises(DataError, match=r"pip install 'jaxssl\[tfds\]'"):
    data.BatchIterator("imagenet2012", "train", global_batch_size=8, mesh=parallel.make_mesh(), seed=0,
                       data_dir=str(tmp_path / "data"))


# ----------------------------------------------------------------------------- tfds (mocked)

def test_unknown_split_lists_splits(tmp_path):
  with pytest.raises(DataError, match="has no split 'validation'.*train, test"):
    data.load_arrays("cifar10", "validation", data_dir=str(tmp_path))
  with pytest.raises(ConfigError, match="Known datasets"):
    data.load_arrays("mnist", "train", data_dir=str(tmp_path))


def test_offline_download_failure_is_a_data_error(tfds, tmp_path, monkeypatch):
  def fail(self, *a, **k):
    raise ConnectionError("no internet")
  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", fail)
  # The probe answers (a host is reachable) but the download itself fails.
  monkeypatch.setattr(tfds_source, "can_download", lambda: True)
  with pytest.raises(DataError, match="not prepared in .* no internet.*tfds build cifar10"):
    data.load_arrays("cifar10", "train", data_dir=str(tmp_path))
  with pytest.raises(DataError, match="downloaded by hand.*downloads/manual"):
    data.BatchIterator("imagenet2012", "train", global_batch_size=8, mesh=parallel.make_mesh(), seed=0,
                       data_dir=str(tmp_path))


def test_cifar10_through_tfds_mock(tfds, tmp_path):
  with tfds.testing.mock_data(num_examples=24):
    x, y = data.load_arrays("cifar10", "train", data_dir=str(tmp_path))
    assert x.shape == (24, 32, 32, 3) and x.dtype == np.uint8
    assert y.dtype == np.int32 and y.min() >= 0 and y.max() < 10
    assert len(as_set(x)) == 24
    # The decoded pixels are tfds' own decoding of the same records.
    ref = list(tfds.as_numpy(tfds.load("cifar10", split="train", data_dir=str(tmp_path), shuffle_files=False)))
    np.testing.assert_array_equal(x, np.stack([r["image"] for r in ref]))
    np.testing.assert_array_equal(y, [r["label"] for r in ref])
    x2, _ = data.load_arrays("cifar10", "train", data_dir=str(tmp_path))
    assert x2 is x                                 # cached in memory
  x100 = None
  with tfds.testing.mock_data(num_examples=10):
    x100, y100 = data.load_arrays("cifar100", "test", data_dir=str(tmp_path))
  assert x100.shape == (10, 32, 32, 3) and y100.max() < 100


def test_stl10_unlabelled_convention(tfds, tmp_path):
  with tfds.testing.mock_data(num_examples=12):
    xtr, ytr = data.load_arrays("stl10", "train", data_dir=str(tmp_path))
    xu, yu = data.load_arrays("stl10", "unlabelled", data_dir=str(tmp_path))
    x, y = data.load_arrays("stl10", "train+unlabelled", data_dir=str(tmp_path))
  assert xtr.shape == (12, 96, 96, 3) and np.all((ytr >= 0) & (ytr < 10))
  assert np.all(yu == data.UNLABELLED) and data.UNLABELLED == -1
  assert x.shape == (24, 96, 96, 3)
  np.testing.assert_array_equal(x, np.concatenate([xtr, xu]))
  np.testing.assert_array_equal(y, np.concatenate([ytr, yu]))


def test_cifar10_batches_are_sharded_deterministic_and_resumable(tfds, tmp_path, mesh):
  n_dev = len(mesh.devices.flat)
  b = 2 * n_dev
  with tfds.testing.mock_data(num_examples=5 * b + 3):
    kw = dict(global_batch_size=b, mesh=mesh, seed=7, data_dir=str(tmp_path))
    it = data.BatchIterator("cifar10", "train", **kw)
    assert it.steps_per_epoch == 5 and it.num_examples == 5 * b + 3
    batches = [next(it) for _ in range(12)]
    assert it.step == 12 and it.epoch == 2
    first = batches[0]
    assert first["image"].shape == (b, 32, 32, 3) and first["image"].dtype == np.uint8
    assert first["label"].dtype == np.int32
    assert first["image"].sharding.spec == jax.sharding.PartitionSpec("data")
    assert len(first["image"].addressable_shards) == n_dev
    imgs = [np.asarray(bt["image"]) for bt in batches]
    # The batches are the epoch permutations of the split's examples.
    x, _ = data.load_arrays("cifar10", "train", data_dir=str(tmp_path))
    for j in (0, 4, 5, 11):
      e, p = divmod(j, 5)
      np.testing.assert_array_equal(imgs[j], x[data.epoch_permutation(len(x), 7, e)[p * b:(p + 1) * b]])
    # Within an epoch no example repeats; epochs are ordered differently.
    ep0 = np.concatenate(imgs[:5])
    assert len(as_set(ep0)) == 5 * b
    assert not np.array_equal(np.concatenate(imgs[5:10]), ep0)
    # Same seed -> same stream; another seed -> another order.
    again = data.BatchIterator("cifar10", "train", **kw)
    np.testing.assert_array_equal(np.asarray(next(again)["image"]), imgs[0])
    other = data.BatchIterator("cifar10", "train", **{**kw, "seed": 8})
    assert not np.array_equal(np.asarray(next(other)["image"]), imgs[0])
    # Resuming at any step continues exactly (across the epoch boundary too).
    for k in (3, 5, 7):
      res = data.BatchIterator("cifar10", "train", start_step=k, **kw)
      for j in range(k, 12):
        bt = next(res)
        np.testing.assert_array_equal(np.asarray(bt["image"]), imgs[j])
        np.testing.assert_array_equal(np.asarray(bt["label"]), np.asarray(batches[j]["label"]))
    # make_train_iterator: the train split, same stream.
    mt = data.make_train_iterator("cifar10", **kw)
    np.testing.assert_array_equal(np.asarray(next(mt)["image"]), imgs[0])


def test_make_train_iterator_builds_the_package_batch_iterator(monkeypatch, tmp_path, tiny_counts, mesh):
  """Replacing jaxssl.data.BatchIterator (as tests/test_faults.py does) reaches make_train_iterator."""
  idx = tmp_path / "idx"
  idx.mkdir()
  tiny_fmnist(idx)

  class Marked(data.BatchIterator):
    pass
  monkeypatch.setattr(data, "BatchIterator", Marked)
  it = data.make_train_iterator("fashion_mnist", global_batch_size=len(mesh.devices.flat), mesh=mesh, seed=0,
                                data_dir=str(tmp_path / "data"), idx_dir=str(idx))
  assert type(it) is Marked and it.split == "train"


def test_no_drop_remainder_pads_and_masks(tfds, tmp_path, mesh):
  b = 2 * len(mesh.devices.flat)
  with tfds.testing.mock_data(num_examples=b + 3):
    it = data.BatchIterator("cifar10", "test", global_batch_size=b, mesh=mesh, seed=0, shuffle=False,
                            drop_remainder=False, data_dir=str(tmp_path))
    x, _ = data.load_arrays("cifar10", "test", data_dir=str(tmp_path))
    assert it.steps_per_epoch == 2
    b0, b1 = next(it), next(it)
  assert np.asarray(b0["mask"]).all()
  np.testing.assert_array_equal(np.asarray(b0["image"]), x[:b])
  m = np.asarray(b1["mask"])
  assert m.sum() == 3 and m[:3].all()
  np.testing.assert_array_equal(np.asarray(b1["image"])[:3], x[b:])
  np.testing.assert_array_equal(np.asarray(b1["image"])[3:], x[:b - 3])    # wrapped around


def test_batch_errors(tfds, tmp_path, mesh):
  n_dev = len(mesh.devices.flat)
  with pytest.raises(ConfigError, match=f"not divisible by the {n_dev} devices"):
    data.BatchIterator("cifar10", "train", global_batch_size=n_dev + 1, mesh=mesh, seed=0, data_dir=str(tmp_path))
  with pytest.raises(ConfigError, match="start_step must be >= 0"):
    data.BatchIterator("cifar10", "train", global_batch_size=n_dev, mesh=mesh, seed=0, start_step=-1,
                       data_dir=str(tmp_path))
  with tfds.testing.mock_data(num_examples=5):
    with pytest.raises(DataError, match="larger than cifar10/train"):
      data.BatchIterator("cifar10", "train", global_batch_size=n_dev * 2, mesh=mesh, seed=0,
                         data_dir=str(tmp_path))


def test_process_slices_partition_the_global_batch():
  for count in (1, 2, 4):
    rows = [data.process_slice(16, p, count) for p in range(count)]
    idx = np.concatenate([np.arange(16)[r] for r in rows])
    np.testing.assert_array_equal(idx, np.arange(16))
  with pytest.raises(ConfigError, match="processes"):
    data.process_slice(10, 0, 4)


def test_epoch_permutation_depends_only_on_seed_and_epoch():
  a = data.epoch_permutation(100, 3, 5)
  np.testing.assert_array_equal(a, data.epoch_permutation(100, 3, 5))
  assert sorted(a.tolist()) == list(range(100))
  assert not np.array_equal(a, data.epoch_permutation(100, 3, 6))
  assert not np.array_equal(a, data.epoch_permutation(100, 4, 5))
  np.testing.assert_array_equal(data.epoch_permutation(10, 3, 5, shuffle=False), np.arange(10))
  # Pinned values: a NumPy upgrade that changed the stream would break resumption.
  assert data.epoch_permutation(10, 0, 0).tolist() == [4, 6, 2, 7, 3, 5, 9, 0, 8, 1]
  assert (data.epoch_seed(0, 0), data.epoch_seed(0, 1)) == (821328062, 1817441348)


def test_imagenet_streaming_through_tfds_mock(tfds, tmp_path, mesh):
  b = len(mesh.devices.flat)
  with tfds.testing.mock_data(num_examples=4 * b):
    kw = dict(global_batch_size=b, mesh=mesh, seed=1, data_dir=str(tmp_path), shuffle_buffer=64)
    it = data.BatchIterator("imagenet2012", "train", **kw)
    assert it.steps_per_epoch == 4
    batches = [it.next_local() for _ in range(6)]
    s = data.IMAGENET_IMAGE_SIZE
    assert batches[0]["image"].shape == (b, s, s, 3) and batches[0]["image"].dtype == np.uint8
    assert batches[0]["label"].dtype == np.int32
    assert len(as_set(np.concatenate([x["image"] for x in batches[:4]]))) == 4 * b
    res = data.BatchIterator("imagenet2012", "train", start_step=5, **kw)
    np.testing.assert_array_equal(res.next_local()["image"], batches[5]["image"])
    res = data.BatchIterator("imagenet2012", "train", start_step=2, **kw)
    np.testing.assert_array_equal(res.next_local()["label"], batches[2]["label"])
    g = next(res)
    assert g["image"].shape == (b, s, s, 3) and g["image"].sharding.spec == jax.sharding.PartitionSpec("data")
    xv, yv = data.load_arrays("imagenet2012", "validation[:8]", data_dir=str(tmp_path))
    assert xv.shape[1:] == (s, s, 3)
  with pytest.raises(ConfigError, match="drop_remainder"):
    data.BatchIterator("imagenet2012", "train", drop_remainder=False, **kw)


def test_imagenet_too_big_for_memory(tmp_path):
  with pytest.raises(DataError, match="GiB in memory"):
    data.load_arrays("imagenet2012", "train", data_dir=str(tmp_path))


def test_fashion_mnist_iterator_on_tiny_prepared_data(tmp_path, tiny_counts, mesh):
  idx, dd = tmp_path / "idx", tmp_path / "data"
  idx.mkdir()
  arrays = tiny_fmnist(idx)
  b = len(mesh.devices.flat)
  it = data.make_train_iterator("fashion_mnist", global_batch_size=b, mesh=mesh, seed=0,
                                data_dir=str(dd), idx_dir=str(idx))
  assert it.steps_per_epoch == 40 // b
  seen = np.concatenate([np.asarray(next(it)["image"]) for _ in range(it.steps_per_epoch)])
  # Epoch 0 is the (seed 0, epoch 0) permutation of the split in tfds' record order.
  want = expected(arrays, "train")[0][data.epoch_permutation(40, 0, 0)[:len(seen)]]
  np.testing.assert_array_equal(seen, want)
  assert len(seen) == 40 and as_set(seen) == as_set(arrays["train"][0][..., None])
  res = data.make_train_iterator("fashion_mnist", global_batch_size=b, mesh=mesh, seed=0, start_step=2,
                                 data_dir=str(dd), idx_dir=str(idx))
  np.testing.assert_array_equal(np.asarray(next(res)["image"]), seen[2 * b:3 * b])
