"""jaxssl: self-supervised representation learning in JAX, with in-graph spectrum
diagnostics and exact simulators of SSL learning dynamics."""

__version__ = "0.1.0"

# Before anything imports JAX's backend: CPU flags and OpenBLAS threads (see cpu_runtime).
from jaxssl import cpu_runtime  # noqa: E402

cpu_runtime.configure()

from jaxssl import errors  # noqa: F401
from jaxssl.export import export_encoder, load_encoder, load_exported  # noqa: F401  (public API)
