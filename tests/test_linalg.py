"""jaxssl.linalg.eigvalsh: eigenvalues without eigenvectors (LAPACK ?syevd, jobz = 'N', on the
CPU) against NumPy's float64 eigvalsh, batched, vmapped, and with non-finite input."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl import linalg


def _sym(rng, n, batch=()):
  a = rng.standard_normal((*batch, n, n))
  return a + np.swapaxes(a, -1, -2)


@pytest.mark.parametrize("n", [1, 7, 64, 256])
def test_eigvalsh_matches_numpy_float64(n):
  rng = np.random.default_rng(n)
  a = _sym(rng, n)
  got = np.asarray(jax.jit(linalg.eigvalsh)(jnp.asarray(a, jnp.float32)))
  want = np.linalg.eigvalsh(a)
  assert got.shape == (n,) and np.all(np.diff(got) >= 0)         # ascending
  # float32 LAPACK: backward-stable, error ~ n * eps * |A|
  np.testing.assert_allclose(got, want, atol=4e-6 * max(n, 8) ** 0.5 * np.abs(want).max())


def test_eigvalsh_of_a_psd_covariance_matches_jnp_and_uses_only_the_symmetric_part():
  rng = np.random.default_rng(1)
  x = rng.standard_normal((300, 40)) * np.linspace(2, 0.01, 40)
  cov = x.T @ x / 299
  skew = rng.standard_normal((40, 40))
  skew = 1e-3 * (skew - skew.T)                                  # antisymmetric: ignored
  got = np.asarray(linalg.eigvalsh(jnp.asarray(cov + skew, jnp.float32)))
  np.testing.assert_allclose(got, np.linalg.eigvalsh(cov), rtol=2e-5, atol=1e-6 * np.linalg.eigvalsh(cov).max())
  np.testing.assert_allclose(got, np.asarray(jnp.linalg.eigvalsh(jnp.asarray(cov, jnp.float32))),
                             rtol=2e-5, atol=1e-6 * got.max())


def test_eigvalsh_batched_and_vmapped_equal_one_matrix_at_a_time():
  rng = np.random.default_rng(2)
  a = jnp.asarray(_sym(rng, 16, batch=(3, 2)), jnp.float32)
  one_by_one = np.stack([[np.asarray(linalg.eigvalsh(a[i, j])) for j in range(2)] for i in range(3)])
  np.testing.assert_array_equal(np.asarray(jax.jit(linalg.eigvalsh)(a)), one_by_one)
  np.testing.assert_array_equal(np.asarray(jax.vmap(jax.vmap(linalg.eigvalsh))(a)), one_by_one)


def test_eigvalsh_float64_uses_the_double_kernel():
  with jax.enable_x64(True):
    a = _sym(np.random.default_rng(3), 20)
    got = linalg.eigvalsh(jnp.asarray(a, jnp.float64))
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(got), np.linalg.eigvalsh(a), atol=1e-12 * np.abs(a).max() * 20)


def test_eigvalsh_non_finite_input_gives_nan_and_bad_shapes_raise():
  a = np.eye(3, dtype=np.float32)
  a[0, 0] = np.nan
  assert np.all(np.isnan(np.asarray(jax.jit(linalg.eigvalsh)(jnp.asarray(a)))))
  a[0, 0] = np.inf
  assert np.all(np.isnan(np.asarray(linalg.eigvalsh(jnp.asarray(a)))))
  batch = jnp.stack([jnp.eye(3), jnp.asarray(a)])                # only the bad matrix is NaN
  out = np.asarray(linalg.eigvalsh(batch))
  np.testing.assert_array_equal(out[0], [1, 1, 1])
  assert np.all(np.isnan(out[1]))
  with pytest.raises(ValueError, match="square"):
    linalg.eigvalsh(jnp.ones((3, 4)))
  with pytest.raises(ValueError, match="square"):
    linalg.eigvalsh(jnp.ones((3,)))
