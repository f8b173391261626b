"""notebooks/quickstart.ipynb runs top to bottom (tiny mode) and prints sensible numbers."""
import json
import math
import os
import re

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "notebooks",
                        "quickstart.ipynb")
FMNIST = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"


def _printed(text: str, name: str, pattern: str = r"\S*") -> str:
  m = re.search(rf"^{name}=({pattern})\s*$", text, re.MULTILINE)
  assert m, f"the notebook did not print {name}=...; its output was:\n{text[-3000:]}"
  return m.group(1)


def _number(text: str, name: str) -> float:
  return float(_printed(text, name, r"[-+0-9.eEinfa]+"))


def test_notebook_is_stored_without_outputs():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(nb)
  assert nb.metadata.kernelspec.name == "python3"
  for cell in nb.cells:
    if cell.cell_type == "code":
      assert cell.outputs == [] and cell.execution_count is None


@pytest.mark.skipif(not os.path.exists(FMNIST) and not os.environ.get("JAXSSL_FMNIST_DIR"),
                    reason="dataset-fashion-mnist not installed")
@pytest.mark.slow
def test_quickstart_notebook_runs_in_tiny_mode_and_leaves_no_files(tmp_path, monkeypatch):
  # The kernel inherits this process's environment (JAX_PLATFORMS, XLA_FLAGS with 8
  # simulated devices and the shared JAXSSL_DATA_DIR cache from conftest).
  tmp, cwd = tmp_path / "tmp", tmp_path / "cwd"
  tmp.mkdir()
  cwd.mkdir()
  monkeypatch.setenv("JAXSSL_NOTEBOOK_TINY", "1")
  monkeypatch.setenv("JAXSSL_QUIET", "1")
  monkeypatch.setenv("TMPDIR", str(tmp))   # the notebook's temporary directories land here
  nb = nbformat.read(NOTEBOOK, as_version=4)
  client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                   resources={"metadata": {"path": str(cwd)}})
  client.execute()

  text, pngs = [], 0
  for cell in nb.cells:
    if cell.cell_type != "code":
      continue
    for out in cell.outputs:
      assert out.output_type != "error", f"{out.ename}: {out.evalue}"
      if out.output_type == "stream" and out.name == "stdout":
        text.append(out.text)
      elif out.output_type in ("display_data", "execute_result"):
        pngs += "image/png" in out.data
        text.append(out.data.get("text/plain", ""))
  text = "\n".join(text)
  assert "TINY=True" in text

  knn = _number(text, "KNN_ACCURACY")
  assert math.isfinite(knn) and 0.0 <= knn <= 100.0
  probe = _number(text, "LINEAR_PROBE_ACCURACY")
  assert math.isfinite(probe) and 0.0 <= probe <= 100.0
  # The baselines are printed beside the model's number, evaluated by the same probe.
  raw = _number(text, "RAW_PIXELS_LINEAR_PROBE")
  random_init = _number(text, "RANDOM_INIT_LINEAR_PROBE")
  assert 50.0 <= raw <= 100.0 and 0.0 <= random_init <= 100.0
  assert re.search(r"points (above|below) the best baseline", text)
  agreement = _number(text, "DYNAMICS_AGREEMENT")
  assert 0.9 <= agreement <= 1.0
  assert pngs >= 3   # eval vs baselines, the embedding spectra and the phase diagram
  # The run was written into a temporary directory ...
  workdir = re.search(r"workdir (\S+)", text).group(1)
  assert os.path.dirname(workdir) == str(tmp) and os.path.basename(workdir).startswith("jaxssl_quickstart_")
  files = _printed(text, "RUN_FILES").split(",")
  assert {"metrics.jsonl", "eval.json", "eval_vs_baselines.png", "checkpoints"} <= set(files)
  # ... which the notebook removed: nothing is left in the temp dir or the working directory.
  assert os.listdir(tmp) == [] and os.listdir(cwd) == []


def test_full_mode_evaluates_like_jaxssl_eval(tmp_path, monkeypatch):
  """Full mode keeps the config's evaluation settings (probe epochs, kNN k, baselines) that
  `jaxssl eval` uses; only the settings cells run (no training)."""
  monkeypatch.delenv("JAXSSL_NOTEBOOK_TINY", raising=False)
  nb = nbformat.read(NOTEBOOK, as_version=4)
  config_cell = next(i for i, c in enumerate(nb.cells) if "validate_config(cfg)" in c.source)
  nb.cells = nb.cells[:config_cell + 1] + [nbformat.v4.new_code_cell(
      "import json\n"
      "ref = config_lib.load_config(os.path.join(CONFIG_DIR, 'simclr.py'))\n"
      "print('EVAL=' + json.dumps({k: [cfg.eval[k], ref.eval[k]] for k in ref.eval}))")]
  client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                   resources={"metadata": {"path": str(tmp_path)}})
  client.execute()
  text = "".join(o.text for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "stream")
  assert "TINY=False" in text
  evals = json.loads(re.search(r"^EVAL=(.*)$", text, re.MULTILINE).group(1))
  assert evals["baselines"] == [True, True]
  for key, (used, reference) in evals.items():
    assert used == reference, f"config.eval.{key}: the notebook uses {used!r}, jaxssl eval {reference!r}"
  assert os.listdir(tmp_path) == []    # the settings cells write nothing
