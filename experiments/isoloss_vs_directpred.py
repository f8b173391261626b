"""IsoLoss vs the BYOL loss on the same closed-form predictor, without an EMA target: a
controlled, seeded test of Halvagal, Laborieux & Zenke (NeurIPS 2023; PAPERS.md E).

Claim: IsoLoss trains *without* an EMA target, where DirectPred needs one.

What "DirectPred" is in that comparison (official code fmi-basel/implicit-var-reg): one
method class, `solo/methods/directpred.py`, with the flag `iso`. `iso: True` is IsoLoss
(`solo/losses/isoloss.py`), `iso: False` the BYOL cosine loss `byol_loss_func(p, z')` on the
same p = z W_p. The no-EMA configs (`scripts/pretrain/{cifar,stl-10,tinyimagenet}/
{isoloss,directpred}-noema.yaml`) are identical but for that flag: W_p = U diag((s/max s +
eps)^alpha) U^T with alpha = 0.5, eps = 0 (`eps_iso: 0.0`), tau_C = 0.5 (`dp_tau`), C the
uncentred EMA of z^T z / B updated once per view and W_p recomputed from it in every forward
pass (before the loss, not after the optimizer step), momentum 0 (the target is the online
network under stop-gradient), SGD lr 0.1, momentum 0.9, weight decay 1e-4 (run_experiments.sh).
So their "DirectPred" is not Tian et al.'s recipe (sqrt(n) + 0.01, rho = 0.3, W_p set after
the update), which jaxssl's `directpred` method implements.

Set-up here: both arms are jaxssl's `isoloss` method and differ only in `loss.objective`:
  * "isoloss": the IsoLoss gradient, grad_z L = grad_p L_BYOL(p, sg z');
  * "byol":    the BYOL cosine loss L_BYOL(z W_p, sg z'), gradient W_p^T grad_p (the official
               code's `iso: False`).
Shared by both: the closed-form predictor of kind "halvagal", computed in the loss step
(`closed_form_timing="in_loss"`), with `--eps` (default 0, official), `--alpha` (0.5) and
`--decay` (tau_C = 0.5); no EMA target (`ema.enabled=False`); `convnet_small` and the rest of
experiments/configs/isoloss.py (AdamW lr 1e-3, weight decay 1e-6, warm-up steps/10, cosine
schedule; `--optim/--lr/--weight-decay` change it for both arms); batch 256; `--steps` (3000);
the seeds `--seeds` (0,1,2, as `config.seed`: initial parameters, data order, augmentations;
arm A and arm B of one seed start from the same parameters and see the same images and views).
results.json lists, per seed, the config fields in which the two arms differ: only
loss.objective. jaxssl's own `isoloss` default eps is 0.1; `--eps 0.1` reruns at it. One
difference from the official code remains, shared by both arms: there each view's forward
pass updates C and takes its own W_p (view 1 from C after view 1, view 2 from C after both);
jaxssl updates C with both views, then one W_p serves both.

Evaluation (jaxssl's end-of-training evaluation, `run.train(..., evaluate_at_end=True)`):
linear probe (`--probe-epochs`, 10) and weighted kNN-200 on train -> test, effective rank of
z and r on the first 5 000 test images; the effective rank of z and r over training from
metrics.jsonl (every `--log-every` steps, steps/30 by default).

Verdict rule, per metric m in {linear probe, effective rank of z}: d_s = m(IsoLoss, s) -
m(BYOL loss, s) for every seed s; the metric supports the claim when d_s > 0 for every seed
AND mean(d) > 2 sd(d) (sample sd, ddof 1; needs >= 2 seeds and finite values).
"reproduced" when both metrics support it, "mixed" when one does, "not reproduced" otherwise.

    python experiments/isoloss_vs_directpred.py --out runs/isoloss_vs_directpred
        [--steps 3000] [--seeds 0,1,2] [--batch 256] [--probe-epochs 10] [--eps 0] [--alpha 0.5]
        [--decay 0.5] [--optim adamw] [--lr 1e-3] [--weight-decay 1e-6] [--log-every 100]
        [--quick] [--replot]

Writes results.json, table.md and erank_vs_step.png to --out. A run whose workdir
(<out>/<arm>_seed<s>) has an eval.json is reused, one with checkpoints is resumed.

Cost on the 2-core CPU (estimate): the main job runs ~7 steps/s at batch 256 with
convnet_small, so one 3000-step run is ~7.5 min of training plus ~0.5-1 min of evaluation
(features of 70 000 images, 10 probe epochs, kNN-200, LiDAR); 6 runs ≈ 50 min in all, up to
~1 h if the per-step eigendecompositions of the 128-d predictor slow the step. `--quick`
(tiny network, 2 seeds, 16 steps at batch 32, 1 probe epoch, LiDAR on 64 images) took 41 s
wall with a warm compilation cache and 68 s cold (4 runs on the real Fashion-MNIST; ~6 s of
each run is the evaluation on 70 000 images).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from typing import Any, Mapping, Sequence

import reproduce_common as rc
from jaxssl.methods import get_method

ARMS = ("isoloss", "byol")                      # the value of loss.objective in each arm
ARM_LABELS = {"isoloss": "IsoLoss", "byol": "BYOL loss (DirectPred arm)"}
VERDICT_METRICS = ("linear_probe", "effective_rank_z")
REPORTED_METRICS = ("linear_probe", "knn_200", "effective_rank_z", "effective_rank_r")
# The config fields recorded per run: what the two arms share, and the one they must not.
RECORDED_FIELDS = ("seed", "method", "loss.objective", "loss.kind", "predictor.eps", "predictor.alpha",
                   "predictor.decay", "ema.enabled", "optim.name", "optim.lr", "optim.weight_decay",
                   "optim.momentum", "optim.warmup_steps", "optim.schedule", "data.batch_size", "data.augment",
                   "train.num_steps", "model.encoder", "model.encoder_kwargs", "model.projector",
                   "eval.probe_epochs")


# ----------------------------------------------------------------------------- statistics and verdict

def paired_gap(isoloss: Sequence[float], byol: Sequence[float]) -> dict[str, Any]:
  """The paired differences d_s = isoloss[s] - byol[s] and the rule's two conditions.

  Returns {"diffs", "mean", "sd" (ddof 1; NaN below 2 seeds), "isoloss_wins_every_seed",
  "mean_exceeds_2sd", "holds"}; a non-finite value anywhere (a diverged run) fails the rule.
  """
  if len(isoloss) != len(byol):
    raise ValueError(f"paired_gap: {len(isoloss)} IsoLoss values but {len(byol)} BYOL-loss values")
  diffs = [float(a) - float(b) for a, b in zip(isoloss, byol)]
  finite = bool(diffs) and all(math.isfinite(d) for d in diffs)
  mean = statistics.fmean(diffs) if finite else math.nan
  sd = statistics.stdev(diffs) if finite and len(diffs) >= 2 else math.nan
  wins = finite and all(d > 0 for d in diffs)
  exceeds = bool(math.isfinite(sd) and mean > 2.0 * sd)
  return {"diffs": diffs, "mean": mean, "sd": sd, "isoloss_wins_every_seed": bool(wins),
          "mean_exceeds_2sd": exceeds, "holds": bool(wins and exceeds)}


def verdict(holds: Mapping[str, bool]) -> str:
  """"reproduced" if the rule holds for every metric of VERDICT_METRICS, "mixed" for some,
  "not reproduced" for none."""
  n = sum(bool(holds[m]) for m in VERDICT_METRICS)
  return "reproduced" if n == len(VERDICT_METRICS) else "mixed" if n else "not reproduced"


def paired_statistics(runs: Sequence[Mapping[str, Any]], seeds: Sequence[int]) -> dict[str, dict[str, Any]]:
  """{metric: paired_gap(...) + {"seeds"}} for REPORTED_METRICS over `seeds` (rows by arm and seed)."""
  by = {(r["arm"], r["seed"]): r for r in runs}
  return {m: {**paired_gap([by[("isoloss", s)][m] for s in seeds], [by[("byol", s)][m] for s in seeds]),
              "seeds": list(seeds)} for m in REPORTED_METRICS}


def summarise(runs: Sequence[Mapping[str, Any]], seeds: Sequence[int]) -> dict[str, Any]:
  """The per-arm means and sds, the paired statistics and the verdict of `runs`."""
  per_arm = {}
  for arm in ARMS:
    mine = [r for r in runs if r["arm"] == arm]
    per_arm[arm] = {m: rc.mean_sd([r[m] for r in mine]) for m in REPORTED_METRICS}
  paired = paired_statistics(runs, seeds)
  holds = {m: paired[m]["holds"] for m in VERDICT_METRICS}
  return {"per_arm": per_arm, "paired": paired, "holds": holds, "verdict": verdict(holds)}


# ----------------------------------------------------------------------------- configs and runs

def arm_config(arm: str, seed: int, args):
  """experiments/configs/isoloss.py with loss.objective = `arm` and the shared settings."""
  over: dict[str, Any] = {"seed": int(seed), "loss.objective": arm, "ema.enabled": False,
                          "predictor.eps": args.eps, "predictor.alpha": args.alpha, "predictor.decay": args.decay,
                          "train.log_every": args.log_every or (4 if args.quick else max(1, args.steps // 30))}
  if args.quick:   # a smoke run: LiDAR on 64 images x 2 views instead of 1000 x 8
    over.update({"eval.lidar_images": 64, "eval.lidar_views": 2})
  for field, value in (("optim.name", args.optim), ("optim.lr", args.lr), ("optim.weight_decay", args.weight_decay)):
    if value is not None:
      over[field] = value
  return rc.make_config("isoloss", args, **over)


def _flat(cfg) -> dict[str, Any]:
  """{dotted field: value} of a ConfigDict or a plain nested dict (model.* heads kept whole)."""
  out: dict[str, Any] = {}

  def walk(node, prefix):
    for k, v in node.items():
      if isinstance(v, Mapping) and not f"{prefix}{k}".startswith("model."):
        walk(v, f"{prefix}{k}.")
      else:
        out[f"{prefix}{k}"] = v
  walk(cfg.to_dict() if hasattr(cfg, "to_dict") else cfg, "")
  return out


def config_diff(cfg_a, cfg_b) -> list[str]:
  """The config fields (dotted; model.* heads compared whole) whose values differ."""
  a, b = _flat(cfg_a), _flat(cfg_b)
  return sorted(k for k in set(a) | set(b) if a.get(k, "<absent>") != b.get(k, "<absent>"))


def recorded_fields(cfg) -> dict[str, Any]:
  flat = _flat(cfg)
  return {k: flat.get(k) for k in RECORDED_FIELDS}


def check_reusable(workdir: str, cfg) -> None:
  """SystemExit when `workdir` holds a run whose recorded fields differ from `cfg`'s (its stored
  evaluation would be reused as if it were this configuration's)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return
  with open(path) as f:
    old = _flat(json.load(f))
  new = json.loads(json.dumps(recorded_fields(cfg)))
  changed = sorted(k for k, v in new.items() if k in old and old[k] != v)
  if changed:
    raise SystemExit(f"{workdir} was trained with other settings ({', '.join(f'{k}: {old[k]!r} -> {new[k]!r}' for k in changed)}); "
                     "use a new --out")


def run_arm(arm: str, seed: int, cfg, out: str) -> dict[str, Any]:
  """Trains and evaluates one run (reusing a finished workdir); its row with the history."""
  workdir = os.path.join(out, f"{arm}_seed{seed}")
  check_reusable(workdir, cfg)
  row = rc.run_one(cfg, workdir, arm=arm, seed=int(seed))
  rc.record_wall_time(row, workdir)
  hist = rc.spectrum_history(workdir)
  row["history"] = {"steps": [int(h["step"]) for h in hist],
                    "effective_rank_z": [float(h["effective_rank_z"]) for h in hist],
                    "effective_rank_r": [float(h["effective_rank_r"]) for h in hist]}
  row["config"] = recorded_fields(cfg)
  return row


# ----------------------------------------------------------------------------- outputs

def table_lines(result: Mapping[str, Any]) -> list[str]:
  """One row per arm x seed, the mean ± sd of each arm and the paired gap IsoLoss - BYOL loss."""
  cols = [("linear_probe", "linear probe (%)"), ("knn_200", "kNN-200 (%)"), ("effective_rank_z", "eff. rank z"),
          ("effective_rank_r", "eff. rank r")]
  lines = ["| arm | seed | " + " | ".join(h for _, h in cols) + " | wall (s) |", "|" + "---|" * (len(cols) + 3)]
  for r in sorted(result["runs"], key=lambda r: (ARMS.index(r["arm"]), r["seed"])):
    lines.append(f"| {ARM_LABELS[r['arm']]} | {r['seed']} | " + " | ".join(rc.fmt(r[k]) for k, _ in cols)
                 + f" | {r['seconds']:.0f} |")
  s = result["summary"]
  n = len(result["seeds"])
  for arm in ARMS:
    lines.append(f"| {ARM_LABELS[arm]}, mean ± sd | {n} seeds | "
                 + " | ".join(rc.pm(s["per_arm"][arm][k]) for k, _ in cols) + " | |")
  lines.append("| paired gap IsoLoss − BYOL loss, mean ± sd | " + ",".join(map(str, result["seeds"])) + " | "
               + " | ".join(rc.pm(s["paired"][k]) for k, _ in cols) + " | |")
  lines += ["", "| metric | paired differences | IsoLoss wins every seed | mean > 2 sd | holds |",
            "|---|---|---|---|---|"]
  for m in VERDICT_METRICS:
    p = s["paired"][m]
    lines.append(f"| {m} | {', '.join(f'{d:+.2f}' for d in p['diffs'])} | {rc.fmt(p['isoloss_wins_every_seed'])} "
                 f"| {rc.fmt(p['mean_exceeds_2sd'])} | {rc.fmt(p['holds'])} |")
  lines += ["", f"**Verdict: {s['verdict']}** (rule: IsoLoss wins in every seed and the mean paired gap exceeds "
            "2 sd, for both the linear probe and the effective rank of z)."]
  return lines


def plot(result: Mapping[str, Any], path: str) -> str:
  curves: dict[str, dict[str, tuple[list, list]]] = {"effective rank of z": {}, "effective rank of r": {}}
  styles = {}
  dashes = ("-", "--", ":", "-.")
  for r in result["runs"]:
    label = f"{ARM_LABELS[r['arm']]}, seed {r['seed']}"
    h = r["history"]
    curves["effective rank of z"][label] = (h["steps"], h["effective_rank_z"])
    curves["effective rank of r"][label] = (h["steps"], h["effective_rank_r"])
    styles[label] = f"C{ARMS.index(r['arm'])}{dashes[result['seeds'].index(r['seed']) % len(dashes)]}"
  return rc.plot_lines(curves, path, xlabel="step", styles=styles,
                       suptitle="IsoLoss vs BYOL loss, same closed-form predictor, no EMA target (Fashion-MNIST)")


def write_outputs(result: dict, out: str) -> None:
  result["summary"] = summarise(result["runs"], result["seeds"])
  result["claims"] = {"verdict": result["summary"]["verdict"], **{f"{m}_holds": v
                                                                    for m, v in result["summary"]["holds"].items()}}
  rc.write_outputs(out, result, [("IsoLoss vs BYOL loss on the same predictor, no EMA target", table_lines(result))])
  plot(result, os.path.join(out, "erank_vs_step.png"))


def main(argv: Sequence[str] | None = None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--out", default="runs/isoloss_vs_directpred")
  rc.add_common_args(ap, steps=3000, probe_epochs=10)
  ap.add_argument("--seeds", type=rc.ints, default=None, help="comma list of config.seed values (default 0,1,2; "
                                                                "--quick: 0,1)")
  ap.add_argument("--eps", type=float, default=0.0, help="predictor eps of both arms (official: 0)")
  ap.add_argument("--alpha", type=float, default=0.5, help="predictor exponent alpha of both arms")
  ap.add_argument("--decay", type=float, default=0.5, help="tau_C of both arms (official without EMA: 0.5)")
  ap.add_argument("--optim", choices=("adamw", "sgd", "lars"), default=None, help="optimizer of both arms "
                                                                                  "(default: the config's)")
  ap.add_argument("--lr", type=float, default=None)
  ap.add_argument("--weight-decay", type=float, default=None)
  ap.add_argument("--log-every", type=int, default=None, help="diagnostics interval (default steps/30)")
  ap.add_argument("--replot", action="store_true", help="only rebuild table.md and the figure from results.json")
  args = ap.parse_args(argv)
  if args.replot:
    return rc.replot(args.out, write_outputs)
  seeds = rc.resolve_seeds(ap, args)
  rc.apply_quick(args)
  os.makedirs(args.out, exist_ok=True)
  t0 = time.time()
  runs, differing = [], {}
  for seed in seeds:
    cfgs = {arm: arm_config(arm, seed, args) for arm in ARMS}
    differing[str(seed)] = config_diff(cfgs["isoloss"], cfgs["byol"])
    for arm in ARMS:
      runs.append(run_arm(arm, seed, cfgs[arm], args.out))
  method = get_method("isoloss")
  result = {"claim": "IsoLoss trains without an EMA target, where DirectPred (the BYOL loss on the same "
                     "closed-form predictor) needs one (Halvagal et al. 2023)",
            "steps": args.steps, "batch": args.batch, "probe_epochs": args.probe_epochs, "quick": bool(args.quick),
            "seeds": list(seeds),
            "shared": {"predictor_kind": method.closed_form, "closed_form_timing": method.closed_form_timing,
                       "eps": args.eps, "alpha": args.alpha, "decay": args.decay, "ema_target": False},
            "arms": {arm: {"loss.objective": arm, "label": ARM_LABELS[arm]} for arm in ARMS},
            "differing_fields": differing, "runs": runs,
            "verdict_rule": "per metric in (linear_probe, effective_rank_z): IsoLoss - BYOL loss > 0 in every seed "
                            "and mean > 2 sd (ddof 1) of the paired differences; reproduced if both hold, mixed if "
                            "one, not reproduced if none"}
  result["seconds"] = time.time() - t0
  write_outputs(result, args.out)
  return 0


if __name__ == "__main__":
  sys.exit(main())
