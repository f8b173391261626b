"""Diagnostics against independent NumPy references and closed forms.

Calibration numbers (PAPERS.md A and B): effective rank ~127 (isotropic 128-d) and ~16.9
(collapsed to 16 dims, 1e-3 elsewhere); -uniformity on S^{d-1} = 1.575, 2.080, 3.752,
3.9375 for d = 2, 3, 32, 128; 4M/(M-1) on a regular simplex; Wang & Liu's hardness
entropies for s ~ U[-1, 1], N = 4095.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from jax.sharding import Mesh, PartitionSpec as P

from jaxssl import diagnostics as D
from jaxssl.errors import ConfigError

N_DEV = 8
AX = "data"
needs_8 = pytest.mark.skipif(len(jax.devices()) < N_DEV, reason="needs 8 (simulated) devices")


# ----------------------------------------------------------------------------- NumPy references

def np_normalize(z):
  z = np.asarray(z, np.float64)
  n = np.linalg.norm(z, axis=1, keepdims=True)
  return np.where(n > 0, z / np.where(n > 0, n, 1.0), 0.0)


def np_spectrum(z):
  u = np_normalize(z)
  return np.clip(np.sort(np.linalg.eigvalsh(np.cov(u.T)))[::-1], 0, None)


def np_effective_rank(eigs):
  s = np.sqrt(np.clip(eigs, 0, None))
  p = s / s.sum()
  p = p[p > 0]
  return float(np.exp(-np.sum(p * np.log(p))))


def np_uniformity(z, t=2.0):
  u = np_normalize(z)
  m = len(u)
  d2 = ((u[:, None, :] - u[None, :, :]) ** 2).sum(-1)
  iu = np.triu_indices(m, 1)
  return float(np.log(np.mean(np.exp(-t * d2[iu]))))


def sphere_uniformity_closed_form(d, t=2.0):
  """-log E exp(-t|u-v|^2) for u, v uniform on S^{d-1}: the law of x = u.v is
  proportional to sin^{d-2}(theta) d theta, x = cos(theta); |u-v|^2 = 2 - 2x."""
  th = np.linspace(0.0, np.pi, 200001)
  w = np.sin(th) ** (d - 2)
  f = np.exp(-t * (2 - 2 * np.cos(th)))
  return float(-np.log(np.trapezoid(w * f, th) / np.trapezoid(w, th)))


def sphere(rng, n, d):
  x = rng.standard_normal((n, d))
  return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def shard_map_fn(fn):
  mesh = Mesh(np.array(jax.devices()[:N_DEV]), (AX,))
  return jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=P(AX), out_specs=P()))


# ----------------------------------------------------------------------------- spectrum

def test_spectrum_matches_numpy_covariance_of_normalised_rows():
  rng = np.random.default_rng(0)
  z = rng.standard_normal((64, 8)) * np.array([3, 2, 1, 1, .5, .3, .1, .01]) + 0.5
  got = np.asarray(D.spectrum(jnp.asarray(z, jnp.float32)))
  want = np_spectrum(z)
  assert got.shape == (8,)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  assert np.all(np.diff(got) <= 0) and np.all(got >= 0)


def test_spectrum_of_a_batch_smaller_than_the_dimension_uses_the_gram_matrix_and_matches_numpy():
  """M < D (the Gram path): the same [D] spectrum as NumPy's D x D covariance, the M - 1
  non-zero eigenvalues first and exact zeros after; and the same values as the sharded
  covariance path (which psums [D, D] moments)."""
  rng = np.random.default_rng(4)
  z = rng.standard_normal((16, 40)) * np.linspace(3.0, 0.01, 40) + 0.2        # M = 16 < D = 40
  got = np.asarray(D.spectrum(jnp.asarray(z, jnp.float32)))
  want = np_spectrum(z)
  assert got.shape == (40,)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  assert np.all(got[16:] == 0.0) and np.all(np.diff(got) <= 0)
  assert np.sum(want > 1e-8) == 15                                             # rank M - 1
  if len(jax.devices()) >= N_DEV:
    f = shard_map_fn(lambda x: D.spectrum(x, axis_name=AX))
    np.testing.assert_allclose(np.asarray(f(jnp.asarray(z, jnp.float32))), got, atol=1e-5)


def test_spectrum_zero_rows_are_safe_and_count_as_zero_vectors():
  rng = np.random.default_rng(1)
  z = rng.standard_normal((16, 5))
  z[[2, 7]] = 0.0
  got = np.asarray(D.spectrum(jnp.asarray(z, jnp.float32)))
  assert np.all(np.isfinite(got))
  np.testing.assert_allclose(got, np_spectrum(z), rtol=1e-4, atol=1e-6)
  # All rows zero: a zero spectrum, not NaN.
  np.testing.assert_array_equal(np.asarray(D.spectrum(jnp.zeros((4, 3)))), np.zeros(3))


def test_spectrum_has_no_gradient():
  z = jnp.asarray(np.random.default_rng(2).standard_normal((8, 4)), jnp.float32)
  g = jax.grad(lambda x: jnp.sum(D.spectrum(x) * jnp.arange(4.0)))(z)
  np.testing.assert_array_equal(np.asarray(g), 0.0)


@needs_8
def test_spectrum_sharded_psums_moments_and_never_all_gathers():
  rng = np.random.default_rng(3)
  z = jnp.asarray(rng.standard_normal((32, 6)) + 0.3, jnp.float32)   # 4 rows per device
  f = shard_map_fn(lambda x: D.spectrum(x, axis_name=AX))
  hlo = f.lower(z).compile().as_text()
  assert "all-gather" not in hlo
  assert "all-reduce" in hlo
  np.testing.assert_allclose(np.asarray(f(z)), np.asarray(D.spectrum(z)), atol=1e-5)
  # vmap with a named axis: the same global value on every member.
  got = jax.vmap(lambda x: D.spectrum(x, axis_name="v"), axis_name="v")(z.reshape(8, 4, 6))
  np.testing.assert_allclose(np.asarray(got), np.broadcast_to(np.asarray(D.spectrum(z)), (8, 6)),
                             atol=1e-5)


def test_spectrum_bad_input_raises_config_error():
  with pytest.raises(ConfigError, match="at least 2"):
    D.spectrum(jnp.ones((1, 4)))
  with pytest.raises(ConfigError, match=r"\[batch, dim\]"):
    D.spectrum(jnp.ones((4,)))


# ----------------------------------------------------------------------------- embedding norm

def test_embedding_norm_matches_numpy_and_sees_a_collapse_to_zero_that_the_spectrum_does_not():
  rng = np.random.default_rng(11)
  z = rng.standard_normal((64, 16)).astype(np.float32) * 3.0
  want = np.sqrt(np.mean(np.sum(np.asarray(z, np.float64) ** 2, axis=1)))
  np.testing.assert_allclose(float(D.embedding_norm(jnp.asarray(z))), want, rtol=1e-6)
  # Bao's L2 collapse shrinks the whole network: z -> 1e-6 z. The spectrum of the
  # normalised rows (and so the effective rank) is unchanged; the norm falls 1e6-fold.
  tiny = jnp.asarray(z * 1e-6)
  np.testing.assert_allclose(np.asarray(D.spectrum(tiny)), np.asarray(D.spectrum(jnp.asarray(z))), atol=1e-5)
  np.testing.assert_allclose(float(D.embedding_norm(tiny)), want * 1e-6, rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(jax.grad(lambda x: D.embedding_norm(x))(jnp.asarray(z))), 0.0)


@needs_8
def test_embedding_norm_sharded_equals_unsharded():
  z = jnp.asarray(np.random.default_rng(12).standard_normal((32, 5)) - 0.7, jnp.float32)
  f = shard_map_fn(lambda x: D.embedding_norm(x, axis_name=AX))
  np.testing.assert_allclose(float(f(z)), float(D.embedding_norm(z)), rtol=1e-6)


def test_embedding_norm_bad_input_raises_config_error():
  with pytest.raises(ConfigError, match=r"\[batch, dim\]"):
    D.embedding_norm(jnp.ones((4,)))


# ----------------------------------------------------------------------------- effective rank

def test_effective_rank_matches_numpy_and_closed_forms():
  rng = np.random.default_rng(4)
  z = rng.standard_normal((50, 6)) * np.array([2, 1, 1, .5, .2, .1])
  got = float(D.effective_rank(jnp.asarray(z, jnp.float32)))
  np.testing.assert_allclose(got, np_effective_rank(np_spectrum(z)), rtol=1e-4)
  # 1-D input = eigenvalues: k equal non-zero eigenvalues -> exactly k; one -> 1.
  np.testing.assert_allclose(float(D.effective_rank(jnp.array([2., 2., 2., 0., 0.]))), 3.0, rtol=1e-6)
  np.testing.assert_allclose(float(D.effective_rank(jnp.array([0., 5., 0.]))), 1.0, rtol=1e-6)
  # sigma = sqrt(lambda) = (2, 1): p = (2/3, 1/3).
  want = np.exp(-(2 / 3 * np.log(2 / 3) + 1 / 3 * np.log(1 / 3)))
  np.testing.assert_allclose(float(D.effective_rank(jnp.array([4., 1.]))), want, rtol=1e-6)
  # The 2-D path is the spectrum path.
  np.testing.assert_allclose(got, float(D.effective_rank(D.spectrum(jnp.asarray(z, jnp.float32)))),
                             rtol=1e-6)
  # A zero spectrum (every embedding identical) has rank 0, not NaN.
  assert float(D.effective_rank(jnp.zeros(4))) == 0.0


def test_effective_rank_calibration_isotropic_and_collapsed():
  rng = np.random.default_rng(5)
  iso = rng.standard_normal((2000, 128))
  er_iso = float(D.effective_rank(jnp.asarray(iso, jnp.float32)))
  assert abs(er_iso - 127.0) < 0.5, er_iso                   # PAPERS.md B: ~127
  np.testing.assert_allclose(er_iso, np_effective_rank(np_spectrum(iso)), atol=0.05)
  col = rng.standard_normal((2000, 128))
  col[:, 16:] *= 1e-3                                        # collapsed to 16 dimensions
  er_col = float(D.effective_rank(jnp.asarray(col, jnp.float32)))
  assert abs(er_col - 16.9) < 0.1, er_col                    # PAPERS.md B: ~16.9
  np.testing.assert_allclose(er_col, np_effective_rank(np_spectrum(col)), atol=0.05)


# ----------------------------------------------------------------------------- alignment

def test_alignment_matches_numpy():
  rng = np.random.default_rng(6)
  z1, z2 = rng.standard_normal((2, 12, 5))
  z2[3] = 0.0
  u, v = np_normalize(z1), np_normalize(z2)
  for alpha in (2.0, 1.0, 3.0):
    want = np.mean(np.linalg.norm(u - v, axis=1) ** alpha)
    got = float(D.alignment(jnp.asarray(z1, jnp.float32), jnp.asarray(z2, jnp.float32), alpha=alpha))
    np.testing.assert_allclose(got, want, rtol=1e-5)
  # Identical pairs: 0, with a finite gradient.
  g = jax.grad(lambda x: D.alignment(x, x, alpha=1.0))(jnp.asarray(z1, jnp.float32))
  assert np.all(np.isfinite(np.asarray(g)))
  with pytest.raises(ConfigError, match="alpha"):
    D.alignment(jnp.ones((2, 3)), jnp.ones((2, 3)), alpha=0.0)
  with pytest.raises(ConfigError, match="same shape"):
    D.alignment(jnp.ones((2, 3)), jnp.ones((3, 3)))


# ----------------------------------------------------------------------------- uniformity

def test_uniformity_matches_numpy_pairwise_mean():
  rng = np.random.default_rng(7)
  z = rng.standard_normal((20, 4))
  z[5] = 0.0
  for t in (2.0, 0.5, 30.0):
    got = float(D.uniformity(jnp.asarray(z, jnp.float32), t=t))
    np.testing.assert_allclose(got, np_uniformity(z, t), rtol=1e-5, atol=1e-5)


def test_uniformity_regular_simplex_is_exactly_4m_over_m_minus_1():
  for m in (2, 3, 5, 10):
    e = np.eye(m) - 1.0 / m                                  # regular simplex, centred
    got = -float(D.uniformity(jnp.asarray(e, jnp.float32), t=2.0))
    np.testing.assert_allclose(got, 4 * m / (m - 1), rtol=1e-5)


@pytest.mark.parametrize("d,paper", [(2, 1.575), (3, 2.080), (32, 3.752), (128, 3.9375)])
def test_uniformity_on_the_sphere_calibration(d, paper):
  closed = sphere_uniformity_closed_form(d)
  assert abs(closed - paper) < 2e-3                          # the reference itself
  got = -float(D.uniformity(jnp.asarray(sphere(np.random.default_rng(d), 2000, d)), t=2.0))
  assert abs(got - paper) < 0.02, (d, got)


@needs_8
def test_uniformity_sharded_equals_unsharded():
  z = jnp.asarray(np.random.default_rng(8).standard_normal((32, 5)), jnp.float32)
  for t in (2.0, 40.0):
    f = shard_map_fn(lambda x: D.uniformity(x, t=t, axis_name=AX))
    np.testing.assert_allclose(float(f(z)), float(D.uniformity(z, t=t)), rtol=1e-5)


def test_uniformity_bad_input():
  with pytest.raises(ConfigError, match="t must be > 0"):
    D.uniformity(jnp.ones((4, 3)), t=0.0)
  with pytest.raises(ConfigError, match="at least 2"):
    D.uniformity(jnp.ones((1, 3)))


# ----------------------------------------------------------------------------- tolerance

def test_tolerance_matches_numpy():
  rng = np.random.default_rng(9)
  z = rng.standard_normal((15, 4))
  y = rng.integers(0, 3, 15)
  u = np_normalize(z)
  sims = [u[i] @ u[j] for i in range(15) for j in range(15) if i != j and y[i] == y[j]]
  got = float(D.tolerance(jnp.asarray(z, jnp.float32), jnp.asarray(y)))
  np.testing.assert_allclose(got, np.mean(sims), rtol=1e-5)
  # One class, identical directions: tolerance 1.
  np.testing.assert_allclose(float(D.tolerance(jnp.ones((4, 3)) * 2, jnp.zeros(4, jnp.int32))), 1.0,
                             rtol=1e-6)
  with pytest.raises(ConfigError, match="same-class pairs"):
    D.tolerance(jnp.ones((3, 2)), jnp.arange(3))
  with pytest.raises(ConfigError, match="labels"):
    D.tolerance(jnp.ones((3, 2)), jnp.zeros(4, jnp.int32))


# ----------------------------------------------------------------------------- local separation

def np_local_separation(z, y, k):
  u = np_normalize(z)
  s = u @ u.T
  vals = []
  for i in range(len(u)):
    pos = [s[i, j] for j in range(len(u)) if j != i and y[j] == y[i]]
    neg = sorted([s[i, j] for j in range(len(u)) if y[j] != y[i]], reverse=True)
    if pos and neg:
      vals.append(np.mean(pos) - np.mean(neg[:k]))
  return float(np.mean(vals))


def test_local_separation_matches_numpy():
  rng = np.random.default_rng(10)
  z = rng.standard_normal((24, 5))
  y = np.array([0] * 10 + [1] * 10 + [2] * 3 + [3])           # class 3 has no positive
  for k in (1, 3, 10, 20):
    got = float(D.local_separation(jnp.asarray(z, jnp.float32), jnp.asarray(y), k=k))
    np.testing.assert_allclose(got, np_local_separation(z, y, k), rtol=1e-5, atol=1e-6)
  with pytest.raises(ConfigError, match="k must be"):
    D.local_separation(jnp.ones((4, 2)), jnp.arange(4), k=4)


# ----------------------------------------------------------------------------- hardness

def np_hardness(z1, z2, tau):
  u, v = np_normalize(z1), np_normalize(z2)
  s = u @ v.T / tau
  m = len(u)
  r = np.zeros((m, m))
  ent = []
  for i in range(m):
    idx = [j for j in range(m) if j != i]
    e = np.exp(s[i, idx] - s[i, idx].max())
    p = e / e.sum()
    r[i, idx] = p
    ent.append(-np.sum(p * np.log(p)))
  return r, float(np.mean(ent))


def boltzmann_uniform_entropy(n, tau):
  """E-entropy of softmax(s/tau) over n i.i.d. s ~ U[-1, 1] (continuum limit)."""
  k = 1.0 / tau
  return np.log(n) + np.log(np.sinh(k) / k) - k * (1 / np.tanh(k) - 1 / k)


def test_hardness_matches_numpy_and_rows_sum_to_one():
  rng = np.random.default_rng(11)
  z1, z2 = rng.standard_normal((2, 10, 4))
  for tau in (0.1, 0.5, 2.0):
    out = D.hardness(jnp.asarray(z1, jnp.float32), jnp.asarray(z2, jnp.float32), temperature=tau)
    r_want, h_want = np_hardness(z1, z2, tau)
    np.testing.assert_allclose(np.asarray(out["relative_penalty"]), r_want, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(float(out["entropy"]), h_want, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(out["relative_penalty"]).sum(1), 1.0, rtol=1e-5)
    assert np.all(np.diag(np.asarray(out["relative_penalty"])) == 0)


def test_hardness_entropy_rises_with_tau_and_has_the_right_limits():
  rng = np.random.default_rng(12)
  z1, z2 = (jnp.asarray(x, jnp.float32) for x in rng.standard_normal((2, 64, 8)))
  taus = [1e-4, 0.05, 0.1, 0.2, 0.5, 1.0, 10.0, 1e5]
  ents = [float(D.hardness(z1, z2, temperature=t)["entropy"]) for t in taus]
  assert np.all(np.diff(ents) > 0), ents
  assert ents[0] < 1e-3                                     # one-hot on the hardest negative
  np.testing.assert_allclose(ents[-1], np.log(63), atol=1e-4)   # uniform over M-1 negatives


def test_hardness_entropy_for_uniform_similarities_wang_liu_values():
  rng = np.random.default_rng(13)
  s = jnp.asarray(rng.uniform(-1, 1, (64, 4095)), jnp.float32)
  paper = {0.07: 5.93, 0.2: 6.99, 0.5: 7.83, 1.0: 8.16, 10.0: 8.32}
  for tau, want in paper.items():
    out = D.hardness_from_similarities(s, temperature=tau)
    got = float(out["entropy"])
    np.testing.assert_allclose(np.asarray(out["relative_penalty"]).sum(1), 1.0, rtol=1e-4)
    # The closed form for s ~ U[-1, 1], N = 4095, to 0.01.
    assert abs(got - boltzmann_uniform_entropy(4095, tau)) < 0.01, (tau, got)
    # PAPERS.md A lists 5.93 / 6.99 at tau = 0.07 / 0.2, which the closed form puts at
    # 5.965 / 7.014; the other three agree to 0.01.
    assert abs(got - want) < (0.04 if tau < 0.5 else 0.01), (tau, got, want)
  # Through the embeddings: on S^2 the cosine of two independent points is U[-1, 1].
  u, v = sphere(rng, 1024, 3), sphere(rng, 1024, 3)
  got = float(D.hardness(jnp.asarray(u), jnp.asarray(v), temperature=0.2)["entropy"])
  assert abs(got - boltzmann_uniform_entropy(1023, 0.2)) < 0.02


def test_hardness_bad_temperature():
  with pytest.raises(ConfigError, match="temperature"):
    D.hardness(jnp.ones((3, 2)), jnp.ones((3, 2)), temperature=0.0)
  with pytest.raises(ConfigError, match="temperature"):
    D.hardness_from_similarities(jnp.ones((3, 2)), temperature=-1.0)


# ----------------------------------------------------------------------------- Wasserstein uniformity

def np_gaussian_w2(mu1, cov1, mu2, cov2):
  """General Bures formula (no commuting assumption), via scipy.linalg.sqrtm."""
  r2 = scipy.linalg.sqrtm(cov2)
  cross = scipy.linalg.sqrtm(r2 @ cov1 @ r2)
  w2 = np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2 * np.trace(np.real(cross))
  return float(np.sqrt(max(w2, 0.0)))


def test_wasserstein_uniformity_matches_general_bures_formula():
  rng = np.random.default_rng(14)
  d = 6
  z = rng.standard_normal((40, d)) * np.array([3, 1, 1, .5, .2, .1]) + 0.4
  u = np_normalize(z)
  want = np_gaussian_w2(u.mean(0), np.cov(u.T), np.zeros(d), np.eye(d) / d)
  got = float(D.wasserstein_uniformity(jnp.asarray(z, jnp.float32)))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_wasserstein_uniformity_small_for_sphere_large_for_collapse():
  rng = np.random.default_rng(15)
  d = 16
  uni = float(D.wasserstein_uniformity(jnp.asarray(sphere(rng, 4000, d))))
  assert uni < 0.05, uni
  # Collapsed to one direction (+-e1): mu = 0, Cov = c e1 e1^T with c = M/(M-1)
  # -> sqrt(1 + c - 2 sqrt(c)/sqrt(d)) (~ sqrt(2 - 2/sqrt(d))).
  col = np.zeros((400, d), np.float32)
  col[:, 0] = np.where(np.arange(400) % 2 == 0, 1.0, -1.0)
  c = 400 / 399
  got = float(D.wasserstein_uniformity(jnp.asarray(col)))
  np.testing.assert_allclose(got, np.sqrt(1 + c - 2 * np.sqrt(c) / np.sqrt(d)), rtol=1e-5)
  assert got > 20 * uni
  # All rows equal: mu = e1, Cov = 0 -> sqrt(2).
  np.testing.assert_allclose(float(D.wasserstein_uniformity(jnp.ones((8, d)))), np.sqrt(2), rtol=1e-5)


@needs_8
def test_wasserstein_uniformity_sharded_equals_unsharded():
  z = jnp.asarray(np.random.default_rng(16).standard_normal((32, 5)) + 0.2, jnp.float32)
  f = shard_map_fn(lambda x: D.wasserstein_uniformity(x, axis_name=AX))
  assert "all-gather" not in f.lower(z).compile().as_text()
  np.testing.assert_allclose(float(f(z)), float(D.wasserstein_uniformity(z)), rtol=1e-5)
