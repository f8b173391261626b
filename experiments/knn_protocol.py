"""Which kNN evaluation: chosen on a held-out part of the training split, never on the test set.

The weighted kNN of InstDisc / solo-learn compares L2-normalised features by cosine
similarity. jaxssl's backbone features r are post-ReLU and average-pooled, so they all
lie in the positive orthant: every pair has a cosine similarity near 0.9, and the 200
votes weighted exp(sim / T) are nearly uniform. solo-learn's and DINO's kNN monitors use
T = 0.07; centring (or standardising) the features with the bank's statistics removes
the common direction.

The protocol (pre-registered here):
  1. The last `--holdout` images of the training split are the queries, the others the
     neighbour bank (`train[:-H]` -> `train[-H:]`); the test split is not read.
  2. Grid: features r and z x transform (none, centre, standardise) x T in --temperatures,
     for k = 20 and 200, for each trained model of --workdir (and the random-init
     network of the first, for reference).
  3. Choice: among r's settings (r is what the linear probe and a user take from the
     encoder), the (transform, T) with the largest mean held-out kNN-200 over the
     trained models; ties within 0.05 points go to the simpler transform, then the
     temperature closest to 0.1.
  4. Only then the test set: the old protocol (r, none, T = 0.1) and the chosen one, on
     the full training split -> test split.

  python experiments/knn_protocol.py --workdir workdirs/simclr_fmnist --out docs/figures/knn_protocol
  python experiments/knn_protocol.py --quick --out /tmp/knn_quick   (trains a tiny model itself)
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import reproduce_common as rc
from jaxssl import data as data_lib
from jaxssl import evaluate as eval_lib
from jaxssl import export as export_lib
from jaxssl import run as run_lib
from jaxssl import state as state_lib

OLD = {"features": "r", "transform": "none", "temperature": 0.1}
TRANSFORMS = eval_lib.KNN_TRANSFORMS          # ("none", "centre", "standardise"), simplest first
KS = (20, 200)
TIE_POINTS = 0.05


def choose(grid_rows: list[dict], temperatures: list[float]) -> dict:
  """The rule of step 3 on held-out rows {"model", "features", "transform", "temperature",
  "knn_200", ...} of the trained models: the r setting with the largest mean kNN-200; within
  TIE_POINTS of the best, the earliest transform of TRANSFORMS, then T closest to 0.1."""
  means = []
  for transform in TRANSFORMS:
    for t in temperatures:
      vals = [r["knn_200"] for r in grid_rows
              if r["features"] == "r" and r["transform"] == transform and r["temperature"] == t]
      if vals:
        means.append({"transform": transform, "temperature": t, "mean_knn_200": float(np.mean(vals))})
  if not means:
    raise ValueError("choose: no held-out rows for the features r")
  best = max(m["mean_knn_200"] for m in means)
  close = [m for m in means if m["mean_knn_200"] >= best - TIE_POINTS]
  close.sort(key=lambda m: (TRANSFORMS.index(m["transform"]), abs(math.log(m["temperature"] / 0.1))))
  return {"features": "r", **close[0], "best_mean_knn_200": best}


def _cat(out):
  return jnp.concatenate([out["r"], out["z"]], axis=-1)


def embed(encode, images: np.ndarray, feature_dim: int, batch_size: int) -> dict[str, np.ndarray]:
  """{"r": [N, F], "z": [N, D]} of `images` under `encode` (eval mode)."""
  both = eval_lib.extract_features(jax.jit(lambda x: _cat(encode(x))), images, batch_size=batch_size)
  return {"r": both[:, :feature_dim], "z": both[:, feature_dim:]}


def knn_row(bank: np.ndarray, bank_y: np.ndarray, query: np.ndarray, query_y: np.ndarray, *,
            transform: str, temperature: float, num_classes: int) -> dict[str, float]:
  acc = eval_lib.knn_accuracy(bank, bank_y, query, query_y, ks=KS, temperature=temperature,
                              num_classes=num_classes, transform=transform)
  return {f"knn_{k}": 100.0 * float(v) for k, v in acc.items()}


def train_quick_model(out_dir: str) -> str:
  """--quick: a tiny SimCLR model of 16 steps (reproduce_common's --quick network)."""
  ns = argparse.Namespace(steps=16, batch=32, probe_epochs=1, quick=True)
  cfg = rc.make_config("simclr", ns)
  workdir = os.path.join(out_dir, "model")
  rc.run_one(cfg, workdir)
  return workdir


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--workdir", action="append", default=[],
                  help="a trained run directory (repeatable); the first also gives the random-init network")
  ap.add_argument("--out", required=True)
  ap.add_argument("--holdout", type=int, default=10_000, help="held-out training images (the queries)")
  ap.add_argument("--temperatures", type=rc.floats, default=[0.005, 0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.2])
  ap.add_argument("--quick", action="store_true", help="train a tiny 16-step model and hold out 20%% of the images")
  ap.add_argument("--replot", action="store_true", help="rebuild table.md from <out>/results.json")
  args = ap.parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  if args.replot:
    return rc.replot(args.out, write_outputs)
  t0 = time.time()
  workdirs = list(args.workdir) or ([train_quick_model(args.out)] if args.quick else [])
  if not workdirs:
    ap.error("give --workdir (a trained run) or --quick")

  models = []
  for wd in workdirs:
    cfg, setup, state = export_lib.load_run(wd)
    models.append((os.path.basename(os.path.normpath(wd)) or wd, cfg, setup, state))
  cfg0, setup0 = models[0][1], models[0][2]
  _, random_state = state_lib.build(cfg0, jax.random.PRNGKey(cfg0.seed + 10_000))
  encoders = [(name, run_lib.encode_fn(setup, state), cfg, True) for name, cfg, setup, state in models]
  encoders.append(("random_init", run_lib.encode_fn(setup0, random_state), cfg0, False))

  info = data_lib.dataset_info(cfg0.data.name)
  kw = dict(data_dir=cfg0.data.data_dir, idx_dir=cfg0.data.idx_dir)
  xtr, ytr = data_lib.load_arrays(cfg0.data.name, info.eval_train_split, **kw)
  xte, yte = data_lib.load_arrays(cfg0.data.name, info.test_split, **kw)
  holdout = len(xtr) // 5 if args.quick else int(args.holdout)
  if not 0 < holdout < len(xtr) - max(KS):
    ap.error(f"--holdout must leave more than {max(KS)} bank images of the {len(xtr)}; got {holdout}")
  num_classes = int(info.num_classes)

  grid, test_rows = [], []
  for name, encode, cfg, trained in encoders:
    fdim = int(jax.eval_shape(encode, jax.ShapeDtypeStruct((1,) + tuple(xtr.shape[1:]), np.float32))["r"].shape[-1])
    bs = int(cfg.eval.batch_size)
    f_tr = embed(encode, xtr, fdim, bs)                       # {"r": [N, F], "z": [N, D]}
    for feats in ("r", "z"):
      bank, query = f_tr[feats][:-holdout], f_tr[feats][-holdout:]
      for transform in TRANSFORMS:   # the neighbours are found once for all temperatures
        preds = eval_lib.knn_predict_temperatures(bank, ytr[:-holdout], query, ks=KS, temperatures=args.temperatures,
                                                  num_classes=num_classes, transform=transform)
        for t in args.temperatures:
          grid.append({"model": name, "trained": trained, "features": feats, "transform": transform,
                       "temperature": t, **{f"knn_{k}": 100.0 * float(np.mean(p == ytr[-holdout:]))
                                            for k, p in preds[float(t)].items()}})
    test_rows.append((name, trained, f_tr, encode, fdim, bs))

  chosen = choose([r for r in grid if r["trained"]], list(args.temperatures))
  # Step 4: the test set, read only now, for the old and the chosen protocol.
  tests = []
  for name, trained, f_tr, encode, fdim, bs in test_rows:
    f_te = embed(encode, xte, fdim, bs)
    for label, p in (("old", OLD), ("chosen", chosen)):
      tests.append({"model": name, "trained": trained, "protocol": label, "features": p["features"],
                    "transform": p["transform"], "temperature": p["temperature"],
                    **knn_row(f_tr[p["features"]], ytr, f_te[p["features"]], yte, transform=p["transform"],
                              temperature=p["temperature"], num_classes=num_classes)})
  result = {"workdirs": workdirs, "holdout": holdout, "bank": len(xtr) - holdout, "temperatures": args.temperatures,
            "quick": bool(args.quick), "old": OLD, "chosen": chosen, "grid": grid, "test": tests,
            "seconds": time.time() - t0,
            "claims": {"chosen": f"{chosen['transform']}, T = {chosen['temperature']} on r "
                                 f"(held-out kNN-200 {chosen['mean_knn_200']:.2f} %)"}}
  write_outputs(result, args.out)
  return 0


def write_outputs(result: dict, out_dir: str) -> None:
  grid = result["grid"]
  models = list(dict.fromkeys(r["model"] for r in grid))
  tables = []
  for feats in ("r", "z"):
    for k in KS:
      rows = []
      for transform in TRANSFORMS:
        row = {"transform": transform}
        for t in result["temperatures"]:
          for m in models:
            v = [r[f"knn_{k}"] for r in grid
                 if r["model"] == m and r["features"] == feats and r["transform"] == transform and r["temperature"] == t]
            row[f"{m}@{t}"] = v[0] if v else math.nan
        rows.append(row)
      cols = [("transform", "transform")] + [(f"{m}@{t}", f"{m} T={t}") for t in result["temperatures"] for m in models]
      tables.append((f"held-out kNN-{k} (%) on {feats}: bank {result['bank']}, queries {result['holdout']} "
                     "training images", rc.markdown_table(rows, cols)))
  c = result["chosen"]
  tables.append(("choice (rule: largest mean held-out kNN-200 on r over the trained models)",
                 [f"features r, transform {c['transform']}, T = {c['temperature']}: mean held-out kNN-200 "
                  f"{c['mean_knn_200']:.2f} % (best {c['best_mean_knn_200']:.2f} %)"]))
  tables.append(("test set (full training split -> test split), old vs chosen protocol",
                 rc.markdown_table(result["test"], [("model", "model"), ("protocol", "protocol"),
                                                    ("transform", "transform"), ("temperature", "T"),
                                                    ("knn_20", "kNN-20 (%)"), ("knn_200", "kNN-200 (%)")])))
  rc.write_outputs(out_dir, result, tables)


if __name__ == "__main__":
  sys.exit(main())
