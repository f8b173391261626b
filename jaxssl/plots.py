"""Matplotlib (Agg) figures written as PNG files.

Every plot function writes `path` (creating its folder) and returns the path; with
`return_fig=True` it returns `(path, fig)` instead, leaving the figure open so that its data
can be inspected (e.g. `fig.axes[0].lines[i].get_ydata()`), otherwise the figure is closed.
`save_figure` is how they save, and how the experiment scripts save their own figures.

A run's figures (`plot_workdir`): spectrum_z.png / spectrum_r.png (log-eigenvalue vs rank at
several logged steps, each curve labelled with its effective rank), training_curves.png (one
panel per metric of `CURVES`, titled and with a y label in its units) and, when the run has
an eval.json, eval_vs_baselines.png (`plot_eval_workdir`).
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from jaxssl import diagnostics  # noqa: E402
from jaxssl.errors import ConfigError  # noqa: E402
from jaxssl.logging_utils import read_metrics  # noqa: E402

EIG_FLOOR = 1e-12
_NOT_METRICS = ("step", "member", "time", "wall_time", "epoch")
DPI = 120


class Curve(NamedTuple):
  """How a logged metric is drawn: panel title, y label (with units) and a factor on the values."""
  title: str
  ylabel: str
  scale: float = 1.0


# The metrics.jsonl keys that training_curves.png knows (from `jaxssl.step`, `jaxssl.monitor`); any other key
# gets `Curve(key, key)`.
CURVES: dict[str, Curve] = {
    "loss": Curve("training loss", "loss (method's objective)"),
    "lr": Curve("learning rate (warm-up + cosine)", "learning rate"),
    "probe_acc": Curve("online linear probe accuracy", "online probe, train batch (%)", 100.0),
    "probe_loss": Curve("online linear probe loss", "cross-entropy, train batch (nats)"),
    # the kNN monitor (config.eval.monitor_every), already in percent
    "monitor/knn_20": Curve("kNN monitor, k = 20", "weighted kNN, test subset (%)"),
    "monitor/knn_200": Curve("kNN monitor, k = 200", "weighted kNN, test subset (%)"),
    "effective_rank": Curve("effective rank", "effective rank (dimensions)"),
    "effective_rank_z": Curve("effective rank of z (projector)", "effective rank (dimensions)"),
    "effective_rank_r": Curve("effective rank of r (backbone)", "effective rank (dimensions)"),
    "rankme_z": Curve("RankMe of z (projector)", "RankMe (dimensions)"),
    "rankme_r": Curve("RankMe of r (backbone)", "RankMe (dimensions)"),
    "norm_z": Curve("norm of z (collapse to 0?)", "RMS row norm |z|"),
    "uniformity": Curve("uniformity of z/|z| (higher: more uniform)", "-L_unif (t = 2, nats)"),
    "alignment": Curve("alignment of positive pairs (lower: closer)", "mean |u1 - u2|^2, u = z/|z|"),
    "grad_norm": Curve("gradient norm", "global L2 norm"),
    "images_per_sec": Curve("throughput", "images / s"),
}
DEFAULT_CURVE_KEYS = ("loss", "lr", "probe_acc", "monitor/knn_20", "monitor/knn_200", "effective_rank",
                      "effective_rank_z", "effective_rank_r", "norm_z", "uniformity", "alignment")


def curve(key: str) -> Curve:
  """The `Curve` of a metrics.jsonl key; an unknown key is titled and labelled by its name."""
  return CURVES.get(key, Curve(key, key))


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
                 effective_ranks: Mapping[int | str, float] | None = None, floor: float = EIG_FLOOR,
                 return_fig: bool = False):
  """log10(eigenvalue) vs rank (1-based), one curve per entry of `spectra`.

  Keys are training steps (int, legend "step N", coloured by step) or labels (str, e.g.
  methods). Eigenvalues are sorted in descending order and clamped to `floor` before the log,
  so exactly-collapsed directions show as log10(floor). Each legend entry ends with the curve's
  effective rank ("eff. rank 54.6"): `effective_ranks[key]` where given (the value logged with
  the spectrum), else `diagnostics.effective_rank` of the eigenvalues.
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
    rank = (effective_ranks or {}).get(k)
    rank = float(diagnostics.effective_rank(eig)) if rank is None else float(rank)
    y = np.log10(np.maximum(eig, floor))
    name = f"step {k}" if int_keys else str(k)
    ax.plot(np.arange(1, len(y) + 1), y, color=c, label=f"{name}: eff. rank {rank:.1f}")
  ax.set_xlabel("rank (eigenvalues in descending order)")
  ax.set_ylabel("log10(eigenvalue)")
  if title:
    ax.set_title(title, fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  return _finish(fig, path, return_fig)


class Panel(NamedTuple):
  """One panel of training_curves.png: the metric's key, title, y label and its points."""
  key: str
  title: str
  ylabel: str
  steps: np.ndarray      # [N], ascending
  values: np.ndarray     # [N], the logged values times `Curve.scale`


def curve_panels(records: Sequence[Mapping[str, Any]],
                 keys: Sequence[str] = DEFAULT_CURVE_KEYS) -> list[Panel]:
  """The panels of `plot_training_curves`: one per key of `keys` that some record has as a
  finite scalar, in the order of `keys`; if there is none, one per scalar metric of the records.

  Records missing a key (or with a non-finite value) are skipped for that key. Values are
  multiplied by the key's `Curve.scale` (probe_acc: fraction -> %).
  """
  def panel(key: str) -> Panel | None:
    pts = [(float(r["step"]), _scalar(r[key])) for r in records if "step" in r and key in r]
    pts = sorted((s, v) for s, v in pts if v is not None and math.isfinite(v))
    if not pts:
      return None
    c = curve(key)
    steps, values = np.array(pts, np.float64).T
    return Panel(key, c.title, c.ylabel, steps, values * c.scale)

  panels = [p for p in map(panel, keys) if p is not None]
  if not panels:   # fall back to every scalar metric in the records
    found = dict.fromkeys(k for r in records for k in r if k not in _NOT_METRICS)
    panels = [p for p in map(panel, found) if p is not None]
  return panels


def plot_training_curves(records: Sequence[Mapping[str, Any]], path: str, *,
                         keys: Sequence[str] = DEFAULT_CURVE_KEYS, title: str = "",
                         return_fig: bool = False):
  """The `curve_panels` of `records` (metrics.jsonl records), value vs "step", up to 4 a row.

  Returns the path (or (path, fig)); raises ConfigError if there is no panel.
  """
  panels = curve_panels(records, keys)
  if not panels:
    raise ConfigError(f"no scalar metric (of {list(keys)} or any other) with a 'step' in the records")
  n = len(panels)
  cols = min(4, n)
  rows = math.ceil(n / cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 3.1 * rows), squeeze=False)
  for ax in axes.ravel()[n:]:
    ax.remove()
  for ax, p in zip(axes.ravel(), panels):
    ax.plot(p.steps, p.values, marker="." if len(p.steps) < 30 else None)
    ax.set_title(p.title, fontsize=10)
    ax.set_xlabel("step")
    ax.set_ylabel(p.ylabel)
    if 0 < np.max(np.abs(p.values)) < 1e-2:   # e.g. lr: 0.0003 on each tick, no "1e-3" over the title
      ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:.3g}"))
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


# eval.json rows (`jaxssl.evaluate.evaluate_encoder`) and their bar labels; other rows keep their key.
EVAL_ROWS = {"model": "this run", "raw_pixels": "raw pixels", "random_init": "random-init encoder"}


def eval_bar_data(results: Mapping[str, Any]) -> tuple[list[str], list[str], np.ndarray]:
  """(metrics, rows, values [rows, metrics]) of eval.json's test accuracies (%).

  Rows are eval.json's per-encoder entries ("model", then the baselines "raw_pixels",
  "random_init" if present); metrics are "linear_probe" and the "knn_<k>" accuracies (k
  descending) that some row has. A metric a row lacks is NaN.
  """
  rows = [k for k, v in results.items() if isinstance(v, Mapping)]
  rows.sort(key=lambda k: (k != "model", k not in EVAL_ROWS))   # the model first, known baselines next
  found = {m for k in rows for m, v in results[k].items() if _scalar(v) is not None}
  knn = sorted((m for m in found if m.startswith("knn_") and m[4:].isdigit()), key=lambda m: -int(m[4:]))
  metrics = (["linear_probe"] if "linear_probe" in found else []) + knn

  def value(row: str, metric: str) -> float:
    v = _scalar(results[row].get(metric))
    return np.nan if v is None else v
  values = np.array([[value(k, m) for m in metrics] for k in rows], np.float64).reshape(len(rows), len(metrics))
  return metrics, rows, values


def _metric_label(metric: str) -> str:
  return "linear probe" if metric == "linear_probe" else f"weighted kNN, k = {metric[4:]}"


def plot_eval_vs_baselines(results: Mapping[str, Any], path: str, *, title: str = "",
                           model_label: str = EVAL_ROWS["model"], return_fig: bool = False):
  """Grouped bars of eval.json's test accuracies (`eval_bar_data`): one group per metric, one
  bar per encoder (this run, raw pixels, random-init encoder), each with its value written on it.

  `model_label` names the "model" row in the legend. The y axis starts at a round value below
  the lowest accuracy (never below 0), so that differences of a few points stay visible; the
  numbers on the bars are exact. Raises ConfigError if `results` has no accuracy.
  """
  metrics, rows, values = eval_bar_data(results)
  if not metrics or not np.isfinite(values).any():
    raise ConfigError("plot_eval_vs_baselines: no accuracy (linear_probe, knn_<k>) in the results")
  fig, ax = plt.subplots(figsize=(max(6.5, 1.0 + 2.2 * len(metrics)), 4.2))
  width = 0.8 / len(rows)
  colors = {"model": "C0", "raw_pixels": "0.55", "random_init": "C1"}
  x = np.arange(len(metrics))
  for i, row in enumerate(rows):
    label = model_label if row == "model" else EVAL_ROWS.get(row, row)
    bars = ax.bar(x + (i - (len(rows) - 1) / 2) * width, np.nan_to_num(values[i], nan=0.0), width * 0.92,
                  label=label, color=colors.get(row, f"C{i + 2}"), gid=row)
    ax.bar_label(bars, labels=[f"{v:.2f}" if np.isfinite(v) else "" for v in values[i]], padding=2,
                 fontsize=8)
  lo, hi = np.nanmin(values), np.nanmax(values)
  ax.set_ylim(max(0.0, 10.0 * math.floor((lo - 5.0) / 10.0)), min(100.0, hi) + 0.12 * max(hi - lo, 10.0))
  ax.set_xticks(x, [_metric_label(m) for m in metrics])
  ax.set_ylabel("test accuracy (%)")
  ax.set_title(title or "test accuracy vs baselines", fontsize=10)
  ax.grid(axis="y", alpha=0.3)
  ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=len(rows), frameon=False)
  return _finish(fig, path, return_fig)


def _run_name(workdir: str) -> tuple[str, str]:
  """(the workdir's basename, the run's method from its config.json or "")."""
  name = os.path.basename(os.path.normpath(os.path.abspath(workdir)))
  try:
    with open(os.path.join(workdir, "config.json")) as f:
      method = str(json.load(f).get("method", ""))
  except (OSError, ValueError, AttributeError):
    method = ""
  return name, method


def plot_eval_workdir(workdir: str, *, on_error: Callable[[str], None] | None = None) -> str | None:
  """eval_vs_baselines.png from a run's eval.json (`plot_eval_vs_baselines`), titled with the
  run's name, method and step; None when the workdir has no eval.json.

  With `on_error` (e.g. `jaxssl.loop.log`), a failure is reported to it as a warning and None
  is returned instead of raising: the end of a training run calls it so, as a figure must
  never lose a finished run.
  """
  src = os.path.join(workdir, "eval.json")
  if not os.path.exists(src):
    return None
  try:
    with open(src) as f:
      results = json.load(f)
    name, method = _run_name(workdir)
    step = results.get("step")
    title = f"{name}" + (f" ({method})" if method else "") + (f", step {step}" if step is not None else "")
    what = ("test accuracy vs baselines" if len(eval_bar_data(results)[1]) > 1
            else "test accuracy (eval.json has no baselines)")
    return plot_eval_vs_baselines(results, os.path.join(workdir, "eval_vs_baselines.png"),
                                  title=f"{title}: {what}",
                                  model_label=f"{method or 'this run'} (this run)")
  except Exception as e:  # noqa: BLE001 - reported to on_error, or raised
    if on_error is None:
      raise
    on_error(f"warning: plotting {src} failed: {e}")
    return None


def plot_workdir(workdir: str) -> list[str]:
  """A run's figures: spectrum_z.png, spectrum_r.png and training_curves.png from its
  metrics.jsonl (a sweep: one set per member, `_member<i>`), and eval_vs_baselines.png from its
  eval.json (`plot_eval_workdir`). Returns the paths written."""
  records = read_metrics(workdir)
  paths = []
  name, method = _run_name(workdir)
  members = sorted({r["member"] for r in records if "member" in r}) or [None]
  for m in members if records else []:
    recs = [r for r in records if r.get("member") == m]
    tag = "" if m is None else f"_member{m}"
    run = name + (f" ({method})" if method else "") + ("" if m is None else f", member {m}")
    for key in ("spectrum_z", "spectrum_r"):
      logged = [r for r in recs if key in r]
      if not logged:
        continue
      idx = np.unique(np.linspace(0, len(logged) - 1, min(6, len(logged))).round().astype(int))
      chosen = [logged[i] for i in idx]
      rank_key = key.replace("spectrum", "effective_rank")   # logged with the spectrum
      spectra = {int(r["step"]): np.asarray(r[key]) for r in chosen}
      ranks = {int(r["step"]): float(r[rank_key]) for r in chosen if _scalar(r.get(rank_key)) is not None}
      what = "projector output z" if key == "spectrum_z" else "backbone representation r"
      dim = len(chosen[-1][key])
      out = plot_spectra(spectra, os.path.join(workdir, f"{key}{tag}.png"), effective_ranks=ranks,
                         title=f"{run}: spectrum of the {what} ({dim}-d)")
      paths.append(out[0] if isinstance(out, tuple) else out)
    out = plot_training_curves(recs, os.path.join(workdir, f"training_curves{tag}.png"), title=run)
    paths.append(out[0] if isinstance(out, tuple) else out)
  evaluated = plot_eval_workdir(workdir)
  return paths + ([evaluated] if evaluated else [])
