"""Learning dynamics of linear BYOL / SimSiam with an L2 loss (Tian, Chen & Ganguli,
ICML 2021, arXiv 2102.06810): the matrix gradient flow, its eigenmode reduction, the
cubic predictor-eigenvalue ODE, its fixed points and collapse threshold, and a
step-by-step SGD simulation of the linear network to check them against.

Set-up (the paper's section 3, with X = E[x xᵀ] = I and augmentation covariance
X' = σ² I). Online network z = W x (W: n2×n1), linear predictor W_p (n2×n2), target
W_a (EMA of W at rate β; SimSiam has W_a = W). Two views x1, x2 = x + σ ξ1,2 with
x ~ N(0, I), ξ ~ N(0, I), and the loss J = ½ E‖W_p W x1 − sg(W_a x2)‖². Gradient flow
with predictor learning-rate ratio α_p and weight decay η:

    Ẇ_p = α_p (−W_p W (1+σ²) + W_a) Wᵀ − η W_p
    Ẇ   = W_pᵀ (−W_p W (1+σ²) + W_a) − η W
    Ẇ_a = β (W − W_a)                       (SimSiam: W_a ≡ W)

Exact invariant (any β, any data, α_p = 1):
    d/dt (W_pᵀ W_p − W Wᵀ) = −2η (W_pᵀ W_p − W Wᵀ),
so W_pᵀW_p − WWᵀ = (W_pᵀW_p − WWᵀ)(0) · e^{−2ηt}. For general α_p the same holds for
W_pᵀW_p − α_p WWᵀ.

Eigenmode reduction (W_p symmetric, sharing eigenvectors with F = WWᵀ, W_a = τ W): a
mode with F-eigenvalue s and predictor eigenvalue p obeys

    ṡ = 2 p s [τ − (1+σ²) p] − 2η s
    ṗ = α_p s [τ − (1+σ²) p] − η p
    τ̇ = β (1 − τ) − τ (p [τ − (1+σ²) p] − η)      (τ ≡ 1 for SimSiam)

so s − p²/α_p ∝ e^{−2ηt}; on the invariant manifold s = p²/α_p (reached as t → ∞ when
η > 0) the predictor eigenvalue obeys the cubic ODE

    ṗ = p² [τ − (1+σ²) p] − η p,

with fixed points 0 and p± = [τ ± √(τ² − 4η(1+σ²))] / (2(1+σ²)). Non-trivial fixed
points exist iff η ≤ τ² / (4(1+σ²)). p = 0 and p₊ are stable, p₋ is unstable: p₀ > p₋
converges to p₊, p₀ < p₋ collapses to 0.

Every function is pure and jit/vmap-able in all float arguments; a whole phase diagram
is one jitted call (`tian_phase_diagram`).
"""
from __future__ import annotations

import functools
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxssl.dynamics import ode
from jaxssl.errors import ConfigError

__all__ = [
    "cubic_vector_field", "fixed_points", "collapse_threshold", "critical_eta",
    "predicts_collapse", "solve_cubic", "tian_phase_diagram",
    "eigenmode_vector_field", "solve_eigenmode",
    "LinearBYOLState", "init_state", "aligned_state", "matrix_vector_field",
    "solve_matrix_flow", "invariant", "mode_values", "expected_grads",
    "simulate_network",
]


def _as_arrays(args: tuple, dtype) -> tuple:
  # Python floats would be static under diffrax's filter_jit (a recompile per value);
  # arrays are traced. None (SimSiam's beta) stays None.
  return tuple(None if a is None else jnp.asarray(a, dtype) for a in args)


# --------------------------------------------------------------------------------------
# The cubic predictor-eigenvalue ODE.
# --------------------------------------------------------------------------------------

def cubic_vector_field(t: Any, p: jax.Array, args: Any) -> jax.Array:
  """ṗ = p²[τ − (1+σ²)p] − ηp, with `args = (eta, sigma2, tau)`."""
  del t
  eta, sigma2, tau = args
  return p * p * (tau - (1.0 + sigma2) * p) - eta * p


def fixed_points(eta: Any, sigma2: Any, tau: Any = 1.0) -> tuple[jax.Array, jax.Array]:
  """Non-trivial fixed points (p₋, p₊) of the cubic ODE; NaN where none exist."""
  eta, sigma2, tau = jnp.asarray(eta), jnp.asarray(sigma2), jnp.asarray(tau)
  disc = tau * tau - 4.0 * eta * (1.0 + sigma2)
  root = jnp.sqrt(jnp.where(disc >= 0, disc, jnp.nan))
  denom = 2.0 * (1.0 + sigma2)
  return (tau - root) / denom, (tau + root) / denom


def collapse_threshold(sigma2: Any, tau: Any = 1.0) -> jax.Array:
  """Largest weight decay with a non-trivial fixed point: τ² / (4(1+σ²))."""
  return jnp.asarray(tau) ** 2 / (4.0 * (1.0 + jnp.asarray(sigma2)))


def critical_eta(p0: Any, sigma2: Any, tau: Any = 1.0) -> jax.Array:
  """The weight decay below which p(0) = p0 converges to p₊ (and above which it → 0).

  p0 → p₊ iff p₋ < p0 (and p₋ exists), i.e. iff ṗ(p0) > 0 when p0 < τ/(2(1+σ²)), which
  is η < p0(τ − (1+σ²)p0); for p0 ≥ τ/(2(1+σ²)) it is the global threshold
  τ²/(4(1+σ²)).
  """
  p0, sigma2, tau = jnp.asarray(p0), jnp.asarray(sigma2), jnp.asarray(tau)
  mid = tau / (2.0 * (1.0 + sigma2))
  return jnp.where(p0 < mid, p0 * (tau - (1.0 + sigma2) * p0),
                   collapse_threshold(sigma2, tau))


def predicts_collapse(p0: Any, eta: Any, sigma2: Any, tau: Any = 1.0) -> jax.Array:
  """Closed-form prediction: does p(0) = p0 > 0 flow to 0 (True) or to p₊ (False)?"""
  return jnp.asarray(eta) >= critical_eta(p0, sigma2, tau)


def solve_cubic(p0: Any, eta: Any, sigma2: Any, tau: Any = 1.0, t1: Any = 500.0, *,
                saveat: Any = None, rtol: float = 1e-6, atol: float = 1e-9) -> jax.Array:
  """Integrates the cubic ODE from p(0) = p0 (diffrax Tsit5, adaptive).

  Returns p(t1) (a scalar) when `saveat` is None, else p at the times in `saveat`.
  """
  p0 = jnp.asarray(p0, dtype=jnp.result_type(float))
  eta, sigma2, tau, t1 = (jnp.asarray(a, p0.dtype) for a in (eta, sigma2, tau, t1))
  sol = ode.integrate(cubic_vector_field, p0, t1, (eta, sigma2, tau), saveat=saveat,
                      rtol=rtol, atol=atol)
  return sol.ys[-1] if saveat is None else sol.ys


def tian_phase_diagram(etas: Any, sigma2s: Any, p0s: Any, tau: Any = 1.0,
                       t1: Any = 500.0, *, rtol: float = 1e-6, atol: float = 1e-9,
                       collapse_frac: float = 0.5) -> dict[str, jax.Array]:
  """Final predictor eigenvalue on the (η × σ² × p0) grid, in one jitted vmapped call.

  Args:
    etas: [E] weight decays; sigma2s: [S] augmentation variances; p0s: [P] initial
      predictor eigenvalues; tau: EMA factor (1 for SimSiam); t1: integration time.
    collapse_frac: a run counts as collapsed when p(t1) < collapse_frac · p_ref, where
      p_ref is the stable non-trivial fixed point p₊ where it exists (a surviving run
      ends near it) and p0 where it does not (p then decreases monotonically to 0).

  Returns a dict of arrays: "p_final" [E, S, P], "collapsed" [E, S, P] (integration),
  "collapsed_theory" [E, S, P] (closed form, `predicts_collapse`), "threshold" [S]
  (τ²/(4(1+σ²))) and "p_plus" [E, S] (NaN where no non-trivial fixed point exists).
  """
  etas, sigma2s, p0s = (jnp.atleast_1d(jnp.asarray(a, jnp.result_type(float)))
                        for a in (etas, sigma2s, p0s))
  return _phase_diagram(etas, sigma2s, p0s, jnp.asarray(tau, etas.dtype),
                        jnp.asarray(t1, etas.dtype), rtol, atol, collapse_frac)


@functools.partial(jax.jit, static_argnums=(5, 6, 7))
def _phase_diagram(etas, sigma2s, p0s, tau, t1, rtol, atol, collapse_frac):
  def one(eta, sigma2, p0):
    return solve_cubic(p0, eta, sigma2, tau, t1, rtol=rtol, atol=atol)

  p_final = ode.grid_map(one, etas, sigma2s, p0s)
  _, p_plus = fixed_points(etas[:, None], sigma2s[None, :], tau)
  ref = jnp.where(jnp.isnan(p_plus[:, :, None]), p0s[None, None, :],
                  p_plus[:, :, None])
  collapsed = p_final < collapse_frac * ref
  theory = predicts_collapse(p0s[None, None, :], etas[:, None, None],
                             sigma2s[None, :, None], tau)
  return {"p_final": p_final, "collapsed": collapsed, "collapsed_theory": theory,
          "threshold": collapse_threshold(sigma2s, tau), "p_plus": p_plus}


# --------------------------------------------------------------------------------------
# Eigenmode system (s, p, τ).
# --------------------------------------------------------------------------------------

def eigenmode_vector_field(t: Any, y: Any, args: Any) -> Any:
  """Eigenmode ODE for y = (s, p, tau); args = (eta, sigma2, alpha_p, beta).

  `beta=None` (a static choice) is SimSiam: the target is the online network, τ ≡ its
  initial value (1 for SimSiam). The arrays may have any (common) shape: modes are
  independent.
  """
  del t
  s, p, tau = y
  eta, sigma2, alpha_p, beta = args
  gap = tau - (1.0 + sigma2) * p
  ds = 2.0 * p * s * gap - 2.0 * eta * s
  dp = alpha_p * s * gap - eta * p
  if beta is None:
    dtau = jnp.zeros_like(tau)
  else:
    dtau = beta * (1.0 - tau) - tau * (p * gap - eta)
  return ds, dp, dtau


def solve_eigenmode(s0: Any, p0: Any, eta: Any, sigma2: Any, alpha_p: Any = 1.0,
                    beta: Optional[Any] = None, tau0: Any = 1.0, t1: Any = 100.0, *,
                    saveat: Any = None, rtol: float = 1e-6,
                    atol: float = 1e-9) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Integrates the (s, p, τ) eigenmode ODE; returns (s, p, tau) at t1 or at `saveat`."""
  dtype = jnp.result_type(float)
  s0, p0 = jnp.asarray(s0, dtype), jnp.asarray(p0, dtype)
  tau0 = jnp.broadcast_to(jnp.asarray(tau0, dtype), jnp.broadcast_shapes(s0.shape,
                                                                         p0.shape))
  sol = ode.integrate(eigenmode_vector_field, (s0, p0, tau0), jnp.asarray(t1, dtype),
                      _as_arrays((eta, sigma2, alpha_p, beta), dtype), saveat=saveat,
                      rtol=rtol, atol=atol)
  if saveat is None:
    return tuple(y[-1] for y in sol.ys)
  return sol.ys


# --------------------------------------------------------------------------------------
# Matrix gradient flow and the step-by-step network.
# --------------------------------------------------------------------------------------

class LinearBYOLState(NamedTuple):
  """Weights of the linear BYOL network: online W [n2, n1], predictor Wp [n2, n2],
  target Wa [n2, n1] (equal to W for SimSiam)."""
  W: jax.Array
  Wp: jax.Array
  Wa: jax.Array


def init_state(key: jax.Array, n1: int, n2: int, *, scale: float = 0.5,
               predictor_scale: Optional[float] = None) -> LinearBYOLState:
  """Random Gaussian init: W, Wp ~ N(0, scale²/n) entries; Wa = W."""
  kw, kp = jax.random.split(key)
  predictor_scale = scale if predictor_scale is None else predictor_scale
  W = scale * jax.random.normal(kw, (n2, n1)) / jnp.sqrt(n1)
  Wp = predictor_scale * jax.random.normal(kp, (n2, n2)) / jnp.sqrt(n2)
  return LinearBYOLState(W, Wp, W)


def aligned_state(key: jax.Array, n1: int, s0: Any, p0: Any) -> LinearBYOLState:
  """An init that is exactly in the eigenmode form: W = U diag(√s0) Vᵀ[:n2],
  Wp = U diag(p0) Uᵀ with random orthogonal U, V. Then WWᵀ has eigenvalues s0 and
  the matrix flow (SimSiam, or EMA started at Wa = W) keeps U fixed, so each mode
  follows `eigenmode_vector_field` exactly."""
  s0, p0 = jnp.asarray(s0, jnp.result_type(float)), jnp.asarray(p0, jnp.result_type(float))
  n2 = s0.shape[0]
  if n2 > n1:
    raise ConfigError(f"aligned_state needs n2 <= n1, got n2={n2} modes and n1={n1}")
  ku, kv = jax.random.split(key)
  U, _ = jnp.linalg.qr(jax.random.normal(ku, (n2, n2)))
  V, _ = jnp.linalg.qr(jax.random.normal(kv, (n1, n1)))
  W = U @ (jnp.sqrt(s0)[:, None] * V[:, :n2].T)
  Wp = (U * p0[None, :]) @ U.T
  return LinearBYOLState(W, Wp, W)


def expected_grads(state: LinearBYOLState, sigma2: Any, simsiam: bool) -> tuple[jax.Array,
                                                                                jax.Array]:
  """Exact expected gradients (∂J/∂W, ∂J/∂Wp) of J = ½E‖Wp W x1 − Wa x2‖² (x ~ N(0,I))."""
  W, Wp, Wa = state
  Wa = W if simsiam else Wa
  resid = Wp @ W * (1.0 + sigma2) - Wa          # E[(Wp W x1 − Wa x2) x1ᵀ]
  return Wp.T @ resid, resid @ W.T


def matrix_vector_field(t: Any, y: LinearBYOLState, args: Any) -> LinearBYOLState:
  """Gradient flow of linear BYOL/SimSiam; args = (eta, sigma2, alpha_p, beta).

  `beta=None` is SimSiam (Wa ≡ W; the returned dWa equals dW so Wa tracks W when it
  starts equal to it).
  """
  del t
  eta, sigma2, alpha_p, beta = args
  simsiam = beta is None
  gW, gWp = expected_grads(y, sigma2, simsiam)
  dW = -gW - eta * y.W
  dWp = -alpha_p * gWp - eta * y.Wp
  dWa = dW if simsiam else beta * (y.W - y.Wa)
  return LinearBYOLState(dW, dWp, dWa)


def solve_matrix_flow(state0: LinearBYOLState, t1: Any, *, eta: Any, sigma2: Any,
                      alpha_p: Any = 1.0, beta: Optional[Any] = None,
                      saveat: Any = None, rtol: float = 1e-7,
                      atol: float = 1e-9) -> LinearBYOLState:
  """Integrates the matrix flow; returns the state at t1 (no leading axis) or stacked
  states at the times in `saveat` (leading axis len(saveat))."""
  dtype = state0.W.dtype
  sol = ode.integrate(matrix_vector_field, state0, jnp.asarray(t1, dtype),
                      _as_arrays((eta, sigma2, alpha_p, beta), dtype), saveat=saveat,
                      rtol=rtol, atol=atol)
  if saveat is None:
    return jax.tree_util.tree_map(lambda a: a[-1], sol.ys)
  return sol.ys


def invariant(state: LinearBYOLState, alpha_p: Any = 1.0) -> jax.Array:
  """Wpᵀ Wp − α_p W Wᵀ, which decays exactly as e^{−2ηt} under the flow."""
  return state.Wp.T @ state.Wp - alpha_p * state.W @ state.W.T


def mode_values(state: LinearBYOLState) -> tuple[jax.Array, jax.Array]:
  """(eigenvalues of WWᵀ, eigenvalues of the symmetric part of Wp), both ascending.
  Works on stacked states (leading axes)."""
  W, Wp = state.W, state.Wp
  s = jnp.linalg.eigvalsh(W @ jnp.swapaxes(W, -1, -2))
  p = jnp.linalg.eigvalsh(0.5 * (Wp + jnp.swapaxes(Wp, -1, -2)))
  return s, p


def simulate_network(key: jax.Array, state0: LinearBYOLState, *, eta: Any, sigma2: Any,
                     lr: Any, steps: int, alpha_p: Any = 1.0, beta: Optional[Any] = None,
                     batch_size: int = 1024, expected: bool = False,
                     save_every: int = 1) -> LinearBYOLState:
  """Trains the linear network step by step with SGD (`lax.scan`), as in practice.

  Each step draws x ~ N(0, I) [batch, n1] and two views x + σξ, computes the loss
  J = ½ mean‖Wp W x1 − sg(Wa x2)‖² with `jax.grad`, and applies
  W ← W − lr(∂J/∂W + ηW), Wp ← Wp − lr(α_p ∂J/∂Wp + ηWp), and the target update
  Wa ← Wa + lr·β(W − Wa) (Wa ← W for SimSiam, `beta=None`). With `expected=True` the
  exact expected gradient replaces the sampled one (this is explicit Euler on the
  matrix flow). Time in the ODE corresponds to `lr * step`.

  Returns the states after steps 0, save_every, 2·save_every, ... (stacked; the
  initial state first), `steps // save_every + 1` of them.
  """
  if steps % save_every:
    raise ConfigError(f"steps={steps} must be a multiple of save_every={save_every}")
  simsiam = beta is None
  sigma = jnp.sqrt(jnp.asarray(sigma2))
  n1 = state0.W.shape[1]

  def loss(W, Wp, Wa, x1, x2):
    Wa = jax.lax.stop_gradient(W if simsiam else Wa)
    r = x1 @ W.T @ Wp.T - x2 @ Wa.T
    return 0.5 * jnp.mean(jnp.sum(r * r, axis=-1))

  grad_fn = jax.grad(loss, argnums=(0, 1))

  def step(state, k):
    if expected:
      gW, gWp = expected_grads(state, sigma2, simsiam)
    else:
      kx, k1, k2 = jax.random.split(k, 3)
      x = jax.random.normal(kx, (batch_size, n1))
      x1 = x + sigma * jax.random.normal(k1, x.shape)
      x2 = x + sigma * jax.random.normal(k2, x.shape)
      gW, gWp = grad_fn(state.W, state.Wp, state.Wa, x1, x2)
    W = state.W - lr * (gW + eta * state.W)
    Wp = state.Wp - lr * (alpha_p * gWp + eta * state.Wp)
    Wa = W if simsiam else state.Wa + lr * beta * (state.W - state.Wa)
    return LinearBYOLState(W, Wp, Wa), None

  def block(state, k):
    state, _ = jax.lax.scan(step, state, jax.random.split(k, save_every))
    return state, state

  _, traj = jax.lax.scan(block, state0, jax.random.split(key, steps // save_every))
  return jax.tree_util.tree_map(lambda a0, a: jnp.concatenate([a0[None], a]), state0,
                                traj)
