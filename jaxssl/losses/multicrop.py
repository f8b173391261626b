"""Multi-crop losses: 2 global views plus N small crops (SwAV, Caron et al. 2020, arXiv
2006.09882; DINO, Caron et al. 2021, arXiv 2104.14294).

Notation as in `jaxssl.losses.contrastive`. Views 1 and 2 are the global (large) crops,
views 3 .. 2+N the small crops of the same M images; z_small is stacked [N, batch, dim].
Following SwAV's and DINO's rule "compare every view with every global view except
itself", each loss is the mean of a *directed* pair term l(a -> g) over the ordered pairs

    P = {(a, g) : g in {1, 2}, a in {1, .., 2+N}, a != g},      |P| = 2 (N + 1)

    L = 1/|P| sum_{(a, g) in P} l(a -> g)

(DINO's ``DINOLoss.forward``: ``for iq in teacher_views: for v in student_views: if v == iq:
continue``, divided by the number of terms). View a is the anchor (the student's side),
the global view g the positive / target. With N = 0, P = {(2, 1), (1, 2)} and every
function here equals its two-view loss (`nt_xent`, `info_nce`, the mean of both `byol`
directions, `vicreg`).

The small crops only ever appear as anchors: no loss compares a global view with a small
crop's embedding, so small crops need no target network (they go through the online
network only). Every function takes ``axis_name`` with the usual meaning (the batch
axis of z_small is axis 1); the value and gradients equal the unsharded call's.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxssl.losses import _collectives as C
from jaxssl.losses import noncontrastive as NC

_NEG_INF = -jnp.inf


def num_pairs(num_small: int) -> int:
  """|P| = 2 (N + 1): the ordered (anchor, global) pairs of 2 global views and N small crops."""
  return 2 * (int(num_small) + 1)


def pairs(num_small: int) -> tuple[tuple[int, int], ...]:
  """P as 0-based (anchor, global) view indices: views 0, 1 global, 2 .. N+1 small."""
  return tuple((a, g) for g in (0, 1) for a in range(2 + int(num_small)) if a != g)


def _check_small(fn: str, z1: jax.Array, z_small: jax.Array, name: str = "z_small") -> None:
  if jnp.ndim(z_small) != 3 or tuple(jnp.shape(z_small))[1:] != tuple(jnp.shape(z1)):
    raise C.ShapeError(f"{fn}: {name} must be [num_small, batch, dim] with [batch, dim] = "
                       f"{tuple(jnp.shape(z1))} of the global views, got shape {tuple(jnp.shape(z_small))}")


def _views(fn: str, z1, z2, z_small, axis_name, min_batch: int, names=("z1", "z2")):
  """Checks shapes; returns ([2+N] list of [m, D] float views, M, vma)."""
  C.check_pair(fn, z1, z2, names)
  _check_small(fn, z1, z_small)
  big_m = C.check_batch(fn, z1.shape[0], axis_name, min_batch)
  vma = axis_name is not None and C.is_varying(z1, axis_name)
  views = [C.as_float(z1), C.as_float(z2)] + [C.as_float(z_small[s]) for s in range(z_small.shape[0])]
  return views, big_m, vma


def _directed_softmax(x: jax.Array, y: jax.Array, temperature, axis_name, big_m: int, *,
                      same_view: bool) -> jax.Array:
  """sum_i l_i(a -> g) over the local anchors x_i [m, D] (unit rows), positives y_i [m, D].

  same_view=False (InfoNCE):  l_i = -s(x_i, y_i)/tau + LSE_j s(x_i, y_j)/tau                   (M terms)
  same_view=True  (NT-Xent):  l_i = -s(x_i, y_i)/tau + LSE_{b in {x_j}_{j != i} u {y_j}_j} s(x_i, b)/tau
                                                                                                (2M-1 terms)
  """
  pos = jnp.sum(x * y, axis=-1) / temperature                                  # [m]
  logits = x @ C.gather(y, axis_name).T / temperature                          # [m, M]
  if same_view:
    own = x @ C.gather(x, axis_name).T / temperature                           # [m, M]
    rows = C.global_row_index(x.shape[0], axis_name)
    own = jnp.where(jnp.arange(big_m)[None, :] == rows[:, None], _NEG_INF, own)
    logits = jnp.concatenate([own, logits], axis=-1)                           # [m, 2M]
  return jnp.sum(jax.nn.logsumexp(logits, axis=-1) - pos)


def _softmax_multicrop(fn, z1, z2, z_small, temperature, axis_name, *, same_view):
  C.check_positive(fn, "temperature", temperature)
  views, big_m, vma = _views(fn, z1, z2, z_small, axis_name, 1)
  units = [C.safe_normalize(v) for v in views]
  total = sum(_directed_softmax(units[a], units[g], temperature, axis_name, big_m, same_view=same_view)
              for a, g in pairs(len(views) - 2))
  return C.global_sum(total / (num_pairs(len(views) - 2) * big_m), axis_name, vma=vma)


def nt_xent_multicrop(z1, z2, z_small, *, temperature, axis_name=None):
  r"""NT-Xent (SimCLR) with multi-crop: every view an anchor against each global view but itself.

  For a pair (a, g) in P (module docstring), with x = u^(a), y = u^(g) the normalised rows:

      l_i(a -> g) = -s(x_i, y_i)/tau + LSE_{b in {x_j}_{j != i} u {y_j}_j} s(x_i, b)/tau   (2M-1 terms)
      L = 1/(|P| M) sum_{(a, g) in P} sum_i l_i(a -> g)

  i.e. a small crop of image i is an extra anchor whose positive is image i's global view g;
  its negatives are the other images' crops of its own view and of view g, as in the
  two-view loss. With N = 0 (z_small of shape [0, M, D]) this is `nt_xent` exactly.
  """
  return _softmax_multicrop("nt_xent_multicrop", z1, z2, z_small, temperature, axis_name, same_view=True)


def info_nce_multicrop(z1, z2, z_small, *, temperature, axis_name=None):
  r"""Cross-view InfoNCE with multi-crop (the directed terms of `info_nce`, averaged over P).

      l_i(a -> g) = -s(x_i, y_i)/tau + LSE_j s(x_i, y_j)/tau                  (M terms)
      L = 1/(|P| M) sum_{(a, g) in P} sum_i l_i(a -> g)

  with x = u^(a), y = u^(g). With N = 0 this is `info_nce` exactly.
  """
  return _softmax_multicrop("info_nce_multicrop", z1, z2, z_small, temperature, axis_name, same_view=False)


def byol_multicrop(p1, p2, p_small, t1, t2, *, kind="cosine", axis_name=None):
  r"""BYOL / SimSiam prediction loss with multi-crop: each view's prediction p_a regresses the
  stop-gradient target t_g of every global view g but its own.

      L = 1/|P| sum_{(a, g) in P} byol(p_a, sg t_g)

  p1, p2 [M, D] and p_small [N, M, D] are the online predictions, t1, t2 [M, D] the target
  branch's outputs of the global views (EMA target, or the online z under stop-gradient for
  SimSiam); small crops have no target. With N = 0 this is 1/2 (byol(p2, t1) + byol(p1, t2)),
  the mean of the two directions (the method hooks sum them: multiply by 2).
  """
  C.check_pair("byol_multicrop", t1, t2, ("t1", "t2"))
  views, _, _ = _views("byol_multicrop", p1, p2, p_small, axis_name, 1, names=("p1", "p2"))
  targets = (t1, t2)
  total = sum(NC.byol(views[a], targets[g], kind=kind, axis_name=axis_name) for a, g in pairs(len(views) - 2))
  return total / num_pairs(len(views) - 2)


def vicreg_multicrop(z1, z2, z_small, *, sim=25.0, var=25.0, cov=1.0, axis_name=None):
  r"""VICReg with multi-crop: the two-view loss averaged over the pairs P.

      L = 1/|P| sum_{(a, g) in P} vicreg(z_a, z_g)
        = 1/|P| [ 2 vicreg(z1, z2) + sum_{s small} ( vicreg(z_s, z1) + vicreg(z_s, z2) ) ]

  (`vicreg` is symmetric in its two arguments). Each pair's variance and covariance terms
  are those of its two views' batches, so a small crop's batch statistics enter once per
  global view it is paired with. VICReg itself has no multi-crop recipe; this is the
  SwAV / DINO pairing applied to its two-view loss. With N = 0 this is `vicreg` exactly.
  """
  views, _, _ = _views("vicreg_multicrop", z1, z2, z_small, axis_name, 2)
  total = sum(NC.vicreg(views[a], views[g], sim=sim, var=var, cov=cov, axis_name=axis_name)
              for a, g in pairs(len(views) - 2))
  return total / num_pairs(len(views) - 2)


MULTICROP_LOSSES = {"nt_xent": nt_xent_multicrop, "info_nce": info_nce_multicrop, "byol": byol_multicrop,
                    "vicreg": vicreg_multicrop}

__all__ = ["nt_xent_multicrop", "info_nce_multicrop", "byol_multicrop", "vicreg_multicrop", "MULTICROP_LOSSES",
           "num_pairs", "pairs"]
