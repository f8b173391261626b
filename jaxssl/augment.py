"""On-device image augmentations for self-supervised learning: pure JAX, jit-able, and
vmapped over the batch with one PRNG key per example.

The host only decodes and shards uint8 batches; the two views are made here, inside the
compiled train step:

    v1, v2 = make_views(key, images, preset("simclr", 32))   # uint8 [B,H,W,C] -> 2 x float32 [B,32,32,C]

Pipeline for one example (each stage is skipped at trace time when its probability or
strength is 0, so a disabled stage costs nothing and is an exact identity):

  1. random resized crop (`crop_p`, `crop_scale`, `crop_ratio`) to `crop_size`, with
     `jax.image.scale_and_translate` (bilinear, antialiased when shrinking). The box is
     sampled as in torchvision's `RandomResizedCrop`: area fraction ~ U(scale), log
     aspect ratio ~ U(log ratio), 10 attempts, then a central fallback crop; box corners
     are continuous (sub-pixel), not rounded to integers.
  2. horizontal flip (`flip_p`).
  3. colour jitter (`jitter_p`): brightness, contrast, saturation and hue, applied in a
     random order per example, with factors drawn as in torchvision's `ColorJitter`.
  4. random grayscale (`gray_p`).
  5. gaussian blur (`blur_p`, sigma ~ U(`blur_sigma`)), separable, fixed kernel size.
  6. solarize (`solarize_p`): pixels >= `solarize_threshold` become 1 - x.
  7. additive gaussian noise (`noise_p`, `noise_std`), then clipped.

Images are NHWC, uint8 (scaled by 1/255) or float in [0, 1]; the output is float32 in
[0, 1]. Grayscale images (C = 1, e.g. Fashion-MNIST) are supported: brightness and
contrast act on the single channel, while saturation, hue and grayscale are identities
and are skipped.

Colour formulas (x in [0, 1], every op clips to [0, 1] as torchvision does):
  gray(x)          = 0.299 R + 0.587 G + 0.114 B           (ITU-R 601 luma)
  brightness(x, f) = f x,                     f ~ U[max(0, 1 - b), 1 + b]
  contrast(x, f)   = f x + (1 - f) mean(gray(x)),  f ~ U[max(0, 1 - c), 1 + c]
  saturation(x, f) = f x + (1 - f) gray(x),        f ~ U[max(0, 1 - s), 1 + s]
  hue(x, d)        = HSV hue shifted by d (mod 1),  d ~ U[-h, h]   (as `colorsys`)
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from jaxssl.errors import ConfigError, DataError

GRAY_WEIGHTS = (0.299, 0.587, 0.114)

# Colour-jitter op ids, in the order used by `jitter_params`' permutation.
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3
_JITTER_NAMES = ("brightness", "contrast", "saturation", "hue")


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """One view's augmentation. Frozen and hashable, so it can be a static jit argument.

  Attributes:
    crop_size: output size, int (square) or (height, width).
    crop_p: probability of a random resized crop; otherwise the whole image is resized
      to `crop_size` (no resize at all when the sizes already match).
    crop_scale: (min, max) fraction of the image area covered by the crop, in (0, 1].
    crop_ratio: (min, max) aspect ratio width / height of the crop.
    flip_p: probability of a horizontal flip.
    jitter_p: probability of applying colour jitter (all four ops, random order).
    brightness, contrast, saturation: jitter strengths (>= 0); 0 disables the op.
    hue: hue jitter strength in [0, 0.5]; 0 disables it.
    gray_p: probability of converting to grayscale (kept with C channels).
    blur_p: probability of a gaussian blur.
    blur_sigma: (min, max) of the blur's standard deviation, in pixels of the output.
    blur_kernel_size: odd kernel size; None -> about 10% of the crop side (SimCLR), at
      least 3.
    solarize_p: probability of solarizing.
    solarize_threshold: pixels >= threshold are inverted (x -> 1 - x).
    noise_p: probability of adding gaussian noise.
    noise_std: standard deviation of that noise (images in [0, 1]).
    resize_method: `jax.image` method of the crop ("linear", "cubic", "lanczos3", ...).
    antialias: antialias when the crop is shrunk.
  """
  crop_size: int | tuple[int, int]
  crop_p: float = 1.0
  crop_scale: tuple[float, float] = (0.08, 1.0)
  crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
  flip_p: float = 0.5
  jitter_p: float = 0.8
  brightness: float = 0.4
  contrast: float = 0.4
  saturation: float = 0.2
  hue: float = 0.1
  gray_p: float = 0.2
  blur_p: float = 0.0
  blur_sigma: tuple[float, float] = (0.1, 2.0)
  blur_kernel_size: int | None = None
  solarize_p: float = 0.0
  solarize_threshold: float = 0.5
  noise_p: float = 0.0
  noise_std: float = 0.0
  resize_method: str = "linear"
  antialias: bool = True

  def __post_init__(self):
    size = self.crop_size
    if isinstance(size, (list, tuple)):
      size = tuple(int(s) for s in size)
      if len(size) != 2:
        raise ConfigError(f"AugmentConfig.crop_size must be an int or (height, width), got {self.crop_size!r}")
    else:
      size = int(size)
    object.__setattr__(self, "crop_size", size)
    for f in ("crop_scale", "crop_ratio", "blur_sigma"):
      v = getattr(self, f)
      if not isinstance(v, (list, tuple)) or len(v) != 2:
        raise ConfigError(f"AugmentConfig.{f} must be a (min, max) pair, got {v!r}")
      object.__setattr__(self, f, (float(v[0]), float(v[1])))
    h, w = self.output_size
    if h < 1 or w < 1:
      raise ConfigError(f"AugmentConfig.crop_size must be positive, got {self.crop_size!r}")
    for f in ("crop_p", "flip_p", "jitter_p", "gray_p", "blur_p", "solarize_p", "noise_p"):
      p = getattr(self, f)
      if not 0.0 <= float(p) <= 1.0:
        raise ConfigError(f"AugmentConfig.{f}={p} is a probability; use a value in [0, 1].")
    lo, hi = self.crop_scale
    if not 0.0 < lo <= hi <= 1.0:
      raise ConfigError(f"AugmentConfig.crop_scale={self.crop_scale} must satisfy 0 < min <= max <= 1 "
                        "(fractions of the image area), e.g. (0.08, 1.0).")
    lo, hi = self.crop_ratio
    if not 0.0 < lo <= hi:
      raise ConfigError(f"AugmentConfig.crop_ratio={self.crop_ratio} must satisfy 0 < min <= max, "
                        "e.g. (3/4, 4/3).")
    for f in ("brightness", "contrast", "saturation", "noise_std"):
      if float(getattr(self, f)) < 0:
        raise ConfigError(f"AugmentConfig.{f}={getattr(self, f)} must be >= 0 (0 disables it).")
    if not 0.0 <= self.hue <= 0.5:
      raise ConfigError(f"AugmentConfig.hue={self.hue} must be in [0, 0.5] (a fraction of the hue circle).")
    lo, hi = self.blur_sigma
    if not 0.0 < lo <= hi:
      raise ConfigError(f"AugmentConfig.blur_sigma={self.blur_sigma} must satisfy 0 < min <= max (pixels).")
    k = self.blur_kernel_size
    if k is not None and (int(k) != k or k < 1 or k % 2 == 0):
      raise ConfigError(f"AugmentConfig.blur_kernel_size={k} must be a positive odd integer (or None).")
    if self.blur_p > 0 and self.kernel_size // 2 >= min(h, w):
      raise ConfigError(f"AugmentConfig.blur_kernel_size={self.kernel_size} is too large for a "
                        f"{h}x{w} output; use at most {2 * min(h, w) - 1}.")
    if self.resize_method not in ("linear", "bilinear", "cubic", "bicubic", "lanczos3", "lanczos5",
                                  "nearest", "triangle"):
      raise ConfigError(f"AugmentConfig.resize_method={self.resize_method!r} is not a jax.image method; "
                        "use 'linear', 'cubic', 'lanczos3', 'lanczos5' or 'nearest'.")

  @property
  def output_size(self) -> tuple[int, int]:
    s = self.crop_size
    return (s, s) if isinstance(s, int) else tuple(s)

  @property
  def kernel_size(self) -> int:
    """The static blur kernel size actually used."""
    if self.blur_kernel_size is not None:
      return int(self.blur_kernel_size)
    k = int(round(0.1 * min(self.output_size)))
    k = k if k % 2 == 1 else k + 1
    return max(3, k)

  def replace(self, **kw: Any) -> "AugmentConfig":
    return dataclasses.replace(self, **kw)


# ----------------------------------------------------------------------------- colour ops

def _stage(x: jax.Array) -> jax.Array:
  """Materialises a stage's output. Without it XLA fuses the whole pipeline into a few
  elementwise loops and recomputes every earlier stage once per use of its result (a
  grayscale reads three channel slices, a blur K shifted copies): 5-10x slower on CPU."""
  return jax.lax.optimization_barrier(x)



def to_float(images: jax.Array) -> jax.Array:
  """uint8 -> float32 / 255; float -> float32 (assumed already in [0, 1])."""
  images = jnp.asarray(images)
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) / 255.0
  if not jnp.issubdtype(images.dtype, jnp.floating):
    raise DataError(f"images must be uint8 or float in [0, 1], got dtype {images.dtype}")
  return images.astype(jnp.float32)


def grayscale(x: jax.Array) -> jax.Array:
  """Luma 0.299 R + 0.587 G + 0.114 B, shape [..., 1]. Identity for C = 1."""
  if x.shape[-1] == 1:
    return x
  # Written as slices, not a reduction over the size-3 channel axis: XLA:CPU runs such
  # minor-axis reductions ~50x slower than the equivalent elementwise code.
  wr, wg, wb = GRAY_WEIGHTS
  return wr * x[..., 0:1] + wg * x[..., 1:2] + wb * x[..., 2:3]


def to_grayscale(x: jax.Array) -> jax.Array:
  """Grayscale with the input's channel count (broadcast to 3 channels for RGB)."""
  return jnp.broadcast_to(grayscale(x), x.shape)


def adjust_brightness(x: jax.Array, factor: jax.Array) -> jax.Array:
  return jnp.clip(x * factor, 0.0, 1.0)


def adjust_contrast(x: jax.Array, factor: jax.Array) -> jax.Array:
  """Blend with the mean gray level of the image ([H, W, C])."""
  mean = jnp.mean(grayscale(x))
  return jnp.clip(factor * x + (1.0 - factor) * mean, 0.0, 1.0)


def adjust_saturation(x: jax.Array, factor: jax.Array) -> jax.Array:
  if x.shape[-1] == 1:
    return x
  return jnp.clip(factor * x + (1.0 - factor) * grayscale(x), 0.0, 1.0)


def _rgb_to_hsv(r, g, b):
  maxc = jnp.maximum(jnp.maximum(r, g), b)
  minc = jnp.minimum(jnp.minimum(r, g), b)
  v = maxc
  delta = maxc - minc
  s = jnp.where(maxc > 0, delta / jnp.where(maxc > 0, maxc, 1.0), 0.0)
  safe = jnp.where(delta > 0, delta, 1.0)
  rc = (maxc - r) / safe
  gc = (maxc - g) / safe
  bc = (maxc - b) / safe
  h = jnp.where(r == maxc, bc - gc, jnp.where(g == maxc, 2.0 + rc - bc, 4.0 + gc - rc))
  h = jnp.where(delta > 0, jnp.mod(h / 6.0, 1.0), 0.0)
  return h, s, v


def _hsv_to_rgb(h, s, v):
  h6 = h * 6.0
  i = jnp.floor(h6)
  f = h6 - i
  i = jnp.mod(i, 6.0)
  p = v * (1.0 - s)
  q = v * (1.0 - s * f)
  t = v * (1.0 - s * (1.0 - f))
  conds = [i == k for k in range(5)]
  r = jnp.select(conds, [v, q, p, p, t], v)
  g = jnp.select(conds, [t, v, v, q, p], p)
  b = jnp.select(conds, [p, p, t, v, v], q)
  return r, g, b


def rgb_to_hsv(rgb: jax.Array) -> jax.Array:
  """[..., 3] RGB in [0, 1] -> [..., 3] HSV in [0, 1] (the formulas of `colorsys`)."""
  return jnp.stack(_rgb_to_hsv(rgb[..., 0], rgb[..., 1], rgb[..., 2]), axis=-1)


def hsv_to_rgb(hsv: jax.Array) -> jax.Array:
  """[..., 3] HSV in [0, 1] -> [..., 3] RGB (the formulas of `colorsys`)."""
  return jnp.stack(_hsv_to_rgb(hsv[..., 0], hsv[..., 1], hsv[..., 2]), axis=-1)


def adjust_hue(x: jax.Array, delta: jax.Array) -> jax.Array:
  """Rotates the HSV hue by `delta` (a fraction of the circle). Identity for C = 1.

  Equal to RGB -> HSV, h += delta (mod 1), HSV -> RGB, written without the HSV round
  trip: with the hue in sixths h6, each channel is v - (v - min) clip(min(k, 4 - k), 0, 1)
  for k = (n + h6) mod 6, n = 5, 3, 1 for R, G, B.
  """
  if x.shape[-1] == 1:
    return x
  r, g, b = x[..., 0], x[..., 1], x[..., 2]
  maxc = jnp.maximum(jnp.maximum(r, g), b)
  minc = jnp.minimum(jnp.minimum(r, g), b)
  delta_c = maxc - minc
  safe = jnp.where(delta_c > 0, delta_c, 1.0)
  h6 = jnp.where(r == maxc, (g - b) / safe,
                 jnp.where(g == maxc, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
  h6 = h6 + 6.0 * delta
  out = []
  for n in (5.0, 3.0, 1.0):
    k = n + h6
    k = k - 6.0 * jnp.floor(k / 6.0)      # mod 6 (floor is much cheaper than jnp.mod on CPU)
    out.append(maxc - delta_c * jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0))
  return jnp.clip(jnp.stack(out, axis=-1), 0.0, 1.0)


def solarize(x: jax.Array, threshold: float = 0.5) -> jax.Array:
  return jnp.where(x >= threshold, 1.0 - x, x)


def gaussian_kernel1d(sigma: jax.Array, size: int) -> jax.Array:
  """Normalised 1-D gaussian taps exp(-d^2 / (2 sigma^2)), d = -size//2 .. size//2."""
  r = size // 2
  d = jnp.arange(-r, r + 1, dtype=jnp.float32)
  w = jnp.exp(-0.5 * (d / sigma) ** 2)
  return w / jnp.sum(w)


def gaussian_blur(x: jax.Array, sigma: jax.Array, size: int) -> jax.Array:
  """Separable gaussian blur of one [H, W, C] image, reflect padding, static `size` taps."""
  r = size // 2
  if r == 0:
    return x
  w = gaussian_kernel1d(sigma, size)
  h_, w_ = x.shape[0], x.shape[1]
  xp = jnp.pad(x, ((r, r), (0, 0), (0, 0)), mode="reflect")
  x = sum(w[k] * xp[k:k + h_] for k in range(size))
  xp = jnp.pad(x, ((0, 0), (r, r), (0, 0)), mode="reflect")
  return sum(w[k] * xp[:, k:k + w_] for k in range(size))


# ----------------------------------------------------------------------------- sampling

CROP_ATTEMPTS = 10
_CROP_UNIFORMS = 2 * CROP_ATTEMPTS + 2
_JITTER_UNIFORMS = 8


def crop_box_from_uniforms(u: jax.Array, height: int, width: int,
                           scale: tuple[float, float] = (0.08, 1.0),
                           ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> jax.Array:
  """`sample_crop_box` given its 2 * CROP_ATTEMPTS + 2 uniforms in [0, 1)."""
  n = CROP_ATTEMPTS
  area = float(height * width)
  target = area * (scale[0] + (scale[1] - scale[0]) * u[:n])
  lo, hi = math.log(ratio[0]), math.log(ratio[1])
  r = jnp.exp(lo + (hi - lo) * u[n:2 * n])
  cw = jnp.sqrt(target * r)
  ch = jnp.sqrt(target / r)
  ok = (cw <= width) & (ch <= height)
  first = jnp.argmax(ok)
  any_ok = jnp.any(ok)
  # Fallback (torchvision): the central crop whose ratio is clamped into `ratio`.
  in_ratio = width / height
  if in_ratio < ratio[0]:
    fw, fh = float(width), width / ratio[0]
  elif in_ratio > ratio[1]:
    fw, fh = height * ratio[1], float(height)
  else:
    fw, fh = float(width), float(height)
  ch = jnp.where(any_ok, ch[first], fh)
  cw = jnp.where(any_ok, cw[first], fw)
  uy = jnp.where(any_ok, u[2 * n], 0.5)
  ux = jnp.where(any_ok, u[2 * n + 1], 0.5)
  y0 = uy * (height - ch)
  x0 = ux * (width - cw)
  return jnp.stack([y0, x0, ch, cw]).astype(jnp.float32)


def sample_crop_box(key: jax.Array, height: int, width: int,
                    scale: tuple[float, float] = (0.08, 1.0),
                    ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> jax.Array:
  """torchvision's RandomResizedCrop box, continuous: returns [y0, x0, h, w] (float32).

  Area fraction ~ U(scale) and log(w / h) ~ U(log ratio); the first of CROP_ATTEMPTS
  draws that fits in the image is used, otherwise the central crop with the ratio
  clamped. The corner is uniform over the positions where the box fits.
  """
  return crop_box_from_uniforms(jax.random.uniform(key, (_CROP_UNIFORMS,)), height, width, scale, ratio)


def crop_and_resize(x: jax.Array, box: jax.Array, out_size: tuple[int, int], *,
                    method: str = "linear", antialias: bool = True) -> jax.Array:
  """Resamples the (continuous) box [y0, x0, h, w] of one [H, W, C] image to `out_size`."""
  oh, ow = out_size
  y0, x0, ch, cw = box[0], box[1], box[2], box[3]
  scale = jnp.stack([oh / ch, ow / cw])
  translation = jnp.stack([-y0 * scale[0], -x0 * scale[1]])
  return jax.image.scale_and_translate(x, (oh, ow, x.shape[-1]), (0, 1), scale, translation,
                                       method=method, antialias=antialias)


def jitter_from_uniforms(u: jax.Array, cfg: AugmentConfig) -> tuple[jax.Array, jax.Array]:
  """`jitter_params` given 8 uniforms in [0, 1): the order is the argsort of the first 4
  (a uniformly random permutation), the factors are affine in the last 4."""
  order = jnp.argsort(u[:4]).astype(jnp.int32)

  def factor(v, s):
    lo = max(0.0, 1.0 - s)
    return lo + (1.0 + s - lo) * v

  factors = jnp.stack([factor(u[4], cfg.brightness), factor(u[5], cfg.contrast),
                       factor(u[6], cfg.saturation), cfg.hue * (2.0 * u[7] - 1.0)]).astype(jnp.float32)
  return order, factors


def jitter_params(key: jax.Array, cfg: AugmentConfig) -> tuple[jax.Array, jax.Array]:
  """(order [4] int32: a permutation of the op ids, factors [4] float32) for one example.

  factors = (brightness, contrast, saturation, hue delta), drawn as torchvision does:
  U[max(0, 1 - s), 1 + s] for the first three, U[-hue, hue] for the last.
  """
  return jitter_from_uniforms(jax.random.uniform(key, (_JITTER_UNIFORMS,)), cfg)


def _active_jitter_ops(cfg: AugmentConfig, channels: int) -> tuple[int, ...]:
  active = []
  if cfg.brightness > 0:
    active.append(BRIGHTNESS)
  if cfg.contrast > 0:
    active.append(CONTRAST)
  if channels == 3 and cfg.saturation > 0:
    active.append(SATURATION)
  if channels == 3 and cfg.hue > 0:
    active.append(HUE)
  return tuple(active)


def _affine_jitter(y: jax.Array, op: jax.Array, factors: jax.Array, cheap: tuple[int, ...]) -> jax.Array:
  """Brightness, contrast or saturation of one image, chosen by the traced op id.

  All three are a y + b gray(y) + c mean(gray(y)), clipped: brightness (f, 0, 0),
  contrast (f, 0, 1 - f), saturation (f, 1 - f, 0); any other id is the identity
  (1, 0, 0). One fused pass instead of one pass per candidate op.
  """
  one, zero = jnp.ones([], y.dtype), jnp.zeros([], y.dtype)
  is_b = (op == BRIGHTNESS) if BRIGHTNESS in cheap else False
  is_c = (op == CONTRAST) if CONTRAST in cheap else False
  is_s = (op == SATURATION) if SATURATION in cheap else False
  a = jnp.where(is_b, factors[BRIGHTNESS],
                jnp.where(is_c, factors[CONTRAST], jnp.where(is_s, factors[SATURATION], one)))
  out = a * y
  if SATURATION in cheap or CONTRAST in cheap:
    g = grayscale(y)
    if SATURATION in cheap:
      out = out + jnp.where(is_s, 1.0 - factors[SATURATION], zero) * g
    if CONTRAST in cheap:
      out = out + jnp.where(is_c, 1.0 - factors[CONTRAST], zero) * jnp.mean(g)
  return jnp.clip(out, 0.0, 1.0)


def apply_jitter(x: jax.Array, order: jax.Array, factors: jax.Array, cfg: AugmentConfig) -> jax.Array:
  """Applies the active colour ops to one [H, W, C] image in the given order.

  Equivalent to `for op in order: x = op(x)`. Hue, the only costly op, is computed once:
  the ops before it in `order` run first, then hue, then the ops after it.
  """
  active = _active_jitter_ops(cfg, x.shape[-1])
  cheap = tuple(k for k in active if k != HUE)
  if not active:
    return x
  # Each op's output is materialised (_stage): contrast reduces over the image, and XLA
  # would otherwise recompute the whole chain before it inside that reduction.
  if HUE not in active:
    for i in range(4):
      x = _stage(_affine_jitter(x, order[i], factors, cheap))
    return x
  j = jnp.argmax(order == HUE)
  none = jnp.asarray(-1, order.dtype)
  if cheap:
    for i in range(3):      # hue is at position j, so at most 3 ops precede it
      x = _stage(_affine_jitter(x, jnp.where(i < j, order[i], none), factors, cheap))
  x = _stage(adjust_hue(x, factors[HUE]))
  if cheap:
    for i in range(1, 4):   # ... and at most 3 follow it
      x = _stage(_affine_jitter(x, jnp.where(i > j, order[i], none), factors, cheap))
  return x


# ----------------------------------------------------------------------------- pipeline

def _check_images(images: jax.Array) -> None:
  shape = tuple(images.shape)
  if len(shape) != 4:
    raise DataError(f"augment expects a batch of NHWC images [B, H, W, C], got shape {shape}.")
  if shape[-1] not in (1, 3):
    raise DataError(f"augment expects 1 (gray) or 3 (RGB) channels, got shape {shape} "
                    "(images must be NHWC, channels last).")


def augment_image(key: jax.Array, x: jax.Array, cfg: AugmentConfig) -> jax.Array:
  """Augments one float32 image [H, W, C] in [0, 1] -> float32 [h, w, C] in [0, 1].

  All random numbers of the example come from one `uniform(key, (40,))` draw (plus one
  normal draw for noise): each PRNG call is a separate threefry in the compiled program,
  and a dozen of them make XLA's compile several seconds slower.
  """
  h, w, c = x.shape
  oh, ow = cfg.output_size
  u = jax.random.uniform(key, (_CROP_UNIFORMS + _JITTER_UNIFORMS + 10,))
  u_crop = u[:_CROP_UNIFORMS]
  u_jit = u[_CROP_UNIFORMS:_CROP_UNIFORMS + _JITTER_UNIFORMS]
  (u_crop_p, u_flip, u_jit_p, u_gray, u_sigma, u_blur_p, u_sol, u_noise_p) = [
      u[_CROP_UNIFORMS + _JITTER_UNIFORMS + i] for i in range(8)]

  full = jnp.asarray([0.0, 0.0, h, w], jnp.float32)
  if cfg.crop_p > 0:
    box = crop_box_from_uniforms(u_crop, h, w, cfg.crop_scale, cfg.crop_ratio)
    if cfg.crop_p < 1:
      box = jnp.where(u_crop_p < cfg.crop_p, box, full)
    x = crop_and_resize(x, box, (oh, ow), method=cfg.resize_method, antialias=cfg.antialias)
    x = _stage(jnp.clip(x, 0.0, 1.0))   # clip: cubic / lanczos kernels overshoot
  elif (oh, ow) != (h, w):
    x = crop_and_resize(x, full, (oh, ow), method=cfg.resize_method, antialias=cfg.antialias)
    x = _stage(jnp.clip(x, 0.0, 1.0))

  if cfg.flip_p > 0:
    x = _stage(jnp.where(u_flip < cfg.flip_p, x[:, ::-1], x))

  if cfg.jitter_p > 0 and _active_jitter_ops(cfg, c):
    order, factors = jitter_from_uniforms(u_jit, cfg)
    y = apply_jitter(x, order, factors, cfg)
    x = _stage(y if cfg.jitter_p >= 1 else jnp.where(u_jit_p < cfg.jitter_p, y, x))

  if cfg.gray_p > 0 and c == 3:
    x = _stage(jnp.where(u_gray < cfg.gray_p, to_grayscale(x), x))

  if cfg.blur_p > 0:
    sigma = cfg.blur_sigma[0] + (cfg.blur_sigma[1] - cfg.blur_sigma[0]) * u_sigma
    y = gaussian_blur(x, sigma, cfg.kernel_size)
    x = _stage(y if cfg.blur_p >= 1 else jnp.where(u_blur_p < cfg.blur_p, y, x))

  if cfg.solarize_p > 0:
    x = jnp.where(u_sol < cfg.solarize_p, solarize(x, cfg.solarize_threshold), x)

  if cfg.noise_p > 0 and cfg.noise_std > 0:
    y = x + cfg.noise_std * jax.random.normal(jax.random.fold_in(key, 1), x.shape, x.dtype)
    x = jnp.where(u_noise_p < cfg.noise_p, y, x)

  return jnp.clip(x, 0.0, 1.0)


def augment_batch(key: jax.Array, images: jax.Array, cfg: AugmentConfig) -> jax.Array:
  """[B, H, W, C] uint8 or float in [0, 1] -> float32 [B, h, w, C] in [0, 1].

  Example i uses key `jax.random.split(key, B)[i]`, so the result does not depend on
  how the batch is sharded (with JAX's default partitionable threefry).
  """
  if not isinstance(cfg, AugmentConfig):
    raise ConfigError(f"augment_batch needs an AugmentConfig, got {type(cfg).__name__}")
  _check_images(images)
  x = to_float(images)
  keys = jax.random.split(key, x.shape[0])
  return jax.vmap(lambda k, im: augment_image(k, im, cfg))(keys, x)


def make_views(key: jax.Array, images: jax.Array,
               view_cfgs: tuple[AugmentConfig, AugmentConfig]) -> tuple[jax.Array, jax.Array]:
  """Two augmented views of the same batch, with independent keys."""
  if len(view_cfgs) != 2:
    raise ConfigError(f"make_views needs two AugmentConfigs (one per view), got {len(view_cfgs)}")
  k1, k2 = jax.random.split(key)
  return augment_batch(k1, images, view_cfgs[0]), augment_batch(k2, images, view_cfgs[1])


# ----------------------------------------------------------------------------- presets

PRESETS = ("simclr", "byol", "fmnist", "none")


def preset(name: str, image_size: int | tuple[int, int], **overrides: Any
           ) -> tuple[AugmentConfig, AugmentConfig]:
  """(view 1, view 2) augmentation configs of a named recipe, cropping to `image_size`.

  simclr  Chen et al. 2020, symmetric. Colour strength s = 1 (jitter 0.8, 0.8, 0.8, 0.2)
          and blur p = 0.5 for images > 64 px (ImageNet, STL-10); s = 0.5 (0.4, 0.4,
          0.4, 0.1) and no blur for <= 64 px (CIFAR, Appendix B.9). Crop scale
          (0.08, 1), flip 0.5, jitter p 0.8, grayscale 0.2.
  byol    Grill et al. 2020, asymmetric: jitter (0.4, 0.4, 0.2, 0.1) p 0.8, grayscale
          0.2, blur p 1.0 / 0.1, solarize p 0.0 / 0.2.
  fmnist  for 28x28 grayscale: crop scale (0.2, 1), flip 0.5, brightness/contrast 0.4
          with p 0.8, blur p 0.2 (sigma 0.1..1, 3 taps), gaussian noise p 0.2 (std 0.05).
  none    identity (evaluation): only resized to `image_size` if needed.

  `overrides` replace fields in both views, e.g. preset("simclr", 32, crop_scale=(0.2, 1)).
  """
  key = str(name).lower().replace("-", "_")
  size = image_size if isinstance(image_size, int) else tuple(image_size)
  side = size if isinstance(size, int) else min(size)
  if key == "simclr":
    s, blur = (1.0, 0.5) if side > 64 else (0.5, 0.0)
    v = AugmentConfig(crop_size=size, crop_scale=(0.08, 1.0), flip_p=0.5, jitter_p=0.8,
                      brightness=0.8 * s, contrast=0.8 * s, saturation=0.8 * s, hue=0.2 * s,
                      gray_p=0.2, blur_p=blur, blur_sigma=(0.1, 2.0))
    views = (v, v)
  elif key == "byol":
    v1 = AugmentConfig(crop_size=size, crop_scale=(0.08, 1.0), flip_p=0.5, jitter_p=0.8,
                       brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1, gray_p=0.2,
                       blur_p=1.0, blur_sigma=(0.1, 2.0), solarize_p=0.0)
    views = (v1, v1.replace(blur_p=0.1, solarize_p=0.2))
  elif key in ("fmnist", "fashion_mnist"):
    v = AugmentConfig(crop_size=size, crop_scale=(0.2, 1.0), flip_p=0.5, jitter_p=0.8,
                      brightness=0.4, contrast=0.4, saturation=0.0, hue=0.0, gray_p=0.0,
                      blur_p=0.2, blur_sigma=(0.1, 1.0), blur_kernel_size=3,
                      noise_p=0.2, noise_std=0.05)
    views = (v, v)
  elif key in ("none", "identity"):
    v = AugmentConfig(crop_size=size, crop_p=0.0, flip_p=0.0, jitter_p=0.0, gray_p=0.0)
    views = (v, v)
  else:
    raise ConfigError(f"unknown augmentation preset {name!r}; known presets: {', '.join(PRESETS)}.")
  if overrides:
    try:
      views = tuple(v.replace(**overrides) for v in views)
    except TypeError as e:
      fields = sorted(f.name for f in dataclasses.fields(AugmentConfig))
      raise ConfigError(f"bad augmentation override {sorted(overrides)}: {e}. Fields: {fields}") from None
  return views


def is_area_range(value: Any) -> bool:
  """Whether `value` is a (min, max) fraction of the image area: 0 < min <= max <= 1."""
  return (isinstance(value, (tuple, list)) and len(value) == 2
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
          and 0.0 < value[0] <= value[1] <= 1.0)


def views_of_config(cfg: Any) -> tuple[AugmentConfig, AugmentConfig]:
  """The (view 1, view 2) configs of a run: `preset(cfg.data.augment, cfg.data.image_size)`,
  with `cfg.data.crop_scale` as both views' crop area range where it is not None.

  `cfg` is a run's `ml_collections.ConfigDict`; the one place a run's views are resolved
  (the training step, the label-free criteria and the multi-crop small views all use it).
  """
  scale = cfg.data.get("crop_scale")
  if scale is not None and not is_area_range(scale):
    raise ConfigError(f"config.data.crop_scale must be None (the preset's) or a (min, max) fraction of the "
                      f"image area with 0 < min <= max <= 1, e.g. (0.2, 1.0); got {scale!r}")
  overrides = {} if scale is None else {"crop_scale": tuple(scale)}
  return preset(cfg.data.augment, int(cfg.data.image_size), **overrides)


def describe(cfg: AugmentConfig) -> str:
  """One-line summary of a view config (for logs)."""
  parts = [f"crop {cfg.output_size} p={cfg.crop_p} scale={cfg.crop_scale}", f"flip {cfg.flip_p}"]
  if cfg.jitter_p:
    parts.append(f"jitter p={cfg.jitter_p} ({cfg.brightness}, {cfg.contrast}, {cfg.saturation}, {cfg.hue})")
  for f in ("gray_p", "blur_p", "solarize_p", "noise_p"):
    if getattr(cfg, f):
      parts.append(f"{f[:-2]} {getattr(cfg, f)}")
  return ", ".join(parts)


__all__ = ["AugmentConfig", "augment_batch", "augment_image", "make_views", "preset", "PRESETS", "views_of_config", "is_area_range",
           "sample_crop_box", "crop_box_from_uniforms", "jitter_from_uniforms", "crop_and_resize", "jitter_params", "apply_jitter", "grayscale",
           "to_grayscale", "adjust_brightness", "adjust_contrast", "adjust_saturation", "adjust_hue",
           "rgb_to_hsv", "hsv_to_rgb", "solarize", "gaussian_kernel1d", "gaussian_blur", "to_float",
           "describe", "GRAY_WEIGHTS"]

