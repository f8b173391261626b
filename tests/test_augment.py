"""jaxssl.augment: behaviour checked against numbers and against independent NumPy
references (colorsys for hue), not just shapes."""
import colorsys
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxssl import augment as A
from jaxssl import parallel
from jaxssl.errors import ConfigError, DataError

MAKE_VIEWS = jax.jit(A.make_views, static_argnums=2)
AUGMENT = jax.jit(A.augment_batch, static_argnums=2)
IDENTITY = dict(crop_p=0.0, flip_p=0.0, jitter_p=0.0, gray_p=0.0, blur_p=0.0, solarize_p=0.0, noise_p=0.0)


def rand_uint8(shape, seed=0):
  return np.random.RandomState(seed).randint(0, 256, shape).astype(np.uint8)


def rand_float(shape, seed=0):
  return np.random.RandomState(seed).rand(*shape).astype(np.float32)


# ----------------------------------------------------------------------------- NumPy references

def np_gray(x):
  return 0.299 * x[..., 0:1] + 0.587 * x[..., 1:2] + 0.114 * x[..., 2:3]


def np_brightness(x, f):
  return np.clip(x * f, 0, 1)


def np_contrast(x, f):
  m = np_gray(x).mean() if x.shape[-1] == 3 else x.mean()
  return np.clip(f * x + (1 - f) * m, 0, 1)


def np_saturation(x, f):
  return np.clip(f * x + (1 - f) * np_gray(x), 0, 1)


def np_hue(x, d):
  flat = x.reshape(-1, 3).astype(np.float64)
  out = []
  for r, g, b in flat:
    h, s, v = colorsys.rgb_to_hsv(r, g, b)
    out.append(colorsys.hsv_to_rgb((h + d) % 1.0, s, v))
  return np.asarray(out).reshape(x.shape)


NP_OPS = {A.BRIGHTNESS: np_brightness, A.CONTRAST: np_contrast, A.SATURATION: np_saturation, A.HUE: np_hue}


# ----------------------------------------------------------------------------- colour ops

def test_grayscale_weights():
  x = rand_float((5, 7, 3))
  np.testing.assert_allclose(np.asarray(A.grayscale(jnp.asarray(x))), np_gray(x), atol=1e-6)
  assert A.GRAY_WEIGHTS == (0.299, 0.587, 0.114)
  # Pure channels give the weights; white stays white; three-channel output.
  eye = np.eye(3, dtype=np.float32).reshape(3, 1, 3)
  np.testing.assert_allclose(np.asarray(A.grayscale(jnp.asarray(eye)))[:, 0, 0], [0.299, 0.587, 0.114], atol=1e-7)
  g3 = np.asarray(A.to_grayscale(jnp.ones((2, 2, 3))))
  np.testing.assert_allclose(g3, 1.0, atol=1e-6)
  x1 = rand_float((4, 4, 1))
  np.testing.assert_array_equal(np.asarray(A.to_grayscale(jnp.asarray(x1))), x1)


@pytest.mark.parametrize("f", [0.0, 0.6, 1.0, 1.4])
def test_brightness_contrast_saturation_formulas(f):
  x = rand_float((6, 5, 3), seed=1)
  xj = jnp.asarray(x)
  np.testing.assert_allclose(np.asarray(A.adjust_brightness(xj, f)), np_brightness(x, f), atol=1e-6)
  np.testing.assert_allclose(np.asarray(A.adjust_contrast(xj, f)), np_contrast(x, f), atol=1e-6)
  np.testing.assert_allclose(np.asarray(A.adjust_saturation(xj, f)), np_saturation(x, f), atol=1e-6)
  # Gray images: contrast uses the image mean, saturation is the identity.
  g = rand_float((6, 5, 1), seed=2)
  np.testing.assert_allclose(np.asarray(A.adjust_contrast(jnp.asarray(g), f)), np_contrast(g, f), atol=1e-6)
  np.testing.assert_array_equal(np.asarray(A.adjust_saturation(jnp.asarray(g), f)), g)


@pytest.mark.parametrize("delta", [0.0, 0.05, -0.1, 0.25, 0.5, -0.5])
def test_hue_matches_colorsys(delta):
  rng = np.random.RandomState(3)
  px = rng.rand(300, 3)
  px[:5] = px[:5, :1]              # grays (zero saturation)
  px[5:10, 1] = px[5:10, 0]        # ties between the max channels
  px[10] = 0.0
  px[11] = 1.0
  x = px.astype(np.float32).reshape(20, 15, 3)
  got = np.asarray(A.adjust_hue(jnp.asarray(x), delta))
  np.testing.assert_allclose(got, np_hue(x, delta), atol=2e-6)


def test_hsv_round_trip_matches_colorsys():
  px = rand_float((50, 3), seed=4)
  hsv = np.asarray(A.rgb_to_hsv(jnp.asarray(px)))
  ref = np.asarray([colorsys.rgb_to_hsv(*p) for p in px.astype(np.float64)])
  np.testing.assert_allclose(hsv, ref, atol=2e-6)
  np.testing.assert_allclose(np.asarray(A.hsv_to_rgb(jnp.asarray(hsv))), px, atol=2e-6)


def test_solarize_threshold():
  x = jnp.asarray([0.0, 0.2, 0.4999, 0.5, 0.7, 1.0])
  np.testing.assert_allclose(np.asarray(A.solarize(x, 0.5)), [0.0, 0.2, 0.4999, 0.5, 0.3, 0.0], atol=1e-7)
  np.testing.assert_allclose(np.asarray(A.solarize(x, 0.3)), [0.0, 0.2, 0.5001, 0.5, 0.3, 0.0], atol=1e-6)


@pytest.mark.parametrize("sigma,size", [(0.1, 3), (0.7, 3), (1.0, 5), (2.0, 23)])
def test_blur_kernel_and_separable_conv(sigma, size):
  k = np.asarray(A.gaussian_kernel1d(jnp.float32(sigma), size))
  assert k.shape == (size,)
  np.testing.assert_allclose(k.sum(), 1.0, atol=1e-6)
  np.testing.assert_allclose(k, k[::-1], atol=1e-7)
  d = np.arange(size) - size // 2
  ref = np.exp(-d ** 2 / (2 * sigma ** 2))
  np.testing.assert_allclose(k, ref / ref.sum(), atol=1e-6)
  # The blur equals a NumPy separable convolution with reflect padding.
  x = rand_float((30, 26, 3), seed=5)
  r = size // 2
  xp = np.pad(x, ((r, r), (0, 0), (0, 0)), mode="reflect")
  y = sum(k[i] * xp[i:i + 30] for i in range(size))
  yp = np.pad(y, ((0, 0), (r, r), (0, 0)), mode="reflect")
  y = sum(k[i] * yp[:, i:i + 26] for i in range(size))
  np.testing.assert_allclose(np.asarray(A.gaussian_blur(jnp.asarray(x), jnp.float32(sigma), size)), y, atol=1e-5)
  # A constant image stays constant (the kernel sums to one).
  c = np.full((12, 12, 1), 0.3, np.float32)
  np.testing.assert_allclose(np.asarray(A.gaussian_blur(jnp.asarray(c), jnp.float32(sigma), min(size, 11))), 0.3,
                             atol=1e-6)


def test_jitter_applies_ops_in_the_sampled_random_order():
  cfg = A.AugmentConfig(crop_size=8, brightness=0.6, contrast=0.6, saturation=0.6, hue=0.2)
  x = rand_float((8, 8, 3), seed=6)
  orders = set()
  for i in range(40):
    order, factors = A.jitter_params(jax.random.PRNGKey(i), cfg)
    order, factors = np.asarray(order), np.asarray(factors)
    orders.add(tuple(order))
    assert sorted(order) == [0, 1, 2, 3]
    assert 0.4 <= factors[0] <= 1.6 and 0.4 <= factors[1] <= 1.6 and 0.4 <= factors[2] <= 1.6
    assert -0.2 <= factors[3] <= 0.2
    ref = x.astype(np.float64)
    for op in order:
      ref = NP_OPS[int(op)](ref, factors[int(op)])
    got = np.asarray(A.apply_jitter(jnp.asarray(x), jnp.asarray(order), jnp.asarray(factors), cfg))
    np.testing.assert_allclose(got, ref, atol=3e-5)
  assert len(orders) > 10      # the order really is random (24 possible)


def test_jitter_order_permutations_are_uniform():
  cfg = A.AugmentConfig(crop_size=8)
  keys = jax.random.split(jax.random.PRNGKey(0), 4800)
  orders = np.asarray(jax.vmap(lambda k: A.jitter_params(k, cfg)[0])(keys))
  counts = {p: 0 for p in itertools.permutations(range(4))}
  for o in orders:
    counts[tuple(o)] += 1
  c = np.asarray(list(counts.values()))
  assert c.min() > 200 - 4 * 14 and c.max() < 200 + 4 * 14   # 200 expected, sd ~14


# ----------------------------------------------------------------------------- geometry

def test_crop_box_distribution_within_scale_and_ratio():
  scale, ratio = (0.2, 0.6), (3 / 4, 4 / 3)
  h, w = 40, 48
  keys = jax.random.split(jax.random.PRNGKey(1), 4000)
  boxes = np.asarray(jax.vmap(lambda k: A.sample_crop_box(k, h, w, scale, ratio))(keys))
  y0, x0, ch, cw = boxes.T
  area = ch * cw / (h * w)
  assert np.all(area >= scale[0] - 1e-5) and np.all(area <= scale[1] + 1e-5)
  r = cw / ch
  assert np.all(r >= ratio[0] - 1e-5) and np.all(r <= ratio[1] + 1e-5)
  assert np.all(y0 >= -1e-5) and np.all(x0 >= -1e-5)
  assert np.all(y0 + ch <= h + 1e-4) and np.all(x0 + cw <= w + 1e-4)
  # Every draw fits in a 40x48 image at these scales, so area fraction ~ U(0.2, 0.6).
  assert abs(area.mean() - 0.4) < 0.01
  assert abs(area.std() - 0.4 / np.sqrt(12)) < 0.01
  assert area.min() < 0.21 and area.max() > 0.59
  # Positions are spread over the free range.
  assert 0.4 < np.mean(x0 / (w - cw)) < 0.6


def test_crop_box_fallback_is_central():
  # A 10x100 strip cannot hold a crop of ratio <= 4/3 and area >= 90%: fallback.
  box = np.asarray(A.sample_crop_box(jax.random.PRNGKey(0), 10, 100, (0.9, 1.0), (3 / 4, 4 / 3)))
  np.testing.assert_allclose(box, [0.0, (100 - 10 * 4 / 3) / 2, 10, 10 * 4 / 3], atol=1e-4)


def test_random_resized_crop_output_covers_the_configured_area():
  """Crops of a coordinate ramp: the output's own pixel values reveal which part of the
  input it shows, so the area is measured on the output image itself."""
  h = w = 64
  ys, xs = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w, indexing="ij")
  ramp = np.stack([xs, ys, np.zeros_like(xs)], -1).astype(np.float32)
  cfg = A.AugmentConfig(crop_size=32, crop_scale=(0.25, 0.6), **{**IDENTITY, "crop_p": 1.0})
  out = np.asarray(AUGMENT(jax.random.PRNGKey(0), jnp.asarray(np.repeat(ramp[None], 300, 0)), cfg))
  c = slice(4, 28)    # interior columns / rows (edges are clamped by the resampler)
  t = (np.arange(32)[c] + 0.5)
  sx = np.polyfit(t, out[:, 16, c, 0].T, 1)[0] * 32     # crop width / image width
  sy = np.polyfit(t, out[:, c, 16, 1].T, 1)[0] * 32
  area = sx * sy
  assert np.all(area > 0.25 - 0.01) and np.all(area < 0.6 + 0.01)
  assert area.min() < 0.3 and area.max() > 0.55
  r = sx / sy
  assert np.all(r > 3 / 4 - 0.02) and np.all(r < 4 / 3 + 0.02)


@pytest.mark.parametrize("p", [0.5, 0.2])
def test_flip_frequency(p):
  n = 4000
  img = np.zeros((1, 4, 6, 1), np.uint8)
  img[..., :3, :] = 255                         # left half white
  cfg = A.AugmentConfig(crop_size=(4, 6), **{**IDENTITY, "flip_p": p})
  out = np.asarray(AUGMENT(jax.random.PRNGKey(2), jnp.asarray(np.repeat(img, n, 0)), cfg))
  flipped = out[:, 0, 0, 0] == 0.0
  assert np.all(np.where(flipped[:, None, None, None], out == img[:, :, ::-1] / 255, out == img / 255))
  sd = np.sqrt(p * (1 - p) / n)
  assert abs(flipped.mean() - p) < 4 * sd


def test_probability_gates_frequencies():
  n = 3000
  x = np.repeat(rand_uint8((1, 8, 8, 3), seed=7), n, 0)
  base = np.asarray(A.to_float(jnp.asarray(x)))
  for field, p in [("gray_p", 0.3), ("solarize_p", 0.4), ("jitter_p", 0.6), ("blur_p", 0.25)]:
    cfg = A.AugmentConfig(crop_size=8, **{**IDENTITY, field: p})
    out = np.asarray(AUGMENT(jax.random.PRNGKey(3), jnp.asarray(x), cfg))
    changed = np.any(np.abs(out - base) > 1e-6, axis=(1, 2, 3))
    assert abs(changed.mean() - p) < 4 * np.sqrt(p * (1 - p) / n), field


def test_probability_zero_is_identity():
  x = rand_uint8((16, 20, 20, 3))
  cfg = A.AugmentConfig(crop_size=20, **IDENTITY)
  out = A.augment_batch(jax.random.PRNGKey(0), jnp.asarray(x), cfg)
  np.testing.assert_allclose(np.asarray(out), x / 255.0, rtol=0, atol=1e-7)   # x * (1/255) vs x / 255
  xf = rand_float((4, 9, 9, 1))
  out = A.augment_batch(jax.random.PRNGKey(0), jnp.asarray(xf), A.preset("none", 9)[0])
  np.testing.assert_array_equal(np.asarray(out), xf)
  # Crop scale and ratio fixed at 1 on a square image: the "crop" is the whole image.
  cfg = A.AugmentConfig(crop_size=20, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), **{**IDENTITY, "crop_p": 1.0})
  out = A.augment_batch(jax.random.PRNGKey(0), jnp.asarray(x), cfg)
  np.testing.assert_allclose(np.asarray(out), x / 255.0, atol=1e-5)


# ----------------------------------------------------------------------------- pipeline

@pytest.mark.parametrize("name,channels,dtype", [("simclr", 3, np.uint8), ("byol", 3, np.float32),
                                                 ("fmnist", 1, np.uint8), ("simclr", 1, np.uint8)])
def test_presets_output_range_shape_dtype(name, channels, dtype):
  x = rand_uint8((32, 28, 28, channels), seed=8)
  if dtype == np.float32:
    x = x.astype(np.float32) / 255.0
  v1, v2 = MAKE_VIEWS(jax.random.PRNGKey(0), jnp.asarray(x), A.preset(name, 24))
  for v in (v1, v2):
    assert v.shape == (32, 24, 24, channels) and v.dtype == jnp.float32
    v = np.asarray(v)
    assert np.all(np.isfinite(v)) and v.min() >= 0.0 and v.max() <= 1.0
  assert not np.allclose(np.asarray(v1), np.asarray(v2))


def test_same_key_same_output_different_keys_differ():
  x = jnp.asarray(rand_uint8((8, 32, 32, 3)))
  cfgs = A.preset("byol", 32)
  a = MAKE_VIEWS(jax.random.PRNGKey(5), x, cfgs)
  b = MAKE_VIEWS(jax.random.PRNGKey(5), x, cfgs)
  c = MAKE_VIEWS(jax.random.PRNGKey(6), x, cfgs)
  for u, v, w in zip(a, b, c):
    np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
    diff = np.abs(np.asarray(u) - np.asarray(w)).reshape(8, -1).max(1)
    assert np.all(diff > 1e-3)          # every example differs
  # Each example gets its own key: identical inputs give different views.
  same = jnp.asarray(np.repeat(rand_uint8((1, 32, 32, 3)), 8, 0))
  v = np.asarray(AUGMENT(jax.random.PRNGKey(0), same, cfgs[0]))
  assert all(not np.allclose(v[0], v[i]) for i in range(1, 8))
  # The typed-key API works too and gives the same numbers as the raw key.
  t = MAKE_VIEWS(jax.random.wrap_key_data(jax.random.PRNGKey(5)), x, cfgs)
  np.testing.assert_array_equal(np.asarray(t[0]), np.asarray(a[0]))


def test_jit_equals_eager():
  x = jnp.asarray(rand_uint8((8, 32, 32, 3), seed=9))
  cfgs = A.preset("byol", 32)
  key = jax.random.PRNGKey(11)
  eager = A.make_views(key, x, cfgs)
  jitted = MAKE_VIEWS(key, x, cfgs)
  for e, j in zip(eager, jitted):
    np.testing.assert_allclose(np.asarray(e), np.asarray(j), atol=1e-5)


def test_sharded_batch_gives_the_same_views():
  mesh = parallel.make_mesh()
  n = len(jax.devices())
  x = rand_uint8((4 * n, 32, 32, 3), seed=12)
  cfgs = A.preset("simclr", 32)
  key = jax.random.PRNGKey(3)
  ref = MAKE_VIEWS(key, jnp.asarray(x), cfgs)
  xs = jax.device_put(x, NamedSharding(mesh, P("data")))
  out = jax.jit(A.make_views, static_argnums=2, out_shardings=NamedSharding(mesh, P("data")))(key, xs, cfgs)
  for r, o in zip(ref, out):
    np.testing.assert_allclose(np.asarray(r), np.asarray(o), atol=1e-5)


def test_byol_views_are_asymmetric():
  v1, v2 = A.preset("byol", 32)
  assert (v1.blur_p, v2.blur_p) == (1.0, 0.1)
  assert (v1.solarize_p, v2.solarize_p) == (0.0, 0.2)
  s1, s2 = A.preset("simclr", 32)
  assert s1 == s2 and s1.blur_p == 0.0 and s1.brightness == pytest.approx(0.4)
  big = A.preset("simclr", 224)[0]
  assert big.blur_p == 0.5 and big.brightness == pytest.approx(0.8) and big.kernel_size == 23
  f = A.preset("fmnist", 28)[0]
  assert f.crop_scale[0] >= 0.2 and f.hue == 0 and f.saturation == 0


def test_bad_config_and_inputs_raise_clear_errors():
  with pytest.raises(ConfigError, match="known presets"):
    A.preset("moco", 32)
  with pytest.raises(ConfigError, match="crop_scale"):
    A.AugmentConfig(crop_size=32, crop_scale=(0.5, 0.2))
  with pytest.raises(ConfigError, match="probability"):
    A.AugmentConfig(crop_size=32, flip_p=1.5)
  with pytest.raises(ConfigError, match="hue"):
    A.AugmentConfig(crop_size=32, hue=0.7)
  with pytest.raises(ConfigError, match="odd"):
    A.AugmentConfig(crop_size=32, blur_kernel_size=4)
  with pytest.raises(ConfigError, match="override"):
    A.preset("simclr", 32, not_a_field=1)
  cfg = A.preset("simclr", 32)[0]
  with pytest.raises(DataError, match="NHWC"):
    A.augment_batch(jax.random.PRNGKey(0), jnp.zeros((32, 32, 3), jnp.uint8), cfg)
  with pytest.raises(DataError, match="channels"):
    A.augment_batch(jax.random.PRNGKey(0), jnp.zeros((2, 3, 32, 32), jnp.uint8), cfg)
  with pytest.raises(DataError, match="dtype"):
    A.augment_batch(jax.random.PRNGKey(0), jnp.zeros((2, 32, 32, 3), jnp.int32), cfg)
  assert A.preset("simclr", 32, crop_scale=(0.2, 1.0))[1].crop_scale == (0.2, 1.0)


def test_gray_input_colour_ops_are_consistent():
  """On C=1 images the colour ops that need colour are identities; brightness acts."""
  x = rand_uint8((64, 16, 16, 1), seed=13)
  cfg = A.AugmentConfig(crop_size=16, **{**IDENTITY, "jitter_p": 1.0, "gray_p": 1.0},
                        brightness=0.0, contrast=0.0, saturation=0.8, hue=0.4)
  out = np.asarray(A.augment_batch(jax.random.PRNGKey(0), jnp.asarray(x), cfg))
  np.testing.assert_allclose(out, x / 255.0, rtol=0, atol=1e-7)
  cfg = cfg.replace(brightness=0.5)
  out = np.asarray(A.augment_batch(jax.random.PRNGKey(0), jnp.asarray(x), cfg))
  ratio = out.reshape(64, -1).sum(1) / (x.reshape(64, -1).sum(1) / 255.0)
  assert ratio.min() < 0.8 and ratio.max() > 1.2
