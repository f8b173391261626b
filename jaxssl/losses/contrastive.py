"""Contrastive losses: InfoNCE family, DHEL, KCL, Wang & Liu's simple and hard losses.

Notation: z1, z2 are the [batch, dim] embeddings of the two views (not normalised);
u_i = z1_i/|z1_i| and v_i = z2_i/|z2_i| (safe normalisation, finite at 0);
s(a, b) = a.b; tau the temperature; M the *global* batch size; LSE = log-sum-exp.
Every loss returns a scalar, the mean over the global batch.

``axis_name``: with the batch split over a named axis (``jax.shard_map``, ``jax.pmap``
or ``jax.vmap(axis_name=...)``), negatives are all-gathered (``all_gather(tiled=True)``),
the positive/self column of a local row is its global index
``axis_index * m + arange(m)``, and the result equals the unsharded loss on the
concatenated batch, value and gradients; see `jaxssl.losses._collectives` for how
the final reduction is made so that ``jax.grad`` is right in all three contexts.

Validation happens before tracing: temperature <= 0 (checked when it is a concrete
number; traced temperatures for vmapped sweeps pass), shapes, batch size, kernel names.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jaxssl.errors import ConfigError
from jaxssl.losses import _collectives as C
from jaxssl.losses import kernels as K

_NEG_INF = -jnp.inf


def _prepare(fn: str, z1, z2, axis_name, *, min_batch: int = 1, names=("z1", "z2")):
  """Checks shapes, upcasts, normalises. Returns (u, v, M, vma)."""
  C.check_pair(fn, z1, z2, names)
  big_m = C.check_batch(fn, z1.shape[0], axis_name, min_batch)
  vma = axis_name is not None and C.is_varying(z1, axis_name)
  u = C.safe_normalize(C.as_float(z1))
  v = C.safe_normalize(C.as_float(z2))
  return u, v, big_m, vma


def _self_mask(rows: jax.Array, n_cols: int) -> jax.Array:
  """[len(rows), n_cols] boolean, True at (r, rows[r])."""
  return jnp.arange(n_cols)[None, :] == rows[:, None]


# ----------------------------------------------------------------------------- InfoNCE family

def nt_xent(z1, z2, *, temperature, axis_name=None):
  r"""NT-Xent, the SimCLR loss (Chen et al., ICML 2020, arXiv 2002.05709).

  Over the 2M views a in {u_1..u_M, v_1..v_M}, with p(a) the other view of a's example:

      L = 1/(2M) sum_a [ -s(a, p(a))/tau + LSE_{b != a} s(a, b)/tau ]

  The denominator has 2M-1 terms (the positive and 2M-2 negatives).
  (Koromilas et al. 2024, table of losses; PAPERS.md section B.)
  """
  C.check_positive("nt_xent", "temperature", temperature)
  u, v, big_m, vma = _prepare("nt_xent", z1, z2, axis_name, min_batch=1)
  return _nt_xent_unit(u, v, temperature, axis_name, vma, big_m, exclude_positive=False)


def dcl(z1, z2, *, temperature, axis_name=None):
  r"""Decoupled Contrastive Learning loss (Yeh et al., ECCV 2022, arXiv 2110.06848).

  NT-Xent without the positive in the denominator (2M-2 terms):

      L = 1/(2M) sum_a [ -s(a, p(a))/tau + LSE_{b != a, b != p(a)} s(a, b)/tau ]

  Needs a global batch M >= 2.
  """
  C.check_positive("dcl", "temperature", temperature)
  u, v, big_m, vma = _prepare("dcl", z1, z2, axis_name, min_batch=2)
  return _nt_xent_unit(u, v, temperature, axis_name, vma, big_m, exclude_positive=True)


def dclw(z1, z2, *, temperature, sigma=0.5, axis_name=None):
  r"""Weighted Decoupled Contrastive Learning loss, DCLW (Yeh et al., ECCV 2022, arXiv 2110.06848).

  DCL with the positive term of example i weighted by a von Mises-Fisher weight that
  puts less weight on the easy (already aligned) positive pairs:

      w_i = 2 - M exp(s(u_i, v_i)/sigma) / sum_j exp(s(u_j, v_j)/sigma)      (mean w = 1)
      L   = 1/(2M) sum_a [ -w_{i(a)} s(a, p(a))/tau + LSE_{b != a, b != p(a)} s(a, b)/tau ]

  as the official code (raminnakhli/Decoupled-Contrastive-Learning, ``loss.py``:
  ``DCLW(sigma=0.5, temperature=0.1)``, both directions averaged). As there, the weight
  is not under stop-gradient. sigma -> inf gives w = 1, i.e. `dcl`. Needs M >= 2.
  """
  C.check_positive("dclw", "temperature", temperature)
  C.check_positive("dclw", "sigma", sigma)
  u, v, big_m, vma = _prepare("dclw", z1, z2, axis_name, min_batch=2)
  s = jnp.sum(u * v, axis=-1)                                          # [m] positive-pair cosines
  s_all = C.gather(s, axis_name)                                       # [M]
  w = 2.0 - big_m * jnp.exp(s / sigma - jax.nn.logsumexp(s_all / sigma))   # [m]
  m = u.shape[0]
  keys = jnp.concatenate([C.gather(u, axis_name), C.gather(v, axis_name)], axis=0)  # [2M, D]
  anchors = jnp.concatenate([u, v], axis=0)                                           # [2m, D]
  logits = anchors @ keys.T / temperature                                             # [2m, 2M]
  g = C.global_row_index(m, axis_name)
  mask = _self_mask(jnp.concatenate([g, big_m + g]), 2 * big_m) | _self_mask(jnp.concatenate([big_m + g, g]),
                                                                             2 * big_m)
  logits = jnp.where(mask, _NEG_INF, logits)
  pos = w * s / temperature
  per_anchor = jax.nn.logsumexp(logits, axis=-1) - jnp.concatenate([pos, pos])
  return C.global_sum(jnp.sum(per_anchor) / (2 * big_m), axis_name, vma=vma)


def _nt_xent_unit(u, v, temperature, axis_name, vma, big_m, *, exclude_positive):
  m = u.shape[0]
  keys = jnp.concatenate([C.gather(u, axis_name), C.gather(v, axis_name)], axis=0)  # [2M, D]
  anchors = jnp.concatenate([u, v], axis=0)                                           # [2m, D]
  logits = anchors @ keys.T / temperature                                             # [2m, 2M]
  g = C.global_row_index(m, axis_name)
  self_col = jnp.concatenate([g, big_m + g])
  pos_col = jnp.concatenate([big_m + g, g])
  mask = _self_mask(self_col, 2 * big_m)
  if exclude_positive:
    mask = mask | _self_mask(pos_col, 2 * big_m)
  logits = jnp.where(mask, _NEG_INF, logits)
  pos = jnp.sum(u * v, axis=-1) / temperature
  per_anchor = jax.nn.logsumexp(logits, axis=-1) - jnp.concatenate([pos, pos])
  return C.global_sum(jnp.sum(per_anchor) / (2 * big_m), axis_name, vma=vma)


def info_nce(z1, z2, *, temperature, axis_name=None):
  r"""Symmetric cross-view InfoNCE (CLIP / MoCo style; van den Oord et al. 2018, arXiv 1807.03748).

      L = 1/2 [ 1/M sum_i ( -s(u_i, v_i)/tau + LSE_j s(u_i, v_j)/tau )
              + 1/M sum_i ( -s(v_i, u_i)/tau + LSE_j s(v_i, u_j)/tau ) ]

  M terms in each denominator (the positive and the M-1 other examples of the other view).
  This is also the loss of DirectCLR's official code (infoNCE(z1,z2)/2 + infoNCE(z2,z1)/2).
  """
  C.check_positive("info_nce", "temperature", temperature)
  u, v, big_m, vma = _prepare("info_nce", z1, z2, axis_name, min_batch=1)
  return _info_nce_unit(u, v, temperature, axis_name, vma, big_m)


def _info_nce_unit(u, v, temperature, axis_name, vma, big_m):
  pos = jnp.sum(u * v, axis=-1) / temperature
  l_uv = jax.nn.logsumexp(u @ C.gather(v, axis_name).T / temperature, axis=-1) - pos
  l_vu = jax.nn.logsumexp(v @ C.gather(u, axis_name).T / temperature, axis=-1) - pos
  return C.global_sum((jnp.sum(l_uv) + jnp.sum(l_vu)) / (2 * big_m), axis_name, vma=vma)


def directclr(r1, r2, *, dim, temperature=0.1, axis_name=None):
  r"""DirectCLR (Jing, Vincent, LeCun, Tian, ICLR 2022, arXiv 2110.09348).

  Symmetric InfoNCE (`info_nce`) on the first `dim` coordinates of the backbone
  representations, with no projector: z = r[:, :dim] (official code,
  facebookresearch/directclr ``directclr/main.py``; tau = 0.1, dim = 360 for ResNet-50).
  """
  C.check_pair("directclr", r1, r2, ("r1", "r2"))
  width = r1.shape[1]
  if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= width:
    raise ConfigError(f"directclr: dim must be an int in [1, {width}] (the representation width), "
                      f"got dim={dim!r}")
  C.check_positive("directclr", "temperature", temperature)
  u, v, big_m, vma = _prepare("directclr", r1[:, :dim], r2[:, :dim], axis_name, min_batch=1,
                              names=("r1", "r2"))
  return _info_nce_unit(u, v, temperature, axis_name, vma, big_m)


# ----------------------------------------------------------------------------- DHEL

def dhel(z1, z2, *, temperature, axis_name=None, include_augs=True):
  r"""Decoupled Hyperspherical Energy Loss (Koromilas et al., ICML 2024, arXiv 2405.18045).

  Paper form (``include_augs=False``): the uniformity term uses same-view negatives only,

      L = 1/M sum_i [ -s(u_i, v_i)/tau + LSE_{j != i} s(u_i, u_j)/tau ]      (M-1 terms)

  so that dL/dv_i = -u_i/(M tau) exactly (v enters only through the alignment term).
  Official-code form (``include_augs=True``, default of pakoromilas/DHEL-KCL ``losses.py``):
  the energy of the second view is added,

      L = 1/M sum_i [ -s(u_i, v_i)/tau + LSE_{j != i} s(u_i, u_j)/tau + LSE_{j != i} s(v_i, v_j)/tau ].

  Needs a global batch M >= 2.
  """
  C.check_positive("dhel", "temperature", temperature)
  if not isinstance(include_augs, (bool, int)):
    raise ConfigError(f"dhel: include_augs must be a bool, got {include_augs!r}")
  u, v, big_m, vma = _prepare("dhel", z1, z2, axis_name, min_batch=2)
  return _dhel_unit(u, v, temperature, axis_name, vma, big_m, bool(include_augs))


def _dhel_unit(u, v, temperature, axis_name, vma, big_m, include_augs):
  """DHEL on already-normalised u, v (no normalisation: used for the dL/dv identity)."""
  m = u.shape[0]
  mask = _self_mask(C.global_row_index(m, axis_name), big_m)

  def energy(a):
    logits = a @ C.gather(a, axis_name).T / temperature
    return jax.nn.logsumexp(jnp.where(mask, _NEG_INF, logits), axis=-1)

  per = -jnp.sum(u * v, axis=-1) / temperature + energy(u)
  if include_augs:
    per = per + energy(v)
  return C.global_sum(jnp.sum(per) / big_m, axis_name, vma=vma)


# ----------------------------------------------------------------------------- KCL

def kcl(z1, z2, *, kernel="gaussian", t=2.0, gamma=16.0, axis_name=None):
  r"""Kernel Contrastive Loss (Koromilas et al., ICML 2024, arXiv 2405.18045; after Li et al. 2021).

      L = -2 mean_i K_a(u_i, v_i) + gamma [ mean_{i<j} K_e(u_i, u_j) + mean_{i<j} K_e(v_i, v_j) ]

  with K_e / K_a the energy / alignment kernels of `jaxssl.losses.kernels` ("gaussian"
  K = exp(-t |x-y|^2) by default; "log", "imq", "riesz", "gaussian_riesz", "linear"),
  as in the official code (pakoromilas/DHEL-KCL). The mean over pairs i<j is over the
  global batch: sum_{i != j} K / (M (M-1)). The expected loss does not depend on M.
  Needs a global batch M >= 2.
  """
  C.check_choice("kcl", "kernel", kernel, K.KERNEL_NAMES)
  kern = K.KERNELS[kernel]
  tv = C.concrete_scalar(t)
  if tv is not None:
    if kern.t_rule == "positive" and not tv > 0:
      raise ConfigError(f"kcl: t must be > 0 for kernel {kernel!r}, got t={t!r}")
    if kern.t_rule == "nonzero" and tv == 0:
      raise ConfigError(f"kcl: t (the Riesz exponent s) must be non-zero for kernel {kernel!r}, got t={t!r}")
  u, v, big_m, vma = _prepare("kcl", z1, z2, axis_name, min_batch=2)
  m = u.shape[0]
  mask = _self_mask(C.global_row_index(m, axis_name), big_m)

  def energy(a):
    every = C.gather(a, axis_name)
    # |x|^2 + |y|^2 - 2 x.y: the norms are 1, or 0 for a zero input row.
    d2 = jnp.maximum(jnp.sum(a * a, axis=-1)[:, None] + jnp.sum(every * every, axis=-1)[None, :]
                     - 2.0 * (a @ every.T), 0.0)
    return jnp.sum(jnp.where(mask, 0.0, kern.energy(d2, t)))

  align = jnp.sum(kern.align(jnp.sum((u - v) ** 2, axis=-1), t))
  local = -2.0 * align / big_m + gamma * (energy(u) + energy(v)) / (big_m * (big_m - 1))
  return C.global_sum(local, axis_name, vma=vma)


# ----------------------------------------------------------------------------- Wang & Liu

def simple_contrastive(z1, z2, *, axis_name=None):
  r"""Wang & Liu's simple contrastive loss (CVPR 2021, arXiv 2012.09740), lambda = 1/(N-1).

      L = 1/M sum_i [ -s(u_i, v_i) + 1/(M-1) sum_{j != i} s(u_i, v_j) ]

  i.e. minus the mean positive similarity plus the mean cross-view negative similarity
  (N = M samples, N - 1 negatives per anchor). It is symmetric in the two views.
  Computed in O(M d) as  -(1 + 1/(M-1)) mean_i s_ii + (sum_i u_i).(sum_j v_j) / (M (M-1)).
  Needs a global batch M >= 2.
  """
  u, v, big_m, vma = _prepare("simple_contrastive", z1, z2, axis_name, min_batch=2)
  pos = jnp.sum(u * v)
  v_total = C.psum(jnp.sum(v, axis=0), axis_name)
  local = (-(1.0 + 1.0 / (big_m - 1)) * pos
           + jnp.dot(jnp.sum(u, axis=0), v_total) / (big_m - 1)) / big_m
  return C.global_sum(local, axis_name, vma=vma)


# Tolerance of the ceiling in the number of kept negatives (float32 alpha * (M-1)).
_HARD_CEIL_TOL = 1e-3


def hard_contrastive(z1, z2, *, temperature, alpha, axis_name=None):
  r"""Wang & Liu's hard contrastive loss (CVPR 2021, arXiv 2012.09740).

  Definition used here. For anchor u_i, its negatives are the other examples of the
  other view, s_ik = s(u_i, v_k) for k != i (M-1 of them, over the *global* batch:
  under axis_name each anchor ranks all gathered negatives). Let
  K = clip(ceil(alpha (M-1) - 1e-3), 1, M-1) and q_i the K-th largest s_ik: the
  per-anchor empirical quantile at level 1 - alpha, as an order statistic (no
  interpolation; the 1e-3 absorbs float32 rounding of alpha (M-1)); stop-gradient.
  Keep the negatives with s_ik >= q_i (ties at q_i are all kept) and apply the
  ordinary loss to them:

      l_i = -s_ii/tau + log( e^{s_ii/tau} + sum_{k != i, s_ik >= q_i} e^{s_ik/tau} )

  and symmetrically for anchors v_i against u_k; L = 1/2 (mean_i l_i^{u->v} + mean_i l_i^{v->u}).
  alpha = 1 keeps every negative and gives `info_nce`. alpha must be in (0, 1]; it may
  be traced (the selection sorts each row, no static top-k). Needs a global batch M >= 2.
  """
  C.check_positive("hard_contrastive", "temperature", temperature)
  a = C.concrete_scalar(alpha)
  if a is not None and not 0.0 < a <= 1.0:
    raise ConfigError(f"hard_contrastive: alpha must be in (0, 1], got alpha={alpha!r}")
  u, v, big_m, vma = _prepare("hard_contrastive", z1, z2, axis_name, min_batch=2)
  m = u.shape[0]
  self_mask = _self_mask(C.global_row_index(m, axis_name), big_m)
  k = jnp.clip(jnp.ceil(alpha * (big_m - 1) - _HARD_CEIL_TOL), 1, big_m - 1).astype(jnp.int32)

  def one_direction(a_, b_):
    s = a_ @ C.gather(b_, axis_name).T                                   # [m, M]
    neg = lax.stop_gradient(jnp.where(self_mask, _NEG_INF, s))
    neg_sorted = -jnp.sort(-neg, axis=-1)                                # descending; -inf last
    q = jnp.take_along_axis(neg_sorted, jnp.broadcast_to(k - 1, (m, 1)), axis=-1)
    keep = self_mask | (s >= q)
    logits = jnp.where(keep, s / temperature, _NEG_INF)
    return jax.nn.logsumexp(logits, axis=-1) - jnp.sum(a_ * b_, axis=-1) / temperature

  local = (jnp.sum(one_direction(u, v)) + jnp.sum(one_direction(v, u))) / (2 * big_m)
  return C.global_sum(local, axis_name, vma=vma)


__all__ = ["nt_xent", "info_nce", "dcl", "dhel", "kcl", "simple_contrastive",
           "hard_contrastive", "directclr"]
