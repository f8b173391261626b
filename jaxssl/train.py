"""Train state, the one train step, and the training loop.

The step is one pure function `(state, batch, key) -> (state, metrics)`:

1. two views are made on device from the uint8 batch (`jaxssl.augment`);
2. the online network (and the EMA target, if any) embeds both views;
3. the method's loss is taken over the *global* batch (`jaxssl.methods.ssl_loss`);
4. optax applies the update; the EMA target and the closed-form predictor are updated;
5. every `log_every` steps, inside the same compiled program (`lax.cond`), the
   eigenvalue spectrum and effective rank of the projector output z and of the
   backbone representation r, plus alignment and uniformity, are added to `metrics`.

Hyperparameters that may be swept (learning rate, weight decay, EMA rate, the loss's
numeric parameters) are arrays in `state.hparams`, never Python constants baked into
the program, so `jax.vmap` over a member axis trains K configurations at once
(`jaxssl.sweep`). The learning-rate schedule is a unit-peak schedule times the traced
peak value, as in big_vision.

The step is jitted over a `Mesh`: the state is replicated and the batch is sharded
over the "data" axis; XLA inserts the collectives, so BatchNorm statistics, loss
negatives and the spectrum's covariance are all global.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import signal
import sys
import time
from typing import Any, Callable, Mapping, NamedTuple

import chex
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from jaxssl import augment
from jaxssl import diagnostics
from jaxssl import methods
from jaxssl import parallel
from jaxssl import predictors
from jaxssl.errors import ConfigError, DataError, NumericalError

PyTree = Any


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training; a pytree of arrays (pure nested dicts)."""
  step: jax.Array                 # int32 scalar
  params: PyTree                  # online encoder/projector/predictor parameters
  batch_stats: PyTree             # BatchNorm running statistics
  opt_state: PyTree
  target_params: PyTree | None    # EMA target (BYOL-style methods), else None
  target_batch_stats: PyTree | None
  predictor: PyTree | None        # closed-form predictor state (EMA correlation), else None
  probe: PyTree | None            # online linear probe {"w": [F, C], "b": [C]}
  probe_opt_state: PyTree | None
  hparams: dict[str, jax.Array]   # traced, sweepable hyperparameters (float32 scalars)


class Setup(NamedTuple):
  """The static half of training: what is compiled into the program."""
  cfg: ml_collections.ConfigDict
  spec: methods.MethodSpec
  graphdef: Any
  tx: optax.GradientTransformation
  probe_tx: optax.GradientTransformation | None
  view_cfgs: tuple
  num_classes: int
  image_shape: tuple[int, int, int]
  embed_dim: int
  feature_dim: int


# --------------------------------------------------------------------------- optimizer

def _decay_mask(params: PyTree) -> PyTree:
  # Biases and normalisation parameters (rank <= 1) get no weight decay and no LARS
  # trust ratio, as in SimCLR/BYOL.
  return jax.tree.map(lambda p: p.ndim > 1, params)


def _sgd(learning_rate, weight_decay, momentum, mask):
  return optax.chain(optax.add_decayed_weights(weight_decay, mask),
                     optax.sgd(learning_rate, momentum=momentum))


def _adamw(learning_rate, weight_decay, mask):
  return optax.adamw(learning_rate, weight_decay=weight_decay, mask=mask)


def _lars(learning_rate, weight_decay, momentum, mask):
  return optax.lars(learning_rate, weight_decay=weight_decay, weight_decay_mask=mask,
                    trust_ratio_mask=mask, momentum=momentum)


def make_optimizer(optim: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """SGD / LARS / AdamW with learning rate and weight decay injected as state arrays.

  The learning rate and weight decay are set from `state.hparams` on every step
  (`_with_hparams`), so they may be traced, per-member values in a vmapped sweep.
  """
  name = optim.name
  if name == "sgd":
    return optax.inject_hyperparams(_sgd, static_args=("momentum", "mask"))(
        learning_rate=1.0, weight_decay=0.0, momentum=optim.get("momentum", 0.9), mask=_decay_mask)
  if name == "lars":
    return optax.inject_hyperparams(_lars, static_args=("momentum", "mask"))(
        learning_rate=1.0, weight_decay=0.0, momentum=optim.get("momentum", 0.9), mask=_decay_mask)
  if name == "adamw":
    return optax.inject_hyperparams(_adamw, static_args=("mask",))(
        learning_rate=1.0, weight_decay=0.0, mask=_decay_mask)
  raise ConfigError(f"config.optim.name={name!r}; use one of 'sgd', 'lars', 'adamw'")


def unit_schedule(cfg: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warm-up to 1 then cosine decay to 0 over training; multiplied by the traced lr."""
  total = int(cfg.train.num_steps)
  warmup = int(min(cfg.optim.get("warmup_steps", 0), max(total - 1, 0)))
  if cfg.optim.get("schedule", "cosine") == "constant":
    return optax.linear_schedule(0.0, 1.0, max(warmup, 1)) if warmup else (lambda s: jnp.ones([], jnp.float32))
  return optax.warmup_cosine_decay_schedule(0.0, 1.0, max(warmup, 1) if warmup else 1,
                                            max(total, 2), end_value=0.0) if warmup else \
      optax.cosine_decay_schedule(1.0, max(total, 1))


def _with_hparams(opt_state, lr, wd):
  hp = dict(opt_state.hyperparams)
  hp["learning_rate"] = jnp.asarray(lr, jnp.float32)
  hp["weight_decay"] = jnp.asarray(wd, jnp.float32)
  return opt_state._replace(hyperparams=hp)


def ema_rate(base: jax.Array, step: jax.Array, total_steps: int) -> jax.Array:
  """BYOL's cosine EMA schedule: tau_k = 1 - (1 - base) * (cos(pi k / K) + 1) / 2."""
  k = jnp.minimum(step.astype(jnp.float32), float(total_steps))
  return 1.0 - (1.0 - base) * (jnp.cos(jnp.pi * k / float(total_steps)) + 1.0) / 2.0


# --------------------------------------------------------------------------- set-up

def initial_hparams(cfg: ml_collections.ConfigDict) -> dict[str, float]:
  """The sweepable hyperparameters and their config values (see `jaxssl.sweep`)."""
  hp = {"lr": float(cfg.optim.lr), "weight_decay": float(cfg.optim.weight_decay)}
  if methods.uses_target(cfg):
    hp["ema_base"] = float(cfg.ema.base)
  hp.update(methods.loss_hparams(cfg))
  return hp


def build(cfg: ml_collections.ConfigDict, key: jax.Array | int = 0) -> tuple[Setup, TrainState]:
  """Builds the model, optimizer and initial state from a validated config."""
  from jaxssl import data as data_lib
  if isinstance(key, int):
    key = jax.random.PRNGKey(key)
  spec = methods.get_method(cfg.method)
  info = data_lib.dataset_info(cfg.data.name)
  in_channels = info.image_shape[-1]
  seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
  model = methods.SSLNet(cfg, in_channels=in_channels, rngs=nnx.Rngs(seed))
  graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  params, batch_stats = nnx.to_pure_dict(params), nnx.to_pure_dict(batch_stats)
  tx = make_optimizer(cfg.optim)
  target_params = target_stats = None
  if methods.uses_target(cfg):
    target_params = jax.tree.map(jnp.copy, params)
    target_stats = jax.tree.map(jnp.copy, batch_stats)
  pred_state = None
  if spec.closed_form:
    pred_state = predictors.init_predictor_state(model.embed_dim)
    if spec.closed_form in ("directpred", "directcopy"):
      # Start from the identity predictor until the first closed-form update.
      params = _set_linear_predictor(params, jnp.eye(model.embed_dim, dtype=jnp.float32))
  probe = probe_tx = probe_opt = None
  if cfg.train.get("online_probe", True):
    probe = {"w": jnp.zeros((model.feature_dim, info.num_classes), jnp.float32),
             "b": jnp.zeros((info.num_classes,), jnp.float32)}
    probe_tx = optax.adam(cfg.train.get("probe_lr", 1e-3))
    probe_opt = probe_tx.init(probe)
  crop = int(cfg.data.get("image_size") or info.image_shape[0])
  view_cfgs = augment.preset(cfg.data.augment, crop)
  state = TrainState(
      step=jnp.zeros([], jnp.int32), params=params, batch_stats=batch_stats,
      opt_state=tx.init(params), target_params=target_params, target_batch_stats=target_stats,
      predictor=pred_state, probe=probe, probe_opt_state=probe_opt,
      hparams={k: jnp.asarray(v, jnp.float32) for k, v in initial_hparams(cfg).items()})
  setup = Setup(cfg=cfg, spec=spec, graphdef=graphdef, tx=tx, probe_tx=probe_tx, view_cfgs=view_cfgs,
                num_classes=info.num_classes, image_shape=tuple(info.image_shape),
                embed_dim=model.embed_dim, feature_dim=model.feature_dim)
  return setup, state


def _linear_predictor_path(params: PyTree) -> tuple:
  paths = [p for p, leaf in jax.tree_util.tree_leaves_with_path(params.get("predictor", {}))
           if leaf.ndim == 2]
  if len(paths) != 1:
    raise ValueError(f"expected exactly one 2-D kernel in the linear predictor, found {len(paths)}")
  return paths[0]


def _set_linear_predictor(params: PyTree, w: jax.Array) -> PyTree:
  """Returns params with the bias-free predictor's kernel replaced by `w` (p = z @ w)."""
  path = _linear_predictor_path(params)
  pred = jax.tree_util.tree_map_with_path(lambda p, x: w.astype(x.dtype) if p == path else x,
                                          params["predictor"])
  return {**params, "predictor": pred}


def get_linear_predictor(params: PyTree) -> jax.Array:
  path = _linear_predictor_path(params)
  for p, leaf in jax.tree_util.tree_leaves_with_path(params["predictor"]):
    if p == path:
      return leaf
  raise AssertionError


# --------------------------------------------------------------------------- forward

def forward(setup: Setup, params: PyTree, batch_stats: PyTree, x: jax.Array, *, train: bool,
            heads: bool = True) -> tuple[dict[str, jax.Array], PyTree]:
  """Pure forward pass of the SSL network: returns ({"r", "z", "p"}, new batch stats)."""
  model = nnx.merge(setup.graphdef, params, batch_stats)
  model.train() if train else model.eval()
  if heads:
    out = model(x)
  else:
    out = {"r": model.encoder(x)}
  return out, nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))


def encode(setup: Setup, state: TrainState, x: jax.Array) -> jax.Array:
  """Backbone representation r of float images in [0, 1] (eval mode)."""
  out, _ = forward(setup, state.params, state.batch_stats, x, train=False, heads=False)
  return out["r"]


def _diagnostics(z1, z2, r1) -> dict[str, jax.Array]:
  eig_z = diagnostics.spectrum(z1)        # [D]
  eig_r = diagnostics.spectrum(r1)        # [F]
  return {
      "spectrum_z": eig_z, "spectrum_r": eig_r,
      "effective_rank_z": diagnostics.effective_rank(eig_z),
      "effective_rank_r": diagnostics.effective_rank(eig_r),
      # The spectrum is of normalised rows: only the norm shows a collapse to zero (Bao).
      "norm_z": diagnostics.embedding_norm(z1),
      "alignment": diagnostics.alignment(z1, z2),
      # Wang & Isola / Wang & Liu report -L_unif: larger is more uniform.
      "uniformity": -diagnostics.uniformity(z1, t=2.0),
  }


def make_train_step(setup: Setup) -> Callable[[TrainState, Mapping[str, jax.Array], jax.Array],
                                                tuple[TrainState, dict[str, jax.Array]]]:
  """Returns the pure train step `(state, batch, key) -> (state, metrics)` (not jitted)."""
  cfg, spec = setup.cfg, setup.spec
  static_kwargs = methods.static_loss_kwargs(cfg)
  total_steps = int(cfg.train.num_steps)
  log_every = int(cfg.train.log_every)
  schedule = unit_schedule(cfg)
  policy = cfg.train.get("nonfinite_policy", "stop")
  pcfg = cfg.get("predictor", ml_collections.ConfigDict())
  closed = spec.closed_form
  use_target = methods.uses_target(cfg)

  def step_fn(state: TrainState, batch: Mapping[str, jax.Array], key: jax.Array):
    images, labels = batch["image"], batch["label"]        # [B, H, W, C] uint8, [B]
    hp = state.hparams
    k_aug = key   # the per-step key (fold_in(root, step)) drives the augmentations
    v1, v2 = augment.make_views(k_aug, images, setup.view_cfgs)   # [B, h, w, C] float32

    target1 = target2 = None
    if use_target:
      # The target network only provides regression targets: no gradient flows into it.
      target1, tstats = forward(setup, state.target_params, state.target_batch_stats, v1, train=True)
      target2, tstats = forward(setup, state.target_params, tstats, v2, train=True)
      target1 = jax.tree.map(jax.lax.stop_gradient, target1)
      target2 = jax.tree.map(jax.lax.stop_gradient, target2)
    else:
      tstats = state.target_batch_stats

    def loss_fn(params):
      out1, stats = forward(setup, params, state.batch_stats, v1, train=True)
      out2, stats = forward(setup, params, stats, v2, train=True)
      pred_state, w_pred = state.predictor, None
      if closed:
        # The predictor statistics are estimated from stop-gradient embeddings: the
        # closed-form predictor is a function of the data, never a path for gradients.
        zs = [jax.lax.stop_gradient(out1["z"]), jax.lax.stop_gradient(out2["z"])]
        mode = "halvagal" if closed == "halvagal" else "tian"
        pred_state = predictors.update_correlation(state.predictor, zs, decay=pcfg.decay, mode=mode)
        if closed == "halvagal":
          w_pred = predictors.predictor_from_correlation(
              pred_state.corr, kind="halvagal", eps=pcfg.eps, alpha=pcfg.get("alpha", 1.0))
      loss = methods.ssl_loss(spec, static_kwargs, hp, out1, out2, target1, target2, w_pred)
      return loss, (out1, out2, stats, pred_state)

    (loss, (out1, out2, new_stats, pred_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)

    lr = hp["lr"] * schedule(state.step)
    opt_state = _with_hparams(state.opt_state, lr, hp["weight_decay"])
    updates, opt_state = setup.tx.update(grads, opt_state, state.params)
    params = optax.apply_updates(state.params, updates)

    if closed in ("directpred", "directcopy"):
      # Tian et al.: set W_p from the eigen-decomposition after each optimizer step
      # (every `freq` steps; in between, W_p trains by SGD).
      freq = int(pcfg.get("freq", 1))
      w_closed = predictors.predictor_from_correlation(pred_state.corr, kind=closed, eps=pcfg.eps)
      w_now = get_linear_predictor(params)
      w_new = jnp.where((state.step % freq) == 0, w_closed, w_now)
      params = _set_linear_predictor(params, w_new)

    target_params = state.target_params
    if use_target:
      tau = ema_rate(hp["ema_base"], state.step, total_steps)
      target_params = jax.tree.map(lambda t, o: tau * t + (1.0 - tau) * o, state.target_params, params)

    metrics = {"loss": loss, "lr": lr}
    probe, probe_opt = state.probe, state.probe_opt_state
    if state.probe is not None:
      # Online linear probe on stop-gradient features (as BYOL / solo-learn): it
      # measures the representation without shaping it.
      feats = jax.lax.stop_gradient(out1["r"])

      def probe_loss(pr):
        logits = feats @ pr["w"] + pr["b"]
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return ce, logits
      (ce, logits), pg = jax.value_and_grad(probe_loss, has_aux=True)(state.probe)
      pu, probe_opt = setup.probe_tx.update(pg, state.probe_opt_state, state.probe)
      probe = optax.apply_updates(state.probe, pu)
      metrics["probe_loss"] = ce
      metrics["probe_acc"] = jnp.mean(jnp.argmax(logits, -1) == labels)

    grad_finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
    loss_finite = jnp.isfinite(loss)
    metrics["loss_finite"] = loss_finite
    metrics["grad_finite"] = grad_finite
    metrics["grad_norm"] = optax.global_norm(grads)

    new_state = state.replace(
        params=params, batch_stats=new_stats, opt_state=opt_state,
        target_params=target_params, target_batch_stats=tstats, predictor=pred_state,
        probe=probe, probe_opt_state=probe_opt)
    if policy == "skip":
      # Skip a non-finite update in-graph: keep the old state (the step still advances).
      ok = loss_finite & grad_finite
      new_state = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new_state, state)
    # `step` is shared by all members of a sweep (it is not vmapped), so it is only
    # ever incremented, never selected per member.
    new_state = new_state.replace(step=state.step + 1)

    do_log = (state.step % log_every) == 0
    diag_shapes = jax.eval_shape(_diagnostics, out1["z"], out2["z"], out1["r"])
    diag = jax.lax.cond(do_log,
                        lambda: _diagnostics(out1["z"], out2["z"], out1["r"]),
                        lambda: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), diag_shapes))
    metrics.update(diag)
    return new_state, metrics

  return step_fn


def jit_train_step(setup: Setup, mesh: jax.sharding.Mesh, step_fn: Callable | None = None):
  """`jax.jit` of the train step: state replicated, batch sharded over the data axis."""
  step_fn = step_fn or make_train_step(setup)
  rep = parallel.replicated(mesh)
  data = parallel.batch_sharding(mesh)
  return jax.jit(step_fn, in_shardings=(rep, data, rep), out_shardings=(rep, rep), donate_argnums=(0,))


# --------------------------------------------------------------------------- loop

def augmentation_root_key(cfg: ml_collections.ConfigDict, stream: int | None = None) -> jax.Array:
  """Root of the per-step augmentation keys: step k uses fold_in(root, k).

  Stream i is what member i of a sweep uses, so a single run with
  `config.train.aug_stream = i` reproduces that member exactly.
  """
  stream = int(cfg.train.get("aug_stream", 0)) if stream is None else int(stream)
  return jax.random.fold_in(jax.random.PRNGKey(cfg.seed + 1), stream)


class _StopRequested:
  """Turns SIGTERM/SIGINT into a flag: the loop finishes its step, checkpoints, and exits."""

  def __init__(self):
    self.signum = None
    self._old = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._old[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not in the main thread
        pass
    return self

  def _handle(self, signum, frame):
    if self.signum is not None:  # a second signal: give up immediately
      raise KeyboardInterrupt
    self.signum = signum

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)
    return False


def _scalar_metrics(m: Mapping[str, Any]) -> dict[str, float]:
  return {k: float(v) for k, v in m.items() if np.ndim(v) == 0}


def _log(msg: str) -> None:
  if jax.process_index() == 0:
    print(msg, flush=True)


def stack_members(cfg: ml_collections.ConfigDict, state: TrainState,
                  members: list[dict[str, float]]) -> TrainState:
  """K copies of `state` along a new leading member axis, with per-member hyperparameters.

  All members start from the same initial parameters (common random numbers make
  hyperparameter comparisons less noisy); they differ in hyperparameters and in their
  augmentation stream.
  """
  from jaxssl import sweep
  k = len(members)
  hps = [initial_hparams(sweep.member_config(cfg, m, i)) for i, m in enumerate(members)]
  stacked = jax.tree.map(lambda x: jnp.broadcast_to(x, (k,) + x.shape).copy(), state.replace(step=None))
  hparams = {name: jnp.asarray([h[name] for h in hps], jnp.float32) for name in hps[0]}
  return stacked.replace(step=state.step, hparams=hparams)


def member_axes(state: TrainState) -> TrainState:
  """vmap axes of a stacked state: 0 everywhere except the shared step counter."""
  return jax.tree.map(lambda _: 0, state.replace(step=None)).replace(step=None)


def make_member_mesh(cfg: ml_collections.ConfigDict) -> jax.sharding.Mesh:
  """2-D ("member", "data") mesh: members split over `config.mesh.member_devices` devices."""
  n = cfg.get("mesh", {}).get("num_devices") or jax.device_count()
  m = int(cfg.get("mesh", {}).get("member_devices", 1) or 1)
  if n % m:
    raise ConfigError(f"config.mesh.member_devices={m} must divide the {n} devices")
  return parallel.make_mesh(n, axis_names=(parallel.MEMBER_AXIS, parallel.DATA_AXIS), shape=(m, n // m))


def member_chunk(cfg: ml_collections.ConfigDict, num_members: int) -> int:
  """How many sweep members one vmap evaluates at a time (`config.mesh.member_chunk`).

  `member_chunk = K` vmaps all K members (one program, batched matmuls: best on GPU/TPU).
  Smaller chunks vmap groups of members, unrolled inside the same compiled step. On a
  CPU, XLA runs member-batched convolutions (grouped convolutions) several times slower
  than K plain ones, and a fully vmapped step with the in-graph eigendecomposition has
  been seen to stall on XLA:CPU with the real model; so the default there is 1: the K
  single-member steps, unrolled in one program, still sharing each input batch.
  """
  chunk = cfg.get("mesh", {}).get("member_chunk")
  if chunk is None:
    chunk = 1 if jax.default_backend() == "cpu" else num_members
  chunk = int(chunk)
  if not 1 <= chunk:
    raise ConfigError(f"config.mesh.member_chunk must be >= 1, got {chunk}")
  return min(chunk, num_members)


def jit_member_step(setup: Setup, mesh: jax.sharding.Mesh, state: TrainState):
  """The train step mapped over members, jitted on the ("member", "data") mesh.

  Members are vmapped (all at once, or `member_chunk` at a time, unrolled); with
  `config.mesh.member_devices > 1` the member axis is also sharded over devices.
  """
  from jax.sharding import NamedSharding, PartitionSpec as P
  step_fn = make_train_step(setup)
  axes = member_axes(state)
  num_members = int(jax.tree.leaves(state.params)[0].shape[0])
  shard_members = mesh.shape[parallel.MEMBER_AXIS] > 1
  chunk = num_members if shard_members else member_chunk(setup.cfg, num_members)
  if chunk == num_members:
    mstep = jax.vmap(step_fn, in_axes=(axes, None, 0), out_axes=(axes, 0),
                     spmd_axis_name=parallel.MEMBER_AXIS if shard_members else None)
  else:
    # Groups of `chunk` members, unrolled in Python inside the one jitted program (a
    # `lax.map` over members measured ~35x slower per step on XLA:CPU than this).
    vchunk = jax.vmap(step_fn, in_axes=(axes, None, 0), out_axes=(axes, 0))

    def mstep(state, batch, keys):
      shared_step = state.step   # the step counter is shared, not per member
      per_member = state.replace(step=None)
      news, metrics = [], []
      for lo in range(0, num_members, chunk):
        part = jax.tree.map(lambda x: x[lo:lo + chunk], per_member)
        if chunk == 1:
          new, m = step_fn(jax.tree.map(lambda x: x[0], part).replace(step=shared_step), batch, keys[lo])
          new, m = jax.tree.map(lambda x: x[None], (new.replace(step=None), m))
        else:
          new, m = vchunk(part.replace(step=shared_step), batch, keys[lo:lo + chunk])
          new = new.replace(step=None)
        news.append(new)
        metrics.append(m)
      cat = lambda *xs: jnp.concatenate(xs, axis=0)
      new = jax.tree.map(cat, *news)
      return new.replace(step=shared_step + 1), jax.tree.map(cat, *metrics)
  mem = NamedSharding(mesh, P(parallel.MEMBER_AXIS))
  rep = parallel.replicated(mesh)
  state_sh = jax.tree.map(lambda _: mem, state.replace(step=None)).replace(step=rep)
  return jax.jit(mstep, in_shardings=(state_sh, parallel.batch_sharding(mesh), mem),
                 out_shardings=(state_sh, mem), donate_argnums=(0,)), state_sh


def train(cfg: ml_collections.ConfigDict, workdir: str, *, resume: bool = False,
          evaluate_at_end: bool | None = None,
          members: list[dict[str, float]] | None = None) -> dict[str, Any]:
  """Trains `cfg` in `workdir`: checkpoints, metrics.jsonl, TensorBoard, plots, evaluation.

  With `members` (a list of {config field: value}, see `jaxssl.sweep`), trains all of
  them at once with the vmapped step. Returns a summary dict: "step", "last" (the last
  logged metrics), "state" (the final `TrainState`; stacked over members in a sweep),
  and "eval" / "member_results" when evaluating, or "interrupted" (the signal's name).
  """
  from jaxssl import checkpoint as ckpt_lib
  from jaxssl import config as config_lib
  from jaxssl import data as data_lib
  from jaxssl import logging_utils

  config_lib.validate_config(cfg)
  if resume and not os.path.isdir(workdir):
    raise ConfigError(f"--resume given but workdir {workdir!r} does not exist; "
                      "start a new run without --resume, or point --workdir at an existing run.")
  os.makedirs(workdir, exist_ok=True)
  setup, state = build(cfg, jax.random.PRNGKey(cfg.seed))
  _check_shapes(setup)
  if members:
    mesh = make_member_mesh(cfg)
    state = stack_members(cfg, state, members)
    step_fn, state_sharding = jit_member_step(setup, mesh, state)
  else:
    mesh = parallel.make_mesh(cfg.get("mesh", {}).get("num_devices"))
    step_fn = jit_train_step(setup, mesh)
    state_sharding = parallel.replicated(mesh)
  parallel.check_batch_divisible(cfg.data.batch_size, mesh)
  state = jax.device_put(state, state_sharding)
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                               keep=cfg.train.get("keep_checkpoints", 3),
                               fingerprint=ckpt_lib.fingerprint(cfg, state))
  start_step = 0
  if resume:
    restored = ckpt.restore_latest(state)
    if restored is None:
      raise ConfigError(f"--resume: no complete checkpoint in {workdir}/checkpoints; "
                        "start without --resume to train from scratch.")
    state, meta = restored
    state = jax.device_put(state, state_sharding)
    start_step = int(meta["step"])
    _log(f"resumed from step {start_step} ({workdir})")
  elif ckpt.all_steps():
    raise ConfigError(f"workdir {workdir!r} already has checkpoints (steps {ckpt.all_steps()}); "
                      "pass --resume to continue it, or use a new --workdir.")
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config_lib.to_json(cfg))
  if members:
    with open(os.path.join(workdir, "members.json"), "w") as f:
      json.dump(members, f, indent=2)

  total = int(cfg.train.num_steps)
  make_iter = functools.partial(
      data_lib.BatchIterator, cfg.data.name, data_lib.dataset_info(cfg.data.name).train_split,
      global_batch_size=cfg.data.batch_size, mesh=mesh, seed=cfg.seed,
      data_dir=cfg.data.get("data_dir"), idx_dir=cfg.data.get("idx_dir"))
  it = make_iter(start_step=start_step)
  if members:
    roots = [augmentation_root_key(cfg, i) for i in range(len(members))]
    keys_for = lambda step: jnp.stack([jax.random.fold_in(r, step) for r in roots])
  else:
    root = augmentation_root_key(cfg)
    keys_for = lambda step: jax.random.fold_in(root, step)
  logger = logging_utils.MetricLogger(workdir, resume_step=start_step)
  log_every = int(cfg.train.log_every)
  ckpt_every = int(cfg.train.checkpoint_every)
  policy = cfg.train.get("nonfinite_policy", "stop")
  last: Any = {}
  t0, n0 = time.time(), start_step
  bar = logging_utils.progress(total, start_step)
  step = start_step
  rollback_attempt, failed_at = 0, -1
  shown_erank = float("nan")
  try:
    with _StopRequested() as stop:
      while step < total:
        batch = next(it)
        state, metrics = step_fn(state, batch, keys_for(step))
        step += 1
        if policy in ("stop", "rollback"):
          finite = np.asarray(metrics["loss_finite"]) & np.asarray(metrics["grad_finite"])
          if not finite.all():
            bad = "loss" if not np.asarray(metrics["loss_finite"]).all() else "gradient"
            who = f" (member {int(np.argmin(finite.reshape(-1)))})" if members else ""
            if policy == "stop" or members:
              raise NumericalError(
                  f"non-finite {bad} at step {step - 1}{who} (loss={np.asarray(metrics['loss']).tolist()}); "
                  f"training stopped. The last good checkpoint (step {ckpt.latest_step()}) is intact in "
                  f"{workdir}/checkpoints. Lower config.optim.lr, or set "
                  "config.train.nonfinite_policy='skip'" + ("" if members else " or 'rollback'") + ".")
            # Consecutive failures (no step completed beyond the failing one) go further back.
            rollback_attempt = rollback_attempt + 1 if step - 1 <= failed_at else 1
            failed_at = max(failed_at, step - 1)
            state, step = _rollback(ckpt, state, mesh, cfg, bad, step, rollback_attempt)
            it = make_iter(start_step=step)
            continue
        if (step - 1) % log_every == 0 or step == total:
          m = jax.device_get(metrics)
          dt = time.time() - t0
          ips = (step - n0) * cfg.data.batch_size / max(dt, 1e-9)
          t0, n0 = time.time(), step
          diag_step = (step - 1) % log_every == 0
          recs = _records(m, step - 1, ips, diag_step, members)
          for rec in recs:
            logger.write(rec)
          last = recs if members else recs[0]
          shown_erank = recs[0].get("effective_rank_z", shown_erank)   # last diagnostics step's value
          bar.set_postfix(loss=f"{recs[0]['loss']:.4f}", erank=f"{shown_erank:.1f}", img_s=f"{ips:.0f}")
        bar.update(1)
        if step % ckpt_every == 0 or step == total:
          ckpt.save(step, state, {"step": step, "data_position": step})
        if stop.signum is not None:
          ckpt.save(step, state, {"step": step, "data_position": step}, force=True)
          ckpt.wait()
          name = signal.Signals(stop.signum).name
          _log(f"\n{name} received: stopped after step {step}; checkpoint saved in "
               f"{workdir}/checkpoints. Continue with --resume.")
          return {"step": step, "interrupted": name, "last": last, "state": state}
  finally:
    bar.close()
    ckpt.wait()
    logger.close()
  summary: dict[str, Any] = {"step": step, "last": last, "state": state}
  try:
    from jaxssl import plots
    plots.plot_workdir(workdir)
  except Exception as e:  # plotting must never lose a finished run
    _log(f"warning: plotting failed: {e}")
  do_eval = evaluate_at_end if evaluate_at_end is not None else cfg.get("eval", {}).get("at_end", True)
  if members:
    summary["member_results"] = _finish_members(cfg, setup, state, members, workdir, mesh, do_eval)
  elif do_eval:
    from jaxssl import evaluate as eval_lib
    summary["eval"] = eval_lib.evaluate_workdir(workdir, cfg=cfg, setup=setup, state=state)
  return summary


def _records(m, step, ips, diag_step, members):
  """metrics.jsonl records: one per run, or one per sweep member (with its hyperparameters)."""
  diag_keys = ("effective_rank_z", "effective_rank_r", "norm_z", "alignment", "uniformity")
  n = len(members) if members else 1
  recs = []
  for i in range(n):
    mi = jax.tree.map(lambda x: x[i], m) if members else m
    rec = {"step": step, **_scalar_metrics(mi), "images_per_sec": ips}
    if members:
      rec = {"member": i, **{f"hp/{k}": v for k, v in members[i].items()}, **rec}
    if diag_step:
      rec["spectrum_z"] = np.asarray(mi["spectrum_z"]).tolist()
      rec["spectrum_r"] = np.asarray(mi["spectrum_r"]).tolist()
    else:  # not a diagnostics step: drop the zero placeholders
      for k in diag_keys:
        rec.pop(k, None)
    recs.append(rec)
  return recs


def _finish_members(cfg, setup, state, members, workdir, mesh, do_eval):
  """Per-member outputs: a final checkpoint + config in members/<i>/, and its evaluation."""
  from jaxssl import checkpoint as ckpt_lib
  from jaxssl import config as config_lib
  from jaxssl import sweep
  results = []
  host_state = jax.device_get(state)
  for i, m in enumerate(members):
    mdir = os.path.join(workdir, "members", str(i))
    os.makedirs(mdir, exist_ok=True)
    mcfg = sweep.member_config(cfg, m, i)
    with open(os.path.join(mdir, "config.json"), "w") as f:
      f.write(config_lib.to_json(mcfg))
    mstate = jax.tree.map(lambda x: x[i], host_state.replace(step=None)).replace(step=host_state.step)
    ck = ckpt_lib.Checkpointer(os.path.join(mdir, "checkpoints"), keep=1,
                               fingerprint=ckpt_lib.fingerprint(mcfg, mstate))
    ck.save(int(host_state.step), mstate, {"step": int(host_state.step), "member": i, "hparams": m})
    ck.wait()
    res = {"member": i, "hparams": m}
    if do_eval:
      from jaxssl import evaluate as eval_lib
      try:
        res.update(eval_lib.evaluate_workdir(mdir, cfg=mcfg, setup=setup, state=mstate, baselines=False))
      except DataError as e:
        # One diverged member (e.g. non-finite features under nonfinite_policy='skip') must
        # not discard the evaluation of the others: record why, and go on.
        res["eval_error"] = str(e)
        _log(f"member {i} ({m}): evaluation failed: {e}")
    results.append(res)
    with open(os.path.join(mdir, "results.json"), "w") as f:
      json.dump(res, f, indent=2)
  return results


def _rollback(ckpt, state, mesh, cfg, bad: str, step: int, attempt: int):
  """Restores an earlier checkpoint and lowers the learning rate (policy 'rollback').

  A divergence often shows one step late: the checkpoint written just before the
  non-finite loss may already hold exploded (finite) parameters. So the `attempt`-th
  consecutive failure goes back `attempt` checkpoints, and the learning rate is
  multiplied by `rollback_lr_factor` each time. After `max_rollbacks` attempts, or when
  no older checkpoint is left, it stops with a NumericalError.
  """
  factor = float(cfg.train.get("rollback_lr_factor", 0.5))
  max_rollbacks = int(cfg.train.get("max_rollbacks", 5))
  earlier = [s for s in ckpt.all_steps() if s < step]
  if attempt > max_rollbacks or attempt > len(earlier):
    raise NumericalError(
        f"non-finite {bad} at step {step - 1} after {attempt - 1} rollback(s) "
        f"(config.train.max_rollbacks={max_rollbacks}, {len(earlier)} earlier checkpoint(s)); "
        "training stopped. Lower config.optim.lr or raise config.train.max_rollbacks.")
  target = earlier[-attempt]
  old, meta = ckpt.restore(target, state)
  hp = dict(old.hparams)
  # On the host in float64: a tiny factor must not underflow in float32 arithmetic.
  new_lr = float(np.asarray(state.hparams["lr"], np.float64)) * factor
  hp["lr"] = jnp.asarray(new_lr, jnp.float32)
  if not new_lr > 0 or not np.isfinite(np.float32(new_lr)) or np.float32(new_lr) == 0:
    raise NumericalError(f"non-finite {bad} at step {step - 1}: the rolled-back learning rate "
                         f"{new_lr:.3g} is not a positive float32; training stopped.")
  _log(f"non-finite {bad} at step {step - 1}: rolled back to step {meta['step']}, "
       f"learning rate x{factor:g} -> {new_lr:.3g}")
  return jax.device_put(old.replace(hparams=hp), parallel.replicated(mesh)), int(meta["step"])


def _check_shapes(setup: Setup) -> None:
  """Fails before compiling when the data does not fit the model or the augmentation."""
  h, w, c = setup.image_shape
  crop = setup.view_cfgs[0].crop_size
  crop = crop if isinstance(crop, int) else crop[0]
  if crop > max(h, w) * 4:
    raise ConfigError(f"config.data.image_size={crop} is far larger than the images ({h}x{w}).")
  enc_kwargs = dict(setup.cfg.model.get("encoder_kwargs", {}) or {})
  if "in_channels" in enc_kwargs and enc_kwargs["in_channels"] != c:
    raise ConfigError(f"config.model.encoder_kwargs.in_channels={enc_kwargs['in_channels']} but dataset "
                      f"{setup.cfg.data.name!r} has {c}-channel images {setup.image_shape}.")
