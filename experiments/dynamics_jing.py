"""Reproduce the two toy cases of Jing, Vincent, LeCun & Tian (ICLR 2022) on dimensional
collapse in contrastive learning (official code: facebookresearch/directclr, toy_task/).

    python experiments/dynamics_jing.py --out runs/dynamics_jing [--quick]

Writes results.json and four figures:
  jing_case1_ratio.png      strong augmentation: mean(top-8)/mean(bottom-8) singular value
                            of W after 10 000 SGD steps vs noise std, every seed and their
                            mean, with the paper's values (PAPERS.md section C) overlaid;
  jing_case1_spectrum.png   log σ(W) after training (per noise) and the ratio during training;
  jing_case2_spectrum.png   implicit regularisation: the 16 embedding log-eigenvalues over
                            training (population covariance), the paper's outcome (≈ −2 for
                            the survivors, < −8 for the collapsed) marked;
  jing_case2_alignment.png  |V₂ᵀU₁| at init and after training, with the split into surviving
                            and collapsed directions.
Each case is one jitted lax.scan, vmapped over noise levels and seeds. About a minute on a
2-core CPU (--quick: one seed, about 20 s).
"""
from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from jaxssl import plots  # noqa: E402
from jaxssl.dynamics import jing  # noqa: E402

NOISES = sorted(jing.PAPER_CASE1_RATIOS)
PAPER = [jing.PAPER_CASE1_RATIOS[n] for n in NOISES]


def case1(seeds, steps: int) -> tuple[dict, dict]:
  t0 = time.perf_counter()
  out = jax.device_get(jing.case1_sweep(NOISES, seeds=seeds, steps=steps, log_every=100))
  secs = time.perf_counter() - t0
  ratio = np.asarray(out["ratio"])  # [seeds, noises]
  mean = ratio.mean(0)
  res = {
      "setup": {"n_data": 10000, "batch": 128, "dim": 16, "noisy_dims": 8, "lr": 1e-3,
                "temperature": 0.1, "steps": steps, "seeds": list(seeds),
                "init": "PyTorch nn.Linear default, U(+-1/4)",
                "sampling": "128 distinct indices per step (np.random.choice, no epochs)"},
      "noise": NOISES,
      "ratio_per_seed": ratio.tolist(),
      "ratio_mean": mean.tolist(),
      "ratio_paper": PAPER,
      "rel_err_mean_vs_paper": (mean / np.array(PAPER) - 1).tolist(),
      "monotonic_every_seed": bool(np.all(np.diff(ratio, axis=1) > 0)),
      "embedding_eig_ratio_mean": (np.asarray(out["sv"])[..., :8] ** 2).mean(-1).__truediv__(
          (np.asarray(out["sv"])[..., 8:] ** 2).mean(-1)).mean(0).tolist(),
      "seconds": secs,
  }
  return res, out


def case2(seeds, steps: int) -> tuple[dict, dict]:
  t0 = time.perf_counter()
  out = jax.device_get(jing.case2_sweep(seeds=seeds, steps=steps, log_every=10))
  secs = time.perf_counter() - t0
  n_coll = np.asarray(out["n_collapsed"])
  blocks = [tuple(float(b) for b in jing.block_alignment(out["align"][i], int(n_coll[i])))
            for i in range(len(seeds))]
  blocks0 = [tuple(float(b) for b in jing.block_alignment(out["align0"][i], int(n_coll[i])))
             for i in range(len(seeds))]
  final = np.asarray(out["log_eig"])[:, -1]
  res = {
      "setup": {"layers": "2 x Linear(16,16, bias=False), init U diag(exp(-0.35k)) V^T",
                "lr": 0.01, "noise": 0.001, "temperature": 0.1, "steps": steps,
                "seeds": list(seeds), "spectrum": "population covariance W2 W1 (W2 W1)^T"},
      "paper": "3-4 of 16 log-eigenvalues stay below -8, the rest reach about -2; "
               "V2^T U1 block-aligned",
      "n_below_minus8": n_coll.tolist(),
      "final_log_eig": final.tolist(),
      "survivor_log_eig_range": [float(min(final[i, :16 - n_coll[i]].min() for i in range(len(seeds)))),
                                 float(max(final[i, :16 - n_coll[i]].max() for i in range(len(seeds))))],
      "block_alignment_final(surviving,collapsed)": blocks,
      "block_alignment_init(surviving,collapsed)": blocks0,
      "seconds": secs,
  }
  return res, out


def plot_case1(res: dict, out: dict, path: str) -> None:
  ratio = np.asarray(res["ratio_per_seed"])
  fig, ax = plt.subplots(figsize=(5.2, 4))
  for r in ratio:
    ax.plot(NOISES, r, "o", color="tab:blue", alpha=0.35, ms=4)
  ax.plot(NOISES, ratio.mean(0), "-o", color="tab:blue",
          label=f"simulation (mean of {len(ratio)} seed{'s' * (len(ratio) > 1)})")
  ax.plot(NOISES, PAPER, "s--", color="tab:red", mfc="none", ms=8, label="paper (PAPERS.md C)")
  ax.set_yscale("log")
  ax.set_xlabel("augmentation noise std (last 8 dims)")
  ax.set_ylabel("mean top-8 σ(W) / mean bottom-8 σ(W)")
  ax.set_title("Jing et al. toy case 1: strong augmentation")
  ax.legend()
  ax.grid(alpha=0.3, which="both")
  fig.tight_layout()
  plots.save_figure(fig, path)


def plot_case1_spectrum(out: dict, path: str) -> None:
  log_sv = np.asarray(out["log_sv"])[0]  # [noises, T, 16], seed 0
  steps = np.asarray(out["step"])[0, 0]
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  colors = plt.cm.viridis(np.linspace(0, 0.9, len(NOISES)))
  for j, n in enumerate(NOISES):
    axes[0].plot(np.arange(1, 17), log_sv[j, -1], "-o", ms=3, color=colors[j], label=f"noise {n:g}")
    sv = np.exp(log_sv[j])
    axes[1].plot(steps, sv[:, :8].mean(-1) / sv[:, 8:].mean(-1), color=colors[j])
    axes[1].axhline(jing.PAPER_CASE1_RATIOS[n], color=colors[j], ls=":", lw=1)
  axes[0].set_xlabel("rank")
  axes[0].set_ylabel("log σ(W)")
  axes[0].set_title("singular values of W after training (seed 0)")
  axes[0].legend(fontsize=8)
  axes[1].set_yscale("log")
  axes[1].set_xlabel("SGD step")
  axes[1].set_ylabel("top-8 / bottom-8 σ(W)")
  axes[1].set_title("collapse ratio during training (dotted: paper)")
  for a in axes:
    a.grid(alpha=0.3)
  fig.tight_layout()
  plots.save_figure(fig, path)


def plot_case2(out: dict, path: str) -> None:
  log_eig = np.asarray(out["log_eig"])[0]
  steps = np.asarray(out["step"])[0]
  fig, ax = plt.subplots(figsize=(6, 4.2))
  ax.plot(steps, log_eig, lw=1)
  ax.axhline(-2, color="k", ls="--", lw=1, label="paper: survivors ≈ −2")
  ax.axhline(-8, color="tab:red", ls=":", lw=1.2, label="paper: collapsed < −8")
  k = int(np.asarray(out["n_collapsed"])[0])
  ax.set_xlabel("SGD step")
  ax.set_ylabel("log eigenvalue of embedding covariance")
  ax.set_title(f"Jing et al. toy case 2 (seed 0): {k} of 16 collapsed")
  ax.legend(loc="lower right")
  ax.grid(alpha=0.3)
  fig.tight_layout()
  plots.save_figure(fig, path)


def plot_alignment(out: dict, path: str) -> None:
  k = int(np.asarray(out["n_collapsed"])[0])
  fig, axes = plt.subplots(1, 2, figsize=(9, 4.3))
  for ax, key, title in ((axes[0], "align0", "at init"), (axes[1], "align", "after training")):
    a = np.abs(np.asarray(out[key])[0])
    im = ax.imshow(a, vmin=0, vmax=1, cmap="gray")
    ax.axhline(15.5 - k, color="tab:red", lw=1)
    ax.axvline(15.5 - k, color="tab:red", lw=1)
    s, c = jing.block_alignment(a, k)
    ax.set_title(f"|V₂ᵀU₁| {title}\nblock mass: surviving {float(s):.3f}, collapsed {float(c):.3f}",
                 fontsize=9)
    ax.set_xlabel("left singular vectors of W₁")
    ax.set_ylabel("right singular vectors of W₂")
  fig.colorbar(im, ax=axes, shrink=0.8)
  plots.save_figure(fig, path)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--out", required=True, help="output directory")
  ap.add_argument("--quick", action="store_true", help="one seed per case")
  ap.add_argument("--seeds", type=int, default=4, help="seeds per case (ignored with --quick)")
  ap.add_argument("--steps", type=int, default=10_000, help="SGD steps (official: 10 000)")
  args = ap.parse_args()
  os.makedirs(args.out, exist_ok=True)
  seeds = list(range(1 if args.quick else args.seeds))

  r1, o1 = case1(seeds, args.steps)
  r2, o2 = case2(seeds, args.steps)
  plot_case1(r1, o1, os.path.join(args.out, "jing_case1_ratio.png"))
  plot_case1_spectrum(o1, os.path.join(args.out, "jing_case1_spectrum.png"))
  plot_case2(o2, os.path.join(args.out, "jing_case2_spectrum.png"))
  plot_alignment(o2, os.path.join(args.out, "jing_case2_alignment.png"))
  results = {"case1_strong_augmentation": r1, "case2_implicit_regularisation": r2,
             "devices": [str(d) for d in jax.devices()]}
  with open(os.path.join(args.out, "results.json"), "w") as f:
    json.dump(results, f, indent=2)
  print(json.dumps({"case1_ratio_mean": r1["ratio_mean"], "paper": PAPER,
                    "case2_n_below_-8": r2["n_below_minus8"],
                    "case2_blocks": r2["block_alignment_final(surviving,collapsed)"]}, indent=2))


if __name__ == "__main__":
  main()
