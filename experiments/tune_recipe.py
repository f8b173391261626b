"""Tuning a method's Fashion-MNIST recipe without reading the test set.

Each --variant is a label and config overrides on top of experiments/configs/<method>.py:
    --variant 'default:'  --variant 'tau0.5:loss.temperature=0.5'
    --variant 'ema:ema.enabled=True;predictor.decay=0.998'
Every variant trains for --steps (a short tuning budget) with --seeds, and is evaluated on a
held-out part of the training split: the linear probe and the kNN bank train on
train[:-H], the queries are train[-H:] (H = --holdout). The selection rule: the largest mean
held-out linear probe over seeds; within --tie points of it, the earlier variant on the
command line (put the current recipe first). The members, their values, every held-out
number and the selection go to <out>/results.json and table.md (docs/figures/tuning/<name>).

  python experiments/tune_recipe.py --method isoloss --name isoloss --steps 1000 \
      --variant 'recipe:' --variant 'ema:ema.enabled=True' --out docs/figures/tuning/isoloss
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys

import reproduce_common as rc
from jaxssl import config as config_lib
from jaxssl.errors import ConfigError
from jaxssl.methods import METHODS

METRICS = ("linear_probe", "knn_20", "knn_200", "effective_rank_z", "effective_rank_r", "uniformity_z", "norm_z")


def parse_variant(text: str) -> tuple[str, dict]:
  """'label:field=value;field=value' -> (label, {field: value}); values are Python literals
  (as on the command line of `jaxssl train`), or bare words taken as strings."""
  if ":" not in text:
    raise argparse.ArgumentTypeError(f"--variant {text!r} must look like 'label:field=value;field=value'")
  label, rest = text.split(":", 1)
  label = label.strip()
  if not re.fullmatch(r"[\w.+-]+", label):
    raise argparse.ArgumentTypeError(f"--variant label {label!r}: use letters, digits, '.', '+', '-' or '_'")
  overrides = {}
  for item in filter(None, (s.strip() for s in rest.split(";"))):
    if "=" not in item:
      raise argparse.ArgumentTypeError(f"--variant {label}: {item!r} is not field=value")
    field, value = (s.strip() for s in item.split("=", 1))
    overrides[field] = config_lib.parse_value(value)
  return label, overrides


def variant_config(method: str, overrides: dict, seed: int, args):
  cfg = rc.recipe_config(method, seed=seed, steps=args.steps, log_every=max(1, args.steps // 10),
                         checkpoint_every=max(1, args.steps // 2), quick=args.quick)
  cfg.eval.baselines = False
  cfg.eval.probe_epochs = int(args.probe_epochs)
  if args.quick:
    cfg.data.batch_size = 32
  for field, value in overrides.items():
    try:
      rc.set_override(cfg, field, value)
    except (ConfigError, KeyError, AttributeError, TypeError, ValueError) as e:
      raise ConfigError(f"--variant override {field}={value!r}: {e}") from None
  return cfg


def select(summary: list[dict], tie: float) -> str:
  """The label with the largest mean held-out linear probe; within `tie` points of the best,
  the earliest on the command line."""
  ok = [s for s in summary if s["linear_probe"]["mean"] == s["linear_probe"]["mean"]]   # not NaN
  if not ok:
    raise ValueError("select: every variant failed")
  best = max(s["linear_probe"]["mean"] for s in ok)
  return next(s["label"] for s in ok if s["linear_probe"]["mean"] >= best - tie)


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--method", required=True, choices=sorted(METHODS))
  ap.add_argument("--variant", action="append", type=parse_variant, default=[], required=False)
  ap.add_argument("--out", required=True)
  ap.add_argument("--workdirs", default=None, help="run directories (default <out>/runs)")
  ap.add_argument("--steps", type=int, default=1000)
  ap.add_argument("--seeds", type=rc.ints, default=[0])
  ap.add_argument("--holdout", type=int, default=10_000)
  ap.add_argument("--probe-epochs", type=int, default=30)
  ap.add_argument("--tie", type=float, default=0.2, help="points of held-out linear probe that count as a tie")
  ap.add_argument("--quick", action="store_true", help="smoke run: 16 steps, tiny network, holdout 64")
  ap.add_argument("--replot", action="store_true")
  args = ap.parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  if args.replot:
    return rc.replot(args.out, write_outputs)
  if not args.variant:
    ap.error("give at least one --variant (e.g. 'recipe:' for the recipe as it is)")
  labels = [v[0] for v in args.variant]
  if len(set(labels)) != len(labels):
    ap.error(f"--variant labels repeat: {labels}")
  if args.quick:
    args.steps, args.holdout, args.probe_epochs = 16, 64, 1
  workdirs = args.workdirs or os.path.join(args.out, "runs")
  splits = {"eval.train_split": f"train[:-{args.holdout}]", "eval.test_split": f"train[-{args.holdout}:]"}
  rows = []
  for label, overrides in args.variant:
    for seed in args.seeds:
      cfg = variant_config(args.method, {**overrides, **splits}, seed, args)
      wd = os.path.join(workdirs, f"{args.method}_{label}_s{seed}")
      row = rc.run_one(cfg, wd, label=label, seed=seed)
      rc.record_wall_time(row, wd)
      model = {}
      if "error" not in row:
        with open(os.path.join(wd, "eval.json")) as f:
          model = json.load(f)["model"]
      rows.append({"label": label, "seed": seed, "overrides": {k: repr(v) for k, v in overrides.items()},
                   "seconds": row["seconds"], **({"error": row["error"]} if "error" in row else {}),
                   **{k: float(model.get(k, float("nan"))) for k in METRICS}})
  summary = []
  for label, overrides in args.variant:
    rs = [r for r in rows if r["label"] == label]
    summary.append({"label": label, "overrides": {k: repr(v) for k, v in overrides.items()},
                    **{k: rc.mean_sd([r[k] for r in rs]) for k in METRICS}})
  chosen = select(summary, args.tie)
  result = {"method": args.method, "steps": args.steps, "seeds": args.seeds, "holdout": args.holdout,
            "splits": {"train": splits["eval.train_split"], "test": splits["eval.test_split"]},
            "probe_epochs": args.probe_epochs, "tie": args.tie, "quick": bool(args.quick), "rows": rows,
            "summary": summary, "chosen": chosen,
            # the runs' own wall times: a start that reuses finished variants still counts them
            "seconds": float(sum(r["seconds"] for r in rows)),
            "claims": {"chosen": chosen}}
  write_outputs(result, args.out)
  return 0


def write_outputs(result: dict, out_dir: str) -> None:
  lines = ["| variant | overrides | held-out linear (%) | kNN-20 (%) | kNN-200 (%) | eff. rank z | eff. rank r | "
           "uniformity z |", "|" + "---|" * 8]
  for s in result["summary"]:
    over = "; ".join(f"{k}={v}" for k, v in s["overrides"].items()) or "(recipe)"
    mark = " **chosen**" if s["label"] == result["chosen"] else ""
    lines.append(f"| {s['label']}{mark} | {over} | {rc.pm(s['linear_probe'])} | {rc.pm(s['knn_20'])} | "
                 f"{rc.pm(s['knn_200'])} | {rc.pm(s['effective_rank_z'], 1)} | {rc.pm(s['effective_rank_r'], 1)} | "
                 f"{rc.pm(s['uniformity_z'])} |")
  notes = [f"{result['method']}: {result['steps']} steps, seeds {','.join(map(str, result['seeds']))}; evaluated on "
           f"{result['splits']['test']} with the probe and kNN bank on {result['splits']['train']} "
           f"(linear probe {result['probe_epochs']} epochs). Rule: largest mean held-out linear probe; within "
           f"{result['tie']} points, the earlier variant. Wall time (train + evaluation, summed over the runs) "
           f"{result['seconds'] / 60:.1f} min."]
  rc.write_outputs(out_dir, result, [(f"tuning {result['method']}", lines), ("protocol", notes)])


if __name__ == "__main__":
  sys.exit(main())
