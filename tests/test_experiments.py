"""The reproduction scripts' claim logic (experiments/*.py) on hand-made result rows."""
from __future__ import annotations

import contextlib
import math
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "experiments"))
import isoloss_vs_directpred as ivd  # noqa: E402
import label_free_selection  # noqa: E402
import noncontrastive  # noqa: E402


def _row(kind, wd, norm, erank, acc):
  return {"kind": kind, "weight_decay": wd, "norm_z": norm, "effective_rank_z": erank, "linear_probe": acc}



@contextlib.contextmanager
def tiny_fashion_mnist(tmp_path, monkeypatch):
  """A 320/100-image fake Fashion-MNIST under tmp_path for a --quick run (the data cache cleared
  before and after)."""
  from _tiny import tiny_fmnist
  from jaxssl import data
  from jaxssl.data import fashion_mnist as fm
  tiny_fmnist(str(tmp_path), n_train=320, n_test=100)
  monkeypatch.setenv("JAXSSL_FMNIST_DIR", str(tmp_path))
  monkeypatch.setenv("JAXSSL_DATA_DIR", str(tmp_path / "data"))
  monkeypatch.setattr(fm, "FMNIST_COUNTS", {"train": 320, "test": 100})
  data.clear_cache()
  try:
    yield
  finally:
    data.clear_cache()

def test_weight_decay_collapse_kinds_and_claims():
  # Bao: the L2 form shrinks to zero above a threshold; the cosine form keeps a non-zero
  # norm (here it loses dimensions instead, which is counted separately).
  l2 = noncontrastive.classify_collapse([_row("l2", 100.0, 1e-7, 40.0, 70.0), _row("l2", 1.0, 11.7, 50.0, 80.0),
                                         _row("l2", 10.0, 2.9, 48.0, 79.0)])
  cos = noncontrastive.classify_collapse([_row("cosine", 1.0, 7.1, 91.0, 82.0), _row("cosine", 10.0, 2.0, 74.0, 81.0),
                                          _row("cosine", 100.0, 0.22, 1.3, 75.0)])
  assert [r["weight_decay"] for r in l2] == [1.0, 10.0, 100.0]
  assert [r["norm_collapsed"] for r in l2] == [False, False, True]
  assert l2[2]["norm_ratio"] == pytest.approx(1e-7 / 11.7)
  # A norm-collapsed member's effective rank is that of noise: not a dimensional collapse.
  assert not any(r["dim_collapsed"] for r in l2)
  assert [r["norm_collapsed"] for r in cos] == [False, False, False]
  assert [r["dim_collapsed"] for r in cos] == [False, False, True]
  claims = noncontrastive.wd_claims(l2 + cos)
  assert claims == {"l2_norm_collapse_wd": 100.0, "l2_dimensional_collapse_wd": None,
                    "cosine_norm_collapse_wd": None, "cosine_dimensional_collapse_wd": 100.0,
                    "l2_norm_collapses_at_max_wd": True, "cosine_norm_survives_max_wd": True,
                    "cosine_accuracy_above_l2_at_max_wd": True}


def test_weight_decay_collapse_with_missing_norms_is_never_claimed():
  # Evaluations without a norm (NaN, e.g. a diverged member) cannot count as a collapse to zero.
  rows = noncontrastive.classify_collapse([_row("l2", 1.0, math.nan, 50.0, math.nan),
                                           _row("l2", 10.0, 1e-9, 50.0, 80.0)])
  assert not any(r["norm_collapsed"] for r in rows)
  assert math.isnan(rows[1]["norm_ratio"])


def test_collapsed_dims_counts_the_spectrum_tail_and_drives_the_tail_claims():
  import numpy as np
  import dimensional_collapse as dc
  eig = np.concatenate([np.logspace(0, -5, 250), [1e-7, 5e-8, 0.0, 0.0, 0.0, 0.0]])
  assert dc.collapsed_dims(eig) == 6
  assert dc.collapsed_dims(eig * 1e-3) == 6          # relative to the largest eigenvalue
  assert dc.collapsed_dims([]) == 0 and dc.collapsed_dims([0.0, 0.0]) == 0
  assert dc.collapsed_dims([1.0, float("nan")]) == 0
  spectra = {"mlp": {"spectrum_r": eig[:252]}, "linear": {"spectrum_r": eig[:253]},
             "none": {"spectrum_r": eig}, "directclr": {"spectrum_r": eig[:250]}}
  rows = {k: {"effective_rank_r": er, "effective_rank_z": 50.0, "linear_probe": acc}
          for k, er, acc in (("mlp", 120.0, 85.7), ("linear", 109.0, 84.8), ("none", 148.0, 81.5),
                             ("directclr", 160.0, 85.5))}
  dc.add_collapsed_dims(rows, spectra)
  assert [rows[k]["collapsed_dims_r"] for k in ("mlp", "linear", "none", "directclr")] == [2, 3, 6, 0]
  c = dc.claims(rows)
  # The entropy-based rank and the tail count disagree here, as measured at 2000 steps.
  assert c["no_projector_r_tail_collapses_more_than_mlp"] and c["no_projector_r_tail_collapses_more_than_linear"]
  assert not c["no_projector_r_collapses_more_than_mlp"]
  assert c["accuracy_mlp_beats_linear"] and c["directclr_r_not_collapsed"]


def test_number_list_arguments_parse_and_reject_empty_or_non_numeric():
  import argparse
  import reproduce_common as rc
  assert rc.floats("1e-4, 0.5,") == [1e-4, 0.5] and rc.ints("32,64") == [32, 64]
  for bad, fn in (("", rc.floats), (",", rc.ints), ("abc", rc.floats), ("3.5", rc.ints)):
    with pytest.raises(argparse.ArgumentTypeError, match="expected"):
      fn(bad)
  # Through a script's parser: a clear usage error (exit 2), no traceback, nothing trained.
  with pytest.raises(SystemExit) as e:
    noncontrastive.main(["--parts", "wd", "--weight-decays", "", "--out", "/nonexistent/never-created"])
  assert e.value.code == 2


def _selection_rows():
  # Hand-made members: RankMe orders them like the probe except the last two (swapped);
  # alpha-ReQ is closest to 1 on the second-best member.
  probe = [70.0, 75.0, 80.0, 85.0, 84.0]
  rankme = [10.0, 20.0, 30.0, 40.0, 50.0]
  alpha = [3.0, 2.0, 1.5, 0.7, 1.05]
  lidar = [5.0, 4.0, 3.0, 2.0, 1.0]
  return [{"method": "m", "lr": i, "linear_probe": p, "rankme_r": r, "alpha_req_r": a, "lidar_r": li}
          for i, (p, r, a, li) in enumerate(zip(probe, rankme, alpha, lidar))]


def test_label_free_statistics_against_hand_computed_values():
  import numpy as np

  lfs = label_free_selection
  rows = _selection_rows()
  s = lfs.statistics(rows)
  # Spearman of ranks (0,1,2,3,4) vs probe ranks (0,1,2,4,3): 1 - 6*sum(d^2)/(n(n^2-1)) = 1 - 12/120.
  assert s["criteria"]["rankme"]["spearman"] == pytest.approx(0.9)
  assert s["criteria"]["lidar"]["spearman"] == pytest.approx(-0.9)
  # RankMe picks member 4 (84 %): 1 point below the best (85 %); LiDAR picks member 0: 15 points.
  assert s["criteria"]["rankme"]["oracle_gap"] == pytest.approx(1.0)
  assert s["criteria"]["lidar"]["oracle_gap"] == pytest.approx(15.0)
  assert s["criteria"]["rankme"]["picked"] == {"method": "m", "lr": 4}
  # alpha-ReQ scores -|a - 1|: member 4 (|0.05|) first, so also a 1-point gap.
  assert s["criteria"]["alpha_req"]["oracle_gap"] == pytest.approx(1.0)
  assert s["random_pick_gap"] == pytest.approx(85.0 - np.mean([70, 75, 80, 85, 84]))
  lo, hi = s["criteria"]["rankme"]["spearman_ci"]
  assert -1.0 <= lo <= 0.9 <= hi <= 1.0
  lo, hi = s["criteria"]["lidar"]["oracle_gap_ci"]
  assert 0.0 <= lo <= hi <= 15.0


def test_label_free_statistics_rank_a_failed_criterion_last_and_skip_failed_probes():
  lfs = label_free_selection
  rows = _selection_rows()
  rows[4]["rankme_r"] = math.nan           # the would-be pick has no criterion: ranks last
  rows.append({**rows[0], "lr": 9, "linear_probe": math.nan})   # a failed evaluation: left out
  s = lfs.statistics(rows)
  assert s["members"] == 5
  assert s["criteria"]["rankme"]["picked"]["lr"] == 3
  assert s["criteria"]["rankme"]["oracle_gap"] == pytest.approx(0.0)


def test_label_free_selection_quick_path_end_to_end(tmp_path, monkeypatch):
  """`label_free_selection.py --quick --methods simclr` on a fake 320 + 100 image Fashion-MNIST:
  one 3-member sweep, its evaluation, and the statistics recomputed from the written rows."""
  import json

  out = tmp_path / "out"
  with tiny_fashion_mnist(tmp_path, monkeypatch):
    assert label_free_selection.main(["--quick", "--methods", "simclr", "--out", str(out)]) == 0
  result = json.loads((out / "results.json").read_text())
  rows = result["rows"]
  assert [r["temperature"] for r in rows] == [0.05, 0.2, 1.0] and {r["lr"] for r in rows} == {3e-4}
  for r in rows:
    assert 0.0 <= r["linear_probe"] <= 100.0 and r["rankme_r"] >= 1.0 and r["lidar_r"] >= 1.0
  assert result["statistics"]["all"]["criteria"]["rankme"]["spearman"] == pytest.approx(
      label_free_selection.statistics(rows)["criteria"]["rankme"]["spearman"], nan_ok=True)
  assert (out / "label_free_selection.png").exists() and "| simclr (3) | rankme |" in (out / "table.md").read_text()
  with pytest.raises(SystemExit):
    label_free_selection.main(["--methods", "simclr,nope", "--out", str(out)])


def test_docs_label_free_table_equals_the_committed_results_json():
  """docs/results.md's label-free table is the one the committed results.json gives."""
  import json
  import re
  root = os.path.join(os.path.dirname(__file__), "..")
  with open(os.path.join(root, "docs", "figures", "label_free_selection", "results.json")) as f:
    stats = json.load(f)["statistics"]
  with open(os.path.join(root, "docs", "results.md")) as f:
    docs = f.read()
  rows = re.findall(r"^\| (\w+) \((\d+)\) \| (\w+) \| ([^|]+) \| ([^|]+) \| ([^|]+) \|$", docs, re.M)
  assert len(rows) == sum(len(s["criteria"]) for s in stats.values()) == 12
  number = r"-?\d+\.\d+"
  for subset, count, criterion, rho, gap, random_gap in rows:
    s, c = stats[subset], stats[subset]["criteria"][criterion]
    assert int(count) == s["members"]
    for text, (value, ci) in ((rho, (c["spearman"], c["spearman_ci"])), (gap, (c["oracle_gap"], c["oracle_gap_ci"])),
                              (random_gap, (s["random_pick_gap"], s["random_pick_gap_ci"]))):
      assert [float(v) for v in re.findall(number, text)] == [round(value, 2), round(ci[0], 2), round(ci[1], 2)]


def _ivd_runs(probe_iso, probe_byol, erank_iso, erank_byol):
  runs = []
  for seed, pi, pb, ei, eb in zip(range(len(probe_iso)), probe_iso, probe_byol, erank_iso, erank_byol):
    runs.append({"arm": "isoloss", "seed": seed, "linear_probe": pi, "effective_rank_z": ei,
                 "knn_200": pi - 2.0, "effective_rank_r": 2 * ei})
    runs.append({"arm": "byol", "seed": seed, "linear_probe": pb, "effective_rank_z": eb,
                 "knn_200": pb - 2.0, "effective_rank_r": 2 * eb})
  return runs


def test_isoloss_vs_directpred_verdict_rule_on_hand_made_numbers():
  # Probe gaps 1, 1.5, 1.5: mean 4/3, sd 0.2887 (ddof 1), 2 sd = 0.577 < 4/3: holds.
  g = ivd.paired_gap([80.0, 81.0, 82.0], [79.0, 79.5, 80.5])
  assert g["diffs"] == pytest.approx([1.0, 1.5, 1.5])
  assert g["mean"] == pytest.approx(4 / 3) and g["sd"] == pytest.approx(math.sqrt(1 / 12))
  assert g["isoloss_wins_every_seed"] and g["mean_exceeds_2sd"] and g["holds"]
  # Wins every seed, but gaps 0.5, 1, 3: mean 1.5 < 2 sd = 2.65: fails.
  g = ivd.paired_gap([80.5, 81.0, 83.0], [80.0, 80.0, 80.0])
  assert g["isoloss_wins_every_seed"] and not g["mean_exceeds_2sd"] and not g["holds"]
  # A large mean with one losing seed fails; so do one seed (no sd) and a diverged run.
  assert not ivd.paired_gap([90.0, 90.0, 79.0], [80.0, 80.0, 80.0])["holds"]
  one = ivd.paired_gap([85.0], [80.0])
  assert math.isnan(one["sd"]) and one["isoloss_wins_every_seed"] and not one["holds"]
  nan = ivd.paired_gap([85.0, math.nan], [80.0, 80.0])
  assert math.isnan(nan["mean"]) and not nan["isoloss_wins_every_seed"] and not nan["holds"]
  with pytest.raises(ValueError):
    ivd.paired_gap([1.0, 2.0], [1.0])
  assert ivd.verdict({"linear_probe": True, "effective_rank_z": True}) == "reproduced"
  assert ivd.verdict({"linear_probe": False, "effective_rank_z": True}) == "mixed"
  assert ivd.verdict({"linear_probe": False, "effective_rank_z": False}) == "not reproduced"
  # From rows: the probe holds, the effective rank loses in seed 1: mixed.
  runs = _ivd_runs([80.0, 81.0, 82.0], [79.0, 79.5, 80.5], [30.0, 20.0, 31.0], [25.0, 26.0, 25.0])
  s = ivd.summarise(runs, [0, 1, 2])
  assert s["holds"] == {"linear_probe": True, "effective_rank_z": False} and s["verdict"] == "mixed"
  assert s["paired"]["effective_rank_z"]["diffs"] == pytest.approx([5.0, -6.0, 6.0])
  assert s["per_arm"]["byol"]["linear_probe"]["mean"] == pytest.approx(79.666666, rel=1e-6)
  runs = _ivd_runs([80.0, 81.0, 82.0], [79.0, 79.5, 80.5], [30.0, 31.0, 32.0], [25.0, 26.0, 26.0])
  assert ivd.summarise(runs, [0, 1, 2])["verdict"] == "reproduced"
  runs = _ivd_runs([79.0, 79.5, 80.5], [80.0, 81.0, 82.0], [25.0, 26.0, 26.0], [30.0, 31.0, 32.0])
  assert ivd.summarise(runs, [0, 1, 2])["verdict"] == "not reproduced"


def test_isoloss_vs_directpred_quick_path_end_to_end(tmp_path, monkeypatch):
  """`isoloss_vs_directpred.py --quick` on a fake 320 + 100 image Fashion-MNIST: 2 arms x 2
  seeds, trained and evaluated; the JSON's structure, the controlled pair (the arms' configs
  differ in loss.objective only) and the verdict recomputed from the written runs."""
  import json

  out = tmp_path / "out"
  with tiny_fashion_mnist(tmp_path, monkeypatch):
    assert ivd.main(["--quick", "--out", str(out)]) == 0
  result = json.loads((out / "results.json").read_text())
  assert result["quick"] and result["seeds"] == [0, 1] and result["steps"] == 16
  assert result["shared"] == {"predictor_kind": "halvagal", "closed_form_timing": "in_loss", "eps": 0.0,
                              "alpha": 0.5, "decay": 0.5, "ema_target": False}
  assert result["differing_fields"] == {"0": ["loss.objective"], "1": ["loss.objective"]}
  runs = result["runs"]
  assert sorted((r["arm"], r["seed"]) for r in runs) == [("byol", 0), ("byol", 1), ("isoloss", 0), ("isoloss", 1)]
  for r in runs:
    c = r["config"]
    assert c["method"] == "isoloss" and c["loss.objective"] == r["arm"] and c["seed"] == r["seed"]
    assert c["ema.enabled"] is False and c["predictor.eps"] == 0.0 and c["train.num_steps"] == 16
    assert 0.0 <= r["linear_probe"] <= 100.0 and 0.0 <= r["knn_200"] <= 100.0
    assert 1.0 <= r["effective_rank_z"] <= 8.0 and r["seconds"] > 0
    assert r["history"]["steps"] and len(r["history"]["steps"]) == len(r["history"]["effective_rank_z"])
  s = result["summary"]
  assert set(s["paired"]) == set(ivd.REPORTED_METRICS)
  recomputed = ivd.summarise(runs, result["seeds"])
  assert s["verdict"] == recomputed["verdict"] == result["claims"]["verdict"]
  assert s["verdict"] in ("reproduced", "mixed", "not reproduced")
  for m in ivd.REPORTED_METRICS:
    assert s["paired"][m]["diffs"] == pytest.approx(recomputed["paired"][m]["diffs"])
  table = (out / "table.md").read_text()
  assert table.count("| IsoLoss | ") == 2 and table.count("| BYOL loss (DirectPred arm) | ") == 2
  assert "paired gap IsoLoss − BYOL loss" in table and f"**Verdict: {s['verdict']}**" in table
  assert (out / "erank_vs_step.png").exists()
  # A second call reuses every finished run (no training) and rebuilds the same verdict.
  assert ivd.main(["--quick", "--out", str(out)]) == 0
  again = json.loads((out / "results.json").read_text())
  assert again["summary"]["verdict"] == s["verdict"]
  assert [r["seconds"] for r in again["runs"]] == [r["seconds"] for r in runs]
  # ... but never a run trained with other settings.
  with pytest.raises(SystemExit, match=r"predictor\.eps: 0\.0 -> 0\.1"):
    ivd.main(["--quick", "--eps", "0.1", "--out", str(out)])
