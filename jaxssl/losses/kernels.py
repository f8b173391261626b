"""Kernels of Kernel Contrastive Learning (KCL), as functions of the squared distance.

Koromilas et al., "Bridging Mini-Batch and Asymptotic Analysis in Contrastive
Learning: From InfoNCE to Kernel-Based Losses", ICML 2024 (arXiv 2405.18045); the
definitions follow the official code (pakoromilas/DHEL-KCL, ``utils.py``/``losses.py``).

KCL uses one kernel for the *energy* (uniformity) term between different examples and
one for the *alignment* term between the two views of an example:

    L = -2 * mean_i K_align(u_i, v_i)
        + gamma * [ mean_{i<j} K_energy(u_i, u_j) + mean_{i<j} K_energy(v_i, v_j) ]

Every kernel below is a function of d2 = ||x - y||^2 (x, y on the unit sphere) and of
the parameter t:

| name             | K_energy(d2)                  | K_align(d2)                |
|------------------|-------------------------------|----------------------------|
| "gaussian"       | exp(-t d2)                    | exp(-t d2)                 |
| "log"            | -1/2 log(1 + t d2)            | -log(1 + t d2)             |
| "imq"            | t / sqrt(t^2 + d2)            | t / sqrt(t^2 + d2)         |
| "riesz"          | sign(s) d^(-s),  s = t        | sign(s) d^(-s)             |
| "gaussian_riesz" | sign(s) d^(-s),  s = t        | exp(-2 d2)  (t = 2 fixed)  |
| "linear"         | x.y = 1 - d2/2                | x.y = 1 - d2/2             |

Notes
- "log": the official code halves the energy kernel (it is the log-energy
  -1/2 log(1 + t d2)) but not the alignment kernel; we do the same.
- "riesz": sign(s) is -1 for s < 0 (K = -d^|s|, the usual repulsive Riesz energy for
  negative exponents) and +1 for s > 0 (K = d^-s). The distance is floored,
  d2 >= RIESZ_D2_FLOOR = 1e-6, so the value and gradient stay finite when points
  coincide (collapsed batches); below the floor the gradient is 0. With s > 0 the
  official alignment term -2 d^-s is unbounded below as u_i -> v_i; the floor caps it.
- "gaussian_riesz": as in the official code, Riesz energy with s = t and a Gaussian
  alignment kernel with its t hard-coded to 2.
- "linear": not in the official code; K(x, y) = x.y on the sphere. KCL-linear is then
  -2 mean_i u_i.v_i + gamma * (mean_{i<j} u_i.u_j + mean_{i<j} v_i.v_j).
- d2 is computed as |x|^2 + |y|^2 - 2 x.y clamped at 0 for pairs within a view
  (|x|^2 = 1 after normalisation, 0 for a zero input row), and as
  sum (x - y)^2 for the positive pairs; neither uses a square root, so the Gaussian,
  log, imq and linear kernels have finite gradients at d2 = 0.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

RIESZ_D2_FLOOR = 1e-6
# The fixed t of the Gaussian alignment kernel of "gaussian_riesz" (official code).
GAUSSIAN_RIESZ_ALIGN_T = 2.0


class Kernel(NamedTuple):
  """A KCL kernel: energy(d2, t) and align(d2, t), elementwise on squared distances."""
  energy: Callable[[jax.Array, jax.Array], jax.Array]
  align: Callable[[jax.Array, jax.Array], jax.Array]
  t_rule: str  # "positive" (t > 0) or "nonzero" (t != 0)


def _gaussian(d2, t):
  return jnp.exp(-t * d2)


def _log_energy(d2, t):
  return -0.5 * jnp.log1p(t * d2)


def _log_align(d2, t):
  return -jnp.log1p(t * d2)


def _imq(d2, t):
  return t * jax.lax.rsqrt(t * t + d2)


def _riesz(d2, s):
  """sign(s) * d^(-s) = sign(s) * (d2)^(-s/2), with d2 floored at RIESZ_D2_FLOOR."""
  d2 = jnp.maximum(d2, RIESZ_D2_FLOOR)
  return jnp.sign(s) * jnp.power(d2, -0.5 * s)


def _gaussian_riesz_align(d2, t):
  del t
  return jnp.exp(-GAUSSIAN_RIESZ_ALIGN_T * d2)


def _linear(d2, t):
  del t
  return 1.0 - 0.5 * d2


KERNELS: dict[str, Kernel] = {
    "gaussian": Kernel(_gaussian, _gaussian, "positive"),
    "log": Kernel(_log_energy, _log_align, "positive"),
    "imq": Kernel(_imq, _imq, "positive"),
    "riesz": Kernel(_riesz, _riesz, "nonzero"),
    "gaussian_riesz": Kernel(_riesz, _gaussian_riesz_align, "nonzero"),
    "linear": Kernel(_linear, _linear, "any"),
}

KERNEL_NAMES = tuple(KERNELS)
