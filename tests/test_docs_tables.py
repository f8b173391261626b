"""docs/results.md's tables equal the committed results.json files (no JAX, no training).

Each table is found by its header row; each number in a cell must be the JSON value rounded as
displayed (as many decimals as the cell shows, or as many mantissa decimals in e-notation).
The label-free table has its own test (tests/test_experiments.py).
"""
from __future__ import annotations

import json
import re
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / "docs" / "figures"
# A number not glued to a word, a decimal point or a hyphen ("L2", "kNN-200", "t90" are not numbers).
NUMBER = re.compile(r"(?<![\w.\-−])[−-]?[0-9]+(?:\.[0-9]+)?(?:e[−-]?[0-9]+)?")
COLLAPSED_EIG_FRACTION = 1e-6  # experiments/dimensional_collapse.py's threshold for a collapsed dimension

Table = list[list[str]]


def load(name: str) -> dict[str, Any]:
  """The committed results.json of docs/figures/<name>/."""
  with open(FIGURES / name / "results.json") as f:
    return json.load(f)


def results_md() -> str:
  return (ROOT / "docs" / "results.md").read_text()


def split_row(line: str) -> list[str]:
  """The stripped cells of one markdown table row."""
  return [c.strip() for c in line.strip().strip("|").split("|")]


def parse_tables(text: str) -> list[Table]:
  """Every markdown table in `text` as rows of cells, header first, separator row dropped."""
  out: list[Table] = []
  block: list[str] = []
  for line in [*text.splitlines(), ""]:
    if line.lstrip().startswith("|"):
      block.append(line)
      continue
    if len(block) >= 2:
      rows = [split_row(r) for r in block]
      out.append([r for i, r in enumerate(rows) if not (i == 1 and all(set(c) <= set("-: ") for c in r))])
    block = []
  return out


def tables_with_header(text: str, header: Sequence[str]) -> list[Table]:
  """The bodies (rows after the header) of the tables whose header row is `header`."""
  return [t[1:] for t in parse_tables(text) if t[0] == list(header)]


def one_table(text: str, header: Sequence[str]) -> Table:
  found = tables_with_header(text, header)
  assert len(found) == 1, f"expected one table with header {header}, found {len(found)}"
  return found[0]


def numbers(cell: str) -> list[str]:
  return NUMBER.findall(cell.replace("*", ""))


def matches(text: str, value: float) -> bool:
  """`text` (one number as displayed) is `value` rounded to the precision `text` shows."""
  t = text.replace("−", "-")
  mantissa, _, exponent = t.partition("e")
  decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
  step = 10.0 ** -decimals * (10.0 ** int(exponent) if exponent else 1.0)
  return abs(float(t) - value) < 0.5 * step + 1e-9 * max(1.0, abs(value))


def check_numbers(cell: str, expected: Sequence[float], what: str) -> None:
  """Every number in `cell`, in order, is the corresponding expected value as displayed."""
  got = numbers(cell)
  assert len(got) == len(expected), f"{what}: cell numbers {got} vs expected {list(expected)}"
  for text, value in zip(got, expected):
    assert matches(text, value), f"{what}: {text} is not {value} as displayed (cell: {cell!r})"


def check_cell(cell: str, value: float, what: str) -> None:
  check_numbers(cell, [value], what)


def yes_no(flag: bool) -> str:
  return "yes" if flag else "no"


# --------------------------------------------------------------------------------------
# Experiment tables


def test_main_job_table_equals_eval_json():
  with open(FIGURES / "main" / "eval.json") as f:
    ev = json.load(f)
  rows = one_table(results_md(), ["Features", "linear probe", "kNN-200", "kNN-20"])
  keys = {"SimCLR, 3000 steps": "model", "raw pixels": "raw_pixels", "random-init encoder": "random_init"}
  assert [r[0] for r in rows] == list(keys)
  for name, *cells in rows:
    rec = ev[keys[name]]
    for cell, key in zip(cells, ("linear_probe", "knn_200", "knn_20")):
      check_cell(cell, rec[key], f"main job {name} {key}")


def test_temperature_tables_equal_the_scripts_tables_of_results_json():
  """The seeded sweep: docs/results.md shows temperature_sweep.py's tables of the committed JSON,
  whose summary is the script's summary of its per-seed rows."""
  ts = _experiment("temperature_sweep")
  res = load("temperature")
  assert res["seeds"] == [0, 1, 2] and res["steps"] == 500
  assert {(r["seed"], r["temperature"]) for r in res["rows"]} == {(s, t) for s in (0, 1, 2) for t in ts.TEMPERATURES}
  assert res["summary"] == json.loads(json.dumps(ts.summarise(res)))
  _tables_in_docs_equal(ts.table_lines(res), "temperature")


JING_HEADER = ["steps", "variant", "projector", "linear probe (%)", "kNN-200 (%)", "eff. rank z", "eff. rank r",
               "collapsed dims of r"]


def test_dimensional_collapse_table_500_and_2000_steps():
  by_steps = {str(r["steps"]): {row["variant"]: row for row in r["rows"]}
              for r in (load("dimensional_collapse"), load("dimensional_collapse_2000"))}
  rows = one_table(results_md(), JING_HEADER)
  assert sorted((r[0], r[1]) for r in rows) == sorted((s, v) for s, vs in by_steps.items() for v in vs)
  for steps, variant, projector, *cells in rows:
    rec = by_steps[steps][variant]
    assert projector == rec["projector"]
    for cell, key in zip(cells[:4], ("linear_probe", "knn_200", "effective_rank_z", "effective_rank_r")):
      check_cell(cell, rec[key], f"Jing {steps} {variant} {key}")
    assert int(cells[4].strip("*")) == rec["collapsed_dims_r"]


NONCONTRASTIVE_HEADER = ["method", "EMA target", "linear probe (%)", "kNN-200 (%)", "eff. rank z", "eff. rank r",
                         "collapsed"]


@pytest.mark.parametrize("index,name", [(0, "noncontrastive"), (1, "noncontrastive_long")])
def test_noncontrastive_tables_300_and_1000_steps(index: int, name: str):
  tables = tables_with_header(results_md(), NONCONTRASTIVE_HEADER)
  assert len(tables) == 2  # 300 steps, then 1000 steps
  ema = {(r["method"], yes_no(r["ema"])): r for r in load(name)["rows"] if r["part"] == "ema"}
  rows = tables[index]
  assert sorted((r[0], r[1]) for r in rows) == sorted(ema)
  for method, target, *cells in rows:
    rec = ema[(method, target)]
    for cell, key in zip(cells[:4], ("linear_probe", "knn_200", "effective_rank_z", "effective_rank_r")):
      check_cell(cell, rec[key], f"{name} {method} {target} {key}")
    assert cells[4] == yes_no(rec["collapsed"])


BAO_HEADER = ["loss", "weight decay", "linear probe (%)", "kNN-200 (%)", "eff. rank z", "RMS norm z",
              "norm collapse", "dim. collapse"]


def test_bao_weight_decay_table():
  wd = {(r["kind"], r["weight_decay"]): r for r in load("noncontrastive")["rows"] if r["part"] == "wd"}
  rows = one_table(results_md(), BAO_HEADER)
  assert len(rows) == len(wd)
  for kind, decay, probe, knn, erank, norm, norm_collapse, dim_collapse in rows:
    rec = wd[(kind, float(decay))]
    for cell, key in ((probe, "linear_probe"), (knn, "knn_200"), (norm, "norm_z")):
      check_cell(cell, rec[key], f"Bao {kind} {decay} {key}")
    check_cell(numbers(erank)[0], rec["effective_rank_z"], f"Bao {kind} {decay} erank")
    assert norm_collapse.strip("*") == yes_no(rec["norm_collapsed"])
    # a norm-collapsed member's rank is that of noise: its dimensional collapse is shown as "–"
    assert dim_collapse.strip("*") == ("–" if rec["norm_collapsed"] else yes_no(rec["dim_collapsed"]))


KOROMILAS_HEADER = ["loss", "batch", "param", "value", "steps", "images seen", "linear probe (%)", "kNN-200 (%)",
                    "eff. rank z", "eff. rank r"]


def test_koromilas_batch_size_table():
  res = load("contrastive_batch_size")["rows"]
  rows = one_table(results_md(), KOROMILAS_HEADER)
  assert len(rows) == len(res)
  for loss, batch, param, value, steps, seen, *cells in rows:
    (rec,) = [r for r in res if r["loss"] == loss and r["batch"] == int(batch) and float(value) == r["scale"]]
    assert param == rec["scale_name"] and int(steps) == rec["steps"] and int(seen) == rec["images_seen"]
    for cell, key in zip(cells, ("linear_probe", "knn_200", "effective_rank_z", "effective_rank_r")):
      check_cell(cell, rec[key], f"Koromilas {loss} {batch} {value} {key}")


# --------------------------------------------------------------------------------------
# The status table: the numbers of each row's "jaxssl value" cell, in order


def _collapsed(spectrum: Sequence[float], fraction: float) -> int:
  top = max(spectrum)
  return sum(1 for e in spectrum if e < fraction * top)


def _koromilas_cells() -> dict[tuple[int, int], dict[str, dict[str, Any]]]:
  cells: dict[tuple[int, int], dict[str, dict[str, Any]]] = {}
  for r in load("contrastive_batch_size")["rows"]:
    cells.setdefault((r["batch"], r["member"]), {})[r["loss"]] = r
  return cells


def _dhel_margins() -> dict[tuple[int, int], float]:
  """DHEL's probe accuracy minus the best of NT-Xent and DCL, per (batch, τ member)."""
  return {k: c["dhel"]["linear_probe"] - max(c["nt_xent"]["linear_probe"], c["dcl"]["linear_probe"])
          for k, c in _koromilas_cells().items()}


def status_expectations() -> dict[str, list[float]]:
  """Row id -> the numbers its jaxssl cell must show, from the committed results.json files."""
  t = load("temperature")
  t_claims = t["summary"]["claims"]
  taus = (0.1, 0.2, 0.5, 1.0)
  simple = t["summary"]["simple"]

  def ms(stat: dict) -> list[float]:
    return [stat["mean"], stat["sd"]]

  def cell(tau: float, key: str) -> list[float]:
    return ms(t["summary"]["cells"][f"{tau:g}"][key])
  kor = load("contrastive_batch_size")["claims"]
  losses = ("dhel", "kcl", "nt_xent", "dcl")
  margins = _dhel_margins()
  bsr_seeds = load("batch_size_robustness")["seeds"]
  versus = load("batch_size_robustness")["summary"]["steps"]["versus_nt_xent"]

  def erank_vs(loss: str, batch: int) -> list[float]:
    return [versus[f"{loss}_b{batch}"]["effective_rank_z"][k] for k in ("mean", "sd")]

  hem = load("dynamics/hem")
  bs = hem["batch_size"]
  mins = hem["minimisers"]
  d5, d20 = ({row["variant"]: row for row in load(name)["rows"]}
              for name in ("dimensional_collapse", "dimensional_collapse_2000"))

  case1 = load("dynamics/jing")["case1_strong_augmentation"]
  seeds = list(zip(*case1["ratio_per_seed"]))
  case2 = load("dynamics/jing")["case2_implicit_regularisation"]
  aligned = [x for pair in case2["block_alignment_final(surviving,collapsed)"] for x in pair]
  at_init = [x for pair in case2["block_alignment_init(surviving,collapsed)"] for x in pair]
  tian = load("dynamics/tian")
  we = tian["worked_example"]
  pd = tian["phase_diagram"]
  inv = tian["invariant"].values()
  nc = {(r["method"], r["ema"]): r for r in load("noncontrastive")["rows"] if r["part"] == "ema"}
  ncl = {(r["method"], r["ema"]): r for r in load("noncontrastive_long")["rows"]}
  wds = load("noncontrastive_wd_seeded")["wd_seeded"]["cells"]
  wd_pair = load("noncontrastive_wd_seeded")["wd_seeded"]["probe_cosine_minus_l2_at_max_wd"]
  methods = load("methods")
  paired = methods["paired"]["directpred_minus_byol"]
  hal = load("dynamics/halvagal")
  tr = hal["trajectories_1500_steps_lr0.01"]
  w05 = hal["weight_decay_0.5"]
  sp = hal["speedup"]
  bao = load("dynamics/bao")
  run = bao["paper_run"]
  ivd = load("isoloss_vs_directpred")["summary"]
  bpd = bao["phase_diagram"]
  hard_res = load("hard_contrastive")

  def hard_cells(alpha: float, key: str) -> list[float]:
    cells = hard_res["summary"]["cells"]
    return [x for t in hard_res["temperatures"] for x in (cells[f"tau{t:g}_alpha{alpha:g}"][key]["mean"],
                                                           cells[f"tau{t:g}_alpha{alpha:g}"][key]["sd"])]
  bsr = load("batch_size_robustness")["summary"]["steps"]
  seeded = load("dimensional_collapse_seeded")
  seeded_claims = seeded["claims"]
  thresholds = seeded["thresholds"]

  def seeded_stat(variant: str, key: str) -> list[float]:
    st = seeded["summary"][variant][key]
    return [st["mean"], st["sd"]]

  def seeded_counts(variant: str) -> list[float]:
    return [x for t in thresholds for x in seeded_stat(variant, f"test_collapsed_r_{t:g}")]
  return {
      "A1": [*t["seeds"], *(x for tau in taus for x in cell(tau, "uniformity_z")), 0.1, 1.0, *cell(0.07, "uniformity_z"),
             0.07, 0.1, 1, *ms(t_claims["uniformity"]["drop_tau0.1_minus_tau1"])],
      "A2": [*t["seeds"], *(x for tau in taus for x in cell(tau, "tolerance_z")), 0.1, 1.0, *cell(0.07, "tolerance_z"),
             0.07, 1, 0.1, *ms(t_claims["tolerance"]["rise_tau1_minus_tau0.1"])],
      "A3": [*t["seeds"], *cell(0.1, "linear_probe"), 0.1, *cell(0.07, "linear_probe"), 0.07, *cell(1.0, "linear_probe"),
             1, 0.07, *ms(t_claims["accuracy"]["peak_minus_end"]["0.07"]), 1, *ms(t_claims["accuracy"]["peak_minus_end"]["1"])],
      "A4": [*t["seeds"], *ms(simple["uniformity_z"]), *ms(simple["tolerance_z"]), *ms(simple["linear_probe"]),
             *(x for k in ("uniformity_nearest_minus_simple", "tolerance_simple_minus_nearest", "probe_nearest_minus_simple")
               for x in ms(t_claims["simple"][k]))],
      "A5": [*hard_res["seeds"], 0.2, 0.5, 1.0, 0.1, *hard_cells(0.1, "uniformity_z"), 1.0, *hard_cells(1.0, "uniformity_z"),
             *hard_cells(0.1, "tolerance_z"), *hard_cells(1.0, "tolerance_z"),
             *hard_cells(0.1, "linear_probe"), *hard_cells(1.0, "linear_probe")],
      "B1": [600, 256, 32, *(x for loss in ("nt_xent", "dhel", "kcl")
                              for x in (*(bsr["drop"][loss][str(s)] for s in (0, 1, 2)),
                                        bsr["drop_mean_sd"][loss]["mean"], bsr["drop_mean_sd"][loss]["sd"]))],
      "B2": [600, *bsr_seeds, *erank_vs("dhel", 32), 32, *erank_vs("dhel", 256), 256, *erank_vs("kcl", 32),
             *erank_vs("kcl", 256), 1, *(kor["mean_erank_z"][x] for x in losses), len(margins)],
      "B3": [*(x for b in (32, 256) for x in (*versus[f"dhel_b{b}"]["linear_probe"]["diffs"],
                                              *(versus[f"dhel_b{b}"]["linear_probe"][k] for k in ("mean", "sd")), b)),
             1, sum(m > 0 for m in margins.values()), len(margins),
             *(v for b in (32, 64, 128, 256) for v in (b, margins[(b, 0)], margins[(b, 1)])), 0.1, 0.5],
      "B4": [*bs["kcl"]["mean"], *bs["M"], bs["kcl_population"], bs["info_nce"]["mean"][0], bs["info_nce"]["mean"][-1],
             bs["dhel_paper"]["mean"][0], bs["dhel_paper"]["mean"][-1]],
      "B5": [max(le["gram_error"] for e in mins.values() for le in e["losses"].values()),
             *(v for k in ("simplex", "cross-polytope", "pentagon", "icosahedron") for v in (mins[k]["m"], mins[k]["d"])),
             mins["icosahedron"]["temperature"]],
      "C1": [10, 0, 2000, *thresholds, *seeded_counts("none"), *seeded_counts("mlp"),
             *seeded_stat("none", "test_effective_rank_r"), *seeded_stat("mlp", "test_effective_rank_r")],
      "C2": [2000, *seeded["seeds"], *seeded_stat("mlp", "effective_rank_z"), 128, *seeded_stat("mlp", "effective_rank_r"),
             256, *seeded_claims["seeded_mlp_erank_fraction_r_minus_z"]["diffs"],
             *(seeded_claims["seeded_mlp_erank_fraction_r_minus_z"][k] for k in ("mean", "sd")), 1,
             d20["linear"]["effective_rank_z"], d20["linear"]["effective_rank_r"], 2000,
             d20["linear"]["erank_z_frac"], d20["linear"]["erank_r_frac"], 500,
             d5["mlp"]["effective_rank_z"], d5["mlp"]["effective_rank_r"],
             d5["linear"]["effective_rank_z"], d5["linear"]["effective_rank_r"]],
      "C3": [2000, *seeded_counts("directclr"), *seeded_counts("none"),
             *(x for v in ("directclr", "none", "mlp") for x in seeded_stat(v, "test_effective_rank_r"))],
      "C4": [2000, 10, *(x for v in ("mlp", "directclr", "none") for x in seeded_stat(v, "linear_probe")),
             *seeded_claims["accuracy_mlp_minus_directclr"]["diffs"],
             *(seeded_claims[k][m] for k in ("accuracy_mlp_minus_directclr", "accuracy_mlp_minus_none",
                                             "accuracy_directclr_minus_none") for m in ("mean", "sd"))],
      "C5": [v for s in seeds for v in (statistics.mean(s), statistics.stdev(s))],
      "C6": [statistics.mean(case2["n_below_minus8"]), statistics.stdev(case2["n_below_minus8"]), -8,
             *case2["n_below_minus8"], *case2["survivor_log_eig_range"], min(aligned), max(aligned),
             min(at_init), max(at_init)],
      "D1": [we["closed_form_p_minus_p_plus"]["0.05"][1], we["closed_form_p_minus_p_plus"]["0.15"][1],
             we["threshold"], max(abs(p) for p in we["integrated_p_final"]["eta=0.194"].values()), 0.194,
             100 * pd["ode_vs_closed_form_agreement"], *pd["grid"], 100 * pd["network_vs_closed_form_agreement"],
             *pd["network_grid"], max(i["max_rel_err_ode"] for i in inv), max(i["max_rel_err_network"] for i in inv)],
      "D2": [3000, 256, *({r["method"]: r for r in methods["summary"]}[m]["linear_probe"][k] for m in ("directpred", "byol") for k in ("mean", "sd")),
             *paired["diffs"], paired["mean"], paired["sd"],
             1, 300, nc[("directpred", True)]["linear_probe"], nc[("byol", True)]["linear_probe"]],
      "E1": [nc[("isoloss", False)]["linear_probe"], nc[("directpred", False)]["linear_probe"], 300,
             ncl[("isoloss", False)]["linear_probe"], ncl[("directpred", False)]["linear_probe"], 1000,
             nc[("isoloss", False)]["effective_rank_z"], nc[("directpred", False)]["effective_rank_z"],
             ncl[("isoloss", False)]["effective_rank_z"], ncl[("directpred", False)]["effective_rank_z"], 1000,
             ncl[("isoloss", True)]["linear_probe"], ncl[("directpred", True)]["linear_probe"]],
      "E2": [*(100 * tr[k][m] for k in ("euclidean", "euclidean_iso", "cosine", "cosine_iso")
               for m in ("max_rel_err", "median_rel_err")), hal["d_out"],
             hal["cosine"]["max_over_min_initial"], hal["cosine"]["max_over_min_final_network"],
             hal["cosine"]["trace_rel_change_network"], 0.5, max(w05["euclidean"]["final_network"]),
             min(w05["euclidean_iso"]["final_network"]), max(w05["euclidean_iso"]["final_network"]),
             w05["isoloss_closed_form"]],
      "E3": [sp["t90_euclidean_ode"], sp["t90_isoloss_ode"], sp["t90_isoloss_closed_form"],
             sp["t90_euclidean_network"], sp["t90_isoloss_network"]],
      "E4": [*(v for m in ("linear_probe", "effective_rank_z") for arm in ("isoloss", "byol")
               for v in (ivd["per_arm"][arm][m]["mean"], ivd["per_arm"][arm][m]["sd"])),
             *(v for m in ("linear_probe", "effective_rank_z")
               for v in (ivd["paired"][m]["mean"], ivd["paired"][m]["sd"]))],
      "F1": [run["l2_norm_phi_final"], run["cosine_norm_phi_final"], run["cosine_participation_ratio_final"], bao["h"]],
      "F2": [run["gradient_flow_norm_decay_max_rel_err"]],
      "F3": [100 * bao["eigen_trajectories"]["max_err_s_over_max"], 100 * bao["eigen_trajectories"]["max_err_p_over_max"],
             bao["eigen_trajectories"]["rho"], bao["h"]],
      "F4": [*bpd["grid"], 100 * bpd["l2"]["agreement_with_theory"], 100 * bpd["cosine"]["agreement_with_theory"],
             100 * bpd["l2"]["collapsed_fraction"], 100 * bpd["cosine"]["collapsed_fraction"]],
      "F5": [0, 1, 2, 100.0, *ms(wds["l2_wd100"]["norm_z"]), *ms(wds["cosine_wd100"]["norm_z"]),
             *ms(wds["cosine_wd30"]["effective_rank_z"]), 30.0, *ms(wds["cosine_wd100"]["effective_rank_z"]), 100.0,
             100.0, *ms(wds["cosine_wd100"]["linear_probe"]), *ms(wds["l2_wd100"]["linear_probe"]),
             *wd_pair["diffs"], *ms(wd_pair)],
  }


def verdict_expectations() -> dict[str, list[float]]:
  """Row id -> the numbers of its verdict cell, for the verdicts that quote results.json numbers."""
  margins = sorted(m for m in _dhel_margins().values() if m < 0.5)
  widths = load("dynamics/halvagal")["cosine"]["max_rel_err_vs_width"]
  d2 = load("methods")["paired"]["directpred_minus_byol"]
  return {
      "A5": [*(load("hard_contrastive")["summary"]["per_hard_alpha"]["0.1"]["range_diff_ordinary_minus_hard"][k]
               for k in ("mean", "sd")), 0.5],
      "B1": [x for loss in ("dhel", "kcl") for x in (load("batch_size_robustness")["summary"]["steps"]["rule"][loss]["mean"],
                                                    load("batch_size_robustness")["summary"]["steps"]["rule"][loss]["sd"])],
      "B3": [3, 2, 1.1, 1.4, len(margins), len(_dhel_margins()), *margins, 0.5],
      "C2": [*(load("dimensional_collapse_seeded")["claims"]["seeded_mlp_erank_fraction_r_minus_z"][k]
               for k in ("mean", "sd")), 2],
      "D2": [2, 2, abs(d2["mean"]) + 2 * d2["sd"], d2["equivalence_margin"]],
      "C4": [2, 1, {r["variant"]: r for r in load("dimensional_collapse_2000")["rows"]}["linear"]["linear_probe"], 2000, 30],
      "B5": [len(load("dynamics/hem")["minimisers"]), len(load("dynamics/hem")["minimisers"]["icosahedron"]["losses"])] * 2,
      "E2": [10, *(100 * w["cosine"] for w in widths), *(w["d_out"] for w in widths)],
  }


ISOLOSS_HEADER = ["arm", "seed", "linear probe (%)", "kNN-200 (%)", "eff. rank z", "eff. rank r", "wall (s)"]
ISOLOSS_METRICS = ("linear_probe", "knn_200", "effective_rank_z", "effective_rank_r")


def test_isoloss_vs_byol_loss_table_equals_results_json():
  """The controlled Halvagal comparison: every run, the arms' mean ± sd and the paired gap."""
  res = load("isoloss_vs_directpred")
  rows = one_table(results_md(), ISOLOSS_HEADER)
  labels = {"IsoLoss": "isoloss", "BYOL loss (DirectPred arm)": "byol"}
  runs = {(r["arm"], r["seed"]): r for r in res["runs"]}
  s = res["summary"]
  seen = 0
  for row in rows:
    if row[0] in labels:
      r = runs[(labels[row[0]], int(row[1]))]
      check_numbers(" ".join(row[2:]), [*(r[m] for m in ISOLOSS_METRICS), r["seconds"]], f"isoloss run {row[:2]}")
      seen += 1
    elif row[0].startswith("paired gap"):
      check_numbers(" ".join(row[2:]), [v for m in ISOLOSS_METRICS for v in
                                        (s["paired"][m]["mean"], s["paired"][m]["sd"])], row[0])
    else:
      assert row[0].endswith(", mean ± sd"), row
      arm = labels[row[0][:-len(", mean ± sd")]]
      check_numbers(" ".join(row[2:]), [v for m in ISOLOSS_METRICS for v in
                                        (s["per_arm"][arm][m]["mean"], s["per_arm"][arm][m]["sd"])], row[0])
  assert seen == len(res["runs"]) == 2 * len(res["seeds"])
  assert res["differing_fields"] and all(d == ["loss.objective"] for d in res["differing_fields"].values())
  assert f"**Verdict: {s['verdict']}**" in results_md()


STATUS_HEADER = ["#", "claim (PAPERS.md section)", "paper or re-simulation value", "jaxssl value", "verdict", "seeds",
                 "command"]


def status_rows() -> dict[str, list[str]]:
  rows = one_table(results_md(), STATUS_HEADER)
  assert all(len(r) == len(STATUS_HEADER) for r in rows), "a status row has a stray or missing '|'"
  return {r[0]: r for r in rows}


def test_status_table_has_one_row_per_claim_in_order():
  ids = list(status_rows())
  assert ids == list(status_expectations())
  assert {i[0] for i in ids} == set("ABCDEF")


@pytest.mark.parametrize("row_id", list(status_expectations()))
def test_status_table_jaxssl_values(row_id: str):
  check_numbers(status_rows()[row_id][3], status_expectations()[row_id], f"status {row_id}")


@pytest.mark.parametrize("row_id", list(verdict_expectations()))
def test_status_table_verdict_numbers(row_id: str):
  check_numbers(status_rows()[row_id][4], verdict_expectations()[row_id], f"status verdict {row_id}")


def test_status_table_claims_that_the_numbers_carry():
  """The comparisons the status rows state in words hold in the JSON."""
  cells = _koromilas_cells()
  assert all(c["dhel"]["linear_probe"] > max(c["nt_xent"]["linear_probe"], c["dcl"]["linear_probe"])
             for c in cells.values())  # B3: 8 of 8
  for c in cells.values():  # B2: DHEL and KCL higher effective rank of z in every cell
    assert min(c["dhel"]["effective_rank_z"], c["kcl"]["effective_rank_z"]) > max(
        c["nt_xent"]["effective_rank_z"], c["dcl"]["effective_rank_z"])
  mins = load("dynamics/hem")["minimisers"]
  # B5: all four configurations for all five losses
  assert all(sorted(e["losses"]) == ["dcl", "dhel", "info_nce", "kcl", "nt_xent"] for e in mins.values())
  for name in ("dimensional_collapse", "dimensional_collapse_2000"):
    res = load(name)
    rows = {r["variant"]: r for r in res["rows"]}
    for v, r in rows.items():  # C1: the committed counts are the 1e-6 tail of the committed spectra
      assert _collapsed(res["spectra"][v]["spectrum_r"], COLLAPSED_EIG_FRACTION) == r["collapsed_dims_r"]
    assert max(rows, key=lambda v: rows[v]["effective_rank_r"]) == "directclr"  # C3
  assert load("dynamics/jing")["case1_strong_augmentation"]["monotonic_every_seed"]  # C5
  widths = [w["d_out"] for w in load("dynamics/halvagal")["cosine"]["max_rel_err_vs_width"]]
  script = (ROOT / "experiments" / "dynamics_halvagal.py").read_text()
  assert widths == [10, 20, 40, 80] and "for d_out in (10, 20, 40, 80):" in script  # E2: the script's scan


# --------------------------------------------------------------------------------------
# Experiments' total CPU time


def _json_seconds() -> dict[str, Callable[[], float]]:
  def dyn(name: str) -> float:
    return float(load(f"dynamics/{name}")["seconds"])

  def jing() -> float:
    j = load("dynamics/jing")
    return j["case1_strong_augmentation"]["seconds"] + j["case2_implicit_regularisation"]["seconds"]

  return {
      "Wang & Liu, temperature (3 seeds)": lambda: sum(load("temperature")["seconds"].values()),
      "Jing, 500 steps": lambda: load("dimensional_collapse")["seconds"],
      "Jing, 2000 steps": lambda: load("dimensional_collapse_2000")["seconds"],
      "non-contrastive, weight-decay part": lambda: load("noncontrastive")["seconds"],
      "non-contrastive, 1000 steps": lambda: load("noncontrastive_long")["seconds"],
      "Koromilas, batch 32 and 128": lambda: load("contrastive_batch_size")["seconds"],
      "label-free selection": lambda: sum(load("label_free_selection")["seconds"].values()),
      "Tian dynamics": lambda: dyn("tian"),
      "Halvagal dynamics": lambda: dyn("halvagal"),
      "Bao dynamics": lambda: dyn("bao"),
      "Jing toy cases": jing,
      "HEM minimisers": lambda: dyn("hem"),
      "IsoLoss vs BYOL loss, controlled (3 seeds)": lambda: load("isoloss_vs_directpred")["seconds"],
      "Jing, seeded (3 seeds, r on the test set)":
          lambda: sum(r["seconds"] for r in load("dimensional_collapse_seeded")["rows"]),
      "Koromilas, seeded (3 seeds, equal steps)":
          lambda: sum(r["seconds"] for r in load("batch_size_robustness")["runs"]),
      "Wang & Liu, hard contrastive loss (seed 2)": lambda: load("hard_contrastive")["seconds"],
      "method table (issue 19; 16 methods, 23 runs)": lambda: load("methods")["total_seconds"],
      "Bao in a network, seeded (3 seeds)": lambda: load("noncontrastive_wd_seeded")["seconds"],
  }


# rows whose time is stated in the docs' text, not in a results.json: (where, the text that states it)
DOCS_TIMES = {
    "main job": ("README.md", "(commit eced32d, seed 0): **13 min 56 s** wall", 13 + 56 / 60),
    "non-contrastive, EMA part (300 steps)": ("docs/results.md", "--probe-epochs 10` (15 min).", 15.0),
    "Koromilas, batch 64 and 256": ("docs/results.md", "13 min for batch 64 and 256", 13.0),
    "Wang & Liu, hard contrastive loss (seeds 0, 1)": ("docs/results.md", "seed 0: about 24 min", 45.0),
}


def test_cpu_time_table():
  rows = one_table(results_md(), ["experiment", "command", "wall time (min)", "source"])
  *body, total = rows
  seconds = _json_seconds()
  assert sorted(r[0] for r in body) == sorted([*seconds, *DOCS_TIMES])
  for name, _, minutes, source in body:
    if name in seconds:
      check_cell(minutes, seconds[name]() / 60, f"time of {name}")
      assert "results.json" in source
    else:
      where, text, value = DOCS_TIMES[name]
      assert text in (ROOT / where).read_text(), f"{where} no longer states {text!r}"
      check_cell(minutes, value, f"time of {name}")
  json_min = sum(f() for f in seconds.values()) / 60
  docs_min = sum(v for _, _, v in DOCS_TIMES.values())
  assert total[0] == "**total**"
  check_cell(total[2], json_min + docs_min, "total time")
  check_numbers(total[3], [json_min, docs_min, (json_min + docs_min) / 60], "total time split")


# --------------------------------------------------------------------------------------
# Issue 17's seeded experiments: the docs' tables are the scripts' tables of the committed JSON,
# and their mean ± sd cells are recomputed here from the per-run rows.

def _experiment(module: str):
  import sys
  sys.path.insert(0, str(ROOT / "experiments"))
  import importlib
  return importlib.import_module(module)


def _tables_in_docs_equal(lines: list[str], what: str) -> None:
  """Each markdown table of `lines` appears verbatim in docs/results.md."""
  text = results_md()
  docs = parse_tables(text)
  for table in parse_tables("\n".join(lines)):
    assert table in docs, f"{what}: docs/results.md lacks the table with header {table[0]}"


def _mean_sd_cell(cell: str, values: Sequence[float], what: str) -> None:
  check_numbers(cell, [statistics.fmean(values), statistics.stdev(values)], what)


def test_batch_size_robustness_docs_table():
  bsr = _experiment("batch_size_robustness")
  res = load("batch_size_robustness")
  _tables_in_docs_equal(bsr.table_lines(res), "batch_size_robustness")
  assert res["seeds"] == [0, 1, 2] and res["steps"] == 600 and res["batches"] == [32, 256]
  rows = one_table(results_md(), ["loss", "scale", "budget", "batch", "steps", "images seen", "linear probe (%)",
                                  "kNN-200 (%)", "eff. rank z"])
  for r in rows:
    loss = {v: k for k, v in bsr.LABELS.items()}[r[0]]
    sel = [x for x in res["runs"] if x["loss"] == loss and x["batch"] == int(r[3]) and r[2] in x["budgets"]]
    assert len(sel) == 3
    _mean_sd_cell(r[6], [x["linear_probe"] for x in sel], f"{r[:4]} probe")
    _mean_sd_cell(r[8], [x["effective_rank_z"] for x in sel], f"{r[:4]} erank")
  verdict = res["summary"]["verdict"]
  assert f"**Verdict (equal steps): {verdict}**" in results_md()


def test_dimensional_collapse_seeded_docs_table():
  dc = _experiment("dimensional_collapse")
  res = load("dimensional_collapse_seeded")
  _tables_in_docs_equal(dc.seeded_table(res), "dimensional_collapse_seeded")
  assert res["seeds"] == [0, 1, 2] and res["steps"] == 2000
  for r in res["rows"]:   # the stored counts are those of the stored float64 spectrum
    assert r["test"]["n_images"] == 10_000
    assert r["test"]["collapsed_r"] == dc.collapsed_counts(r["test"]["spectrum_r"])
  assert res["claims"] == json.loads(json.dumps(dc.seeded_claims(res["rows"], res["seeds"])))


def test_noncontrastive_wd_seeded_docs_table():
  """Bao in a network, 3 seeds: the docs show noncontrastive.py's seeded table of the committed JSON,
  whose summary is the script's summary of its per-seed rows."""
  nc = _experiment("noncontrastive")
  res = load("noncontrastive_wd_seeded")
  seeds = res["wd_seeded"]["seeds"]
  assert seeds == [0, 1, 2] and res["steps"] == 300 and res["probe_epochs"] == 10
  rows = [r for r in res["rows"] if r["part"] == "wd"]
  assert sorted((r["seed"], r["kind"], r["weight_decay"]) for r in rows) == sorted(
      (s, k, w) for s in seeds for k in ("l2", "cosine") for w in (1.0, 3.0, 10.0, 30.0, 100.0))
  assert res["wd_seeded"] == json.loads(json.dumps(nc.wd_seeded_summary(rows, seeds)))
  _tables_in_docs_equal(nc.wd_seeded_table(res["wd_seeded"]), "noncontrastive_wd_seeded")


def test_hard_contrastive_docs_table():
  hc = _experiment("hard_contrastive")
  res = load("hard_contrastive")
  _tables_in_docs_equal(hc.table_lines(res), "hard_contrastive")
  assert res["seeds"] == [0, 1, 2]
  assert res["summary"] == json.loads(json.dumps(hc.summarise(res)))
