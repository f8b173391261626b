"""jaxssl.compilation_cache: a second process that trains the same program loads it from the
persistent cache (no new entry) and gives bit-identical parameters; the cache can be turned off."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from jaxssl import compilation_cache

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TRAIN = r"""
import hashlib, json, os, sys
sys.path.insert(0, os.path.join(sys.argv[1], "tests"))
import jax, numpy as np
from jaxssl import compilation_cache, run
from _tiny import tiny_config
out = run.train(tiny_config("simclr", steps=2), sys.argv[2], evaluate_at_end=False)
leaves = [np.asarray(x) for x in jax.tree.leaves(jax.device_get(out["state"].params))]
digest = hashlib.sha256(b"".join(x.tobytes() for x in leaves)).hexdigest()
print(json.dumps({"digest": digest, "status": compilation_cache.status()}))
"""


def _train(workdir: str, cache: str) -> dict:
  env = {k: v for k, v in os.environ.items() if k not in ("JAX_COMPILATION_CACHE_DIR",)}
  env.update(JAXSSL_COMPILATION_CACHE=cache, JAX_PLATFORMS="cpu", JAXSSL_QUIET="1")
  out = subprocess.run([sys.executable, "-c", TRAIN, ROOT, workdir], env=env, capture_output=True, text=True,
                       timeout=300, cwd=ROOT)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


def _entries(cache: str) -> set[str]:
  return {name for name in os.listdir(cache)} if os.path.isdir(cache) else set()


def test_second_process_reuses_the_cached_step_and_is_bit_identical(tmp_path):
  cache = str(tmp_path / "cache")
  first = _train(str(tmp_path / "a"), cache)
  assert first["status"]["cache"] == cache
  stored = _entries(cache)
  assert stored, "the train step (a compilation of more than MIN_COMPILE_SECONDS) was not cached"
  second = _train(str(tmp_path / "b"), cache)
  assert _entries(cache) == stored            # every program of the second run was a cache hit
  assert second["digest"] == first["digest"]


def test_cache_off_and_user_directory_kept(monkeypatch, tmp_path):
  import jax
  monkeypatch.setenv("JAXSSL_COMPILATION_CACHE", "0")
  assert compilation_cache.enable() is None
  assert compilation_cache.status()["cache"] == "off (JAXSSL_COMPILATION_CACHE=0)"
  monkeypatch.delenv("JAXSSL_COMPILATION_CACHE")
  before = jax.config.jax_compilation_cache_dir
  mine = str(tmp_path / "mine")
  jax.config.update("jax_compilation_cache_dir", mine)
  try:
    assert compilation_cache.enable() == mine
    assert compilation_cache.status()["cache"] == f"kept the user's cache directory {mine}"
  finally:
    jax.config.update("jax_compilation_cache_dir", before)
