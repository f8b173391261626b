"""Benchmark: a 256×256 (η, σ²) grid of Tian eigenmode ODEs, integrated in ONE jitted,
vmapped diffrax call, against a Python loop of `scipy.integrate.solve_ivp` over the same
grid (same ODE, same p0, same t1, same rtol/atol, both 5(4) explicit Runge-Kutta
methods with adaptive steps: diffrax Tsit5 vs scipy RK45), in one run.

The scipy loop over all 65 536 ODEs takes many minutes, so by default it is timed on a
random subset of `--scipy-points` grid points and extrapolated linearly to the full grid
(the output labels this clearly). `--scipy-points 0` runs the full loop.

Both sides solve in float64 (JAX's x64 mode is switched on here); a second jax row
shows float32. The final values are compared on the scipy points.

    python benchmarks/dynamics.py [--grid 256] [--scipy-points 4096] [--json out.json]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import _common  # noqa: E402  (benchmarks/ is the script's directory)
import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from scipy.integrate import solve_ivp  # noqa: E402

from jaxssl.dynamics import ode, tian  # noqa: E402


def jax_grid_solver(dtype, t1, p0, tau, rtol, atol):
  """One jitted function: (etas [E], sigma2s [S]) -> p(t1) [E, S]."""
  @jax.jit
  def run(etas, sigma2s):
    def one(eta, sigma2):
      return tian.solve_cubic(jnp.asarray(p0, dtype), eta, sigma2, tau, t1, rtol=rtol,
                              atol=atol)
    return ode.grid_map(one, etas, sigma2s)
  return run


def time_jax(run, etas, sigma2s, repeats):
  t0 = time.perf_counter()
  out = run(etas, sigma2s).block_until_ready()
  first = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = run(etas, sigma2s).block_until_ready()
    times.append(time.perf_counter() - t0)
  return np.asarray(out), first, min(times)


def scipy_solve(eta, sigma2, p0, tau, t1, rtol, atol):
  def f(t, p):
    return p * p * (tau - (1.0 + sigma2) * p) - eta * p
  sol = solve_ivp(f, (0.0, t1), [p0], method="RK45", rtol=rtol, atol=atol)
  return sol.y[0, -1]


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--grid", type=int, default=256, help="grid is GRID x GRID")
  ap.add_argument("--scipy-points", type=int, default=4096,
                  help="random grid points timed with scipy (0 = all, no extrapolation)")
  ap.add_argument("--t1", type=float, default=200.0)
  ap.add_argument("--p0", type=float, default=0.3)
  ap.add_argument("--tau", type=float, default=1.0)
  ap.add_argument("--rtol", type=float, default=1e-6)
  ap.add_argument("--atol", type=float, default=1e-9)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--json", type=str, default=None, help="also write results here")
  args = ap.parse_args(argv)

  g = args.grid
  etas64 = np.linspace(0.0, 0.4, g)
  sigma2s64 = np.linspace(0.0, 1.0, g)
  n_total = g * g
  common = dict(t1=args.t1, p0=args.p0, tau=args.tau, rtol=args.rtol, atol=args.atol)

  load0 = _common.load_average()
  rows = {}
  for name, dtype in (("jax_float64", jnp.float64), ("jax_float32", jnp.float32)):
    run = jax_grid_solver(dtype, **common)
    out, first, best = time_jax(run, jnp.asarray(etas64, dtype),
                                jnp.asarray(sigma2s64, dtype), args.repeats)
    rows[name] = dict(out=out, first_call_s=first, best_s=best)

  # scipy loop: full grid or a random subset, extrapolated linearly.
  rng = np.random.default_rng(args.seed)
  if args.scipy_points and args.scipy_points < n_total:
    flat = rng.choice(n_total, size=args.scipy_points, replace=False)
    extrapolated = True
  else:
    flat = np.arange(n_total)
    extrapolated = False
  ie, js = np.unravel_index(flat, (g, g))
  t0 = time.perf_counter()
  sp = np.array([scipy_solve(etas64[i], sigma2s64[j], **common) for i, j in zip(ie, js)])
  scipy_s = time.perf_counter() - t0
  scipy_full_s = scipy_s * n_total / len(flat)
  load1 = _common.load_average()

  jax64 = rows["jax_float64"]["out"][ie, js]
  jax32 = rows["jax_float32"]["out"][ie, js]
  diff64 = float(np.max(np.abs(jax64 - sp)))
  diff32 = float(np.max(np.abs(jax32 - sp)))
  # float32 can legitimately disagree where p0 sits (to rounding) on the unstable fixed
  # point p- of a grid point, i.e. eta == critical_eta(p0, sigma2): a knife edge.
  bad32 = np.abs(jax32 - sp) > 1e-3
  crit = np.asarray(tian.critical_eta(args.p0, sigma2s64[js], args.tau))
  knife = np.abs(etas64[ie] - crit) < 1e-5
  # classification agreement (collapsed vs not) on the compared points
  mid = args.tau / (2.0 * (1.0 + sigma2s64[js]))
  agree = float(np.mean((jax64 < 0.5 * mid) == (sp < 0.5 * mid)))

  label = (f"extrapolated from {len(flat)} random points (x{n_total / len(flat):.1f})"
           if extrapolated else "measured, full grid")
  print(f"Tian cubic ODE p' = p^2[tau-(1+s2)p] - eta p on a {g}x{g} (eta, sigma^2) grid "
        f"= {n_total} ODEs")
  print(f"t1={args.t1}, p0={args.p0}, tau={args.tau}, rtol={args.rtol}, "
        f"atol={args.atol}; jax {jax.__version__} on {jax.devices()[0].platform}, {_common.cpu_description()}")
  print(f"load average before {_common.format_load(load0)}, after {_common.format_load(load1)} "
        "(other processes share the CPUs)")
  print()
  print(f"{'method':<44}{'grid time [s]':>16}{'per ODE [us]':>14}{'speed-up':>10}")
  print("-" * 84)
  print(f"{'scipy solve_ivp RK45 loop (float64)':<44}{scipy_full_s:>16.2f}"
        f"{1e6 * scipy_full_s / n_total:>14.1f}{1.0:>10.1f}   <- {label}")
  for name in ("jax_float64", "jax_float32"):
    r = rows[name]
    print(f"{'diffrax Tsit5, one vmapped jit call (' + name[4:] + ')':<44}"
          f"{r['best_s']:>16.3f}{1e6 * r['best_s'] / n_total:>14.2f}"
          f"{scipy_full_s / r['best_s']:>10.1f}   (first call incl. compile "
          f"{r['first_call_s']:.2f} s)")
  print()
  print(f"agreement on the {len(flat)} scipy points: max |p_jax64 - p_scipy| = "
        f"{diff64:.2e}, max |p_jax32 - p_scipy| = {diff32:.2e}, "
        f"collapse classification agrees on {100 * agree:.2f}%")
  if bad32.any():
    print(f"  float32: {int(bad32.sum())} point(s) differ by > 1e-3, of which "
          f"{int((bad32 & knife).sum())} sit on the knife edge eta = critical_eta(p0) "
          f"(p0 is the unstable fixed point there; rounding decides the side); "
          f"max diff elsewhere {float(np.max(np.abs(jax32 - sp)[~knife])):.2e}")
  ok = diff64 < 1e-4 and agree == 1.0
  print("CHECK:", "PASS" if ok else "FAIL")

  if args.json:
    # A dict literal: "float32_points_off_by_1e-3" is not a valid keyword argument name.
    _common.write_json(args.json, {
        "grid": g, "n_odes": n_total, "scipy_points": len(flat),
        "scipy_extrapolated": extrapolated, "scipy_measured_s": scipy_s,
        "scipy_full_grid_s": scipy_full_s,
        "jax_float64_s": rows["jax_float64"]["best_s"],
        "jax_float32_s": rows["jax_float32"]["best_s"],
        "jax_float64_first_call_s": rows["jax_float64"]["first_call_s"],
        "jax_float32_first_call_s": rows["jax_float32"]["first_call_s"],
        "speedup_float64": scipy_full_s / rows["jax_float64"]["best_s"],
        "speedup_float32": scipy_full_s / rows["jax_float32"]["best_s"],
        "max_abs_diff_float64": diff64, "max_abs_diff_float32": diff32,
        "float32_points_off_by_1e-3": int(bad32.sum()),
        "float32_points_off_on_knife_edge": int((bad32 & knife).sum()),
        "classification_agreement": agree, "check_passed": ok,
        "device": jax.devices()[0].platform, "jax": jax.__version__, "cpu_count": os.cpu_count(),
        "load_average_before": list(load0), "load_average_after": list(load1), **common})
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
