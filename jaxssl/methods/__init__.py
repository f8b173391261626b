"""The SSL methods by name: one `Method` entry each (loss hook + declared hyperparameters).

| family          | methods                                                        |
|-----------------|----------------------------------------------------------------|
| contrastive     | simclr (nt_xent), infonce, dcl, dclw, dhel, kcl, simple, hard, directclr |
| non-contrastive | byol, simsiam, directpred, directcopy, isoloss                 |
| covariance      | vicreg, barlow_twins                                           |

Adding a method takes a loss function (`jaxssl/losses/`), one entry in `METHODS` below
and a config file (`experiments/configs/<name>.py`); see the README's worked example.

Non-contrastive losses are symmetrised as in BYOL / Tian et al.:
L = l(p1, sg z'2) + l(p2, sg z'1), where z' comes from the EMA target network, or from
the online network itself under stop-gradient (SimSiam, and IsoLoss without a target).

Multi-crop (`config.data.multicrop_num_small` > 0, `jaxssl.multicrop`) is supported by the
methods with a `multicrop_loss` hook: simclr, infonce, byol, simsiam and vicreg (the pairing
of `jaxssl.losses.multicrop`); every other method refuses it at validation.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections

from jaxssl.errors import ConfigError
from jaxssl.losses import contrastive as CL
from jaxssl.losses import multicrop as MC
from jaxssl.losses import noncontrastive as NC
from jaxssl.losses.kernels import KERNEL_NAMES
from jaxssl.methods.base import (LossInputs, Method, StepContext, ema_hparams, predictor_hparams)
from jaxssl.methods.hparams import (BOOL, NON_NEGATIVE, POSITIVE, POSITIVE_INT, HParam, config_sections,
                                    interval, one_of)

# ----------------------------------------------------------------------------- hyperparameters


def temperature(default: float) -> HParam:
  return HParam("loss.temperature", default, POSITIVE, sweepable=True, doc="softmax temperature tau")


KIND = HParam("loss.kind", "cosine", one_of("cosine", "l2"), doc="regression loss: 'cosine' or unnormalised 'l2'")

# IsoLoss's loss on its own closed-form predictor, or the BYOL loss on that same predictor
# (the official code's `iso: False`: Halvagal et al.'s DirectPred arm).
ISO_OBJECTIVES = ("isoloss", "byol")
OBJECTIVE = HParam("loss.objective", "isoloss", one_of(*ISO_OBJECTIVES),
                   doc="'isoloss' (grad_z = grad_p of the BYOL loss) or 'byol' (the BYOL loss on p = z W_p, "
                       "gradient through W_p), both with the same closed-form predictor")


# ----------------------------------------------------------------------------- loss hooks

def _on(key: str, fn, *names: str):
  """A two-view loss `fn(a1, a2, **hp)` on the online outputs `key` ("z" or "r")."""
  def loss(inp: LossInputs, hp: Mapping[str, Any]) -> jax.Array:
    return fn(inp.online1[key], inp.online2[key], **{n: hp[n] for n in names})
  loss.__name__ = f"{fn.__name__}_on_{key}"
  return loss


def _on_multicrop(fn, *names: str):
  """The multi-crop form `fn(z1, z2, z_small, **hp)` of a two-view loss on the online z."""
  def loss(inp: LossInputs, hp: Mapping[str, Any]) -> jax.Array:
    return fn(inp.online1["z"], inp.online2["z"], inp.small["z"], **{n: hp[n] for n in names})
  loss.__name__ = f"{fn.__name__}_on_z"
  return loss


def _regression_targets(inp: LossInputs) -> tuple[jax.Array, jax.Array]:
  # The target branch never receives gradients. The stop_gradient is what keeps gradient
  # descent from reaching the trivial collapsed solution through both branches (Tian et
  # al. 2021); the losses apply it too, this makes it explicit.
  t1 = jax.lax.stop_gradient((inp.target1 or inp.online1)["z"])
  t2 = jax.lax.stop_gradient((inp.target2 or inp.online2)["z"])
  return t1, t2


def symmetric_byol(inp: LossInputs, hp: Mapping[str, Any]) -> jax.Array:
  """BYOL / SimSiam: l(p1, sg t2) + l(p2, sg t1) with the predictor head's outputs p."""
  t1, t2 = _regression_targets(inp)
  return NC.byol(inp.online1["p"], t2, kind=hp["kind"]) + NC.byol(inp.online2["p"], t1, kind=hp["kind"])


def symmetric_byol_multicrop(inp: LossInputs, hp: Mapping[str, Any]) -> jax.Array:
  """BYOL / SimSiam with multi-crop: 2 byol_multicrop(p, sg t), every view's p against the target
  of each global view but its own (the factor 2 keeps the scale of `symmetric_byol`, which it
  equals with no small crop)."""
  t1, t2 = _regression_targets(inp)
  return 2.0 * MC.byol_multicrop(inp.online1["p"], inp.online2["p"], inp.small["p"], t1, t2, kind=hp["kind"])


def symmetric_byol_closed_form(inp: LossInputs, hp: Mapping[str, Any]) -> jax.Array:
  """DirectPred / DirectCopy: the BYOL loss with the closed-form predictor p = z W_p."""
  t1, t2 = _regression_targets(inp)
  p1 = inp.online1["z"].astype(jnp.float32) @ inp.w_pred    # [B, D]
  p2 = inp.online2["z"].astype(jnp.float32) @ inp.w_pred
  return NC.byol(p1, t2, kind=hp["kind"]) + NC.byol(p2, t1, kind=hp["kind"])


def symmetric_isoloss(inp: LossInputs, hp: Mapping[str, Any]) -> jax.Array:
  """IsoLoss: iso(z1, sg t2; W_p) + iso(z2, sg t1; W_p).

  With `loss.objective` = "byol": the BYOL loss l(z1 W_p, sg t2) + l(z2 W_p, sg t1) on the same
  closed-form predictor (formula, eps, alpha, tau_C, timing): DirectPred as Halvagal et al.'s
  code runs it (`iso: False`), so that a pair of runs differs in the loss only.
  """
  if hp["objective"] == "byol":
    return symmetric_byol_closed_form(inp, hp)
  t1, t2 = _regression_targets(inp)
  return (NC.isoloss(inp.online1["z"], t2, inp.w_pred, kind=hp["kind"])
          + NC.isoloss(inp.online2["z"], t1, inp.w_pred, kind=hp["kind"]))


# ----------------------------------------------------------------------------- the table

_ENTRIES = [
    Method("simclr", "contrastive", _on("z", CL.nt_xent, "temperature"), (temperature(0.2),),
           doc="SimCLR NT-Xent (Chen et al. 2020)",
           multicrop_loss=_on_multicrop(MC.nt_xent_multicrop, "temperature")),
    Method("infonce", "contrastive", _on("z", CL.info_nce, "temperature"), (temperature(0.2),),
           doc="symmetric cross-view InfoNCE (van den Oord et al. 2018)",
           multicrop_loss=_on_multicrop(MC.info_nce_multicrop, "temperature")),
    Method("dcl", "contrastive", _on("z", CL.dcl, "temperature"), (temperature(0.2),),
           doc="decoupled contrastive loss (Yeh et al. 2022)"),
    Method("dclw", "contrastive", _on("z", CL.dclw, "temperature", "sigma"),
           (temperature(0.1),
            HParam("loss.sigma", 0.5, POSITIVE, sweepable=True, doc="width of DCLW's positive-pair weight")),
           doc="weighted decoupled contrastive loss (Yeh et al. 2022)"),
    Method("dhel", "contrastive", _on("z", CL.dhel, "temperature", "include_augs"),
           (temperature(0.3), HParam("loss.include_augs", True, BOOL, doc="DHEL: same-view negatives too")),
           doc="decoupled hyperspherical energy loss (Koromilas et al. 2024)"),
    Method("kcl", "contrastive", _on("z", CL.kcl, "kernel", "t", "gamma"),
           (HParam("loss.kernel", "gaussian", one_of(*sorted(KERNEL_NAMES)), doc="KCL kernel"),
            HParam("loss.t", 2.0, POSITIVE, sweepable=True, doc="kernel parameter t"),
            HParam("loss.gamma", 16.0, POSITIVE, sweepable=True, doc="weight of the uniformity term")),
           doc="kernel contrastive loss (Koromilas et al. 2024)"),
    Method("simple", "contrastive", _on("z", CL.simple_contrastive), (),
           doc="Wang & Liu's simple contrastive loss"),
    Method("hard", "contrastive", _on("z", CL.hard_contrastive, "temperature", "alpha"),
           (temperature(0.7), HParam("loss.alpha", 0.1, interval(0.0, 1.0), sweepable=True,
                                     doc="Wang & Liu's hard-negative weight")),
           doc="Wang & Liu's hard contrastive loss"),
    Method("directclr", "contrastive", _on("r", CL.directclr, "temperature", "dim"),
           (temperature(0.1), HParam("loss.dim", 64, POSITIVE_INT, doc="DirectCLR sub-vector size of r")),
           projector="identity", doc="DirectCLR: InfoNCE on a sub-vector of r (Jing et al. 2022)"),
    Method("byol", "noncontrastive", symmetric_byol, (KIND, *ema_hparams(0.99)), predictor="mlp", target="ema",
           doc="BYOL (Grill et al. 2020)", multicrop_loss=symmetric_byol_multicrop),
    Method("simsiam", "noncontrastive", symmetric_byol, (KIND,), predictor="mlp", target="online",
           doc="SimSiam (Chen & He 2021)", multicrop_loss=symmetric_byol_multicrop),
    Method("directpred", "noncontrastive", symmetric_byol_closed_form,
           (KIND, *ema_hparams(0.99), *predictor_hparams(decay=0.3, eps=0.01, freq=1)),
           target="ema", closed_form="directpred", doc="DirectPred (Tian et al. 2021)"),
    Method("directcopy", "noncontrastive", symmetric_byol_closed_form,
           (KIND, *ema_hparams(0.99), *predictor_hparams(decay=0.3, eps=0.3, freq=1)),
           target="ema", closed_form="directcopy", doc="DirectCopy (Wang et al. 2021)"),
    Method("isoloss", "noncontrastive", symmetric_isoloss,
           (KIND, OBJECTIVE, *ema_hparams(0.99, enabled=False), *predictor_hparams(decay=0.5, eps=0.1, alpha=0.5)),
           target="ema", closed_form="halvagal", closed_form_timing="in_loss",
           doc="IsoLoss (Halvagal et al. 2023)"),
    Method("vicreg", "covariance", _on("z", NC.vicreg, "sim", "var", "cov"),
           (HParam("loss.sim", 25.0, NON_NEGATIVE, sweepable=True, doc="invariance weight"),
            HParam("loss.var", 25.0, NON_NEGATIVE, sweepable=True, doc="variance weight"),
            HParam("loss.cov", 1.0, NON_NEGATIVE, sweepable=True, doc="covariance weight")),
           doc="VICReg (Bardes et al. 2022)",
           multicrop_loss=_on_multicrop(MC.vicreg_multicrop, "sim", "var", "cov")),
    Method("barlow_twins", "covariance", _on("z", NC.barlow_twins, "lambd"),
           (HParam("loss.lambd", 5e-3, NON_NEGATIVE, sweepable=True, doc="off-diagonal weight"),),
           doc="Barlow Twins (Zbontar et al. 2021)"),
]

METHODS: dict[str, Method] = {m.name: m for m in _ENTRIES}


def _check_table() -> None:
  for m in _ENTRIES:
    keys = [h.key for h in m.hparams]
    if len(set(keys)) != len(keys):
      raise AssertionError(f"method {m.name!r} declares a hyperparameter key twice: {keys}")


_check_table()


def get_method(name: str) -> Method:
  """The registered `Method`; ConfigError listing the known ones otherwise."""
  if name not in METHODS:
    raise ConfigError(f"unknown method {name!r}; known methods: {', '.join(sorted(METHODS))}")
  return METHODS[name]


def method_sections(name: str) -> dict[str, ml_collections.ConfigDict]:
  """The config sections ("loss", and "ema" / "predictor" where used) with their defaults."""
  sections = config_sections(get_method(name).hparams)
  sections.setdefault("loss", ml_collections.ConfigDict())
  return sections


__all__ = ["METHODS", "Method", "HParam", "LossInputs", "StepContext", "get_method", "method_sections",
           "symmetric_byol", "symmetric_byol_closed_form", "symmetric_isoloss", "symmetric_byol_multicrop"]
