"""The eval baselines' cache (jaxssl.eval_cache): a second evaluation reuses them exactly, any
change of what determines them misses, a corrupt entry is recomputed, an unwritable data dir
computes without caching."""
import json
import os

import jax
import numpy as np
import pytest

from jaxssl import config as config_lib, data, eval_cache, evaluate, run, state as state_lib
from jaxssl.data import fashion_mnist as fm
from _tiny import tiny_config, tiny_fmnist


@pytest.fixture
def cfg(tmp_path, monkeypatch):
  """The tiny SimCLR config on a fake 40 + 20 image Fashion-MNIST whose data dir is tmp_path/data."""
  monkeypatch.setattr(fm, "FMNIST_COUNTS", {"train": 40, "test": 20})
  monkeypatch.setattr(eval_cache, "_warned_unwritable", set())
  data.clear_cache()
  (tmp_path / "idx").mkdir()
  tiny_fmnist(str(tmp_path / "idx"), n_train=40, n_test=20)
  yield tiny_config("simclr", **{"data.data_dir": str(tmp_path / "data"), "data.idx_dir": str(tmp_path / "idx"),
                                 "eval.knn_k": (5,), "eval.probe_epochs": 2, "eval.batch_size": 20})
  data.clear_cache()


@pytest.fixture
def calls(monkeypatch):
  """Counts the calls of `evaluate.compute_baselines` (still computing them)."""
  made = []
  real = evaluate.compute_baselines

  def counting(*args, **kwargs):
    made.append(1)
    return real(*args, **kwargs)
  monkeypatch.setattr(evaluate, "compute_baselines", counting)
  return made


def _evaluate(cfg):
  setup, state = state_lib.build(cfg, jax.random.PRNGKey(cfg.seed))
  _, random_state = state_lib.build(cfg, jax.random.PRNGKey(cfg.seed + 10_000))    # as jaxssl.run does
  return evaluate.evaluate_encoder(cfg, run.encode_fn(setup, state), baselines=True,
                                   random_encode_fn=run.encode_fn(setup, random_state))


def _entries(cfg):
  where = os.path.join(cfg.data.data_dir, eval_cache.CACHE_DIRNAME, "fashion_mnist")
  return sorted(os.path.join(where, f) for f in os.listdir(where)) if os.path.isdir(where) else []


def test_second_evaluation_reuses_the_cached_baselines_exactly(cfg, calls, monkeypatch, capsys):
  monkeypatch.delenv("JAXSSL_QUIET", raising=False)
  first = _evaluate(cfg)
  assert len(calls) == 1 and "using the cached" not in capsys.readouterr().err
  (entry,) = _entries(cfg)
  second = _evaluate(cfg)
  assert len(calls) == 1                                   # computed once for two evaluations
  assert f"using the cached raw_pixels and random_init baselines from {entry}" in capsys.readouterr().err
  # The cached numbers are the computed ones, bit for bit, in the same order (eval.json, tables).
  for name in ("raw_pixels", "random_init"):
    assert list(second[name].items()) == list(first[name].items())
  assert list(second) == list(first) == ["model", "raw_pixels", "random_init"]
  assert second["model"] == first["model"]
  assert json.load(open(entry))["results"] == {k: first[k] for k in ("raw_pixels", "random_init")}
  # (A corrupt entry: test_corrupt_or_foreign_entries_are_recomputed, without the networks.)


def _arrays(seed=0):
  rng = np.random.RandomState(seed)
  return (rng.randint(0, 256, (40, 28, 28, 1)).astype(np.uint8), np.arange(40) % 10,
          rng.randint(0, 256, (20, 28, 28, 1)).astype(np.uint8), np.arange(20) % 10)


def _fake_compute(made):
  def compute():
    made.append(1)
    return {"raw_pixels": {"knn_5": 10.0 * len(made), "linear_probe": 1 / 3}}
  return compute


def _cached(cfg, made, *, arrays=None, random_init=True, view_cfgs=None):
  key = eval_cache.baseline_key(cfg, _arrays() if arrays is None else arrays, random_init=random_init,
                                view_cfgs=view_cfgs)
  return eval_cache.cached_baselines(cfg, key, _fake_compute(made))


def test_what_determines_the_baselines_misses_the_cache_and_nothing_else_does(cfg):
  made = []
  first = _cached(cfg, made)
  assert _cached(cfg, made) == first and len(made) == 1
  # Fields the baselines do not depend on hit: sweep members of one model share them.
  same = [("loss.temperature", 0.5), ("optim.lr", 3e-3), ("train.num_steps", 9), ("eval.at_end", True)]
  for field, value in same:
    c = config_lib.from_json(config_lib.to_json(cfg))
    config_lib.set_field(c, field, value)
    assert _cached(c, made) == first and len(made) == 1, field
  absent = config_lib.from_json(config_lib.to_json(cfg))
  with absent.model.unlocked():
    del absent.model["dtype"]                       # a config saved before model.dtype: float32
  assert _cached(absent, made) == first and len(made) == 1
  # Everything that determines them misses.
  changes = [("seed", 1), ("eval.probe_epochs", 3), ("eval.knn_k", (3,)), ("eval.knn_temperature", 0.2),
             ("eval.batch_size", 10), ("model.projector", dict(cfg.model.projector, out_dim=6)),
             ("model.encoder_kwargs", {"widths": (4, 4), "strides": (2, 2)}), ("model.dtype", "bfloat16"),
             ("method", "byol")]
  for field, value in changes:
    c = config_lib.from_json(config_lib.to_json(cfg))
    config_lib.set_field(c, field, value)
    n = len(made)
    assert _cached(c, made) != first and len(made) == n + 1, field
    assert _cached(c, made) == _cached(c, made) and len(made) == n + 1, field     # and is cached itself
  n = len(made)
  _cached(cfg, made, arrays=_arrays(seed=1))                      # other data
  _cached(cfg, made, random_init=False)                           # raw pixels only
  views = state_lib.augment.preset("fmnist", 28)
  _cached(cfg, made, view_cfgs=views)                             # with the label-free criteria
  _cached(cfg, made, view_cfgs=state_lib.augment.preset("simclr", 28))
  assert len(made) == n + 4
  assert _cached(cfg, made, view_cfgs=views) and len(made) == n + 4


def test_corrupt_or_foreign_entries_are_recomputed(cfg, capsys, monkeypatch):
  monkeypatch.delenv("JAXSSL_QUIET", raising=False)
  made = []
  key = eval_cache.baseline_key(cfg, _arrays(), random_init=True, view_cfgs=None)
  path = eval_cache.cache_path(cfg, key)
  first = eval_cache.cached_baselines(cfg, key, _fake_compute(made))
  good = open(path).read()
  bad = ["", "not json", good[: len(good) // 2], json.dumps({"key": key}),
         json.dumps({"key": {**key, "seed": 7}, "results": first}),
         json.dumps({"key": key, "results": {"raw_pixels": {"knn_5": "90"}}}),
         json.dumps({"key": key, "results": []})]
  for i, text in enumerate(bad):
    with open(path, "w") as f:
      f.write(text)
    got = eval_cache.cached_baselines(cfg, key, _fake_compute(made))
    assert len(made) == i + 2 and got == {"raw_pixels": {"knn_5": 10.0 * (i + 2), "linear_probe": 1 / 3}}
    assert json.load(open(path))["results"] == got            # rewritten
  assert capsys.readouterr().err.count("are unusable") == len(bad)
  os.remove(path)
  os.mkdir(path)                                              # unreadable: a directory
  assert eval_cache.cached_baselines(cfg, key, _fake_compute(made)) and len(made) == len(bad) + 2


def test_unwritable_data_dir_computes_without_caching_and_warns_once(cfg, monkeypatch, capsys):
  def refuse(path, write):
    raise PermissionError(13, "Permission denied", path)
  monkeypatch.setattr(data, "write_atomic", refuse)            # a read-only data dir (the tests run as root)
  made = []
  for _ in range(3):
    assert _cached(cfg, made) == {"raw_pixels": {"knn_5": 10.0 * len(made), "linear_probe": 1 / 3}}
  assert len(made) == 3 and _entries(cfg) == []
  err = capsys.readouterr().err
  assert err.count("cannot write the baseline cache") == 1 and "Permission denied" in err
