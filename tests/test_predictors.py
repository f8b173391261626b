"""Closed-form predictors (DirectPred / DirectCopy / IsoLoss) against NumPy references."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec as P

from jaxssl import predictors as PR
from jaxssl.errors import ConfigError

N_DEV = 8
AX = "data"
needs_8 = pytest.mark.skipif(len(jax.devices()) < N_DEV, reason="needs 8 (simulated) devices")


def np_corr(*views):
  z = np.concatenate([np.asarray(v, np.float64) for v in views], axis=0)
  return z.T @ z / len(z)


def np_predictor(f, kind, eps, alpha=1.0, min_eig=0.0):
  s, u = np.linalg.eigh(0.5 * (f + f.T))
  s = np.clip(s, 0, None)
  n = s / s.max() if s.max() > 0 else np.zeros_like(s)
  p = {"directpred": np.sqrt(n) + eps, "directcopy": n + eps, "halvagal": (n + eps) ** alpha}[kind]
  p = np.maximum(p, min_eig)
  return (u * p) @ u.T, u, p


def random_psd(rng, d, rank=None):
  a = rng.standard_normal((d, rank or d)) * np.linspace(2, 0.2, rank or d)
  return a @ a.T / d


# ----------------------------------------------------------------------------- state and EMA

def test_init_state():
  st = PR.init_predictor_state(5)
  assert st.corr.shape == (5, 5) and st.corr.dtype == jnp.float32
  assert st.count.shape == () and st.count.dtype == jnp.int32
  np.testing.assert_array_equal(np.asarray(st.corr), 0.0)
  assert int(st.count) == 0
  with pytest.raises(ConfigError, match="dim"):
    PR.init_predictor_state(0)


def test_update_correlation_tian_first_step_then_ema():
  rng = np.random.default_rng(0)
  d, rho = 4, 0.3
  a1, a2, b1, b2 = (rng.standard_normal((6, d)) + 0.5 for _ in range(4))
  st = PR.init_predictor_state(d)
  st = PR.update_correlation(st, [jnp.asarray(a1, jnp.float32), jnp.asarray(a2, jnp.float32)],
                             decay=rho, mode="tian")
  f1 = np_corr(a1, a2)                                       # first step: the batch, uncentred
  np.testing.assert_allclose(np.asarray(st.corr), f1, rtol=1e-5, atol=1e-6)
  assert int(st.count) == 1
  st = PR.update_correlation(st, [jnp.asarray(b1, jnp.float32), jnp.asarray(b2, jnp.float32)],
                             decay=rho, mode="tian")
  f2 = rho * f1 + (1 - rho) * np_corr(b1, b2)
  np.testing.assert_allclose(np.asarray(st.corr), f2, rtol=1e-5, atol=1e-6)
  assert int(st.count) == 2
  # jit-able, decay may be traced.
  jitted = jax.jit(lambda s, x, y, r: PR.update_correlation(s, [x, y], decay=r))
  st2 = jitted(PR.init_predictor_state(d), jnp.asarray(a1, jnp.float32), jnp.asarray(a2, jnp.float32), rho)
  np.testing.assert_allclose(np.asarray(st2.corr), f1, rtol=1e-5, atol=1e-6)


def test_update_correlation_halvagal_per_view_from_zero():
  rng = np.random.default_rng(1)
  d, tau = 3, 0.5
  views = [rng.standard_normal((5, d)) for _ in range(4)]
  st = PR.init_predictor_state(d)
  st = PR.update_correlation(st, [jnp.asarray(v, jnp.float32) for v in views[:2]], decay=tau,
                             mode="halvagal")
  st = PR.update_correlation(st, [jnp.asarray(v, jnp.float32) for v in views[2:]], decay=tau,
                             mode="halvagal")
  c = np.zeros((d, d))
  for v in views:
    c = tau * c + (1 - tau) * v.T @ v / len(v)
  np.testing.assert_allclose(np.asarray(st.corr), c, rtol=1e-5, atol=1e-6)
  assert int(st.count) == 2


def test_update_correlation_has_no_gradient():
  z = jnp.asarray(np.random.default_rng(2).standard_normal((4, 3)), jnp.float32)
  g = jax.grad(lambda x: jnp.sum(PR.update_correlation(PR.init_predictor_state(3), [x, x],
                                                       decay=0.3).corr))(z)
  np.testing.assert_array_equal(np.asarray(g), 0.0)


def test_update_correlation_bad_input():
  st = PR.init_predictor_state(3)
  z = jnp.ones((4, 3))
  with pytest.raises(ConfigError, match="mode"):
    PR.update_correlation(st, [z], decay=0.3, mode="nope")
  with pytest.raises(ConfigError, match="decay"):
    PR.update_correlation(st, [z], decay=1.5)
  with pytest.raises(ConfigError, match="empty"):
    PR.update_correlation(st, [], decay=0.3)
  with pytest.raises(ConfigError, match=r"\[batch, 3\]"):
    PR.update_correlation(st, [jnp.ones((4, 2))], decay=0.3)


@needs_8
@pytest.mark.parametrize("mode", ["tian", "halvagal"])
def test_update_correlation_sharded_equals_unsharded(mode):
  rng = np.random.default_rng(3)
  z1, z2 = (jnp.asarray(rng.standard_normal((32, 4)), jnp.float32) for _ in range(2))
  prev = PR.PredictorState(corr=jnp.asarray(random_psd(rng, 4), jnp.float32), count=jnp.array(3, jnp.int32))
  mesh = Mesh(np.array(jax.devices()[:N_DEV]), (AX,))
  f = jax.jit(jax.shard_map(
      lambda a, b: PR.update_correlation(prev, [a, b], decay=0.3, mode=mode, axis_name=AX).corr,
      mesh=mesh, in_specs=(P(AX), P(AX)), out_specs=P()))
  want = PR.update_correlation(prev, [z1, z2], decay=0.3, mode=mode).corr
  np.testing.assert_allclose(np.asarray(f(z1, z2)), np.asarray(want), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- closed-form predictors

@pytest.mark.parametrize("kind,eps,alpha", [("directpred", 0.01, 1.0), ("directcopy", 0.3, 1.0),
                                            ("halvagal", 0.25, 0.5), ("halvagal", 0.1, 1.0)])
def test_predictor_matches_numpy_and_shares_eigenvectors(kind, eps, alpha):
  rng = np.random.default_rng(4)
  f = random_psd(rng, 6)
  f_ns = f + 0.05 * rng.standard_normal((6, 6))              # non-symmetric: symmetrised first
  f_ns_sym = 0.5 * (f_ns + f_ns.T)
  for mat in (f, f_ns):
    got = np.asarray(PR.predictor_from_correlation(jnp.asarray(mat, jnp.float32), kind=kind, eps=eps,
                                                   alpha=alpha))
    want, u, p = np_predictor(mat, kind, eps, alpha)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got, got.T, atol=1e-6)
    # Each eigenvector of F is an eigenvector of W_p with eigenvalue p_j; they commute.
    np.testing.assert_allclose(got @ u, u * p, atol=1e-4)
    ref = f if mat is f else f_ns_sym
    np.testing.assert_allclose(got @ ref, ref @ got, atol=1e-4)


def test_directpred_and_directcopy_closed_forms():
  rng = np.random.default_rng(5)
  f = random_psd(rng, 5)
  s, u = np.linalg.eigh(f)
  # directcopy: F / max s + eps I.
  got = np.asarray(PR.predictor_from_correlation(jnp.asarray(f, jnp.float32), kind="directcopy", eps=0.3))
  np.testing.assert_allclose(got, f / s.max() + 0.3 * np.eye(5), rtol=1e-4, atol=1e-5)
  # directpred: p_j = sqrt(s_j)/sqrt(max s) + eps; the top eigenvalue is 1 + eps.
  got = np.asarray(PR.predictor_from_correlation(jnp.asarray(f, jnp.float32), kind="directpred", eps=0.01))
  np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(got)), np.sqrt(s / s.max()) + 0.01, rtol=1e-4,
                             atol=1e-5)
  # A negative eigenvalue is clipped to 0 (p = eps), and min_eig floors p.
  g = u @ np.diag([-1.0, 0.5, 1.0, 2.0, 4.0]) @ u.T
  got = np.linalg.eigvalsh(np.asarray(PR.predictor_from_correlation(jnp.asarray(g, jnp.float32),
                                                                    kind="directcopy", eps=0.01)))
  np.testing.assert_allclose(got, np.array([0, 0.125, 0.25, 0.5, 1.0]) + 0.01, atol=1e-5)
  got = np.linalg.eigvalsh(np.asarray(PR.predictor_from_correlation(
      jnp.asarray(g, jnp.float32), kind="directcopy", eps=0.01, min_eig=0.2)))
  np.testing.assert_allclose(got, [0.2, 0.2, 0.26, 0.51, 1.01], atol=1e-5)


def test_zero_correlation_gives_eps_identity_not_nan():
  zero = jnp.zeros((4, 4))
  for kind, want in (("directpred", 0.01), ("directcopy", 0.01), ("halvagal", 0.01 ** 0.5)):
    w = np.asarray(PR.predictor_from_correlation(zero, kind=kind, eps=0.01, alpha=0.5))
    np.testing.assert_allclose(w, want * np.eye(4), rtol=1e-5, atol=1e-7)
  ws = np.asarray(PR.predictor_sqrt(zero, eps=0.01, alpha=1.0))
  np.testing.assert_allclose(ws, 0.1 * np.eye(4), rtol=1e-5, atol=1e-7)


def test_predictor_sqrt_squares_to_the_predictor():
  rng = np.random.default_rng(6)
  f = jnp.asarray(random_psd(rng, 6, rank=3), jnp.float32)   # rank-deficient
  for kind, alpha in (("halvagal", 0.5), ("halvagal", 1.0), ("directpred", 1.0)):
    w = np.asarray(PR.predictor_from_correlation(f, kind=kind, eps=0.1, alpha=alpha))
    ws = np.asarray(PR.predictor_sqrt(f, kind=kind, eps=0.1, alpha=alpha))
    np.testing.assert_allclose(ws @ ws, w, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ws, ws.T, atol=1e-6)
    assert np.all(np.linalg.eigvalsh(ws) > 0)
  # Halvagal: sqrt(p) = (n + eps)^(alpha/2).
  _, _, p = np_predictor(np.asarray(f, np.float64), "halvagal", 0.1, 0.5)
  np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(np.asarray(PR.predictor_sqrt(f, eps=0.1, alpha=0.5)))),
                             np.sort(np.sqrt(p)), rtol=1e-4)


def test_predictor_has_no_gradient_and_jits():
  f = jnp.asarray(random_psd(np.random.default_rng(7), 4), jnp.float32)
  g = jax.grad(lambda c: jnp.sum(PR.predictor_from_correlation(c, kind="directpred", eps=0.01) ** 2))(f)
  np.testing.assert_array_equal(np.asarray(g), 0.0)
  jitted = jax.jit(lambda c, e: PR.predictor_from_correlation(c, kind="halvagal", eps=e, alpha=0.5))
  np.testing.assert_allclose(np.asarray(jitted(f, 0.25)),
                             np_predictor(np.asarray(f, np.float64), "halvagal", 0.25, 0.5)[0],
                             rtol=1e-4, atol=1e-5)


def test_predictor_bad_input():
  f = jnp.eye(3)
  with pytest.raises(ConfigError, match="unknown kind"):
    PR.predictor_from_correlation(f, kind="mlp")
  with pytest.raises(ConfigError, match="eps"):
    PR.predictor_from_correlation(f, kind="directpred", eps=-0.1)
  with pytest.raises(ConfigError, match="alpha"):
    PR.predictor_from_correlation(f, kind="halvagal", alpha=0.0)
  with pytest.raises(ConfigError, match="square"):
    PR.predictor_from_correlation(jnp.ones((3, 2)), kind="directpred")
