"""The train step: sharded == single device, diagnostics in the step, schedules, the loop."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxssl import augment, diagnostics, losses, optim, parallel, run, state as state_lib, step as step_lib
from _tiny import random_batch, tiny_config

FMNIST = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
needs_fmnist = pytest.mark.skipif(not os.path.exists(FMNIST), reason="dataset-fashion-mnist not installed")


def _run_step(cfg, num_devices, batch, key):
  setup, state = state_lib.build(cfg, jax.random.PRNGKey(0))
  mesh = parallel.make_mesh(num_devices)
  state = jax.device_put(state, parallel.replicated(mesh))
  batch = jax.device_put(batch, parallel.batch_sharding(mesh))
  step = step_lib.jit_train_step(setup, mesh)
  for _ in range(2):   # two steps: the second one uses updated BN statistics and EMA target
    state, metrics = step(state, batch, key)
  return jax.device_get(state), jax.device_get(metrics)


@pytest.mark.parametrize("method", ["simclr", pytest.param("byol", marks=pytest.mark.slow),
                                    pytest.param("vicreg", marks=pytest.mark.slow)])
def test_step_sharded_over_8_devices_equals_single_device(method):
  cfg = tiny_config(method)
  # SGD, not Adam/LARS: some parameters have an exactly-zero gradient (a bias followed
  # by BatchNorm, BYOL's projector bias followed by the predictor's BN); Adam turns their
  # float round-off, which depends on the reduction order and hence on the device
  # count, into +-lr updates. SGD keeps round-off at round-off.
  cfg.optim.name = "sgd"
  batch = random_batch(16)
  key = jax.random.PRNGKey(3)
  s1, m1 = _run_step(cfg, 1, batch, key)
  s8, m8 = _run_step(cfg, 8, batch, key)
  assert m1["loss_finite"] and m8["loss_finite"]
  np.testing.assert_allclose(m8["loss"], m1["loss"], rtol=1e-5, atol=1e-6)
  for name, a, b in (("params", s1.params, s8.params), ("batch_stats", s1.batch_stats, s8.batch_stats),
                     ("extra", s1.extra, s8.extra)):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
      np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-5, err_msg=name)
  # The step really changed the parameters (otherwise equality proves nothing).
  _, s0 = state_lib.build(cfg, jax.random.PRNGKey(0))
  moved = max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
              for x, y in zip(jax.tree.leaves(s0.params), jax.tree.leaves(s1.params)))
  assert moved > 1e-4
  if method == "byol":
    assert "target" in s1.extra


def test_step_loss_and_diagnostics_match_independent_computation():
  """At a logging step the metrics equal nt_xent / spectrum of the same views recomputed outside."""
  cfg = tiny_config("simclr")
  setup, state = state_lib.build(cfg, jax.random.PRNGKey(0))
  batch = jax.tree.map(jnp.asarray, random_batch(16))
  key = jax.random.PRNGKey(5)
  v1, v2 = augment.make_views(key, batch["image"], setup.view_cfgs)
  o1, stats = state_lib.apply(setup, state.params, state.batch_stats, v1, train=True)
  o2, _ = state_lib.apply(setup, state.params, stats, v2, train=True)
  want_loss = losses.nt_xent(o1["z"], o2["z"], temperature=cfg.loss.temperature)
  want_spec = diagnostics.spectrum(o1["z"])
  _, metrics = jax.jit(step_lib.make_train_step(setup))(state, batch, key)
  np.testing.assert_allclose(metrics["loss"], want_loss, rtol=1e-5)
  np.testing.assert_allclose(metrics["spectrum_z"], want_spec, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(metrics["effective_rank_z"], diagnostics.effective_rank(want_spec), rtol=1e-4)
  np.testing.assert_allclose(metrics["uniformity"], -diagnostics.uniformity(o1["z"], t=2.0), rtol=1e-5)
  want_norm = np.sqrt(np.mean(np.sum(np.asarray(o1["z"], np.float64) ** 2, axis=1)))
  np.testing.assert_allclose(metrics["norm_z"], want_norm, rtol=1e-5)
  assert metrics["spectrum_r"].shape == (setup.feature_dim,)


def test_learning_rate_schedule_and_ema_rate_closed_forms():
  cfg = tiny_config("byol", steps=100, **{"optim.warmup_steps": 10})
  sched = optim.unit_schedule(cfg)
  np.testing.assert_allclose(sched(0), 0.0, atol=1e-7)
  np.testing.assert_allclose(sched(5), 0.5, rtol=1e-6)
  np.testing.assert_allclose(sched(10), 1.0, rtol=1e-6)
  # cosine from 1 at step 10 to 0 at step 100: halfway (step 55) is 0.5
  np.testing.assert_allclose(sched(55), 0.5, rtol=1e-5)
  np.testing.assert_allclose(sched(100), 0.0, atol=1e-7)
  # BYOL: tau_k = 1 - (1 - tau_base)(cos(pi k / K) + 1)/2
  for k, want in ((0, 0.99), (50, 0.995), (100, 1.0)):
    np.testing.assert_allclose(optim.ema_rate(jnp.float32(0.99), jnp.int32(k), 100), want, rtol=1e-6)


def test_weight_decay_mask_excludes_biases_and_norms():
  """With zero gradients, one SGD step is pure decoupled decay p <- p (1 - lr wd) on
  kernels, and leaves biases / BN parameters (rank <= 1) unchanged."""
  cfg = tiny_config("simclr", **{"optim.name": "sgd", "optim.momentum": 0.0, "optim.weight_decay": 0.5})
  setup, state = state_lib.build(cfg)
  lr, wd = 0.1, 0.5
  opt_state = optim.with_hparams(state.opt_state, lr, wd)
  zeros = jax.tree.map(jnp.zeros_like, state.params)
  updates, _ = setup.tx.update(zeros, opt_state, state.params)
  new = optax.apply_updates(state.params, updates)
  n_kernels = 0
  for p, q in zip(jax.tree.leaves(state.params), jax.tree.leaves(new)):
    want = p * (1 - lr * wd) if p.ndim > 1 else p
    n_kernels += p.ndim > 1
    np.testing.assert_allclose(q, want, rtol=1e-6, atol=1e-7)
  assert 0 < n_kernels < len(jax.tree.leaves(state.params))


@needs_fmnist
def test_train_loop_writes_metrics_checkpoints_and_plots(tmp_path):
  cfg = tiny_config("simclr", steps=4)
  out = run.train(cfg, str(tmp_path))
  assert out["step"] == 4
  recs = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert [r["step"] for r in recs] == [0, 2, 3]
  assert len(recs[0]["spectrum_z"]) == 8 and "effective_rank_z" in recs[0]
  assert "effective_rank_z" not in recs[-1] and "norm_z" not in recs[-1]   # step 3 is not a diagnostics step
  assert recs[0]["norm_z"] > 0
  assert sorted(os.listdir(tmp_path / "checkpoints"))[-1] == "4"
  assert (tmp_path / "spectrum_z.png").exists() and (tmp_path / "training_curves.png").exists()
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "tensorboard"))
