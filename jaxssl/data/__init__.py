"""Datasets: offline Fashion-MNIST as plain arrays, the others through tensorflow-datasets,
and per-host sharded batches.

    it = BatchIterator("cifar10", "train", global_batch_size=256, mesh=mesh, seed=0)
    batch = next(it)   # {"image": uint8 [256, 32, 32, 3], "label": int32 [256]}, global
                       # jax.Arrays sharded over the mesh axis "data"

Datasets (`KNOWN_DATASETS`): fashion_mnist, cifar10, cifar100, stl10 and imagenet2012,
all kept in one data dir (`data_dir`, else $JAXSSL_DATA_DIR, else $TFDS_DATA_DIR, else
~/tensorflow_datasets).

* Fashion-MNIST needs no internet and no TensorFlow (`jaxssl.data.fashion_mnist`):
  `prepare_fashion_mnist` reads the four IDX `.gz` files (from `idx_dir`, else
  $JAXSSL_FMNIST_DIR, else the data dir if it holds them, else Debian's
  /usr/share/datasets/fashion-mnist), checks them (magic numbers, sizes, 60 000 / 10 000
  examples, 6 000 per class in train) and writes them once as uint8 .npy arrays to
  <data_dir>/fashion_mnist_npy, in the example order of earlier, tfds-based jaxssl
  versions (`tfds_record_order`), so results are reproducible bit for bit.
* The others are read with tfds, an optional dependency (`pip install 'jaxssl[tfds]'`),
  which prepares them itself (download on first use; ImageNet needs the manually
  downloaded tar files, see the tfds catalogue). `import jaxssl.data` never imports
  TensorFlow.
* STL-10 splits: "train" (5 000 labelled), "test", "unlabelled" (100 000) and
  "train+unlabelled" (the default pre-training split; evaluation trains on
  `DatasetInfo.eval_train_split`, "train"). Unlabelled examples have label -1.
* ImageNet is streamed with tf.data (each process reads its own shard of the files) and
  decoded on the host to a fixed IMAGENET_IMAGE_SIZE square (centre square crop of the
  image, resized; = resize shorter side + centre crop), so batches are uniform uint8;
  random resized crops etc. are done on device (`jaxssl.augment`).

Order and resumption: epoch e visits the examples in a permutation that depends only on
(seed, e); `BatchIterator(..., start_step=k)` continues exactly where an iterator started
at 0 was after k batches (`jaxssl.data.iterator`).

Modules: `info` (registry, split expressions, data dir) <- `fashion_mnist`, `tfds_source`
<- `iterator` <- this package.
"""
from __future__ import annotations

from typing import Any

import jax

from jaxssl.data import iterator as _iterator
from jaxssl.data.fashion_mnist import (CACHE_DIRNAME, DEFAULT_FMNIST_DIR, FMNIST_COUNTS, FMNIST_FILES,
                                       FMNIST_VERSION, IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC,
                                       fashion_mnist_cache_dir, load_fashion_mnist, prepare_fashion_mnist,
                                       read_fashion_mnist_idx, read_idx, resolve_idx_dir, tfds_record_order,
                                       write_atomic)
from jaxssl.data.info import (IMAGENET_IMAGE_SIZE, KNOWN_DATASETS, UNLABELLED, DatasetInfo, dataset_info,
                              eval_splits, resolve_data_dir)
from jaxssl.data.iterator import (BatchIterator, check_labels, clear_cache, epoch_permutation, epoch_seed,
                                  load_arrays, process_slice)


def make_train_iterator(name: str, *, global_batch_size: int, mesh: jax.sharding.Mesh, seed: int,
                        start_step: int = 0, data_dir: str | None = None, idx_dir: str | None = None,
                        **kwargs: Any) -> BatchIterator:
  """BatchIterator over the dataset's training split (shuffled, drop_remainder).

  Builds this package's `BatchIterator` attribute, looked up at call time, so code that
  replaces `jaxssl.data.BatchIterator` (e.g. a test that wraps it) reaches the callers
  of make_train_iterator too.
  """
  return _iterator.make_train_iterator(name, global_batch_size=global_batch_size, mesh=mesh, seed=seed,
                                       start_step=start_step, data_dir=data_dir, idx_dir=idx_dir,
                                       iterator_cls=BatchIterator, **kwargs)


__all__ = ["KNOWN_DATASETS", "DatasetInfo", "dataset_info", "eval_splits", "prepare_fashion_mnist", "load_arrays",
           "BatchIterator", "make_train_iterator", "read_idx", "read_fashion_mnist_idx", "resolve_data_dir",
           "resolve_idx_dir", "epoch_permutation", "epoch_seed", "process_slice", "clear_cache",
           "IMAGENET_IMAGE_SIZE", "UNLABELLED", "check_labels", "tfds_record_order", "load_fashion_mnist",
           "fashion_mnist_cache_dir", "DEFAULT_FMNIST_DIR", "FMNIST_FILES", "FMNIST_COUNTS", "FMNIST_VERSION",
           "IDX_IMAGES_MAGIC", "IDX_LABELS_MAGIC", "CACHE_DIRNAME", "write_atomic"]
