"""The README's worked example: DCLW added as a loss, one `Method` entry and a config file.

The loss is checked against an independent NumPy transcription of the official code
(raminnakhli/Decoupled-Contrastive-Learning, loss.py: DCL with weight_fn
2 - M softmax(<z1, z2> / sigma)), both directions averaged, in float64.
"""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec as P

from jaxssl import config as config_lib
from jaxssl import losses
from jaxssl.errors import ConfigError
from jaxssl.losses.contrastive import dclw
from jaxssl.methods import get_method
from jaxssl import state as state_lib
from jaxssl import sweep

CONFIG = os.path.join(os.path.dirname(__file__), "..", "experiments", "configs", "dclw.py")


def _dcl_one_direction_np(z1, z2, tau, weight):
  """Official DCL.__call__ (one direction), NumPy float64."""
  cross = z1 @ z2.T
  positive = -np.diag(cross) / tau * weight
  neg = np.concatenate([z1 @ z1.T, cross], axis=1) / tau
  mask = np.tile(np.eye(len(z1)), (1, 2)).astype(bool)
  neg = np.where(mask, -np.inf, neg)
  mx = neg.max(axis=1, keepdims=True)
  lse = (mx + np.log(np.exp(neg - mx).sum(axis=1, keepdims=True)))[:, 0]
  return np.mean(positive + lse)


def dclw_np(z1, z2, tau, sigma):
  u = z1 / np.linalg.norm(z1, axis=1, keepdims=True)
  v = z2 / np.linalg.norm(z2, axis=1, keepdims=True)
  s = np.sum(u * v, axis=1) / sigma
  w = 2.0 - len(u) * np.exp(s - s.max()) / np.exp(s - s.max()).sum()
  return 0.5 * (_dcl_one_direction_np(u, v, tau, w) + _dcl_one_direction_np(v, u, tau, w))


def _data(m=32, d=8, seed=0):
  rng = np.random.default_rng(seed)
  z1 = rng.normal(size=(m, d))
  z2 = z1 + 0.5 * rng.normal(size=(m, d))   # correlated views: the weights differ from 1
  return z1, z2


@pytest.mark.parametrize("tau,sigma", [(0.1, 0.5), (0.5, 0.2), (1.0, 2.0)])
def test_dclw_equals_numpy_reference_of_the_official_code(tau, sigma):
  z1, z2 = _data()
  got = dclw(jnp.asarray(z1, jnp.float32), jnp.asarray(z2, jnp.float32), temperature=tau, sigma=sigma)
  np.testing.assert_allclose(float(got), dclw_np(z1, z2, tau, sigma), rtol=2e-5)
  # The weights are not all 1 here, so DCLW really differs from DCL.
  plain = losses.dcl(jnp.asarray(z1, jnp.float32), jnp.asarray(z2, jnp.float32), temperature=tau)
  assert abs(float(got) - float(plain)) > 1e-3


def test_dclw_gradient_matches_finite_differences_of_the_reference():
  z1, z2 = _data(m=8, d=4, seed=1)
  g = jax.grad(lambda a: dclw(a, jnp.asarray(z2, jnp.float32), temperature=0.5, sigma=0.5))(
      jnp.asarray(z1, jnp.float32))
  eps, num = 1e-6, np.zeros_like(z1)
  for i in range(z1.shape[0]):
    for j in range(z1.shape[1]):
      zp, zm = z1.copy(), z1.copy()
      zp[i, j] += eps
      zm[i, j] -= eps
      num[i, j] = (dclw_np(zp, z2, 0.5, 0.5) - dclw_np(zm, z2, 0.5, 0.5)) / (2 * eps)
  np.testing.assert_allclose(np.asarray(g), num, rtol=1e-3, atol=1e-5)


def test_dclw_with_a_wide_weight_is_dcl():
  """sigma -> inf: w_i -> 1, the closed form of DCL."""
  z1, z2 = (jnp.asarray(x, jnp.float32) for x in _data())
  np.testing.assert_allclose(float(dclw(z1, z2, temperature=0.2, sigma=1e6)),
                             float(losses.dcl(z1, z2, temperature=0.2)), rtol=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(len(jax.devices()) < 8, reason="needs 8 (simulated) devices")
def test_dclw_sharded_over_8_devices_equals_unsharded():
  z1, z2 = (jnp.asarray(x, jnp.float32) for x in _data())
  mesh = Mesh(np.array(jax.devices()[:8]), ("data",))
  fn = jax.shard_map(lambda a, b: dclw(a, b, temperature=0.2, sigma=0.5, axis_name="data"),
                     mesh=mesh, in_specs=(P("data"), P("data")), out_specs=P())
  np.testing.assert_allclose(float(fn(z1, z2)), float(dclw(z1, z2, temperature=0.2, sigma=0.5)), rtol=1e-5)
  g_sharded = jax.grad(lambda a: fn(a, z2))(z1)
  g_full = jax.grad(lambda a: dclw(a, z2, temperature=0.2, sigma=0.5))(z1)
  np.testing.assert_allclose(np.asarray(g_sharded), np.asarray(g_full), rtol=1e-4, atol=1e-6)


def test_dclw_method_declaration_drives_config_validation_and_sweeps():
  cfg = config_lib.load_config(CONFIG)
  assert (cfg.loss.temperature, cfg.loss.sigma) == (0.1, 0.5)      # the declared defaults
  assert state_lib.initial_hparams(cfg) == pytest.approx(
      {"lr": 1e-3, "weight_decay": 1e-6, "temperature": 0.1, "sigma": 0.5})
  assert get_method("dclw").family == "contrastive"
  with pytest.raises(ConfigError, match=r"config.loss.sigma must be > 0 \(finite\), got -1.0"):
    config_lib.load_config(CONFIG, ["--config.loss.sigma=-1.0"])
  bad = config_lib.load_config(CONFIG)
  with bad.loss.unlocked():
    bad.loss.alpha = 0.5
  with pytest.raises(ConfigError, match="config.loss.alpha is not a hyperparameter of method 'dclw'"):
    config_lib.validate_config(bad)
  members = sweep.members_from_sweep(cfg, sweep.parse_sweep(["loss.sigma=0.2,1.0"]))
  assert members == [{"loss.sigma": 0.2}, {"loss.sigma": 1.0}]
