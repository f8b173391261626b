"""Label-free model selection: do RankMe, LiDAR and alpha-ReQ rank trained models like the probe?

Trains a grid of hyperparameters for three methods on Fashion-MNIST (small ConvNet), one
batched `jaxssl` sweep per method (the Cartesian product of its grid, one compiled program):

    simclr  loss.temperature x optim.lr
    byol    optim.lr x optim.weight_decay
    vicreg  optim.lr x optim.weight_decay

Each member is evaluated as `jaxssl sweep --select` evaluates it: the label-free criteria
of the backbone features r (RankMe: exp of the entropy of the normalised singular values,
Garrido et al. 2023; LiDAR: the same of the LDA matrix between augmented views, Thilak et
al. 2024; alpha-ReQ: the power-law exponent of the spectrum, best near 1, Agrawal et al.
2022; `jaxssl.selection`) and, with labels, the linear probe on train -> test.

For each criterion it reports, over all members and within each method:
  * Spearman's rho between the criterion's score and the linear-probe accuracy (the score
    is the value for RankMe and LiDAR and -|alpha - 1| for alpha-ReQ, the order `--select`
    uses);
  * the oracle gap: best probe accuracy of the set minus the probe accuracy of the member the
    criterion picks, in points; next to it the gap of a random pick (best minus mean), the
    control a criterion has to beat;
  * 95 % bootstrap intervals of both over members (resampled with replacement, 2000 draws,
    seed 0).
Every configuration is trained once (seed 0): the intervals cover the choice of members, not
the seed-to-seed noise of one configuration.

    python experiments/label_free_selection.py --out runs/label_free_selection [--steps 400]
        [--batch 256] [--probe-epochs 10] [--methods simclr,byol,vicreg] [--quick] [--replot]

--quick trains 3 members per method (the first field's values) with the tiny network for
16 steps: a smoke run of the whole pipeline, not a measurement.

Writes results.json, table.md and label_free_selection.png to --out; an interrupted run
started again with the same --out reuses the finished sweeps and resumes the others.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np

import reproduce_common as rc  # noqa: E402  (experiments/ is the script's directory)
from jaxssl import sweep  # noqa: E402

# The grid of each method: (sweepable config field, values). 6 members per method.
GRIDS: dict[str, list[tuple[str, list[float]]]] = {
    "simclr": [("loss.temperature", [0.05, 0.2, 1.0]), ("optim.lr", [3e-4, 3e-3])],
    "byol": [("optim.lr", [3e-4, 3e-3]), ("optim.weight_decay", [1e-6, 0.1, 1.0])],
    "vicreg": [("optim.lr", [3e-4, 3e-3]), ("optim.weight_decay", [1e-6, 0.1, 1.0])],
}
KEYS = {"loss.temperature": "temperature", "optim.lr": "lr", "optim.weight_decay": "weight_decay"}
# The criteria compared with the probe: (name, results key of r, larger-is-better score).
CRITERIA = [(name, key) for name, (key, _) in sweep.SELECTION_CRITERIA.items() if name != "linear_probe"]
METRICS = rc.ROW_METRICS + tuple(key for _, key in CRITERIA)
BOOTSTRAP_DRAWS = 2000


def quick_grid(grid: list[tuple[str, list[float]]]) -> list[tuple[str, list[float]]]:
  """--quick: every value of the first field, the first value of the others (3 members)."""
  return [(field, values if i == 0 else values[:1]) for i, (field, values) in enumerate(grid)]


def oracle_gap(scores: np.ndarray, probe: np.ndarray) -> float:
  """Best probe accuracy minus the probe accuracy of the highest-scoring member (points)."""
  return float(probe.max() - probe[int(np.argmax(scores))])


def statistics(rows: list[dict], seed: int = 0) -> dict:
  """Spearman's rho and the oracle gap of every criterion, with bootstrap intervals, for rows
  (members with a finite probe accuracy; a non-finite criterion scores last)."""
  rows = [r for r in rows if math.isfinite(r["linear_probe"])]
  probe = np.array([r["linear_probe"] for r in rows])
  rng = np.random.default_rng(seed)
  draws = [rng.integers(0, len(rows), len(rows)) for _ in range(BOOTSTRAP_DRAWS)]

  def interval(values):
    v = np.asarray([x for x in values if math.isfinite(x)])
    return [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if len(v) else [math.nan, math.nan]

  out = {"members": len(rows), "best_probe": float(probe.max()) if len(rows) else math.nan,
         "random_pick_gap": float(probe.max() - probe.mean()) if len(rows) else math.nan,
         "random_pick_gap_ci": interval([probe[d].max() - probe[d].mean() for d in draws]) if len(rows) else None,
         "criteria": {}}
  for name, key in CRITERIA:
    scores = np.array([sweep.criterion_score(name, r[key]) for r in rows])
    finite = np.where(np.isfinite(scores), scores, np.nan)
    out["criteria"][name] = {
        "spearman": sweep.spearman(finite, probe),
        "spearman_ci": interval([sweep.spearman(finite[d], probe[d]) for d in draws]),
        "oracle_gap": oracle_gap(scores, probe) if len(rows) else math.nan,
        "oracle_gap_ci": interval([oracle_gap(scores[d], probe[d]) for d in draws]),
        "picked": {k: rows[int(np.argmax(scores))][k] for k in ("method", *KEYS.values())
                   if k in rows[int(np.argmax(scores))]} if len(rows) else {},
        "picked_probe": float(probe[int(np.argmax(scores))]) if len(rows) else math.nan,
    }
  return out


def plot(rows: list[dict], stats: dict, path: str) -> str:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from jaxssl import plots
  fig, axes = plt.subplots(1, len(CRITERIA), figsize=(4.6 * len(CRITERIA), 3.8), squeeze=False)
  methods = sorted({r["method"] for r in rows})
  for ax, (name, key) in zip(axes[0], CRITERIA):
    for i, m in enumerate(methods):
      mine = [r for r in rows if r["method"] == m]
      ax.plot([r[key] for r in mine], [r["linear_probe"] for r in mine], "o", color=f"C{i}", label=m)
    rho = stats["all"]["criteria"][name]["spearman"]
    ax.set_title(f"{name} of r  (Spearman ρ = {rho:.2f}, all)")
    ax.set_xlabel(key + ("  (best near 1)" if name == "alpha_req" else ""))
    ax.set_ylabel("linear probe (%)")
    ax.grid(alpha=0.3)
  axes[0][0].legend(fontsize=8)
  fig.suptitle("Label-free criteria vs linear probe, Fashion-MNIST (one seed per configuration)")
  fig.tight_layout()
  return plots.save_figure(fig, path)


def write_outputs(result: dict, out: str) -> None:
  rows = result["rows"]
  stats = {"all": statistics(rows)}
  for m in sorted({r["method"] for r in rows}):
    stats[m] = statistics([r for r in rows if r["method"] == m])
  result["statistics"] = stats
  member_cols = [("method", "method"), ("temperature", "τ"), ("lr", "lr"), ("weight_decay", "wd"),
                 ("linear_probe", "linear probe (%)"), ("knn_200", "kNN-200 (%)"),
                 *[(key, key) for _, key in CRITERIA], ("effective_rank_z", "eff. rank z")]
  summary = ["| members | criterion | Spearman ρ [95 % CI] | oracle gap, points [95 % CI] | random pick gap [95 % CI] |",
             "|---|---|---|---|---|"]
  for subset, s in stats.items():
    for name, c in s["criteria"].items():
      summary.append(f"| {subset} ({s['members']}) | {name} | {c['spearman']:.2f} [{c['spearman_ci'][0]:.2f}, "
                     f"{c['spearman_ci'][1]:.2f}] | {c['oracle_gap']:.2f} [{c['oracle_gap_ci'][0]:.2f}, "
                     f"{c['oracle_gap_ci'][1]:.2f}] | {s['random_pick_gap']:.2f} [{s['random_pick_gap_ci'][0]:.2f}, "
                     f"{s['random_pick_gap_ci'][1]:.2f}] |")
  ordered = sorted(rows, key=lambda r: (r["method"], -r["linear_probe"] if math.isfinite(r["linear_probe"]) else 0))
  rc.write_outputs(out, result, [("criteria vs the linear probe", summary),
                                 ("members", rc.markdown_table(ordered, member_cols))])
  plot(rows, stats, os.path.join(out, "label_free_selection.png"))


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--out", default="runs/label_free_selection")
  rc.add_common_args(ap, steps=400, probe_epochs=10)
  ap.add_argument("--methods", default=",".join(GRIDS), help="comma-separated subset of " + ",".join(GRIDS))
  ap.add_argument("--replot", action="store_true", help="only rebuild table.md and the figure from results.json")
  args = ap.parse_args(argv)
  if args.replot:
    return rc.replot(args.out, write_outputs)
  methods = [m for m in args.methods.split(",") if m]
  unknown = sorted(set(methods) - set(GRIDS))
  if unknown:
    ap.error(f"--methods: no grid for {unknown}; choose from {sorted(GRIDS)}")
  grids = {m: quick_grid(GRIDS[m]) if args.quick else GRIDS[m] for m in methods}
  rc.apply_quick(args)
  os.makedirs(args.out, exist_ok=True)
  rows, seconds = [], {}
  for method in methods:
    t0 = time.time()
    cfg = rc.make_config(method, args)
    rows += rc.run_grid(cfg, os.path.join(args.out, method), grids[method], keys=KEYS, metrics=METRICS,
                        method=method)
    seconds[method] = time.time() - t0
  result = {"steps": args.steps, "batch": args.batch, "probe_epochs": args.probe_epochs, "seed": 0,
            "quick": bool(args.quick), "grids": grids, "rows": rows, "seconds": seconds}
  write_outputs(result, args.out)
  return 0


if __name__ == "__main__":
  sys.exit(main())
