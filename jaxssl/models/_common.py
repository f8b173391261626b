"""Pieces shared by the encoders: input checks, per-channel standardisation, BatchNorm factory."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxssl.errors import ConfigError, DataError

# Per-channel mean / std of the training images in [0, 1].
DATASET_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "stl10": ((0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713)),
    "imagenet2012": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
DATASET_STATS["fmnist"] = DATASET_STATS["fashion_mnist"]
DATASET_STATS["cifar"] = DATASET_STATS["cifar10"]
DATASET_STATS["imagenet"] = DATASET_STATS["imagenet2012"]

# He-normal (fan_out) for convolutions, as torchvision's ResNet.
conv_init = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")


def channel_stats(in_channels: int, mean: Any, std: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """Resolves `mean`/`std` (None = 0.5/0.25, a dataset name, a scalar or a per-channel sequence)."""
  if isinstance(mean, str) or isinstance(std, str):
    name = mean if isinstance(mean, str) else std
    if name not in DATASET_STATS:
      raise ConfigError(f"unknown dataset {name!r} for input statistics; known: {sorted(DATASET_STATS)}")
    mean, std = DATASET_STATS[name]
  mean = 0.5 if mean is None else mean
  std = 0.25 if std is None else std

  def as_tuple(v, what):
    v = tuple(float(a) for a in np.ravel(np.asarray(v, dtype=np.float64)))
    if len(v) == 1 and in_channels > 1:
      v = v * in_channels
    if len(v) != in_channels:
      raise ConfigError(f"{what} has {len(v)} entries but the model has in_channels={in_channels}")
    return v

  mean, std = as_tuple(mean, "mean"), as_tuple(std, "std")
  if any(s <= 0 for s in std):
    raise ConfigError(f"std must be positive, got {std}")
  return mean, std


def check_images(x: jax.Array, in_channels: int, name: str) -> None:
  """Shape checks at trace time (so bad inputs fail before compilation)."""
  if x.ndim != 4:
    raise DataError(f"{name} expects images [batch, height, width, channels], got shape {tuple(x.shape)}")
  if x.shape[-1] != in_channels:
    raise DataError(f"{name} was built for in_channels={in_channels} but got images of shape "
                    f"{tuple(x.shape)}; build it with in_channels={x.shape[-1]} (NHWC layout).")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise DataError(f"{name} expects float images in [0, 1], got dtype {x.dtype}; "
                    "convert uint8 with x.astype(jnp.float32) / 255.")


def standardize(x: jax.Array, mean: tuple[float, ...], std: tuple[float, ...], dtype) -> jax.Array:
  x = (x.astype(jnp.float32) - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
  return x.astype(dtype) if dtype is not None else x


def batch_norm(num_features: int, *, rngs: nnx.Rngs, dtype=None, momentum: float = 0.9,
               epsilon: float = 1e-5, axis_name: str | None = None, zero_scale: bool = False,
               use_scale: bool = True, use_bias: bool = True) -> nnx.BatchNorm:
  """nnx.BatchNorm in training mode with PyTorch-like defaults (running average momentum 0.9,
  i.e. torch momentum=0.1). `zero_scale` starts gamma at 0 (zero-init residual)."""
  return nnx.BatchNorm(
      num_features, use_running_average=False, momentum=momentum, epsilon=epsilon, dtype=dtype,
      param_dtype=jnp.float32, axis_name=axis_name, use_scale=use_scale, use_bias=use_bias,
      scale_init=nnx.initializers.zeros_init() if zero_scale else nnx.initializers.ones_init(),
      rngs=rngs)


def conv(in_ch: int, out_ch: int, kernel: int, stride: int = 1, *, rngs: nnx.Rngs, dtype=None,
         use_bias: bool = False) -> nnx.Conv:
  """Conv with symmetric padding kernel//2 (as PyTorch; 'SAME' pads asymmetrically at stride 2)."""
  p = kernel // 2
  return nnx.Conv(in_ch, out_ch, (kernel, kernel), strides=(stride, stride), padding=((p, p), (p, p)),
                  use_bias=use_bias, kernel_init=conv_init, dtype=dtype, param_dtype=jnp.float32,
                  rngs=rngs)


def global_avg_pool(x: jax.Array) -> jax.Array:
  """[B, H, W, C] -> [B, C] float32."""
  return jnp.mean(x.astype(jnp.float32), axis=(1, 2))
