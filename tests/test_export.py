"""Backbone export: load_encoder / export_encoder / load_exported give the trained r exactly."""
import os

import jax
import numpy as np
import pytest

import jaxssl
from jaxssl import cli, run
from jaxssl import state as state_lib
from jaxssl.errors import ConfigError
from _tiny import tiny_config

FMNIST = os.environ.get("JAXSSL_FMNIST_DIR", "/usr/share/datasets/fashion-mnist")
needs_fmnist = pytest.mark.skipif(not os.path.exists(os.path.join(FMNIST, "train-images-idx3-ubyte.gz")),
                                  reason="Fashion-MNIST IDX files not installed")


@needs_fmnist
@pytest.mark.slow
def test_exported_encoder_reproduces_the_trained_representation(tmp_path, capsys):
  workdir = str(tmp_path / "run")
  out = run.train(tiny_config("simclr", steps=2), workdir, evaluate_at_end=False)
  images = jax.random.randint(jax.random.PRNGKey(0), (4, 28, 28, 1), 0, 256).astype(np.uint8)   # [B, H, W, C]
  # The reference: the trained state through the network's own encode (eval mode), images / 255.
  setup, _ = state_lib.build(tiny_config("simclr", steps=2), 0)
  expected = np.asarray(state_lib.encode(setup, out["state"], images.astype(np.float32) / 255.0))   # [B, F]

  encode, variables = jaxssl.load_encoder(workdir)
  got = np.asarray(encode(variables, images))
  np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)    # jitted vs eager: round-off only

  path = str(tmp_path / "export" / "encoder.msgpack")
  assert cli.main(["export", "--workdir", workdir, "--out", path]) == 0
  assert os.path.exists(path) and os.path.exists(path + ".json")
  encode2, variables2 = jaxssl.load_exported(path)
  np.testing.assert_array_equal(np.asarray(encode2(variables2, images)), got)   # the same bits as from the run
  assert float(np.abs(expected).max()) > 0


def test_export_refuses_a_missing_run_and_a_missing_file(tmp_path):
  with pytest.raises(ConfigError, match="does not exist"):
    jaxssl.export_encoder(str(tmp_path / "nosuch"), str(tmp_path / "x.msgpack"))
  with pytest.raises(ConfigError, match=r"must both exist \(written by `jaxssl export`\)"):
    jaxssl.load_exported(str(tmp_path / "x.msgpack"))
