"""Multi-crop (SwAV / DINO): 2 global views + N small crops.

* off (multicrop_num_small = 0) is the two-view program, bit for bit;
* the global views do not depend on the small crops (their keys are not consumed);
* the multi-crop losses equal a NumPy reference of "every view against each global view but
  itself, averaged over the pairs", and equal the two-view losses with N = 0; sharded too;
* a jitted step with small crops runs, with the configured crop shape and the loss recomputed
  outside the step;
* methods without a multi-crop loss, and bad settings, are refused naming the field.
"""
from __future__ import annotations

import copy
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec as P

from jaxssl import augment, config as config_lib, losses, multicrop, parallel
from jaxssl import state as state_lib, step as step_lib
from jaxssl.errors import ConfigError
from jaxssl.losses import multicrop as MC
from jaxssl.methods import LossInputs, get_method, symmetric_byol, symmetric_byol_multicrop
from _tiny import CONFIG_DIR, random_batch, tiny_config

NUM_SMALL, SMALL_SIZE = 2, 10
ON = {"data.multicrop_num_small": NUM_SMALL, "data.multicrop_small_size": SMALL_SIZE}
KEY = jax.random.PRNGKey(5)


@functools.lru_cache(maxsize=None)
def _step_once(items: tuple = ()):
  """One jitted step (step 0: a logging step) of tiny SimCLR on one device, cached per config."""
  cfg = tiny_config("simclr", **dict(items))
  setup, state = state_lib.build(cfg, jax.random.PRNGKey(0))
  batch = jax.tree.map(jnp.asarray, random_batch(16))
  step = jax.jit(step_lib.make_train_step(setup))
  hlo = step.lower(state, batch, KEY).as_text()
  new_state, metrics = step(state, batch, KEY)
  return cfg, setup, state, batch, hlo, jax.device_get(new_state), jax.device_get(metrics)


# ----------------------------------------------------------------------------- (a) off is unchanged

def test_num_small_zero_is_the_default_program_bit_for_bit():
  cfg0, setup0, _, _, hlo0, s0, m0 = _step_once()
  assert setup0.multicrop is None and cfg0.data.multicrop_num_small == 0
  # Off, the other multi-crop fields change nothing either.
  off = (("data.multicrop_num_small", 0), ("data.multicrop_small_size", 7),
         ("data.multicrop_small_scale", (0.1, 0.2)))
  _, setup1, _, _, hlo1, s1, m1 = _step_once(off)
  assert setup1.multicrop is None
  assert hlo1 == hlo0
  assert np.array_equal(m1["loss"], m0["loss"])
  for a, b in zip(jax.tree.leaves(s0.params) + jax.tree.leaves(s0.batch_stats),
                  jax.tree.leaves(s1.params) + jax.tree.leaves(s1.batch_stats), strict=True):
    assert np.array_equal(a, b)
  # A config saved before the fields existed (config.json of an old run) is the same program,
  # and a default config's JSON does not mention multi-crop (old runs' config.json unchanged).
  text = config_lib.to_json(cfg0)
  assert "multicrop" not in text
  old = copy.deepcopy(cfg0)
  with old.data.unlocked():
    for leaf in ("multicrop_num_small", "multicrop_small_size", "multicrop_small_scale"):
      del old.data[leaf]
  config_lib.validate_config(old)
  setup_old, state_old = state_lib.build(old, jax.random.PRNGKey(0))
  batch = jax.tree.map(jnp.asarray, random_batch(16))
  assert jax.jit(step_lib.make_train_step(setup_old)).lower(state_old, batch, KEY).as_text() == hlo0
  assert config_lib.from_json(text).data.multicrop_num_small == 0


# ----------------------------------------------------------------------------- (b) global views unchanged

def test_global_views_do_not_depend_on_the_small_crops():
  _, setup0, _, batch, _, _, m0 = _step_once()
  _, setup2, _, _, _, _, m2 = _step_once(tuple(ON.items()))
  assert setup2.view_cfgs == setup0.view_cfgs
  small = multicrop.small_views(KEY, batch["image"], setup2.multicrop)
  # The step's global views with small crops are those without: the small crops use
  # split(fold_in(key, SMALL_CROP_STREAM)), never the key's own split.
  keys = jax.random.split(jax.random.fold_in(KEY, multicrop.SMALL_CROP_STREAM), NUM_SMALL)
  for s in range(NUM_SMALL):
    assert np.array_equal(small[s], augment.augment_batch(keys[s], batch["image"], setup2.multicrop.view_cfg))
  assert not np.allclose(small[0], small[1])
  k1, k2 = jax.random.split(KEY)
  assert not any(np.array_equal(k, c) for k in keys for c in (k1, k2))
  # In the compiled step: everything computed from the global views before the update (the
  # diagnostics of a logging step, the online probe's loss) is the same with and without
  # small crops, while the loss is not.
  for name in ("spectrum_z", "spectrum_r", "alignment", "uniformity", "norm_z", "probe_loss", "probe_acc"):
    np.testing.assert_allclose(m2[name], m0[name], rtol=1e-6, atol=1e-7, err_msg=name)
  assert not np.allclose(m2["loss"], m0["loss"])


# ----------------------------------------------------------------------------- (c) losses vs NumPy

def _unit(x):
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _reference_pairs(num_views):
  """SwAV / DINO: every view (student) against each global view (0, 1) but itself."""
  out = []
  for g in (0, 1):
    for a in range(num_views):
      if a != g:
        out.append((a, g))
  return out


def _np_softmax_term(x, y, tau, same_view):
  """mean_i -log softmax: anchor x_i, positive y_i; candidates y_j (and x_j, j != i, if same_view)."""
  x, y = _unit(x), _unit(y)
  m = len(x)
  total = 0.0
  for i in range(m):
    cands = [y[j] for j in range(m)] + ([x[j] for j in range(m) if j != i] if same_view else [])
    logits = np.array([x[i] @ c for c in cands]) / tau
    total += -(x[i] @ y[i]) / tau + np.log(np.sum(np.exp(logits)))
  return total / m


def _np_byol(p, t, kind):
  if kind == "cosine":
    return np.mean(2.0 - 2.0 * np.sum(_unit(p) * _unit(t), axis=-1))
  return np.mean(np.sum((p - t) ** 2, axis=-1))


def _np_vicreg(a, b, sim=25.0, var=25.0, cov=1.0):
  m, d = a.shape
  inv = np.sum((a - b) ** 2) / (m * d)

  def vc(z):
    c = np.cov(z, rowvar=False)                  # unbiased, [D, D]
    std = np.sqrt(np.diag(c) + 1e-4)
    return np.mean(np.maximum(0.0, 1.0 - std)), (np.sum(c ** 2) - np.sum(np.diag(c) ** 2)) / d
  (v1, c1), (v2, c2) = vc(a), vc(b)
  return sim * inv + var * 0.5 * (v1 + v2) + cov * (c1 + c2)


def _embeddings(n_small, m=6, d=5, seed=0):
  r = np.random.RandomState(seed)
  base = r.randn(m, d)
  views = [base + 0.6 * r.randn(m, d) + 0.2 for _ in range(2 + n_small)]
  return [v.astype(np.float32) for v in views]


@pytest.mark.parametrize("n_small", [0, 1, 3])
def test_multicrop_losses_equal_a_numpy_pairwise_average(n_small):
  views = _embeddings(n_small)
  pairs = _reference_pairs(len(views))
  assert len(pairs) == 2 * (n_small + 1) == MC.num_pairs(n_small)
  assert sorted(pairs) == sorted(MC.pairs(n_small))
  v64 = [v.astype(np.float64) for v in views]
  z1, z2 = jnp.asarray(views[0]), jnp.asarray(views[1])
  zs = jnp.asarray(np.stack(views[2:]) if n_small else np.zeros((0,) + views[0].shape, np.float32))
  tau = 0.3
  for fn, same in ((MC.nt_xent_multicrop, True), (MC.info_nce_multicrop, False)):
    want = np.mean([_np_softmax_term(v64[a], v64[g], tau, same) for a, g in pairs])
    np.testing.assert_allclose(fn(z1, z2, zs, temperature=tau), want, rtol=2e-5, err_msg=fn.__name__)
  targets = [v + 0.1 for v in v64[:2]]     # the target branch's outputs of the two global views
  for kind in ("cosine", "l2"):
    want = np.mean([_np_byol(v64[a], targets[g], kind) for a, g in pairs])
    got = MC.byol_multicrop(z1, z2, zs, jnp.asarray(targets[0], jnp.float32), jnp.asarray(targets[1], jnp.float32),
                            kind=kind)
    np.testing.assert_allclose(got, want, rtol=2e-5, err_msg=kind)
  want = np.mean([_np_vicreg(v64[a], v64[g]) for a, g in pairs])
  np.testing.assert_allclose(MC.vicreg_multicrop(z1, z2, zs), want, rtol=2e-5)
  if n_small == 0:   # no small crop: the two-view losses
    np.testing.assert_allclose(MC.nt_xent_multicrop(z1, z2, zs, temperature=tau),
                               losses.nt_xent(z1, z2, temperature=tau), rtol=1e-6)
    np.testing.assert_allclose(MC.info_nce_multicrop(z1, z2, zs, temperature=tau),
                               losses.info_nce(z1, z2, temperature=tau), rtol=1e-6)
    np.testing.assert_allclose(MC.vicreg_multicrop(z1, z2, zs), losses.vicreg(z1, z2), rtol=1e-6)


def test_method_hooks_gradients_and_shapes():
  views = [jnp.asarray(v) for v in _embeddings(2)]
  z1, z2, zs = views[0], views[1], jnp.stack(views[2:])
  t = {"z": z2 * 0.5}
  outs = [{"z": v, "p": v * 2.0 + 0.1} for v in (z1, z2)]
  empty = {"z": zs[:0], "p": zs[:0]}
  # BYOL / SimSiam hook: symmetric_byol's scale, which it equals with no small crop.
  for tgt in ((None, None), (t, {"z": z1 * 0.5})):
    two = symmetric_byol(LossInputs(outs[0], outs[1], *tgt, None), {"kind": "cosine"})
    mc = symmetric_byol_multicrop(LossInputs(outs[0], outs[1], *tgt, None, empty), {"kind": "cosine"})
    np.testing.assert_allclose(mc, two, rtol=1e-6)
  # Gradients reach the small crops (anchors); the BYOL target branch gets none.
  g = jax.grad(lambda s: MC.nt_xent_multicrop(z1, z2, s, temperature=0.2))(zs)
  assert g.shape == zs.shape and np.all(np.abs(np.asarray(g)).sum(axis=(1, 2)) > 0)
  gt = jax.grad(lambda a: MC.byol_multicrop(z1, z2, zs, a, z2))(z1)
  assert np.array_equal(gt, np.zeros_like(gt))
  with pytest.raises(ConfigError, match="z_small must be"):
    MC.nt_xent_multicrop(z1, z2, zs[:, :3], temperature=0.2)
  with pytest.raises(ConfigError, match="temperature must be > 0"):
    MC.info_nce_multicrop(z1, z2, zs, temperature=0.0)
  names = sorted(m for m in ("simclr", "infonce", "byol", "simsiam", "vicreg", "dcl", "barlow_twins", "isoloss")
                 if get_method(m).multicrop_loss is not None)
  assert names == ["byol", "infonce", "simclr", "simsiam", "vicreg"]


SHARDED_CASES = {
    "nt_xent": lambda a, b, s, t1, t2, ax: MC.nt_xent_multicrop(a, b, s, temperature=0.3, axis_name=ax),
    "info_nce": lambda a, b, s, t1, t2, ax: MC.info_nce_multicrop(a, b, s, temperature=0.3, axis_name=ax),
    "byol": lambda a, b, s, t1, t2, ax: MC.byol_multicrop(a, b, s, t1, t2, kind="cosine", axis_name=ax),
    "vicreg": lambda a, b, s, t1, t2, ax: MC.vicreg_multicrop(a, b, s, axis_name=ax),
}


@pytest.mark.skipif(len(jax.devices()) < 8, reason="needs 8 (simulated) devices")
@pytest.mark.parametrize("name", sorted(SHARDED_CASES))
def test_multicrop_losses_sharded_equal_unsharded(name):
  fn = SHARDED_CASES[name]
  r = np.random.RandomState(3)
  m, d, n = 16, 6, 2
  z1, z2, t1, t2 = (jnp.asarray(r.randn(m, d) + 0.2, jnp.float32) for _ in range(4))
  zs = jnp.asarray(r.randn(n, m, d), jnp.float32)
  mesh = Mesh(np.array(jax.devices()[:8]), ("data",))
  row, small = P("data"), P(None, "data")
  sharded = jax.shard_map(lambda a, b, s, u, v: fn(a, b, s, u, v, "data"), mesh=mesh,
                          in_specs=(row, row, small, row, row), out_specs=P())
  args = (z1, z2, zs, t1, t2)
  want, want_g = jax.jit(jax.value_and_grad(lambda *x: fn(*x, None), argnums=(0, 1, 2)))(*args)
  got, got_g = jax.jit(jax.value_and_grad(sharded, argnums=(0, 1, 2)))(*args)
  np.testing.assert_allclose(got, want, rtol=2e-5)
  for a, b in zip(got_g, want_g):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


# ----------------------------------------------------------------------------- (d) a step with small crops

def test_step_with_two_small_crops_runs_and_matches_the_loss_recomputed_outside():
  cfg, setup, state, batch, _, new_state, metrics = _step_once(tuple(ON.items()))
  mc = setup.multicrop
  assert mc.num_small == NUM_SMALL and mc.view_cfg.output_size == (SMALL_SIZE, SMALL_SIZE)
  assert mc.view_cfg.crop_scale == tuple(cfg.data.multicrop_small_scale) and mc.view_cfg.crop_p == 1.0
  small = multicrop.small_views(KEY, batch["image"], mc)
  assert small.shape == (NUM_SMALL, 16, SMALL_SIZE, SMALL_SIZE, 1) and small.dtype == jnp.float32
  assert bool(metrics["loss_finite"]) and bool(metrics["grad_finite"]) and np.isfinite(metrics["loss"])
  # The loss outside the step: the global views, then all small crops as one BatchNorm batch
  # (flattened crop-major here, image-major in the step: the same rows, so the same statistics).
  v1, v2 = augment.make_views(KEY, batch["image"], setup.view_cfgs)
  o1, stats = state_lib.apply(setup, state.params, state.batch_stats, v1, train=True)
  o2, stats = state_lib.apply(setup, state.params, stats, v2, train=True)
  os_, stats = state_lib.apply(setup, state.params, stats, small.reshape((-1,) + small.shape[2:]), train=True)
  z_small = os_["z"].reshape(NUM_SMALL, 16, -1)
  want = losses.nt_xent_multicrop(o1["z"], o2["z"], z_small, temperature=cfg.loss.temperature)
  np.testing.assert_allclose(metrics["loss"], want, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(new_state.batch_stats), strict=True):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
  assert multicrop.small_size(tiny_config("simclr", **{"data.multicrop_num_small": 1})) == 12   # 28 * 96/224


@pytest.mark.slow
@pytest.mark.parametrize("method", ["byol", "simsiam", "vicreg", "infonce"])
def test_step_with_small_crops_other_methods(method):
  cfg = tiny_config(method, **ON)
  setup, state = state_lib.build(cfg, jax.random.PRNGKey(0))
  step = jax.jit(step_lib.make_train_step(setup))
  batch = jax.tree.map(jnp.asarray, random_batch(16))
  for k in range(2):
    state, metrics = step(state, batch, jax.random.fold_in(KEY, k))
    assert bool(metrics["loss_finite"]) and bool(metrics["grad_finite"]), (method, k)


@pytest.mark.slow
def test_step_with_small_crops_sharded_over_8_devices_equals_one_device():
  cfg = tiny_config("simclr", **ON)
  cfg.optim.name = "sgd"     # see test_train.test_step_sharded_over_8_devices_equals_single_device
  batch = random_batch(16)
  out = []
  for n in (1, 8):
    setup, state = state_lib.build(cfg, jax.random.PRNGKey(0))
    mesh = parallel.make_mesh(n)
    step = step_lib.jit_train_step(setup, mesh)
    state, metrics = step(jax.device_put(state, parallel.replicated(mesh)),
                          jax.device_put(batch, parallel.batch_sharding(mesh)), KEY)
    out.append(jax.device_get((state.params, metrics["loss"])))
  np.testing.assert_allclose(out[1][1], out[0][1], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(out[0][0]), jax.tree.leaves(out[1][0]), strict=True):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- (e) refusals

@pytest.mark.parametrize("method", ["dcl", "barlow_twins", "directpred", "isoloss"])
def test_method_without_multicrop_is_refused_naming_the_field(method):
  with pytest.raises(ConfigError, match=r"config\.data\.multicrop_num_small=2: method .* does not support"):
    tiny_config(method, **{"data.multicrop_num_small": 2})
  tiny_config(method, **{"data.multicrop_num_small": 0})   # off: accepted


@pytest.mark.parametrize("override,field", [
    ("data.multicrop_num_small=-1", "config.data.multicrop_num_small must be an int >= 0"),
    ("data.multicrop_num_small=1.5", "config.data.multicrop_num_small"),
    ("data.multicrop_small_size=29", "config.data.multicrop_small_size=29 is larger than the global views"),
    ("data.multicrop_small_size=0", "config.data.multicrop_small_size must be a positive int"),
    ("data.multicrop_small_scale=(0.3,0.1)", "config.data.multicrop_small_scale must be"),
    ("data.multicrop_small_scale=(0.0,0.3)", "config.data.multicrop_small_scale must be"),
    ("data.multicrop_small_size=1", "config.data.multicrop_small_size=1 / config.data.multicrop_small_scale"),
])
def test_bad_multicrop_settings_are_refused_naming_the_field(override, field):
  with pytest.raises(ConfigError, match=field.replace(".", r"\.").replace("(", r"\(")):
    config_lib.load_config(os.path.join(CONFIG_DIR, "simclr.py"),
                           ["--config.data.multicrop_num_small=2", f"--config.{override}"])


def test_jaxssl_config_lists_the_multicrop_fields():
  cfg = config_lib.load_config(os.path.join(CONFIG_DIR, "byol.py"), ["--config.data.multicrop_num_small=4"])
  text = config_lib.describe_config(cfg)
  for field in ("data.multicrop_num_small", "data.multicrop_small_size", "data.multicrop_small_scale"):
    line = next(ln for ln in text.splitlines() if ln.startswith(field))
    assert "# multi-crop" in line, line
  again = config_lib.from_json(config_lib.to_json(cfg))
  assert again.data.multicrop_num_small == 4 and tuple(again.data.multicrop_small_scale) == (0.05, 0.4)
  assert multicrop.describe(multicrop.from_config(cfg, augment.preset("fmnist", 28))).startswith("multi-crop: 4 small")
