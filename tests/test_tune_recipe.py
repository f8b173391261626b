"""experiments/tune_recipe.py: variant parsing, the selection rule, and the --quick path
(which must never read the test split)."""
from __future__ import annotations

import argparse
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "experiments"))
import tune_recipe as tr  # noqa: E402
from test_experiments import tiny_fashion_mnist  # noqa: E402


def test_variant_parsing():
  assert tr.parse_variant("recipe:") == ("recipe", {})
  assert tr.parse_variant("ema:ema.enabled=True; predictor.decay=0.998") == (
      "ema", {"ema.enabled": True, "predictor.decay": 0.998})
  assert tr.parse_variant("aug:data.augment=fmnist") == ("aug", {"data.augment": "fmnist"})
  for bad in ("noseparator", "a b:x=1", "lab:field"):
    with pytest.raises(argparse.ArgumentTypeError):
      tr.parse_variant(bad)


def _s(label, mean):
  return {"label": label, "linear_probe": {"mean": mean, "sd": float("nan")}}


def test_selection_prefers_the_earlier_variant_within_the_tie():
  assert tr.select([_s("recipe", 80.0), _s("b", 80.15), _s("c", 79.0)], tie=0.2) == "recipe"
  assert tr.select([_s("recipe", 80.0), _s("b", 80.25)], tie=0.2) == "b"
  assert tr.select([_s("recipe", float("nan")), _s("b", 70.0)], tie=0.2) == "b"


def test_tune_recipe_quick_path_reads_only_the_training_split(tmp_path, monkeypatch):
  from jaxssl import data
  seen = []
  real = data.load_arrays

  def spy(name, split, **kw):
    seen.append(split)
    return real(name, split, **kw)
  monkeypatch.setattr(data, "load_arrays", spy)
  out = tmp_path / "out"
  with tiny_fashion_mnist(tmp_path, monkeypatch):
    assert tr.main(["--method", "simclr", "--quick", "--variant", "recipe:", "--variant",
                    "tau:loss.temperature=0.5", "--out", str(out)]) == 0
  result = json.loads((out / "results.json").read_text())
  assert [s["label"] for s in result["summary"]] == ["recipe", "tau"]
  assert result["chosen"] in ("recipe", "tau")
  cfg = json.loads((out / "runs" / "simclr_tau_s0" / "config.json").read_text())
  assert cfg["loss"]["temperature"] == 0.5 and cfg["eval"]["test_split"] == "train[-64:]"
  evaluated = [s for s in seen if s != "train"]
  assert evaluated and all(s.startswith("train[") for s in evaluated), seen
  assert "test" not in seen
  # The wall time is the runs' own, so a second start that adds a variant and reuses the
  # finished ones still counts them (it was this start's time, which left them out).
  first = {r["label"]: r["seconds"] for r in result["rows"]}
  assert all(s > 0 for s in first.values()) and result["seconds"] == pytest.approx(sum(first.values()))
  with tiny_fashion_mnist(tmp_path, monkeypatch):
    assert tr.main(["--method", "simclr", "--quick", "--variant", "recipe:", "--variant",
                    "tau:loss.temperature=0.5", "--variant", "wd:optim.weight_decay=1e-4", "--out", str(out)]) == 0
  again = json.loads((out / "results.json").read_text())
  seconds = {r["label"]: r["seconds"] for r in again["rows"]}
  assert {k: seconds[k] for k in first} == pytest.approx(first) and seconds["wd"] > 0
  assert again["seconds"] == pytest.approx(sum(seconds.values()))
