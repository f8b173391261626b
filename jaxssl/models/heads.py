"""Projector / predictor heads: MLPHead and Identity (LinearHead lives in `linear.py`).

Standard set-ups (PAPERS.md C-E):
* SimCLR v1 projector: `MLPHead(F, 2048, 128, num_layers=2)` (hidden BN + ReLU, no last BN).
* BYOL projector and predictor: `MLPHead(F, 4096, 256, num_layers=2)` (same form).
* SimSiam projector: `MLPHead(F, 2048, 2048, num_layers=3, bn_last=True, bn_last_affine=False)`.
* Barlow Twins / VICReg: `MLPHead(F, 8192, 8192, num_layers=3)`.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxssl.errors import ConfigError
from jaxssl.models._common import batch_norm


class MLPHead(nnx.Module):
  """`num_layers` linear layers; every hidden layer is Linear -> [BN] -> ReLU; the last is
  Linear -> [BN] (no ReLU). Output float32 [B, out_dim].

  Args:
    in_dim, hidden_dim, out_dim: layer sizes (`num_layers=1` is a single Linear, no hidden).
    num_layers: number of Linear layers (>= 1).
    bn_hidden: BatchNorm after each hidden Linear.
    bn_last: BatchNorm after the last Linear.
    bn_last_affine: whether that last BN has learned scale/bias (SimSiam: False).
    use_bias: bias in the Linear layers (a Linear followed by BN gets none when
      `bias_before_bn=False`).
    bias_before_bn: keep the (redundant) bias of Linear layers followed by BN. Default True,
      as the PyTorch reference heads (nn.Linear defaults to bias=True).
    dtype: compute dtype; params float32. bn_axis_name / bn_momentum: as for the encoders.
  """

  def __init__(self, in_dim: int, hidden_dim: int | None, out_dim: int, *, rngs: nnx.Rngs,
               num_layers: int = 2, bn_hidden: bool = True, bn_last: bool = False,
               bn_last_affine: bool = False, use_bias: bool = True, bias_before_bn: bool = True,
               dtype: Any = None, bn_axis_name: str | None = None, bn_momentum: float = 0.9):
    if int(num_layers) < 1:
      raise ConfigError(f"MLPHead needs num_layers >= 1, got {num_layers}")
    num_layers = int(num_layers)
    if num_layers > 1 and (hidden_dim is None or int(hidden_dim) < 1):
      raise ConfigError(f"MLPHead with num_layers={num_layers} needs a positive hidden_dim, got {hidden_dim}")
    if int(in_dim) < 1 or int(out_dim) < 1:
      raise ConfigError(f"MLPHead dims must be positive, got in_dim={in_dim}, out_dim={out_dim}")
    dtype = jnp.dtype(dtype) if dtype is not None else None
    bn = dict(rngs=rngs, dtype=dtype, axis_name=bn_axis_name, momentum=bn_momentum)
    dims = [int(in_dim)] + [int(hidden_dim)] * (num_layers - 1) + [int(out_dim)]
    linears, norms = [], []
    for i in range(num_layers):
      last = i == num_layers - 1
      has_bn = bn_last if last else bn_hidden
      bias = use_bias and (bias_before_bn or not has_bn)
      linears.append(nnx.Linear(dims[i], dims[i + 1], use_bias=bias, dtype=dtype,
                                param_dtype=jnp.float32, rngs=rngs))
      if has_bn:
        affine = bn_last_affine if last else True
        norms.append(batch_norm(dims[i + 1], use_scale=affine, use_bias=affine, **bn))
      else:
        norms.append(None)
    self.linears = nnx.List(linears)
    self.norms = nnx.List(norms)
    self.in_dim, self.out_dim = int(in_dim), int(out_dim)
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    if x.ndim != 2 or x.shape[-1] != self.in_dim:
      raise ConfigError(f"MLPHead expects [batch, {self.in_dim}], got shape {tuple(x.shape)}")
    if self.dtype is not None:
      x = x.astype(self.dtype)
    n = len(self.linears)
    for i, (lin, norm) in enumerate(zip(self.linears, self.norms)):
      x = lin(x)
      if norm is not None:
        x = norm(x)
      if i < n - 1:
        x = nnx.relu(x)
    return x.astype(jnp.float32)


class Identity(nnx.Module):
  """No projector: z = r."""

  def __init__(self, dim: int | None = None):
    self.in_dim = self.out_dim = None if dim is None else int(dim)

  def __call__(self, x: jax.Array) -> jax.Array:
    if self.in_dim is not None and x.shape[-1] != self.in_dim:
      raise ConfigError(f"Identity head built for dim {self.in_dim}, got shape {tuple(x.shape)}")
    return x
