"""Eigenvalue dynamics of non-contrastive SSL with a closed-form linear predictor, for
the Euclidean and cosine losses and their isotropic versions (IsoLoss): Halvagal,
Laborieux & Zenke, NeurIPS 2023, arXiv 2212.04858. Plus the toy linear network of
the paper, trained step by step, to check the ODEs against.

Set-up. Embedding z = W x (W: d_out×d_in), x ~ N(0, I); two views x1,2 = x + σ ξ1,2
(σ² = augmentation variance); the online view goes through the closed-form predictor
W_P = (W Wᵀ)^α (eigenvalues λ_m^α, eigenvectors those of WWᵀ; no gradient flows
through it), the target z2 = W x2 is under stop-gradient; λ_m are the eigenvalues of
WWᵀ. With weight decay η on W (Ẇ = −∇L − ηW), the flows in the eigenbasis are

  Euclidean   L = ½‖W_P z1 − sg z2‖²:      λ̇ = −2λ^{1+α}[(1+σ²)λ^α − 1] − 2ηλ
  Euclidean IsoLoss L = ½‖z1 − sg(z2 + z1 − W_P z1)‖²:
                                            λ̇ = −2λ[(1+σ²)λ^α − 1] − 2ηλ
  Cosine      L = −cos(W_P z1, sg z2):     λ̇_m = (2/N) λ_m^{1+α}(1 − κ λ_m^α) − 2ηλ_m
  Cosine IsoLoss (∇_z L_iso = ∇_p L_cos):  λ̇_m = (2/N) λ_m (1 − κ λ_m^α) − 2ηλ_m

  with N = (1+σ²) √(Σ_k λ_k^{1+2α} · Σ_k λ_k)  (= E‖p1‖ · E‖z2‖ in the high-dimensional
  limit where the norms concentrate) and κ = Σ_k λ_k^{1+α} / Σ_k λ_k^{1+2α}.

Derivation of the cosine flows (as in the paper's approach: replace ‖p1‖, ‖z2‖ and
p1·z2 by their expectations, which is exact when they concentrate): ∂cos(p, t)/∂p =
t/(‖p‖‖t‖) − (p·t) p/(‖p‖³‖t‖), chain rule through p1 = W_P W x1, and
E[x2 x1ᵀ] = I, E[x1 x1ᵀ] = (1+σ²) I, E‖p1‖² = (1+σ²)Σλ^{1+2α}, E‖z2‖² = (1+σ²)Σλ,
E[p1·z2] = Σλ^{1+α}. This gives Ẇ = (1/N) W_P (I − κ W_P) W (cosine) and
Ẇ = (1/N)(I − κ W_P) W (cosine IsoLoss). Consequences:
  * cosine: Σ_m λ̇_m = (2/N)(Σλ^{1+α} − κΣλ^{1+2α}) = 0: tr(WWᵀ) is conserved (exactly,
    even for the true per-sample gradient, because the cosine is scale-invariant in
    W x1). Mode m grows iff λ_m^α < 1/κ = Σλ^{1+α}·λ^α / Σλ^{1+α}, the λ^{1+α}-weighted
    mean of λ^α: modes below the weighted mean grow, those above shrink, until all are
    equal (max/min → 1).
  * The Euclidean flow's rate carries λ^α as a learning-rate multiplier (slow from
    small λ); the IsoLoss rate does not. Fixed point of both: λ^α = 1/(1+σ²).
  * Weight decay. Euclidean: with u = λ^α the non-zero fixed points solve
    (1+σ²)u² − u + η = 0, so modes survive iff η ≤ 1/(4(1+σ²)) -- for every α > 0, since
    u = λ^α is monotone (and only for u(0) above the unstable root u₋). Euclidean
    IsoLoss: λ^α = (1 − η)/(1+σ²), which exists for any η < 1.

The toy network's views differ from the official notebook (`toy_networks.ipynb`), which
adds noise to the target view only: then E[x1 x1ᵀ] = I and the fixed point is λ^α = 1,
not (1+σ²)^{-1}. Here both views are augmented, which gives the paper's equations.

Everything is pure and jit/vmap-able; `halvagal_phase_diagram` is one jitted call.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxssl.dynamics import ode
from jaxssl.errors import ConfigError

__all__ = [
    "LOSSES", "vector_field", "euclidean_vector_field", "euclidean_iso_vector_field",
    "cosine_vector_field", "cosine_iso_vector_field", "fixed_point",
    "collapse_threshold", "critical_eta", "predicts_collapse", "solve_eigenvalues",
    "time_to_fraction", "halvagal_phase_diagram", "theory_predictor", "toy_loss",
    "expected_grad", "simulate_toy_network", "eigenvalues",
]

LOSSES = ("euclidean", "euclidean_iso", "cosine", "cosine_iso")


def _check_loss(loss: str) -> None:
  if loss not in LOSSES:
    raise ConfigError(f"unknown loss {loss!r}; expected one of {LOSSES}")


def _pow(lam: jax.Array, a: Any) -> jax.Array:
  return jnp.power(jnp.maximum(lam, 0.0), a)


# --------------------------------------------------------------------------------------
# Eigenvalue ODEs. args = (alpha, sigma2, eta); lam has shape [..., M] (modes last).
# --------------------------------------------------------------------------------------

def euclidean_vector_field(t: Any, lam: jax.Array, args: Any) -> jax.Array:
  """λ̇ = −2λ^{1+α}[(1+σ²)λ^α − 1] − 2ηλ (modes are independent)."""
  del t
  alpha, sigma2, eta = args
  u = _pow(lam, alpha)
  return -2.0 * lam * u * ((1.0 + sigma2) * u - 1.0) - 2.0 * eta * lam


def euclidean_iso_vector_field(t: Any, lam: jax.Array, args: Any) -> jax.Array:
  """λ̇ = −2λ[(1+σ²)λ^α − 1] − 2ηλ (modes are independent)."""
  del t
  alpha, sigma2, eta = args
  return -2.0 * lam * ((1.0 + sigma2) * _pow(lam, alpha) - 1.0) - 2.0 * eta * lam


def _cosine_terms(lam, alpha, sigma2):
  lam_c = jnp.maximum(lam, 0.0)
  u = _pow(lam_c, alpha)
  s1 = jnp.sum(lam_c, axis=-1, keepdims=True)
  s1a = jnp.sum(lam_c * u, axis=-1, keepdims=True)
  s12a = jnp.sum(lam_c * u * u, axis=-1, keepdims=True)
  norm = (1.0 + sigma2) * jnp.sqrt(s12a * s1)
  kappa = s1a / s12a
  return u, norm, kappa


def cosine_vector_field(t: Any, lam: jax.Array, args: Any) -> jax.Array:
  """λ̇_m = (2/N) λ_m^{1+α}(1 − κλ_m^α) − 2ηλ_m; modes (last axis) are coupled."""
  del t
  alpha, sigma2, eta = args
  u, norm, kappa = _cosine_terms(lam, alpha, sigma2)
  return 2.0 * lam * u * (1.0 - kappa * u) / norm - 2.0 * eta * lam


def cosine_iso_vector_field(t: Any, lam: jax.Array, args: Any) -> jax.Array:
  """λ̇_m = (2/N) λ_m(1 − κλ_m^α) − 2ηλ_m; modes (last axis) are coupled."""
  del t
  alpha, sigma2, eta = args
  u, norm, kappa = _cosine_terms(lam, alpha, sigma2)
  return 2.0 * lam * (1.0 - kappa * u) / norm - 2.0 * eta * lam


_FIELDS = {"euclidean": euclidean_vector_field,
           "euclidean_iso": euclidean_iso_vector_field,
           "cosine": cosine_vector_field,
           "cosine_iso": cosine_iso_vector_field}


def vector_field(loss: str) -> Callable[[Any, jax.Array, Any], jax.Array]:
  """The eigenvalue vector field `f(t, lam, (alpha, sigma2, eta))` of `loss`."""
  _check_loss(loss)
  return _FIELDS[loss]


# --------------------------------------------------------------------------------------
# Closed forms.
# --------------------------------------------------------------------------------------

def fixed_point(alpha: Any, sigma2: Any, eta: Any = 0.0,
                loss: str = "euclidean") -> jax.Array:
  """Stable non-zero fixed point λ* of a Euclidean flow; NaN where modes collapse.

  euclidean: λ*^α = [1 + √(1 − 4η(1+σ²))] / (2(1+σ²));  euclidean_iso: λ*^α =
  (1−η)/(1+σ²). (The cosine flows have a continuum of fixed points: all λ equal.)
  """
  if loss not in ("euclidean", "euclidean_iso"):
    raise ConfigError(f"fixed_point is defined for 'euclidean' and 'euclidean_iso', "
                      f"got {loss!r}")
  alpha, sigma2, eta = jnp.asarray(alpha), jnp.asarray(sigma2), jnp.asarray(eta)
  if loss == "euclidean":
    disc = 1.0 - 4.0 * eta * (1.0 + sigma2)
    u = (1.0 + jnp.sqrt(jnp.where(disc >= 0, disc, jnp.nan))) / (2.0 * (1.0 + sigma2))
  else:
    u = jnp.where(eta < 1.0, (1.0 - eta) / (1.0 + sigma2), jnp.nan)
  return jnp.power(u, 1.0 / alpha)


def collapse_threshold(sigma2: Any, loss: str = "euclidean") -> jax.Array:
  """Weight decay above which every mode collapses: 1/(4(1+σ²)) (Euclidean, any α),
  1 (Euclidean IsoLoss)."""
  sigma2 = jnp.asarray(sigma2)
  if loss == "euclidean":
    return 1.0 / (4.0 * (1.0 + sigma2))
  if loss == "euclidean_iso":
    return jnp.ones_like(sigma2, dtype=jnp.result_type(sigma2, float))
  raise ConfigError(f"collapse_threshold is defined for 'euclidean' and "
                    f"'euclidean_iso', got {loss!r}")


def critical_eta(lam0: Any, alpha: Any, sigma2: Any, loss: str = "euclidean") -> jax.Array:
  """Weight decay below which a mode starting at λ0 > 0 survives (above: → 0).

  Euclidean: with u0 = λ0^α, η_c = u0 − (1+σ²)u0² if u0 < 1/(2(1+σ²)) (the mode must
  start above the unstable root), else 1/(4(1+σ²)). Euclidean IsoLoss: 1.
  """
  lam0, sigma2 = jnp.asarray(lam0), jnp.asarray(sigma2)
  if loss == "euclidean_iso":
    return jnp.ones(jnp.broadcast_shapes(lam0.shape, sigma2.shape))
  if loss != "euclidean":
    raise ConfigError(f"critical_eta is defined for 'euclidean' and 'euclidean_iso', "
                      f"got {loss!r}")
  u0 = _pow(lam0, alpha)
  mid = 1.0 / (2.0 * (1.0 + sigma2))
  return jnp.where(u0 < mid, u0 - (1.0 + sigma2) * u0 * u0, collapse_threshold(sigma2))


def predicts_collapse(lam0: Any, alpha: Any, sigma2: Any, eta: Any,
                      loss: str = "euclidean") -> jax.Array:
  """Closed-form prediction: does a mode starting at λ0 > 0 flow to 0?"""
  return jnp.asarray(eta) >= critical_eta(lam0, alpha, sigma2, loss)


# --------------------------------------------------------------------------------------
# Integration.
# --------------------------------------------------------------------------------------

def solve_eigenvalues(lam0: Any, t1: Any, *, loss: str = "euclidean", alpha: Any = 1.0,
                      sigma2: Any = 0.01, eta: Any = 0.0, saveat: Any = None,
                      rtol: float = 1e-6, atol: float = 1e-9) -> jax.Array:
  """Integrates the eigenvalue ODE of `loss` from λ(0) = lam0 ([M] modes, or a scalar
  for the decoupled Euclidean flows). Returns λ(t1), or λ at the times in `saveat`
  (leading axis len(saveat))."""
  lam0 = jnp.asarray(lam0, jnp.result_type(float))
  alpha, sigma2, eta, t1 = (jnp.asarray(a, lam0.dtype) for a in (alpha, sigma2, eta, t1))
  sol = ode.integrate(vector_field(loss), lam0, t1, (alpha, sigma2, eta),
                      saveat=saveat, rtol=rtol, atol=atol)
  return sol.ys[-1] if saveat is None else sol.ys


def time_to_fraction(lam0: Any, *, loss: str = "euclidean", alpha: Any = 1.0,
                     sigma2: Any = 0.01, eta: Any = 0.0, frac: float = 0.9,
                     t1: Any = 1e4, rtol: float = 1e-7, atol: float = 1e-10) -> jax.Array:
  """Time for a single mode to go from λ0 to frac·λ* (Euclidean flows; inf if never).

  With α = 1, σ² = 0.01 (σ = 0.1), λ0 = 0.01: 52.86 (Euclidean) vs 3.391 (IsoLoss,
  = ½ ln(9(λ*/λ0 − 1)) in closed form).
  """
  lam0 = jnp.asarray(lam0, jnp.result_type(float))
  alpha, sigma2, eta, t1 = (jnp.asarray(a, lam0.dtype) for a in (alpha, sigma2, eta, t1))
  target = frac * fixed_point(alpha, sigma2, eta, loss)
  return ode.crossing_time(vector_field(loss), lam0, t1, (alpha, sigma2, eta),
                           lambda t, y, a: y - target, rtol=rtol, atol=atol)


def halvagal_phase_diagram(etas: Any, sigma2s: Any, lam0s: Any, *,
                           loss: str = "euclidean", alpha: float = 1.0,
                           t1: float = 2000.0, collapse_frac: float = 0.5,
                           rtol: float = 1e-6, atol: float = 1e-9) -> dict[str, jax.Array]:
  """Final eigenvalue of one mode on the (η × σ² × λ0) grid, one jitted vmapped call.

  For the decoupled Euclidean flows ("euclidean", "euclidean_iso"). A run counts as
  collapsed when λ(t1) < collapse_frac · λ_ref, with λ_ref the surviving fixed point λ*
  where it exists (a surviving run ends near it) and λ0 where it does not (λ then
  decreases monotonically to 0). Returns "lam_final" [E, S, L], "collapsed"
  [E, S, L], "collapsed_theory" [E, S, L] (closed form), "threshold" [S] and
  "lam_star" [E, S] (NaN where there is no surviving fixed point).
  """
  if loss not in ("euclidean", "euclidean_iso"):
    raise ConfigError(f"halvagal_phase_diagram needs a decoupled flow ('euclidean' or "
                      f"'euclidean_iso'), got {loss!r}")
  etas, sigma2s, lam0s = (jnp.atleast_1d(jnp.asarray(a, jnp.result_type(float)))
                          for a in (etas, sigma2s, lam0s))
  return _halvagal_grid(etas, sigma2s, lam0s, jnp.asarray(alpha, etas.dtype),
                        jnp.asarray(t1, etas.dtype), loss, collapse_frac, rtol, atol)


@functools.partial(jax.jit, static_argnums=(5, 6, 7, 8))
def _halvagal_grid(etas, sigma2s, lam0s, alpha, t1, loss, collapse_frac, rtol, atol):
  def one(eta, sigma2, lam0):
    return solve_eigenvalues(lam0, t1, loss=loss, alpha=alpha, sigma2=sigma2, eta=eta,
                             rtol=rtol, atol=atol)

  lam_final = ode.grid_map(one, etas, sigma2s, lam0s)
  theory = predicts_collapse(lam0s[None, None, :], alpha, sigma2s[None, :, None],
                             etas[:, None, None], loss)
  lam_star = fixed_point(alpha, sigma2s[None, :], etas[:, None], loss)
  ref = jnp.where(jnp.isnan(lam_star[:, :, None]), lam0s[None, None, :],
                  lam_star[:, :, None])
  return {"lam_final": lam_final, "collapsed": lam_final < collapse_frac * ref,
          "collapsed_theory": theory,
          "threshold": collapse_threshold(sigma2s, loss), "lam_star": lam_star}


# --------------------------------------------------------------------------------------
# The toy linear network, trained step by step.
# --------------------------------------------------------------------------------------

def _eig_power(W: jax.Array, a: Any) -> jax.Array:
  lam, U = jnp.linalg.eigh(W @ W.T)
  return (U * _pow(lam, a)[None, :]) @ U.T


def theory_predictor(W: jax.Array, alpha: Any) -> jax.Array:
  """The closed-form predictor of the theory, W_P = (W Wᵀ)^α (stop-gradient)."""
  return jax.lax.stop_gradient(_eig_power(W, alpha))


def toy_loss(W: jax.Array, x1: jax.Array, x2: jax.Array, *, loss: str,
             alpha: Any) -> jax.Array:
  """Mean loss of the toy network on views x1 (online) and x2 (target), [B, d_in].

  z = x Wᵀ (rows), p = z W_P with W_P = (WWᵀ)^α under stop-gradient, target
  t = sg(x2 Wᵀ). Euclidean: ½‖p − t‖²; Euclidean IsoLoss: ½‖z − sg(t + z − p)‖²;
  cosine: −cos(p, t); cosine IsoLoss: −[⟨z,t⟩/sg(‖p‖‖t‖) − ½ sg(⟨p,t⟩/(‖p‖³‖t‖))
  ‖z W_P^{1/2}‖²] (its gradient in z equals the cosine loss's gradient in p).
  """
  _check_loss(loss)
  sg = jax.lax.stop_gradient
  Wp = theory_predictor(W, alpha)
  z = x1 @ W.T
  t = sg(x2 @ W.T)
  p = z @ Wp
  if loss == "euclidean":
    return 0.5 * jnp.mean(jnp.sum((p - t) ** 2, -1))
  if loss == "euclidean_iso":
    return 0.5 * jnp.mean(jnp.sum((z - sg(t + z - p)) ** 2, -1))
  pn = jnp.linalg.norm(p, axis=-1)
  tn = jnp.linalg.norm(t, axis=-1)
  pt = jnp.sum(p * t, -1)
  if loss == "cosine":
    return -jnp.mean(pt / (pn * tn))
  half = z @ sg(_eig_power(W, 0.5 * alpha))
  sim = (jnp.sum(z * t, -1) / sg(pn * tn)
         - 0.5 * sg(pt / (pn ** 3 * tn)) * jnp.sum(half * half, -1))
  return -jnp.mean(sim)


def expected_grad(W: jax.Array, *, loss: str, alpha: Any, sigma2: Any) -> jax.Array:
  """Exact expected gradient of the Euclidean losses (x ~ N(0, I), both views noisy)."""
  Wp = _eig_power(W, alpha)
  resid = (1.0 + sigma2) * Wp @ W - W        # E[(p1 − z2) x1ᵀ] in column form
  if loss == "euclidean":
    return Wp @ resid
  if loss == "euclidean_iso":
    return resid
  raise ConfigError(f"expected_grad is closed-form only for the Euclidean losses, got "
                    f"{loss!r}; use sampled batches for the cosine losses")


def simulate_toy_network(key: jax.Array, W0: jax.Array, *, loss: str, alpha: Any = 1.0,
                         sigma2: Any = 0.01, eta: Any = 0.0, lr: Any = 0.01,
                         steps: int = 1500, batch_size: int = 4096,
                         expected: bool = False, save_every: int = 1) -> jax.Array:
  """Trains the toy network (z = Wx, closed-form predictor) by SGD, step by step.

  Each step draws x ~ N(0, I) [batch_size, d_in], views x + σξ1, x + σξ2, and applies
  W ← W − lr(∇_W toy_loss + ηW). `expected=True` (Euclidean losses only) uses the exact
  expected gradient instead (explicit Euler of the matrix flow). ODE time = lr·step.

  Returns W after steps 0, save_every, ... stacked: [steps // save_every + 1, d_out,
  d_in].
  """
  _check_loss(loss)
  if steps % save_every:
    raise ConfigError(f"steps={steps} must be a multiple of save_every={save_every}")
  if expected and loss not in ("euclidean", "euclidean_iso"):
    raise ConfigError(f"expected=True is only available for the Euclidean losses, got "
                      f"{loss!r}")
  sigma = jnp.sqrt(jnp.asarray(sigma2))
  d_in = W0.shape[1]
  grad_fn = jax.grad(functools.partial(toy_loss, loss=loss, alpha=alpha))

  def step(W, k):
    if expected:
      g = expected_grad(W, loss=loss, alpha=alpha, sigma2=sigma2)
    else:
      kx, k1, k2 = jax.random.split(k, 3)
      x = jax.random.normal(kx, (batch_size, d_in), W.dtype)
      g = grad_fn(W, x + sigma * jax.random.normal(k1, x.shape, W.dtype),
                  x + sigma * jax.random.normal(k2, x.shape, W.dtype))
    return W - lr * (g + eta * W), None

  def block(W, k):
    W, _ = jax.lax.scan(step, W, jax.random.split(k, save_every))
    return W, W

  _, traj = jax.lax.scan(block, W0, jax.random.split(key, steps // save_every))
  return jnp.concatenate([W0[None], traj])


def eigenvalues(W: jax.Array) -> jax.Array:
  """Eigenvalues of W Wᵀ, ascending (works on stacked W [..., d_out, d_in])."""
  return jnp.linalg.eigvalsh(W @ jnp.swapaxes(W, -1, -2))
