"""Test set-up: 8 simulated CPU devices, float32 matmuls at full precision."""
import logging
import os

# Must happen before jax is imported anywhere, so every test sees the same 8-device CPU platform.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

# Tests build the same small programs from many model objects; the persistent cache (keyed by the compiled
# program, not the Python object) lets later tests reuse earlier compiles within a run and across local runs.
jax.config.update("jax_compilation_cache_dir", os.path.join(os.path.dirname(os.path.dirname(__file__)),
                                                            ".pytest_cache", "jax"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.fixture(autouse=True)
def _restore_logging():
    """A command run in-process (emo-prepare's main, say) sets up logging for the whole process; put the root
    logger back after each test, so later tests see the logging they would see in a process of their own."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
