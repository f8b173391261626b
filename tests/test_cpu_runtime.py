"""jaxssl.cpu_runtime: the XLA flag and the OpenBLAS thread count jaxssl sets on import.

Each case runs in a fresh interpreter: the settings only act before JAX starts a backend
and before scipy's OpenBLAS is configured, which this test process has long passed."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxssl import cpu_runtime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROBE = r"""
import ctypes, json, os, sys
import jaxssl
from jaxssl import cpu_runtime
threads = None
for path in cpu_runtime._scipy_openblas_libraries():
  fn = getattr(ctypes.CDLL(path), "scipy_openblas_get_num_threads", None)
  if fn is not None:
    threads = fn()
print(json.dumps({"status": cpu_runtime.status(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
                  "openblas_threads": threads}))
"""

# One SimCLR train step of the tiny ConvNet: the loss and the updated parameters.
STEP = r"""
import json, os, sys
sys.path.insert(0, os.path.join(sys.argv[1], "tests"))
import jax, numpy as np
from jaxssl import parallel, state as state_lib, step as step_lib
from _tiny import random_batch, tiny_config
cfg = tiny_config("simclr", batch_size=32)
setup, state = state_lib.build(cfg, jax.random.PRNGKey(0))
mesh = parallel.make_mesh(1)
fn = step_lib.jit_train_step(setup, mesh)
batch = jax.device_put(random_batch(32), parallel.batch_sharding(mesh))
state, m = fn(state, batch, step_lib.augmentation_root_key(cfg))
leaves = [np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(state.params)]
print(json.dumps({"loss": float(m["loss"]), "params": np.concatenate(leaves).tolist()}))
"""


def _python(code: str, *args: str, **env: str) -> dict:
  full_env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "OPENBLAS_NUM_THREADS",
                                                               "JAXSSL_CPU_TUNING")}
  full_env.update(env, JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", code, *args], env=full_env, capture_output=True,
                       text=True, timeout=300, cwd=ROOT)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_sets_the_flag_and_one_openblas_thread():
  if cpu_runtime._jaxlib_version() not in cpu_runtime.FLAG_TESTED_JAXLIB:
    pytest.skip("the XLA flag is only set on the jaxlib versions it was measured on")
  got = _python(PROBE, XLA_FLAGS="--xla_force_host_platform_device_count=2")
  flags = got["xla_flags"].split()
  assert flags == ["--xla_force_host_platform_device_count=2", cpu_runtime.CONVOLUTIONS_OFF_YNN]
  assert got["openblas_threads"] == 1


def test_user_settings_are_kept():
  mine = f"--{cpu_runtime.YNN_FUSION_FLAG_NAME}=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"
  got = _python(PROBE, XLA_FLAGS=mine, OPENBLAS_NUM_THREADS="2")
  assert got["xla_flags"] == mine
  assert got["status"]["xla_flags"] == "kept the user's XLA_FLAGS setting"
  assert got["openblas_threads"] == 2
  off = _python(PROBE, JAXSSL_CPU_TUNING="0")
  assert off["xla_flags"] == ""
  assert off["status"] == {"xla_flags": "JAXSSL_CPU_TUNING=0", "openblas": "JAXSSL_CPU_TUNING=0"}


def test_no_flag_when_backends_already_started():
  code = "import jax; jax.devices()\n" + PROBE
  got = _python(code)
  assert got["xla_flags"] == ""
  assert "started before jaxssl was imported" in got["status"]["xla_flags"]


@pytest.mark.slow
def test_train_step_equal_within_float_tolerance_with_and_without_the_flag():
  """Convolutions on Eigen instead of YNN change only the summation order."""
  on = _python(STEP, ROOT)
  off = _python(STEP, ROOT, JAXSSL_CPU_TUNING="0")
  assert abs(on["loss"] - off["loss"]) <= 1e-5 * abs(off["loss"])
  np.testing.assert_allclose(on["params"], off["params"], rtol=1e-4, atol=1e-6)
