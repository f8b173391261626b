"""jaxssl.data: IDX checks, offline Fashion-MNIST as a tfds dataset, the real tfds code
paths (mocked with tfds.testing.mock_data) for CIFAR-10, STL-10 and ImageNet, and
deterministic, resumable, sharded batch iteration."""
import gzip
import os
import struct

import jax
import numpy as np
import pytest

from jaxssl import data, parallel
from jaxssl.errors import ConfigError, DataError

tfds = pytest.importorskip("tensorflow_datasets")

REAL_FMNIST = data.DEFAULT_FMNIST_DIR
HAVE_REAL = all(os.path.isfile(os.path.join(REAL_FMNIST, f)) for fs in data.FMNIST_FILES.values() for f in fs)
SKIP_REAL = pytest.mark.skipif(
    not HAVE_REAL, reason=f"Debian's Fashion-MNIST IDX files are not in {REAL_FMNIST} "
                          "(sudo apt-get install dataset-fashion-mnist)")


# ----------------------------------------------------------------------------- helpers

def write_idx(path, array, magic=None, gz=True, truncate=0, count=None):
  array = np.asarray(array, np.uint8)
  if magic is None:
    magic = data.IDX_IMAGES_MAGIC if array.ndim == 3 else data.IDX_LABELS_MAGIC
  dims = list(array.shape)
  if count is not None:
    dims[0] = count
  raw = struct.pack(">I", magic) + struct.pack(">" + "I" * len(dims), *dims) + array.tobytes()
  if truncate:
    raw = raw[:-truncate]
  opener = gzip.open if gz else open
  with opener(path, "wb") as f:
    f.write(raw)
  return path


def tiny_fmnist(dirpath, n_train=40, n_test=20, seed=0):
  """Synthetic IDX files in Fashion-MNIST's layout, balanced classes."""
  rng = np.random.RandomState(seed)
  arrays = {}
  for split, n in (("train", n_train), ("test", n_test)):
    images = rng.randint(0, 256, (n, 28, 28)).astype(np.uint8)
    labels = np.tile(np.arange(10), n // 10).astype(np.uint8)
    rng.shuffle(labels)
    img_name, lab_name = data.FMNIST_FILES[split]
    write_idx(os.path.join(dirpath, img_name), images)
    write_idx(os.path.join(dirpath, lab_name), labels)
    arrays[split] = (images, labels)
  return arrays


@pytest.fixture
def tiny_counts(monkeypatch):
  monkeypatch.setattr(data, "FMNIST_COUNTS", {"train": 40, "test": 20})
  data.clear_cache()
  yield
  data.clear_cache()


@pytest.fixture(scope="module")
def mesh():
  return parallel.make_mesh()


def as_set(images):
  return {img.tobytes() for img in np.asarray(images)}


# ----------------------------------------------------------------------------- info

def test_dataset_info_known_and_unknown():
  assert set(data.KNOWN_DATASETS) == {"fashion_mnist", "cifar10", "cifar100", "stl10", "imagenet2012"}
  fm = data.dataset_info("fashion_mnist")
  assert (fm.num_classes, fm.image_shape, fm.num_train, fm.num_test) == (10, (28, 28, 1), 60_000, 10_000)
  assert data.dataset_info("cifar100").num_classes == 100
  stl = data.dataset_info("stl10")
  assert stl.train_split == "train+unlabelled" and stl.num_train == 105_000
  assert data.dataset_info("imagenet2012").streaming
  with pytest.raises(ConfigError, match="Known datasets: fashion_mnist, cifar10") as e:
    data.dataset_info("fashion-mnist")
  assert "Did you mean 'fashion_mnist'" in str(e.value)
  with pytest.raises(ConfigError, match="unknown dataset 'svhn'"):
    data.dataset_info("svhn")


def test_data_dir_resolution(monkeypatch, tmp_path):
  monkeypatch.delenv("JAXSSL_DATA_DIR", raising=False)
  monkeypatch.delenv("TFDS_DATA_DIR", raising=False)
  assert data.resolve_data_dir() == os.path.expanduser("~/tensorflow_datasets")
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "a"))
  assert data.resolve_data_dir() == str(tmp_path / "a")
  monkeypatch.setenv("JAXSSL_DATA_DIR", str(tmp_path / "b"))
  assert data.resolve_data_dir() == str(tmp_path / "b")
  assert data.resolve_data_dir(str(tmp_path / "c")) == str(tmp_path / "c")
  monkeypatch.setenv("JAXSSL_FMNIST_DIR", str(tmp_path / "idx"))
  assert data.resolve_idx_dir() == str(tmp_path / "idx")
  monkeypatch.delenv("JAXSSL_FMNIST_DIR")
  assert data.resolve_idx_dir() == data.DEFAULT_FMNIST_DIR


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


def test_missing_idx_files_message(tmp_path):
  with pytest.raises(DataError) as e:
    data.read_fashion_mnist_idx(str(tmp_path))
  msg = str(e.value)
  assert "train-images-idx3-ubyte.gz" in msg and "apt-get install dataset-fashion-mnist" in msg
  assert "JAXSSL_FMNIST_DIR" in msg and "idx_dir" in msg


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


@SKIP_REAL
def test_real_fashion_mnist_idx_counts():
  arrays = data.read_fashion_mnist_idx(REAL_FMNIST)
  (xtr, ytr), (xte, yte) = arrays["train"], arrays["test"]
  assert xtr.shape == (60_000, 28, 28, 1) and xte.shape == (10_000, 28, 28, 1)
  assert np.all(np.bincount(ytr, minlength=10) == 6000)
  assert np.all(np.bincount(yte, minlength=10) == 1000)


# ----------------------------------------------------------------------------- tfds preparation

def test_png_encoder_round_trip():
  tf = data._tf()
  for shape in [(28, 28, 1), (5, 7, 3)]:
    img = np.random.RandomState(1).randint(0, 256, shape).astype(np.uint8)
    b = data._png_bytes(img)
    np.testing.assert_array_equal(tf.io.decode_png(b, channels=shape[-1]).numpy(), img)
    np.testing.assert_array_equal(data._png_unfiltered(b, shape), img)
  # A PNG with row filters (as TensorFlow writes) is left to the fallback decoder.
  img = np.tile(np.arange(32, dtype=np.uint8)[None, :, None], (32, 1, 3))
  b = tf.io.encode_png(img).numpy()
  assert data._png_unfiltered(b, img.shape) is None
  np.testing.assert_array_equal(data._decode_fixed([b, data._png_bytes(img)], img.shape, "t"), [img, img])


def test_prepare_tiny_fashion_mnist_is_a_tfds_dataset(tmp_path, tiny_counts):
  idx, dd = tmp_path / "idx", tmp_path / "tfds"
  idx.mkdir()
  arrays = tiny_fmnist(idx)
  assert data.prepare_fashion_mnist(str(idx), str(dd)) == str(dd)
  info_file = dd / "fashion_mnist" / data.FMNIST_VERSION / "dataset_info.json"
  assert info_file.is_file()
  # tfds' own builder reads what we wrote.
  ds = tfds.load("fashion_mnist", split="train", data_dir=str(dd), batch_size=-1)
  ex = tfds.as_numpy(ds)
  assert ex["image"].shape == (40, 28, 28, 1)
  assert as_set(ex["image"]) == as_set(arrays["train"][0][..., None])
  # Same pairs (image, label) as the IDX files, whatever the order.
  want = {(i.tobytes(), int(l)) for i, l in zip(arrays["train"][0][..., None], arrays["train"][1])}
  assert {(i.tobytes(), int(l)) for i, l in zip(ex["image"], ex["label"])} == want
  # load_arrays goes through tfds and returns uint8 / int32.
  x, y = data.load_arrays("fashion_mnist", "test", data_dir=str(dd), idx_dir=str(idx))
  assert x.dtype == np.uint8 and y.dtype == np.int32 and x.shape == (20, 28, 28, 1)
  assert {(i.tobytes(), int(l)) for i, l in zip(x, y)} == {
      (i.tobytes(), int(l)) for i, l in zip(arrays["test"][0][..., None], arrays["test"][1])}
  # Idempotent: the second call reuses the prepared files (even without the IDX files).
  mtime = info_file.stat().st_mtime_ns
  for f in idx.iterdir():
    f.unlink()
  assert data.prepare_fashion_mnist(str(idx), str(dd)) == str(dd)
  assert info_file.stat().st_mtime_ns == mtime


def test_prepare_uses_env_dirs(tmp_path, tiny_counts, monkeypatch):
  idx, dd = tmp_path / "idx", tmp_path / "tfds"
  idx.mkdir()
  tiny_fmnist(idx)
  monkeypatch.setenv("JAXSSL_FMNIST_DIR", str(idx))
  monkeypatch.setenv("JAXSSL_DATA_DIR", str(dd))
  x, y = data.load_arrays("fashion_mnist", "train")
  assert len(y) == 40 and (dd / "fashion_mnist").is_dir()


def test_prepared_dataset_with_wrong_counts_is_rejected(tmp_path, tiny_counts, monkeypatch):
  idx, dd = tmp_path / "idx", tmp_path / "tfds"
  idx.mkdir()
  tiny_fmnist(idx)
  data.prepare_fashion_mnist(str(idx), str(dd))
  monkeypatch.setattr(data, "FMNIST_COUNTS", {"train": 60_000, "test": 10_000})
  with pytest.raises(DataError, match="has 40 train examples, expected 60000.*Delete"):
    data.prepare_fashion_mnist(str(idx), str(dd))


def test_corrupt_prepared_files_give_data_error(tmp_path, tiny_counts):
  idx, dd = tmp_path / "idx", tmp_path / "tfds"
  idx.mkdir()
  tiny_fmnist(idx)
  data.prepare_fashion_mnist(str(idx), str(dd))
  shards = sorted((dd / "fashion_mnist" / data.FMNIST_VERSION).glob("*-train.tfrecord*"))
  assert shards
  raw = shards[0].read_bytes()
  shards[0].write_bytes(raw[:20] + b"\xff" * 64 + raw[84:])
  with pytest.raises(DataError, match="corrupt or incomplete: delete"):
    data.load_arrays("fashion_mnist", "train", data_dir=str(dd), idx_dir=str(idx))


def test_missing_idx_files_through_load_arrays(tmp_path):
  with pytest.raises(DataError, match="IDX files missing"):
    data.load_arrays("fashion_mnist", "train", data_dir=str(tmp_path / "tfds"), idx_dir=str(tmp_path))


def test_unknown_split_lists_splits(tmp_path):
  with pytest.raises(DataError, match="has no split 'validation'.*train, test"):
    data.load_arrays("cifar10", "validation", data_dir=str(tmp_path))
  with pytest.raises(ConfigError, match="Known datasets"):
    data.load_arrays("mnist", "train", data_dir=str(tmp_path))


def test_offline_download_failure_is_a_data_error(tmp_path, monkeypatch):
  def fail(self, *a, **k):
    raise ConnectionError("no internet")
  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", fail)
  with pytest.raises(DataError, match="not prepared in .* no internet.*tfds build cifar10"):
    data.load_arrays("cifar10", "train", data_dir=str(tmp_path))
  with pytest.raises(DataError, match="downloaded by hand.*downloads/manual"):
    data.BatchIterator("imagenet2012", "train", global_batch_size=8, mesh=parallel.make_mesh(), seed=0,
                       data_dir=str(tmp_path))


@SKIP_REAL
@pytest.mark.slow
def test_real_fashion_mnist_prepare_and_reload(tmp_path):
  dd = str(tmp_path / "tfds")
  data.prepare_fashion_mnist(REAL_FMNIST, dd)
  x, y = data.load_arrays("fashion_mnist", "train", data_dir=dd)
  assert x.shape == (60_000, 28, 28, 1) and np.all(np.bincount(y) == 6000)
  xt, yt = data.load_arrays("fashion_mnist", "test", data_dir=dd)
  assert xt.shape == (10_000, 28, 28, 1) and np.all(np.bincount(yt) == 1000)
  # The same images as the IDX files.
  ref = data.read_fashion_mnist_idx(REAL_FMNIST)["test"][0]
  assert as_set(xt) == as_set(ref)
  builder = tfds.builder("fashion_mnist", data_dir=dd)
  assert builder.info.splits["train"].num_examples == 60_000


# ----------------------------------------------------------------------------- mocked tfds

def test_cifar10_through_tfds_mock(tmp_path):
  with tfds.testing.mock_data(num_examples=24):
    x, y = data.load_arrays("cifar10", "train", data_dir=str(tmp_path))
    assert x.shape == (24, 32, 32, 3) and x.dtype == np.uint8
    assert y.dtype == np.int32 and y.min() >= 0 and y.max() < 10
    assert len(as_set(x)) == 24
    x2, _ = data.load_arrays("cifar10", "train", data_dir=str(tmp_path))
    assert x2 is x                                 # cached in memory
  x100 = None
  with tfds.testing.mock_data(num_examples=10):
    x100, y100 = data.load_arrays("cifar100", "test", data_dir=str(tmp_path))
  assert x100.shape == (10, 32, 32, 3) and y100.max() < 100


def test_stl10_unlabelled_convention(tmp_path):
  with tfds.testing.mock_data(num_examples=12):
    xtr, ytr = data.load_arrays("stl10", "train", data_dir=str(tmp_path))
    xu, yu = data.load_arrays("stl10", "unlabelled", data_dir=str(tmp_path))
    x, y = data.load_arrays("stl10", "train+unlabelled", data_dir=str(tmp_path))
  assert xtr.shape == (12, 96, 96, 3) and np.all((ytr >= 0) & (ytr < 10))
  assert np.all(yu == data.UNLABELLED) and data.UNLABELLED == -1
  assert x.shape == (24, 96, 96, 3)
  np.testing.assert_array_equal(y, np.concatenate([ytr, yu]))


def test_cifar10_batches_are_sharded_deterministic_and_resumable(tmp_path, mesh):
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


def test_no_drop_remainder_pads_and_masks(tmp_path, mesh):
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


def test_batch_errors(tmp_path, mesh):
  n_dev = len(mesh.devices.flat)
  with pytest.raises(ConfigError, match=f"not divisible by the {n_dev} devices"):
    data.BatchIterator("cifar10", "train", global_batch_size=n_dev + 1, mesh=mesh, seed=0, data_dir=str(tmp_path))
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


def test_imagenet_streaming_through_tfds_mock(tmp_path, mesh):
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
  idx, dd = tmp_path / "idx", tmp_path / "tfds"
  idx.mkdir()
  arrays = tiny_fmnist(idx)
  b = len(mesh.devices.flat)
  it = data.make_train_iterator("fashion_mnist", global_batch_size=b, mesh=mesh, seed=0,
                                data_dir=str(dd), idx_dir=str(idx))
  assert it.steps_per_epoch == 40 // b
  seen = np.concatenate([np.asarray(next(it)["image"]) for _ in range(it.steps_per_epoch)])
  assert seen.shape[1:] == (28, 28, 1)
  assert len(seen) == 40 and as_set(seen) == as_set(arrays["train"][0][..., None])
