"""Shared ODE-integration helpers for the learning-dynamics simulators (diffrax).

Every simulator in `jaxssl.dynamics` writes its theory as a diffrax-style vector field
`f(t, y, args) -> dy/dt` (`y` and `args` may be any pytrees) and integrates it with
`integrate`. All helpers are pure functions of arrays, so they can be wrapped in
`jax.jit` and `jax.vmap` freely: a whole phase diagram is one call of `grid_map`
(nested `vmap` over the outer product of hyperparameter axes) around `integrate`.

Stable API (other modules import it; the signatures are fixed):

* `integrate(vector_field, y0, t1, args=None, *, t0, saveat, rtol, atol, solver,
  stepsize_controller, dt0, max_steps, dense, event, throw)` -- adaptive solve
  (Tsit5 + PID controller by default) from `t0` to `t1`; returns the
  `diffrax.Solution` (`.ts`, `.ys`, `.stats`, `.result`, `.evaluate` with
  `dense=True`).
* `grid_map(fn, *axes)` -- evaluates `fn` on the outer-product grid of 1-D axes with
  nested `vmap`; every output leaf gets leading shape `(len(a0), len(a1), ...)`.
* `crossing_time(vector_field, y0, t1, args, cond_fn, *, ...)` -- first time at which
  a scalar function of the state crosses zero (diffrax `Event` + Newton root find on
  the step's interpolant); `inf` if it never does before `t1`.
* `DEFAULT_RTOL`, `DEFAULT_ATOL`, `DEFAULT_MAX_STEPS` -- the defaults.

Precision: the solve runs in the dtype of `y0`. In float32 (JAX's default) keep
`rtol >= ~1e-6`; tighter tolerances only make sense with `jax_enable_x64`.

Compilation: diffrax jits `diffeqsolve` with equinox's `filter_jit`, which treats Python
floats in `args` / `t1` as *static* (one compile, 1-3 s on CPU, per distinct value).
Pass `jnp` arrays for anything that varies between calls.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import diffrax
import jax
import jax.numpy as jnp
import optimistix as optx

from jaxssl.errors import ConfigError

__all__ = ["DEFAULT_RTOL", "DEFAULT_ATOL", "DEFAULT_MAX_STEPS", "integrate",
           "grid_map", "crossing_time"]

DEFAULT_RTOL = 1e-6
DEFAULT_ATOL = 1e-8
DEFAULT_MAX_STEPS = 65_536

VectorField = Callable[[Any, Any, Any], Any]


def _make_saveat(saveat: Any, dense: bool) -> diffrax.SaveAt:
  if isinstance(saveat, diffrax.SaveAt):
    if dense:
      raise ConfigError("integrate: pass dense=True only with saveat=None or an array "
                        "of times, not together with a diffrax.SaveAt")
    return saveat
  if saveat is None:
    return diffrax.SaveAt(t1=True, dense=dense)
  ts = jnp.asarray(saveat)
  if ts.ndim != 1:
    raise ConfigError(f"integrate: saveat must be a 1-D array of times, got shape "
                      f"{ts.shape}")
  return diffrax.SaveAt(ts=ts, dense=dense)


def integrate(vector_field: VectorField, y0: Any, t1: Any, args: Any = None, *,
              t0: Any = 0.0,
              saveat: Any = None,
              rtol: float = DEFAULT_RTOL,
              atol: float = DEFAULT_ATOL,
              solver: Optional[diffrax.AbstractSolver] = None,
              stepsize_controller: Optional[diffrax.AbstractStepSizeController] = None,
              dt0: Any = None,
              max_steps: int = DEFAULT_MAX_STEPS,
              dense: bool = False,
              event: Optional[diffrax.Event] = None,
              throw: bool = True) -> diffrax.Solution:
  """Integrates `dy/dt = vector_field(t, y, args)` from `t0` to `t1`.

  Args:
    vector_field: `f(t, y, args)` returning a pytree shaped like `y`.
    y0: initial state (any pytree of float arrays; its dtype sets the precision).
    t1: final time (may be a traced scalar, e.g. under `vmap`).
    args: passed through to `vector_field` (any pytree; may be traced / vmapped).
    t0: initial time.
    saveat: `None` saves only at `t1` (the `sol.ys` leaves get a leading axis of
      length 1); a 1-D array of times saves there (leading axis `len(saveat)`); a
      `diffrax.SaveAt` is used as is.
    rtol, atol: tolerances of the default PID step-size controller (ignored when
      `stepsize_controller` is given).
    solver: a diffrax solver; default `diffrax.Tsit5()` (5th order, adaptive).
    stepsize_controller: default `diffrax.PIDController(rtol=rtol, atol=atol,
      dtmax=|t1 - t0| / 64)`. Pass
      `diffrax.ConstantStepSize()` together with `dt0` for fixed steps.
    dt0: initial step; `None` lets diffrax choose it (adaptive controllers only).
    max_steps: step budget; beyond it the solve fails (raises, or see `throw`).
    dense: also store a dense interpolant (`sol.evaluate(t)`).
    event: optional `diffrax.Event` that terminates the solve early.
    throw: raise on solver failure (`True`) or only report it in `sol.result`.

  Returns:
    The `diffrax.Solution`; `sol.ys` holds the saved states and `sol.ts` the times.
  """
  solver = diffrax.Tsit5() if solver is None else solver
  if stepsize_controller is None:
    # dtmax guards against a diffrax/float32 failure mode: at an exact floating-point
    # equilibrium the error estimate is exactly 0, the step grows without bound and
    # the time becomes inf (then every state is inf). Capping dt at 1/64 of the span avoids it.
    stepsize_controller = diffrax.PIDController(
        rtol=rtol, atol=atol, dtmax=jnp.abs(jnp.asarray(t1) - jnp.asarray(t0)) / 64)
  return diffrax.diffeqsolve(
      diffrax.ODETerm(vector_field), solver, t0=t0, t1=t1, dt0=dt0, y0=y0,
      args=args, saveat=_make_saveat(saveat, dense),
      stepsize_controller=stepsize_controller, event=event,
      max_steps=max_steps, throw=throw)


def grid_map(fn: Callable[..., Any], *axes: Any) -> Any:
  """Evaluates `fn(a0, a1, ..., ak)` on the outer product of the 1-D `axes`.

  `axes[i]` is a 1-D array (or a pytree of arrays sharing a leading axis, which are
  mapped together). Uses nested `jax.vmap` (no Python loop over grid points), so
  wrapping the call in `jax.jit` gives one compiled program for the whole grid.
  Every output leaf gets leading shape `(len(axes[0]), ..., len(axes[-1]))`,
  followed by `fn`'s own output shape. Example::

      final = jax.jit(lambda e, s: grid_map(solve, e, s))(etas, sigma2s)
      # final.shape == (len(etas), len(sigma2s)) + solve(...).shape
  """
  n = len(axes)

  def outer(vals, i):
    if i == n:
      return fn(*vals)

    def inner(v):
      return outer(vals[:i] + (v,) + vals[i + 1:], i + 1)

    return jax.vmap(inner)(vals[i])

  return outer(tuple(axes), 0)


def crossing_time(vector_field: VectorField, y0: Any, t1: Any, args: Any,
                  cond_fn: Callable[[Any, Any, Any], Any], *,
                  t0: Any = 0.0,
                  rtol: float = DEFAULT_RTOL,
                  atol: float = DEFAULT_ATOL,
                  root_tol: float = 1e-6,
                  solver: Optional[diffrax.AbstractSolver] = None,
                  max_steps: int = DEFAULT_MAX_STEPS) -> jax.Array:
  """First time `t` in `(t0, t1]` at which `cond_fn(t, y, args)` changes sign.

  `cond_fn` returns a real scalar (e.g. `y - 0.9 * y_star`); its zero crossing is
  detected by a diffrax `Event` and refined by a Newton root find on the step's
  interpolant. Returns `+inf` (in `y0`'s float dtype) if there is no crossing before
  `t1`. jit- and vmap-able.
  """
  def cond(t, y, args, **kwargs):
    del kwargs
    return cond_fn(t, y, args)

  event = diffrax.Event(cond, root_finder=optx.Newton(rtol=root_tol, atol=root_tol))
  sol = integrate(vector_field, y0, t1, args, t0=t0, rtol=rtol, atol=atol,
                  solver=solver, max_steps=max_steps, event=event, throw=False)
  dtype = jnp.result_type(*jax.tree_util.tree_leaves(y0))
  dtype = dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.float32
  hit = jnp.any(jnp.stack([jnp.any(m) for m in
                           jax.tree_util.tree_leaves(sol.event_mask)]))
  return jnp.where(hit, sol.ts[-1].astype(dtype), jnp.asarray(jnp.inf, dtype))
