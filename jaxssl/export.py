"""A trained backbone for downstream use: load it from a run, or export it to one file.

* `load_run(workdir)`: (cfg, setup, state) of a run's latest complete checkpoint.
* `load_encoder(workdir)`: `(encode_fn, variables)` with `encode_fn(variables, images) -> r`
  [B, F], the backbone representation (eval mode: BatchNorm running statistics).
* `export_encoder(workdir, out)`: writes `out` (flax msgpack of the network's parameters and
  BatchNorm statistics) and `out + ".json"` (the run's config), so that
  `load_exported(out)` needs neither the workdir nor its optimizer state.

Images are float in [0, 1], [B, H, W, C] at the training resolution (`cfg.data.image_size`),
as `jaxssl.data` yields them divided by 255; uint8 is converted here.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable

import chex
import flax.serialization
import jax
import jax.numpy as jnp
import ml_collections

from jaxssl import checkpoint as ckpt_lib
from jaxssl import config as config_lib
from jaxssl import state as state_lib
from jaxssl.errors import ConfigError

EncodeFn = Callable[[dict[str, Any], jax.Array], jax.Array]


def load_run(workdir: str) -> tuple[ml_collections.ConfigDict, state_lib.Setup, state_lib.TrainState]:
  """(cfg, setup, state) of the latest complete checkpoint in `workdir`."""
  path = os.path.join(workdir, "config.json")
  if not os.path.isdir(workdir):
    raise ConfigError(f"--workdir {workdir!r} does not exist; pass the --workdir of a `jaxssl train` run.")
  if os.path.exists(os.path.join(workdir, "members.json")):
    n = len(json.load(open(os.path.join(workdir, "members.json"))))
    raise ConfigError(f"{workdir!r} is a sweep directory; evaluate one member at a time: "
                      f"--workdir {os.path.join(workdir, 'members', '<i>')} with <i> in 0..{n - 1} "
                      "(each member is evaluated at the end of the sweep; see summary.md).")
  if not os.path.exists(path):
    raise ConfigError(f"{workdir!r} is not a jaxssl run directory (no config.json); "
                      "pass the --workdir of a `jaxssl train` run.")
  with open(path) as f:
    cfg = config_lib.from_json(f.read())
  setup, state = state_lib.build(cfg, jax.random.PRNGKey(cfg.seed))
  ck = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                             fingerprint=ckpt_lib.fingerprint(cfg, state))
  restored = ck.restore_latest(state)
  if restored is None:
    raise ConfigError(f"no complete checkpoint in {workdir}/checkpoints to load.")
  return cfg, setup, restored[0]


def _encode_fn(setup: state_lib.Setup) -> EncodeFn:
  @jax.jit
  def encode(variables: dict[str, Any], images: jax.Array) -> jax.Array:
    chex.assert_rank(images, 4)                       # [B, H, W, C]
    x = images.astype(jnp.float32) / 255.0 if images.dtype == jnp.uint8 else images
    out, _ = state_lib.apply(setup, variables["params"], variables["batch_stats"], x, train=False, heads=False)
    return out["r"]                                   # [B, F]
  return encode


def load_encoder(workdir: str) -> tuple[EncodeFn, dict[str, Any]]:
  """(encode_fn, variables) of a run's latest checkpoint; `encode_fn(variables, images) -> r`."""
  _, setup, state = load_run(workdir)
  return _encode_fn(setup), {"params": state.params, "batch_stats": state.batch_stats}


def export_encoder(workdir: str, out: str) -> list[str]:
  """Writes the run's network variables to `out` (msgpack) and its config to `out`.json."""
  cfg, _, state = load_run(workdir)
  variables = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
  try:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out + ".tmp", "wb") as f:
      f.write(flax.serialization.to_bytes(variables))
    with open(out + ".json.tmp", "w") as f:
      f.write(cfg.to_json(indent=2))
    os.replace(out + ".tmp", out)
    os.replace(out + ".json.tmp", out + ".json")
  except OSError as e:
    raise ConfigError(f"cannot write the export to {out!r} ({e.strerror}); pass a writable --out.") from None
  return [out, out + ".json"]


def load_exported(path: str) -> tuple[EncodeFn, dict[str, Any]]:
  """(encode_fn, variables) from a file written by `export_encoder` (and its .json beside it)."""
  if not (os.path.exists(path) and os.path.exists(path + ".json")):
    raise ConfigError(f"{path!r} and {path + '.json'!r} must both exist (written by `jaxssl export`).")
  with open(path + ".json") as f:
    cfg = config_lib.from_json(f.read())
  setup, state = state_lib.build(cfg, jax.random.PRNGKey(cfg.seed))
  template = {"params": state.params, "batch_stats": state.batch_stats}
  with open(path, "rb") as f:
    try:
      variables = flax.serialization.from_bytes(template, f.read())
    except (ValueError, KeyError) as e:
      raise ConfigError(f"{path!r} does not match the network of {path}.json ({e}).") from None
  return _encode_fn(setup), variables
