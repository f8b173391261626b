"""Batched hyperparameter sweeps: K models trained at once in one compiled program.

`jaxssl sweep --config CFG --sweep 'loss.temperature=0.1,0.2' --sweep 'optim.lr=1e-3,3e-3'`
trains the Cartesian product of the values. The pure train step is `jax.vmap`-ed over a
leading *member* axis of the train state: parameters, optimizer state, BatchNorm
statistics, EMA targets and predictor states are per member, and so are the
hyperparameters, which live in `state.hparams` as traced arrays (the learning rate is a
unit schedule times the traced peak, as in big_vision). All members share each input
batch; member i draws its augmentations from stream i (`config.train.aug_stream`), so a
single run with that stream and that member's hyperparameters reproduces it exactly.

The member axis can be sharded over devices (`config.mesh.member_devices`), combined with
data parallelism over the remaining devices on a 2-D ("member", "data") mesh.
"""
from __future__ import annotations

import csv
import itertools
import json
import os
from typing import Any, Sequence

import ml_collections

from jaxssl.errors import ConfigError

# config field -> name in state.hparams
SWEEPABLE = {
    "optim.lr": "lr",
    "optim.weight_decay": "weight_decay",
    "ema.base": "ema_base",
    **{f"loss.{k}": k for k in ("temperature", "t", "gamma", "alpha", "sim", "var", "cov", "lambd")},
}


def parse_sweep(specs: Sequence[str]) -> list[tuple[str, list[float]]]:
  """Parses ['loss.temperature=0.1,0.2', ...] into [(field, values), ...]."""
  out = []
  for spec in specs:
    if "=" not in spec:
      raise ConfigError(f"--sweep {spec!r} must look like 'loss.temperature=0.1,0.2,0.5'")
    field, text = spec.split("=", 1)
    field = field.strip()
    field = field[len("config."):] if field.startswith("config.") else field
    if field not in SWEEPABLE:
      raise ConfigError(
          f"--sweep {field}: not sweepable in one compiled program (it changes the architecture, "
          f"data or program structure). Sweepable fields: {', '.join(sorted(SWEEPABLE))}. "
          "Run separate jobs for other fields.")
    try:
      values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
      raise ConfigError(f"--sweep {field}: values must be numbers, got {text!r}") from None
    if not values:
      raise ConfigError(f"--sweep {field}: no values given")
    if any(f == field for f, _ in out):
      raise ConfigError(f"--sweep {field} given twice")
    out.append((field, values))
  if not out:
    raise ConfigError("jaxssl sweep needs at least one --sweep 'field=v1,v2,...'")
  return out


def members_from_sweep(cfg: ml_collections.ConfigDict, sweep: list[tuple[str, list[float]]]) -> list[dict[str, float]]:
  """The Cartesian product as a list of {config field: value}; validated against cfg."""
  from jaxssl import config as config_lib
  from jaxssl import train
  hp_names = set(train.initial_hparams(cfg))
  for field, values in sweep:
    if SWEEPABLE[field] not in hp_names:
      raise ConfigError(f"--sweep {field}: method {cfg.method!r} has no such hyperparameter "
                        f"(its sweepable ones: {sorted(k for k, v in SWEEPABLE.items() if v in hp_names)})")
    for v in values:  # validate each value as if it were set in the config
      trial = ml_collections.ConfigDict(cfg.to_dict())
      config_lib.set_field(trial, field, v)
      config_lib.validate_config(trial)
  fields = [f for f, _ in sweep]
  return [dict(zip(fields, combo)) for combo in itertools.product(*[v for _, v in sweep])]


def member_config(cfg: ml_collections.ConfigDict, member: dict[str, float], index: int) -> ml_collections.ConfigDict:
  """The single-run config equivalent to sweep member `index`."""
  from jaxssl import config as config_lib
  c = ml_collections.ConfigDict(cfg.to_dict())
  for field, v in member.items():
    config_lib.set_field(c, field, v)
  config_lib.set_field(c, "train.aug_stream", index)
  return c


def run_sweep(cfg: ml_collections.ConfigDict, specs: Sequence[str], workdir: str, *, resume: bool = False,
              evaluate_at_end: bool = True) -> dict[str, Any]:
  from jaxssl import train
  members = members_from_sweep(cfg, parse_sweep(specs))
  summary = train.train(cfg, workdir, resume=resume, evaluate_at_end=evaluate_at_end, members=members)
  if "interrupted" not in summary:
    write_summary(workdir, members, summary.get("member_results", []))
  return summary


def write_summary(workdir: str, members: list[dict[str, float]], results: list[dict[str, Any]]) -> list[str]:
  """summary.csv, summary.md and plots of accuracy/uniformity/tolerance/effective rank vs the swept value."""
  rows = []
  for i, (m, r) in enumerate(zip(members, results)):
    row = {"member": i, **m}
    # The member's own evaluation ("model") becomes top-level columns: linear_probe, knn_200, ...
    row.update(_flatten({k: v for k, v in r.items() if k not in ("model", "hparams", "member")}))
    row.update(_flatten(r.get("model", {})))
    rows.append(row)
  if not rows:
    return []
  keys = list(dict.fromkeys(k for row in rows for k in row))
  paths = [os.path.join(workdir, "summary.csv"), os.path.join(workdir, "summary.md")]
  with open(paths[0], "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
  with open(paths[1], "w") as f:
    f.write("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys) + "\n")
    for row in rows:
      f.write("| " + " | ".join(_fmt(row.get(k, "")) for k in keys) + " |\n")
  swept = list(members[0].keys())
  if len(swept) == 1:
    from jaxssl import plots
    y_keys = [k for k in ("linear_probe", "knn_200", "uniformity_z", "tolerance_z", "effective_rank_z")
              if any(k in row for row in rows)]
    if y_keys:
      paths.append(plots.plot_sweep(rows, swept[0], y_keys, os.path.join(workdir, "sweep.png"),
                                    logx=swept[0] in ("optim.lr", "optim.weight_decay")))
  return paths


def _flatten(r: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in r.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}_"))
    elif isinstance(v, (int, float)):
      out[f"{prefix}{k}"] = v
    elif k == "eval_error":    # a member whose evaluation failed says why in its row
      out[f"{prefix}{k}"] = str(v).replace("|", "/").replace("\n", " ")
  return out


def _fmt(v: Any) -> str:
  return f"{v:.4g}" if isinstance(v, float) else str(v)
