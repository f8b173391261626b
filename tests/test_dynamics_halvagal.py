"""Halvagal, Laborieux & Zenke (2023) simulators: eigenvalue ODEs of the Euclidean /
cosine losses and their IsoLoss versions, closed forms, and the toy linear network
(d_in = 15, d_out = 10, W0 = randn/4, σ = 0.1) trained step by step."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl.dynamics import halvagal as H
from jaxssl.errors import ConfigError

SIGMA2 = 0.01     # σ = 0.1
LAM_STAR = 1 / 1.01


@functools.lru_cache(maxsize=None)
def _w0(d_out=10, d_in=15, seed=0):
  return jax.random.normal(jax.random.PRNGKey(seed), (d_out, d_in)) / 4 / np.sqrt(d_in / 15)


def test_isoloss_speedup_times():
  """Time from λ0 = 0.01 to 0.9λ* (α = 1, σ² = 0.01): 52.9 (Euclidean) vs 3.39 (IsoLoss)."""
  t_euc = float(H.time_to_fraction(0.01, loss="euclidean", alpha=1.0, sigma2=SIGMA2))
  lam0s = jnp.array([0.01, 0.1, 0.5, 0.95])     # vmapped (diffrax Event + root find)
  t_iso = np.asarray(jax.jit(jax.vmap(lambda l: H.time_to_fraction(
      l, loss="euclidean_iso", alpha=1.0, sigma2=SIGMA2)))(lam0s))
  np.testing.assert_allclose(t_euc, 52.9, rtol=0.02)
  np.testing.assert_allclose(t_iso[0], 3.39, rtol=0.02)
  # IsoLoss is logistic: t = ½ ln(9(λ*/λ0 − 1)) exactly
  np.testing.assert_allclose(t_iso[:3], 0.5 * np.log(9 * (LAM_STAR / lam0s[:3] - 1)),
                             rtol=1e-4)
  # a mode that starts above 0.9λ* never crosses it: inf
  assert np.isinf(t_iso[3])


def test_fixed_points_and_weight_decay():
  lam0 = jnp.array([0.05, 0.5, 2.0])
  # Euclidean, α = 1: every mode -> 1/1.01
  np.testing.assert_allclose(H.solve_eigenvalues(lam0, 2000.0, loss="euclidean"),
                             LAM_STAR, rtol=1e-4)
  np.testing.assert_allclose(H.fixed_point(1.0, SIGMA2), LAM_STAR, rtol=1e-6)
  # weight decay 0.5 > 1/(4·1.01): Euclidean collapses, IsoLoss -> (1 − η)/(1+σ²) = 0.495
  assert float(jnp.max(H.solve_eigenvalues(lam0, 200.0, loss="euclidean",
                                           eta=0.5))) < 1e-6
  np.testing.assert_allclose(H.solve_eigenvalues(lam0, 200.0, loss="euclidean_iso",
                                                 eta=0.5), 0.495, atol=1e-3)
  np.testing.assert_allclose(H.fixed_point(1.0, SIGMA2, 0.5, "euclidean_iso"), 0.5 / 1.01,
                             rtol=1e-6)
  assert np.isnan(float(H.fixed_point(1.0, SIGMA2, 0.5, "euclidean")))


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_euclidean_collapse_threshold_holds_for_any_alpha(alpha):
  """Euclidean: modes survive iff η ≤ 1/(4(1+σ²)) (for λ0 above the unstable root), for
  every α; Euclidean IsoLoss survives every η < 1."""
  sigma2s = jnp.array([0.0, 0.3, 1.0])
  thr = np.asarray(H.collapse_threshold(sigma2s))
  lam0 = jnp.array([1.0])
  for rel, survives in ((0.97, True), (1.03, False)):
    for j, s2 in enumerate(np.asarray(sigma2s)):
      out = H.halvagal_phase_diagram(jnp.array([rel * thr[j]]), jnp.array([s2]), lam0,
                                     loss="euclidean", alpha=alpha, t1=3000.0)
      assert bool(out["collapsed"][0, 0, 0]) != survives, (alpha, s2, rel)
      assert bool(out["collapsed_theory"][0, 0, 0]) != survives
  out = H.halvagal_phase_diagram(jnp.array([0.5, 0.9, 1.1]), sigma2s, lam0,
                                 loss="euclidean_iso", alpha=alpha, t1=3000.0)
  np.testing.assert_array_equal(out["collapsed"][:, :, 0],
                                [[False] * 3, [False] * 3, [True] * 3])
  np.testing.assert_allclose(out["lam_final"][:2, :, 0], out["lam_star"][:2], rtol=1e-3)


def test_phase_diagram_agrees_with_closed_form():
  etas = jnp.linspace(0.01, 0.6, 16)
  sigma2s = jnp.linspace(0.0, 1.0, 11)
  lam0s = jnp.array([0.05, 0.2, 1.0])
  out = H.halvagal_phase_diagram(etas, sigma2s, lam0s, loss="euclidean", alpha=1.0)
  assert out["lam_final"].shape == (16, 11, 3)
  crit = np.asarray(H.critical_eta(lam0s[None, None, :], 1.0, sigma2s[None, :, None]))
  far = np.abs(np.asarray(etas)[:, None, None] - crit) > 0.01
  np.testing.assert_array_equal(np.asarray(out["collapsed"])[far],
                                np.asarray(out["collapsed_theory"])[far])


def test_cosine_ode_conserves_trace_and_equalises():
  lam0 = H.eigenvalues(_w0())
  ts = jnp.array([0.0, 15.0, 200.0])
  lam = H.solve_eigenvalues(lam0, 200.0, loss="cosine", alpha=1.0, sigma2=SIGMA2,
                            saveat=ts)
  tr = jnp.sum(lam, -1)
  np.testing.assert_allclose(tr, tr[0], rtol=1e-5)
  ratio = np.asarray(jnp.max(lam, -1) / jnp.min(lam, -1))
  assert ratio[0] > 10 and ratio[-1] < 1.001
  # modes below the λ^{1+α}-weighted mean of λ^α grow, those above shrink
  d = H.cosine_vector_field(0.0, lam0, (1.0, SIGMA2, 0.0))
  u = lam0
  mean = jnp.sum(lam0 * u * u) / jnp.sum(lam0 * u)
  np.testing.assert_array_equal(np.asarray(d > 0), np.asarray(u < mean))


def test_toy_network_euclidean_matches_ode():
  """The toy network (sampled batches, SGD step by step) vs the eigenvalue ODE."""
  W0 = _w0()
  lam0 = H.eigenvalues(W0)
  lr, steps, every = 0.025, 600, 100
  ts = jnp.arange(0, steps + 1, every) * lr
  for loss in ("euclidean", "euclidean_iso"):
    traj = H.simulate_toy_network(jax.random.PRNGKey(1), W0, loss=loss, alpha=1.0,
                                  sigma2=SIGMA2, lr=lr, steps=steps, batch_size=1024,
                                  save_every=every)
    lam_sim = H.eigenvalues(traj)
    lam_ode = jnp.sort(H.solve_eigenvalues(lam0, ts[-1], loss=loss, sigma2=SIGMA2,
                                           saveat=ts), -1)
    rel = jnp.abs(lam_sim - lam_ode) / lam_ode
    assert float(rel.max()) < 0.03, (loss, float(rel.max()))
  # IsoLoss is already at λ* = 1/1.01 at t = 15 (Euclidean's small modes are not)
  np.testing.assert_allclose(lam_sim[-1], LAM_STAR, rtol=0.01)


def test_toy_network_weight_decay():
  """Weight decay 0.5: the Euclidean network collapses, IsoLoss settles at λ ≈ 0.495."""
  W0 = _w0()
  run = functools.partial(H.simulate_toy_network, jax.random.PRNGKey(2), W0,
                          alpha=1.0, sigma2=SIGMA2, eta=0.5, lr=0.05, steps=600,
                          expected=True, save_every=600)
  assert float(H.eigenvalues(run(loss="euclidean"))[-1].max()) < 1e-6
  np.testing.assert_allclose(H.eigenvalues(run(loss="euclidean_iso"))[-1], 0.495,
                             atol=2e-3)


def _cosine_network_vs_ode(d_out, d_in, lr, steps, batch_size):
  W0 = _w0(d_out, d_in)
  lam0 = H.eigenvalues(W0)
  every = steps // 4
  ts = jnp.arange(0, steps + 1, every) * lr
  errs = {}
  for loss in ("cosine", "cosine_iso"):
    traj = H.simulate_toy_network(jax.random.PRNGKey(3), W0, loss=loss, alpha=1.0,
                                  sigma2=SIGMA2, lr=lr, steps=steps,
                                  batch_size=batch_size, save_every=every)
    lam_sim = H.eigenvalues(traj)
    lam_ode = jnp.sort(H.solve_eigenvalues(lam0, ts[-1], loss=loss, sigma2=SIGMA2,
                                           saveat=ts), -1)
    errs[loss] = float(jnp.max(jnp.abs(lam_sim - lam_ode) / lam_ode))
  return errs


@pytest.mark.slow
def test_toy_network_cosine_matches_ode():
  """The cosine ODEs assume concentrated norms (exact as d → ∞). At d_out = 40 the
  network's eigenvalues follow them to a few % (at d_out = 10: ~25 %, at 80: ~2 %,
  see the slow test); at d_out = 10 the trace is conserved and max/min → 1."""
  errs = _cosine_network_vs_ode(40, 60, lr=0.03, steps=400, batch_size=1024)
  assert errs["cosine"] < 0.04 and errs["cosine_iso"] < 0.06, errs
  traj = H.simulate_toy_network(jax.random.PRNGKey(4), _w0(), loss="cosine", alpha=1.0,
                                sigma2=SIGMA2, lr=0.2, steps=300, batch_size=1024,
                                save_every=300)
  lam = H.eigenvalues(traj)
  np.testing.assert_allclose(lam[-1].sum(), lam[0].sum(), rtol=3e-3)
  assert float(lam[0].max() / lam[0].min()) > 10
  assert float(lam[-1].max() / lam[-1].min()) < 1.02


@pytest.mark.slow
def test_toy_network_cosine_matches_ode_d80():
  errs = _cosine_network_vs_ode(80, 120, lr=0.03, steps=400, batch_size=2048)
  assert max(errs.values()) < 0.03, errs


def test_isoloss_gradient_identity():
  """∇_W of the cosine IsoLoss = E[(∇_p cos(p, t)) x1ᵀ] (its z-gradient is the cosine
  loss's p-gradient); the cosine loss itself has Wp on the left."""
  W = _w0()
  k1, k2 = jax.random.split(jax.random.PRNGKey(5))
  x1 = jax.random.normal(k1, (64, 15))
  x2 = x1 + 0.1 * jax.random.normal(k2, (64, 15))
  Wp = H.theory_predictor(W, 1.0)
  z, t = x1 @ W.T, x2 @ W.T
  p = z @ Wp

  def neg_cos(p):
    return -jnp.mean(jnp.sum(p * t, -1) / (jnp.linalg.norm(p, axis=-1)
                                          * jnp.linalg.norm(t, axis=-1)))

  gp = jax.grad(neg_cos)(p)
  g_iso = jax.grad(H.toy_loss)(W, x1, x2, loss="cosine_iso", alpha=1.0)
  g_cos = jax.grad(H.toy_loss)(W, x1, x2, loss="cosine", alpha=1.0)
  np.testing.assert_allclose(g_iso, gp.T @ x1, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(g_cos, Wp @ gp.T @ x1, rtol=1e-4, atol=1e-6)


def test_bad_arguments_fail_loudly():
  with pytest.raises(ConfigError):
    H.vector_field("l1")
  with pytest.raises(ConfigError):
    H.simulate_toy_network(jax.random.PRNGKey(0), _w0(), loss="cosine", expected=True)
  with pytest.raises(ConfigError):
    H.halvagal_phase_diagram([0.1], [0.1], [0.5], loss="cosine")
