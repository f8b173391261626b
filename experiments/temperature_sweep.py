"""Wang & Liu (2021), temperature at Fashion-MNIST scale: one batched τ sweep per seed.

SimCLR (NT-Xent) on Fashion-MNIST with the small ConvNet, trained for τ ∈ {0.07, 0.1,
0.2, 0.5, 1.0} as one `jaxssl` sweep per seed (members share each input batch and start from
the same parameters), plus a run of the τ-free "simple" contrastive loss per seed; seeds
`--seeds` (0,1,2) as `config.seed`. For each model, on the test set: linear-probe and
weighted-kNN accuracy, uniformity (−L_unif, t = 2; larger = more uniform) and tolerance (mean
cosine similarity of same-class pairs) of the normalised projector output z, and the effective
ranks.

The paper's claims (PAPERS.md A, Table 1, CIFAR-10): as τ grows, uniformity falls and
tolerance rises; accuracy is an inverted U in τ (best at an intermediate τ, ≈0.2-0.3); the
simple loss has the lowest uniformity, the highest tolerance and the worst accuracy.

Verdict rules (written before the seeded run; s is a seed, "every seed" is over --seeds):
* Uniformity falls with τ (A1), over τ >= 0.1 (PAPERS.md A: τ < 0.1 degenerates on small
  problems): reproduced if U is monotone non-increasing over those τ in every seed and the
  paired drop U(0.1) − U(1) has mean > 2 sd; "direction holds" if only the first holds;
  "not reproduced" otherwise. Tolerance rises with τ (A2): the same with T(1) − T(0.1).
  The same monotonicity over all five τ is reported beside it.
* Inverted U (A3): the peak is the τ with the largest mean probe accuracy. Reproduced if it is
  interior and its paired gaps to both end points (τ 0.07 and 1) are positive in every seed
  with mean > 2 sd; "weak" if it is interior but a gap fails that; "not reproduced" if the
  peak is an end point.
* Simple loss (A4): per seed, its uniformity below every NT-Xent τ's, its tolerance above
  every τ's and its probe below every τ's. Reproduced if all three hold in every seed and the
  three paired gaps to the nearest NT-Xent value have mean > 2 sd; "direction holds" if the
  three hold in every seed; "not reproduced" otherwise.

    python experiments/temperature_sweep.py --out runs/temperature_sweep [--seeds 0,1,2]
        [--steps 500] [--batch 256] [--probe-epochs 30] [--quick] [--replot]

Writes results.json, table.md and temperature_sweep.png to --out; one workdir per seed and run
(<out>/seed<s>/sweep, <out>/seed<s>/simple), reused when finished, resumed when it has
checkpoints.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Mapping, Sequence

import numpy as np
import reproduce_common as rc  # noqa: E402  (experiments/ is the script's directory)
from jaxssl import plots  # noqa: E402

TEMPERATURES = (0.07, 0.1, 0.2, 0.5, 1.0)
MIN_TAU_FOR_MONOTONE = 0.1
COLUMNS = rc.COLUMNS


def _monotone(values: Sequence[float], rising: bool) -> bool:
  return all((a <= b) if rising else (a >= b) for a, b in zip(values, values[1:]))


def _spearman(x: Sequence[float], y: Sequence[float]) -> float:
  rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
  return float(np.corrcoef(rx, ry)[0, 1])


def trends(rows: Sequence[Mapping[str, Any]], min_tau_for_monotone: float = MIN_TAU_FOR_MONOTONE
           ) -> dict[str, bool | float]:
  """The paper's qualitative claims on the rows of ONE seed (any order of τ).

  The monotonicity checks are reported over all τ and over τ >= `min_tau_for_monotone`.
  """
  rows = sorted(rows, key=lambda r: r["temperature"])
  taus = [r["temperature"] for r in rows]
  uni = [r["uniformity_z"] for r in rows]
  tol = [r["tolerance_z"] for r in rows]
  acc = [r["linear_probe"] for r in rows]
  best = max(range(len(acc)), key=acc.__getitem__)
  keep = [i for i, t in enumerate(taus) if t >= min_tau_for_monotone]
  return {
      "uniformity_falls_with_tau": _monotone(uni, rising=False),
      "tolerance_rises_with_tau": _monotone(tol, rising=True),
      f"uniformity_falls_with_tau_ge_{min_tau_for_monotone:g}": _monotone([uni[i] for i in keep], rising=False),
      f"tolerance_rises_with_tau_ge_{min_tau_for_monotone:g}": _monotone([tol[i] for i in keep], rising=True),
      "accuracy_inverted_u": 0 < best < len(acc) - 1,
      "best_tau": taus[best],
      "accuracy_range": max(acc) - min(acc),
      "spearman_uniformity_tau": _spearman(taus, uni),
      "spearman_tolerance_tau": _spearman(taus, tol),
  }


def _verdict(every: bool, stat: Mapping[str, float], n_seeds: int, weak: str = "direction holds") -> str:
  exceeds = rc.all_finite(stat["mean"], stat["sd"]) and stat["mean"] > 2 * stat["sd"]
  if every and exceeds and n_seeds >= 2:
    return "reproduced"
  return weak if every else "not reproduced"


def summarise(result: Mapping[str, Any]) -> dict[str, Any]:
  """Mean ± sd per τ, the per-seed trends and the verdicts of the module docstring's rules."""
  rows, simple, seeds = result["rows"], result["simple"], result["seeds"]
  taus = sorted({r["temperature"] for r in rows})
  by = {(r["seed"], r["temperature"]): r for r in rows}
  simple_by = {r["seed"]: r for r in simple}
  cells = {f"{t:g}": {m: rc.mean_sd([by[(s, t)][m] for s in seeds]) for m in COLUMNS} for t in taus}
  per_seed = {str(s): trends([by[(s, t)] for t in taus]) for s in seeds}
  lo, hi = min(t for t in taus if t >= MIN_TAU_FOR_MONOTONE), max(taus)
  key = f"_with_tau_ge_{MIN_TAU_FOR_MONOTONE:g}"
  uni_drop = rc.mean_sd([by[(s, lo)]["uniformity_z"] - by[(s, hi)]["uniformity_z"] for s in seeds])
  tol_rise = rc.mean_sd([by[(s, hi)]["tolerance_z"] - by[(s, lo)]["tolerance_z"] for s in seeds])
  uni_every = all(per_seed[str(s)]["uniformity_falls" + key] for s in seeds)
  tol_every = all(per_seed[str(s)]["tolerance_rises" + key] for s in seeds)
  claims: dict[str, Any] = {
      "uniformity": {"falls_every_seed_tau_ge_0.1": uni_every, f"drop_tau{lo:g}_minus_tau{hi:g}": uni_drop,
                     "falls_every_seed_all_tau": all(per_seed[str(s)]["uniformity_falls_with_tau"] for s in seeds),
                     "verdict": _verdict(uni_every, uni_drop, len(seeds))},
      "tolerance": {"rises_every_seed_tau_ge_0.1": tol_every, f"rise_tau{hi:g}_minus_tau{lo:g}": tol_rise,
                    "rises_every_seed_all_tau": all(per_seed[str(s)]["tolerance_rises_with_tau"] for s in seeds),
                    "verdict": _verdict(tol_every, tol_rise, len(seeds))}}
  peak = max(taus, key=lambda t: cells[f"{t:g}"]["linear_probe"]["mean"])
  gaps = {f"{end:g}": [by[(s, peak)]["linear_probe"] - by[(s, end)]["linear_probe"] for s in seeds]
          for end in (taus[0], taus[-1]) if end != peak}
  interior = taus[0] < peak < taus[-1]
  gap_stats = {end: {"diffs": d, **rc.mean_sd(d)} for end, d in gaps.items()}
  strong = interior and all(all(x > 0 for x in g["diffs"]) and rc.all_finite(g["mean"], g["sd"])
                            and g["mean"] > 2 * g["sd"] for g in gap_stats.values()) and len(seeds) >= 2
  claims["accuracy"] = {"peak_tau": peak, "peak_interior": interior, "peak_in_paper_range_0.2_0.3": 0.2 <= peak <= 0.3,
                        "best_tau_per_seed": [per_seed[str(s)]["best_tau"] for s in seeds],
                        "peak_minus_end": gap_stats,
                        "verdict": "reproduced" if strong else ("weak" if interior else "not reproduced")}
  simple_gaps = {
      "uniformity_nearest_minus_simple": [min(by[(s, t)]["uniformity_z"] for t in taus) - simple_by[s]["uniformity_z"]
                                          for s in seeds],
      "tolerance_simple_minus_nearest": [simple_by[s]["tolerance_z"] - max(by[(s, t)]["tolerance_z"] for t in taus)
                                         for s in seeds],
      "probe_nearest_minus_simple": [min(by[(s, t)]["linear_probe"] for t in taus) - simple_by[s]["linear_probe"]
                                     for s in seeds]}
  stats = {k: {"diffs": d, **rc.mean_sd(d)} for k, d in simple_gaps.items()}
  every = all(x > 0 for d in simple_gaps.values() for x in d)
  exceeds = all(rc.all_finite(st["mean"], st["sd"]) and st["mean"] > 2 * st["sd"] for st in stats.values())
  claims["simple"] = {**stats, "all_three_every_seed": every,
                      "verdict": "reproduced" if every and exceeds and len(seeds) >= 2
                      else ("direction holds" if every else "not reproduced")}
  return {"cells": cells, "simple": {m: rc.mean_sd([simple_by[s][m] for s in seeds]) for m in COLUMNS},
          "per_seed_trends": per_seed, "claims": claims}


def table_lines(result: Mapping[str, Any]) -> list[str]:
  s = result["summary"]
  cols = [("linear_probe", "linear probe (%)", 2), ("knn_200", "kNN-200 (%)", 2),
          ("uniformity_z", "uniformity −L_unif", 3), ("tolerance_z", "tolerance", 3),
          ("effective_rank_z", "eff. rank z", 1), ("effective_rank_r", "eff. rank r", 1)]
  lines = [f"Mean ± sd over seeds {', '.join(map(str, result['seeds']))}:", "",
           "| loss | τ | " + " | ".join(h for _, h, _ in cols) + " |", "|" + "---|" * (len(cols) + 2)]
  for t, c in sorted(s["cells"].items(), key=lambda kv: float(kv[0])):
    lines.append(f"| NT-Xent | {t} | " + " | ".join(rc.pm(c[k], d) for k, _, d in cols) + " |")
  lines.append("| simple | – | " + " | ".join(rc.pm(s["simple"][k], d) for k, _, d in cols) + " |")
  c = s["claims"]
  acc = c["accuracy"]
  drop = next(v for k, v in c["uniformity"].items() if k.startswith("drop_"))
  rise = next(v for k, v in c["tolerance"].items() if k.startswith("rise_"))
  lines += ["", "| claim | per seed | paired effect, mean ± sd | verdict |", "|---|---|---|---|",
            f"| uniformity falls with τ (τ ≥ 0.1) | monotone in every seed: {rc.fmt(c['uniformity']['falls_every_seed_tau_ge_0.1'])}"
            f" (all five τ: {rc.fmt(c['uniformity']['falls_every_seed_all_tau'])}) | U(0.1) − U(1) {rc.pm(drop, 3)} | "
            f"**{c['uniformity']['verdict']}** |",
            f"| tolerance rises with τ (τ ≥ 0.1) | monotone in every seed: {rc.fmt(c['tolerance']['rises_every_seed_tau_ge_0.1'])}"
            f" (all five τ: {rc.fmt(c['tolerance']['rises_every_seed_all_tau'])}) | T(1) − T(0.1) {rc.pm(rise, 3)} | "
            f"**{c['tolerance']['verdict']}** |",
            f"| accuracy is an inverted U | best τ per seed: {', '.join(f'{t:g}' for t in acc['best_tau_per_seed'])}; "
            f"peak of the mean τ {acc['peak_tau']:g} | "
            + "; ".join(f"peak − τ {e}: {rc.pm(g, 2)}" for e, g in acc["peak_minus_end"].items())
            + f" | **{acc['verdict']}** |",
            f"| simple loss: lowest uniformity, highest tolerance, worst probe | all three in every seed: "
            f"{rc.fmt(c['simple']['all_three_every_seed'])} | uniformity gap {rc.pm(c['simple']['uniformity_nearest_minus_simple'], 3)}; "
            f"tolerance gap {rc.pm(c['simple']['tolerance_simple_minus_nearest'], 3)}; probe gap "
            f"{rc.pm(c['simple']['probe_nearest_minus_simple'], 2)} | **{c['simple']['verdict']}** |"]
  return lines


def plot(result: Mapping[str, Any], path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  s = result["summary"]
  taus = sorted(float(t) for t in s["cells"])
  panels = [("linear_probe", "linear probe acc. (%)"), ("knn_200", "kNN-200 acc. (%)"),
            ("uniformity_z", "uniformity  −L_unif (t=2)"), ("tolerance_z", "tolerance")]
  fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
  for ax, (k, title) in zip(axes, panels):
    cells = [s["cells"][f"{t:g}"][k] for t in taus]
    ax.errorbar(taus, [c["mean"] for c in cells], yerr=[np.nan_to_num(c["sd"]) for c in cells], fmt="o-",
                capsize=3, label="NT-Xent")
    ax.axhline(s["simple"][k]["mean"], color="C3", ls="--", label="simple loss")
    ax.set_xscale("log")
    ax.set_xlabel("temperature τ")
    ax.set_title(title)
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=8)
  fig.suptitle(f"Wang & Liu 2021 at Fashion-MNIST scale (jaxssl; mean ± sd, seeds "
               f"{', '.join(map(str, result['seeds']))})")
  fig.tight_layout()
  plots.save_figure(fig, path)


def write_outputs(result: dict, out: str) -> None:
  """results.json (with the summary recomputed), table.md and temperature_sweep.png."""
  result["summary"] = summarise(result)
  result["claims"] = {k: v["verdict"] for k, v in result["summary"]["claims"].items()}
  rc.write_outputs(out, result, [("Temperature sweep, seeded", table_lines(result))])
  plot(result, os.path.join(out, "temperature_sweep.png"))


def main(argv: Sequence[str] | None = None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--out", default="runs/temperature_sweep")
  rc.add_common_args(ap, steps=500, probe_epochs=30)
  ap.add_argument("--seeds", type=rc.ints, default=None, help="config.seed values (default 0,1,2; --quick: 0,1)")
  ap.add_argument("--replot", action="store_true",
                  help="only rebuild table.md, the figure and the summary from --out/results.json")
  args = ap.parse_args(argv)
  if args.replot:
    return rc.replot(args.out, write_outputs)
  seeds = rc.resolve_seeds(ap, args)
  rc.apply_quick(args)
  os.makedirs(args.out, exist_ok=True)
  rows, simple, seconds = [], [], {}
  for seed in seeds:
    # run_grid / run_one resume an interrupted start and stop the script (not a KeyError) when
    # a signal ends a run before its evaluation; finished runs are reused.
    t0 = time.time()
    grid = rc.run_grid(rc.make_config("simclr", args, seed=int(seed)), os.path.join(args.out, f"seed{seed}", "sweep"),
                       [("loss.temperature", list(TEMPERATURES))], seed=int(seed))
    rows += [{"seed": int(seed), "temperature": r["temperature"], **{k: r[k] for k in COLUMNS}} for r in grid]
    seconds[f"seed{seed}_sweep_with_eval"] = grid[0]["seconds"] if grid else time.time() - t0
    one = rc.run_one(rc.make_config("simple", args, seed=int(seed)), os.path.join(args.out, f"seed{seed}", "simple"))
    rc.record_wall_time(one, os.path.join(args.out, f"seed{seed}", "simple"))
    simple.append({"seed": int(seed), **{k: one[k] for k in COLUMNS}})
    seconds[f"seed{seed}_simple_with_eval"] = one["seconds"]
  result = {"claim": "uniformity falls and tolerance rises with τ; accuracy is an inverted U; the simple loss "
                     "has the lowest uniformity, highest tolerance, worst accuracy (Wang & Liu 2021)",
            "steps": args.steps, "batch": args.batch, "probe_epochs": args.probe_epochs, "quick": bool(args.quick),
            "seeds": seeds, "temperatures": list(TEMPERATURES), "rows": rows, "simple": simple, "seconds": seconds}
  write_outputs(result, args.out)
  return 0


if __name__ == "__main__":
  sys.exit(main())
