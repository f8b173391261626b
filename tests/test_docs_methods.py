"""docs/methods.md's tables equal the committed results.json they quote (issue 19): the kNN
protocol grid and test rows, and the tuning records."""
from __future__ import annotations

import json

import pytest

from test_docs_tables import FIGURES, ROOT, check_cell, check_numbers, one_table


def methods_md() -> str:
  return (ROOT / "docs" / "methods.md").read_text()


def test_knn_protocol_grid_equals_results_json():
  res = json.loads((FIGURES / "knn_protocol" / "results.json").read_text())
  temps = res["temperatures"]
  header = ["transform"] + [f"T = {temps[0]}"] + [str(t) for t in temps[1:]]
  rows = one_table(methods_md(), header)
  by = {(r["model"], r["transform"], r["temperature"]): r["knn_200"] for r in res["grid"] if r["features"] == "r"}
  assert [r[0] for r in rows] == ["none", "centre", "standardise"]
  for transform, *cells in rows:
    for t, cell in zip(temps, cells):
      check_numbers(cell, [by[("main_check", transform, t)], by[("random_init", transform, t)]],
                    f"kNN grid {transform} T={t}")
  chosen = res["chosen"]
  assert (chosen["transform"], chosen["temperature"]) == ("standardise", 0.02)
  assert f"**{chosen['mean_knn_200']:.2f}**" in methods_md()


def test_knn_protocol_test_rows_equal_results_json():
  res = json.loads((FIGURES / "knn_protocol" / "results.json").read_text())
  rows = one_table(methods_md(), ["features", "old: none, T = 0.1 (kNN-20 / kNN-200)",
                                  "chosen: standardise, T = 0.02 (kNN-20 / kNN-200)"])
  test = {(r["model"], r["protocol"]): r for r in res["test"]}
  for name, key in (("SimCLR main job (lr 1e-3)", "main_check"), ("random-init encoder", "random_init")):
    row = next(r for r in rows if r[0] == name)
    for cell, protocol in zip(row[1:], ("old", "chosen")):
      check_numbers(cell, [test[(key, protocol)]["knn_20"], test[(key, protocol)]["knn_200"]], f"{name} {protocol}")


@pytest.mark.parametrize("method, knn_header, chosen", [("isoloss", "kNN-200 (%)", "ema_official"),
                                                        ("simclr", "kNN-200 (%, old protocol)", "lr3e-3")])
def test_tuning_table_equals_results_json(method, knn_header, chosen):
  res = json.loads((FIGURES / "tuning" / method / "results.json").read_text())
  rows = one_table(methods_md(), ["variant", "held-out linear (%)", knn_header, "eff. rank z", "eff. rank r"])
  assert len(rows) == len(res["summary"])
  for row, s in zip(rows, res["summary"]):
    for cell, key in zip(row[1:], ("linear_probe", "knn_200", "effective_rank_z", "effective_rank_r")):
      check_cell(cell, s[key]["mean"], f"{method} {s['label']} {key}")
  assert res["chosen"] == chosen


def test_main_job_rows_equal_eval_json():
  ev = json.loads((FIGURES / "main" / "eval.json").read_text())
  rows = one_table(methods_md(), ["main job", "linear (%)", "kNN-20 (%)", "kNN-200 (%)"])
  now = next(r for r in rows if r[0].endswith("(now)"))
  for cell, key in zip(now[1:], ("linear_probe", "knn_20", "knn_200")):
    check_cell(cell, ev["model"][key], f"main job {key}")
  # Round 1's main job (lr 3e-3, the preset's crop), kept beside the current eval.json.
  round1 = json.loads((FIGURES / "main" / "eval_lr3e-3_crop0.2_6f2b5cc.json").read_text())
  before = next(r for r in rows if r[0].endswith("(round 1)"))
  for cell, key in zip(before[1:], ("linear_probe", "knn_20", "knn_200")):
    check_cell(cell, round1["model"][key], f"round-1 main job {key}")
  raw = next(r for r in one_table(methods_md(), ["features", "old: none, T = 0.1 (kNN-20 / kNN-200)",
                                                 "chosen: standardise, T = 0.02 (kNN-20 / kNN-200)"])
             if r[0] == "raw pixels (784-d)")
  check_numbers(raw[2], [ev["raw_pixels"]["knn_20"], ev["raw_pixels"]["knn_200"]], "raw pixels, chosen kNN")


def test_lr_1e3_rows_equal_their_eval_json():
  old = json.loads((FIGURES / "knn_protocol" / "eval_lr1e-3_old_knn.json").read_text())
  new = json.loads((FIGURES / "knn_protocol" / "eval_lr1e-3_chosen_knn.json").read_text())
  assert old["model"]["linear_probe"] == new["model"]["linear_probe"]      # the same model
  before = next(r for r in one_table(methods_md(), ["main job", "linear (%)", "kNN-20 (%)", "kNN-200 (%)"])
                if r[0] == "lr 1e-3 (before)")
  for cell, key in zip(before[1:], ("linear_probe", "knn_20", "knn_200")):
    check_cell(cell, new["model"][key], f"lr 1e-3 {key}")
  rows = one_table(methods_md(), ["features", "old: none, T = 0.1 (kNN-20 / kNN-200)",
                                  "chosen: standardise, T = 0.02 (kNN-20 / kNN-200)"])
  for name, key in (("SimCLR main job (lr 1e-3)", "model"), ("random-init encoder", "random_init"),
                    ("raw pixels (784-d)", "raw_pixels")):
    row = next(r for r in rows if r[0] == name)
    for cell, ev in zip(row[1:], (old, new)):
      check_numbers(cell, [ev[key]["knn_20"], ev[key]["knn_200"]], f"{name}")


def test_method_table_md_equals_results_json():
  """docs/figures/methods/table.md (method_table.py's output) against the results.json beside it."""
  res = json.loads((FIGURES / "methods" / "results.json").read_text())
  header = ["method", "family", "seeds", "linear (%)", "kNN-20 (%)", "kNN-200 (%)", "gain vs random init",
            "gain vs raw pixels", "eff. rank z", "eff. rank r", "uniformity z", "alignment z", "wall (min)"]
  rows = {r[0]: r for r in one_table((FIGURES / "methods" / "table.md").read_text(), header)}
  assert set(rows) == {s["method"] for s in res["summary"]}
  finished = 0
  for s in res["summary"]:
    row = rows[s["method"]]
    if not s["seeds"]:
      assert row[3] == s.get("error", "not run")
      continue
    finished += len(s["seeds"])
    assert row[2] == ",".join(map(str, s["seeds"]))
    for cell, key in zip(row[3:12], ("linear_probe", "knn_20", "knn_200", "gain_random_init", "gain_raw_pixels",
                                     "effective_rank_z", "effective_rank_r", "uniformity_z", "alignment_z")):
      below = key == "gain_random_init" and not s["beats_random_init"]
      assert below == ("(< 2, see notes)" in cell), f"{s['method']}: the below-the-bar mark"
      cell = cell.replace("(< 2, see notes)", "")
      expected = [s[key]["mean"]] + ([s[key]["sd"]] if len(s["seeds"]) > 1 else [])
      check_numbers(cell, expected, f"{s['method']} {key}")
    check_numbers(row[12], [s["seconds"]["mean"] / 60] + ([s["seconds"]["sd"] / 60] if len(s["seeds"]) > 1 else []),
                  f"{s['method']} wall")
  assert finished == res["finished_runs"] == len(res["rows"])
  assert sorted(res["claims"]["below_2"]) == sorted(s["method"] for s in res["summary"]
                                                    if s["seeds"] and not s["beats_random_init"])
