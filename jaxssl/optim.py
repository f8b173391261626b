"""Optimizers, the unit learning-rate schedule, the EMA rate, and hyperparameter injection.

The learning rate and weight decay are *arrays* in the train state (`state.hparams`),
never Python constants compiled into the program, so one compiled step serves every
member of a vmapped sweep. The optimizer is built with `optax.inject_hyperparams` and the
step writes the traced values into its state each step (`with_hparams`); the schedule is
a unit-peak schedule times the traced peak learning rate, as in big_vision:

    lr_k = hparams["lr"] * unit_schedule(k)
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxssl.errors import ConfigError

PyTree = Any

OPTIMIZERS = ("sgd", "lars", "adamw")
SCHEDULES = ("cosine", "constant")


def decay_mask(params: PyTree) -> PyTree:
  """True for the leaves that get weight decay (and LARS' trust ratio): rank > 1.

  Biases and normalisation parameters (rank <= 1) are excluded, as in SimCLR and BYOL.
  """
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
  """SGD (coupled weight decay), LARS or AdamW with injectable learning rate and weight decay.

  Both start at placeholder values (1, 0); `with_hparams` sets the traced values before
  every update.
  """
  name = optim.name
  if name == "sgd":
    return optax.inject_hyperparams(_sgd, static_args=("momentum", "mask"))(
        learning_rate=1.0, weight_decay=0.0, momentum=optim.momentum, mask=decay_mask)
  if name == "lars":
    return optax.inject_hyperparams(_lars, static_args=("momentum", "mask"))(
        learning_rate=1.0, weight_decay=0.0, momentum=optim.momentum, mask=decay_mask)
  if name == "adamw":
    return optax.inject_hyperparams(_adamw, static_args=("mask",))(
        learning_rate=1.0, weight_decay=0.0, mask=decay_mask)
  raise ConfigError(f"config.optim.name={name!r}; use one of {', '.join(map(repr, OPTIMIZERS))}")


def unit_schedule(cfg: ml_collections.ConfigDict) -> optax.Schedule:
  """The learning-rate multiplier s(k) in [0, 1], peak 1.

  "cosine": linear warm-up over `optim.warmup_steps` from 0 to 1, then cosine decay to 0
  at `train.num_steps`; "constant": the same warm-up, then 1.
  """
  total = int(cfg.train.num_steps)
  warmup = int(min(cfg.optim.warmup_steps, max(total - 1, 0)))
  if cfg.optim.schedule == "constant":
    return optax.linear_schedule(0.0, 1.0, max(warmup, 1)) if warmup else (lambda s: jnp.ones([], jnp.float32))
  if cfg.optim.schedule != "cosine":
    raise ConfigError(f"config.optim.schedule={cfg.optim.schedule!r}; use one of "
                      f"{', '.join(map(repr, SCHEDULES))}")
  if warmup:
    return optax.warmup_cosine_decay_schedule(0.0, 1.0, max(warmup, 1), max(total, 2), end_value=0.0)
  return optax.cosine_decay_schedule(1.0, max(total, 1))


def with_hparams(opt_state: Any, lr: jax.Array, weight_decay: jax.Array) -> Any:
  """`opt_state` of an `inject_hyperparams` optimizer with the given (traced) lr and wd."""
  hp = dict(opt_state.hyperparams)
  hp["learning_rate"] = jnp.asarray(lr, jnp.float32)
  hp["weight_decay"] = jnp.asarray(weight_decay, jnp.float32)
  return opt_state._replace(hyperparams=hp)


def ema_rate(base: jax.Array, step: jax.Array, total_steps: int) -> jax.Array:
  """BYOL's cosine EMA schedule.

      tau_k = 1 - (1 - base) * (cos(pi k / K) + 1) / 2,   k = min(step, K)

  so tau_0 = base and tau_K = 1 (the target stops moving at the end of training).
  """
  k = jnp.minimum(step.astype(jnp.float32), float(total_steps))
  return 1.0 - (1.0 - base) * (jnp.cos(jnp.pi * k / float(total_steps)) + 1.0) / 2.0


def ema_update(target: PyTree, online: PyTree, tau: jax.Array) -> PyTree:
  """theta_target <- tau * theta_target + (1 - tau) * theta_online, leaf by leaf."""
  return jax.tree.map(lambda t, o: tau * t + (1.0 - tau) * o, target, online)
