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

    python experiments/dimensional_collapse.py --out runs/dimensional_collapse [--steps 2000]
        [--batch 256] [--probe-epochs 30] [--quick]

Writes results.json, table.md and spectra.png to --out (one workdir per variant inside).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import reproduce_common as rc

# name -> (config file, overrides, legend label)
VARIANTS = ("mlp", "linear", "none", "directclr")
LABELS = {"mlp": "SimCLR, MLP projector", "linear": "SimCLR, linear projector",
          "none": "SimCLR, no projector", "directclr": "DirectCLR"}


def variant_config(name: str, args):
  if name == "mlp":
    return rc.make_config("simclr", args)
  if name == "linear":
    out_dim = 8 if args.quick else 128
    return rc.make_config("simclr", args, **{"model.projector": dict(kind="linear", out_dim=out_dim)})
  if name == "none":
    return rc.make_config("simclr", args, **{"model.projector": dict(kind="identity")})
  if name == "directclr":
    return rc.make_config("directclr", args)
  raise ValueError(name)


# An eigenvalue below this fraction of the largest counts as a collapsed dimension.
COLLAPSED_EIG_FRACTION = 1e-6


def collapsed_dims(eigs) -> int:
  """Number of eigenvalues below COLLAPSED_EIG_FRACTION x the largest (0 for an empty spectrum)."""
  import numpy as np
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


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--out", default="runs/dimensional_collapse")
  rc.add_common_args(ap, steps=2000)
  ap.add_argument("--variants", default=",".join(VARIANTS), help=f"subset of {','.join(VARIANTS)}")
  args = ap.parse_args(argv)
  rc.apply_quick(args)
  variants = [v for v in args.variants.split(",") if v]
  os.makedirs(args.out, exist_ok=True)
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
