"""Reproduce Bao (arXiv 2309.16109, PAPERS.md F): feature normalisation (the cosine loss)
prevents the collapse of linear SimSiam under weight decay -- theory (the
concentrated-norm eigenmode ODE, closed forms) and the trained network side by side.

    python experiments/dynamics_bao.py --out runs/dynamics_bao [--quick]

Writes results.json and four figures:
  bao_phase_diagram.png      final ‖Φ‖/‖Φ₀‖ of trained networks over (weight decay ρ ×
                             augmentation σ²), L2 vs cosine, one vmapped call per loss,
                             with the L2 threshold 1/(4(1+σ²)) overlaid;
  bao_norms.png              ‖Φ‖ of the paper's run (d = 32, h = 16, σ² = 0.3, ρ = 0.3,
                             lr 0.05, batch 1024): L2 → 1e-18, cosine → ≈ 0.21, against the
                             exact gradient-flow law ‖Φ₀‖e^{−ρt} and the GD steady state;
  bao_eigen_trajectories.png eigenvalues of ΦΦᵀ and Ψ of a trained network (circles) vs
                             the cosine eigenmode ODE (lines);
  bao_regime_diagram.png     quasi-static equilibria P±(‖Φ‖) (bifurcation diagram) with
                             the trained network's relative modes, and p₊ over (‖Φ‖, ‖Ψ‖).
Runs in about a minute on a 2-core CPU (--quick: smaller grid, fewer steps).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from jaxssl import plots  # noqa: E402
from jaxssl.dynamics import bao  # noqa: E402

SIGMA2, RHO, D, H = 0.3, 0.3, 32, 16


def paper_run(steps: int, every: int = 20) -> dict:
  """PAPERS.md F simulation: both losses from the same init and batches."""
  state = bao.init_state(jax.random.PRNGKey(0), D, H)
  lr = 0.05

  @jax.jit
  def run(key):
    return {loss: bao.simulate_network(key, state, loss=loss, rho=RHO, sigma2=SIGMA2, lr=lr,
                                       steps=steps, batch_size=1024, save_every=every)
            for loss in bao.LOSSES}

  t0 = time.perf_counter()
  out = jax.block_until_ready(run(jax.random.PRNGKey(1)))
  secs = time.perf_counter() - t0
  ts = np.arange(steps // every + 1) * every * lr
  res = {"ts": ts, "seconds": secs, "lr": lr}
  for loss, traj in out.items():
    n_phi, n_psi = bao.norms(traj)
    s, p = bao.mode_values(traj)
    res[loss] = dict(n_phi=np.asarray(n_phi), n_psi=np.asarray(n_psi), s=np.asarray(s),
                     p=np.asarray(p), pr=np.asarray(bao.participation_ratio(s)))
  # exact gradient flow on a fixed sample: ‖Φ‖² = ‖Φ₀‖² e^{−2ρt}
  x1, x2 = bao.sample_views(jax.random.PRNGKey(2), 512, D, SIGMA2)
  big = bao.init_state(jax.random.PRNGKey(0), D, H, scale=1.5)
  tf = jnp.linspace(0.0, 4.0, 9)
  flow = bao.solve_matrix_flow(big, x1, x2, tf[-1], loss="cosine", rho=RHO, saveat=tf)
  nf = np.asarray(bao.norms(flow)[0])
  res["flow_max_rel_err"] = float(np.max(np.abs(nf ** 2 / (nf[0] ** 2 * np.exp(-2 * RHO *
                                                                           np.asarray(tf)))
                                                - 1)))
  return res


def plot_norms(r, path):
  fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.3))
  ts = r["ts"]
  ax = axes[0]
  n0 = r["cosine"]["n_phi"][0]
  ax.semilogy(ts, n0 * np.exp(-RHO * ts), "k-", lw=2.5, alpha=0.4,
              label=r"gradient flow, cosine (exact): $\|\Phi_0\|e^{-\rho t}$")
  ax.semilogy(ts, r["l2"]["n_phi"], "C3-", lw=1.6, label="L2 loss (trained)")
  ax.semilogy(ts, r["cosine"]["n_phi"], "C0-", lw=1.6, label="cosine loss (trained)")
  ax.axhline(float(bao.norm_threshold(RHO, SIGMA2)), color="C2", ls="--", lw=1,
             label=r"$N_c=1/\sqrt{4\rho(1+\sigma^2)}$")
  ax.set_ylim(1e-20, 20)
  ax.set_xlabel("time t (= lr × step)")
  ax.set_ylabel(r"$\|\Phi\|_F$")
  ax.set_title(rf"$\rho={RHO}$ > L2 threshold {float(bao.l2_threshold(SIGMA2)):.3f}, "
               rf"$\sigma^2={SIGMA2}$", fontsize=10)
  ax.legend(fontsize=7)
  ax = axes[1]
  ax.plot(ts, r["cosine"]["pr"], "C0-", label="cosine")
  ax.plot(ts, r["l2"]["pr"], "C3-", label="L2 (until underflow)")
  ax.axhline(15.5, color="k", ls=":", lw=1, label="paper: 15.5")
  ax.set_ylim(0, H + 0.5)
  ax.set_xlabel("time t")
  ax.set_ylabel(r"participation ratio of eig($\Phi\Phi^\top$)")
  ax.legend(fontsize=8)
  fig.tight_layout()
  plots.save_figure(fig, path)


def eigen_trajectories(steps: int, every: int, batch: int) -> dict:
  rho, lr = 0.1, 0.01
  s0 = jnp.linspace(0.02, 0.1, H)
  p0 = jnp.linspace(0.35, 0.05, H)
  state = bao.aligned_state(jax.random.PRNGKey(0), D, s0, p0)
  traj = jax.jit(lambda k: bao.simulate_network(
      k, state, loss="cosine", rho=rho, sigma2=SIGMA2, lr=lr, steps=steps,
      batch_size=batch, save_every=every))(jax.random.PRNGKey(1))
  s_net, p_net = bao.mode_values(traj)
  ts = jnp.arange(steps // every + 1) * every * lr
  s_ode, p_ode = bao.solve_eigenmodes(s0, p0, ts[-1], loss="cosine", rho=rho,
                                      sigma2=SIGMA2, saveat=ts)
  order = jnp.argsort(p0)
  s_ode_sorted, p_ode_sorted = jnp.sort(s_ode, -1), jnp.sort(p_ode, -1)
  return dict(ts=np.asarray(ts), s_net=np.asarray(s_net), p_net=np.asarray(p_net),
              s_ode=np.asarray(s_ode), p_ode=np.asarray(p_ode), rho=rho, lr=lr,
              order=np.asarray(order),
              s_rel_err=float(jnp.max(jnp.abs(s_net - s_ode_sorted)) / jnp.max(s_ode)),
              p_rel_err=float(jnp.max(jnp.abs(p_net - p_ode_sorted)) / jnp.max(p_ode)))


def plot_eigen(tr, path):
  fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.3))
  colors = plt.cm.viridis(np.linspace(0, 0.9, H))
  for ax, key, lab in ((axes[0], "s", r"eigenvalues $s_k$ of $\Phi\Phi^\top$"),
                       (axes[1], "p", r"eigenvalues $p_k$ of $\Psi$")):
    for k in range(H):
      ax.plot(tr["ts"], tr[f"{key}_ode"][:, k], "-", color=colors[k], lw=1.4)
      ax.plot(tr["ts"], tr[f"{key}_net"][:, k], "o", color="k", ms=2.5, mfc="none")
    ax.set_xlabel("time t (= lr × step)")
    ax.set_ylabel(lab)
    err = tr[f"{key}_rel_err"]
    ax.set_title(rf"cosine, $\rho={tr['rho']}$, $\sigma^2={SIGMA2}$: lines ODE, circles "
                 rf"network (max err {100 * err:.1f}% of max)", fontsize=9)
  fig.tight_layout()
  plots.save_figure(fig, path)


def phase(n: int, steps: int) -> dict:
  rhos = jnp.linspace(0.02, 0.5, n)
  sigma2s = jnp.linspace(0.0, 1.0, n)
  state = bao.init_state(jax.random.PRNGKey(3), 16, 8)
  res = {"rhos": np.asarray(rhos), "sigma2s": np.asarray(sigma2s)}
  for loss in bao.LOSSES:
    t0 = time.perf_counter()
    out = bao.network_phase_diagram(jax.random.PRNGKey(4), state, rhos, sigma2s, loss=loss,
                                    lr=0.05, steps=steps, batch_size=128)
    out = jax.tree_util.tree_map(np.asarray, out)
    out["seconds"] = time.perf_counter() - t0
    out["n0"] = float(bao.norms(state)[0])
    res[loss] = out
  return res


def plot_phase(ph, path):
  fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.4))
  R, S = np.meshgrid(ph["rhos"], ph["sigma2s"], indexing="ij")
  s = np.linspace(0, 1, 100)
  for ax, loss in zip(axes, bao.LOSSES):
    o = ph[loss]
    val = np.log10(np.maximum(o["norm_phi"] / o["n0"], 1e-30))
    im = ax.pcolormesh(S, R, val, shading="auto", cmap="magma", vmin=-20, vmax=0)
    ax.plot(s, 1 / (4 * (1 + s)), "c-", lw=2.5, label=r"L2 threshold $1/4(1+\sigma^2)$")
    c = o["collapsed"]
    ax.scatter(S[~c], R[~c], marker="o", s=30, facecolors="none", edgecolors="w",
               label="network survives")
    ax.scatter(S[c], R[c], marker="x", s=30, c="lime", label="network collapses")
    ax.set_xlabel(r"augmentation $\sigma^2$")
    ax.set_ylabel(r"weight decay $\rho$")
    agree = float((o["collapsed"] == o["collapsed_theory"]).mean())
    ax.set_title(f"{loss}: log10 ‖Φ_T‖/‖Φ₀‖ (theory agreement {100 * agree:.0f}%)",
                 fontsize=9)
    fig.colorbar(im, ax=ax)
    ax.legend(fontsize=7, loc="upper right")
  fig.tight_layout()
  plots.save_figure(fig, path)


def plot_regime(r, path):
  fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.4))
  ax = axes[0]
  n = np.linspace(0.01, 1.2, 400)
  eq = bao.equilibria(n, n, RHO, SIGMA2, H)
  nc = float(bao.norm_threshold(RHO, SIGMA2))
  ax.plot(n, eq["P_plus"], "C0-", lw=2.5, label=r"$P_+$ (stable)")
  ax.plot(n, eq["P_minus"], "C3--", lw=2, label=r"$P_-$ (saddle, separatrix)")
  ax.plot(n, 0 * n, "k-", lw=2, label="collapsed (stable)")
  ax.axvspan(nc, n[-1], color="0.85", label="regime 0: only collapsed")
  ax.fill_between(n, 0, np.nan_to_num(eq["P_minus"]), where=n <= nc, color="C3",
                  alpha=0.15, label="regime 1: collapses")
  ax.fill_between(n, np.nan_to_num(eq["P_minus"]), 1.6, where=n <= nc, color="C0",
                  alpha=0.1, label=r"regime 2: $\to P_+$")
  # the trained cosine network: relative modes vs its norm
  c = r["cosine"]
  S_rel, P_rel = bao.relative_modes(jnp.asarray(c["s"]), jnp.asarray(c["p"]))
  k = np.arange(0, len(c["n_phi"]), 3)
  for j in range(H):
    ax.plot(c["n_phi"][k], np.asarray(P_rel)[k, j], ".", color="k", ms=2)
  ax.plot([], [], "k.", label="trained network modes $P_k$")
  ax.set_xscale("log")
  ax.set_ylim(-0.05, 1.6)
  ax.set_xlabel(r"$N_\Phi=\|\Phi\|_F$")
  ax.set_ylabel(r"relative predictor eigenvalue $P=\sqrt{h}p/\|\Psi\|$")
  ax.set_title(rf"quasi-static equilibria, $\rho={RHO}$, $\sigma^2={SIGMA2}$", fontsize=10)
  ax.legend(fontsize=6.5, loc="upper left")
  ax = axes[1]
  a = np.linspace(0.05, 1.2, 120)
  g = bao.regime_diagram(a, a, RHO, SIGMA2, H)
  A, B = np.meshgrid(a, a, indexing="ij")
  im = ax.pcolormesh(A, B, np.asarray(g["p_plus"]), shading="auto", cmap="viridis")
  ax.axvline(nc, color="w", ls="--", label=r"$N_c$")
  ax.set_xlabel(r"$N_\Phi$")
  ax.set_ylabel(r"$N_\Psi$")
  ax.set_title(r"stable equilibrium $p_+ = N_\Psi P_+/\sqrt{h}$ (white: none)", fontsize=10)
  fig.colorbar(im, ax=ax)
  ax.legend(fontsize=8)
  fig.tight_layout()
  plots.save_figure(fig, path)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--out", required=True, help="output directory")
  ap.add_argument("--quick", action="store_true", help="smaller grid and fewer steps")
  args = ap.parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  t_start = time.perf_counter()
  q = args.quick
  results = {"sigma2": SIGMA2, "rho": RHO, "d": D, "h": H,
             "l2_threshold": float(bao.l2_threshold(SIGMA2)),
             "norm_threshold": float(bao.norm_threshold(RHO, SIGMA2))}

  r = paper_run(steps=1500 if q else 3000)
  plot_norms(r, os.path.join(args.out, "bao_norms.png"))
  plot_regime(r, os.path.join(args.out, "bao_regime_diagram.png"))
  i1000 = min(len(r["ts"]) - 1, 1000 // 20)
  _, P_fin = bao.relative_modes(jnp.asarray(r["cosine"]["s"][-1]),
                                jnp.asarray(r["cosine"]["p"][-1]))
  eq = bao.equilibria(r["cosine"]["n_phi"][-1], r["cosine"]["n_psi"][-1], RHO, SIGMA2, H)
  results["paper_run"] = {
      "steps": int(round(r["ts"][-1] / r["lr"])), "seconds": r["seconds"],
      "l2_norm_phi_final": float(r["l2"]["n_phi"][-1]),
      "l2_norm_phi_at_step_3000": (float(r["l2"]["n_phi"][3000 // 20])
                                   if len(r["ts"]) > 3000 // 20 else None),
      "cosine_norm_phi_final": float(r["cosine"]["n_phi"][-1]),
      "cosine_norm_phi_mean_after_step_1000": float(r["cosine"]["n_phi"][i1000:].mean()),
      "cosine_norm_psi_final": float(r["cosine"]["n_psi"][-1]),
      "cosine_participation_ratio_final": float(r["cosine"]["pr"][-1]),
      "cosine_relative_modes_P_min_max": [float(P_fin.min()), float(P_fin.max())],
      "quasi_static_P_plus_P_minus_at_final_norm": [float(eq["P_plus"]),
                                                    float(eq["P_minus"])],
      "gradient_flow_norm_decay_max_rel_err": r["flow_max_rel_err"],
  }

  tr = eigen_trajectories(steps=400 if q else 800, every=50 if q else 100,
                          batch=1024 if q else 4096)
  plot_eigen(tr, os.path.join(args.out, "bao_eigen_trajectories.png"))
  results["eigen_trajectories"] = {"rho": tr["rho"], "lr": tr["lr"], "t1": float(tr["ts"][-1]),
                                   "max_err_s_over_max": tr["s_rel_err"],
                                   "max_err_p_over_max": tr["p_rel_err"]}

  ph = phase(n=5 if q else 10, steps=800 if q else 1500)
  plot_phase(ph, os.path.join(args.out, "bao_phase_diagram.png"))
  results["phase_diagram"] = {
      "grid": [len(ph["rhos"]), len(ph["sigma2s"])], "d": 16, "h": 8,
      **{loss: {"collapsed_fraction": float(ph[loss]["collapsed"].mean()),
                "agreement_with_theory": float((ph[loss]["collapsed"] ==
                                                ph[loss]["collapsed_theory"]).mean()),
                "min_participation_ratio_of_survivors": float(
                    ph[loss]["participation_ratio"][~ph[loss]["collapsed"]].min())
                if (~ph[loss]["collapsed"]).any() else None,
                "seconds_one_call": ph[loss]["seconds"]} for loss in bao.LOSSES}}
  results["seconds"] = time.perf_counter() - t_start
  with open(os.path.join(args.out, "results.json"), "w") as f:
    json.dump(results, f, indent=2)
  print(json.dumps(results, indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main())
