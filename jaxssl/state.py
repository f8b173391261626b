"""The SSL network, the train state, `build`, and the one functional forward.

    setup, state = build(cfg, jax.random.PRNGKey(cfg.seed))
    out, stats = apply(setup, state.params, state.batch_stats, x, train=True)   # {"r", "z", "p"}

`Setup` is the static half (what is compiled into the program: the module's graphdef,
the optimizer, the augmentation, the `Method`); `TrainState` is the dynamic half, a pytree
of arrays. Everything method-private (EMA target, predictor statistics, W_p) lives in
`TrainState.extra`, built by the method's `init_extra` hook.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from jaxssl import augment
from jaxssl import config as config_lib
from jaxssl import models
from jaxssl import multicrop as multicrop_lib
from jaxssl import optim
from jaxssl import data as data_lib
from jaxssl.errors import ConfigError
from jaxssl.methods import Method, get_method

PyTree = Any


class SSLNet(nnx.Module):
  """Encoder f, projector g and (for BYOL / SimSiam) a predictor head h.

  r = f(x) [B, F], z = g(r) [B, D], p = h(z) [B, D] (p = z without a predictor head; the
  closed-form predictors are not modules, they live in the train state's `extra`).

  `config.model.dtype` is the compute dtype of f, g and h (Flax `dtype`); parameters stay
  float32 (`param_dtype`), BatchNorm statistics are reduced in float32, and r, z, p are
  returned as float32, so the loss, the probe and the diagnostics see float32 embeddings.
  """

  def __init__(self, cfg: ml_collections.ConfigDict, method: Method, *, in_channels: int, rngs: nnx.Rngs):
    mc = cfg.model
    dtype = config_lib.model_compute_dtype(cfg)
    # float32 passes no dtype at all: the modules' default program, unchanged.
    compute = {} if dtype is None else {"dtype": dtype}
    enc_kwargs = dict(mc.encoder_kwargs or {})
    enc_kwargs.setdefault("in_channels", in_channels)
    self.encoder = models.build_encoder(mc.encoder, rngs=rngs, **enc_kwargs, **compute)
    feat = self.encoder.feature_dim
    proj = dict(mc.projector)
    kind = proj.get("kind") or method.projector
    proj_kwargs = {k: v for k, v in proj.items() if k not in ("kind", "out_dim")} if kind == "mlp" else {}
    out_dim = proj.get("out_dim", feat) if kind != "identity" else feat
    self.projector = models.build_head(kind, feat, out_dim, rngs=rngs, **proj_kwargs, **compute)
    self.embed_dim = out_dim
    self.feature_dim = feat
    predictor = None
    if method.predictor == "mlp":
      predictor = models.build_head("mlp", out_dim, out_dim, rngs=rngs, **dict(mc.predictor or {}), **compute)
    self.predictor = nnx.data(predictor)
    self.low_precision = dtype is not None

  def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
    r = self.encoder(x)            # [B, F]
    z = self.projector(r)          # [B, D]
    p = self.predictor(z) if self.predictor is not None else z
    return self._float32({"r": r, "z": z, "p": p})

  def encode(self, x: jax.Array) -> dict[str, jax.Array]:
    return self._float32({"r": self.encoder(x)})

  def _float32(self, out: dict[str, jax.Array]) -> dict[str, jax.Array]:
    # The encoders and heads already return float32; in low precision this makes it the
    # network's contract (the loss and the diagnostics are computed in float32).
    return {k: v.astype(jnp.float32) for k, v in out.items()} if self.low_precision else out


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training; a pytree of arrays."""
  step: jax.Array                 # int32 scalar
  params: PyTree                  # online encoder / projector / predictor-head parameters
  batch_stats: PyTree             # BatchNorm running statistics
  opt_state: PyTree
  extra: dict[str, Any]           # method-private state (EMA target, predictor), see Method
  probe: PyTree | None            # online linear probe {"w": [F, C], "b": [C]}
  probe_opt_state: PyTree | None
  hparams: dict[str, jax.Array]   # traced, sweepable hyperparameters (float32 scalars)


class Setup(NamedTuple):
  """The static half of training: what is compiled into the program."""
  cfg: ml_collections.ConfigDict
  method: Method
  graphdef: Any
  tx: optax.GradientTransformation
  probe_tx: optax.GradientTransformation | None
  view_cfgs: tuple
  num_classes: int
  image_shape: tuple[int, int, int]
  embed_dim: int
  feature_dim: int
  multicrop: multicrop_lib.MultiCrop | None = None   # the small crops (None: two views only)


ENGINE_SWEEPABLE = {"optim.lr": "lr", "optim.weight_decay": "weight_decay"}


def sweepable_fields(cfg: ml_collections.ConfigDict) -> dict[str, str]:
  """{config field: key in state.hparams} of everything a sweep may vary for `cfg`."""
  method = get_method(cfg.method)
  return {**ENGINE_SWEEPABLE, **{h.field: h.key for h in method.sweepable(cfg)}}


def initial_hparams(cfg: ml_collections.ConfigDict) -> dict[str, float]:
  """The traced hyperparameters of `cfg` and their values (the keys of `state.hparams`)."""
  method = get_method(cfg.method)
  hp = {"lr": float(cfg.optim.lr), "weight_decay": float(cfg.optim.weight_decay)}
  hp.update({h.key: float(h.value(cfg)) for h in method.sweepable(cfg)})
  return hp


def build(cfg: ml_collections.ConfigDict, key: jax.Array | int = 0) -> tuple[Setup, TrainState]:
  """Builds the network, optimizer and initial state of a validated config."""
  if isinstance(key, int):
    key = jax.random.PRNGKey(key)
  method = get_method(cfg.method)
  info = data_lib.dataset_info(cfg.data.name)
  crop = int(cfg.data.image_size)
  view_cfgs = augment.views_of_config(cfg)
  _check_shapes(cfg, info.image_shape, crop)
  seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
  model = SSLNet(cfg, method, in_channels=info.image_shape[-1], rngs=nnx.Rngs(seed))
  graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  params, batch_stats = nnx.to_pure_dict(params), nnx.to_pure_dict(batch_stats)
  tx = optim.make_optimizer(cfg.optim)
  extra = method.init_extra(params, batch_stats, model.embed_dim, cfg)
  probe = probe_tx = probe_opt = None
  if cfg.train.online_probe:
    probe = {"w": jnp.zeros((model.feature_dim, info.num_classes), jnp.float32),
             "b": jnp.zeros((info.num_classes,), jnp.float32)}
    probe_tx = optax.adam(cfg.train.probe_lr)
    probe_opt = probe_tx.init(probe)
  state = TrainState(
      step=jnp.zeros([], jnp.int32), params=params, batch_stats=batch_stats, opt_state=tx.init(params),
      extra=extra, probe=probe, probe_opt_state=probe_opt,
      hparams={k: jnp.asarray(v, jnp.float32) for k, v in initial_hparams(cfg).items()})
  setup = Setup(cfg=cfg, method=method, graphdef=graphdef, tx=tx, probe_tx=probe_tx, view_cfgs=view_cfgs,
                num_classes=info.num_classes, image_shape=tuple(info.image_shape),
                embed_dim=model.embed_dim, feature_dim=model.feature_dim,
                multicrop=multicrop_lib.from_config(cfg, view_cfgs))
  return setup, state


def apply(setup: Setup, params: PyTree, batch_stats: PyTree, x: jax.Array, *, train: bool,
          heads: bool = True) -> tuple[dict[str, jax.Array], PyTree]:
  """The SSL network on float images in [0, 1]: ({"r", "z", "p"} or {"r"}, new batch stats)."""
  return models.apply(setup.graphdef, params, batch_stats, x, train=train, method=None if heads else "encode")


def encode(setup: Setup, state: TrainState, x: jax.Array) -> jax.Array:
  """Backbone representation r [B, F] of float images in [0, 1] (eval mode)."""
  out, _ = apply(setup, state.params, state.batch_stats, x, train=False, heads=False)
  return out["r"]


def _check_shapes(cfg: ml_collections.ConfigDict, image_shape: tuple[int, int, int], crop: int) -> None:
  """Fails before compiling when the data does not fit the model or the augmentation."""
  h, w, c = image_shape
  if crop > max(h, w) * 4:
    raise ConfigError(f"config.data.image_size={crop} is far larger than the images ({h}x{w}).")
  enc_kwargs = dict(cfg.model.encoder_kwargs or {})
  if "in_channels" in enc_kwargs and enc_kwargs["in_channels"] != c:
    raise ConfigError(f"config.model.encoder_kwargs.in_channels={enc_kwargs['in_channels']} but dataset "
                      f"{cfg.data.name!r} has {c}-channel images {image_shape}.")
