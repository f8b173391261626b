"""Flax NNX encoders and heads, and the pure functional wrapper the train step uses.

Encoders map float images [B, H, W, C] in [0, 1] to representations r [B, feature_dim]
(float32); every encoder exposes `.feature_dim`. They standardise inputs internally with
the per-channel `mean`/`std` given at construction (a dataset name such as "cifar10" picks
the constants in `DATASET_STATS`; the default is 0.5 / 0.25).

    from flax import nnx
    from jaxssl import models

    enc = models.build_encoder("resnet18", rngs=nnx.Rngs(0), stem="cifar",
                               zero_init_residual=True, mean="cifar10", std="cifar10")
    proj = models.build_head("mlp", enc.feature_dim, 128, rngs=nnx.Rngs(1), hidden_dim=2048)

Functional use (what `jaxssl.state.apply` does): split once into a static graphdef and two state
pytrees, then rebuild the module inside the jitted function:

    graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    params, batch_stats = nnx.to_pure_dict(params), nnx.to_pure_dict(batch_stats)  # optional

    @jax.jit
    def f(params, batch_stats, x):
      y, new_batch_stats = models.apply(graphdef, params, batch_stats, x, train=True)
      ...

`apply` merges (`nnx.merge(graphdef, params, batch_stats, copy=True)`), switches BatchNorm
mode with `Module.train()` / `Module.eval()` (they set `use_running_average`), runs the
module and returns the new batch statistics `nnx.state(m, nnx.BatchStat)` in the same form
(pure dict or `nnx.State`) as given. In eval mode the statistics are returned unchanged.
BatchNorm running averages follow flax: new = momentum * old + (1 - momentum) * batch stat,
with the biased batch variance; jaxssl's default momentum is 0.9 (PyTorch's 0.1).

Sharding: under `jax.jit` with the batch sharded by a `NamedSharding`, BatchNorm means are
over the global batch automatically (GSPMD). Inside `jax.shard_map` / `pmap`, build the model
with `bn_axis_name=<mesh axis>` so that the statistics are `pmean`-ed over that axis.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

import jax
import numpy as np
from flax import nnx

from jaxssl.errors import ConfigError
from jaxssl.models._common import DATASET_STATS
from jaxssl.models.convnet import ConvNet, convnet_small
from jaxssl.models.heads import Identity, MLPHead
from jaxssl.models.linear import LinearHead, LinearPredictor
from jaxssl.models.resnet import BasicBlock, Bottleneck, ResNet, resnet18, resnet34, resnet50

__all__ = [
    "DATASET_STATS", "ENCODERS", "HEADS", "ConvNet", "ResNet", "BasicBlock", "Bottleneck",
    "MLPHead", "LinearHead", "LinearPredictor", "Identity", "build_encoder", "build_head",
    "apply", "count_params",
]

ENCODERS: dict[str, Callable[..., nnx.Module]] = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "convnet_small": convnet_small,
}
_ENCODER_CLASSES = {"resnet18": ResNet, "resnet34": ResNet, "resnet50": ResNet,
                    "convnet_small": ConvNet}
HEADS = ("mlp", "linear", "identity")


def _check_kwargs(what: str, cls, kwargs: Mapping[str, Any], skip=("self", "rngs")) -> None:
  allowed = [p for p in inspect.signature(cls.__init__).parameters if p not in skip]
  bad = sorted(set(kwargs) - set(allowed))
  if bad:
    raise ConfigError(f"{what} got unknown argument(s) {bad}; valid: {allowed}")


def build_encoder(name: str, *, rngs: nnx.Rngs, **kwargs) -> nnx.Module:
  """An encoder by name: "resnet18", "resnet34", "resnet50" or "convnet_small".

  Keyword arguments (all optional): stem ("cifar" | "imagenet", ResNets), zero_init_residual,
  in_channels (ResNets default 3, convnet_small 1), width (multiplier), mean, std (per-channel
  sequences, scalars or a dataset name), dtype (compute dtype), bn_axis_name, bn_momentum;
  convnet_small also takes widths and strides.
  """
  if name not in ENCODERS:
    raise ConfigError(f"unknown encoder {name!r}; valid names: {sorted(ENCODERS)}")
  skip = ("self", "rngs", "stage_sizes", "block")
  _check_kwargs(f"encoder {name!r}", _ENCODER_CLASSES[name], kwargs, skip=skip)
  return ENCODERS[name](rngs=rngs, **kwargs)


def build_head(kind: str, in_dim: int, out_dim: int | None = None, *, rngs: nnx.Rngs,
               **kwargs) -> nnx.Module:
  """A projector / predictor head: "mlp" (`MLPHead`; kwargs hidden_dim, num_layers, bn_hidden,
  bn_last, bn_last_affine, use_bias, dtype, bn_axis_name, ...), "linear" (`LinearHead`; kwargs
  use_bias, dtype) or "identity" (out_dim must be None or in_dim)."""
  if kind not in HEADS:
    raise ConfigError(f"unknown head kind {kind!r}; valid kinds: {list(HEADS)}")
  if kind == "identity":
    if out_dim is not None and int(out_dim) != int(in_dim):
      raise ConfigError(f"an identity head keeps the dimension: out_dim={out_dim} != in_dim={in_dim}")
    kwargs.pop("dtype", None)
    _check_kwargs("identity head", Identity, kwargs, skip=("self", "dim"))
    return Identity(in_dim)
  if out_dim is None:
    raise ConfigError(f"a {kind!r} head needs out_dim")
  if kind == "linear":
    _check_kwargs("linear head", LinearHead, kwargs, skip=("self", "rngs", "in_dim", "out_dim"))
    return LinearHead(in_dim, out_dim, rngs=rngs, **kwargs)
  kwargs = dict(kwargs)
  hidden = kwargs.pop("hidden_dim", None)
  if hidden is None:
    hidden = max(int(in_dim), int(out_dim))
  _check_kwargs("mlp head", MLPHead, kwargs, skip=("self", "rngs", "in_dim", "out_dim", "hidden_dim"))
  return MLPHead(in_dim, hidden, out_dim, rngs=rngs, **kwargs)


def apply(graphdef: nnx.GraphDef, params: Any, batch_stats: Any, x: Any, *,
          train: bool, method: str | None = None) -> tuple[Any, Any]:
  """Pure forward pass: (y, new_batch_stats) of the module `graphdef` with the given state.

  `params` / `batch_stats` are the `nnx.Param` / `nnx.BatchStat` states of `nnx.split` (as
  `nnx.State` or `nnx.to_pure_dict` dicts). train=True uses batch statistics and returns the
  updated running averages; train=False uses the running averages and returns `batch_stats`
  unchanged. `method` names another method of the module to call instead of
  `__call__` (e.g. "encode"). Safe under jit, grad, vmap and shard_map.
  """
  m = nnx.merge(graphdef, params, batch_stats, copy=True)
  if train:
    m.train()
  else:
    m.eval()
  y = getattr(m, method)(x) if method else m(x)
  if not train:
    return y, batch_stats
  new = nnx.state(m, nnx.BatchStat)
  if not isinstance(batch_stats, nnx.State):
    new = nnx.to_pure_dict(new)
  return y, new


def count_params(tree_or_module: Any) -> int:
  """Number of parameters (array elements) of a module's nnx.Param state or of a pytree.

  Works on abstract modules from `nnx.eval_shape` (no compute)."""
  if isinstance(tree_or_module, nnx.Module):
    tree_or_module = nnx.state(tree_or_module, nnx.Param)
  return int(sum(int(np.prod(getattr(v, "shape", ()))) for v in jax.tree.leaves(tree_or_module)))
