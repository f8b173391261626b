"""NT-Xent vs DHEL vs KCL at batch 32 vs 256, seeded, under two budgets: a controlled test of
Koromilas et al. (ICML 2024; PAPERS.md B): DHEL and KCL are more robust to the batch size.

This replaces the confounded design of contrastive_batch_size.py (which mixed two τ / t
values per loss and gave smaller batches more steps). Here:
  * each loss at its own default scale: NT-Xent τ = experiments/configs/simclr.py's, DHEL
    τ = dhel.py's, KCL t = kcl.py's (Gaussian kernel, γ = 16); nothing else differs between
    the losses (the rest of the recipe is experiments/configs/common.py's contrastive one);
  * two batch sizes, `--batches` (default 32,256);
  * two budgets: "steps", every batch size for `--steps` (600) steps; "images", equal images
    seen: batch b trains for steps·max(batches)/b steps (batch 32: 4800). The largest batch
    has the same run under both budgets, which is trained once;
  * seeds `--seeds` (0,1,2) as `config.seed` (initial parameters, data order, augmentations):
    within a seed every loss starts from the same encoder parameters and sees the same images.

Evaluation (jaxssl's end-of-training evaluation): linear probe (`--probe-epochs`, 10) and
weighted kNN-200 of r on train -> test, effective rank of z on the first 5 000 test images.

Verdict rule (pre-registered in the issue): for loss L, seed s and budget B, the drop
d_L(s) = probe(L, batch max, s) − probe(L, batch min, s) (positive: the small batch is worse).
Under the "steps" budget the claim is reproduced when d_DHEL(s) < d_NT-Xent(s) AND
d_KCL(s) < d_NT-Xent(s) for every seed; "mixed" when one of the two holds for every seed.
The same rule under the "images" budget is reported beside it (not the verdict), and the
paired differences d_NT-Xent(s) − d_L(s) with their mean ± sd (ddof 1).

The same runs also test, per batch size, the paper's other two claims against NT-Xent: DHEL and
KCL have the higher effective rank of z, and DHEL the better probe. For each robust loss L,
batch b and metric m: the paired differences m(L, b, s) − m(NT-Xent, b, s) over the seeds, and
rc.paired_order's result ("first ahead": L ahead in every seed with |mean| > 2 sd; else "tie").

    python experiments/batch_size_robustness.py --out runs/batch_size_robustness
        [--steps 600] [--batches 32,256] [--seeds 0,1,2] [--losses nt_xent,dhel,kcl] [--budgets steps,images]
        [--probe-epochs 10] [--quick] [--replot]

Writes results.json and table.md to --out; a finished workdir (<out>/<loss>_b<batch>_
<steps>steps_seed<s>, with eval.json) is reused, one with checkpoints is resumed.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from typing import Any, Mapping, Sequence

import reproduce_common as rc

LOSSES = {"nt_xent": "simclr", "dhel": "dhel", "kcl": "kcl"}    # loss -> experiments/configs/<name>.py
LABELS = {"nt_xent": "NT-Xent", "dhel": "DHEL", "kcl": "KCL"}
ROBUST = ("dhel", "kcl")
BASE = "nt_xent"
BUDGETS = ("steps", "images")
METRICS = ("linear_probe", "knn_200", "effective_rank_z")


def budget_steps(budget: str, batch: int, steps: int, batches: Sequence[int]) -> int:
  """Steps of a run at `batch`: `steps` ("steps"), or steps·max(batches)/batch ("images")."""
  if budget == "steps":
    return int(steps)
  if budget == "images":
    return max(1, round(steps * max(batches) / batch))
  raise ValueError(f"budget must be one of {BUDGETS}, got {budget!r}")


def scale_of(cfg) -> tuple[str, float]:
  """The loss's scale parameter: ("t", KCL's t) or ("τ", the temperature)."""
  return ("t", float(cfg.loss.t)) if cfg.method == "kcl" else ("τ", float(cfg.loss.temperature))


def drops(runs: Sequence[Mapping[str, Any]], budget: str, batches: Sequence[int], metric: str = "linear_probe"
          ) -> dict[str, dict[int, float]]:
  """{loss: {seed: metric(batch max) − metric(batch min)}} of the runs under `budget`."""
  big, small = max(batches), min(batches)
  by = {(r["loss"], r["batch"], r["seed"]): r for r in runs if budget in r["budgets"]}
  out: dict[str, dict[int, float]] = {}
  for (loss, b, seed) in by:
    if b == big and (loss, small, seed) in by:
      out.setdefault(loss, {})[seed] = float(by[(loss, big, seed)][metric]) - float(by[(loss, small, seed)][metric])
  return out


def rule(drop: Mapping[str, Mapping[int, float]], seeds: Sequence[int]) -> dict[str, Any]:
  """Per robust loss L: the paired differences d_NT-Xent(s) − d_L(s), their mean ± sd, and
  whether d_L(s) < d_NT-Xent(s) in every seed; the verdict over both robust losses."""
  out: dict[str, Any] = {}
  for loss in ROBUST:
    if loss not in drop or BASE not in drop:
      continue
    diffs = [drop[BASE][s] - drop[loss][s] for s in seeds]
    out[loss] = {"diffs": diffs, **rc.mean_sd(diffs), "smaller_drop_every_seed": bool(all(d > 0 for d in diffs))}
  held = sum(bool(v["smaller_drop_every_seed"]) for v in out.values())
  out["verdict"] = ("reproduced" if out and held == len(ROBUST) else "mixed" if held else "not reproduced")
  return out


def versus_base(runs: Sequence[Mapping[str, Any]], budget: str, batches: Sequence[int], seeds: Sequence[int]
                ) -> dict[str, dict[str, dict[str, Any]]]:
  """{f"{L}_b{b}": {metric: rc.paired([metric(L, b, s) − metric(NT-Xent, b, s) for s in seeds])}}
  for the robust losses L and `batches` (cells where every seed finished for both losses)."""
  by = {(r["loss"], r["batch"], r["seed"]): r for r in runs if budget in r["budgets"]}
  out: dict[str, dict[str, dict[str, Any]]] = {}
  for loss in ROBUST:
    for b in batches:
      if all((loss, b, s) in by and (BASE, b, s) in by for s in seeds):
        out[f"{loss}_b{b}"] = {m: rc.paired([by[(loss, b, s)][m] - by[(BASE, b, s)][m] for s in seeds])
                               for m in ("effective_rank_z", "linear_probe")}
  return out


def summarise(result: Mapping[str, Any]) -> dict[str, Any]:
  runs, seeds, batches = result["runs"], result["seeds"], result["batches"]
  summary: dict[str, Any] = {}
  for budget in result.get("budgets", BUDGETS):
    d = drops(runs, budget, batches)
    per_cell = {}
    for loss in result["losses"]:
      for b in batches:
        sel = [r for r in runs if r["loss"] == loss and r["batch"] == b and budget in r["budgets"]]
        per_cell[f"{loss}_b{b}"] = {m: rc.mean_sd([r[m] for r in sel]) for m in METRICS}
    summary[budget] = {"drop": {k: {str(s): v for s, v in per.items()} for k, per in d.items()},
                       "drop_mean_sd": {k: rc.mean_sd(list(per.values())) for k, per in d.items()},
                       "cells": per_cell, "rule": rule(d, seeds),
                       "versus_nt_xent": versus_base(runs, budget, batches, seeds)}
  summary["verdict"] = summary["steps"]["rule"]["verdict"] if "steps" in summary else "not run"
  return summary


def table_lines(result: Mapping[str, Any]) -> list[str]:
  s, batches = result["summary"], result["batches"]
  lines = ["| loss | scale | budget | batch | steps | images seen | linear probe (%) | kNN-200 (%) | eff. rank z |",
           "|---|---|---|---|---|---|---|---|---|"]
  for budget in result.get("budgets", BUDGETS):
    for loss in result["losses"]:
      for b in batches:
        run = next(r for r in result["runs"] if r["loss"] == loss and r["batch"] == b and budget in r["budgets"])
        c = s[budget]["cells"][f"{loss}_b{b}"]
        lines.append(f"| {LABELS[loss]} | {run['scale_name']} {run['scale']:g} | {budget} | {b} | {run['steps']} | "
                     f"{run['steps'] * b} | {rc.pm(c['linear_probe'])} | {rc.pm(c['knn_200'])} | "
                     f"{rc.pm(c['effective_rank_z'])} |")
  big, small = max(batches), min(batches)
  lines += ["", f"Drop of the linear probe from batch {big} to {small} (points; per seed "
            f"{', '.join(map(str, result['seeds']))}) and the paired difference to NT-Xent's drop:", "",
            "| budget | loss | drop per seed | drop, mean ± sd | NT-Xent drop − this drop, mean ± sd | "
            "smaller than NT-Xent's in every seed |", "|---|---|---|---|---|---|"]
  for budget in result.get("budgets", BUDGETS):
    sb = s[budget]
    for loss in result["losses"]:
      if loss not in sb["drop"]:
        continue
      per = sb["drop"][loss]
      r = sb["rule"].get(loss)
      lines.append(f"| {budget} | {LABELS[loss]} | {', '.join(f'{per[str(x)]:+.2f}' for x in result['seeds'])} | "
                   f"{rc.pm(sb['drop_mean_sd'][loss])} | {rc.pm(r) if r else '–'} | "
                   f"{rc.fmt(r['smaller_drop_every_seed']) if r else '–'} |")
  lines += ["", "Each robust loss against NT-Xent at the same batch size, paired by seed (this loss − NT-Xent; "
            "ahead: one sign in every seed and |mean| > 2 sd):", "",
            "| budget | loss | batch | eff. rank z, per seed | mean ± sd | result | linear probe, per seed | "
            "mean ± sd | result |", "|---|---|---|---|---|---|---|---|---|"]
  for budget in result.get("budgets", BUDGETS):
    for key, v in s[budget].get("versus_nt_xent", {}).items():
      loss, b = key.rsplit("_b", 1)
      e, p = v["effective_rank_z"], v["linear_probe"]
      lines.append(f"| {budget} | {LABELS[loss]} | {b} | {', '.join(f'{d:+.2f}' for d in e['diffs'])} | {rc.pm(e)} | "
                   f"{rc.paired_label(e['result'], LABELS[loss], LABELS[BASE])} | "
                   f"{', '.join(f'{d:+.2f}' for d in p['diffs'])} | {rc.pm(p)} | "
                   f"{rc.paired_label(p['result'], LABELS[loss], LABELS[BASE])} |")
  images = (f"; under equal images seen the same rule gives {s['images']['rule']['verdict']}" if "images" in s
            else "; the equal-images budget was not run")
  lines += ["", f"**Verdict (equal steps): {s['verdict']}**{images} (rule: DHEL's and KCL's drop smaller than "
            "NT-Xent's in every seed)."]
  return lines


def write_outputs(result: dict, out: str) -> None:
  result["summary"] = summarise(result)
  result["claims"] = {"verdict_equal_steps": result["summary"]["verdict"]}
  for budget in result.get("budgets", BUDGETS):
    for key, v in result["summary"][budget]["versus_nt_xent"].items():
      for m, st in v.items():
        result["claims"][f"{budget}_{key}_{m}_minus_nt_xent"] = st["result"]
  if "images" in result["summary"]:
    result["claims"]["verdict_equal_images"] = result["summary"]["images"]["rule"]["verdict"]
  rc.write_outputs(out, result, [("NT-Xent vs DHEL vs KCL: batch-size robustness, seeded", table_lines(result))])


def main(argv: Sequence[str] | None = None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--out", default="runs/batch_size_robustness")
  rc.add_common_args(ap, steps=600, probe_epochs=10)
  ap.add_argument("--batches", type=rc.ints, default=None, help="batch sizes (default 32,256; --quick: 16,32)")
  ap.add_argument("--seeds", type=rc.ints, default=None, help="config.seed values (default 0,1,2; --quick: 0,1)")
  ap.add_argument("--losses", default=",".join(LOSSES), help=f"subset of {','.join(LOSSES)} (must include nt_xent "
                                                              "for the verdict)")
  ap.add_argument("--budgets", default=",".join(BUDGETS), help="subset of steps,images (the verdict needs steps)")
  ap.add_argument("--replot", action="store_true", help="only rebuild table.md from results.json")
  args = ap.parse_args(argv)
  if args.replot:
    return rc.replot(args.out, write_outputs)
  losses = [x for x in args.losses.split(",") if x]
  budgets = [x for x in args.budgets.split(",") if x]
  if not budgets or any(b not in BUDGETS for b in budgets):
    ap.error(f"--budgets: choose from {list(BUDGETS)}, got {args.budgets!r}")
  unknown = [x for x in losses if x not in LOSSES]
  if unknown:
    ap.error(f"--losses: unknown {unknown}; choose from {list(LOSSES)}")
  seeds = rc.resolve_seeds(ap, args)
  batches = args.batches if args.batches is not None else ([16, 32] if args.quick else [32, 256])
  if len(set(batches)) != len(batches) or len(batches) < 2:
    ap.error(f"--batches needs >= 2 distinct batch sizes: {batches}")
  rc.apply_quick(args)
  if args.quick:
    args.steps = 8
  os.makedirs(args.out, exist_ok=True)
  t0 = time.time()
  runs = []
  for seed in seeds:
    for loss in losses:
      # (batch, steps) -> the budgets that use it: the largest batch's run is shared.
      plan: dict[tuple[int, int], list[str]] = {}
      for budget in budgets:
        for b in batches:
          plan.setdefault((b, budget_steps(budget, b, args.steps, batches)), []).append(budget)
      for (b, steps), used_by in plan.items():
        a = copy.copy(args)
        a.batch, a.steps = b, steps
        cfg = rc.make_config(LOSSES[loss], a, seed=int(seed))
        name, value = scale_of(cfg)
        wd = os.path.join(args.out, f"{loss}_b{b}_{steps}steps_seed{seed}")
        row = rc.run_one(cfg, wd, loss=loss, batch=b, steps=steps, seed=int(seed), budgets=used_by,
                         scale_name=name, scale=value)
        rc.record_wall_time(row, wd)
        runs.append(row)
  result = {"claim": "DHEL and KCL lose less accuracy than NT-Xent when the batch shrinks (Koromilas et al. 2024)",
            "steps": args.steps, "batches": batches, "budgets": budgets, "seeds": seeds, "losses": losses,
            "probe_epochs": args.probe_epochs, "quick": bool(args.quick), "runs": runs,
            "verdict_rule": "equal steps: d_L(s) = probe(batch max) - probe(batch min); reproduced if d_DHEL(s) < "
                            "d_NT-Xent(s) and d_KCL(s) < d_NT-Xent(s) for every seed s, mixed if one of the two",
            "seconds": time.time() - t0}
  write_outputs(result, args.out)
  return 0


if __name__ == "__main__":
  sys.exit(main())
