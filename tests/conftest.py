"""Test set-up: 8 simulated CPU devices, so the sharded code paths run everywhere."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAXSSL_QUIET", "1")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", False)
