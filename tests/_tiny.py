"""Tiny configs and batches for engine tests: compile time on CPU dominates, so models are
a 2-layer ConvNet with 4/8 channels, 8-d embeddings and batches of 16 images."""
from __future__ import annotations

import os

import numpy as np

from jaxssl import config as config_lib

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
