"""Dimensional collapse in contrastive learning: the two toy cases of Jing, Vincent, LeCun
& Tian (ICLR 2022, arXiv 2110.09348), as in the official `facebookresearch/directclr`
(`toy_task/case_1.py`, `toy_task/case_2.py`).

Shared set-up (both cases, as in the official scripts):
  * data: a fixed set of 10 000 points x ~ N(0, I₁₆);
  * every SGD step draws a batch of 128 distinct indices uniformly at random (the
    official `np.random.choice(10000, 128, replace=False)`: independent draws per step,
    no epochs; here with Floyd's algorithm, the same distribution, cheaply);
  * two views x₁, x₂ = x + noise, drawn independently for each view;
  * loss: cross-entropy of the *unnormalised* logits z₁z₂ᵀ/τ with labels arange(B),
    τ = 0.1, one direction, mean over the batch (not symmetrised, no L2-normalisation);
  * plain SGD (no momentum, no weight decay), 10 000 steps.

Case 1, strong augmentation: one `Linear(16, 16)` with bias, PyTorch default init
(weight and bias ~ U(−1/√16, 1/√16)), lr 1e-3, noise of std `noise` on the last 8
input dimensions only. The weight matrix collapses onto the clean subspace: the ratio
mean(top-8 σ(W)) / mean(bottom-8 σ(W)) grows with the noise (PAPERS.md section C:
1.06, 1.39, 2.35, 4.32, 13.7 at noise 0.01, 0.5, 1.0, 1.5, 3.0).

Case 2, implicit regularisation: two bias-free `Linear(16, 16)` layers, z = W₂W₁x, each
initialised as U·diag(exp(−0.35k))·Vᵀ with U, V from the SVD of a U[0,1) random matrix;
lr 0.01, isotropic noise of std 0.001 on all dimensions. The embedding spectrum (the
eigenvalues of the covariance of z) splits: most log-eigenvalues rise to ≈ −2 while a
few stay below −8, and the alignment matrix V₂ᵀU₁ (right singular vectors of W₂
against left singular vectors of W₁) becomes block diagonal between the surviving and
the collapsed subspaces.

Everything is one jitted `lax.scan`; noise levels, learning rates and temperatures are
traced, so sweeps are `vmap`s (`case1_sweep`, `case2_sweep`).

Conventions: weights are stored as in PyTorch (`W` is [out, in], z = x Wᵀ + b). The
embedding spectrum is by default the *population* one: with x ~ N(0, I) the
covariance of z = A x (+ b) is A Aᵀ, whose eigenvalues are σ(A)², computed from an SVD
(so no negative round-off eigenvalues). The official script instead estimates it from
1 000 fresh samples (`np.cov`); `embedding_spectrum(A, key=...)` does that.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxssl.errors import ConfigError

__all__ = [
    "PAPER_CASE1_RATIOS", "init_linear", "case2_init", "sample_batch_indices",
    "contrastive_ce", "collapse_ratio", "embedding_spectrum", "alignment_matrix",
    "block_alignment", "count_collapsed", "simulate_case1", "case1_sweep",
    "simulate_case2", "case2_sweep",
]

#: Toy case 1, ratio mean(top-8 σ(W)) / mean(bottom-8 σ(W)) after 10 000 steps, by noise
#: std (PAPERS.md section C).
PAPER_CASE1_RATIOS = {0.01: 1.06, 0.5: 1.39, 1.0: 2.35, 1.5: 4.32, 3.0: 13.7}


def _check_sizes(fn: str, *, steps: int, log_every: int, n_data: int, batch: int,
                 dim: int) -> None:
  for name, v in (("steps", steps), ("log_every", log_every), ("n_data", n_data),
                  ("batch", batch), ("dim", dim)):
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
      raise ConfigError(f"{fn}: {name} must be a positive int, got {v!r}")
  if steps % log_every:
    raise ConfigError(f"{fn}: steps ({steps}) must be a multiple of log_every ({log_every})")
  if batch > n_data:
    raise ConfigError(f"{fn}: batch ({batch}) cannot exceed n_data ({n_data}): the batch "
                      "is drawn without replacement")


# --------------------------------------------------------------------------------------
# Building blocks.
# --------------------------------------------------------------------------------------

def init_linear(key: jax.Array, d_in: int, d_out: int, *, bias: bool = True) -> dict:
  """PyTorch's default `nn.Linear` init: W [d_out, d_in] and b [d_out] ~ U(±1/√d_in)."""
  bound = 1.0 / jnp.sqrt(d_in)
  kw, kb = jax.random.split(key)
  params = {"W": jax.random.uniform(kw, (d_out, d_in), minval=-bound, maxval=bound)}
  if bias:
    params["b"] = jax.random.uniform(kb, (d_out,), minval=-bound, maxval=bound)
  return params


def case2_init(key: jax.Array, dim: int = 16, decay: Any = 0.35) -> jax.Array:
  """U·diag(exp(−decay·k))·Vᵀ, k = 0..dim−1, with U, Vᵀ from the SVD of a U[0, 1) matrix
  (the official `init()` of case_2.py)."""
  a = jax.random.uniform(key, (dim, dim))
  u, _, vt = jnp.linalg.svd(a)
  return (u * jnp.exp(-decay * jnp.arange(dim))) @ vt


def sample_batch_indices(key: jax.Array, n: int, k: int) -> jax.Array:
  """k distinct indices drawn uniformly from range(n) (a uniformly random k-subset, as
  `np.random.choice(n, k, replace=False)`), by Floyd's algorithm: O(k²) work instead of
  a permutation of all n. The order within the subset is not uniform, which does not
  matter to a loss that is invariant to permuting the batch."""
  r = jax.random.uniform(key, (k,))
  js = n - k + jnp.arange(k)
  ts = jnp.minimum(jnp.floor(r * (js + 1)).astype(jnp.int32), js)
  pos = jnp.arange(k)

  def body(i, chosen):
    t = ts[i]
    seen = jnp.any((chosen == t) & (pos < i))
    return chosen.at[i].set(jnp.where(seen, js[i], t))

  return lax.fori_loop(0, k, body, jnp.zeros((k,), jnp.int32))


def contrastive_ce(z1: jax.Array, z2: jax.Array, temperature: Any = 0.1) -> jax.Array:
  """The toy tasks' loss: CE(z₁z₂ᵀ/τ, arange(B)), unnormalised, mean over the batch."""
  logits = z1 @ z2.T / temperature
  return jnp.mean(jax.nn.logsumexp(logits, axis=-1) - jnp.diagonal(logits))


def collapse_ratio(sv: jax.Array, k: int = 8) -> jax.Array:
  """mean(top-k) / mean(rest) of the singular values (descending along the last axis)."""
  sv = jnp.sort(sv, axis=-1)[..., ::-1]
  return sv[..., :k].mean(-1) / sv[..., k:].mean(-1)


def embedding_spectrum(a: jax.Array, key: jax.Array | None = None, n: int = 1000) -> jax.Array:
  """Eigenvalues (descending) of the covariance of z = A x, x ~ N(0, I).

  Without `key`: the population covariance A Aᵀ, i.e. σ(A)², from an SVD. With `key`:
  the official estimate, `np.cov` (centred, divided by n−1) of n fresh samples.
  """
  if key is None:
    return jnp.linalg.svd(a, compute_uv=False) ** 2
  z = jax.random.normal(key, (n, a.shape[1])) @ a.T
  z = z - z.mean(0)
  return jnp.linalg.svd(z.T @ z / (n - 1), compute_uv=False)


def alignment_matrix(w1: jax.Array, w2: jax.Array) -> jax.Array:
  """V₂ᵀU₁ for z = W₂W₁x: rows are the right singular vectors of W₂, columns the left
  singular vectors of W₁, both in descending order of singular value (the official
  `alignment()`: `v2 @ u1` with numpy's `svd`)."""
  u1 = jnp.linalg.svd(w1)[0]
  v2t = jnp.linalg.svd(w2)[2]
  return v2t @ u1


def block_alignment(align: jax.Array, n_collapsed: Any) -> tuple[jax.Array, jax.Array]:
  """How block diagonal |V₂ᵀU₁| is, for a split into the first d−k (surviving) and the
  last k (collapsed) directions: the mean squared mass of a surviving row inside the
  surviving columns, and of a collapsed row inside the collapsed columns. Both are 1
  for a perfectly block-aligned matrix and ≈ (d−k)/d and k/d for a random rotation."""
  d = align.shape[-1]
  k = jnp.asarray(n_collapsed)
  idx = jnp.arange(d)
  tail = idx >= d - k
  sq = align ** 2
  both_tail = (tail[:, None] & tail[None, :])
  both_head = (~tail[:, None] & ~tail[None, :])
  coll = jnp.sum(jnp.where(both_tail, sq, 0.0), axis=(-2, -1)) / jnp.maximum(k, 1)
  surv = jnp.sum(jnp.where(both_head, sq, 0.0), axis=(-2, -1)) / jnp.maximum(d - k, 1)
  return surv, coll


def count_collapsed(log_eigs: jax.Array, threshold: Any = -8.0) -> jax.Array:
  """How many log-eigenvalues are below `threshold` (NaN counts as collapsed)."""
  return jnp.sum(~(log_eigs >= threshold), axis=-1)


# --------------------------------------------------------------------------------------
# Toy case 1: strong augmentation.
# --------------------------------------------------------------------------------------

def simulate_case1(key: jax.Array, noise: Any, *, lr: Any = 1e-3, temperature: Any = 0.1,
                   steps: int = 10_000, n_data: int = 10_000, batch: int = 128,
                   dim: int = 16, n_noisy: int = 8, log_every: int = 100) -> dict:
  """Trains toy case 1 once. `noise`, `lr`, `temperature` may be traced (vmap them).

  Returns a dict: `W`, `b` (final weights), `sv` (final σ(W), descending), `ratio`
  (mean top-(dim−n_noisy) / mean bottom-n_noisy σ(W)), `log_sv` [steps/log_every, dim]
  (log σ(W) after each block of `log_every` steps), `loss` [steps/log_every] (mean loss
  over each block), `step` [steps/log_every].
  """
  _check_sizes("simulate_case1", steps=steps, log_every=log_every, n_data=n_data,
               batch=batch, dim=dim)
  if not isinstance(n_noisy, int) or not 0 < n_noisy < dim:
    raise ConfigError(f"simulate_case1: n_noisy must be an int in (0, dim), got {n_noisy!r}")
  return _case1(key, jnp.asarray(noise, jnp.float32), jnp.asarray(lr, jnp.float32),
                jnp.asarray(temperature, jnp.float32), steps, n_data, batch, dim, n_noisy,
                log_every)


@functools.partial(jax.jit, static_argnums=(4, 5, 6, 7, 8, 9))
def _case1(key, noise, lr, temperature, steps, n_data, batch, dim, n_noisy, log_every):
  k_data, k_init, k_train = jax.random.split(key, 3)
  x = jax.random.normal(k_data, (n_data, dim))
  params = init_linear(k_init, dim, dim, bias=True)
  mask = (jnp.arange(dim) >= dim - n_noisy).astype(x.dtype)

  def loss_fn(p, x1, x2):
    return contrastive_ce(x1 @ p["W"].T + p["b"], x2 @ p["W"].T + p["b"], temperature)

  def step(p, k):
    k_idx, k1, k2 = jax.random.split(k, 3)
    xb = x[sample_batch_indices(k_idx, n_data, batch)]
    x1 = xb + noise * mask * jax.random.normal(k1, xb.shape)
    x2 = xb + noise * mask * jax.random.normal(k2, xb.shape)
    loss, g = jax.value_and_grad(loss_fn)(p, x1, x2)
    return jax.tree_util.tree_map(lambda a, ga: a - lr * ga, p, g), loss

  def block(p, k):
    p, losses = lax.scan(step, p, jax.random.split(k, log_every))
    return p, (jnp.log(jnp.linalg.svd(p["W"], compute_uv=False)), losses.mean())

  n_blocks = steps // log_every
  params, (log_sv, loss) = lax.scan(block, params, jax.random.split(k_train, n_blocks))
  sv = jnp.linalg.svd(params["W"], compute_uv=False)
  return {"W": params["W"], "b": params["b"], "sv": sv,
          "ratio": collapse_ratio(sv, dim - n_noisy), "log_sv": log_sv, "loss": loss,
          "step": (jnp.arange(n_blocks) + 1) * log_every}


def case1_sweep(noises: Any, seeds: Any = (0,), **kwargs) -> dict:
  """`simulate_case1` over every (seed, noise) pair in one jitted call: each output gets
  leading axes [len(seeds), len(noises)]. A seed fixes the data, the init and every
  random draw, shared by all noise levels (common random numbers)."""
  noises = jnp.asarray(noises, jnp.float32)
  keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray(seeds, jnp.uint32))
  one = lambda k, s: simulate_case1(k, s, **kwargs)  # noqa: E731
  return jax.vmap(lambda k: jax.vmap(lambda s: one(k, s))(noises))(keys)


# --------------------------------------------------------------------------------------
# Toy case 2: implicit regularisation by a two-layer linear network.
# --------------------------------------------------------------------------------------

def simulate_case2(key: jax.Array, *, lr: Any = 0.01, noise: Any = 0.001,
                   temperature: Any = 0.1, decay: Any = 0.35, steps: int = 10_000,
                   n_data: int = 10_000, batch: int = 128, dim: int = 16,
                   log_every: int = 10) -> dict:
  """Trains toy case 2 once. `lr`, `noise`, `temperature`, `decay` may be traced.

  Returns a dict: `W1`, `W2` (final), `log_eig` [T+1, dim] (log eigenvalues of the
  population embedding covariance, descending, at step 0 and after each block of
  `log_every` steps), `log_sv1`, `log_sv2` [T+1, dim] (log σ(W₁), log σ(W₂)),
  `loss` [T], `step` [T+1], `align0`, `align` (V₂ᵀU₁ at init and at the end),
  `n_collapsed` (final log-eigenvalues below −8).
  """
  _check_sizes("simulate_case2", steps=steps, log_every=log_every, n_data=n_data,
               batch=batch, dim=dim)
  f = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
  return _case2(key, f(lr), f(noise), f(temperature), f(decay), steps, n_data, batch, dim,
                log_every)


@functools.partial(jax.jit, static_argnums=(5, 6, 7, 8, 9))
def _case2(key, lr, noise, temperature, decay, steps, n_data, batch, dim, log_every):
  k_data, k1, k2, k_train = jax.random.split(key, 4)
  x = jax.random.normal(k_data, (n_data, dim))
  params = {"W1": case2_init(k1, dim, decay), "W2": case2_init(k2, dim, decay)}

  def embed(p, xb):
    return xb @ p["W1"].T @ p["W2"].T

  def loss_fn(p, x1, x2):
    return contrastive_ce(embed(p, x1), embed(p, x2), temperature)

  def step(p, k):
    k_idx, ka, kb = jax.random.split(k, 3)
    xb = x[sample_batch_indices(k_idx, n_data, batch)]
    x1 = xb + noise * jax.random.normal(ka, xb.shape)
    x2 = xb + noise * jax.random.normal(kb, xb.shape)
    loss, g = jax.value_and_grad(loss_fn)(p, x1, x2)
    return jax.tree_util.tree_map(lambda a, ga: a - lr * ga, p, g), loss

  def record(p):
    sv = lambda w: jnp.linalg.svd(w, compute_uv=False)  # noqa: E731
    return (jnp.log(embedding_spectrum(p["W2"] @ p["W1"])), jnp.log(sv(p["W1"])),
            jnp.log(sv(p["W2"])))

  def block(p, k):
    p, losses = lax.scan(step, p, jax.random.split(k, log_every))
    return p, (record(p), losses.mean())

  rec0 = record(params)
  align0 = alignment_matrix(params["W1"], params["W2"])
  n_blocks = steps // log_every
  final, (recs, loss) = lax.scan(block, params, jax.random.split(k_train, n_blocks))
  cat = lambda a0, a: jnp.concatenate([a0[None], a], axis=0)  # noqa: E731
  log_eig, log_sv1, log_sv2 = (cat(a0, a) for a0, a in zip(rec0, recs))
  return {"W1": final["W1"], "W2": final["W2"], "log_eig": log_eig, "log_sv1": log_sv1,
          "log_sv2": log_sv2, "loss": loss, "step": jnp.arange(n_blocks + 1) * log_every,
          "align0": align0, "align": alignment_matrix(final["W1"], final["W2"]),
          "n_collapsed": count_collapsed(log_eig[-1])}


def case2_sweep(seeds: Any = (0,), **kwargs) -> dict:
  """`simulate_case2` for several seeds in one jitted call (leading axis [len(seeds)])."""
  keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray(seeds, jnp.uint32))
  return jax.vmap(lambda k: simulate_case2(k, **kwargs))(keys)
