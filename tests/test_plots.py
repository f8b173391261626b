"""The figures of a run (jaxssl.plots): the numbers they draw, their titles and labels."""
import json
import math
import os

import matplotlib.pyplot as plt
import numpy as np
import pytest

from jaxssl import cli
from jaxssl import diagnostics
from jaxssl import plots

MAIN_EVAL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "figures", "main",
                         "eval.json")
FMNIST = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"


def _erank(eig) -> float:
  """Effective rank written out in numpy (the definition of diagnostics.effective_rank)."""
  sigma = np.sqrt(np.maximum(np.asarray(eig, np.float64), 0.0))
  p = sigma[sigma > 0] / sigma.sum()
  return float(np.exp(-np.sum(p * np.log(p))))


def _records(member=None):
  """metrics.jsonl records as `jaxssl.sweep.run_records` writes them: diagnostics every 2nd step."""
  rng = np.random.default_rng(0 if member is None else member + 1)
  out = []
  for step in range(0, 12):
    rec = {"step": step, "loss": 5.0 - 0.1 * step, "lr": 1e-3 * min(1.0, (step + 1) / 4) * (1 - step / 12),
           "probe_acc": float(rng.uniform(0.1, 0.9)), "probe_loss": 2.0, "grad_norm": 1.0,
           "images_per_sec": 1000.0, "wall_time": 1.0e9 + step}
    if member is not None:
      rec = {"member": member, "hp/loss.temperature": 0.1 * (member + 1), **rec}
    if step % 2 == 0:
      eig_z = np.sort(rng.exponential(1.0, 8))[::-1] * 10.0 ** -rng.uniform(0, 3, 8)
      eig_r = np.sort(rng.exponential(1.0, 16))[::-1]
      rec.update(spectrum_z=eig_z.tolist(), spectrum_r=eig_r.tolist(), effective_rank_z=_erank(eig_z) + 0.25,
                 effective_rank_r=_erank(eig_r), norm_z=1.0, uniformity=2.0, alignment=0.5, rankme_z=4.0)
    out.append(rec)
  out[4]["probe_acc"] = float("nan")          # a non-finite value is left out of its panel
  del out[2]["effective_rank_z"]               # this spectrum's rank must be computed
  return out


def _write_run(workdir, records, *, method="simclr", eval_results=None):
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in records)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump({"method": method, "seed": 0}, f)
  if eval_results is not None:
    with open(os.path.join(workdir, "eval.json"), "w") as f:
      json.dump(eval_results, f)


def _check_labelled(fig):
  for ax in fig.axes:
    assert ax.get_title().strip(), "an axis without a title"
    assert ax.get_ylabel().strip(), f"axis {ax.get_title()!r} has no y label"


@pytest.fixture
def kept_figures(monkeypatch):
  """The figures `plot_workdir` writes, kept open (by file name) instead of closed."""
  kept = {}

  def finish(fig, path, return_fig):
    kept[os.path.basename(path)] = fig
    plots.save_figure(fig, path, bbox_inches="tight", close=False)
    return (path, fig) if return_fig else path
  monkeypatch.setattr(plots, "_finish", finish)
  yield kept
  for fig in kept.values():
    plt.close(fig)


def test_curve_panels_put_probe_acc_in_percent_and_lr_as_logged():
  recs = _records()
  # The kNN monitor's records (already in %) and the final evaluation's, as jaxssl.run appends them.
  monitor = [{"step": s, "event": "monitor", "monitor/knn_20": 40.0 + s, "monitor/knn_200": 35.0 + s}
             for s in (0, 6, 12)]
  recs = recs + monitor + [{"step": 12, "event": "eval", "eval/linear_probe": 55.0, "eval/knn_20": 50.0}]
  panels = {p.key: p for p in plots.curve_panels(recs)}
  np.testing.assert_array_equal(panels["monitor/knn_20"].steps, [0, 6, 12])
  np.testing.assert_array_equal(panels["monitor/knn_20"].values, [40.0, 46.0, 52.0])
  assert panels["monitor/knn_200"].ylabel == "weighted kNN, test subset (%)"
  assert list(panels) == [k for k in plots.DEFAULT_CURVE_KEYS if k in panels]
  assert "effective_rank" not in panels and "probe_loss" not in panels   # only the default keys
  probe = [(r["step"], r["probe_acc"]) for r in recs if math.isfinite(r.get("probe_acc", math.nan))]
  np.testing.assert_array_equal(panels["probe_acc"].steps, [s for s, _ in probe])
  np.testing.assert_allclose(panels["probe_acc"].values, [100.0 * v for _, v in probe], rtol=1e-12)
  assert panels["probe_acc"].ylabel == "online probe, train batch (%)"
  np.testing.assert_array_equal(panels["lr"].values, [r["lr"] for r in recs if "lr" in r])
  assert panels["lr"].title and panels["lr"].ylabel == "learning rate"
  # Diagnostics exist on every 2nd step only; step 2 lacks effective_rank_z.
  assert list(panels["effective_rank_z"].steps) == [0, 4, 6, 8, 10]
  # An unknown key falls back to its own name; with no known key every scalar metric is drawn.
  (odd,) = plots.curve_panels([{"step": 0, "my_metric": 1.5}, {"step": 1, "my_metric": 2.5}], keys=("my_metric",))
  assert (odd.title, odd.ylabel, list(odd.values)) == ("my_metric", "my_metric", [1.5, 2.5])
  fallback = plots.curve_panels([{"step": 0, "wall_time": 5.0, "foo": 1.0}], keys=("loss",))
  assert [p.key for p in fallback] == ["foo"]


def test_training_curves_figure_draws_the_panel_data_with_titles_and_units(tmp_path):
  recs = _records()
  path, fig = plots.plot_training_curves(recs, str(tmp_path / "curves.png"), title="run", return_fig=True)
  try:
    assert os.path.getsize(path) > 0
    panels = plots.curve_panels(recs)
    assert len(fig.axes) == len(panels) == 8   # 2 rows of 4: every default key but the monitor's
    by_title = {ax.get_title(): ax for ax in fig.axes}
    for p in panels:
      ax = by_title[p.title]
      (line,) = ax.lines
      np.testing.assert_array_equal(line.get_xdata(), p.steps)
      np.testing.assert_array_equal(line.get_ydata(), p.values)
      assert ax.get_ylabel() == p.ylabel and ax.get_xlabel() == "step"
    probe_ax = by_title[plots.CURVES["probe_acc"].title]
    logged = [r["probe_acc"] for r in recs if math.isfinite(r["probe_acc"])]
    np.testing.assert_allclose(probe_ax.lines[0].get_ydata(), 100.0 * np.array(logged))
    lr_ax = by_title[plots.CURVES["lr"].title]
    np.testing.assert_array_equal(lr_ax.lines[0].get_ydata(), [r["lr"] for r in recs])
    fig.canvas.draw()
    # lr ticks read as numbers ("0.0004"), with no "1e-3" offset text over the panel's title.
    assert lr_ax.yaxis.get_offset_text().get_text() == ""
    assert any(t.get_text() == "0.0004" for t in lr_ax.get_yticklabels())
    _check_labelled(fig)
  finally:
    plt.close(fig)


def test_spectrum_legend_gives_the_logged_or_computed_effective_rank(tmp_path):
  rng = np.random.default_rng(1)
  spectra = {0: rng.exponential(1.0, 8), 10: rng.exponential(1.0, 8), 20: np.r_[np.ones(3), np.zeros(5)]}
  logged = {0: 6.54321}
  _, fig = plots.plot_spectra(spectra, str(tmp_path / "s.png"), title="t", effective_ranks=logged,
                              return_fig=True)
  try:
    (ax,) = fig.axes
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    want = {0: 6.54321, 10: _erank(spectra[10]), 20: 3.0}
    assert texts == [f"step {k}: eff. rank {v:.1f}" for k, v in want.items()]
    assert float(diagnostics.effective_rank(spectra[10])) == pytest.approx(want[10], rel=1e-5)
    # The curves are log10 of the eigenvalues, descending, clamped at the floor.
    np.testing.assert_allclose(ax.lines[2].get_ydata(), np.log10(np.maximum(np.sort(spectra[20])[::-1],
                                                                            plots.EIG_FLOOR)))
    _check_labelled(fig)
  finally:
    plt.close(fig)


def test_eval_vs_baselines_bars_are_eval_json_numbers(tmp_path):
  with open(MAIN_EVAL) as f:
    results = json.load(f)
  metrics, rows, values = plots.eval_bar_data(results)
  assert metrics == ["linear_probe", "knn_200", "knn_20"]
  assert rows == ["model", "raw_pixels", "random_init"]
  _, fig = plots.plot_eval_vs_baselines(results, str(tmp_path / "e.png"), title="t", return_fig=True)
  try:
    (ax,) = fig.axes
    for row in rows:
      bars = [p for p in ax.patches if p.get_gid() == row]
      heights = [b.get_height() for b in bars]
      np.testing.assert_allclose(heights, [results[row][m] for m in metrics], rtol=0, atol=1e-12)
    labels = [t.get_text() for t in ax.texts]
    assert labels == [f"{results[row][m]:.2f}" for row in rows for m in metrics]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["linear probe", "weighted kNN, k = 200",
                                                             "weighted kNN, k = 20"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["this run", "raw pixels",
                                                                   "random-init encoder"]
    lo, hi = ax.get_ylim()
    assert 0 <= lo < values.min() and hi > values.max()
    _check_labelled(fig)
  finally:
    plt.close(fig)


def test_eval_vs_baselines_without_baselines_or_with_a_missing_metric(tmp_path):
  results = {"step": 5, "model": {"knn_20": 40.0, "linear_probe": 30.0, "effective_rank_z": 3.0},
             "raw_pixels": {"knn_20": 80.0}}
  metrics, rows, values = plots.eval_bar_data(results)
  assert (metrics, rows) == (["linear_probe", "knn_20"], ["model", "raw_pixels"])
  np.testing.assert_array_equal(values, [[30.0, 40.0], [np.nan, 80.0]])
  _, fig = plots.plot_eval_vs_baselines(results, str(tmp_path / "e.png"), return_fig=True)
  try:
    assert [t.get_text() for t in fig.axes[0].texts] == ["30.00", "40.00", "", "80.00"]
  finally:
    plt.close(fig)
  with pytest.raises(plots.ConfigError):
    plots.plot_eval_vs_baselines({"step": 1, "model": {"effective_rank_z": 2.0}}, str(tmp_path / "x.png"))


def test_plot_workdir_names_the_run_and_method_and_draws_eval_json(tmp_path, kept_figures):
  workdir = str(tmp_path / "my_run")
  recs = _records()
  with open(MAIN_EVAL) as f:
    results = json.load(f)
  _write_run(workdir, recs, method="byol", eval_results=results)
  paths = plots.plot_workdir(workdir)
  assert [os.path.basename(p) for p in paths] == ["spectrum_z.png", "spectrum_r.png", "training_curves.png",
                                                  "eval_vs_baselines.png"]
  assert all(os.path.getsize(p) > 0 for p in paths)
  for fig in kept_figures.values():
    _check_labelled(fig)
  (ax,) = kept_figures["spectrum_z.png"].axes
  assert ax.get_title() == "my_run (byol): spectrum of the projector output z (8-d)"
  diag = [r for r in recs if "spectrum_z" in r]
  want = [r.get("effective_rank_z", _erank(r["spectrum_z"])) for r in diag]   # step 2: computed
  assert [t.get_text() for t in ax.get_legend().get_texts()] == [
      f"step {r['step']}: eff. rank {v:.1f}" for r, v in zip(diag, want)]
  (ax_r,) = kept_figures["spectrum_r.png"].axes
  assert [t.get_text() for t in ax_r.get_legend().get_texts()] == [
      f"step {r['step']}: eff. rank {r['effective_rank_r']:.1f}" for r in diag]
  assert kept_figures["training_curves.png"]._suptitle.get_text() == "my_run (byol)"
  (ax_e,) = kept_figures["eval_vs_baselines.png"].axes
  assert ax_e.get_title() == "my_run (byol), step 3000: test accuracy vs baselines"
  assert ax_e.get_legend().get_texts()[0].get_text() == "byol (this run)"
  model_bars = [p.get_height() for p in ax_e.patches if p.get_gid() == "model"]
  assert model_bars == [results["model"][m] for m in ("linear_probe", "knn_200", "knn_20")]


def test_plot_workdir_of_a_sweep_plots_each_member(tmp_path, kept_figures):
  workdir = str(tmp_path / "sweep")
  _write_run(workdir, _records(0) + _records(1))
  names = [os.path.basename(p) for p in plots.plot_workdir(workdir)]
  assert names == [f"{k}_member{m}.png" for m in (0, 1) for k in ("spectrum_z", "spectrum_r", "training_curves")]
  assert kept_figures["spectrum_r_member1.png"].axes[0].get_title().startswith("sweep (simclr), member 1: ")


def test_plot_eval_workdir_reports_or_raises_failures(tmp_path):
  assert plots.plot_eval_workdir(str(tmp_path)) is None          # no eval.json: nothing to plot
  (tmp_path / "eval.json").write_text("{not json")
  warnings = []
  assert plots.plot_eval_workdir(str(tmp_path), on_error=warnings.append) is None
  assert len(warnings) == 1 and warnings[0].startswith("warning: plotting ") and "eval.json" in warnings[0]
  with pytest.raises(ValueError):
    plots.plot_eval_workdir(str(tmp_path))


def test_jaxssl_plot_writes_the_eval_figure(tmp_path, capsys, kept_figures):
  workdir = str(tmp_path / "run")
  _write_run(workdir, _records(), eval_results={"step": 12, "model": {"linear_probe": 50.0, "knn_20": 45.0}})
  assert cli.main(["plot", "--workdir", workdir]) == 0
  printed = capsys.readouterr().out.split()
  assert printed[-1] == os.path.join(workdir, "eval_vs_baselines.png") and os.path.isfile(printed[-1])
  (ax,) = kept_figures["eval_vs_baselines.png"].axes     # `jaxssl eval --no-baselines`: says so
  assert ax.get_title() == "run (simclr), step 12: test accuracy (eval.json has no baselines)"
  assert [p.get_height() for p in ax.patches] == [50.0, 45.0]


@pytest.mark.skipif(not os.path.exists(FMNIST) and not os.environ.get("JAXSSL_FMNIST_DIR"),
                    reason="dataset-fashion-mnist not installed")
@pytest.mark.slow
def test_a_finished_run_writes_eval_vs_baselines(tmp_path):
  from _tiny import tiny_config
  from jaxssl import run
  cfg = tiny_config("simclr", steps=4, **{"eval.at_end": True, "eval.baselines": True, "eval.probe_epochs": 1,
                                          "eval.knn_k": (20,)})
  out = run.train(cfg, str(tmp_path))
  metrics, rows, values = plots.eval_bar_data(json.load(open(tmp_path / "eval.json")))
  assert rows == ["model", "raw_pixels", "random_init"] and metrics == ["linear_probe", "knn_20"]
  np.testing.assert_array_equal(values[0], [out["eval"]["model"][m] for m in metrics])
  assert os.path.getsize(tmp_path / "eval_vs_baselines.png") > 0
