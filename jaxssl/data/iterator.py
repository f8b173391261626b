"""Whole splits in memory (`load_arrays`) and deterministic, resumable, sharded batches.

Order and resumption: epoch e visits the examples in a permutation that depends only on
(seed, e). `BatchIterator(..., start_step=k)` yields exactly the batches that an
iterator started at 0 yields from its k-th on, so a checkpoint only stores the step.
Each process puts only its contiguous slice of every global batch on its devices
(`jax.make_array_from_process_local_data`).

Fashion-MNIST comes from its .npy cache (`jaxssl.data.fashion_mnist`, no TensorFlow);
CIFAR-10/100, STL-10 and ImageNet from tfds (`jaxssl.data.tfds_source`).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Iterator

import jax
import numpy as np

from jaxssl import parallel
from jaxssl.data import fashion_mnist as fmnist
from jaxssl.data import tfds_source
from jaxssl.data.info import (MAX_IN_MEMORY_BYTES, UNLABELLED, DatasetInfo, base_splits, dataset_info,
                              resolve_data_dir, slice_bounds, split_size)
from jaxssl.errors import ConfigError, DataError

# ----------------------------------------------------------------------------- whole splits

_CACHE: "OrderedDict[tuple, tuple[np.ndarray, np.ndarray]]" = OrderedDict()
_CACHE_SIZE = 4


def clear_cache() -> None:
  """Forgets the splits that load_arrays keeps in memory."""
  _CACHE.clear()


def check_labels(labels: np.ndarray, num_classes: int, what: str) -> None:
  """DataError unless every label is in [0, num_classes) (or UNLABELLED = -1)."""
  labels = np.asarray(labels)
  bad = (labels >= num_classes) | ((labels < 0) & (labels != UNLABELLED))
  if bad.any():
    i = int(np.argmax(bad))
    raise DataError(f"{what}: label {int(labels[i])} at index {i} is outside [0, {num_classes}) "
                    f"({int(bad.sum())} such labels); the dataset does not match its {num_classes}-class "
                    "definition. Check the data files or config.data.name.")


def _fashion_mnist_part(part: str, data_dir: str | None, idx_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
  """One part of a Fashion-MNIST split expression, sliced as tfds slices it."""
  base = part.split("[", 1)[0].strip()
  images, labels = fmnist.load_fashion_mnist(base, data_dir=data_dir, idx_dir=idx_dir)
  _, start, stop = slice_bounds(part, len(labels))
  return images[start:stop], labels[start:stop]


def _tfds_part(name: str, part: str, data_dir: str, info: DatasetInfo) -> tuple[np.ndarray, np.ndarray]:
  images, labels = tfds_source.read_split(name, part, data_dir, info)
  if part.split("[", 1)[0].strip() == "unlabelled":
    labels = np.full_like(labels, UNLABELLED)
  return images, labels


def load_arrays(name: str, split: str, *, data_dir: str | None = None,
                idx_dir: str | None = None) -> tuple[np.ndarray, np.ndarray]:
  """A whole split in host memory: (uint8 [N, H, W, C], int32 [N]).

  For the small datasets and for evaluation. Splits may be combined and sliced with tfds
  syntax ("train+unlabelled", "train[:10%]"). Fashion-MNIST is read from its .npy cache
  (prepared from the IDX files on first use, in the example order of earlier jaxssl
  versions, see `tfds_record_order`); the others through tfds. STL-10's unlabelled
  examples get label -1. ImageNet images are decoded to the centre square at
  IMAGENET_IMAGE_SIZE; whole ImageNet splits larger than ~48 GB are refused (slice them,
  or use BatchIterator). The result is cached in memory (a few splits) and must not be
  modified.
  """
  info = dataset_info(name)
  parts = base_splits(info, split)
  size = split_size(info, split)
  if size is not None and size * int(np.prod(info.image_shape)) > MAX_IN_MEMORY_BYTES:
    raise DataError(f"{name}/{split} would take {size * np.prod(info.image_shape) / 2**30:.0f} GiB in memory; "
                    f"use BatchIterator (which streams {name}) or a slice such as '{parts[0]}[:5%]'.")
  if name == "fashion_mnist":
    where = fmnist.fashion_mnist_cache_dir(data_dir)
    key: tuple = (name, split, where)
  else:
    where = resolve_data_dir(data_dir)
    key = (name, split, where, tfds_source.cache_token())
  if key in _CACHE:
    _CACHE.move_to_end(key)
    return _CACHE[key]
  if name == "fashion_mnist":
    read = [_fashion_mnist_part(p, data_dir, idx_dir) for p in parts]
  else:
    read = [_tfds_part(name, p, where, info) for p in parts]
  images = read[0][0] if len(read) == 1 else np.concatenate([x for x, _ in read])
  labels = read[0][1] if len(read) == 1 else np.concatenate([y for _, y in read])
  if not len(labels):
    raise DataError(f"{name}/{split} in {where} is empty.")
  check_labels(labels, info.num_classes, f"{name}/{split} in {where}")
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
    base_splits(self.info, split)
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
    self._perm_epoch: int | None = None
    self._perm: np.ndarray | None = None
    self._stream: Iterator[dict[str, np.ndarray]] | None = None
    self._stream_epoch: int | None = None
    if self.info.streaming:
      if not self.drop_remainder:
        raise ConfigError(f"{name} is streamed and needs drop_remainder=True; evaluate on a "
                          "load_arrays() slice instead.")
      self._source = tfds_source.StreamSource(name, split, resolve_data_dir(data_dir), self.local_batch_size,
                                              self.shuffle, self.process_index, self.process_count,
                                              shuffle_buffer)
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
        self._stream = self._source.epoch_iterator(epoch_seed(self.seed, epoch), skip_batches=pos)
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
                        iterator_cls: type[BatchIterator] = BatchIterator, **kwargs: Any) -> BatchIterator:
  """`iterator_cls` (BatchIterator) over the dataset's training split (shuffled, drop_remainder)."""
  info = dataset_info(name)
  return iterator_cls(name, info.train_split, global_batch_size=global_batch_size, mesh=mesh, seed=seed,
                      start_step=start_step, data_dir=data_dir, idx_dir=idx_dir, **kwargs)


__all__ = ["clear_cache", "check_labels", "load_arrays", "epoch_seed", "epoch_permutation", "process_slice",
           "BatchIterator", "make_train_iterator"]
