"""Minimisers of contrastive losses as hyperspherical energy minimisation (HEM), after
Koromilas, Bouritsas, Giannakopoulos, Nicolaou & Panagakis (ICML 2024, arXiv
2405.18045; PAPERS.md section B).

The embeddings of a batch are free points: U, V ∈ R^{M×d}, one pair (u_i, v_i) per
example. Each loss of `jaxssl.losses` (which L2-normalise their inputs) is minimised
over the unconstrained matrices with L-BFGS (`optax.lbfgs`, zoom line search), so the
points live on S^{d−1} by construction. The paper's recipe: V = U + 0.1·noise at
initialisation, and several restarts, keeping the best (KCL gets stuck otherwise).
Restarts, seeds and temperatures are `vmap`ped; one call is one compiled program.

What the minimisers are (the paper's results; the tests check every one):
  * M ≤ d+1: u_i = v_i and the Gram matrix is a regular simplex, every off-diagonal
    entry −1/(M−1) — for InfoNCE, NT-Xent, DCL, DHEL and KCL;
  * M = 2d: the cross-polytope {±e_k} (off-diagonal entries 0, and one −1 per row);
  * d = 2: the regular M-gon (entries cos 2πk/M);
  * M = 12, d = 3 (τ = 0.1): the icosahedron (entries ±1/√5, five of each per row,
    and one −1).
Configurations are compared up to rotation and relabelling by `gram_error`: the largest
difference between the row-sorted, then row-ordered Gram matrices.

KCL's expected loss does not depend on the batch size: it is a U-statistic (means over
pairs i ≠ j and over positives), unbiased for the population value
    −2 E K(u, v) + 2γ E K(u, u')
for any distribution of i.i.d. pairs (u, v). InfoNCE-type losses instead grow like
log M (the log-sum-exp runs over M terms). `batch_size_dependence` measures both;
`kcl_population` gives the exact M-independent value for the distribution used there
(u uniform on S^{d−1}, v = u + σξ normalised).
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from jaxssl import losses
from jaxssl.errors import ConfigError

__all__ = [
    "LOSS_NAMES", "make_objective", "init_points", "HEMResult", "minimise", "hem_sweep",
    "normalize", "gram", "simplex_gram", "cross_polytope_gram", "polygon_gram",
    "icosahedron", "icosahedron_gram", "canonical_gram", "gram_error", "theory_gram",
    "match_points", "sample_pairs", "batch_size_dependence", "kcl_population",
    "sphere_kernel_mean",
]

#: Losses that `minimise` knows. "dhel" is the official-code form (energy of both views),
#: "dhel_paper" the paper's (energy of the anchors only).
LOSS_NAMES = ("info_nce", "nt_xent", "dcl", "dhel", "dhel_paper", "kcl")


def normalize(x: jax.Array) -> jax.Array:
  return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def make_objective(name: str, *, temperature: Any = 0.1, t: Any = 2.0, gamma: Any = 16.0,
                   kernel: str = "gaussian") -> Callable[[jax.Array, jax.Array], jax.Array]:
  """`f(U, V)`: the loss `name` of `jaxssl.losses` on the (unnormalised) point sets.
  `temperature` (InfoNCE family, DHEL), `t`, `gamma` (KCL) may be traced."""
  if name not in LOSS_NAMES:
    raise ConfigError(f"unknown HEM loss {name!r}; known: {', '.join(LOSS_NAMES)}")
  if name == "info_nce":
    return lambda u, v: losses.info_nce(u, v, temperature=temperature)
  if name == "nt_xent":
    return lambda u, v: losses.nt_xent(u, v, temperature=temperature)
  if name == "dcl":
    return lambda u, v: losses.dcl(u, v, temperature=temperature)
  if name == "dhel":
    return lambda u, v: losses.dhel(u, v, temperature=temperature, include_augs=True)
  if name == "dhel_paper":
    return lambda u, v: losses.dhel(u, v, temperature=temperature, include_augs=False)
  return lambda u, v: losses.kcl(u, v, kernel=kernel, t=t, gamma=gamma)


def init_points(key: jax.Array, m: int, d: int, noise: Any = 0.1) -> tuple[jax.Array, jax.Array]:
  """U uniform on S^{d−1} (normalised Gaussians) and V = U + noise·N(0, I)."""
  ku, kv = jax.random.split(key)
  u = normalize(jax.random.normal(ku, (m, d)))
  return u, u + noise * jax.random.normal(kv, (m, d))


class HEMResult(NamedTuple):
  """Best restart (`u`, `v` unit rows, `loss`, `grad_norm`: the norm of the gradient of
  the loss at the normalised points) and every restart's final loss (`losses`,
  [restarts]) and loss trace (`trace`, [restarts, iters]). Batched calls add leading
  axes to every field."""
  u: jax.Array
  v: jax.Array
  loss: jax.Array
  grad_norm: jax.Array
  losses: jax.Array
  trace: jax.Array


def _check_int(fn, name, v, lo):
  if not isinstance(v, int) or isinstance(v, bool) or v < lo:
    raise ConfigError(f"{fn}: {name} must be an int >= {lo}, got {v!r}")


def _is_traced(*xs) -> bool:
  return any(isinstance(x, jax.core.Tracer) for x in xs)


def minimise(name: str, key: jax.Array, m: int, d: int, *, restarts: int = 8,
             iters: int = 300, temperature: Any = 0.1, t: Any = 2.0, gamma: Any = 16.0,
             kernel: str = "gaussian", init_noise: Any = 0.1, memory_size: int = 10,
             x64: bool = True) -> HEMResult:
  """Minimises loss `name` over M pairs of points on S^{d−1} with L-BFGS (`optax.lbfgs`,
  zoom line search) from `restarts` random starts (vmapped), `iters` iterations each,
  and returns the best restart.

  `x64=True` runs in float64 (`jax.enable_x64`; the results are returned in the default
  float dtype): float32 line searches stall ~1e-3 short of the minimiser at small τ,
  where the loss is flat. Inside a trace (e.g. a `jax.vmap` over `temperature`) the
  ambient precision is used; `hem_sweep` batches seeds, temperatures and losses in one
  float64 program instead.
  """
  out = hem_sweep((name,), m, d, temperatures=(temperature,), keys=key[None], restarts=restarts,
                  iters=iters, t=t, gamma=gamma, kernel=kernel, init_noise=init_noise,
                  memory_size=memory_size, x64=x64)
  return jax.tree_util.tree_map(lambda a: a[0, 0, 0], out)


def hem_sweep(names: Any, m: int, d: int, *, temperatures: Any = (0.1,), seeds: Any = (0,),
              keys: jax.Array | None = None, restarts: int = 8, iters: int = 300,
              t: Any = 2.0, gamma: Any = 16.0, kernel: str = "gaussian", init_noise: Any = 0.1,
              memory_size: int = 10, x64: bool = True) -> HEMResult:
  """`minimise` for every (loss, seed, temperature) in ONE compiled program: each field
  of the result gets leading axes [len(names), len(seeds), len(temperatures)].

  `names` is a loss name or a tuple of them (static); the losses are selected inside
  the program, so a whole table of losses costs one compilation per (M, d). `keys`
  ([S] PRNG keys) overrides `seeds`.
  """
  names = (names,) if isinstance(names, str) else tuple(names)
  for n in names:
    if n not in LOSS_NAMES:
      raise ConfigError(f"unknown HEM loss {n!r}; known: {', '.join(LOSS_NAMES)}")
  if not names:
    raise ConfigError("hem_sweep: names is empty")
  for nm, v, lo in (("m", m, 2), ("d", d, 1), ("restarts", restarts, 1), ("iters", iters, 1),
                    ("memory_size", memory_size, 1)):
    _check_int("hem_sweep", nm, v, lo)
  taus = np.asarray(temperatures) if not _is_traced(temperatures) else temperatures
  if isinstance(taus, np.ndarray) and not np.all(taus > 0):
    raise ConfigError(f"hem_sweep: temperatures must be > 0, got {temperatures!r}")
  if isinstance(t, (int, float)) and kernel != "riesz" and not t > 0:
    raise ConfigError(f"hem_sweep: t must be > 0, got {t!r}")
  if keys is None:
    keys = jnp.stack([jax.random.PRNGKey(int(s)) for s in seeds])
  traced = _is_traced(temperatures, keys, t, gamma, init_noise)
  ctx = jax.enable_x64(True) if (x64 and not traced) else _nullcontext()
  with ctx:
    fdt = jnp.float64 if (x64 and not traced) else jnp.float32
    f = lambda v: jnp.asarray(v, fdt)  # noqa: E731
    out = _sweep(keys, jnp.atleast_1d(f(temperatures)), f(t), f(gamma), f(init_noise), names,
                 m, d, restarts, iters, kernel, memory_size)
    out = jax.block_until_ready(out)
  if x64 and not traced:
    out = jax.tree_util.tree_map(lambda a: jnp.asarray(np.asarray(a, np.float32)), out)
  return out


class _nullcontext:
  def __enter__(self):
    return None

  def __exit__(self, *exc):
    return False


@functools.partial(jax.jit, static_argnums=(5, 6, 7, 8, 9, 10, 11))
def _sweep(keys, temperatures, t, gamma, init_noise, names, m, d, restarts, iters, kernel,
           memory_size):
  opt = optax.lbfgs(memory_size=memory_size)

  def solve(idx, key, temperature):
    branches = [(lambda p, n=n: make_objective(n, temperature=temperature, t=t, gamma=gamma,
                                               kernel=kernel)(p[0], p[1])) for n in names]
    fun = (branches[0] if len(branches) == 1
           else (lambda p: lax.switch(idx, branches, p)))
    value_and_grad = optax.value_and_grad_from_state(fun)

    def run(k):
      p0 = init_points(k, m, d, init_noise)
      p0 = (p0[0].astype(t.dtype), p0[1].astype(t.dtype))

      def step(carry, _):
        p, state = carry
        value, grad = value_and_grad(p, state=state)
        updates, state = opt.update(grad, state, p, value=value, grad=grad, value_fn=fun)
        p_new = optax.apply_updates(p, updates)
        # A failed line search can return a non-finite point: keep the last good one.
        ok = jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in jax.tree_util.tree_leaves(p_new)]))
        p = jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), p_new, p)
        return (p, state), value

      (p, _), trace = lax.scan(step, (p0, opt.init(p0)), None, length=iters)
      pu = (normalize(p[0]), normalize(p[1]))
      value, grad = jax.value_and_grad(fun)(pu)
      gnorm = jnp.sqrt(sum(jnp.sum(g ** 2) for g in jax.tree_util.tree_leaves(grad)))
      return pu, value, gnorm, trace

    (us, vs), vals, gnorms, traces = jax.vmap(run)(jax.random.split(key, restarts))
    best = jnp.argmin(jnp.where(jnp.isfinite(vals), vals, jnp.inf))
    return HEMResult(u=us[best], v=vs[best], loss=vals[best], grad_norm=gnorms[best],
                     losses=vals, trace=traces)

  over_t = jax.vmap(solve, in_axes=(None, None, 0))
  over_seed = jax.vmap(over_t, in_axes=(None, 0, None))
  return jax.vmap(over_seed, in_axes=(0, None, None))(jnp.arange(len(names)), keys,
                                                       temperatures)


# --------------------------------------------------------------------------------------
# Reference configurations and comparison up to rotation and relabelling.
# --------------------------------------------------------------------------------------

def gram(u: jax.Array) -> jax.Array:
  return u @ jnp.swapaxes(u, -1, -2)


def simplex_gram(m: int) -> np.ndarray:
  """Regular simplex of m points: 1 on the diagonal, −1/(m−1) elsewhere."""
  return np.where(np.eye(m, dtype=bool), 1.0, -1.0 / (m - 1))


def cross_polytope_gram(d: int) -> np.ndarray:
  """The 2d points ±e_k: +e_k and −e_k are antipodal (−1), all other pairs orthogonal."""
  pts = np.concatenate([np.eye(d), -np.eye(d)])
  return pts @ pts.T


def polygon_gram(m: int) -> np.ndarray:
  """Regular m-gon on the circle: cos(2π(i−j)/m)."""
  k = np.arange(m)
  return np.cos(2 * np.pi * (k[:, None] - k[None, :]) / m)


def icosahedron() -> np.ndarray:
  """The 12 unit vertices of the regular icosahedron, (0, ±1, ±φ) and cyclic shifts."""
  phi = (1 + math.sqrt(5)) / 2
  pts = []
  for s1 in (1, -1):
    for s2 in (1, -1):
      a = (0.0, s1 * 1.0, s2 * phi)
      pts += [a, (a[1], a[2], a[0]), (a[2], a[0], a[1])]
  pts = np.array(pts)
  return pts / np.linalg.norm(pts, axis=1, keepdims=True)


def icosahedron_gram() -> np.ndarray:
  p = icosahedron()
  return p @ p.T


def theory_gram(m: int, d: int) -> np.ndarray | None:
  """The Gram matrix of the known minimiser for (M, d), or None where none is known here."""
  if m <= d + 1:
    return simplex_gram(m)
  if d == 2:
    return polygon_gram(m)
  if m == 2 * d:
    return cross_polytope_gram(d)
  if (m, d) == (12, 3):
    return icosahedron_gram()
  return None


def canonical_gram(g: Any) -> np.ndarray:
  """A relabelling-invariant form of a Gram matrix: sort every row, then order the rows
  lexicographically."""
  g = np.sort(np.asarray(g, np.float64), axis=-1)
  order = np.lexsort(g.T[::-1])
  return g[order]


def gram_error(g: Any, g_ref: Any) -> float:
  """max |canonical_gram(g) − canonical_gram(g_ref)|: 0 iff every point sees the same
  multiset of inner products in both (for the symmetric configurations here, iff they
  are the same configuration up to rotation and relabelling)."""
  return float(np.max(np.abs(canonical_gram(g) - canonical_gram(g_ref))))


def match_points(u: Any, ref: Any, *, n_starts: int = 16, iters: int = 20,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
  """Relabels and rotates `ref` onto `u` (alternating Hungarian assignment and orthogonal
  Procrustes, best of `n_starts` random rotations). Returns (perm, R, rms) with
  u ≈ ref[perm] @ R. Used to draw a simulated Gram matrix in the theory's order."""
  from scipy.optimize import linear_sum_assignment
  u = np.asarray(u, np.float64)
  ref = np.asarray(ref, np.float64)
  rng = np.random.default_rng(seed)
  best = (None, None, np.inf)
  for _ in range(n_starts):
    r = np.linalg.qr(rng.normal(size=(u.shape[1], u.shape[1])))[0]
    for _ in range(iters):
      _, perm = linear_sum_assignment(-(u @ (ref @ r).T))
      perm = np.asarray(perm)
      a, _, bt = np.linalg.svd(ref[perm].T @ u)
      r = a @ bt
    rms = float(np.sqrt(np.mean(np.sum((u - ref[perm] @ r) ** 2, axis=1))))
    if rms < best[2]:
      best = (perm, r, rms)
  return best


# --------------------------------------------------------------------------------------
# Batch-size (in)dependence of the expected loss.
# --------------------------------------------------------------------------------------

def sample_pairs(key: jax.Array, m: int, d: int, sigma: Any) -> tuple[jax.Array, jax.Array]:
  """M i.i.d. positive pairs: u uniform on S^{d−1}, v = normalise(u + σξ), ξ ~ N(0, I_d)."""
  ku, kv = jax.random.split(key)
  u = normalize(jax.random.normal(ku, (m, d)))
  return u, normalize(u + sigma * jax.random.normal(kv, (m, d)))


def batch_size_dependence(batch_sizes: Any, *, d: int = 16, sigma: Any = 0.36,
                          n_batches: int = 256, seed: int = 0, temperature: Any = 0.3,
                          names: Any = ("kcl", "info_nce", "dhel")) -> dict:
  """Mean (and standard error) of each loss over `n_batches` independent batches of M
  pairs from `sample_pairs(d, sigma)`, for each M in `batch_sizes`.

  Returns {name: {"mean": [len(M)], "sem": [len(M)]}}."""
  out = {}
  for name in names:
    obj = make_objective(name, temperature=temperature)
    means, sems = [], []
    for m in batch_sizes:
      keys = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), int(m)), n_batches)
      vals = np.asarray(_batched_loss(obj, keys, int(m), d, jnp.float32(sigma)))
      means.append(float(vals.mean()))
      sems.append(float(vals.std(ddof=1) / math.sqrt(n_batches)))
    out[name] = {"mean": means, "sem": sems}
  return out


def _batched_loss(obj, keys, m, d, sigma):
  return jax.jit(jax.vmap(lambda k: obj(*sample_pairs(k, m, d, sigma))))(keys)


def sphere_kernel_mean(d: int, t: float = 2.0, n: int = 20001) -> float:
  """E exp(−t‖u − u'‖²) for u, u' independent uniform on S^{d−1}, by quadrature over
  s = uᵀu' (density ∝ (1 − s²)^{(d−3)/2}); ‖u − u'‖² = 2 − 2s."""
  if d < 2:
    raise ConfigError(f"sphere_kernel_mean: d must be >= 2, got {d}")
  s = np.linspace(-1.0, 1.0, n)[1:-1]
  w = (1.0 - s * s) ** ((d - 3) / 2.0)
  return float(np.sum(w * np.exp(-t * (2.0 - 2.0 * s))) / np.sum(w))


def kcl_population(d: int, sigma: float, *, t: float = 2.0, gamma: float = 16.0,
                   n_mc: int = 2_000_000, seed: int = 0) -> float:
  """The M-independent expected Gaussian KCL loss under `sample_pairs(d, sigma)`:
  −2 E exp(−t‖u − v‖²) + 2γ E exp(−t‖u − u'‖²). v is also uniform on the sphere (the law
  is rotation invariant), so the energy terms are the uniform-sphere mean (quadrature);
  the alignment term is a Monte-Carlo mean over `n_mc` pairs (float64 numpy)."""
  rng = np.random.default_rng(seed)
  # By rotation invariance, u = e_1: ‖u − v‖² = 2 − 2 (1 + σξ₁)/‖e_1 + σξ‖.
  xi = rng.normal(size=(n_mc, d))
  w = xi * sigma
  w[:, 0] += 1.0
  cos = w[:, 0] / np.linalg.norm(w, axis=1)
  align = float(np.mean(np.exp(-t * (2.0 - 2.0 * cos))))
  return -2.0 * align + 2.0 * gamma * sphere_kernel_mean(d, t)
