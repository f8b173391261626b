"""Batched hyperparameter sweeps: K models trained at once, on the same input batches.

`jaxssl sweep --config CFG --sweep 'loss.temperature=0.1,0.2' --sweep 'optim.lr=1e-3,3e-3'`
trains the Cartesian product of the values. The members' state has a leading *member*
axis (stacked): parameters, optimizer state, BatchNorm statistics and
the method's `extra` (EMA target, predictor statistics) are per member, and so are the
hyperparameters, which live in `state.hparams` as traced arrays. All members share each
input batch; member i draws its augmentations from stream i (`config.train.aug_stream`),
so a single run with that stream and that member's hyperparameters reproduces it.

Here: the member configs, stacking, per-member records, per-member outputs and the
summary. How members are stepped (`config.mesh.member_mode`: the single-run step compiled
once and called per member, the CPU default; or one program mapping all members, vmapped or
unrolled in chunks, whose member axis can be sharded over devices with
`config.mesh.member_devices` on a 2-D ("member", "data") mesh) is `jaxssl.member_step`,
re-exported here.
"""
from __future__ import annotations

import csv
import itertools
import json
import os
from typing import Any, Callable, Sequence

import jax
import ml_collections
import numpy as np

from jaxssl import checkpoint as ckpt_lib
from jaxssl import config as config_lib
from jaxssl import plots
from jaxssl.errors import ConfigError, DataError
from jaxssl.methods import METHODS
from jaxssl.state import ENGINE_SWEEPABLE, TrainState, initial_hparams, sweepable_fields
from jaxssl.step import DIAGNOSTIC_KEYS
# How members are stepped lives in jaxssl.member_step; these names are part of the sweep API.
from jaxssl.member_step import (MEMBER_MODES, MemberStates, SequentialMemberStep, StackedCheckpoints,  # noqa: F401
                                jit_member_step, make_member_mesh, make_sweep_mesh, member_axes, member_chunk,
                                member_keys_fn, member_mode, split_members, stacked_state, unstack_member)

Member = dict[str, float]

# Every field that some method may sweep (which ones a config has: `state.sweepable_fields`).
ALL_SWEEPABLE: frozenset[str] = frozenset(
    [*ENGINE_SWEEPABLE, *(h.field for m in METHODS.values() for h in m.hparams if h.sweepable)])


def parse_sweep(specs: Sequence[str]) -> list[tuple[str, list[float]]]:
  """Parses ['loss.temperature=0.1,0.2', ...] into [(field, values), ...]."""
  out = []
  for spec in specs:
    if "=" not in spec:
      raise ConfigError(f"--sweep {spec!r} must look like 'loss.temperature=0.1,0.2,0.5'")
    field, text = spec.split("=", 1)
    field = field.strip()
    field = field[len("config."):] if field.startswith("config.") else field
    if field not in ALL_SWEEPABLE:
      raise ConfigError(
          f"--sweep {field}: not sweepable in one compiled program (it changes the architecture, "
          f"data or program structure). Sweepable fields: {', '.join(sorted(ALL_SWEEPABLE))}. "
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


def members_from_sweep(cfg: ml_collections.ConfigDict, sweep: list[tuple[str, list[float]]]) -> list[Member]:
  """The Cartesian product as a list of {config field: value}; validated against cfg."""
  fields = sweepable_fields(cfg)
  for field, values in sweep:
    if field not in fields:
      raise ConfigError(f"--sweep {field}: method {cfg.method!r} has no such hyperparameter "
                        f"(its sweepable ones: {sorted(fields)})")
    for v in values:  # validate each value as if it were set in the config
      trial = ml_collections.ConfigDict(cfg.to_dict())
      config_lib.set_field(trial, field, v)
      config_lib.validate_config(trial)
  names = [f for f, _ in sweep]
  return [dict(zip(names, combo)) for combo in itertools.product(*[v for _, v in sweep])]


def member_config(cfg: ml_collections.ConfigDict, member: Member, index: int) -> ml_collections.ConfigDict:
  """The single-run config equivalent to sweep member `index`."""
  c = ml_collections.ConfigDict(cfg.to_dict())
  for field, v in member.items():
    config_lib.set_field(c, field, v)
  config_lib.set_field(c, "train.aug_stream", index)
  return c


def check_resume_members(workdir: str, members: list[Member] | None) -> None:
  """ConfigError when a resumed sweep's members differ from the ones it was started with
  (the restored state would train the old values under the new labels)."""
  path = os.path.join(workdir, "members.json")
  saved = json.load(open(path)) if os.path.exists(path) else None
  if members is None and saved is None:
    return
  if members is None:
    raise ConfigError(f"{workdir!r} is a sweep directory; resume it with `jaxssl sweep --resume` and its "
                      "--sweep values, or train one member from members/<i>.")
  if saved is None:
    raise ConfigError(f"{workdir!r} holds a single run, not a sweep; resume it with `jaxssl train --resume`.")
  if [dict(m) for m in saved] != [dict(m) for m in members]:
    raise ConfigError(f"--resume: the --sweep values give members {members}, but the sweep in {workdir} was "
                      f"started with {saved}. Resume with the same --sweep values, or use a new --workdir.")


def check_sweep_config(cfg: ml_collections.ConfigDict) -> None:
  if cfg.train.nonfinite_policy == "rollback":
    raise ConfigError("config.train.nonfinite_policy='rollback' is not supported in a sweep (one "
                      "member's rollback would move all of them); use 'stop' or 'skip'.")


# ----------------------------------------------------------------------------- stacked state

def stack_members(cfg: ml_collections.ConfigDict, state: TrainState, members: list[Member]) -> TrainState:
  """K copies of `state` along a new leading member axis, with per-member hyperparameters.

  All members start from the same initial parameters (common random numbers make
  hyperparameter comparisons less noisy); they differ in hyperparameters and in their
  augmentation stream.

  The stacked state is built on the host (NumPy leaves; no device program to compile): the
  caller puts it on the devices (`jax.device_put`) or splits it (`split_members`).
  """
  k = len(members)
  hps = [initial_hparams(member_config(cfg, m, i)) for i, m in enumerate(members)]
  host = jax.device_get(state.replace(step=None))
  stacked = jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (k,) + np.shape(x)).copy(), host)
  hparams = {name: np.asarray([np.asarray(h[name]) for h in hps], np.float32) for name in hps[0]}
  return stacked.replace(step=np.asarray(jax.device_get(state.step)), hparams=hparams)


# ----------------------------------------------------------------------------- records and outputs

def run_records(m: dict[str, Any], step: int, ips: float, diag_step: bool,
                prefix: dict[str, Any] | None = None) -> dict[str, Any]:
  """One metrics.jsonl record of a single run's (or one member's) host metrics."""
  rec = {**(prefix or {}), "step": step, **{k: float(v) for k, v in m.items() if np.ndim(v) == 0},
         "images_per_sec": ips}
  if diag_step:
    rec["spectrum_z"] = np.asarray(m["spectrum_z"]).tolist()
    rec["spectrum_r"] = np.asarray(m["spectrum_r"]).tolist()
  else:  # not a diagnostics step: drop the zero placeholders
    for k in DIAGNOSTIC_KEYS:
      rec.pop(k, None)
  return rec


def member_records_fn(members: list[Member]) -> Callable[[Any, int, float, bool], list[dict[str, Any]]]:
  """records_fn for the loop: one record per member, with its hyperparameters."""
  def records(m, step, ips, diag_step):
    return [run_records(jax.tree.map(lambda x: x[i], m), step, ips, diag_step,
                        prefix={"member": i, **{f"hp/{k}": v for k, v in member.items()}})
            for i, member in enumerate(members)]
  return records


def member_hparams(member: Member, last: dict[str, Any], result: dict[str, Any]
                   ) -> tuple[dict[str, float], dict[str, float]]:
  """(hyperparameters, final metrics) of a member's TensorBoard hparams summary.

  The hyperparameters are the member's swept values ({"optim.lr": 1e-3}); the metrics its last
  logged loss (`last`, its last metrics.jsonl record) and, when it was evaluated (`result`, its
  results.json), the linear probe and the kNN accuracies, as "hparam/<name>" (tags the run
  has nowhere else).
  """
  metrics = {"hparam/loss": last["loss"]} if isinstance(last.get("loss"), (int, float)) else {}
  for k, v in result.get("model", {}).items():
    if (k == "linear_probe" or k.startswith("knn_")) and isinstance(v, (int, float)):
      metrics[f"hparam/{k}"] = float(v)
  return {k: float(v) for k, v in member.items()}, metrics


def describe_member_failure(metrics: Any) -> str:
  finite = np.asarray(metrics["loss_finite"]) & np.asarray(metrics["grad_finite"])
  return f" (member {int(np.argmin(finite.reshape(-1)))})"


def finish_members(cfg: ml_collections.ConfigDict, state: TrainState, members: list[Member], workdir: str,
                   evaluate_member: Callable[[str, ml_collections.ConfigDict, TrainState], dict] | None
                   ) -> list[dict[str, Any]]:
  """Per-member outputs in members/<i>/: config.json, a final checkpoint, results.json.

  `evaluate_member(member_dir, member_cfg, member_state)` (None: no evaluation) may raise
  DataError for one diverged member (e.g. non-finite features under 'skip'): that member
  gets an `eval_error`, the others keep their evaluation.
  """
  results = []
  host_state = jax.device_get(state)
  for i, m in enumerate(members):
    mdir = os.path.join(workdir, "members", str(i))
    os.makedirs(mdir, exist_ok=True)
    mcfg = member_config(cfg, m, i)
    with open(os.path.join(mdir, "config.json"), "w") as f:
      f.write(config_lib.to_json(mcfg))
    mstate = unstack_member(host_state, i)
    ck = ckpt_lib.Checkpointer(os.path.join(mdir, "checkpoints"), keep=1,
                               fingerprint=ckpt_lib.fingerprint(mcfg, mstate))
    ck.save(int(host_state.step), mstate, {"step": int(host_state.step), "member": i, "hparams": m})
    ck.wait()
    res: dict[str, Any] = {"member": i, "hparams": m}
    if evaluate_member is not None:
      try:
        res.update(evaluate_member(mdir, mcfg, mstate))
      except DataError as e:
        res["eval_error"] = str(e)
        print(f"member {i} ({m}): evaluation failed: {e}", flush=True)
    results.append(res)
    with open(os.path.join(mdir, "results.json"), "w") as f:
      json.dump(res, f, indent=2)
  return results


# --sweep ... --select CRITERION: the results key it reads (the backbone features r, which
# downstream tasks use) and whether larger is better. alpha-ReQ is best near 1 (Agrawal et al.).
SELECTION_CRITERIA: dict[str, tuple[str, str]] = {
    "rankme": ("rankme_r", "max"), "lidar": ("lidar_r", "max"), "alpha_req": ("alpha_req_r", "near_1"),
    "linear_probe": ("linear_probe", "max")}


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
  """Spearman's rank correlation (average ranks for ties); NaN for fewer than 3 finite pairs."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  ok = np.isfinite(x) & np.isfinite(y)
  if ok.sum() < 3:
    return float("nan")
  rx, ry = (_ranks(v[ok]) for v in (x, y))
  if rx.std() == 0 or ry.std() == 0:
    return float("nan")
  return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(v: np.ndarray) -> np.ndarray:
  order = np.argsort(v, kind="stable")
  ranks = np.empty(len(v))
  ranks[order] = np.arange(len(v), dtype=np.float64)
  for value in np.unique(v):      # ties share their average rank
    tie = v == value
    ranks[tie] = ranks[tie].mean()
  return ranks


def criterion_score(criterion: str, value: float | None) -> float:
  """The order `--select criterion` ranks by, larger first: the value, or -|value - 1| for a
  criterion best near 1 (alpha-ReQ); a missing or non-finite value scores -inf (ranks last)."""
  _, better = SELECTION_CRITERIA[criterion]
  if value is None or not np.isfinite(value):
    return -np.inf
  return -abs(value - 1.0) if better == "near_1" else float(value)


def select_member(results: list[dict[str, Any]], criterion: str) -> dict[str, Any]:
  """The member chosen by `criterion` and every member's criteria, best first.

  Returns {"criterion", "key", "chosen_member", "ranking": [member, ...], "members": [...],
  "spearman_vs_linear_probe": {criterion key: rho}}. Members without the criterion (a failed
  evaluation) rank last.
  """
  if criterion not in SELECTION_CRITERIA:
    raise ConfigError(f"--select {criterion!r}; use one of {', '.join(SELECTION_CRITERIA)}")
  key, _ = SELECTION_CRITERIA[criterion]
  rows = []
  for r in results:
    model = r.get("model", {})
    rows.append({"member": r["member"], "hparams": r["hparams"],
                 **{k: model.get(k) for k, _ in SELECTION_CRITERIA.values()}})

  ranking = sorted(rows, key=lambda row: criterion_score(criterion, row.get(key)), reverse=True)
  probe = [row.get("linear_probe") for row in rows]
  rho = {k: spearman([row.get(k) if row.get(k) is not None else np.nan for row in rows],
                     [p if p is not None else np.nan for p in probe])
         for k, _ in SELECTION_CRITERIA.values() if k != "linear_probe"}
  return {"criterion": criterion, "key": key, "chosen_member": ranking[0]["member"],
          "ranking": [row["member"] for row in ranking], "members": rows, "spearman_vs_linear_probe": rho}


def write_selection(workdir: str, results: list[dict[str, Any]], criterion: str) -> dict[str, Any]:
  """selection.json and selection.png (each label-free criterion vs the linear probe)."""
  sel = select_member(results, criterion)
  with open(os.path.join(workdir, "selection.json"), "w") as f:
    json.dump(sel, f, indent=2)
  keys = [k for k in sel["spearman_vs_linear_probe"] if any(row.get(k) is not None for row in sel["members"])]
  if keys and any(row.get("linear_probe") is not None for row in sel["members"]):
    plots.plot_criteria_vs_probe(sel["members"], keys, os.path.join(workdir, "selection.png"),
                                 rho=sel["spearman_vs_linear_probe"])
  return sel


def write_summary(workdir: str, members: list[Member], results: list[dict[str, Any]],
                  order: Sequence[int] | None = None) -> list[str]:
  """summary.csv, summary.md and plots of accuracy/uniformity/tolerance/effective rank vs the swept value.

  `order` (member indices, e.g. a selection's ranking) sets the row order of summary.md.
  """
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
    for row in ([rows[i] for i in order] if order is not None else rows):
      f.write("| " + " | ".join(_fmt(row.get(k, "")) for k in keys) + " |\n")
  swept = list(members[0].keys())
  if len(swept) == 1:
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
