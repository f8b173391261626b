"""Linear heads: `LinearHead` (linear projector, DirectCLR ablations) and `LinearPredictor`
(bias-free D x D predictor of DirectPred / DirectCopy / IsoLoss).

Convention: p = z @ W, with `kernel` W of shape [D, D] (in, out). The closed-form predictors
of `jaxssl.predictors` are symmetric, so the convention only matters for a trained W.
The train step may overwrite `params[...]["kernel"]` with the closed-form W_p.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxssl.errors import ConfigError

PREDICTOR_INITS = ("identity", "default")


class LinearHead(nnx.Module):
  """z = r @ W (+ b): a linear projector. Output float32."""

  def __init__(self, in_dim: int, out_dim: int, *, rngs: nnx.Rngs, use_bias: bool = True,
               dtype: Any = None):
    if int(in_dim) < 1 or int(out_dim) < 1:
      raise ConfigError(f"LinearHead dims must be positive, got in_dim={in_dim}, out_dim={out_dim}")
    dtype = jnp.dtype(dtype) if dtype is not None else None
    self.linear = nnx.Linear(int(in_dim), int(out_dim), use_bias=use_bias, dtype=dtype,
                             param_dtype=jnp.float32, rngs=rngs)
    self.in_dim, self.out_dim = int(in_dim), int(out_dim)

  def __call__(self, x: jax.Array) -> jax.Array:
    if x.ndim != 2 or x.shape[-1] != self.in_dim:
      raise ConfigError(f"LinearHead expects [batch, {self.in_dim}], got shape {tuple(x.shape)}")
    return self.linear(x).astype(jnp.float32)


class LinearPredictor(nnx.Module):
  """p = z @ kernel (+ bias), kernel [dim, dim] float32.

  Args:
    dim: embedding dimension D.
    bias: add a bias (DirectPred's predictor has none; with bias=False the only parameter is
      `kernel`, which is what the closed-form update overwrites).
    init: "identity" (W = I, the predictor DirectPred starts from) or "default" (LeCun normal,
      a trained linear predictor's usual start).
  """

  def __init__(self, dim: int, *, rngs: nnx.Rngs, bias: bool = False, init: str = "identity"):
    if init not in PREDICTOR_INITS:
      raise ConfigError(f"unknown LinearPredictor init {init!r}; use one of {PREDICTOR_INITS}")
    if int(dim) < 1:
      raise ConfigError(f"LinearPredictor dim must be positive, got {dim}")
    dim = int(dim)
    if init == "identity":
      w = jnp.eye(dim, dtype=jnp.float32)
    else:
      w = nnx.initializers.lecun_normal()(rngs.params(), (dim, dim), jnp.float32)
    self.kernel = nnx.Param(w)
    self.bias = nnx.Param(jnp.zeros((dim,), jnp.float32)) if bias else None
    self.in_dim = self.out_dim = dim

  def __call__(self, z: jax.Array) -> jax.Array:
    if z.ndim != 2 or z.shape[-1] != self.in_dim:
      raise ConfigError(f"LinearPredictor expects [batch, {self.in_dim}], got shape {tuple(z.shape)}")
    p = z.astype(jnp.float32) @ self.kernel[...]
    if self.bias is not None:
      p = p + self.bias[...]
    return p
