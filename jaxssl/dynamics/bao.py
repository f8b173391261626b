"""Feature normalisation prevents collapse: linear SimSiam with the cosine vs the L2
loss under weight decay (Bao, arXiv 2309.16109 / Neural Computation 2025; PAPERS.md
section F). Direct simulation of the linear network, the eigenmode ODE of the cosine
loss derived here under the concentrated-norm assumption (docs/dynamics.md), the exact
norm invariants, and the regime diagram (quasi-static equilibria vs the norms).

Set-up. Encoder Φ (h×d), symmetric predictor Ψ (h×h), x ~ N(0, I_d), two views
x1,2 = x + σξ1,2 (σ² = augmentation strength), online p = ΨΦx1, target t = sg(Φx2),
weight decay ρ on Φ and Ψ (Φ̇ = −∇_Φ L − ρΦ, Ψ̇ = −sym ∇_Ψ L − ρΨ). Losses (one
direction, as in `tian`):
    "l2":     L = ½ E‖p − t‖²
    "cosine": L = E[1 − cos(p, t)]            (= ½ E‖p/‖p‖ − t/‖t‖‖²)

Eigenmodes. With ΦΦᵀ = U diag(s) Uᵀ and Ψ = U diag(p) Uᵀ (aligned), g := 1 + σ²:
    L2 (Tian's system, τ = 1, α_p = 1):
        ṡ_k = 2 p_k s_k (1 − g p_k) − 2ρ s_k,      ṗ_k = s_k (1 − g p_k) − ρ p_k
    cosine (concentrated norms: ‖p‖, ‖t‖, ⟨p, t⟩ replaced by their root-mean-square /
    mean values, exact as h → ∞):
        ṡ_k = 2a p_k s_k (1 − κ p_k) − 2ρ s_k,     ṗ_k = a s_k (1 − κ p_k) − ρ p_k
        a = 1 / (g √(Σ_j p_j² s_j · Σ_j s_j)),      κ = Σ_j p_j s_j / Σ_j p_j² s_j,
i.e. the L2 system with the rate rescaled by a and the variance g replaced by κ.

Exact facts (tested):
  * cosine, any data, per batch: the loss is scale-invariant in Φ and in Ψ, so
    ⟨Φ, ∇_Φ L⟩ = ⟨Ψ, ∇_Ψ L⟩ = 0 and under gradient flow ‖Φ‖_F² and ‖Ψ‖_F² decay exactly
    as e^{−2ρt}; for ρ = 0, tr(ΦΦᵀ) = ‖Φ‖_F² is conserved. Under GD with step η the
    identity is ‖Φ_{k+1}‖² = (1 − ηρ)²‖Φ_k‖² + η²‖∇L‖², so the norm settles where
    weight decay balances the η² term (‖Φ‖ ≈ 0.21 in PAPERS.md's run).
  * The cosine eigenmode ODE keeps both: Σ_k ṡ_k = −2ρ Σ s, Σ_k d(p_k²)/dt = −2ρ Σ p²,
    and per mode d(p_k² − s_k)/dt = −2ρ(p_k² − s_k).
  * Weight decay only reparametrises time for the cosine eigenmodes: in relative
    coordinates S_k = h s_k/Σs, P_k = √h p_k/√Σp² (`relative_modes`) the flow with
    weight decay ρ at time t equals the ρ = 0 flow at τ = (e^{2ρt} − 1)/(2ρ)
    (`reparametrised_time`): the direction rates scale as 1/‖Φ‖² and 1/‖Ψ‖², which
    both grow as e^{2ρt}.

Regime diagram (quasi-static: the norms N_Φ = ‖Φ‖_F, N_Ψ = ‖Ψ‖_F frozen, all other
modes isotropic). A mode (S, P) then obeys
    Ṡ = 2PS(1 − P)/(g N_Φ²) − 2ρS,        Ṗ = S(1 − P)/(g N_Ψ²) − ρP,
whose equilibria are the collapsed (0, 0) (always stable) and, iff
N_Φ² ≤ 1/(4ρg) (`norm_threshold`), P± = [1 ± √(1 − 4ρg N_Φ²)]/2 with
S± = (N_Ψ/N_Φ)² P±²; P₊ is stable, P₋ a saddle. This is Tian's L2 cubic with the weight
decay rescaled to ρ N_Φ²: as weight decay shrinks the norms the non-collapsed
equilibrium appears even where initially only the collapsed one exists. Three regimes
in the (N_Φ, P) plane (`regime`): 0 = only the collapsed equilibrium (N_Φ above the
threshold), 1 = bistable but the mode below the separatrix P₋ (collapses), 2 = bistable
and the mode above P₋ (→ P₊).

Everything is pure and jit/vmap-able over ρ and σ² (`network_phase_diagram` and
`regime_diagram` are single vmapped calls).
"""
from __future__ import annotations

import functools
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxssl.dynamics import ode, tian
from jaxssl.errors import ConfigError

__all__ = [
    "LOSSES", "LinearSimSiamState", "init_state", "aligned_state", "sample_views",
    "loss_fn", "grads", "simulate_network", "network_phase_diagram",
    "matrix_vector_field", "solve_matrix_flow", "norms", "mode_values",
    "participation_ratio", "relative_modes",
    "l2_threshold", "mode_coefficients", "l2_vector_field", "cosine_vector_field",
    "vector_field", "solve_eigenmodes", "reparametrised_time",
    "norm_threshold", "quasi_static_vector_field", "equilibria", "regime",
    "regime_diagram",
]

LOSSES = ("l2", "cosine")


def _check_loss(loss: str) -> None:
  if loss not in LOSSES:
    raise ConfigError(f"unknown loss {loss!r}; expected one of {LOSSES}")


def _check_pos_int(fn: str, name: str, v: Any) -> None:
  if not isinstance(v, int) or isinstance(v, bool) or v < 1:
    raise ConfigError(f"{fn}: {name} must be a positive int, got {v!r}")


def _check_nonneg(fn: str, name: str, v: Any) -> None:
  # Only concrete Python numbers can be checked before tracing.
  if isinstance(v, (int, float)) and not v >= 0:
    raise ConfigError(f"{fn}: {name} must be >= 0, got {v!r}")


def _sym(a: jax.Array) -> jax.Array:
  return 0.5 * (a + jnp.swapaxes(a, -1, -2))


# --------------------------------------------------------------------------------------
# The linear network.
# --------------------------------------------------------------------------------------

class LinearSimSiamState(NamedTuple):
  """Encoder `phi` [h, d] and symmetric predictor `psi` [h, h]."""
  phi: jax.Array
  psi: jax.Array


def init_state(key: jax.Array, d: int, h: int, *, scale: float = 1.0,
               psi_noise: float = 0.2) -> LinearSimSiamState:
  """Φ ~ N(0, scale²/d) entries (E ΦΦᵀ = scale² I); Ψ = scale·(I + psi_noise·G) with G
  symmetric Gaussian, entries N(0, 1/h) (predictor eigenvalues ≈ scale, all > 0 for
  psi_noise ≲ 0.5, so no mode starts on the collapsing side p < 0)."""
  _check_pos_int("init_state", "d", d)
  _check_pos_int("init_state", "h", h)
  if h > d:
    raise ConfigError(f"init_state needs h <= d, got h={h}, d={d}")
  kf, kp = jax.random.split(key)
  phi = scale * jax.random.normal(kf, (h, d)) / jnp.sqrt(d)
  g = jax.random.normal(kp, (h, h)) / jnp.sqrt(h)
  psi = scale * (jnp.eye(h) + psi_noise * _sym(g) * jnp.sqrt(2.0))
  return LinearSimSiamState(phi, psi)


def aligned_state(key: jax.Array, d: int, s0: Any, p0: Any) -> LinearSimSiamState:
  """Φ = U diag(√s0) V[:, :h]ᵀ, Ψ = U diag(p0) Uᵀ with random orthogonal U, V: exactly the
  eigenmode form (ΦΦᵀ has eigenvalues s0 [h], Ψ has p0 [h], shared eigenvectors)."""
  s0 = jnp.asarray(s0, jnp.result_type(float))
  p0 = jnp.asarray(p0, s0.dtype)
  h = s0.shape[0]
  if s0.shape != p0.shape or s0.ndim != 1:
    raise ConfigError(f"aligned_state: s0 and p0 must be 1-D of equal length, got "
                      f"{s0.shape} and {p0.shape}")
  if h > d:
    raise ConfigError(f"aligned_state needs h <= d, got h={h} modes and d={d}")
  ku, kv = jax.random.split(key)
  U, _ = jnp.linalg.qr(jax.random.normal(ku, (h, h)))
  V, _ = jnp.linalg.qr(jax.random.normal(kv, (d, d)))
  phi = U @ (jnp.sqrt(s0)[:, None] * V[:, :h].T)
  psi = (U * p0[None, :]) @ U.T
  return LinearSimSiamState(phi, psi)


def sample_views(key: jax.Array, n: int, d: int, sigma2: Any) -> tuple[jax.Array, jax.Array]:
  """x ~ N(0, I_d) [n, d] and two views x + σξ1, x + σξ2 (σ² may be traced)."""
  kx, k1, k2 = jax.random.split(key, 3)
  sigma = jnp.sqrt(jnp.asarray(sigma2))
  x = jax.random.normal(kx, (n, d))
  return (x + sigma * jax.random.normal(k1, x.shape),
          x + sigma * jax.random.normal(k2, x.shape))


def loss_fn(state: LinearSimSiamState, x1: jax.Array, x2: jax.Array, *,
            loss: str) -> jax.Array:
  """Mean loss over the batch (x1, x2: [n, d]); Ψ enters through its symmetric part.

  p = ΨΦx1 (online), t = sg(Φx2) (target). "l2": ½‖p − t‖²; "cosine": 1 − cos(p, t).
  """
  _check_loss(loss)
  psi = _sym(state.psi)
  p = x1 @ state.phi.T @ psi                       # [n, h] (Ψ symmetric)
  t = jax.lax.stop_gradient(x2 @ state.phi.T)      # [n, h]
  if loss == "l2":
    return 0.5 * jnp.mean(jnp.sum((p - t) ** 2, axis=-1))
  cos = jnp.sum(p * t, -1) / (jnp.linalg.norm(p, axis=-1) * jnp.linalg.norm(t, axis=-1))
  return jnp.mean(1.0 - cos)


def grads(state: LinearSimSiamState, x1: jax.Array, x2: jax.Array, *,
          loss: str) -> LinearSimSiamState:
  """(∇_Φ L, sym ∇_Ψ L) of `loss_fn` (the Ψ gradient is symmetric, so Ψ stays symmetric)."""
  g = jax.grad(functools.partial(loss_fn, loss=loss))(state, x1, x2)
  return LinearSimSiamState(g.phi, _sym(g.psi))


def simulate_network(key: jax.Array, state0: LinearSimSiamState, *, loss: str, rho: Any,
                     sigma2: Any, lr: Any, steps: int, batch_size: int = 1024,
                     save_every: int = 1) -> LinearSimSiamState:
  """Trains the linear SimSiam step by step (`lax.scan`): each step draws a fresh batch
  x ~ N(0, I) [batch_size, d] with two views x + σξ, and applies
  Φ ← Φ − lr(∇_Φ L + ρΦ), Ψ ← Ψ − lr(sym ∇_Ψ L + ρΨ). ODE time is t = lr·step.
  `rho`, `sigma2`, `lr` may be traced (vmap over them); `loss` is static.

  Returns the states after steps 0, save_every, 2·save_every, … stacked
  (`steps // save_every + 1` of them; leading axis on `phi` and `psi`).
  """
  _check_loss(loss)
  for name, v in (("steps", steps), ("batch_size", batch_size), ("save_every", save_every)):
    _check_pos_int("simulate_network", name, v)
  if steps % save_every:
    raise ConfigError(f"steps={steps} must be a multiple of save_every={save_every}")
  _check_nonneg("simulate_network", "rho", rho)
  _check_nonneg("simulate_network", "sigma2", sigma2)
  d = state0.phi.shape[1]

  def step(state, k):
    x1, x2 = sample_views(k, batch_size, d, sigma2)
    g = grads(state, x1, x2, loss=loss)
    return jax.tree_util.tree_map(lambda w, gw: w - lr * (gw + rho * w), state, g), None

  def block(state, k):
    state, _ = jax.lax.scan(step, state, jax.random.split(k, save_every))
    return state, state

  _, traj = jax.lax.scan(block, state0, jax.random.split(key, steps // save_every))
  return jax.tree_util.tree_map(lambda a0, a: jnp.concatenate([a0[None], a]), state0, traj)


def norms(state: LinearSimSiamState) -> tuple[jax.Array, jax.Array]:
  """(‖Φ‖_F, ‖Ψ‖_F); works on stacked states."""
  return (jnp.linalg.norm(state.phi, axis=(-2, -1)),
          jnp.linalg.norm(state.psi, axis=(-2, -1)))


def mode_values(state: LinearSimSiamState) -> tuple[jax.Array, jax.Array]:
  """(eigenvalues s of ΦΦᵀ, eigenvalues p of sym Ψ), both ascending; stacked-state safe."""
  phi = state.phi
  s = jnp.linalg.eigvalsh(phi @ jnp.swapaxes(phi, -1, -2))
  p = jnp.linalg.eigvalsh(_sym(state.psi))
  return s, p


def participation_ratio(eigs: jax.Array) -> jax.Array:
  """(Σλ)² / Σλ² over the last axis: h for an isotropic spectrum, 1 for rank one."""
  eigs = jnp.maximum(eigs, 0.0)
  return jnp.sum(eigs, -1) ** 2 / jnp.sum(eigs ** 2, -1)


def relative_modes(s: jax.Array, p: jax.Array) -> tuple[jax.Array, jax.Array]:
  """S_k = h s_k / Σ_j s_j and P_k = √h p_k / √(Σ_j p_j²) (modes on the last axis): the
  modes relative to an isotropic background of the same norms (background = 1)."""
  h = s.shape[-1]
  S = h * s / jnp.sum(s, -1, keepdims=True)
  P = jnp.sqrt(h) * p / jnp.sqrt(jnp.sum(p * p, -1, keepdims=True))
  return S, P


@functools.partial(jax.jit, static_argnames=("loss", "steps", "batch_size"))
def _phase_grid(key, state0, rhos, sigma2s, lr, *, loss, steps, batch_size):
  def one(rho, sigma2):
    traj = simulate_network(key, state0, loss=loss, rho=rho, sigma2=sigma2, lr=lr,
                            steps=steps, batch_size=batch_size, save_every=steps)
    final = jax.tree_util.tree_map(lambda a: a[-1], traj)
    n_phi, n_psi = norms(final)
    s, _ = mode_values(final)
    return n_phi, n_psi, participation_ratio(s)
  return ode.grid_map(one, rhos, sigma2s)


def network_phase_diagram(key: jax.Array, state0: LinearSimSiamState, rhos: Any,
                          sigma2s: Any, *, loss: str, lr: Any = 0.05, steps: int = 2000,
                          batch_size: int = 256,
                          collapse_frac: float = 1e-3) -> dict[str, jax.Array]:
  """Trains the network on the (ρ × σ²) grid in one jitted, vmapped call (same init and
  batches at every grid point) and classifies collapse.

  A run is "collapsed" when ‖Φ_T‖_F < collapse_frac·‖Φ_0‖_F. Theory ("collapsed_theory"):
  L2 — ρ > 1/(4(1+σ²)) (Tian's threshold; valid for predictor eigenvalues starting
  above p₋, as with `init_state`); cosine — the final norm lies in the collapsed-only
  regime, N_Φ² > 1/(4ρ(1+σ²)) (`norm_threshold`).

  Returns "norm_phi", "norm_psi", "participation_ratio", "collapsed",
  "collapsed_theory" (all [R, S]) and "threshold" [S] (the L2 threshold).
  """
  _check_loss(loss)
  rhos = jnp.atleast_1d(jnp.asarray(rhos, jnp.result_type(float)))
  sigma2s = jnp.atleast_1d(jnp.asarray(sigma2s, rhos.dtype))
  n_phi, n_psi, pr = _phase_grid(key, state0, rhos, sigma2s, jnp.asarray(lr, rhos.dtype),
                                 loss=loss, steps=steps, batch_size=batch_size)
  n0, _ = norms(state0)
  collapsed = n_phi < collapse_frac * n0
  if loss == "l2":
    theory = rhos[:, None] > l2_threshold(sigma2s)[None, :]
  else:
    theory = n_phi > norm_threshold(rhos[:, None], sigma2s[None, :])
  return {"norm_phi": n_phi, "norm_psi": n_psi, "participation_ratio": pr,
          "collapsed": collapsed, "collapsed_theory": theory,
          "threshold": l2_threshold(sigma2s)}


# --------------------------------------------------------------------------------------
# Gradient flow of the network on a fixed sample (exact invariants).
# --------------------------------------------------------------------------------------

def matrix_vector_field(loss: str):
  """The gradient-flow field `f(t, state, (x1, x2, rho))` of the mean `loss` on a fixed
  sample x1, x2 [n, d]: Φ̇ = −∇_Φ L − ρΦ, Ψ̇ = −sym ∇_Ψ L − ρΨ."""
  _check_loss(loss)
  return functools.partial(_matrix_field, loss=loss)


def _matrix_field(t, y, args, *, loss):
  del t
  x1, x2, rho = args
  g = grads(y, x1, x2, loss=loss)
  return jax.tree_util.tree_map(lambda gw, w: -gw - rho * w, g, y)


def solve_matrix_flow(state0: LinearSimSiamState, x1: jax.Array, x2: jax.Array, t1: Any,
                      *, loss: str, rho: Any, saveat: Any = None, rtol: float = 1e-6,
                      atol: float = 1e-8) -> LinearSimSiamState:
  """Integrates Φ̇ = −∇_Φ L − ρΦ, Ψ̇ = −sym∇_Ψ L − ρΨ for the mean loss on the fixed views
  (x1, x2) [n, d] (diffrax Tsit5). Returns the state at t1, or stacked states at the
  times in `saveat`. For "cosine", ‖Φ(t)‖² = ‖Φ(0)‖² e^{−2ρt} exactly (any sample)."""
  _check_loss(loss)
  dtype = state0.phi.dtype
  sol = ode.integrate(matrix_vector_field(loss), state0,
                      jnp.asarray(t1, dtype), (x1, x2, jnp.asarray(rho, dtype)),
                      saveat=saveat, rtol=rtol, atol=atol)
  if saveat is None:
    return jax.tree_util.tree_map(lambda a: a[-1], sol.ys)
  return sol.ys


# --------------------------------------------------------------------------------------
# Eigenmode ODEs.  y = (s [..., h], p [..., h]); args = (rho, sigma2).
# --------------------------------------------------------------------------------------

def l2_threshold(sigma2: Any) -> jax.Array:
  """L2 collapse threshold 1/(4(1+σ²)) (0.19231 at σ² = 0.3)."""
  return tian.collapse_threshold(sigma2, 1.0)


def l2_vector_field(t: Any, y: Any, args: Any) -> Any:
  """L2: ṡ = 2ps(1 − gp) − 2ρs, ṗ = s(1 − gp) − ρp, g = 1+σ² (Tian, τ = 1, α_p = 1)."""
  s, p = y
  rho, sigma2 = args
  ds, dp, _ = tian.eigenmode_vector_field(t, (s, p, jnp.ones_like(s)),
                                          (rho, sigma2, 1.0, None))
  return ds, dp


def mode_coefficients(s: jax.Array, p: jax.Array, sigma2: Any) -> tuple[jax.Array, jax.Array]:
  """Concentrated-norm coefficients of the cosine flow (modes on the last axis):
  a = 1/((1+σ²)√(Σp²s·Σs)) (= 1/(E‖p‖·E‖t‖)) and κ = Σps/Σp²s (= (1+σ²)⟨p,t⟩/E‖p‖²),
  each with a trailing singleton axis."""
  s_sum = jnp.sum(s, -1, keepdims=True)
  ps = jnp.sum(p * s, -1, keepdims=True)
  pps = jnp.sum(p * p * s, -1, keepdims=True)
  a = 1.0 / ((1.0 + sigma2) * jnp.sqrt(pps * s_sum))
  return a, ps / pps


def cosine_vector_field(t: Any, y: Any, args: Any) -> Any:
  """Cosine: ṡ_k = 2a p_k s_k(1 − κp_k) − 2ρs_k, ṗ_k = a s_k(1 − κp_k) − ρp_k, with the
  coupling (a, κ) of `mode_coefficients` (modes on the last axis)."""
  del t
  s, p = y
  rho, sigma2 = args
  a, kappa = mode_coefficients(s, p, sigma2)
  gap = a * s * (1.0 - kappa * p)
  return 2.0 * p * gap - 2.0 * rho * s, gap - rho * p


def vector_field(loss: str):
  """The eigenmode vector field `f(t, (s, p), (rho, sigma2))` of `loss`."""
  _check_loss(loss)
  return l2_vector_field if loss == "l2" else cosine_vector_field


def solve_eigenmodes(s0: Any, p0: Any, t1: Any, *, loss: str, rho: Any, sigma2: Any,
                     saveat: Any = None, rtol: float = 1e-6,
                     atol: float = 1e-9) -> tuple[jax.Array, jax.Array]:
  """Integrates the eigenmode ODE from (s0, p0) [h]; returns (s, p) at t1 ([h]) or at the
  times in `saveat` ([T, h])."""
  _check_loss(loss)
  s0 = jnp.asarray(s0, jnp.result_type(float))
  p0 = jnp.asarray(p0, s0.dtype)
  if s0.shape != p0.shape:
    raise ConfigError(f"solve_eigenmodes: s0 {s0.shape} and p0 {p0.shape} differ in shape")
  sol = ode.integrate(vector_field(loss), (s0, p0), jnp.asarray(t1, s0.dtype),
                      (jnp.asarray(rho, s0.dtype), jnp.asarray(sigma2, s0.dtype)),
                      saveat=saveat, rtol=rtol, atol=atol)
  if saveat is None:
    return sol.ys[0][-1], sol.ys[1][-1]
  return sol.ys


def reparametrised_time(t: Any, rho: Any) -> jax.Array:
  """τ(t) = (e^{2ρt} − 1)/(2ρ) (= t at ρ = 0): the cosine flow with weight decay ρ, in
  relative coordinates, at time t equals the ρ = 0 flow at τ(t)."""
  t, rho = jnp.asarray(t), jnp.asarray(rho)
  safe = jnp.where(rho == 0, 1.0, rho)
  return jnp.where(rho == 0, t, jnp.expm1(2.0 * safe * t) / (2.0 * safe))


# --------------------------------------------------------------------------------------
# Regime diagram (quasi-static equilibria vs the norms).
# --------------------------------------------------------------------------------------

def norm_threshold(rho: Any, sigma2: Any) -> jax.Array:
  """N_c = 1/√(4ρ(1+σ²)): a non-collapsed quasi-static equilibrium exists iff ‖Φ‖_F ≤ N_c
  (+inf at ρ = 0)."""
  rho, sigma2 = jnp.asarray(rho), jnp.asarray(sigma2)
  return 1.0 / jnp.sqrt(4.0 * rho * (1.0 + sigma2))


def quasi_static_vector_field(t: Any, y: Any, args: Any) -> Any:
  """One relative mode (S, P) in an isotropic background with frozen norms:
  Ṡ = 2PS(1 − P)/(gN_Φ²) − 2ρS, Ṗ = S(1 − P)/(gN_Ψ²) − ρP;
  args = (n_phi, n_psi, rho, sigma2)."""
  del t
  S, P = y
  n_phi, n_psi, rho, sigma2 = args
  g = 1.0 + sigma2
  return (2.0 * P * S * (1.0 - P) / (g * n_phi ** 2) - 2.0 * rho * S,
          S * (1.0 - P) / (g * n_psi ** 2) - rho * P)


def _jacobian_max_real(S, P, n_phi, n_psi, rho, sigma2):
  g = 1.0 + sigma2
  A, B = 1.0 / (g * n_phi ** 2), 1.0 / (g * n_psi ** 2)
  j11 = 2.0 * A * P * (1.0 - P) - 2.0 * rho
  j12 = 2.0 * A * S * (1.0 - 2.0 * P)
  j21 = B * (1.0 - P)
  j22 = -B * S - rho
  tr, det = j11 + j22, j11 * j22 - j12 * j21
  disc = tr * tr - 4.0 * det
  root = jnp.sqrt(jnp.abs(disc))
  return jnp.where(disc >= 0, 0.5 * (tr + root), 0.5 * tr)


def equilibria(n_phi: Any, n_psi: Any, rho: Any, sigma2: Any, h: int) -> dict[str, jax.Array]:
  """Quasi-static equilibria of a mode for frozen norms N_Φ = ‖Φ‖_F, N_Ψ = ‖Ψ‖_F.

  Relative: P± = [1 ± √(1 − 4ρ(1+σ²)N_Φ²)]/2, S± = (N_Ψ/N_Φ)² P±² (NaN above the norm
  threshold). Absolute eigenvalues: p± = N_Ψ P±/√h, s± = N_Φ² S±/h = p±². Also the
  largest real part of the Jacobian eigenvalues at each ("growth_plus" < 0: stable,
  "growth_minus" > 0: saddle, "growth_zero" = −ρ at the collapsed point), the
  threshold N_c and "regime_exists" (1 where the non-zero equilibria exist, else 0).
  Broadcasts over all float arguments (jit/vmap-able).
  """
  _check_pos_int("equilibria", "h", h)
  n_phi, n_psi, rho, sigma2 = (jnp.asarray(a, jnp.result_type(float))
                               for a in (n_phi, n_psi, rho, sigma2))
  disc = 1.0 - 4.0 * rho * (1.0 + sigma2) * n_phi ** 2
  root = jnp.sqrt(jnp.where(disc >= 0, disc, jnp.nan))
  P_plus, P_minus = 0.5 * (1.0 + root), 0.5 * (1.0 - root)
  ratio = (n_psi / n_phi) ** 2
  S_plus, S_minus = ratio * P_plus ** 2, ratio * P_minus ** 2
  sqh = jnp.sqrt(jnp.asarray(h, n_phi.dtype))
  p_plus, p_minus = n_psi * P_plus / sqh, n_psi * P_minus / sqh
  return {
      "P_plus": P_plus, "P_minus": P_minus, "S_plus": S_plus, "S_minus": S_minus,
      "p_plus": p_plus, "p_minus": p_minus, "s_plus": p_plus ** 2, "s_minus": p_minus ** 2,
      "growth_plus": _jacobian_max_real(S_plus, P_plus, n_phi, n_psi, rho, sigma2),
      "growth_minus": _jacobian_max_real(S_minus, P_minus, n_phi, n_psi, rho, sigma2),
      "growth_zero": -rho * jnp.ones_like(n_phi),
      "norm_threshold": norm_threshold(rho, sigma2),
      "regime_exists": (disc >= 0).astype(jnp.int32),
  }


def regime(n_phi: Any, P: Any, rho: Any, sigma2: Any) -> jax.Array:
  """0: only the collapsed equilibrium (N_Φ > N_c); 1: bistable, mode below the
  separatrix P₋ (collapses); 2: bistable, mode above P₋ (→ P₊). Balanced modes
  (s = p², the invariant manifold), quasi-static norms."""
  n_phi, P = jnp.asarray(n_phi), jnp.asarray(P)
  disc = 1.0 - 4.0 * jnp.asarray(rho) * (1.0 + jnp.asarray(sigma2)) * n_phi ** 2
  P_minus = 0.5 * (1.0 - jnp.sqrt(jnp.maximum(disc, 0.0)))
  return jnp.where(disc < 0, 0, jnp.where(P < P_minus, 1, 2)).astype(jnp.int32)


def regime_diagram(n_phis: Any, n_psis: Any, rho: Any, sigma2: Any, h: int,
                   P0: Optional[Any] = None) -> dict[str, jax.Array]:
  """`equilibria` on the outer-product grid N_Φ [A] × N_Ψ [B] (one vmapped call; every
  field [A, B]). With `P0` (a relative mode size), adds "regime" [A, B] (`regime`)."""
  _check_pos_int("regime_diagram", "h", h)
  n_phis = jnp.atleast_1d(jnp.asarray(n_phis, jnp.result_type(float)))
  n_psis = jnp.atleast_1d(jnp.asarray(n_psis, n_phis.dtype))
  if bool(jnp.any(n_phis <= 0)) or bool(jnp.any(n_psis <= 0)):
    raise ConfigError("regime_diagram: norms must be > 0")
  rho = jnp.asarray(rho, n_phis.dtype)
  sigma2 = jnp.asarray(sigma2, n_phis.dtype)
  out = ode.grid_map(lambda a, b: equilibria(a, b, rho, sigma2, h), n_phis, n_psis)
  if P0 is not None:
    out["regime"] = regime(n_phis[:, None] * jnp.ones_like(n_psis)[None, :], P0, rho, sigma2)
  return out
