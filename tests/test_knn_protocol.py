"""The kNN evaluation's settings (config.eval.knn_transform, train_split, test_split) and
experiments/knn_protocol.py: its choice rule on hand-made numbers and its --quick path."""
from __future__ import annotations

import json
import os
import sys

import pytest

from jaxssl import config as config_lib
from jaxssl import data
from jaxssl.errors import ConfigError

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "experiments"))
import knn_protocol  # noqa: E402
from test_experiments import tiny_fashion_mnist  # noqa: E402

CONFIG = os.path.join(os.path.dirname(__file__), "..", "experiments", "configs", "simclr.py")


def test_eval_splits_default_to_the_dataset_and_can_hold_out_part_of_train():
  cfg = config_lib.load_config(CONFIG)
  assert data.eval_splits(cfg) == ("train", "test")
  cfg = config_lib.load_config(CONFIG, ["--config.eval.train_split=train[:50000]",
                                        "--config.eval.test_split=train[50000:]"])
  assert data.eval_splits(cfg) == ("train[:50000]", "train[50000:]")
  config_lib.validate_config(cfg)


@pytest.mark.parametrize("override, field", [("--config.eval.knn_transform=whiten", "eval.knn_transform"),
                                             ("--config.eval.test_split=validation", "eval.test_split"),
                                             ("--config.eval.train_split=train[:x]", "eval.train_split")])
def test_bad_kNN_settings_are_config_errors_naming_the_field(override, field):
  with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
    config_lib.validate_config(config_lib.load_config(CONFIG, [override]))


def _rows(values):
  return [{"model": m, "trained": True, "features": f, "transform": tr, "temperature": t, "knn_200": v}
          for (m, f, tr, t), v in values.items()]


def test_choice_rule_takes_the_best_mean_on_r_and_breaks_near_ties_towards_simple_settings():
  temps = [0.05, 0.1, 0.2]
  vals = {}
  for m in ("a", "b"):
    for tr in knn_protocol.TRANSFORMS:
      for t in temps:
        vals[(m, "r", tr, t)] = 80.0
        vals[(m, "z", tr, t)] = 95.0            # z is never chosen: the rule is about r
  vals[("a", "r", "standardise", 0.05)] = 84.0
  vals[("b", "r", "standardise", 0.05)] = 82.0  # mean 83.0
  vals[("a", "r", "centre", 0.2)] = 83.5
  vals[("b", "r", "centre", 0.2)] = 82.4        # mean 82.95: within 0.05 -> the simpler transform
  got = knn_protocol.choose(_rows(vals), temps)
  assert (got["transform"], got["temperature"]) == ("centre", 0.2)
  assert got["mean_knn_200"] == pytest.approx(82.95) and got["best_mean_knn_200"] == pytest.approx(83.0)
  vals[("b", "r", "centre", 0.2)] = 82.0        # mean 82.75: no longer a tie
  got = knn_protocol.choose(_rows(vals), temps)
  assert (got["transform"], got["temperature"]) == ("standardise", 0.05)
  flat = {k: 80.0 for k in vals}                # all equal: none, then T closest to 0.1
  assert knn_protocol.choose(_rows(flat), temps)["temperature"] == 0.1
  assert knn_protocol.choose(_rows(flat), temps)["transform"] == "none"


def test_knn_protocol_quick_path_end_to_end(tmp_path, monkeypatch):
  """`knn_protocol.py --quick` trains a 16-step tiny model on a fake 320 + 100 image
  Fashion-MNIST, runs the held-out grid and the test rows. The old protocol's test kNN must
  equal the model's own end-of-training evaluation (eval.json: the same features and rule)."""
  out = tmp_path / "out"
  with tiny_fashion_mnist(tmp_path, monkeypatch):
    assert knn_protocol.main(["--quick", "--temperatures", "0.07,0.1", "--out", str(out)]) == 0
  result = json.loads((out / "results.json").read_text())
  assert result["holdout"] == 64 and result["bank"] == 256
  assert len(result["grid"]) == 2 * 2 * 3 * 2          # models x features x transforms x temperatures
  chosen = result["chosen"]
  assert chosen["features"] == "r" and chosen["transform"] in knn_protocol.TRANSFORMS
  assert chosen["temperature"] in (0.07, 0.1)
  own = json.loads((out / "model" / "eval.json").read_text())["model"]
  ec = json.loads((out / "model" / "config.json").read_text())["eval"]
  assert (ec["knn_transform"], ec["knn_temperature"]) == ("none", 0.1)   # reproduce_common.make_config's kNN
  old = [r for r in result["test"] if r["model"] == "model" and r["protocol"] == "old"]
  assert len(old) == 1
  assert old[0]["knn_20"] == pytest.approx(own["knn_20"]) and old[0]["knn_200"] == pytest.approx(own["knn_200"])
  assert {r["model"] for r in result["test"]} == {"model", "random_init"}
  assert "held-out kNN-200" in (out / "table.md").read_text()
