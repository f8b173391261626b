"""ResNet-18/34/50 encoders (He et al. 2016, torchvision v1.5 layout) in Flax NNX.

* `stem="cifar"`: 3x3 conv, stride 1, no max-pool (SimCLR/solo-learn CIFAR variant).
  `stem="imagenet"`: 7x7 conv stride 2 + 3x3 max-pool stride 2.
* `zero_init_residual=True` starts the last BatchNorm gamma of every block at 0, so each
  block is the identity map (after the ReLU) at initialisation (Goyal et al. 2017; DirectCLR).
* The output is the global-average-pooled representation r, [batch, feature_dim] float32.
  There is no classification layer.
* Inputs are float images [batch, H, W, C] in [0, 1]; they are standardised inside with the
  per-channel `mean`/`std` given at construction.
* `dtype` is the compute dtype (e.g. bfloat16 on accelerators); parameters stay float32,
  BatchNorm statistics are computed in float32.
* `bn_axis_name`: set it when the model runs inside `shard_map`/`pmap` with the batch split
  over that mesh axis, so BatchNorm statistics are averaged over the global batch. Under plain
  `jax.jit` with a batch-sharded `NamedSharding`, leave it None: GSPMD makes the batch mean global.
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxssl.errors import ConfigError
from jaxssl.models._common import (batch_norm, channel_stats, check_images, conv, global_avg_pool,
                                   standardize)

STEMS = ("cifar", "imagenet")


class BasicBlock(nnx.Module):
  """3x3 conv - BN - ReLU - 3x3 conv - BN, plus (projection) shortcut, then ReLU."""
  expansion = 1

  def __init__(self, in_ch: int, width: int, stride: int = 1, *, rngs: nnx.Rngs, dtype=None,
               zero_init_residual: bool = False, bn_axis_name: str | None = None,
               bn_momentum: float = 0.9):
    bn = dict(rngs=rngs, dtype=dtype, axis_name=bn_axis_name, momentum=bn_momentum)
    out_ch = width * self.expansion
    self.conv1 = conv(in_ch, width, 3, stride, rngs=rngs, dtype=dtype)
    self.bn1 = batch_norm(width, **bn)
    self.conv2 = conv(width, out_ch, 3, 1, rngs=rngs, dtype=dtype)
    self.bn2 = batch_norm(out_ch, zero_scale=zero_init_residual, **bn)
    if stride != 1 or in_ch != out_ch:
      self.down_conv = conv(in_ch, out_ch, 1, stride, rngs=rngs, dtype=dtype)
      self.down_bn = batch_norm(out_ch, **bn)
    else:
      self.down_conv = self.down_bn = None
    self.out_ch = out_ch

  def shortcut(self, x: jax.Array) -> jax.Array:
    return x if self.down_conv is None else self.down_bn(self.down_conv(x))

  def residual(self, x: jax.Array) -> jax.Array:
    y = nnx.relu(self.bn1(self.conv1(x)))
    return self.bn2(self.conv2(y))

  def __call__(self, x: jax.Array) -> jax.Array:
    return nnx.relu(self.residual(x) + self.shortcut(x))


class Bottleneck(nnx.Module):
  """1x1 - 3x3 (stride here, v1.5) - 1x1 (x4) convs with BN, plus shortcut, then ReLU."""
  expansion = 4

  def __init__(self, in_ch: int, width: int, stride: int = 1, *, rngs: nnx.Rngs, dtype=None,
               zero_init_residual: bool = False, bn_axis_name: str | None = None,
               bn_momentum: float = 0.9):
    bn = dict(rngs=rngs, dtype=dtype, axis_name=bn_axis_name, momentum=bn_momentum)
    out_ch = width * self.expansion
    self.conv1 = conv(in_ch, width, 1, 1, rngs=rngs, dtype=dtype)
    self.bn1 = batch_norm(width, **bn)
    self.conv2 = conv(width, width, 3, stride, rngs=rngs, dtype=dtype)
    self.bn2 = batch_norm(width, **bn)
    self.conv3 = conv(width, out_ch, 1, 1, rngs=rngs, dtype=dtype)
    self.bn3 = batch_norm(out_ch, zero_scale=zero_init_residual, **bn)
    if stride != 1 or in_ch != out_ch:
      self.down_conv = conv(in_ch, out_ch, 1, stride, rngs=rngs, dtype=dtype)
      self.down_bn = batch_norm(out_ch, **bn)
    else:
      self.down_conv = self.down_bn = None
    self.out_ch = out_ch

  def shortcut(self, x: jax.Array) -> jax.Array:
    return x if self.down_conv is None else self.down_bn(self.down_conv(x))

  def residual(self, x: jax.Array) -> jax.Array:
    y = nnx.relu(self.bn1(self.conv1(x)))
    y = nnx.relu(self.bn2(self.conv2(y)))
    return self.bn3(self.conv3(y))

  def __call__(self, x: jax.Array) -> jax.Array:
    return nnx.relu(self.residual(x) + self.shortcut(x))


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}
DEPTHS: dict[str, tuple[Sequence[int], str]] = {
    "resnet18": ((2, 2, 2, 2), "basic"),
    "resnet34": ((3, 4, 6, 3), "basic"),
    "resnet50": ((3, 4, 6, 3), "bottleneck"),
}


class ResNet(nnx.Module):
  """A ResNet trunk: stem, four stages, global average pool. Call: [B,H,W,C] in [0,1] -> [B, F]."""

  def __init__(self, stage_sizes: Sequence[int], block: str = "basic", *, rngs: nnx.Rngs,
               stem: str = "cifar", in_channels: int = 3, width: float = 1.0,
               zero_init_residual: bool = False, mean: Any = None, std: Any = None, dtype: Any = None,
               bn_axis_name: str | None = None, bn_momentum: float = 0.9):
    if stem not in STEMS:
      raise ConfigError(f"unknown ResNet stem {stem!r}; use one of {STEMS}")
    if block not in BLOCKS:
      raise ConfigError(f"unknown ResNet block {block!r}; use one of {tuple(BLOCKS)}")
    if width <= 0:
      raise ConfigError(f"ResNet width multiplier must be positive, got {width}")
    if in_channels < 1:
      raise ConfigError(f"in_channels must be >= 1, got {in_channels}")
    dtype = jnp.dtype(dtype) if dtype is not None else None
    self.in_channels = int(in_channels)
    self.mean, self.std = channel_stats(self.in_channels, mean, std)
    self.dtype = dtype
    self.stem = stem
    base = max(1, int(round(64 * width)))
    bn = dict(rngs=rngs, dtype=dtype, axis_name=bn_axis_name, momentum=bn_momentum)
    if stem == "cifar":
      self.stem_conv = conv(self.in_channels, base, 3, 1, rngs=rngs, dtype=dtype)
    else:
      self.stem_conv = conv(self.in_channels, base, 7, 2, rngs=rngs, dtype=dtype)
    self.stem_bn = batch_norm(base, **bn)
    block_cls = BLOCKS[block]
    blocks = []
    in_ch = base
    for i, n in enumerate(stage_sizes):
      w = base * 2 ** i
      for j in range(n):
        stride = 2 if (i > 0 and j == 0) else 1
        b = block_cls(in_ch, w, stride, rngs=rngs, dtype=dtype, zero_init_residual=zero_init_residual,
                      bn_axis_name=bn_axis_name, bn_momentum=bn_momentum)
        blocks.append(b)
        in_ch = b.out_ch
    self.blocks = nnx.List(blocks)
    self.feature_dim = int(in_ch)

  def __call__(self, x: jax.Array) -> jax.Array:
    check_images(x, self.in_channels, type(self).__name__)
    x = standardize(x, self.mean, self.std, self.dtype)
    x = nnx.relu(self.stem_bn(self.stem_conv(x)))
    if self.stem == "imagenet":
      x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for b in self.blocks:
      x = b(x)
    return global_avg_pool(x)


def resnet(depth_name: str, *, rngs: nnx.Rngs, **kwargs) -> ResNet:
  stages, block = DEPTHS[depth_name]
  return ResNet(stages, block, rngs=rngs, **kwargs)


def resnet18(*, rngs: nnx.Rngs, **kwargs) -> ResNet:
  return resnet("resnet18", rngs=rngs, **kwargs)


def resnet34(*, rngs: nnx.Rngs, **kwargs) -> ResNet:
  return resnet("resnet34", rngs=rngs, **kwargs)


def resnet50(*, rngs: nnx.Rngs, **kwargs) -> ResNet:
  return resnet("resnet50", rngs=rngs, **kwargs)
