"""Bao (PAPERS.md F): linear SimSiam with the cosine vs the L2 loss under weight decay.
Exact norm invariants, the concentrated-norm cosine eigenmode ODE against the trained
network, the quasi-static regime diagram, and the paper's simulation."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl.dynamics import bao, tian
from jaxssl.errors import ConfigError

SIGMA2 = 0.3
H, D = 16, 32
S0 = jnp.linspace(0.02, 0.1, H)
P0 = jnp.linspace(0.35, 0.05, H)
TS = jnp.linspace(0.0, 8.0, 9)


def test_l2_threshold_and_eigenmodes_reduce_to_tian():
  np.testing.assert_allclose(bao.l2_threshold(SIGMA2), 0.19231, atol=1e-5)
  p0 = jnp.array([0.05, 0.2, 0.5, 0.9])
  s, p = bao.solve_eigenmodes(p0 ** 2, p0, 400.0, loss="l2", rho=0.05, sigma2=SIGMA2)
  # PAPERS.md D worked example: p0 = 0.05 -> 0, p0 >= 0.2 -> 0.7155
  assert float(p[0]) < 1e-3
  np.testing.assert_allclose(p[1:], 0.7155, atol=1e-3)
  np.testing.assert_allclose(s[1:], p[1:] ** 2, rtol=1e-3)
  _, p = bao.solve_eigenmodes(p0 ** 2, p0, 400.0, loss="l2", rho=0.2, sigma2=SIGMA2)
  assert float(jnp.max(p)) < 1e-3       # above the threshold every mode collapses


def test_cosine_eigenmode_ode_exact_invariants():
  rho = 0.15
  s, p = bao.solve_eigenmodes(S0, P0, TS[-1], loss="cosine", rho=rho, sigma2=SIGMA2,
                              saveat=TS)
  decay = jnp.exp(-2 * rho * TS)
  np.testing.assert_allclose(s.sum(-1), S0.sum() * decay, rtol=1e-5)
  np.testing.assert_allclose((p ** 2).sum(-1), (P0 ** 2).sum() * decay, rtol=1e-5)
  np.testing.assert_allclose(p ** 2 - s, (P0 ** 2 - S0)[None] * decay[:, None],
                             rtol=1e-4, atol=1e-7)
  # rho = 0: the trace tr(ΦΦᵀ) = Σs is conserved, while the modes move
  s, p = bao.solve_eigenmodes(S0, P0, TS[-1], loss="cosine", rho=0.0, sigma2=SIGMA2,
                              saveat=TS)
  np.testing.assert_allclose(s.sum(-1), S0.sum(), rtol=1e-5)
  assert float(jnp.max(jnp.abs(s[-1] - S0))) > 0.02
  # late times: the predictor eigenvalues of the live modes equalise at p = 1/κ (the
  # ρ = 0 cosine fixed point), the trace still conserved
  s, p = bao.solve_eigenmodes(S0, P0, 400.0, loss="cosine", rho=0.0, sigma2=SIGMA2)
  np.testing.assert_allclose(s.sum(), S0.sum(), rtol=1e-4)   # float32 over t = 400
  _, kappa = bao.mode_coefficients(s, p, SIGMA2)
  live = s > 1e-2 * s.max()
  assert int(live.sum()) >= 10
  np.testing.assert_allclose(p[live], 1.0 / kappa[0], rtol=1e-3)


def test_weight_decay_only_reparametrises_time_for_cosine():
  rho, t1 = 0.1, 5.0
  s_r, p_r = bao.solve_eigenmodes(S0, P0, t1, loss="cosine", rho=rho, sigma2=SIGMA2)
  tau = bao.reparametrised_time(t1, rho)
  s_0, p_0 = bao.solve_eigenmodes(S0, P0, tau, loss="cosine", rho=0.0, sigma2=SIGMA2)
  for a, b in zip(bao.relative_modes(s_r, p_r), bao.relative_modes(s_0, p_0)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(bao.reparametrised_time(2.0, 0.0), 2.0)


@pytest.mark.slow
def test_matrix_flow_norms_decay_exactly_as_exp_minus_2rho_t():
  """PAPERS.md F, exact: the cosine loss is scale-invariant in Φ and Ψ, so ‖Φ‖² and ‖Ψ‖²
  decay as e^{−2ρt} under gradient flow (for any sample); ρ = 0 conserves the trace."""
  key = jax.random.PRNGKey(0)
  # large norms keep the flow non-stiff (the direction rate scales as 1/‖Φ‖²)
  state = bao.init_state(key, 12, 6, scale=1.5)
  x1, x2 = bao.sample_views(jax.random.PRNGKey(1), 256, 12, SIGMA2)
  ts = jnp.linspace(0.0, 4.0, 9)
  n_phi0, n_psi0 = bao.norms(state)
  for rho in (0.0, 0.3):
    traj = bao.solve_matrix_flow(state, x1, x2, ts[-1], loss="cosine", rho=rho, saveat=ts)
    n_phi, n_psi = bao.norms(traj)
    decay = jnp.exp(-2 * rho * ts)
    np.testing.assert_allclose(n_phi ** 2, n_phi0 ** 2 * decay, rtol=1e-4)
    np.testing.assert_allclose(n_psi ** 2, n_psi0 ** 2 * decay, rtol=1e-4)
    # the direction does move (by far more than the tolerance)
    assert float(jnp.linalg.norm(traj.phi[-1] / n_phi[-1] - state.phi / n_phi0)) > 0.02
  # the L2 loss is not scale-invariant: its norm leaves e^{−2ρt}
  traj = bao.solve_matrix_flow(state, x1, x2, ts[-1], loss="l2", rho=0.3, saveat=ts)
  rel = bao.norms(traj)[0][-1] ** 2 / (n_phi0 ** 2 * np.exp(-2 * 0.3 * 4.0))
  assert abs(float(rel) - 1.0) > 0.05
  # one GD step: ‖Φ'‖² = (1 − lr ρ)²‖Φ‖² + lr²‖∇L‖² exactly (∇L ⟂ Φ)
  lr, rho = 0.05, 0.3
  g = bao.grads(state, x1, x2, loss="cosine")
  new = bao.LinearSimSiamState(*(w - lr * (gw + rho * w) for w, gw in zip(state, g)))
  want = (1 - lr * rho) ** 2 * n_phi0 ** 2 + lr ** 2 * jnp.sum(g.phi ** 2)
  np.testing.assert_allclose(bao.norms(new)[0] ** 2, want, rtol=1e-5)


def test_cosine_eigenmode_ode_matches_trained_network():
  """Aligned init, SGD on fresh batches vs the concentrated-norm ODE (d = 32, h = 16).
  Measured: max |Δ| / max value ≈ 1.9% (s) and 1.7% (p) over t ∈ [0, 8]."""
  rho, lr, steps, every = 0.1, 0.01, 800, 100
  state = bao.aligned_state(jax.random.PRNGKey(0), D, S0, P0)
  traj = bao.simulate_network(jax.random.PRNGKey(1), state, loss="cosine", rho=rho,
                              sigma2=SIGMA2, lr=lr, steps=steps, batch_size=2048,
                              save_every=every)
  s_net, p_net = bao.mode_values(traj)
  s_ode, p_ode = bao.solve_eigenmodes(S0, P0, TS[-1], loss="cosine", rho=rho,
                                      sigma2=SIGMA2, saveat=TS)
  s_ode, p_ode = jnp.sort(s_ode, -1), jnp.sort(p_ode, -1)
  assert s_net.shape == s_ode.shape == (9, H)
  assert float(jnp.max(jnp.abs(s_net - s_ode)) / jnp.max(s_ode)) < 0.03
  assert float(jnp.max(jnp.abs(p_net - p_ode)) / jnp.max(p_ode)) < 0.03
  # and the trajectory really moves (≫ the tolerance)
  assert float(jnp.max(jnp.abs(p_ode[-1] - jnp.sort(P0)))) > 0.1


@pytest.mark.slow
def test_paper_simulation_l2_collapses_cosine_does_not():
  """PAPERS.md F: d = 32, h = 16, σ² = 0.3, batch 1024, ρ = 0.3 (> 0.192), lr 0.05.
  L2: ‖Φ‖ → 1e-18; cosine: ‖Φ‖ → ≈ 0.21 with participation ratio ≈ 15.5 of 16."""
  state = bao.init_state(jax.random.PRNGKey(0), D, H)

  @jax.jit
  def run(key):
    return {loss: bao.simulate_network(key, state, loss=loss, rho=0.3, sigma2=SIGMA2,
                                       lr=0.05, steps=3000, batch_size=1024,
                                       save_every=1000) for loss in bao.LOSSES}

  out = run(jax.random.PRNGKey(1))
  n_l2 = float(bao.norms(out["l2"])[0][-1])
  assert 1e-20 < n_l2 < 1e-16, n_l2                 # measured 7e-19
  n_cos = np.asarray(bao.norms(out["cosine"])[0][1:])
  np.testing.assert_allclose(n_cos, 0.21, rtol=0.1)  # measured 0.202 (steady from 1000)
  s, p = bao.mode_values(out["cosine"])
  pr = float(bao.participation_ratio(s[-1]))
  np.testing.assert_allclose(pr, 15.5, atol=0.3)     # measured 15.5
  # theory: the steady norm is far below N_c = 1/√(4ρ(1+σ²)) = 0.80, so every mode is
  # in the surviving regime (above the separatrix P₋)
  np.testing.assert_allclose(bao.norm_threshold(0.3, SIGMA2), 0.8006, atol=1e-3)
  _, P = bao.relative_modes(s[-1], p[-1])
  assert bool(jnp.all(bao.regime(n_cos[-1], P, 0.3, SIGMA2) == 2))


@pytest.mark.slow
def test_quasi_static_equilibria_and_regimes():
  rho, h = 0.3, 16
  n_phi = jnp.array([0.2, 0.5, 0.8, 1.0])
  n_psi = jnp.array([0.3, 0.6, 0.9, 1.2])
  eq = bao.equilibria(n_phi, n_psi, rho, SIGMA2, h)
  exists = np.asarray(eq["regime_exists"]).astype(bool)
  np.testing.assert_array_equal(exists, np.asarray(n_phi) <= 0.8006)
  # they are zeros of the quasi-static field; P₊ stable, P₋ a saddle
  args = (n_phi, n_psi, rho, SIGMA2)
  for k in ("plus", "minus"):
    dS, dP = bao.quasi_static_vector_field(0.0, (eq[f"S_{k}"], eq[f"P_{k}"]), args)
    np.testing.assert_allclose(np.asarray(dS)[exists], 0.0, atol=1e-4)
    np.testing.assert_allclose(np.asarray(dP)[exists], 0.0, atol=1e-4)
  assert np.all(np.asarray(eq["growth_plus"])[exists] < 0)
  assert np.all(np.asarray(eq["growth_minus"])[exists] > 0)
  assert np.all(np.isnan(np.asarray(eq["P_plus"])[~exists]))
  # = Tian's cubic with the weight decay rescaled to ρN_Φ²: p = P/(1+σ²) is its root
  _, p_plus = tian.fixed_points(rho * n_phi[0] ** 2, SIGMA2)
  np.testing.assert_allclose(eq["P_plus"][0] / (1 + SIGMA2), p_plus, rtol=1e-5)
  # absolute equilibria: p = N_Ψ P/√h, s = p²
  np.testing.assert_allclose(eq["p_plus"][0], 0.3 * eq["P_plus"][0] / 4, rtol=1e-6)
  np.testing.assert_allclose(eq["s_plus"][0], eq["p_plus"][0] ** 2, rtol=1e-6)
  # integrating the quasi-static flow (balanced modes S = (N_Ψ/N_Φ)²P²) confirms the regime
  P0 = jnp.array([0.02, 0.1, 0.5, 1.0, 1.5])
  for a, b in ((0.5, 0.6), (1.0, 1.2)):
    sol = bao.ode.integrate(bao.quasi_static_vector_field, ((b / a) ** 2 * P0 ** 2, P0),
                            300.0, tuple(jnp.asarray(v) for v in (a, b, rho, SIGMA2)))
    P_end = np.asarray(sol.ys[1][-1])
    reg = np.asarray(bao.regime(a, P0, rho, SIGMA2))
    e = bao.equilibria(a, b, rho, SIGMA2, h)
    np.testing.assert_allclose(P_end[reg == 2], float(e["P_plus"]), atol=1e-3)
    assert np.all(P_end[reg != 2] < 1e-3)
    assert (a == 1.0) == bool(np.all(reg == 0))
  # the diagram: one vmapped call over the norm grid
  grid = bao.regime_diagram(jnp.linspace(0.1, 1.5, 15), jnp.linspace(0.1, 1.5, 7), rho,
                            SIGMA2, h, P0=0.5)
  assert grid["P_plus"].shape == (15, 7) and grid["regime"].shape == (15, 7)
  np.testing.assert_array_equal(np.asarray(grid["regime"])[:, 0],
                                np.where(np.linspace(0.1, 1.5, 15) <= 0.8006, 2, 0))


@pytest.mark.slow
def test_phase_diagram_vmapped_l2_threshold_vs_cosine():
  """(ρ × σ²) grid of trained networks in one call: L2 collapses exactly above
  1/(4(1+σ²)); the cosine loss never collapses and stays isotropic."""
  rhos = jnp.array([0.05, 0.1, 0.3, 0.5])
  sigma2s = jnp.array([0.0, 0.3, 1.0])
  state = bao.init_state(jax.random.PRNGKey(2), 12, 6)
  for loss in bao.LOSSES:
    out = bao.network_phase_diagram(jax.random.PRNGKey(3), state, rhos, sigma2s,
                                    loss=loss, lr=0.05, steps=1500, batch_size=128)
    assert out["collapsed"].shape == (4, 3)
    np.testing.assert_array_equal(out["collapsed"], out["collapsed_theory"])
    if loss == "cosine":
      assert not bool(jnp.any(out["collapsed"]))
      assert float(jnp.min(out["participation_ratio"])) > 5.0
    else:
      np.testing.assert_array_equal(out["collapsed"], rhos[:, None] > out["threshold"][None])


def test_bad_input_raises_config_error():
  state = bao.init_state(jax.random.PRNGKey(0), 6, 3)
  with pytest.raises(ConfigError, match="unknown loss"):
    bao.loss_fn(state, jnp.ones((2, 6)), jnp.ones((2, 6)), loss="huber")
  with pytest.raises(ConfigError, match="multiple"):
    bao.simulate_network(jax.random.PRNGKey(0), state, loss="l2", rho=0.1, sigma2=0.1,
                         lr=0.1, steps=10, save_every=3)
  with pytest.raises(ConfigError, match="rho"):
    bao.simulate_network(jax.random.PRNGKey(0), state, loss="l2", rho=-0.1, sigma2=0.1,
                         lr=0.1, steps=10)
  with pytest.raises(ConfigError, match="h <= d"):
    bao.init_state(jax.random.PRNGKey(0), 3, 6)
  with pytest.raises(ConfigError, match="norms"):
    bao.regime_diagram(jnp.array([0.0, 1.0]), 1.0, 0.1, 0.3, 4)
  with pytest.raises(ConfigError):
    bao.solve_eigenmodes(S0, P0[:3], 1.0, loss="cosine", rho=0.1, sigma2=0.3)
