"""Reproduce the minimisers of Koromilas et al. (ICML 2024, PAPERS.md B): contrastive
losses as hyperspherical energy minimisation, L-BFGS over free points on the sphere
(`jaxssl.dynamics.hem`), against the known configurations; and the batch-size
(in)dependence of the expected KCL vs InfoNCE losses.

    python experiments/dynamics_hem.py --out runs/dynamics_hem [--quick]

Writes results.json and two figures:
  hem_gram.png        Gram matrices uᵢᵀuⱼ of the minimisers (relabelled onto the theory's
                      order with `match_points`) next to the theory: simplex (M=4, d=3),
                      cross-polytope (M=6, d=3), pentagon (M=5, d=2), icosahedron (M=12,
                      d=3, τ = 0.1);
  hem_batch_size.png  mean loss vs batch size M (d = 16): KCL flat at its population
                      value, InfoNCE and paper-form DHEL growing like log M.
Every case is minimised for each of the five losses. Took 7.3 min on the 2-core CPU while three
training jobs shared the cores (2.2 min before the icosahedron was run for all five losses, alone).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from jaxssl import plots  # noqa: E402
from jaxssl.dynamics import hem  # noqa: E402

CASES = (("simplex", 4, 3, 0.5), ("cross-polytope", 6, 3, 0.5), ("pentagon", 5, 2, 0.5),
         ("icosahedron", 12, 3, 0.1))


def minimisers(names, restarts, iters) -> dict:
  out = {}
  for label, m, d, tau in CASES:
    nm = names
    t0 = time.perf_counter()
    res = hem.hem_sweep(nm, m, d, temperatures=(tau,), restarts=restarts, iters=iters)
    secs = time.perf_counter() - t0
    ref = hem.theory_gram(m, d)
    entry = {"m": m, "d": d, "temperature": tau, "seconds": secs, "losses": {}}
    for i, n in enumerate(nm):
      u, v = np.asarray(res.u[i, 0, 0]), np.asarray(res.v[i, 0, 0])
      entry["losses"][n] = {"gram_error": hem.gram_error(u @ u.T, ref),
                            "max_abs_u_minus_v": float(np.abs(u - v).max()),
                            "loss": float(res.loss[i, 0, 0]),
                            "grad_norm": float(res.grad_norm[i, 0, 0]), "u": u}
    out[label] = entry
  return out


def reference_points(label, m, d):
  if label == "simplex":
    # the M = d+1 simplex: centred, normalised standard basis of R^{d+1}, in R^d
    e = np.eye(m) - 1.0 / m
    q, _ = np.linalg.qr(e.T)
    p = e @ q[:, :d]
    return p / np.linalg.norm(p, axis=1, keepdims=True)
  if label == "cross-polytope":
    return np.concatenate([np.eye(d), -np.eye(d)])
  if label == "pentagon":
    a = 2 * np.pi * np.arange(m) / m
    return np.stack([np.cos(a), np.sin(a)], 1)
  return hem.icosahedron()


def plot_gram(mins, path):
  fig, axes = plt.subplots(2, len(CASES), figsize=(3.4 * len(CASES), 6.6))
  for j, (label, m, d, tau) in enumerate(CASES):
    e = mins[label]
    name = "info_nce"
    u = e["losses"][name]["u"]
    ref = reference_points(label, m, d)
    perm, rot, rms = hem.match_points(u, ref)
    inv = np.argsort(perm)              # u ≈ ref[perm] R: put u in the reference order
    g_sim = (u @ u.T)[np.ix_(inv, inv)]
    g_ref = ref @ ref.T
    for i, (g, title) in enumerate(((g_ref, "theory"),
                                    (g_sim, f"InfoNCE minimiser (rms {rms:.1e})"))):
      ax = axes[i, j]
      im = ax.imshow(g, vmin=-1, vmax=1, cmap="RdBu_r")
      ax.set_title(f"{label} M={m}, d={d}, τ={tau}\n{title}", fontsize=8)
      ax.set_xticks([])
      ax.set_yticks([])
  fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.6, label=r"$u_i^\top u_j$")
  plots.save_figure(fig, path)


def plot_batch(bs, ms, pop, path):
  fig, ax = plt.subplots(figsize=(6.2, 4.3))
  ms = np.asarray(ms)
  for name, c in (("kcl", "C0"), ("info_nce", "C3"), ("dhel_paper", "C1")):
    mean, sem = np.asarray(bs[name]["mean"]), np.asarray(bs[name]["sem"])
    ax.errorbar(ms, mean, yerr=2 * sem, fmt="o-", color=c, label=f"{name} (simulated)")
    if name != "kcl":
      ax.plot(ms, mean[-1] + np.log(ms / ms[-1]), ":", color=c, label="slope log M")
  ax.axhline(pop, color="C0", ls="--", lw=1, label=f"KCL population value {pop:.4f}")
  ax.set_xscale("log")
  ax.set_xlabel("batch size M")
  ax.set_ylabel("mean loss")
  ax.set_title("d = 16, σ = 0.36, τ = 0.3", fontsize=10)
  ax.legend(fontsize=7)
  fig.tight_layout()
  plots.save_figure(fig, path)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--out", required=True, help="output directory")
  ap.add_argument("--quick", action="store_true", help="fewer restarts, iterations, batches")
  args = ap.parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  t_start = time.perf_counter()
  q = args.quick
  names = ("info_nce", "kcl") if q else ("info_nce", "nt_xent", "dcl", "dhel", "kcl")
  mins = minimisers(names, restarts=2 if q else 4, iters=100 if q else 200)
  plot_gram(mins, os.path.join(args.out, "hem_gram.png"))
  results = {"minimisers": {
      label: {k: v for k, v in e.items() if k != "losses"} | {
          "losses": {n: {k: v for k, v in le.items() if k != "u"}
                     for n, le in e["losses"].items()}}
      for label, e in mins.items()}}

  ms = (8, 32, 128, 512)
  t0 = time.perf_counter()
  bs = hem.batch_size_dependence(ms, d=16, n_batches=64 if q else 256,
                                 names=("kcl", "info_nce", "dhel_paper"))
  pop = hem.kcl_population(16, 0.36, n_mc=200_000 if q else 2_000_000)
  plot_batch(bs, ms, pop, os.path.join(args.out, "hem_batch_size.png"))
  results["batch_size"] = {"M": list(ms), "d": 16, "kcl_population": pop,
                           "paper_kcl": "0.52 ± 0.01", "log_64": math.log(64),
                           "seconds": time.perf_counter() - t0, **bs}
  results["seconds"] = time.perf_counter() - t_start
  with open(os.path.join(args.out, "results.json"), "w") as f:
    json.dump(results, f, indent=2)
  print(json.dumps(results, indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main())
