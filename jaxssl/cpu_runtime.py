"""CPU runtime settings that jaxssl applies when it is imported, before JAX starts its backend.

Two measured problems of the jitted train step on XLA:CPU (jaxlib 0.10.x; issue 21's
profile of the Fashion-MNIST SimCLR step at batch 256 on a 2-core AVX-512 VM):

* **Convolutions on YNN.** jaxlib 0.10 hands convolutions, dots and reductions to the YNN
  library. Keeping YNN for dots and reductions only, with the XLA flag
  `--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,
  LIBRARY_FUSION_TYPE_REDUCE`, sends the convolutions back to XLA's Eigen kernels, which are
  faster for these shapes (step time 0.87-0.90x; the loss changes by ~1e-7 relative, float
  round-off of a different summation order).
* **OpenBLAS threads against XLA's.** `jnp.linalg.eigh` (the in-graph spectrum
  diagnostics) runs LAPACK from scipy's bundled OpenBLAS. Its worker threads compete with
  XLA's intra-op threads for the same cores, which made a logging step cost 1.35-1.47x a
  normal step at 2 threads. The eigendecompositions are D x D with D <= 512, too small to
  gain from threads, so jaxssl sets that OpenBLAS to one thread (numpy's own OpenBLAS, a
  separate library, is left alone).

`configure()` leaves alone whatever the user has set:

* `JAXSSL_CPU_TUNING=0` turns both settings off;
* an `XLA_FLAGS` that already names `xla_cpu_experimental_ynn_fusion_type` is kept as it is;
* an `OPENBLAS_NUM_THREADS` in the environment is respected;
* if JAX's backends already exist (jaxssl imported after a JAX computation) the XLA flag
  cannot take effect any more and is not set; `status()` says so.

The XLA flag is set only for jaxlib 0.10.x, the versions it was measured on: XLA aborts the
process on a flag it does not know, and the flag is experimental. It is also skipped when
`JAX_PLATFORMS` selects no CPU backend.
"""
from __future__ import annotations

import ctypes
import glob
import importlib.metadata
import os
import sys

YNN_FUSION_FLAG_NAME = "xla_cpu_experimental_ynn_fusion_type"
# Dots and reductions stay on YNN; convolutions (not listed) go back to XLA's own kernels.
CONVOLUTIONS_OFF_YNN = (f"--{YNN_FUSION_FLAG_NAME}="
                        "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE")
# The jaxlib minor versions the flag was measured on (see the module docstring).
FLAG_TESTED_JAXLIB = ((0, 10),)

_status: dict[str, str] = {}


def _jaxlib_version() -> tuple[int, int] | None:
  try:
    major, minor = importlib.metadata.version("jaxlib").split(".")[:2]
    return int(major), int(minor)
  except (importlib.metadata.PackageNotFoundError, ValueError):
    return None


def _backends_started() -> bool:
  bridge = sys.modules.get("jax._src.xla_bridge")
  return bool(getattr(bridge, "_backends", None))


def _xla_flag_decision() -> str:
  """Why the convolution flag is (or is not) added to XLA_FLAGS: 'set' or the reason."""
  flags = os.environ.get("XLA_FLAGS", "")
  if YNN_FUSION_FLAG_NAME in flags:
    return "kept the user's XLA_FLAGS setting"
  platforms = os.environ.get("JAX_PLATFORMS", "").strip()
  if platforms and "cpu" not in platforms.split(","):
    return f"JAX_PLATFORMS={platforms} has no CPU backend"
  if _jaxlib_version() not in FLAG_TESTED_JAXLIB:
    return f"jaxlib {_jaxlib_version()} is not one the flag was measured on {FLAG_TESTED_JAXLIB}"
  if _backends_started():
    return "JAX's backends were started before jaxssl was imported"
  return "set"


def _scipy_openblas_libraries() -> list[str]:
  """The OpenBLAS shared libraries that scipy (hence jaxlib's LAPACK kernels) uses."""
  import scipy
  import scipy.linalg.cython_lapack  # noqa: F401  (loads scipy's OpenBLAS, as jaxlib's lapack does)
  site = os.path.dirname(os.path.dirname(scipy.__file__))
  libs = sorted(glob.glob(os.path.join(site, "scipy.libs", "*openblas*.so*")))
  if not libs:   # a distribution's scipy linked against the system OpenBLAS
    with open("/proc/self/maps") as maps:
      libs = sorted({line.split()[-1] for line in maps if "openblas" in line.lower() and "numpy" not in line})
  return libs


def _set_openblas_threads(n: int) -> str:
  if "OPENBLAS_NUM_THREADS" in os.environ:
    return f"kept OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}"
  try:
    libs = _scipy_openblas_libraries()
  except (ImportError, OSError) as e:
    return f"scipy's OpenBLAS not found ({e})"
  done = []
  for path in libs:
    lib = ctypes.CDLL(path)
    for symbol in ("scipy_openblas_set_num_threads", "openblas_set_num_threads"):
      fn = getattr(lib, symbol, None)
      if fn is not None:
        fn.argtypes = [ctypes.c_int]
        fn(n)
        done.append(os.path.basename(path))
        break
  return f"{n} thread in {', '.join(done)}" if done else "no OpenBLAS set_num_threads symbol found"


def configure() -> dict[str, str]:
  """Applies the CPU settings of the module docstring once; returns `status()`."""
  if _status:
    return status()
  if os.environ.get("JAXSSL_CPU_TUNING", "1") == "0":
    _status.update(xla_flags="JAXSSL_CPU_TUNING=0", openblas="JAXSSL_CPU_TUNING=0")
    return status()
  decision = _xla_flag_decision()
  if decision == "set":
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {CONVOLUTIONS_OFF_YNN}".strip()
    decision = f"added {CONVOLUTIONS_OFF_YNN}"
  _status["xla_flags"] = decision
  _status["openblas"] = _set_openblas_threads(1)
  return status()


def status() -> dict[str, str]:
  """What `configure()` did: {"xla_flags": ..., "openblas": ...} ({} before it ran)."""
  return dict(_status)
