"""Representation diagnostics: spectrum, effective rank, embedding norm, alignment,
uniformity, tolerance, hardness, Wasserstein uniformity and local separation.

Notation: z is a [B, D] batch of embeddings (not normalised); u_i = z_i / |z_i| (safe
normalisation: a zero row stays 0, never NaN); M is the *global* batch size.

``axis_name``: inside ``jax.shard_map`` / ``jax.pmap`` / ``jax.vmap(axis_name=...)``
with the batch split over that axis, the functions that accept it return the value of
the unsharded call on the concatenated batch. `spectrum` (and what builds on it) only
psums D- and [D, D]-sized moments: the embeddings are never gathered. `uniformity`
needs every pair, so it all-gathers the normalised rows (as the contrastive losses do).

Diagnostics are measurements, not losses: `spectrum`, `effective_rank`, `embedding_norm`, `hardness`,
`wasserstein_uniformity` and `local_separation` are under ``stop_gradient``.
`alignment` and `uniformity` are differentiable (unsharded) so that they can also serve
as Wang & Isola's alignment/uniformity losses.
"""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxssl import linalg
from jaxssl.errors import ConfigError
from jaxssl.losses import _collectives as C

_NEG_INF = -jnp.inf


# ----------------------------------------------------------------------------- checks

def _check_embeddings(fn: str, z, name: str = "z") -> None:
  try:
    chex.assert_rank(z, 2)
  except AssertionError as e:
    raise C.ShapeError(f"{fn}: {name} must be [batch, dim], got shape {tuple(np.shape(z))} ({e})") from e


def _check_labels(fn: str, z, labels) -> None:
  if np.ndim(labels) != 1 or np.shape(labels)[0] != np.shape(z)[0]:
    raise C.ShapeError(f"{fn}: labels must be [batch] = ({np.shape(z)[0]},) integer class ids, "
                       f"got shape {tuple(np.shape(labels))}")


def _normalized(z: jax.Array) -> jax.Array:
  return C.safe_normalize(C.as_float(z))  # [B, D]


# ----------------------------------------------------------------------------- spectrum

def _moments(u: jax.Array, big_m: int, axis_name) -> tuple[jax.Array, jax.Array]:
  """Global mean and (M-1)-normalised covariance of the rows of u, from psum'd moments.

      mu  = psum_d(sum_i u_i) / M                                   # [D]
      cov = psum_d(sum_i (u_i - mu)(u_i - mu)^T) / (M - 1)          # [D, D]

  Two passes (mean first, then the centred second moment) for accuracy when |mu| is
  close to 1 (a collapsed representation); only [D] and [D, D] partial sums cross
  devices, never the rows.
  """
  mu = C.psum(jnp.sum(u, axis=0), axis_name) / big_m       # [D]
  c = u - mu                                               # [m, D]
  cov = C.psum(c.T @ c, axis_name) / max(big_m - 1, 1)     # [D, D]
  return mu, 0.5 * (cov + cov.T)


def spectrum(z: jax.Array, *, axis_name=None) -> jax.Array:
  r"""Eigenvalues of the covariance of the L2-normalised embeddings, descending.

  Jing et al. (ICLR 2022, arXiv 2110.09348, official ``spectrum.py``): with
  u_i = z_i/|z_i| over the global batch of M rows,

      mu = 1/M sum_i u_i,     Cov = 1/(M-1) sum_i (u_i - mu)(u_i - mu)^T,
      spectrum = sort_desc( max(eigvalsh(Cov), 0) )                    # [D]

  Computed in float32 (at least) under stop_gradient. With ``axis_name`` the mean and
  the centred second moment are psum'd ([D] and [D, D]); the embeddings are never
  all-gathered. Zero rows normalise to 0 (no NaN). Needs M >= 2.

  Without ``axis_name``, when the batch is smaller than the dimension (M < D, e.g. the
  512-d backbone features of a 256-image batch), the eigenvalues come from the [M, M]
  Gram matrix instead: with c the [M, D] centred rows, c^T c and c c^T have the same
  non-zero eigenvalues, and Cov has rank <= M - 1, so

      spectrum = [sort_desc(max(eigvalsh(c c^T / (M-1)), 0)), 0, ..., 0]   # M + (D - M) zeros

  An [M, M] eigendecomposition costs (M/D)^3 of the [D, D] one: on XLA:CPU, 4 ms instead of
  12 ms for M = 256, D = 512, which kept a logging step of the Fashion-MNIST job at 1.10x a
  normal step (benchmarks/diagnostics_cost.py).
  """
  _check_embeddings("spectrum", z)
  big_m = C.check_batch("spectrum", z.shape[0], axis_name, 2)
  u = _normalized(lax.stop_gradient(z))                    # [m, D]
  dim = u.shape[1]
  if axis_name is None and big_m < dim:
    c = u - jnp.mean(u, axis=0)                            # [M, D]
    gram = c @ c.T / (big_m - 1)                           # [M, M]
    eig = linalg.eigvalsh(gram)                            # [M] ascending (values only)
    eig = jnp.concatenate([eig[::-1], jnp.zeros((dim - big_m,), eig.dtype)])   # [D]
    return lax.stop_gradient(jnp.maximum(eig, 0.0))
  _, cov = _moments(u, big_m, axis_name)                   # [D, D]
  eig = linalg.eigvalsh(cov)                               # [D] ascending (values only: jaxssl.linalg)
  return lax.stop_gradient(jnp.maximum(eig[::-1], 0.0))


def effective_rank(z_or_eigs: jax.Array, *, axis_name=None) -> jax.Array:
  r"""Effective rank (Roy & Vetterli 2007; RankMe, Garrido et al. 2023; Koromilas et al. 2024).

  Over the singular values sigma_k of the centred, normalised embedding matrix,
  i.e. sigma_k = sqrt(lambda_k) with lambda = `spectrum` (up to a common factor that
  cancels):

      p_k = sigma_k / sum_j sigma_j,      erank = exp( -sum_k p_k log p_k )   (0 log 0 = 0)

  A 2-D input [B, D] is a batch of embeddings (its `spectrum` is taken first, with
  ``axis_name``); a 1-D input [D] is a vector of covariance eigenvalues lambda (negative
  entries clipped to 0). An all-zero spectrum (every embedding identical) has rank 0.
  Calibration (PAPERS.md B): ~127 for isotropic 128-d Gaussian points, ~16.9 for 128-d
  points with std 1 in 16 dimensions and 1e-3 in the other 112.
  """
  x = jnp.asarray(z_or_eigs)
  if x.ndim == 2:
    lam = spectrum(x, axis_name=axis_name)
  elif x.ndim == 1:
    lam = C.as_float(lax.stop_gradient(x))
  else:
    raise C.ShapeError(f"effective_rank: expected embeddings [batch, dim] or eigenvalues [dim], "
                       f"got shape {tuple(x.shape)}")
  sigma = jnp.sqrt(jnp.maximum(lam, 0.0))                  # [D]
  total = jnp.sum(sigma)
  p = sigma / jnp.where(total > 0, total, 1.0)             # [D]
  ent = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
  return lax.stop_gradient(jnp.where(total > 0, jnp.exp(ent), 0.0))


def embedding_norm(z: jax.Array, *, axis_name=None) -> jax.Array:
  r"""Root-mean-square row norm of the (unnormalised) embeddings:

      norm = sqrt( 1/M sum_i |z_i|^2 ).

  The spectrum, effective rank, alignment and uniformity all look at u = z/|z| and are
  blind to scale; this is the one diagnostic that sees Bao's (2023) collapse of the L2
  BYOL/SimSiam loss under weight decay, where the network shrinks to zero (|z| -> 0)
  rather than onto a line. With ``axis_name`` the sum of squares is psum'd. Under
  stop_gradient (a measurement). Needs M >= 1.
  """
  _check_embeddings("embedding_norm", z)
  big_m = C.check_batch("embedding_norm", z.shape[0], axis_name, 1)
  zf = lax.stop_gradient(C.as_float(z))                    # [m, D]
  return jnp.sqrt(C.psum(jnp.sum(zf * zf), axis_name) / big_m)


# ----------------------------------------------------------------------------- alignment / uniformity

def alignment(z1: jax.Array, z2: jax.Array, *, alpha: float = 2.0, axis_name=None) -> jax.Array:
  r"""Wang & Isola (ICML 2020) alignment of positive pairs:

      L_align = 1/M sum_i |u_i - v_i|^alpha,      u = z1/|z1|, v = z2/|z2|.

  alpha > 0 (default 2). With ``axis_name`` the per-row sum is psum'd.
  """
  C.check_pair("alignment", z1, z2)
  C.check_positive("alignment", "alpha", alpha)
  big_m = C.check_batch("alignment", z1.shape[0], axis_name, 1)
  u, v = _normalized(z1), _normalized(z2)                  # [m, D]
  d2 = jnp.sum((u - v) ** 2, axis=-1)                      # [m]
  safe = jnp.where(d2 > 0, d2, 1.0)
  per = jnp.where(d2 > 0, safe ** (0.5 * alpha), 0.0)      # [m], finite gradient at d2 = 0
  return C.psum(jnp.sum(per), axis_name) / big_m


def uniformity(z: jax.Array, *, t: float = 2.0, axis_name=None) -> jax.Array:
  r"""Wang & Isola (ICML 2020) uniformity, log of the mean Gaussian potential over pairs:

      L_unif = log( 1/(M(M-1)) sum_{i != j} exp(-t |u_i - u_j|^2) )
             = LSE_{i != j}( -t |u_i - u_j|^2 ) - log(M (M-1)),

  the same as the mean over i < j (the potential is symmetric). Report -L_unif (larger
  is more uniform). On S^{d-1} with t = 2: -L_unif -> 1.575 (d=2), 2.080 (d=3),
  3.752 (d=32), 3.9375 (d=128); a regular simplex of M points gives 4M/(M-1).
  With ``axis_name`` the rows are all-gathered (every pair is needed), the LSE is
  shifted by the global max (pmax) and its sum psum'd; the value equals the unsharded one.
  Needs M >= 2 and t > 0.
  """
  _check_embeddings("uniformity", z)
  C.check_positive("uniformity", "t", t)
  big_m = C.check_batch("uniformity", z.shape[0], axis_name, 2)
  u = _normalized(z)                                       # [m, D]
  every = C.gather(u, axis_name)                           # [M, D]
  d2 = jnp.maximum(jnp.sum(u * u, -1)[:, None] + jnp.sum(every * every, -1)[None, :]
                   - 2.0 * (u @ every.T), 0.0)             # [m, M]
  mask = jnp.arange(big_m)[None, :] == C.global_row_index(u.shape[0], axis_name)[:, None]
  logits = jnp.where(mask, _NEG_INF, -t * d2)              # [m, M]
  shift = lax.stop_gradient(jnp.max(logits))
  if axis_name is not None:
    shift = lax.pmax(shift, axis_name)
  total = C.psum(jnp.sum(jnp.exp(logits - shift)), axis_name)
  return shift + jnp.log(total) - jnp.log(float(big_m) * (big_m - 1))


# ----------------------------------------------------------------------------- tolerance / separation

def tolerance(z: jax.Array, labels: jax.Array) -> jax.Array:
  r"""Wang & Liu (CVPR 2021) tolerance: mean cosine similarity over same-class pairs.

      T = sum_{i != j, y_i = y_j} u_i.u_j / #{(i, j): i != j, y_i = y_j}

  (the mean over pairs, pooled over classes). Returns 0 when no two rows share a label;
  with concrete labels that raises ConfigError instead.
  """
  _check_embeddings("tolerance", z)
  _check_labels("tolerance", z, labels)
  if not isinstance(labels, jax.core.Tracer):
    lab = np.asarray(labels)
    if lab.size and np.all(np.unique(lab, return_counts=True)[1] < 2):
      raise ConfigError("tolerance: no two rows share a label, so there are no same-class pairs; "
                        "use a batch with at least two examples of some class")
  u = _normalized(lax.stop_gradient(z))                    # [B, D]
  b = u.shape[0]
  same = (labels[:, None] == labels[None, :]) & ~jnp.eye(b, dtype=bool)   # [B, B]
  count = jnp.sum(same)
  total = jnp.sum(jnp.where(same, u @ u.T, 0.0))
  return jnp.where(count > 0, total / jnp.maximum(count, 1), 0.0)


def local_separation(z: jax.Array, labels: jax.Array, *, k: int = 10) -> jax.Array:
  r"""Local separation (after Wang & Liu, CVPR 2021): how far the hardest other-class
  neighbours are below the same-class neighbours, in cosine similarity.

  With s_ij = u_i.u_j, P_i = {j != i: y_j = y_i} and N_i = {j: y_j != y_i}:

      pos_i = 1/|P_i| sum_{j in P_i} s_ij                   (mean same-class similarity)
      neg_i = 1/k_i  sum of the k_i largest s_ij, j in N_i,  k_i = min(k, |N_i|)
      sep   = mean over anchors with |P_i| > 0 and |N_i| > 0 of (pos_i - neg_i)

  Larger is better separated; it is negative when the top-k other-class neighbours of
  a typical anchor are closer than its class. Returns 0 when no anchor qualifies.
  k must be an int in [1, B-1].
  """
  _check_embeddings("local_separation", z)
  _check_labels("local_separation", z, labels)
  b = z.shape[0]
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= b - 1:
    raise ConfigError(f"local_separation: k must be an int in [1, batch-1] = [1, {b - 1}], got k={k!r}")
  u = _normalized(lax.stop_gradient(z))                    # [B, D]
  s = u @ u.T                                              # [B, B]
  eye = jnp.eye(b, dtype=bool)
  same = labels[:, None] == labels[None, :]
  pos_mask = same & ~eye
  neg_mask = ~same
  n_pos = jnp.sum(pos_mask, axis=1)                        # [B]
  n_neg = jnp.sum(neg_mask, axis=1)                        # [B]
  pos = jnp.sum(jnp.where(pos_mask, s, 0.0), axis=1) / jnp.maximum(n_pos, 1)
  top, _ = lax.top_k(jnp.where(neg_mask, s, _NEG_INF), int(k))   # [B, k]
  top = jnp.where(jnp.isfinite(top), top, 0.0)
  neg = jnp.sum(top, axis=1) / jnp.maximum(jnp.minimum(n_neg, k), 1)
  valid = (n_pos > 0) & (n_neg > 0)
  n_valid = jnp.sum(valid)
  total = jnp.sum(jnp.where(valid, pos - neg, 0.0))
  return jnp.where(n_valid > 0, total / jnp.maximum(n_valid, 1), 0.0)


# ----------------------------------------------------------------------------- hardness

def hardness_from_similarities(neg_sim: jax.Array, *, temperature) -> dict[str, jax.Array]:
  r"""Wang & Liu's relative penalty over given negative similarities.

  For anchor a with negative similarities s_a1..s_aN (rows of ``neg_sim`` [A, N]):

      r_aj = exp(s_aj/tau) / sum_k exp(s_ak/tau)        (sum_j r_aj = 1)
      H_a  = -sum_j r_aj log r_aj,      entropy = mean_a H_a

  r_aj is the gradient on negative j relative to that on the positive
  (|dl/ds_aj| / |dl/ds_aa|). H rises strictly with tau, from 0 (tau -> 0: all weight
  on the hardest negative) to log N (tau -> inf: uniform).
  Returns {"relative_penalty": [A, N], "entropy": scalar}.
  """
  C.check_positive("hardness", "temperature", temperature)
  s = C.as_float(lax.stop_gradient(neg_sim))
  if s.ndim != 2 or s.shape[1] < 1:
    raise C.ShapeError(f"hardness: negative similarities must be [anchors, negatives>=1], got {s.shape}")
  return _boltzmann(s / temperature, None)


def _boltzmann(logits: jax.Array, mask: jax.Array | None) -> dict[str, jax.Array]:
  """Softmax over the unmasked entries of each row and the mean row entropy."""
  if mask is not None:
    logits = jnp.where(mask, _NEG_INF, logits)
  log_r = jax.nn.log_softmax(logits, axis=-1)              # [A, N]
  r = jnp.exp(log_r)
  plogp = jnp.where(r > 0, r * jnp.where(r > 0, log_r, 0.0), 0.0)
  ent = -jnp.sum(plogp, axis=-1)                           # [A]
  return {"relative_penalty": lax.stop_gradient(r), "entropy": lax.stop_gradient(jnp.mean(ent))}


def hardness(z1: jax.Array, z2: jax.Array, *, temperature) -> dict[str, jax.Array]:
  r"""Hardness-aware relative penalty of the contrastive loss (Wang & Liu, CVPR 2021).

  Anchor u_i (view 1), negatives v_j, j != i (the other examples of view 2, as in the
  cross-view InfoNCE loss), s_ij = u_i.v_j:

      r_ij = exp(s_ij/tau) / sum_{k != i} exp(s_ik/tau)    (j != i; r_ii = 0; rows sum to 1)
      entropy = 1/M sum_i H(r_i),   H(r_i) = -sum_{j != i} r_ij log r_ij

  Returns {"relative_penalty": [M, M] (zero diagonal), "entropy": scalar}; see
  `hardness_from_similarities`. With s ~ U[-1, 1] and N negatives the expected entropy
  is log N + log(tau sinh(1/tau)) - (coth(1/tau) - tau)/tau. Needs M >= 2.
  """
  C.check_pair("hardness", z1, z2)
  C.check_positive("hardness", "temperature", temperature)
  big_m = C.check_batch("hardness", z1.shape[0], None, 2)
  u = _normalized(lax.stop_gradient(z1))                   # [M, D]
  v = _normalized(lax.stop_gradient(z2))                   # [M, D]
  return _boltzmann((u @ v.T) / temperature, jnp.eye(big_m, dtype=bool))


# ----------------------------------------------------------------------------- Wasserstein uniformity

def wasserstein_uniformity(z: jax.Array, *, axis_name=None) -> jax.Array:
  r"""Fang et al. (ICLR 2024, arXiv 2403.00642) Wasserstein uniformity metric.

  The 2-Wasserstein distance between N(mu, Cov), the Gaussian fitted to the normalised
  embeddings u (moments as in `spectrum`), and N(0, I/D), the Gaussian limit of the
  uniform law on S^{D-1}. With I/D commuting with Cov, the Bures term is closed-form:

      W2 = sqrt( |mu|^2 + 1 + tr(Cov) - (2/sqrt(D)) sum_k sqrt(lambda_k(Cov)) )

  (lambda_k by eigh, clipped at 0). Small (-> 0 as M -> inf) for uniform points on the
  sphere; sqrt(2) for a fully collapsed batch (all u equal). Lower is more uniform.
  Under stop_gradient; with ``axis_name`` only moments are psum'd. Needs M >= 2.
  """
  _check_embeddings("wasserstein_uniformity", z)
  big_m = C.check_batch("wasserstein_uniformity", z.shape[0], axis_name, 2)
  u = _normalized(lax.stop_gradient(z))                    # [m, D]
  mu, cov = _moments(u, big_m, axis_name)                  # [D], [D, D]
  dim = u.shape[1]
  lam = jnp.maximum(linalg.eigvalsh(cov), 0.0)             # [D]
  w2 = (jnp.sum(mu * mu) + 1.0 + jnp.sum(lam)
        - 2.0 / np.sqrt(dim) * jnp.sum(jnp.sqrt(lam)))
  return lax.stop_gradient(jnp.sqrt(jnp.maximum(w2, 0.0)))
