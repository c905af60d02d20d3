"""Test-suite configuration shared by every test module.

* 4 virtual CPU devices (set before JAX creates its backends), so sharded code paths run on CI.
* Strict dtype promotion and no implicit rank promotion: library code must be explicit.
* A deterministic hypothesis profile (same examples on every run, no deadline, no database).
"""

import os

import jax

# Must run before the first backend use anywhere in the test session.
jax.config.update("jax_num_cpu_devices", 4)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")

import hypothesis  # noqa: E402
import pytest  # noqa: E402

hypothesis.settings.register_profile(
    "jaxstats",
    derandomize=True,
    deadline=None,
    database=None,
    max_examples=30,
    suppress_health_check=[hypothesis.HealthCheck.too_slow, hypothesis.HealthCheck.data_too_large],
)
hypothesis.settings.load_profile(os.environ.get("JAXSTATS_HYPOTHESIS_PROFILE", "jaxstats"))

SHARED_DATA = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))


@pytest.fixture
def x64():
    """Enable float64 for the duration of one test (scoped, restored afterwards)."""
    with jax.enable_x64(True):
        yield


@pytest.fixture
def shared_data():
    """Path of ``../shared/data``; skips the test cleanly when it is absent."""
    if not os.path.isdir(SHARED_DATA):
        pytest.skip(f"shared data folder not found at {SHARED_DATA}")
    return SHARED_DATA
