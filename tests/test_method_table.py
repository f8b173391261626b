"""experiments/method_table.py: the summary rule on hand-made rows, the config key, and the
--quick path end to end (with its reuse of finished rows after an interruption)."""
from __future__ import annotations

import argparse
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "experiments"))
import method_table as mt  # noqa: E402
from test_experiments import tiny_fashion_mnist  # noqa: E402


def _row(method, seed, linear, random_init):
  r = {"method": method, "seed": seed, "family": "contrastive", "linear_probe": linear,
       "gain_random_init": linear - random_init, "gain_raw_pixels": linear - 84.57}
  for k in mt.METRICS:
    r.setdefault(k, 1.0)
  return r


def test_summary_is_mean_sd_over_seeds_and_the_two_point_rule():
  rows = [_row("simclr", 0, 87.0, 83.0), _row("simclr", 1, 86.0, 83.2), _row("isoloss", 0, 84.0, 83.0),
          {"method": "byol", "seed": 0, "error": "non-finite loss"}]
  s = {x["method"]: x for x in mt.summarise(rows, ["simclr", "isoloss", "byol", "vicreg"])}
  assert s["simclr"]["linear_probe"]["mean"] == pytest.approx(86.5)
  assert s["simclr"]["linear_probe"]["sd"] == pytest.approx(0.7071, abs=1e-4)
  assert s["simclr"]["gain_random_init"]["mean"] == pytest.approx(3.4) and s["simclr"]["beats_random_init"]
  assert s["isoloss"]["beats_random_init"] is False and s["isoloss"]["seeds"] == [0]
  assert s["byol"]["seeds"] == [] and s["byol"]["error"] == "non-finite loss"
  assert s["vicreg"]["error"] == "not run"


def test_a_method_below_the_bar_gets_its_explanation_with_its_numbers_or_is_flagged():
  rows = [_row("simclr", 0, 88.0, 83.0), _row("simple", 0, 84.5, 83.0), _row("dcl", 0, 84.0, 83.0)]
  rows[0].update(effective_rank_z=52.9, uniformity_z=3.61)
  rows[1].update(effective_rank_z=5.1, uniformity_z=1.38)
  notes = mt.why_below_gain(mt.summarise(rows, ["simclr", "simple", "dcl"]))
  assert len(notes) == 2          # simclr clears the bar: no note
  assert notes[0].startswith("simple gains 1.50 points") and "eff. rank z 5.1, uniformity 1.38; simclr 52.9 and 3.61" in notes[0]
  assert notes[1] == "dcl gains 1.00 points over the random-init encoder, below 2: not explained yet (open)."


def test_plan_with_per_method_seeds():
  ap = argparse.ArgumentParser()
  args = argparse.Namespace(seeds=[0], headline_seeds=[0, 1],
                            method_seeds=mt.method_seeds(["directpred=0,1,2", "byol=0,1,2"], ap))
  plan = mt.plan_runs(["simclr", "byol", "directpred", "dcl"], args)
  assert plan == [("simclr", 0), ("byol", 0), ("directpred", 0), ("dcl", 0), ("simclr", 1), ("byol", 1),
                  ("directpred", 1), ("byol", 2), ("directpred", 2)]
  for bad in ("directpred", "nosuch=0,1", "byol=0,x"):
    with pytest.raises(SystemExit):
      mt.method_seeds([bad], ap)


def test_paired_comparison_rule():
  rows = [_row("directpred", s, lin, 83.0) for s, lin in ((0, 87.2), (1, 86.9), (2, 87.0))]
  rows += [_row("byol", s, lin, 83.0) for s, lin in ((0, 86.0), (1, 86.2), (2, 86.1))]
  p = mt.paired_comparisons(rows)["directpred_minus_byol"]
  assert p["seeds"] == [0, 1, 2] and p["diffs"] == pytest.approx([1.2, 0.7, 0.9])
  assert p["mean"] == pytest.approx(0.9333, abs=1e-4) and p["result"] == "first ahead"
  assert not p["within_equivalence_margin"]          # 0.93 + 2 x 0.25 > 1
  rows[3]["linear_probe"] = 87.3                     # seed 0: byol ahead: no single sign
  p = mt.paired_comparisons(rows)["directpred_minus_byol"]
  assert p["result"] == "tie" and not p["within_equivalence_margin"]
  close = [_row("directpred", s, 87.0 + d, 83.0) for s, d in ((0, 0.1), (1, -0.1), (2, 0.05))]
  close += [_row("byol", s, 87.0, 83.0) for s in (0, 1, 2)]
  p = mt.paired_comparisons(close)["directpred_minus_byol"]
  assert p["result"] == "tie" and p["within_equivalence_margin"]     # |0.017| + 2 x 0.10 < 1
  assert mt.paired_comparisons(close[:1] + close[3:4]) == {}          # one common seed: no comparison


def test_an_interrupted_run_stops_the_script_with_a_resume_message(tmp_path, monkeypatch):
  """SIGTERM during a table run: the run saved its checkpoint; run_one must stop the script
  cleanly (no KeyError on the missing evaluation, no row written for the unfinished run)."""
  monkeypatch.setattr(mt.rc.run, "train", lambda *a, **k: {"interrupted": "SIGTERM", "step": 1})
  with pytest.raises(SystemExit, match="stopped by SIGTERM during .*dcl_s0; rerun the same command"):
    mt.rc.run_one(None, str(tmp_path / "dcl_s0"), method="dcl", seed=0)


def test_an_interrupted_sweep_stops_the_script_with_a_resume_message(tmp_path, monkeypatch):
  """The same for a batched sweep (run_grid, e.g. experiments/temperature_sweep.py): its
  summary has no member_results after a signal."""
  monkeypatch.setattr(mt.rc.run, "sweep", lambda *a, **k: {"interrupted": "SIGINT", "step": 3})
  cfg = mt.method_config("simclr", 0, argparse.Namespace(steps=16, batch=32, quick=True))
  with pytest.raises(SystemExit, match="stopped by SIGINT during .*sweep; rerun the same command"):
    mt.rc.run_grid(cfg, str(tmp_path / "sweep"), [("loss.temperature", [0.1, 0.5])])


def test_config_key_follows_the_recipe_not_the_data_location():
  args = argparse.Namespace(steps=3000, batch=256, quick=False)
  a = mt.method_config("simclr", 0, args)
  b = mt.method_config("simclr", 0, args)
  b.data.data_dir = "/elsewhere"
  assert mt.config_key(a) == mt.config_key(b)
  b.loss.temperature = 0.5
  assert mt.config_key(a) != mt.config_key(b)
  assert mt.config_key(a) != mt.config_key(mt.method_config("simclr", 1, args))
  assert a.train.num_steps == 3000 and a.eval.baselines


def test_method_table_quick_path_end_to_end(tmp_path, monkeypatch):
  """A headline method (simclr, seeds 0 and 1) and another (isoloss, seed 0) on a fake
  Fashion-MNIST: the table's numbers are those of each run's eval.json, and a second start
  reuses every row."""
  out = tmp_path / "out"
  argv = ["--quick", "--methods", "simclr,isoloss", "--headline-seeds", "0,1", "--out", str(out)]
  with tiny_fashion_mnist(tmp_path, monkeypatch):
    assert mt.main(argv) == 0
    result = json.loads((out / "results.json").read_text())
    assert sorted((r["method"], r["seed"]) for r in result["rows"]) == [("isoloss", 0), ("simclr", 0), ("simclr", 1)]
    for r in result["rows"]:
      ev = json.loads((out / "runs" / f"{r['method']}_s{r['seed']}" / "eval.json").read_text())
      assert r["linear_probe"] == pytest.approx(ev["model"]["linear_probe"])
      assert r["gain_random_init"] == pytest.approx(ev["model"]["linear_probe"] - ev["random_init"]["linear_probe"])
      assert 0.0 <= r["alignment_z"] <= 4.0 and 0.0 <= r["alignment_r"] <= 4.0
    assert result["finished_runs"] == 3 and result["total_seconds"] > 0
    table = (out / "table.md").read_text()
    assert "| simclr | contrastive | 0,1 |" in table
    # A second start: nothing retrains (the runs' directories are gone: rows come from results.json).
    import shutil
    shutil.rmtree(out / "runs")
    assert mt.main(argv) == 0
    assert not (out / "runs").exists()
    again = json.loads((out / "results.json").read_text())
    assert again["rows"] == result["rows"]
