"""An on-disk cache of the evaluation baselines (raw pixels, random-init encoder).

The baselines depend on the data, the network at initialisation and the evaluation settings,
never on training, so `jaxssl eval` and every run and sweep member with the same dataset,
model and seed share one computation. Entries are JSON files

    <data dir>/eval_baselines/<dataset>/<sha256 of the key>[:32].json   {"key": ..., "results": ...}

where the key (`baseline_key`) is everything that determines the numbers: the cache format
and jaxssl version, the dataset, its evaluation splits and a sha256 of their arrays, the seed,
the evaluation settings, and, for the random-init baseline, the method and config.model (the
network) and the augmentation of the label-free criteria. JSON keeps Python floats exactly,
so a cached number is the computed one.

An entry is written atomically (temporary file + os.replace); one that is unreadable, corrupt
or holds another key is recomputed and rewritten; a data dir that cannot be written is
warned about once and the baselines are computed without caching.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from typing import Any, Callable, Sequence

import jax
import ml_collections
import numpy as np

import jaxssl
from jaxssl import data as data_lib

CACHE_FORMAT = 1
CACHE_DIRNAME = "eval_baselines"
Results = dict[str, dict[str, float]]

_warned_unwritable: set[str] = set()   # cache dirs already warned about (once per process)


def _say(msg: str) -> None:
  if jax.process_index() == 0:
    print(f"jaxssl: {msg}", file=sys.stderr, flush=True)


def data_fingerprint(arrays: Sequence[np.ndarray]) -> str:
  """sha256 of the arrays' dtypes, shapes and bytes (the evaluation data's identity)."""
  h = hashlib.sha256()
  for a in arrays:
    a = np.ascontiguousarray(a)
    h.update(f"{a.dtype.str}{a.shape};".encode())
    h.update(a.data)
  return h.hexdigest()


def baseline_key(cfg: ml_collections.ConfigDict, arrays: Sequence[np.ndarray], *, random_init: bool,
                 view_cfgs: Sequence[Any] | None) -> dict[str, Any]:
  """What determines `evaluate.compute_baselines` for `cfg` on `arrays` (xtr, ytr, xte, yte).

  The random-init network is the one `jaxssl.run` builds: config.model and the method's heads
  (config.method) at `cfg.seed`; the label-free criteria add the augmentation `view_cfgs`.
  """
  ec = cfg.eval
  key: dict[str, Any] = {
      "format": CACHE_FORMAT, "jaxssl": jaxssl.__version__,
      "dataset": cfg.data.name, "splits": list(data_lib.eval_splits(cfg)),
      "data_sha256": data_fingerprint(arrays), "seed": int(cfg.seed),
      "eval": {"knn_k": [int(k) for k in ec.knn_k], "knn_temperature": float(ec.knn_temperature),
               "knn_transform": str(ec.get("knn_transform", "none")),
               "probe_epochs": int(ec.probe_epochs), "batch_size": int(ec.batch_size)},
      "random_init": None}
  if random_init:
    model = cfg.model.to_dict()
    model.setdefault("dtype", "float32")        # a config saved before the field existed
    key["random_init"] = {"method": cfg.method, "model": model, "views": None}
    if view_cfgs is not None:
      key["random_init"]["views"] = {"augment": repr(tuple(view_cfgs)), "lidar_images": int(ec.lidar_images),
                                     "lidar_views": int(ec.lidar_views)}
  return json.loads(json.dumps(key, sort_keys=True, default=repr))   # as it reads back from a file


def cache_path(cfg: ml_collections.ConfigDict, key: dict[str, Any]) -> str:
  """The entry of `key`: <data dir>/eval_baselines/<dataset>/<hash>.json."""
  digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
  return os.path.join(data_lib.resolve_data_dir(cfg.data.data_dir), CACHE_DIRNAME, cfg.data.name,
                      f"{digest}.json")


def _valid(results: Any) -> bool:
  return (isinstance(results, dict) and bool(results)
          and all(isinstance(r, dict) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                              for v in r.values()) for r in results.values()))


def load(path: str, key: dict[str, Any]) -> Results | None:
  """The results cached at `path` for `key`, or None (absent, unreadable, corrupt or another key)."""
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      entry = json.load(f)
    if entry["key"] == key and _valid(entry["results"]):
      return entry["results"]
    why = "it holds another key or no results"
  except (OSError, ValueError, KeyError, TypeError) as e:
    why = f"{type(e).__name__}: {e}"
  _say(f"the cached baselines {path} are unusable ({why}); computing them again.")
  return None


def store(path: str, key: dict[str, Any], results: Results) -> None:
  """Writes the entry atomically; a directory that cannot be written is warned about once."""
  if jax.process_index() != 0:
    return
  # Insertion order kept: cached results print and save in the order computed ones do.
  text = json.dumps({"key": key, "results": results}, indent=2).encode()
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data_lib.write_atomic(path, lambda f: f.write(text))
  except OSError as e:
    where = os.path.dirname(path)
    if where not in _warned_unwritable:
      _warned_unwritable.add(where)
      _say(f"warning: cannot write the baseline cache in {where} ({e.strerror or e}); the baselines are "
           "computed without caching.")


def cached_baselines(cfg: ml_collections.ConfigDict, key: dict[str, Any], compute: Callable[[], Results]) -> Results:
  """The cached results of `key`, else `compute()` (then cached)."""
  path = cache_path(cfg, key)
  results = load(path, key)
  if results is not None:
    if not os.environ.get("JAXSSL_QUIET"):
      _say(f"using the cached {' and '.join(results)} baselines from {path} (delete it to recompute).")
    return results
  results = {name: {k: float(v) for k, v in r.items()} for name, r in compute().items()}
  store(path, key, results)
  return results
