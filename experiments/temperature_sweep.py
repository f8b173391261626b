"""Wang & Liu (2021), temperature at Fashion-MNIST scale, as ONE batched sweep.

SimCLR (NT-Xent) on Fashion-MNIST with the small ConvNet, trained for τ ∈ {0.07, 0.1,
0.2, 0.5, 1.0} in a single `jaxssl` sweep (one compiled program, members share each
input batch), plus a separate run of the "simple" contrastive loss (τ-free). For each
model it measures, on the test set: linear-probe and weighted-kNN accuracy, uniformity
(−L_unif, t = 2; larger = more uniform) and tolerance (mean cosine similarity of
same-class pairs) of the normalised projector output z, and the effective rank.

The paper's claims (PAPERS.md A, Table 1, CIFAR-10): as τ grows, uniformity falls and
tolerance rises; accuracy is an inverted U in τ (best at an intermediate τ, ≈0.2-0.3);
the simple loss has high uniformity and low tolerance and is worse than a tuned τ.

    python experiments/temperature_sweep.py --out runs/temperature_sweep [--steps 500]
        [--batch 256] [--probe-epochs 30] [--quick]

Writes results.json, table.md, summary.csv and temperature_sweep.png to --out.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import reproduce_common  # noqa: E402  (experiments/ is the script's directory)
from jaxssl import plots  # noqa: E402

TEMPERATURES = (0.07, 0.1, 0.2, 0.5, 1.0)
COLUMNS = reproduce_common.COLUMNS


def _monotone(values: list[float], rising: bool) -> bool:
  return all((a <= b) if rising else (a >= b) for a, b in zip(values, values[1:]))


def trends(rows: list[dict], min_tau_for_monotone: float = 0.1) -> dict[str, bool | float]:
  """The paper's qualitative claims, checked on the measured rows (sorted by τ).

  The monotonicity checks are reported over all τ and over τ >= `min_tau_for_monotone`:
  PAPERS.md A states the small-scale claim for τ ∈ {0.1, 0.2, 0.5, 1.0} and warns that
  τ < 0.1 degenerates on tiny problems.
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


def _spearman(x, y) -> float:
  import numpy as np
  rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
  return float(np.corrcoef(rx, ry)[0, 1])


def plot(rows, simple, path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  rows = sorted(rows, key=lambda r: r["temperature"])
  taus = [r["temperature"] for r in rows]
  panels = [("linear_probe", "linear probe acc. (%)"), ("knn_200", "kNN-200 acc. (%)"),
            ("uniformity_z", "uniformity  −L_unif (t=2)"), ("tolerance_z", "tolerance")]
  fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
  for ax, (k, title) in zip(axes, panels):
    ax.plot(taus, [r[k] for r in rows], "o-", label="NT-Xent (sweep)")
    if simple is not None:
      ax.axhline(simple[k], color="C3", ls="--", label="simple loss")
    ax.set_xscale("log")
    ax.set_xlabel("temperature τ")
    ax.set_title(title)
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=8)
  fig.suptitle("Wang & Liu 2021 at Fashion-MNIST scale (jaxssl, one batched sweep)")
  fig.tight_layout()
  plots.save_figure(fig, path)


def write_outputs(result: dict, out: str) -> None:
  """results.json (with the trends recomputed), table.md and temperature_sweep.png."""
  rows, simple = result["rows"], result["simple"]
  result["trends"] = trends(rows)
  with open(os.path.join(out, "results.json"), "w") as f:
    json.dump(result, f, indent=2)
  lines = ["| loss | τ | linear probe (%) | kNN-200 (%) | uniformity −L_unif | tolerance | eff. rank z | eff. rank r |",
           "|---|---|---|---|---|---|---|---|"]
  for r in sorted(rows, key=lambda r: r["temperature"]):
    lines.append(f"| NT-Xent | {r['temperature']:g} | {r['linear_probe']:.2f} | {r['knn_200']:.2f} | {r['uniformity_z']:.3f} | "
                 f"{r['tolerance_z']:.3f} | {r['effective_rank_z']:.1f} | {r['effective_rank_r']:.1f} |")
  lines.append(f"| simple | – | {simple['linear_probe']:.2f} | {simple['knn_200']:.2f} | "
               f"{simple['uniformity_z']:.3f} | {simple['tolerance_z']:.3f} | {simple['effective_rank_z']:.1f} | "
               f"{simple['effective_rank_r']:.1f} |")
  with open(os.path.join(out, "table.md"), "w") as f:
    f.write("\n".join(lines) + "\n\n" + json.dumps(result["trends"]) + "\n")
  plot(rows, simple, os.path.join(out, "temperature_sweep.png"))
  print("\n".join(lines))
  print(json.dumps(result["trends"], indent=2))


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--out", default="runs/temperature_sweep")
  ap.add_argument("--steps", type=int, default=500)
  ap.add_argument("--batch", type=int, default=256)
  ap.add_argument("--probe-epochs", type=int, default=30)
  ap.add_argument("--quick", action="store_true", help="20 steps, batch 64, 2 probe epochs (smoke run)")
  ap.add_argument("--replot", action="store_true",
                  help="only rebuild table.md, the figure and the trends from --out/results.json")
  args = ap.parse_args(argv)
  if args.replot:
    with open(os.path.join(args.out, "results.json")) as f:
      write_outputs(json.load(f), args.out)
    return 0
  if args.quick:
    args.steps, args.batch, args.probe_epochs = 20, 64, 2

  os.makedirs(args.out, exist_ok=True)
  t0 = time.time()
  # run_grid / run_one resume an interrupted start and stop the script (not a KeyError) when
  # a signal ends a run before its evaluation.
  grid = reproduce_common.run_grid(reproduce_common.make_config("simclr", args), os.path.join(args.out, "sweep"),
                                   [("loss.temperature", list(TEMPERATURES))])
  rows = [{"temperature": r["temperature"], **{k: r[k] for k in COLUMNS}} for r in grid]
  sweep_s = time.time() - t0

  t1 = time.time()
  simple_row = reproduce_common.run_one(reproduce_common.make_config("simple", args), os.path.join(args.out, "simple"))
  simple = {k: simple_row[k] for k in COLUMNS}
  simple_s = time.time() - t1

  result = {"steps": args.steps, "batch": args.batch, "probe_epochs": args.probe_epochs,
            "rows": rows, "simple": simple,
            "seconds": {"sweep_with_eval": sweep_s, "simple_with_eval": simple_s}}
  write_outputs(result, args.out)
  return 0


if __name__ == "__main__":
  sys.exit(main())
