"""The GPU benchmark's dry run: `bash benchmarks/gpu/run.sh --dry-run OUT` runs every stage
at tiny sizes on the CPU, and results.json has exactly the fields the GPU run documents
(`FIELDS` of benchmarks/gpu/run.py), every stage "ok", and sane numbers.

One dry run (about two to three minutes on two cores) serves all the tests here; they are
marked slow (`make test-all`), the default suite's budget being 10 minutes.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess

import pytest

from jaxssl import data
from jaxssl.errors import DataError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_SH = os.path.join(ROOT, "benchmarks", "gpu", "run.sh")
TORCH = importlib.util.find_spec("torch") is not None


def _driver():
  """benchmarks/gpu/run.py as a module (it imports only the standard library)."""
  spec = importlib.util.spec_from_file_location("jaxssl_gpu_benchmark_run", os.path.join(ROOT, "benchmarks", "gpu",
                                                                                         "run.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


DRIVER = _driver()


def _have_fashion_mnist() -> bool:
  try:
    data.load_arrays("fashion_mnist", "test")
    return True
  except DataError:
    return False


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
  """(completed process, results.json as a dict, output directory) of one dry run."""
  if not _have_fashion_mnist():
    pytest.skip("Fashion-MNIST is not available (the real-run stage trains on it)")
  out = tmp_path_factory.mktemp("gpu_benchmark")
  proc = subprocess.run(["bash", RUN_SH, "--dry-run", str(out)], cwd=ROOT, capture_output=True, text=True,
                        timeout=600, env=dict(os.environ))
  path = out / "results.json"
  results = json.loads(path.read_text()) if path.exists() else None
  return proc, results, out


@pytest.mark.slow
def test_exits_zero_and_writes_its_files(dry_run):
  proc, results, out = dry_run
  assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
  assert results is not None
  assert (out / "summary.txt").exists() and (out / "log.txt").exists()
  assert results["mode"] == "dry-run"
  assert results["wall_s"] < results["total_limit_s"]


@pytest.mark.slow
def test_fields_are_exactly_the_documented_ones(dry_run):
  _, results, _ = dry_run
  assert results["undeclared_fields"] == []
  got = set(DRIVER.flatten(results))
  assert got == set(DRIVER.FIELDS), (sorted(got - set(DRIVER.FIELDS)), sorted(set(DRIVER.FIELDS) - got))
  assert len(DRIVER.FIELDS) == len(set(DRIVER.FIELDS))


@pytest.mark.slow
def test_every_stage_and_part_is_ok(dry_run):
  _, results, _ = dry_run
  flat = DRIVER.flatten(results)
  for stage in DRIVER.STAGES:
    assert flat[f"stages.{stage}.status"] == "ok", (stage, flat[f"stages.{stage}.error"])
  parts = {k: v for k, v in flat.items() if k.endswith(".status") and k.count(".") > 2}
  assert parts, "no parts recorded"
  for key, status in parts.items():
    if ".torch_" in key and not TORCH:
      assert status.startswith("skipped: PyTorch is not installed"), (key, status)
    else:
      assert status == "ok", (key, status)


@pytest.mark.slow
def test_numbers_are_sane(dry_run):
  _, results, _ = dry_run
  st = results["stages"]
  assert st["devices"]["device_count"] >= 1 and st["devices"]["matmul"]["tflops_per_s"] > 0
  for dt in ("bf16", "f32"):
    jx = st["train_step"][dt]["jax"]
    assert jx["step_s"] > 0 and jx["flops_per_step"] > 0 and 0 < jx["mfu_vs_paper_peak"] < 1
    if TORCH:
      assert st["train_step"][dt]["ratio_vs_torch_eager"] > 0
  for model in ("small", "resnet18"):
    sw = st["sweep"][model]
    # member i of the vmapped sweep is sequential run i (same init, hyperparameters, keys)
    assert len(sw["max_abs_param_diff_per_member"]) == st["sweep"]["members"] == 8
    assert sw["check_passed"] and sw["max_abs_param_diff"] < 1e-3, sw["max_abs_param_diff_per_member"]
    assert sw["max_abs_last_loss_diff"] < 1e-3
    assert sw["ratio_steady"] > 0 and sw["ratio_with_compile"] > 0
  sp = st["spectrum_overhead"]
  assert all(sp[k]["step_s"] > 0 for k in ("log_every_1", "log_every_100", "never"))
  sh = st["sharded"]
  assert sh["check_passed"] and sh["max_rel_diff"] <= sh["tolerance"] == 1e-4
  if "xla_force_host_platform_device_count=8" in os.environ.get("XLA_FLAGS", ""):
    assert sh["device_count"] == 8     # the simulated devices of tests/conftest.py
  rr = st["real_run"]
  assert rr["train"]["steps_done"] == rr["train"]["num_steps"] > 0 and not rr["train"]["interrupted"]
  assert 10.0 < rr["eval"]["linear_probe"] <= 100.0 and 10.0 < rr["eval"]["knn_20"] <= 100.0   # above chance
  assert all(g["met"] is None for g in results["goals"].values())   # no verdicts from a dry run
