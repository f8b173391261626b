"""Label-free model selection: RankMe, alpha-ReQ and LiDAR from psum'd [D, D] moments.

Three criteria that rank checkpoints / hyper-parameters without labels:

* `rankme`    Garrido, Balestriero, Najman & LeCun (ICML 2023, arXiv 2210.02885): the
              smooth rank of the singular values of the embedding matrix Z [N, D], as
              produced (not normalised, not centred).
* `alpha_req` Agrawal et al. (NeurIPS 2022), "alpha-ReQ": the decay exponent alpha of the
              centred covariance eigenspectrum, lambda_k ~ k^(-alpha).
* `lidar`     Thilak et al. (ICLR 2024, arXiv 2312.04000): the smooth rank of the LDA
              matrix of a surrogate task, n images as classes, q augmented views each.

Every criterion is computed from D- and [D, D]-sized moments: with ``axis_name``
(inside ``jax.shard_map`` / ``jax.pmap``, the batch -- or for LiDAR the classes -- split
over that axis) only those moments are psum'd, the embeddings are never gathered, and
the value equals the unsharded one. The same moments stream over many eval batches
(`spectrum_accumulator`, `lidar_accumulator`): the paper's 25 600-sample estimate in one
pass, equal to the one-shot value.

Numerics. Moments are float32 (at least), matmuls at ``Precision.HIGHEST`` (not TF32 /
bf16 on accelerators). Within a batch the centred scatter is two-pass (psum'd mean first,
then the centred second moment); batches are merged with Chan, Golub & LeVeque's (1979)
pairwise update, which only adds centred quantities, so no E[zz^T] - mu mu^T cancellation
ever happens. A float32 Gram / eigh resolves eigenvalues to ~eps*lambda_max (measured
1-3.6 eps for D = 64..2048): eigenvalues below ``rtol * lambda_max`` (default
``rtol = sqrt(D) * eps`` of the compute dtype, about 1e-6 for float32 at D = 64) are set
to exactly 0. Without that floor rounding noise reads as rank: RankMe of a rank-1 batch
at D = 2048 is 1.49 instead of 1.003, of rank-10 data at D = 256 +1.8 %. With it, singular
values below sqrt(rtol) * sigma_max (~1e-3) count as 0; ``rtol=0`` disables it.

Degenerate inputs (never NaN): a value that is undefined -- zero embeddings, all class
means equal, fewer than two points in the alpha fit, non-finite moments -- is 0.0 (the
"no rank" value, never the best one in a model selection). Concrete non-finite input
raises `DataError`; traced non-finite input (under jit / shard_map) gives 0.0 and
``finite = False`` in the accumulators' results. All values are under stop_gradient.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxssl import augment
from jaxssl import linalg
from jaxssl.diagnostics import _check_embeddings
from jaxssl.errors import ConfigError, DataError
from jaxssl.losses import _collectives as C

RANKME_EPS = 1e-7      # RankMe paper code
LIDAR_DELTA = 1e-4     # LiDAR: Sigma_w + delta * I
LIDAR_EPS = 1e-8       # LiDAR: p_k = lambda_k / |lambda|_1 + eps


# ----------------------------------------------------------------------------- checks / numerics

def _mm(a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.matmul(a, b, precision=lax.Precision.HIGHEST)


def _check_opts(fn: str, *, eps=None, rtol=None, delta=None) -> None:
  """eps >= 0, rtol >= 0 and delta > 0 (each when given and concrete)."""
  for name, value, strict in (("eps", eps, False), ("rtol", rtol, False), ("delta", delta, True)):
    v = None if value is None else C.concrete_scalar(value)
    if v is not None and not (v > 0 if strict else v >= 0):
      raise ConfigError(f"{fn}: {name} must be {'> 0' if strict else '>= 0'}, got {name}={value!r}")


def _check_finite(fn: str, z: jax.Array) -> None:
  """Concrete input with NaN/Inf raises; traced input is left to the in-graph 0.0 rule."""
  if not isinstance(z, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(z))):
    raise DataError(f"{fn}: the embeddings contain NaN or Inf (a diverged model?); under jit the "
                    "criteria are 0.0 for such input instead")


def _check_dim(fn: str, dim) -> int:
  if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
    raise ConfigError(f"{fn}: dim must be a positive int, got dim={dim!r}")
  return int(dim)


def _check_fit_range(fit_range) -> None:
  if fit_range is None:
    return
  ok = (isinstance(fit_range, (tuple, list)) and len(fit_range) == 2
        and all(isinstance(k, (int, np.integer)) and not isinstance(k, bool) for k in fit_range)
        and 1 <= fit_range[0] < fit_range[1])
  if not ok:
    raise ConfigError(f"alpha_req: fit_range must be None or (k_min, k_max) ints with "
                      f"1 <= k_min < k_max (1-based ranks, inclusive), got {fit_range!r}")


def _all_finite(*xs: jax.Array) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in xs]))


def _default_rtol(dim: int, dtype) -> float:
  return float(np.sqrt(dim) * jnp.finfo(dtype).eps)


def _eigs_desc(mat: jax.Array, ok: jax.Array, rtol) -> jax.Array:
  """Eigenvalues of a symmetric PSD [D, D] matrix, descending, clipped at 0, and set to 0
  below rtol * lambda_max (float32 rounding noise). All 0 when not `ok` (non-finite)."""
  mat = jnp.where(ok, 0.5 * (mat + mat.T), 0.0)             # [D, D]
  lam = jnp.maximum(linalg.eigvalsh(mat)[::-1], 0.0)        # [D] (no eigenvectors: jaxssl.linalg)
  tol = _default_rtol(mat.shape[0], mat.dtype) if rtol is None else rtol
  return jnp.where(lam > tol * lam[0], lam, 0.0)


def smooth_rank(values: jax.Array, *, eps: float = RANKME_EPS, mask: jax.Array | None = None
                ) -> jax.Array:
  r"""Entropy ("smooth") rank of non-negative values v (singular values or eigenvalues).

      p_k = v_k / sum_j v_j + eps,       rank = exp( -sum_k p_k log p_k )

  over the entries where ``mask`` (all when None), as in the RankMe and LiDAR papers
  (eps = 1e-7 and 1e-8 there). Exactly-zero entries still contribute eps log(1/eps).
  Defined as 0.0 when sum_k v_k = 0 (the formula's 0/0: no rank at all).
  """
  m = jnp.ones(jnp.shape(values), bool) if mask is None else mask
  v = jnp.where(m, jnp.maximum(C.as_float(values), 0.0), 0.0)   # [K]
  total = jnp.sum(v)
  p = v / jnp.where(total > 0, total, 1.0) + eps            # [K]
  plogp = jnp.where(m & (p > 0), p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)
  return jnp.where(total > 0, jnp.exp(-jnp.sum(plogp)), 0.0)


def fit_power_law(eigenvalues: jax.Array, *, num_samples=None, fit_range=None, rtol=None
                  ) -> tuple[jax.Array, jax.Array]:
  r"""alpha-ReQ's decay exponent: least squares log lambda_k = c - alpha log k.

  Ranks used (1-based, lambda sorted descending): every k with lambda_k > rtol * lambda_1
  (the float32 noise floor, see the module docstring), k <= num_samples - 1 (a centred
  covariance of N rows has rank <= N - 1; the rest are zeros, not a spectrum) and, if
  given, k_min <= k <= k_max of ``fit_range``. By default all resolvable ranks: the
  construction lambda_k = k^-alpha then gives alpha back exactly, and there is no
  arbitrary cut to tune. The reptrix library's ``get_alpha`` fits ranks 6..100 with 1/k
  weights, to skip the head; fit_range=(6, 100) gives that window (unweighted here).
  The fit assumes N >> D: with N ~ D the sample spectrum's tail bends down (Marchenko-Pastur).
  Returns (alpha, number of ranks fitted); alpha = 0.0 when fewer than 2 ranks qualify.
  """
  _check_fit_range(fit_range)
  lam = jnp.sort(jnp.maximum(C.as_float(eigenvalues), 0.0))[::-1]    # [D]
  tol = _default_rtol(lam.shape[0], lam.dtype) if rtol is None else rtol
  k = jnp.arange(1, lam.shape[0] + 1)
  valid = (lam > tol * lam[0]) & (lam > 0)
  if num_samples is not None:
    valid &= k <= jnp.asarray(num_samples) - 1
  if fit_range is not None:
    valid &= (k >= fit_range[0]) & (k <= fit_range[1])
  n = jnp.sum(valid)
  x = jnp.log(k.astype(lam.dtype))
  y = jnp.log(jnp.where(valid, lam, 1.0))
  xm = jnp.sum(jnp.where(valid, x, 0.0)) / jnp.maximum(n, 1)
  ym = jnp.sum(jnp.where(valid, y, 0.0)) / jnp.maximum(n, 1)
  sxx = jnp.sum(jnp.where(valid, (x - xm) ** 2, 0.0))
  sxy = jnp.sum(jnp.where(valid, (x - xm) * (y - ym), 0.0))
  alpha = jnp.where((n >= 2) & (sxx > 0), -sxy / jnp.where(sxx > 0, sxx, 1.0), 0.0)
  return lax.stop_gradient(alpha), n


# ----------------------------------------------------------------------------- moments

def _batch_moments(z: jax.Array, big_m: int, axis_name, *, centred: bool = True, gram: bool = True):
  """Mean [D], centred scatter [D, D] and Gram [D, D] of the M global rows of z, psum'd:

      mean = psum(sum_i z_i) / M,   m2 = psum(sum_i (z_i - mean)(z_i - mean)^T),   G = psum(Z^T Z)

  two-pass (mean first); only moments cross devices. A moment not asked for is None.
  """
  mean = m2 = g = None
  if centred:
    mean = C.psum(jnp.sum(z, axis=0), axis_name) / big_m    # [D]
    c = z - mean                                             # [m, D]
    m2 = _mm(c.T, c)                                         # [D, D]
  if gram:
    g = _mm(z.T, z)                                          # [D, D]
  m2, g = C.psum((m2, g), axis_name)
  return mean, m2, g


def _merge(n_a: jax.Array, mean_a: jax.Array, m2_a: jax.Array, n_b, mean_b: jax.Array,
           m2_b: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Chan, Golub & LeVeque (1979): count, mean and centred scatter of the union of two sets,

      n = n_a + n_b,   d = mean_b - mean_a,   mean = mean_a + d n_b / n,
      m2 = m2_a + m2_b + d d^T n_a n_b / n

  exact, and free of cancellation (every term is a centred, PSD quantity)."""
  n = n_a + n_b
  w = jnp.asarray(n_b, mean_a.dtype) / jnp.maximum(n, 1).astype(mean_a.dtype)
  d = mean_b - mean_a                                        # [D]
  m2 = m2_a + m2_b + (n_a.astype(mean_a.dtype) * w) * jnp.outer(d, d)
  return n, mean_a + w * d, m2


def _as_embeddings(z: jax.Array, dtype=None) -> jax.Array:
  zf = lax.stop_gradient(C.as_float(z))
  return zf if dtype is None else zf.astype(dtype)


# ----------------------------------------------------------------------------- RankMe / alpha-ReQ

def _rankme_from_gram(gram: jax.Array, count, ok: jax.Array, eps, rtol
                      ) -> tuple[jax.Array, jax.Array]:
  """(RankMe, singular values [D] descending) from G = Z^T Z: sigma_k = sqrt(lambda_k(G)),
  the first min(N, D) of them (the paper's svdvals; the rest are structural zeros)."""
  dim = gram.shape[0]
  mask = jnp.arange(dim) < jnp.minimum(count, dim)           # [D]
  sigma = jnp.where(mask, jnp.sqrt(_eigs_desc(gram, ok, rtol)), 0.0)
  return lax.stop_gradient(smooth_rank(sigma, eps=eps, mask=mask)), lax.stop_gradient(sigma)


def rankme(z: jax.Array, *, eps: float = RANKME_EPS, rtol: float | None = None,
           axis_name=None) -> jax.Array:
  r"""RankMe (Garrido et al., ICML 2023, arXiv 2210.02885) of embeddings z [N, D] as produced.

      sigma = singular values of Z (min(N, D) of them) = sqrt(eigvalsh(Z^T Z))
      p_k = sigma_k / |sigma|_1 + eps,      RankMe = exp( -sum_k p_k log p_k )

  eps = 1e-7 as in the paper's code. Z is neither normalised nor centred: a constant
  embedding (every row equal, non-zero) has RankMe 1; zero embeddings give 0.0. About D
  for isotropic Gaussian rows (N >> D), about k for rank-k rows. With ``axis_name`` the
  Gram matrix [D, D] is psum'd. Singular values below sqrt(rtol) * sigma_max are 0 (see
  the module docstring). Needs N >= 1.
  """
  _check_embeddings("rankme", z)
  _check_opts("rankme", eps=eps, rtol=rtol)
  big_m = C.check_batch("rankme", z.shape[0], axis_name, 1)
  _check_finite("rankme", z)
  zf = _as_embeddings(z)                                     # [m, D]
  _, _, g = _batch_moments(zf, big_m, axis_name, centred=False)
  return _rankme_from_gram(g, big_m, _all_finite(g), eps, rtol)[0]


def alpha_req(z: jax.Array, *, fit_range: tuple[int, int] | None = None, rtol: float | None = None,
              axis_name=None) -> jax.Array:
  r"""alpha-ReQ (Agrawal et al., NeurIPS 2022): eigenspectrum decay of the centred covariance.

      Cov = 1/(N-1) sum_i (z_i - mu)(z_i - mu)^T,    lambda = eigvalsh(Cov) descending
      alpha = -slope of the least-squares line  log lambda_k = c - alpha log k

  over the ranks of `fit_power_law` (default: all k <= min(N-1, D) above the float32
  noise floor). Not monotone in quality: larger alpha is faster decay (towards collapse),
  smaller is whiter (noisier); the paper relates intermediate alpha to good linear-probe
  accuracy, so select by distance to a target, not by max. 0.0 when fewer than two ranks
  qualify (e.g. all rows equal, or rank 1). With ``axis_name`` the mean [D] and centred
  scatter [D, D] are psum'd. Needs N >= 2.
  """
  _check_embeddings("alpha_req", z)
  _check_fit_range(fit_range)
  _check_opts("alpha_req", rtol=rtol)
  big_m = C.check_batch("alpha_req", z.shape[0], axis_name, 2)
  _check_finite("alpha_req", z)
  zf = _as_embeddings(z)                                     # [m, D]
  mean, m2, _ = _batch_moments(zf, big_m, axis_name, gram=False)
  lam = _eigs_desc(m2 / (big_m - 1), _all_finite(mean, m2), rtol)
  return fit_power_law(lam, num_samples=big_m, fit_range=fit_range, rtol=rtol)[0]


# ----------------------------------------------------------------------------- LiDAR

def _lidar_batch(z: jax.Array, axis_name) -> tuple[int, jax.Array, jax.Array, jax.Array]:
  """(n classes, mean of class means [D], their centred scatter [D, D], within-class
  scatter sum_i sum_j (z_ij - mu_i)(z_ij - mu_i)^T [D, D]) of z [n_local, q, D], psum'd."""
  n_local, q, dim = z.shape
  big_n = n_local * C.axis_size(axis_name)
  mu = jnp.mean(z, axis=1)                                   # [n, D] class means
  c = (z - mu[:, None, :]).reshape(n_local * q, dim)         # [n q, D]
  mean, m2, _ = _batch_moments(mu, big_n, axis_name, gram=False)
  return big_n, mean, m2, C.psum(_mm(c.T, c), axis_name)


def _lidar_from_moments(n, n_samples, m2_between, scatter_within, ok, delta, eps, rtol
                        ) -> tuple[jax.Array, jax.Array]:
  """(LiDAR, LDA eigenvalues [D] descending) from the class moments."""
  dim = m2_between.shape[0]
  dt = m2_between.dtype
  s_b = m2_between / jnp.maximum(n - 1, 1).astype(dt)                    # [D, D]
  s_w = scatter_within / jnp.maximum(n_samples - n, 1).astype(dt)       # [D, D]
  s_w = jnp.where(ok, 0.5 * (s_w + s_w.T), jnp.eye(dim, dtype=dt))
  ew, v = jnp.linalg.eigh(s_w)                                           # [D], [D, D]
  inv_sqrt = _mm(v * lax.rsqrt(jnp.maximum(ew, 0.0) + delta), v.T)       # (S_w + delta I)^(-1/2)
  lam = _eigs_desc(_mm(_mm(inv_sqrt, s_b), inv_sqrt), ok, rtol)          # [D]; 0 when n < 2
  return lax.stop_gradient(smooth_rank(lam, eps=eps)), lax.stop_gradient(lam)


def _check_views(fn: str, z: jax.Array) -> None:
  if np.ndim(z) != 3:
    raise C.ShapeError(f"{fn}: z must be [n images, q views, dim] (class-major), "
                       f"got shape {tuple(np.shape(z))}")
  if np.shape(z)[1] < 2:
    raise ConfigError(f"{fn}: needs q >= 2 views per image (q = 1 has no within-class "
                      f"scatter, so Sigma_w = delta I and the LDA is meaningless); got shape "
                      f"{tuple(np.shape(z))}")


def lidar(z: jax.Array, *, delta: float = LIDAR_DELTA, eps: float = LIDAR_EPS,
          rtol: float | None = None, axis_name=None) -> jax.Array:
  r"""LiDAR (Thilak et al., ICLR 2024, arXiv 2312.04000) of z [n, q, D]: q augmented views
  (the samples) of each of n images (the surrogate classes), class-major.

      mu_i = 1/q sum_j z_ij,      mu = 1/n sum_i mu_i
      Sigma_b = 1/(n-1) sum_i (mu_i - mu)(mu_i - mu)^T
      Sigma_w = 1/(n(q-1)) sum_ij (z_ij - mu_i)(z_ij - mu_i)^T + delta I
      lambda = eigvalsh( Sigma_w^(-1/2) Sigma_b Sigma_w^(-1/2) ),  p_k = lambda_k / |lambda|_1 + eps
      LiDAR = exp( -sum_k p_k log p_k )

  delta = 1e-4, eps = 1e-8 by default (other implementations use delta = 1e-6 (reptrix)
  or 1e-3); delta keeps a singular within-class scatter (identical views, n(q-1) < D)
  invertible. The 1/(n-1) of Sigma_b cancels in p; delta is absolute, so LiDAR is not
  scale-invariant (as in the paper). About k when the class means span k orthogonal
  directions well above isotropic within-class noise. All class means equal (e.g. zero
  embeddings): 0.0. With ``axis_name`` the images are split over the axis and the [D] and
  [D, D] moments psum'd. Needs n >= 2 images and q >= 2 views (q = 1: ConfigError).
  """
  _check_views("lidar", z)
  _check_opts("lidar", eps=eps, rtol=rtol, delta=delta)
  C.check_batch("lidar", z.shape[0], axis_name, 2)
  _check_finite("lidar", z)
  n, mean, m2, sw = _lidar_batch(_as_embeddings(z), axis_name)
  ok = _all_finite(mean, m2, sw)
  return _lidar_from_moments(n, n * z.shape[1], m2, sw, ok, delta, eps, rtol)[0]


def _view_cfgs(view_cfg) -> tuple[augment.AugmentConfig, ...]:
  cfgs = (view_cfg,) if isinstance(view_cfg, augment.AugmentConfig) else tuple(view_cfg)
  if not cfgs or not all(isinstance(c, augment.AugmentConfig) for c in cfgs):
    raise ConfigError(f"lidar_views: view_cfg must be an AugmentConfig or a sequence of them "
                      f"(e.g. augment.preset('simclr', 32)), got {view_cfg!r}")
  return cfgs


def lidar_views(key: jax.Array, images: jax.Array, embed_fn: Callable[[jax.Array], jax.Array], *,
                num_views: int, view_cfg: augment.AugmentConfig | Sequence[augment.AugmentConfig]
                ) -> jax.Array:
  r"""Embeddings [n, q, D] of q = ``num_views`` on-device augmentations of each of n images.

  ``images`` [n, H, W, C] (uint8 or float in [0, 1]); ``embed_fn`` maps a batch of views
  [n, h, w, C] float32 -> [n, D]. With c configs (one, or a sequence such as the
  asymmetric pair of ``augment.preset("byol", ...)``; num_views a multiple of c), round
  r = 0 .. q/c - 1 splits ``jax.random.split(key, q/c)[r]`` into c keys k_0..k_{c-1}, and
  view r c + j of image i is ``embed_fn(augment.augment_batch(k_j, images, view_cfg[j]))[i]``.
  The views are made and embedded one round (c views) at a time inside ``lax.map``:
  memory stays at c * n images and the pipeline is compiled once. Jit-able.
  """
  cfgs = _view_cfgs(view_cfg)
  c = len(cfgs)
  if isinstance(num_views, bool) or not isinstance(num_views, (int, np.integer)) or num_views < 2 \
      or num_views % c:
    raise ConfigError(f"lidar_views: num_views must be an int >= 2 and a multiple of the "
                      f"{c} view config(s), got num_views={num_views!r}")
  n = np.shape(images)[0]
  def embed(x: jax.Array) -> jax.Array:
    e = embed_fn(x)                                          # [n, D]
    if e.ndim != 2 or e.shape[0] != n:
      raise C.ShapeError(f"lidar_views: embed_fn must map [n, h, w, C] -> [n, D]; got "
                         f"{tuple(e.shape)} for n = {n}")
    return e
  def one_round(k: jax.Array) -> jax.Array:                  # -> [c, n, D]
    ks = jax.random.split(k, c)
    return jnp.stack([embed(augment.augment_batch(kj, images, cfg)) for kj, cfg in zip(ks, cfgs)])

  e = lax.map(one_round, jax.random.split(key, num_views // c))   # [q/c, c, n, D]
  e = e.reshape(num_views, n, e.shape[-1])                   # [q, n, D]
  return jnp.swapaxes(e, 0, 1)                               # [n, q, D]


def lidar_from_images(key: jax.Array, images: jax.Array, embed_fn: Callable[[jax.Array], jax.Array],
                      *, num_views: int, view_cfg, delta: float = LIDAR_DELTA,
                      eps: float = LIDAR_EPS, rtol: float | None = None, axis_name=None
                      ) -> jax.Array:
  """`lidar` of `lidar_views` (jit-able). With ``axis_name`` the images are this member's
  shard and the key is folded with the axis index, so that shards draw different views."""
  if axis_name is not None:
    key = jax.random.fold_in(key, lax.axis_index(axis_name))
  z = lidar_views(key, images, embed_fn, num_views=num_views, view_cfg=view_cfg)
  return lidar(z, delta=delta, eps=eps, rtol=rtol, axis_name=axis_name)


# ----------------------------------------------------------------------------- streaming

@flax.struct.dataclass
class SpectrumMoments:
  """Streaming moments of embeddings [N, D]: count N ([] int32), mean [D], centred scatter
  m2 = sum_i (z_i - mean)(z_i - mean)^T [D, D] and Gram G = Z^T Z [D, D] (float32)."""
  count: jax.Array
  mean: jax.Array
  m2: jax.Array
  gram: jax.Array


@flax.struct.dataclass
class LidarMoments:
  """Streaming LiDAR moments: num_classes n and num_samples n q ([] int32), the mean [D] and
  centred scatter m2_between [D, D] of the class means, and the within-class scatter
  sum_ij (z_ij - mu_i)(z_ij - mu_i)^T [D, D] (every image's views come in one batch)."""
  num_classes: jax.Array
  num_samples: jax.Array
  mean: jax.Array
  m2_between: jax.Array
  scatter_within: jax.Array


def spectrum_init(dim: int, dtype=jnp.float32) -> SpectrumMoments:
  """The empty accumulator (count 0) for embeddings of dimension ``dim``."""
  d = _check_dim("spectrum_init", dim)
  return SpectrumMoments(count=jnp.zeros([], jnp.int32), mean=jnp.zeros((d,), dtype),
                         m2=jnp.zeros((d, d), dtype), gram=jnp.zeros((d, d), dtype))


def _check_acc_dim(fn: str, acc_dim: int, z: jax.Array) -> None:
  if z.shape[-1] != acc_dim:
    raise C.ShapeError(f"{fn}: the accumulator is for dim {acc_dim}, got embeddings of shape "
                       f"{tuple(z.shape)}")


def spectrum_update(acc: SpectrumMoments, z: jax.Array, *, axis_name=None) -> SpectrumMoments:
  """Adds a batch z [B, D] (with ``axis_name``: this member's rows of the global batch; the
  batch moments are psum'd, so the result is the same on every member). Jit-able."""
  _check_embeddings("spectrum_update", z)
  _check_acc_dim("spectrum_update", acc.mean.shape[0], z)
  big_m = C.check_batch("spectrum_update", z.shape[0], axis_name, 1)
  _check_finite("spectrum_update", z)
  mean_b, m2_b, g_b = _batch_moments(_as_embeddings(z, acc.mean.dtype), big_m, axis_name)
  count, mean, m2 = _merge(acc.count, acc.mean, acc.m2, big_m, mean_b, m2_b)
  return SpectrumMoments(count=count, mean=mean, m2=m2, gram=acc.gram + g_b)


def spectrum_finalize(acc: SpectrumMoments, *, eps: float = RANKME_EPS,
                      fit_range: tuple[int, int] | None = None, rtol: float | None = None
                      ) -> dict[str, jax.Array]:
  """RankMe and alpha-ReQ of everything added: the values of `rankme` / `alpha_req` on the
  concatenated batches. Returns {"rankme", "alpha_req", "alpha_req_ranks" (ranks fitted),
  "singular_values" [D] (of Z, descending), "cov_eigenvalues" [D] (of the centred
  covariance, descending), "count", "finite" (False: some moment is NaN/Inf, every value 0)}.
  """
  _check_opts("spectrum_finalize", eps=eps, rtol=rtol)    # fit_range: by fit_power_law
  ok = _all_finite(acc.mean, acc.m2, acc.gram)
  rank, sigma = _rankme_from_gram(acc.gram, acc.count, ok, eps, rtol)
  cov = acc.m2 / jnp.maximum(acc.count - 1, 1).astype(acc.m2.dtype)
  lam = lax.stop_gradient(_eigs_desc(cov, ok, rtol))
  alpha, n_fit = fit_power_law(lam, num_samples=acc.count, fit_range=fit_range, rtol=rtol)
  return {"rankme": rank, "alpha_req": alpha, "alpha_req_ranks": n_fit, "singular_values": sigma,
          "cov_eigenvalues": lam, "count": acc.count, "finite": ok}


def lidar_init(dim: int, dtype=jnp.float32) -> LidarMoments:
  """The empty LiDAR accumulator for embeddings of dimension ``dim``."""
  d = _check_dim("lidar_init", dim)
  zero = jnp.zeros([], jnp.int32)
  return LidarMoments(num_classes=zero, num_samples=zero, mean=jnp.zeros((d,), dtype),
                      m2_between=jnp.zeros((d, d), dtype), scatter_within=jnp.zeros((d, d), dtype))


def lidar_update(acc: LidarMoments, z: jax.Array, *, axis_name=None) -> LidarMoments:
  """Adds the views z [b, q, D] of b new images (q >= 2; q may differ between batches:
  Sigma_w is then the pooled within-class covariance, normalised by sum_i (q_i - 1))."""
  _check_views("lidar_update", z)
  _check_acc_dim("lidar_update", acc.mean.shape[0], z)
  C.check_batch("lidar_update", z.shape[0], axis_name, 1)
  _check_finite("lidar_update", z)
  n_b, mean_b, m2_b, sw_b = _lidar_batch(_as_embeddings(z, acc.mean.dtype), axis_name)
  n, mean, m2 = _merge(acc.num_classes, acc.mean, acc.m2_between, n_b, mean_b, m2_b)
  return LidarMoments(num_classes=n, num_samples=acc.num_samples + n_b * z.shape[1], mean=mean,
                      m2_between=m2, scatter_within=acc.scatter_within + sw_b)


def lidar_finalize(acc: LidarMoments, *, delta: float = LIDAR_DELTA, eps: float = LIDAR_EPS,
                   rtol: float | None = None) -> dict[str, jax.Array]:
  """LiDAR of every image added ({"lidar", "lda_eigenvalues" [D] descending, "num_classes",
  "num_samples", "finite"}); "lidar" is 0.0 with fewer than 2 images."""
  _check_opts("lidar_finalize", eps=eps, rtol=rtol, delta=delta)
  ok = _all_finite(acc.mean, acc.m2_between, acc.scatter_within)
  value, lam = _lidar_from_moments(acc.num_classes, acc.num_samples, acc.m2_between,
                                   acc.scatter_within, ok, delta, eps, rtol)
  return {"lidar": value, "lda_eigenvalues": lam, "num_classes": acc.num_classes,
          "num_samples": acc.num_samples, "finite": ok}


class Accumulator(NamedTuple):
  """optax-style triple: ``acc = init(dim)``, ``acc = update(acc, z, axis_name=None)``,
  ``finalize(acc) -> dict``; the accumulator is a pytree (jit / scan / shard_map-able)."""
  init: Callable[..., Any]
  update: Callable[..., Any]
  finalize: Callable[..., dict]


spectrum_accumulator = Accumulator(spectrum_init, spectrum_update, spectrum_finalize)
lidar_accumulator = Accumulator(lidar_init, lidar_update, lidar_finalize)

__all__ = ["LIDAR_DELTA", "LIDAR_EPS", "RANKME_EPS", "Accumulator", "LidarMoments",
           "SpectrumMoments", "alpha_req", "fit_power_law", "lidar", "lidar_accumulator",
           "lidar_finalize", "lidar_from_images", "lidar_init", "lidar_update", "lidar_views",
           "rankme", "smooth_rank", "spectrum_accumulator", "spectrum_finalize", "spectrum_init",
           "spectrum_update"]
