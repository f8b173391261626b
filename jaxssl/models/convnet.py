"""A small, fast conv-BN-ReLU encoder for 28x28 images on a CPU ("convnet_small").

Layers: 3x3 conv (+BN+ReLU) per entry of `widths`, with the matching `strides`, then a global
average pool. The default (32 s1, 64 s2, 128 s2, 256 s2) has 0.39M parameters and a 256-d
representation; `width` scales every layer. Inputs and options are as for `ResNet`.
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxssl.errors import ConfigError
from jaxssl.models._common import (batch_norm, channel_stats, check_images, conv, global_avg_pool,
                                   standardize)


class ConvNet(nnx.Module):
  """conv-BN-ReLU stack + global average pool: [B,H,W,C] in [0,1] -> [B, widths[-1]*width]."""

  def __init__(self, widths: Sequence[int] = (32, 64, 128, 256), strides: Sequence[int] = (1, 2, 2, 2),
               *, rngs: nnx.Rngs, in_channels: int = 1, width: float = 1.0, mean: Any = None,
               std: Any = None, dtype: Any = None, bn_axis_name: str | None = None,
               bn_momentum: float = 0.9, zero_init_residual: bool = False, stem: str | None = None):
    # `zero_init_residual` and `stem` are accepted (and ignored) so that configs can switch
    # between this model and the ResNets without editing encoder_kwargs.
    del zero_init_residual, stem
    if len(widths) != len(strides) or not widths:
      raise ConfigError(f"ConvNet needs one stride per width, got widths={widths}, strides={strides}")
    if width <= 0:
      raise ConfigError(f"ConvNet width multiplier must be positive, got {width}")
    dtype = jnp.dtype(dtype) if dtype is not None else None
    self.in_channels = int(in_channels)
    self.mean, self.std = channel_stats(self.in_channels, mean, std)
    self.dtype = dtype
    chans = [max(1, int(round(w * width))) for w in widths]
    convs, bns = [], []
    c_in = self.in_channels
    for c, s in zip(chans, strides):
      convs.append(conv(c_in, c, 3, int(s), rngs=rngs, dtype=dtype))
      bns.append(batch_norm(c, rngs=rngs, dtype=dtype, axis_name=bn_axis_name, momentum=bn_momentum))
      c_in = c
    self.convs = nnx.List(convs)
    self.bns = nnx.List(bns)
    self.feature_dim = int(c_in)

  def __call__(self, x: jax.Array) -> jax.Array:
    check_images(x, self.in_channels, type(self).__name__)
    x = standardize(x, self.mean, self.std, self.dtype)
    for c, b in zip(self.convs, self.bns):
      x = nnx.relu(b(c(x)))
    return global_avg_pool(x)


def convnet_small(*, rngs: nnx.Rngs, **kwargs) -> ConvNet:
  kwargs.setdefault("in_channels", 1)
  return ConvNet(rngs=rngs, **kwargs)
