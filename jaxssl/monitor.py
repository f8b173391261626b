"""The kNN monitor: the weighted-kNN accuracy of the current backbone during training (solo-learn's
online kNN), every `config.eval.monitor_every` steps.

The neighbour bank is the first `config.eval.monitor_train_images` images of the dataset's
eval-train split, the queries the first `config.eval.monitor_test_images` of its test split;
both are loaded once. Each call embeds them with an `encode_fn` (the same one the final
evaluation gets: `jaxssl.run.encode_fn`, eval mode), takes the backbone features r, and runs
`jaxssl.evaluate.knn_accuracy` with `config.eval.knn_k`, `knn_temperature` and `knn_transform`. It reads the
state and draws no random numbers, so it leaves the training trajectory untouched.
"""
from __future__ import annotations

from typing import Any, Sequence

import ml_collections
import numpy as np

from jaxssl import data as data_lib
from jaxssl import evaluate as eval_lib


class KnnMonitor:
  """Weighted-kNN accuracy (percent) of an encoder on fixed slices of train (bank) and test (queries)."""

  def __init__(self, cfg: ml_collections.ConfigDict):
    ec = cfg.eval
    info = data_lib.dataset_info(cfg.data.name)
    kw = dict(data_dir=cfg.data.data_dir, idx_dir=cfg.data.idx_dir)
    train_split, test_split = data_lib.eval_splits(cfg)
    xtr, ytr = data_lib.load_arrays(cfg.data.name, train_split, **kw)
    xte, yte = data_lib.load_arrays(cfg.data.name, test_split, **kw)
    n_bank, n_query = int(ec.monitor_train_images), int(ec.monitor_test_images)
    # One image array, bank first, so each call is one pass of feature extraction.
    self.images = np.concatenate([xtr[:n_bank], xte[:n_query]])     # [N_bank + N_query, H, W, C]
    self.num_bank = min(n_bank, len(xtr))
    self.bank_labels = np.asarray(ytr[:n_bank])                      # [N_bank]
    self.query_labels = np.asarray(yte[:n_query])                    # [N_query]
    self.ks = tuple(int(k) for k in ec.knn_k)
    self.temperature = float(ec.knn_temperature)
    self.transform = str(ec.get("knn_transform", "none"))
    self.num_classes = int(info.num_classes)
    self.batch_size = int(ec.batch_size)

  def __call__(self, encode_fn: eval_lib.EncodeFn) -> dict[str, float]:
    """{"monitor/knn_<k>": accuracy in percent} for each k of `config.eval.knn_k`.

    `encode_fn` maps float images [B, H, W, C] in [0, 1] to {"r": [B, F], ...}.
    """
    feats = eval_lib.extract_features(lambda x: encode_fn(x)["r"], self.images,
                                      batch_size=self.batch_size)                  # [N_bank + N_query, F]
    acc = eval_lib.knn_accuracy(feats[:self.num_bank], self.bank_labels, feats[self.num_bank:],
                                self.query_labels, ks=self.ks, temperature=self.temperature,
                                num_classes=self.num_classes, transform=self.transform)
    return {f"monitor/knn_{k}": 100.0 * float(v) for k, v in dict(acc).items()}


def monitor_records(monitor: KnnMonitor, encoders: Sequence[tuple[int | None, eval_lib.EncodeFn]],
                    step: int) -> list[dict[str, Any]]:
  """metrics.jsonl records of one monitor pass at `step` (the number of updates the state has had):
  one per (sweep member, or None for a single run; its encode_fn)."""
  return [{"step": int(step), "event": "monitor", **({} if member is None else {"member": member}),
           **monitor(fn)} for member, fn in encoders]
