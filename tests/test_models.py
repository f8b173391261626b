"""Encoders, heads and the functional `models.apply`: shapes, parameter counts, zero-init
residual, BatchNorm numerics vs NumPy, purity, and cross-device BatchNorm under shard_map."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxssl import models
from jaxssl.errors import ConfigError, DataError

EPS = 1e-5   # BatchNorm epsilon used by jaxssl
MOM = 0.9    # BatchNorm running-average momentum used by jaxssl


_R18 = dict(stem="cifar", width=0.0625, zero_init_residual=True,
            mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.25))


@pytest.fixture(scope="module")
def tiny_r18():
  """One small ResNet-18 (random init compiles one RNG program per kernel shape, so build once)."""
  return models.build_encoder("resnet18", rngs=nnx.Rngs(0), **_R18)


def _abstract(name, **kw):
  """The graphdef of an encoder built abstractly (no initialisation compute)."""
  return nnx.split(nnx.eval_shape(lambda: models.build_encoder(name, rngs=nnx.Rngs(0), **kw)),
                   nnx.Param, nnx.BatchStat)[0]


def _split(m):
  g, p, b = nnx.split(m, nnx.Param, nnx.BatchStat)
  return g, nnx.to_pure_dict(p), nnx.to_pure_dict(b)


def _images(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).random(shape, dtype=np.float32))


# --------------------------------------------------------------------------- sizes


@pytest.mark.parametrize("name,stem,expected,feat", [
    ("resnet18", "cifar", 11_168_832, 512),      # torchvision CIFAR variant 11,173,962 minus fc (5,130)
    ("resnet18", "imagenet", 11_176_512, 512),   # torchvision 11,689,512 minus fc (513,000)
    ("resnet34", "imagenet", 21_284_672, 512),   # 21,797,672 - 513,000
    ("resnet50", "imagenet", 23_508_032, 2048),  # 25,557,032 - 2,049,000
])
def test_resnet_param_counts(name, stem, expected, feat):
  m = nnx.eval_shape(lambda: models.build_encoder(name, rngs=nnx.Rngs(0), stem=stem))
  assert models.count_params(m) == expected
  assert m.feature_dim == feat


@pytest.mark.parametrize("name,kw,shape,feat", [
    ("resnet18", dict(stem="cifar", width=0.125), (2, 32, 32, 3), 64),
    ("resnet18", dict(stem="imagenet", width=0.125), (2, 64, 64, 3), 64),
    ("resnet34", dict(stem="cifar", width=0.0625), (2, 16, 16, 3), 32),
    ("resnet50", dict(stem="imagenet", width=0.0625), (2, 64, 64, 3), 128),
    ("resnet50", dict(stem="cifar"), (2, 32, 32, 3), 2048),
    ("convnet_small", dict(), (3, 28, 28, 1), None),
    ("resnet18", dict(stem="cifar", width=0.125, in_channels=1), (2, 28, 28, 1), 64),
])
def test_encoder_output_shapes(name, kw, shape, feat):
  # Abstract build and evaluation: traces the whole model (every layer and shape check), no compute.
  m = nnx.eval_shape(lambda: models.build_encoder(name, rngs=nnx.Rngs(0), **kw))
  if feat is not None:
    assert m.feature_dim == feat
  g, p, b = nnx.split(m, nnx.Param, nnx.BatchStat)
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  for train in (True, False):
    y, nb = jax.eval_shape(lambda p, b, x: models.apply(g, p, b, x, train=train), p, b, x)
    assert y.shape == (shape[0], m.feature_dim) and y.dtype == jnp.float32
    assert jax.tree.structure(nb) == jax.tree.structure(b)


def test_small_encoders_run(tiny_r18):
  for m, shape in [(tiny_r18, (3, 16, 16, 3)),
                   (models.build_encoder("convnet_small", rngs=nnx.Rngs(0)), (3, 28, 28, 1))]:
    g, p, b = _split(m)
    for train in (True, False):
      y, _ = jax.jit(lambda p, b, x: models.apply(g, p, b, x, train=train))(p, b, _images(shape))
      assert y.shape == (3, m.feature_dim) and np.all(np.isfinite(np.asarray(y)))


def test_convnet_small_size():
  m = models.build_encoder("convnet_small", rngs=nnx.Rngs(0))
  n = models.count_params(m)
  assert 50_000 <= n <= 400_000, n
  assert 128 <= m.feature_dim <= 256


# --------------------------------------------------------------------------- zero-init residual


@pytest.mark.parametrize("block_cls,in_ch,width,stride", [
    (models.BasicBlock, 8, 8, 1),       # identity shortcut
    (models.BasicBlock, 8, 16, 2),      # projection shortcut
    (models.Bottleneck, 16, 4, 1),      # identity shortcut (4 * 4 = 16)
    (models.Bottleneck, 8, 4, 2),       # projection shortcut
])
def test_zero_init_residual_block_is_shortcut(block_cls, in_ch, width, stride):
  x = _images((4, 8, 8, in_ch), seed=1) - 0.3
  blk = block_cls(in_ch, width, stride, rngs=nnx.Rngs(0), zero_init_residual=True)
  y = blk(x)
  np.testing.assert_array_equal(np.asarray(blk.residual(x)), 0.0)
  np.testing.assert_allclose(np.asarray(y), np.asarray(jax.nn.relu(blk.shortcut(x))), atol=0, rtol=0)
  if stride == 1 and in_ch == width * block_cls.expansion:
    xp = jnp.abs(x)   # post-ReLU inputs pass unchanged through an identity block
    np.testing.assert_array_equal(np.asarray(blk(xp)), np.asarray(xp))
  # Without the option the residual branch is live.
  blk2 = block_cls(in_ch, width, stride, rngs=nnx.Rngs(0), zero_init_residual=False)
  assert float(jnp.abs(blk2.residual(x)).max()) > 1e-3


def test_zero_init_residual_sets_last_gamma_only(tiny_r18):
  for b in tiny_r18.blocks:
    np.testing.assert_array_equal(np.asarray(b.bn2.scale[...]), 0.0)
    np.testing.assert_array_equal(np.asarray(b.bn1.scale[...]), 1.0)
  np.testing.assert_array_equal(np.asarray(tiny_r18.stem_bn.scale[...]), 1.0)


# --------------------------------------------------------------------------- BN numerics


def _np_conv3x3_s1(x, k):
  """NumPy 3x3 convolution, stride 1, zero padding 1, NHWC / HWIO."""
  n, h, w, _ = x.shape
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  out = np.zeros((n, h, w, k.shape[-1]), np.float64)
  for i in range(3):
    for j in range(3):
      out += np.einsum("nhwc,co->nhwo", xp[:, i:i + h, j:j + w, :], k[i, j])
  return out


def test_stem_batchnorm_running_stats_match_numpy(tiny_r18):
  mean, std = _R18["mean"], _R18["std"]
  g, p, b = _split(tiny_r18)
  x = _images((6, 8, 8, 3), seed=3)
  _, nb = jax.jit(lambda p, b, x: models.apply(g, p, b, x, train=True))(p, b, x)
  xs = (np.asarray(x, np.float64) - np.asarray(mean)) / np.asarray(std)
  h = _np_conv3x3_s1(xs, np.asarray(p["stem_conv"]["kernel"], np.float64))
  mu, var = h.mean((0, 1, 2)), h.var((0, 1, 2))      # biased batch variance, as flax
  np.testing.assert_allclose(nb["stem_bn"]["mean"], MOM * 0.0 + (1 - MOM) * mu, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(nb["stem_bn"]["var"], MOM * 1.0 + (1 - MOM) * var, rtol=1e-4, atol=1e-5)


def _np_mlp(x, p, stats, *, train, num_layers, bn_last):
  """NumPy reference of MLPHead (hidden BN on, last BN per flag, last BN affine-free)."""
  h = np.asarray(x, np.float64)
  new_stats = {}
  for i in range(num_layers):
    lin = p["linears"][i]
    h = h @ np.asarray(lin["kernel"], np.float64) + np.asarray(lin["bias"], np.float64)
    last = i == num_layers - 1
    if (not last) or bn_last:
      st = stats["norms"][i]
      if train:
        mu, var = h.mean(0), h.var(0)
        new_stats[i] = (MOM * np.asarray(st["mean"]) + (1 - MOM) * mu,
                        MOM * np.asarray(st["var"]) + (1 - MOM) * var)
      else:
        mu, var = np.asarray(st["mean"], np.float64), np.asarray(st["var"], np.float64)
      h = (h - mu) / np.sqrt(var + EPS)
      bnp = p.get("norms", {}).get(i, {})
      if "scale" in bnp:
        h = h * np.asarray(bnp["scale"]) + np.asarray(bnp["bias"])
    if not last:
      h = np.maximum(h, 0)
  return h, new_stats


@pytest.mark.parametrize("num_layers,bn_last", [(2, False), (3, True), (1, False)])
def test_mlp_head_and_bn_numerics_vs_numpy(num_layers, bn_last):
  head = models.build_head("mlp", 12, 5, rngs=nnx.Rngs(0), hidden_dim=16, num_layers=num_layers,
                           bn_last=bn_last)
  g, p, b = _split(head)
  # Non-trivial running stats and BN affine params, so eval mode is a real check.
  rng = np.random.default_rng(0)
  b = jax.tree.map(lambda a: jnp.asarray(rng.uniform(0.5, 1.5, a.shape), jnp.float32), b)
  p = jax.tree.map(lambda a: a + jnp.asarray(rng.normal(0, 0.1, a.shape), jnp.float32), p)
  x = jnp.asarray(rng.normal(size=(10, 12)), jnp.float32)
  f = jax.jit(lambda p, b, x, train: models.apply(g, p, b, x, train=train), static_argnums=3)
  for train in (True, False):
    y, nb = f(p, b, x, train)
    y_np, st_np = _np_mlp(x, p, b, train=train, num_layers=num_layers, bn_last=bn_last)
    np.testing.assert_allclose(np.asarray(y), y_np, rtol=2e-4, atol=2e-4)
    if train:
      for i, (mu, var) in st_np.items():
        np.testing.assert_allclose(nb["norms"][i]["mean"], mu, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(nb["norms"][i]["var"], var, rtol=1e-5, atol=1e-5)
    else:
      jax.tree.map(np.testing.assert_array_equal, nb, b)   # eval mode: statistics untouched
  n_bn = (num_layers - 1) + int(bn_last)
  assert len(jax.tree.leaves(b)) == 2 * n_bn


def test_simsiam_style_last_bn_has_no_affine():
  head = models.MLPHead(8, 16, 8, num_layers=3, bn_last=True, bn_last_affine=False, rngs=nnx.Rngs(0))
  _, p, b = _split(head)
  assert 2 not in p.get("norms", {})          # no scale / bias in the last BN
  assert set(b["norms"][2]) == {"mean", "var"}
  assert set(p["norms"][0]) == {"scale", "bias"}


# --------------------------------------------------------------------------- purity


def test_apply_is_pure_and_updates_stats_only_in_train_mode():
  m = models.build_encoder("convnet_small", rngs=nnx.Rngs(0), widths=(4, 8), strides=(1, 2))
  g, p, b = _split(m)
  p0, b0 = jax.tree.map(np.array, p), jax.tree.map(np.array, b)
  f = jax.jit(lambda p, b, x, train: models.apply(g, p, b, x, train=train), static_argnums=3)
  x = _images((5, 12, 12, 1))
  y1, nb1 = f(p, b, x, True)
  y2, nb2 = f(p, b, x, True)
  np.testing.assert_array_equal(np.asarray(y1), np.asarray(y2))
  jax.tree.map(np.testing.assert_array_equal, nb1, nb2)
  # inputs untouched
  jax.tree.map(np.testing.assert_array_equal, p, p0)
  jax.tree.map(np.testing.assert_array_equal, b, b0)
  # train mode changed the statistics; eval mode did not and differs from train-mode output
  assert any(not np.allclose(a, c) for a, c in zip(jax.tree.leaves(nb1), jax.tree.leaves(b0)))
  ye, nbe = f(p, b, x, False)
  jax.tree.map(np.testing.assert_array_equal, nbe, b0)
  assert not np.allclose(np.asarray(ye), np.asarray(y1))
  # State objects (not pure dicts) work too and come back as State
  g2, ps, bs = nnx.split(m, nnx.Param, nnx.BatchStat)
  y3, nb3 = jax.jit(lambda p, b, x: models.apply(g2, p, b, x, train=True))(ps, bs, x)
  assert isinstance(nb3, nnx.State)
  np.testing.assert_allclose(np.asarray(y3), np.asarray(y1), rtol=1e-6, atol=1e-6)


def test_apply_gradients_flow(tiny_r18):
  g, p, b = _split(tiny_r18)
  x = _images((4, 16, 16, 3))

  def loss(p):
    y, nb = models.apply(g, p, b, x, train=True)
    return jnp.sum(y ** 2), nb

  grads, _ = jax.jit(jax.grad(loss, has_aux=True))(p)
  assert jax.tree.structure(grads) == jax.tree.structure(p)
  assert float(jnp.abs(grads["stem_conv"]["kernel"]).sum()) > 0


# --------------------------------------------------------------------------- sharding


def _mesh(n=8):
  if len(jax.devices()) < n:
    pytest.skip(f"needs {n} devices")
  return Mesh(np.asarray(jax.devices()[:n]), ("data",))


@pytest.mark.parametrize("name", ["resnet18", "convnet_small"])
def test_shard_map_bn_axis_name_matches_unsharded(name, tiny_r18):
  mesh = _mesh()
  if name == "resnet18":
    ref_model, kw, shape = tiny_r18, _R18, (16, 8, 8, 3)
  else:
    kw, shape = dict(widths=(4, 8, 8), strides=(1, 2, 2)), (16, 12, 12, 1)
    ref_model = models.build_encoder(name, rngs=nnx.Rngs(0), **kw)
  g0, p, b = _split(ref_model)
  g1 = _abstract(name, bn_axis_name="data", **kw)     # same structure, BN pmean over "data"
  x = _images(shape, seed=5)
  y_ref, nb_ref = jax.jit(lambda p, b, x: models.apply(g0, p, b, x, train=True))(p, b, x)

  def local(p, b, x):
    return models.apply(g1, p, b, x, train=True)

  sm = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(), P(), P("data")),
                             out_specs=(P("data"), P())))
  y_sh, nb_sh = sm(p, b, x)
  np.testing.assert_allclose(np.asarray(y_sh), np.asarray(y_ref), rtol=1e-4, atol=1e-5)
  jax.tree.map(lambda a, c: np.testing.assert_allclose(np.asarray(a), np.asarray(c), rtol=1e-4, atol=1e-6),
               nb_sh, nb_ref)
  # without bn_axis_name the per-shard statistics differ (the test is not vacuous)
  sm_local = jax.jit(jax.shard_map(lambda p, b, x: models.apply(g0, p, b, x, train=True)[0], mesh=mesh,
                                   in_specs=(P(), P(), P("data")), out_specs=P("data")))
  assert not np.allclose(np.asarray(sm_local(p, b, x)), np.asarray(y_ref), atol=1e-3)


def test_jit_with_batch_sharding_gives_global_bn_stats():
  mesh = _mesh()
  m = models.build_encoder("convnet_small", rngs=nnx.Rngs(0), widths=(4, 8), strides=(1, 2))
  g, p, b = _split(m)
  x = _images((16, 12, 12, 1), seed=2)
  f = jax.jit(lambda p, b, x: models.apply(g, p, b, x, train=True))
  y_ref, nb_ref = f(p, b, x)
  xs = jax.device_put(x, NamedSharding(mesh, P("data")))
  y_sh, nb_sh = f(p, b, xs)
  np.testing.assert_allclose(np.asarray(y_sh), np.asarray(y_ref), rtol=1e-5, atol=1e-6)
  jax.tree.map(lambda a, c: np.testing.assert_allclose(np.asarray(a), np.asarray(c), rtol=1e-5, atol=1e-7),
               nb_sh, nb_ref)


# --------------------------------------------------------------------------- options and errors


def test_bfloat16_compute_float32_params(tiny_r18):
  g32, p, b = _split(tiny_r18)
  m16 = nnx.eval_shape(lambda: models.build_encoder("resnet18", rngs=nnx.Rngs(0), dtype="bfloat16", **_R18))
  g16, p16, b16 = nnx.split(m16, nnx.Param, nnx.BatchStat)
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(p16))      # params stay float32
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(b16))
  x = _images((8, 16, 16, 3))
  y32, _ = models.apply(g32, p, b, x, train=True)
  y16, nb16 = models.apply(g16, p, b, x, train=True)
  assert y16.dtype == jnp.float32
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(nb16))
  rel = float(jnp.linalg.norm(y16 - y32) / jnp.linalg.norm(y32))
  assert 0 < rel < 0.05, rel


def test_input_standardisation_constants():
  assert models.DATASET_STATS["cifar10"][0] == pytest.approx((0.4914, 0.4822, 0.4465))
  m = models.build_encoder("convnet_small", rngs=nnx.Rngs(0), mean="fashion_mnist", std="fashion_mnist")
  assert m.mean == pytest.approx((0.2860,)) and m.std == pytest.approx((0.3530,))
  m = nnx.eval_shape(lambda: models.build_encoder("resnet18", rngs=nnx.Rngs(0), width=0.125,
                                                  mean=0.5, std=0.2))
  assert m.mean == (0.5, 0.5, 0.5) and m.std == (0.2, 0.2, 0.2)
  with pytest.raises(ConfigError):
    models.build_encoder("resnet18", rngs=nnx.Rngs(0), width=0.125, mean=(0.1, 0.2), std=0.2)


def test_registry_errors():
  with pytest.raises(ConfigError, match="resnet18"):
    models.build_encoder("resnet19", rngs=nnx.Rngs(0))
  with pytest.raises(ConfigError, match="stem"):
    models.build_encoder("resnet18", rngs=nnx.Rngs(0), stem="tiny")
  with pytest.raises(ConfigError, match="unknown argument"):
    models.build_encoder("resnet18", rngs=nnx.Rngs(0), widht=2)
  with pytest.raises(ConfigError, match="mlp"):
    models.build_head("conv", 8, 8, rngs=nnx.Rngs(0))
  with pytest.raises(ConfigError):
    models.build_head("identity", 8, 4, rngs=nnx.Rngs(0))
  m = models.build_encoder("convnet_small", rngs=nnx.Rngs(0), widths=(4,), strides=(2,))
  with pytest.raises(DataError, match="in_channels"):
    m(jnp.zeros((2, 8, 8, 3)))
  with pytest.raises(DataError, match="float"):
    m(jnp.zeros((2, 8, 8, 1), jnp.uint8))


def test_heads_and_linear_predictor():
  r = jnp.asarray(np.random.default_rng(0).normal(size=(6, 10)), jnp.float32)
  ident = models.build_head("identity", 10, 10, rngs=nnx.Rngs(0))
  np.testing.assert_array_equal(np.asarray(ident(r)), np.asarray(r))
  assert models.count_params(ident) == 0
  lin = models.build_head("linear", 10, 4, rngs=nnx.Rngs(0))
  assert lin(r).shape == (6, 4)
  assert models.count_params(lin) == 10 * 4 + 4
  mlp = models.build_head("mlp", 10, 4, rngs=nnx.Rngs(0), hidden_dim=32)
  assert mlp(r).shape == (6, 4)

  pred = models.LinearPredictor(10, rngs=nnx.Rngs(0))
  g, p, b = _split(pred)
  assert list(p) == ["kernel"] and p["kernel"].shape == (10, 10)   # bias-free, one D x D kernel
  np.testing.assert_array_equal(np.asarray(pred(r)), np.asarray(r))  # identity init
  w = jnp.asarray(np.random.default_rng(1).normal(size=(10, 10)), jnp.float32)   # not symmetric
  y, _ = models.apply(g, {"kernel": w}, b, r, train=True)
  np.testing.assert_allclose(np.asarray(y), np.asarray(r) @ np.asarray(w), rtol=1e-5, atol=1e-5)
  pd = models.LinearPredictor(10, rngs=nnx.Rngs(0), init="default", bias=True)
  _, p2, _ = _split(pd)
  assert set(p2) == {"kernel", "bias"} and not np.allclose(p2["kernel"], np.eye(10))
  with pytest.raises(ConfigError):
    models.LinearPredictor(10, rngs=nnx.Rngs(0), init="orthogonal")
