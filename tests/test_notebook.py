"""notebooks/quickstart.ipynb runs top to bottom (tiny mode) and prints sensible numbers."""
import math
import os
import re

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "notebooks",
                        "quickstart.ipynb")
FMNIST = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"


def _number(text: str, name: str) -> float:
  m = re.search(rf"^{name}=([-+0-9.eEinfa]+)\s*$", text, re.MULTILINE)
  assert m, f"the notebook did not print {name}=...; its output was:\n{text[-3000:]}"
  return float(m.group(1))


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
def test_quickstart_notebook_runs_in_tiny_mode(tmp_path, monkeypatch):
  # The kernel inherits this process's environment (JAX_PLATFORMS, XLA_FLAGS with 8
  # simulated devices and the shared JAXSSL_DATA_DIR cache from conftest).
  monkeypatch.setenv("JAXSSL_NOTEBOOK_TINY", "1")
  monkeypatch.setenv("JAXSSL_QUIET", "1")
  monkeypatch.setenv("TMPDIR", str(tmp_path))   # the notebook's tempfile.mkdtemp() lands here
  nb = nbformat.read(NOTEBOOK, as_version=4)
  client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                   resources={"metadata": {"path": str(tmp_path)}})
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
  text = "".join(text)
  assert "TINY=True" in text

  knn = _number(text, "KNN_ACCURACY")
  assert math.isfinite(knn) and 0.0 <= knn <= 100.0
  probe = _number(text, "LINEAR_PROBE_ACCURACY")
  assert math.isfinite(probe) and 0.0 <= probe <= 100.0
  agreement = _number(text, "DYNAMICS_AGREEMENT")
  assert 0.9 <= agreement <= 1.0
  assert pngs >= 2   # the embedding spectra and the phase diagram
  # Everything the run wrote is under the temporary directories.
  runs = [d for d in os.listdir(tmp_path) if d.startswith("jaxssl_quickstart_")]
  assert len(runs) == 1
  assert os.path.isfile(os.path.join(tmp_path, runs[0], "metrics.jsonl"))
  assert os.path.isfile(os.path.join(tmp_path, runs[0], "eval.json"))
