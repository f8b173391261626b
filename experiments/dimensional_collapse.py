"""Jing et al. (ICLR 2022), dimensional collapse and DirectCLR, at Fashion-MNIST scale.

The paper's claims (PAPERS.md C; ImageNet, ResNet-50, 100 epochs): contrastive learning
collapses dimensions of the *embedding* it is applied to. With a projector, the collapse
happens in the projector output z while the backbone representation r keeps more
dimensions; without a projector the loss acts on r itself and r collapses, which costs
accuracy (linear probe: 2-layer MLP projector 66.5 [check], linear projector 61.1, no
projector 51.5). DirectCLR, the InfoNCE loss on the first d0 dimensions of r and no
projector, avoids the representation collapse and recovers accuracy (62.7 > 51.5).

Measured here: SimCLR (NT-Xent) with (a) the default MLP projector, (b) a linear
projector r -> 128, (c) no projector (identity head: z = r), and (d) DirectCLR
(`directclr` config, d0 = 64 of the ConvNet's 256-d r), each trained separately. For each:
linear probe and weighted kNN-200 accuracy of r on the test set, effective rank of r and of
z (exp of the spectral entropy, test set), and the log-eigenvalue spectra of r and z at the
last logged training step (covariance of the L2-normalised training-batch embeddings,
`jaxssl.diagnostics.spectrum`), in `spectra.png` (Jing et al.'s Fig. style).

The `claims` in results.json are computed from these rows:
  no_projector_r_collapses_more_than_mlp / _than_linear: erank r (no proj.) < erank r (MLP / linear)
  directclr_r_not_collapsed: erank r (DirectCLR) >= erank r (no projector)
  projector_z_lower_erank_than_r_mlp / _linear: erank z < erank r with a projector
      (raw effective ranks; z has 128 dims, r 256 — the normalised ratios are in the rows too)
  accuracy_projector_beats_no_projector: acc (MLP) > acc (no proj.) and acc (linear) > acc (no proj.)
  accuracy_mlp_beats_linear: acc (MLP) > acc (linear)
  accuracy_directclr_beats_no_projector: acc (DirectCLR) > acc (no projector)
  no_projector_r_tail_collapses_more_than_mlp / _than_linear: more collapsed dimensions of r
      without a projector, counting as collapsed the eigenvalues of r's final spectrum below
      1e-6 of the largest (Jing et al.'s criterion: the spectrum's tail drops to ~0; on a
      256-row batch of a 256-d r at least one eigenvalue is exactly 0). The effective rank is
      an entropy and weighs the head of the spectrum; the tail count is what Jing's Fig. shows.
      The two can disagree (measured at 2000 steps: docs/results.md).

Seeded, on the evaluation set (issue 17; PAPERS.md C asks for the evaluation set): with
`--seeds` (e.g. 0,1,2; `config.seed`: initial parameters, data order, augmentations), every
variant is trained once per seed and r is measured on all 10 000 test images
(`test_set_spectrum`): each row of r L2-normalised, the covariance centred, its eigenvalues
by float64 `numpy.linalg.eigh`. The collapsed-dimension counts at the thresholds
TEST_THRESHOLDS (an eigenvalue below 1e-4 … 1e-7 of the largest) and the effective rank of
that spectrum are reported per seed and as mean ± sd, and the claims are per seed:
  seeded_no_projector_r_collapses_more_than_<v>_at_<thr>: count(none) > count(v) in every seed;
  seeded_directclr_fewer_collapsed_than_no_projector_at_<thr>: the same for DirectCLR;
  seeded_erank_r_none_below_<v>: effective rank of r (test set, float64) lower without a
      projector in every seed;
  accuracy MLP vs DirectCLR: the paired difference probe(MLP, s) − probe(DirectCLR, s); a
      "tie" unless it has one sign in every seed and |mean| > 2 sd (ddof 1; rc.paired_order);
  seeded_mlp_erank_fraction_r_minus_z: with the MLP projector, the effective rank of r as a
      fraction of its dimension minus that of z (the evaluation's effective ranks, test set),
      per seed, with the same tie rule: "first ahead" is z collapsing more than r, relative to
      their widths (the rows' dim_z / dim_r).

    python experiments/dimensional_collapse.py --out runs/dimensional_collapse [--steps 2000]
        [--batch 256] [--probe-epochs 30] [--variants mlp,linear,none,directclr] [--seeds 0,1,2] [--quick]
        [--replot]

Writes results.json, table.md and spectra.png to --out (one workdir per variant inside;
with --seeds one per variant and seed, <variant>_seed<s>).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

import reproduce_common as rc

# name -> (config file, overrides, legend label)
VARIANTS = ("mlp", "linear", "none", "directclr")
LABELS = {"mlp": "SimCLR, MLP projector", "linear": "SimCLR, linear projector",
          "none": "SimCLR, no projector", "directclr": "DirectCLR"}


def variant_config(name: str, args, **overrides):
  if name == "mlp":
    return rc.make_config("simclr", args, **overrides)
  if name == "linear":
    out_dim = 8 if args.quick else 128
    return rc.make_config("simclr", args, **{"model.projector": dict(kind="linear", out_dim=out_dim)}, **overrides)
  if name == "none":
    return rc.make_config("simclr", args, **{"model.projector": dict(kind="identity")}, **overrides)
  if name == "directclr":
    return rc.make_config("directclr", args, **overrides)
  raise ValueError(name)


# An eigenvalue below this fraction of the largest counts as a collapsed dimension.
COLLAPSED_EIG_FRACTION = 1e-6


def collapsed_dims(eigs) -> int:
  """Number of eigenvalues below COLLAPSED_EIG_FRACTION x the largest (0 for an empty spectrum)."""
  e = np.asarray(eigs, np.float64).ravel()
  if e.size == 0 or not np.isfinite(e).all() or e.max() <= 0:
    return 0
  return int(np.sum(e < COLLAPSED_EIG_FRACTION * e.max()))


def add_collapsed_dims(rows: dict[str, dict], spectra: dict[str, dict]) -> None:
  for name, row in rows.items():
    row["collapsed_dims_r"] = collapsed_dims(spectra.get(name, {}).get("spectrum_r", []))


def claims(rows: dict[str, dict]) -> dict[str, bool]:
  tail = {k: r["collapsed_dims_r"] for k, r in rows.items()}
  er = {k: r["effective_rank_r"] for k, r in rows.items()}
  ez = {k: r["effective_rank_z"] for k, r in rows.items()}
  acc = {k: r["linear_probe"] for k, r in rows.items()}
  return {
      "no_projector_r_collapses_more_than_mlp": er["none"] < er["mlp"],
      "no_projector_r_collapses_more_than_linear": er["none"] < er["linear"],
      "directclr_r_not_collapsed": er["directclr"] >= er["none"],
      "projector_z_lower_erank_than_r_mlp": ez["mlp"] < er["mlp"],
      "projector_z_lower_erank_than_r_linear": ez["linear"] < er["linear"],
      "accuracy_projector_beats_no_projector": acc["mlp"] > acc["none"] and acc["linear"] > acc["none"],
      "accuracy_mlp_beats_linear": acc["mlp"] > acc["linear"],
      "accuracy_directclr_beats_no_projector": acc["directclr"] > acc["none"],
      "no_projector_r_tail_collapses_more_than_mlp": tail["none"] > tail["mlp"],
      "no_projector_r_tail_collapses_more_than_linear": tail["none"] > tail["linear"],
  }


COLUMNS = [("variant", "variant"), ("projector", "projector")] + rc.METRIC_COLUMNS[:4] + [
    ("erank_z_frac", "erank z / dim z"), ("erank_r_frac", "erank r / dim r"),
    ("collapsed_dims_r", "collapsed dims of r (eig < 1e-6 max)")]
TITLE = "Dimensional collapse (SimCLR projector ablation + DirectCLR)"


# ----------------------------------------------------------------------------- seeded, on the test set

# Collapsed-dimension thresholds (fractions of the largest eigenvalue) of the seeded test-set count.
TEST_THRESHOLDS = (1e-4, 1e-5, 1e-6, 1e-7)


def normalized_centred_spectrum(feats) -> np.ndarray:
  """Eigenvalues (descending, float64) of the centred covariance of the L2-normalised rows of
  `feats` [N, D]: u_i = f_i / |f_i|, C = (U - mean U)^T (U - mean U) / N, numpy.linalg.eigh.
  Rows of norm 0 stay 0 (no NaN); eigenvalues below 0 from round-off are clipped at 0."""
  f = np.asarray(feats, np.float64)
  if f.ndim != 2 or len(f) < 2:
    raise ValueError(f"normalized_centred_spectrum: expected features [N >= 2, D], got shape {f.shape}")
  if not np.isfinite(f).all():
    raise ValueError("normalized_centred_spectrum: the features are not all finite")
  norms = np.linalg.norm(f, axis=1, keepdims=True)
  u = f / np.where(norms > 0, norms, 1.0)                        # [N, D]
  u = u - u.mean(axis=0, keepdims=True)
  eig = np.linalg.eigh(u.T @ u / len(u))[0][::-1]                 # [D], descending
  return np.clip(eig, 0.0, None)


def collapsed_counts(eigs, thresholds=TEST_THRESHOLDS) -> dict[str, int]:
  """{"<thr>": number of eigenvalues below thr x the largest} ({} for an empty or zero spectrum)."""
  e = np.asarray(eigs, np.float64).ravel()
  if e.size == 0 or not np.isfinite(e).all() or e.max() <= 0:
    return {}
  return {f"{t:g}": int(np.sum(e < t * e.max())) for t in thresholds}


def entropy_effective_rank(eigs) -> float:
  """`jaxssl.diagnostics.effective_rank`'s definition in float64: exp of the Shannon entropy of
  the normalised singular values sigma_k = sqrt(lambda_k) (Roy & Vetterli; RankMe)."""
  sigma = np.sqrt(np.clip(np.asarray(eigs, np.float64).ravel(), 0.0, None))
  if sigma.sum() <= 0:
    return float("nan")
  p = sigma / sigma.sum()
  p = p[p > 0]
  return float(np.exp(-np.sum(p * np.log(p))))


def test_set_spectrum(workdir: str, *, max_images: int | None = None) -> dict:
  """r of the trained encoder in `workdir` on the test split (`max_images` first images, all by
  default): {"n_images", "spectrum_r" (float64, descending), "collapsed_r" (collapsed_counts),
  "effective_rank_r"}."""
  from jaxssl import data as data_lib
  from jaxssl import evaluate, export
  encode, variables = export.load_encoder(workdir)
  cfg = export.load_run(workdir)[0]
  info = data_lib.dataset_info(cfg.data.name)
  x, _ = data_lib.load_arrays(cfg.data.name, info.test_split, data_dir=cfg.data.data_dir, idx_dir=cfg.data.idx_dir)
  x = x[:max_images] if max_images else x
  feats = evaluate.extract_features(lambda im: encode(variables, im), x, batch_size=int(cfg.eval.batch_size))
  eig = normalized_centred_spectrum(np.asarray(feats))
  return {"n_images": int(len(x)), "spectrum_r": [float(v) for v in eig], "collapsed_r": collapsed_counts(eig),
          "effective_rank_r": entropy_effective_rank(eig)}


def seeded_claims(rows: list[dict], seeds) -> dict:
  """The per-seed claims of the docstring from rows {variant, seed, test: test_set_spectrum, ...}."""
  by = {(r["variant"], r["seed"]): r for r in rows}
  variants = sorted({r["variant"] for r in rows})
  out: dict = {}
  if "none" in variants:
    for thr in (f"{t:g}" for t in TEST_THRESHOLDS):
      for v in [x for x in ("mlp", "linear") if x in variants]:
        out[f"seeded_no_projector_r_collapses_more_than_{v}_at_{thr}"] = all(
            by[("none", s)]["test"]["collapsed_r"][thr] > by[(v, s)]["test"]["collapsed_r"][thr] for s in seeds)
      if "directclr" in variants:
        out[f"seeded_directclr_fewer_collapsed_than_no_projector_at_{thr}"] = all(
            by[("directclr", s)]["test"]["collapsed_r"][thr] < by[("none", s)]["test"]["collapsed_r"][thr]
            for s in seeds)
    for v in [x for x in ("mlp", "linear", "directclr") if x in variants]:
      out[f"seeded_erank_r_none_below_{v}"] = all(
          by[("none", s)]["test"]["effective_rank_r"] < by[(v, s)]["test"]["effective_rank_r"] for s in seeds)
  if {"mlp", "directclr"} <= set(variants):
    diffs = [by[("mlp", s)]["linear_probe"] - by[("directclr", s)]["linear_probe"] for s in seeds]
    out["accuracy_mlp_minus_directclr"] = rc.paired(diffs)
  for v in [x for x in ("mlp", "linear", "directclr") if x in variants and "none" in variants]:
    diffs = [by[(v, s)]["linear_probe"] - by[("none", s)]["linear_probe"] for s in seeds]
    out[f"accuracy_{v}_minus_none"] = rc.paired(diffs)
  if "mlp" in variants and all("dim_z" in by[("mlp", s)] for s in seeds):
    diffs = [by[("mlp", s)]["effective_rank_r"] / by[("mlp", s)]["dim_r"]
             - by[("mlp", s)]["effective_rank_z"] / by[("mlp", s)]["dim_z"] for s in seeds]
    out["seeded_mlp_erank_fraction_r_minus_z"] = rc.paired(diffs)
  return out


def seeded_summary(rows: list[dict], variants) -> dict:
  """{variant: {metric: mean_sd}} over seeds, with the test-set counts per threshold."""
  out = {}
  for v in variants:
    sel = [r for r in rows if r["variant"] == v]
    per = {m: rc.mean_sd([r[m] for r in sel]) for m in ("linear_probe", "knn_200", "effective_rank_z",
                                                         "effective_rank_r")}
    per["test_effective_rank_r"] = rc.mean_sd([r["test"]["effective_rank_r"] for r in sel])
    for thr in (f"{t:g}" for t in TEST_THRESHOLDS):
      per[f"test_collapsed_r_{thr}"] = rc.mean_sd([r["test"]["collapsed_r"][thr] for r in sel])
    out[v] = per
  return out


def seeded_table(result: dict) -> list[str]:
  thr = [f"{t:g}" for t in TEST_THRESHOLDS]
  head = ("| variant | seed | linear probe (%) | kNN-200 (%) | eff. rank r (test, float64) | "
          + " | ".join(f"collapsed r < {t}·max" for t in thr) + " | eff. rank z | wall (s) |")
  lines = [head, "|" + "---|" * (7 + len(thr))]
  for r in sorted(result["rows"], key=lambda r: (VARIANTS.index(r["variant"]), r["seed"])):
    t = r["test"]
    lines.append(f"| {LABELS[r['variant']]} | {r['seed']} | {rc.fmt(r['linear_probe'])} | {rc.fmt(r['knn_200'])} | "
                 f"{t['effective_rank_r']:.1f} | " + " | ".join(str(t["collapsed_r"][x]) for x in thr)
                 + f" | {rc.fmt(r['effective_rank_z'])} | {r['seconds']:.0f} |")
  for v, per in result["summary"].items():
    lines.append(f"| {LABELS[v]}, mean ± sd | {len(result['seeds'])} seeds | {rc.pm(per['linear_probe'])} | "
                 f"{rc.pm(per['knn_200'])} | {rc.pm(per['test_effective_rank_r'], 1)} | "
                 + " | ".join(rc.pm(per[f"test_collapsed_r_{x}"], 1) for x in thr)
                 + f" | {rc.pm(per['effective_rank_z'])} | |")
  c = result["claims"]
  lines += ["", "| paired probe difference | per seed | mean ± sd | result |", "|---|---|---|---|"]
  for key, label in (("accuracy_mlp_minus_directclr", "MLP − DirectCLR"), ("accuracy_mlp_minus_none", "MLP − none"),
                     ("accuracy_linear_minus_none", "linear − none"), ("accuracy_directclr_minus_none",
                                                                       "DirectCLR − none")):
    if key in c:
      lines.append(f"| {label} | {', '.join(f'{d:+.2f}' for d in c[key]['diffs'])} | {rc.pm(c[key])} | "
                   f"{c[key]['result']} |")
  f = c.get("seeded_mlp_erank_fraction_r_minus_z")
  if f:
    mlp = result["summary"]["mlp"]
    lines += ["", "| MLP projector | eff. rank z | eff. rank r | per seed: r / dim r − z / dim z | mean ± sd | result |",
              "|---|---|---|---|---|---|",
              f"| dims z {mlp_dims(result)[0]}, r {mlp_dims(result)[1]} | {rc.pm(mlp['effective_rank_z'], 1)} | "
              f"{rc.pm(mlp['effective_rank_r'], 1)} | {', '.join(f'{d:+.3f}' for d in f['diffs'])} | {rc.pm(f, 3)} | "
              f"{f['result']} |"]
  return lines


def mlp_dims(result: dict) -> tuple[int, int]:
  """(dim z, dim r) of the seeded MLP rows."""
  (row, *_) = [r for r in result["rows"] if r["variant"] == "mlp"]
  return int(row["dim_z"]), int(row["dim_r"])


def write_seeded_outputs(result: dict, out: str) -> None:
  """results.json and table.md of the seeded protocol, the summary and claims recomputed from the rows."""
  result["summary"] = seeded_summary(result["rows"], result["variants"])
  result["claims"] = seeded_claims(result["rows"], result["seeds"])
  rc.write_outputs(out, result, [(TITLE + f", seeds {','.join(map(str, result['seeds']))}, r on the test set",
                                  seeded_table(result))])


def run_seeded(args, variants, seeds) -> int:
  t0 = time.time()
  rows = []
  for seed in seeds:
    for name in variants:
      cfg = variant_config(name, args, seed=int(seed))
      wd = os.path.join(args.out, f"{name}_seed{seed}")
      row = rc.run_one(cfg, wd, variant=name, seed=int(seed), projector=cfg.model.projector.get("kind", "mlp"))
      rc.record_wall_time(row, wd)
      sp = rc.final_spectra(wd)
      row.update(dim_z=len(sp.get("spectrum_z", [])), dim_r=len(sp.get("spectrum_r", [])))
      cached = os.path.join(wd, "test_spectrum.json")
      if os.path.exists(cached):   # the spectrum is stored; what is derived from it is recomputed
        with open(cached) as f:
          stored = json.load(f)
        row["test"] = {"n_images": stored["n_images"], "spectrum_r": stored["spectrum_r"],
                       "collapsed_r": collapsed_counts(stored["spectrum_r"]),
                       "effective_rank_r": entropy_effective_rank(stored["spectrum_r"])}
      else:
        row["test"] = test_set_spectrum(wd)
        with open(cached, "w") as f:
          json.dump(row["test"], f)
      rows.append(row)
  result = {"steps": args.steps, "batch": args.batch, "probe_epochs": args.probe_epochs, "quick": args.quick,
            "seeds": list(seeds), "variants": list(variants), "thresholds": list(TEST_THRESHOLDS),
            "spectrum": "r on the test split, rows L2-normalised, covariance centred, float64 numpy.linalg.eigh",
            "rows": rows, "seconds": time.time() - t0}
  write_seeded_outputs(result, args.out)
  panel = {}
  for r in rows:
    panel[f"{LABELS[r['variant']]}, seed {r['seed']}"] = {
        "eig": r["test"]["spectrum_r"], "color": f"C{VARIANTS.index(r['variant'])}",
        "ls": ("-", "--", ":", "-.")[list(seeds).index(r["seed"]) % 4]}
  rc.plot_spectra_panels({"r on the test set (L2-normalised, centred, float64)": panel},
                         os.path.join(args.out, "spectra.png"),
                         suptitle=f"Jing et al. 2022 at Fashion-MNIST scale: spectra of r after {args.steps} steps")
  return 0


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--out", default="runs/dimensional_collapse")
  rc.add_common_args(ap, steps=2000)
  ap.add_argument("--variants", default=",".join(VARIANTS), help=f"subset of {','.join(VARIANTS)}")
  ap.add_argument("--seeds", type=rc.ints, default=None,
                  help="config.seed values: train every variant per seed and measure r on the test set "
                       "(the seeded protocol of the docstring)")
  ap.add_argument("--replot", action="store_true",
                  help="seeded protocol only: rebuild table.md, the summary and claims from --out/results.json")
  args = ap.parse_args(argv)
  if args.replot:
    return rc.replot(args.out, write_seeded_outputs)
  rc.apply_quick(args)
  variants = [v for v in args.variants.split(",") if v]
  unknown = [v for v in variants if v not in VARIANTS]
  if unknown:
    ap.error(f"--variants: unknown {unknown}; choose from {list(VARIANTS)}")
  os.makedirs(args.out, exist_ok=True)
  if args.seeds is not None:
    rc.reject_repeated_seeds(ap, "--seeds", args.seeds)
    return run_seeded(args, variants, args.seeds)
  t0 = time.time()

  rows, spectra = {}, {}
  for name in variants:
    cfg = variant_config(name, args)
    wd = os.path.join(args.out, name)
    row = rc.run_one(cfg, wd, variant=name, projector=cfg.model.projector.get("kind", "mlp"))
    sp = rc.final_spectra(wd)
    dz, dr = len(sp.get("spectrum_z", [])), len(sp.get("spectrum_r", []))
    row.update(dim_z=dz, dim_r=dr,
               erank_z_frac=row["effective_rank_z"] / dz if dz else float("nan"),
               erank_r_frac=row["effective_rank_r"] / dr if dr else float("nan"))
    rows[name], spectra[name] = row, sp
  add_collapsed_dims(rows, spectra)

  panel_r, panel_z = {}, {}
  for i, name in enumerate(variants):
    sp = spectra[name]
    if not sp:
      continue
    panel_r[LABELS[name]] = {"eig": sp["spectrum_r"], "color": f"C{i}"}
    if rows[name]["projector"] != "identity":   # z differs from r only with a projector
      panel_z[LABELS[name]] = {"eig": sp["spectrum_z"], "color": f"C{i}"}
  panels = {"backbone representation r": panel_r}
  if panel_z:
    panels["projector output z (where z ≠ r)"] = panel_z
  step = max((sp.get("step", 0) for sp in spectra.values()), default=0)
  rc.plot_spectra_panels(panels, os.path.join(args.out, "spectra.png"),
                         suptitle=f"Jing et al. 2022 at Fashion-MNIST scale: embedding spectra (step {step})")

  result = {"steps": args.steps, "batch": args.batch, "probe_epochs": args.probe_epochs, "quick": args.quick,
            "rows": [rows[v] for v in variants],
            "claims": claims(rows) if set(VARIANTS) <= set(rows) else {},
            "spectra": spectra, "seconds": time.time() - t0}
  rc.write_outputs(args.out, result, [(TITLE, rc.markdown_table(result["rows"], COLUMNS))])
  return 0


if __name__ == "__main__":
  sys.exit(main())
