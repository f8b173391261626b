"""Sweep members in TensorBoard: one run per member (members/<i>/tensorboard) holding exactly
that member's metrics.jsonl values under unsuffixed tags, an hparams session per member, and
the members' evaluations as "eval/..." records in metrics.jsonl and TensorBoard."""
import json
import os

import jax
import numpy as np
import pytest

from jaxssl import evaluate as eval_lib
from jaxssl import logging_utils, run, state as state_lib, sweep
from _run_outputs import read_run, small_eval_data
from _tiny import tiny_config

FMNIST = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
needs_fmnist = pytest.mark.skipif(not os.path.exists(FMNIST), reason="dataset-fashion-mnist not installed")

BANK, QUERIES = 256, 128
SPECS = ["loss.temperature=0.1,0.5"]
NOT_TAGS = ("step", "member", "wall_time", "event")   # record fields that are not TensorBoard scalars


def _f32(v):
  return float(np.float32(v))     # TensorBoard stores scalars as float32


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
  """A 2-member sweep of 4 steps: kNN monitor every 2 steps, evaluation at the end (small slices)."""
  wd = str(tmp_path_factory.mktemp("sweep"))
  cfg = tiny_config("simclr", steps=4, **{"eval.monitor_every": 2, "eval.monitor_train_images": BANK,
                                          "eval.monitor_test_images": QUERIES, "eval.at_end": True,
                                          "eval.probe_epochs": 1,
                                          # the single-run step per member: one step to compile
                                          "mesh.member_mode": "sequential"})
  with small_eval_data(BANK, QUERIES):
    out = run.sweep(cfg, SPECS, wd)
  return {**out, "dir": wd, "cfg": cfg}


def _member_records(wd, i):
  return [r for r in logging_utils.read_metrics(wd) if r.get("member") == i]


def _expected_scalars(records):
  """{tag: [(step, float32 value)]} that TensorBoard should hold for these metrics.jsonl records."""
  want: dict[str, list] = {}
  for r in records:
    for k, v in r.items():
      if k not in NOT_TAGS and not k.startswith("hp/") and isinstance(v, (int, float)):
        want.setdefault(k, []).append((r["step"], _f32(v)))
  return want


@needs_fmnist
def test_each_member_has_its_own_run_with_exactly_its_own_values(swept):
  wd = swept["dir"]
  assert not os.path.exists(os.path.join(wd, "tensorboard"))     # no shared, interleaved run
  losses = []
  for i in range(2):
    scalars, _ = read_run(os.path.join(wd, "members", str(i), "tensorboard"))
    recs = _member_records(wd, i)
    want = _expected_scalars(recs)
    assert {"loss", "effective_rank_z", "monitor/knn_200", "eval/linear_probe"} <= set(want)
    got = {k: [(s, _f32(v)) for s, v in pts] for k, pts in scalars.items() if not k.startswith("hparam/")}
    assert got == want, f"member {i}"      # every value, in order, and nothing else
    assert not any(k in ("member", "wall_time") or k.startswith("hp/") or k.endswith(("_0", "_1"))
                   for k in scalars)
    losses.append([v for _, v in got["loss"]])
  assert [r["step"] for r in _member_records(wd, 0) if "event" not in r] == [0, 2, 3]
  assert losses[0] != losses[1]           # the members' losses differ, so a mix-up would show


@needs_fmnist
def test_each_member_has_an_hparams_session_with_its_values_and_final_metrics(swept):
  wd = swept["dir"]
  temps = [0.1, 0.5]
  for i in range(2):
    scalars, sessions = read_run(os.path.join(wd, "members", str(i), "tensorboard"))
    assert sessions == [{"hparams": {"loss.temperature": pytest.approx(temps[i])}}]
    res = json.load(open(os.path.join(wd, "members", str(i), "results.json")))
    last = [r for r in _member_records(wd, i) if "event" not in r][-1]
    want = {"hparam/loss": last["loss"], "hparam/linear_probe": res["model"]["linear_probe"],
            "hparam/knn_20": res["model"]["knn_20"], "hparam/knn_200": res["model"]["knn_200"]}
    got = {k: v for k, v in scalars.items() if k.startswith("hparam/")}
    assert got == {k: [(4, _f32(v))] for k, v in want.items()}


@needs_fmnist
def test_member_evaluations_and_monitor_are_records_equal_to_their_results(swept):
  wd, cfg = swept["dir"], swept["cfg"]
  setup, _ = state_lib.build(cfg, jax.random.PRNGKey(cfg.seed))
  host = jax.device_get(swept["state"])
  for i in range(2):
    recs = _member_records(wd, i)
    (ev,) = [r for r in recs if r.get("event") == "eval"]
    res = json.load(open(os.path.join(wd, "members", str(i), "results.json")))
    assert ev["step"] == res["step"] == 4
    assert {k[len("eval/"):]: v for k, v in ev.items() if k.startswith("eval/")} == res["model"]
    assert isinstance(ev["wall_time"], float) and ev["wall_time"] >= max(r["wall_time"] for r in recs
                                                                         if "event" not in r)
    mon = {r["step"]: r for r in recs if r.get("event") == "monitor"}
    assert sorted(mon) == [2, 4]
    # Member i's monitor is the final evaluation's kNN of member i's own state, on the same slices.
    with small_eval_data(BANK, QUERIES):
      want = eval_lib.evaluate_encoder(cfg, run.encode_fn(setup, sweep.unstack_member(host, i)),
                                       baselines=False)["model"]
    for k in cfg.eval.knn_k:
      assert mon[4][f"monitor/knn_{k}"] == want[f"knn_{k}"] == ev[f"eval/knn_{k}"]


def test_logger_keeps_runs_apart_and_later_writers_do_not_clobber_earlier_files(tmp_path):
  """Writers opened within the same second (training, then the evaluation's logger) each keep
  their own event file; records without "member" go to <workdir>/tensorboard."""
  wd = str(tmp_path)
  lg = logging_utils.MetricLogger(wd)
  for step in range(3):
    lg.write({"step": step, "loss": 1.0 + step})
    for i in range(2):
      lg.write({"step": step, "member": i, "hp/optim.lr": 0.1 * (i + 1), "loss": 10.0 * (i + 1) + step})
  lg.close()
  lg = logging_utils.MetricLogger(wd, append=True)
  lg.write({"step": 3, "member": 1, "event": "eval", "eval/knn_200": 55.5})
  lg.write_hparams({"optim.lr": 0.2}, {"hparam/loss": 22.0, "hparam/bad": float("nan")}, member=1, step=3)
  lg.close()
  assert len(logging_utils.read_metrics(wd)) == 10       # append=True kept the training records
  top, _ = read_run(os.path.join(wd, "tensorboard"))
  assert top == {"loss": [(0, 1.0), (1, 2.0), (2, 3.0)]}
  m0, s0 = read_run(logging_utils.tensorboard_dir(wd, 0))
  assert m0 == {"loss": [(0, 10.0), (1, 11.0), (2, 12.0)]} and not s0
  m1, s1 = read_run(os.path.join(wd, "members", "1", "tensorboard"))
  assert m1 == {"loss": [(0, 20.0), (1, 21.0), (2, 22.0)], "eval/knn_200": [(3, 55.5)], "hparam/loss": [(3, 22.0)]}
  assert s1 == [{"hparams": {"optim.lr": pytest.approx(0.2)}}]
