"""The PyTorch reference of the SimCLR train step (`benchmarks/_torch_reference.py`, which
`benchmarks/train_step.py` times against jaxssl) computes the same step as jaxssl.

The torch network is loaded with jaxssl's initial parameters and BatchNorm statistics;
jaxssl runs two steps from step 1 (after the one warm-up step, no diagnostics), and torch
runs two steps on exactly the views jaxssl made (recomputed with `augment.make_views` and
the step's key), with the learning rate of its own schedule (`jaxssl.optim.unit_schedule`
through `_common.unit_schedule_values`). Compared: the learning rate and loss of both
steps, the gradient norm of step 1, and the parameters and BatchNorm running statistics
after step 1.

Adam's first update is ~lr * sign(g), so entries whose gradient is float noise (e.g. the
bias of a Linear followed by BatchNorm, zero analytically) may move by +-lr on either
side; they are counted, not required to be zero, and the trajectories diverge
chaotically from there, so after step 2 only the loss is compared. torch keeps the
unbiased batch variance in its running average, flax the biased one, so the BatchNorm
statistics differ by up to momentum * var / (n - 1) for n values per channel.

A tiny network (the test configs' 2-layer ConvNet, batch 16, float32 on the CPU) keeps
the compile short. Skipped without torch (`pip install torch==2.13.0`).
"""
from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import _tiny  # noqa: E402
import jax  # noqa: E402

from jaxssl import augment, parallel, state as state_lib, step as step_lib  # noqa: E402

# benchmarks/ holds the reference; appended (not prepended) so that its script names
# (augment.py, losses.py, sweep.py, ...) never shadow anything else.
sys.path.append(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import _common  # noqa: E402
import _torch_reference  # noqa: E402

BATCH = 16
START_STEP = 1   # after the single warm-up step of the tiny config: lr at its peak, decaying
BN_MOMENTUM = 0.1


@pytest.fixture(scope="module")
def cross_check() -> dict[str, Any]:
  """Two steps of jaxssl and of the torch reference from the same weights and views."""
  cfg = _tiny.tiny_config("simclr", steps=50, batch_size=BATCH)
  cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay = "adamw", 1e-3, 1e-6
  cfg.train.log_every = _common.LOG_EVERY
  setup, state = state_lib.build(cfg, jax.random.PRNGKey(0))
  mesh = parallel.make_mesh(1)
  step_fn = step_lib.jit_train_step(setup, mesh)
  host_batch = _common.synthetic_batches(1, BATCH, setup.image_shape, setup.num_classes, seed=0)[0]
  batch = jax.device_put(host_batch, parallel.batch_sharding(mesh))
  root = step_lib.augmentation_root_key(cfg)

  t, nn, F, defs = _torch_reference.torch_side()
  t.manual_seed(0)
  trainer = _torch_reference.TorchTrainer(t, nn, F, defs, cfg, setup.view_cfgs, setup.image_shape[-1],
                                          setup.num_classes, t.device("cpu"), False, seed=0)
  host = jax.device_get(state)
  trainer.load_from_jax(host.params, host.batch_stats)
  trainer.step_count = START_STEP
  labels = t.from_numpy(host_batch["label"]).long()
  make_views = jax.jit(augment.make_views, static_argnums=2)

  state = state.replace(step=jax.numpy.asarray(START_STEP, jax.numpy.int32))
  out: dict[str, Any] = {"jax_loss": [], "torch_loss": [], "jax_grad_norm": [], "torch_grad_norm": [],
                         "jax_lr": [], "torch_lr": []}
  for s in range(START_STEP, START_STEP + 2):
    key = jax.random.fold_in(root, s)
    # The step draws its views from the step key itself (jaxssl.step.make_train_step).
    v1, v2 = make_views(key, batch["image"], setup.view_cfgs)
    state, m = step_fn(state, batch, key)
    m = jax.device_get(m)
    tv1, tv2 = (t.from_numpy(np.array(v)).permute(0, 3, 1, 2).contiguous() for v in (v1, v2))
    loss = trainer.train_on_views(tv1, tv2, labels)   # lr from the torch side's own schedule
    out["jax_loss"].append(float(m["loss"]))
    out["torch_loss"].append(float(loss.detach()))
    out["jax_grad_norm"].append(float(m["grad_norm"]))
    out["torch_grad_norm"].append(trainer.grad_norm())
    out["jax_lr"].append(float(m["lr"]))
    out["torch_lr"].append(float(trainer.opt.param_groups[0]["lr"]))
    if s == START_STEP:
      after = jax.device_get(state)
      out["after_step_1"] = trainer.compare_with_jax(after.params, after.batch_stats, out["jax_lr"][0])
  return out


def _rel(a: float, b: float) -> float:
  return abs(a - b) / max(abs(b), 1e-12)


def test_torch_reference_uses_jaxssl_learning_rate_schedule(cross_check):
  assert cross_check["jax_lr"][0] > 0
  assert cross_check["torch_lr"] == pytest.approx(cross_check["jax_lr"], rel=1e-6)


def test_torch_reference_same_loss_and_gradient_norm(cross_check):
  assert _rel(cross_check["jax_loss"][0], cross_check["torch_loss"][0]) <= 1e-5
  assert _rel(cross_check["jax_grad_norm"][0], cross_check["torch_grad_norm"][0]) <= 1e-3
  assert _rel(cross_check["jax_loss"][1], cross_check["torch_loss"][1]) <= 1e-3


def test_torch_reference_same_update_and_batch_statistics(cross_check):
  d = cross_check["after_step_1"]
  assert d["n_params"] > 0
  # Adam's first step is ~lr * sign(g): only entries with float-noise gradients may differ.
  assert d["n_param_diff_gt_tenth_lr"] / d["n_params"] <= 1e-2
  assert d["max_abs_param_diff"] <= 2.5 * cross_check["jax_lr"][0]
  # Bessel's correction of torch's running variance: at most momentum * var / (n - 1), with
  # n = BATCH values per channel in the projector's BatchNorm1d (the fewest of any layer).
  assert d["max_abs_batch_stat_diff"] <= 1.5 * BN_MOMENTUM * d["max_abs_batch_stat"] / (BATCH - 1)


def test_torch_reference_augmentation_makes_two_views_in_range():
  # The torch augmentation draws its own random numbers, so only its output is checked.
  cfg = _tiny.tiny_config("simclr", batch_size=BATCH)
  view_cfgs = augment.preset(cfg.data.augment, int(cfg.data.image_size))
  t, nn, F, defs = _torch_reference.torch_side()
  trainer = _torch_reference.TorchTrainer(t, nn, F, defs, cfg, view_cfgs, 1, 10, t.device("cpu"), False, seed=0)
  images = t.from_numpy(_common.synthetic_batches(1, BATCH, (28, 28, 1), 10, seed=0)[0]["image"])
  v1, v2 = trainer.views(images)
  for v, vcfg in zip((v1, v2), view_cfgs):
    assert tuple(v.shape) == (BATCH, 1, *vcfg.output_size)
    assert float(v.min()) >= 0.0 and float(v.max()) <= 1.0
  assert not t.equal(v1, v2)
