"""Eigenvalues of symmetric matrices without their eigenvectors, for the in-graph diagnostics.

`jnp.linalg.eigvalsh` is `eigh` with the eigenvectors thrown away: on the CPU, jaxlib 0.10
always calls LAPACK's ?syevd with jobz = 'V', whose divide-and-conquer also builds and
back-transforms the eigenvectors. The spectrum diagnostics, RankMe, alpha-ReQ and LiDAR
only need the eigenvalues. `eigvalsh` here calls the same jaxlib LAPACK kernel
(`lapack_?syevd_ffi`) with jobz = 'N' (Householder tridiagonalisation, then the
eigenvalues of the tridiagonal matrix by the root-free QR of ?sterf): 1.3 ms instead of
3.1 ms for a 256 x 256 float32 matrix on one core of this project's CPU, 0.33 instead of
0.69 ms at 128. The eigenvalues agree with `jnp.linalg.eigvalsh` to float round-off (a
different algorithm on the tridiagonal matrix; tests/test_linalg.py).

On other platforms (GPU, TPU) `eigvalsh` is `jnp.linalg.eigvalsh`: `jax.lax.platform_dependent`
lowers only the branch of the platform the program is compiled for.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

_NO_EIGENVECTORS = np.uint8(ord("N"))
_LOWER = np.uint8(ord("L"))


def _lapack_eigvalsh(a: jax.Array) -> jax.Array:
  """jaxlib's ?syevd FFI kernel with jobz = 'N': eigenvalues [..., n], ascending."""
  from jaxlib import lapack    # the CPU LAPACK kernels jaxlib registers (scipy's LAPACK)
  target = lapack.prepare_lapack_call("syevd_ffi", a.dtype)
  *batch, n, _ = a.shape
  call = jax.ffi.ffi_call(
      target,
      (jax.ShapeDtypeStruct(a.shape, a.dtype),            # the overwritten input (unused)
       jax.ShapeDtypeStruct((*batch, n), a.dtype),        # eigenvalues, ascending
       jax.ShapeDtypeStruct(tuple(batch), jnp.int32)),    # LAPACK's info
      input_output_aliases={0: 0}, vmap_method="broadcast_all")
  # The kernel reads column-major storage; a symmetric matrix is its own transpose.
  _, w, info = call(a, mode=_NO_EIGENVECTORS, uplo=_LOWER)
  # LAPACK can return finite numbers for a NaN input: a non-finite matrix gives NaN eigenvalues.
  ok = (info == 0) & jnp.all(jnp.isfinite(a), axis=(-2, -1))
  return jnp.where(ok[..., None], w, jnp.nan)


def eigvalsh(a: jax.Array) -> jax.Array:
  r"""Eigenvalues of the symmetric part of a [..., n, n], ascending (as `jnp.linalg.eigvalsh`).

      w = eigvalsh( (a + a^T) / 2 )                                      # [..., n]

  Float32 or float64 (other dtypes are computed in float32). No eigenvectors are computed
  on the CPU (see the module docstring); a non-finite matrix or a LAPACK failure gives NaN
  eigenvalues, never a wrong value.
  Not differentiable (the diagnostics call it under stop_gradient).
  """
  a = jnp.asarray(a)
  if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
    raise ValueError(f"eigvalsh: expected square matrices [..., n, n], got shape {a.shape}")
  if a.dtype not in (jnp.float32, jnp.float64):
    a = a.astype(jnp.float32)
  sym = 0.5 * (a + jnp.swapaxes(a, -1, -2))    # exactly symmetric in floating point
  return jax.lax.platform_dependent(sym, cpu=_lapack_eigvalsh, default=jnp.linalg.eigvalsh)
