"""Test set-up: 8 simulated CPU devices, so the sharded code paths run everywhere."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAXSSL_QUIET", "1")
os.environ.setdefault("JAXSSL_COMPILATION_CACHE", "0")   # runs must not depend on an earlier run's cache
# Fashion-MNIST is prepared once (from the Debian IDX files) into a cache that later runs reuse.
os.environ.setdefault("JAXSSL_DATA_DIR", os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), ".cache", "tensorflow_datasets"))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", False)
