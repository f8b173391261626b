"""JAX's persistent compilation cache for jaxssl runs (issue 21: sequential runs and resumes
that compile the same program pay for it once).

`enable()` points JAX at a cache directory unless the user already chose one:

* `$JAXSSL_COMPILATION_CACHE`: the directory, or `0` / `off` to leave the cache off;
* else `$JAX_COMPILATION_CACHE_DIR` or `jax.config.jax_compilation_cache_dir`, if set, is
  kept as it is;
* else `$XDG_CACHE_HOME/jaxssl/xla` (`~/.cache/jaxssl/xla`).

Only compilations of at least `MIN_COMPILE_SECONDS` are stored (the train step, the
evaluation's feature extractor), so the many small programs of a run do not fill the disk.
JAX keys each entry by the program, the compile options, the XLA flags and the jax/jaxlib
versions, so a cached executable is the one the same compilation would produce: results
are bit-identical with and without the cache (`tests/test_compilation_cache.py`).

JAX decides once per process, at its first compilation with a cache directory configured,
whether the cache is used; once that happened for another directory, `enable()` has no effect
in that process, and `status()` says so. The test suite turns the cache off (tests/conftest.py)
so that its runs do not depend on what an earlier run left in the cache.
"""
from __future__ import annotations

import os

import jax

MIN_COMPILE_SECONDS = 1.0
_status = {"cache": "not configured"}


def default_directory() -> str:
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "jaxssl", "xla")


def _already_decided() -> bool:
  from jax._src import compilation_cache as jax_cache   # JAX latches its decision here
  return bool(getattr(jax_cache, "_cache_checked", False))


def enable() -> str | None:
  """Turns the persistent cache on (see the module docstring); returns its directory or None."""
  choice = os.environ.get("JAXSSL_COMPILATION_CACHE", "").strip()
  if choice.lower() in ("0", "off", "false", "no"):
    _status["cache"] = f"off (JAXSSL_COMPILATION_CACHE={choice})"
    return None
  current = jax.config.jax_compilation_cache_dir
  if not choice and current:
    _status["cache"] = f"kept the user's cache directory {current}"
    return current
  directory = os.path.abspath(os.path.expanduser(choice or default_directory()))
  if _already_decided() and current != directory:
    _status["cache"] = "not used: this process compiled before jaxssl configured the cache"
    return None
  try:
    os.makedirs(directory, exist_ok=True)
  except OSError as e:
    _status["cache"] = f"off: cannot create {directory} ({e.strerror})"
    return None
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
  _status["cache"] = directory
  return directory


def status() -> dict[str, str]:
  """{"cache": the directory in use, or why there is none}."""
  return dict(_status)
