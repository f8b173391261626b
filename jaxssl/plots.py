"""Matplotlib (Agg) figures written as PNG files.

Every plot function writes `path` (creating its folder) and returns the path; with
`return_fig=True` it returns `(path, fig)` instead, leaving the figure open so that its data
can be inspected (e.g. `fig.axes[0].lines[i].get_ydata()`), otherwise the figure is closed.
`save_figure` is how they save, and how the experiment scripts save their own figures.
"""
from __future__ import annotations

import math
import os
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from jaxssl.errors import ConfigError  # noqa: E402
from jaxssl.logging_utils import read_metrics  # noqa: E402

EIG_FLOOR = 1e-12
DEFAULT_CURVE_KEYS = ("loss", "effective_rank", "effective_rank_z", "effective_rank_r", "uniformity",
                      "alignment", "probe_acc")
_NOT_METRICS = ("step", "member", "time", "wall_time", "epoch")
DPI = 120


def save_figure(fig: Figure, path: str, *, dpi: int = DPI, bbox_inches: str | None = None,
                close: bool = True) -> str:
  """Saves `fig` to `path` and returns `path`.

  Creates the parent directory of `path` if needed; the format follows the file's
  extension (`Figure.savefig`). `dpi` is the resolution (jaxssl's figures use 120);
  `bbox_inches="tight"` crops the saved image to what is drawn, None (the default) keeps
  the figure's size. With `close=True` (the default) the figure is closed afterwards
  (`plt.close`), so that a script making many figures does not keep them all in memory;
  `close=False` leaves it open, e.g. to inspect its data.
  """
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=dpi, bbox_inches=bbox_inches)
  if close:
    plt.close(fig)
  return path


def _finish(fig: Figure, path: str, return_fig: bool) -> str | tuple[str, Figure]:
  save_figure(fig, path, bbox_inches="tight", close=not return_fig)
  return (path, fig) if return_fig else path


def _scalar(v: Any) -> float | None:
  if isinstance(v, bool) or v is None:
    return None
  if isinstance(v, (int, float, np.number)) or (isinstance(v, np.ndarray) and v.ndim == 0):
    return float(v)
  return None


def plot_spectra(spectra: Mapping[int | str, Any], path: str, *, title: str = "",
                 floor: float = EIG_FLOOR, return_fig: bool = False):
  """log10(eigenvalue) vs rank (1-based), one curve per entry of `spectra`.

  Keys are training steps (int, legend "step N", coloured by step) or labels (str, e.g.
  methods). Eigenvalues are sorted in descending order and clamped to `floor` before the log,
  so exactly-collapsed directions show as log10(floor).
  """
  if not spectra:
    raise ConfigError("plot_spectra needs at least one spectrum")
  fig, ax = plt.subplots(figsize=(6, 4.2))
  keys = list(spectra.keys())
  int_keys = all(isinstance(k, (int, np.integer)) for k in keys)
  if int_keys:
    keys = sorted(keys)
    cmap = plt.get_cmap("viridis")
    colors = [cmap(i / max(1, len(keys) - 1)) for i in range(len(keys))]
  else:
    colors = [None] * len(keys)
  for k, c in zip(keys, colors):
    eig = np.sort(np.asarray(spectra[k], np.float64).ravel())[::-1]
    y = np.log10(np.maximum(eig, floor))
    ax.plot(np.arange(1, len(y) + 1), y, color=c, label=f"step {k}" if int_keys else str(k))
  ax.set_xlabel("rank")
  ax.set_ylabel("log10(eigenvalue)")
  if title:
    ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  return _finish(fig, path, return_fig)


def plot_training_curves(records: Sequence[Mapping[str, Any]], path: str, *,
                         keys: Sequence[str] = DEFAULT_CURVE_KEYS, title: str = "",
                         return_fig: bool = False):
  """One subplot per key of `keys` that some record has as a finite scalar: value vs "step".

  `records` are metrics.jsonl records (dicts with "step" and scalar metrics); records missing a
  key are skipped for that key. If none of `keys` is present, every scalar metric of the
  records is plotted. Returns the path (or (path, fig)); raises ConfigError if there is none.
  """
  def series(key):
    pts = [(float(r["step"]), _scalar(r[key])) for r in records if "step" in r and key in r]
    return [(s, v) for s, v in pts if v is not None and math.isfinite(v)]

  present = [(k, series(k)) for k in keys]
  present = [(k, pts) for k, pts in present if pts]
  if not present:   # fall back to every scalar metric in the records
    found = list(dict.fromkeys(k for r in records for k in r if k not in _NOT_METRICS))
    present = [(k, pts) for k, pts in ((k, series(k)) for k in found) if pts]
  if not present:
    raise ConfigError(f"no scalar metric (of {list(keys)} or any other) with a 'step' in the records")
  n = len(present)
  cols = min(3, n)
  rows = math.ceil(n / cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
  for ax in axes.ravel()[n:]:
    ax.remove()
  for ax, (key, pts) in zip(axes.ravel(), present):
    pts.sort()
    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 30 else None)
    ax.set_title(key)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  return _finish(fig, path, return_fig)


def plot_sweep(rows: Sequence[Mapping[str, Any]], x_key: str, y_keys: Sequence[str], path: str, *,
               logx: bool = False, title: str = "", return_fig: bool = False):
  """Metrics vs a swept hyperparameter: one subplot per y key, points sorted by x.

  Rows lacking x_key or a y key (or with a non-scalar value) are skipped for that subplot.
  """
  if isinstance(y_keys, str):
    y_keys = [y_keys]
  if not y_keys:
    raise ConfigError("plot_sweep needs at least one y key")
  n = len(y_keys)
  fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4), squeeze=False)
  for ax, yk in zip(axes[0], y_keys):
    pts = [(_scalar(r.get(x_key)), _scalar(r.get(yk))) for r in rows]
    pts = sorted((x, y) for x, y in pts if x is not None and y is not None)
    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o")
    if logx:
      ax.set_xscale("log")
    ax.set_xlabel(x_key)
    ax.set_title(yk)
    ax.grid(alpha=0.3)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  return _finish(fig, path, return_fig)


def plot_criteria_vs_probe(rows: Sequence[Mapping[str, Any]], criteria: Sequence[str], path: str, *,
                           probe_key: str = "linear_probe", rho: Mapping[str, float] | None = None,
                           return_fig: bool = False):
  """Each label-free criterion (x) against the linear probe (y), one panel each, one point per
  sweep member labelled by its index; `rho` (Spearman's rank correlation) goes in the titles."""
  n = len(criteria)
  if not n:
    raise ConfigError("plot_criteria_vs_probe needs at least one criterion")
  fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.6), squeeze=False)
  for ax, key in zip(axes[0], criteria):
    pts = [(_scalar(r.get(key)), _scalar(r.get(probe_key)), r.get("member")) for r in rows]
    pts = [p for p in pts if p[0] is not None and p[1] is not None]
    ax.scatter([p[0] for p in pts], [p[1] for p in pts])
    for x, y, m in pts:
      ax.annotate(str(m), (x, y), textcoords="offset points", xytext=(3, 3), fontsize=8)
    r = (rho or {}).get(key)
    ax.set_title(f"{key}: Spearman rho = {r:.2f}" if r is not None and np.isfinite(r) else key)
    ax.set_xlabel(key)
    ax.set_ylabel(f"{probe_key} (%)")
    ax.grid(alpha=0.3)
  fig.tight_layout()
  return _finish(fig, path, return_fig)


def plot_workdir(workdir: str) -> list[str]:
  """spectrum_z.png, spectrum_r.png (log-eigenvalue vs rank at several logged steps) and
  training_curves.png from a run's metrics.jsonl. Sweeps get one set per member."""
  records = read_metrics(workdir)
  if not records:
    return []
  paths = []
  members = sorted({r["member"] for r in records if "member" in r}) or [None]
  for m in members:
    recs = [r for r in records if r.get("member") == m]
    tag = "" if m is None else f"_member{m}"
    for key in ("spectrum_z", "spectrum_r"):
      logged = [r for r in recs if key in r]
      if not logged:
        continue
      idx = np.unique(np.linspace(0, len(logged) - 1, min(6, len(logged))).round().astype(int))
      spectra = {int(logged[i]["step"]): np.asarray(logged[i][key]) for i in idx}
      what = "projector output z" if key == "spectrum_z" else "backbone representation r"
      out = plot_spectra(spectra, os.path.join(workdir, f"{key}{tag}.png"),
                         title=f"Embedding spectrum of {what}")
      paths.append(out[0] if isinstance(out, tuple) else out)
    keys = [k for k in ("loss", "effective_rank_z", "effective_rank_r", "uniformity", "alignment", "probe_acc")
            if any(k in r for r in recs)]
    out = plot_training_curves(recs, os.path.join(workdir, f"training_curves{tag}.png"), keys=tuple(keys))
    paths.append(out[0] if isinstance(out, tuple) else out)
  return paths
