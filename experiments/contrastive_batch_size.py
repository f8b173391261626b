"""Koromilas et al. (ICML 2024): DHEL and KCL are robust to batch size and temperature.

The paper's claim (PAPERS.md B): InfoNCE-family losses (NT-Xent, DCL) depend on the batch
size (their expected value grows by ~log M) and on τ, while DHEL (negatives from the same
view only) and KCL (a kernel loss whose expected value does not depend on the batch size)
are more robust to both, and reach a higher effective rank.

Measured here, on Fashion-MNIST with the small ConvNet: NT-Xent (`simclr` config), DCL,
DHEL (official-code form) and KCL (Gaussian kernel, γ = 16), each at batch sizes
{32, 64, 128, 256} (`--batch-sizes`, one run per (loss, batch size): the batch size is not
sweepable) and, inside each run, a 2-member batched sweep over the loss's scale parameter:
τ ∈ {0.1, 0.5} (`--temperatures`) for NT-Xent / DCL / DHEL; KCL has no temperature, so its
kernel parameter t (K = exp(−t‖x−y‖²), paper default 2) is swept over {1, 4}
(`--kcl-ts`) instead — larger t is more local, like a smaller τ. For each model: linear
probe and kNN-200 accuracy of r, effective rank of z and r (test set).

Training budget (`--budget`): "images" (default; the paper's protocol of a fixed number
of epochs) keeps the number of images seen equal: `--steps` is the step count at the
largest batch size and a batch size b trains for steps·max(b)/b steps. "steps" trains
every batch size for `--steps` steps. The AdamW learning rate is not rescaled with the
batch size.

The `claims` in results.json: the accuracy spread (max − min linear probe over all batch
sizes and both scale values) of DHEL and of KCL is smaller than that of NT-Xent and of DCL;
the same for the spread over batch sizes only (max − min over batch at a fixed τ / t,
averaged over the two values); and the mean effective rank of z of DHEL / KCL is above that
of NT-Xent / DCL.

    python experiments/contrastive_batch_size.py --out runs/contrastive_batch_size [--steps 300]
        [--batch-sizes 32,64,128,256] [--temperatures 0.1,0.5] [--kcl-ts 1,4]
        [--budget images|steps] [--losses nt_xent,dcl,dhel,kcl] [--probe-epochs 30] [--quick]

Writes results.json, table.md and contrastive_batch_size.png to --out.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time

import reproduce_common as rc

LOSSES = {"nt_xent": "simclr", "dcl": "dcl", "dhel": "dhel", "kcl": "kcl"}
LABELS = {"nt_xent": "NT-Xent", "dcl": "DCL", "dhel": "DHEL", "kcl": "KCL"}


def _spread(values) -> float:
  values = [v for v in values if rc.all_finite(v)]
  return max(values) - min(values) if values else float("nan")


def claims(rows: list[dict]) -> dict:
  import numpy as np
  losses = sorted({r["loss"] for r in rows})
  spread = {l: _spread([r["linear_probe"] for r in rows if r["loss"] == l]) for l in losses}
  batch_spread = {}
  for l in losses:
    scales = sorted({r["scale"] for r in rows if r["loss"] == l})
    batch_spread[l] = float(np.mean([_spread([r["linear_probe"] for r in rows if r["loss"] == l and r["scale"] == s])
                                     for s in scales]))
  erank = {l: float(np.nanmean([r["effective_rank_z"] for r in rows if r["loss"] == l])) for l in losses}
  out: dict = {"accuracy_spread": spread, "accuracy_spread_over_batch": batch_spread, "mean_erank_z": erank}
  for robust in ("dhel", "kcl"):
    for base in ("nt_xent", "dcl"):
      if robust in spread and base in spread:
        out[f"{robust}_spread_smaller_than_{base}"] = bool(spread[robust] < spread[base])
        out[f"{robust}_batch_spread_smaller_than_{base}"] = bool(batch_spread[robust] < batch_spread[base])
        out[f"{robust}_erank_z_higher_than_{base}"] = bool(erank[robust] > erank[base])
  return out


def plot(rows, path):
  panels = {"linear probe acc. (%)": {}, "effective rank z": {}, "effective rank r": {}}
  keys = sorted({(r["loss"], r["scale_name"], r["scale"]) for r in rows})
  for loss, name, s in keys:
    sel = sorted((r for r in rows if r["loss"] == loss and r["scale"] == s), key=lambda r: r["batch"])
    label = f"{LABELS[loss]}, {name}={s:g}"
    for title, k in zip(panels, ("linear_probe", "effective_rank_z", "effective_rank_r")):
      panels[title][label] = ([r["batch"] for r in sel], [r[k] for r in sel])
  styles = {}
  for loss, name, s in keys:
    first = min(v for l, _, v in keys if l == loss)
    styles[f"{LABELS[loss]}, {name}={s:g}"] = "o-" if s == first else "s--"
  rc.plot_lines(panels, path, xlabel="batch size", logx=True, styles=styles,
                xticks=sorted({r["batch"] for r in rows}),
                suptitle="Koromilas et al. 2024 at Fashion-MNIST scale: batch size and τ robustness")


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--out", default="runs/contrastive_batch_size")
  rc.add_common_args(ap, steps=300)
  ap.add_argument("--batch-sizes", type=rc.ints, default="32,64,128,256")
  ap.add_argument("--temperatures", type=rc.floats, default="0.1,0.5", help="τ values swept for NT-Xent, DCL, DHEL")
  ap.add_argument("--kcl-ts", type=rc.floats, default="1,4", help="Gaussian-kernel t values swept for KCL (it has no τ)")
  ap.add_argument("--budget", choices=("images", "steps"), default="images",
                  help="images: equal images seen (--steps at the largest batch); steps: --steps for every batch")
  ap.add_argument("--losses", default=",".join(LOSSES))
  args = ap.parse_args(argv)
  rc.apply_quick(args)
  if args.quick:
    args.batch_sizes, args.steps = [32, 64], 8
  batch_sizes, taus, kcl_ts = args.batch_sizes, args.temperatures, args.kcl_ts
  losses = [l for l in args.losses.split(",") if l]
  os.makedirs(args.out, exist_ok=True)
  t0 = time.time()

  rows = []
  for loss in losses:
    field, values, name = ("loss.t", kcl_ts, "t") if loss == "kcl" else ("loss.temperature", taus, "τ")
    for b in batch_sizes:
      a = copy.copy(args)
      a.batch = b
      a.steps = max(1, round(args.steps * max(batch_sizes) / b)) if args.budget == "images" else args.steps
      cfg = rc.make_config(LOSSES[loss], a)
      for r in rc.run_sweep(cfg, os.path.join(args.out, f"{loss}_b{b}"), field, values, key="scale",
                            loss=loss, batch=b, steps=a.steps, images_seen=a.steps * b, scale_name=name):
        rows.append(r)

  result = {"budget": args.budget, "steps_arg": args.steps, "batch_sizes": batch_sizes,
            "temperatures": taus, "kcl_ts": kcl_ts, "probe_epochs": args.probe_epochs, "quick": args.quick,
            "rows": rows, "claims": claims(rows), "seconds": time.time() - t0}
  cols = [("loss", "loss"), ("batch", "batch"), ("scale_name", "param"), ("scale", "value"), ("steps", "steps"),
          ("images_seen", "images seen")] + rc.METRIC_COLUMNS[:4]
  rc.write_outputs(args.out, result, [("Contrastive losses vs batch size and τ",
                                       rc.markdown_table(rows, cols))])
  plot(rows, os.path.join(args.out, "contrastive_batch_size.png"))
  return 0


if __name__ == "__main__":
  sys.exit(main())
