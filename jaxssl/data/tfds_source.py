"""CIFAR-10/100, STL-10 and ImageNet through tensorflow-datasets (an optional dependency).

TensorFlow and tensorflow_datasets are imported lazily, inside the functions here, and
only when one of these datasets is read; without them the error says
`pip install 'jaxssl[tfds]'`. TensorFlow is kept off any GPU.

* `read_split`: one split (tfds syntax, e.g. "train[:10%]") in host memory. Images are
  read undecoded and decoded with tf.image (PNG/JPEG, checked to the dataset's shape);
  ImageNet's to the centre square at IMAGENET_IMAGE_SIZE.
* `StreamSource`: ImageNet with tf.data, each process reading its own shard of the split
  (`tfds.split_for_jax_process`), one deterministic pipeline per epoch.
* `prepare_builder`: the tfds builder, downloaded/prepared on first use; offline and
  ImageNet's manual download give a DataError with instructions.
"""
from __future__ import annotations

import os
import socket
from typing import Any, Iterator

import numpy as np

from jaxssl.data.info import DatasetInfo, dataset_info
from jaxssl.errors import DataError

_INSTALL_HINT = "pip install 'jaxssl[tfds]'"


def tfds_module() -> Any:
  """Imports tensorflow_datasets (and TensorFlow) lazily, keeping TF off any GPU."""
  try:
    import tensorflow as tf
    import tensorflow_datasets as tfds
  except ImportError as e:
    raise DataError(f"reading CIFAR-10/100, STL-10 or ImageNet needs the optional dependencies "
                    f"tensorflow-datasets and tensorflow-cpu ({e}); install them with "
                    f"`{_INSTALL_HINT}`. (Fashion-MNIST needs neither.)") from None
  try:
    tf.config.set_visible_devices([], "GPU")
  except (RuntimeError, ValueError):   # already initialised
    pass
  return tfds


def tf_module() -> Any:
  """TensorFlow, imported as `tfds_module` does."""
  tfds_module()
  import tensorflow as tf
  return tf


def cache_token() -> int:
  """Identifies tfds' current reader, for in-memory cache keys: data mocked by
  tfds.testing.mock_data is never served outside its context (and vice versa)."""
  return id(tfds_module().core.DatasetBuilder.as_dataset)


# ----------------------------------------------------------------------------- decoding

def decode_fixed(encoded: list[bytes], shape: tuple[int, int, int], what: str) -> np.ndarray:
  """Decodes same-shape PNG/JPEG images to uint8 [N, H, W, C] (DataError for another shape
  or an undecodable image)."""
  tf = tf_module()
  h, w, c = shape
  out = np.empty((len(encoded),) + tuple(shape), np.uint8)
  if not encoded:
    return out

  def dec(x):
    img = tf.io.decode_image(x, channels=c, expand_animations=False)
    img.set_shape([None, None, c])
    return img

  ds = tf.data.Dataset.from_tensor_slices(np.asarray(encoded, dtype=object))
  ds = ds.map(dec, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(1)
  try:
    for j, img in enumerate(ds.as_numpy_iterator()):
      if img.shape[1:] != (h, w, c):
        raise DataError(f"{what}: image {j} has shape {img.shape[1:]}, expected {shape}.")
      out[j] = img[0]
  except tf.errors.OpError as e:
    raise DataError(f"{what}: an image could not be decoded ({e.message.splitlines()[0]}). The "
                    "prepared files are corrupt: delete the dataset directory and prepare it again.") from None
  return out


def tf_center_square(tf: Any, encoded_or_image: Any, size: int) -> Any:
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


# ----------------------------------------------------------------------------- builders

# tfds fetches its files from these hosts; one short connect tells "offline" in seconds,
# where tfds itself retries for minutes.
DOWNLOAD_PROBE_HOSTS = (("storage.googleapis.com", 443), ("www.cs.toronto.edu", 443))
PROBE_TIMEOUT_S = 3.0


def can_download() -> bool:
  """Whether a download host answers within PROBE_TIMEOUT_S."""
  for host, port in DOWNLOAD_PROBE_HOSTS:
    try:
      with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
        return True
    except OSError:
      continue
  return False


def _directory_snapshot(root: str) -> set[str]:
  if not os.path.isdir(root):
    return set()
  return {dirpath for dirpath, _, _ in os.walk(root)}


def _remove_new_empty_dirs(root: str, before: set[str]) -> None:
  """Removes the empty directories under (and including) root that `before` did not have."""
  if not os.path.isdir(root):
    return
  for dirpath, _, _ in sorted(os.walk(root, topdown=False), key=lambda t: -len(t[0])):
    if dirpath not in before:
      try:
        os.rmdir(dirpath)        # only succeeds when empty: partial downloads are never deleted
      except OSError:
        pass


def _not_prepared_fix(name: str, data_dir: str) -> str:
  if name == "imagenet2012":
    return (f"ImageNet must be downloaded by hand: put ILSVRC2012_img_train.tar and "
            f"ILSVRC2012_img_val.tar in {os.path.join(data_dir, 'downloads', 'manual')} and run again "
            "(see https://www.tensorflow.org/datasets/catalog/imagenet2012).")
  return (f"tfds downloads {name} on first use, which needs internet. Prepare it where there is "
          f"internet (`tfds build {name} --data_dir DIR`) and copy DIR/{name} into {data_dir}, or "
          "point config.data.data_dir / $JAXSSL_DATA_DIR at a directory that has it.")


def prepare_builder(name: str, data_dir: str) -> Any:
  """tfds builder of `name` in data_dir, prepared (downloaded) if needed.

  Raises DataError with instructions, within seconds, when that is impossible: offline
  (no download host answers) or ImageNet's manual download missing. Directories that the
  attempt created and left empty are removed, so a failed start leaves nothing behind.
  """
  tfds = tfds_module()
  before = _directory_snapshot(data_dir)
  try:
    try:
      builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # noqa: BLE001 - tfds raises many types here
      raise DataError(f"tfds cannot build dataset {name!r} in {data_dir}: {type(e).__name__}: {e}") from None
    if builder.is_prepared():
      return builder
    # Under tfds.testing.mock_data, download_and_prepare is a no-op: nothing to download.
    mocked = "mock" in getattr(type(builder).download_and_prepare, "__qualname__", "")
    if name != "imagenet2012" and not mocked and not can_download():
      hosts = ", ".join(h for h, _ in DOWNLOAD_PROBE_HOSTS)
      raise DataError(f"dataset {name!r} is not prepared in {data_dir} and this machine is offline "
                      f"(none of {hosts} answered in {PROBE_TIMEOUT_S:g} s). {_not_prepared_fix(name, data_dir)}")
    try:
      builder.download_and_prepare()
    except Exception as e:  # noqa: BLE001
      msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise DataError(f"dataset {name!r} is not prepared in {data_dir} and preparing it failed "
                      f"({type(e).__name__}: {msg}). {_not_prepared_fix(name, data_dir)}") from None
    return builder
  except DataError:
    _remove_new_empty_dirs(data_dir, before)
    raise


def _corrupt_message(what: str, data_dir: str, name: str, e: Any) -> str:
  return (f"reading {what} failed: {e.message.splitlines()[0]}. The prepared files are corrupt or "
          f"incomplete: delete {os.path.join(data_dir, name)} and prepare the dataset again.")


def read_split(name: str, split: str, data_dir: str, info: DatasetInfo) -> tuple[np.ndarray, np.ndarray]:
  """One split (no '+'; slices in tfds syntax) of a tfds dataset, in record order:
  (uint8 [N, H, W, C], int32 [N])."""
  tfds = tfds_module()
  tf = tf_module()
  builder = prepare_builder(name, data_dir)
  what = f"{name}/{split} in {data_dir}"
  try:
    ds = builder.as_dataset(split=split, shuffle_files=False,
                            decoders={"image": tfds.decode.SkipDecoding()},
                            read_config=tfds.ReadConfig(try_autocache=False))
  except Exception as e:  # noqa: BLE001
    raise DataError(f"cannot open {what}: {type(e).__name__}: {e}") from None
  if info.streaming:
    size = info.image_shape[0]
    ds = ds.map(lambda ex: (tf_center_square(tf, ex["image"], size), tf.cast(ex["label"], tf.int32)),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  else:
    ds = ds.map(lambda ex: (ex["image"], tf.cast(ex["label"], tf.int32)))
  images, labels = [], []
  try:
    for img, lab in ds.batch(4096).as_numpy_iterator():
      images.append(img)
      labels.append(lab)
  except tf.errors.OpError as e:
    raise DataError(_corrupt_message(what, data_dir, name, e)) from None
  if not labels:
    raise DataError(f"{what} is empty.")
  labels = np.concatenate(labels).astype(np.int32)
  if info.streaming:
    images = np.concatenate(images)
  else:
    images = decode_fixed([b for chunk in images for b in chunk], info.image_shape, what)
  return images, labels


# ----------------------------------------------------------------------------- streaming

class StreamSource:
  """tf.data reader of one process's shard of a (large) split, one pipeline per epoch.

  `epoch_iterator(shuffle_seed)` reads the shard with its files shuffled by shuffle_seed
  and a shuffle buffer seeded by it too (the caller derives it from (seed, epoch)), so an
  epoch's order depends only on (shuffle_seed, number of processes).
  """

  def __init__(self, name: str, split: str, data_dir: str, local_batch: int, shuffle: bool,
               process_index: int, process_count: int, shuffle_buffer: int):
    tfds = tfds_module()
    self.name, self.split, self.data_dir = name, split, data_dir
    self.local_batch, self.shuffle = local_batch, shuffle
    self.shuffle_buffer = int(shuffle_buffer)
    self.image_size = dataset_info(name).image_shape[0]
    self.builder = prepare_builder(name, data_dir)
    self.proc_split = tfds.split_for_jax_process(split, process_index=process_index,
                                                 process_count=process_count, drop_remainder=True)
    ds = self._dataset(0)
    n = int(ds.cardinality())
    if n < 0:   # unknown cardinality: count once
      n = sum(1 for _ in ds)
    self.num_examples = n

  def _dataset(self, shuffle_seed: int) -> Any:
    tfds = tfds_module()
    try:
      return self.builder.as_dataset(
          split=self.proc_split, shuffle_files=self.shuffle,
          decoders={"image": tfds.decode.SkipDecoding()},
          read_config=tfds.ReadConfig(shuffle_seed=shuffle_seed, try_autocache=False,
                                      shuffle_reshuffle_each_iteration=False))
    except Exception as e:  # noqa: BLE001
      raise DataError(f"cannot open {self.name}/{self.split} in {self.data_dir}: {type(e).__name__}: {e}") from None

  def epoch_iterator(self, shuffle_seed: int, skip_batches: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """Local batches {"image": uint8 [b, S, S, 3], "label": int32 [b]} of one epoch, from
    batch `skip_batches` on."""
    tf = tf_module()
    ds = self._dataset(shuffle_seed)
    if self.shuffle:
      ds = ds.shuffle(self.shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=False)
    if skip_batches:
      ds = ds.skip(skip_batches * self.local_batch)   # before decoding: skipping is cheap
    size = self.image_size
    ds = ds.map(lambda ex: {"image": tf_center_square(tf, ex["image"], size),
                            "label": tf.cast(ex["label"], tf.int32)},
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(self.local_batch, drop_remainder=True).prefetch(2)
    what = f"{self.name}/{self.split} in {self.data_dir}"
    op_error = tf.errors.OpError

    def gen() -> Iterator[dict[str, np.ndarray]]:
      it = ds.as_numpy_iterator()
      while True:
        try:
          item = next(it)
        except StopIteration:
          return
        except op_error as e:
          raise DataError(_corrupt_message(what, self.data_dir, self.name, e)) from None
        yield item

    return gen()


__all__ = ["tfds_module", "tf_module", "cache_token", "decode_fixed", "tf_center_square", "prepare_builder", "can_download",
           "read_split", "StreamSource"]
