"""Multi-crop augmentation (SwAV, Caron et al. 2020, arXiv 2006.09882; DINO, Caron et al.
2021, arXiv 2104.14294): the two global views plus N small, low-resolution crops per image.

Config (the `data` section; off by default, and then the step is the two-view program,
unchanged):

    data.multicrop_num_small    N >= 0 small crops per image (0: off)
    data.multicrop_small_size   side of the small crops in pixels, 1 .. data.image_size; None:
                                round(image_size * 96 / 224), the ratio of SwAV's and DINO's
                                96-px crops of 224-px global crops (12 px for Fashion-MNIST)
    data.multicrop_small_scale  (min, max) fraction of the image area a small crop covers
                                (DINO's local crops: (0.05, 0.4))

What the step does with them (`jaxssl.step`):

* Each small crop is view 1's augmentation (`augment.AugmentConfig` of the preset) with the
  random resized crop always on, at `multicrop_small_size` and `multicrop_small_scale`: the
  same on-device pipeline as the global views, one key per example.
* Keys: the global views use `split(key)` of the step key (`augment.make_views`), untouched;
  the small crops use `split(fold_in(key, SMALL_CROP_STREAM), N)`, crop s the s-th key. So the
  two global views are identical with and without small crops.
* The small crops go through the online network only, all N * B of them in one call of
  their own (`apply_small`), as SwAV and DINO forward each resolution as one batch: their
  BatchNorm statistics are those of the small crops, never mixed with the global views'.
  As in those PyTorch references, that call also moves the running BatchNorm averages (after
  the two global views' calls), so evaluation-mode statistics see the small crops too.
  The EMA target (BYOL) sees the global views only.
* The loss compares every view with each global view but itself and averages over those
  2 (N + 1) pairs (`jaxssl.losses.multicrop`). The method's `multicrop_loss` hook does this
  (`jaxssl.methods`: simclr, infonce, byol, simsiam, vicreg); the other methods are refused.
* The online probe and the in-graph diagnostics use the global views only, as without
  multi-crop.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections

from jaxssl import augment
from jaxssl import methods
from jaxssl.errors import ConfigError

PyTree = Any

# fold_in(step key, SMALL_CROP_STREAM) roots the small crops' keys; "MC" in ASCII.
SMALL_CROP_STREAM = 0x4D43
# SwAV / DINO: 96-px small crops of 224-px global crops.
SMALL_SIZE_RATIO = 96 / 224
DEFAULT_SMALL_SCALE = (0.05, 0.4)

NUM_SMALL, SMALL_SIZE, SMALL_SCALE = ("data.multicrop_num_small", "data.multicrop_small_size",
                                      "data.multicrop_small_scale")
# Their defaults (config.ENGINE_DEFAULTS adds them to configs that lack them).
DEFAULTS: dict[str, Any] = {NUM_SMALL: 0, SMALL_SIZE: None, SMALL_SCALE: DEFAULT_SMALL_SCALE}


@dataclasses.dataclass(frozen=True)
class MultiCrop:
  """The static multi-crop settings of a run: N small crops made with `view_cfg`."""
  num_small: int
  view_cfg: augment.AugmentConfig


def _field(cfg: ml_collections.ConfigDict, dotted: str) -> Any:
  section, leaf = dotted.split(".")
  return cfg[section].get(leaf, DEFAULTS[dotted])


def num_small(cfg: ml_collections.ConfigDict) -> int:
  """N, the small crops per image (0: multi-crop off)."""
  return int(_field(cfg, NUM_SMALL))


def small_size(cfg: ml_collections.ConfigDict) -> int:
  """The small crops' side in pixels: data.multicrop_small_size, or round(image_size * 96/224)."""
  size = _field(cfg, SMALL_SIZE)
  return max(1, round(int(cfg.data.image_size) * SMALL_SIZE_RATIO)) if size is None else int(size)


def small_view_config(cfg: ml_collections.ConfigDict, view_cfg: augment.AugmentConfig) -> augment.AugmentConfig:
  """A small crop's augmentation: `view_cfg` (view 1's) with a random resized crop (always
  applied) to small_size x small_size covering `data.multicrop_small_scale` of the area."""
  size, scale = small_size(cfg), tuple(_field(cfg, SMALL_SCALE))
  try:
    return view_cfg.replace(crop_size=size, crop_p=1.0, crop_scale=scale)
  except ConfigError as e:
    raise ConfigError(f"config.{SMALL_SIZE}={size} / config.{SMALL_SCALE}={scale}: the small crops' "
                      f"augmentation is invalid: {e}") from None


def from_config(cfg: ml_collections.ConfigDict, view_cfgs: tuple) -> MultiCrop | None:
  """The run's MultiCrop, or None when it is off (data.multicrop_num_small = 0)."""
  n = num_small(cfg)
  return MultiCrop(n, small_view_config(cfg, view_cfgs[0])) if n else None


def validate(cfg: ml_collections.ConfigDict) -> None:
  """ConfigError naming the field for a bad multi-crop setting, or a method without multi-crop."""
  n, size, scale = (_field(cfg, f) for f in (NUM_SMALL, SMALL_SIZE, SMALL_SCALE))
  if isinstance(n, bool) or not isinstance(n, int) or n < 0:
    raise ConfigError(f"config.{NUM_SMALL} must be an int >= 0 (0: multi-crop off), got {n!r}")
  image = cfg.data.image_size
  if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
    raise ConfigError(f"config.{SMALL_SIZE} must be a positive int (pixels) or None "
                      f"(round(image_size * 96/224)), got {size!r}")
  if size is not None and isinstance(image, int) and size > image:
    raise ConfigError(f"config.{SMALL_SIZE}={size} is larger than the global views "
                      f"(config.data.image_size={image}); small crops must be at most {image} px.")
  if not augment.is_area_range(scale):
    raise ConfigError(f"config.{SMALL_SCALE} must be a (min, max) area fraction with 0 < min <= max <= 1, "
                      f"e.g. {DEFAULT_SMALL_SCALE}, got {scale!r}")
  if not n:
    return
  method = methods.get_method(cfg.method)
  if method.multicrop_loss is None:
    known = sorted(m.name for m in methods.METHODS.values() if m.multicrop_loss is not None)
    raise ConfigError(f"config.{NUM_SMALL}={n}: method {method.name!r} does not support multi-crop; "
                      f"use config.{NUM_SMALL}=0, or one of the methods that do: {', '.join(known)}")
  small_view_config(cfg, augment.views_of_config(cfg)[0])


def small_views(key: jax.Array, images: jax.Array, mc: MultiCrop) -> jax.Array:
  """N small crops of each image: uint8 [B, H, W, C] -> float32 [N, B, s, s, C] in [0, 1].

  Crop s of every image comes from `augment.augment_batch(keys[s], images, mc.view_cfg)`,
  keys = split(fold_in(key, SMALL_CROP_STREAM), N): `key`'s own split, which the global
  views use, is not consumed.
  """
  keys = jax.random.split(jax.random.fold_in(key, SMALL_CROP_STREAM), mc.num_small)   # [N] keys
  return jnp.stack([augment.augment_batch(k, images, mc.view_cfg) for k in keys])


def apply_small(apply_fn: Callable[..., tuple[dict[str, jax.Array], PyTree]], params: PyTree,
                batch_stats: PyTree, crops: jax.Array) -> tuple[dict[str, jax.Array], PyTree]:
  """The online network on all small crops [N, B, s, s, C] as one batch of B * N images.

  Returns ({"r": [N, B, F], "z": [N, B, D], "p": [N, B, D]}, new batch stats). The crops are
  laid out image-major ([B, N] flattened), so a batch sharded over images stays sharded.
  """
  n, b = crops.shape[:2]
  x = jnp.swapaxes(crops, 0, 1).reshape((b * n,) + crops.shape[2:])   # [B * N, s, s, C]
  out, batch_stats = apply_fn(params, batch_stats, x)

  def unflatten(y: jax.Array) -> jax.Array:
    return jnp.swapaxes(y.reshape((b, n) + y.shape[1:]), 0, 1)         # [N, B, ...]
  return {k: unflatten(v) for k, v in out.items()}, batch_stats


def describe(mc: MultiCrop | None) -> str:
  """One line for logs."""
  if mc is None:
    return "multi-crop off"
  return f"multi-crop: {mc.num_small} small crops, {augment.describe(mc.view_cfg)}"


__all__ = ["MultiCrop", "DEFAULTS", "SMALL_CROP_STREAM", "num_small", "small_size", "small_view_config",
           "from_config", "validate", "small_views", "apply_small", "describe"]
