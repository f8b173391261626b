"""Reproduce the linear-dynamics results of Tian, Chen & Ganguli (ICML 2021) -- theory
(diffrax ODEs, closed forms) and the step-by-step linear network side by side.

    python experiments/dynamics_tian.py --out runs/dynamics_tian

Writes results.json and three figures:
  tian_phase_diagram.png   final predictor eigenvalue over (weight decay η × augmentation
                           σ²) from one vmapped ODE call, analytic boundaries overlaid,
                           and trained linear networks (markers) on a coarse grid;
  tian_trajectories.png    predictor eigenvalues of a trained network (SGD on sampled
                           batches) vs the cubic ODE, one mode per initial value p0;
  tian_invariant.png       ‖W_pᵀW_p − WWᵀ‖ / its initial value vs e^{−2ηt}: matrix flow
                           (ODE) and trained network.
Runs in about a minute on a 2-core CPU.
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
from jaxssl.dynamics import tian  # noqa: E402

SIGMA2 = 0.3


def worked_example() -> dict:
  """The SimSiam (τ = 1), σ² = 0.3 example: closed forms and integration."""
  etas = jnp.array([0.05, 0.15, 0.194])
  p0s = jnp.array([0.05, 0.2, 0.5])
  out = tian.tian_phase_diagram(etas, jnp.array([SIGMA2]), p0s, tau=1.0, t1=500.0)
  p = np.asarray(out["p_final"][:, 0, :])
  closed = {f"{e:g}": [float(x) for x in tian.fixed_points(e, SIGMA2)] for e in (0.05, 0.15)}
  return {
      "threshold": float(tian.collapse_threshold(SIGMA2)),
      "closed_form_p_minus_p_plus": closed,
      "integrated_p_final": {f"eta={float(e):g}": {f"p0={float(q):g}": float(p[i, j])
                                                   for j, q in enumerate(p0s)}
                             for i, e in enumerate(etas)},
  }


def phase_diagram(n: int, n_net: int, p0s, t1: float):
  etas = jnp.linspace(0.0, 0.35, n)
  sigma2s = jnp.linspace(0.0, 1.0, n)
  p0s = jnp.asarray(p0s)
  t0 = time.perf_counter()
  ode_out = jax.block_until_ready(tian.tian_phase_diagram(etas, sigma2s, p0s, t1=t1))
  ode_s = time.perf_counter() - t0

  # Trained networks on a coarse grid: 4 modes all starting at p0 (aligned init),
  # SimSiam, exact expected gradients, lr 0.1 -> t = lr * steps.
  net_etas = jnp.linspace(0.0125, 0.3375, n_net)
  net_sigma2s = jnp.linspace(0.0625, 0.9375, n_net)
  lr, steps = 0.1, 3000

  @jax.jit
  def nets(p0):
    state = tian.aligned_state(jax.random.PRNGKey(0), 4, jnp.full((4,), p0 ** 2),
                               jnp.full((4,), p0))

    def one(eta, s2):
      traj = tian.simulate_network(jax.random.PRNGKey(1), state, eta=eta, sigma2=s2,
                                   lr=lr, steps=steps, expected=True, save_every=steps)
      return tian.mode_values(jax.tree_util.tree_map(lambda a: a[-1], traj))[1].mean()

    return jax.vmap(lambda e: jax.vmap(lambda s: one(e, s))(net_sigma2s))(net_etas)

  t0 = time.perf_counter()
  net_p = np.stack([np.asarray(nets(p0)) for p0 in p0s], -1)      # [n_net, n_net, P]
  net_s = time.perf_counter() - t0
  _, p_plus = tian.fixed_points(net_etas[:, None], net_sigma2s[None, :])
  ref = np.where(np.isnan(p_plus)[..., None], np.asarray(p0s)[None, None, :],
                 np.asarray(p_plus)[..., None])
  net_collapsed = net_p < 0.5 * ref
  net_theory = np.asarray(tian.predicts_collapse(p0s[None, None, :],
                                                 net_etas[:, None, None],
                                                 net_sigma2s[None, :, None]))
  return dict(etas=np.asarray(etas), sigma2s=np.asarray(sigma2s), p0s=np.asarray(p0s),
              ode=jax.tree_util.tree_map(np.asarray, ode_out), ode_s=ode_s,
              net_etas=np.asarray(net_etas), net_sigma2s=np.asarray(net_sigma2s),
              net_p=net_p, net_collapsed=net_collapsed, net_theory=net_theory,
              net_s=net_s, net_t=lr * steps)


def plot_phase(pd, path):
  P = len(pd["p0s"])
  fig, axes = plt.subplots(1, P, figsize=(5.2 * P, 4.4), squeeze=False)
  E, S = np.meshgrid(pd["etas"], pd["sigma2s"], indexing="ij")
  for k, ax in enumerate(axes[0]):
    im = ax.pcolormesh(S, E, pd["ode"]["p_final"][:, :, k], shading="auto",
                       cmap="viridis", vmin=0, vmax=1)
    s = pd["sigma2s"]
    ax.plot(s, 1.0 / (4 * (1 + s)), "w-", lw=2.5, label=r"threshold $\tau^2/4(1+\sigma^2)$")
    crit = np.asarray(tian.critical_eta(pd["p0s"][k], s))
    ax.plot(s, crit, "r--", lw=1.8, label=r"boundary for this $p_0$ (closed form)")
    nc = pd["net_collapsed"][:, :, k]
    NE, NS = np.meshgrid(pd["net_etas"], pd["net_sigma2s"], indexing="ij")
    ax.scatter(NS[~nc], NE[~nc], marker="o", s=36, facecolors="none", edgecolors="w",
               linewidths=1.4, label="network: survives")
    ax.scatter(NS[nc], NE[nc], marker="x", s=36, c="orange", linewidths=1.6,
               label="network: collapses")
    ax.set_xlabel(r"augmentation variance $\sigma^2$")
    ax.set_ylabel(r"weight decay $\eta$")
    ax.set_title(rf"$p_0={pd['p0s'][k]:g}$: ODE $p(t_1)$ (colour), network (markers)",
                 fontsize=10)
    ax.set_ylim(pd["etas"][0], pd["etas"][-1])
    fig.colorbar(im, ax=ax, label=r"final predictor eigenvalue $p$")
    if k == 0:
      ax.legend(loc="upper right", fontsize=7, framealpha=0.6)
  fig.suptitle("Tian et al.: collapse phase diagram of linear SimSiam (L2 loss)")
  fig.tight_layout()
  plots.save_figure(fig, path)


def trajectories(eta: float, p0s, lr=0.05, steps=2400, every=40, batch=1024):
  p0s = jnp.asarray(p0s)
  state = tian.aligned_state(jax.random.PRNGKey(10), 12, p0s ** 2, p0s)
  traj = jax.jit(lambda k, s: tian.simulate_network(
      k, s, eta=eta, sigma2=SIGMA2, lr=lr, steps=steps, batch_size=batch,
      save_every=every))(jax.random.PRNGKey(11), state)
  _, p_sim = tian.mode_values(traj)
  ts = jnp.arange(steps // every + 1) * every * lr
  p_ode = jax.vmap(lambda q: tian.solve_cubic(q, eta, SIGMA2, 1.0, ts[-1],
                                              saveat=ts))(p0s).T
  p_ode_sorted = jnp.sort(p_ode, axis=1)
  return dict(ts=np.asarray(ts), p_sim=np.asarray(p_sim), p_ode=np.asarray(p_ode),
              max_abs_err=float(jnp.max(jnp.abs(p_sim - p_ode_sorted))),
              final_sim=np.asarray(p_sim[-1]).tolist(),
              final_ode=np.asarray(p_ode_sorted[-1]).tolist())


def plot_trajectories(trajs, p0s, path):
  fig, axes = plt.subplots(1, len(trajs), figsize=(6 * len(trajs), 4.2), squeeze=False)
  for ax, (eta, tr) in zip(axes[0], trajs.items()):
    colors = plt.cm.plasma(np.linspace(0, 0.85, len(p0s)))
    order = np.argsort(np.asarray(p0s))
    for k, c in zip(order, colors):
      ax.plot(tr["ts"], tr["p_ode"][:, k], "-", color=c, lw=2,
              label=rf"ODE, $p_0={p0s[k]:g}$")
    # the network's modes are sorted eigenvalues: colour them by rank
    for r, c in enumerate(colors):
      ax.plot(tr["ts"][::3], tr["p_sim"][::3, r], "o", color=c, ms=3.5, mfc="none")
    _, pp = tian.fixed_points(eta, SIGMA2)
    ax.axhline(float(pp), color="k", ls=":", lw=1, label=rf"$p_+={float(pp):.4f}$")
    ax.set_xlabel("time t (= lr × step)")
    ax.set_ylabel("predictor eigenvalue p")
    ax.set_title(rf"$\eta={eta:g}$, $\sigma^2={SIGMA2:g}$: lines = cubic ODE, "
                 rf"circles = trained network", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
  fig.tight_layout()
  plots.save_figure(fig, path)


def invariant(etas, lr=0.02, steps=1500, every=30, batch=2048):
  state = tian.init_state(jax.random.PRNGKey(20), 10, 6, scale=1.0)
  ts = jnp.arange(steps // every + 1) * every * lr
  res = {}
  for eta in etas:
    flow = tian.solve_matrix_flow(state, ts[-1], eta=eta, sigma2=SIGMA2, saveat=ts)
    inv_ode = jax.vmap(tian.invariant)(flow)
    net = tian.simulate_network(jax.random.PRNGKey(21), state, eta=eta, sigma2=SIGMA2,
                                lr=lr, steps=steps, batch_size=batch, save_every=every)
    inv_net = jax.vmap(tian.invariant)(net)
    pred = inv_ode[0][None] * jnp.exp(-2 * eta * ts)[:, None, None]
    rel_ode = jnp.linalg.norm(inv_ode - pred, axis=(1, 2)) / jnp.linalg.norm(pred, axis=(1, 2))
    rel_net = jnp.linalg.norm(inv_net - pred, axis=(1, 2)) / jnp.linalg.norm(pred, axis=(1, 2))
    n0 = jnp.linalg.norm(inv_ode[0])
    res[eta] = dict(ts=np.asarray(ts),
                    ode=np.asarray(jnp.linalg.norm(inv_ode, axis=(1, 2)) / n0),
                    net=np.asarray(jnp.linalg.norm(inv_net, axis=(1, 2)) / n0),
                    max_rel_err_ode=float(rel_ode.max()),
                    max_rel_err_net=float(rel_net.max()))
  return res


def plot_invariant(res, path):
  fig, ax = plt.subplots(figsize=(6.2, 4.3))
  colors = plt.cm.viridis(np.linspace(0, 0.8, len(res)))
  for (eta, r), c in zip(res.items(), colors):
    ax.semilogy(r["ts"], np.exp(-2 * eta * r["ts"]), "-", color=c, lw=2.5, alpha=0.5,
                label=rf"$e^{{-2\eta t}}$, $\eta={eta:g}$")
    ax.semilogy(r["ts"], r["ode"], "--", color=c, lw=1.5, label="matrix flow (diffrax)")
    ax.semilogy(r["ts"][::4], r["net"][::4], "o", color=c, ms=4, mfc="none",
                label="trained network (SGD)")
  ax.set_xlabel("time t")
  ax.set_ylabel(r"$\|W_p^\top W_p - WW^\top\|_F$ / initial")
  ax.set_title(r"Invariant of linear SimSiam ($\alpha_p=1$)", fontsize=10)
  ax.legend(fontsize=7, ncol=1)
  fig.tight_layout()
  plots.save_figure(fig, path)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--out", required=True, help="output directory")
  ap.add_argument("--grid", type=int, default=96, help="ODE phase grid is GRID x GRID")
  ap.add_argument("--net-grid", type=int, default=8, help="network markers grid")
  args = ap.parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  t_start = time.perf_counter()

  results = {"sigma2": SIGMA2, "worked_example": worked_example()}

  p0s_phase = [0.1, 0.6]
  pd = phase_diagram(args.grid, args.net_grid, p0s_phase, t1=600.0)
  plot_phase(pd, os.path.join(args.out, "tian_phase_diagram.png"))
  agree_ode = float((pd["ode"]["collapsed"] == pd["ode"]["collapsed_theory"]).mean())
  results["phase_diagram"] = {
      "grid": [args.grid, args.grid], "p0s": p0s_phase, "t1": 600.0,
      "ode_seconds_one_call": pd["ode_s"],
      "ode_vs_closed_form_agreement": agree_ode,
      "network_grid": [args.net_grid, args.net_grid], "network_t": pd["net_t"],
      "network_vs_closed_form_agreement": float((pd["net_collapsed"] ==
                                                 pd["net_theory"]).mean()),
      "network_seconds": pd["net_s"],
  }

  p0s_traj = [0.03, 0.06, 0.1, 0.2, 0.3, 0.5, 0.8, 1.1]
  trajs = {eta: trajectories(eta, p0s_traj) for eta in (0.05, 0.15)}
  plot_trajectories(trajs, p0s_traj, os.path.join(args.out, "tian_trajectories.png"))
  results["trajectories"] = {
      f"eta={eta:g}": {"p0s": p0s_traj, "max_abs_err_network_vs_ode": tr["max_abs_err"],
                       "final_network_sorted": tr["final_sim"],
                       "final_ode_sorted": tr["final_ode"]}
      for eta, tr in trajs.items()}

  inv = invariant((0.02, 0.05, 0.1))
  plot_invariant(inv, os.path.join(args.out, "tian_invariant.png"))
  results["invariant"] = {f"eta={eta:g}": {"max_rel_err_ode": r["max_rel_err_ode"],
                                           "max_rel_err_network": r["max_rel_err_net"]}
                          for eta, r in inv.items()}
  results["seconds"] = time.perf_counter() - t_start
  with open(os.path.join(args.out, "results.json"), "w") as f:
    json.dump(results, f, indent=2)
  print(json.dumps(results, indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main())
