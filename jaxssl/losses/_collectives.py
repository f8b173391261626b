"""Shared helpers of `jaxssl.losses`: cross-device reductions, safe normalisation, checks.

How a loss is made global (``axis_name`` set)
=============================================
Inside ``jax.shard_map``, ``jax.pmap`` or ``jax.vmap(axis_name=...)`` each member of
the axis holds ``m`` rows of a global batch of ``M = m * N`` rows (``N`` members).
Every loss is written as

    L = psum_d(local_d) + global_

where ``local_d`` depends on member d's own rows (anchors) and on all-gathered rows
(negatives: ``lax.all_gather(x, axis_name, tiled=True)``), and ``global_`` is a
function of psum'd moments only (VICReg, Barlow Twins), identical on every member.
The positive/self column of local row r is its *global* index
``axis_index * m + r``.

JAX gives ``jax.grad`` of such a value different meanings depending on the context,
so the final reduction is chosen from the context (`global_sum`):

* ``shard_map`` with ``check_vma=True`` (the default). The local rows are typed as
  varying over the axis, ``psum`` returns an invariant value and transposes to a
  broadcast, ``all_gather`` transposes to ``psum_scatter``. Plain
  ``psum(local) + global_`` is then correct both for ``jax.grad`` taken *inside* the
  shard_map w.r.t. the local shard and for ``jax.grad`` of the outer function through
  ``shard_map(..., out_specs=P())``.
* ``pmap``, ``vmap(axis_name=...)`` and ``shard_map(check_vma=False)``. Nothing is typed
  as varying; ``psum`` transposes to ``psum``, so ``jax.grad`` computes the gradient of
  the *sum over members of each member's output*. Returning ``psum(local)`` would scale
  every gradient by N. We return instead

      c_d + stop_gradient(psum(c_d) - c_d),     c_d = local_d + global_ / N,

  whose value is L on every member and whose summed-over-members function is
  sum_d c_d = L, so ``jax.grad`` inside pmap/vmap w.r.t. a member's rows is exactly the
  corresponding rows of the unsharded gradient (verified in tests/test_losses_sharded.py).
  Consequence for training with pmap: the per-member *parameter* gradients are partial
  sums and must be combined with ``lax.psum`` (not ``pmean``). Differentiating the
  *outer* function of a pmap/vmap (e.g. ``grad(lambda x: pmap(loss)(x)[0])``) is not
  supported: no single formulation can make inner and outer gradients both right
  there; under ``shard_map(check_vma=False)`` the outer gradient is scaled by 1/N,
  so keep the default ``check_vma=True``.

The context is detected from the type of the local input (`is_varying`), at trace time.
"""
from __future__ import annotations

import numbers
from typing import Any, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxssl.errors import ConfigError

# Safe L2 normalisation: x * rsqrt(max(|x|^2, EPS^2)); same eps as torch.nn.functional.normalize.
NORM_EPS = 1e-12


class ShapeError(ConfigError, AssertionError):
  """Embedding shapes are wrong. A ConfigError, and an AssertionError as chex raises."""


# ----------------------------------------------------------------------------- numerics

def compute_dtype(x: jax.Array) -> jnp.dtype:
  """Losses are computed in float32 at least (bf16/fp16 embeddings are upcast)."""
  return jnp.promote_types(jnp.result_type(x), jnp.float32)


def as_float(x: jax.Array) -> jax.Array:
  x = jnp.asarray(x)
  return x.astype(compute_dtype(x))


def safe_normalize(x: jax.Array, axis: int = -1, eps: float = NORM_EPS) -> jax.Array:
  """Row-wise L2 normalisation that is finite, with finite gradients, at x = 0.

  x * rsqrt(max(sum x^2, eps^2)). At x = 0 the value is 0 and the gradient is
  (1/eps) * cotangent (finite; the same as torch's F.normalize).
  """
  sq = jnp.sum(x * x, axis=axis, keepdims=True)
  return x * lax.rsqrt(jnp.maximum(sq, eps * eps))


def safe_norm(x: jax.Array, axis: int = -1, eps: float = NORM_EPS) -> jax.Array:
  """sqrt(max(sum x^2, eps^2)): a norm whose gradient is finite at 0."""
  return jnp.sqrt(jnp.maximum(jnp.sum(x * x, axis=axis), eps * eps))


# ----------------------------------------------------------------------------- collectives

def _names(axis_name) -> tuple:
  return tuple(axis_name) if isinstance(axis_name, (tuple, list)) else (axis_name,)


def is_varying(x: jax.Array, axis_name) -> bool:
  """True when `x` is typed as varying over `axis_name` (shard_map with check_vma=True)."""
  aval = jax.typeof(x)
  varying = getattr(aval, "vma", None)
  if varying is None:
    mat = getattr(aval, "manual_axis_type", None) or getattr(aval, "mat", None)
    varying = getattr(mat, "varying", frozenset()) if mat is not None else frozenset()
  return all(n in varying for n in _names(axis_name))


def axis_size(axis_name) -> int:
  """Static number of members of `axis_name` (1 when None)."""
  if axis_name is None:
    return 1
  return int(lax.axis_size(axis_name))


def gather(x: jax.Array, axis_name) -> jax.Array:
  """All rows of the global batch, in global order (identity when axis_name is None)."""
  if axis_name is None:
    return x
  return lax.all_gather(x, axis_name, axis=0, tiled=True)


def global_row_index(m: int, axis_name) -> jax.Array:
  """Global indices of the m local rows: axis_index * m + arange(m)."""
  idx = jnp.arange(m)
  if axis_name is None:
    return idx
  return lax.axis_index(axis_name) * m + idx


def psum(x, axis_name):
  return x if axis_name is None else lax.psum(x, axis_name)


def global_sum(local: jax.Array | None, axis_name, *, vma: bool, global_: Any = 0.0) -> jax.Array:
  """L = psum(local) + global_, with gradients right under shard_map, pmap and vmap.

  `local` is this member's contribution (None: nothing local), `global_` a value that
  every member computes identically from psum'd moments. See the module docstring;
  `vma` is `is_varying(<a local input>, axis_name)`.
  """
  if axis_name is None:
    return global_ if local is None else local + global_
  if vma:
    return global_ if local is None else lax.psum(local, axis_name) + global_
  c = global_ / axis_size(axis_name)
  if local is not None:
    c = local + c
  return c + lax.stop_gradient(lax.psum(c, axis_name) - c)


# ----------------------------------------------------------------------------- checks

def concrete_scalar(value) -> float | None:
  """float(value) when it is a concrete Python/NumPy/JAX scalar, None when traced."""
  if isinstance(value, jax.core.Tracer):
    return None
  if isinstance(value, (numbers.Number, np.ndarray, np.generic, jax.Array)):
    arr = np.asarray(value)
    if arr.ndim == 0:
      return float(arr)
  return None


def check_positive(fn: str, name: str, value) -> None:
  v = concrete_scalar(value)
  if v is not None and not v > 0:
    raise ConfigError(f"{fn}: {name} must be > 0, got {name}={value!r}")


def check_pair(fn: str, a: jax.Array, b: jax.Array, names: Sequence[str] = ("z1", "z2")) -> None:
  """Both are [batch, dim] with the same shape."""
  try:
    chex.assert_rank([a, b], 2)
    chex.assert_equal_shape([a, b])
  except AssertionError as e:
    raise ShapeError(
        f"{fn}: {names[0]} and {names[1]} must both be [batch, dim] with the same shape, got "
        f"{names[0]}.shape={tuple(np.shape(a))} and {names[1]}.shape={tuple(np.shape(b))} ({e})") from e


def check_batch(fn: str, m_local: int, axis_name, minimum: int = 2) -> int:
  """The global batch size M, which must be >= minimum (the loss needs negatives)."""
  big_m = m_local * axis_size(axis_name)
  if big_m < minimum:
    raise ShapeError(f"{fn}: needs a global batch of at least {minimum} rows, got {big_m}")
  return big_m


def check_choice(fn: str, name: str, value, choices: Sequence[str]) -> None:
  if value not in choices:
    raise ConfigError(f"{fn}: unknown {name} {value!r}; valid: {', '.join(map(repr, choices))}")
