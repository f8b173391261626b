"""`Method`: an SSL method declared in one place, as pure hooks plus its hyperparameters.

The generic train step (`jaxssl.step`) knows nothing of method names. It calls:

    extra          = method.init_extra(params, batch_stats, embed_dim, cfg)    # once, in build
    targets, extra = method.targets(ctx, extra, v1, v2, hp)                  # before the loss
    extra, w_pred  = method.before_loss(extra, out1, out2, hp)               # inside the loss
    loss           = method.loss(LossInputs(out1, out2, t1, t2, w_pred), hp)
    extra          = method.post_update(ctx, extra, params, step, hp)        # after optax

With multi-crop on (`config.data.multicrop_num_small` > 0, `jaxssl.multicrop`) the step calls
`method.multicrop_loss(LossInputs(out1, out2, t1, t2, w_pred, small), hp)` instead, where
`small` holds the online outputs of the N small crops; a method without that hook refuses
multi-crop at validation.

`extra` is the one field of the train state that holds method-private state:
* "target": the EMA target network {"params", "batch_stats"} (BYOL-style methods);
* "predictor": the EMA correlation of z (`predictors.PredictorState`) and
  "predictor_w": the closed-form predictor W_p [D, D] (DirectPred, DirectCopy, IsoLoss).

W_p reaches the loss the same way for all closed-form methods: `LossInputs.w_pred`.
When it is computed is the method's: DirectPred/DirectCopy set it after each optimizer
step from the correlation seen so far (Tian et al.), IsoLoss uses the current step's
estimate (Halvagal et al.'s code).

`hp` maps each declared hyperparameter's key to its value: traced float32 arrays for the
sweepable ones (from `state.hparams`), Python values for the others.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections

from jaxssl import optim
from jaxssl import predictors
from jaxssl.errors import ConfigError
from jaxssl.methods.hparams import BOOL, NON_NEGATIVE, POSITIVE_INT, HParam, interval

PyTree = Any


class LossInputs(NamedTuple):
  """What a loss hook sees: the two views' outputs of the online network and the rest."""
  online1: Mapping[str, jax.Array]        # {"r": [B, F], "z": [B, D], "p": [B, D]} of view 1
  online2: Mapping[str, jax.Array]        # the same for view 2
  target1: Mapping[str, jax.Array] | None  # the EMA target's outputs (stop-gradient), or None
  target2: Mapping[str, jax.Array] | None
  w_pred: jax.Array | None                # closed-form predictor W_p [D, D], or None
  # Multi-crop only: the online outputs of the N small crops, {"r": [N, B, F], "z": [N, B, D],
  # "p": [N, B, D]} (their own BatchNorm batch); None in the two-view step.
  small: Mapping[str, jax.Array] | None = None


class StepContext(NamedTuple):
  """What hooks may use of the step: the functional forward and the run length."""
  apply: Callable[..., tuple[dict[str, jax.Array], PyTree]]   # (params, stats, x) -> (out, stats)
  num_steps: int


LossFn = Callable[[LossInputs, Mapping[str, Any]], jax.Array]


def ema_hparams(base: float = 0.99, enabled: bool = True) -> tuple[HParam, ...]:
  """The EMA target's hyperparameters: base rate (cosine-scheduled to 1, BYOL) and on/off."""
  return (HParam("ema.base", base, interval(0.0, 1.0, lo_open=False), sweepable=True, key="ema_base",
                 doc="EMA rate of the target network at step 0 (cosine schedule to 1)"),
          HParam("ema.enabled", enabled, BOOL, doc="keep an EMA target network"))


def predictor_hparams(*, decay: float, eps: float, freq: int | None = None,
                      alpha: float | None = None) -> tuple[HParam, ...]:
  """The closed-form predictor's hyperparameters (`jaxssl.predictors`)."""
  out = [HParam("predictor.decay", decay, interval(0.0, 1.0, lo_open=False),
                doc="weight kept on the old correlation estimate (rho / tau_C)"),
         HParam("predictor.eps", eps, NON_NEGATIVE, doc="added to the normalised eigenvalues")]
  if freq is not None:
    out.append(HParam("predictor.freq", freq, POSITIVE_INT, doc="set W_p every `freq` steps (held in between)"))
  if alpha is not None:
    out.append(HParam("predictor.alpha", alpha, interval(0.0, None), doc="IsoLoss exponent of (n + eps)"))
  return tuple(out)


@dataclasses.dataclass(frozen=True)
class Method:
  """Static description of an SSL method.

  Attributes:
    name: registry name (`config.method`).
    family: "contrastive", "noncontrastive" or "covariance" (for tables and docs).
    loss: the loss hook `(LossInputs, hp) -> scalar` over the global batch.
    hparams: the method's declared hyperparameters (loss, EMA, predictor sections).
    projector: default projector kind ("mlp", "linear", "identity").
    predictor: "mlp" for a trained predictor head in the network (BYOL, SimSiam), else None.
    target: "ema" (EMA target network, switchable by `ema.enabled`), "online" (the online
      network under stop-gradient, SimSiam) or None.
    closed_form: None, or the `predictors` kind of a closed-form predictor
      ("directpred", "directcopy", "halvagal").
    closed_form_timing: "after_update" (W_p set after each optimizer step, Tian et al.) or
      "in_loss" (W_p from the current step's correlation, Halvagal et al.).
    doc: one line for tables and `jaxssl config`.
    multicrop_loss: the loss hook with multi-crop (`LossInputs.small` set; SwAV / DINO pairing,
      `jaxssl.losses.multicrop`), or None: the method refuses `config.data.multicrop_num_small` > 0.
  """
  name: str
  family: str
  loss: LossFn
  hparams: tuple[HParam, ...] = ()
  projector: str = "mlp"
  predictor: str | None = None
  target: str | None = None
  closed_form: str | None = None
  closed_form_timing: str = "after_update"
  doc: str = ""
  multicrop_loss: LossFn | None = None

  # ------------------------------------------------------------------ configuration

  def hparam(self, field: str) -> HParam:
    for h in self.hparams:
      if h.field == field:
        return h
    raise KeyError(field)

  def uses_target(self, cfg: ml_collections.ConfigDict) -> bool:
    """True when the method keeps an EMA target network in this config."""
    return self.target == "ema" and bool(self.hparam("ema.enabled").value(cfg))

  def sweepable(self, cfg: ml_collections.ConfigDict) -> tuple[HParam, ...]:
    """The method's hyperparameters that live as arrays in `state.hparams` for `cfg`."""
    return tuple(h for h in self.hparams if h.sweepable and (h.section != "ema" or self.uses_target(cfg)))

  def static_values(self, cfg: ml_collections.ConfigDict) -> dict[str, Any]:
    """{key: value} of the hyperparameters compiled into the program."""
    return {h.key: h.value(cfg) for h in self.hparams if not h.sweepable}

  def validate(self, cfg: ml_collections.ConfigDict) -> None:
    """ConfigError for an unknown key in a method section or a value outside its constraint."""
    declared: dict[str, set[str]] = {}
    for h in self.hparams:
      declared.setdefault(h.section, set()).add(h.name)
    for section in ("loss", "ema", "predictor"):
      present = set(cfg[section].keys()) if section in cfg and cfg[section] is not None else set()
      unknown = present - declared.get(section, set())
      if unknown:
        known = sorted(declared.get(section, set()))
        raise ConfigError(f"config.{section}.{sorted(unknown)[0]} is not a hyperparameter of method "
                          f"{self.name!r}; its {section} hyperparameters are: {known or 'none'}")
    for h in self.hparams:
      h.check(cfg)

  # ------------------------------------------------------------------ hooks

  def init_extra(self, params: PyTree, batch_stats: PyTree, embed_dim: int,
                 cfg: ml_collections.ConfigDict) -> dict[str, Any]:
    """The method-private state at step 0."""
    extra: dict[str, Any] = {}
    if self.uses_target(cfg):
      extra["target"] = {"params": jax.tree.map(jnp.copy, params),
                         "batch_stats": jax.tree.map(jnp.copy, batch_stats)}
    if self.closed_form:
      extra["predictor"] = predictors.init_predictor_state(embed_dim)
      # DirectPred starts from the identity predictor until the first closed-form update.
      extra["predictor_w"] = jnp.eye(embed_dim, dtype=jnp.float32)
    return extra

  def targets(self, ctx: StepContext, extra: Mapping[str, Any], v1: jax.Array, v2: jax.Array,
              hp: Mapping[str, Any]) -> tuple[tuple[Any, Any], Mapping[str, Any]]:
    """The EMA target's outputs on both views, (None, None) without a target."""
    if "target" not in extra:
      return (None, None), extra
    tgt = extra["target"]
    # The target network only provides regression targets: no gradient flows into it.
    t1, stats = ctx.apply(tgt["params"], tgt["batch_stats"], v1)
    t2, stats = ctx.apply(tgt["params"], stats, v2)
    t1 = jax.tree.map(jax.lax.stop_gradient, t1)
    t2 = jax.tree.map(jax.lax.stop_gradient, t2)
    return (t1, t2), {**extra, "target": {"params": tgt["params"], "batch_stats": stats}}

  def before_loss(self, extra: Mapping[str, Any], out1: Mapping[str, jax.Array],
                  out2: Mapping[str, jax.Array], hp: Mapping[str, Any]) -> tuple[Mapping[str, Any], Any]:
    """Updates the predictor statistics; returns the W_p that the loss uses (or None)."""
    if not self.closed_form:
      return extra, None
    # The predictor statistics are estimated from stop-gradient embeddings: the
    # closed-form predictor is a function of the data, never a path for gradients.
    zs = [jax.lax.stop_gradient(out1["z"]), jax.lax.stop_gradient(out2["z"])]
    mode = "halvagal" if self.closed_form == "halvagal" else "tian"
    pred = predictors.update_correlation(extra["predictor"], zs, decay=hp["decay"], mode=mode)
    extra = {**extra, "predictor": pred}
    if self.closed_form_timing == "in_loss":
      w = predictors.predictor_from_correlation(pred.corr, kind=self.closed_form, eps=hp["eps"],
                                                alpha=hp["alpha"])
      extra = {**extra, "predictor_w": w}
    return extra, extra["predictor_w"]

  def post_update(self, ctx: StepContext, extra: Mapping[str, Any], params: PyTree, step: jax.Array,
                  hp: Mapping[str, Any]) -> Mapping[str, Any]:
    """After the optimizer step: set W_p (Tian et al.), then move the EMA target."""
    if self.closed_form and self.closed_form_timing == "after_update":
      # Tian et al.: W_p from the eigen-decomposition after each optimizer step (every
      # `freq` steps; in between W_p is held).
      w_closed = predictors.predictor_from_correlation(extra["predictor"].corr, kind=self.closed_form,
                                                       eps=hp["eps"])
      w = jnp.where((step % int(hp["freq"])) == 0, w_closed, extra["predictor_w"])
      extra = {**extra, "predictor_w": w}
    if "target" in extra:
      tau = optim.ema_rate(hp["ema_base"], step, ctx.num_steps)
      tgt = extra["target"]
      extra = {**extra, "target": {"params": optim.ema_update(tgt["params"], params, tau),
                                   "batch_stats": tgt["batch_stats"]}}
    return extra
