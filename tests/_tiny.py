"""Tiny configs and batches for engine tests: compile time on CPU dominates, so models are
a 2-layer ConvNet with 4/8 channels, 8-d embeddings and batches of 16 images."""
from __future__ import annotations

import gzip
import os
import struct

import numpy as np

from jaxssl import config as config_lib
from jaxssl import data

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "experiments", "configs")


def tiny_config(method: str = "simclr", *, steps: int = 4, batch_size: int = 16, **overrides):
  """The method's Fashion-MNIST config, shrunk to a model that compiles in seconds."""
  cfg = config_lib.load_config(os.path.join(CONFIG_DIR, f"{method}.py"))
  config_lib.shrink_to_tiny_model(cfg)
  cfg.data.batch_size = batch_size
  cfg.train.num_steps = steps
  cfg.train.log_every = 2
  cfg.train.checkpoint_every = 2
  cfg.optim.warmup_steps = 1
  cfg.eval.at_end = False
  for k, v in overrides.items():
    config_lib.set_field(cfg, k, v)
  config_lib.validate_config(cfg)
  return cfg


def random_batch(batch_size: int = 16, shape=(28, 28, 1), num_classes: int = 10, seed: int = 0):
  rng = np.random.default_rng(seed)
  return {"image": rng.integers(0, 256, (batch_size,) + tuple(shape), dtype=np.uint8),
          "label": rng.integers(0, num_classes, (batch_size,)).astype(np.int32)}


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
