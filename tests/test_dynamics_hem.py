"""Koromilas et al. (PAPERS.md B): minimisers of contrastive losses as hyperspherical
energy minimisation (`jaxssl.dynamics.hem`), and the batch-size (in)dependence of the
expected KCL / InfoNCE losses. Small problems only (each test well under 20 s)."""
import math

import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl.dynamics import hem
from jaxssl.errors import ConfigError

GRAM_TOL = 1e-3      # max |Δ Gram entry| after canonical relabelling (measured ≲ 1e-7)


def _check(out, names, m, d):
  ref = hem.theory_gram(m, d)
  for i, name in enumerate(names):
    u, v = np.asarray(out.u[i, 0, 0]), np.asarray(out.v[i, 0, 0])
    assert hem.gram_error(u @ u.T, ref) < GRAM_TOL, (name, m, d)
    np.testing.assert_allclose(u, v, atol=GRAM_TOL, err_msg=name)   # u_i = v_i
    assert float(out.grad_norm[i, 0, 0]) < 1e-2, name


@pytest.mark.parametrize("names", [pytest.param(("info_nce", "nt_xent", "dcl"), marks=pytest.mark.slow),
                                   pytest.param(("dhel", "dhel_paper", "kcl"), marks=pytest.mark.slow)])
def test_simplex_for_m_at_most_d_plus_1(names):
  """M ≤ d+1: u_i = v_i and every off-diagonal Gram entry is −1/(M−1), for every loss."""
  m, d = 4, 3
  out = hem.hem_sweep(names, m, d, temperatures=(0.5,), restarts=2, iters=100)
  _check(out, names, m, d)
  u = np.asarray(out.u[0, 0, 0])
  off = (u @ u.T)[~np.eye(m, dtype=bool)]
  np.testing.assert_allclose(off, -1.0 / (m - 1), atol=GRAM_TOL)


@pytest.mark.slow
def test_cross_polytope_for_m_equal_2d():
  """M = 2d: the cross-polytope ±e_k (entries 0, and one −1 per row)."""
  names, m, d = ("info_nce", "kcl"), 6, 3
  out = hem.hem_sweep(names, m, d, temperatures=(0.5,), restarts=2, iters=100)
  _check(out, names, m, d)
  g = np.asarray(out.u[0, 0, 0] @ out.u[0, 0, 0].T)
  np.testing.assert_allclose(np.sort(g, axis=1), np.tile([-1, 0, 0, 0, 0, 1], (m, 1)),
                             atol=GRAM_TOL)


@pytest.mark.slow
def test_regular_polygon_in_two_dimensions():
  """d = 2: the regular M-gon, Gram entries cos(2πk/M)."""
  names, m, d = ("info_nce", "kcl"), 5, 2
  out = hem.hem_sweep(names, m, d, temperatures=(0.5,), restarts=2, iters=100)
  _check(out, names, m, d)
  angles = np.sort(np.mod(np.arctan2(out.u[0, 0, 0][:, 1], out.u[0, 0, 0][:, 0]), 2 * np.pi))
  np.testing.assert_allclose(np.diff(angles), 2 * np.pi / m, atol=1e-3)


@pytest.mark.slow
def test_icosahedron_for_m12_d3_at_tau_01():
  """M = 12, d = 3, τ = 0.1: the icosahedron, entries ±1/√5 (five each per row) and −1."""
  m, d = 12, 3
  out = hem.hem_sweep(("info_nce",), m, d, temperatures=(0.1,), restarts=2, iters=150)
  _check(out, ("info_nce",), m, d)
  g = np.asarray(out.u[0, 0, 0] @ out.u[0, 0, 0].T)
  want = np.array([-1.0] + [-1 / math.sqrt(5)] * 5 + [1 / math.sqrt(5)] * 5 + [1.0])
  np.testing.assert_allclose(np.sort(g, axis=1), np.tile(want, (m, 1)), atol=GRAM_TOL)


@pytest.mark.slow
def test_kcl_is_batch_size_independent_infonce_grows_like_log_m():
  """d = 16, M ∈ {8, 32, 128, 512}: mean KCL loss 0.52 ± 0.01 at every M (it is an
  unbiased U-statistic of the M-independent population value); InfoNCE grows ≈ log M."""
  ms = (8, 32, 128, 512)
  out = hem.batch_size_dependence(ms, d=16, n_batches=128,
                                  names=("kcl", "info_nce", "dhel_paper"))
  pop = hem.kcl_population(16, 0.36, n_mc=400_000)
  np.testing.assert_allclose(pop, 0.52, atol=0.01)
  kcl, sem = np.asarray(out["kcl"]["mean"]), np.asarray(out["kcl"]["sem"])
  assert np.all(np.abs(kcl - pop) < 3 * sem + 2e-3), (kcl, sem, pop)
  np.testing.assert_allclose(kcl[1:], 0.52, atol=0.01)   # M = 8 has sem ≈ 0.02
  for name in ("info_nce", "dhel_paper"):
    mean = np.asarray(out[name]["mean"])
    assert np.all(np.diff(mean) > 0.9), (name, mean)
    # for large M the increment per ×4 approaches log 4
    np.testing.assert_allclose(mean[-1] - mean[-2], math.log(4), rtol=0.05, err_msg=name)
    assert mean[-1] - mean[0] > 0.8 * math.log(64)
  # KCL moves by less than 0.05 over a 64× batch range (InfoNCE: by ≈ 3.7)
  assert abs(kcl[-1] - kcl[1]) < 0.01


def test_reference_configurations_and_errors():
  np.testing.assert_allclose(np.diag(hem.icosahedron_gram()), 1.0, atol=1e-12)
  assert hem.gram_error(hem.simplex_gram(5), hem.simplex_gram(5)) == 0.0
  assert hem.gram_error(hem.polygon_gram(6), hem.cross_polytope_gram(3)) > 0.4
  assert hem.theory_gram(12, 3).shape == (12, 12) and hem.theory_gram(7, 3) is None
  with pytest.raises(ConfigError, match="unknown HEM loss"):
    hem.hem_sweep("triplet", 4, 3)
  with pytest.raises(ConfigError, match="temperatures"):
    hem.hem_sweep("info_nce", 4, 3, temperatures=(0.0,))
  with pytest.raises(ConfigError, match="m must be"):
    hem.hem_sweep("info_nce", 1, 3)
  with pytest.raises(ConfigError):
    hem.sphere_kernel_mean(1)
  assert jnp.isfinite(hem.sphere_kernel_mean(3))
