"""Tian, Chen & Ganguli (2021) simulators: cubic eigenmode ODE, fixed points, collapse
threshold, exact invariants of the matrix flow, and the step-by-step network."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl.dynamics import ode, tian
from jaxssl.errors import ConfigError

SIGMA2 = 0.3
# Shared shapes keep the number of distinct diffrax compilations (≈1-2 s each) small:
# 6 modes, n1 = 8 inputs, 11 save times.
N_MODES, N_IN, N_SAVE = 6, 8, 11
P0 = jnp.array([0.03, 0.1, 0.2, 0.3, 0.5, 0.8])


def test_threshold_and_closed_form_fixed_points():
  np.testing.assert_allclose(tian.collapse_threshold(SIGMA2), 0.19231, atol=1e-5)
  np.testing.assert_allclose(tian.collapse_threshold(SIGMA2, tau=1.0), 1 / 5.2, rtol=1e-6)
  _, p_plus = tian.fixed_points(0.05, SIGMA2)
  np.testing.assert_allclose(p_plus, 0.7155, atol=1e-3)
  _, p_plus = tian.fixed_points(0.15, SIGMA2)
  np.testing.assert_allclose(p_plus, 0.5650, atol=1e-3)
  # both roots are zeros of the vector field
  for eta in (0.05, 0.15, 0.19):
    for p in tian.fixed_points(eta, SIGMA2):
      assert abs(float(tian.cubic_vector_field(0.0, p, (eta, SIGMA2, 1.0)))) < 1e-6
  # no real non-trivial root above the threshold
  assert bool(jnp.all(jnp.isnan(jnp.stack(tian.fixed_points(0.194, SIGMA2)))))


def test_worked_example_by_integration_one_vmapped_call():
  etas = jnp.array([0.05, 0.15, 0.194, 0.25])
  p0s = jnp.array([0.05, 0.2, 0.5, 0.9])
  out = tian.tian_phase_diagram(etas, jnp.array([SIGMA2]), p0s, tau=1.0, t1=500.0)
  p = np.asarray(out["p_final"][:, 0, :])
  assert out["p_final"].shape == (4, 1, 4)
  # eta = 0.05: p0 = 0.05 -> 0; p0 >= 0.2 -> 0.7155
  assert p[0, 0] < 1e-3
  np.testing.assert_allclose(p[0, 1:], 0.7155, atol=1e-3)
  # eta = 0.15: p0 = 0.2 -> 0; p0 = 0.5 -> 0.5650
  assert p[1, 1] < 1e-3
  np.testing.assert_allclose(p[1, 2:], 0.5650, atol=1e-3)
  # eta >= 0.194: every p0 -> 0
  assert np.all(p[2:] < 1e-3)
  np.testing.assert_array_equal(out["collapsed"], out["collapsed_theory"])
  np.testing.assert_allclose(out["threshold"], [0.19231], atol=1e-5)


def test_phase_diagram_matches_closed_form_away_from_boundary():
  etas = jnp.linspace(0.005, 0.4, 24)
  sigma2s = jnp.linspace(0.0, 1.0, 17)
  p0s = jnp.array([0.05, 0.2, 0.6])
  out = tian.tian_phase_diagram(etas, sigma2s, p0s, t1=800.0)
  sim = np.asarray(out["collapsed"])
  theory = np.asarray(out["collapsed_theory"])
  crit = np.asarray(tian.critical_eta(p0s[None, None, :], sigma2s[None, :, None]))
  far = np.abs(np.asarray(etas)[:, None, None] - crit) > 0.01
  np.testing.assert_array_equal(sim[far], theory[far])
  assert (sim == theory).mean() > 0.98


@pytest.mark.slow
def test_matrix_flow_invariant_decays_exactly():
  eta = 0.05
  state = tian.init_state(jax.random.PRNGKey(0), N_IN, N_MODES, scale=0.8)
  ts = jnp.linspace(0.0, 10.0, N_SAVE)
  for beta, alpha_p in ((None, 1.0), (0.5, 1.0), (None, 2.0)):
    traj = tian.solve_matrix_flow(state, 10.0, eta=eta, sigma2=SIGMA2, alpha_p=alpha_p,
                                  beta=beta, saveat=ts)
    inv = jax.vmap(lambda s: tian.invariant(s, alpha_p))(traj)
    pred = inv[0][None] * jnp.exp(-2 * eta * ts)[:, None, None]
    rel = jnp.linalg.norm(inv - pred, axis=(1, 2)) / jnp.linalg.norm(pred, axis=(1, 2))
    assert float(rel.max()) < 1e-5, (beta, alpha_p, rel)
    assert float(jnp.linalg.norm(inv[-1]) / jnp.linalg.norm(inv[0])) < 0.5


def test_eigenmode_invariant_and_cubic_reduction():
  eta, alpha_p = 0.05, 2.0
  s0, p0 = jnp.linspace(0.1, 0.6, N_MODES), P0[::-1] + 0.1
  ts = jnp.linspace(0.0, 10.0, N_SAVE)
  s, p, _ = tian.solve_eigenmode(s0, p0, eta, SIGMA2, alpha_p=alpha_p, saveat=ts)
  got = s - p ** 2 / alpha_p
  want = (s0 - p0 ** 2 / alpha_p)[None] * jnp.exp(-2 * eta * ts)[:, None]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
  # on the manifold s = p²/α_p the (s, p) system is the cubic ODE
  s, p, _ = tian.solve_eigenmode(p0 ** 2 / alpha_p, p0, eta, SIGMA2, alpha_p=alpha_p,
                                 saveat=ts)
  cubic = tian.solve_cubic(p0, eta, SIGMA2, 1.0, ts[-1], saveat=ts)
  np.testing.assert_allclose(p, cubic, rtol=1e-4)


def test_aligned_matrix_flow_follows_eigenmodes():
  p0 = P0
  state = tian.aligned_state(jax.random.PRNGKey(1), N_IN, p0 ** 2, p0)
  ts = jnp.linspace(0.0, 40.0, N_SAVE)
  traj = tian.solve_matrix_flow(state, 40.0, eta=0.05, sigma2=SIGMA2, saveat=ts)
  s, p = tian.mode_values(traj)
  s_ode, p_ode, _ = tian.solve_eigenmode(p0 ** 2, p0, 0.05, SIGMA2, saveat=ts)
  np.testing.assert_allclose(p, jnp.sort(p_ode, -1), atol=2e-5)
  np.testing.assert_allclose(s, jnp.sort(s_ode, -1), atol=2e-5)


def test_network_sgd_matches_cubic_ode():
  """The step-by-step network (sampled batches, SGD) tracks the cubic ODE per mode."""
  eta, lr, steps, every = 0.05, 0.06, 1000, 100
  p0 = P0
  state = tian.aligned_state(jax.random.PRNGKey(2), N_IN, p0 ** 2, p0)
  ts = jnp.arange(steps // every + 1) * every * lr
  p_ode = jnp.sort(tian.solve_cubic(p0, eta, SIGMA2, 1.0, ts[-1], saveat=ts), -1)
  traj = tian.simulate_network(jax.random.PRNGKey(3), state, eta=eta, sigma2=SIGMA2,
                               lr=lr, steps=steps, batch_size=1024, save_every=every)
  _, p_sim = tian.mode_values(traj)
  assert p_sim.shape == p_ode.shape
  assert float(jnp.max(jnp.abs(p_sim - p_ode))) < 0.02
  _, p_plus = tian.fixed_points(eta, SIGMA2)
  np.testing.assert_allclose(p_sim[-1, 1:], p_plus, atol=0.02)
  assert float(p_sim[-1, 0]) < 0.01


def test_network_simulation_vmaps_over_hyperparameters():
  state = tian.init_state(jax.random.PRNGKey(4), 6, 4)
  etas = jnp.array([0.0, 0.1, 0.3])

  @jax.jit
  def run(etas):
    return jax.vmap(lambda e: tian.simulate_network(
        jax.random.PRNGKey(5), state, eta=e, sigma2=SIGMA2, lr=0.05, steps=40,
        expected=True, save_every=40))(etas)

  out = run(etas)
  assert out.W.shape == (3, 2, 4, 6)
  norms = jnp.linalg.norm(out.W[:, -1], axis=(1, 2))
  assert float(norms[2]) < float(norms[0])


def test_grid_map_outer_product_and_errors():
  out = jax.jit(lambda a, b: ode.grid_map(lambda x, y: jnp.stack([x, y]), a, b))(
      jnp.arange(3.0), jnp.arange(4.0))
  assert out.shape == (3, 4, 2)
  np.testing.assert_array_equal(out[2, 1], [2.0, 1.0])
  with pytest.raises(ConfigError):
    tian.simulate_network(jax.random.PRNGKey(0), tian.init_state(jax.random.PRNGKey(0),
                                                                 3, 2),
                          eta=0.0, sigma2=0.1, lr=0.1, steps=10, save_every=3)
