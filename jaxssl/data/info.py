"""Static facts about the known datasets, split expressions and the data directory.

Nothing here reads a dataset or imports TensorFlow: `dataset_info` answers from a table,
`base_splits` / `split_size` / `slice_bounds` check and evaluate split expressions
("train", "train+unlabelled", "train[:10%]") with the semantics of tfds, and
`resolve_data_dir` says where datasets live.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import re

from jaxssl.errors import ConfigError, DataError

KNOWN_DATASETS: tuple[str, ...] = ("fashion_mnist", "cifar10", "cifar100", "stl10", "imagenet2012")

IMAGENET_IMAGE_SIZE = 256
UNLABELLED = -1                 # label of STL-10's unlabelled examples

# In-memory datasets larger than this are refused by load_arrays (stream them instead).
MAX_IN_MEMORY_BYTES = 48 * 2**30


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
  # The labelled split that evaluation (kNN, linear probe) trains on; differs from
  # train_split where pre-training also uses unlabelled data (STL-10).
  eval_train_split: str = "train"


_INFOS = {
    "fashion_mnist": DatasetInfo("fashion_mnist", 10, (28, 28, 1), "train", "test", 60_000, 10_000,
                                 ("train", "test"), False, (("train", 60_000), ("test", 10_000)), "train"),
    "cifar10": DatasetInfo("cifar10", 10, (32, 32, 3), "train", "test", 50_000, 10_000,
                           ("train", "test"), False, (("train", 50_000), ("test", 10_000)), "train"),
    "cifar100": DatasetInfo("cifar100", 100, (32, 32, 3), "train", "test", 50_000, 10_000,
                            ("train", "test"), False, (("train", 50_000), ("test", 10_000)), "train"),
    "stl10": DatasetInfo("stl10", 10, (96, 96, 3), "train+unlabelled", "test", 105_000, 8_000,
                         ("train", "test", "unlabelled"), False,
                         (("train", 5_000), ("test", 8_000), ("unlabelled", 100_000)), "train"),
    "imagenet2012": DatasetInfo("imagenet2012", 1000, (IMAGENET_IMAGE_SIZE, IMAGENET_IMAGE_SIZE, 3),
                                "train", "validation", 1_281_167, 50_000, ("train", "validation"), True,
                                (("train", 1_281_167), ("validation", 50_000)), "train"),
}


def dataset_info(name: str) -> DatasetInfo:
  """The `DatasetInfo` of a known dataset; ConfigError listing the known ones otherwise."""
  info = _INFOS.get(str(name))
  if info is None:
    close = difflib.get_close_matches(str(name).lower().replace("-", "_"), KNOWN_DATASETS, n=1, cutoff=0.6)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"unknown dataset {name!r}.{hint} Known datasets: {', '.join(KNOWN_DATASETS)}.")
  return info


# The feature transforms of the weighted-kNN evaluation (`jaxssl.evaluate.knn_transform`), here
# beside the evaluation splits so that config validation needs no import of the evaluator.
KNN_TRANSFORMS = ("none", "centre", "standardise")


def eval_splits(cfg) -> tuple[str, str]:
  """(train split, test split) of the evaluation: `config.eval.train_split` / `test_split`,
  or the dataset's labelled training split and its test split where they are None (a config
  saved before the fields existed has neither). A held-out part of the training split, e.g.
  ("train[:50000]", "train[50000:]"), chooses settings without reading the test set."""
  info = dataset_info(cfg.data.name)
  ec = cfg.eval
  train = ec.get("train_split", None) or info.eval_train_split
  test = ec.get("test_split", None) or info.test_split
  return str(train), str(test)


# ----------------------------------------------------------------------------- split expressions

def base_splits(info: DatasetInfo, split: str) -> list[str]:
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


def split_size(info: DatasetInfo, split: str) -> int | None:
  """Examples in a split expression without slices; None when it has a slice."""
  sizes = dict(info.split_sizes)
  total = 0
  for p in base_splits(info, split):
    if "[" in p:
      return None
    total += sizes[p]
  return total


_PART_RE = re.compile(r"^(?P<name>[\w-]+)(\[(?P<selector>[^\]]*)\])?$")
_BOUND_RE = re.compile(r"^(?P<val>-?[\d_.]+)?(?P<unit>%)?$")


def slice_bounds(part: str, num_examples: int) -> tuple[str, int, int]:
  """(base split, start, stop) of one part of a split expression, as tfds evaluates it.

  "train" -> ("train", 0, n); "train[10:20]", "train[-5:]" count examples; "train[:10%]"
  counts percent, rounded to the closest example (tfds' default rounding). For datasets
  that jaxssl reads without tfds (Fashion-MNIST), so slices select the same examples as
  they did through tfds. Raises DataError for a malformed or out-of-range slice.
  """
  m = _PART_RE.match(part.strip())
  if not m:
    raise DataError(f"unrecognised split {part!r}; write e.g. 'train', 'train[:1000]' or 'train[10%:]'.")
  name, selector = m.group("name"), m.group("selector")
  if selector is None:
    return name, 0, num_examples
  bounds = [_BOUND_RE.match(b.strip()) for b in selector.split(":")]
  if len(bounds) != 2 or not all(bounds) or not any(b.group("val") for b in bounds):
    raise DataError(f"unrecognised slice in split {part!r}; write e.g. 'train[:1000]', 'train[-500:]' "
                    "or 'train[10%:20%]'.")
  pct = any(b.group("unit") for b in bounds)
  out = []
  for b, default in zip(bounds, (0, num_examples)):
    val = b.group("val")
    try:
      if val is None:
        out.append(default)
      elif pct:
        out.append(int(round(float(val) * num_examples / 100.0)))
      else:
        out.append(int(val))
    except ValueError:
      raise DataError(f"unrecognised slice bound {val!r} in split {part!r}.") from None
  start, stop = out
  if abs(start) > num_examples or abs(stop) > num_examples:
    raise DataError(f"split {part!r}: slice [{start}:{stop}] is outside the {num_examples} examples of "
                    f"{name!r}.")
  start = start + num_examples if start < 0 else start
  stop = stop + num_examples if stop < 0 else stop
  return name, start, max(start, stop)


# ----------------------------------------------------------------------------- directories

def resolve_data_dir(data_dir: str | None = None) -> str:
  """data_dir, else $JAXSSL_DATA_DIR, else $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
  d = data_dir or os.environ.get("JAXSSL_DATA_DIR") or os.environ.get("TFDS_DATA_DIR") \
      or os.path.join("~", "tensorflow_datasets")
  return os.path.abspath(os.path.expanduser(str(d)))


__all__ = ["KNOWN_DATASETS", "IMAGENET_IMAGE_SIZE", "UNLABELLED", "MAX_IN_MEMORY_BYTES", "DatasetInfo",
           "dataset_info", "base_splits", "split_size", "slice_bounds", "resolve_data_dir"]
