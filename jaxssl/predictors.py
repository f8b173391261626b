"""Closed-form linear predictors from an EMA of the embedding correlation matrix.

DirectPred (Tian, Chen & Ganguli, ICML 2021, arXiv 2102.06810; official code
facebookresearch/luckmatters ``ssl/real-dataset/byol_trainer.py``), DirectCopy (Wang
et al. 2021) and the closed-form predictor of IsoLoss (Halvagal, Laborieux & Zenke,
NeurIPS 2023, arXiv 2212.04858; official code fmi-basel/implicit-var-reg
``solo/methods/directpred.py``).

    F       <- EMA of the uncentred correlation E[f f^T] of the online projector outputs
    F_sym   = (F + F^T)/2 = U diag(s) U^T              (eigh; s clipped at 0)
    n_j     = s_j / max_k s_k                          (0 when F = 0)
    W_p     = U diag(p) U^T,   p_j = max(g(n_j), min_eig)

    directpred:  g(n) = sqrt(n) + eps                  (Tian et al.: p_j = sqrt(s_j)/sqrt(max s) + eps)
    directcopy:  g(n) = n + eps                        (W_p = F/max s + eps I for PSD F)
    halvagal:    g(n) = (n + eps)^alpha                (alpha = 1/2 ~ DirectPred, 1 ~ DirectCopy)

W_p is symmetric PSD with the eigenvectors of F; p = z @ W_p. Everything here is a
function of stop-gradient statistics: no gradient ever flows through the eigh.
A zero correlation matrix (the initial state) gives W_p = g(0) I (eps I, or eps^alpha I),
never NaN.
"""
from __future__ import annotations

from typing import Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxssl.errors import ConfigError
from jaxssl.losses import _collectives as C

PREDICTOR_KINDS = ("directpred", "directcopy", "halvagal")
CORRELATION_MODES = ("tian", "halvagal")


@flax.struct.dataclass
class PredictorState:
  """EMA of the embedding correlation. corr: [D, D] float32; count: int32 scalar, the
  number of `update_correlation` calls so far (0: no data seen yet)."""
  corr: jax.Array
  count: jax.Array


def init_predictor_state(dim: int) -> PredictorState:
  """The empty state: corr = 0 [dim, dim] float32, count = 0."""
  if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
    raise ConfigError(f"init_predictor_state: dim must be a positive int, got dim={dim!r}")
  return PredictorState(corr=jnp.zeros((int(dim), int(dim)), jnp.float32),
                        count=jnp.zeros([], jnp.int32))


# ----------------------------------------------------------------------------- EMA of the correlation

def _check_decay(decay) -> None:
  d = C.concrete_scalar(decay)
  if d is not None and not 0.0 <= d <= 1.0:
    raise ConfigError(f"update_correlation: decay must be in [0, 1] (the weight kept on the old "
                      f"estimate), got decay={decay!r}")


def _check_views(state: PredictorState, z_views) -> list[jax.Array]:
  if isinstance(z_views, (jax.Array, np.ndarray)) and np.ndim(z_views) == 2:
    z_views = [z_views]
  views = list(z_views)
  dim = state.corr.shape[0]
  if not views:
    raise ConfigError("update_correlation: z_views is empty; pass the [batch, dim] embeddings of each view")
  for i, z in enumerate(views):
    if np.ndim(z) != 2 or np.shape(z)[1] != dim:
      raise C.ShapeError(f"update_correlation: view {i} must be [batch, {dim}] (dim of the state), "
                         f"got shape {tuple(np.shape(z))}")
  return views


def batch_correlation(z: jax.Array, *, axis_name=None) -> jax.Array:
  r"""Uncentred correlation of one batch over the global batch:

      F_B = 1/M sum_i z_i z_i^T          # [D, D]; with axis_name: psum_d(z_d^T z_d) / M
  """
  big_m = C.check_batch("update_correlation", z.shape[0], axis_name, 1)
  z = lax.stop_gradient(C.as_float(z))                     # [m, D]
  return C.psum(z.T @ z, axis_name) / big_m


def update_correlation(state: PredictorState, z_views: Sequence[jax.Array], *, decay: float,
                       mode: str = "tian", axis_name=None) -> PredictorState:
  r"""One EMA step of the uncentred embedding correlation (pure; stop-gradient inputs).

  mode="tian" (DirectPred, Tian et al. 2021; rho = ``decay``, e.g. 0.3): one update per
  call with the batch correlation over *both* views (concatenated, V views of M rows):

      F_B = 1/(V M) sum_v sum_i z_{v,i} z_{v,i}^T
      F  <- F_B                          if count == 0  (the first step takes the batch)
      F  <- rho F + (1 - rho) F_B        otherwise

  mode="halvagal" (IsoLoss official code; tau_C = ``decay``, e.g. 0.998 with an EMA
  target, 0.5 without): C starts at 0 and is updated once per view, in order,

      C <- tau_C C + (1 - tau_C) z_v^T z_v / M,     v = 1..V

  ``decay`` is the weight kept on the old estimate in both modes (not 1 - 1/tau).
  With ``axis_name`` the batch correlation is psum'd over the global batch.
  count is incremented by one per call.
  """
  C.check_choice("update_correlation", "mode", mode, CORRELATION_MODES)
  _check_decay(decay)
  views = _check_views(state, z_views)
  old = state.corr.astype(jnp.float32)                     # [D, D]
  decay = jnp.asarray(decay, jnp.float32)
  if mode == "tian":
    f_b = sum(batch_correlation(z, axis_name=axis_name) * z.shape[0] for z in views)
    f_b = f_b / sum(z.shape[0] for z in views)             # [D, D]
    ema = decay * old + (1.0 - decay) * f_b
    new = jnp.where(state.count == 0, f_b, ema)
  else:
    new = old
    for z in views:
      new = decay * new + (1.0 - decay) * batch_correlation(z, axis_name=axis_name)
  return PredictorState(corr=lax.stop_gradient(new.astype(jnp.float32)),
                        count=(state.count + 1).astype(jnp.int32))


# ----------------------------------------------------------------------------- closed-form predictors

def _check_predictor_args(fn: str, corr, kind, eps, alpha, min_eig) -> None:
  C.check_choice(fn, "kind", kind, PREDICTOR_KINDS)
  if np.ndim(corr) != 2 or np.shape(corr)[0] != np.shape(corr)[1]:
    raise C.ShapeError(f"{fn}: corr must be a square [dim, dim] matrix, got shape {tuple(np.shape(corr))}")
  for name, value in (("eps", eps), ("min_eig", min_eig)):
    v = C.concrete_scalar(value)
    if v is not None and not v >= 0:
      raise ConfigError(f"{fn}: {name} must be >= 0, got {name}={value!r}")
  C.check_positive(fn, "alpha", alpha)


def predictor_eigenvalues(s: jax.Array, *, kind: str, eps: float = 0.01, alpha: float = 1.0,
                          min_eig: float = 0.0) -> jax.Array:
  r"""Predictor eigenvalues p [D] from the correlation eigenvalues s [D] (see module doc):

      n = max(s, 0) / max(s)   (n = 0 when max(s) <= 0)
      p = max(g_kind(n), min_eig)
  """
  s = jnp.maximum(C.as_float(s), 0.0)                      # [D]
  top = jnp.max(s)
  n = jnp.where(top > 0, s / jnp.where(top > 0, top, 1.0), 0.0)
  if kind == "directpred":
    p = jnp.sqrt(n) + eps
  elif kind == "directcopy":
    p = n + eps
  elif kind == "halvagal":
    p = (n + eps) ** alpha
  else:
    raise ConfigError(f"predictor: unknown kind {kind!r}; valid: {', '.join(map(repr, PREDICTOR_KINDS))}")
  return jnp.maximum(p, min_eig)


def predictor_and_sqrt(corr: jax.Array, *, kind: str, eps: float = 0.01, alpha: float = 1.0,
                       min_eig: float = 0.0) -> tuple[jax.Array, jax.Array]:
  r"""(W_p, W_p^{1/2}) from one eigh of (F + F^T)/2 = U diag(s) U^T:

      W_p       = U diag(p) U^T,      W_p^{1/2} = U diag(sqrt(p)) U^T,

  p = `predictor_eigenvalues`. Both [D, D] float32, symmetric PSD, under stop_gradient.
  """
  _check_predictor_args("predictor_from_correlation", corr, kind, eps, alpha, min_eig)
  f = lax.stop_gradient(jnp.asarray(corr, jnp.float32))
  s, u = jnp.linalg.eigh(0.5 * (f + f.T))                  # [D], [D, D]
  p = predictor_eigenvalues(s, kind=kind, eps=eps, alpha=alpha, min_eig=min_eig)
  w = (u * p[None, :]) @ u.T
  w_sqrt = (u * jnp.sqrt(p)[None, :]) @ u.T
  return lax.stop_gradient(0.5 * (w + w.T)), lax.stop_gradient(0.5 * (w_sqrt + w_sqrt.T))


def predictor_from_correlation(corr: jax.Array, *, kind: str, eps: float = 0.01, alpha: float = 1.0,
                               min_eig: float = 0.0) -> jax.Array:
  r"""Closed-form linear predictor W_p [D, D] (p = z @ W_p) from the correlation F.

      (F + F^T)/2 = U diag(s) U^T,  n = max(s, 0)/max(s),  W_p = U diag(p) U^T,
      directpred: p = sqrt(n) + eps       (Tian et al. 2021, eps = 0.01)
      directcopy: p = n + eps             (= F/max(s) + eps I for PSD F)
      halvagal:   p = (n + eps)^alpha     (Halvagal et al. 2023)
      then p <- max(p, min_eig)           (Tian's code keeps p >= 1e-4; default 0: off)

  A zero F gives W_p = g(0) I (eps I; eps^alpha I), never NaN. Raises ConfigError for an
  unknown kind, eps < 0, alpha <= 0, min_eig < 0 or a non-square corr.
  """
  return predictor_and_sqrt(corr, kind=kind, eps=eps, alpha=alpha, min_eig=min_eig)[0]


def predictor_sqrt(corr: jax.Array, *, eps: float = 0.01, alpha: float = 1.0, kind: str = "halvagal",
                   min_eig: float = 0.0) -> jax.Array:
  r"""W_p^{1/2} = U diag(sqrt(p)) U^T, the matrix square root of `predictor_from_correlation`
  with the same arguments (default kind="halvagal": sqrt(p) = (n + eps)^{alpha/2}).

  IsoLoss (Halvagal et al., official ``Wpsqrt``) uses p_half = z @ W_p^{1/2}; pass it as
  ``losses.isoloss(..., w_sqrt=...)`` to skip a second eigh. W_sqrt @ W_sqrt = W_p.
  """
  return predictor_and_sqrt(corr, kind=kind, eps=eps, alpha=alpha, min_eig=min_eig)[1]
