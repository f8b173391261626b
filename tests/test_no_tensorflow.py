"""jaxssl without TensorFlow: a GPU box with only JAX installed trains, evaluates and sweeps on
Fashion-MNIST from the IDX files. `tensorflow`, `tensorflow_datasets` and `tensorboardX` are
made unimportable with a `sys.meta_path` blocker in a subprocess."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..")
FMNIST = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"

# The blocked modules are found (so `importlib.util.find_spec`, which some libraries use to
# probe, answers as for an installed package) but importing them raises ImportError.
BLOCKER = textwrap.dedent("""
    import importlib.abc, importlib.machinery, sys
    BLOCKED = ("tensorflow", "tensorflow_datasets", "tensorboardX")
    class _Refuse(importlib.abc.Loader):
      def create_module(self, spec):
        raise ImportError(f"{spec.name} is blocked: this test runs without TensorFlow")
      def exec_module(self, module):
        raise ImportError(f"{module.__name__} is blocked")
    class _Block(importlib.abc.MetaPathFinder):
      def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
          return importlib.machinery.ModuleSpec(name, _Refuse())
        return None
    sys.meta_path.insert(0, _Block())
    """)

TINY_CONFIG = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {configs!r})
    import simclr
    from jaxssl import config as config_lib

    def get_config():
      c = simclr.get_config()
      config_lib.shrink_to_tiny_model(c)
      c.data.batch_size = 64
      c.train.num_steps = 3
      c.train.log_every = 1
      c.train.checkpoint_every = 3
      c.optim.warmup_steps = 1
      c.eval.probe_epochs = 2
      return c
    """)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(FMNIST), reason="dataset-fashion-mnist not installed")
def test_train_eval_and_sweep_without_tensorflow(tmp_path):
  cfg_file = tmp_path / "tiny_simclr.py"
  cfg_file.write_text(TINY_CONFIG.format(configs=os.path.join(os.path.abspath(ROOT), "experiments", "configs")))
  data_dir = tmp_path / "data"      # empty: Fashion-MNIST is prepared from the Debian IDX files
  data_dir.mkdir()
  w_main, w_tiny, w_sweep = (str(tmp_path / n) for n in ("main", "tiny", "sweep"))
  script = BLOCKER + textwrap.dedent(f"""
      import warnings
      from jaxssl.cli import main
      # The issue's acceptance command: the main job's config, 3 steps.
      assert main(["train", "--config", "experiments/configs/simclr.py", "--workdir", {w_main!r}, "--no-eval",
                   "--config.train.num_steps=3", "--config.train.log_every=1",
                   "--config.data.batch_size=64"]) == 0
      assert main(["train", "--config", {str(cfg_file)!r}, "--workdir", {w_tiny!r}, "--no-eval"]) == 0
      assert main(["eval", "--workdir", {w_tiny!r}]) == 0
      assert main(["sweep", "--config", {str(cfg_file)!r}, "--workdir", {w_sweep!r},
                   "--sweep", "loss.temperature=0.1,0.5"]) == 0
      for mod in BLOCKED:
        assert mod not in sys.modules, mod
      print("NO-TF-OK")
      """)
  env = {**os.environ, "JAXSSL_DATA_DIR": str(data_dir), "JAXSSL_QUIET": "1"}
  env.pop("TFDS_DATA_DIR", None)
  out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=900)
  assert out.returncode == 0 and "NO-TF-OK" in out.stdout, out.stdout[-3000:] + out.stderr[-5000:]
  # Training really ran: 3 logged steps with finite losses, and a checkpoint at step 3.
  recs = [json.loads(line) for line in open(os.path.join(w_main, "metrics.jsonl"))]
  assert [r["step"] for r in recs] == [0, 1, 2] and all(r["loss"] > 0 for r in recs)
  assert "3" in os.listdir(os.path.join(w_main, "checkpoints"))
  # Without tensorboardX, metrics.jsonl is still written (TensorBoard through torch, if installed).
  ev = json.load(open(os.path.join(w_tiny, "eval.json")))
  assert 10.0 < ev["model"]["linear_probe"] <= 100.0 and "raw_pixels" in ev
  for i in (0, 1):
    res = json.load(open(os.path.join(w_sweep, "members", str(i), "results.json")))
    assert res["hparams"] == {"loss.temperature": [0.1, 0.5][i]} and "knn_200" in res["model"]
  assert os.path.exists(os.path.join(w_sweep, "summary.md"))
