"""Non-contrastive losses: BYOL/SimSiam prediction loss, IsoLoss, VICReg, Barlow Twins.

Notation as in `jaxssl.losses.contrastive`: embeddings are [batch, dim] and not
normalised; M is the global batch size; every loss returns the mean over the global
batch (VICReg and Barlow Twins: their statistics are over the global batch).

``axis_name`` (optional on every loss here): with the batch split over a named axis
(``shard_map``/``pmap``/``vmap``), moments are psum'd and the value and gradients equal
those of the unsharded call; see `jaxssl.losses._collectives`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jaxssl.losses import _collectives as C

BYOL_KINDS = ("cosine", "l2")
# VICReg: std = sqrt(var + 1e-4) (official code); Barlow Twins: BatchNorm eps 1e-5 (PyTorch default).
VICREG_EPS = 1e-4
BARLOW_EPS = 1e-5


def _vma(x, axis_name) -> bool:
  return axis_name is not None and C.is_varying(x, axis_name)


# ----------------------------------------------------------------------------- BYOL

def byol(p, z_target, *, kind="cosine", axis_name=None):
  r"""BYOL / SimSiam prediction loss, one direction (Grill et al., NeurIPS 2020, arXiv
  2006.07733; Chen & He, CVPR 2021; Tian, Chen, Ganguli, ICML 2021, arXiv 2102.06810).

      cosine: L = 1/M sum_i ( 2 - 2 cos(p_i, sg t_i) )
      l2:     L = 1/M sum_i || p_i - sg t_i ||^2        (unnormalised, as in Tian et al. and
                                                         fmi-basel/implicit-var-reg byol.py)

  t = z_target is put under stop_gradient here (the target branch never gets gradients).
  Methods symmetrise: l(p1, z'2) + l(p2, z'1). Zero vectors are safe (cos = 0).
  """
  C.check_choice("byol", "kind", kind, BYOL_KINDS)
  C.check_pair("byol", p, z_target, ("p", "z_target"))
  big_m = C.check_batch("byol", p.shape[0], axis_name, 1)
  vma = _vma(p, axis_name)
  p = C.as_float(p)
  t = lax.stop_gradient(C.as_float(z_target))
  if kind == "cosine":
    per = 2.0 - 2.0 * jnp.sum(C.safe_normalize(p) * C.safe_normalize(t), axis=-1)
  else:
    per = jnp.sum((p - t) ** 2, axis=-1)
  return C.global_sum(jnp.sum(per) / big_m, axis_name, vma=vma)


# ----------------------------------------------------------------------------- IsoLoss

def psd_sqrt(w: jax.Array) -> jax.Array:
  """W^{1/2} of the symmetrised W: U diag(sqrt(max(lambda, 0))) U^T (eigh; no gradient)."""
  w = lax.stop_gradient(C.as_float(w))
  lam, vecs = jnp.linalg.eigh(0.5 * (w + w.T))
  return (vecs * jnp.sqrt(jnp.maximum(lam, 0.0))[None, :]) @ vecs.T


def isoloss(z, z_target, w_pred, *, kind="cosine", w_sqrt=None, axis_name=None):
  r"""IsoLoss (Halvagal, Laborieux, Zenke, NeurIPS 2023, arXiv 2212.04858; official code
  fmi-basel/implicit-var-reg ``solo/losses/isoloss.py``).

  With the closed-form linear predictor W_P (symmetric PSD, [dim, dim], p = z @ W_P),
  p_half = z @ W_P^{1/2} and the target t = sg(z_target):

      cosine: sim_i = <z_i, t_i> / sg(|p_i| |t_i|) - 1/2 sg(<p_i, t_i> / (|p_i|^3 |t_i|)) |p_half_i|^2
              L = -2 mean_i sim_i                     (no constant offset, as in the official code)
      l2:     L = mean_i || z_i - sg(t_i + z_i - p_i) ||^2

  It is built so that grad_z L_iso = grad_p L_BYOL(p, t) at p = z W_P (`byol`, same kind):
  the predictor's eigenvalues no longer multiply the gradient (isotropic learning rates).
  The cosine *value* is a surrogate (log `byol` alongside); the l2 value equals
  ||p - t||^2, the BYOL l2 value.

  w_pred is a closed-form predictor, never a path for gradients: it is under
  stop_gradient. W_P^{1/2} is computed by `psd_sqrt` (eigh of (W+W^T)/2, negative
  eigenvalues clipped), unless `w_sqrt` is given (e.g. by the predictor module, which
  already has the eigendecomposition). The gradient identity needs W_P symmetric PSD
  and w_sqrt @ w_sqrt = W_P. Norms are safe at 0 (sqrt(max(|p|^2, eps^2))).
  """
  C.check_choice("isoloss", "kind", kind, BYOL_KINDS)
  C.check_pair("isoloss", z, z_target, ("z", "z_target"))
  dim = z.shape[1]
  if jnp.ndim(w_pred) != 2 or tuple(jnp.shape(w_pred)) != (dim, dim):
    raise C.ShapeError(f"isoloss: w_pred must be [dim, dim] = ({dim}, {dim}) with p = z @ w_pred, "
                       f"got shape {tuple(jnp.shape(w_pred))}")
  if w_sqrt is not None and tuple(jnp.shape(w_sqrt)) != (dim, dim):
    raise C.ShapeError(f"isoloss: w_sqrt must be ({dim}, {dim}), got shape {tuple(jnp.shape(w_sqrt))}")
  big_m = C.check_batch("isoloss", z.shape[0], axis_name, 1)
  vma = _vma(z, axis_name)
  z = C.as_float(z)
  w = lax.stop_gradient(jnp.asarray(w_pred, z.dtype))
  t = lax.stop_gradient(C.as_float(z_target))
  p = z @ w
  if kind == "l2":
    per = jnp.sum((z - lax.stop_gradient(t + z - p)) ** 2, axis=-1)
  else:
    s = psd_sqrt(w) if w_sqrt is None else lax.stop_gradient(jnp.asarray(w_sqrt, z.dtype))
    p_half = z @ s
    # <z,t>/(|p||t|) = <z, t_hat>/|p| and <p,t>/(|p|^3|t|) = cos(p,t)/|p|^2: the same
    # values, arranged so that nothing under/overflows when p or t is 0.
    p_n = lax.stop_gradient(C.safe_norm(p))
    t_hat = C.safe_normalize(t)
    coef = lax.stop_gradient(jnp.sum(p * t_hat, axis=-1) / p_n ** 3)
    sim = jnp.sum(z * t_hat, axis=-1) / p_n - 0.5 * coef * jnp.sum(p_half ** 2, axis=-1)
    per = -2.0 * sim
  return C.global_sum(jnp.sum(per) / big_m, axis_name, vma=vma)


# ----------------------------------------------------------------------------- VICReg

def _centred_moments(z, axis_name, big_m):
  """Global mean mu [D] and the centred local rows z - mu."""
  mu = C.psum(jnp.sum(z, axis=0), axis_name) / big_m
  return mu, z - mu


def _off_diagonal_sq_sum(c):
  return jnp.sum(jnp.where(jnp.eye(c.shape[0], dtype=bool), 0.0, c ** 2))


def vicreg(z1, z2, *, sim=25.0, var=25.0, cov=1.0, axis_name=None):
  r"""VICReg (Bardes, Ponce, LeCun, ICLR 2022, arXiv 2105.04906; official code
  facebookresearch/vicreg ``main_vicreg.py``).

      L = sim * 1/(M D) sum_i ||z1_i - z2_i||^2
        + var * 1/2 [ mean_k relu(1 - sqrt(Var_k(z1) + 1e-4)) + mean_k relu(1 - sqrt(Var_k(z2) + 1e-4)) ]
        + cov * [ sum_{k != l} Cov(z1)_{kl}^2 / D + sum_{k != l} Cov(z2)_{kl}^2 / D ]

  Var and Cov are the unbiased (1/(M-1)) batch statistics over the global batch, from
  psum'd moments under axis_name (mean first, then the centred second moment). At a
  collapsed batch Var = 0 and sqrt(0 + 1e-4) keeps the gradient finite. Needs M >= 2.
  """
  C.check_pair("vicreg", z1, z2)
  big_m = C.check_batch("vicreg", z1.shape[0], axis_name, 2)
  vma = _vma(z1, axis_name)
  z1 = C.as_float(z1)
  z2 = C.as_float(z2)
  d = z1.shape[1]
  invariance = jnp.sum((z1 - z2) ** 2) / (big_m * d)

  def var_cov(z):
    _, zc = _centred_moments(z, axis_name, big_m)
    c = C.psum(zc.T @ zc, axis_name) / (big_m - 1)
    std = jnp.sqrt(jnp.diagonal(c) + VICREG_EPS)
    return jnp.mean(jax.nn.relu(1.0 - std)), _off_diagonal_sq_sum(c) / d

  v1, c1 = var_cov(z1)
  v2, c2 = var_cov(z2)
  global_ = var * 0.5 * (v1 + v2) + cov * (c1 + c2)
  return C.global_sum(sim * invariance, axis_name, vma=vma, global_=global_)


# ----------------------------------------------------------------------------- Barlow Twins

def barlow_twins(z1, z2, *, lambd=5e-3, axis_name=None):
  r"""Barlow Twins (Zbontar et al., ICML 2021, arXiv 2103.03230; official code
  facebookresearch/barlowtwins ``main.py``).

      zn = (z - mean) / sqrt(Var_biased + 1e-5)     (BatchNorm1d(affine=False), global batch)
      c  = zn1^T zn2 / M                            ([D, D] cross-correlation)
      L  = sum_k (1 - c_kk)^2 + lambd * sum_{k != l} c_kl^2

  All statistics are over the global batch (psum'd under axis_name). Collapsed
  batches give zn = 0, c = 0 and L = D, with finite gradients.
  """
  C.check_pair("barlow_twins", z1, z2)
  big_m = C.check_batch("barlow_twins", z1.shape[0], axis_name, 1)
  vma = _vma(z1, axis_name)

  def bn(z):
    _, zc = _centred_moments(C.as_float(z), axis_name, big_m)
    var = C.psum(jnp.sum(zc ** 2, axis=0), axis_name) / big_m
    return zc * lax.rsqrt(var + BARLOW_EPS)

  c = C.psum(bn(z1).T @ bn(z2), axis_name) / big_m
  on = jnp.sum((1.0 - jnp.diagonal(c)) ** 2)
  global_ = on + lambd * _off_diagonal_sq_sum(c)
  return C.global_sum(None, axis_name, vma=vma, global_=global_)


__all__ = ["byol", "isoloss", "vicreg", "barlow_twins", "psd_sqrt"]
