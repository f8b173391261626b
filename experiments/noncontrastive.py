"""Non-contrastive SSL without collapse: EMA target, closed-form predictors, IsoLoss, and
L2 vs cosine loss under weight decay (Tian et al. 2021; Halvagal et al. 2023; Bao 2023).

Claims (PAPERS.md D, E, F):
  * D (Tian, DirectPred): a linear predictor set in closed form from the eigendecomposition
    of the EMA'd correlation of z (p_j = sqrt(s_j / max s) + ε; DirectCopy: F + εI) trains
    BYOL/SimSiam without collapse, about as well as a learned MLP predictor.
  * E (Halvagal, IsoLoss): the IsoLoss gradient equalises the eigenmode learning rates;
    IsoLoss trains *without* an EMA target, where DirectPred needs one.
  * F (Bao): with the L2 form of the BYOL/SimSiam loss, weight decay above a threshold
    collapses the representation (the cubic eigenmode ODE has only the zero fixed point);
    with the cosine form, weight decay shrinks the norms and the system still settles at a
    non-zero equilibrium (no collapse).

Part "ema" (`--parts ema`): byol, simsiam, directpred, directcopy and isoloss on
Fashion-MNIST, each with the EMA target on and off (`config.ema.enabled`; off means the
online network under stop-gradient is the target, as in SimSiam). SimSiam has no EMA by
definition; its "EMA on" run is method=byol with SimSiam's bottleneck predictor. IsoLoss
uses τ_C = 0.5 without and 0.998 with an EMA target (PAPERS.md E). For each run: linear
probe / kNN-200 accuracy, effective rank of z and r (test set), the effective rank of z over
training (erank_vs_step.png, from metrics.jsonl) and the final log-eigenvalue spectra of z
(spectra.png). A run counts as collapsed when its effective rank of z is below 2.
Claims: isoloss_no_ema_not_collapsed, isoloss_no_ema_erank_above_directpred_no_ema,
isoloss_no_ema_accuracy_above_directpred_no_ema, directpred_needs_ema (accuracy with EMA >
without).

Part "wd" (`--parts wd`): SimSiam (`--wd-method`, or byol) with the L2 and with the cosine
loss (`config.loss.kind`), each one batched sweep over `optim.weight_decay`
(`--weight-decays`, default 1, 3, 10, 30, 100). Bao's analysis is gradient descent with an L2
penalty, so this part uses SGD (momentum 0.9, coupled weight decay; `--wd-optim`) with the
same learning rate for both loss forms (`--wd-lr`, default 1e-4). Why so small: the L2 loss
is unnormalised and summed over the 128 dimensions of z (value ≈ 250, gradient norm ≈ 300
at initialisation), and SGD at SimSiam's lr 0.05 — or at 0.01 — diverged to NaN within 20
steps for every weight decay (measured); 1e-4 is stable. In those units the L2 form
collapses to zero between weight decay 30 and 100 at 300 steps (measured, docs/results.md).
Bao's collapse is a collapse *to zero* (‖Φ‖ → 1e-18 in the linear model), which the
spectrum and effective rank (computed on z/|z|) do not see, so every member also reports
the RMS norm of z on the test set (`norm_z`, `jaxssl.diagnostics.embedding_norm`), and two
kinds of collapse are counted separately:
  * norm collapse: norm_z < 1e-3 × norm_z of the smallest weight decay (Bao's collapse);
  * dimensional collapse: effective rank of z < 2 with a norm that has not collapsed
    (the effective rank of a norm-collapsed z is that of numerical noise).
Non-finite steps are skipped in-graph (`nonfinite_policy='skip'`) so one diverging member
does not stop the sweep; the number of non-finite logged steps is reported per member.
Figure weight_decay.png: accuracy, effective rank and norm of z vs weight decay, one line
per loss form. Claims: l2_norm_collapses_at_max_wd, cosine_norm_survives_max_wd,
l2_norm_collapse_wd / cosine_norm_collapse_wd (the smallest weight decay at which each
norm-collapses, None if none does), l2_ / cosine_dimensional_collapse_wd (the same for a
dimensional collapse), cosine_accuracy_above_l2_at_max_wd.

    python experiments/noncontrastive.py --out runs/noncontrastive [--steps 300] [--batch 256]
        [--probe-epochs 30] [--parts ema,wd] [--methods byol,simsiam,directpred,directcopy,isoloss]
        [--weight-decays 1,3,10,30,100] [--wd-method simsiam] [--wd-optim sgd] [--wd-lr 1e-4]
        [--wd-seeds 0] [--quick]

With several --wd-seeds (e.g. `--parts wd --wd-seeds 0,1,2`) the wd part runs one sweep per loss
form and seed (config.seed: initial parameters, data order, augmentations), and results.json gets
"wd_seeded": each cell's mean ± sd, the claims per seed and whether each holds in every seed, and
the paired probe difference cosine − L2 at the largest weight decay; the figure plots the means.

Writes results.json, table.md, erank_vs_step.png, spectra.png and weight_decay.png to --out.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import reproduce_common as rc

METHODS = ("byol", "simsiam", "directpred", "directcopy", "isoloss")


def _collapsed(erank: float) -> bool:
  return not (rc.all_finite(erank) and erank >= rc.COLLAPSE_ERANK)


def ema_config(method: str, ema: bool, args):
  if method == "simsiam":
    return rc.make_config("simsiam", args, **({"method": "byol"} if ema else {}))
  over = {"ema.enabled": ema}
  if method == "isoloss":
    over["predictor.decay"] = 0.998 if ema else 0.5   # τ_C (Halvagal et al.)
  return rc.make_config(method, args, **over)


def run_ema(args) -> tuple[list[dict], dict]:
  rows, hist = [], {}
  for m in args.methods:
    for ema in (True, False):
      name = f"{m}_{'ema' if ema else 'noema'}"
      wd = os.path.join(args.out, "ema", name)
      row = rc.run_one(ema_config(m, ema, args), wd, method=m, ema=ema, run=name)
      row["collapsed"] = _collapsed(row["effective_rank_z"])
      h = rc.spectrum_history(wd)
      hist[name] = {"steps": [r["step"] for r in h], "effective_rank_z": [r["effective_rank_z"] for r in h],
                    "effective_rank_r": [r["effective_rank_r"] for r in h],
                    "final_spectrum_z": h[-1]["spectrum_z"] if h else [],
                    "final_spectrum_r": h[-1]["spectrum_r"] if h else []}
      rows.append(row)
  return rows, hist


def ema_claims(rows: list[dict]) -> dict:
  by = {(r["method"], r["ema"]): r for r in rows}
  out = {}
  iso, dp, dpe = by.get(("isoloss", False)), by.get(("directpred", False)), by.get(("directpred", True))
  if iso:
    out["isoloss_no_ema_not_collapsed"] = not iso["collapsed"]
  if iso and dp:
    out["isoloss_no_ema_erank_above_directpred_no_ema"] = bool(iso["effective_rank_z"] > dp["effective_rank_z"])
    out["isoloss_no_ema_accuracy_above_directpred_no_ema"] = bool(iso["linear_probe"] > dp["linear_probe"])
  if dp and dpe:
    out["directpred_needs_ema"] = bool(dpe["linear_probe"] > dp["linear_probe"])
  out["collapsed_runs"] = [r["run"] for r in rows if r["collapsed"]]
  return out


def plot_ema(hist: dict, out_dir: str) -> None:
  curves = {"effective rank z": {}, "effective rank r": {}}
  styles = {}
  for name, h in hist.items():
    for title, k in zip(curves, ("effective_rank_z", "effective_rank_r")):
      curves[title][name] = (h["steps"], h[k])
    styles[name] = "o-" if name.endswith("_ema") else "s--"
  rc.plot_lines(curves, os.path.join(out_dir, "erank_vs_step.png"), xlabel="step", styles=styles,
                suptitle="Non-contrastive methods, EMA target on (solid) / off (dashed)")
  panels = {"z, EMA target on": {}, "z, EMA target off": {}}
  for i, (name, h) in enumerate(hist.items()):
    if h["final_spectrum_z"]:
      panels["z, EMA target on" if name.endswith("_ema") else "z, EMA target off"][name.rsplit("_", 1)[0]] = {
          "eig": h["final_spectrum_z"], "color": f"C{i // 2}"}
  rc.plot_spectra_panels({k: v for k, v in panels.items() if v}, os.path.join(out_dir, "spectra.png"),
                         suptitle="Final spectra of the projector output z (last logged step)")


# A member's z counts as collapsed to zero when its RMS norm is below this fraction of the
# norm at the smallest weight decay of the same loss form.
NORM_COLLAPSE_RATIO = 1e-3


def run_wd(args) -> list[dict]:
  """One weight-decay sweep per loss form and seed of --wd-seeds (rows carry "seed")."""
  rows = []
  for seed in args.wd_seeds:
    for kind in ("l2", "cosine"):
      over = {"loss.kind": kind, "optim.name": args.wd_optim, "train.nonfinite_policy": "skip",
              "optim.lr": args.wd_lr, "seed": seed}
      cfg = rc.make_config(args.wd_method, args, **over)
      # seed 0 keeps the single-seed layout of the committed results (its workdirs are reused)
      wd = os.path.join(args.out, "wd", f"{args.wd_method}_{kind}" + (f"_seed{seed}" if seed else ""))
      sel = rc.run_sweep(cfg, wd, "optim.weight_decay", args.weight_decays, key="weight_decay",
                         method=args.wd_method, kind=kind, optim=args.wd_optim, lr=float(cfg.optim.lr), seed=seed)
      for r in classify_collapse(sel):
        r["nonfinite_logged_steps"] = rc.nonfinite_logged(r["workdir"], r["member"])
        rows.append(r)
  return rows


WD_SEEDED_METRICS = ("linear_probe", "effective_rank_z", "norm_z")


def wd_seeded_summary(rows: list[dict], seeds: list[int]) -> dict:
  """Over the seeds of the weight-decay part: each (loss form, weight decay) cell's mean ± sd of
  WD_SEEDED_METRICS; wd_claims per seed, and for each yes/no claim whether it holds in every seed;
  the paired probe difference cosine − L2 at the largest weight decay (rc.paired)."""
  per_seed = {str(s): wd_claims([r for r in rows if r["seed"] == s]) for s in seeds}
  cells = {}
  for kind, sel in _by_kind(rows).items():
    for w in sorted({r["weight_decay"] for r in sel}):
      members = [r for r in sel if r["weight_decay"] == w]
      cells[f"{kind}_wd{w:g}"] = {"kind": kind, "weight_decay": w, "seeds": sorted(r["seed"] for r in members),
                                  **{m: rc.mean_sd([r[m] for r in members]) for m in WD_SEEDED_METRICS}}
  flags = sorted({k for c in per_seed.values() for k, v in c.items() if isinstance(v, bool)})
  every = {k: all(per_seed[str(s)].get(k) is True for s in seeds) for k in flags}
  top = max(r["weight_decay"] for r in rows)
  at_top = {(r["kind"], r["seed"]): r["linear_probe"] for r in rows if r["weight_decay"] == top}
  paired = rc.paired([at_top[("cosine", s)] - at_top[("l2", s)] for s in seeds
                      if ("cosine", s) in at_top and ("l2", s) in at_top])
  return {"seeds": list(seeds), "cells": cells, "per_seed_claims": per_seed, "holds_every_seed": every,
          "max_weight_decay": top, "probe_cosine_minus_l2_at_max_wd": paired}


def wd_seeded_table(summary: dict) -> list[str]:
  lines = ["| loss | weight decay | seeds | linear probe (%) | eff. rank z | RMS norm z |", "|---|---|---|---|---|---|"]
  for c in summary["cells"].values():
    lines.append(f"| {c['kind']} | {c['weight_decay']:g} | {','.join(map(str, c['seeds']))} | "
                 f"{rc.pm(c['linear_probe'])} | {rc.pm(c['effective_rank_z'])} | "
                 f"{c['norm_z']['mean']:.3g} ± {c['norm_z']['sd']:.2g} |")
  p = summary["probe_cosine_minus_l2_at_max_wd"]
  lines += ["", "| claim | holds in every seed |", "|---|---|"]
  lines += [f"| {k} | {rc.fmt(v)} |" for k, v in summary["holds_every_seed"].items()]
  lines += ["", f"Linear probe, cosine − L2 at weight decay {summary['max_weight_decay']:g}, per seed "
            f"{', '.join(f'{d:+.2f}' for d in p['diffs'])}: {rc.pm(p)} ({rc.paired_label(p['result'], 'cosine', 'L2')})."]
  return lines


def classify_collapse(sel: list[dict]) -> list[dict]:
  """Sorts one loss form's rows by weight decay and adds norm_ratio (norm_z over that of the
  smallest weight decay), norm_collapsed (ratio < NORM_COLLAPSE_RATIO) and dim_collapsed
  (effective rank of z < 2 while the norm has not collapsed)."""
  sel = sorted(sel, key=lambda r: r["weight_decay"])
  ref = sel[0]["norm_z"] if sel else math.nan
  for r in sel:
    r["norm_ratio"] = r["norm_z"] / ref if rc.all_finite(r["norm_z"], ref) and ref > 0 else math.nan
    r["norm_collapsed"] = bool(rc.all_finite(r["norm_ratio"]) and r["norm_ratio"] < NORM_COLLAPSE_RATIO)
    r["dim_collapsed"] = bool(not r["norm_collapsed"] and _collapsed(r["effective_rank_z"]))
  return sel


def _by_kind(rows: list[dict]) -> dict[str, list[dict]]:
  """{"l2": rows, "cosine": rows}, each sorted by weight decay."""
  return {k: sorted((r for r in rows if r["kind"] == k), key=lambda r: r["weight_decay"]) for k in ("l2", "cosine")}


def wd_claims(rows: list[dict]) -> dict:
  out = {}
  by_kind = _by_kind(rows)
  for kind, sel in by_kind.items():
    if sel:
      out[f"{kind}_norm_collapse_wd"] = next((r["weight_decay"] for r in sel if r["norm_collapsed"]), None)
      out[f"{kind}_dimensional_collapse_wd"] = next((r["weight_decay"] for r in sel if r["dim_collapsed"]), None)
  l2, cos = (by_kind[k][-1] if by_kind[k] else None for k in ("l2", "cosine"))
  if l2:
    out["l2_norm_collapses_at_max_wd"] = l2["norm_collapsed"]
  if cos:
    out["cosine_norm_survives_max_wd"] = not cos["norm_collapsed"]
  if l2 and cos:
    out["cosine_accuracy_above_l2_at_max_wd"] = bool(cos["linear_probe"] > l2["linear_probe"]) \
        if rc.all_finite(cos["linear_probe"], l2["linear_probe"]) else rc.all_finite(cos["linear_probe"])
  return out


def plot_wd(rows, path, method):
  panels = {"linear probe acc. (%)": {}, "effective rank z": {}, "RMS norm of z (test set)": {}}
  for kind, sel in _by_kind(rows).items():
    for title, k in zip(panels, ("linear_probe", "effective_rank_z", "norm_z")):
      panels[title][f"{method}, {kind} loss"] = ([r["weight_decay"] for r in sel], [r[k] for r in sel])
  rc.plot_lines(panels, path, xlabel="weight decay", logx=all(r["weight_decay"] > 0 for r in rows),
                logy_panels=("RMS norm of z (test set)",),
                suptitle="Bao 2023 at Fashion-MNIST scale: L2 vs cosine loss under weight decay (SGD)")


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--out", default="runs/noncontrastive")
  rc.add_common_args(ap, steps=300)
  ap.add_argument("--parts", default="ema,wd", help="comma list of: ema, wd")
  ap.add_argument("--methods", default=",".join(METHODS), help="methods of the EMA part")
  ap.add_argument("--weight-decays", type=rc.floats, default="1,3,10,30,100")
  ap.add_argument("--wd-method", choices=("simsiam", "byol"), default="simsiam")
  ap.add_argument("--wd-optim", choices=("sgd", "adamw", "lars"), default="sgd")
  ap.add_argument("--wd-lr", type=float, default=1e-4,
                  help="peak lr of the wd part, both loss forms (the summed L2 loss diverges at 1e-2)")
  ap.add_argument("--wd-seeds", type=rc.ints, default=[0],
                  help="config.seed values of the wd part (default 0; several: mean ± sd and per-seed claims)")
  args = ap.parse_args(argv)
  rc.apply_quick(args)
  rc.reject_repeated_seeds(ap, "--wd-seeds", args.wd_seeds)
  args.methods = [m for m in args.methods.split(",") if m]
  parts = {p for p in args.parts.split(",") if p}
  if parts - {"ema", "wd"}:
    ap.error(f"--parts: unknown part(s) {sorted(parts - {'ema', 'wd'})}")
  os.makedirs(args.out, exist_ok=True)
  t0 = time.time()
  result = {"steps": args.steps, "batch": args.batch, "probe_epochs": args.probe_epochs, "quick": args.quick,
            "parts": sorted(parts), "rows": [], "claims": {}}
  tables = []
  if "ema" in parts:
    rows, hist = run_ema(args)
    result["rows"] += [{"part": "ema", **r} for r in rows]
    result["claims"]["ema"] = ema_claims(rows)
    result["history"] = hist
    plot_ema(hist, args.out)
    tables.append(("EMA target on / off", rc.markdown_table(rows, [("method", "method"), ("ema", "EMA target")]
                                                            + rc.METRIC_COLUMNS[:4] + [("collapsed", "collapsed")])))
  if "wd" in parts:
    rows = run_wd(args)
    result["rows"] += [{"part": "wd", **r} for r in rows]
    if len(args.wd_seeds) == 1:
      result["claims"]["wd"] = wd_claims(rows)
      plot_wd(rows, os.path.join(args.out, "weight_decay.png"), args.wd_method)
    else:
      result["wd_seeded"] = wd_seeded_summary(rows, args.wd_seeds)
      result["claims"]["wd"] = result["wd_seeded"]["holds_every_seed"]
      means = [{"kind": c["kind"], "weight_decay": c["weight_decay"], **{m: c[m]["mean"] for m in WD_SEEDED_METRICS}}
               for c in result["wd_seeded"]["cells"].values()]
      plot_wd(means, os.path.join(args.out, "weight_decay.png"), args.wd_method)
      tables.append((f"L2 vs cosine loss under weight decay, mean ± sd over seeds {args.wd_seeds}",
                     wd_seeded_table(result["wd_seeded"])))
    tables.append(("L2 vs cosine loss under weight decay", rc.markdown_table(
        rows, [("method", "method"), ("kind", "loss"), ("optim", "optim"), ("weight_decay", "weight decay")]
        + ([("seed", "seed")] if len(args.wd_seeds) > 1 else [])
        + rc.METRIC_COLUMNS[:3] + [("norm_z", "RMS norm z"), ("norm_collapsed", "norm collapse"),
                                   ("dim_collapsed", "dim. collapse"), ("nonfinite_logged_steps", "non-finite logged")])))
  result["seconds"] = time.time() - t0
  rc.write_outputs(args.out, result, tables)
  return 0


if __name__ == "__main__":
  sys.exit(main())
