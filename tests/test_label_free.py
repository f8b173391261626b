"""Label-free model selection (jaxssl.selection): RankMe, alpha-ReQ, LiDAR and their
streaming accumulators, against independent NumPy float64 references (full SVD /
eigendecomposition of the gathered matrix; LiDAR through scipy's generalized symmetric
eigensolver, not the inverse square root the implementation uses), sharded over 8
simulated devices (tests/conftest.py), on constructions with a known answer, and on
degenerate inputs (documented values, never NaN).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxssl import augment
from jaxssl import selection as S
from jaxssl.errors import ConfigError, DataError

N_DEV = 8
AX = "data"
needs_8 = pytest.mark.skipif(len(jax.devices()) < N_DEV, reason="needs 8 (simulated) devices")
RTOL = 1e-4


# ----------------------------------------------------------------------------- NumPy references

def np_rankme(z, eps=1e-7):
  s = np.linalg.svd(np.asarray(z, np.float64), compute_uv=False)    # min(N, D) values
  if s.sum() == 0:
    return 0.0
  p = s / s.sum() + eps
  return float(np.exp(-np.sum(p * np.log(p))))


def np_alpha(z, fit_range=None):
  z = np.asarray(z, np.float64)
  lam = np.sort(np.linalg.eigvalsh(np.cov(z, rowvar=False)))[::-1]
  k = np.arange(1, lam.size + 1)
  keep = (k <= min(z.shape[0] - 1, z.shape[1])) & (lam > 1e-9 * lam[0])
  if fit_range is not None:
    keep &= (k >= fit_range[0]) & (k <= fit_range[1])
  return float(-np.polyfit(np.log(k[keep]), np.log(lam[keep]), 1)[0])


def np_lidar(z, delta=1e-4, eps=1e-8):
  z = np.asarray(z, np.float64)
  n, q, d = z.shape
  mu = z.mean(axis=1)
  s_b = np.cov(mu, rowvar=False)
  c = (z - mu[:, None]).reshape(-1, d)
  s_w = c.T @ c / (n * (q - 1)) + delta * np.eye(d)
  lam = np.clip(scipy.linalg.eigh(s_b, s_w, eigvals_only=True), 0, None)
  if lam.sum() == 0:
    return 0.0
  p = lam / lam.sum() + eps
  return float(np.exp(-np.sum(p * np.log(p))))


def gaussian(rng, n, d, *, scale=None, offset=0.0):
  z = rng.standard_normal((n, d)) * (1.0 if scale is None else scale) + offset
  return z.astype(np.float32)


def classes(rng, n, q, d, spread=2.0):
  """[n, q, d]: class means ~ N(0, spread^2) anisotropic, views = mean + noise."""
  mu = rng.standard_normal((n, 1, d)) * spread * np.linspace(1.0, 0.2, d)
  return (mu + rng.standard_normal((n, q, d))).astype(np.float32)


def jit(fn, *args, **kw):
  """fn under jit, keyword options static (eager dispatch of every op is ~5x slower here)."""
  return jax.jit(functools.partial(fn, **kw))(*args)


def close(a, b, rtol=RTOL):
  np.testing.assert_allclose(np.asarray(a, np.float64), b, rtol=rtol)


# ----------------------------------------------------------------------------- vs NumPy

@pytest.mark.parametrize("shape, offset, eps", [((512, 32), 0.0, 1e-7), ((512, 32), 1.5, 1e-7),
                                               ((24, 48), 0.3, 1e-7), ((24, 48), 0.3, 1e-3)])
def test_rankme_matches_numpy(shape, offset, eps):
  """N < D: min(N, D) singular values (eps = 1e-3 makes a wrong count visible)."""
  rng = np.random.default_rng(0)
  z = gaussian(rng, *shape, scale=np.geomspace(1.0, 0.05, shape[1]), offset=offset)
  close(jit(S.rankme, z, eps=eps), np_rankme(z, eps))


def test_rankme_rank_deficient_matches_numpy():
  rng = np.random.default_rng(1)
  z = (rng.standard_normal((600, 5)) @ rng.standard_normal((5, 40))).astype(np.float32)
  close(jit(S.rankme, z), np_rankme(z))


@pytest.mark.parametrize("shape, fit_range, rtol", [((2000, 32), None, None),
                                                    ((2000, 32), (3, 20), None),
                                                    ((20, 48), None, None), ((20, 48), None, 0.0)])
def test_alpha_req_matches_numpy(shape, fit_range, rtol):
  """N < D: only k <= N - 1 (rtol = 0: the rank bound alone keeps the noise out)."""
  rng = np.random.default_rng(2)
  z = gaussian(rng, *shape, scale=np.arange(1, shape[1] + 1) ** -0.8, offset=0.7)
  close(jit(S.alpha_req, z, fit_range=fit_range, rtol=rtol), np_alpha(z, fit_range))


@pytest.mark.parametrize("n, q, d", [(40, 5, 16), (12, 3, 8)])
def test_lidar_matches_numpy(n, q, d):
  z = classes(np.random.default_rng(3), n, q, d)
  close(S.lidar(z), np_lidar(z))                           # eager
  close(jit(S.lidar, z, delta=0.5, eps=1e-7), np_lidar(z, 0.5, 1e-7))


def test_smooth_rank():
  close(S.smooth_rank(jnp.ones(10), eps=0.0), 10.0)
  close(S.smooth_rank(jnp.asarray([3.0, 1.0, 0.0]), eps=0.0),
        np.exp(-(0.75 * np.log(0.75) + 0.25 * np.log(0.25))))
  assert float(S.smooth_rank(jnp.zeros(4))) == 0.0


# ----------------------------------------------------------------------------- sharded

def _mesh():
  return Mesh(np.array(jax.devices()[:N_DEV]), (AX,))


def _shard_map(fn, in_specs=None):
  in_specs = P(AX) if in_specs is None else in_specs
  return jax.jit(jax.shard_map(fn, mesh=_mesh(), in_specs=in_specs, out_specs=P()))


@needs_8
@pytest.mark.parametrize("name", ["rankme", "alpha_req"])
def test_sharded_equals_unsharded(name):
  fn = getattr(S, name)
  z = gaussian(np.random.default_rng(4), 64, 16, scale=np.geomspace(1, 0.1, 16), offset=0.5)
  want = float(fn(z))
  close(_shard_map(lambda x: fn(x, axis_name=AX))(z), want, 1e-5)
  zs = jax.device_put(z, NamedSharding(_mesh(), P(AX)))
  close(jax.jit(fn)(zs), want, 1e-5)


@needs_8
def test_lidar_sharded_equals_unsharded():
  z = classes(np.random.default_rng(5), 16, 4, 8)
  want = float(S.lidar(z))
  close(_shard_map(lambda x: S.lidar(x, axis_name=AX))(z), want, 1e-5)
  zs = jax.device_put(z, NamedSharding(_mesh(), P(AX)))
  close(jax.jit(S.lidar)(zs), want, 1e-5)


@needs_8
def test_accumulators_sharded():
  rng = np.random.default_rng(6)
  z = gaussian(rng, 64, 16, offset=0.2)
  upd = _shard_map(lambda a, x: S.spectrum_update(a, x, axis_name=AX), in_specs=(P(), P(AX)))
  acc = S.spectrum_init(16)
  for half in np.split(z, 2):
    acc = upd(acc, half)
  out = jax.jit(S.spectrum_finalize)(acc)
  close(out["rankme"], float(S.rankme(z)), 1e-5)
  close(out["alpha_req"], float(S.alpha_req(z)), 1e-5)
  zl = classes(rng, 16, 3, 8)
  lupd = _shard_map(lambda a, x: S.lidar_update(a, x, axis_name=AX), in_specs=(P(), P(AX)))
  close(jax.jit(S.lidar_finalize)(lupd(S.lidar_init(8), zl))["lidar"], float(S.lidar(zl)), 1e-5)


# ----------------------------------------------------------------------------- streaming

def test_spectrum_stream_equals_one_shot():
  rng = np.random.default_rng(7)
  z = gaussian(rng, 2560, 32, scale=np.arange(1, 33) ** -0.6, offset=3.0)   # large mean
  acc = S.spectrum_accumulator.init(32)
  update = jax.jit(S.spectrum_accumulator.update)
  for batch in np.split(z, 10):
    acc = update(acc, batch)
  out = jax.jit(S.spectrum_accumulator.finalize)(acc)
  assert int(out["count"]) == 2560 and bool(out["finite"])
  close(out["rankme"], float(jit(S.rankme, z)))
  close(out["alpha_req"], float(jit(S.alpha_req, z)))
  close(out["rankme"], np_rankme(z))
  close(out["alpha_req"], np_alpha(z))
  sv = np.linalg.svd(z.astype(np.float64), compute_uv=False)       # resolved to ~eps sigma_max^2
  np.testing.assert_allclose(out["singular_values"], sv, rtol=1e-4, atol=1e-4 * sv[0])
  lam = np.sort(np.linalg.eigvalsh(np.cov(z.astype(np.float64), rowvar=False)))[::-1]
  close(out["cov_eigenvalues"], lam, 1e-4)                         # centred: no mean to resolve
  assert int(out["alpha_req_ranks"]) == 32


def test_lidar_stream_equals_one_shot():
  z = classes(np.random.default_rng(8), 80, 4, 16)
  acc = S.lidar_accumulator.init(16)
  update = jax.jit(S.lidar_accumulator.update)
  for batch in np.split(z, 10):
    acc = update(acc, batch)
  out = jax.jit(S.lidar_accumulator.finalize)(acc)
  assert int(out["num_classes"]) == 80 and int(out["num_samples"]) == 320
  close(out["lidar"], float(jit(S.lidar, z)))
  close(out["lidar"], np_lidar(z))


def test_lidar_stream_pooled_over_different_q():
  rng = np.random.default_rng(9)
  a, b = classes(rng, 10, 3, 6), classes(rng, 14, 5, 6)
  acc = S.lidar_update(S.lidar_update(S.lidar_init(6), a), b)
  mu = np.concatenate([a.mean(1), b.mean(1)]).astype(np.float64)
  c = np.concatenate([(a - a.mean(1, keepdims=True)).reshape(-1, 6),
                      (b - b.mean(1, keepdims=True)).reshape(-1, 6)]).astype(np.float64)
  s_w = c.T @ c / (10 * 2 + 14 * 4) + 1e-4 * np.eye(6)      # pooled: sum_i (q_i - 1)
  lam = np.clip(scipy.linalg.eigh(np.cov(mu, rowvar=False), s_w, eigvals_only=True), 0, None)
  p = lam / lam.sum() + 1e-8
  close(jax.jit(S.lidar_finalize)(acc)["lidar"], np.exp(-np.sum(p * np.log(p))))


# ----------------------------------------------------------------------------- known answers

def test_rankme_isotropic_is_dim():
  z = gaussian(np.random.default_rng(10), 25600, 64)
  assert abs(float(jit(S.rankme, z)) - 64) < 0.02 * 64


@pytest.mark.parametrize("k", [1, 3, 8])
def test_rankme_rank_k_is_k(k):
  rng = np.random.default_rng(11)
  basis = np.linalg.qr(rng.standard_normal((64, 64)))[0][:k]             # k orthonormal rows
  z = (rng.standard_normal((4096, k)) @ basis * 5.0).astype(np.float32)
  assert abs(float(jit(S.rankme, z)) - k) < 0.02 * k


def test_rankme_noise_floor_matters():
  """A rank-1 collapse at D = 256: the float32 Gram's rounding noise alone would read as
  rank > 1 without the floor; with it RankMe is 1."""
  rng = np.random.default_rng(12)
  z = (rng.standard_normal((1024, 1)) * rng.standard_normal((1, 256))).astype(np.float32)
  assert abs(float(jit(S.rankme, z)) - 1.0) < 1e-3
  assert float(jit(S.rankme, z, rtol=0.0)) > 1.05


def test_alpha_req_power_law():
  rng = np.random.default_rng(13)
  d = 64
  z = gaussian(rng, 20000, d, scale=np.arange(1, d + 1) ** -0.5)   # covariance eigenvalues k^-1
  basis = np.linalg.qr(rng.standard_normal((d, d)))[0]
  assert abs(float(jit(S.alpha_req, z @ basis.astype(np.float32))) - 1.0) < 0.05


def _lidar_known(k, n=64, q=8, d=32, s=10.0, seed=14):
  """Class means +-s along k orthogonal directions (grand mean 0), within-class noise
  exactly class-centred and whitened: Sigma_w = I, Sigma_b rank k with equal eigenvalues."""
  rng = np.random.default_rng(seed)
  basis = np.linalg.qr(rng.standard_normal((d, d)))[0][:k]              # [k, d]
  idx = np.arange(n)
  sign = np.where((idx // k) % 2 == 0, 1.0, -1.0)
  mu = s * sign[:, None] * basis[idx % k]                               # [n, d]
  e = rng.standard_normal((n, q, d))
  e = (e - e.mean(1, keepdims=True)).reshape(-1, d)
  w, v = np.linalg.eigh(e.T @ e / (n * (q - 1)))
  e = (e @ v / np.sqrt(w) @ v.T).reshape(n, q, d)
  return (mu[:, None, :] + e).astype(np.float32)


@pytest.mark.parametrize("k", [1, 4])
def test_lidar_k_orthogonal_means_is_k(k):
  z = _lidar_known(k)
  v = float(jit(S.lidar, z))
  assert abs(v - k) < 1e-3 * k
  close(v, np_lidar(z), 1e-3)


# ----------------------------------------------------------------------------- degenerate inputs

def _no_nan(tree):
  for leaf in jax.tree.leaves(tree):
    assert not np.any(np.isnan(np.asarray(leaf, np.float64)))


def test_zero_embeddings():
  z = np.zeros((32, 8), np.float32)
  assert float(S.rankme(z)) == 0.0 and float(S.alpha_req(z)) == 0.0
  assert float(S.lidar(np.zeros((6, 3, 8), np.float32))) == 0.0
  out = S.spectrum_finalize(S.spectrum_update(S.spectrum_init(8), z))
  _no_nan(out)
  assert float(out["rankme"]) == 0.0 and float(out["alpha_req"]) == 0.0
  empty = S.spectrum_finalize(S.spectrum_init(8))
  _no_nan(empty)
  assert float(empty["rankme"]) == 0.0 and int(empty["count"]) == 0
  lempty = S.lidar_finalize(S.lidar_init(8))
  _no_nan(lempty)
  assert float(lempty["lidar"]) == 0.0


def test_constant_and_tiny_batches():
  c = np.tile(np.arange(1.0, 9.0, dtype=np.float32), (32, 1))
  assert abs(float(S.rankme(c)) - 1.0) < 1e-4                # rank 1 (not centred)
  assert float(S.alpha_req(c)) == 0.0                        # zero covariance
  one = np.arange(1.0, 5.0, dtype=np.float32)[None]
  close(S.rankme(one), 1.0)                                  # N = 1: one singular value
  assert float(S.alpha_req(np.stack([one[0], -one[0]]))) == 0.0    # N = 2: a single rank
  with pytest.raises(ConfigError):
    S.alpha_req(one)


def test_lidar_singular_within_scatter():
  rng = np.random.default_rng(15)
  same = np.repeat(rng.standard_normal((10, 1, 6)), 4, axis=1).astype(np.float32)   # Sigma_w = 0
  v = float(jit(S.lidar, same))
  assert np.isfinite(v)
  close(v, np_lidar(same), 1e-3)
  few = classes(rng, 6, 2, 16)                               # n (q - 1) = 6 < D = 16
  close(jit(S.lidar, few), np_lidar(few), 1e-3)


def test_lidar_needs_two_views_and_two_images():
  with pytest.raises(ConfigError, match="q >= 2"):
    S.lidar(np.ones((8, 1, 4), np.float32))
  with pytest.raises(ConfigError, match="q >= 2"):
    S.lidar_update(S.lidar_init(4), np.ones((8, 1, 4), np.float32))
  with pytest.raises(ConfigError):
    S.lidar(np.ones((1, 3, 4), np.float32))
  with pytest.raises(ConfigError):
    S.lidar(np.ones((8, 4), np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite(bad):
  z = gaussian(np.random.default_rng(16), 16, 4)
  z[3, 1] = bad
  zl = np.stack([z] * 2, axis=1)                             # [16, 2, 4]
  for fn, x in [(S.rankme, z), (S.alpha_req, z), (S.lidar, zl)]:
    with pytest.raises(DataError):
      fn(x)
    assert float(jax.jit(fn)(x)) == 0.0                      # traced: documented 0.0
  with pytest.raises(DataError):
    S.spectrum_update(S.spectrum_init(4), z)
  acc = jax.jit(S.spectrum_update)(S.spectrum_init(4), z)
  acc = jax.jit(S.spectrum_update)(acc, np.ones((8, 4), np.float32))
  out = S.spectrum_finalize(acc)
  assert not bool(out["finite"]) and float(out["rankme"]) == 0.0 and float(out["alpha_req"]) == 0.0
  lout = S.lidar_finalize(jax.jit(S.lidar_update)(S.lidar_init(4), zl))
  assert not bool(lout["finite"]) and float(lout["lidar"]) == 0.0
  _no_nan({k: v for k, v in out.items() if k != "finite"})
  _no_nan(lout)


def test_bad_arguments():
  z = gaussian(np.random.default_rng(17), 16, 4)
  with pytest.raises(ConfigError):
    S.rankme(z, eps=-1.0)
  with pytest.raises(ConfigError):
    S.lidar(np.stack([z] * 2, 1), delta=0.0)
  for fr in [(5, 2), (0, 3), (1.0, 3), 3]:
    with pytest.raises(ConfigError):
      S.alpha_req(z, fit_range=fr)
  with pytest.raises(ConfigError):
    S.spectrum_init(0)
  with pytest.raises(ConfigError):                           # ShapeError: dim mismatch
    S.spectrum_update(S.spectrum_init(5), z)
  with pytest.raises(ConfigError):
    S.rankme(z[0])


# ----------------------------------------------------------------------------- augmentation helper

CFG = augment.AugmentConfig(crop_size=8, jitter_p=0.0, gray_p=0.0)   # crop + flip: cheap to compile
_W = np.random.default_rng(18).standard_normal((64, 16)).astype(np.float32) / 8


def _embed(x):
  return x.reshape(x.shape[0], -1) @ _W                      # [n, 8*8*1] -> [n, 16]


def _images(n=6):
  return np.random.default_rng(19).integers(0, 256, (n, 12, 12, 1), dtype=np.uint8)


def test_lidar_views_shapes_and_keys():
  key, images = jax.random.PRNGKey(0), _images()
  both = jax.jit(lambda k, x: (S.lidar_views(k, x, _embed, num_views=4, view_cfg=CFG),
                               S.lidar_from_images(k, x, _embed, num_views=4, view_cfg=CFG)))
  views, value = both(key, images)
  assert views.shape == (6, 4, 16) and views.dtype == jnp.float32
  close(value, float(S.lidar(views)), 3e-5)   # one fused program vs two: float32 round-off (1.0e-5 seen)
  aug = jax.jit(lambda k, x: jax.vmap(lambda kk: _embed(augment.augment_batch(kk, x, CFG)))(k))
  want = aug(jax.vmap(lambda kr: jax.random.split(kr, 1)[0])(jax.random.split(key, 4)), images)
  np.testing.assert_allclose(views, jnp.swapaxes(want, 0, 1), rtol=1e-5, atol=1e-5)   # key schedule
  assert not np.allclose(views[:, 0], views[:, 1])           # different augmentations
  pair = (CFG, CFG.replace(flip_p=1.0))
  two = jax.eval_shape(lambda k, x: S.lidar_views(k, x, _embed, num_views=4, view_cfg=pair),
                       key, images)
  assert two.shape == (6, 4, 16)
  with pytest.raises(ConfigError):
    S.lidar_views(key, images, _embed, num_views=3, view_cfg=pair)
  with pytest.raises(ConfigError):
    S.lidar_views(key, images, _embed, num_views=4, view_cfg="simclr")


@needs_8
def test_lidar_from_images_sharded():
  key, images = jax.random.PRNGKey(1), _images(16)
  f = _shard_map(lambda x: S.lidar_from_images(key, x, _embed, num_views=3, view_cfg=CFG,
                                               axis_name=AX))
  v = float(f(images))
  assert np.isfinite(v) and v >= 1.0
