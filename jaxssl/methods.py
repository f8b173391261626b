"""SSL methods by name: encoder + heads + loss + target/predictor updates.

A method is a `MethodSpec` (static structure) plus the numeric hyperparameters of
`config.loss` (traced: they live in the train state, so `jax.vmap` can sweep them).
`ssl_loss` is the single place where a method's loss is assembled from the forward
outputs of the two views.

| family          | methods                                                        |
|-----------------|----------------------------------------------------------------|
| contrastive     | simclr (nt_xent), infonce, dcl, dhel, kcl, simple, hard, directclr |
| non-contrastive | byol, simsiam, directpred, directcopy, isoloss                 |
| covariance      | vicreg, barlow_twins                                           |
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from jaxssl import losses
from jaxssl import models
from jaxssl.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class MethodSpec:
  """Static description of an SSL method.

  Attributes:
    name: registry name.
    family: "contrastive", "noncontrastive" or "covariance".
    loss: name of the function in `jaxssl.losses`.
    projector: default projector kind ("mlp", "linear", "identity").
    predictor: None, "mlp" (BYOL/SimSiam) or "linear" (bias-free, closed form).
    closed_form: None, "directpred", "directcopy" or "halvagal" (IsoLoss).
    target: "ema" (BYOL-style EMA target) or "online" (SimSiam: the online network
      under stop-gradient). Contrastive and covariance methods use neither.
  """
  name: str
  family: str
  loss: str
  projector: str = "mlp"
  predictor: str | None = None
  closed_form: str | None = None
  target: str | None = None


METHODS: dict[str, MethodSpec] = {m.name: m for m in [
    MethodSpec("simclr", "contrastive", "nt_xent"),
    MethodSpec("infonce", "contrastive", "info_nce"),
    MethodSpec("dcl", "contrastive", "dcl"),
    MethodSpec("dhel", "contrastive", "dhel"),
    MethodSpec("kcl", "contrastive", "kcl"),
    MethodSpec("simple", "contrastive", "simple_contrastive"),
    MethodSpec("hard", "contrastive", "hard_contrastive"),
    MethodSpec("directclr", "contrastive", "directclr", projector="identity"),
    MethodSpec("byol", "noncontrastive", "byol", predictor="mlp", target="ema"),
    MethodSpec("simsiam", "noncontrastive", "byol", predictor="mlp", target="online"),
    MethodSpec("directpred", "noncontrastive", "byol", predictor="linear", closed_form="directpred", target="ema"),
    MethodSpec("directcopy", "noncontrastive", "byol", predictor="linear", closed_form="directcopy", target="ema"),
    MethodSpec("isoloss", "noncontrastive", "isoloss", predictor=None, closed_form="halvagal", target="ema"),
    MethodSpec("vicreg", "covariance", "vicreg"),
    MethodSpec("barlow_twins", "covariance", "barlow_twins"),
]}

# Numeric loss hyperparameters: traced (sweepable). Everything else in config.loss is static.
NUMERIC_LOSS_KEYS = ("temperature", "t", "gamma", "alpha", "sim", "var", "cov", "lambd")
# Which numeric keys each loss function accepts.
_LOSS_NUMERIC = {
    "nt_xent": ("temperature",), "info_nce": ("temperature",), "dcl": ("temperature",),
    "dhel": ("temperature",), "kcl": ("t", "gamma"), "simple_contrastive": (),
    "hard_contrastive": ("temperature", "alpha"), "directclr": ("temperature",),
    "byol": (), "isoloss": (), "vicreg": ("sim", "var", "cov"), "barlow_twins": ("lambd",),
}
_LOSS_STATIC = {"dhel": ("include_augs",), "kcl": ("kernel",), "directclr": ("dim",),
                "byol": ("kind",), "isoloss": ("kind",)}


def get_method(name: str) -> MethodSpec:
  if name not in METHODS:
    raise ConfigError(f"unknown method {name!r}; known methods: {', '.join(sorted(METHODS))}")
  return METHODS[name]


def validate_method_config(cfg: ml_collections.ConfigDict, spec: MethodSpec) -> None:
  allowed = set(_LOSS_NUMERIC[spec.loss]) | set(_LOSS_STATIC.get(spec.loss, ()))
  for key in cfg.loss.keys():
    if key not in allowed:
      raise ConfigError(f"config.loss.{key} is not a parameter of method {spec.name!r} (loss {spec.loss}); "
                        f"its parameters are: {sorted(allowed) or 'none'}")
  for key in _LOSS_NUMERIC[spec.loss]:
    if key not in cfg.loss and key in ("temperature",):
      raise ConfigError(f"method {spec.name!r} needs config.loss.{key}")
  if spec.loss in ("byol", "isoloss") and cfg.loss.get("kind", "cosine") not in ("cosine", "l2"):
    raise ConfigError(f"config.loss.kind={cfg.loss.kind!r}; use 'cosine' or 'l2'")
  if spec.loss == "directclr":
    feat = cfg.loss.get("dim")
    if not isinstance(feat, int) or feat <= 0:
      raise ConfigError(f"config.loss.dim must be a positive int (DirectCLR sub-vector size), got {feat!r}")
  if spec.target == "ema" or spec.closed_form:
    if "ema" not in cfg:
      raise ConfigError(f"method {spec.name!r} needs a config.ema section (base rate)")
  if spec.closed_form and "predictor" not in cfg:
    raise ConfigError(f"method {spec.name!r} needs a config.predictor section (decay, eps, freq)")


def loss_hparams(cfg: ml_collections.ConfigDict) -> dict[str, float]:
  """The numeric (traced, sweepable) loss hyperparameters of `cfg`."""
  spec = get_method(cfg.method)
  return {k: float(cfg.loss[k]) for k in _LOSS_NUMERIC[spec.loss] if k in cfg.loss}


def static_loss_kwargs(cfg: ml_collections.ConfigDict) -> dict[str, Any]:
  spec = get_method(cfg.method)
  return {k: cfg.loss[k] for k in _LOSS_STATIC.get(spec.loss, ()) if k in cfg.loss}


def uses_target(cfg: ml_collections.ConfigDict) -> bool:
  """True when the method keeps an EMA target network. IsoLoss may run without one."""
  spec = get_method(cfg.method)
  if spec.target != "ema":
    return False
  return bool(cfg.ema.get("enabled", True))


class SSLNet(nnx.Module):
  """Encoder f, projector g and (optionally) predictor h: r = f(x), z = g(r), p = h(z)."""

  def __init__(self, cfg: ml_collections.ConfigDict, *, in_channels: int, rngs: nnx.Rngs):
    spec = get_method(cfg.method)
    mc = cfg.model
    enc_kwargs = dict(mc.get("encoder_kwargs", {}) or {})
    enc_kwargs.setdefault("in_channels", in_channels)
    self.encoder = models.build_encoder(mc.encoder, rngs=rngs, **enc_kwargs)
    feat = self.encoder.feature_dim
    proj = mc.projector
    kind = proj.get("kind") or spec.projector
    proj_kwargs = {k: v for k, v in proj.items() if k not in ("kind", "out_dim")} if kind == "mlp" else {}
    out_dim = proj.get("out_dim", feat) if kind != "identity" else feat
    self.projector = models.build_head(kind, feat, out_dim, rngs=rngs, **proj_kwargs)
    self.embed_dim = out_dim
    self.feature_dim = feat
    predictor = None
    if spec.predictor == "mlp":
      pc = dict(mc.get("predictor", {}) or {})
      predictor = models.build_head("mlp", out_dim, out_dim, rngs=rngs, **pc)
    elif spec.predictor == "linear":
      predictor = models.LinearPredictor(out_dim, rngs=rngs, bias=False)
    self.predictor = nnx.data(predictor)

  def __call__(self, x):
    r = self.encoder(x)            # [B, F]
    z = self.projector(r)          # [B, D]
    p = self.predictor(z) if self.predictor is not None else z
    return {"r": r, "z": z, "p": p}


def ssl_loss(spec: MethodSpec, static_kwargs: Mapping[str, Any], hp: Mapping[str, jax.Array],
             online1: Mapping[str, jax.Array], online2: Mapping[str, jax.Array],
             target1: Mapping[str, jax.Array] | None, target2: Mapping[str, jax.Array] | None,
             w_pred: jax.Array | None = None) -> jax.Array:
  """The method's loss on the two views' forward outputs (global batch, scalar).

  Non-contrastive methods are symmetrised as in Tian et al. / BYOL:
  L = l(p1, sg z'2) + l(p2, sg z'1), where z' comes from the target (EMA) network, or
  from the online network itself under stop-gradient for SimSiam.
  """
  numeric = {k: hp[k] for k in _LOSS_NUMERIC[spec.loss] if k in hp}
  fn = getattr(losses, spec.loss)
  if spec.family in ("contrastive", "covariance"):
    a, b = ("r", "r") if spec.name == "directclr" else ("z", "z")
    return fn(online1[a], online2[b], **numeric, **static_kwargs)
  # Non-contrastive: the target branch never receives gradients. The stop_gradient is
  # what prevents the trivial collapsed solution from being reached by gradient descent
  # through both branches (Tian et al. 2021); the losses also apply it, this is explicit.
  t1 = jax.lax.stop_gradient((target1 or online1)["z"])
  t2 = jax.lax.stop_gradient((target2 or online2)["z"])
  if spec.loss == "isoloss":
    return (losses.isoloss(online1["z"], t2, w_pred, **static_kwargs)
            + losses.isoloss(online2["z"], t1, w_pred, **static_kwargs))
  return fn(online1["p"], t2, **static_kwargs) + fn(online2["p"], t1, **static_kwargs)
