"""The train step: one pure function `(state, batch, key) -> (state, metrics)`.

1. two views are made on device from the uint8 batch (`jaxssl.augment`), plus N small
   crops with multi-crop on (`jaxssl.multicrop`; their own key stream, so the two views
   are the same with and without them);
2. the method's target network, if any, embeds both views (`Method.targets`);
3. the online network embeds both views (and, in a call of their own, the small crops)
   and the method's loss is taken over the *global* batch (`Method.before_loss`,
   `Method.loss`, or `Method.multicrop_loss` with small crops);
4. optax applies the update with the traced learning rate and weight decay; the method
   updates its private state (`Method.post_update`: W_p, EMA target);
5. an online linear probe trains on stop-gradient features (it measures, never shapes);
6. every `log_every` steps, inside the same compiled program (`lax.cond`), the
   eigenvalue spectrum and effective rank of the projector output z and of the backbone
   representation r, the norm of z, alignment and uniformity join the metrics.

The step has no branch on a method's name: everything method-specific is a hook of the
`Method`. `jit_train_step` compiles it over a `Mesh` with the state replicated and the
batch sharded over "data"; XLA inserts the collectives, so BatchNorm statistics, loss
negatives and the spectrum's covariance are all global.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import optax

from jaxssl import augment
from jaxssl import diagnostics
from jaxssl import multicrop
from jaxssl import optim
from jaxssl import parallel
from jaxssl import selection
from jaxssl.methods import LossInputs, StepContext
from jaxssl.state import Setup, TrainState, apply

StepFn = Callable[[TrainState, Mapping[str, jax.Array], jax.Array], tuple[TrainState, dict[str, jax.Array]]]

NONFINITE_POLICIES = ("stop", "skip", "rollback")


def in_graph_diagnostics(z1: jax.Array, z2: jax.Array, r1: jax.Array) -> dict[str, jax.Array]:
  """Spectra and summaries of one step's embeddings z1, z2 [B, D] and representation r1 [B, F]."""
  eig_z = diagnostics.spectrum(z1)        # [D]
  eig_r = diagnostics.spectrum(r1)        # [F]
  return {
      "spectrum_z": eig_z, "spectrum_r": eig_r,
      "effective_rank_z": diagnostics.effective_rank(eig_z),
      "effective_rank_r": diagnostics.effective_rank(eig_r),
      # The spectrum is of normalised rows: only the norm shows a collapse to zero (Bao).
      "norm_z": diagnostics.embedding_norm(z1),
      # RankMe (Garrido et al.): the smooth rank of Z as produced, a label-free quality score.
      "rankme_z": selection.rankme(z1),
      "rankme_r": selection.rankme(r1),
      "alignment": diagnostics.alignment(z1, z2),
      # Wang & Isola / Wang & Liu report -L_unif: larger is more uniform.
      "uniformity": -diagnostics.uniformity(z1, t=2.0),
  }


DIAGNOSTIC_KEYS = ("effective_rank_z", "effective_rank_r", "norm_z", "rankme_z", "rankme_r", "alignment",
                   "uniformity")


def make_train_step(setup: Setup) -> StepFn:
  """The pure train step of `setup` (not jitted)."""
  cfg, method = setup.cfg, setup.method
  schedule = optim.unit_schedule(cfg)
  log_every = int(cfg.train.log_every)
  policy = cfg.train.nonfinite_policy
  static_hp = method.static_values(cfg)
  ctx = StepContext(apply=lambda params, stats, x: apply(setup, params, stats, x, train=True),
                    num_steps=int(cfg.train.num_steps))

  def step_fn(state: TrainState, batch: Mapping[str, jax.Array], key: jax.Array):
    images, labels = batch["image"], batch["label"]        # [B, H, W, C] uint8, [B]
    hp = {**static_hp, **state.hparams}
    # The per-step key (fold_in(root, step)) drives the augmentations.
    v1, v2 = augment.make_views(key, images, setup.view_cfgs)   # [B, h, w, C] float32
    # Multi-crop: N small crops [N, B, s, s, C] from fold_in(key, ...); v1, v2 are unchanged.
    small = None if setup.multicrop is None else multicrop.small_views(key, images, setup.multicrop)
    (target1, target2), extra = method.targets(ctx, state.extra, v1, v2, hp)

    def loss_fn(params):
      out1, stats = ctx.apply(params, state.batch_stats, v1)
      out2, stats = ctx.apply(params, stats, v2)
      new_extra, w_pred = method.before_loss(extra, out1, out2, hp)
      if small is None:
        loss = method.loss(LossInputs(out1, out2, target1, target2, w_pred), hp)
      else:
        # The small crops: online network only, one BatchNorm batch of their own (SwAV / DINO).
        out_small, stats = multicrop.apply_small(ctx.apply, params, stats, small)
        loss = method.multicrop_loss(LossInputs(out1, out2, target1, target2, w_pred, out_small), hp)
      return loss, (out1, out2, stats, new_extra)

    (loss, (out1, out2, new_stats, new_extra)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    lr = hp["lr"] * schedule(state.step)
    opt_state = optim.with_hparams(state.opt_state, lr, hp["weight_decay"])
    updates, opt_state = setup.tx.update(grads, opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_extra = method.post_update(ctx, new_extra, params, state.step, hp)

    metrics: dict[str, jax.Array] = {"loss": loss, "lr": lr}
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

    new_state = state.replace(params=params, batch_stats=new_stats, opt_state=opt_state, extra=new_extra,
                              probe=probe, probe_opt_state=probe_opt)
    if policy == "skip":
      # Skip a non-finite update in-graph: keep the old state (the step still advances).
      ok = loss_finite & grad_finite & jnp.isfinite(metrics["grad_norm"])   # an overflowing norm too
      new_state = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new_state, state)
    # `step` is shared by all members of a sweep (it is not vmapped), so it is only
    # ever incremented, never selected per member.
    new_state = new_state.replace(step=state.step + 1)

    do_log = (state.step % log_every) == 0
    diag_shapes = jax.eval_shape(in_graph_diagnostics, out1["z"], out2["z"], out1["r"])
    diag = jax.lax.cond(do_log,
                        lambda: in_graph_diagnostics(out1["z"], out2["z"], out1["r"]),
                        lambda: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), diag_shapes))
    metrics.update(diag)
    return new_state, metrics

  return step_fn


def jit_train_step(setup: Setup, mesh: jax.sharding.Mesh, step_fn: StepFn | None = None) -> Any:
  """`jax.jit` of the train step: state replicated, batch sharded over the data axis."""
  step_fn = step_fn or make_train_step(setup)
  rep = parallel.replicated(mesh)
  data = parallel.batch_sharding(mesh)
  return jax.jit(step_fn, in_shardings=(rep, data, rep), out_shardings=(rep, rep), donate_argnums=(0,))


def augmentation_root_key(cfg: Any, stream: int | None = None) -> jax.Array:
  """Root of the per-step augmentation keys: step k uses fold_in(root, k).

  Stream i is what member i of a sweep uses, so a single run with
  `config.train.aug_stream = i` reproduces that member exactly.
  """
  stream = int(cfg.train.aug_stream) if stream is None else int(stream)
  return jax.random.fold_in(jax.random.PRNGKey(cfg.seed + 1), stream)
