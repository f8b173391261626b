"""Shared pieces of the paper-reproduction scripts (dimensional_collapse.py,
contrastive_batch_size.py, noncontrastive.py): the config builder, running one model or
one batched sweep and returning its result rows, reading the spectrum history from a
run's metrics.jsonl, markdown tables, and the spectrum / curve figures.

Every script takes --out, --steps, --batch, --probe-epochs and --quick (a smoke run with
the tiny network of `jaxssl.config.shrink_to_tiny_model`). A run whose workdir already has an
evaluation (eval.json, or members/<i>/results.json for a sweep) is not retrained: its
stored results are reused, so an interrupted full-size script can simply be started
again with the same --out (a workdir with checkpoints but no evaluation is resumed).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Any, Mapping, Sequence

from jaxssl import plots, run, sweep
from jaxssl.errors import NumericalError

HERE = os.path.dirname(os.path.abspath(__file__))
COLUMNS = ("linear_probe", "knn_200", "uniformity_z", "tolerance_z", "effective_rank_z", "effective_rank_r")
# Every result row also carries the RMS norm of z (`diagnostics.embedding_norm`; NaN for an
# evaluation made before it existed): a collapse to zero (Bao) leaves the effective rank intact.
ROW_METRICS = COLUMNS + ("norm_z",)
# A run counts as collapsed when its projector output z spans fewer than this many
# effective dimensions (exp of the spectral entropy; 1 = everything on one line).
COLLAPSE_ERANK = 2.0


def add_common_args(ap, *, steps: int, batch: int = 256, probe_epochs: int = 30) -> None:
  ap.add_argument("--steps", type=int, default=steps)
  ap.add_argument("--batch", type=int, default=batch)
  ap.add_argument("--probe-epochs", type=int, default=probe_epochs)
  ap.add_argument("--quick", action="store_true",
                  help="smoke run: 16 steps, batch 32, 1 probe epoch, tiny 4/8-channel ConvNet")


def reject_repeated_seeds(ap, flag: str, seeds: Sequence[int]) -> None:
  """ap.error when a seed of `flag`'s list is given twice (it would train the same run twice)."""
  if len(set(seeds)) != len(seeds):
    ap.error(f"{flag}: a seed is given twice: {list(seeds)}")


def resolve_seeds(ap, args) -> list[int]:
  """The --seeds of a seeded script: as given, else 0,1,2 (--quick: 0,1); ap.error on a repeated seed."""
  seeds = args.seeds if args.seeds is not None else ([0, 1] if args.quick else [0, 1, 2])
  reject_repeated_seeds(ap, "--seeds", seeds)
  return list(seeds)


def replot(out_dir: str, write_outputs) -> int:
  """--replot: rebuilds a script's outputs from <out_dir>/results.json with its `write_outputs`."""
  with open(os.path.join(out_dir, "results.json")) as f:
    write_outputs(json.load(f), out_dir)
  return 0


def apply_quick(args) -> None:
  if args.quick:
    args.steps, args.batch, args.probe_epochs = 16, 32, 1


def _number_list(text: str, kind: type) -> list:
  try:
    values = [kind(v) for v in text.split(",") if v.strip()]
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__}s, got {text!r}") from None
  if not values:
    raise argparse.ArgumentTypeError(f"expected at least one {kind.__name__}, got {text!r}")
  return values


def floats(text: str) -> list[float]:
  """argparse type: a non-empty comma-separated list of numbers ("0.1,0.5")."""
  return _number_list(text, float)


def ints(text: str) -> list[int]:
  """argparse type: a non-empty comma-separated list of integers ("32,64")."""
  return _number_list(text, int)


# Fashion-MNIST recipe values before issue 19's tuning (docs/methods.md), which the committed
# results of these scripts used; `make_config` applies them before the script's own overrides.
RECIPES_OF_THE_COMMITTED_RESULTS = {
    # crop_scale None: the fmnist preset's (0.2, 1), which the simclr recipe replaced with (0.4, 1).
    "simclr": {"optim.lr": 1e-3, "data.crop_scale": None},
    "isoloss": {"ema.enabled": False, "predictor.decay": 0.5, "predictor.eps": 0.1},
}


def make_config(config_name: str, args, /, **overrides):
  """experiments/configs/<config_name>.py's Fashion-MNIST config with the script's steps / batch / probe epochs.

  With --quick the network is `jaxssl.config.shrink_to_tiny_model`'s (the tests' tiny
  ConvNet, 8-d representation, small heads, 4-d DirectCLR sub-vector).
  `overrides` are {dotted config field: value} applied last (with set_field's type check),
  e.g. {"loss.kind": "l2"}; the result is validated.
  """
  from jaxssl import config as config_lib
  cfg = config_lib.load_config(os.path.join(HERE, "configs", f"{config_name}.py"))
  cfg.train.num_steps = args.steps
  cfg.optim.warmup_steps = max(1, args.steps // 10)
  cfg.train.log_every = max(1, args.steps // 10)
  cfg.train.checkpoint_every = max(1, args.steps // 2)
  cfg.data.batch_size = args.batch
  cfg.eval.probe_epochs = args.probe_epochs
  cfg.eval.baselines = False
  # The kNN these scripts' committed results were computed with (issue 19 changed the default
  # to standardised features with T = 0.02), and the recipe values issue 19 retuned: a rerun
  # reproduces the committed results.
  cfg.eval.knn_transform = "none"
  cfg.eval.knn_temperature = 0.1
  for field, value in RECIPES_OF_THE_COMMITTED_RESULTS.get(config_name, {}).items():
    config_lib.set_field(cfg, field, value)
  if args.quick:
    config_lib.shrink_to_tiny_model(cfg)
  for field, value in overrides.items():
    set_override(cfg, field, value)
  config_lib.validate_config(cfg)
  return cfg


def set_override(cfg, field: str, value) -> None:
  """Sets a dotted config field; a head spec (model.projector / model.predictor, a dict) is
  replaced as a whole."""
  from jaxssl import config as config_lib
  if field in ("model.projector", "model.predictor"):
    cfg.model[field.split(".")[1]] = dict(value)
  else:
    config_lib.set_field(cfg, field, value)


def recipe_config(method: str, *, seed: int, steps: int, log_every: int, checkpoint_every: int, quick: bool):
  """experiments/configs/<method>.py's Fashion-MNIST recipe as it stands now (unlike
  `make_config`, nothing pinned) for `steps`, with the recipe's warm-up capped at steps/10;
  `quick`: the tiny network of `jaxssl.config.shrink_to_tiny_model`."""
  from jaxssl import config as config_lib
  cfg = config_lib.load_config(os.path.join(HERE, "configs", f"{method}.py"))
  cfg.seed = int(seed)
  cfg.train.num_steps = int(steps)
  cfg.optim.warmup_steps = min(int(cfg.optim.warmup_steps), max(1, steps // 10))
  cfg.train.log_every = int(log_every)
  cfg.train.checkpoint_every = int(checkpoint_every)
  if quick:
    config_lib.shrink_to_tiny_model(cfg)
  return cfg


def _row(model: Mapping[str, Any], extra: Mapping[str, Any], metrics: Sequence[str] = ROW_METRICS) -> dict[str, Any]:
  return {**extra, **{k: float(model.get(k, math.nan)) for k in metrics}}


def run_one(cfg, workdir: str, **extra) -> dict[str, Any]:
  """Trains + evaluates one model; returns {**extra, linear_probe, knn_200, ..., seconds, workdir}.

  A non-finite loss (NumericalError) does not stop the script: the row gets NaN metrics
  and an "error" entry."""
  t0 = time.time()
  done = os.path.join(workdir, "eval.json")
  if os.path.exists(done):
    with open(done) as f:
      model = json.load(f)["model"]
    print(f"[reuse] {workdir}", flush=True)
    return {**_row(model, extra), "seconds": 0.0, "workdir": workdir}
  resume = os.path.isdir(os.path.join(workdir, "checkpoints")) and bool(os.listdir(os.path.join(workdir, "checkpoints")))
  try:
    out = run.train(cfg, workdir, resume=resume, evaluate_at_end=True)
  except NumericalError as e:
    print(f"[diverged] {workdir}: {e}", flush=True)
    return {**_row({}, extra), "error": str(e).split(";")[0], "seconds": time.time() - t0, "workdir": workdir}
  stop_if_interrupted(out, workdir)
  return {**_row(out["eval"]["model"], extra), "seconds": time.time() - t0, "workdir": workdir}


def finished_seed_rows(out_dir: str, settings: Mapping[str, Any], seeds: Sequence[int]) -> dict[int, list[dict]]:
  """The rows of <out_dir>/results.json, per seed in `seeds`, for a later start that adds seeds.

  A seeded script's workdirs (runs/...) need not outlive the session that trained them, but its
  results.json does (it is committed): a start with one more seed then reuses the finished
  seeds' rows instead of training them again. Returned only when the file records every key of
  `settings` (steps, batch, grids, ...) with this start's value; {} otherwise (then every seed
  trains).
  """
  path = os.path.join(out_dir, "results.json")
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    prior = json.load(f)
  if any(prior.get(k) != (list(v) if isinstance(v, tuple) else v) for k, v in settings.items()):
    print(f"[retrain] {path} was made with other settings than this start's", flush=True)
    return {}
  rows: dict[int, list[dict]] = {}
  for r in prior.get("rows", []):
    if r.get("seed") in seeds:
      rows.setdefault(int(r["seed"]), []).append(r)
  return rows


def stop_if_interrupted(out: Mapping[str, Any], workdir: str) -> None:
  """Ends the script when `run.train` / `run.sweep` returned after a signal (`out["interrupted"]`).

  The run saved a checkpoint and the rows written so far stay: a later start of the same
  command resumes this run (its checkpoints are found) instead of reading an evaluation
  that was never made."""
  if out.get("interrupted"):
    sys.exit(f"stopped by {out['interrupted']} during {workdir}; rerun the same command to continue")


def record_wall_time(row: dict[str, Any], workdir: str) -> None:
  """Keeps a run's training + evaluation wall time in <workdir>/wall_seconds.json: written when
  `row` (from `run_one`) was trained now, read back into row["seconds"] when it was reused."""
  path = os.path.join(workdir, "wall_seconds.json")
  if row["seconds"] > 0 and "error" not in row:
    with open(path, "w") as f:
      json.dump({"seconds": row["seconds"]}, f)
  elif os.path.exists(path):
    with open(path) as f:
      row["seconds"] = float(json.load(f)["seconds"])


def run_sweep(cfg, workdir: str, field: str, values: Sequence[float], key: str | None = None,
              **extra) -> list[dict[str, Any]]:
  """Trains len(values) models at once (`jaxssl.sweep`, one compiled program) over the
  sweepable `field`; returns one row per member: {**extra, key: value, member, metrics...}."""
  return run_grid(cfg, workdir, [(field, list(values))], keys={field: key or field.split(".")[-1]}, **extra)


def run_grid(cfg, workdir: str, grid: Sequence[tuple[str, Sequence[float]]], *,
             keys: Mapping[str, str] | None = None, metrics: Sequence[str] = ROW_METRICS,
             **extra) -> list[dict[str, Any]]:
  """One batched sweep over the Cartesian product of `grid` ([(sweepable field, values)]).

  Returns one row per member: {**extra, <key of each field>: value, "member", <metrics>,
  "seconds", "workdir"}; a field's key is `keys[field]` or its last dotted part. A sweep whose
  members all have results.json is reused; one with checkpoints is resumed.
  """
  keys = {f: (keys or {}).get(f) or f.split(".")[-1] for f, _ in grid}
  members = sweep.members_from_sweep(cfg, [(f, list(v)) for f, v in grid])
  t0 = time.time()
  done = [os.path.join(workdir, "members", str(i), "results.json") for i in range(len(members))]
  reused = all(os.path.exists(p) for p in done) and all("model" in json.load(open(p)) for p in done)
  if reused:
    print(f"[reuse] {workdir}", flush=True)
    results = [json.load(open(p)) for p in done]
  else:
    ck = os.path.join(workdir, "checkpoints")
    resume = os.path.isdir(ck) and bool(os.listdir(ck))
    try:
      out = run.sweep(cfg, members, workdir, resume=resume, evaluate_at_end=True)
    except NumericalError as e:
      print(f"[diverged] {workdir}: {e}", flush=True)
      return [{**_row({}, extra, metrics), **{keys[f]: m[f] for f in m}, "member": i,
               "error": str(e).split(";")[0], "seconds": time.time() - t0, "workdir": workdir}
              for i, m in enumerate(members)]
    stop_if_interrupted(out, workdir)
    results = out["member_results"]
  secs = 0.0 if reused else time.time() - t0
  timing = {"seconds": secs}
  record_wall_time(timing, workdir)    # a reused sweep reports the time it took when it was trained
  secs = timing["seconds"]
  # A member whose evaluation failed (jaxssl.sweep records "eval_error") gets NaN metrics.
  return [{**_row(r.get("model", {}), extra, metrics), **{keys[f]: m[f] for f in m}, "member": i,
           "seconds": secs, "workdir": workdir, **({"error": r["eval_error"]} if "eval_error" in r else {})}
          for i, (m, r) in enumerate(zip(members, results))]


def spectrum_history(workdir: str, member: int | None = None) -> list[dict[str, Any]]:
  """The logged diagnostics of a run (or of sweep member `member`), sorted by step:
  [{"step", "spectrum_z", "spectrum_r", "effective_rank_z", "effective_rank_r", ...}]."""
  from jaxssl.logging_utils import read_metrics
  recs = [r for r in read_metrics(workdir) if "spectrum_z" in r and r.get("member") == member]
  by_step = {int(r["step"]): r for r in recs}   # a resumed run may log a step twice: keep the last
  return [by_step[s] for s in sorted(by_step)]


def final_spectra(workdir: str, member: int | None = None) -> dict[str, list[float]]:
  """{"spectrum_z", "spectrum_r", "step"} at the last logged diagnostics step ({} if none)."""
  hist = spectrum_history(workdir, member)
  if not hist:
    return {}
  last = hist[-1]
  return {"step": int(last["step"]), "spectrum_z": last["spectrum_z"], "spectrum_r": last["spectrum_r"]}


def nonfinite_logged(workdir: str, member: int | None = None) -> int:
  """How many logged steps had a non-finite loss or gradient (with nonfinite_policy='skip'
  such steps are skipped in-graph; only logged steps are visible here)."""
  from jaxssl.logging_utils import read_metrics
  return sum(1 for r in read_metrics(workdir) if r.get("member") == member
             and (r.get("loss_finite", 1.0) == 0.0 or r.get("grad_finite", 1.0) == 0.0))


def mean_sd(values: Sequence[float]) -> dict[str, float]:
  """{"mean", "sd"} of `values` (sample sd, ddof 1; NaN below 2 values); NaN if any value is not finite."""
  import statistics
  v = [float(x) for x in values]
  ok = bool(v) and all(math.isfinite(x) for x in v)
  return {"mean": statistics.fmean(v) if ok else math.nan,
          "sd": statistics.stdev(v) if ok and len(v) >= 2 else math.nan}


def paired_order(diffs: Sequence[float]) -> str:
  """The reproductions' rule for paired per-seed differences d_s = first(s) − second(s):
  "first ahead" / "second ahead" when every d_s has one sign and |mean| > 2 sd (ddof 1),
  "tie" otherwise (and for a non-finite difference, or fewer than 2 seeds)."""
  st = mean_sd(diffs)
  one_sign = all(d > 0 for d in diffs) or all(d < 0 for d in diffs)
  if one_sign and all_finite(st["mean"], st["sd"]) and abs(st["mean"]) > 2 * st["sd"]:
    return "first ahead" if st["mean"] > 0 else "second ahead"
  return "tie"


def paired_label(result: str, first: str, second: str) -> str:
  """paired_order's result with the two sides named: "<first> ahead", "<second> ahead" or "tie"."""
  return {"first ahead": f"{first} ahead", "second ahead": f"{second} ahead"}.get(result, result)


def paired(diffs: Sequence[float]) -> dict[str, Any]:
  """{"diffs", "mean", "sd", "result": paired_order(diffs)}."""
  diffs = [float(d) for d in diffs]
  return {"diffs": diffs, **mean_sd(diffs), "result": paired_order(diffs)}


def pm(stat: Mapping[str, float], digits: int = 2) -> str:
  """"mean ± sd" of a `mean_sd` dict ("mean" alone when sd is NaN, "nan" when mean is)."""
  if not math.isfinite(stat["mean"]):
    return "nan"
  return f"{stat['mean']:.{digits}f}" + (f" ± {stat['sd']:.{digits}f}" if math.isfinite(stat["sd"]) else "")


def fmt(v: Any) -> str:
  if isinstance(v, bool):
    return "yes" if v else "no"
  if isinstance(v, float):
    if math.isnan(v):
      return "nan"
    return f"{v:.3g}" if abs(v) < 1e-2 and v != 0 else f"{v:.2f}"
  return str(v)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]]) -> list[str]:
  """Markdown lines for `rows`; columns are (row key, header) pairs."""
  lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
  for r in rows:
    lines.append("| " + " | ".join(fmt(r.get(k, "")) for k, _ in columns) + " |")
  return lines


METRIC_COLUMNS = [("linear_probe", "linear probe (%)"), ("knn_200", "kNN-200 (%)"),
                  ("effective_rank_z", "eff. rank z"), ("effective_rank_r", "eff. rank r"),
                  ("uniformity_z", "uniformity −L_unif"), ("tolerance_z", "tolerance")]


def write_outputs(out_dir: str, result: Mapping[str, Any], tables: Sequence[tuple[str, list[str]]]) -> None:
  """results.json (the result dict, with "rows" and "claims") and table.md (titled tables
  then the claims); prints the tables and claims."""
  with open(os.path.join(out_dir, "results.json"), "w") as f:
    json.dump(result, f, indent=2)
  text = []
  for title, lines in tables:
    text += [f"### {title}", "", *lines, ""]
  text += ["### claims", "", "```", json.dumps(result.get("claims", {}), indent=2), "```", ""]
  with open(os.path.join(out_dir, "table.md"), "w") as f:
    f.write("\n".join(text))
  print("\n".join(text))


def all_finite(*xs: float) -> bool:
  return all(isinstance(x, (int, float)) and math.isfinite(x) for x in xs)


def plot_spectra_panels(panels: Mapping[str, Mapping[str, Mapping[str, Any]]], path: str, suptitle: str = "") -> str:
  """Several log10(eigenvalue)-vs-rank panels: {panel title: {label: {"eig": [...], "ls": "-"}}}.
  Eigenvalues are sorted descending and clamped at 1e-12, as in jaxssl.plots.plot_spectra."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import numpy as np
  from jaxssl.plots import EIG_FLOOR
  n = len(panels)
  fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 4.0), squeeze=False)
  for ax, (title, curves) in zip(axes[0], panels.items()):
    for i, (label, c) in enumerate(curves.items()):
      eig = np.sort(np.asarray(c["eig"], np.float64).ravel())[::-1]
      ax.plot(np.arange(1, len(eig) + 1), np.log10(np.maximum(eig, EIG_FLOOR)), ls=c.get("ls", "-"),
              color=c.get("color", f"C{i}"), label=label)
    ax.set_xlabel("rank")
    ax.set_ylabel("log10(eigenvalue)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  if suptitle:
    fig.suptitle(suptitle)
  fig.tight_layout()
  return plots.save_figure(fig, path)


def plot_lines(panels: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]], path: str, *,
               xlabel: str, logx: bool = False, suptitle: str = "", styles: Mapping[str, str] | None = None,
               logy_panels: Sequence[str] = (), xticks: Sequence[float] = ()) -> str:
  """Line panels: {panel title: {label: (xs, ys)}}; `styles` maps labels to line styles;
  the panels named in `logy_panels` get a log y axis; `xticks` are labelled as plain numbers."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  n = len(panels)
  fig, axes = plt.subplots(1, n, figsize=(5.0 * n, 3.8), squeeze=False)
  for ax, (title, curves) in zip(axes[0], panels.items()):
    for label, (xs, ys) in curves.items():
      ax.plot(xs, ys, (styles or {}).get(label, "o-"), label=label, markersize=4)
    if logx:
      ax.set_xscale("log")
    if title in logy_panels:
      ax.set_yscale("log")
    if xticks:
      ax.set_xticks(list(xticks), [f"{v:g}" for v in xticks])
      ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  if suptitle:
    fig.suptitle(suptitle)
  fig.tight_layout()
  return plots.save_figure(fig, path)
