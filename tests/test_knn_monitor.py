"""The kNN monitor (`config.eval.monitor_every`): its numbers are the final evaluation's weighted kNN
on the same slices, it leaves training bit for bit unchanged, and it, like the end-of-run
evaluation, lands in metrics.jsonl and TensorBoard."""
import json
import os
import sys
import time

import jax
import numpy as np
import pytest

from jaxssl import checkpoint as ckpt_lib
from jaxssl import config as config_lib
from jaxssl import evaluate as eval_lib
from jaxssl import logging_utils, plots, run, state as state_lib
from jaxssl.errors import ConfigError
from _run_outputs import read_run, small_eval_data
from _tiny import tiny_config

FMNIST = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
needs_fmnist = pytest.mark.skipif(not os.path.exists(FMNIST), reason="dataset-fashion-mnist not installed")

BANK, QUERIES = 256, 128      # the monitor's slices (k = 200 needs a bank of >= 200)
MONITOR = {"eval.monitor_every": 1, "eval.monitor_train_images": BANK, "eval.monitor_test_images": QUERIES}
# The end-of-run evaluation, made cheap: one probe epoch, no baselines (and small_eval_data).
FAST_EVAL = {"eval.at_end": True, "eval.probe_epochs": 1, "eval.baselines": False}
TRAINING_ONLY = ("images_per_sec", "wall_time")   # fields that differ between two identical runs


@pytest.fixture(scope="module")
def on_run(tmp_path_factory):
  """A 4-step run with the monitor after every step and the evaluation at the end, both on the
  same small slices."""
  wd = str(tmp_path_factory.mktemp("monitor_on"))
  cfg = tiny_config("simclr", steps=4, **MONITOR, **FAST_EVAL)
  t0 = time.time()
  with small_eval_data(BANK, QUERIES):
    out = run.train(cfg, wd)
  return {**out, "dir": wd, "cfg": cfg, "window": (t0, time.time())}


@pytest.fixture(scope="module")
def off_run(tmp_path_factory):
  """The same run (same seed) without the monitor and without evaluation."""
  wd = str(tmp_path_factory.mktemp("monitor_off"))
  return {**run.train(tiny_config("simclr", steps=4), wd), "dir": wd}


def _records(workdir, event=None):
  return [r for r in logging_utils.read_metrics(workdir) if r.get("event") == event]


@needs_fmnist
def test_monitor_leaves_the_training_trajectory_bit_identical(on_run, off_run):
  on, off = jax.device_get(on_run["state"]), jax.device_get(off_run["state"])
  leaves_on, leaves_off = jax.tree.leaves(on), jax.tree.leaves(off)
  assert len(leaves_on) == len(leaves_off) > 0
  for a, b in zip(leaves_on, leaves_off):      # params, BN statistics, optimizer state, step, ...
    assert np.asarray(a).dtype == np.asarray(b).dtype
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # Every logged training metric (loss, spectra, probe, ...) is the same number too.
  strip = lambda recs: [{k: v for k, v in r.items() if k not in TRAINING_ONLY} for r in recs]
  train_on, train_off = _records(on_run["dir"]), _records(off_run["dir"])
  assert [r["step"] for r in train_on] == [0, 2, 3]
  assert strip(train_on) == strip(train_off)
  assert not _records(off_run["dir"], "monitor")


@needs_fmnist
def test_monitor_knn_equals_the_final_evaluations_knn_on_the_same_slices(on_run):
  cfg = on_run["cfg"]
  mon = {r["step"]: r for r in _records(on_run["dir"], "monitor")}
  assert sorted(mon) == [1, 2, 3, 4]            # after every update, labelled by updates done
  assert all("member" not in r for r in mon.values())
  setup, template = state_lib.build(cfg, jax.random.PRNGKey(cfg.seed))
  ck = ckpt_lib.Checkpointer(os.path.join(on_run["dir"], "checkpoints"), keep=cfg.train.keep_checkpoints,
                             fingerprint=ckpt_lib.fingerprint(cfg, template))
  try:
    states = {step: ck.restore(step, template)[0] for step in (2, 4)}
  finally:
    ck.close()
  for step, state in states.items():
    # The final evaluation's code (evaluate_encoder on the run's encode_fn), on the same slices.
    with small_eval_data(BANK, QUERIES):
      want = eval_lib.evaluate_encoder(cfg, run.encode_fn(setup, state), baselines=False)["model"]
    for k in cfg.eval.knn_k:
      assert mon[step][f"monitor/knn_{k}"] == want[f"knn_{k}"], (step, k)
  # The monitor moved: not the same number at every step (else the check above proves little).
  assert len({round(r["monitor/knn_20"], 6) for r in mon.values()}) > 1 or \
      len({round(r["monitor/knn_200"], 6) for r in mon.values()}) > 1
  # The end-of-run evaluation saw the same slices and the same final state.
  (ev,) = _records(on_run["dir"], "eval")
  for k in cfg.eval.knn_k:
    assert ev[f"eval/knn_{k}"] == mon[4][f"monitor/knn_{k}"]


@needs_fmnist
def test_monitor_and_eval_records_are_in_tensorboard(on_run):
  scalars, sessions = read_run(os.path.join(on_run["dir"], "tensorboard"))
  assert not sessions                          # a single run has no hparams session
  for r in _records(on_run["dir"], "monitor") + _records(on_run["dir"], "eval"):
    for key, v in r.items():
      if key.startswith(("monitor/", "eval/")):
        assert (r["step"], pytest.approx(float(np.float32(v)))) in scalars[key], key
  assert [s for s, _ in scalars["monitor/knn_200"]] == [1, 2, 3, 4]


@needs_fmnist
def test_single_run_evaluation_is_a_timestamped_record_equal_to_eval_json(on_run):
  wd = on_run["dir"]
  ev = json.load(open(os.path.join(wd, "eval.json")))
  (rec,) = _records(wd, "eval")
  assert rec["step"] == ev["step"] == 4 and "member" not in rec
  model = ev["model"]
  assert {k[len("eval/"):]: v for k, v in rec.items() if k.startswith("eval/")} == model
  assert {"linear_probe", "knn_20", "knn_200", "uniformity_r", "effective_rank_z"} <= set(model)
  t0, t1 = on_run["window"]
  assert t0 <= rec["wall_time"] <= t1 + 1       # written at the end of that run (unix time)
  assert logging_utils.read_metrics(wd)[-1] == rec   # the last record of the run


@needs_fmnist
def test_readers_of_training_records_skip_monitor_and_eval_records(on_run):
  sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "experiments"))
  try:
    import reproduce_common as rc
  finally:
    sys.path.pop(0)
  wd = on_run["dir"]
  assert [r["step"] for r in rc.spectrum_history(wd)] == [0, 2]
  assert rc.nonfinite_logged(wd) == 0
  assert rc.final_spectra(wd)["step"] == 2
  paths = plots.plot_workdir(wd)                # `jaxssl plot` after the eval and monitor records
  assert {os.path.basename(p) for p in paths} >= {"spectrum_z.png", "training_curves.png"}


def test_monitor_fields_are_documented_defaulted_and_checked():
  cfg = tiny_config("simclr")
  assert (cfg.eval.monitor_every, cfg.eval.monitor_train_images, cfg.eval.monitor_test_images) == (0, 5000, 1000)
  text = config_lib.describe_config(cfg)
  for field in ("eval.monitor_every", "eval.monitor_train_images", "eval.monitor_test_images"):
    (line,) = [l for l in text.splitlines() if l.startswith(field + " ")]
    assert "# kNN monitor:" in line
  with pytest.raises(ConfigError, match="monitor_every must be an int >= 0"):
    tiny_config("simclr", **{"eval.monitor_every": -1})
  with pytest.raises(ConfigError, match=r"monitor_train_images=100 is smaller than the largest k"):
    tiny_config("simclr", **{"eval.monitor_every": 10, "eval.monitor_train_images": 100})
  tiny_config("simclr", **{"eval.monitor_train_images": 100})     # fine while the monitor is off
